// node/server/v3_service.cpp: the v3 API's methods over MemberApi (see
// v3_service.h for the contract).
//
// Why one file of this size: every service here (KV, Watch, Lease,
// Cluster, Maintenance, Auth) shares the Impl's timers, worker, watch hub,
// limits and metrics; splitting it means moving Impl to a private header
// first, which waits until the auth and snapshot work that extend it land.
#include "node/server/v3_service.h"

#include <google/protobuf/descriptor.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/log.h"
#include "base/runner.h"
#include "node/server/jwt.h"
#include "node/server/password.h"
#include "node/server/test_knobs.h"
#include "node/storage/errors.h"
#include "node/storage/snapshot.h"
#include "node/storage/snapshot_file.h"

namespace muster::server {

namespace {

using storage::Code;
using Status = storage::Status;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kRequestTooLarge = "etcdserver: request is too large";
constexpr const char* kTimedOut = "etcdserver: request timed out";
using storage::AuthInfo;
namespace errors = storage::errors;
// The caller as resolved from its token or certificate; none without
// credentials.
using Who = std::optional<AuthInfo>;
const AuthInfo* who_ptr(const Who& w) { return w ? &*w : nullptr; }
constexpr const char* kSnapshotUnsupported = "etcdserver: snapshot is not supported by this member";
// History read per step of a watch catch-up; each step becomes one response.
constexpr size_t kWatchBatch = 1000;
// Bytes of dump per Snapshot message, and how much a snapshot stream may
// have queued before it waits for the client.
constexpr size_t kSnapshotBlob = 64 * 1024;
constexpr size_t kSnapshotQueued = 1 << 20;

// One-shot timers on a thread of their own: request deadlines, watch
// progress notifications, snapshot pacing.  Callbacks run without the lock.
class Timers {
 public:
  Timers()
      : thread_([this] {
          base::set_thread_name("v3-timers");
          run();
        }) {}
  ~Timers() {
    {
      std::lock_guard l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  uint64_t after(std::chrono::milliseconds d, std::function<void()> f) {
    std::lock_guard l(mu_);
    const uint64_t id = next_id_++;
    const auto at = Clock::now() + d;
    auto key = std::make_pair(at, id);
    // The thread sleeps until the earliest deadline: wake it only when this
    // one comes first (a request's deadline rarely does, so a busy member
    // does not pay a thread wake-up per request).
    const bool earliest = queue_.empty() || key < queue_.begin()->first;
    queue_.emplace(key, std::move(f));
    when_[id] = at;
    if (earliest) cv_.notify_all();
    return id;
  }

  void cancel(uint64_t id) {
    std::lock_guard l(mu_);
    auto it = when_.find(id);
    if (it == when_.end()) return;
    queue_.erase({it->second, id});
    when_.erase(it);
  }

 private:
  void run() {
    std::unique_lock l(mu_);
    while (!stop_) {
      if (queue_.empty()) {
        cv_.wait(l);
        continue;
      }
      auto first = queue_.begin();
      if (first->first.first > Clock::now()) {
        // A copy: wait_until reads its deadline again after waking, and
        // cancel() may have erased the node it lives in meanwhile.
        const Clock::time_point at = first->first.first;
        cv_.wait_until(l, at);
        continue;
      }
      std::function<void()> f = std::move(first->second);
      when_.erase(first->first.second);
      queue_.erase(first);
      l.unlock();
      f();
      l.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<Clock::time_point, uint64_t>, std::function<void()>> queue_;
  std::unordered_map<uint64_t, Clock::time_point> when_;
  uint64_t next_id_ = 1;
  bool stop_ = false;
  std::thread thread_;  // last: starts after everything above exists
};

// One thread for work that reads or rewrites the whole store (hash,
// defragment): it must not run on a transport's strand or delay timers.
class Worker {
 public:
  Worker()
      : thread_([this] {
          base::set_thread_name("v3-worker");
          run();
        }) {}
  ~Worker() {
    {
      std::lock_guard l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void post(std::function<void()> f) {
    {
      std::lock_guard l(mu_);
      queue_.push_back(std::move(f));
    }
    cv_.notify_all();
  }

 private:
  void run() {
    std::unique_lock l(mu_);
    for (;;) {
      cv_.wait(l, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      std::function<void()> f = std::move(queue_.front());
      queue_.pop_front();
      l.unlock();
      f();
      l.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;  // last
};

// Answered exactly once: by the member's callback or by the deadline.
struct Once {
  std::atomic<bool> done{false};
  uint64_t timer = 0;
  bool claim() { return !done.exchange(true); }
};

}  // namespace

// ---------------------------------------------------------------- Impl

class V3Service::Impl {
 public:
  Impl(MemberApi& member, Options options, metrics::Registry& reg);
  ~Impl();

  class WatchStream;

  void fill_header(pb::ResponseHeader* h, bool with_revision = true) const;
  void refresh_identity();
  void request_arrived();

  void after_barrier(std::chrono::milliseconds timeout, std::function<void()> then,
                     std::function<void(const Status&)> on_error);
  // Validates, proposes (or changes membership) and answers with the
  // applied response of the request's kind.
  template <class Resp>
  void propose(pb::InternalRequest req, Done<Resp> done);
  // The alarms this member reports: the replicated ones, and NOSPACE for
  // itself while its database is over --quota-backend-bytes.
  std::vector<pb::AlarmMember> alarms(pb::AlarmType type) const;
  // etcd's quota rule: the first growth refused for space raises NOSPACE
  // for this member through Raft, so every member refuses growth until an
  // operator disarms it (after compaction and defragmentation).
  void raise_nospace();
  std::atomic<bool> nospace_raising_{false};

  // --- auth
  // The caller's identity now: its token's user (invalid auth token when
  // the token is unknown here), else with --client-cert-auth its CN.
  Status identify_now(const Caller& c, Who* who);
  // The same, but a token issued by another member at a log index this one
  // has not applied yet is looked up again after a read barrier (etcd waits
  // for the token's index).
  void identify(const Caller& c, std::function<void(Status, Who)> then);
  // identify, then etcd's IsAdminPermitted (root only while auth is on).
  void check_admin(const Caller& c, std::function<void(Status, Who)> then);
  // identify, stamp the caller on the request, propose.
  template <class Resp>
  void propose_as(const Caller& c, pb::InternalRequest req, Done<Resp> done);
  // After a read barrier, with the caller: auth reads served from the
  // local view (etcd proposes them; the barrier makes them as fresh).
  template <class Resp>
  void auth_read(const Caller& c, Done<Resp> done,
                 std::function<Status(const storage::AuthView&, const Who&, Resp*)> answer);
  // Hashes a new password on the auth worker, then proposes `req` with the
  // hash set by `set_hash`.
  template <class Resp>
  void propose_with_password(const Caller& c, pb::InternalRequest req, std::string password,
                             bool no_password, Done<Resp> done,
                             std::function<void(pb::InternalRequest&, std::string)> set_hash);
  void authenticate(pb::AuthenticateRequest req, Done<pb::AuthenticateResponse> done, int tries);
  // Authenticate's per-user limit: false = refuse this attempt now.
  bool auth_attempt_allowed(const std::string& name);
  void auth_attempt_done(const std::string& name, bool ok);

  void close_stream(WatchStream* s);
  void close_stream(WatchStream* s, const std::optional<Status>& why);

  MemberApi& member_;
  Options options_;

  metrics::Gauge& pending_;
  metrics::Counter& failed_;
  metrics::Gauge& watchers_;

  std::atomic<uint64_t> cluster_id_{0}, member_id_{0}, raft_term_{0};
  std::atomic<int64_t> db_size_bytes_{0};
  std::atomic<int64_t> identity_at_{0};  // steady clock ticks of the last refresh

  std::mutex streams_mu_;
  std::map<const WatchStream*, std::shared_ptr<WatchStream>> streams_;

  // Authenticate: failures in a row per user name, and when the next
  // attempt may run.
  struct AuthFailures {
    int count = 0;
    Clock::time_point next_allowed{};
  };
  std::mutex auth_mu_;
  std::map<std::string, AuthFailures> auth_failures_;
  std::atomic<int> pending_password_checks_{0};
  std::string dummy_hash_;  // checked for unknown users, so they take as long

  Worker worker_;
  Worker auth_worker_;  // bcrypt: hashing and checking passwords
  Timers timers_;       // last: its thread stops first on destruction
};

V3Service::Impl::Impl(MemberApi& member, Options options, metrics::Registry& reg)
    : member_(member),
      options_(std::move(options)),
      pending_(reg.gauge("etcd_server_proposals_pending",
                         "The current number of pending proposals to commit.")),
      failed_(reg.counter("etcd_server_proposals_failed_total",
                          "The total number of failed proposals seen.")),
      watchers_(reg.gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers.")) {
  refresh_identity();
}

// Response headers come from a copy of the member's identity and term,
// refreshed as requests arrive: headers are also written from member
// callbacks, which must not call back into the member (status() may take a
// lock the driver holds while it runs callbacks).
void V3Service::Impl::fill_header(pb::ResponseHeader* h, bool with_revision) const {
  h->set_cluster_id(cluster_id_.load());
  h->set_member_id(member_id_.load());
  h->set_raft_term(raft_term_.load());
  if (!with_revision) h->clear_revision();
}

void V3Service::Impl::refresh_identity() {
  const MemberStatus st = member_.status();
  cluster_id_.store(st.cluster_id);
  member_id_.store(st.member_id);
  raft_term_.store(st.raft_term);
  db_size_bytes_.store(st.db_size);
}

// At most every 10 ms: status() may not be free, and the identity changes
// only with a new term.
void V3Service::Impl::request_arrived() {
  const int64_t now = Clock::now().time_since_epoch().count();
  int64_t last = identity_at_.load();
  if (now - last >= std::chrono::nanoseconds(10ms).count() &&
      identity_at_.compare_exchange_strong(last, now))
    refresh_identity();
}

void V3Service::Impl::after_barrier(std::chrono::milliseconds timeout, std::function<void()> then,
                                    std::function<void(const Status&)> on_error) {
  auto once = std::make_shared<Once>();
  auto err = std::make_shared<std::function<void(const Status&)>>(std::move(on_error));
  once->timer = timers_.after(timeout, [once, err] {
    if (once->claim()) (*err)({Code::kUnavailable, kTimedOut});
  });
  member_.read_barrier([this, once, err, then = std::move(then)](Status s) {
    if (!once->claim()) return;
    timers_.cancel(once->timer);
    if (!s)
      (*err)(s);
    else
      then();
  });
}

// The response of the request's kind inside an InternalResponse.
template <class Resp>
Resp* response_of(pb::InternalResponse& r);
#define MUSTER_RESPONSE_OF(Type, field)                       \
  template <>                                                 \
  pb::Type* response_of<pb::Type>(pb::InternalResponse & r) { \
    return r.has_##field() ? r.mutable_##field() : nullptr;   \
  }
MUSTER_RESPONSE_OF(PutResponse, put)
MUSTER_RESPONSE_OF(DeleteRangeResponse, delete_range)
MUSTER_RESPONSE_OF(TxnResponse, txn)
MUSTER_RESPONSE_OF(CompactionResponse, compaction)
MUSTER_RESPONSE_OF(LeaseGrantResponse, lease_grant)
MUSTER_RESPONSE_OF(LeaseRevokeResponse, lease_revoke)
MUSTER_RESPONSE_OF(MemberAddResponse, member_add)
MUSTER_RESPONSE_OF(MemberRemoveResponse, member_remove)
MUSTER_RESPONSE_OF(MemberUpdateResponse, member_update)
MUSTER_RESPONSE_OF(MemberPromoteResponse, member_promote)
MUSTER_RESPONSE_OF(AuthEnableResponse, auth_enable)
MUSTER_RESPONSE_OF(AuthDisableResponse, auth_disable)
MUSTER_RESPONSE_OF(AuthenticateResponse, authenticate)
MUSTER_RESPONSE_OF(AuthUserAddResponse, user_add)
MUSTER_RESPONSE_OF(AuthUserDeleteResponse, user_delete)
MUSTER_RESPONSE_OF(AuthUserChangePasswordResponse, user_change_password)
MUSTER_RESPONSE_OF(AuthUserGrantRoleResponse, user_grant_role)
MUSTER_RESPONSE_OF(AuthUserRevokeRoleResponse, user_revoke_role)
MUSTER_RESPONSE_OF(AuthRoleAddResponse, role_add)
MUSTER_RESPONSE_OF(AuthRoleDeleteResponse, role_delete)
MUSTER_RESPONSE_OF(AuthRoleGrantPermissionResponse, role_grant_permission)
MUSTER_RESPONSE_OF(AuthRoleRevokePermissionResponse, role_revoke_permission)
MUSTER_RESPONSE_OF(AlarmResponse, alarm)
#undef MUSTER_RESPONSE_OF

template <class Resp>
void V3Service::Impl::propose(pb::InternalRequest req, Done<Resp> done) {
  Status v = storage::validate(req, options_.max_txn_ops);
  if (!v) return done(v, Resp());
  if (req.ByteSizeLong() > options_.max_request_bytes)
    return done({Code::kInvalidArgument, kRequestTooLarge}, Resp());
  // --quota-backend-bytes: once the database is over its quota, requests
  // that can grow it are refused, as etcd's NOSPACE alarm does (deletes and
  // compactions still pass, so an operator can make room).
  if (options_.quota_backend_bytes > 0 && db_size_bytes_.load() > options_.quota_backend_bytes &&
      (req.has_put() || req.has_txn() || req.has_lease_grant())) {
    raise_nospace();
    return done(errors::no_space(), Resp());
  }
  auto once = std::make_shared<Once>();
  auto cb = std::make_shared<Done<Resp>>(std::move(done));
  pending_.add(1);
  once->timer = timers_.after(options_.request_timeout, [this, cb, once] {
    if (!once->claim()) return;
    pending_.add(-1);
    failed_.inc();
    (*cb)({Code::kUnavailable, kTimedOut}, Resp());
  });
  const bool membership = req.has_member_add() || req.has_member_remove() ||
                          req.has_member_update() || req.has_member_promote();
  auto on_applied = [this, cb, once, membership](Status s, storage::KvStore::ApplyResult r) {
    if (!once->claim()) return;
    timers_.cancel(once->timer);
    pending_.add(-1);
    if (!s) {
      failed_.inc();
      return (*cb)(s, Resp());
    }
    if (!r.status) return (*cb)(r.status, Resp());
    Resp* m = response_of<Resp>(r.response);
    if (m == nullptr)
      return (*cb)({Code::kInternal, "etcdserver: unexpected response to a proposal"}, Resp());
    // Member-API headers carry no revision, as etcd's.
    fill_header(m->mutable_header(), !membership);
    (*cb)({}, std::move(*m));
  };
  if (membership)
    member_.change_member(std::move(req), std::move(on_applied));
  else
    member_.propose(std::move(req), std::move(on_applied));
}

void V3Service::Impl::raise_nospace() {
  const uint64_t me = member_id_.load();
  for (const auto& a : member_.kv().alarms(pb::NOSPACE))
    if (a.memberid() == me) return;  // raised already
  if (nospace_raising_.exchange(true)) return;
  log::warn("etcdserver", "database is over --quota-backend-bytes; raising NOSPACE",
            {{"alarm", "NOSPACE"},
             {"quota-bytes", options_.quota_backend_bytes},
             {"db-size-bytes", db_size_bytes_.load()}});
  pb::InternalRequest ir;
  pb::AlarmRequest* a = ir.mutable_alarm();
  a->set_action(pb::AlarmRequest::ACTIVATE);
  a->set_memberid(me);
  a->set_alarm(pb::NOSPACE);
  propose<pb::AlarmResponse>(std::move(ir), [this](Status s, pb::AlarmResponse) {
    nospace_raising_ = false;
    if (!s)
      log::warn("etcdserver", "could not raise the NOSPACE alarm; the next refused put retries",
                {{"error", s.message()}});
  });
}

// ---------------------------------------------------------------- V3Service

V3Service::V3Service(MemberApi& member, Options options, metrics::Registry& metrics)
    : impl_(std::make_shared<Impl>(member, std::move(options), metrics)) {}

V3Service::~V3Service() = default;

int64_t min_lease_ttl_seconds(uint32_t heartbeat_ms, uint32_t election_ms) {
  if (heartbeat_ms == 0) return 1;
  const uint64_t ticks = election_ms / heartbeat_ms;
  const uint64_t ms = (3 * ticks / 2) * heartbeat_ms;
  return static_cast<int64_t>((ms + 999) / 1000);
}

const V3Service::Options& V3Service::options() const { return impl_->options_; }
MemberApi& V3Service::member() { return impl_->member_; }
void V3Service::request_arrived() { impl_->request_arrived(); }

// ---------------------------------------------------------------- KV

// Read permission is checked here, after the barrier, against this
// member's auth state (etcd's doSerialize), and the answer is refused if
// the auth state changed while it was read.
void V3Service::range(const pb::RangeRequest& r, Done<pb::RangeResponse> done,
                      const Caller& caller) {
  auto req = std::make_shared<pb::RangeRequest>(r);
  pb::InternalRequest ir;
  *ir.mutable_range() = r;
  if (Status s = storage::validate(ir, impl_->options_.max_txn_ops); !s)
    return done(s, pb::RangeResponse());
  Impl* impl = impl_.get();
  auto cb = std::make_shared<Done<pb::RangeResponse>>(std::move(done));
  impl->identify(caller, [impl, req, cb, caller](Status s, Who) {
    if (!s) return (*cb)(s, pb::RangeResponse());
    // The caller is resolved again once the barrier has passed, as etcd
    // resolves it only then: an auth change applied meanwhile is seen.
    auto serve = [impl, req, cb, caller] {
      Who who;
      if (Status s = impl->identify_now(caller, &who); !s) return (*cb)(s, pb::RangeResponse());
      storage::AuthStore& auth = impl->member_.kv().auth();
      auto view = auth.view();
      if (Status s = view->check(who_ptr(who), storage::RangePerms::Type::kRead, req->key(),
                                 req->range_end());
          !s)
        return (*cb)(s, pb::RangeResponse());
      pb::RangeResponse resp;
      Status s = impl->member_.kv().range(*req, &resp);
      if (!s) return (*cb)(s, pb::RangeResponse());
      if (view->enabled && who && who->revision != auth.revision())
        return (*cb)(errors::auth_old_revision(), pb::RangeResponse());
      impl->fill_header(resp.mutable_header());
      (*cb)({}, std::move(resp));
    };
    if (req->serializable() || test_knobs::serve_reads_locally())
      serve();
    else
      impl->after_barrier(impl->options_.request_timeout, std::move(serve),
                          [cb](const Status& s) { (*cb)(s, pb::RangeResponse()); });
  });
}

void V3Service::put(pb::PutRequest r, Done<pb::PutResponse> done, const Caller& caller) {
  pb::InternalRequest ir;
  *ir.mutable_put() = std::move(r);
  impl_->propose_as(caller, std::move(ir), std::move(done));
}

void V3Service::delete_range(pb::DeleteRangeRequest r, Done<pb::DeleteRangeResponse> done,
                             const Caller& caller) {
  pb::InternalRequest ir;
  *ir.mutable_delete_range() = std::move(r);
  impl_->propose_as(caller, std::move(ir), std::move(done));
}

// Every txn goes through Raft, read-only ones included: the store evaluates
// compares only while applying, and a replicated read is linearizable.
void V3Service::txn(pb::TxnRequest r, Done<pb::TxnResponse> done, const Caller& caller) {
  pb::InternalRequest ir;
  *ir.mutable_txn() = std::move(r);
  impl_->propose_as(caller, std::move(ir), std::move(done));
}

void V3Service::compact(const pb::CompactionRequest& r, Done<pb::CompactionResponse> done,
                        const Caller& caller) {
  pb::InternalRequest ir;
  *ir.mutable_compaction() = r;
  impl_->propose_as(caller, std::move(ir), std::move(done));
}

// ---------------------------------------------------------------- Lease

void V3Service::lease_grant(const pb::LeaseGrantRequest& r, Done<pb::LeaseGrantResponse> done,
                            const Caller& caller) {
  pb::InternalRequest ir;
  *ir.mutable_lease_grant() = r;
  // Raised here, not when applied: the entry carries the TTL every member
  // applies, whatever its own timings.
  if (r.ttl() < impl_->options_.min_lease_ttl)
    ir.mutable_lease_grant()->set_ttl(impl_->options_.min_lease_ttl);
  impl_->propose_as(caller, std::move(ir), std::move(done));
}

void V3Service::lease_revoke(const pb::LeaseRevokeRequest& r, Done<pb::LeaseRevokeResponse> done,
                             const Caller& caller) {
  pb::InternalRequest ir;
  *ir.mutable_lease_revoke() = r;
  impl_->propose_as(caller, std::move(ir), std::move(done));
}

void V3Service::lease_keepalive(const pb::LeaseKeepAliveRequest& r,
                                Done<pb::LeaseKeepAliveResponse> done, const Caller&) {
  Impl* impl = impl_.get();
  auto once = std::make_shared<Once>();
  auto cb = std::make_shared<Done<pb::LeaseKeepAliveResponse>>(std::move(done));
  once->timer = impl->timers_.after(impl->options_.request_timeout, [cb, once] {
    if (once->claim()) (*cb)({Code::kUnavailable, kTimedOut}, pb::LeaseKeepAliveResponse());
  });
  const int64_t id = r.id();
  impl->member_.lease_keepalive(id, [impl, cb, once, id](Status s, int64_t ttl) {
    if (!once->claim()) return;
    impl->timers_.cancel(once->timer);
    if (!s && s.code() != Code::kNotFound) return (*cb)(s, pb::LeaseKeepAliveResponse());
    pb::LeaseKeepAliveResponse resp;
    impl->fill_header(resp.mutable_header());
    resp.mutable_header()->set_revision(impl->member_.kv().revision());
    resp.set_id(id);
    resp.set_ttl(s ? ttl : 0);
    (*cb)({}, std::move(resp));
  });
}

// The remaining TTL is the leader's (the member forwards the question
// there).  A lease the leader does not know answers TTL -1, as etcd does.
void V3Service::lease_time_to_live(const pb::LeaseTimeToLiveRequest& r,
                                   Done<pb::LeaseTimeToLiveResponse> done, const Caller&) {
  Impl* impl = impl_.get();
  auto once = std::make_shared<Once>();
  auto cb = std::make_shared<Done<pb::LeaseTimeToLiveResponse>>(std::move(done));
  once->timer = impl->timers_.after(impl->options_.request_timeout, [cb, once] {
    if (once->claim()) (*cb)({Code::kUnavailable, kTimedOut}, pb::LeaseTimeToLiveResponse());
  });
  impl->member_.lease_time_to_live(
      r, [impl, cb, once, id = r.id()](Status s, pb::LeaseTimeToLiveResponse resp) {
        if (!once->claim()) return;
        impl->timers_.cancel(once->timer);
        if (!s) {
          if (s.code() != Code::kNotFound) return (*cb)(s, pb::LeaseTimeToLiveResponse());
          resp.Clear();
          resp.set_id(id);
          resp.set_ttl(-1);
        }
        impl->fill_header(resp.mutable_header());
        resp.mutable_header()->set_revision(impl->member_.kv().revision());
        (*cb)({}, std::move(resp));
      });
}

void V3Service::lease_leases(const pb::LeaseLeasesRequest&, Done<pb::LeaseLeasesResponse> done,
                             const Caller&) {
  Impl* impl = impl_.get();
  auto cb = std::make_shared<Done<pb::LeaseLeasesResponse>>(std::move(done));
  impl->after_barrier(
      impl->options_.request_timeout,
      [impl, cb] {
        pb::LeaseLeasesResponse resp = impl->member_.kv().leases();
        impl->fill_header(resp.mutable_header());
        (*cb)({}, std::move(resp));
      },
      [cb](const Status& s) { (*cb)(s, pb::LeaseLeasesResponse()); });
}

// ---------------------------------------------------------------- Cluster

// Membership changes are root's while auth is on (etcd's
// checkMembershipOperationPermission), decided before proposing.
void V3Service::member_add(const pb::MemberAddRequest& r, Done<pb::MemberAddResponse> done,
                           const Caller& caller) {
  pb::InternalRequest ir;
  auto* m = ir.mutable_member_add()->mutable_member();
  *m->mutable_peerurls() = r.peerurls();
  m->set_islearner(r.islearner());
  impl_->propose_as(caller, std::move(ir), std::move(done));
}

void V3Service::member_remove(const pb::MemberRemoveRequest& r, Done<pb::MemberRemoveResponse> done,
                              const Caller& caller) {
  pb::InternalRequest ir;
  *ir.mutable_member_remove() = r;
  impl_->propose_as(caller, std::move(ir), std::move(done));
}

void V3Service::member_update(const pb::MemberUpdateRequest& r, Done<pb::MemberUpdateResponse> done,
                              const Caller& caller) {
  pb::InternalRequest ir;
  *ir.mutable_member_update() = r;
  impl_->propose_as(caller, std::move(ir), std::move(done));
}

// Member-API headers carry no revision, as etcd's.
void V3Service::member_list(const pb::MemberListRequest& r, Done<pb::MemberListResponse> done,
                            const Caller&) {
  Impl* impl = impl_.get();
  auto cb = std::make_shared<Done<pb::MemberListResponse>>(std::move(done));
  auto serve = [impl, cb] {
    pb::MemberListResponse resp;
    impl->fill_header(resp.mutable_header(), false);
    for (auto& m : impl->member_.kv().members()) *resp.add_members() = std::move(m);
    (*cb)({}, std::move(resp));
  };
  if (r.linearizable())
    impl->after_barrier(impl->options_.request_timeout, std::move(serve),
                        [cb](const Status& s) { (*cb)(s, pb::MemberListResponse()); });
  else
    serve();
}

void V3Service::member_promote(const pb::MemberPromoteRequest& r,
                               Done<pb::MemberPromoteResponse> done, const Caller& caller) {
  pb::InternalRequest ir;
  *ir.mutable_member_promote() = r;
  impl_->propose_as(caller, std::move(ir), std::move(done));
}

// ---------------------------------------------------------------- Maintenance

// etcd's alarm store.  Raising and clearing go through Raft (every member
// then refuses what the alarm refuses, node/storage/kv_store.h); listing
// reads the applied alarms after a read barrier.  NOSPACE is also listed
// for this member while its database is over --quota-backend-bytes (the
// condition under which it refuses growth; clearing it takes room, not a
// request).  While auth is on, raising and clearing are root's (etcd 3.5's
// rule; etcd 3.4 lets anyone raise CORRUPT and stop every write).  As
// etcd's, the answer carries no header.
std::vector<pb::AlarmMember> V3Service::Impl::alarms(pb::AlarmType type) const {
  std::vector<pb::AlarmMember> out = member_.kv().alarms(type);
  const bool nospace =
      options_.quota_backend_bytes > 0 && db_size_bytes_.load() > options_.quota_backend_bytes;
  if (nospace && (type == pb::NONE || type == pb::NOSPACE)) {
    const uint64_t me = member_id_.load();
    const bool stored = std::any_of(out.begin(), out.end(), [me](const pb::AlarmMember& a) {
      return a.memberid() == me && a.alarm() == pb::NOSPACE;
    });
    if (!stored) {
      pb::AlarmMember a;
      a.set_memberid(me);
      a.set_alarm(pb::NOSPACE);
      out.push_back(std::move(a));
    }
  }
  return out;
}

void V3Service::alarm(const pb::AlarmRequest& r, Done<pb::AlarmResponse> done,
                      const Caller& caller) {
  Impl* impl = impl_.get();
  impl->refresh_identity();
  auto cb = std::make_shared<Done<pb::AlarmResponse>>(std::move(done));
  switch (r.action()) {
    case pb::AlarmRequest::GET:
      impl->after_barrier(
          impl->options_.request_timeout,
          [impl, cb, type = r.alarm()] {
            pb::AlarmResponse resp;
            for (auto& a : impl->alarms(type)) *resp.add_alarms() = std::move(a);
            (*cb)({}, std::move(resp));
          },
          [cb](const Status& s) { (*cb)(s, pb::AlarmResponse()); });
      return;
    case pb::AlarmRequest::ACTIVATE:
    case pb::AlarmRequest::DEACTIVATE:
      impl->check_admin(caller, [impl, cb, r](Status as, Who) {
        if (!as) return (*cb)(as, pb::AlarmResponse());
        pb::InternalRequest ir;
        *ir.mutable_alarm() = r;
        impl->propose<pb::AlarmResponse>(std::move(ir), [cb](Status s, pb::AlarmResponse resp) {
          resp.clear_header();
          (*cb)(s, std::move(resp));
        });
      });
      return;
    default:
      return (*cb)({Code::kInvalidArgument, "etcdserver: unknown alarm action"},
                   pb::AlarmResponse());
  }
}

void V3Service::status(const pb::StatusRequest&, Done<pb::StatusResponse> done, const Caller&) {
  Impl* impl = impl_.get();
  const MemberStatus st = impl->member_.status();
  pb::StatusResponse resp;
  impl->fill_header(resp.mutable_header());
  resp.mutable_header()->set_revision(impl->member_.kv().revision());
  resp.set_version(impl->options_.server_version);
  resp.set_dbsize(st.db_size);
  resp.set_leader(st.leader);
  resp.set_raftindex(st.raft_index);
  resp.set_raftterm(st.raft_term);
  resp.set_raftappliedindex(st.raft_applied_index);
  resp.set_dbsizeinuse(st.db_size);
  resp.set_islearner(st.is_learner);
  // etcd's errors: no leader, then each alarm as its protobuf text (Go's
  // compact form, zero fields left out: "alarm:CORRUPT ").
  if (st.leader == 0) resp.add_errors(kNoLeader);
  for (const auto& a : impl->alarms(pb::NONE)) {
    std::string text;
    if (a.memberid() != 0) text += "memberID:" + std::to_string(a.memberid()) + " ";
    if (a.alarm() != pb::NONE) text += "alarm:" + pb::AlarmType_Name(a.alarm()) + " ";
    resp.add_errors(std::move(text));
  }
  done({}, std::move(resp));
}

// Defragment, Hash, HashKV and Snapshot are root's while auth is on
// (etcd's authMaintenanceServer); Status, Alarm and MoveLeader are not.
void V3Service::defragment(const pb::DefragmentRequest&, Done<pb::DefragmentResponse> done,
                           const Caller& caller) {
  Impl* impl = impl_.get();
  impl->check_admin(caller, [impl, done = std::move(done)](Status as, Who) {
    if (!as) return done(as, pb::DefragmentResponse());
    impl->worker_.post([impl, done = std::move(done)] {
      Status s = impl->member_.defragment();
      if (!s) return done(s, pb::DefragmentResponse());
      pb::DefragmentResponse resp;
      impl->fill_header(resp.mutable_header());
      resp.mutable_header()->set_revision(impl->member_.kv().revision());
      done({}, std::move(resp));
    });
  });
}

void V3Service::hash(const pb::HashRequest&, Done<pb::HashResponse> done, const Caller& caller) {
  Impl* impl = impl_.get();
  impl->check_admin(caller, [impl, done = std::move(done)](Status as, Who) {
    if (!as) return done(as, pb::HashResponse());
    impl->worker_.post([impl, done = std::move(done)] {
      uint32_t h = 0;
      int64_t current = 0, compacted = 0;
      if (Status s = impl->member_.kv().hash_by_rev(0, &h, &current, &compacted); !s)
        return done(s, pb::HashResponse());
      pb::HashResponse resp;
      impl->fill_header(resp.mutable_header());
      resp.mutable_header()->set_revision(current);
      resp.set_hash(h);
      done({}, std::move(resp));
    });
  });
}

void V3Service::hash_kv(const pb::HashKVRequest& r, Done<pb::HashKVResponse> done,
                        const Caller& caller) {
  Impl* impl = impl_.get();
  impl->check_admin(caller, [impl, rev = r.revision(), done = std::move(done)](Status as, Who) {
    if (!as) return done(as, pb::HashKVResponse());
    impl->worker_.post([impl, rev, done = std::move(done)] {
      uint32_t h = 0;
      int64_t current = 0, compacted = 0;
      if (Status s = impl->member_.kv().hash_by_rev(rev, &h, &current, &compacted); !s)
        return done(s, pb::HashKVResponse());
      pb::HashKVResponse resp;
      impl->fill_header(resp.mutable_header());
      resp.mutable_header()->set_revision(current);
      resp.set_hash(h);
      resp.set_compact_revision(compacted);
      done({}, std::move(resp));
    });
  });
}

// etcd's MoveLeader: only the leader hands its leadership over; the answer
// comes once the transferee leads.
void V3Service::move_leader(const pb::MoveLeaderRequest& r, Done<pb::MoveLeaderResponse> done,
                            const Caller&) {
  Impl* impl = impl_.get();
  impl->member_.move_leader(r.targetid(), [impl, done = std::move(done)](Status s) {
    if (!s) return done(s, pb::MoveLeaderResponse());
    pb::MoveLeaderResponse resp;
    impl->fill_header(resp.mutable_header());
    resp.mutable_header()->set_revision(impl->member_.kv().revision());
    done({}, std::move(resp));
  });
}

// ---------------------------------------------------------------- Auth
//
// etcd 3.4's auth service.  Changes are proposed and decided at apply
// (node/storage/auth_store.h, root only while auth is on); reads of users
// and roles are served after a read barrier from this member's view.
// Passwords are hashed (UserAdd, UserChangePassword) and checked
// (Authenticate) on the auth worker thread, by the member that received
// the request: only hashes enter the Raft log, and no password is logged.

namespace {

// etcd's simple-token prefix: 16 random letters.
std::string token_prefix() {
  static constexpr std::string_view kLetters =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::string out;
  while (out.size() < 16) {
    unsigned char b[32];
    if (RAND_bytes(b, sizeof b) != 1) storage::fatal("RAND_bytes failed");
    for (unsigned char c : b)
      if (c < 4 * kLetters.size() && out.size() < 16) out.push_back(kLetters[c % kLetters.size()]);
  }
  return out;
}

// The Raft index a simple token was issued at ("<prefix>.<index>"); 0 when
// the token does not have that shape.
uint64_t token_index(const std::string& token) {
  const size_t dot = token.rfind('.');
  if (dot == std::string::npos || dot + 1 >= token.size() || token.size() - dot > 21) return 0;
  uint64_t v = 0;
  for (size_t i = dot + 1; i < token.size(); ++i) {
    if (token[i] < '0' || token[i] > '9') return 0;
    v = v * 10 + static_cast<uint64_t>(token[i] - '0');
  }
  return v;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool is_membership(const pb::InternalRequest& r) {
  return r.has_member_add() || r.has_member_remove() || r.has_member_update() ||
         r.has_member_promote();
}

}  // namespace

Status V3Service::Impl::identify_now(const Caller& c, Who* who) {
  storage::AuthStore& auth = member_.kv().auth();
  who->reset();
  if (c.token && options_.jwt) {
    // A JWT names its user and the auth revision it was issued at.
    auto claims = options_.jwt->verify(*c.token, unix_now());
    if (!claims) return errors::invalid_auth_token();
    *who = AuthInfo{claims->username, claims->revision};
    return {};
  }
  if (c.token) {
    auto user = auth.token_user(*c.token);
    if (!user) return errors::invalid_auth_token();
    *who = AuthInfo{*user, auth.revision()};
    return {};
  }
  if (options_.client_cert_auth && !c.common_name.empty())
    *who = AuthInfo{c.common_name, auth.revision()};
  return {};
}

void V3Service::Impl::identify(const Caller& c, std::function<void(Status, Who)> then) {
  Who who;
  Status s = identify_now(c, &who);
  if (s || !c.token || options_.jwt || token_index(*c.token) <= member_.kv().applied_index())
    return then(std::move(s), std::move(who));
  after_barrier(
      options_.request_timeout,
      [this, c, then] {
        Who again;
        Status s2 = identify_now(c, &again);
        then(std::move(s2), std::move(again));
      },
      [then](const Status& e) { then(e, std::nullopt); });
}

void V3Service::Impl::check_admin(const Caller& c, std::function<void(Status, Who)> then) {
  identify(c, [this, then](Status s, Who who) {
    if (s) s = member_.kv().auth().view()->check_admin(who_ptr(who));
    then(std::move(s), std::move(who));
  });
}

template <class Resp>
void V3Service::Impl::propose_as(const Caller& c, pb::InternalRequest req, Done<Resp> done) {
  identify(c, [this, req = std::move(req), done = std::move(done)](Status s, Who who) mutable {
    if (!s) return done(s, Resp());
    if (is_membership(req))
      if (Status a = member_.kv().auth().view()->check_admin(who_ptr(who)); !a)
        return done(a, Resp());
    pb::RequestAuth* a = req.mutable_auth();
    if (who) {
      a->set_username(who->user);
      a->set_auth_revision(who->revision);
    }
    propose(std::move(req), std::move(done));
  });
}

template <class Resp>
void V3Service::Impl::auth_read(
    const Caller& c, Done<Resp> done,
    std::function<Status(const storage::AuthView&, const Who&, Resp*)> answer) {
  identify(c, [this, c, done = std::move(done), answer = std::move(answer)](Status s, Who) {
    if (!s) return done(s, Resp());
    after_barrier(
        options_.request_timeout,
        [this, c, done, answer] {
          Who who;  // resolved again after the barrier, as in range()
          if (Status s = identify_now(c, &who); !s) return done(s, Resp());
          Resp resp;
          if (Status s = answer(*member_.kv().auth().view(), who, &resp); !s)
            return done(s, Resp());
          fill_header(resp.mutable_header());
          resp.mutable_header()->set_revision(member_.kv().revision());
          done({}, std::move(resp));
        },
        [done](const Status& e) { done(e, Resp()); });
  });
}

template <class Resp>
void V3Service::Impl::propose_with_password(
    const Caller& c, pb::InternalRequest req, std::string password, bool no_password,
    Done<Resp> done, std::function<void(pb::InternalRequest&, std::string)> set_hash) {
  // Root only (decided again at apply): nobody else gets to spend a
  // bcrypt hash of this member's CPU.
  auto shared_pw = std::make_shared<std::string>(std::move(password));
  check_admin(c, [this, c, req = std::move(req), shared_pw, no_password, done = std::move(done),
                  set_hash = std::move(set_hash)](Status s, Who) mutable {
    if (!s) return done(s, Resp());
    if (no_password) return propose_as(c, std::move(req), std::move(done));
    auth_worker_.post([this, c, req = std::move(req), shared_pw, done = std::move(done),
                       set_hash = std::move(set_hash)]() mutable {
      std::optional<std::string> hashed = password::hash(*shared_pw, options_.bcrypt_cost);
      OPENSSL_cleanse(shared_pw->data(), shared_pw->size());
      if (!hashed)
        return done({Code::kInvalidArgument, "etcdserver: the password cannot be hashed"}, Resp());
      set_hash(req, std::move(*hashed));
      propose_as(c, std::move(req), std::move(done));
    });
  });
}

bool V3Service::Impl::auth_attempt_allowed(const std::string& name) {
  std::lock_guard l(auth_mu_);
  const auto now = Clock::now();
  if (auth_failures_.size() > 10'000) {
    // Bounded: names nobody failed for lately are forgotten.
    for (auto it = auth_failures_.begin(); it != auth_failures_.end();)
      it = it->second.next_allowed < now ? auth_failures_.erase(it) : std::next(it);
  }
  auto it = auth_failures_.find(name);
  return it == auth_failures_.end() || it->second.next_allowed <= now;
}

void V3Service::Impl::auth_attempt_done(const std::string& name, bool ok) {
  std::lock_guard l(auth_mu_);
  if (ok) {
    auth_failures_.erase(name);
    return;
  }
  AuthFailures& f = auth_failures_[name];
  ++f.count;
  const int over = f.count - options_.auth_failures_before_backoff;
  if (over >= 0) {
    const auto wait =
        std::min<std::chrono::milliseconds>(1000ms * (1LL << std::min(over, 5)), 30'000ms);
    f.next_allowed = Clock::now() + wait;
  }
}

// etcd's Authenticate: checked after a read barrier against the current
// users, the password verified here (bcrypt, on the auth worker), then an
// Authenticate entry replicates the token to every member.  A change of the
// auth state between the check and the apply makes the apply refuse it, and
// the check runs again (etcd loops the same way).
void V3Service::Impl::authenticate(pb::AuthenticateRequest req, Done<pb::AuthenticateResponse> done,
                                   int tries) {
  using Resp = pb::AuthenticateResponse;
  if (!auth_attempt_allowed(req.name()))
    return done({Code::kResourceExhausted, errors::kTooManyRequests}, Resp());
  if (options_.jwt && !options_.jwt->can_sign())  // etcd's ErrVerifyOnly
    return done({Code::kUnknown, "auth: token signing attempted with verify-only key"}, Resp());
  after_barrier(
      options_.request_timeout,
      [this, req, done, tries]() mutable {
        auto view = member_.kv().auth().view();
        if (!view->enabled) return done(errors::auth_not_enabled(), Resp());
        if (pending_password_checks_.fetch_add(1) >= options_.max_pending_password_checks) {
          pending_password_checks_.fetch_sub(1);
          return done({Code::kResourceExhausted, errors::kTooManyRequests}, Resp());
        }
        auth_worker_.post(
            [this, req = std::move(req), done = std::move(done), view, tries]() mutable {
              pending_password_checks_.fetch_sub(1);
              auto u = view->users.find(req.name());
              bool ok;
              if (u == view->users.end() || u->second.options().no_password()) {
                // As slow as a real check, so that the time taken does not
                // tell which user names exist.
                if (dummy_hash_.empty())
                  dummy_hash_ = password::hash("muster", options_.bcrypt_cost).value_or("");
                password::verify(req.password(), dummy_hash_);
                ok = false;
              } else {
                ok = password::verify(req.password(), u->second.password());
              }
              auth_attempt_done(req.name(), ok);
              if (!ok) {
                log::warn("auth", "authentication failed", {{"user", req.name()}});
                return done(errors::auth_failed(), Resp());
              }
              pb::InternalRequest ir;
              auto* a = ir.mutable_authenticate();
              a->set_name(req.name());
              // JWTs are signed here once the entry applied (no member needs
              // to remember them); simple tokens are registered by every
              // member as it applies the entry.
              if (!options_.jwt) a->set_simple_token(token_prefix());
              const uint64_t revision = view->revision;
              a->set_checked_revision(revision);
              propose(std::move(ir),
                      Done<Resp>([this, req, done, tries, revision](Status s, Resp r) mutable {
                        if (s.code() == Code::kInvalidArgument &&
                            s.message() == errors::kAuthOldRevision && tries < 3)
                          return authenticate(std::move(req), std::move(done), tries + 1);
                        if (s && options_.jwt) {
                          auto t = options_.jwt->sign(req.name(), revision, unix_now());
                          if (!t)
                            return done({Code::kInternal, "etcdserver: cannot sign a JWT"}, Resp());
                          r.set_token(std::move(*t));
                        }
                        done(std::move(s), std::move(r));
                      }));
            });
      },
      [done](const Status& e) { done(e, Resp()); });
}

void V3Service::authenticate(const pb::AuthenticateRequest& r, Done<pb::AuthenticateResponse> done,
                             const Caller&) {
  impl_->authenticate(r, std::move(done), 0);
}

#define MUSTER_AUTH_PROPOSE(method, Req, Resp, field)                                   \
  void V3Service::method(const pb::Req& r, Done<pb::Resp> done, const Caller& caller) { \
    pb::InternalRequest ir;                                                             \
    *ir.mutable_##field() = r;                                                          \
    impl_->propose_as(caller, std::move(ir), std::move(done));                          \
  }
MUSTER_AUTH_PROPOSE(auth_enable, AuthEnableRequest, AuthEnableResponse, auth_enable)
MUSTER_AUTH_PROPOSE(auth_disable, AuthDisableRequest, AuthDisableResponse, auth_disable)
MUSTER_AUTH_PROPOSE(user_delete, AuthUserDeleteRequest, AuthUserDeleteResponse, user_delete)
MUSTER_AUTH_PROPOSE(user_grant_role, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
                    user_grant_role)
MUSTER_AUTH_PROPOSE(user_revoke_role, AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse,
                    user_revoke_role)
MUSTER_AUTH_PROPOSE(role_add, AuthRoleAddRequest, AuthRoleAddResponse, role_add)
MUSTER_AUTH_PROPOSE(role_delete, AuthRoleDeleteRequest, AuthRoleDeleteResponse, role_delete)
MUSTER_AUTH_PROPOSE(role_grant_permission, AuthRoleGrantPermissionRequest,
                    AuthRoleGrantPermissionResponse, role_grant_permission)
MUSTER_AUTH_PROPOSE(role_revoke_permission, AuthRoleRevokePermissionRequest,
                    AuthRoleRevokePermissionResponse, role_revoke_permission)
#undef MUSTER_AUTH_PROPOSE

void V3Service::user_add(const pb::AuthUserAddRequest& r, Done<pb::AuthUserAddResponse> done,
                         const Caller& caller) {
  if (r.name().empty()) return done(errors::user_empty(), pb::AuthUserAddResponse());
  pb::InternalRequest ir;
  ir.mutable_user_add()->set_name(r.name());
  *ir.mutable_user_add()->mutable_options() = r.options();
  impl_->propose_with_password(caller, std::move(ir), r.password(), r.options().no_password(),
                               std::move(done), [](pb::InternalRequest& req, std::string h) {
                                 req.mutable_user_add()->set_hashed_password(std::move(h));
                               });
}

void V3Service::user_change_password(const pb::AuthUserChangePasswordRequest& r,
                                     Done<pb::AuthUserChangePasswordResponse> done,
                                     const Caller& caller) {
  pb::InternalRequest ir;
  ir.mutable_user_change_password()->set_name(r.name());
  impl_->propose_with_password(
      caller, std::move(ir), r.password(), false, std::move(done),
      [](pb::InternalRequest& req, std::string h) {
        req.mutable_user_change_password()->set_hashed_password(std::move(h));
      });
}

// A user may read its own record, and a role it holds, without root (etcd).
void V3Service::user_get(const pb::AuthUserGetRequest& r, Done<pb::AuthUserGetResponse> done,
                         const Caller& caller) {
  impl_->auth_read<pb::AuthUserGetResponse>(
      caller, std::move(done),
      [name = r.name()](const storage::AuthView& v, const Who& who, pb::AuthUserGetResponse* out) {
        if (Status s = v.check_admin(who_ptr(who)); !s && !(who && who->user == name)) return s;
        auto u = v.users.find(name);
        if (u == v.users.end()) return errors::user_not_found();
        for (const auto& role : u->second.roles()) out->add_roles(role);
        return Status{};
      });
}

void V3Service::user_list(const pb::AuthUserListRequest&, Done<pb::AuthUserListResponse> done,
                          const Caller& caller) {
  impl_->auth_read<pb::AuthUserListResponse>(
      caller, std::move(done),
      [](const storage::AuthView& v, const Who& who, pb::AuthUserListResponse* out) {
        if (Status s = v.check_admin(who_ptr(who)); !s) return s;
        for (const auto& [name, u] : v.users) out->add_users(name);
        return Status{};
      });
}

void V3Service::role_get(const pb::AuthRoleGetRequest& r, Done<pb::AuthRoleGetResponse> done,
                         const Caller& caller) {
  impl_->auth_read<pb::AuthRoleGetResponse>(
      caller, std::move(done),
      [role = r.role()](const storage::AuthView& v, const Who& who, pb::AuthRoleGetResponse* out) {
        if (Status s = v.check_admin(who_ptr(who)); !s && !(who && v.has_role(who->user, role)))
          return s;
        auto it = v.roles.find(role);
        if (it == v.roles.end()) return errors::role_not_found();
        for (const auto& p : it->second.keypermission()) *out->add_perm() = p;
        return Status{};
      });
}

void V3Service::role_list(const pb::AuthRoleListRequest&, Done<pb::AuthRoleListResponse> done,
                          const Caller& caller) {
  impl_->auth_read<pb::AuthRoleListResponse>(
      caller, std::move(done),
      [](const storage::AuthView& v, const Who& who, pb::AuthRoleListResponse* out) {
        if (Status s = v.check_admin(who_ptr(who)); !s) return s;
        for (const auto& [name, r] : v.roles) out->add_roles(name);
        return Status{};
      });
}

// ---------------------------------------------------------------- health

void V3Service::health(std::function<void(bool)> done) {
  if (impl_->member_.status().leader == 0) return done(false);
  auto cb = std::make_shared<std::function<void(bool)>>(std::move(done));
  impl_->after_barrier(
      impl_->options_.health_timeout, [cb] { (*cb)(true); }, [cb](const Status&) { (*cb)(false); });
}

// ---------------------------------------------------------------- snapshot
//
// The stream is a snapshot file (node/storage/snapshot_file.h owns the
// format; our own, not a bolt database): the dump of one SnapshotWriter,
// which reads one LevelDB snapshot and so is a point-in-time copy, then the
// SHA-256 of the dump as the final 32-byte blob, as etcd sends its bolt file
// and digest.  The saved file is dump + digest, so etcdctl's size check
// (size % 512 == 32) holds and `muster snapshot restore` can verify it.
//
// Work runs on the timer thread in steps: the dump is first written to an
// anonymous temporary file (so remaining_bytes is exact and memory stays
// bounded), then sent in kSnapshotBlob pieces while the transport holds
// less than kSnapshotQueued unsent bytes.
namespace {

struct SnapshotJob {
  std::unique_ptr<storage::SnapshotWriter> writer;
  std::shared_ptr<V3Service::SnapshotSink> sink;
  std::FILE* file = nullptr;
  uint64_t total = 0, sent = 0;
  bool dumped = false;
  EVP_MD_CTX* sha = nullptr;
  ~SnapshotJob() {
    if (file) std::fclose(file);
    if (sha) EVP_MD_CTX_free(sha);
  }
  bool write(const void* p, size_t n) {
    total += n;
    return std::fwrite(p, 1, n, file) == n;
  }
};

}  // namespace

void V3Service::snapshot(const pb::SnapshotRequest& req, std::shared_ptr<SnapshotSink> sink,
                         const Caller& caller) {
  impl_->check_admin(caller, [this, req, sink](Status s, Who) {
    if (!s) return sink->finish(s);
    start_snapshot(req, sink);
  });
}

void V3Service::start_snapshot(const pb::SnapshotRequest&, std::shared_ptr<SnapshotSink> sink) {
  auto job = std::make_shared<SnapshotJob>();
  job->writer = impl_->member_.snapshot_writer();
  if (!job->writer) return sink->finish({Code::kUnimplemented, kSnapshotUnsupported});
  job->sink = std::move(sink);
  job->file = std::tmpfile();
  job->sha = EVP_MD_CTX_new();
  if (!job->file || !job->sha || EVP_DigestInit_ex(job->sha, EVP_sha256(), nullptr) != 1)
    return job->sink->finish({Code::kInternal, "etcdserver: cannot create a snapshot file"});
  if (!job->write(storage::kSnapshotFileMagic.data(), storage::kSnapshotFileMagic.size()))
    return job->sink->finish({Code::kInternal, "etcdserver: cannot write the snapshot file"});
  Impl* impl = impl_.get();
  auto step = std::make_shared<std::function<void()>>();
  *step = [impl, job, step_weak = std::weak_ptr<std::function<void()>>(step)] {
    auto again = [impl, step_weak](std::chrono::milliseconds d) {
      if (auto st = step_weak.lock()) impl->timers_.after(d, [st] { (*st)(); });
    };
    auto fail = [&job](const char* what) { job->sink->finish({Code::kInternal, what}); };
    if (job->sink->cancelled()) return;
    if (!job->dumped) {
      // About 4 MiB of dump per step, so request timeouts keep firing.
      for (int i = 0; i < 4; ++i) {
        pb::SnapshotChunk chunk;
        if (!job->writer->next(&chunk)) {
          if (!job->writer->status()) return fail("etcdserver: snapshot read failed");
          job->dumped = true;
          break;
        }
        std::string frame;
        storage::append_snapshot_frame(chunk, &frame);
        if (!job->write(frame.data(), frame.size()))
          return fail("etcdserver: cannot write the snapshot file");
      }
      if (job->dumped) {
        const std::string pad = storage::snapshot_file_padding(job->total);
        if (!job->write(pad.data(), pad.size()) || std::fflush(job->file) != 0)
          return fail("etcdserver: cannot write the snapshot file");
        std::rewind(job->file);
        job->writer.reset();
      }
      return again(0ms);
    }
    if (job->sink->queued_bytes() >= kSnapshotQueued) return again(5ms);
    pb::SnapshotResponse resp;
    impl->fill_header(resp.mutable_header());
    if (job->sent < job->total) {
      std::string blob(std::min<uint64_t>(kSnapshotBlob, job->total - job->sent), '\0');
      if (std::fread(blob.data(), 1, blob.size(), job->file) != blob.size())
        return fail("etcdserver: cannot read the snapshot file");
      EVP_DigestUpdate(job->sha, blob.data(), blob.size());
      job->sent += blob.size();
      resp.set_remaining_bytes(job->total - job->sent + 32);
      resp.set_blob(std::move(blob));
      job->sink->send(resp);
      return again(0ms);
    }
    unsigned char digest[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(job->sha, digest, &n);
    resp.set_remaining_bytes(0);
    resp.set_blob(std::string(reinterpret_cast<const char*>(digest), n));
    job->sink->send(resp);
    job->sink->finish({});
  };
  // The step function owns itself only through pending timers: the job ends
  // when no timer holds it any more.
  impl->timers_.after(0ms, [step] { (*step)(); });
}

// ---------------------------------------------------------------- method table

namespace {

// A method's request type is its first parameter's (const Req& for reads,
// Req by value for the writes, which take the parsed request over).
template <class Arg, class Resp>
V3Service::UnaryMethod method(void (V3Service::*f)(Arg, V3Service::Done<Resp>, const Caller&)) {
  using Req = std::decay_t<Arg>;
  V3Service::UnaryMethod m;
  m.request = Req::descriptor();
  m.response = Resp::descriptor();
  m.call = [f](V3Service& s, google::protobuf::Message& req,
               std::function<void(Status, const google::protobuf::Message&)> reply,
               const Caller& caller) {
    (s.*f)(
        std::move(static_cast<Req&>(req)),
        [reply = std::move(reply)](Status st, Resp resp) { reply(st, resp); }, caller);
  };
  return m;
}

}  // namespace

const std::map<std::string, V3Service::UnaryMethod, std::less<>>& V3Service::unary_methods() {
  static const auto* table = new std::map<std::string, UnaryMethod, std::less<>>{
      {"KV/Range", method(&V3Service::range)},
      {"KV/Put", method(&V3Service::put)},
      {"KV/DeleteRange", method(&V3Service::delete_range)},
      {"KV/Txn", method(&V3Service::txn)},
      {"KV/Compact", method(&V3Service::compact)},
      {"Lease/LeaseGrant", method(&V3Service::lease_grant)},
      {"Lease/LeaseRevoke", method(&V3Service::lease_revoke)},
      {"Lease/LeaseTimeToLive", method(&V3Service::lease_time_to_live)},
      {"Lease/LeaseLeases", method(&V3Service::lease_leases)},
      {"Cluster/MemberAdd", method(&V3Service::member_add)},
      {"Cluster/MemberRemove", method(&V3Service::member_remove)},
      {"Cluster/MemberUpdate", method(&V3Service::member_update)},
      {"Cluster/MemberList", method(&V3Service::member_list)},
      {"Cluster/MemberPromote", method(&V3Service::member_promote)},
      {"Maintenance/Alarm", method(&V3Service::alarm)},
      {"Maintenance/Status", method(&V3Service::status)},
      {"Maintenance/Defragment", method(&V3Service::defragment)},
      {"Maintenance/Hash", method(&V3Service::hash)},
      {"Maintenance/HashKV", method(&V3Service::hash_kv)},
      {"Maintenance/MoveLeader", method(&V3Service::move_leader)},
      {"Auth/AuthEnable", method(&V3Service::auth_enable)},
      {"Auth/AuthDisable", method(&V3Service::auth_disable)},
      {"Auth/Authenticate", method(&V3Service::authenticate)},
      {"Auth/UserAdd", method(&V3Service::user_add)},
      {"Auth/UserGet", method(&V3Service::user_get)},
      {"Auth/UserList", method(&V3Service::user_list)},
      {"Auth/UserDelete", method(&V3Service::user_delete)},
      {"Auth/UserChangePassword", method(&V3Service::user_change_password)},
      {"Auth/UserGrantRole", method(&V3Service::user_grant_role)},
      {"Auth/UserRevokeRole", method(&V3Service::user_revoke_role)},
      {"Auth/RoleAdd", method(&V3Service::role_add)},
      {"Auth/RoleGet", method(&V3Service::role_get)},
      {"Auth/RoleList", method(&V3Service::role_list)},
      {"Auth/RoleDelete", method(&V3Service::role_delete)},
      {"Auth/RoleGrantPermission", method(&V3Service::role_grant_permission)},
      {"Auth/RoleRevokePermission", method(&V3Service::role_revoke_permission)},
  };
  return *table;
}

const V3Service::UnaryMethod* V3Service::unary(std::string_view name) {
  const auto& t = unary_methods();
  auto it = t.find(name);
  return it == t.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------- watch
//
// One WatchStream per Watch stream; it holds every watcher created on it and
// one subscription to the member's applied events.
//
// No event is lost or repeated across the switch from history to live
// events: the stream subscribes BEFORE any history is read.  A watcher that
// starts in the past is "catching up": live events that match it are
// buffered while its history is read from the store in batches; at the end,
// under the stream lock, the buffer is delivered from the first revision the
// history did not cover (`next_rev`), and the watcher turns live.  Live
// delivery skips events below `next_rev`, which covers events that were both
// in the history and reported live.  Every write to the sink happens under
// the stream lock, so responses of one watcher are in revision order.
//
// The member's state can also jump: a snapshot install brings revisions that
// were never applied here one by one, so no events came for them (the member
// then reports an empty batch).  A batch that does not continue the last
// revision the stream saw turns every live watcher back into a catching-up
// one, which reads the skipped revisions from the store (or is cancelled
// with the compacted revision, as etcd cancels a watcher that fell behind a
// compaction) before its buffered live events.
class V3Service::Impl::WatchStream : public V3Service::WatchSession,
                                     public std::enable_shared_from_this<WatchStream> {
 public:
  WatchStream(Impl* svc, std::shared_ptr<WatchSink> sink, size_t max_queued, Caller caller)
      : svc_(svc),
        sink_(std::move(sink)),
        max_queued_(max_queued),
        caller_(std::move(caller)),
        seen_rev_(svc->member_.kv().revision()) {}

  struct Watcher {
    int64_t id = 0;
    std::string key, range_end;
    bool prev_kv = false, no_put = false, no_delete = false, progress_notify = false;
    bool fragment = false;
    bool catching_up = true;
    int64_t next_rev = 0;  // first revision not yet delivered
    std::vector<pb::Event> buffer;
    uint64_t progress_timer = 0;
  };

  // Records the stream's subscription; false when the stream closed first
  // (the caller then drops the subscription itself).
  bool start(uint64_t subscription) {
    std::lock_guard l(mu_);
    subscription_ = subscription;
    return !closed_;
  }

  void request(const pb::WatchRequest& r) override {
    switch (r.request_union_case()) {
      case pb::WatchRequest::kCreateRequest:
        create(r.create_request());
        break;
      case pb::WatchRequest::kCancelRequest:
        cancel(r.cancel_request().watch_id());
        break;
      case pb::WatchRequest::kProgressRequest:
        progress();
        break;
      case pb::WatchRequest::REQUEST_UNION_NOT_SET:
        break;
    }
  }
  void close() override { svc_->close_stream(this); }

  void on_events(const std::vector<pb::Event>& events);
  // Stops everything; returns the subscription to drop (none if already
  // closed).  `why` set: the sink is told the stream ends from this side.
  std::optional<uint64_t> shut(const std::optional<Status>& why);

 private:
  void create(const pb::WatchCreateRequest& req);
  void cancel(int64_t id);
  void progress();

  bool matches(const Watcher& w, const pb::Event& e) const {
    if (e.type() == pb::Event::PUT ? w.no_put : w.no_delete) return false;
    return storage::in_range(e.kv().key(), w.key, w.range_end);
  }
  void send_locked(const pb::WatchResponse& r) {
    if (overflowed_) return;
    sink_->send(r);
    if (max_queued_ > 0 && sink_->queued_bytes() > max_queued_) {
      // The client does not read: end the stream (it resumes its watchers
      // from their last revision on a new one) rather than buffer forever.
      overflowed_ = true;
      std::weak_ptr<WatchStream> self = weak_from_this();
      svc_->timers_.after(0ms, [self] {
        if (auto s = self.lock())
          s->svc_->close_stream(s.get(),
                                Status{Code::kUnavailable, "etcdserver: watch stream too slow"});
      });
    }
  }
  pb::WatchResponse response(int64_t id, int64_t revision) const {
    pb::WatchResponse r;
    svc_->fill_header(r.mutable_header());
    r.mutable_header()->set_revision(revision);
    r.set_watch_id(id);
    return r;
  }
  void deliver_locked(Watcher& w, std::vector<pb::Event> events, int64_t header_rev);
  void catch_up(int64_t id, int64_t start_rev);
  // Answers the watcher canceled, its start revision compacted; drops it.
  void cancel_compacted_locked(std::map<int64_t, Watcher>::iterator it, int64_t compact_rev);
  void schedule_progress(int64_t id);

  friend class V3Service::Impl;
  Impl* svc_;
  std::shared_ptr<WatchSink> sink_;
  size_t max_queued_;
  const Caller caller_;  // every watcher is checked against it as it is created
  std::mutex mu_;
  bool closed_ = false;
  bool overflowed_ = false;
  uint64_t subscription_ = 0;
  int64_t next_auto_id_ = 0;
  // The member's revision as of the last batch of events (or jump) seen.
  int64_t seen_rev_;
  std::map<int64_t, Watcher> watchers_;
};

void V3Service::Impl::WatchStream::deliver_locked(Watcher& w, std::vector<pb::Event> events,
                                                  int64_t header_rev) {
  pb::WatchResponse r = response(w.id, header_rev);
  // Every event of a revision goes out (a txn's puts and a range delete
  // share one); revisions already delivered do not.
  const int64_t from = w.next_rev;
  for (auto& e : events) {
    if (e.kv().mod_revision() < from) continue;
    w.next_rev = std::max(w.next_rev, e.kv().mod_revision() + 1);
    if (test_knobs::drop_watch_event()) continue;
    if (!w.prev_kv) e.clear_prev_kv();
    *r.add_events() = std::move(e);
  }
  if (r.events_size() == 0) return;
  // fragment: a response over --max-request-bytes goes out in pieces, all
  // but the last marked fragment (etcd's sendFragments), each piece with at
  // least one event.
  const size_t limit = svc_->options_.max_request_bytes;
  if (!w.fragment || r.ByteSizeLong() <= limit) return send_locked(r);
  pb::WatchResponse piece = response(w.id, header_rev);
  const size_t empty = piece.ByteSizeLong();
  size_t size = empty;
  for (auto& e : *r.mutable_events()) {
    const size_t n = e.ByteSizeLong() + 8;
    if (piece.events_size() > 0 && size + n > limit) {
      piece.set_fragment(true);
      send_locked(piece);
      piece = response(w.id, header_rev);
      size = empty;
    }
    *piece.add_events() = std::move(e);
    size += n;
  }
  send_locked(piece);
}

void V3Service::Impl::WatchStream::create(const pb::WatchCreateRequest& req) {
  int64_t id;
  // A negative start revision, as etcd's mvcc reads it (its compacted
  // revision is -1 until the first compaction): below the compacted
  // revision the watcher is canceled as compacted; -1 in a store never
  // compacted is the whole history.
  int64_t start = req.start_revision();
  int64_t compacted = 0;
  if (start < 0) {
    const int64_t c = svc_->member_.kv().compact_revision();
    const int64_t etcd_c = c > 0 ? c : -1;
    if (start < etcd_c)
      compacted = etcd_c;
    else
      start = 1;
  }
  // Read permission on the whole range, as etcd's isWatchPermitted: a
  // refused watcher is answered created and canceled, with watch_id -1 and
  // the error's text as the reason.
  Who who;
  Status allowed = svc_->identify_now(caller_, &who);
  if (allowed)
    allowed = svc_->member_.kv().auth().view()->check(
        who_ptr(who), storage::RangePerms::Type::kRead, req.key(), req.range_end());
  {
    std::lock_guard l(mu_);
    if (closed_) return;
    if (!allowed) {
      pb::WatchResponse r = response(-1, svc_->member_.kv().revision());
      r.set_created(true);
      r.set_canceled(true);
      r.set_cancel_reason(allowed.message());
      send_locked(r);
      return;
    }
    if (req.watch_id() != 0) {
      id = req.watch_id();
      if (watchers_.count(id)) {
        // etcd answers a watch_id already in use on the stream with a
        // created-and-canceled reply for watch -1.
        pb::WatchResponse r = response(-1, svc_->member_.kv().revision());
        r.set_created(true);
        r.set_canceled(true);
        r.set_cancel_reason("mvcc: duplicate watch ID provided on the WatchStream");
        send_locked(r);
        return;
      }
    } else {
      while (watchers_.count(next_auto_id_)) ++next_auto_id_;
      id = next_auto_id_++;
    }
    Watcher& w = watchers_[id];
    w.id = id;
    w.key = req.key();
    w.range_end = req.range_end();
    w.prev_kv = req.prev_kv();
    w.progress_notify = req.progress_notify();
    w.fragment = req.fragment();
    for (int f : req.filters()) {
      if (f == pb::WatchCreateRequest::NOPUT) w.no_put = true;
      if (f == pb::WatchCreateRequest::NODELETE) w.no_delete = true;
    }
    pb::WatchResponse r = response(id, svc_->member_.kv().revision());
    r.set_created(true);
    send_locked(r);
    svc_->watchers_.add(1);
    if (compacted != 0) return cancel_compacted_locked(watchers_.find(id), compacted);
    if (start == 0) {
      // From now on: everything after the current revision.  Events buffered
      // since subscribe() at or below it are dropped by next_rev.
      w.next_rev = svc_->member_.kv().revision() + 1;
      w.catching_up = false;
    }
  }
  if (start > 0) catch_up(id, start);
  if (req.progress_notify()) schedule_progress(id);
}

void V3Service::Impl::WatchStream::cancel_compacted_locked(
    std::map<int64_t, Watcher>::iterator it, int64_t compact_rev) {
  // etcd: a start revision below the compacted one cancels the watcher with
  // compact_revision set; the header carries no revision.
  pb::WatchResponse r = response(it->first, 0);
  r.mutable_header()->clear_revision();
  r.set_canceled(true);
  r.set_compact_revision(compact_rev);
  send_locked(r);
  watchers_.erase(it);
  svc_->watchers_.add(-1);
}

void V3Service::Impl::WatchStream::catch_up(int64_t id, int64_t start_rev) {
  const storage::KvStore& kv = svc_->member_.kv();
  std::string key, range_end;
  bool prev_kv;
  {
    std::lock_guard l(mu_);
    auto it = watchers_.find(id);
    if (it == watchers_.end()) return;
    key = it->second.key;
    range_end = it->second.range_end;
    prev_kv = it->second.prev_kv;
  }
  int64_t next = start_rev;
  for (;;) {
    std::vector<pb::Event> events;
    int64_t resume = 0, compacted_at = 0;
    Status s =
        kv.events(key, range_end, next, kWatchBatch, prev_kv, &events, &resume, &compacted_at);
    std::lock_guard l(mu_);
    auto it = watchers_.find(id);
    if (closed_ || it == watchers_.end()) return;
    Watcher& w = it->second;
    if (!s) {
      if (s.code() == Code::kOutOfRange) return cancel_compacted_locked(it, compacted_at);
      pb::WatchResponse r = response(id, 0);
      r.mutable_header()->clear_revision();
      r.set_canceled(true);
      r.set_cancel_reason(s.message());
      send_locked(r);
      watchers_.erase(it);
      svc_->watchers_.add(-1);
      return;
    }
    const bool done = events.size() < kWatchBatch;
    std::vector<pb::Event> matching;
    for (auto& e : events)
      if (matches(w, e)) matching.push_back(std::move(e));
    w.next_rev = std::max(w.next_rev, next);
    deliver_locked(w, std::move(matching), kv.revision());
    // A future start revision: nothing before it may be delivered.
    next = std::max(resume, start_rev);
    w.next_rev = std::max(w.next_rev, next);
    if (done) {
      std::vector<pb::Event> buffered = std::move(w.buffer);
      w.buffer.clear();
      w.catching_up = false;
      if (!buffered.empty()) {
        const int64_t rev = buffered.back().kv().mod_revision();
        deliver_locked(w, std::move(buffered), rev);
      }
      return;
    }
  }
}

void V3Service::Impl::WatchStream::on_events(const std::vector<pb::Event>& events) {
  std::vector<std::pair<int64_t, int64_t>> resync;  // watcher, first revision to read
  {
    std::lock_guard l(mu_);
    if (closed_) return;
    const int64_t rev =
        events.empty() ? svc_->member_.kv().revision() : events.back().kv().mod_revision();
    const bool jumped =
        events.empty() ? rev > seen_rev_ : events.front().kv().mod_revision() > seen_rev_ + 1;
    seen_rev_ = std::max(seen_rev_, rev);
    // Applied puts come without prev_kv (the store reads it only when asked):
    // looked up once per event, and only for watchers that want it.
    std::vector<std::optional<pb::Event>> with_prev(events.size());
    auto prev_filled = [&](size_t i) -> const pb::Event& {
      const pb::Event& e = events[i];
      if (e.type() != pb::Event::PUT || e.has_prev_kv() || e.kv().version() <= 1) return e;
      if (!with_prev[i]) {
        with_prev[i] = e;
        svc_->member_.kv().previous(e.kv().key(), e.kv().mod_revision(),
                                    with_prev[i]->mutable_prev_kv());
        if (with_prev[i]->prev_kv().key().empty()) with_prev[i]->clear_prev_kv();
      }
      return *with_prev[i];
    };
    for (auto& [id, w] : watchers_) {
      if (jumped && !w.catching_up) {
        w.catching_up = true;
        resync.emplace_back(id, w.next_rev);
      }
      std::vector<pb::Event> matching;
      for (size_t i = 0; i < events.size(); ++i)
        if (matches(w, events[i])) matching.push_back(w.prev_kv ? prev_filled(i) : events[i]);
      if (matching.empty()) continue;
      if (w.catching_up) {
        for (auto& e : matching) w.buffer.push_back(std::move(e));
      } else {
        deliver_locked(w, std::move(matching), rev);
      }
    }
  }
  // Read the skipped revisions off this (apply) thread.
  for (auto [id, from] : resync) {
    std::weak_ptr<WatchStream> self = weak_from_this();
    svc_->timers_.after(0ms, [self, id = id, from = from] {
      if (auto s = self.lock()) s->catch_up(id, from);
    });
  }
}

void V3Service::Impl::WatchStream::cancel(int64_t id) {
  std::lock_guard l(mu_);
  auto it = watchers_.find(id);
  if (closed_ || it == watchers_.end()) return;
  if (it->second.progress_timer) svc_->timers_.cancel(it->second.progress_timer);
  watchers_.erase(it);
  svc_->watchers_.add(-1);
  pb::WatchResponse r = response(id, svc_->member_.kv().revision());
  r.set_canceled(true);
  send_locked(r);
}

// etcd 3.4 answers a progress request with a header-only response whose
// watch_id is -1.
void V3Service::Impl::WatchStream::progress() {
  std::lock_guard l(mu_);
  if (closed_) return;
  send_locked(response(-1, svc_->member_.kv().revision()));
}

void V3Service::Impl::WatchStream::schedule_progress(int64_t id) {
  std::weak_ptr<WatchStream> self = weak_from_this();
  std::lock_guard l(mu_);
  auto it = watchers_.find(id);
  if (closed_ || it == watchers_.end()) return;
  it->second.progress_timer =
      svc_->timers_.after(svc_->options_.watch_progress_interval, [self, id] {
        auto s = self.lock();
        if (!s) return;
        {
          std::lock_guard l2(s->mu_);
          auto w = s->watchers_.find(id);
          if (s->closed_ || w == s->watchers_.end()) return;
          // Only a synced watcher reports progress: its header revision
          // promises that every event up to it has been sent.
          if (!w->second.catching_up)
            s->send_locked(s->response(id, s->svc_->member_.kv().revision()));
        }
        s->schedule_progress(id);
      });
}

std::optional<uint64_t> V3Service::Impl::WatchStream::shut(const std::optional<Status>& why) {
  std::lock_guard l(mu_);
  if (closed_) return std::nullopt;
  closed_ = true;
  if (why) sink_->close(*why);
  for (auto& [id, w] : watchers_)
    if (w.progress_timer) svc_->timers_.cancel(w.progress_timer);
  svc_->watchers_.add(-static_cast<double>(watchers_.size()));
  watchers_.clear();
  return subscription_;
}

std::weak_ptr<V3Service::WatchSession> V3Service::watch(std::shared_ptr<WatchSink> sink,
                                                        size_t max_queued, Caller caller) {
  auto stream = std::make_shared<Impl::WatchStream>(impl_.get(), std::move(sink), max_queued,
                                                    std::move(caller));
  {
    std::lock_guard l(impl_->streams_mu_);
    impl_->streams_[stream.get()] = stream;
  }
  std::weak_ptr<Impl::WatchStream> weak = stream;
  // Subscribe before any history is read (see WatchStream).
  const uint64_t sub = impl_->member_.subscribe([weak](const std::vector<pb::Event>& events) {
    if (auto s = weak.lock()) s->on_events(events);
  });
  if (!stream->start(sub)) impl_->member_.unsubscribe(sub);
  return stream;
}

void V3Service::Impl::close_stream(WatchStream* s) { close_stream(s, std::nullopt); }

void V3Service::Impl::close_stream(WatchStream* s, const std::optional<Status>& why) {
  std::shared_ptr<WatchStream> keep;
  {
    std::lock_guard l(streams_mu_);
    auto it = streams_.find(s);
    if (it == streams_.end()) return;
    keep = it->second;
    streams_.erase(it);
  }
  if (auto sub = keep->shut(why)) member_.unsubscribe(*sub);
}

V3Service::Impl::~Impl() {
  std::map<const WatchStream*, std::shared_ptr<WatchStream>> streams;
  {
    std::lock_guard l(streams_mu_);
    streams.swap(streams_);
  }
  for (auto& [p, s] : streams)
    if (auto sub = s->shut(std::nullopt)) member_.unsubscribe(*sub);
}

}  // namespace muster::server
