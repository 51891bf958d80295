#include "node/proxy/forwarder.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <array>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "net/log.h"
#include "net/url.h"
#include "node/proxy/routes.h"

namespace muster::proxy {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

namespace {

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

net::Response message(int status, const std::string& text) {
  return net::Response::json(status, nlohmann::json{{"message", text}}.dump());
}

// A member machine that dies without closing its connections (power loss,
// partition) must not hang a pooled read or an idle watch for the kernel's
// default 15 minutes: keep-alive probes after 30 s idle, and unacknowledged
// data or probes give up after 10 s (TCP_USER_TIMEOUT).  The connection then
// fails like any other.
void detect_dead_peer(tcp::socket& s) {
  int fd = s.native_handle();
  int on = 1, idle = 30, interval = 10, count = 3;
  unsigned int user_timeout_ms = 10000;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

std::vector<double> duration_buckets() { return metrics::exponential_buckets(0.0005, 2, 13); }

}  // namespace

// One connection to a member, with what was read past the last answer
// (always empty when it is pooled).
struct Upstream {
  std::unique_ptr<beast::tcp_stream> plain;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  std::chrono::steady_clock::time_point idle_since;
};

// Idle keep-alive connections by member URL.  Only reads use them: a write
// sent on a connection the member had just closed could not be told apart
// from a write the member received, so writes get a fresh connection and
// are never resent.  A pooled connection the member closed meanwhile shows
// up as an error before any answer byte; the read is then sent again on a
// fresh connection to the same member, which is not marked failed.
class ConnectionPool {
 public:
  static constexpr std::size_t kMaxIdlePerEndpoint = 64;
  // Members close idle keep-alive connections after 120 s (net::Server's
  // default); give them up well before.
  static constexpr std::chrono::seconds kMaxIdle{30};

  std::unique_ptr<Upstream> take(const std::string& endpoint) {
    std::lock_guard lock(mu_);
    auto it = idle_.find(endpoint);
    if (it == idle_.end()) return nullptr;
    auto now = std::chrono::steady_clock::now();
    while (!it->second.empty()) {
      auto c = std::move(it->second.back());
      it->second.pop_back();
      if (now - c->idle_since < kMaxIdle) return c;
    }
    return nullptr;
  }

  void put(const std::string& endpoint, std::unique_ptr<Upstream> c) {
    c->idle_since = std::chrono::steady_clock::now();
    std::lock_guard lock(mu_);
    auto& v = idle_[endpoint];
    if (v.size() < kMaxIdlePerEndpoint) v.push_back(std::move(c));
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::vector<std::unique_ptr<Upstream>>> idle_;
};

namespace {

// One forwarded request: tries the usable endpoints in order until one
// answers.  Lives as long as an operation or the exchange's cancel callback
// (weak) refers to it; every handler runs on `strand_`.
class Attempt : public std::enable_shared_from_this<Attempt> {
 public:
  Attempt(asio::io_context& io, std::shared_ptr<net::Exchange> ex, Director& director,
          metrics::Registry& registry, std::shared_ptr<const ForwarderOptions> options,
          std::shared_ptr<asio::ssl::context> tls_ctx, std::shared_ptr<ConnectionPool> pool)
      : io_exec_(io.get_executor()),
        pool_(std::move(pool)),
        strand_(asio::make_strand(io)),
        resolver_(strand_),
        ex_(std::move(ex)),
        director_(director),
        registry_(registry),
        options_(std::move(options)),
        tls_ctx_(std::move(tls_ctx)),
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
      if (auto self = weak.lock())
        asio::post(self->strand_, [self] {
          self->cancelled_ = true;
          self->resolver_.cancel();
          self->close_stream();
        });
    });
    asio::post(strand_, [self = shared_from_this()] { self->next(); });
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
    req_.method_string(in.method);
    req_.target(in.target);
    req_.version(11);
    for (const auto& [name, value] : in.headers.all()) {
      net::HeaderNameLess less;
      bool is_host = !less(name, "Host") && !less("Host", name);
      bool is_expect = !less(name, "Expect") && !less("Expect", name);
      if (hop_by_hop(name) || is_host || is_expect) continue;
      req_.set(name, value);
    }
    // As etcd's proxy (and Go's reverse proxy): append the client to
    // X-Forwarded-For.
    std::string xff = ex_->remote_address();
    if (auto prior = in.headers.get("X-Forwarded-For")) xff = *prior + ", " + xff;
    req_.set("X-Forwarded-For", xff);
    req_.body() = in.body;
    if (!in.body.empty() || in.method == "POST" || in.method == "PUT" || in.method == "PATCH")
      req_.prepare_payload();
    // Reads keep the connection for the next read (pooled); a write's
    // connection is closed after its answer (see ConnectionPool).
    req_.keep_alive(idempotent_);
  }

  beast::tcp_stream& lowest() {
    return conn_->plain ? *conn_->plain : beast::get_lowest_layer(*conn_->tls);
  }

  void close_stream() {
    error_code ignored;
    if (conn_ && (conn_->plain || conn_->tls)) lowest().socket().close(ignored);
  }

  template <class F>
  void with_stream(F&& f) {
    if (conn_->tls)
      f(*conn_->tls);
    else
      f(*conn_->plain);
  }

  // Moves on to the next endpoint, or gives up.
  void next() {
    if (cancelled_) return;
    close_stream();
    conn_.reset();
    if (index_ >= endpoints_.size()) return give_up();
    current_ = endpoints_[index_++];
    std::string err;
    auto url = net::parse_url(current_, &err);
    if (!url) {
      log::warn("httpproxy", "bad member client URL", {{"url", current_}, {"error", err}});
      director_.failed(current_);
      return next();
    }
    url_ = *url;
    req_.set(http::field::host, url_.explicit_port ? url_.authority() : url_.host);
    if (idempotent_) {
      if (auto pooled = pool_->take(current_)) {
        conn_ = std::move(pooled);
        reused_ = true;
        return send();
      }
    }
    connect_fresh();
  }

  void connect_fresh() {
    reused_ = false;
    resolver_.async_resolve(
        url_.host, std::to_string(url_.port),
        [self = shared_from_this()](error_code ec, tcp::resolver::results_type r) {
          self->on_resolved(ec, std::move(r));
        });
  }

  void on_resolved(error_code ec, tcp::resolver::results_type results) {
    if (cancelled_) return;
    if (ec) return failed("cannot resolve", ec, false);
    conn_ = std::make_unique<Upstream>();
    conn_->plain = std::make_unique<beast::tcp_stream>(io_exec_);
    arm(options_->dial_timeout);
    conn_->plain->async_connect(
        results, asio::bind_executor(
                     strand_, [self = shared_from_this()](error_code ec, const tcp::endpoint&) {
                       self->on_connected(ec);
                     }));
  }

  void on_connected(error_code ec) {
    if (cancelled_) return;
    if (ec) return failed("cannot connect", ec, false);
    error_code ignored;
    conn_->plain->socket().set_option(tcp::no_delay(true), ignored);
    detect_dead_peer(conn_->plain->socket());
    if (!url_.tls()) return send();
    if (!tls_ctx_) return failed("no TLS settings for", asio::error::no_protocol_option, false);
    conn_->tls =
        std::make_unique<beast::ssl_stream<beast::tcp_stream>>(std::move(*conn_->plain), *tls_ctx_);
    conn_->plain.reset();
    const std::string& name =
        options_->tls.server_name.empty() ? url_.host : options_->tls.server_name;
    SSL_set_tlsext_host_name(conn_->tls->native_handle(), name.c_str());
    if (!options_->tls.insecure_skip_verify) {
      X509_VERIFY_PARAM* param = SSL_get0_param(conn_->tls->native_handle());
      error_code aec;
      asio::ip::make_address(name, aec);
      if (aec)
        X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
      else
        X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());
    }
    arm(options_->dial_timeout);
    conn_->tls->async_handshake(
        asio::ssl::stream_base::client,
        asio::bind_executor(strand_, [self = shared_from_this()](error_code ec) {
          if (self->cancelled_) return;
          if (ec) return self->failed("TLS handshake failed with", ec, false);
          self->send();
        }));
  }

  void send() {
    arm(options_->write_timeout);
    with_stream([&](auto& s) {
      http::async_write(
          s, req_,
          asio::bind_executor(strand_, [self = shared_from_this()](error_code ec, std::size_t) {
            if (self->cancelled_) return;
            if (ec) return self->failed("cannot send request to", ec, true);
            self->read_head();
          }));
    });
  }

  // The proxy timeouts follow etcd: 0 means no limit.
  void arm(std::chrono::milliseconds limit) {
    if (limit.count() > 0)
      lowest().expires_after(limit);
    else
      lowest().expires_never();
  }
  void arm_read_deadline() { arm(options_->read_timeout); }

  void read_head() {
    parser_.emplace();
    // Not boost::none: Boost 1.74 compares a Content-Length against an empty
    // optional limit as "exceeded" (basic_parser.ipp), so use the largest.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    if (method_ == "HEAD") parser_->skip(true);
    arm_read_deadline();
    with_stream([&](auto& s) {
      http::async_read_header(
          s, conn_->buffer, *parser_,
          asio::bind_executor(strand_, [self = shared_from_this()](error_code ec, std::size_t) {
            if (self->cancelled_) return;
            if (ec) return self->failed("no answer from", ec, true);
            self->on_head();
          }));
    });
  }

  void on_head() {
    reused_ = false;  // the connection answered: later failures are the member's
    auto& msg = parser_->get();
    head_ = net::Response{};
    head_.status = static_cast<int>(msg.result_int());
    for (const auto& f : msg) {
      std::string name(f.name_string());
      if (!hop_by_hop(name)) head_.headers.add(std::move(name), std::string(f.value()));
    }
    if (parser_->is_done()) return complete();
    auto length = parser_->content_length();
    streaming_ = !length || *length > options_->buffered_body_limit;
    if (streaming_) {
      // From here on the client has bytes: no other endpoint may answer.
      ex_->begin_stream(head_);
    }
    read_body();
  }

  void read_body() {
    parser_->get().body().data = buf_.data();
    parser_->get().body().size = buf_.size();
    arm_read_deadline();
    with_stream([&](auto& s) {
      http::async_read_some(
          s, conn_->buffer, *parser_,
          asio::bind_executor(strand_, [self = shared_from_this()](error_code ec, std::size_t) {
            self->on_body(ec);
          }));
    });
  }

  void on_body(error_code ec) {
    if (cancelled_) return;
    if (ec == http::error::need_buffer) ec = {};
    std::size_t got = buf_.size() - parser_->get().body().size;
    if (got > 0) {
      if (streaming_)
        ex_->write(std::string(buf_.data(), got));
      else
        head_.body.append(buf_.data(), got);
    }
    if (ec) {
      if (!streaming_) return failed("answer broke off from", ec, true);
      log::warn("httpproxy", "member stream broke",
                {{"endpoint", current_}, {"error", ec.message()}});
      director_.failed(current_);
      if (v3_)
        ex_->write(nlohmann::json{{"error",
                                   {{"grpc_code", 14},
                                    {"http_code", 503},
                                    {"message", "httpproxy: stream from " + current_ +
                                                    " broke: " + ec.message()},
                                    {"http_status", "Service Unavailable"}}}}
                       .dump() +
                   "\n");
      ex_->end_stream();
      close_stream();
      return;
    }
    if (parser_->is_done()) return complete();
    read_body();
  }

  void complete() {
    director_.succeeded(current_);
    handled(head_.status);
    // The connection goes back to the pool before the client hears the
    // answer: a client that sends its next read at once finds it there.
    if (idempotent_ && parser_->keep_alive() && conn_->buffer.size() == 0) {
      lowest().expires_never();
      pool_->put(current_, std::move(conn_));
    } else {
      close_stream();
    }
    if (streaming_)
      ex_->end_stream();
    else
      ex_->respond(std::move(head_));
  }

  // An attempt on `current_` failed before the client saw anything.
  // `sent`: the request may have reached the member.
  void failed(const char* what, error_code ec, bool sent) {
    if (reused_) {
      // The member closed this idle connection before our request reached
      // it (or while it did): say nothing, and try again on a fresh one.
      // Only reads are sent on pooled connections (ConnectionPool).
      close_stream();
      conn_.reset();
      return connect_fresh();
    }
    log::warn("httpproxy", "failed to direct request",
              {{"endpoint", current_},
               {"error", std::string(what) + " " + current_ + ": " + ec.message()}});
    director_.failed(current_);
    drop("failed_sending_request");
    if (sent && !idempotent_) return give_up();
    next();
  }

  void give_up() {
    close_stream();
    drop("failed_getting_response");
    std::string msg = "httpproxy: unable to get response from " +
                      std::to_string(endpoints_.size()) + " endpoint(s)";
    log::warn("httpproxy", msg, {{"method", method_}, {"target", std::string(req_.target())}});
    ex_->respond(message(502, msg));
  }

  // Connections live on the plain io executor (so a pooled one can serve any
  // later Attempt); every completion handler is bound to this Attempt's
  // strand.
  asio::io_context::executor_type io_exec_;
  std::shared_ptr<ConnectionPool> pool_;
  asio::strand<asio::io_context::executor_type> strand_;
  tcp::resolver resolver_;
  std::shared_ptr<net::Exchange> ex_;
  Director& director_;
  metrics::Registry& registry_;
  std::shared_ptr<const ForwarderOptions> options_;
  std::shared_ptr<asio::ssl::context> tls_ctx_;
  std::chrono::steady_clock::time_point start_;

  std::string method_;
  bool v3_ = false, idempotent_ = false;
  std::vector<std::string> endpoints_;
  std::size_t index_ = 0;
  std::string current_;
  net::Url url_;

  http::request<http::string_body> req_;
  std::unique_ptr<Upstream> conn_;
  bool reused_ = false;  // conn_ came from the pool
  std::optional<http::response_parser<http::buffer_body>> parser_;
  std::array<char, 16384> buf_{};
  net::Response head_;
  bool streaming_ = false, cancelled_ = false;
};

}  // namespace

Forwarder::Forwarder(asio::io_context& io, Director& director, metrics::Registry& registry,
                     ForwarderOptions options)
    : io_(io),
      director_(director),
      registry_(registry),
      options_(std::make_shared<const ForwarderOptions>(std::move(options))),
      pool_(std::make_shared<ConnectionPool>()) {
  // Built once: loading the files is the expensive part, and a bad file
  // should stop the proxy at start-up, not fail every request.
  tls_ctx_ = net::make_client_tls_context(options_->tls);
}

Forwarder::~Forwarder() = default;

void Forwarder::forward(std::shared_ptr<net::Exchange> ex) {
  std::make_shared<Attempt>(io_, std::move(ex), director_, registry_, options_, tls_ctx_, pool_)
      ->start();
}

}  // namespace muster::proxy
