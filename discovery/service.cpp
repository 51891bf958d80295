// discovery/service.cpp: muster-discovery's HTTP API (contract in service.h).
//
// Why one file of this size: the routes (new token, the token's keys in
// both URL forms, the status page) share the token path parsing, the v2
// node shapes and the rate limits; the token page's HTML is the rest.
#include "discovery/service.h"

#include <openssl/rand.h>

#include <boost/asio.hpp>
#include <cctype>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "discovery/rules.h"
#include "etcdwire/v2.h"

namespace muster::discovery {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

using enum etcdwire::V2ErrorCode;

// Muster's own error code: a token's registration quota is used up.  etcd
// has no such code; its status, 403, keeps etcd's client from retrying.
constexpr int kV2Quota = 403;

// A v2 error answer with etcd's message and status for `code`
// (etcdwire/v2.h), or `message` instead of etcd's.  The size key answers
// 403 to a write (etcd's root-read-only code carries 400).
net::Response v2_error(int code, const std::string& cause, uint64_t index,
                       const std::string& message = "") {
  const int status =
      code == kV2Quota || code == kV2RootReadOnly ? 403 : etcdwire::v2_error_status(code);
  std::string text = message;
  if (text.empty())
    text = code == kV2Quota ? "Registration quota exceeded" : etcdwire::v2_error_message(code);
  auto r = net::Response::json(status, etcdwire::v2_error_body({code, text, cause, index}));
  r.headers.set("X-Etcd-Index", std::to_string(index));
  return r;
}

net::Response v2_ok(int status, const json& body, uint64_t index) {
  auto r = net::Response::json(
      status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  r.headers.set("X-Etcd-Index", std::to_string(index));
  return r;
}

etcdwire::V2Node member_v2_node(const TokenPath& tp, const Member& m) {
  etcdwire::V2Node n;
  n.key = tp.directory_key() + "/" + m.id;
  n.value = m.value;
  n.modified_index = m.modified_index;
  n.created_index = m.created_index;
  return n;
}

json member_node(const TokenPath& tp, const Member& m) {
  return etcdwire::v2_node_json(member_v2_node(tp, m));
}

// The token's directory: its registrations.  `_config` is not listed, as
// etcd's v2 API hides keys that start with '_' (discovery.etcd.io likewise).
json directory_node(const TokenPath& tp, const Token& t) {
  etcdwire::V2Node dir;
  dir.key = tp.directory_key();
  dir.dir = true;
  for (const auto& m : t.members) dir.nodes.push_back(member_v2_node(tp, m));
  dir.modified_index = dir.created_index = t.created_index;
  return etcdwire::v2_node_json(dir);
}

json size_node(const TokenPath& tp, const Token& t) {
  etcdwire::V2Node n;
  n.key = tp.directory_key() + "/_config/size";
  n.value = std::to_string(t.size);
  n.modified_index = n.created_index = t.created_index;
  return etcdwire::v2_node_json(n);
}

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '&':
        o += "&amp;";
        break;
      case '"':
        o += "&quot;";
        break;
      default:
        o.push_back(c);
    }
  }
  return o;
}

std::string utc_text(int64_t ms) {
  std::time_t t = ms / 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// "45 seconds", "3 minutes", "2 hours", "6 days 23 hours": how long, for a person.
std::string human_span(int64_t ms) {
  if (ms < 0) ms = 0;
  const int64_t s = ms / 1000;
  auto unit = [](int64_t n, const char* one) {
    return std::to_string(n) + " " + one + (n == 1 ? "" : "s");
  };
  if (s < 60) return unit(s, "second");
  if (s < 3600) return unit(s / 60, "minute");
  if (s < 48 * 3600) return unit(s / 3600, "hour");
  return unit(s / 86400, "day") + " " + unit(s % 86400 / 3600, "hour");
}

// The token's status page for a browser (GET /<token> with Accept:
// text/html): size, registrations, whether the cluster is complete, age and
// expiry, and each registration in createdIndex order with the role etcd's
// rule gives it.  etcd's discovery client sends no Accept header and gets
// the v2 JSON.
std::string token_page(const Token& t, int64_t now) {
  auto formed = cluster_members(t);
  const bool complete = is_complete(t);
  std::string status = complete ? "complete"
                                : "waiting for " + std::to_string(t.size - t.members.size()) +
                                      " more member" + (t.size - t.members.size() == 1 ? "" : "s");
  std::string h =
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width\">"
      "<title>Token " +
      html_escape(t.name) +
      " &middot; muster-discovery</title><style>"
      "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222;"
      "padding:0 1em}h1{font-size:1.4em;word-break:break-all}"
      ".facts{display:flex;gap:1em;flex-wrap:wrap;margin:1em 0}"
      ".fact{border:1px solid #ccd;border-radius:6px;padding:.6em 1em;min-width:8em}"
      ".fact b{display:block;font-size:1.3em}.fact span{color:#667;font-size:.85em}"
      ".complete{background:#e7f6e7}.waiting{background:#fff6db}"
      "table{border-collapse:collapse;width:100%}td,th{padding:6px 10px;text-align:left;"
      "border-bottom:1px solid #dde}th{background:#f3f4f8}.late{color:#a33}"
      "footer{margin-top:2em;color:#667;font-size:.85em}</style></head><body>";
  h += "<h1>Discovery token <code>" + html_escape(t.name) + "</code></h1>";
  h += "<div class=\"facts\">";
  h += "<div class=\"fact\" id=\"size\"><span>cluster size</span><b>" + std::to_string(t.size) +
       "</b></div>";
  h += "<div class=\"fact\" id=\"registered\"><span>registered</span><b>" +
       std::to_string(t.members.size()) + "</b></div>";
  h += std::string("<div class=\"fact ") + (complete ? "complete" : "waiting") +
       "\" id=\"status\"><span>status</span><b>" + status + "</b></div>";
  h += "<div class=\"fact\" id=\"age\"><span>age</span><b>" + human_span(now - t.created_unix_ms) +
       "</b><span>created " + utc_text(t.created_unix_ms) + "</span></div>";
  h += "<div class=\"fact\" id=\"expiry\"><span>expires in</span><b>" +
       human_span(t.expires_unix_ms - now) + "</b><span>at " + utc_text(t.expires_unix_ms) +
       "</span></div>";
  h += "</div>";
  if (t.members.empty()) {
    h += "<p id=\"members\">No member has registered yet.</p>";
  } else {
    h += "<table id=\"members\"><tr><th>#</th><th>Member ID</th><th>Name</th><th>Peer URLs</th>"
         "<th>Registered</th><th>Role</th></tr>";
    std::size_t i = 0;
    for (const auto& m : t.members) {
      std::string names, urls;
      std::size_t start = 0;
      while (start <= m.value.size()) {
        auto comma = m.value.find(',', start);
        if (comma == std::string::npos) comma = m.value.size();
        std::string pair = m.value.substr(start, comma - start);
        auto eq = pair.find('=');
        if (eq != std::string::npos) {
          if (names.find(pair.substr(0, eq)) == std::string::npos)
            names += (names.empty() ? "" : ", ") + pair.substr(0, eq);
          urls += (urls.empty() ? "" : ", ") + pair.substr(eq + 1);
        }
        start = comma + 1;
      }
      const bool member = i < formed.size();
      h += std::string("<tr") + (member ? "" : " class=\"late\"") + "><td>" + std::to_string(++i) +
           "</td><td><code>" + html_escape(m.id) + "</code></td><td>" + html_escape(names) +
           "</td><td>" + html_escape(urls) + "</td><td>" + human_span(now - m.registered_unix_ms) +
           " ago</td><td>" + (member ? "member" : "late joiner (cluster full: proxy)") +
           "</td></tr>";
    }
    h += "</table>";
  }
  h += "<footer>muster-discovery &middot; etcd clients read this URL as JSON (etcd v2 keys "
       "API)</footer></body></html>\n";
  return h;
}

std::string route_label(const std::string& path) {
  if (path == "/new") return "new";
  if (path == "/health" || path == "/version" || path == "/metrics") return path.substr(1);
  return "token";
}

// Observes the time from arrival to answer of one request.
class TimedExchange final : public net::Exchange {
 public:
  TimedExchange(std::shared_ptr<net::Exchange> inner, metrics::Histogram& h)
      : inner_(std::move(inner)), hist_(h), start_(Clock::now()) {}
  const net::Request& request() const override { return inner_->request(); }
  const std::string& remote_address() const override { return inner_->remote_address(); }
  const std::string& peer_common_name() const override { return inner_->peer_common_name(); }
  void respond(net::Response r) override {
    hist_.observe(std::chrono::duration<double>(Clock::now() - start_).count());
    inner_->respond(std::move(r));
  }
  void begin_stream(net::Response head) override { inner_->begin_stream(std::move(head)); }
  void write(std::string chunk) override { inner_->write(std::move(chunk)); }
  void end_stream() override { inner_->end_stream(); }
  void on_cancel(std::function<void()> f) override { inner_->on_cancel(std::move(f)); }
  bool finished() const override { return inner_->finished(); }

 private:
  std::shared_ptr<net::Exchange> inner_;
  metrics::Histogram& hist_;
  Clock::time_point start_;
};

}  // namespace

std::string generate_token() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1)
    std::abort();  // a CSPRNG that fails must not be papered over
  static const char* kHex = "0123456789abcdef";
  std::string t;
  for (unsigned char b : bytes) {
    t.push_back(kHex[b >> 4]);
    t.push_back(kHex[b & 15]);
  }
  return t;
}

// One open long-poll.  Finished exactly once, by whichever comes first: the
// store's event, the timeout, the client leaving, or the server stopping.
struct Service::Poll {
  std::mutex mu;
  bool done = false;
  std::shared_ptr<net::Exchange> ex;
  std::unique_ptr<Watch> watch;
  std::unique_ptr<boost::asio::steady_timer> timer;

  // Returns true for the caller that wins.
  bool claim() {
    std::lock_guard lock(mu);
    if (done) return false;
    done = true;
    return true;
  }
  void release() {
    std::unique_ptr<Watch> w;
    {
      std::lock_guard lock(mu);
      w = std::move(watch);
    }
    if (w) w->cancel();
    if (timer)
      boost::asio::post(timer->get_executor(), [t = timer.get(), keep = ex] {
        (void)keep;
        t->cancel();
      });
  }
};

Service::Service(boost::asio::io_context& io, ServiceOptions options,
                 std::shared_ptr<TokenStore> store)
    : io_(io),
      options_(std::move(options)),
      store_(std::move(store)),
      store_write_(make_store_write_histogram()) {
  while (!options_.public_url.empty() && options_.public_url.back() == '/')
    options_.public_url.pop_back();
  // Families appear in /metrics from the start.
  metrics_.counter("muster_discovery_tokens_created_total", "Tokens created.");
  metrics_.counter("muster_discovery_registrations_total", "Member registrations accepted.");
  metrics_.counter("muster_discovery_registrations_rejected_total",
                   "Member registrations refused (duplicate ID, quota, unknown token).");
  metrics_.counter("muster_discovery_full_cluster_answers_total",
                   "Member listings answered for a token whose cluster is complete (late "
                   "joiners learn the cluster is full from these).");
  metrics_.gauge("muster_discovery_open_long_polls", "Long-poll watches currently open.");
}

metrics::Histogram& Service::make_store_write_histogram() {
  return metrics_.histogram("muster_discovery_store_write_duration_seconds",
                            "Time from a store write's submission to its durable "
                            "acknowledgement (group commit included).",
                            metrics::exponential_buckets(0.0001, 2, 16));
}

Service::~Service() = default;

void Service::observe_store_write(std::chrono::steady_clock::time_point submitted) {
  store_write_.observe(std::chrono::duration<double>(Clock::now() - submitted).count());
}

uint32_t Service::max_registrations_for(uint32_t size) const {
  uint32_t cap = options_.max_registrations ? options_.max_registrations : 4 * size + 16;
  return std::max(cap, size);
}

bool Service::allow_new(const std::string& remote) {
  if (options_.new_rate_per_minute == 0) return true;
  int64_t minute = now_ms() / 60'000;
  std::lock_guard lock(rate_mu_);
  if (rate_.size() > 100'000) {  // bound memory: forget old windows
    std::erase_if(rate_, [&](const auto& kv) { return kv.second.first != minute; });
  }
  auto& [window, count] = rate_[remote];
  if (window != minute) {
    window = minute;
    count = 0;
  }
  if (count >= options_.new_rate_per_minute) return false;
  ++count;
  return true;
}

void Service::handle(const std::shared_ptr<net::Exchange>& raw) {
  std::string path = raw->request().path();
  std::shared_ptr<net::Exchange> ex = raw;
  if (raw->request().raw_query().find("wait=true") == std::string::npos) {
    auto& hist = metrics_.histogram("muster_discovery_request_duration_seconds",
                                    "Time from a request's arrival to its answer (long-polls "
                                    "excluded).",
                                    metrics::exponential_buckets(0.0001, 2, 16),
                                    "route=\"" + route_label(path) + "\"");
    ex = std::make_shared<TimedExchange>(raw, hist);
  }
  if (path == "/new") return handle_new(ex);
  if (path == "/health") {
    auto why = store_->health();
    if (why.empty()) return ex->respond(net::Response::json(200, "{\"health\":\"true\"}\n"));
    return ex->respond(
        net::Response::json(503, json{{"health", "false"}, {"reason", why}}.dump(
                                     -1, ' ', false, nlohmann::json::error_handler_t::replace) +
                                     "\n"));
  }
  if (path == "/version")
    return ex->respond(net::Response::json(200, "{\"muster-discovery\":\"0.1.0\"}\n"));
  if (path == "/metrics") {
    auto r = net::Response::text(200, metrics_.render());
    r.headers.set("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    return ex->respond(std::move(r));
  }
  if (path == "/robots.txt")
    return ex->respond(net::Response::text(200, "User-agent: *\nDisallow: /\n"));
  if (path == "/" || path.empty())
    return ex->respond(
        net::Response::text(200,
                            "muster-discovery: an etcd discovery service.\n"
                            "Create a token with: curl -X PUT '" +
                                options_.public_url +
                                "/new?size=3'\n"
                                "then start each member with --discovery <the URL it prints>.\n"));
  handle_token(ex);
}

void Service::handle_new(const std::shared_ptr<net::Exchange>& ex) {
  const auto& req = ex->request();
  auto query = net::parse_form(req.raw_query());
  if (!query) return ex->respond(net::Response::text(400, "malformed query string\n"));
  auto size_text = net::form_get(*query, "size");
  if (!size_text && (req.method == "POST" || req.method == "PUT")) {
    auto body = net::parse_form(req.body);
    if (body) size_text = net::form_get(*body, "size");
  }
  uint32_t size = 3;
  if (size_text && !size_text->empty()) {
    auto parsed = parse_size(*size_text, options_.max_size);
    if (auto* err = std::get_if<std::string>(&parsed))
      return ex->respond(net::Response::text(400, *err + "\n"));
    size = std::get<uint32_t>(parsed);
  } else if (size_text) {
    return ex->respond(
        net::Response::text(400, "size is empty; it must be an integer between 1 and " +
                                     std::to_string(options_.max_size) + "\n"));
  }
  if (!allow_new(ex->remote_address())) {
    auto r = net::Response::text(
        429, "too many new tokens from " + ex->remote_address() + ": at most " +
                 std::to_string(options_.new_rate_per_minute) + " per minute\n");
    r.headers.set("Retry-After", "60");
    return ex->respond(std::move(r));
  }
  create_named(ex, generate_token(), size, 0, true);
}

void Service::create_named(const std::shared_ptr<net::Exchange>& ex, std::string token,
                           uint32_t size, int attempts, bool generated) {
  int64_t now = now_ms();
  auto submitted = Clock::now();
  store_->create_token(
      token, size, now, now + options_.token_ttl_ms,
      [this, ex, token, size, attempts, generated, submitted](StoreResult r) {
        observe_store_write(submitted);
        if (r.status == StoreStatus::kExists && generated && attempts < 3)
          return create_named(ex, generate_token(), size, attempts + 1, true);
        if (r.status == StoreStatus::kUnavailable) {
          log::error("discovery", "cannot create token", {{"error", r.message}});
          if (generated)
            return ex->respond(
                net::Response::text(503, "unable to create token: " + r.message + "\n"));
          return ex->respond(v2_error(kV2RaftInternal, "", r.index, r.message));
        }
        if (generated) {
          if (r.status != StoreStatus::kOk)
            return ex->respond(net::Response::text(503, "unable to create token\n"));
          metrics_.counter("muster_discovery_tokens_created_total", "").inc();
          log::info("discovery", "token created", {{"token", token}, {"size", size}});
          return ex->respond(net::Response::text(201, options_.public_url + "/" + token + "\n"));
        }
        // A named token created with PUT .../<token>/_config/size.
        auto split = split_token_path(ex->request().path());
        TokenPath tp = std::get<TokenPath>(split);
        if (r.status == StoreStatus::kExists)
          return ex->respond(v2_error(kV2NodeExist, tp.key(), r.index,
                                      "Key already exists: the size of a token cannot be "
                                      "changed"));
        metrics_.counter("muster_discovery_tokens_created_total", "").inc();
        log::info("discovery", "token created", {{"token", token}, {"size", size}});
        // A PUT without prevExist is etcd's "set" (201 when the key is new).
        ex->respond(v2_ok(201, json{{"action", "set"}, {"node", size_node(tp, r.token)}}, r.index));
      });
}

void Service::handle_token(const std::shared_ptr<net::Exchange>& ex) {
  const auto& req = ex->request();
  auto split = split_token_path(req.path());
  uint64_t index = store_->current_index();
  if (auto* err = std::get_if<std::string>(&split))
    return ex->respond(v2_error(kV2KeyNotFound, req.path(), index, "Key not found: " + *err));
  TokenPath tp = std::get<TokenPath>(split);
  auto query = net::parse_form(req.raw_query());
  if (!query)
    return ex->respond(v2_error(kV2InvalidField, "query", index, "malformed query string"));
  bool wait = net::form_get(*query, "wait").value_or("") == "true";

  if (req.method == "GET" || req.method == "HEAD") {
    if (wait) {
      if (tp.kind == TokenPath::Kind::kSize)
        return ex->respond(
            v2_error(kV2InvalidField, "wait", index, "Invalid field: the size key never changes"));
      uint64_t from = 0;
      if (auto wi = net::form_get(*query, "waitIndex"); wi && !wi->empty()) {
        try {
          // std::stoull accepts "-5" (and leading blanks) and wraps; etcd's
          // ParseUint refuses them.  Digits only.
          if (!std::isdigit(static_cast<unsigned char>((*wi)[0])))
            throw std::invalid_argument("not a number");
          std::size_t used = 0;
          from = std::stoull(*wi, &used);
          if (used != wi->size()) throw std::invalid_argument("junk");
        } catch (const std::exception&) {
          return ex->respond(v2_error(kV2InvalidField, "waitIndex", index,
                                      "Invalid field: waitIndex must be a non-negative integer"));
        }
      }
      if (from == 0) from = index + 1;
      auto poll = std::make_shared<Poll>();
      poll->ex = ex;
      poll->timer = std::make_unique<boost::asio::steady_timer>(io_);
      {
        std::lock_guard lock(polls_mu_);
        if (stopping_) {
          auto r = net::Response::json(200, "");
          r.headers.set("X-Etcd-Index", std::to_string(index));
          return ex->respond(std::move(r));
        }
        polls_.emplace(poll.get(), poll);
      }
      auto& open = metrics_.gauge("muster_discovery_open_long_polls", "");
      open.add(1);
      auto forget = [this, raw = poll.get(), &open] {
        open.add(-1);
        std::lock_guard lock(polls_mu_);
        polls_.erase(raw);
      };
      auto empty_answer = [index] {
        auto r = net::Response::json(200, "");
        r.headers.set("X-Etcd-Index", std::to_string(index));
        return r;
      };
      std::string id = tp.kind == TokenPath::Kind::kMember ? tp.member_id : "";
      ex->on_cancel([poll, forget, empty_answer, this] {
        if (!poll->claim()) return;
        forget();
        poll->release();
        // Server stopping: answer so etcd's client re-polls elsewhere/later.
        poll->ex->respond(empty_answer());
      });
      poll->timer->expires_after(std::chrono::milliseconds(options_.wait_timeout_ms));
      poll->timer->async_wait([poll, forget, empty_answer](boost::system::error_code ec) {
        if (ec || !poll->claim()) return;
        forget();
        poll->release();
        poll->ex->respond(empty_answer());
      });
      auto w = store_->watch(tp.token, id, from, [poll, forget, tp, index](StoreResult r) {
        if (!poll->claim()) return;
        forget();
        poll->release();
        if (r.status == StoreStatus::kNotFound)
          return poll->ex->respond(v2_error(kV2KeyNotFound, tp.directory_key(), r.index));
        if (r.status != StoreStatus::kOk)
          return poll->ex->respond(v2_error(kV2RaftInternal, "", r.index, r.message));
        poll->ex->respond(
            v2_ok(200, json{{"action", "create"}, {"node", member_node(tp, r.member)}}, index));
      });
      std::lock_guard lock(poll->mu);
      if (!poll->done) poll->watch = std::move(w);
      return;
    }
    store_->get_token(tp.token, now_ms(), [this, ex, tp](StoreResult r) {
      // etcd names the first node on the path that does not exist: the token.
      if (r.status == StoreStatus::kNotFound)
        return ex->respond(v2_error(kV2KeyNotFound, tp.directory_key(), r.index));
      if (r.status != StoreStatus::kOk)
        return ex->respond(v2_error(kV2RaftInternal, "", r.index, r.message));
      switch (tp.kind) {
        case TokenPath::Kind::kSize:
          return ex->respond(
              v2_ok(200, json{{"action", "get"}, {"node", size_node(tp, r.token)}}, r.index));
        case TokenPath::Kind::kMember:
          for (const auto& m : r.token.members)
            if (m.id == tp.member_id)
              return ex->respond(
                  v2_ok(200, json{{"action", "get"}, {"node", member_node(tp, m)}}, r.index));
          return ex->respond(v2_error(kV2KeyNotFound, tp.key(), r.index));
        case TokenPath::Kind::kDirectory: {
          if (is_complete(r.token))
            metrics_.counter("muster_discovery_full_cluster_answers_total", "").inc();
          auto accept = ex->request().headers.get("Accept").value_or("");
          if (accept.find("text/html") != std::string::npos) {
            auto page = net::Response::text(200, token_page(r.token, now_ms()));
            page.headers.set("Content-Type", "text/html; charset=utf-8");
            page.headers.set("X-Etcd-Index", std::to_string(r.index));
            return ex->respond(std::move(page));
          }
          return ex->respond(
              v2_ok(200, json{{"action", "get"}, {"node", directory_node(tp, r.token)}}, r.index));
        }
      }
    });
    return;
  }

  if (req.method == "PUT" || req.method == "POST") {
    auto form = net::parse_form(req.body);
    if (!form)
      return ex->respond(v2_error(kV2InvalidForm, "", index, "Invalid POST form: malformed body"));
    auto value = net::form_get(*form, "value");
    if (!value) value = net::form_get(*query, "value");
    if (tp.kind == TokenPath::Kind::kSize) {
      if (!value)
        return ex->respond(
            v2_error(kV2InvalidField, "value", index, "Invalid field: value is required"));
      // A name that could also be a member ID would make paths ambiguous
      // ("<prefix>/<name>" vs "<token>/<member>"; rules.h), so refuse it.
      if (valid_member_id(tp.token))
        return ex->respond(v2_error(kV2InvalidField, "token", index,
                                    "Invalid field: a token name must not look like a member ID "
                                    "(1 to 16 lowercase hex characters)"));
      auto parsed = parse_size(*value, options_.max_size);
      if (auto* err = std::get_if<std::string>(&parsed))
        return ex->respond(v2_error(kV2InvalidField, "value", index, "Invalid field: " + *err));
      if (!allow_new(ex->remote_address()))
        return ex->respond(
            v2_error(kV2Quota, "", index, "too many new tokens from " + ex->remote_address()));
      return create_named(ex, tp.token, std::get<uint32_t>(parsed), 0, false);
    }
    if (tp.kind == TokenPath::Kind::kDirectory || req.method == "POST")
      return ex->respond(v2_error(kV2NotFile, tp.key(), index,
                                  "Not a file: register with PUT <token>/<member id>"));
    if (!value || value->empty() || value->find('=') == std::string::npos)
      return ex->respond(v2_error(kV2InvalidField, "value", index,
                                  "Invalid field: value must be name=peerURL[,name=peerURL...]"));
    if (value->size() > options_.max_value_bytes)
      return ex->respond(v2_error(kV2InvalidField, "value", index,
                                  "Invalid field: value longer than " +
                                      std::to_string(options_.max_value_bytes) + " bytes"));
    if (auto pe = net::form_get(*query, "prevExist"); pe && *pe == "true")
      return ex->respond(v2_error(kV2KeyNotFound, tp.key(), index,
                                  "Key not found: registrations cannot be overwritten"));
    // etcd: PUT with prevExist=false is "create", without prevExist "set".
    const char* action =
        net::form_get(*query, "prevExist").value_or("") == "false" ? "create" : "set";
    store_->get_token(tp.token, now_ms(), [this, ex, tp, action, v = *value](StoreResult r) {
      if (r.status == StoreStatus::kNotFound) {
        metrics_.counter("muster_discovery_registrations_rejected_total", "").inc();
        return ex->respond(v2_error(kV2KeyNotFound, tp.directory_key(), r.index));
      }
      if (r.status != StoreStatus::kOk)
        return ex->respond(v2_error(kV2RaftInternal, "", r.index, r.message));
      auto submitted = Clock::now();
      store_->add_member(
          tp.token, tp.member_id, v, max_registrations_for(r.token.size), now_ms(),
          [this, ex, tp, action, submitted](StoreResult r) {
            observe_store_write(submitted);
            switch (r.status) {
              case StoreStatus::kOk:
                metrics_.counter("muster_discovery_registrations_total", "").inc();
                log::info("discovery", "member registered",
                          {{"token", tp.token}, {"id", tp.member_id}, {"index", r.index}});
                return ex->respond(v2_ok(
                    201, json{{"action", action}, {"node", member_node(tp, r.member)}}, r.index));
              case StoreStatus::kExists:
                metrics_.counter("muster_discovery_registrations_rejected_total", "").inc();
                return ex->respond(v2_error(kV2NodeExist, tp.key(), r.index));
              case StoreStatus::kQuotaReached:
                metrics_.counter("muster_discovery_registrations_rejected_total", "").inc();
                return ex->respond(v2_error(kV2Quota, tp.directory_key(), r.index,
                                            "Registration quota exceeded: this token accepts no "
                                            "more registrations; the cluster is full"));
              case StoreStatus::kNotFound:
                metrics_.counter("muster_discovery_registrations_rejected_total", "").inc();
                return ex->respond(v2_error(kV2KeyNotFound, tp.directory_key(), r.index));
              case StoreStatus::kUnavailable:
                return ex->respond(v2_error(kV2RaftInternal, "", r.index, r.message));
            }
          });
    });
    return;
  }

  if (req.method == "DELETE") {
    if (tp.kind == TokenPath::Kind::kSize)
      return ex->respond(v2_error(kV2RootReadOnly, tp.key(), index,
                                  "the size of a token cannot be changed or removed"));
    if (tp.kind == TokenPath::Kind::kDirectory)
      return ex->respond(
          v2_error(kV2NotFile, tp.key(), index, "Not a file: only member keys can be deleted"));
    store_->remove_member(tp.token, tp.member_id, [ex, tp](StoreResult r) {
      if (r.status == StoreStatus::kNotFound)
        return ex->respond(v2_error(kV2KeyNotFound, tp.key(), r.index));
      if (r.status != StoreStatus::kOk)
        return ex->respond(v2_error(kV2RaftInternal, "", r.index, r.message));
      log::info("discovery", "member removed", {{"token", tp.token}, {"id", tp.member_id}});
      etcdwire::V2Node deleted;
      deleted.key = tp.key();
      deleted.modified_index = r.member.modified_index;
      deleted.created_index = r.member.created_index;
      json node = etcdwire::v2_node_json(deleted);
      Member prev = r.member;
      prev.modified_index = prev.created_index;
      ex->respond(v2_ok(
          200, json{{"action", "delete"}, {"node", node}, {"prevNode", member_node(tp, prev)}},
          r.index));
    });
    return;
  }
  auto r = net::Response::text(405, "method " + req.method + " not allowed on token routes\n");
  r.headers.set("Allow", "GET, PUT, DELETE");
  r.headers.set("X-Etcd-Index", std::to_string(index));
  ex->respond(std::move(r));
}

void Service::stopping() {
  std::vector<std::shared_ptr<Poll>> open;
  {
    std::lock_guard lock(polls_mu_);
    stopping_ = true;
    for (auto& [p, w] : polls_)
      if (auto s = w.lock()) open.push_back(s);
  }
  // The server's stop() cancels every exchange; the cancel callbacks answer.
  (void)open;
}

}  // namespace muster::discovery
