// The Raft consensus core: a pure, deterministic state machine in the style of
// etcd-io/raft's RawNode.  It does no I/O, owns no threads, reads no clock and
// draws randomness only from the seed it is given.
//
// Driving it (one thread owns the object):
//   1. Feed it: tick() on every logical clock tick; step(m) for each message
//      from a peer; propose()/propose_conf_change()/read_index()/
//      transfer_leadership()/campaign() for local requests.
//   2. If has_ready(), take rd = ready() and, in this order:
//        a. persist rd.snapshot (if any), rd.entries and rd.hard_state (if
//           any) to the Storage — atomically or in that order;
//        b. send rd.messages (only after (a): a vote or an ack must never be
//           sent for state that a crash could forget);
//        c. install rd.snapshot into the state machine, then apply
//           rd.committed_entries in order, calling apply_conf_change() for
//           each EntryConfChange entry;
//        d. call advance(rd).
//      No other call may happen between ready() and advance() (aborts).
//   3. A MsgSnap in rd.messages obliges the caller to call report_snapshot()
//      once the transfer has finished or failed.
//
// Membership changes are one at a time and take effect when the caller applies
// the committed entry (apply_conf_change), as in etcd-io/raft's ConfChange v1.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "node/raft/log.h"
#include "node/raft/progress.h"
#include "node/raft/storage.h"

namespace muster::raft {

enum class StateRole { kFollower, kCandidate, kLeader, kPreCandidate };
const char* to_string(StateRole r);

// Why a proposal (or read request) was not accepted.
enum class DropReason {
  kNone = 0,                  // accepted (appended, or forwarded to the leader)
  kNoLeader,                  // no known leader to forward to
  kForwardingDisabled,        // not the leader and Config::disable_proposal_forwarding
  kLeaderTransferInProgress,  // the leader is handing over leadership
  kConfChangePending,         // a previous conf change is not applied yet
  kUncommittedSizeLimit,      // Config::max_uncommitted_entries_size reached
  kNotMember,                 // this node was removed from the configuration
  kEmpty,                     // a proposal with no entries
};
const char* to_string(DropReason r);

// Breaks Raft rules on purpose.  Only the simulator's self-tests set these, to
// prove that its checker catches a broken core.  Never set in production.
struct TestingKnobs {
  // Count entries of earlier terms toward commit (violates §5.4.2, Figure 8).
  bool commit_entries_of_older_terms = false;
  // A follower grants a vote even after voting for someone else in this
  // term (violates §5.2 "at most one vote per term").
  bool vote_twice = false;
  // Grant votes without comparing logs (violates §5.4.1's election
  // restriction, hence Leader Completeness).
  bool vote_ignoring_log = false;
};

struct Config {
  // This node's id.  REQUIRES: != 0.
  uint64_t id = 0;
  // A follower that hears nothing for a randomized timeout in
  // [election_tick, 2*election_tick) ticks campaigns.
  // REQUIRES: election_tick > heartbeat_tick >= 1.
  int election_tick = 10;
  int heartbeat_tick = 1;
  // The last index the caller's state machine has applied (0: the snapshot).
  // REQUIRES: snapshot index <= applied <= last index in storage.  It may
  // exceed the stored commit index (the commit index is then raised to it).
  uint64_t applied = 0;
  // Upper bound on the bytes of entries in one MsgApp (at least one entry is
  // always sent).
  uint64_t max_size_per_msg = 1 << 20;
  // Upper bound on the bytes of committed entries handed out in one Ready.
  uint64_t max_committed_size_per_ready = 64ull << 20;
  // In-flight window per follower in Replicate state, in messages and bytes
  // (0 bytes: unlimited).  REQUIRES: max_inflight_msgs >= 1.
  size_t max_inflight_msgs = 256;
  uint64_t max_inflight_bytes = 0;
  // Bytes of uncommitted entry payloads a leader accepts before dropping
  // proposals (0: unlimited).
  uint64_t max_uncommitted_entries_size = 0;
  // Pre-vote (thesis §9.6) and check-quorum (thesis §6.2 and §4.2.3).
  bool pre_vote = true;
  bool check_quorum = true;
  bool disable_proposal_forwarding = false;
  // Seed for the randomized election timeout (xorshift64*); 0 picks a fixed
  // non-zero constant mixed with the id.  `rng`, if set, replaces it.
  uint64_t seed = 0;
  std::function<uint64_t()> rng;
  TestingKnobs testing;
};

struct SoftState {
  uint64_t lead = 0;
  StateRole role = StateRole::kFollower;
  bool operator==(const SoftState&) const = default;
};

// The answer to read_index(ctx): once the caller has applied up to `index`,
// a read of its state machine is linearizable.
struct ReadState {
  uint64_t index = 0;
  std::string context;
};

struct DroppedProposal {
  std::vector<pb::Entry> entries;
  DropReason reason = DropReason::kNone;
};

struct Ready {
  std::optional<SoftState> soft_state;      // changed lead/role (volatile)
  std::optional<pb::HardState> hard_state;  // changed term/vote/commit: persist
  std::vector<ReadState> read_states;
  std::vector<pb::Entry> entries;        // persist before sending messages
  std::optional<pb::Snapshot> snapshot;  // persist and install
  std::vector<pb::Entry> committed_entries;
  // The last committed entry's index and the committed entries' payload
  // bytes, for advance(): the caller may move committed_entries away (to an
  // apply thread) before it calls advance().
  uint64_t committed_last_index = 0;
  uint64_t committed_payload_bytes = 0;
  std::vector<pb::Message> messages;
  std::vector<DroppedProposal> dropped_proposals;
  // True when entries or term/vote changed: the write must be durable (fsync).
  bool must_sync = false;
};

class Raft {
 public:
  // REQUIRES: storage outlives this object; cfg valid (see Config).  Loads the
  // hard state and configuration from storage and starts as a follower.
  Raft(Config cfg, const Storage* storage);
  Raft(const Raft&) = delete;
  Raft& operator=(const Raft&) = delete;

  void tick();
  // Starts an election now (MsgHup).
  void campaign();
  // Processes a message from a peer (or a forwarded proposal/read request).
  void step(const pb::Message& m);

  DropReason propose(std::string data);
  // Proposes several entries as one unit: one append and one round of MsgApp
  // for all of them (the caller's group commit).  All or none are accepted.
  DropReason propose_batch(std::vector<std::string> data);
  DropReason propose_conf_change(const pb::ConfChange& cc);
  // Applies a committed configuration change; returns the new configuration,
  // which the caller persists with its applied index.  A removed leader steps
  // down here (after handing over to an up-to-date voter if one exists).
  pb::ConfState apply_conf_change(const pb::ConfChange& cc);
  // Requests a linearizable read point; answered by a ReadState carrying ctx.
  // ctx must be unique among outstanding requests.
  void read_index(std::string ctx);
  // Asks the leader to hand leadership to `to` (forwarded by followers).
  void transfer_leadership(uint64_t to);
  void report_unreachable(uint64_t id);
  void report_snapshot(uint64_t id, bool failure);

  bool has_ready() const;
  Ready ready();
  void advance(const Ready& rd);

  // --- introspection (tests, simulator, status pages) ---
  uint64_t id() const { return id_; }
  uint64_t term() const { return term_; }
  uint64_t vote() const { return vote_; }
  uint64_t lead() const { return lead_; }
  StateRole role() const { return state_; }
  uint64_t lead_transferee() const { return lead_transferee_; }
  const RaftLog& log() const { return log_; }
  pb::ConfState conf_state() const;
  bool is_voter(uint64_t id) const { return voters_.count(id) != 0; }
  bool is_learner(uint64_t id) const { return learners_.count(id) != 0; }
  // Leader only: the peer's progress, or nullptr.
  const Progress* progress(uint64_t id) const;
  pb::HardState hard_state() const;
  SoftState soft_state() const { return {lead_, state_}; }
  int randomized_election_timeout() const { return randomized_election_timeout_; }
  // Empty when all of this node's invariants hold, else a description.
  std::string check_invariants() const;

 private:
  struct ReadIndexStatus {
    pb::Message req;
    uint64_t index = 0;
    std::set<uint64_t> acks;
  };

  // roles
  void reset(uint64_t term);
  void become_follower(uint64_t term, uint64_t lead);
  void become_candidate();
  void become_pre_candidate();
  void become_leader();
  void hup(bool transfer);
  void campaign_internal(bool pre, bool transfer);
  enum class VoteResult { kPending, kWon, kLost };
  VoteResult poll(uint64_t id, bool granted);

  // stepping
  void step_internal(const pb::Message& m);
  void step_leader(const pb::Message& m);
  void step_candidate(const pb::Message& m);
  void step_follower(const pb::Message& m);
  void handle_append(const pb::Message& m);
  void handle_heartbeat(const pb::Message& m);
  void handle_snapshot(const pb::Message& m);
  bool restore(const pb::Snapshot& snap);
  void handle_vote_request(const pb::Message& m);
  void tick_election();
  void tick_heartbeat();

  // leader machinery
  void send(pb::Message m);
  bool send_append(uint64_t to, bool send_if_empty);
  void bcast_append();
  void bcast_heartbeat(const std::string& ctx);
  void send_heartbeat(uint64_t to, const std::string& ctx);
  bool maybe_commit();
  bool append_entries(std::vector<pb::Entry> ents, DropReason* reason);
  bool quorum_active();
  bool committed_entry_in_current_term() const;
  void release_pending_read_indexes();
  void answer_read_index(const pb::Message& req, uint64_t index);
  void handle_read_index_request(const pb::Message& m);
  void send_timeout_now(uint64_t to);
  void abort_leader_transfer() { lead_transferee_ = 0; }
  void drop(const pb::Message& m, DropReason why);
  bool has_unapplied_conf_change() const;
  size_t quorum() const { return voters_.size() / 2 + 1; }
  void reset_randomized_election_timeout();
  uint64_t next_random();
  void init_progress(uint64_t id, bool learner);
  void require_not_in_ready(const char* what) const;

  Config cfg_;
  uint64_t id_;
  uint64_t term_ = 0;
  uint64_t vote_ = 0;
  uint64_t lead_ = 0;
  StateRole state_ = StateRole::kFollower;
  RaftLog log_;

  std::set<uint64_t> voters_;
  std::set<uint64_t> learners_;
  std::map<uint64_t, Progress> prs_;  // leader only; every voter and learner
  std::vector<uint64_t> match_scratch_;  // maybe_commit's working buffer
  std::map<uint64_t, bool> votes_;

  std::vector<pb::Message> msgs_;
  std::vector<ReadState> read_states_;
  std::vector<DroppedProposal> dropped_;

  int election_elapsed_ = 0;
  int heartbeat_elapsed_ = 0;
  int randomized_election_timeout_ = 0;
  uint64_t lead_transferee_ = 0;
  uint64_t pending_conf_index_ = 0;
  uint64_t uncommitted_size_ = 0;

  std::map<std::string, ReadIndexStatus> read_pending_;
  std::deque<std::string> read_queue_;
  std::vector<pb::Message> pending_read_index_messages_;

  uint64_t rng_state_ = 0;
  SoftState prev_soft_;
  pb::HardState prev_hard_;
  bool in_ready_ = false;
  // Outcome of the proposal being stepped (propose() returns it).
  DropReason last_drop_ = DropReason::kNone;
};

}  // namespace muster::raft
