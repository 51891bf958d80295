// node/server/leader_chores.h: the member's periodic work beside Raft
// (etcd's EtcdServer background jobs):
//   - lease expiry, by the leader's clock: the leader proposes a LeaseRevoke
//     for every expired lease, so every member deletes the same keys at the
//     same revision (a revoke in flight is not proposed again until it is
//     applied or a request timeout passes);
//   - auto compaction (--auto-compaction-mode/-retention), by the leader, as
//     etcd's compactors: revision mode looks every 5 minutes, periodic mode
//     samples the revision every tenth of the period and compacts to the
//     sample one period old;
//   - publish: once a leader is known, the member proposes its name and
//     client URLs (etcd's publish) and may serve clients once they are in
//     the applied member list;
//   - the database's size on disk, once a second, for status().
//
// Threads: run() and maybe_publish() on the driver thread; published() and
// db_size() from any thread.  Proposals go through the member's ordinary
// propose path (`Propose`).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "node/server/member_api.h"
#include "node/storage/member_storage.h"

namespace muster::server {

class LeaderChores {
 public:
  using Clock = std::chrono::steady_clock;
  struct Options {
    uint64_t member_id = 0;
    std::string name;
    std::vector<std::string> client_urls;
    uint32_t heartbeat_ms = 100;
    std::chrono::milliseconds request_timeout{7000};
    // periodic keeps the revisions of the last `period`; revision keeps the
    // last `revisions` revisions.  Both 0 = off.
    std::chrono::milliseconds auto_compaction_period{0};
    int64_t auto_compaction_revisions = 0;
  };
  // Proposes `req` through Raft; `done` runs once with the apply result, or
  // an error after `timeout`.
  using Propose = std::function<void(pb::InternalRequest req, std::chrono::milliseconds timeout,
                                     MemberApi::ApplyDone done)>;

  LeaderChores(Options options, storage::MemberStorage& storage, Propose propose);

  // Driver thread, every housekeeping turn.
  // `term`: the Raft term this member leads in (when `leader`); the lease
  // revocations it proposes carry it (InternalRequest.expiry_term).
  void run(Clock::time_point now, bool leader, bool leader_known, uint64_t term = 0);
  // Driver thread, after every loop turn: publishes as soon as a leader is
  // known (clients wait for it).
  void maybe_publish(bool leader_known);

  bool published() const { return published_.load(); }
  int64_t db_size() const { return db_size_.load(); }
  void measure_db_size();

 private:
  void expire_leases(Clock::time_point now, uint64_t term);
  void maybe_auto_compact(Clock::time_point now);

  const Options options_;
  storage::MemberStorage& storage_;
  const Propose propose_;

  std::atomic<bool> published_{false}, publishing_{false};
  std::atomic<int64_t> db_size_{0};
  // Driver thread only.
  std::map<int64_t, Clock::time_point> revoking_;                       // lease -> when proposed
  std::deque<std::pair<Clock::time_point, int64_t>> revision_samples_;  // oldest first
  Clock::time_point next_compaction_check_{};
  Clock::time_point next_db_size_{};
};

}  // namespace muster::server
