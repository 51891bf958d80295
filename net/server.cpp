// net/server.cpp: the HTTP/1.1 server, its TLS and connection handling (contract in server.h).
//
// Why one file of this size: accept, TLS handshake, ALPN hand-off to
// HTTP/2 and the HTTP/1.1 session share the connection's life cycle.
#include "net/server.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <condition_variable>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <map>
#include <mutex>
#include <utility>

#include "base/log.h"
#include "net/connection.h"
#include "net/h2.h"

namespace muster::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

using detail::ConnectionBase;

namespace {

constexpr const char* kCaller = "net/server";

// ALPN on a port that speaks HTTP/2: "h2" when the client offers it, else
// "http/1.1"; a client that offers neither goes on without ALPN (HTTP/1.1).
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  static const unsigned char ours[] = "\x02h2\x08http/1.1";
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, ours, sizeof ours - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

class Server::Impl : public std::enable_shared_from_this<Server::Impl> {
 public:
  Impl(asio::io_context& io, ServerOptions o, Handler h)
      : io_(io), options_(std::move(o)), handler_(std::move(h)) {
    if (options_.tls) {
      tls_ = make_server_tls_context(*options_.tls);
      if (options_.grpc_handler)
        SSL_CTX_set_alpn_select_cb(tls_->native_handle(), &select_alpn, nullptr);
    }
  }

  bool http2() const { return static_cast<bool>(options_.grpc_handler); }

  // What HTTP/2 connections of this server share (built on first use:
  // it points back at this object).
  std::shared_ptr<const detail::H2Context> h2_context() {
    std::lock_guard lock(mu_);
    if (!h2_) {
      auto c = std::make_shared<detail::H2Context>();
      c->http_handler = handler_;
      c->grpc_handler = options_.grpc_handler;
      c->grpc = options_.grpc;
      c->header_limit = options_.header_limit;
      c->body_limit = options_.body_limit;
      std::weak_ptr<Impl> weak = shared_from_this();
      c->on_open = [weak](const std::shared_ptr<ConnectionBase>& conn) {
        auto self = weak.lock();
        return self && self->add(conn);
      };
      c->on_closed = [weak](ConnectionBase* conn) {
        if (auto self = weak.lock()) self->remove(conn);
      };
      h2_ = std::move(c);
    }
    return h2_;
  }

  uint16_t listen(const std::string& host, uint16_t port) { return bind(host, port, true); }

  void accept_connections() {
    std::vector<std::shared_ptr<tcp::acceptor>> waiting;
    {
      std::lock_guard lock(mu_);
      waiting.swap(not_accepting_);
    }
    for (auto& a : waiting)
      asio::post(a->get_executor(), [self = shared_from_this(), a] { self->accept(a); });
  }

  uint16_t bind(const std::string& host, uint16_t port, bool accept_now) {
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
    if (ec) throw std::runtime_error("cannot listen on \"" + host + "\": not an IP address");
    auto acceptor = std::make_shared<tcp::acceptor>(asio::make_strand(io_));
    tcp::endpoint ep(addr, port);
    acceptor->open(ep.protocol(), ec);
    if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor->bind(ep, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
      throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " +
                               ec.message());
    uint16_t bound = acceptor->local_endpoint().port();
    {
      std::lock_guard lock(mu_);
      acceptors_.push_back(acceptor);
      if (!accept_now) not_accepting_.push_back(acceptor);
    }
    if (accept_now) accept(acceptor);
    return bound;
  }

  void accept(std::shared_ptr<tcp::acceptor> acceptor) {
    acceptor->async_accept(
        asio::make_strand(io_),
        [self = shared_from_this(), acceptor](boost::system::error_code ec, tcp::socket socket) {
          if (ec == asio::error::operation_aborted || !acceptor->is_open()) return;
          if (!ec) self->start_connection(std::move(socket));
          // Accept errors such as EMFILE are transient: keep accepting.
          self->accept(acceptor);
        });
  }

  void start_connection(tcp::socket socket);

  void stop() {
    std::vector<std::shared_ptr<tcp::acceptor>> acceptors;
    std::vector<std::weak_ptr<ConnectionBase>> conns;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      acceptors.swap(acceptors_);
      for (auto& [ptr, weak] : connections_) conns.push_back(weak);
    }
    for (auto& a : acceptors)
      asio::post(a->get_executor(), [a] {
        boost::system::error_code ignored;
        a->close(ignored);
      });
    for (auto& w : conns)
      if (auto c = w.lock()) c->shutdown();
  }

  bool add(const std::shared_ptr<ConnectionBase>& c) {
    std::lock_guard lock(mu_);
    if (stopping_ || connections_.size() >= options_.max_connections) return false;
    return connections_.emplace(c.get(), c).second;
  }
  void remove(ConnectionBase* c) {
    std::lock_guard lock(mu_);
    connections_.erase(c);
    if (connections_.empty()) closed_cv_.notify_all();
  }
  bool wait_closed(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return closed_cv_.wait_for(lock, timeout, [this] { return connections_.empty(); });
  }
  std::size_t open_connections() const {
    std::lock_guard lock(mu_);
    return connections_.size();
  }

  asio::io_context& io_;
  ServerOptions options_;
  Handler handler_;
  std::shared_ptr<asio::ssl::context> tls_;

 private:
  mutable std::mutex mu_;
  std::condition_variable closed_cv_;  // connections_ became empty
  bool stopping_ = false;
  std::vector<std::shared_ptr<tcp::acceptor>> acceptors_;
  std::vector<std::shared_ptr<tcp::acceptor>>
      not_accepting_;  // bound, accept_connections() pending
  std::map<ConnectionBase*, std::weak_ptr<ConnectionBase>> connections_;
  std::shared_ptr<const detail::H2Context> h2_;
};

namespace {

// An accepted stream handed to the HTTP/2 connection.
template <class Stream>
class ByteStreamOf final : public detail::ByteStream {
 public:
  explicit ByteStreamOf(Stream s) : s_(std::move(s)) {}
  asio::any_io_executor executor() override { return s_.get_executor(); }
  void read_some(asio::mutable_buffer b, IoHandler h) override {
    s_.async_read_some(b, std::move(h));
  }
  void write(asio::const_buffer b, IoHandler h) override { asio::async_write(s_, b, std::move(h)); }
  void close() override {
    boost::system::error_code ignored;
    auto& sock = beast::get_lowest_layer(s_).socket();
    sock.shutdown(tcp::socket::shutdown_both, ignored);
    sock.close(ignored);
  }

 private:
  Stream s_;
};

template <class Stream>
class Connection;

// The Exchange handed to handlers; forwards everything to its connection's
// strand.  Holds the connection alive until the answer is complete.
template <class Stream>
class ExchangeImpl final : public Exchange,
                           public std::enable_shared_from_this<ExchangeImpl<Stream>> {
 public:
  ExchangeImpl(std::shared_ptr<Connection<Stream>> c, Request r, std::string remote, std::string cn)
      : conn_(std::move(c)),
        request_(std::move(r)),
        remote_(std::move(remote)),
        cn_(std::move(cn)) {}

  const Request& request() const override { return request_; }
  const std::string& remote_address() const override { return remote_; }
  const std::string& peer_common_name() const override { return cn_; }

  // Every call names this exchange: by the time it runs on the strand the
  // connection may be serving the client's next request (keep-alive), and a
  // late call must not touch that one.
  void respond(Response r) override {
    post([r = std::move(r)](Connection<Stream>& c, ExchangeImpl* self) mutable {
      c.respond(self, std::move(r));
    });
  }
  void begin_stream(Response head) override {
    post([h = std::move(head)](Connection<Stream>& c, ExchangeImpl* self) mutable {
      c.begin_stream(self, std::move(h));
    });
  }
  void write(std::string chunk) override {
    post([ch = std::move(chunk)](Connection<Stream>& c, ExchangeImpl* self) mutable {
      c.write_chunk(self, std::move(ch));
    });
  }
  void end_stream() override {
    post([](Connection<Stream>& c, ExchangeImpl* self) { c.end_stream(self); });
  }
  void on_cancel(std::function<void()> f) override {
    post([f = std::move(f)](Connection<Stream>& c, ExchangeImpl* self) mutable {
      c.set_cancel(self, std::move(f));
    });
  }
  bool finished() const override { return finished_.load(); }

  std::atomic<bool> finished_{false};
  // Set (on the strand) when the cancel condition happened, so that a cancel
  // callback registered afterwards still runs.
  bool cancelled_ = false;

 private:
  template <class F>
  void post(F&& f);

  std::shared_ptr<Connection<Stream>> conn_;
  Request request_;
  std::string remote_, cn_;
};

template <class Stream>
class Connection final : public ConnectionBase,
                         public std::enable_shared_from_this<Connection<Stream>> {
 public:
  Connection(std::shared_ptr<Server::Impl> server, Stream stream)
      : server_(std::move(server)),
        stream_(std::move(stream)),
        idle_timer_(stream_.get_executor()) {}

  ~Connection() override { server_->remove(this); }

  auto executor() { return stream_.get_executor(); }
  static constexpr bool is_tls = std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>;

  void start() {
    boost::system::error_code ec;
    auto ep = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    if (!ec) {
      auto a = ep.address();
      if (a.is_v6() && a.to_v6().is_v4_mapped())
        a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
      remote_ = a.to_string();
    }
    if constexpr (is_tls) {
      // Peek at the first bytes before the handshake: a plaintext client on
      // a TLS port gets told so (and a log line) instead of a silent close.
      idle_timer_.expires_after(server_->options_.handshake_timeout);
      idle_timer_.async_wait([self = this->shared_from_this()](boost::system::error_code ec) {
        if (!ec && !self->handshaken_) self->close();
      });
      beast::get_lowest_layer(stream_).socket().async_wait(
          tcp::socket::wait_read, [self = this->shared_from_this()](boost::system::error_code ec) {
            if (ec) return self->close();
            self->after_first_bytes_tls();
          });
    } else {
      sniff();
    }
  }

  // TLS port: the client's first bytes are there (not yet read).
  void after_first_bytes_tls() {
    if constexpr (is_tls) {
      if (closed_) return;
      char head[4] = {0};
      const ssize_t n = ::recv(beast::get_lowest_layer(stream_).socket().native_handle(), head,
                               sizeof head, MSG_PEEK);
      if (n > 0 && head[0] != 0x16) {  // not a TLS handshake record
        const bool h2 = n >= 3 && std::string_view(head, 3) == "PRI";
        log::warn(kCaller,
                  h2 ? "plaintext HTTP/2 (gRPC) client on a TLS port; the client must use https "
                       "and TLS"
                     : "plaintext HTTP client on a TLS port; the client must use https",
                  {{"remote-addr", remote_}});
        if (!h2) {
          // What Go's servers (and so etcd) answer.
          auto msg = std::make_shared<std::string>(
              "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS "
              "server.\n");
          asio::async_write(beast::get_lowest_layer(stream_).socket(), asio::buffer(*msg),
                            [msg, self = this->shared_from_this()](boost::system::error_code,
                                                                   std::size_t) { self->close(); });
          return;
        }
        return close();
      }
      beast::get_lowest_layer(stream_).expires_after(server_->options_.handshake_timeout);
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = this->shared_from_this()](boost::system::error_code ec) {
                                self->handshaken_ = true;
                                self->idle_timer_.cancel();
                                if (ec) return self->close();
                                self->read_peer_cn();
                                if (self->server_->http2()) {
                                  const unsigned char* p = nullptr;
                                  unsigned int len = 0;
                                  SSL_get0_alpn_selected(self->stream_.native_handle(), &p, &len);
                                  if (len == 2 && p[0] == 'h' && p[1] == '2')
                                    return self->hand_over_h2();
                                }
                                self->read_request();
                              });
    }
  }

  // Plaintext port: peeks at the first bytes and tells HTTP/2 (the preface,
  // as grpc-go dials with prior knowledge), a TLS client (a handshake
  // record) and HTTP/1.1 apart.  Peeking needs no buffer: a connection holds
  // none until its request is read, so a burst of connections (10,000
  // long-polls) costs no transient buffers that would fragment the heap.
  void sniff() {
    idle_timer_.expires_after(server_->options_.request_timeout);
    idle_timer_.async_wait([self = this->shared_from_this()](boost::system::error_code ec) {
      if (!ec && !self->sniffed_) self->close();
    });
    beast::get_lowest_layer(stream_).socket().async_wait(
        tcp::socket::wait_read, [self = this->shared_from_this()](boost::system::error_code ec) {
          if (ec) return self->close();
          self->after_first_bytes_plain();
        });
  }

  // What a plaintext port's first bytes say the client speaks.
  enum class FirstBytes { kTls, kH2, kPartialH2, kHttp1 };
  static FirstBytes classify(std::string_view got) {
    if (got[0] == 0x16) return FirstBytes::kTls;  // a TLS handshake record
    const std::string_view preface = detail::kH2Preface;
    const size_t m = std::min(got.size(), preface.size());
    if (got.substr(0, m) != preface.substr(0, m)) return FirstBytes::kHttp1;
    return m < preface.size() ? FirstBytes::kPartialH2 : FirstBytes::kH2;
  }

  // Acts on the first bytes: peeked (still in the socket) or, for a preface
  // that arrived in pieces, read into buffer_ (which read_request parses).
  void on_first_bytes(std::string_view got) {
    switch (classify(got)) {
      case FirstBytes::kTls:
        log::warn(kCaller,
                  "TLS handshake on a plaintext port; the client must use http, or the server "
                  "https",
                  {{"remote-addr", remote_}});
        return close();
      case FirstBytes::kPartialH2:  // peeking again would spin: read it
        return read_preface();
      case FirstBytes::kH2:
        sniffed_ = true;
        if (server_->http2()) return hand_over_h2();
        log::warn(kCaller, "HTTP/2 client on a port that serves HTTP/1.1 only",
                  {{"remote-addr", remote_}});
        return close();
      case FirstBytes::kHttp1:
        sniffed_ = true;
        return read_request();
    }
  }

  void after_first_bytes_plain() {
    if (closed_) return;
    char head[32];
    const ssize_t n = ::recv(beast::get_lowest_layer(stream_).socket().native_handle(), head,
                             detail::kH2Preface.size(), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return sniff();
    if (n <= 0) return close();  // EOF or an error before a byte
    on_first_bytes(std::string_view(head, static_cast<std::size_t>(n)));
  }

  // The rare client whose preface arrives in pieces: read until it is whole
  // (or turns out not to be one).
  void read_preface() {
    beast::get_lowest_layer(stream_).expires_after(server_->options_.request_timeout);
    stream_.async_read_some(
        buffer_.prepare(64),
        [self = this->shared_from_this()](boost::system::error_code ec, std::size_t n) {
          if (ec) return self->close();
          self->buffer_.commit(n);
          self->on_first_bytes(std::string_view(
              static_cast<const char*>(self->buffer_.data().data()), self->buffer_.size()));
        });
  }

  // The connection speaks HTTP/2 from here on: the socket (and any bytes
  // read) move to an H2 connection, and this object lets go.
  void hand_over_h2() {
    beast::get_lowest_layer(stream_).expires_never();
    idle_timer_.cancel();
    std::string initial(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    buffer_.consume(buffer_.size());
    closed_ = true;
    server_->remove(this);
    detail::start_h2_connection(std::make_unique<ByteStreamOf<Stream>>(std::move(stream_)),
                                std::move(initial), remote_, peer_cn_, server_->h2_context());
  }

  void shutdown() override {
    asio::post(executor(), [self = this->shared_from_this()] {
      self->stopping_ = true;
      self->keep_alive_ = false;
      if (!self->exchange_) return self->close();  // idle: nothing to flush
      self->fire_cancel();
    });
  }

  // --- called on the strand via ExchangeImpl; `who` is the caller ---
  void respond(const ExchangeImpl<Stream>* who, Response r) {
    if (!current(who) || responding_) return;
    responding_ = true;
    bool head_only = current_method_ == "HEAD";
    std::string bytes = serialize_head(r, r.body.size(), keep_alive_);
    if (!head_only) bytes += r.body;
    enqueue(std::move(bytes), true);
  }
  void begin_stream(const ExchangeImpl<Stream>* who, Response head) {
    if (!current(who) || responding_) return;
    responding_ = streaming_ = true;
    head.headers.set("Transfer-Encoding", "chunked");
    enqueue(serialize_head(head, std::nullopt, keep_alive_), false);
    // watch_peer() does not read behind pipelined bytes; but a stream (a
    // watch) may never end, and one that writes nothing would then outlive
    // a client long gone.  Watch for its leaving without reading.
    if (!watching_ && !peer_gone_ && buffer_.size() > 0) peek_peer();
  }
  void write_chunk(const ExchangeImpl<Stream>* who, std::string data) {
    if (!current(who) || !streaming_ || data.empty()) return;
    char size[20];
    int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
    std::string bytes(size, n);
    bytes += data;
    bytes += "\r\n";
    enqueue(std::move(bytes), false);
  }
  void end_stream(const ExchangeImpl<Stream>* who) {
    if (!current(who) || !streaming_) return;
    streaming_ = false;
    enqueue("0\r\n\r\n", true);
  }
  void set_cancel(ExchangeImpl<Stream>* who, std::function<void()> f) {
    // Not the current exchange: it is over.  If it ended by cancellation the
    // callback is still owed (the handler may have registered it late, after
    // the client left); if it was answered, there is nothing to cancel.
    if (!current(who) || cancelled_) {
      if (who->cancelled_) f();
      return;
    }
    cancel_ = std::move(f);
  }

 private:
  bool current(const ExchangeImpl<Stream>* who) const {
    return exchange_ && exchange_.get() == who;
  }

  void read_peer_cn() {
    if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
      X509* cert = SSL_get_peer_certificate(stream_.native_handle());
      if (!cert) return;
      char buf[256] = {0};
      X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
      peer_cn_ = buf;
      X509_free(cert);
    }
  }

  void read_request() {
    if (stopping_) return close();
    arm_idle_timer();
    parser_ = std::make_unique<http::request_parser<http::string_body>>();
    parser_->header_limit(static_cast<std::uint32_t>(server_->options_.header_limit));
    parser_->body_limit(server_->options_.body_limit);
    beast::get_lowest_layer(stream_).expires_after(server_->options_.idle_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](boost::system::error_code ec, std::size_t) {
          self->on_header(ec);
        });
  }

  void on_header(boost::system::error_code ec) {
    idle_timer_.cancel();
    if (ec) return on_read_error(ec);
    auto& req = parser_->get();
    if (auto len = parser_->content_length(); len && *len > server_->options_.body_limit)
      return reject(413, "request body is larger than the limit of " +
                             std::to_string(server_->options_.body_limit) + " bytes\n");
    beast::get_lowest_layer(stream_).expires_after(server_->options_.request_timeout);
    auto read_body = [self = this->shared_from_this()] {
      http::async_read(self->stream_, self->buffer_, *self->parser_,
                       [self](boost::system::error_code ec, std::size_t) { self->on_request(ec); });
    };
    if (req[http::field::expect] == "100-continue") {
      // curl sends this before large bodies and waits for our go-ahead.
      auto cont = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
      asio::async_write(stream_, asio::buffer(*cont),
                        [cont, read_body, self = this->shared_from_this()](
                            boost::system::error_code ec, std::size_t) {
                          if (ec) return self->close();
                          read_body();
                        });
      return;
    }
    if (parser_->is_done()) return on_request({});
    read_body();
  }

  void on_read_error(boost::system::error_code ec) {
    if (ec == http::error::header_limit)
      return reject(431, "request header fields are larger than the limit of " +
                             std::to_string(server_->options_.header_limit) + " bytes\n");
    if (ec == http::error::body_limit)
      return reject(413, "request body is larger than the limit of " +
                             std::to_string(server_->options_.body_limit) + " bytes\n");
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
        ec == asio::ssl::error::stream_truncated)
      return close();
    if (ec.category() == boost::system::error_code(http::error::bad_target).category())
      return reject(400, "malformed HTTP request: " + ec.message() + "\n");
    close();
  }

  // Answers a request that could not be read whole, then closes.
  void reject(int status, std::string text) {
    keep_alive_ = false;
    exchange_.reset();
    auto r = Response::text(status, std::move(text));
    rejecting_ = true;
    enqueue(serialize_head(r, r.body.size(), false) + r.body, true);
  }

  void on_request(boost::system::error_code ec) {
    if (ec) return on_read_error(ec);
    auto msg = parser_->release();
    parser_.reset();  // its buffers are not needed while the answer is pending
    Request req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    req.headers.reserve(static_cast<std::size_t>(std::distance(msg.begin(), msg.end())));
    for (auto& f : msg) req.headers.add(std::string(f.name_string()), std::string(f.value()));
    req.body = std::move(msg.body());
    req.keep_alive = msg.keep_alive();
    keep_alive_ = req.keep_alive && !stopping_;
    current_method_ = req.method;
    responding_ = streaming_ = cancelled_ = false;
    cancel_ = nullptr;
    beast::get_lowest_layer(stream_).expires_never();
    const bool grpc_over_http1 =
        server_->http2() &&
        req.headers.get("Content-Type").value_or("").rfind("application/grpc", 0) == 0;
    exchange_ = std::make_shared<ExchangeImpl<Stream>>(this->shared_from_this(), std::move(req),
                                                       remote_, peer_cn_);
    watch_peer();
    if (grpc_over_http1) {
      // What grpc-go's ServeHTTP answers an HTTP/1.x gRPC request.
      log::warn(kCaller, "gRPC request over HTTP/1.1; gRPC needs HTTP/2",
                {{"remote-addr", remote_}, {"path", exchange_->request().target}});
      exchange_->respond(Response::text(400, "gRPC requires HTTP/2\n"));
      return;
    }
    server_->handler_(exchange_);
  }

  // While a request is being answered, keep one read pending so that we learn
  // at once when the client goes away (long-polls must not linger).  Bytes
  // that arrive are the client's next request: keep them for the parser.
  //
  // A pipelining client has already sent (part of) its next request: then the
  // parser must get those bytes once this answer is out, and a read here
  // would wait for bytes that may never come, stalling the connection.
  void watch_peer() {
    if (watching_ || peer_gone_ || buffer_.size() > 0) return;
    watching_ = true;
    // Nothing is buffered: give the read buffer back while the answer is
    // pending (a long-poll may wait for minutes; 10,000 of them would hold
    // 40 MB of idle buffers) and wait for readability without one.
    buffer_.shrink_to_fit();
    beast::get_lowest_layer(stream_).socket().async_wait(
        tcp::socket::wait_read, [self = this->shared_from_this()](boost::system::error_code ec) {
          if (ec) return self->peer_left();
          self->stream_.async_read_some(
              self->buffer_.prepare(512), [self](boost::system::error_code ec, std::size_t n) {
                if (ec) return self->peer_left();
                self->watching_ = false;
                self->buffer_.commit(n);
                if (!self->exchange_) self->read_request();
              });
        });
  }
  // The client pipelined bytes behind a stream: wait until the socket is
  // readable and peek.  End of stream (or an error) is the client leaving;
  // more bytes say it is still there.  after_response() cancels the wait
  // when the stream ends, and the parser then takes the pipelined request.
  void peek_peer() {
    watching_ = peeking_ = true;
    beast::get_lowest_layer(stream_).socket().async_wait(
        tcp::socket::wait_read, [self = this->shared_from_this()](boost::system::error_code ec) {
          self->watching_ = self->peeking_ = false;
          if (self->closed_) return;
          if (!self->exchange_) return self->read_request();  // the stream ended meanwhile
          if (ec) return self->peer_left();
          char b;
          const ssize_t n =
              ::recv(beast::get_lowest_layer(self->stream_).socket().native_handle(), &b, 1,
                     MSG_PEEK | MSG_DONTWAIT);
          if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return self->peek_peer();
          if (n <= 0) return self->peer_left();
          // More of the pipelined request: keep it for the parser and look
          // again, or a client that sends it and then leaves is never
          // noticed (fuzz_client_http: a watch with an empty body and bytes
          // behind it outlived its client).  Past kMaxPipelined the socket
          // is left alone, as before.
          if (self->buffer_.size() >= kMaxPipelined) return;
          self->watching_ = self->peeking_ = true;
          self->stream_.async_read_some(
              self->buffer_.prepare(4096), [self](boost::system::error_code ec, std::size_t n) {
                self->watching_ = self->peeking_ = false;
                if (self->closed_) return;
                self->buffer_.commit(n);
                if (!self->exchange_) return self->read_request();  // the stream ended
                if (ec) return self->peer_left();
                self->peek_peer();
              });
        });
  }
  static constexpr std::size_t kMaxPipelined = 64 * 1024;
  void peer_left() {
    watching_ = false;
    peer_gone_ = true;
    fire_cancel();
    if (!writing_) close();
  }

  void fire_cancel() {
    if (cancelled_ || !exchange_) return;
    cancelled_ = true;
    exchange_->cancelled_ = true;
    if (peer_gone_) exchange_->finished_ = true;
    if (auto f = std::move(cancel_)) f();
  }

  // HTTP/1.1 answers one exchange at a time, so everything queued is one
  // byte stream; `last` (the end of the exchange's answer) is only ever the
  // final piece queued.  Pieces queued while a write is in flight go out
  // together in the next write.
  void enqueue(std::string bytes, bool last) {
    if (peer_gone_) {
      if (last) finish_exchange();
      return;
    }
    if (out_.empty())
      out_ = std::move(bytes);
    else
      out_ += bytes;
    if (last) out_ends_exchange_ = true;
    if (!writing_) write_next();
  }

  void write_next() {
    if (out_.empty() && !out_ends_exchange_) return;
    writing_ = true;
    in_flight_ = std::move(out_);
    out_.clear();
    const bool last = std::exchange(out_ends_exchange_, false);
    asio::async_write(stream_, asio::buffer(in_flight_),
                      [self = this->shared_from_this(), last](boost::system::error_code ec,
                                                              std::size_t) {
                        self->writing_ = false;
                        self->in_flight_ = std::string();  // idle connections hold no buffer
                        if (ec) {
                          self->peer_gone_ = true;
                          self->fire_cancel();
                          self->out_.clear();
                          self->out_ends_exchange_ = false;
                          return self->close();
                        }
                        if (last) {
                          self->after_response();
                        } else if (self->peer_gone_) {
                          // The client left while this piece was in flight
                          // (peer_left() leaves the close to us): nothing
                          // more goes out, and no answer will end it.
                          return self->close();
                        }
                        self->write_next();
                      });
  }

  void finish_exchange() {
    if (exchange_) exchange_->finished_ = true;
    exchange_.reset();
    cancel_ = nullptr;
  }

  void after_response() {
    finish_exchange();
    if (rejecting_ && !peer_gone_) return linger();
    if (rejecting_ || !keep_alive_ || peer_gone_) return close();
    // A pending watch read will deliver the next request's first bytes;
    // a peek behind pipelined bytes is cancelled and reads them.
    if (watching_) {
      if (peeking_) {
        boost::system::error_code ignored;
        beast::get_lowest_layer(stream_).socket().cancel(ignored);
      }
      arm_idle_timer();
      return;
    }
    read_request();
  }

  // After refusing a request that may still be arriving (a body over the
  // limit, headers past the limit): send FIN, then read and discard what the
  // client still sends, for a bounded time and amount, before closing.
  // Closing at once with unread bytes makes the kernel send a reset, and a
  // client still writing its body then loses our answer (RFC 9112 9.6).
  // Reads go to the TCP layer under TLS too: the bytes are thrown away.
  void linger() {
    boost::system::error_code ignored;
    auto& tcp_layer = beast::get_lowest_layer(stream_);
    tcp_layer.socket().shutdown(tcp::socket::shutdown_send, ignored);
    tcp_layer.expires_after(kLingerTime);
    linger_buf_ = std::make_unique<std::array<char, 4096>>();
    drain(0);
  }
  void drain(std::size_t so_far) {
    if (so_far >= kLingerBytes) return close();
    beast::get_lowest_layer(stream_).async_read_some(
        asio::buffer(*linger_buf_),
        [self = this->shared_from_this(), so_far](boost::system::error_code ec, std::size_t n) {
          if (ec) return self->close();  // EOF (the client is done), timeout or error
          self->drain(so_far + n);
        });
  }
  static constexpr std::chrono::seconds kLingerTime{2};
  static constexpr std::size_t kLingerBytes = 64 * 1024 * 1024;

  void arm_idle_timer() {
    idle_timer_.expires_after(server_->options_.idle_timeout);
    idle_timer_.async_wait([self = this->shared_from_this()](boost::system::error_code ec) {
      if (!ec && !self->exchange_) self->close();
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    idle_timer_.cancel();
    boost::system::error_code ignored;
    auto& sock = beast::get_lowest_layer(stream_).socket();
    sock.shutdown(tcp::socket::shutdown_both, ignored);
    sock.close(ignored);
    fire_cancel();
    finish_exchange();
    // The socket is gone: stop counting it against max_connections even if a
    // handler still holds its exchange (and so this object) for a while.
    server_->remove(this);
  }

  std::shared_ptr<Server::Impl> server_;
  Stream stream_;
  asio::steady_timer idle_timer_;
  beast::flat_buffer buffer_;
  // Only while lingering (see linger()): most connections never need it.
  std::unique_ptr<std::array<char, 4096>> linger_buf_;
  std::unique_ptr<http::request_parser<http::string_body>> parser_;  // while reading
  std::shared_ptr<ExchangeImpl<Stream>> exchange_;
  std::function<void()> cancel_;
  std::string out_, in_flight_;  // queued; being written
  bool out_ends_exchange_ = false;
  std::string remote_, peer_cn_, current_method_;
  bool keep_alive_ = true, responding_ = false, streaming_ = false, cancelled_ = false;
  bool writing_ = false, watching_ = false, peeking_ = false, peer_gone_ = false, closed_ = false;
  bool stopping_ = false, rejecting_ = false, handshaken_ = false, sniffed_ = false;
};

template <class Stream>
template <class F>
void ExchangeImpl<Stream>::post(F&& f) {
  // The exchange keeps itself alive until the strand has run `f`.
  asio::post(conn_->executor(),
             [self = this->shared_from_this(), f = std::forward<F>(f)]() mutable {
               f(*self->conn_, self.get());
             });
}

}  // namespace

void Server::Impl::start_connection(tcp::socket socket) {
  socket.set_option(tcp::no_delay(true));
  std::shared_ptr<ConnectionBase> base;
  if (tls_) {
    auto c = std::make_shared<Connection<beast::ssl_stream<beast::tcp_stream>>>(
        shared_from_this(), beast::ssl_stream<beast::tcp_stream>(std::move(socket), *tls_));
    if (!add(c)) return;
    c->start();
  } else {
    auto c = std::make_shared<Connection<beast::tcp_stream>>(shared_from_this(),
                                                             beast::tcp_stream(std::move(socket)));
    if (!add(c)) return;
    c->start();
  }
}

Server::Server(asio::io_context& io, ServerOptions options, Handler handler)
    : impl_(std::make_shared<Impl>(io, std::move(options), std::move(handler))) {}

Server::~Server() { impl_->stop(); }

uint16_t Server::listen(const std::string& host, uint16_t port) {
  return impl_->listen(host, port);
}

uint16_t Server::bind(const std::string& host, uint16_t port) {
  return impl_->bind(host, port, false);
}

void Server::accept_connections() { impl_->accept_connections(); }

void Server::stop() { impl_->stop(); }

bool Server::wait_closed(std::chrono::milliseconds timeout) { return impl_->wait_closed(timeout); }

std::size_t Server::open_connections() const { return impl_->open_connections(); }

}  // namespace muster::net
