// node/server/member_api.h: what the client-facing layers (the v3 JSON
// gateway, the v2 keys API, health, the proxy's local answers) need from a
// running member, and nothing else.
//
// The Raft driver (node/server/raft_node.h) implements it; the API handlers
// are written against it, so they know nothing of Raft, peers or threads.
// Every method is thread-safe; callbacks run on an arbitrary thread (usually
// the driver's apply thread) and must not block.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "node/storage/kv_store.h"
#include "node/storage/pb.h"
#include "node/storage/snapshot.h"
#include "node/storage/status.h"

namespace muster::server {

namespace pb = ::muster::pb;

// What every v3 response header and /v3/maintenance/status report.
struct MemberStatus {
  uint64_t cluster_id = 0;
  uint64_t member_id = 0;
  uint64_t leader = 0;  // 0 = no leader known
  uint64_t raft_term = 0;
  uint64_t raft_index = 0;          // last index in the local log
  uint64_t raft_applied_index = 0;  // applied to the state machine
  int64_t revision = 0;             // current MVCC revision
  int64_t db_size = 0;              // bytes on disk of the member's database
  bool is_learner = false;
  std::string version;  // e.g. "3.4.0" cluster API version we speak
};

// Errors use etcd's texts (research/ecosystem.md section 9), e.g.
// "etcdserver: request timed out", "etcdserver: no leader",
// "etcdserver: too many requests", "etcdserver: leader changed",
// "etcdserver: server stopped", so clients that match on them keep working.
class MemberApi {
 public:
  virtual ~MemberApi() = default;

  using ApplyDone = std::function<void(storage::Status, storage::KvStore::ApplyResult)>;
  // Replicates `req` through Raft and applies it; `done` runs once with the
  // local apply result (req.ID is assigned by the member), or an error.
  virtual void propose(pb::InternalRequest req, ApplyDone done) = 0;

  // Linearizable read barrier (ReadIndex): `done(ok)` runs once this member
  // has applied everything committed before the call; reads of kv() after
  // that are linearizable.
  virtual void read_barrier(std::function<void(storage::Status)> done) = 0;

  // The local state machine, for reads (serializable unless preceded by
  // read_barrier).  Non-const only for the leader-side lease methods.
  virtual storage::KvStore& kv() = 0;

  // Refreshes a lease on the leader (forwarded there when this member is not
  // the leader).  `done(status, ttl)`.
  virtual void lease_keepalive(int64_t id, std::function<void(storage::Status, int64_t)> done) = 0;

  // A lease's remaining TTL, granted TTL and (req.keys) attached keys, from
  // the leader, whose clock is the lease's (forwarded there when this member
  // is not the leader).  kNotFound "etcdserver: requested lease not found"
  // for a lease the leader does not know.
  virtual void lease_time_to_live(
      const pb::LeaseTimeToLiveRequest& req,
      std::function<void(storage::Status, pb::LeaseTimeToLiveResponse)> done) = 0;

  // Hands leadership to voter `target` and answers once it leads (etcd's
  // MoveLeader): kFailedPrecondition "etcdserver: not leader" when this
  // member does not lead, "etcdserver: bad leader transferee" when target
  // is no voting member, Unavailable "etcdserver: request timed out, leader
  // transfer took too long" when it does not happen in time.
  virtual void move_leader(uint64_t target, std::function<void(storage::Status)> done) = 0;

  // A membership change: `req` carries exactly one of member_add (the new
  // member's peer URLs and isLearner; the ID is assigned here),
  // member_remove, member_update or member_promote.  It is checked against
  // the current configuration (--strict-reconfig-check included), replicated
  // as a Raft configuration change and applied; `done` gets the apply result
  // (its response holds the member_* answer with the new member list) or
  // etcd's error ("etcdserver: member not found", "... not enough started
  // members", ...).
  virtual void change_member(pb::InternalRequest req, ApplyDone done) = 0;

  virtual MemberStatus status() const = 0;

  // Applied changes, in revision order, as they are applied: `cb(events)`.
  // Returns a subscription id for unsubscribe().  Subscribers see every event
  // applied after subscribe() returns, except when the state jumps (a
  // snapshot install): then `cb` gets an empty batch, and the revisions up to
  // kv().revision() are in the store only.
  virtual uint64_t subscribe(std::function<void(const std::vector<pb::Event>&)> cb) = 0;
  virtual void unsubscribe(uint64_t id) = 0;

  // A consistent dump of the member's state machine as of now (what the
  // Maintenance Snapshot stream sends); nullptr when this member cannot
  // provide one.
  virtual std::unique_ptr<storage::SnapshotWriter> snapshot_writer() { return nullptr; }
  // Reclaims space in the member's database files (Maintenance Defragment).
  virtual storage::Status defragment() { return {}; }
};

}  // namespace muster::server
