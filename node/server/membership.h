// node/server/membership.h: the cluster's configuration as this member
// applies it — checking a requested change, applying committed ones, and
// keeping the Raft core, the member list and the peer transport in step.
//
// A membership change travels in three steps (docs/operations.md has the
// user's view):
//   1. check: MemberServer::change_member asks check() on the driver thread,
//      against the applied configuration and etcd 3.4's
//      --strict-reconfig-check rules, which yields the ConfChange to propose
//      (a new member's ID is chosen here, as etcd does);
//   2. Raft replicates the ConfChange entry;
//   3. apply: every member decides again, from applied state only, whether
//      the change still holds (a racing change may have taken the URLs);
//      one that holds changes the Raft configuration, the member list and
//      the transport's peers; one that does not answers with the store's
//      error and changes nothing, so every member stays in step.
//
// Threads: everything runs on the driver thread (the Raft core is touched
// here), except is_learner(), which any thread may read.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>

#include "node/raft/raft.h"
#include "node/storage/kv_store.h"
#include "node/storage/member_storage.h"
#include "node/storage/pb.h"
#include "node/storage/status.h"

namespace muster::server {

namespace pb = ::muster::pb;
class Transport;

class Membership {
 public:
  struct Options {
    uint64_t member_id = 0;
    // --strict-reconfig-check: refuse a change that would leave fewer
    // started voters than a quorum needs, or that this member cannot judge
    // (not connected to every voter for kHealthInterval).
    bool strict_reconfig_check = true;
    // Called once, when this member learns it has been removed ("the log",
    // "a received snapshot"): the process should stop.
    std::function<void(const char* learned_from)> on_removed;
  };
  // etcd's HealthInterval: how long a voter must have been connected.
  static constexpr std::chrono::seconds kHealthInterval{5};

  // REQUIRES: storage and transport outlive this object.
  Membership(Options options, storage::MemberStorage& storage, Transport& transport);

  // The configuration the Raft core started with.
  void load(const raftpb::ConfState& cs);

  // Checks a membership request (member_add/remove/update/promote) against
  // the applied configuration and fills in the ConfChange to propose; an
  // error refuses it with etcd's text.  A promotion may only be checked by
  // the leader (it reads the learner's progress from `raft`).
  storage::Status check(pb::InternalRequest& req, raftpb::ConfChange* cc, const raft::Raft& raft);

  // Applies the committed ConfChange entry `e` (see step 3 above).  Returns
  // the apply result for the waiting request, whose ID the ConfChange
  // carries (0: nobody waits).
  struct Applied {
    uint64_t request_id = 0;
    storage::KvStore::ApplyResult result;
  };
  Applied apply(const raftpb::Entry& e, raft::Raft& raft);

  // After a snapshot install: the received state may be newer than the
  // snapshot's index, so membership changes in between are in the state but
  // not in the core's configuration.  Brings the core, the transport and
  // the learner flag to the configuration stored with the installed state.
  // `snapshot_cs` is the configuration the snapshot's metadata carries.
  void adopt_installed(raft::Raft& raft, const raftpb::ConfState& snapshot_cs);

  // Tells the transport every member's peer URLs and the removed members.
  void sync_peers();
  // Samples which peers are connected (etcd's ActiveSince); the strict
  // checks read it.
  void track_peer_activity();

  const raftpb::ConfState& conf_state() const { return conf_state_; }
  bool is_learner() const { return is_learner_.load(); }

 private:
  void note_conf_state();
  bool connected_since(uint64_t id, std::chrono::steady_clock::time_point cutoff) const;

  const Options options_;
  storage::MemberStorage& storage_;
  Transport& transport_;
  raftpb::ConfState conf_state_;
  std::atomic<bool> is_learner_{false};
  // When each peer's connection has been up since (driver thread).
  std::map<uint64_t, std::chrono::steady_clock::time_point> active_since_;
};

}  // namespace muster::server
