// node/server/v3_api.cpp: the v3 JSON gateway routes, /health, /version and
// /metrics (see v3_api.h for the contract, docs/api.md for the routes).
#include "node/server/v3_api.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "net/log.h"
#include "node/storage/errors.h"

namespace muster::server {

namespace {

using storage::Code;
using storage::Status;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kRequestTooLarge = "etcdserver: request is too large";
constexpr const char* kTimedOut = "etcdserver: request timed out";
constexpr const char* kServerStopped = "etcdserver: server stopped";
// History read per step of a watch catch-up; each step becomes one response.
constexpr size_t kWatchBatch = 1000;

// grpc-gateway v1's mapping of gRPC codes to HTTP statuses (runtime/errors.go).
int http_status_for(int code) {
  switch (code) {
    case 0:
      return 200;
    case 1:
      return 408;  // Canceled
    case 2:
      return 500;  // Unknown
    case 3:
      return 400;  // InvalidArgument
    case 4:
      return 504;  // DeadlineExceeded
    case 5:
      return 404;  // NotFound
    case 6:
      return 409;  // AlreadyExists
    case 7:
      return 403;  // PermissionDenied
    case 8:
      return 429;  // ResourceExhausted
    case 9:
      return 400;  // FailedPrecondition
    case 10:
      return 409;  // Aborted
    case 11:
      return 400;  // OutOfRange
    case 12:
      return 501;  // Unimplemented
    case 13:
      return 500;  // Internal
    case 14:
      return 503;  // Unavailable
    case 15:
      return 500;  // DataLoss
    case 16:
      return 401;  // Unauthenticated
    default:
      return 500;
  }
}

net::Response error_response(const Status& s) {
  const int code = static_cast<int>(s.code());
  nlohmann::json j = {{"error", s.message()}, {"message", s.message()}, {"code", code}};
  return net::Response::json(http_status_for(code), j.dump());
}

// The error object of a gateway stream (grpc-gateway's StreamError).
std::string stream_error_line(const Status& s) {
  const int code = static_cast<int>(s.code());
  const int http = http_status_for(code);
  nlohmann::json j = {{"error",
                       {{"grpc_code", code},
                        {"http_code", http},
                        {"message", s.message()},
                        {"http_status", std::string(net::status_reason(http))}}}};
  return j.dump() + "\n";
}

std::string to_json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  std::string out;
  auto st = google::protobuf::util::MessageToJsonString(m, &out, o);
  if (!st.ok()) storage::fatal("JSON encoding of " + m.GetTypeName() + " failed");
  return out;
}

net::Response json_ok(const google::protobuf::Message& m) {
  return net::Response::json(200, to_json(m));
}

std::string result_line(const google::protobuf::Message& m) {
  return "{\"result\":" + to_json(m) + "}\n";
}

bool all_space(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
}

// Decodes one JSON object into `m`.  Unknown fields are ignored, as etcd's
// gateway ignores them (a client written for a newer etcd keeps working); an
// empty body is the empty message, as in etcd.
Status parse(std::string_view body, google::protobuf::Message* m) {
  if (all_space(body)) body = "{}";
  google::protobuf::util::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  auto st = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(body.data(), body.size()), m, o);
  if (!st.ok()) {
    auto msg = st.message();
    return {Code::kInvalidArgument, std::string(msg.data(), msg.size())};
  }
  return {};
}

// Splits a stream request body into its JSON values (a gateway stream body
// is a sequence of requests, usually one per line).  Tracks strings and
// nesting so that braces inside keys or values do not confuse it.
std::vector<std::string_view> split_values(std::string_view body) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < body.size()) {
    if (std::isspace(static_cast<unsigned char>(body[i]))) {
      ++i;
      continue;
    }
    const size_t start = i;
    int depth = 0;
    bool in_string = false, escaped = false;
    for (; i < body.size(); ++i) {
      const char c = body[i];
      if (in_string) {
        if (escaped)
          escaped = false;
        else if (c == '\\')
          escaped = true;
        else if (c == '"')
          in_string = false;
        continue;
      }
      if (c == '"')
        in_string = true;
      else if (c == '{' || c == '[')
        ++depth;
      else if (c == '}' || c == ']') {
        if (--depth <= 0) {
          ++i;
          break;
        }
      } else if (depth == 0 && std::isspace(static_cast<unsigned char>(c))) {
        break;
      }
    }
    out.push_back(body.substr(start, i - start));
  }
  return out;
}

// One-shot timers on a thread of their own: request deadlines and watch
// progress notifications.  Callbacks run without the lock held.
class Timers {
 public:
  Timers() : thread_([this] { run(); }) {}
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
    queue_.emplace(std::make_pair(at, id), std::move(f));
    when_[id] = at;
    cv_.notify_all();
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
        cv_.wait_until(l, first->first.first);
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

// Answered exactly once: by the member's callback or by the deadline.
struct Once {
  std::atomic<bool> done{false};
  uint64_t timer = 0;
  bool claim() { return !done.exchange(true); }
};

int64_t resident_bytes() {
  std::ifstream f("/proc/self/statm");
  long pages = 0, resident = 0;
  if (!(f >> pages >> resident)) return 0;
  return static_cast<int64_t>(resident) * ::sysconf(_SC_PAGESIZE);
}

}  // namespace

// ---------------------------------------------------------------- Impl

class V3Api::Impl {
 public:
  Impl(MemberApi& member, Options options, metrics::Registry& reg);
  ~Impl();

  bool handle(const std::shared_ptr<net::Exchange>& ex);

 private:
  class WatchStream;
  using Ex = std::shared_ptr<net::Exchange>;
  using Route = void (Impl::*)(const Ex&);

  void respond(const Ex& ex, net::Response r);
  void fail(const Ex& ex, const Status& s) { respond(ex, error_response(s)); }
  // Response headers come from a copy of the member's identity and term,
  // refreshed as each request arrives: headers are also written from member
  // callbacks, which must not call back into the member (status() may take
  // a lock the driver holds while it runs callbacks).
  void fill_header(pb::ResponseHeader* h, bool with_revision = true) const;
  void refresh_identity();

  // Runs `then` once a read barrier passed, or answers with the error.
  void after_barrier(std::chrono::milliseconds timeout, std::function<void()> then,
                     std::function<void(const Status&)> on_error);
  void linearizable(const Ex& ex, std::function<void()> then) {
    after_barrier(options_.request_timeout, std::move(then),
                  [this, ex](const Status& s) { fail(ex, s); });
  }
  // Validates, proposes and answers with the applied response.
  void propose(const Ex& ex, pb::InternalRequest req);

  void kv_range(const Ex& ex);
  void kv_put(const Ex& ex);
  void kv_deleterange(const Ex& ex);
  void kv_txn(const Ex& ex);
  void kv_compaction(const Ex& ex);
  void watch(const Ex& ex);
  void lease_grant(const Ex& ex);
  void lease_revoke(const Ex& ex);
  void lease_keepalive(const Ex& ex);
  void keepalive_next(const Ex& ex, std::shared_ptr<std::vector<int64_t>> ids, size_t i);
  void lease_timetolive(const Ex& ex);
  void lease_leases(const Ex& ex);
  void member_list(const Ex& ex);
  void member_add(const Ex& ex);
  void member_remove(const Ex& ex);
  void member_update(const Ex& ex);
  void member_promote(const Ex& ex);
  void maintenance_status(const Ex& ex);
  void health(const Ex& ex);
  void version(const Ex& ex);
  void metrics(const Ex& ex);

  void close_stream(const std::shared_ptr<WatchStream>& s);

  MemberApi& member_;
  Options options_;
  metrics::Registry& reg_;
  std::map<std::string, Route, std::less<>> routes_;

  // Instruments, named as etcd names them.
  metrics::Gauge& has_leader_;
  metrics::Gauge& is_leader_;
  metrics::Gauge& committed_;
  metrics::Gauge& applied_;
  metrics::Gauge& pending_;
  metrics::Counter& failed_;
  metrics::Gauge& db_size_;
  metrics::Gauge& keys_total_;
  metrics::Gauge& current_rev_;
  metrics::Gauge& compact_rev_;
  metrics::Gauge& watchers_;
  metrics::Counter& received_bytes_;
  metrics::Counter& sent_bytes_;
  metrics::Counter& health_ok_;
  metrics::Counter& health_failed_;
  metrics::Gauge& rss_;

  std::atomic<uint64_t> cluster_id_{0}, member_id_{0}, raft_term_{0};
  std::atomic<int64_t> db_size_bytes_{0};
  std::atomic<int64_t> identity_at_{0};  // steady clock ticks of the last refresh

  std::mutex streams_mu_;
  std::map<const WatchStream*, std::shared_ptr<WatchStream>> streams_;

  Timers timers_;  // last: its thread stops first on destruction
};

void V3Api::Impl::respond(const Ex& ex, net::Response r) {
  sent_bytes_.inc(static_cast<double>(r.body.size()));
  ex->respond(std::move(r));
}

void V3Api::Impl::fill_header(pb::ResponseHeader* h, bool with_revision) const {
  h->set_cluster_id(cluster_id_.load());
  h->set_member_id(member_id_.load());
  h->set_raft_term(raft_term_.load());
  if (!with_revision) h->clear_revision();
}

void V3Api::Impl::refresh_identity() {
  const MemberStatus st = member_.status();
  cluster_id_.store(st.cluster_id);
  member_id_.store(st.member_id);
  raft_term_.store(st.raft_term);
  db_size_bytes_.store(st.db_size);
}

V3Api::Impl::Impl(MemberApi& member, Options options, metrics::Registry& reg)
    : member_(member),
      options_(std::move(options)),
      reg_(reg),
      has_leader_(reg.gauge("etcd_server_has_leader",
                            "Whether or not a leader exists. 1 is existence, 0 is not.")),
      is_leader_(reg.gauge("etcd_server_is_leader",
                           "Whether or not this member is a leader. 1 if is, 0 otherwise.")),
      committed_(reg.gauge("etcd_server_proposals_committed_total",
                           "The total number of consensus proposals committed.")),
      applied_(reg.gauge("etcd_server_proposals_applied_total",
                         "The total number of consensus proposals applied.")),
      pending_(reg.gauge("etcd_server_proposals_pending",
                         "The current number of pending proposals to commit.")),
      failed_(reg.counter("etcd_server_proposals_failed_total",
                          "The total number of failed proposals seen.")),
      db_size_(reg.gauge("etcd_mvcc_db_total_size_in_bytes",
                         "Total size of the underlying database physically allocated in bytes.")),
      keys_total_(reg.gauge("etcd_debugging_mvcc_keys_total", "Total number of keys.")),
      current_rev_(
          reg.gauge("etcd_debugging_mvcc_current_revision", "The current revision of store.")),
      compact_rev_(reg.gauge("etcd_debugging_mvcc_compact_revision",
                             "The revision of the last compaction in store.")),
      watchers_(reg.gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers.")),
      received_bytes_(reg.counter("etcd_network_client_grpc_received_bytes_total",
                                  "The total number of bytes received from grpc clients.")),
      sent_bytes_(reg.counter("etcd_network_client_grpc_sent_bytes_total",
                              "The total number of bytes sent to grpc clients.")),
      health_ok_(reg.counter("etcd_server_health_success",
                             "The total number of successful health checks")),
      health_failed_(
          reg.counter("etcd_server_health_failures", "The total number of failed health checks")),
      rss_(reg.gauge("process_resident_memory_bytes", "Resident memory size in bytes.")) {
  leader_changes(reg);  // the family exists from the start, at 0
  refresh_identity();
  routes_ = {
      {"/v3/kv/range", &Impl::kv_range},
      {"/v3/kv/put", &Impl::kv_put},
      {"/v3/kv/deleterange", &Impl::kv_deleterange},
      {"/v3/kv/txn", &Impl::kv_txn},
      {"/v3/kv/compaction", &Impl::kv_compaction},
      {"/v3/watch", &Impl::watch},
      {"/v3/lease/grant", &Impl::lease_grant},
      {"/v3/lease/revoke", &Impl::lease_revoke},
      {"/v3/kv/lease/revoke", &Impl::lease_revoke},
      {"/v3/lease/keepalive", &Impl::lease_keepalive},
      {"/v3/lease/timetolive", &Impl::lease_timetolive},
      {"/v3/kv/lease/timetolive", &Impl::lease_timetolive},
      {"/v3/lease/leases", &Impl::lease_leases},
      {"/v3/kv/lease/leases", &Impl::lease_leases},
      {"/v3/cluster/member/list", &Impl::member_list},
      {"/v3/cluster/member/add", &Impl::member_add},
      {"/v3/cluster/member/remove", &Impl::member_remove},
      {"/v3/cluster/member/update", &Impl::member_update},
      {"/v3/cluster/member/promote", &Impl::member_promote},
      {"/v3/maintenance/status", &Impl::maintenance_status},
  };
}

bool V3Api::Impl::handle(const Ex& ex) {
  std::string path = ex->request().path();
  const std::string& method = ex->request().method;
  if (path == "/health" || path == "/version" || path == "/metrics") {
    if (method != "GET") {
      net::Response r = net::Response::text(405, "Method Not Allowed\n");
      r.headers.set("Allow", "GET");
      respond(ex, std::move(r));
      return true;
    }
    if (path == "/health")
      health(ex);
    else if (path == "/version")
      version(ex);
    else
      metrics(ex);
    return true;
  }
  // etcd 3.4 rewrites /v3beta/ to /v3/ in front of its gateway.
  if (path.rfind("/v3beta/", 0) == 0) path = "/v3/" + path.substr(8);
  if (path.rfind("/v3/", 0) != 0) return false;
  auto it = routes_.find(path);
  if (it == routes_.end()) {
    respond(ex, net::Response::text(404, "Not Found\n"));
    return true;
  }
  if (method != "POST") {
    respond(ex, net::Response::text(405, "Method Not Allowed\n"));
    return true;
  }
  received_bytes_.inc(static_cast<double>(ex->request().body.size()));
  // At most every 10 ms: status() may not be free, and the identity changes
  // only with a new term.
  const int64_t now = Clock::now().time_since_epoch().count();
  int64_t last = identity_at_.load();
  if (now - last >= std::chrono::nanoseconds(10ms).count() &&
      identity_at_.compare_exchange_strong(last, now))
    refresh_identity();
  (this->*(it->second))(ex);
  return true;
}

void V3Api::Impl::after_barrier(std::chrono::milliseconds timeout, std::function<void()> then,
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

void V3Api::Impl::propose(const Ex& ex, pb::InternalRequest req) {
  Status v = storage::validate(req, options_.max_txn_ops);
  if (!v) return fail(ex, v);
  if (req.ByteSizeLong() > options_.max_request_bytes)
    return fail(ex, {Code::kInvalidArgument, kRequestTooLarge});
  // --quota-backend-bytes: once the database is over its quota, requests
  // that can grow it are refused, as etcd's NOSPACE alarm does (deletes and
  // compactions still pass, so an operator can make room).
  if (options_.quota_backend_bytes > 0 && db_size_bytes_.load() > options_.quota_backend_bytes &&
      (req.has_put() || req.has_txn() || req.has_lease_grant()))
    return fail(ex, {static_cast<Code>(8), "etcdserver: mvcc: database space exceeded"});
  auto once = std::make_shared<Once>();
  pending_.add(1);
  once->timer = timers_.after(options_.request_timeout, [this, ex, once] {
    if (!once->claim()) return;
    pending_.add(-1);
    failed_.inc();
    fail(ex, {Code::kUnavailable, kTimedOut});
  });
  const bool membership = req.has_member_add() || req.has_member_remove() ||
                          req.has_member_update() || req.has_member_promote();
  auto on_applied = [this, ex, once](Status s, storage::KvStore::ApplyResult r) {
    if (!once->claim()) return;
    timers_.cancel(once->timer);
    pending_.add(-1);
    if (!s) {
      failed_.inc();
      return fail(ex, s);
    }
    if (!r.status) return fail(ex, r.status);
    pb::InternalResponse& out = r.response;
    google::protobuf::Message* m = nullptr;
    pb::ResponseHeader* h = nullptr;
    switch (out.response_case()) {
      case pb::InternalResponse::kPut:
        m = out.mutable_put(), h = out.mutable_put()->mutable_header();
        break;
      case pb::InternalResponse::kDeleteRange:
        m = out.mutable_delete_range(), h = out.mutable_delete_range()->mutable_header();
        break;
      case pb::InternalResponse::kTxn:
        m = out.mutable_txn(), h = out.mutable_txn()->mutable_header();
        break;
      case pb::InternalResponse::kCompaction:
        m = out.mutable_compaction(), h = out.mutable_compaction()->mutable_header();
        break;
      case pb::InternalResponse::kLeaseGrant:
        m = out.mutable_lease_grant(), h = out.mutable_lease_grant()->mutable_header();
        break;
      case pb::InternalResponse::kLeaseRevoke:
        m = out.mutable_lease_revoke(), h = out.mutable_lease_revoke()->mutable_header();
        break;
      case pb::InternalResponse::kMemberAdd:
        m = out.mutable_member_add(), h = out.mutable_member_add()->mutable_header();
        break;
      case pb::InternalResponse::kMemberRemove:
        m = out.mutable_member_remove(), h = out.mutable_member_remove()->mutable_header();
        break;
      case pb::InternalResponse::kMemberUpdate:
        m = out.mutable_member_update(), h = out.mutable_member_update()->mutable_header();
        break;
      case pb::InternalResponse::kMemberPromote:
        m = out.mutable_member_promote(), h = out.mutable_member_promote()->mutable_header();
        break;
      default:
        return fail(ex, {Code::kInternal, "etcdserver: unexpected response to a proposal"});
    }
    // Member-API headers carry no revision, as etcd's.
    fill_header(h, out.response_case() < pb::InternalResponse::kMemberAdd);
    respond(ex, json_ok(*m));
  };
  if (membership)
    member_.change_member(std::move(req), std::move(on_applied));
  else
    member_.propose(std::move(req), std::move(on_applied));
}

// ---------------------------------------------------------------- KV

void V3Api::Impl::kv_range(const Ex& ex) {
  auto req = std::make_shared<pb::RangeRequest>();
  if (Status s = parse(ex->request().body, req.get()); !s) return fail(ex, s);
  pb::InternalRequest ir;
  *ir.mutable_range() = *req;
  if (Status s = storage::validate(ir, options_.max_txn_ops); !s) return fail(ex, s);
  auto serve = [this, ex, req] {
    pb::RangeResponse resp;
    Status s = member_.kv().range(*req, &resp);
    if (!s) return fail(ex, s);
    fill_header(resp.mutable_header());
    respond(ex, json_ok(resp));
  };
  if (req->serializable())
    serve();
  else
    linearizable(ex, std::move(serve));
}

void V3Api::Impl::kv_put(const Ex& ex) {
  pb::InternalRequest ir;
  if (Status s = parse(ex->request().body, ir.mutable_put()); !s) return fail(ex, s);
  propose(ex, std::move(ir));
}

void V3Api::Impl::kv_deleterange(const Ex& ex) {
  pb::InternalRequest ir;
  if (Status s = parse(ex->request().body, ir.mutable_delete_range()); !s) return fail(ex, s);
  propose(ex, std::move(ir));
}

// Every txn goes through Raft, read-only ones included: the store evaluates
// compares only while applying, and a replicated read is linearizable.
void V3Api::Impl::kv_txn(const Ex& ex) {
  pb::InternalRequest ir;
  if (Status s = parse(ex->request().body, ir.mutable_txn()); !s) return fail(ex, s);
  propose(ex, std::move(ir));
}

void V3Api::Impl::kv_compaction(const Ex& ex) {
  pb::InternalRequest ir;
  if (Status s = parse(ex->request().body, ir.mutable_compaction()); !s) return fail(ex, s);
  propose(ex, std::move(ir));
}

// ---------------------------------------------------------------- leases

void V3Api::Impl::lease_grant(const Ex& ex) {
  pb::InternalRequest ir;
  if (Status s = parse(ex->request().body, ir.mutable_lease_grant()); !s) return fail(ex, s);
  propose(ex, std::move(ir));
}

void V3Api::Impl::lease_revoke(const Ex& ex) {
  pb::InternalRequest ir;
  if (Status s = parse(ex->request().body, ir.mutable_lease_revoke()); !s) return fail(ex, s);
  propose(ex, std::move(ir));
}

// etcd 3.4's gateway maps the keepalive stream onto one HTTP exchange: every
// request in the body gets one {"result":...} line, then the stream ends.  A
// lease that does not exist answers with TTL 0 (omitted), as etcd does.
void V3Api::Impl::lease_keepalive(const Ex& ex) {
  auto ids = std::make_shared<std::vector<int64_t>>();
  for (std::string_view v : split_values(ex->request().body)) {
    pb::LeaseKeepAliveRequest req;
    if (Status s = parse(v, &req); !s) return fail(ex, s);
    ids->push_back(req.id());
  }
  net::Response head = net::Response::json(200, "");
  ex->begin_stream(std::move(head));
  keepalive_next(ex, std::move(ids), 0);
}

void V3Api::Impl::keepalive_next(const Ex& ex, std::shared_ptr<std::vector<int64_t>> ids,
                                 size_t i) {
  if (i >= ids->size() || ex->finished()) {
    ex->end_stream();
    return;
  }
  const int64_t id = (*ids)[i];
  auto once = std::make_shared<Once>();
  once->timer = timers_.after(options_.request_timeout, [this, ex, once] {
    if (!once->claim()) return;
    std::string line = stream_error_line({Code::kUnavailable, kTimedOut});
    sent_bytes_.inc(static_cast<double>(line.size()));
    ex->write(std::move(line));
    ex->end_stream();
  });
  member_.lease_keepalive(id, [this, ex, ids, i, id, once](Status s, int64_t ttl) {
    if (!once->claim()) return;
    timers_.cancel(once->timer);
    std::string line;
    bool stop = false;
    if (s || s.code() == Code::kNotFound) {
      pb::LeaseKeepAliveResponse resp;
      fill_header(resp.mutable_header());
      resp.mutable_header()->set_revision(member_.kv().revision());
      resp.set_id(id);
      resp.set_ttl(s ? ttl : 0);
      line = result_line(resp);
    } else {
      line = stream_error_line(s);
      stop = true;
    }
    sent_bytes_.inc(static_cast<double>(line.size()));
    ex->write(std::move(line));
    if (stop)
      ex->end_stream();
    else
      keepalive_next(ex, ids, i + 1);
  });
}

// A lease this member does not know answers TTL -1, as etcd does.
void V3Api::Impl::lease_timetolive(const Ex& ex) {
  auto req = std::make_shared<pb::LeaseTimeToLiveRequest>();
  if (Status s = parse(ex->request().body, req.get()); !s) return fail(ex, s);
  linearizable(ex, [this, ex, req] {
    pb::LeaseTimeToLiveResponse resp;
    Status s = member_.kv().lease_time_to_live(*req, &resp);
    if (!s) {
      if (s.code() != Code::kNotFound) return fail(ex, s);
      resp.Clear();
      resp.mutable_header()->set_revision(member_.kv().revision());
      resp.set_id(req->id());
      resp.set_ttl(-1);
    }
    fill_header(resp.mutable_header());
    respond(ex, json_ok(resp));
  });
}

void V3Api::Impl::lease_leases(const Ex& ex) {
  pb::LeaseLeasesRequest req;
  if (Status s = parse(ex->request().body, &req); !s) return fail(ex, s);
  linearizable(ex, [this, ex] {
    pb::LeaseLeasesResponse resp = member_.kv().leases();
    fill_header(resp.mutable_header());
    respond(ex, json_ok(resp));
  });
}

// ---------------------------------------------------------------- cluster

// Member-API headers carry no revision, as etcd's.
void V3Api::Impl::member_list(const Ex& ex) {
  pb::MemberListRequest req;
  if (Status s = parse(ex->request().body, &req); !s) return fail(ex, s);
  auto serve = [this, ex] {
    pb::MemberListResponse resp;
    fill_header(resp.mutable_header(), false);
    for (auto& m : member_.kv().members()) *resp.add_members() = std::move(m);
    respond(ex, json_ok(resp));
  };
  if (req.linearizable())
    linearizable(ex, std::move(serve));
  else
    serve();
}

void V3Api::Impl::member_add(const Ex& ex) {
  pb::MemberAddRequest req;
  if (Status s = parse(ex->request().body, &req); !s) return fail(ex, s);
  pb::InternalRequest ir;
  auto* m = ir.mutable_member_add()->mutable_member();
  *m->mutable_peerurls() = req.peerurls();
  m->set_islearner(req.islearner());
  propose(ex, std::move(ir));
}

void V3Api::Impl::member_remove(const Ex& ex) {
  pb::InternalRequest ir;
  if (Status s = parse(ex->request().body, ir.mutable_member_remove()); !s) return fail(ex, s);
  propose(ex, std::move(ir));
}

void V3Api::Impl::member_update(const Ex& ex) {
  pb::InternalRequest ir;
  if (Status s = parse(ex->request().body, ir.mutable_member_update()); !s) return fail(ex, s);
  propose(ex, std::move(ir));
}

void V3Api::Impl::member_promote(const Ex& ex) {
  pb::InternalRequest ir;
  if (Status s = parse(ex->request().body, ir.mutable_member_promote()); !s) return fail(ex, s);
  propose(ex, std::move(ir));
}

void V3Api::Impl::maintenance_status(const Ex& ex) {
  pb::StatusRequest req;
  if (Status s = parse(ex->request().body, &req); !s) return fail(ex, s);
  const MemberStatus st = member_.status();
  pb::StatusResponse resp;
  fill_header(resp.mutable_header());
  resp.mutable_header()->set_revision(member_.kv().revision());
  resp.set_version(options_.server_version);
  resp.set_dbsize(st.db_size);
  resp.set_leader(st.leader);
  resp.set_raftindex(st.raft_index);
  resp.set_raftterm(st.raft_term);
  resp.set_raftappliedindex(st.raft_applied_index);
  resp.set_dbsizeinuse(st.db_size);
  resp.set_islearner(st.is_learner);
  respond(ex, json_ok(resp));
}

// ---------------------------------------------------------------- plain HTTP

// etcd 3.4: unhealthy without a leader, or when a linearizable read does not
// complete in time.  The body's value is the string "true"/"false".
void V3Api::Impl::health(const Ex& ex) {
  auto answer = [this, ex](bool ok) {
    (ok ? health_ok_ : health_failed_).inc();
    net::Response r =
        net::Response::text(ok ? 200 : 503, ok ? R"({"health":"true"})" : R"({"health":"false"})");
    r.headers.set("Content-Type", "text/plain; charset=utf-8");
    respond(ex, std::move(r));
  };
  if (member_.status().leader == 0) return answer(false);
  after_barrier(
      options_.health_timeout, [answer] { answer(true); },
      [answer](const Status&) { answer(false); });
}

void V3Api::Impl::version(const Ex& ex) {
  nlohmann::json j = {{"etcdserver", options_.server_version},
                      {"etcdcluster", options_.cluster_version}};
  respond(ex, net::Response::json(200, j.dump()));
}

void V3Api::Impl::metrics(const Ex& ex) {
  const MemberStatus st = member_.status();
  const storage::KvStore& kv = member_.kv();
  has_leader_.set(st.leader != 0 ? 1 : 0);
  is_leader_.set(st.leader != 0 && st.leader == st.member_id ? 1 : 0);
  committed_.set(static_cast<double>(st.raft_index));
  applied_.set(static_cast<double>(st.raft_applied_index));
  db_size_.set(static_cast<double>(st.db_size));
  keys_total_.set(static_cast<double>(kv.key_count()));
  current_rev_.set(static_cast<double>(kv.revision()));
  compact_rev_.set(static_cast<double>(kv.compact_revision()));
  rss_.set(static_cast<double>(resident_bytes()));
  net::Response r = net::Response::text(200, reg_.render());
  r.headers.set("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
  respond(ex, std::move(r));
}

// ---------------------------------------------------------------- watch
//
// One WatchStream per /v3/watch exchange; it holds every watcher created by
// the request body and one subscription to the member's applied events.
//
// No event is lost or repeated across the switch from history to live
// events: the stream subscribes BEFORE any history is read.  A watcher that
// starts in the past is "catching up": live events that match it are
// buffered while its history is read from the store in batches; at the end,
// under the stream lock, the buffer is delivered from the first revision the
// history did not cover (`next_rev`), and the watcher turns live.  Live
// delivery skips events below `next_rev`, which covers events that were both
// in the history and reported live.  Every write to the exchange happens
// under the stream lock, so responses of one watcher are in revision order.
class V3Api::Impl::WatchStream : public std::enable_shared_from_this<WatchStream> {
 public:
  WatchStream(Impl& api, Ex ex) : api_(api), ex_(std::move(ex)) {}

  struct Watcher {
    int64_t id = 0;
    std::string key, range_end;
    bool prev_kv = false, no_put = false, no_delete = false, progress_notify = false;
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

  void create(const pb::WatchCreateRequest& req);
  void cancel(int64_t id);
  void progress();
  void on_events(const std::vector<pb::Event>& events);
  // Stops everything; returns the subscription to drop (none if already
  // closed).  `finish` ends the HTTP response too; the destructor passes
  // false, because by then the server (and its io_context) may be gone.
  std::optional<uint64_t> close(bool finish = true);

 private:
  bool matches(const Watcher& w, const pb::Event& e) const {
    if (e.type() == pb::Event::PUT ? w.no_put : w.no_delete) return false;
    return storage::in_range(e.kv().key(), w.key, w.range_end);
  }
  void send_locked(const pb::WatchResponse& r) {
    std::string line = result_line(r);
    api_.sent_bytes_.inc(static_cast<double>(line.size()));
    ex_->write(std::move(line));
  }
  pb::WatchResponse response(int64_t id, int64_t revision) const {
    pb::WatchResponse r;
    api_.fill_header(r.mutable_header());
    r.mutable_header()->set_revision(revision);
    r.set_watch_id(id);
    return r;
  }
  void deliver_locked(Watcher& w, std::vector<pb::Event> events, int64_t header_rev);
  void catch_up(int64_t id, int64_t start_rev);
  void schedule_progress(int64_t id);

  Impl& api_;
  Ex ex_;
  std::mutex mu_;
  bool closed_ = false;
  uint64_t subscription_ = 0;
  int64_t next_auto_id_ = 0;
  std::map<int64_t, Watcher> watchers_;
};

void V3Api::Impl::WatchStream::deliver_locked(Watcher& w, std::vector<pb::Event> events,
                                              int64_t header_rev) {
  pb::WatchResponse r = response(w.id, header_rev);
  for (auto& e : events) {
    if (e.kv().mod_revision() < w.next_rev) continue;
    w.next_rev = e.kv().mod_revision() + 1;
    if (!w.prev_kv) e.clear_prev_kv();
    *r.add_events() = std::move(e);
  }
  if (r.events_size() > 0) send_locked(r);
}

void V3Api::Impl::WatchStream::create(const pb::WatchCreateRequest& req) {
  int64_t id;
  {
    std::lock_guard l(mu_);
    if (closed_) return;
    if (req.watch_id() != 0) {
      id = req.watch_id();
      if (watchers_.count(id)) {
        // etcd answers a watch_id already in use on the stream with a
        // created-and-canceled reply for watch -1.
        pb::WatchResponse r = response(-1, api_.member_.kv().revision());
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
    for (int f : req.filters()) {
      if (f == pb::WatchCreateRequest::NOPUT) w.no_put = true;
      if (f == pb::WatchCreateRequest::NODELETE) w.no_delete = true;
    }
    pb::WatchResponse r = response(id, api_.member_.kv().revision());
    r.set_created(true);
    send_locked(r);
    api_.watchers_.add(1);
    if (req.start_revision() <= 0) {
      // From now on: everything after the current revision.  Events buffered
      // since subscribe() at or below it are dropped by next_rev.
      w.next_rev = api_.member_.kv().revision() + 1;
      w.catching_up = false;
    }
  }
  if (req.start_revision() > 0) catch_up(id, req.start_revision());
  if (req.progress_notify()) schedule_progress(id);
}

void V3Api::Impl::WatchStream::catch_up(int64_t id, int64_t start_rev) {
  const storage::KvStore& kv = api_.member_.kv();
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
      // etcd: a start revision below the compacted one cancels the watcher
      // with compact_revision set; the header carries no revision.
      pb::WatchResponse r = response(id, 0);
      r.mutable_header()->clear_revision();
      r.set_canceled(true);
      if (s.code() == Code::kOutOfRange)
        r.set_compact_revision(compacted_at);
      else
        r.set_cancel_reason(s.message());
      send_locked(r);
      watchers_.erase(it);
      api_.watchers_.add(-1);
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

void V3Api::Impl::WatchStream::on_events(const std::vector<pb::Event>& events) {
  if (events.empty()) return;
  std::lock_guard l(mu_);
  if (closed_) return;
  const int64_t rev = events.back().kv().mod_revision();
  for (auto& [id, w] : watchers_) {
    std::vector<pb::Event> matching;
    for (const auto& e : events)
      if (matches(w, e)) matching.push_back(e);
    if (matching.empty()) continue;
    if (w.catching_up) {
      for (auto& e : matching) w.buffer.push_back(std::move(e));
    } else {
      deliver_locked(w, std::move(matching), rev);
    }
  }
}

void V3Api::Impl::WatchStream::cancel(int64_t id) {
  std::lock_guard l(mu_);
  auto it = watchers_.find(id);
  if (closed_ || it == watchers_.end()) return;
  if (it->second.progress_timer) api_.timers_.cancel(it->second.progress_timer);
  watchers_.erase(it);
  api_.watchers_.add(-1);
  pb::WatchResponse r = response(id, api_.member_.kv().revision());
  r.set_canceled(true);
  send_locked(r);
}

// etcd 3.4 answers a progress request with a header-only response whose
// watch_id is -1.
void V3Api::Impl::WatchStream::progress() {
  std::lock_guard l(mu_);
  if (closed_) return;
  send_locked(response(-1, api_.member_.kv().revision()));
}

void V3Api::Impl::WatchStream::schedule_progress(int64_t id) {
  std::weak_ptr<WatchStream> self = weak_from_this();
  std::lock_guard l(mu_);
  auto it = watchers_.find(id);
  if (closed_ || it == watchers_.end()) return;
  it->second.progress_timer = api_.timers_.after(api_.options_.watch_progress_interval, [self, id] {
    auto s = self.lock();
    if (!s) return;
    {
      std::lock_guard l2(s->mu_);
      auto w = s->watchers_.find(id);
      if (s->closed_ || w == s->watchers_.end()) return;
      // Only a synced watcher reports progress: its header revision promises
      // that every event up to it has been sent.
      if (!w->second.catching_up) s->send_locked(s->response(id, s->api_.member_.kv().revision()));
    }
    s->schedule_progress(id);
  });
}

std::optional<uint64_t> V3Api::Impl::WatchStream::close(bool finish) {
  std::lock_guard l(mu_);
  if (closed_) return std::nullopt;
  closed_ = true;
  // Finishes the response when the server is stopping; ignored when the
  // client has gone.
  if (finish) ex_->end_stream();
  for (auto& [id, w] : watchers_)
    if (w.progress_timer) api_.timers_.cancel(w.progress_timer);
  api_.watchers_.add(-static_cast<double>(watchers_.size()));
  watchers_.clear();
  return subscription_;
}

void V3Api::Impl::watch(const Ex& ex) {
  std::vector<pb::WatchRequest> reqs;
  for (std::string_view v : split_values(ex->request().body)) {
    pb::WatchRequest r;
    if (Status s = parse(v, &r); !s) return fail(ex, s);
    reqs.push_back(std::move(r));
  }
  auto stream = std::make_shared<WatchStream>(*this, ex);
  {
    std::lock_guard l(streams_mu_);
    streams_[stream.get()] = stream;
  }
  std::weak_ptr<WatchStream> weak = stream;
  ex->begin_stream(net::Response::json(200, ""));
  ex->on_cancel([this, weak] {
    if (auto s = weak.lock()) close_stream(s);
  });
  // Subscribe before any history is read (see WatchStream).
  const uint64_t sub = member_.subscribe([weak](const std::vector<pb::Event>& events) {
    if (auto s = weak.lock()) s->on_events(events);
  });
  if (!stream->start(sub)) {
    member_.unsubscribe(sub);
    return;
  }
  for (const auto& r : reqs) {
    switch (r.request_union_case()) {
      case pb::WatchRequest::kCreateRequest:
        stream->create(r.create_request());
        break;
      case pb::WatchRequest::kCancelRequest:
        stream->cancel(r.cancel_request().watch_id());
        break;
      case pb::WatchRequest::kProgressRequest:
        stream->progress();
        break;
      case pb::WatchRequest::REQUEST_UNION_NOT_SET:
        break;
    }
  }
  // The stream stays open until the client goes away (or the server stops),
  // as etcd's gateway keeps it open after the request body ends.
  if (ex->finished()) close_stream(stream);
}

void V3Api::Impl::close_stream(const std::shared_ptr<WatchStream>& s) {
  if (auto sub = s->close()) member_.unsubscribe(*sub);
  std::lock_guard l(streams_mu_);
  streams_.erase(s.get());
}

V3Api::Impl::~Impl() {
  std::map<const WatchStream*, std::shared_ptr<WatchStream>> streams;
  {
    std::lock_guard l(streams_mu_);
    streams.swap(streams_);
  }
  for (auto& [p, s] : streams) {
    if (auto sub = s->close(false)) member_.unsubscribe(*sub);
  }
}

// ---------------------------------------------------------------- V3Api

V3Api::V3Api(MemberApi& member, Options options, metrics::Registry& metrics)
    : impl_(std::make_shared<Impl>(member, std::move(options), metrics)) {}

V3Api::~V3Api() = default;

bool V3Api::handle(const std::shared_ptr<net::Exchange>& ex) { return impl_->handle(ex); }

metrics::Counter& V3Api::leader_changes(metrics::Registry& r) {
  return r.counter("etcd_server_leader_changes_seen_total", "The number of leader changes seen.");
}

}  // namespace muster::server
