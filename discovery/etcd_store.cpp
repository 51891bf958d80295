// discovery/etcd_store.cpp: EtcdTokenStore (layout and rules in etcd_store.h).
#include "discovery/etcd_store.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <utility>

#include "etcdwire/v3_json.h"
#include "net/client.h"
#include "net/url.h"

namespace muster::discovery {

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
  std::atomic<bool> stopping{false};

  // Work queue.
  std::mutex queue_mu;
  std::condition_variable queue_cv;
  std::deque<std::function<void(net::HttpClient*)>> queue;
  bool workers_gone = false;  // guarded by queue_mu
  std::vector<std::thread> workers;

  // Waiters, by token.
  std::mutex waiters_mu;
  std::unordered_map<std::string, std::vector<std::shared_ptr<Waiter>>> waiters;
  std::size_t waiter_count = 0;

  // Watch stream.
  std::thread watcher;
  std::mutex watch_mu;  // for the backoff wait
  std::condition_variable watch_cv;
  std::atomic<bool> in_stream{false};
  std::atomic<uint64_t> streams_established{0};
  std::string wake_tag;

  // Request tags.
  std::mutex rng_mu;
  std::mt19937_64 rng{std::random_device{}()};

  // Blocking calls made on the caller's thread.
  std::mutex collect_mu;
  std::unique_ptr<net::HttpClient> collect_client;
  std::mutex health_mu;
  std::unique_ptr<net::HttpClient> health_client;
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

  net::ClientOptions client_options(std::chrono::milliseconds timeout) const {
    net::ClientOptions o;
    o.connect_timeout = std::min(options.connect_timeout, timeout);
    o.timeout = timeout;
    o.tls = options.tls;
    o.max_redirects = 0;
    return o;
  }

  std::string new_tag() {
    std::lock_guard lock(rng_mu);
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

  // ----- HTTP with failover

  struct Reply {
    std::optional<json> body;
    std::string error;
    // An attempt failed after the request may have reached etcd: a write may
    // have been applied although we saw no answer.
    bool maybe_applied = false;
  };

  // POSTs `request` to `path` on the endpoints, starting with the one that
  // answered last, moving on after connection errors, 5xx and 429.
  Reply post(net::HttpClient& http, const std::string& path, const json& request) {
    Reply out;
    const std::size_t n = options.endpoints.size();
    const std::size_t attempts = std::max<std::size_t>(3, 2 * n);
    const std::string body = request.dump();
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
        if (stopping.load()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100 * (a / n)));
      }
      std::size_t ep = (start + a) % n;
      auto r = http.request("POST", options.endpoints[ep] + path, body, headers);
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
        return out;
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
      return out;  // 4xx: retrying elsewhere would get the same answer
    }
    return out;
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
  TokenRead read_token(net::HttpClient& http, const std::string& name) {
    TokenRead out;
    json txn{{"success",
              {range_op(token_key(name)),
               range_op(members_prefix(name), etcdwire::prefix_end(members_prefix(name)))}}};
    auto r = post(http, "/v3/kv/txn", txn);
    if (!r.body) {
      out.error = r.error;
      return out;
    }
    out.ok = true;
    out.revision = header_revision(*r.body);
    auto tk = first(txn_range(*r.body, 0));
    if (!tk) return out;
    Token t;
    if (!parse_token(name, *tk, t, nullptr)) {
      out.ok = false;
      out.error = "unreadable token record in etcd under " + tk->key;
      return out;
    }
    const std::string mp = members_prefix(name);
    for (auto& kv : txn_range(*r.body, 1)) {
      Member m;
      if (!parse_member(kv.key.substr(mp.size()), kv, m, nullptr)) {
        out.ok = false;
        out.error = "unreadable member record in etcd under " + kv.key;
        return out;
      }
      t.members.push_back(std::move(m));
    }
    std::sort(t.members.begin(), t.members.end(),
              [](const Member& a, const Member& b) { return a.created_index < b.created_index; });
    out.token = std::move(t);
    return out;
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

  // ----- operations (run on workers)

  StoreResult do_create(net::HttpClient& http, const std::string& name, uint32_t size,
                        int64_t now_ms, int64_t expires_ms) {
    if (!valid_element(name)) return unavailable("invalid token name \"" + name + "\"");
    const std::string tag = new_tag();
    const std::string tk = token_key(name);
    std::string value = json{
        {"size", size},
        {"created_ms", now_ms},
        {"expires_ms", expires_ms},
        {"req", tag}}.dump();
    json txn{{"compare", {equal_cmp("CREATE", tk, 0)}},
             {"success",
              {put_op(tk, value), put_op(counter_key(name), "0"),
               put_op(expiry_key(expires_ms, name), "")}},
             {"failure", {range_op(tk)}}};
    for (int attempt = 0; attempt < 5; ++attempt) {
      auto r = post(http, "/v3/kv/txn", txn);
      if (!r.body) return unavailable(r.error, last_revision.load());
      uint64_t rev = header_revision(*r.body);
      if (r.body->value("succeeded", false)) {
        StoreResult out = with_status(StoreStatus::kOk, rev);
        out.token.name = name;
        out.token.size = size;
        out.token.created_index = rev;
        out.token.created_unix_ms = now_ms;
        out.token.expires_unix_ms = expires_ms;
        return out;
      }
      auto existing = first(txn_range(*r.body, 0));
      if (!existing) continue;  // deleted between compare and read: try again
      StoreResult out = with_status(StoreStatus::kExists, rev);
      std::string existing_tag;
      if (!parse_token(name, *existing, out.token, &existing_tag))
        return unavailable("unreadable token record in etcd under " + tk, rev);
      // Our own earlier attempt, whose answer was lost, created it.
      if (existing_tag == tag) out.status = StoreStatus::kOk;
      return out;
    }
    return unavailable("token " + name + " kept changing while being created",
                       last_revision.load());
  }

  StoreResult do_get(net::HttpClient& http, const std::string& name, int64_t now_ms) {
    if (!valid_element(name)) return with_status(StoreStatus::kNotFound, last_revision.load());
    auto r = read_token(http, name);
    if (!r.ok) return unavailable(r.error, last_revision.load());
    if (!r.token || r.token->expires_unix_ms <= now_ms)
      return with_status(StoreStatus::kNotFound, r.revision);
    StoreResult out = with_status(StoreStatus::kOk, r.revision);
    out.token = std::move(*r.token);
    return out;
  }

  StoreResult do_add(net::HttpClient& http, const std::string& token, const std::string& id,
                     const std::string& value, uint32_t max_registrations, int64_t now_ms) {
    if (!valid_element(token) || !valid_element(id))
      return with_status(StoreStatus::kNotFound, last_revision.load());
    const std::string tag = new_tag();
    const std::string mk = member_key(token, id);
    const std::string member_value =
        json{{"value", value}, {"registered_ms", now_ms}, {"req", tag}}.dump();
    auto r = post(http, "/v3/kv/txn", json{{"success", slot_reads(token, id)}});
    if (!r.body) return unavailable(r.error, last_revision.load());
    SlotState s = slot_state(*r.body);
    // Each failed commit means another registration or removal on this token
    // committed, so the loop makes progress overall; the bound only stops a
    // pathological storm.
    for (int attempt = 0; attempt < 1000; ++attempt) {
      Token t;
      if (!s.token) return with_status(StoreStatus::kNotFound, s.revision);
      if (!parse_token(token, *s.token, t, nullptr))
        return unavailable("unreadable token record in etcd under " + s.token->key, s.revision);
      if (t.expires_unix_ms <= now_ms) return with_status(StoreStatus::kNotFound, s.revision);
      if (s.member) {
        StoreResult out = with_status(StoreStatus::kExists, s.revision);
        std::string existing_tag;
        if (!parse_member(id, *s.member, out.member, &existing_tag))
          return unavailable("unreadable member record in etcd under " + mk, s.revision);
        if (existing_tag == tag) out.status = StoreStatus::kOk;  // our lost answer
        return out;
      }
      uint64_t count = count_of(s.counter);
      if (count >= max_registrations) return with_status(StoreStatus::kQuotaReached, s.revision);
      json txn{{"compare",
                {equal_cmp("MOD", token_key(token), s.token->mod_revision),
                 counter_cmp(token, s.counter), equal_cmp("CREATE", mk, 0)}},
               {"success",
                {put_op(mk, member_value), put_op(counter_key(token), std::to_string(count + 1))}},
               {"failure", slot_reads(token, id)}};
      r = post(http, "/v3/kv/txn", txn);
      if (!r.body) return unavailable(r.error, last_revision.load());
      uint64_t rev = header_revision(*r.body);
      if (r.body->value("succeeded", false)) {
        StoreResult out = with_status(StoreStatus::kOk, rev);
        out.member = Member{id, value, rev, rev, now_ms};
        return out;
      }
      s = slot_state(*r.body);
    }
    return unavailable("too much contention registering on token " + token, last_revision.load());
  }

  StoreResult do_remove(net::HttpClient& http, const std::string& token, const std::string& id) {
    if (!valid_element(token) || !valid_element(id))
      return with_status(StoreStatus::kNotFound, last_revision.load());
    const std::string mk = member_key(token, id);
    auto r = post(http, "/v3/kv/txn", json{{"success", slot_reads(token, id)}});
    if (!r.body) return unavailable(r.error, last_revision.load());
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
          return out;
        }
        return with_status(StoreStatus::kNotFound, s.revision);
      }
      Member m;
      if (!parse_member(id, *s.member, m, nullptr))
        return unavailable("unreadable member record in etcd under " + mk, s.revision);
      removed = m;
      uint64_t count = count_of(s.counter);
      json success = json::array({delete_op(mk)});
      if (s.counter)
        success.push_back(
            put_op(counter_key(token), std::to_string(count > 0 ? count - 1 : uint64_t{0})));
      json txn{{"compare",
                {equal_cmp("MOD", mk, s.member->mod_revision), counter_cmp(token, s.counter),
                 equal_cmp("MOD", token_key(token), s.token->mod_revision)}},
               {"success", success},
               {"failure", slot_reads(token, id)}};
      r = post(http, "/v3/kv/txn", txn);
      if (!r.body) return unavailable(r.error, last_revision.load());
      maybe_removed = maybe_removed || r.maybe_applied;
      uint64_t rev = header_revision(*r.body);
      if (r.body->value("succeeded", false)) {
        StoreResult out = with_status(StoreStatus::kOk, rev);
        out.member = std::move(m);
        return out;
      }
      s = slot_state(*r.body);
    }
    return unavailable("too much contention removing from token " + token, last_revision.load());
  }

  // ----- work queue

  void enqueue(std::function<void(net::HttpClient*)> job) {
    {
      std::unique_lock lock(queue_mu);
      if (!workers_gone) {
        queue.push_back(std::move(job));
        queue_cv.notify_one();
        return;
      }
    }
    job(nullptr);  // the store is being destroyed: fail at once
  }

  void run_worker() {
    net::HttpClient http(client_options(options.request_timeout));
    for (;;) {
      std::function<void(net::HttpClient*)> job;
      bool stop = false;
      {
        std::unique_lock lock(queue_mu);
        queue_cv.wait(lock, [&] { return stopping.load() || !queue.empty(); });
        if (queue.empty()) return;  // stopping and drained
        job = std::move(queue.front());
        queue.pop_front();
        stop = stopping.load();
      }
      job(stop ? nullptr : &http);
    }
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
    enqueue([this, token, ws = std::move(ws)](net::HttpClient* http) {
      TokenRead read;
      if (http) {
        read = read_token(*http, token);
      } else {
        read.error = kShuttingDown;
      }
      apply_read(token, ws, read, wall_ms());
    });
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
      err = e.is_object() ? e.value("message", e.dump()) : e.dump();
      return false;
    }
    auto it = msg.find("result");
    if (it == msg.end() || !it->is_object()) {
      err = "unexpected watch message " + msg.dump().substr(0, 200);
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

  void run_watcher() {
    net::HttpClient http(client_options(options.request_timeout));
    uint64_t next_rev = 0;  // 0: from now on
    bool gap = true;        // waiters must re-read once the stream is up
    auto backoff = std::chrono::milliseconds(100);
    const std::size_t n = options.endpoints.size();
    std::size_t ep = preferred.load() % n;
    net::Headers headers;
    headers.set("Content-Type", "application/json");
    while (!stopping.load()) {
      json create{{"key", etcdwire::base64_encode(options.prefix)},
                  {"range_end", etcdwire::base64_encode(prefix_end_key)}};
      if (next_rev > 0) create["start_revision"] = std::to_string(next_rev);
      std::string buf, err;
      uint64_t established_before = streams_established.load();
      in_stream.store(true);
      auto r = http.stream(
          "POST", options.endpoints[ep] + "/v3/watch", json{{"create_request", create}}.dump(),
          headers,
          [&](const net::Response& head) {
            if (head.status == 200) return true;
            err = "etcd at " + options.endpoints[ep] + " answered " + std::to_string(head.status) +
                  " to a watch";
            return false;
          },
          [&](std::string_view data) {
            if (stopping.load()) return false;
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
            return !stopping.load();
          },
          options.watch_stream_timeout);
      in_stream.store(false);
      if (stopping.load()) break;
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
      std::unique_lock lock(watch_mu);
      watch_cv.wait_for(lock, backoff, [&] { return stopping.load(); });
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5'000));
    }
  }

  // Ends the watch stream promptly: net::HttpClient cannot be interrupted
  // from another thread, so write a key inside the watched range; the stream
  // thread sees the event, notices `stopping` and returns.
  void wake_watcher() {
    {
      std::lock_guard lock(watch_mu);
      watch_cv.notify_all();
    }
    if (!in_stream.load()) return;
    net::HttpClient http(client_options(options.health_timeout));
    net::Headers headers;
    headers.set("Content-Type", "application/json");
    std::string body = json{{"key", etcdwire::base64_encode(options.prefix + "wake")},
                            {"value", etcdwire::base64_encode(wake_tag)}}
                           .dump();
    for (const auto& ep : options.endpoints) {
      auto r = http.request("POST", ep + "/v3/kv/put", body, headers);
      if (r.ok() && r.response->status == 200) return;
    }
    // etcd unreachable: the stream is broken too, or ends at its timeout.
  }
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
  core_->options = std::move(options);
  core_->prefix_end_key = etcdwire::prefix_end(core_->options.prefix);
  core_->wake_tag = core_->new_tag();
  core_->collect_client =
      std::make_unique<net::HttpClient>(core_->client_options(core_->options.request_timeout));
  core_->health_client =
      std::make_unique<net::HttpClient>(core_->client_options(core_->options.health_timeout));
  // Learn the current revision before serving, so that current_index()
  // (what a wait without waitIndex starts after) is not 0 at startup.  A
  // failed probe is not an error: operations answer kUnavailable meanwhile.
  health();
  for (int i = 0; i < core_->options.workers; ++i)
    core_->workers.emplace_back([c = core_.get()] { c->run_worker(); });
  core_->watcher = std::thread([c = core_.get()] { c->run_watcher(); });
}

EtcdTokenStore::~EtcdTokenStore() {
  Core& c = *core_;
  c.stopping.store(true);
  c.wake_watcher();
  c.watcher.join();
  {
    std::lock_guard lock(c.queue_mu);
    c.queue_cv.notify_all();
  }
  for (auto& t : c.workers) t.join();
  {
    // Jobs queued by callbacks from here on fail on their caller's thread.
    std::lock_guard lock(c.queue_mu);
    c.workers_gone = true;
  }
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
  core_->enqueue([c = core_.get(), name, size, now_unix_ms, expires_unix_ms,
                  cb = std::move(cb)](net::HttpClient* http) {
    cb(http ? c->do_create(*http, name, size, now_unix_ms, expires_unix_ms)
            : unavailable(kShuttingDown));
  });
}

void EtcdTokenStore::get_token(const std::string& name, int64_t now_unix_ms, StoreCallback cb) {
  core_->enqueue([c = core_.get(), name, now_unix_ms, cb = std::move(cb)](net::HttpClient* http) {
    cb(http ? c->do_get(*http, name, now_unix_ms) : unavailable(kShuttingDown));
  });
}

void EtcdTokenStore::add_member(const std::string& token, const std::string& id,
                                const std::string& value, uint32_t max_registrations,
                                int64_t now_unix_ms, StoreCallback cb) {
  core_->enqueue([c = core_.get(), token, id, value, max_registrations, now_unix_ms,
                  cb = std::move(cb)](net::HttpClient* http) {
    cb(http ? c->do_add(*http, token, id, value, max_registrations, now_unix_ms)
            : unavailable(kShuttingDown));
  });
}

void EtcdTokenStore::remove_member(const std::string& token, const std::string& id,
                                   StoreCallback cb) {
  core_->enqueue([c = core_.get(), token, id, cb = std::move(cb)](net::HttpClient* http) {
    cb(http ? c->do_remove(*http, token, id) : unavailable(kShuttingDown));
  });
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

std::size_t EtcdTokenStore::collect_expired(int64_t now_unix_ms) {
  Core& c = *core_;
  std::lock_guard lock(c.collect_mu);
  net::HttpClient& http = *c.collect_client;
  const std::string from = c.options.prefix + "e/";
  // Expiry keys sort by expiry time; everything below this one has expired
  // (expires_ms <= now, the same rule reads use).
  const std::string to = c.options.prefix + "e/" + pad20(now_unix_ms + 1);
  std::size_t collected = 0;
  for (int batch = 0; batch < 1000; ++batch) {
    auto r = c.post(http, "/v3/kv/range",
                    json{{"key", etcdwire::base64_encode(from)},
                         {"range_end", etcdwire::base64_encode(to)},
                         {"limit", "256"}});
    if (!r.body) return collected;
    std::vector<Kv> keys;
    if (auto kvs = r.body->find("kvs"); kvs != r.body->end() && kvs->is_array())
      for (const auto& k : *kvs)
        if (auto kv = kv_of(k)) keys.push_back(std::move(*kv));
    if (keys.empty()) return collected;
    std::size_t progress = 0;
    for (const auto& ek : keys) {
      std::string token = ek.key.substr(ek.key.rfind('/') + 1);
      const std::string mp = c.members_prefix(token);
      // The expiry key was written in the token's creating txn, so the token
      // it describes has create_revision == its mod_revision; a token of the
      // same name created later is left alone.
      json txn{{"compare", {equal_cmp("CREATE", c.token_key(token), ek.mod_revision)}},
               {"success",
                {delete_op(c.token_key(token)), delete_op(c.counter_key(token)),
                 delete_op(mp, etcdwire::prefix_end(mp)), delete_op(ek.key)}}};
      auto t = c.post(http, "/v3/kv/txn", txn);
      if (!t.body) return collected;
      if (t.body->value("succeeded", false)) {
        ++collected;
        ++progress;
        continue;
      }
      // A stale expiry key (its token is gone or was re-created): drop it.
      json drop{{"compare", {equal_cmp("MOD", ek.key, ek.mod_revision)}},
                {"success", {delete_op(ek.key)}}};
      auto d = c.post(http, "/v3/kv/txn", drop);
      if (!d.body) return collected;
      if (d.body->value("succeeded", false)) ++progress;
    }
    if (progress == 0) return collected;  // another replica is racing us; it will finish
  }
  return collected;
}

uint64_t EtcdTokenStore::current_index() { return core_->last_revision.load(); }

std::string EtcdTokenStore::health() {
  Core& c = *core_;
  auto entered = Clock::now();
  std::lock_guard lock(c.health_mu);
  // Callers that queued behind a probe which started after they arrived
  // share its answer, so a burst of /health requests costs one probe.
  if (c.health_started >= entered) return c.health_answer;
  c.health_started = Clock::now();
  net::Headers headers;
  headers.set("Content-Type", "application/json");
  std::string body = json{
      {"key", etcdwire::base64_encode(c.options.prefix)},
      {"range_end", etcdwire::base64_encode(c.prefix_end_key)},
      {"count_only",
       true}}.dump();
  std::string why;
  const std::size_t n = c.options.endpoints.size();
  std::size_t start = c.preferred.load();
  for (std::size_t a = 0; a < n; ++a) {
    const std::string& ep = c.options.endpoints[(start + a) % n];
    auto r = c.health_client->request("POST", ep + "/v3/kv/range", body, headers);
    if (r.ok() && r.response->status == 200) {
      json j = json::parse(r.response->body, nullptr, false);
      if (j.is_object()) c.note_revision(header_revision(j));
      why.clear();
      break;
    }
    if (!why.empty()) why += "; ";
    why += r.ok() ? ep + " answered " + std::to_string(r.response->status) : r.error;
  }
  if (!why.empty()) why = "etcd store unreachable: " + why;
  c.health_answer = why;
  return why;
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
