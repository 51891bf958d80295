// node/server/driver.h: the Raft driver — the one thread that owns the Raft
// core and runs its Ready contract against the member's storage and the
// peer transport (etcd's raftNode).
//
// The loop, each turn:
//   1. take everything the mailbox holds: peer messages, proposals, read
//      requests, snapshot reports, posted tasks, received snapshots; step
//      them into the core; tick the core's logical clock every heartbeat;
//   2. for each Ready the core has:
//        a. a leader sends its messages first: it may replicate while its
//           own write is in flight (Raft thesis 10.2.1);
//        b. a received snapshot is installed (its state was streamed ahead
//           of the MsgSnap, see snapshot_stream.h); a received state whose
//           MsgSnap the core refused (a past term, an older index) is
//           dropped, freeing the member's one install slot;
//        c. new entries and the hard state are written with one synced
//           LevelDB write for the whole batch (group commit);
//        d. a follower sends its messages now: an ack or a vote must never
//           run ahead of its disk;
//        e. committed entries go to the apply side, in order: those already
//           on this member's disk before (c) are handed over before the
//           write starts, so applying batch N overlaps persisting batch N+1;
//           the others after it.  A configuration change or a snapshot
//           install waits for the apply side to drain and is applied on the
//           driver thread (the core and the state machine must agree when
//           the configuration moves);  read states go to their hook;
//        f. advance;
//   3. every applied `snapshot_count` entries, a Raft snapshot is recorded
//      and the log prefix compacted (keeping `snapshot_catchup_entries`);
//   4. every 100 ms, the housekeeping hook (timeouts, leader chores).
//
// Threads: start() spawns the driver thread; every hook runs on it.  The
// mailbox methods (step, propose, read_index, post, ...) are thread-safe
// and never block on the core.  The Raft core, the storage's write side and
// whatever the hooks touch on the driver thread need no locks against each
// other.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/metrics.h"
#include "node/raft/raft.h"
#include "node/storage/member_storage.h"
#include "node/storage/snapshot.h"

namespace muster::server {

class RaftTransport;

struct DriverOptions {
  uint64_t member_id = 0;
  uint32_t heartbeat_ms = 100;
  uint32_t election_ms = 1000;
  uint64_t snapshot_count = 100000;
  uint64_t snapshot_catchup_entries = 5000;  // kept after compaction (etcd's value)
  // --initial-election-tick-advance: once a quorum of voters is connected
  // after start, skip all but two ticks of the first election timeout.
  bool initial_election_tick_advance = true;
  // The member started from existing data (not a brand-new cluster).
  bool existing_state = false;
  bool unsafe_no_fsync = false;
};

// What the member does with the driver's output.  Every hook runs on the
// driver thread; a hook left empty is not called.
struct DriverHooks {
  using Clock = std::chrono::steady_clock;
  // The leader or this member's role changed (`old_leader` is the previous
  // leader, 0 for none).
  std::function<void(const raft::SoftState& now, uint64_t old_leader)> on_soft_state;
  // Committed entries to apply, in log order, with no configuration change
  // among them: handed to the apply side, which may apply them after this
  // returns (the driver goes on persisting the next batch meanwhile).
  std::function<void(std::vector<raftpb::Entry> committed)> apply;
  // Returns once everything handed to `apply` has been applied.
  std::function<void()> drain;
  // Applies committed entries on the driver thread, after drain():
  // configuration changes among them are applied to the core before this
  // returns.
  std::function<void(const std::vector<raftpb::Entry>& committed)> apply_now;
  // The storage now holds the state of the received snapshot `meta`.
  std::function<void(const raftpb::SnapshotMetadata& meta)> on_installed;
  // The core confirmed read points (ReadIndex).
  std::function<void(const std::vector<raft::ReadState>&)> on_read_states;
  // A proposal (request `id`) was refused at once, or entries the core had
  // taken were dropped (request IDs are in the entries).
  std::function<void(uint64_t id, raft::DropReason why)> on_rejected;
  std::function<void(const raft::DroppedProposal&)> on_dropped;
  // After every loop turn, and every 100 ms.
  std::function<void(Clock::time_point now)> after_turn;
  std::function<void(Clock::time_point now)> housekeeping;
};

class Driver {
 public:
  using Clock = std::chrono::steady_clock;

  // REQUIRES: raft, storage, transport and metrics outlive the driver.
  Driver(DriverOptions options, raft::Raft& raft, storage::MemberStorage& storage,
         RaftTransport& transport, metrics::Registry& metrics, DriverHooks hooks);
  ~Driver();
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  // Handles what the core has ready at start (a new cluster's committed
  // bootstrap entries), so the configuration and peers are known at once,
  // then starts the driver thread.
  void start();
  // Stops the thread; with `transfer_leadership` a leader first hands off
  // to the most caught-up voter and waits up to one election timeout.
  void stop(bool transfer_leadership);
  bool running() const { return running_.load(); }

  // --- the mailbox (any thread) ---
  void step(raftpb::Message m);
  // Proposes one entry carrying request `id`; a refusal reaches on_rejected.
  void propose(std::string data, uint64_t id);
  void read_index(std::string ctx);
  // Runs `task` on the driver thread, in order with the rest of the mailbox.
  void post(std::function<void()> task);
  // Asks the core to hand leadership to `to` (when this member leads).
  void transfer_leadership(uint64_t to);
  // ... to the voter whose log matches the most of this leader's (stop()).
  void transfer_leadership_to_best();
  // A completely received state machine, to install when the core hands the
  // matching snapshot over in a Ready.
  void queue_install(std::unique_ptr<storage::SnapshotInstaller> installer);
  // The transport lost messages to `peer` (Raft probes again).
  void report_unreachable(uint64_t peer);

  // One turn of the loop at time `now`: the mailbox, ticks due, every Ready,
  // the hooks.  The driver thread's body; a test drives it directly, with
  // no thread started (start() not called).
  void turn(Clock::time_point now);

  // --- what the driver knows (any thread) ---
  uint64_t leader() const { return leader_.load(); }
  uint64_t term() const { return term_.load(); }
  uint64_t last_index() const { return last_index_.load(); }
  // The highest index this member knows committed (its hard state's).
  uint64_t committed() const { return committed_.load(); }

 private:
  struct Inbox {
    std::vector<raftpb::Message> messages;
    std::vector<std::pair<std::string, uint64_t>> proposals;  // data, request id
    std::vector<std::string> reads;                           // read contexts
    std::vector<std::pair<uint64_t, bool>> snapshot_reports;  // peer, failed
    std::vector<uint64_t> unreachable;
    std::vector<std::unique_ptr<storage::SnapshotInstaller>> installs;
    std::vector<std::function<void()>> tasks;
    bool transfer_to_best = false;  // to the most caught-up voter (stopping)
    uint64_t transfer_to = 0;       // to this member
    bool empty() const {
      return messages.empty() && proposals.empty() && reads.empty() && snapshot_reports.empty() &&
             unreachable.empty() && installs.empty() && tasks.empty() && !transfer_to_best &&
             transfer_to == 0;
    }
  };

  void run();
  void handle_inbox(Inbox& in, Clock::time_point now);
  Inbox take_inbox();
  void drain_ready();
  void handle_ready(raft::Ready& rd);
  void send(std::vector<raftpb::Message> msgs);
  void maybe_snapshot();
  // The first election after start (--initial-election-tick-advance, and a
  // fresh cluster's designated first candidate).  Returns true once done.
  bool maybe_hasten_first_election();
  void notify();

  const DriverOptions options_;
  raft::Raft& raft_;
  storage::MemberStorage& storage_;
  RaftTransport& transport_;
  metrics::Counter& leader_changes_;
  metrics::Histogram& fsync_seconds_;
  metrics::Histogram& entries_per_save_;
  const DriverHooks hooks_;

  std::mutex mu_;  // guards inbox_
  std::condition_variable cv_;
  Inbox inbox_;

  std::atomic<uint64_t> leader_{0}, term_{0}, last_index_{0}, committed_{0};
  std::atomic<bool> running_{false};
  // Driver thread only.
  std::unique_ptr<storage::SnapshotInstaller> pending_install_;
  // A MsgSnap was stepped this turn: the core takes pending_install_ in this
  // turn's Ready or refused the snapshot (a stale term, an older index).
  bool snapshot_stepped_ = false;
  uint64_t snapshot_index_ = 0;
  // Linearizable reads that arrive in one turn share one ReadIndex: one
  // heartbeat round on the leader (one MsgReadIndex from a follower)
  // confirms all of them.  Keyed by the batch's context, which names this
  // member and this process (a leader may still answer a context sent by
  // this member's previous incarnation: it must not match a new batch).
  // A batch the leader has not answered is asked again every
  // kReadRetryEvery, and at once when a new leader is known: the request
  // (or its answer) is lost when the leader changes, a partition drops it,
  // or no leader was known when it was asked (etcd 3.5 retries every
  // 500 ms too).  The leader ignores a context it is already confirming.
  struct ReadBatch {
    std::vector<std::string> contexts;  // the reads' own contexts
    Clock::time_point sent;             // first asked
    Clock::time_point asked;            // last asked
    uint64_t leader = 0;                // the leader known when last asked
  };
  static constexpr auto kReadRetryEvery = std::chrono::milliseconds(500);
  void retry_read_batches(Clock::time_point now);
  std::map<std::string, ReadBatch> read_batches_;
  uint64_t read_batch_seq_ = 0;
  const uint64_t incarnation_;
  void send_read_batch(std::vector<std::string> contexts, Clock::time_point now);
  std::vector<raft::ReadState> expand_read_states(const std::vector<raft::ReadState>& batches);
  Clock::time_point next_tick_{}, next_housekeeping_{}, started_{};
  bool first_election_pending_ = true;
  std::thread thread_;
};

}  // namespace muster::server
