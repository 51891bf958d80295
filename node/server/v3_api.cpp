// node/server/v3_api.cpp: the v3 JSON gateway routes over V3Service, /health,
// /version and /metrics (see v3_api.h for the contract, docs/api.md for the
// routes).
#include "node/server/v3_api.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>
#include <vector>

#include "base/log.h"
#include "base/process_metrics.h"
#include "node/storage/errors.h"

namespace muster::server {

namespace {

using storage::Code;
using storage::Status;

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
  // etcd's gateway's member order.
  nlohmann::ordered_json j = {{"error", s.message()}, {"message", s.message()}, {"code", code}};
  return net::Response::json(http_status_for(code),
                             j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

// The error object of a gateway stream (grpc-gateway's StreamError).
std::string stream_error_line(const Status& s) {
  const int code = static_cast<int>(s.code());
  const int http = http_status_for(code);
  nlohmann::ordered_json j = {{"error",
                               {{"grpc_code", code},
                                {"http_code", http},
                                {"message", s.message()},
                                {"http_status", std::string(net::status_reason(http))}}}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

// The JSON of `m`, or nothing if protobuf's writer refuses it (a message
// nested deeper than it goes; validate() keeps txns well inside that).
std::optional<std::string> to_json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(m, &out, o).ok()) return std::nullopt;
  return out;
}

Status unencodable(const google::protobuf::Message& m) {
  return {Code::kInternal, "etcdserver: cannot write the " + m.GetTypeName() + " as JSON"};
}

net::Response json_ok(const google::protobuf::Message& m) {
  auto j = to_json(m);
  if (!j) return error_response(unencodable(m));
  return net::Response::json(200, std::move(*j));
}

std::string result_line(const google::protobuf::Message& m) {
  auto j = to_json(m);
  if (!j) return stream_error_line(unencodable(m));
  return "{\"result\":" + *j + "}\n";
}

bool all_space(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
}

// The caller of a gateway request: etcd's gateway passes the
// `Authorization` header on as the token.  Unlike etcd's gateway (a gRPC
// client of its own server, which must ignore its own certificate), this
// one sees the client's certificate and uses its CN as etcd's gRPC does.
Caller caller_of(const net::Exchange& ex) {
  Caller c;
  if (auto a = ex.request().headers.get("Authorization")) c.token = *a;
  c.common_name = ex.peer_common_name();
  return c;
}

// Follows JSON text one character at a time for the scanners below:
// structural() is false for a character inside a string or one of its
// quotes, so brackets and spaces in keys or values do not count.
class JsonStrings {
 public:
  bool structural(char c) {
    if (in_string_) {
      if (escaped_)
        escaped_ = false;
      else if (c == '\\')
        escaped_ = true;
      else if (c == '"')
        in_string_ = false;
      return false;
    }
    if (c == '"') in_string_ = true;
    return !in_string_;
  }

 private:
  bool in_string_ = false, escaped_ = false;
};

// Whether the JSON text opens more than `limit` objects or arrays inside
// one another.
bool nests_deeper_than(std::string_view text, int limit) {
  JsonStrings strings;
  int depth = 0;
  for (const char c : text) {
    if (!strings.structural(c)) continue;
    if (c == '{' || c == '[') {
      if (++depth > limit) return true;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return false;
}

// Drops the members of `j`, and of the messages inside it, that name no
// field of `d` (by proto or JSON name).  Messages are followed at most
// `depth` levels down; deeper ones are left for the parser to refuse.
void drop_unknown_fields(nlohmann::json& j, const google::protobuf::Descriptor* d, int depth) {
  if (!j.is_object() || depth <= 0) return;
  for (auto it = j.begin(); it != j.end();) {
    const google::protobuf::FieldDescriptor* f = d->FindFieldByName(it.key());
    for (int i = 0; !f && i < d->field_count(); ++i)
      if (d->field(i)->json_name() == it.key()) f = d->field(i);
    if (f == nullptr) {
      it = j.erase(it);
      continue;
    }
    if (f->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE && !f->is_map()) {
      if (it->is_array()) {
        for (auto& e : *it) drop_unknown_fields(e, f->message_type(), depth - 1);
      } else {
        drop_unknown_fields(*it, f->message_type(), depth - 1);
      }
    }
    ++it;
  }
}

// Decodes one JSON object into `m`.  Unknown fields are ignored, as etcd's
// gateway ignores them (a client written for a newer etcd keeps working); an
// empty body is the empty message, as in etcd.  A value the field cannot
// take is refused, an enum name that does not exist too: protobuf's
// ignore_unknown_fields would also drop those, and a misspelt compare
// target or result would silently become the default (etcd refuses it).
// So the parse is strict, and only a body it refuses has its unknown fields
// removed and is parsed again.
Status parse(std::string_view body, google::protobuf::Message* m) {
  if (all_space(body)) body = "{}";
  google::protobuf::util::JsonParseOptions o;
  auto st = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(body.data(), body.size()), m, o);
  if (st.ok()) return {};
  // A body nested deeper than protobuf's parser goes (100 messages, each
  // two or three JSON levels) is not worth a second parse, and its tree
  // would be written out again recursively.
  if (!nests_deeper_than(body, 512)) {
    nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
    if (!j.is_discarded() && j.is_object()) {
      drop_unknown_fields(j, m->GetDescriptor(), 128);
      m->Clear();
      st = google::protobuf::util::JsonStringToMessage(
          j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), m, o);
      if (st.ok()) return {};
    }
  }
  auto msg = st.message();
  return {Code::kInvalidArgument, std::string(msg.data(), msg.size())};
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
    JsonStrings strings;
    for (; i < body.size(); ++i) {
      const char c = body[i];
      if (!strings.structural(c)) continue;
      if (c == '{' || c == '[')
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

}  // namespace

// ---------------------------------------------------------------- Impl

class V3Api::Impl {
 public:
  Impl(MemberApi& member, Options options, metrics::Registry& reg);

  bool handle(const std::shared_ptr<net::Exchange>& ex);

  V3Service service_;

 private:
  using Ex = std::shared_ptr<net::Exchange>;
  class JsonWatchSink;

  void respond(const Ex& ex, net::Response r);
  void fail(const Ex& ex, const Status& s) { respond(ex, error_response(s)); }
  void write(const Ex& ex, std::string chunk) {
    sent_bytes_.inc(static_cast<double>(chunk.size()));
    ex->write(std::move(chunk));
  }

  void unary(const Ex& ex, const V3Service::UnaryMethod& m);
  void watch(const Ex& ex);
  void lease_keepalive(const Ex& ex);
  void keepalive_next(const Ex& ex, std::shared_ptr<std::vector<int64_t>> ids, size_t i);
  void health(const Ex& ex);
  void version(const Ex& ex);
  void metrics(const Ex& ex);

  MemberApi& member_;
  metrics::Registry& reg_;
  // Route -> the unary method it maps to (nullptr: the two streams).
  std::map<std::string, const V3Service::UnaryMethod*, std::less<>> routes_;

  // Instruments, named as etcd names them.
  metrics::Gauge& has_leader_;
  metrics::Gauge& is_leader_;
  metrics::Gauge& committed_;
  metrics::Gauge& applied_;
  metrics::Gauge& db_size_;
  metrics::Gauge& keys_total_;
  metrics::Gauge& current_rev_;
  metrics::Gauge& compact_rev_;
  metrics::Counter& received_bytes_;
  metrics::Counter& sent_bytes_;
  metrics::Counter& health_ok_;
  metrics::Counter& health_failed_;

 public:
  std::function<void()> collect_;  // set before serving, then only read
};

void V3Api::Impl::respond(const Ex& ex, net::Response r) {
  sent_bytes_.inc(static_cast<double>(r.body.size()));
  ex->respond(std::move(r));
}

V3Api::Impl::Impl(MemberApi& member, Options options, metrics::Registry& reg)
    : service_(member, std::move(options), reg),
      member_(member),
      reg_(reg),
      has_leader_(reg.gauge("etcd_server_has_leader",
                            "Whether or not a leader exists. 1 is existence, 0 is not.")),
      is_leader_(reg.gauge("etcd_server_is_leader",
                           "Whether or not this member is a leader. 1 if is, 0 otherwise.")),
      committed_(reg.gauge("etcd_server_proposals_committed_total",
                           "The total number of consensus proposals committed.")),
      applied_(reg.gauge("etcd_server_proposals_applied_total",
                         "The total number of consensus proposals applied.")),
      db_size_(reg.gauge("etcd_mvcc_db_total_size_in_bytes",
                         "Total size of the underlying database physically allocated in bytes.")),
      keys_total_(reg.gauge("etcd_debugging_mvcc_keys_total", "Total number of keys.")),
      current_rev_(
          reg.gauge("etcd_debugging_mvcc_current_revision", "The current revision of store.")),
      compact_rev_(reg.gauge("etcd_debugging_mvcc_compact_revision",
                             "The revision of the last compaction in store.")),
      received_bytes_(reg.counter("etcd_network_client_grpc_received_bytes_total",
                                  "The total number of bytes received from grpc clients.")),
      sent_bytes_(reg.counter("etcd_network_client_grpc_sent_bytes_total",
                              "The total number of bytes sent to grpc clients.")),
      health_ok_(reg.counter("etcd_server_health_success",
                             "The total number of successful health checks")),
      health_failed_(
          reg.counter("etcd_server_health_failures", "The total number of failed health checks")) {
  leader_changes(reg);  // the family exists from the start, at 0
  metrics::update_process_metrics(reg);
  // Constant facts etcd exports: the server version and the backend quota.
  reg.gauge("etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            "server_version=\"" + service_.options().server_version + "\"")
      .set(1);
  reg.gauge("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.")
      .set(static_cast<double>(service_.options().quota_backend_bytes));
  // etcd's gateway paths (the google.api.http options of rpc.proto).
  // /v3/maintenance/hash is bound to both Hash and HashKV there; the gateway
  // registers HashKV last and the last registration wins.
  static const std::pair<const char*, const char*> kRoutes[] = {
      {"/v3/kv/range", "KV/Range"},
      {"/v3/kv/put", "KV/Put"},
      {"/v3/kv/deleterange", "KV/DeleteRange"},
      {"/v3/kv/txn", "KV/Txn"},
      {"/v3/kv/compaction", "KV/Compact"},
      {"/v3/lease/grant", "Lease/LeaseGrant"},
      {"/v3/lease/revoke", "Lease/LeaseRevoke"},
      {"/v3/kv/lease/revoke", "Lease/LeaseRevoke"},
      {"/v3/lease/timetolive", "Lease/LeaseTimeToLive"},
      {"/v3/kv/lease/timetolive", "Lease/LeaseTimeToLive"},
      {"/v3/lease/leases", "Lease/LeaseLeases"},
      {"/v3/kv/lease/leases", "Lease/LeaseLeases"},
      {"/v3/cluster/member/list", "Cluster/MemberList"},
      {"/v3/cluster/member/add", "Cluster/MemberAdd"},
      {"/v3/cluster/member/remove", "Cluster/MemberRemove"},
      {"/v3/cluster/member/update", "Cluster/MemberUpdate"},
      {"/v3/cluster/member/promote", "Cluster/MemberPromote"},
      {"/v3/maintenance/alarm", "Maintenance/Alarm"},
      {"/v3/maintenance/status", "Maintenance/Status"},
      {"/v3/maintenance/defragment", "Maintenance/Defragment"},
      {"/v3/maintenance/hash", "Maintenance/HashKV"},
      {"/v3/maintenance/transfer-leadership", "Maintenance/MoveLeader"},
      {"/v3/auth/enable", "Auth/AuthEnable"},
      {"/v3/auth/disable", "Auth/AuthDisable"},
      {"/v3/auth/authenticate", "Auth/Authenticate"},
      {"/v3/auth/user/add", "Auth/UserAdd"},
      {"/v3/auth/user/get", "Auth/UserGet"},
      {"/v3/auth/user/list", "Auth/UserList"},
      {"/v3/auth/user/delete", "Auth/UserDelete"},
      {"/v3/auth/user/changepw", "Auth/UserChangePassword"},
      {"/v3/auth/user/grant", "Auth/UserGrantRole"},
      {"/v3/auth/user/revoke", "Auth/UserRevokeRole"},
      {"/v3/auth/role/add", "Auth/RoleAdd"},
      {"/v3/auth/role/get", "Auth/RoleGet"},
      {"/v3/auth/role/list", "Auth/RoleList"},
      {"/v3/auth/role/delete", "Auth/RoleDelete"},
      {"/v3/auth/role/grant", "Auth/RoleGrantPermission"},
      {"/v3/auth/role/revoke", "Auth/RoleRevokePermission"},
  };
  for (const auto& [path, method] : kRoutes) {
    const V3Service::UnaryMethod* m = V3Service::unary(method);
    if (m == nullptr) storage::fatal(std::string("no service method ") + method);
    routes_[path] = m;
  }
  routes_["/v3/watch"] = nullptr;
  routes_["/v3/lease/keepalive"] = nullptr;
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
  service_.request_arrived();
  if (it->second != nullptr)
    unary(ex, *it->second);
  else if (path == "/v3/watch")
    watch(ex);
  else
    lease_keepalive(ex);
  return true;
}

void V3Api::Impl::unary(const Ex& ex, const V3Service::UnaryMethod& m) {
  std::unique_ptr<google::protobuf::Message> req(
      google::protobuf::MessageFactory::generated_factory()->GetPrototype(m.request)->New());
  if (Status s = parse(ex->request().body, req.get()); !s) return fail(ex, s);
  m.call(
      service_, *req,
      [this, ex](Status s, const google::protobuf::Message& resp) {
        if (!s) return fail(ex, s);
        respond(ex, json_ok(resp));
      },
      caller_of(*ex));
}

// ---------------------------------------------------------------- streams

// A watch stream's responses as {"result":...} lines of one chunked answer.
class V3Api::Impl::JsonWatchSink : public V3Service::WatchSink {
 public:
  JsonWatchSink(Impl& api, Ex ex) : api_(api), ex_(std::move(ex)) {}
  void send(const pb::WatchResponse& r) override { api_.write(ex_, result_line(r)); }
  void close(const Status&) override { ex_->end_stream(); }

 private:
  Impl& api_;
  Ex ex_;
};

// The whole request body is the client's side of the stream; the answer
// stays open until the client goes away (or the server stops), as etcd's
// gateway keeps it open after the request body ends.
void V3Api::Impl::watch(const Ex& ex) {
  std::vector<pb::WatchRequest> reqs;
  for (std::string_view v : split_values(ex->request().body)) {
    pb::WatchRequest r;
    if (Status s = parse(v, &r); !s) return fail(ex, s);
    reqs.push_back(std::move(r));
  }
  ex->begin_stream(net::Response::json(200, ""));
  std::weak_ptr<V3Service::WatchSession> weak =
      service_.watch(std::make_shared<JsonWatchSink>(*this, ex), 0, caller_of(*ex));
  // Ends the response when the server is stopping; ignored when the client
  // has gone.
  ex->on_cancel([weak, ex] {
    if (auto s = weak.lock()) s->close();
    ex->end_stream();
  });
  auto session = weak.lock();
  if (!session) return;
  for (const auto& r : reqs) session->request(r);
  if (ex->finished()) session->close();
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
  ex->begin_stream(net::Response::json(200, ""));
  keepalive_next(ex, std::move(ids), 0);
}

void V3Api::Impl::keepalive_next(const Ex& ex, std::shared_ptr<std::vector<int64_t>> ids,
                                 size_t i) {
  if (i >= ids->size() || ex->finished()) {
    ex->end_stream();
    return;
  }
  pb::LeaseKeepAliveRequest req;
  req.set_id((*ids)[i]);
  service_.lease_keepalive(req, [this, ex, ids, i](Status s, pb::LeaseKeepAliveResponse resp) {
    if (!s) {
      write(ex, stream_error_line(s));
      ex->end_stream();
      return;
    }
    write(ex, result_line(resp));
    keepalive_next(ex, ids, i + 1);
  });
}

// ---------------------------------------------------------------- plain HTTP

// The body's value is the string "true"/"false", as etcd 3.4's.
void V3Api::Impl::health(const Ex& ex) {
  service_.health([this, ex](bool ok) {
    (ok ? health_ok_ : health_failed_).inc();
    net::Response r =
        net::Response::text(ok ? 200 : 503, ok ? R"({"health":"true"})" : R"({"health":"false"})");
    r.headers.set("Content-Type", "text/plain; charset=utf-8");
    respond(ex, std::move(r));
  });
}

void V3Api::Impl::version(const Ex& ex) {
  // etcd's key order: etcdserver, then etcdcluster.
  nlohmann::ordered_json j = {{"etcdserver", service_.options().server_version},
                              {"etcdcluster", service_.options().cluster_version}};
  respond(ex, net::Response::json(
                  200, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
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
  // LevelDB has no free pages inside its files: what is allocated is in use
  // (compaction returns the rest to the file system).
  reg_.gauge("etcd_debugging_auth_revision", "The current revision of auth store.")
      .set(static_cast<double>(kv.auth().revision()));
  reg_.gauge("etcd_mvcc_db_total_size_in_use_in_bytes",
             "Total size of the underlying database logically in use in bytes.")
      .set(static_cast<double>(st.db_size));
  metrics::update_process_metrics(reg_);
  if (collect_) collect_();
  net::Response r = net::Response::text(200, reg_.render());
  r.headers.set("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
  respond(ex, std::move(r));
}

// ---------------------------------------------------------------- V3Api

V3Api::V3Api(MemberApi& member, Options options, metrics::Registry& metrics)
    : impl_(std::make_shared<Impl>(member, std::move(options), metrics)) {}

V3Api::~V3Api() = default;

bool V3Api::handle(const std::shared_ptr<net::Exchange>& ex) { return impl_->handle(ex); }

V3Service& V3Api::service() { return impl_->service_; }

metrics::Counter& V3Api::leader_changes(metrics::Registry& r) {
  return r.counter("etcd_server_leader_changes_seen_total", "The number of leader changes seen.");
}

void V3Api::set_metrics_collector(std::function<void()> collect) {
  impl_->collect_ = std::move(collect);
}

}  // namespace muster::server
