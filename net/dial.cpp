// net/dial.cpp: see dial.h.
#include "net/dial.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>

namespace muster::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

void set_keep_alive(int fd, const KeepAlive& k) {
  if (!k.enabled) return;
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  if (k.idle.count() > 0) {
    const int v = static_cast<int>(k.idle.count());
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof v);
  }
  if (k.interval.count() > 0) {
    const int v = static_cast<int>(k.interval.count());
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof v);
  }
  if (k.probes > 0) ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &k.probes, sizeof k.probes);
  if (k.user_timeout.count() > 0) {
    const unsigned v = static_cast<unsigned>(k.user_timeout.count());
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof v);
  }
}

namespace {

class DialImpl final : public Dial, public std::enable_shared_from_this<DialImpl> {
 public:
  DialImpl(asio::any_io_executor io, asio::any_io_executor strand, std::string host, uint16_t port,
           DialOptions o, Handler h)
      : strand_(strand),
        host_(std::move(host)),
        port_(port),
        where_(host_.find(':') == std::string::npos ? host_ + ":" + std::to_string(port)
                                                    : "[" + host_ + "]:" + std::to_string(port)),
        options_(std::move(o)),
        handler_(std::move(h)),
        resolver_(io),
        timer_(strand),
        socket_(std::make_unique<tcp::socket>(io)) {}

  void start() {
    arm(options_.connect_timeout);
    resolver_.async_resolve(
        host_, std::to_string(port_),
        asio::bind_executor(
            strand_, [self = shared_from_this()](error_code ec, tcp::resolver::results_type r) {
              self->on_resolved(ec, std::move(r));
            }));
  }

  void cancel() override {
    cancelled_ = true;
    stop_io();
  }

 private:
  // Closing the socket ends whatever operation is pending with an error.
  void stop_io() {
    error_code ignored;
    resolver_.cancel();
    if (socket_) socket_->close(ignored);
    if (tls_) tls_->next_layer().close(ignored);
  }

  void arm(std::chrono::milliseconds limit) {
    timer_.cancel();
    if (limit.count() <= 0) return;
    timer_.expires_after(limit);
    timer_.async_wait([self = shared_from_this(), gen = ++timer_gen_](error_code ec) {
      if (ec || gen != self->timer_gen_) return;
      self->timed_out_ = true;
      self->stop_io();
    });
  }

  error_code why(error_code ec) const {
    if (timed_out_) return asio::error::timed_out;
    if (cancelled_) return asio::error::operation_aborted;
    return ec;
  }

  void fail(DialError::Step step, error_code ec) {
    timer_.cancel();
    DialError e;
    e.step = step;
    e.ec = why(ec ? ec : asio::error::operation_aborted);
    const std::string reason = e.ec.message();
    switch (step) {
      case DialError::Step::kResolve:
        e.message =
            timed_out_ ? "timed out resolving " + host_ : "cannot resolve " + host_ + ": " + reason;
        break;
      case DialError::Step::kConnect:
        e.message = timed_out_ ? "timed out connecting to " + where_
                               : "cannot connect to " + where_ + ": " + reason;
        break;
      default:
        e.message = timed_out_ ? "timed out in TLS handshake with " + where_
                               : "TLS handshake with " + where_ + " failed: " + reason;
    }
    auto h = std::move(handler_);
    h(std::move(e), Dialed{});
  }

  void on_resolved(error_code ec, tcp::resolver::results_type results) {
    if (ec || cancelled_ || timed_out_) return fail(DialError::Step::kResolve, ec);
    asio::async_connect(*socket_, results,
                        asio::bind_executor(strand_, [self = shared_from_this()](
                                                         error_code ec, const tcp::endpoint&) {
                          self->on_connected(ec);
                        }));
  }

  void on_connected(error_code ec) {
    if (ec || cancelled_ || timed_out_) return fail(DialError::Step::kConnect, ec);
    error_code ignored;
    socket_->set_option(tcp::no_delay(true), ignored);
    set_keep_alive(socket_->native_handle(), options_.keep_alive);
    if (!options_.tls_context) return done();
    tls_ = std::make_unique<asio::ssl::stream<tcp::socket>>(std::move(*socket_),
                                                            *options_.tls_context);
    socket_.reset();
    SSL* ssl = tls_->native_handle();
    if (!options_.alpn.empty())
      SSL_set_alpn_protos(ssl, reinterpret_cast<const unsigned char*>(options_.alpn.data()),
                          static_cast<unsigned>(options_.alpn.size()));
    prepare_client_tls(ssl, host_, options_.tls);
    arm(options_.handshake_timeout);
    tls_->async_handshake(asio::ssl::stream_base::client,
                          asio::bind_executor(strand_, [self = shared_from_this()](error_code ec) {
                            self->on_handshake(ec);
                          }));
  }

  void on_handshake(error_code ec) {
    if (ec || cancelled_ || timed_out_) return fail(DialError::Step::kHandshake, ec);
    done();
  }

  void done() {
    timer_.cancel();
    Dialed d;
    d.plain = std::move(socket_);
    d.tls = std::move(tls_);
    auto h = std::move(handler_);
    h(DialError{}, std::move(d));
  }

  asio::any_io_executor strand_;
  std::string host_;
  uint16_t port_;
  std::string where_;
  DialOptions options_;
  Handler handler_;
  tcp::resolver resolver_;
  asio::steady_timer timer_;
  uint64_t timer_gen_ = 0;
  std::unique_ptr<tcp::socket> socket_;
  std::unique_ptr<asio::ssl::stream<tcp::socket>> tls_;
  bool cancelled_ = false, timed_out_ = false;
};

}  // namespace

std::shared_ptr<Dial> dial(asio::any_io_executor io, asio::any_io_executor strand,
                           const std::string& host, uint16_t port, const DialOptions& options,
                           Dial::Handler handler) {
  auto d = std::make_shared<DialImpl>(io, strand, host, port, options, std::move(handler));
  d->start();
  return d;
}

}  // namespace muster::net
