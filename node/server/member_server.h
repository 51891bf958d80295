// node/server/member_server.h: the running member behind the client APIs
// (etcd's EtcdServer): MemberApi over the Raft driver, the state machine
// and the cluster's configuration.
//
// What it holds, one job per piece:
//   - the storage (LevelDB: Raft log and state machine, node/storage/);
//   - the Raft core and its driver thread (driver.h: the Ready loop);
//   - the applier (applier.h: committed entries -> state machine -> answers);
//   - membership (membership.h: checking and applying configuration changes);
//   - the leader's chores (leader_chores.h: lease expiry, compaction,
//     publish, database size);
//   - the waits (waits.h: proposals and reads waiting for their answer);
//   - the forwarder (leader_forward.h: requests only the leader answers).
// It wires them together and answers MemberApi's calls; the rules live in
// the pieces.
//
// Threads: MemberApi methods from any thread; the driver's hooks run on the
// driver thread (apply, membership, chores); transport handlers on the
// transport's threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/metrics.h"
#include "node/raft/raft.h"
#include "node/server/applier.h"
#include "node/server/driver.h"
#include "node/server/initial_log.h"
#include "node/server/leader_chores.h"
#include "node/server/leader_forward.h"
#include "node/server/member_api.h"
#include "node/server/membership.h"
#include "node/server/peer_reachability.h"
#include "node/server/waits.h"
#include "node/storage/member_storage.h"

namespace muster::server {

class Transport;
class SnapshotSink;

// The Raft core keeps a pointer to its Storage for its whole life, but a
// snapshot install replaces the member's RaftLog object.  This view always
// forwards to the current one.
class LogView final : public raft::Storage {
 public:
  explicit LogView(storage::MemberStorage& ms) : ms_(ms) {}
  raft::StorageError initial_state(raft::InitialState* out) const override {
    return ms_.log().initial_state(out);
  }
  raft::StorageError entries(uint64_t lo, uint64_t hi, uint64_t max_bytes,
                             std::vector<raftpb::Entry>* out) const override {
    return ms_.log().entries(lo, hi, max_bytes, out);
  }
  raft::StorageError term(uint64_t i, uint64_t* out) const override {
    return ms_.log().term(i, out);
  }
  uint64_t first_index() const override { return ms_.log().first_index(); }
  uint64_t last_index() const override { return ms_.log().last_index(); }
  raft::StorageError snapshot(raftpb::Snapshot* out) const override {
    return ms_.log().snapshot(out);
  }

 private:
  storage::MemberStorage& ms_;
};

struct MemberServerOptions {
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
  bool initial_election_tick_advance = true;
  bool unsafe_no_fsync = false;
  // --force-new-cluster: on an existing data dir, remove every other member.
  bool force_new_cluster = false;
  // Auto compaction (--auto-compaction-mode/-retention): leader_chores.h.
  std::chrono::milliseconds auto_compaction_period{0};
  int64_t auto_compaction_revisions = 0;
  // Published through Raft once a leader is known (etcd's publish).
  std::vector<std::string> client_urls;
  bool strict_reconfig_check = true;
  // --auth-token-ttl, in milliseconds.
  int64_t auth_token_ttl_ms = 300'000;
  // Called once (from the driver thread) when this member has applied its own
  // removal from the cluster: the process should stop.
  std::function<void()> on_removed;
};

class MemberServer final : public MemberApi {
 public:
  // Opens the storage under options.data_dir.  When the storage is empty and
  // `initial` is not empty, writes the bootstrap log (initial_log.h).
  // Installs its handlers on the transport.  Throws std::runtime_error on
  // storage failure.
  MemberServer(MemberServerOptions options, std::vector<InitialMember> initial,
               Transport& transport, metrics::Registry& metrics);
  ~MemberServer() override;

  void start();
  // Stops the driver; with `transfer_leadership` a leader first hands off to
  // the most caught-up voter and waits up to one election timeout.  Everyone
  // still waiting hears "etcdserver: server stopped".
  void stop(bool transfer_leadership);

  // --- MemberApi ---
  void propose(pb::InternalRequest req, ApplyDone done) override;
  void read_barrier(std::function<void(storage::Status)> done) override;
  storage::KvStore& kv() override { return storage_->kv(); }
  void lease_keepalive(int64_t id, std::function<void(storage::Status, int64_t)> done) override;
  void lease_time_to_live(
      const pb::LeaseTimeToLiveRequest& req,
      std::function<void(storage::Status, pb::LeaseTimeToLiveResponse)> done) override;
  void move_leader(uint64_t target, std::function<void(storage::Status)> done) override;
  void change_member(pb::InternalRequest req, ApplyDone done) override;
  MemberStatus status() const override;
  uint64_t subscribe(std::function<void(const std::vector<pb::Event>&)> cb) override;
  void unsubscribe(uint64_t id) override;
  // Maintenance.Snapshot reads on its own thread: pinned, so an install
  // from the leader waits for the dump instead of closing its database.
  std::unique_ptr<storage::SnapshotWriter> snapshot_writer() override {
    return storage_->pinned_snapshot_writer();
  }
  storage::Status defragment() override;

  // True once a leader is known (for /health and sd_notify).
  bool has_leader() const { return driver_->leader() != 0; }
  // True once this member's name and client URLs are in the applied member
  // list (etcd's publish): then it may serve clients.
  bool published() const { return chores_->published(); }
  uint64_t id() const { return options_.member_id; }
  bool existing_state() const { return existing_state_; }
  // This member's removal is in its applied state (a restart after removal).
  bool removed_from_cluster() const { return storage_->kv().member_removed(options_.member_id); }
  // The leader's view of how long each member has gone unheard
  // (peer_reachability.h); empty on a follower.
  ReachabilityView reachability() const { return reachability_->view(); }
  uint32_t election_ms() const { return options_.election_ms; }

 private:
  struct LeaderMove {
    uint64_t target;
    std::function<void(storage::Status)> done;
    std::chrono::steady_clock::time_point deadline;
  };

  // Registers `done` and hands `req` (its ID assigned here) to the driver.
  void submit(pb::InternalRequest req, std::chrono::milliseconds timeout, ApplyDone done);
  uint64_t next_request_id();
  // Driver thread: checks a membership request and proposes its ConfChange
  // (a follower forwards promotions to the leader).
  void start_member_change(pb::InternalRequest req);
  // This member's answer to a request another member forwarded to its
  // leader (LeaderForwarder::Serve).
  void serve_forwarded(transportpb::ForwardKind kind, std::string body,
                       LeaderForwarder::Reply reply);
  // The transport's snapshot handler: a sink that builds the received state
  // machine next to the live one; complete, it is handed to the driver.
  std::unique_ptr<SnapshotSink> snapshot_sink(const raftpb::Message& m);
  // This member leads and has applied an entry of its own term (the empty
  // entry every new leader appends): etcd promotes its lessor only then.
  // Before it, a revocation the previous leader proposed may still be
  // applied, so a keepalive answered now could be cut short by it.
  bool lessor_primary() const;
  // Runs `then(true)` once this member has confirmed it still leads (a
  // ReadIndex round: a leader stuck on its disk or cut off cannot) and its
  // lessor is primary; `then(false)` when it cannot.  The lease clock lives
  // on the leader alone, so a member that only believes it leads must not
  // refresh or report a lease (etcd 3.5's ensureLeadership before renew).
  void as_lessor(std::function<void(bool)> then);
  // Answers MoveLeader waiters whose transferee leads now or whose deadline
  // passed.
  void finish_leader_moves();
  // Once: logs that this member was removed and calls options_.on_removed.
  void note_removed(const char* learned_from);
  DriverHooks hooks();

  const MemberServerOptions options_;
  Transport& transport_;
  std::unique_ptr<storage::MemberStorage> storage_;
  std::unique_ptr<LogView> log_view_;
  std::unique_ptr<raft::Raft> raft_;
  bool existing_state_ = false;
  std::atomic<uint64_t> request_seq_{0};
  std::atomic<uint64_t> read_seq_{0};
  std::atomic<bool> removed_{false};

  Waits waits_;
  std::unique_ptr<Membership> membership_;
  std::unique_ptr<PeerReachability> reachability_;
  std::unique_ptr<Applier> applier_;
  std::unique_ptr<LeaderChores> chores_;
  std::unique_ptr<LeaderForwarder> forwarder_;
  std::unique_ptr<Driver> driver_;

  std::mutex moves_mu_;  // guards leader_moves_
  std::vector<LeaderMove> leader_moves_;
};

}  // namespace muster::server
