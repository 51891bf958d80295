// node/server/v2_api.cpp: the v2 keys, members, machines and stats routes
// (see v2_api.h for the contract, docs/api-v2.md for the routes).
#include "node/server/v2_api.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>
#include <vector>

#include "etcdwire/v2.h"
#include "node/storage/v2store.h"

namespace muster::server {

namespace {

using storage::Status;
using storage::V2Store;
using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::string_view kKeysPrefix = "/v2/keys";
constexpr const char* kRequestTooLarge = "etcdserver: request is too large";

using storage::kV2InvalidForm;
using storage::kV2RaftInternal;

std::string hex_id(uint64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(id));
  return buf;
}

// Go's strconv.ParseBool, which etcd uses for every boolean parameter.
std::optional<bool> parse_bool(const std::string& s) {
  if (s == "1" || s == "t" || s == "T" || s == "TRUE" || s == "true" || s == "True") return true;
  if (s == "0" || s == "f" || s == "F" || s == "FALSE" || s == "false" || s == "False")
    return false;
  return std::nullopt;
}

// Go's strconv.ParseUint(s, 10, 64): digits only, no sign, no overflow.
std::optional<uint64_t> parse_uint(const std::string& s) {
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

// RFC 3339 with nanoseconds and trailing zeros dropped, in UTC: what Go's
// time.Time marshals to (etcd reports expirations in UTC).
std::string rfc3339nano(std::chrono::system_clock::time_point t) {
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ns / 1'000'000'000);
  long frac = static_cast<long>(ns % 1'000'000'000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out = buf;
  if (frac > 0) {
    char f[16];
    std::snprintf(f, sizeof f, ".%09ld", frac);
    std::string fs = f;
    while (fs.back() == '0') fs.pop_back();
    out += fs;
  }
  return out + "Z";
}

// A node as etcd's NodeExtern marshals it (etcdwire/v2.h): `value` present
// for every file (even empty), the root's key omitted (etcd's root is "/1"
// with the store prefix trimmed away).
etcdwire::V2Node wire_node(const pb::V2Node& n, std::chrono::system_clock::time_point now) {
  etcdwire::V2Node w;
  if (n.key() != "/") w.key = n.key();
  if (n.has_value() && !n.dir()) w.value = n.value();
  w.dir = n.dir();
  if (n.lease() != 0) {
    // The store keeps the remaining time, not a wall-clock deadline: the
    // expiration is now + the remaining TTL (whole seconds, rounded up).
    w.expiration = rfc3339nano(now + std::chrono::seconds(n.ttl()));
    if (n.ttl() > 0) w.ttl = n.ttl();
  }
  for (const auto& c : n.nodes()) w.nodes.push_back(wire_node(c, now));
  w.modified_index = n.modifiedindex();
  w.created_index = n.createdindex();
  return w;
}
json node_json(const pb::V2Node& n, std::chrono::system_clock::time_point now) {
  return etcdwire::v2_node_json(wire_node(n, now));
}

std::string event_json(const pb::V2Event& ev, bool no_value) {
  const auto now = std::chrono::system_clock::now();
  json j = json::object();
  j["action"] = ev.action();
  // noValueOnSuccess drops the nodes of successful writes (not of gets,
  // deletes or watches), as etcd does.
  const bool drop = no_value && (ev.action() == "set" || ev.action() == "compareAndSwap" ||
                                 ev.action() == "create" || ev.action() == "update");
  if (!drop && ev.has_node()) j["node"] = node_json(ev.node(), now);
  if (!drop && ev.has_prevnode()) j["prevNode"] = node_json(ev.prevnode(), now);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string error_json(int code, const std::string& message, const std::string& cause,
                       uint64_t index) {
  return etcdwire::v2_error_body({code, message, cause, index});
}

net::Response v2_error(int code, const std::string& cause, uint64_t index) {
  net::Response r =
      net::Response::json(storage::v2_error_status(code),
                          error_json(code, storage::v2_error_message(code), cause, index));
  r.headers.set("X-Etcd-Index", std::to_string(index));
  return r;
}

net::Response v2_error(const pb::V2Error& e) {
  net::Response r =
      net::Response::json(storage::v2_error_status(e.errorcode()),
                          error_json(e.errorcode(), e.message(), e.cause(), e.index()));
  r.headers.set("X-Etcd-Index", std::to_string(e.index()));
  return r;
}

// A failure below the v2 layer (no leader, timeout, stopping): etcd reports
// any such error as 300 "Raft Internal Error" with the server's text.
net::Response internal_error(const Status& s) { return v2_error(kV2RaftInternal, s.message(), 0); }

net::Response not_found() { return net::Response::text(404, "404 page not found\n"); }

net::Response method_not_allowed(const char* allow) {
  net::Response r = net::Response::text(405, "Method Not Allowed\n");
  r.headers.set("Allow", allow);
  return r;
}

// The parameters of a keys request: the form body (PUT/POST with an
// urlencoded body, as Go's ParseForm reads it) first, then the query.
class Params {
 public:
  // False on a malformed escape.
  bool parse(const net::Request& req) {
    const bool has_body = req.method == "PUT" || req.method == "POST" || req.method == "PATCH";
    std::string ct = req.headers.get("Content-Type").value_or("");
    ct = ct.substr(0, ct.find(';'));
    while (!ct.empty() && ct.back() == ' ') ct.pop_back();
    std::transform(ct.begin(), ct.end(), ct.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (has_body && ct == "application/x-www-form-urlencoded") {
      auto body = net::parse_form(req.body);
      if (!body) return false;
      values_ = std::move(*body);
    }
    auto query = net::parse_form(req.raw_query());
    if (!query) return false;
    values_.insert(values_.end(), query->begin(), query->end());
    return true;
  }
  bool has(std::string_view name) const { return net::form_get(values_, name).has_value(); }
  std::string get(std::string_view name) const { return net::form_get(values_, name).value_or(""); }

 private:
  net::FormValues values_;
};

// A parsed keys request, or the v2 error etcd answers it with.
struct KeysRequest {
  pb::V2Request req;
  bool wait = false, stream = false, quorum = false, no_value = false;
  uint64_t wait_index = 0;
  int error = 0;
  std::string cause;
};

// etcd 3.4's parseKeyRequest (etcdserver/api/v2http/client.go): the same
// checks in the same order, so a bad request gets the same error.
KeysRequest parse_keys_request(const net::Request& http, const std::string& key) {
  KeysRequest k;
  auto fail = [&k](int code, std::string cause) {
    k.error = code;
    k.cause = std::move(cause);
    return k;
  };
  Params p;
  if (!p.parse(http)) return fail(kV2InvalidForm, "invalid URL escape");
  auto uint_param = [&p](const char* name, uint64_t* out) {
    if (!p.has(name)) return true;
    auto v = parse_uint(p.get(name));
    if (!v) return false;
    *out = *v;
    return true;
  };
  uint64_t prev_index = 0;
  if (!uint_param("prevIndex", &prev_index))
    return fail(storage::kV2IndexNaN, "invalid value for \"prevIndex\"");
  if (!uint_param("waitIndex", &k.wait_index))
    return fail(storage::kV2IndexNaN, "invalid value for \"waitIndex\"");
  bool flags[6] = {};
  const char* names[6] = {"recursive", "sorted", "wait", "dir", "quorum", "stream"};
  for (int i = 0; i < 6; ++i) {
    if (!p.has(names[i])) continue;
    auto b = parse_bool(p.get(names[i]));
    if (!b)
      return fail(storage::kV2InvalidField, std::string("invalid value for \"") + names[i] + "\"");
    flags[i] = *b;
  }
  k.wait = flags[2];
  k.quorum = flags[4];
  k.stream = flags[5];
  if (k.wait && http.method != "GET")
    return fail(storage::kV2InvalidField, "\"wait\" can only be used with GET requests");
  const std::string prev_value = p.get("prevValue");
  if (p.has("prevValue") && prev_value.empty())
    return fail(storage::kV2PrevValueRequired, "\"prevValue\" cannot be empty");
  if (p.has("noValueOnSuccess")) {
    auto b = parse_bool(p.get("noValueOnSuccess"));
    if (!b) return fail(storage::kV2InvalidField, "invalid value for \"noValueOnSuccess\"");
    k.no_value = *b;
  }
  // An empty ttl is no TTL.  A TTL beyond the longest lease is refused here,
  // as a number that cannot be one.
  std::optional<int64_t> ttl;
  if (!p.get("ttl").empty()) {
    auto v = parse_uint(p.get("ttl"));
    if (!v || *v > static_cast<uint64_t>(storage::kMaxLeaseTTL))
      return fail(storage::kV2TTLNaN, "invalid value for \"ttl\"");
    ttl = static_cast<int64_t>(*v);
  }
  std::optional<bool> prev_exist;
  if (p.has("prevExist")) {
    prev_exist = parse_bool(p.get("prevExist"));
    if (!prev_exist) return fail(storage::kV2InvalidField, "invalid value for prevExist");
  }
  bool refresh = false;
  if (p.has("refresh")) {
    auto b = parse_bool(p.get("refresh"));
    if (!b) return fail(storage::kV2InvalidField, "invalid value for refresh");
    refresh = *b;
    if (refresh) {
      if (p.has("value") && !p.get("value").empty())
        return fail(storage::kV2RefreshValue, "A value was provided on a refresh");
      if (!ttl) return fail(storage::kV2RefreshTTLRequired, "No TTL value set");
    }
  }
  pb::V2Request& r = k.req;
  r.set_method(http.method == "HEAD" ? "GET" : http.method);
  r.set_path(key);
  r.set_value(p.get("value"));
  r.set_dir(flags[3]);
  r.set_prev_value(prev_value);
  r.set_prev_index(prev_index);
  if (prev_exist) r.set_prev_exist(*prev_exist);
  if (ttl) r.set_ttl(*ttl);
  r.set_recursive(flags[0]);
  r.set_sorted(flags[1]);
  r.set_refresh(refresh);
  return k;
}

// The v2 operation a write request asks for (etcd's applierV2 dispatch).
const char* operation_of(const pb::V2Request& r) {
  const bool compare = r.prev_index() != 0 || !r.prev_value().empty();
  if (r.method() == "POST") return "create";
  if (r.method() == "DELETE") return compare ? "compareAndDelete" : "delete";
  if (r.has_prev_exist()) {
    if (!r.prev_exist()) return "create";
    return compare ? "compareAndSwap" : "update";
  }
  return compare ? "compareAndSwap" : "set";
}

}  // namespace

// ---------------------------------------------------------------- Impl

class V2Api::Impl : public std::enable_shared_from_this<V2Api::Impl> {
 public:
  Impl(MemberApi& member, Options options)
      : member_(member), options_(options), started_(std::chrono::system_clock::now()) {
    for (const char* op :
         {"get", "set", "create", "update", "delete", "compareAndSwap", "compareAndDelete"})
      counts_[op];  // every operation reported, from 0
    refresh_identity();
  }
  ~Impl();

  bool handle(const std::shared_ptr<net::Exchange>& ex);
  std::size_t open_waiters() const {
    std::lock_guard l(waiters_mu_);
    return waiters_.size();
  }

 private:
  class Waiter;
  using Ex = std::shared_ptr<net::Exchange>;

  // Identity and term for the headers, copied from status() as requests
  // arrive: headers are also written from member callbacks, which must not
  // call back into status().
  void refresh_identity() {
    const MemberStatus st = member_.status();
    cluster_id_.store(st.cluster_id);
    raft_term_.store(st.raft_term);
  }
  void set_raft_headers(net::Response& r, uint64_t etcd_index) {
    r.headers.set("X-Etcd-Index", std::to_string(etcd_index));
    r.headers.set("X-Raft-Index", std::to_string(member_.kv().applied_index()));
    r.headers.set("X-Raft-Term", std::to_string(raft_term_.load()));
  }
  void respond(const Ex& ex, net::Response r) {
    r.headers.set("X-Etcd-Cluster-Id", hex_id(cluster_id_.load()));
    ex->respond(std::move(r));
  }
  // A store answer: the event (201 when it created a node) or its error.
  // (HEAD gets the same answer; the server sends only its head.)
  void respond_event(const Ex& ex, const pb::V2Event& ev, const KeysRequest& k);

  void keys(const Ex& ex, const std::string& key);
  void keys_get(const Ex& ex, std::shared_ptr<KeysRequest> k);
  void keys_wait(const Ex& ex, std::shared_ptr<KeysRequest> k);
  void members(const Ex& ex, const std::string& rest);
  void change_members(const Ex& ex, const std::string& rest);
  void machines(const Ex& ex);
  void stats_self(const Ex& ex);
  void stats_store(const Ex& ex);

  void close_waiter(const std::shared_ptr<Waiter>& w);
  // Subscriptions of finished waiters, dropped on the next request (a
  // subscriber callback must not unsubscribe: the member may be holding the
  // lock unsubscribe() takes).
  void drop_dead_subscriptions();

  MemberApi& member_;
  Options options_;
  const std::chrono::system_clock::time_point started_;
  std::atomic<uint64_t> cluster_id_{0}, raft_term_{0};
  std::atomic<int64_t> identity_at_{0};

  // Per-operation counts of this member's v2 requests (/v2/stats/store).
  struct Counter {
    std::atomic<uint64_t> ok{0}, fail{0};
  };
  std::map<std::string, Counter> counts_;  // keys fixed at construction
  Counter& count(const std::string& operation) { return counts_.at(operation); }

  mutable std::mutex waiters_mu_;
  std::map<const Waiter*, std::shared_ptr<Waiter>> waiters_;
  std::vector<uint64_t> dead_subscriptions_;
};

void V2Api::Impl::respond_event(const Ex& ex, const pb::V2Event& ev, const KeysRequest& k) {
  if (ev.has_error() && ev.error().errorcode() != 0) return respond(ex, v2_error(ev.error()));
  net::Response r = net::Response::json(ev.created() ? 201 : 200, event_json(ev, k.no_value));
  set_raft_headers(r, ev.etcd_index());
  respond(ex, std::move(r));
}

bool V2Api::Impl::handle(const Ex& ex) {
  const std::string path = ex->request().path();
  if (path.rfind("/v2/", 0) != 0 && path != "/v2") return false;
  drop_dead_subscriptions();
  const int64_t now = Clock::now().time_since_epoch().count();
  int64_t last = identity_at_.load();
  if (now - last >= std::chrono::nanoseconds(10ms).count() &&
      identity_at_.compare_exchange_strong(last, now))
    refresh_identity();

  // The v2 keys live in the same store as the v3 keys here (in etcd they
  // are a separate store), so once v3 auth is enabled the v2 API, which has
  // no v3 credentials, would bypass it: it is refused as etcd's v2 API
  // refuses an unauthenticated request (docs/security.md).  GET
  // /v2/members stays open, as etcd's member list is.
  const bool member_list = (path == "/v2/members" && ex->request().method == "GET");
  if (member_.kv().auth().enabled() && !member_list) {
    respond(ex, net::Response::json(401, "{\"message\":\"Insufficient credentials\"}"));
    return true;
  }
  if (path == kKeysPrefix || path.rfind(std::string(kKeysPrefix) + "/", 0) == 0) {
    keys(ex, path.substr(kKeysPrefix.size()));
    return true;
  }
  const std::string method = ex->request().method;
  if (path == "/v2/members" || path.rfind("/v2/members/", 0) == 0) {
    members(ex, path.substr(std::string("/v2/members").size()));
    return true;
  }
  if (path == "/v2/machines") {
    if (method != "GET" && method != "HEAD")
      respond(ex, method_not_allowed("GET,HEAD"));
    else
      machines(ex);
  } else if (path == "/v2/stats/self" || path == "/v2/stats/store") {
    if (method != "GET")
      respond(ex, method_not_allowed("GET"));
    else if (path == "/v2/stats/self")
      stats_self(ex);
    else
      stats_store(ex);
  } else {
    respond(ex, not_found());
  }
  return true;
}

// ---------------------------------------------------------------- keys

void V2Api::Impl::keys(const Ex& ex, const std::string& key) {
  const net::Request& http = ex->request();
  const std::string& m = http.method;
  if (m != "GET" && m != "HEAD" && m != "PUT" && m != "POST" && m != "DELETE")
    return respond(ex, method_not_allowed("HEAD,GET,PUT,POST,DELETE"));
  auto k = std::make_shared<KeysRequest>(parse_keys_request(http, key));
  if (k->error != 0) return respond(ex, v2_error(k->error, k->cause, 0));
  if (m == "GET" || m == "HEAD") {
    if (k->wait) return keys_wait(ex, k);
    return keys_get(ex, k);
  }
  pb::InternalRequest ir;
  *ir.mutable_v2() = k->req;
  if (ir.ByteSizeLong() > options_.max_request_bytes)
    return respond(ex, internal_error({storage::Code::kInvalidArgument, kRequestTooLarge}));
  std::weak_ptr<Impl> weak = weak_from_this();
  member_.propose(std::move(ir), [weak, ex, k](Status s, storage::KvStore::ApplyResult r) {
    auto self = weak.lock();
    if (!self) return;
    if (!s) return self->respond(ex, internal_error(s));
    if (!r.status) return self->respond(ex, internal_error(r.status));
    const pb::V2Event& ev = r.response.v2();
    const bool failed = ev.has_error() && ev.error().errorcode() != 0;
    Counter& c = self->count(operation_of(k->req));
    (failed ? c.fail : c.ok).fetch_add(1);
    self->respond_event(ex, ev, *k);
  });
}

void V2Api::Impl::keys_get(const Ex& ex, std::shared_ptr<KeysRequest> k) {
  std::weak_ptr<Impl> weak = weak_from_this();
  auto serve = [weak, ex, k] {
    auto self = weak.lock();
    if (!self) return;
    pb::V2Event ev = V2Store::get(self->member_.kv(), k->req.path(), k->req.recursive());
    const bool failed = ev.has_error() && ev.error().errorcode() != 0;
    Counter& c = self->count("get");
    (failed ? c.fail : c.ok).fetch_add(1);
    self->respond_event(ex, ev, *k);
  };
  if (!k->quorum) return serve();
  // quorum=true: linearizable, as etcd's QGET through Raft.
  member_.read_barrier([weak, ex, serve](Status s) {
    auto self = weak.lock();
    if (!self) return;
    if (!s) return self->respond(ex, internal_error(s));
    serve();
  });
}

// ---------------------------------------------------------------- wait
//
// One Waiter per `wait=true` exchange.  It subscribes to the member's applied
// events BEFORE it first looks at the store, so nothing applied in between
// is missed: the first look (start()) reads the history from the wait index
// on; each later batch of applied events that touches the watched key makes
// it read again from where the last look stopped (`next_`).  Looks happen
// under the waiter's lock, and callbacks that arrive before the first look
// are ignored (the first look reads what they report).  The answer is the
// first matching change (a stream keeps answering); then the waiter closes.
class V2Api::Impl::Waiter : public std::enable_shared_from_this<Waiter> {
 public:
  Waiter(Impl& api, Ex ex, std::shared_ptr<KeysRequest> k)
      : api_(api), ex_(std::move(ex)), k_(std::move(k)) {
    const std::string path = V2Store::clean_path(k_->req.path());
    key_ = path == "/" ? std::string(storage::kV2Prefix) : V2Store::mvcc_key(path);
    below_ = key_ + "/";
  }

  // Records the subscription; false when the waiter closed first.
  bool attach(uint64_t subscription) {
    std::lock_guard l(mu_);
    subscription_ = subscription;
    return !closed_;
  }

  // The first look; sends the headers (or the error) and maybe the answer.
  // Returns true when the waiter is done.
  bool start() {
    std::lock_guard l(mu_);
    if (closed_) return true;
    storage::KvStore& kv = api_.member_.kv();
    const uint64_t start_index = static_cast<uint64_t>(kv.revision());
    // waitIndex absent (0): the next change.
    next_ = k_->wait_index != 0 ? k_->wait_index : start_index + 1;
    pb::V2Event ev;
    uint64_t next = 0;
    const bool found = V2Store::wait(kv, k_->req.path(), k_->req.recursive(), next_, &ev, &next);
    if (found && ev.has_error() && ev.error().errorcode() != 0) {
      // Before any header: a plain error answer, as etcd's.
      api_.respond(ex_, v2_error(ev.error()));
      closed_ = true;
      return true;
    }
    // etcd flushes the headers at once (X-Etcd-Index = the index when the
    // watch started), then the body is one event per line.
    net::Response head = net::Response::json(200, "");
    api_.set_raft_headers(head, start_index);
    head.headers.set("X-Etcd-Cluster-Id", hex_id(api_.cluster_id_.load()));
    ex_->begin_stream(std::move(head));
    started_ = true;
    if (!found) {
      next_ = next;
      return false;
    }
    return deliver_locked(ev) || look_locked();
  }

  // Applied events from the member; returns true when the waiter is done.
  bool on_events(const std::vector<pb::Event>& events) {
    bool touches = false;
    for (const auto& e : events) {
      const std::string& k = e.kv().key();
      if (k == key_ || k.compare(0, below_.size(), below_) == 0) {
        touches = true;
        break;
      }
    }
    if (!touches) return false;
    std::lock_guard l(mu_);
    if (closed_) return true;
    if (!started_) return false;
    return look_locked();
  }

  // Stops; returns the subscription to drop (none when already closed).
  // `finish` ends the response (not when the client is gone or the server
  // has stopped).
  std::optional<uint64_t> close(bool finish) {
    std::lock_guard l(mu_);
    if (closed_) return std::nullopt;
    closed_ = true;
    if (finish && started_) ex_->end_stream();
    return subscription_;
  }
  std::optional<uint64_t> subscription() {
    std::lock_guard l(mu_);
    return subscription_ ? std::optional<uint64_t>(subscription_) : std::nullopt;
  }

 private:
  // Reads from next_ on and delivers; true when done.
  bool look_locked() {
    for (;;) {
      pb::V2Event ev;
      uint64_t next = 0;
      if (!V2Store::wait(api_.member_.kv(), k_->req.path(), k_->req.recursive(), next_, &ev,
                         &next)) {
        next_ = next;
        return false;
      }
      if (deliver_locked(ev)) return true;
    }
  }
  // Sends one event; true when the waiter is done (not a stream, or the
  // history it needs is gone).
  bool deliver_locked(const pb::V2Event& ev) {
    if (ev.has_error() && ev.error().errorcode() != 0) {
      closed_ = true;
      ex_->end_stream();
      return true;
    }
    ex_->write(event_json(ev, false));
    next_ = std::max<uint64_t>(next_, ev.node().modifiedindex() + 1);
    if (!k_->stream) {
      closed_ = true;
      ex_->end_stream();
      return true;
    }
    return false;
  }

  Impl& api_;
  Ex ex_;
  std::shared_ptr<KeysRequest> k_;
  std::string key_, below_;
  std::mutex mu_;
  bool closed_ = false, started_ = false;
  uint64_t next_ = 0;
  uint64_t subscription_ = 0;
};

void V2Api::Impl::keys_wait(const Ex& ex, std::shared_ptr<KeysRequest> k) {
  auto w = std::make_shared<Waiter>(*this, ex, k);
  {
    std::lock_guard l(waiters_mu_);
    waiters_[w.get()] = w;
  }
  std::weak_ptr<Waiter> weak = w;
  std::weak_ptr<Impl> api = weak_from_this();
  // The client hanging up (or the server stopping) releases the waiter.
  ex->on_cancel([api, weak] {
    auto self = api.lock();
    auto s = weak.lock();
    if (self && s) self->close_waiter(s);
  });
  const uint64_t sub = member_.subscribe([api, weak](const std::vector<pb::Event>& events) {
    auto s = weak.lock();
    if (!s || !s->on_events(events)) return;
    // Done: forget it; its subscription is dropped by the next request.
    if (auto self = api.lock()) {
      std::lock_guard l(self->waiters_mu_);
      self->waiters_.erase(s.get());
      if (auto id = s->subscription()) self->dead_subscriptions_.push_back(*id);
    }
  });
  if (!w->attach(sub)) {
    member_.unsubscribe(sub);
    return;
  }
  if (w->start()) close_waiter(w);
}

void V2Api::Impl::close_waiter(const std::shared_ptr<Waiter>& w) {
  w->close(true);
  if (auto id = w->subscription()) member_.unsubscribe(*id);
  std::lock_guard l(waiters_mu_);
  waiters_.erase(w.get());
}

void V2Api::Impl::drop_dead_subscriptions() {
  std::vector<uint64_t> dead;
  {
    std::lock_guard l(waiters_mu_);
    dead.swap(dead_subscriptions_);
  }
  for (uint64_t id : dead) member_.unsubscribe(id);
}

// Open waiters are closed without touching the member: it may be gone
// already (the member's subscriptions only hold weak references to this API
// and its waiters, so they turn into no-ops).
V2Api::Impl::~Impl() {
  std::map<const Waiter*, std::shared_ptr<Waiter>> waiters;
  {
    std::lock_guard l(waiters_mu_);
    waiters.swap(waiters_);
  }
  for (auto& [p, w] : waiters) w->close(false);
}

// ---------------------------------------------------------------- members

namespace {

json member_json(const pb::Member& m) {
  json j = json::object();
  j["id"] = hex_id(m.id());
  j["name"] = m.name();
  j["peerURLs"] = json::array();
  for (const auto& u : m.peerurls()) j["peerURLs"].push_back(u);
  j["clientURLs"] = json::array();
  for (const auto& u : m.clienturls()) j["clientURLs"].push_back(u);
  return j;
}

net::Response message(int status, const std::string& text) {
  json j = {{"message", text}};
  return net::Response::json(
      status, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

}  // namespace

// /v2/members as etcd 3.4's v2 members API: GET lists (and /leader),
// POST {"peerURLs":[...]} adds (201 with the new member), DELETE /<id>
// removes and PUT /<id> {"peerURLs":[...]} updates (204).  Changes go
// through the same checked configuration change as the v3 cluster API.
void V2Api::Impl::members(const Ex& ex, const std::string& rest) {
  const std::string& m = ex->request().method;
  if (m == "POST" || m == "PUT" || m == "DELETE") return change_members(ex, rest);
  if (m != "GET") return respond(ex, method_not_allowed("GET, POST, PUT, DELETE"));
  const std::vector<pb::Member> all = member_.kv().members();
  if (rest.empty() || rest == "/") {
    json list = json::array();
    for (const auto& mem : all) list.push_back(member_json(mem));
    json body = json::object();
    body["members"] = std::move(list);
    return respond(
        ex, net::Response::json(
                200, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
  }
  if (rest == "/leader") {
    const uint64_t leader = member_.status().leader;
    for (const auto& mem : all)
      if (leader != 0 && mem.id() == leader)
        return respond(ex, net::Response::json(
                               200, member_json(mem).dump(
                                        -1, ' ', false, nlohmann::json::error_handler_t::replace) +
                                        "\n"));
    return respond(ex, message(503, "During election"));
  }
  respond(ex, message(404, "Not found"));
}

void V2Api::Impl::change_members(const Ex& ex, const std::string& rest) {
  const std::string& method = ex->request().method;
  pb::InternalRequest ir;
  uint64_t id = 0;
  if (method != "POST") {
    // DELETE and PUT name the member: /v2/members/<hex id>.
    std::string hex = rest.size() > 1 && rest[0] == '/' ? rest.substr(1) : "";
    char* end = nullptr;
    id = hex.empty() ? 0 : std::strtoull(hex.c_str(), &end, 16);
    if (hex.empty() || *end != '\0' || hex.size() > 16)
      return respond(ex, message(404, "Not found"));
  } else if (!rest.empty() && rest != "/") {
    return respond(ex, method_not_allowed("GET"));
  }
  std::vector<std::string> urls;
  if (method != "DELETE") {
    std::string ct = ex->request().headers.get("Content-Type").value_or("");
    if (ct.substr(0, ct.find(';')) != "application/json")
      return respond(ex, message(415, "Bad Content-Type"));
    json body = json::parse(ex->request().body, nullptr, false);
    if (!body.is_object() || !body.contains("peerURLs") || !body["peerURLs"].is_array())
      return respond(ex, message(400, "Bad Request"));
    for (const auto& u : body["peerURLs"]) {
      if (!u.is_string()) return respond(ex, message(400, "Bad Request"));
      urls.push_back(u.get<std::string>());
    }
  }
  if (method == "POST") {
    for (const auto& u : urls) ir.mutable_member_add()->mutable_member()->add_peerurls(u);
  } else if (method == "PUT") {
    ir.mutable_member_update()->set_id(id);
    for (const auto& u : urls) ir.mutable_member_update()->add_peerurls(u);
  } else {
    ir.mutable_member_remove()->set_id(id);
  }
  std::weak_ptr<Impl> weak = weak_from_this();
  member_.change_member(
      std::move(ir), [weak, ex, method, id](Status s, storage::KvStore::ApplyResult r) {
        auto self = weak.lock();
        if (!self) return;
        if (s && !r.status) s = r.status;
        if (!s) {
          // etcd's statuses: 409 for a taken ID or URL, 404 for an unknown or
          // removed member, 400 for bad URLs, 500 for the rest.
          int status = 500;
          std::string text = s.message();
          if (text.find("already exist") != std::string::npos) {
            status = 409;
          } else if (s.code() == storage::Code::kNotFound) {
            status = 404;
            text = "No such member: " + hex_id(id);
          } else if (s.code() == storage::Code::kInvalidArgument) {
            status = 400;
          }
          return self->respond(ex, message(status, text));
        }
        if (method == "POST")
          return self->respond(
              ex, net::Response::json(
                      201, member_json(r.response.member_add().member())
                                   .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
                               "\n"));
        net::Response done;
        done.status = 204;
        self->respond(ex, std::move(done));
      });
}

void V2Api::Impl::machines(const Ex& ex) {
  std::vector<std::string> urls;
  for (const auto& mem : member_.kv().members())
    for (const auto& u : mem.clienturls()) urls.push_back(u);
  std::sort(urls.begin(), urls.end());
  std::string body;
  for (const auto& u : urls) body += (body.empty() ? "" : ", ") + u;
  respond(ex, net::Response::text(200, ex->request().method == "HEAD" ? "" : body));
}

// ---------------------------------------------------------------- stats

// What this member knows of itself; etcd's Raft message counters and rates
// are not kept, so they are left out (docs/api-v2.md).
void V2Api::Impl::stats_self(const Ex& ex) {
  const MemberStatus st = member_.status();
  std::string name;
  for (const auto& mem : member_.kv().members())
    if (mem.id() == st.member_id) name = mem.name();
  json j = json::object();
  j["name"] = name;
  j["id"] = hex_id(st.member_id);
  j["state"] = st.leader != 0 && st.leader == st.member_id ? "StateLeader" : "StateFollower";
  j["startTime"] = rfc3339nano(started_);
  json leader = json::object();
  leader["leader"] = st.leader != 0 ? hex_id(st.leader) : "";
  j["leaderInfo"] = std::move(leader);
  respond(ex, net::Response::json(
                  200, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
}

// Counts of the v2 requests this member answered, by operation, plus the
// open watches.  (etcd counts the operations its own store applied, so its
// figures are alike on every member; ours are per member.)
void V2Api::Impl::stats_store(const Ex& ex) {
  json j = json::object();
  auto put = [&](const char* ok_name, const char* fail_name, const char* action) {
    const Counter& c = counts_.at(action);
    j[ok_name] = c.ok.load();
    j[fail_name] = c.fail.load();
  };
  put("getsSuccess", "getsFail", "get");
  put("setsSuccess", "setsFail", "set");
  put("deleteSuccess", "deleteFail", "delete");
  put("updateSuccess", "updateFail", "update");
  put("createSuccess", "createFail", "create");
  put("compareAndSwapSuccess", "compareAndSwapFail", "compareAndSwap");
  put("compareAndDeleteSuccess", "compareAndDeleteFail", "compareAndDelete");
  j["watchers"] = open_waiters();
  respond(ex, net::Response::json(
                  200, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
}

// ---------------------------------------------------------------- V2Api

V2Api::V2Api(MemberApi& member, Options options) : impl_(std::make_shared<Impl>(member, options)) {}

V2Api::~V2Api() = default;

bool V2Api::handle(const std::shared_ptr<net::Exchange>& ex) { return impl_->handle(ex); }

std::size_t V2Api::open_waiters() const { return impl_->open_waiters(); }

}  // namespace muster::server
