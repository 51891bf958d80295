// discovery/etcd_store.cpp: EtcdTokenStore (layout and rules in etcd_store.h).
//
// Why one file of this size: one class on one event loop; the token
// operations (create, get, add and remove a member, watch, expiry) are
// coroutines over the same endpoint rotation, txn helpers and watch streams.
#include "discovery/etcd_store.h"

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <utility>

#include "etcdwire/v3_json.h"
#include "net/http_client.h"
#include "net/url.h"

namespace muster::discovery {

namespace asio = boost::asio;

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Gateway JSON (etcdwire/v3_json.h): keys and values in base64, int64 fields
// as strings, zero values omitted entirely.

uint64_t header_revision(const json& j) {
  auto h = j.find("header");
  return h == j.end() || !h->is_object() ? 0 : etcdwire::json_u64(*h, "revision");
}

struct Kv {
  std::string key;
  std::string value;
  uint64_t create_revision = 0;
  uint64_t mod_revision = 0;
};

std::optional<Kv> kv_of(const json& j) {
  if (!j.is_object()) return std::nullopt;
  Kv kv;
  auto k = etcdwire::base64_decode(j.value("key", std::string()));
  auto v = etcdwire::base64_decode(j.value("value", std::string()));
  if (!k || !v) return std::nullopt;
  kv.key = std::move(*k);
  kv.value = std::move(*v);
  kv.create_revision = etcdwire::json_u64(j, "create_revision");
  kv.mod_revision = etcdwire::json_u64(j, "mod_revision");
  return kv;
}

json range_op(const std::string& key, const std::string& range_end = "") {
  json r{{"key", etcdwire::base64_encode(key)}};
  if (!range_end.empty()) r["range_end"] = etcdwire::base64_encode(range_end);
  return {{"request_range", r}};
}
json put_op(const std::string& key, const std::string& value) {
  return {{"request_put",
           {{"key", etcdwire::base64_encode(key)}, {"value", etcdwire::base64_encode(value)}}}};
}
json delete_op(const std::string& key, const std::string& range_end = "") {
  json r{{"key", etcdwire::base64_encode(key)}};
  if (!range_end.empty()) r["range_end"] = etcdwire::base64_encode(range_end);
  return {{"request_delete_range", r}};
}
// target: "CREATE" compares create_revision, "MOD" mod_revision.
json equal_cmp(const char* target, const std::string& key, uint64_t revision) {
  return {{"result", "EQUAL"},
          {"target", target},
          {"key", etcdwire::base64_encode(key)},
          {std::string(target) == "CREATE" ? "create_revision" : "mod_revision",
           std::to_string(revision)}};
}

// The kvs of the i-th sub-response of a txn (which must be a range).
std::vector<Kv> txn_range(const json& txn, std::size_t i) {
  std::vector<Kv> out;
  auto rs = txn.find("responses");
  if (rs == txn.end() || !rs->is_array() || i >= rs->size()) return out;
  auto rr = (*rs)[i].find("response_range");
  if (rr == (*rs)[i].end()) return out;
  auto kvs = rr->find("kvs");
  if (kvs == rr->end() || !kvs->is_array()) return out;
  for (const auto& k : *kvs)
    if (auto kv = kv_of(k)) out.push_back(std::move(*kv));
  return out;
}

std::optional<Kv> first(std::vector<Kv> v) {
  if (v.empty()) return std::nullopt;
  return std::move(v.front());
}

// Token names and member IDs become key path elements; the API's rules allow
// only [0-9A-Za-z_-], and the store refuses anything that could break the
// layout.
bool valid_element(const std::string& s) {
  return !s.empty() && s.find('/') == std::string::npos && s.find('\0') == std::string::npos;
}

std::string pad20(int64_t v) {
  std::string s = std::to_string(std::max<int64_t>(v, 0));
  return std::string(20 - std::min<std::size_t>(20, s.size()), '0') + s;
}

StoreResult unavailable(std::string why, uint64_t index = 0) {
  StoreResult r;
  r.status = StoreStatus::kUnavailable;
  r.message = std::move(why);
  r.index = index;
  return r;
}
StoreResult with_status(StoreStatus s, uint64_t index) {
  StoreResult r;
  r.status = s;
  r.index = index;
  return r;
}

const char kShuttingDown[] = "the etcd token store is shutting down";

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------

// One registered watch() call.  Every field after `cb` is guarded by
// Core::waiters_mu.
struct Waiter {
  std::string token;
  std::string id;  // empty: any member
  uint64_t from_index = 0;
  StoreCallback cb;
  bool done = false;  // delivered, claimed for delivery, or cancelled
  // Reads of the token's state in flight.  While one is, stream events are
  // only remembered in `best`: the read may still find an earlier member.
  int reads_in_flight = 0;
  // Everything up to this revision is reflected in a completed read, so the
  // stream only matters for later revisions.
  uint64_t seen_revision = 0;
  // The earliest matching stream event seen while a read was in flight.
  struct Event {
    uint64_t revision = 0;
    bool token_deleted = false;
    Member member;
  };
  std::optional<Event> best;
};

// The outcome of reading one token with its members at one revision.
struct TokenRead {
  bool ok = false;
  std::string error;  // when !ok
  uint64_t revision = 0;
  std::optional<Token> token;  // absent: no such token
};

}  // namespace

struct EtcdTokenStore::Core {
  EtcdStoreOptions options;
  std::string prefix_end_key;             // etcdwire::prefix_end(options.prefix)
  std::atomic<std::size_t> preferred{0};  // endpoint that answered last
  std::atomic<uint64_t> last_revision{0};

  // The store's event loop and its one thread: every HTTP call, every
  // operation and the watch stream run here.
  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread thread;
  std::unique_ptr<net::AsyncHttpClient> http;

  // Operations: at most options.workers at a time, the rest wait in
  // `queue` (io thread only).  `accepting` turns false when the store stops;
  // from then on operations fail on their caller's thread.
  using Op = std::function<asio::awaitable<void>()>;
  int active = 0;
  std::deque<Op> queue;
  bool stopping = false;  // io thread
  std::mutex accept_mu;
  bool accepting = true;  // guarded by accept_mu

  // Waiters, by token.
  std::mutex waiters_mu;
  std::unordered_map<std::string, std::vector<std::shared_ptr<Waiter>>> waiters;
  std::size_t waiter_count = 0;

  // Watch stream (io thread).
  std::shared_ptr<net::HttpCall> stream_call;
  asio::steady_timer* backoff_timer = nullptr;
  std::atomic<uint64_t> streams_established{0};

  // Request tags (io thread).
  std::mt19937_64 rng{std::random_device{}()};

  // Blocking calls made on the caller's thread.
  std::mutex collect_mu;
  std::mutex health_mu;
  Clock::time_point health_started{};
  std::string health_answer;

  // ----- keys
  std::string token_key(const std::string& t) const { return options.prefix + "t/" + t; }
  std::string counter_key(const std::string& t) const { return options.prefix + "c/" + t; }
  std::string member_key(const std::string& t, const std::string& id) const {
    return options.prefix + "m/" + t + "/" + id;
  }
  std::string members_prefix(const std::string& t) const { return options.prefix + "m/" + t + "/"; }
  std::string expiry_key(int64_t expires_ms, const std::string& t) const {
    return options.prefix + "e/" + pad20(expires_ms) + "/" + t;
  }

  std::string new_tag() {
    static constexpr char kHex[] = "0123456789abcdef";
    uint64_t v = rng();
    std::string s(16, '0');
    for (int i = 15; i >= 0; --i, v >>= 4) s[std::size_t(i)] = kHex[v & 15];
    return s;
  }

  void note_revision(uint64_t rev) {
    uint64_t cur = last_revision.load();
    while (rev > cur && !last_revision.compare_exchange_weak(cur, rev)) {
    }
  }

  // ----- HTTP on the event loop

  // One call of net's client, awaited.
  asio::awaitable<net::ClientResult> call(net::ClientRequest req) {
    return asio::async_initiate<decltype(asio::use_awaitable), void(net::ClientResult)>(
        [this](auto handler, net::ClientRequest req) {
          auto h = std::make_shared<decltype(handler)>(std::move(handler));
          http->request(std::move(req), [h](net::ClientResult r) {
            auto ex = asio::get_associated_executor(*h);
            asio::post(ex, [h, r = std::move(r)]() mutable { (*h)(std::move(r)); });
          });
        },
        asio::use_awaitable, std::move(req));
  }

  // One streamed call, awaited; stop() cancels it through stream_call.
  asio::awaitable<net::ClientResult> stream(net::ClientRequest req, net::StreamHandlers on) {
    return asio::async_initiate<decltype(asio::use_awaitable), void(net::ClientResult)>(
        [this](auto handler, net::ClientRequest req, net::StreamHandlers on) {
          auto h = std::make_shared<decltype(handler)>(std::move(handler));
          stream_call = http->stream(std::move(req), std::move(on), [h](net::ClientResult r) {
            auto ex = asio::get_associated_executor(*h);
            asio::post(ex, [h, r = std::move(r)]() mutable { (*h)(std::move(r)); });
          });
        },
        asio::use_awaitable, std::move(req), std::move(on));
  }

  asio::awaitable<void> sleep(std::chrono::milliseconds d) {
    asio::steady_timer t(io, d);
    boost::system::error_code ignored;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }

  struct Reply {
    std::optional<json> body;
    std::string error;
    // An attempt failed after the request may have reached etcd: a write may
    // have been applied although we saw no answer.
    bool maybe_applied = false;
  };

  // POSTs `request` to `path` on the endpoints, starting with the one that
  // answered last, moving on after connection errors, 5xx and 429.
  asio::awaitable<Reply> post(std::string path, json request) {
    Reply out;
    const std::size_t n = options.endpoints.size();
    const std::size_t attempts = std::max<std::size_t>(3, 2 * n);
    const std::string body = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    net::Headers headers;
    headers.set("Content-Type", "application/json");
    std::size_t start = preferred.load();
    // Retries stop once a request timeout has passed overall, so a call
    // takes at most about twice the request timeout.
    const auto deadline = Clock::now() + options.request_timeout;
    for (std::size_t a = 0; a < attempts; ++a) {
      if (a > 0 && Clock::now() >= deadline) break;
      if (a > 0 && a % n == 0) {
        // A whole round failed: give a restarting or electing cluster a moment.
        if (stopping) break;
        co_await sleep(std::chrono::milliseconds(100 * (a / n)));
      }
      std::size_t ep = (start + a) % n;
      auto r = co_await call({"POST", options.endpoints[ep] + path, body, headers});
      if (!r.ok()) {
        out.error = r.error;
        out.maybe_applied = true;
        continue;
      }
      const auto& resp = *r.response;
      json parsed = json::parse(resp.body, nullptr, false);
      if (resp.status == 200 && !parsed.is_discarded() && parsed.is_object()) {
        preferred.store(ep);
        note_revision(header_revision(parsed));
        out.body = std::move(parsed);
        co_return out;
      }
      std::string msg;
      if (parsed.is_object()) {
        if (parsed.contains("message") && parsed["message"].is_string())
          msg = parsed["message"].get<std::string>();
        else if (parsed.contains("error") && parsed["error"].is_string())
          msg = parsed["error"].get<std::string>();
      }
      if (msg.empty()) msg = resp.body.substr(0, 200);
      out.error = "etcd at " + options.endpoints[ep] + " answered " + std::to_string(resp.status) +
                  ": " + msg;
      if (resp.status >= 500 || resp.status == 429) {
        out.maybe_applied = true;
        continue;
      }
      co_return out;  // 4xx: retrying elsewhere would get the same answer
    }
    co_return out;
  }

  // ----- reads

  bool parse_token(const std::string& name, const Kv& kv, Token& t, std::string* tag) {
    json j = json::parse(kv.value, nullptr, false);
    if (!j.is_object()) return false;
    try {
      t.name = name;
      t.size = j.at("size").get<uint32_t>();
      t.created_unix_ms = j.at("created_ms").get<int64_t>();
      t.expires_unix_ms = j.at("expires_ms").get<int64_t>();
      t.created_index = kv.create_revision;
      if (tag) *tag = j.value("req", std::string());
    } catch (const std::exception&) {
      return false;
    }
    return true;
  }

  bool parse_member(const std::string& id, const Kv& kv, Member& m, std::string* tag) {
    json j = json::parse(kv.value, nullptr, false);
    if (!j.is_object()) return false;
    try {
      m.id = id;
      m.value = j.at("value").get<std::string>();
      m.registered_unix_ms = j.at("registered_ms").get<int64_t>();
      m.created_index = kv.create_revision;
      m.modified_index = kv.mod_revision;
      if (tag) *tag = j.value("req", std::string());
    } catch (const std::exception&) {
      return false;
    }
    return true;
  }

  // Reads a token and all its members in one txn, hence at one revision.
  asio::awaitable<TokenRead> read_token(std::string name) {
    TokenRead out;
    auto r = co_await post("/v3/kv/txn", read_token_txn(name));
    if (!r.body) {
      out.error = r.error;
      co_return out;
    }
    out.ok = true;
    out.revision = header_revision(*r.body);
    auto tk = first(txn_range(*r.body, 0));
    if (!tk) co_return out;
    Token t;
    if (!parse_token(name, *tk, t, nullptr)) {
      out.ok = false;
      out.error = "unreadable token record in etcd under " + tk->key;
      co_return out;
    }
    const std::string mp = members_prefix(name);
    for (auto& kv : txn_range(*r.body, 1)) {
      Member m;
      if (!parse_member(kv.key.substr(mp.size()), kv, m, nullptr)) {
        out.ok = false;
        out.error = "unreadable member record in etcd under " + kv.key;
        co_return out;
      }
      t.members.push_back(std::move(m));
    }
    std::sort(t.members.begin(), t.members.end(),
              [](const Member& a, const Member& b) { return a.created_index < b.created_index; });
    out.token = std::move(t);
    co_return out;
  }

  // Token, counter and one member key, read together (the state a
  // registration or a removal decides on).
  struct SlotState {
    uint64_t revision = 0;
    std::optional<Kv> token, counter, member;
  };
  std::vector<json> slot_reads(const std::string& token, const std::string& id) {
    return {range_op(token_key(token)), range_op(counter_key(token)),
            range_op(member_key(token, id))};
  }
  SlotState slot_state(const json& txn) {
    SlotState s;
    s.revision = header_revision(txn);
    s.token = first(txn_range(txn, 0));
    s.counter = first(txn_range(txn, 1));
    s.member = first(txn_range(txn, 2));
    return s;
  }
  static uint64_t count_of(const std::optional<Kv>& counter) {
    if (!counter) return 0;
    try {
      return std::stoull(counter->value);
    } catch (const std::exception&) {
      return 0;
    }
  }
  // Compare that the counter is as read (absent counters compare as absent).
  json counter_cmp(const std::string& token, const std::optional<Kv>& counter) {
    return counter ? equal_cmp("MOD", counter_key(token), counter->mod_revision)
                   : equal_cmp("CREATE", counter_key(token), 0);
  }

  // ----- the txns the operations send (plain functions: g++ 12 cannot keep
  // a braced JSON initializer list alive across a co_await)

  json read_token_txn(const std::string& name) {
    return json{{"success",
                 {range_op(token_key(name)),
                  range_op(members_prefix(name), etcdwire::prefix_end(members_prefix(name)))}}};
  }
  json create_txn(const std::string& name, uint32_t size, int64_t now_ms, int64_t expires_ms,
                  const std::string& tag) {
    const std::string tk = token_key(name);
    std::string value =
        json{{"size", size}, {"created_ms", now_ms}, {"expires_ms", expires_ms}, {"req", tag}}.dump(
            -1, ' ', false, nlohmann::json::error_handler_t::replace);
    return json{{"compare", {equal_cmp("CREATE", tk, 0)}},
                {"success",
                 {put_op(tk, value), put_op(counter_key(name), "0"),
                  put_op(expiry_key(expires_ms, name), "")}},
                {"failure", {range_op(tk)}}};
  }
  json slot_read_txn(const std::string& token, const std::string& id) {
    return json{{"success", slot_reads(token, id)}};
  }
  static std::string member_record(const std::string& value, int64_t now_ms,
                                   const std::string& tag) {
    return json{{"value", value}, {"registered_ms", now_ms}, {"req", tag}}.dump(
        -1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  json add_txn(const std::string& token, const std::string& id, const SlotState& s,
               const std::string& member_value, uint64_t count) {
    const std::string mk = member_key(token, id);
    return json{{"compare",
                 {equal_cmp("MOD", token_key(token), s.token->mod_revision),
                  counter_cmp(token, s.counter), equal_cmp("CREATE", mk, 0)}},
                {"success",
                 {put_op(mk, member_value), put_op(counter_key(token), std::to_string(count + 1))}},
                {"failure", slot_reads(token, id)}};
  }
  json remove_txn(const std::string& token, const std::string& id, const SlotState& s) {
    const std::string mk = member_key(token, id);
    const uint64_t count = count_of(s.counter);
    json success = json::array({delete_op(mk)});
    if (s.counter)
      success.push_back(
          put_op(counter_key(token), std::to_string(count > 0 ? count - 1 : uint64_t{0})));
    return json{{"compare",
                 {equal_cmp("MOD", mk, s.member->mod_revision), counter_cmp(token, s.counter),
                  equal_cmp("MOD", token_key(token), s.token->mod_revision)}},
                {"success", success},
                {"failure", slot_reads(token, id)}};
  }
  static json expiry_range(const std::string& from, const std::string& to) {
    return json{{"key", etcdwire::base64_encode(from)},
                {"range_end", etcdwire::base64_encode(to)},
                {"limit", "256"}};
  }
  // Deletes the token an expiry key describes, if it is still that token:
  // the expiry key was written in the token's creating txn, so the token
  // has create_revision == the key's mod_revision; a token of the same name
  // created later is left alone.
  json collect_txn(const std::string& token, const Kv& expiry) {
    const std::string mp = members_prefix(token);
    return json{{"compare", {equal_cmp("CREATE", token_key(token), expiry.mod_revision)}},
                {"success",
                 {delete_op(token_key(token)), delete_op(counter_key(token)),
                  delete_op(mp, etcdwire::prefix_end(mp)), delete_op(expiry.key)}}};
  }
  // Drops a stale expiry key (its token is gone or was re-created).
  static json drop_expiry_txn(const Kv& expiry) {
    return json{{"compare", {equal_cmp("MOD", expiry.key, expiry.mod_revision)}},
                {"success", {delete_op(expiry.key)}}};
  }
  std::string count_only_body() {
    return json{{"key", etcdwire::base64_encode(options.prefix)},
                {"range_end", etcdwire::base64_encode(prefix_end_key)},
                {"count_only", true}}
        .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string watch_body(uint64_t start_revision) {
    json create{{"key", etcdwire::base64_encode(options.prefix)},
                {"range_end", etcdwire::base64_encode(prefix_end_key)}};
    if (start_revision > 0) create["start_revision"] = std::to_string(start_revision);
    return json{{"create_request", create}}.dump(-1, ' ', false,
                                                 nlohmann::json::error_handler_t::replace);
  }

  // ----- operations (on the event loop)

  asio::awaitable<StoreResult> do_create(std::string name, uint32_t size, int64_t now_ms,
                                         int64_t expires_ms) {
    if (!valid_element(name)) co_return unavailable("invalid token name \"" + name + "\"");
    const std::string tag = new_tag();
    const std::string tk = token_key(name);
    const json txn = create_txn(name, size, now_ms, expires_ms, tag);
    for (int attempt = 0; attempt < 5; ++attempt) {
      auto r = co_await post("/v3/kv/txn", txn);
      if (!r.body) co_return unavailable(r.error, last_revision.load());
      uint64_t rev = header_revision(*r.body);
      if (r.body->value("succeeded", false)) {
        StoreResult out = with_status(StoreStatus::kOk, rev);
        out.token.name = name;
        out.token.size = size;
        out.token.created_index = rev;
        out.token.created_unix_ms = now_ms;
        out.token.expires_unix_ms = expires_ms;
        co_return out;
      }
      auto existing = first(txn_range(*r.body, 0));
      if (!existing) continue;  // deleted between compare and read: try again
      StoreResult out = with_status(StoreStatus::kExists, rev);
      std::string existing_tag;
      if (!parse_token(name, *existing, out.token, &existing_tag))
        co_return unavailable("unreadable token record in etcd under " + tk, rev);
      // Our own earlier attempt, whose answer was lost, created it.
      if (existing_tag == tag) out.status = StoreStatus::kOk;
      co_return out;
    }
    co_return unavailable("token " + name + " kept changing while being created",
                          last_revision.load());
  }

  asio::awaitable<StoreResult> do_get(std::string name, int64_t now_ms) {
    if (!valid_element(name)) co_return with_status(StoreStatus::kNotFound, last_revision.load());
    auto r = co_await read_token(name);
    if (!r.ok) co_return unavailable(r.error, last_revision.load());
    if (!r.token || r.token->expires_unix_ms <= now_ms)
      co_return with_status(StoreStatus::kNotFound, r.revision);
    StoreResult out = with_status(StoreStatus::kOk, r.revision);
    out.token = std::move(*r.token);
    co_return out;
  }

  asio::awaitable<StoreResult> do_add(std::string token, std::string id, std::string value,
                                      uint32_t max_registrations, int64_t now_ms) {
    if (!valid_element(token) || !valid_element(id))
      co_return with_status(StoreStatus::kNotFound, last_revision.load());
    const std::string tag = new_tag();
    const std::string mk = member_key(token, id);
    const std::string member_value = member_record(value, now_ms, tag);
    auto r = co_await post("/v3/kv/txn", slot_read_txn(token, id));
    if (!r.body) co_return unavailable(r.error, last_revision.load());
    SlotState s = slot_state(*r.body);
    // Each failed commit means another registration or removal on this token
    // committed, so the loop makes progress overall; the bound only stops a
    // pathological storm.
    for (int attempt = 0; attempt < 1000; ++attempt) {
      Token t;
      if (!s.token) co_return with_status(StoreStatus::kNotFound, s.revision);
      if (!parse_token(token, *s.token, t, nullptr))
        co_return unavailable("unreadable token record in etcd under " + s.token->key, s.revision);
      if (t.expires_unix_ms <= now_ms) co_return with_status(StoreStatus::kNotFound, s.revision);
      if (s.member) {
        StoreResult out = with_status(StoreStatus::kExists, s.revision);
        std::string existing_tag;
        if (!parse_member(id, *s.member, out.member, &existing_tag))
          co_return unavailable("unreadable member record in etcd under " + mk, s.revision);
        if (existing_tag == tag) out.status = StoreStatus::kOk;  // our lost answer
        co_return out;
      }
      uint64_t count = count_of(s.counter);
      if (count >= max_registrations) co_return with_status(StoreStatus::kQuotaReached, s.revision);
      r = co_await post("/v3/kv/txn", add_txn(token, id, s, member_value, count));
      if (!r.body) co_return unavailable(r.error, last_revision.load());
      uint64_t rev = header_revision(*r.body);
      if (r.body->value("succeeded", false)) {
        StoreResult out = with_status(StoreStatus::kOk, rev);
        out.member = Member{id, value, rev, rev, now_ms};
        co_return out;
      }
      s = slot_state(*r.body);
    }
    co_return unavailable("too much contention registering on token " + token,
                          last_revision.load());
  }

  asio::awaitable<StoreResult> do_remove(std::string token, std::string id) {
    if (!valid_element(token) || !valid_element(id))
      co_return with_status(StoreStatus::kNotFound, last_revision.load());
    const std::string mk = member_key(token, id);
    auto r = co_await post("/v3/kv/txn", slot_read_txn(token, id));
    if (!r.body) co_return unavailable(r.error, last_revision.load());
    SlotState s = slot_state(*r.body);
    bool maybe_removed = false;  // an attempt may have applied unseen
    std::optional<Member> removed;
    for (int attempt = 0; attempt < 1000; ++attempt) {
      if (!s.token || !s.member) {
        if (maybe_removed && removed) {
          // Our delete most likely went through although its answer was
          // lost; the member is gone either way, which is what was asked.
          StoreResult out = with_status(StoreStatus::kOk, s.revision);
          out.member = *removed;
          co_return out;
        }
        co_return with_status(StoreStatus::kNotFound, s.revision);
      }
      Member m;
      if (!parse_member(id, *s.member, m, nullptr))
        co_return unavailable("unreadable member record in etcd under " + mk, s.revision);
      removed = m;
      r = co_await post("/v3/kv/txn", remove_txn(token, id, s));
      if (!r.body) co_return unavailable(r.error, last_revision.load());
      maybe_removed = maybe_removed || r.maybe_applied;
      uint64_t rev = header_revision(*r.body);
      if (r.body->value("succeeded", false)) {
        StoreResult out = with_status(StoreStatus::kOk, rev);
        out.member = std::move(m);
        co_return out;
      }
      s = slot_state(*r.body);
    }
    co_return unavailable("too much contention removing from token " + token, last_revision.load());
  }

  // ----- operations: at most options.workers at a time

  // Starts `op` on the event loop; false when the store no longer accepts
  // work (the caller then fails the operation itself).  Any thread.
  bool start(Op op) {
    std::lock_guard lock(accept_mu);
    if (!accepting) return false;
    asio::post(io, [this, op = std::move(op)]() mutable { submit(std::move(op)); });
    return true;
  }

  void submit(Op op) {
    if (active >= options.workers) {
      queue.push_back(std::move(op));
      return;
    }
    ++active;
    asio::co_spawn(io, run_op(std::move(op)), asio::detached);
  }

  asio::awaitable<void> run_op(Op op) {
    co_await op();
    --active;
    if (!queue.empty()) {
      Op next = std::move(queue.front());
      queue.pop_front();
      submit(std::move(next));
    }
  }

  // Each operation checks `stopping` first: what was queued when the store
  // stopped fails at once instead of reaching etcd.
  asio::awaitable<void> op_create(std::string name, uint32_t size, int64_t now_ms,
                                  int64_t expires_ms, StoreCallback cb) {
    if (stopping) co_return cb(unavailable(kShuttingDown));
    cb(co_await do_create(name, size, now_ms, expires_ms));
  }
  asio::awaitable<void> op_get(std::string name, int64_t now_ms, StoreCallback cb) {
    if (stopping) co_return cb(unavailable(kShuttingDown));
    cb(co_await do_get(name, now_ms));
  }
  asio::awaitable<void> op_add(std::string token, std::string id, std::string value,
                               uint32_t max_registrations, int64_t now_ms, StoreCallback cb) {
    if (stopping) co_return cb(unavailable(kShuttingDown));
    cb(co_await do_add(token, id, value, max_registrations, now_ms));
  }
  asio::awaitable<void> op_remove(std::string token, std::string id, StoreCallback cb) {
    if (stopping) co_return cb(unavailable(kShuttingDown));
    cb(co_await do_remove(token, id));
  }
  asio::awaitable<void> op_read(std::string token, std::vector<std::shared_ptr<Waiter>> ws) {
    TokenRead read;
    if (stopping)
      read.error = kShuttingDown;
    else
      read = co_await read_token(token);
    apply_read(token, ws, read, wall_ms());
  }

  // ----- waiters

  using Delivery = std::pair<StoreCallback, StoreResult>;

  // REQUIRES: waiters_mu held.  Marks `w` done, unlinks it and queues its
  // callback for the caller to run once the lock is released.
  void claim(const std::shared_ptr<Waiter>& w, StoreResult r, std::vector<Delivery>& out) {
    w->done = true;
    auto it = waiters.find(w->token);
    if (it != waiters.end()) {
      auto& v = it->second;
      auto pos = std::find(v.begin(), v.end(), w);
      if (pos != v.end()) {
        v.erase(pos);
        --waiter_count;
      }
      if (v.empty()) waiters.erase(it);
    }
    out.emplace_back(std::move(w->cb), std::move(r));
    w->cb = nullptr;
  }

  StoreResult event_result(const std::string& token, const Waiter::Event& e) {
    if (e.token_deleted) return with_status(StoreStatus::kNotFound, e.revision);
    StoreResult r = with_status(StoreStatus::kOk, std::max(e.revision, last_revision.load()));
    r.token.name = token;
    r.member = e.member;
    return r;
  }

  static void run(std::vector<Delivery>& ds) {
    for (auto& [cb, r] : ds)
      if (cb) cb(std::move(r));
  }

  // Applies a completed read of `token` to the waiters that asked for it.
  void apply_read(const std::string& token, const std::vector<std::shared_ptr<Waiter>>& ws,
                  const TokenRead& read, int64_t now_ms) {
    std::vector<Delivery> ds;
    {
      std::lock_guard lock(waiters_mu);
      for (const auto& w : ws) {
        --w->reads_in_flight;
        if (w->done) continue;
        if (!read.ok) {
          claim(w, unavailable(read.error, last_revision.load()), ds);
          continue;
        }
        if (!read.token || read.token->expires_unix_ms <= now_ms) {
          claim(w, with_status(StoreStatus::kNotFound, read.revision), ds);
          continue;
        }
        std::optional<Waiter::Event> found;
        for (const auto& m : read.token->members) {
          if (m.created_index < w->from_index || (!w->id.empty() && m.id != w->id)) continue;
          found = Waiter::Event{m.created_index, false, m};
          break;
        }
        // Stream events at or below the read's revision are reflected in it.
        if (w->best && w->best->revision <= read.revision) w->best.reset();
        if (w->best && (!found || w->best->revision < found->revision)) found = w->best;
        if (found) {
          claim(w, event_result(token, *found), ds);
          continue;
        }
        w->seen_revision = std::max(w->seen_revision, read.revision);
      }
    }
    run(ds);
  }

  void schedule_read(const std::string& token, std::vector<std::shared_ptr<Waiter>> ws) {
    if (start([this, token, ws] { return op_read(token, ws); })) return;
    TokenRead read;
    read.error = kShuttingDown;  // the store is being destroyed: fail at once
    apply_read(token, ws, read, wall_ms());
  }

  // The stream may have skipped revisions (first start, compaction): re-read
  // every waiting token.  Called on the watch thread before it handles any
  // event of the new stream, so events after the read are still recorded.
  void resync_all() {
    std::vector<std::pair<std::string, std::vector<std::shared_ptr<Waiter>>>> jobs;
    {
      std::lock_guard lock(waiters_mu);
      for (auto& [token, ws] : waiters) {
        for (auto& w : ws) ++w->reads_in_flight;
        jobs.emplace_back(token, ws);
      }
    }
    for (auto& [token, ws] : jobs) schedule_read(token, std::move(ws));
  }

  // A member creation or token deletion seen on the stream.
  void dispatch(const std::string& token, const Waiter::Event& e) {
    std::vector<Delivery> ds;
    {
      std::lock_guard lock(waiters_mu);
      auto it = waiters.find(token);
      if (it == waiters.end()) return;
      auto ws = it->second;  // claim() edits the vector
      for (const auto& w : ws) {
        if (w->done || e.revision <= w->seen_revision) continue;
        if (!e.token_deleted) {
          if (e.revision < w->from_index) continue;
          if (!w->id.empty() && w->id != e.member.id) continue;
        }
        if (w->reads_in_flight > 0) {
          if (!w->best || e.revision < w->best->revision) w->best = e;
          continue;
        }
        claim(w, event_result(token, e), ds);
      }
    }
    run(ds);
  }

  // ----- the watch stream

  // Handles one stream message.  Returns false to end the stream.
  bool on_watch_message(const json& msg, uint64_t& next_rev, bool& gap, std::string& err) {
    if (msg.contains("error")) {
      const auto& e = msg["error"];
      err =
          e.is_object()
              ? e.value("message", e.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace))
              : e.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      return false;
    }
    auto it = msg.find("result");
    if (it == msg.end() || !it->is_object()) {
      err = "unexpected watch message " +
            msg.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).substr(0, 200);
      return false;
    }
    const json& res = *it;
    uint64_t header_rev = header_revision(res);
    note_revision(header_rev);
    if (uint64_t compacted = etcdwire::json_u64(res, "compact_revision"); compacted > 0) {
      // Revisions we needed are gone: restart from now and re-read.
      next_rev = 0;
      gap = true;
      err = "watch revision compacted at " + std::to_string(compacted);
      return false;
    }
    if (res.value("canceled", false)) {
      err = "watch canceled: " + res.value("cancel_reason", std::string("no reason given"));
      return false;
    }
    if (res.value("created", false)) {
      streams_established.fetch_add(1);
      if (next_rev == 0) next_rev = header_rev + 1;  // etcd starts after the current revision
      if (gap) {
        gap = false;
        resync_all();
      }
    }
    auto evs = res.find("events");
    if (evs == res.end() || !evs->is_array()) return true;
    const std::string& p = options.prefix;
    for (const auto& ev : *evs) {
      auto kvj = ev.find("kv");
      if (kvj == ev.end()) continue;
      auto kv = kv_of(*kvj);
      if (!kv) continue;
      note_revision(kv->mod_revision);
      next_rev = std::max(next_rev, kv->mod_revision + 1);
      if (kv->key.compare(0, p.size(), p) != 0) continue;
      std::string rest = kv->key.substr(p.size());
      bool deleted = ev.value("type", std::string()) == "DELETE";
      if (!deleted && rest.rfind("m/", 0) == 0) {
        auto slash = rest.find('/', 2);
        if (slash == std::string::npos) continue;
        // Member keys are written once, so a put is a creation; check anyway.
        if (kv->create_revision != kv->mod_revision) continue;
        std::string token = rest.substr(2, slash - 2);
        Waiter::Event e;
        e.revision = kv->mod_revision;
        if (!parse_member(rest.substr(slash + 1), *kv, e.member, nullptr)) continue;
        dispatch(token, e);
      } else if (deleted && rest.rfind("t/", 0) == 0) {
        Waiter::Event e;
        e.revision = kv->mod_revision;
        e.token_deleted = true;
        dispatch(rest.substr(2), e);
      }
    }
    return true;
  }

  asio::awaitable<void> run_watcher() {
    uint64_t next_rev = 0;  // 0: from now on
    bool gap = true;        // waiters must re-read once the stream is up
    auto backoff = std::chrono::milliseconds(100);
    const std::size_t n = options.endpoints.size();
    std::size_t ep = preferred.load() % n;
    net::Headers headers;
    headers.set("Content-Type", "application/json");
    while (!stopping) {
      std::string buf, err;
      uint64_t established_before = streams_established.load();
      net::ClientRequest req("POST", options.endpoints[ep] + "/v3/watch", watch_body(next_rev),
                             headers);
      req.timeout = options.watch_stream_timeout;
      net::StreamHandlers on;
      on.on_head = [&](const net::Response& head, std::optional<uint64_t>, bool) {
        if (head.status == 200) return true;
        err = "etcd at " + options.endpoints[ep] + " answered " + std::to_string(head.status) +
              " to a watch";
        return false;
      };
      on.on_data = [&](std::string_view data) {
        if (stopping) return false;
        buf.append(data);
        std::size_t pos;
        while ((pos = buf.find('\n')) != std::string::npos) {
          std::string line = buf.substr(0, pos);
          buf.erase(0, pos + 1);
          if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
          json msg = json::parse(line, nullptr, false);
          if (msg.is_discarded()) {
            err = "unreadable watch message " + line.substr(0, 200);
            return false;
          }
          if (!on_watch_message(msg, next_rev, gap, err)) return false;
        }
        return !stopping;
      };
      auto r = co_await stream(std::move(req), std::move(on));
      stream_call.reset();
      if (stopping) break;
      if (!r.ok() && err.empty()) err = r.error;
      bool was_up = streams_established.load() != established_before;
      if (err.empty()) {
        if (was_up) continue;  // the stream reached its timeout: reopen at once
        err = "the watch stream ended before etcd set it up";
      }
      if (was_up) {
        backoff = std::chrono::milliseconds(100);
        if (err.rfind("watch revision compacted", 0) == 0) continue;
      }
      ep = (ep + 1) % n;
      asio::steady_timer t(io, backoff);
      backoff_timer = &t;
      boost::system::error_code ignored;
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      backoff_timer = nullptr;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5'000));
    }
  }

  // Stops the event loop's long-running work (io thread): the watch stream
  // and its backoff wait end at once; operations in flight finish, queued
  // ones fail fast.
  void stop() {
    stopping = true;
    if (stream_call) stream_call->cancel();
    if (backoff_timer) backoff_timer->cancel();
  }

  // Runs `op` on the event loop and waits for its result.  REQUIRES: not on
  // the store's own thread.
  template <class T>
  T run_blocking(asio::awaitable<T> op, T if_stopped) {
    std::promise<T> done;
    auto result = done.get_future();
    {
      std::lock_guard lock(accept_mu);
      if (!accepting) return if_stopped;
      asio::co_spawn(io, std::move(op),
                     [&done](std::exception_ptr, T v) { done.set_value(std::move(v)); });
    }
    return result.get();
  }

  asio::awaitable<std::size_t> collect(int64_t now_unix_ms);
  asio::awaitable<std::string> probe_health();
};

namespace {

class EtcdWatch final : public Watch {
 public:
  EtcdWatch(std::weak_ptr<EtcdTokenStore::Core> core, std::shared_ptr<Waiter> w)
      : core_(std::move(core)), w_(std::move(w)) {}
  ~EtcdWatch() override { cancel(); }
  void cancel() override {
    auto core = core_.lock();
    if (!core) return;
    StoreCallback dropped;  // destroyed outside the lock
    {
      std::lock_guard lock(core->waiters_mu);
      if (w_->done) return;
      std::vector<EtcdTokenStore::Core::Delivery> none;
      core->claim(w_, StoreResult{}, none);
      dropped = std::move(none.front().first);
    }
  }

 private:
  std::weak_ptr<EtcdTokenStore::Core> core_;
  std::shared_ptr<Waiter> w_;
};

}  // namespace

// ---------------------------------------------------------------------------

std::vector<std::string> parse_etcd_endpoints(std::string_view list) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= list.size()) {
    std::size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    std::string item(list.substr(start, comma - start));
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) {
      std::string why;
      auto u = net::parse_url(item, &why);
      if (!u) throw std::invalid_argument("bad etcd endpoint \"" + item + "\": " + why);
      if (!u->path.empty() && u->path != "/")
        throw std::invalid_argument("etcd endpoint \"" + item +
                                    "\" has a path; give scheme://host:port only");
      out.push_back(u->origin());
    }
    start = comma + 1;
  }
  if (out.empty()) throw std::invalid_argument("no etcd endpoints given");
  return out;
}

EtcdTokenStore::EtcdTokenStore(EtcdStoreOptions options) : core_(std::make_shared<Core>()) {
  if (options.endpoints.empty()) throw std::invalid_argument("no etcd endpoints given");
  for (auto& ep : options.endpoints) {
    auto parsed = parse_etcd_endpoints(ep);
    if (parsed.size() != 1) throw std::invalid_argument("bad etcd endpoint \"" + ep + "\"");
    ep = parsed.front();
  }
  if (options.prefix.empty()) throw std::invalid_argument("the etcd key prefix must not be empty");
  if (options.workers < 1) options.workers = 1;
  Core& c = *core_;
  c.options = std::move(options);
  c.prefix_end_key = etcdwire::prefix_end(c.options.prefix);
  net::ClientOptions co;
  co.connect_timeout = c.options.connect_timeout;
  co.timeout = c.options.request_timeout;
  co.tls = c.options.tls;
  co.max_redirects = 0;
  c.http = std::make_unique<net::AsyncHttpClient>(c.io.get_executor(), co);
  c.work.emplace(c.io.get_executor());
  c.thread = std::thread([&c] { c.io.run(); });
  // Learn the current revision before serving, so that current_index()
  // (what a wait without waitIndex starts after) is not 0 at startup.  A
  // failed probe is not an error: operations answer kUnavailable meanwhile.
  health();
  asio::co_spawn(c.io, c.run_watcher(), asio::detached);
}

EtcdTokenStore::~EtcdTokenStore() {
  Core& c = *core_;
  {
    // Operations started from here on fail on their caller's thread.
    std::lock_guard lock(c.accept_mu);
    c.accepting = false;
    asio::post(c.io, [&c] { c.stop(); });
  }
  // The loop runs until what is in flight has finished.
  c.work.reset();
  c.thread.join();
  c.http.reset();
  std::vector<Core::Delivery> ds;
  {
    std::lock_guard lock(c.waiters_mu);
    std::vector<std::shared_ptr<Waiter>> all;
    for (auto& [token, ws] : c.waiters) all.insert(all.end(), ws.begin(), ws.end());
    for (auto& w : all) c.claim(w, unavailable(kShuttingDown, c.last_revision.load()), ds);
  }
  Core::run(ds);
}

void EtcdTokenStore::create_token(const std::string& name, uint32_t size, int64_t now_unix_ms,
                                  int64_t expires_unix_ms, StoreCallback cb) {
  Core* c = core_.get();
  if (!c->start([c, name, size, now_unix_ms, expires_unix_ms, cb] {
        return c->op_create(name, size, now_unix_ms, expires_unix_ms, cb);
      }))
    cb(unavailable(kShuttingDown));
}

void EtcdTokenStore::get_token(const std::string& name, int64_t now_unix_ms, StoreCallback cb) {
  Core* c = core_.get();
  if (!c->start([c, name, now_unix_ms, cb] { return c->op_get(name, now_unix_ms, cb); }))
    cb(unavailable(kShuttingDown));
}

void EtcdTokenStore::add_member(const std::string& token, const std::string& id,
                                const std::string& value, uint32_t max_registrations,
                                int64_t now_unix_ms, StoreCallback cb) {
  Core* c = core_.get();
  if (!c->start([c, token, id, value, max_registrations, now_unix_ms, cb] {
        return c->op_add(token, id, value, max_registrations, now_unix_ms, cb);
      }))
    cb(unavailable(kShuttingDown));
}

void EtcdTokenStore::remove_member(const std::string& token, const std::string& id,
                                   StoreCallback cb) {
  Core* c = core_.get();
  if (!c->start([c, token, id, cb] { return c->op_remove(token, id, cb); }))
    cb(unavailable(kShuttingDown));
}

std::unique_ptr<Watch> EtcdTokenStore::watch(const std::string& token, const std::string& id,
                                             uint64_t from_index, StoreCallback cb) {
  auto w = std::make_shared<Waiter>();
  w->token = token;
  w->id = id;
  w->from_index = from_index;
  w->cb = std::move(cb);
  // Registered before the read, so a member created while the read is in
  // flight is seen by one or the other (Waiter::best covers the overlap).
  {
    std::lock_guard lock(core_->waiters_mu);
    w->reads_in_flight = 1;
    core_->waiters[token].push_back(w);
    ++core_->waiter_count;
  }
  core_->schedule_read(token, {w});
  return std::make_unique<EtcdWatch>(core_, w);
}

asio::awaitable<std::size_t> EtcdTokenStore::Core::collect(int64_t now_unix_ms) {
  const std::string from = options.prefix + "e/";
  // Expiry keys sort by expiry time; everything below this one has expired
  // (expires_ms <= now, the same rule reads use).
  const std::string to = options.prefix + "e/" + pad20(now_unix_ms + 1);
  std::size_t collected = 0;
  for (int batch = 0; batch < 1000; ++batch) {
    auto r = co_await post("/v3/kv/range", expiry_range(from, to));
    if (!r.body) co_return collected;
    std::vector<Kv> keys;
    if (auto kvs = r.body->find("kvs"); kvs != r.body->end() && kvs->is_array())
      for (const auto& k : *kvs)
        if (auto kv = kv_of(k)) keys.push_back(std::move(*kv));
    if (keys.empty()) co_return collected;
    std::size_t progress = 0;
    for (const auto& ek : keys) {
      const std::string token = ek.key.substr(ek.key.rfind('/') + 1);
      auto t = co_await post("/v3/kv/txn", collect_txn(token, ek));
      if (!t.body) co_return collected;
      if (t.body->value("succeeded", false)) {
        ++collected;
        ++progress;
        continue;
      }
      auto d = co_await post("/v3/kv/txn", drop_expiry_txn(ek));
      if (!d.body) co_return collected;
      if (d.body->value("succeeded", false)) ++progress;
    }
    if (progress == 0) co_return collected;  // another replica is racing us; it will finish
  }
  co_return collected;
}

std::size_t EtcdTokenStore::collect_expired(int64_t now_unix_ms) {
  Core& c = *core_;
  std::lock_guard lock(c.collect_mu);
  return c.run_blocking<std::size_t>(c.collect(now_unix_ms), 0);
}

uint64_t EtcdTokenStore::current_index() { return core_->last_revision.load(); }

asio::awaitable<std::string> EtcdTokenStore::Core::probe_health() {
  net::Headers headers;
  headers.set("Content-Type", "application/json");
  const std::string body = count_only_body();
  std::string why;
  const std::size_t n = options.endpoints.size();
  std::size_t start = preferred.load();
  for (std::size_t a = 0; a < n; ++a) {
    const std::string& ep = options.endpoints[(start + a) % n];
    net::ClientRequest req{"POST", ep + "/v3/kv/range", body, headers};
    req.timeout = options.health_timeout;
    auto r = co_await call(std::move(req));
    if (r.ok() && r.response->status == 200) {
      json j = json::parse(r.response->body, nullptr, false);
      if (j.is_object()) note_revision(header_revision(j));
      why.clear();
      break;
    }
    if (!why.empty()) why += "; ";
    why += r.ok() ? ep + " answered " + std::to_string(r.response->status) : r.error;
  }
  if (!why.empty()) why = "etcd store unreachable: " + why;
  co_return why;
}

std::string EtcdTokenStore::health() {
  Core& c = *core_;
  auto entered = Clock::now();
  std::lock_guard lock(c.health_mu);
  // Callers that queued behind a probe which started after they arrived
  // share its answer, so a burst of /health requests costs one probe.
  if (c.health_started >= entered) return c.health_answer;
  c.health_started = Clock::now();
  c.health_answer = c.run_blocking<std::string>(c.probe_health(), kShuttingDown);
  return c.health_answer;
}

std::size_t EtcdTokenStore::open_watches() {
  std::lock_guard lock(core_->waiters_mu);
  return core_->waiter_count;
}

std::size_t EtcdTokenStore::watches_reading() {
  std::lock_guard lock(core_->waiters_mu);
  std::size_t n = 0;
  for (const auto& [token, ws] : core_->waiters)
    for (const auto& w : ws) n += w->reads_in_flight > 0 ? 1 : 0;
  return n;
}

uint64_t EtcdTokenStore::watch_streams_established() { return core_->streams_established.load(); }

std::unique_ptr<TokenStore> make_etcd_token_store(const std::string& endpoints,
                                                  const std::string& prefix,
                                                  const net::TlsOptions& tls) {
  EtcdStoreOptions o;
  o.endpoints = parse_etcd_endpoints(endpoints);
  o.tls = tls;
  if (!prefix.empty()) o.prefix = prefix;
  return std::make_unique<EtcdTokenStore>(std::move(o));
}

}  // namespace muster::discovery
