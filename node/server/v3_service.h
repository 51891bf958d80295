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
//
// Auth (etcd 3.4's model, docs/security.md): every method takes the Caller
// the transport saw.  Its token (or, with --client-cert-auth, its
// certificate's CN) names the user; the checks are etcd's: reads and watches
// against the local auth state after the read barrier, writes at apply
// against the state at their own log position (node/storage/auth_store.h),
// member changes and Defragment/Hash/HashKV/Snapshot for root only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "base/metrics.h"
#include "node/server/member_api.h"

namespace google::protobuf {
class Descriptor;
class Message;
}  // namespace google::protobuf

namespace muster::server {

class JwtTokens;

// What a transport knows about who is calling.
struct Caller {
  // gRPC metadata `token` (or `authorization`); the gateway's HTTP
  // `Authorization` header.  Absent: no token was sent.
  std::optional<std::string> token;
  // The CN of the verified client certificate ("" without one).  Used as
  // the user when no token is given and --client-cert-auth is on.
  std::string common_name;
};

// etcd's minimum lease TTL for these timings: one and a half election
// timeouts, counted in whole heartbeat ticks, rounded up to a second.
int64_t min_lease_ttl_seconds(uint32_t heartbeat_ms, uint32_t election_ms);

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
    // A lease granted with a shorter TTL (zero and negative ones too) gets
    // this one, in seconds, as etcd's lessor does, so a lease outlives a
    // leader election: min_lease_ttl_seconds() of the member's
    // --heartbeat-interval and --election-timeout (2 s for etcd's defaults).
    int64_t min_lease_ttl = 2;
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
    // --client-cert-auth: a verified client certificate's CN is the user of
    // a request that carries no token (etcd's AuthInfoFromTLS).
    bool client_cert_auth = false;
    // --auth-token jwt,...: tokens are JWTs signed and verified with these
    // keys (node/server/jwt.h); null = simple tokens.
    std::shared_ptr<const JwtTokens> jwt;
    // --bcrypt-cost for the hashes of new passwords.
    int bcrypt_cost = 10;
    // Authenticate: after this many failures in a row for one user name,
    // each further attempt waits for an interval that doubles (from 1 s up
    // to 30 s); earlier attempts fail with "etcdserver: too many requests".
    int auth_failures_before_backoff = 3;
    // Password checks queued beyond this fail with "too many requests".
    int max_pending_password_checks = 64;
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
  void range(const pb::RangeRequest& req, Done<pb::RangeResponse> done, const Caller& caller = {});
  // The write requests are taken by value: they become the proposal's
  // payload without a copy when the caller moves them in.
  void put(pb::PutRequest req, Done<pb::PutResponse> done, const Caller& caller = {});
  void delete_range(pb::DeleteRangeRequest req, Done<pb::DeleteRangeResponse> done,
                    const Caller& caller = {});
  void txn(pb::TxnRequest req, Done<pb::TxnResponse> done, const Caller& caller = {});
  void compact(const pb::CompactionRequest& req, Done<pb::CompactionResponse> done,
               const Caller& caller = {});
  // --- Lease
  void lease_grant(const pb::LeaseGrantRequest& req, Done<pb::LeaseGrantResponse> done,
                   const Caller& caller = {});
  void lease_revoke(const pb::LeaseRevokeRequest& req, Done<pb::LeaseRevokeResponse> done,
                    const Caller& caller = {});
  // One keepalive of the LeaseKeepAlive stream: a lease that does not exist
  // answers TTL 0 (not an error), as etcd's stream does.
  void lease_keepalive(const pb::LeaseKeepAliveRequest& req, Done<pb::LeaseKeepAliveResponse> done,
                       const Caller& caller = {});
  void lease_time_to_live(const pb::LeaseTimeToLiveRequest& req,
                          Done<pb::LeaseTimeToLiveResponse> done, const Caller& caller = {});
  void lease_leases(const pb::LeaseLeasesRequest& req, Done<pb::LeaseLeasesResponse> done,
                    const Caller& caller = {});
  // --- Cluster
  void member_add(const pb::MemberAddRequest& req, Done<pb::MemberAddResponse> done,
                  const Caller& caller = {});
  void member_remove(const pb::MemberRemoveRequest& req, Done<pb::MemberRemoveResponse> done,
                     const Caller& caller = {});
  void member_update(const pb::MemberUpdateRequest& req, Done<pb::MemberUpdateResponse> done,
                     const Caller& caller = {});
  void member_list(const pb::MemberListRequest& req, Done<pb::MemberListResponse> done,
                   const Caller& caller = {});
  void member_promote(const pb::MemberPromoteRequest& req, Done<pb::MemberPromoteResponse> done,
                      const Caller& caller = {});
  // --- Maintenance
  void alarm(const pb::AlarmRequest& req, Done<pb::AlarmResponse> done, const Caller& caller = {});
  void status(const pb::StatusRequest& req, Done<pb::StatusResponse> done,
              const Caller& caller = {});
  void defragment(const pb::DefragmentRequest& req, Done<pb::DefragmentResponse> done,
                  const Caller& caller = {});
  void hash(const pb::HashRequest& req, Done<pb::HashResponse> done, const Caller& caller = {});
  void hash_kv(const pb::HashKVRequest& req, Done<pb::HashKVResponse> done,
               const Caller& caller = {});
  void move_leader(const pb::MoveLeaderRequest& req, Done<pb::MoveLeaderResponse> done,
                   const Caller& caller = {});
  // --- Auth (etcd 3.4's users, roles and permissions; docs/security.md)
  void auth_enable(const pb::AuthEnableRequest& req, Done<pb::AuthEnableResponse> done,
                   const Caller& caller = {});
  void auth_disable(const pb::AuthDisableRequest& req, Done<pb::AuthDisableResponse> done,
                    const Caller& caller = {});
  void authenticate(const pb::AuthenticateRequest& req, Done<pb::AuthenticateResponse> done,
                    const Caller& caller = {});
  void user_add(const pb::AuthUserAddRequest& req, Done<pb::AuthUserAddResponse> done,
                const Caller& caller = {});
  void user_get(const pb::AuthUserGetRequest& req, Done<pb::AuthUserGetResponse> done,
                const Caller& caller = {});
  void user_list(const pb::AuthUserListRequest& req, Done<pb::AuthUserListResponse> done,
                 const Caller& caller = {});
  void user_delete(const pb::AuthUserDeleteRequest& req, Done<pb::AuthUserDeleteResponse> done,
                   const Caller& caller = {});
  void user_change_password(const pb::AuthUserChangePasswordRequest& req,
                            Done<pb::AuthUserChangePasswordResponse> done,
                            const Caller& caller = {});
  void user_grant_role(const pb::AuthUserGrantRoleRequest& req,
                       Done<pb::AuthUserGrantRoleResponse> done, const Caller& caller = {});
  void user_revoke_role(const pb::AuthUserRevokeRoleRequest& req,
                        Done<pb::AuthUserRevokeRoleResponse> done, const Caller& caller = {});
  void role_add(const pb::AuthRoleAddRequest& req, Done<pb::AuthRoleAddResponse> done,
                const Caller& caller = {});
  void role_get(const pb::AuthRoleGetRequest& req, Done<pb::AuthRoleGetResponse> done,
                const Caller& caller = {});
  void role_list(const pb::AuthRoleListRequest& req, Done<pb::AuthRoleListResponse> done,
                 const Caller& caller = {});
  void role_delete(const pb::AuthRoleDeleteRequest& req, Done<pb::AuthRoleDeleteResponse> done,
                   const Caller& caller = {});
  void role_grant_permission(const pb::AuthRoleGrantPermissionRequest& req,
                             Done<pb::AuthRoleGrantPermissionResponse> done,
                             const Caller& caller = {});
  void role_revoke_permission(const pb::AuthRoleRevokePermissionRequest& req,
                              Done<pb::AuthRoleRevokePermissionResponse> done,
                              const Caller& caller = {});

  // etcd 3.4's /health: unhealthy without a leader or when a linearizable
  // read does not pass within health_timeout.
  void health(std::function<void(bool)> done);

  // --- the unary methods by name, for transports that route generically.
  struct UnaryMethod {
    const google::protobuf::Descriptor* request = nullptr;
    const google::protobuf::Descriptor* response = nullptr;
    // req is the caller's to give: a write method moves it into its proposal.
    std::function<void(V3Service&, google::protobuf::Message& req,
                       std::function<void(Status, const google::protobuf::Message& resp)>,
                       const Caller& caller)>
        call;
  };
  // (the caller travels beside the request)
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
  // Every watcher created on the stream is checked against `caller` (read
  // permission on its whole range) as it is created.
  std::weak_ptr<WatchSession> watch(std::shared_ptr<WatchSink> sink, std::size_t max_queued = 0,
                                    Caller caller = {});

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
  void snapshot(const pb::SnapshotRequest& req, std::shared_ptr<SnapshotSink> sink,
                const Caller& caller = {});

  class Impl;

 private:
  void start_snapshot(const pb::SnapshotRequest& req, std::shared_ptr<SnapshotSink> sink);

  std::shared_ptr<Impl> impl_;
};

// etcd's texts for errors the transports raise themselves.
inline constexpr const char* kNoLeader = "etcdserver: no leader";
inline constexpr const char* kServerStopped = "etcdserver: server stopped";

}  // namespace muster::server
