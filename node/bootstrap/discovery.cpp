// etcd's v2 discovery protocol, client side (see discovery.h for the steps
// and where we differ from etcd 3.4).
#include "node/bootstrap/discovery.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "base/log.h"
#include "etcdwire/ids.h"
#include "etcdwire/v2.h"
#include "net/client.h"
#include "net/http.h"
#include "net/url.h"
#include "node/config/urls.h"

namespace muster::bootstrap {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr std::string_view kLog = "discovery";
// An empty long-poll answer faster than this is followed by this pause.
constexpr std::chrono::milliseconds kQuickEmpty{100};

// Go's strconv.ParseUint(s, 10, 64): decimal digits only.
std::optional<uint64_t> parse_uint(std::string_view s) {
  uint64_t v = 0;
  if (s.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string collapse_slashes(std::string_view p) {
  std::string out;
  for (char c : p) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out.push_back(c);
  }
  return out;
}

std::string base_name(const std::string& key) {
  std::string k = key;
  while (k.size() > 1 && k.back() == '/') k.pop_back();
  auto slash = k.rfind('/');
  return slash == std::string::npos ? k : k.substr(slash + 1);
}

// What one HTTP exchange with the keys API came to.
struct Answer {
  enum class Kind { kOk, kTransient, kV2Error, kBadReply, kEmpty } kind = Kind::kBadReply;
  int status = 0;
  json body;           // kOk: the JSON object
  uint64_t index = 0;  // X-Etcd-Index (0 when absent)
  int error_code = 0;  // kV2Error: etcd's errorCode
  std::string detail;  // what happened, for messages
};

Answer classify(const net::ClientResult& r, bool empty_ok) {
  Answer a;
  if (!r.ok()) {
    a.kind = Answer::Kind::kTransient;
    a.detail = r.error;
    return a;
  }
  const net::Response& resp = *r.response;
  a.status = resp.status;
  if (auto idx = resp.headers.get("X-Etcd-Index")) a.index = parse_uint(*idx).value_or(0);
  if (resp.status >= 500) {
    a.kind = Answer::Kind::kTransient;
    a.detail = "HTTP " + std::to_string(resp.status);
    auto j = json::parse(resp.body, nullptr, false);
    if (j.is_object() && j.contains("message"))
      a.detail += ": " + j.value("message", std::string());
    return a;
  }
  bool blank = resp.body.find_first_not_of(" \r\n\t") == std::string::npos;
  if (resp.status == 200 || resp.status == 201) {
    if (blank) {
      a.kind = empty_ok ? Answer::Kind::kEmpty : Answer::Kind::kBadReply;
      a.detail = "HTTP " + std::to_string(resp.status) + " with an empty body";
      return a;
    }
    a.body = json::parse(resp.body, nullptr, false);
    if (!a.body.is_object()) {
      a.kind = Answer::Kind::kBadReply;
      a.detail = "HTTP " + std::to_string(resp.status) + " with a body that is not JSON";
      return a;
    }
    a.kind = Answer::Kind::kOk;
    return a;
  }
  if (auto e = etcdwire::parse_v2_error(resp.body)) {
    a.kind = Answer::Kind::kV2Error;
    a.error_code = e->code;
    a.detail = std::to_string(e->code) + ": " + e->message;
    if (!e->cause.empty()) a.detail += " (" + e->cause + ")";
    return a;
  }
  a.kind = Answer::Kind::kBadReply;
  std::string text = resp.body.substr(0, 200);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  a.detail = "HTTP " + std::to_string(resp.status) + (text.empty() ? "" : ": " + text);
  return a;
}

// node.nodes[] of a directory listing -> registrations, `_config` and
// directories dropped, ascending createdIndex (ties by key, so every member
// sorts alike).
std::vector<Registration> registrations_of(const json& node) {
  std::vector<Registration> out;
  for (const auto& n : etcdwire::parse_v2_node(node).nodes) {
    if (n.dir) continue;
    Registration r;
    r.id = base_name(n.key);
    if (r.id == "_config" || r.id.empty()) continue;
    r.value = n.value.value_or("");
    r.created_index = n.created_index;
    r.modified_index = n.modified_index;
    out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(), [](const Registration& a, const Registration& b) {
    return a.created_index != b.created_index ? a.created_index < b.created_index : a.id < b.id;
  });
  return out;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

}  // namespace

bool parse_registration(const std::string& value,
                        std::vector<std::pair<std::string, std::string>>* pairs) {
  if (value.empty()) return false;
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string::npos) comma = value.size();
    std::string item = value.substr(start, comma - start);
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) return false;
    pairs->emplace_back(item.substr(0, eq), item.substr(eq + 1));
    start = comma + 1;
  }
  return true;
}

bool registration_marker_holds(const std::string& path, const std::string& value) {
  if (path.empty()) return false;
  std::ifstream in(path);
  std::string v;
  return std::getline(in, v) && v == value;
}

void write_registration_marker(const std::string& path, const std::string& value) {
  if (path.empty()) return;
  std::error_code ec;
  const auto dir = std::filesystem::path(path).parent_path();
  std::filesystem::create_directories(dir, ec);
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);
  std::ofstream out(path, std::ios::trunc);
  out << value << "\n";
  if (!out) log::warn(kLog, "cannot write the registration marker", {{"file", path}});
}

std::optional<DiscoveryUrl> parse_discovery_url(const std::string& url, std::string* error) {
  std::string err;
  auto u = net::parse_url(url, &err);
  if (!u) {
    *error = "invalid discovery URL " + url + ": " + err;
    return std::nullopt;
  }
  DiscoveryUrl d;
  // scheme://host[:port], the port only when the URL gave one (as etcd's
  // endpoint keeps the URL's own text).
  std::string authority = u->authority();
  if (!u->explicit_port) authority.resize(authority.rfind(':'));
  d.endpoint = u->scheme + "://" + authority;
  d.tls = u->tls();
  d.directory = collapse_slashes(u->path);
  while (d.directory.size() > 1 && d.directory.back() == '/') d.directory.pop_back();
  if (d.directory.empty() || d.directory == "/") {
    *error = "invalid discovery URL " + url + ": it has no token path";
    return std::nullopt;
  }
  return d;
}

class DiscoveryClient::Impl {
 public:
  explicit Impl(const DiscoveryOptions& o) : options_(o) {
    std::string err;
    auto parsed = parse_discovery_url(o.url, &err);
    if (!parsed) std::abort();  // REQUIRES of the constructor
    url_ = *parsed;
    net::ClientOptions co;
    co.timeout = o.request_timeout;
    co.connect_timeout = o.request_timeout;
    if (!o.proxy.empty()) {
      std::string p = o.proxy;
      if (p.rfind("http", 0) != 0) p = "http://" + p;  // as etcd does
      co.proxy = net::parse_url(p, &err);
    }
    client_ = net::HttpClient(co);
    co.timeout = o.watch_timeout;
    watch_client_ = net::HttpClient(co);
    rng_.seed(std::random_device{}());
  }

  std::string key_url(const std::string& key_path, const std::string& query) const {
    std::string p = url_.directory;
    if (!key_path.empty()) p += "/" + key_path;
    return url_.endpoint + p + (query.empty() ? "" : "?" + query);
  }

  Answer get(const std::string& key_path, const std::string& query) {
    return classify(client_.request("GET", key_url(key_path, query)), false);
  }

  // Sleeps after the n-th consecutive transient failure; false when the
  // retry budget is spent.
  bool back_off(int& failures, const std::string& what, const std::string& detail) {
    ++failures;
    if (failures > options_.max_retries) return false;
    auto d = options_.backoff_initial;
    for (int i = 1; i < failures && d < options_.backoff_max; ++i) d *= 2;
    d = std::min(d, options_.backoff_max);
    std::uniform_int_distribution<int64_t> dist(d.count() / 2, d.count());
    std::chrono::milliseconds wait(dist(rng_));
    log::warn(kLog, "discovery request failed; retrying",
              {{"request", what},
               {"error", detail},
               {"attempt", failures},
               {"max-attempts", options_.max_retries},
               {"retry-in", std::to_string(wait.count()) + "ms"}});
    if (options_.sleep)
      options_.sleep(wait);
    else
      std::this_thread::sleep_for(wait);
    return true;
  }

  DiscoveryClient::Failure too_many(const std::string& what, const std::string& detail) const {
    return {DiscoveryError::kTooManyRetries,
            "discovery: too many retries: " + what + " on " + options_.url + " failed " +
                std::to_string(options_.max_retries + 1) + " times, last: " + detail};
  }

  // A GET retried on transient failures.
  std::optional<DiscoveryClient::Failure> get_retried(const std::string& key_path,
                                                      const std::string& query,
                                                      const std::string& what, Answer* out) {
    int failures = 0;
    for (;;) {
      *out = get(key_path, query);
      if (out->kind != Answer::Kind::kTransient) return std::nullopt;
      if (!back_off(failures, what, out->detail)) return too_many(what, out->detail);
    }
  }

  std::optional<DiscoveryClient::Failure> state(TokenState* st) {
    Answer a;
    if (auto f = get_retried("_config/size", "quorum=false&recursive=false&sorted=false",
                             "GET size", &a))
      return f;
    if (a.kind == Answer::Kind::kV2Error && a.error_code == etcdwire::kV2KeyNotFound) {
      return DiscoveryClient::Failure{
          DiscoveryError::kSizeNotFound,
          "discovery: size key not found: " + options_.url +
              " has no _config/size (the token is unknown, expired, or was never set up; "
              "create one with `musterctl discovery new --size N`, or PUT "
              "<url>/_config/size with value=N on an etcd v2 keys API) [" +
              a.detail + "]"};
    }
    if (a.kind != Answer::Kind::kOk) {
      return DiscoveryClient::Failure{DiscoveryError::kBadEndpoint,
                                      "discovery: bad discovery endpoint: GET " + options_.url +
                                          "/_config/size answered " + a.detail};
    }
    const std::string value =
        etcdwire::parse_v2_node(a.body.value("node", json::object())).value.value_or("");
    auto size = parse_uint(value);
    if (!size || *size == 0) {
      return DiscoveryClient::Failure{DiscoveryError::kBadSize,
                                      "discovery: size key is bad: " + options_.url +
                                          "/_config/size is \"" + value +
                                          "\", want a positive integer"};
    }
    st->size = *size;
    if (auto f = get_retried("", "quorum=false&recursive=false&sorted=false", "GET token", &a))
      return f;
    if (a.kind == Answer::Kind::kV2Error && a.error_code == etcdwire::kV2KeyNotFound) {
      st->members.clear();  // no registrations yet on a server that drops empty dirs
      st->index = a.index;
      return std::nullopt;
    }
    if (a.kind != Answer::Kind::kOk)
      return DiscoveryClient::Failure{
          DiscoveryError::kBadEndpoint,
          "discovery: bad discovery endpoint: GET " + options_.url + " answered " + a.detail};
    st->members = registrations_of(a.body.value("node", json::object()));
    st->index = a.index;
    return std::nullopt;
  }

  DiscoveryOptions options_;
  DiscoveryUrl url_;
  net::HttpClient client_;
  net::HttpClient watch_client_;
  std::mt19937_64 rng_;
};

DiscoveryClient::DiscoveryClient(const DiscoveryOptions& options)
    : impl_(std::make_unique<Impl>(options)) {}
DiscoveryClient::~DiscoveryClient() = default;

std::optional<DiscoveryClient::Failure> DiscoveryClient::state(TokenState* out) {
  return impl_->state(out);
}

std::optional<DiscoveryClient::Failure> DiscoveryClient::remove(const std::string& id) {
  int failures = 0;
  for (;;) {
    Answer a = classify(impl_->client_.request("DELETE", impl_->key_url(id, "")), false);
    if (a.kind == Answer::Kind::kTransient) {
      if (!impl_->back_off(failures, "DELETE " + id, a.detail))
        return impl_->too_many("DELETE " + id, a.detail);
      continue;
    }
    if (a.kind == Answer::Kind::kOk) return std::nullopt;
    return Failure{
        a.kind == Answer::Kind::kV2Error ? DiscoveryError::kProtocol : DiscoveryError::kBadEndpoint,
        "DELETE " + impl_->key_url(id, "") + " answered " + a.detail};
  }
}

std::optional<DiscoveryClient::Failure> DiscoveryClient::put(const std::string& id,
                                                             const std::string& value) {
  const std::string body = "value=" + net::percent_encode(value);
  net::Headers h;
  h.set("Content-Type", "application/x-www-form-urlencoded");
  int failures = 0;
  for (;;) {
    Answer a = classify(impl_->client_.request("PUT", impl_->key_url(id, ""), body, h), false);
    if (a.kind == Answer::Kind::kTransient) {
      if (!impl_->back_off(failures, "PUT " + id, a.detail))
        return impl_->too_many("PUT " + id, a.detail);
      continue;
    }
    if (a.kind == Answer::Kind::kOk) return std::nullopt;
    return Failure{
        a.kind == Answer::Kind::kV2Error ? DiscoveryError::kProtocol : DiscoveryError::kBadEndpoint,
        "PUT " + impl_->key_url(id, "") + " answered " + a.detail};
  }
}

namespace {

// The join, step by step, with its state in one place.
class Joiner {
 public:
  Joiner(const DiscoveryOptions& o, DiscoveryClient::Impl& impl) : options_(o), impl_(&impl) {}

  DiscoveryResult run() {
    DiscoveryClient::Impl& impl = *impl_;
    std::vector<std::string> urls = options_.peer_urls;
    std::sort(urls.begin(), urls.end());
    self_id_ = etcdwire::id_to_hex(etcdwire::member_id(urls, options_.url));
    std::vector<std::string> pairs;
    for (const auto& u : urls) pairs.push_back(options_.name + "=" + u);
    self_value_ = join(pairs, ",");
    log::info(kLog, "joining discovery cluster",
              {{"discovery-url", options_.url}, {"member-id", self_id_}, {"value", self_value_}});

    // 1. Already full?  Then write nothing.
    TokenState st;
    if (auto f = impl.state(&st)) return error(*f);
    result_.size = st.size;
    if (auto full = full_check(st)) return *full;

    // 2. Register and wait until our key is visible.
    if (auto r = register_self()) return *r;

    // 3. Re-check: someone may have filled the cluster while we registered.
    if (auto f = impl.state(&st)) return error(*f);
    if (auto full = full_check(st)) return *full;

    // 4. Wait for the rest.
    if (auto r = wait_for_members(st)) return *r;

    // 5. The first `size` registrations form the cluster.
    return build(st);
  }

 private:
  DiscoveryResult error(const DiscoveryClient::Failure& f) {
    result_.kind = DiscoveryResult::Kind::kError;
    result_.error = f.error;
    result_.message = f.message;
    return result_;
  }
  DiscoveryResult error(DiscoveryError e, std::string msg) { return error({e, std::move(msg)}); }

  // etcd's rule (research 1.7): full iff `size` members are registered and
  // we are not among the first `size` by createdIndex.
  std::optional<DiscoveryResult> full_check(const TokenState& st) {
    return full_cluster_answer(st, self_id_, options_.name, options_.url, result_);
  }

  std::optional<DiscoveryResult> register_self() {
    const std::string body = "value=" + net::percent_encode(self_value_);
    net::Headers h;
    h.set("Content-Type", "application/x-www-form-urlencoded");
    int failures = 0;
    uint64_t created = 0;
    for (;;) {
      Answer a = classify(
          impl_->client_.request("PUT", impl_->key_url(self_id_, "prevExist=false"), body, h),
          false);
      if (a.kind == Answer::Kind::kTransient) {
        if (!impl_->back_off(failures, "PUT " + self_id_, a.detail))
          return error(impl_->too_many("PUT " + self_id_, a.detail));
        continue;
      }
      if (a.kind == Answer::Kind::kV2Error && a.error_code == etcdwire::kV2NodeExist) {
        // The key exists.  Ours from an earlier attempt (a retried PUT whose
        // first try got through, or this member killed while waiting and
        // started again) if it holds exactly our value and the cluster has
        // not formed yet: nobody can have started Raft with us then.
        Answer mine = get(self_id_, "");
        etcdwire::V2Node node;
        if (mine.kind == Answer::Kind::kOk)
          node = etcdwire::parse_v2_node(mine.body.value("node", json::object()));
        const std::string value = node.value.value_or("");
        TokenState now;
        if (auto f = impl_->state(&now)) return error(*f);
        bool among_first = false;
        for (size_t i = 0; i < now.members.size() && i < now.size; ++i)
          if (now.members[i].id == self_id_) among_first = true;
        if (value == self_value_ &&
            (now.members.size() < now.size || (among_first && has_registration_marker()))) {
          log::info(kLog, "found this member's own earlier registration; resuming",
                    {{"member-id", self_id_}});
          created = node.created_index;
          break;
        }
        return error(DiscoveryError::kDuplicateId,
                     "discovery: found duplicate id: member ID " + self_id_ + " is already " +
                         "registered with " + options_.url +
                         (value.empty() ? std::string() : " as \"" + value + "\"") +
                         (value == self_value_
                              ? " and that cluster has already formed: this member bootstrapped "
                                "before; start it with its data dir, or remove it from the "
                                "cluster and add it back with `member add`"
                              : "; if that is a stale registration from a bootstrap that failed "
                                "halfway, remove it with `musterctl discovery rm " +
                                    options_.url + " " + self_id_ +
                                    "` (or use a new token) and start again"));
      }
      if (a.kind != Answer::Kind::kOk)
        return error(DiscoveryError::kBadEndpoint, "discovery: registering " + self_id_ + " at " +
                                                       options_.url + " failed: " + a.detail);
      created = etcdwire::parse_v2_node(a.body.value("node", json::object())).created_index;
      break;
    }
    log::info(kLog, "registered with the discovery service",
              {{"member-id", self_id_}, {"created-index", created}});
    write_registration_marker();
    // Wait until our key is visible on the server we will read from (the
    // event is normally there already, so this returns at once).  A timeout
    // is not fatal: the re-check below reads the listing anyway.
    std::string q =
        "recursive=false&wait=true&waitIndex=" + std::to_string(created > 0 ? created : 0);
    Answer w = watch(self_id_, q, options_.request_timeout);
    if (w.kind == Answer::Kind::kTransient)
      log::warn(kLog, "could not confirm this member's registration; re-checking",
                {{"error", w.detail}});
    return std::nullopt;
  }

  Answer get(const std::string& key, const std::string& query) { return impl_->get(key, query); }

  void pause(std::chrono::milliseconds d) {
    if (options_.sleep)
      options_.sleep(d);
    else
      std::this_thread::sleep_for(d);
  }

  Answer watch(const std::string& key, const std::string& query,
               std::chrono::milliseconds timeout) {
    std::string body;
    auto r = impl_->watch_client_.stream(
        "GET", impl_->key_url(key, query), "", {}, [](const net::Response&) { return true; },
        [&body](std::string_view d) {
          body.append(d);
          return body.size() < (1u << 20);
        },
        timeout);
    if (r.ok()) r.response->body = body;
    return classify(r, true);
  }

  // Waits until `size` distinct members are registered.  `st` is the
  // listing of the re-check; on return it holds the members known.
  std::optional<DiscoveryResult> wait_for_members(TokenState& st) {
    // Known registrations by key; only a new key is a new member.
    std::map<std::string, Registration> known;
    for (const auto& m : st.members) known[m.id] = m;
    uint64_t next = st.index + 1;
    int failures = 0;
    while (known.size() < st.size) {
      log::info(kLog, "waiting for other members to register",
                {{"registered", known.size()}, {"size", st.size}});
      const auto asked = Clock::now();
      Answer a = watch("", "recursive=true&wait=true&waitIndex=" + std::to_string(next),
                       options_.watch_timeout);
      if (a.kind == Answer::Kind::kEmpty ||
          (a.kind == Answer::Kind::kTransient && a.detail.rfind("timed out", 0) == 0)) {
        // The long-poll ended without an event: ask again from the same
        // index.  A server that answers "nothing" at once must not make
        // us poll it in a tight loop.
        if (a.kind == Answer::Kind::kEmpty && Clock::now() - asked < kQuickEmpty)
          pause(kQuickEmpty);
        continue;
      }
      if (a.kind == Answer::Kind::kOk) {
        failures = 0;
        const etcdwire::V2Node node = etcdwire::parse_v2_node(a.body.value("node", json::object()));
        const std::string action = a.body.value("action", std::string());
        const std::string id = base_name(node.key);
        next = std::max(next, node.modified_index + 1);
        if (id.empty() || id == "_config" || node.dir) continue;
        if (action == "delete" || action == "expire" || action == "compareAndDelete") {
          if (known.erase(id)) log::warn(kLog, "a registration was removed", {{"member-id", id}});
          continue;
        }
        if (known.count(id)) continue;  // an overwrite is not a new member
        Registration r;
        r.id = id;
        r.value = node.value.value_or("");
        r.created_index = node.created_index;
        r.modified_index = node.modified_index;
        log::info(kLog, "member registered", {{"member-id", id}, {"value", r.value}});
        known[id] = std::move(r);
        continue;
      }
      // A transient failure, or the event history moved past our index
      // (etcd keeps 1000 events: error 401): back off, read the whole
      // listing again and watch on from its index.
      if (a.kind == Answer::Kind::kV2Error && a.error_code != etcdwire::kV2EventIndexCleared) {
        return error(DiscoveryError::kProtocol,
                     "discovery: watching " + options_.url + " failed: " + a.detail);
      }
      if (a.kind == Answer::Kind::kBadReply)
        return error(DiscoveryError::kBadEndpoint, "discovery: bad discovery endpoint: watching " +
                                                       options_.url + " answered " + a.detail);
      if (a.kind == Answer::Kind::kTransient && !impl_->back_off(failures, "watch token", a.detail))
        return error(impl_->too_many("watch token", a.detail));
      TokenState fresh;
      if (auto f = impl_->state(&fresh)) return error(*f);
      if (auto full = full_check(fresh)) return *full;
      known.clear();
      for (const auto& m : fresh.members) known[m.id] = m;
      next = fresh.index + 1;
    }
    st.members.clear();
    for (auto& [id, r] : known) st.members.push_back(r);
    std::sort(st.members.begin(), st.members.end(), [](const auto& a, const auto& b) {
      return a.created_index != b.created_index ? a.created_index < b.created_index : a.id < b.id;
    });
    return std::nullopt;
  }

  DiscoveryResult build(const TokenState& st) {
    std::vector<std::string> values;
    std::set<std::string> names;
    std::vector<std::pair<std::string, std::string>> pairs;
    for (size_t i = 0; i < st.size && i < st.members.size(); ++i) {
      size_t before = pairs.size();
      if (!parse_registration(st.members[i].value, &pairs))
        return error(DiscoveryError::kInvalidUrl,
                     "discovery: invalid URL: registration " + st.members[i].id + " is \"" +
                         st.members[i].value + "\", want name=peerURL[,name=peerURL]");
      for (size_t k = before; k < pairs.size(); ++k) names.insert(pairs[k].first);
      values.push_back(st.members[i].value);
    }
    std::string cluster = join(values, ",");
    auto parsed = config::parse_initial_cluster(cluster);
    if (!parsed.ok())
      return error(DiscoveryError::kInvalidUrl,
                   "discovery: invalid URL in " + cluster + ": " + parsed.error());
    if (names.size() != st.size)
      return error(DiscoveryError::kDuplicateName,
                   "discovery: found duplicate name: the first " + std::to_string(st.size) +
                       " registrations at " + options_.url + " are " + cluster +
                       ", which name only " + std::to_string(names.size()) +
                       " distinct members; every member needs its own --name (do not reuse "
                       "this token: create a new one)");
    result_.kind = DiscoveryResult::Kind::kCluster;
    result_.initial_cluster = cluster;
    for (auto& [n, u] : pairs) result_.peer_urls.push_back(u);
    log::info(kLog, "discovery complete", {{"initial-cluster", cluster}});
    return result_;
  }

  // The marker holds our registration's value (options_.registration_marker).
  bool has_registration_marker() const {
    return registration_marker_holds(options_.registration_marker, self_value_);
  }
  void write_registration_marker() const {
    bootstrap::write_registration_marker(options_.registration_marker, self_value_);
  }

  DiscoveryOptions options_;
  DiscoveryClient::Impl* impl_;  // the HTTP clients and the retry policy
  std::string self_id_;
  std::string self_value_;
  DiscoveryResult result_;
};

}  // namespace

std::optional<DiscoveryResult> full_cluster_answer(const TokenState& st, const std::string& self_id,
                                                   const std::string& self_name,
                                                   const std::string& where, DiscoveryResult base) {
  for (size_t i = 0; i < st.members.size(); ++i) {
    if (st.members[i].id == self_id) return std::nullopt;
    if (i + 1 < st.size) continue;
    base.kind = DiscoveryResult::Kind::kFull;
    std::vector<std::string> names;
    for (size_t k = 0; k < st.size; ++k) {
      std::vector<std::pair<std::string, std::string>> pairs;
      parse_registration(st.members[k].value, &pairs);
      for (auto& [name, url] : pairs) {
        base.peer_urls.push_back(url);
        names.push_back(name);
      }
    }
    names.erase(std::unique(names.begin(), names.end()), names.end());  // one per member
    base.message = "discovery: cluster is full: " + where + " already has its " +
                   std::to_string(st.size) + " members (" + join(names, ", ") +
                   "); this member (" + self_name + ", ID " + self_id + ") is not one of them";
    return base;
  }
  return std::nullopt;
}

DiscoveryResult join_cluster(const DiscoveryOptions& options) {
  DiscoveryResult bad;
  std::string err;
  if (!parse_discovery_url(options.url, &err)) {
    bad.error = DiscoveryError::kBadUrl;
    bad.message = "discovery: " + err;
    return bad;
  }
  if (!options.proxy.empty()) {
    std::string p = options.proxy;
    if (p.rfind("http", 0) != 0) p = "http://" + p;
    auto u = net::parse_url(p, &err);
    if (!u || u->tls()) {
      bad.error = DiscoveryError::kBadUrl;
      bad.message = "discovery: invalid --discovery-proxy " + options.proxy +
                    (u ? ": only http proxies are supported" : ": " + err);
      return bad;
    }
    if (options.url.rfind("https:", 0) == 0) {
      bad.error = DiscoveryError::kBadUrl;
      bad.message =
          "discovery: --discovery-proxy works with http discovery URLs only (no CONNECT "
          "tunnelling for https yet)";
      return bad;
    }
  }
  DiscoveryClient::Impl impl(options);
  return Joiner(options, impl).run();
}

}  // namespace muster::bootstrap
