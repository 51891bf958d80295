#include "node/proxy/forwarder.h"

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>
#include <optional>

#include "base/log.h"
#include "net/http_client.h"
#include "net/url.h"
#include "node/proxy/routes.h"

namespace muster::proxy {

namespace {

using Step = net::ClientResult::Step;

// Hop-by-hop fields (RFC 9110 section 7.6.1) and the framing fields the
// proxy sets itself; never relayed in either direction.
bool hop_by_hop(std::string_view name) {
  static const char* const kNames[] = {
      "Connection", "Keep-Alive",    "Proxy-Authenticate", "Proxy-Authorization",
      "Te",         "Trailer",       "Trailers",           "Transfer-Encoding",
      "Upgrade",    "Content-Length"};
  net::HeaderNameLess less;
  for (const char* n : kNames)
    if (!less(name, n) && !less(n, name)) return true;
  return false;
}

bool same_name(std::string_view a, std::string_view b) {
  net::HeaderNameLess less;
  return !less(a, b) && !less(b, a);
}

net::Response message(int status, const std::string& text) {
  return net::Response::json(status, nlohmann::json{{"message", text}}.dump(
                                         -1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::vector<double> duration_buckets() { return metrics::exponential_buckets(0.0005, 2, 13); }

// What the proxy asks of its member connections (net/http_client.h): etcd's
// --proxy-*-timeout meanings (0 = no limit, no deadline on a whole call),
// no redirects followed, the client's own User-Agent relayed, and
// dead-peer detection: a member machine that dies without closing its
// connections (power loss, partition) must not hang a pooled read or an
// idle watch for the kernel's default 15 minutes, so keep-alive probes
// start after 30 s idle and unacknowledged data or probes give up after
// 10 s.  Members close idle keep-alive connections after 120 s
// (net::Server's default); the pool gives them up after 30 s.
net::ClientOptions client_options(const ForwarderOptions& o) {
  net::ClientOptions c;
  c.connect_timeout = o.dial_timeout;
  c.handshake_timeout = o.dial_timeout;
  c.timeout = std::chrono::milliseconds(0);
  c.write_timeout = o.write_timeout;
  c.read_timeout = o.read_timeout;
  c.tls = o.tls;
  c.max_redirects = 0;
  c.user_agent = "";
  c.keep_alive = {true, std::chrono::seconds(30), std::chrono::seconds(10), 3,
                  std::chrono::milliseconds(10000)};
  c.max_idle_per_origin = 64;
  c.max_idle = std::chrono::seconds(30);
  return c;
}

// One forwarded request: tries the usable endpoints in order until one
// answers.  Lives as long as a call's handlers or the exchange's cancel
// callback (weak) refer to it.  The calls run one after another (one's
// completion starts the next), so only the cancellation, which comes from
// the client's side at any time, crosses threads: through slot_.
class Attempt : public std::enable_shared_from_this<Attempt> {
 public:
  Attempt(std::shared_ptr<net::Exchange> ex, Director& director, metrics::Registry& registry,
          std::shared_ptr<const ForwarderOptions> options,
          std::shared_ptr<net::AsyncHttpClient> client)
      : ex_(std::move(ex)),
        director_(director),
        registry_(registry),
        options_(std::move(options)),
        client_(std::move(client)),
        start_(std::chrono::steady_clock::now()) {}

  void start() {
    const net::Request& in = ex_->request();
    method_ = in.method;
    v3_ = !v3_route(in.path()).empty();
    idempotent_ = is_idempotent(in);
    registry_.counter("etcd_proxy_requests_total", "Counter requests incoming by method.", label())
        .inc();
    endpoints_ = director_.available();
    if (endpoints_.empty()) {
      drop("zero_endpoints");
      log::warn("httpproxy", "zero endpoints currently available");
      ex_->respond(message(503, "httpproxy: zero endpoints currently available"));
      return;
    }
    build_request(in);
    std::weak_ptr<Attempt> weak = weak_from_this();
    ex_->on_cancel([weak] {
      if (auto self = weak.lock()) self->cancel();
    });
    next();
  }

 private:
  std::string label() const { return "method=\"" + method_ + "\""; }

  void drop(const char* reason) {
    registry_
        .counter("etcd_proxy_dropped_total", "Counter of requests dropped on the proxy.",
                 "method=\"" + method_ + "\",proxying_error=\"" + reason + "\"")
        .inc();
  }

  void handled(int status) {
    registry_
        .counter("etcd_proxy_handled_total",
                 "Counter of requests fully handled (by authoritative servers)",
                 "code=\"" + std::to_string(status) + "\"," + label())
        .inc();
    std::chrono::duration<double> took = std::chrono::steady_clock::now() - start_;
    registry_
        .histogram("etcd_proxy_handling_duration_seconds",
                   "Bucketed histogram of handling time of successful events (non-watches), by "
                   "method (GET/PUT etc.).",
                   duration_buckets(), label())
        .observe(took.count());
  }

  void build_request(const net::Request& in) {
    req_.method = in.method;
    req_.body = in.body;
    for (const auto& [name, value] : in.headers.all()) {
      if (hop_by_hop(name) || same_name(name, "Host") || same_name(name, "Expect")) continue;
      req_.headers.set(name, value);
    }
    // As etcd's proxy (and Go's reverse proxy): append the client to
    // X-Forwarded-For.
    std::string xff = ex_->remote_address();
    if (auto prior = in.headers.get("X-Forwarded-For")) xff = *prior + ", " + xff;
    req_.headers.set("X-Forwarded-For", xff);
    // Reads may use idle keep-alive connections (and be sent again on a
    // fresh one when the member had closed it); a write gets a fresh
    // connection, closed after its answer, and is never resent.
    req_.reuse_connection = idempotent_;
    target_ = in.target;
  }

  void cancel() { slot_.cancel(); }

  // Moves on to the next endpoint, or gives up.
  void next() {
    if (slot_.cancelled()) return;
    std::optional<net::Url> url;
    while (!url) {
      if (index_ >= endpoints_.size()) return give_up();
      current_ = endpoints_[index_++];
      std::string err;
      url = net::parse_url(current_, &err);
      if (!url) {
        log::warn("httpproxy", "bad member client URL", {{"url", current_}, {"error", err}});
        director_.failed(current_);
      }
    }
    head_ = net::Response{};
    streaming_ = false;
    net::ClientRequest req = req_;
    req.url = url->origin() + target_;
    net::StreamHandlers h;
    h.on_head = [self = shared_from_this()](const net::Response& head,
                                            std::optional<uint64_t> length, bool complete) {
      return self->on_head(head, length, complete);
    };
    h.on_data = [self = shared_from_this()](std::string_view d) { return self->on_data(d); };
    client_->stream(
        std::move(req), std::move(h),
        [self = shared_from_this()](net::ClientResult r) { self->on_done(std::move(r)); }, &slot_);
  }

  bool on_head(const net::Response& head, std::optional<uint64_t> length, bool complete) {
    if (slot_.cancelled()) return false;
    head_.status = head.status;
    for (const auto& [name, value] : head.headers.all())
      if (!hop_by_hop(name)) head_.headers.add(name, value);
    if (complete) return true;
    streaming_ = !length || *length > options_->buffered_body_limit;
    // From here on the client has bytes: no other endpoint may answer.
    if (streaming_) ex_->begin_stream(head_);
    return true;
  }

  bool on_data(std::string_view d) {
    if (streaming_)
      ex_->write(std::string(d));
    else
      head_.body.append(d.data(), d.size());
    return true;
  }

  void on_done(net::ClientResult r) {
    if (slot_.cancelled()) return;
    if (r.ok()) return complete();
    if (r.step == Step::kBody && streaming_) {
      log::warn("httpproxy", "member stream broke", {{"endpoint", current_}, {"error", r.reason}});
      director_.failed(current_);
      if (v3_)
        ex_->write(nlohmann::json{
                       {"error",
                        {{"grpc_code", 14},
                         {"http_code", 503},
                         {"message", "httpproxy: stream from " + current_ + " broke: " + r.reason},
                         {"http_status", "Service Unavailable"}}}}
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
                   "\n");
      ex_->end_stream();
      return;
    }
    const char* what = "no answer from";
    switch (r.step) {
      case Step::kResolve:
        what = "cannot resolve";
        break;
      case Step::kConnect:
        what = "cannot connect";
        break;
      case Step::kHandshake:
        what = "TLS handshake failed with";
        break;
      case Step::kSend:
        what = "cannot send request to";
        break;
      case Step::kBody:
        what = "answer broke off from";
        break;
      default:
        break;
    }
    failed(what, r.reason, r.maybe_sent());
  }

  void complete() {
    director_.succeeded(current_);
    handled(head_.status);
    if (streaming_)
      ex_->end_stream();
    else
      ex_->respond(std::move(head_));
  }

  // An attempt on `current_` failed before the client saw anything.
  // `sent`: the request may have reached the member.
  void failed(const char* what, const std::string& reason, bool sent) {
    log::warn(
        "httpproxy", "failed to direct request",
        {{"endpoint", current_}, {"error", std::string(what) + " " + current_ + ": " + reason}});
    director_.failed(current_);
    drop("failed_sending_request");
    if (sent && !idempotent_) return give_up();
    next();
  }

  void give_up() {
    drop("failed_getting_response");
    std::string msg = "httpproxy: unable to get response from " +
                      std::to_string(endpoints_.size()) + " endpoint(s)";
    log::warn("httpproxy", msg, {{"method", method_}, {"target", target_}});
    ex_->respond(message(502, msg));
  }

  std::shared_ptr<net::Exchange> ex_;
  Director& director_;
  metrics::Registry& registry_;
  std::shared_ptr<const ForwarderOptions> options_;
  std::shared_ptr<net::AsyncHttpClient> client_;
  std::chrono::steady_clock::time_point start_;

  std::string method_, target_;
  bool v3_ = false, idempotent_ = false;
  net::ClientRequest req_;  // without its URL: one per endpoint
  std::vector<std::string> endpoints_;
  std::size_t index_ = 0;
  std::string current_;
  net::Response head_;
  bool streaming_ = false;

  net::CallSlot slot_;  // the call in flight; cancelled when the client hangs up
};

}  // namespace

Forwarder::Forwarder(boost::asio::io_context& io, Director& director, metrics::Registry& registry,
                     ForwarderOptions options)
    : director_(director),
      registry_(registry),
      options_(std::make_shared<const ForwarderOptions>(std::move(options))),
      client_(
          std::make_shared<net::AsyncHttpClient>(io.get_executor(), client_options(*options_))) {
  // Built once: loading the files is the expensive part, and a bad file
  // should stop the proxy at start-up, not fail every request.
  client_->load_tls();
}

Forwarder::~Forwarder() = default;

void Forwarder::forward(std::shared_ptr<net::Exchange> ex) {
  std::make_shared<Attempt>(std::move(ex), director_, registry_, options_, client_)->start();
}

}  // namespace muster::proxy
