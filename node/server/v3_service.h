// node/server/v3_service.h: etcd 3.4's v3 API (the six etcdserverpb
// services) as one implementation that knows no transport.
//
// Who uses it: the JSON gateway (node/server/v3_api.h) and the gRPC adapter
// (node/server/v3_grpc.h) both parse their wire format into the request
// messages of api/etcdserverpb/rpc.proto, call the method here and encode
// the response message (or the error) their way.  Everything the service
// needs from the running member comes through MemberApi.
//
// Unary methods take a request and complete `done(status, response)` once,
// from any thread (often the driver's apply thread, or at once on the
// caller's thread).  A non-ok status is etcd's error: its code is the gRPC
// code (storage::Code values are gRPC codes) and its message etcd's text,
// because clients match on both (research/grpc.md).  Every response carries
// a header with cluster_id, member_id and raft_term; the revision as etcd
// sets it (the Cluster service's headers have none, as etcd's).
//
// Streams: Watch is a WatchSession writing to a WatchSink; LeaseKeepAlive is
// lease_keepalive() per request; Snapshot writes to a SnapshotSink.
//
// Threads: every method is thread-safe and never blocks on Raft.  Timeouts
// and watch progress notifications run on this object's timer thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "base/metrics.h"
#include "node/server/member_api.h"

namespace google::protobuf {
class Descriptor;
class Message;
}  // namespace google::protobuf

namespace muster::server {

class V3Service {
 public:
  struct Options {
    // --max-request-bytes: a write whose replicated request is larger fails
    // with "etcdserver: request is too large" (etcd's default 1.5 MiB).  A
    // watch created with fragment=true has responses larger than this split.
    std::size_t max_request_bytes = 1536 * 1024;
    // --quota-backend-bytes (etcd's default: 2 GiB; <= 0 = that default).
    int64_t quota_backend_bytes = 2LL << 30;
    // --max-txn-ops.
    int max_txn_ops = 128;
    // A proposal or read barrier not answered by then fails with
    // "etcdserver: request timed out" (etcd: 5 s + 2 x election timeout).
    std::chrono::milliseconds request_timeout{7'000};
    // How long health() waits for its linearizable read.
    std::chrono::milliseconds health_timeout{7'000};
    // Interval of progress notifications for watches created with
    // progress_notify (etcd's default is 10 minutes).
    std::chrono::milliseconds watch_progress_interval{600'000};
    // What Status and /version report.
    std::string server_version = "3.4.0";
    std::string cluster_version = "3.4.0";
  };

  using Status = storage::Status;
  template <class Resp>
  using Done = std::function<void(Status, Resp)>;

  // REQUIRES: member and metrics outlive this object; no MemberApi callback
  // of a request made here runs after it is destroyed.
  V3Service(MemberApi& member, Options options, metrics::Registry& metrics);
  ~V3Service();
  V3Service(const V3Service&) = delete;
  V3Service& operator=(const V3Service&) = delete;

  const Options& options() const;
  MemberApi& member();
  // Called by a transport as each request arrives: refreshes, at most every
  // 10 ms, the identity the headers carry.
  void request_arrived();

  // --- KV
  void range(const pb::RangeRequest& req, Done<pb::RangeResponse> done);
  void put(const pb::PutRequest& req, Done<pb::PutResponse> done);
  void delete_range(const pb::DeleteRangeRequest& req, Done<pb::DeleteRangeResponse> done);
  void txn(const pb::TxnRequest& req, Done<pb::TxnResponse> done);
  void compact(const pb::CompactionRequest& req, Done<pb::CompactionResponse> done);
  // --- Lease
  void lease_grant(const pb::LeaseGrantRequest& req, Done<pb::LeaseGrantResponse> done);
  void lease_revoke(const pb::LeaseRevokeRequest& req, Done<pb::LeaseRevokeResponse> done);
  // One keepalive of the LeaseKeepAlive stream: a lease that does not exist
  // answers TTL 0 (not an error), as etcd's stream does.
  void lease_keepalive(const pb::LeaseKeepAliveRequest& req, Done<pb::LeaseKeepAliveResponse> done);
  void lease_time_to_live(const pb::LeaseTimeToLiveRequest& req,
                          Done<pb::LeaseTimeToLiveResponse> done);
  void lease_leases(const pb::LeaseLeasesRequest& req, Done<pb::LeaseLeasesResponse> done);
  // --- Cluster
  void member_add(const pb::MemberAddRequest& req, Done<pb::MemberAddResponse> done);
  void member_remove(const pb::MemberRemoveRequest& req, Done<pb::MemberRemoveResponse> done);
  void member_update(const pb::MemberUpdateRequest& req, Done<pb::MemberUpdateResponse> done);
  void member_list(const pb::MemberListRequest& req, Done<pb::MemberListResponse> done);
  void member_promote(const pb::MemberPromoteRequest& req, Done<pb::MemberPromoteResponse> done);
  // --- Maintenance
  void alarm(const pb::AlarmRequest& req, Done<pb::AlarmResponse> done);
  void status(const pb::StatusRequest& req, Done<pb::StatusResponse> done);
  void defragment(const pb::DefragmentRequest& req, Done<pb::DefragmentResponse> done);
  void hash(const pb::HashRequest& req, Done<pb::HashResponse> done);
  void hash_kv(const pb::HashKVRequest& req, Done<pb::HashKVResponse> done);
  void move_leader(const pb::MoveLeaderRequest& req, Done<pb::MoveLeaderResponse> done);
  // --- Auth (authentication is never enabled yet)
  void auth_enable(const pb::AuthEnableRequest& req, Done<pb::AuthEnableResponse> done);
  void auth_disable(const pb::AuthDisableRequest& req, Done<pb::AuthDisableResponse> done);
  void authenticate(const pb::AuthenticateRequest& req, Done<pb::AuthenticateResponse> done);
  void user_add(const pb::AuthUserAddRequest& req, Done<pb::AuthUserAddResponse> done);
  void user_get(const pb::AuthUserGetRequest& req, Done<pb::AuthUserGetResponse> done);
  void user_list(const pb::AuthUserListRequest& req, Done<pb::AuthUserListResponse> done);
  void user_delete(const pb::AuthUserDeleteRequest& req, Done<pb::AuthUserDeleteResponse> done);
  void user_change_password(const pb::AuthUserChangePasswordRequest& req,
                            Done<pb::AuthUserChangePasswordResponse> done);
  void user_grant_role(const pb::AuthUserGrantRoleRequest& req,
                       Done<pb::AuthUserGrantRoleResponse> done);
  void user_revoke_role(const pb::AuthUserRevokeRoleRequest& req,
                        Done<pb::AuthUserRevokeRoleResponse> done);
  void role_add(const pb::AuthRoleAddRequest& req, Done<pb::AuthRoleAddResponse> done);
  void role_get(const pb::AuthRoleGetRequest& req, Done<pb::AuthRoleGetResponse> done);
  void role_list(const pb::AuthRoleListRequest& req, Done<pb::AuthRoleListResponse> done);
  void role_delete(const pb::AuthRoleDeleteRequest& req, Done<pb::AuthRoleDeleteResponse> done);
  void role_grant_permission(const pb::AuthRoleGrantPermissionRequest& req,
                             Done<pb::AuthRoleGrantPermissionResponse> done);
  void role_revoke_permission(const pb::AuthRoleRevokePermissionRequest& req,
                              Done<pb::AuthRoleRevokePermissionResponse> done);

  // etcd 3.4's /health: unhealthy without a leader or when a linearizable
  // read does not pass within health_timeout.
  void health(std::function<void(bool)> done);

  // --- the unary methods by name, for transports that route generically.
  struct UnaryMethod {
    const google::protobuf::Descriptor* request = nullptr;
    const google::protobuf::Descriptor* response = nullptr;
    std::function<void(V3Service&, const google::protobuf::Message& req,
                       std::function<void(Status, const google::protobuf::Message& resp)>)>
        call;
  };
  // "KV/Range", "Maintenance/Status", ... (etcd's service and method names);
  // nullptr for an unknown name or a streaming method.
  static const UnaryMethod* unary(std::string_view service_method);
  static const std::map<std::string, UnaryMethod, std::less<>>& unary_methods();

  // --- Watch
  // Where a watch stream's responses go.  send() is called under the
  // session's lock, in order; it must not block or call back into the
  // session.  queued_bytes() is what the transport holds unsent (0 if it
  // cannot tell): a session whose sink holds more than `max_queued` bytes
  // after a send is closed with sink->close(Unavailable) instead of
  // buffering without bound.
  class WatchSink {
   public:
    virtual ~WatchSink() = default;
    virtual void send(const pb::WatchResponse& r) = 0;
    // The stream ends from this side: the server stops, or the client is too
    // slow.  Not called after WatchSession::close().
    virtual void close(const Status& why) = 0;
    virtual std::size_t queued_bytes() const { return 0; }
  };

  class WatchSession {
   public:
    virtual ~WatchSession() = default;
    // One request of the stream: create (many watchers per stream, chosen
    // or automatic watch_id), cancel (answered with canceled=true) or
    // progress (a header-only answer with watch_id -1).
    virtual void request(const pb::WatchRequest& r) = 0;
    // The client went away: drops every watcher.  Idempotent.
    virtual void close() = 0;
  };
  // Opens a stream.  The service owns the session until close() (or its own
  // destruction), so the transport keeps it weakly.  `max_queued`: see
  // WatchSink; 0 = no limit.
  std::weak_ptr<WatchSession> watch(std::shared_ptr<WatchSink> sink, std::size_t max_queued = 0);

  // --- Snapshot
  // A server stream of a consistent dump of the member's state: chunks of
  // the dump in `blob`, `remaining_bytes` counting down, then a last message
  // with the 32-byte SHA-256 of everything before it (etcdctl's `snapshot
  // save` checks it).  The dump is padded to a multiple of 512 bytes.
  class SnapshotSink {
   public:
    virtual ~SnapshotSink() = default;
    virtual void send(const pb::SnapshotResponse& r) = 0;
    virtual void finish(const Status& s) = 0;
    virtual std::size_t queued_bytes() const { return 0; }
    virtual bool cancelled() const = 0;
  };
  void snapshot(const pb::SnapshotRequest& req, std::shared_ptr<SnapshotSink> sink);

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// etcd's texts for errors the transports raise themselves.
inline constexpr const char* kNoLeader = "etcdserver: no leader";
inline constexpr const char* kServerStopped = "etcdserver: server stopped";

}  // namespace muster::server
