#include "node/proxy/forwarder.h"

#include <array>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdint>
#include <limits>
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

std::vector<double> duration_buckets() { return metrics::exponential_buckets(0.0005, 2, 13); }

// One forwarded request: tries the usable endpoints in order until one
// answers.  Lives as long as an operation or the exchange's cancel callback
// (weak) refers to it; every handler runs on `strand_`.
class Attempt : public std::enable_shared_from_this<Attempt> {
 public:
  Attempt(asio::io_context& io, std::shared_ptr<net::Exchange> ex, Director& director,
          metrics::Registry& registry, std::shared_ptr<const ForwarderOptions> options,
          std::shared_ptr<asio::ssl::context> tls_ctx)
      : strand_(asio::make_strand(io)),
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
    // One request per connection: the member closes after answering.
    req_.keep_alive(false);
  }

  beast::tcp_stream& lowest() { return plain_ ? *plain_ : beast::get_lowest_layer(*tls_); }

  void close_stream() {
    error_code ignored;
    if (plain_ || tls_) lowest().socket().close(ignored);
  }

  template <class F>
  void with_stream(F&& f) {
    if (tls_)
      f(*tls_);
    else
      f(*plain_);
  }

  // Moves on to the next endpoint, or gives up.
  void next() {
    if (cancelled_) return;
    close_stream();
    tls_.reset();
    plain_.reset();
    buffer_.clear();
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
    resolver_.async_resolve(
        url_.host, std::to_string(url_.port),
        [self = shared_from_this()](error_code ec, tcp::resolver::results_type r) {
          self->on_resolved(ec, std::move(r));
        });
  }

  void on_resolved(error_code ec, tcp::resolver::results_type results) {
    if (cancelled_) return;
    if (ec) return failed("cannot resolve", ec, false);
    plain_ = std::make_unique<beast::tcp_stream>(strand_);
    arm(options_->dial_timeout);
    plain_->async_connect(results,
                          [self = shared_from_this()](error_code ec, const tcp::endpoint&) {
                            self->on_connected(ec);
                          });
  }

  void on_connected(error_code ec) {
    if (cancelled_) return;
    if (ec) return failed("cannot connect", ec, false);
    error_code ignored;
    plain_->socket().set_option(tcp::no_delay(true), ignored);
    if (!url_.tls()) return send();
    if (!tls_ctx_) return failed("no TLS settings for", asio::error::no_protocol_option, false);
    tls_ = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(std::move(*plain_), *tls_ctx_);
    plain_.reset();
    const std::string& name =
        options_->tls.server_name.empty() ? url_.host : options_->tls.server_name;
    SSL_set_tlsext_host_name(tls_->native_handle(), name.c_str());
    if (!options_->tls.insecure_skip_verify) {
      X509_VERIFY_PARAM* param = SSL_get0_param(tls_->native_handle());
      error_code aec;
      asio::ip::make_address(name, aec);
      if (aec)
        X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
      else
        X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());
    }
    arm(options_->dial_timeout);
    tls_->async_handshake(asio::ssl::stream_base::client,
                          [self = shared_from_this()](error_code ec) {
                            if (self->cancelled_) return;
                            if (ec) return self->failed("TLS handshake failed with", ec, false);
                            self->send();
                          });
  }

  void send() {
    arm(options_->write_timeout);
    with_stream([&](auto& s) {
      http::async_write(s, req_, [self = shared_from_this()](error_code ec, std::size_t) {
        if (self->cancelled_) return;
        if (ec) return self->failed("cannot send request to", ec, true);
        self->read_head();
      });
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
      http::async_read_header(s, buffer_, *parser_,
                              [self = shared_from_this()](error_code ec, std::size_t) {
                                if (self->cancelled_) return;
                                if (ec) return self->failed("no answer from", ec, true);
                                self->on_head();
                              });
    });
  }

  void on_head() {
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
          s, buffer_, *parser_,
          [self = shared_from_this()](error_code ec, std::size_t) { self->on_body(ec); });
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
    if (streaming_)
      ex_->end_stream();
    else
      ex_->respond(std::move(head_));
    close_stream();
  }

  // An attempt on `current_` failed before the client saw anything.
  // `sent`: the request may have reached the member.
  void failed(const char* what, error_code ec, bool sent) {
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
  std::unique_ptr<beast::tcp_stream> plain_;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_;
  beast::flat_buffer buffer_;
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
      options_(std::make_shared<const ForwarderOptions>(std::move(options))) {
  // Built once: loading the files is the expensive part, and a bad file
  // should stop the proxy at start-up, not fail every request.
  tls_ctx_ = net::make_client_tls_context(options_->tls);
}

Forwarder::~Forwarder() = default;

void Forwarder::forward(std::shared_ptr<net::Exchange> ex) {
  std::make_shared<Attempt>(io_, std::move(ex), director_, registry_, options_, tls_ctx_)->start();
}

}  // namespace muster::proxy
