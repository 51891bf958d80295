// node/server/raft_node.h: the running member's core: the Raft driver loop
// over the LevelDB storage, wired to the peer transport.
//
// Threads: one driver thread owns the raft::Raft object, the storage's write
// side and the apply loop.  Everything else (client handlers, the transport)
// talks to it through a mailbox.  The loop follows the Ready contract:
//   1. take a Ready from the core;
//   2. a leader sends its messages first (it may replicate while its own
//      write is in flight); then the entries and hard state are written with
//      one synced LevelDB write for the whole batch (group commit); then a
//      follower sends (its acks must not run ahead of its disk);
//   3. committed entries are applied to the state machine (configuration
//      changes included) and waiting proposals and reads are answered;
//   4. advance.
// Snapshots are taken every `snapshot_count` applied entries and the log
// prefix compacted; a follower too far behind receives the state machine as
// a stream (transport) and installs it atomically (storage).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "net/metrics.h"
#include "node/raft/raft.h"
#include "node/server/member_api.h"
#include "node/storage/member_storage.h"

namespace muster::server {

class Transport;
class SnapshotSink;

// The Raft core keeps a pointer to its Storage for its whole life, but a
// snapshot install replaces the member's RaftLog object.  This view always
// forwards to the current one.
class LogView final : public raft::Storage {
 public:
  explicit LogView(storage::MemberStorage*& ms) : ms_(ms) {}
  raft::StorageError initial_state(raft::InitialState* out) const override {
    return ms_->log().initial_state(out);
  }
  raft::StorageError entries(uint64_t lo, uint64_t hi, uint64_t max_bytes,
                             std::vector<raftpb::Entry>* out) const override {
    return ms_->log().entries(lo, hi, max_bytes, out);
  }
  raft::StorageError term(uint64_t i, uint64_t* out) const override {
    return ms_->log().term(i, out);
  }
  uint64_t first_index() const override { return ms_->log().first_index(); }
  uint64_t last_index() const override { return ms_->log().last_index(); }
  raft::StorageError snapshot(raftpb::Snapshot* out) const override {
    return ms_->log().snapshot(out);
  }

 private:
  storage::MemberStorage*& ms_;
};

struct RaftNodeOptions {
  std::string data_dir;
  std::string name;
  uint64_t member_id = 0;
  uint64_t cluster_id = 0;
  uint32_t heartbeat_ms = 100;
  uint32_t election_ms = 1000;
  uint64_t snapshot_count = 100000;
  uint64_t snapshot_catchup_entries = 5000;  // kept after compaction (etcd's value)
  uint32_t request_timeout_ms = 7000;        // etcd: 5 s + 2 x election timeout
  bool pre_vote = true;
  // --initial-election-tick-advance (etcd's default on): once a quorum of
  // voters is connected after start, skip all but two ticks of the first
  // election timeout, so a new cluster (or a restarted member) does not sit
  // out a whole timeout before the first election.
  bool initial_election_tick_advance = true;
  bool unsafe_no_fsync = false;
  // --force-new-cluster: on an existing data dir, remove every other member.
  bool force_new_cluster = false;
  // Auto compaction (--auto-compaction-mode/-retention), run by the leader:
  // periodic keeps the revisions of the last `period`; revision keeps the
  // last `revisions` revisions.  Both 0 = off.
  std::chrono::milliseconds auto_compaction_period{0};
  int64_t auto_compaction_revisions = 0;
  // Published through Raft once a leader is known (etcd's publish): the
  // member's name and client URLs, so every member lists them.
  std::vector<std::string> client_urls;
  // --strict-reconfig-check: refuse a membership change that would leave
  // fewer started voters than a quorum needs.
  bool strict_reconfig_check = true;
  // Promoting a learner is decided by the leader (only it knows how far the
  // learner is); a follower asks it through this (status from its answer).
  std::function<void(uint64_t leader, uint64_t member, std::function<void(storage::Status)>)>
      forward_promote;
  // Called once (from the driver thread) when this member has applied its own
  // removal from the cluster: the process should stop.
  std::function<void()> on_removed;
  // Leader forwarding of lease keepalives: client URL of a member by ID.
  std::function<void(uint64_t leader, int64_t lease, std::function<void(storage::Status, int64_t)>)>
      forward_keepalive;
  // Leader forwarding of LeaseTimeToLive (only the leader knows a lease's
  // remaining time).
  std::function<void(uint64_t leader, const pb::LeaseTimeToLiveRequest&,
                     std::function<void(storage::Status, pb::LeaseTimeToLiveResponse)>)>
      forward_time_to_live;
};

// The initial members of a new cluster (static bootstrap).
struct InitialMember {
  uint64_t id = 0;
  std::string name;
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;  // known for the local member only
};

class RaftNode final : public MemberApi {
 public:
  // Opens the storage under options.data_dir.  When the storage is empty and
  // `initial` is not empty, writes the bootstrap log: one ConfChangeAddNode
  // entry per initial member at term 1, committed (etcd's bootstrap).
  // Throws std::runtime_error on storage failure.
  RaftNode(RaftNodeOptions options, std::vector<InitialMember> initial, Transport& transport,
           metrics::Registry& metrics);
  ~RaftNode() override;

  void start();
  // Stops the loop; with `transfer_leadership` a leader first hands off to
  // the most caught-up voter and waits up to one election timeout.
  void stop(bool transfer_leadership);

  // --- MemberApi ---
  void propose(pb::InternalRequest req, ApplyDone done) override;
  void read_barrier(std::function<void(storage::Status)> done) override;
  storage::KvStore& kv() override { return storage_->kv(); }
  void lease_keepalive(int64_t id, std::function<void(storage::Status, int64_t)> done) override;
  void lease_time_to_live(
      const pb::LeaseTimeToLiveRequest& req,
      std::function<void(storage::Status, pb::LeaseTimeToLiveResponse)> done) override;
  void change_member(pb::InternalRequest req, ApplyDone done) override;
  MemberStatus status() const override;
  uint64_t subscribe(std::function<void(const std::vector<pb::Event>&)> cb) override;
  void unsubscribe(uint64_t id) override;
  std::unique_ptr<storage::SnapshotWriter> snapshot_writer() override {
    return storage_->snapshot_writer();
  }
  storage::Status defragment() override;

  // From the transport (any thread).
  void step(raftpb::Message m);
  // The transport's snapshot handler: a sink that builds the received state
  // machine next to the live one; complete, it is installed when the core
  // hands the matching snapshot over in a Ready.
  std::unique_ptr<SnapshotSink> snapshot_sink(const raftpb::Message& m);
  void queue_install(std::unique_ptr<storage::SnapshotInstaller> installer);

  // True once a leader is known (for /health and sd_notify).
  bool has_leader() const { return leader_.load() != 0; }
  // True once this member's name and client URLs are in the applied member
  // list (etcd's publish): then it may serve clients.
  bool published() const { return published_.load(); }
  uint64_t id() const { return options_.member_id; }
  bool existing_state() const { return existing_state_; }
  // This member's removal is in its applied state (a restart after removal).
  bool removed_from_cluster() const { return storage_->kv().member_removed(options_.member_id); }

 private:
  struct PendingProposal {
    ApplyDone done;
    std::chrono::steady_clock::time_point deadline;
  };
  struct PendingRead {
    std::function<void(storage::Status)> done;
    std::chrono::steady_clock::time_point deadline;
  };
  struct Inbox {
    std::vector<raftpb::Message> messages;
    std::vector<std::pair<std::string, uint64_t>> proposals;  // data, request id
    std::vector<std::string> reads;                           // read contexts
    std::vector<std::pair<uint64_t, bool>> snapshot_reports;  // peer, failed
    std::vector<uint64_t> unreachable;
    std::vector<std::unique_ptr<storage::SnapshotInstaller>> installs;
    std::vector<pb::InternalRequest> member_changes;  // request ID set
    bool transfer = false;
  };

  void run();
  // The first election after start (--initial-election-tick-advance, and a
  // fresh cluster's designated first candidate).  Returns true once done.
  bool maybe_hasten_first_election();
  void handle_ready(raft::Ready& rd);
  // Calls every subscriber with `events` (empty: the state jumped, see
  // MemberApi::subscribe).
  void publish_events(const std::vector<pb::Event>& events);
  void apply_entries(const std::vector<raftpb::Entry>& entries);
  void apply_conf_change(const raftpb::Entry& e);
  // Checks a membership change against the applied configuration and
  // builds its ConfChange; an error status refuses it.
  storage::Status check_member_change(pb::InternalRequest& req, raftpb::ConfChange* cc);
  void start_member_change(pb::InternalRequest req);
  // When each peer's connection has been up since (etcd's ActiveSince),
  // sampled by the driver; the strict reconfiguration checks read it.
  void track_peer_activity();
  bool connected_since(uint64_t id, std::chrono::steady_clock::time_point cutoff) const;
  static constexpr std::chrono::seconds kHealthInterval{5};  // etcd's HealthInterval
  void note_conf_state();                                    // is_learner_ from conf_state_
  void adopt_installed_configuration();
  void send(std::vector<raftpb::Message> msgs);
  void maybe_snapshot();
  void maybe_publish();
  void maybe_auto_compact();
  void measure_db_size();  // bytes under <data-dir>/member, for status()
  void expire_leases();
  void fail_timeouts();
  void sync_peers();
  void write_bootstrap(const std::vector<InitialMember>& initial);
  void force_new_cluster();
  uint64_t next_request_id();
  // The waiting proposal `id`'s callback, removed from the table (empty if
  // none waits: another member proposed it, or it timed out).
  ApplyDone take_pending(uint64_t id);
  // Answers the waiting proposal `id`, if any.
  void finish(uint64_t id, storage::Status st, storage::KvStore::ApplyResult result);
  void fail(uint64_t id, storage::Status st);
  // Once: logs that this member was removed and calls options_.on_removed.
  void note_removed(const char* learned_from);

  RaftNodeOptions options_;
  Transport& transport_;
  metrics::Registry& metrics_;
  std::unique_ptr<storage::MemberStorage> storage_;
  storage::MemberStorage* storage_ptr_ = nullptr;  // what log_view_ reads
  LogView log_view_{storage_ptr_};
  std::unique_ptr<raft::Raft> raft_;
  bool existing_state_ = false;

  mutable std::mutex mu_;  // guards inbox_, pending_*, subscribers_
  std::condition_variable cv_;
  Inbox inbox_;
  std::map<uint64_t, PendingProposal> pending_;
  std::map<std::string, PendingRead> reads_waiting_index_;    // ctx -> read
  std::multimap<uint64_t, PendingRead> reads_waiting_apply_;  // index -> read
  std::map<uint64_t, std::function<void(const std::vector<pb::Event>&)>> subscribers_;
  uint64_t next_subscriber_ = 1;
  // A completely received state machine waiting for its Ready.snapshot.
  std::unique_ptr<storage::SnapshotInstaller> pending_install_;

  std::atomic<uint64_t> leader_{0}, term_{0}, applied_{0}, last_index_{0};
  std::atomic<uint64_t> request_seq_;
  std::atomic<bool> running_{false};
  uint64_t snapshot_index_ = 0;
  raftpb::ConfState conf_state_;
  std::map<int64_t, std::chrono::steady_clock::time_point> revoking_;  // lease -> when proposed
  uint64_t read_seq_ = 0;
  std::atomic<bool> published_{false}, publishing_{false};
  std::atomic<bool> is_learner_{false}, removed_{false};
  std::map<uint64_t, std::chrono::steady_clock::time_point> active_since_;  // driver thread
  // Periodic compaction: (when, revision) samples, oldest first.
  std::deque<std::pair<std::chrono::steady_clock::time_point, int64_t>> revision_samples_;
  std::chrono::steady_clock::time_point next_compaction_check_{};
  std::chrono::steady_clock::time_point next_db_size_{};
  std::atomic<int64_t> db_size_{0};
  std::thread thread_;
};

}  // namespace muster::server
