// grpc_fd_server: option (a) of issue 12 as a benchmark server.
//
// A grpc++ server with no listening port of its own.  Our Boost.Asio acceptor
// accepts plaintext connections on a loopback port, peeks the HTTP/2 client
// preface (as the member's client port would, to tell HTTP/2 from
// HTTP/1.1), sets TCP_NODELAY and O_NONBLOCK, releases the descriptor and
// hands it to grpc++ with grpc::AddInsecureChannelFromFd.  grpc++ serves
// /etcdserverpb.KV/Put and /etcdserverpb.KV/Range with the trivial handler
// (trivial_kv.h) on its own callback threads.
//
// With --cert/--key the acceptor terminates TLS itself (net/'s server TLS
// context, ALPN h2) and relays the plaintext over an AF_UNIX socketpair
// whose other end goes to grpc++: the way research/grpc.md found to keep one
// TLS stack and one port.
//
// Usage: grpc_fd_server [--listen 127.0.0.1:0] [--acceptor-threads 1]
//                       [--cert server.pem --key server-key.pem]
// Prints "listening on HOST:PORT" once ready; stops on SIGTERM/SIGINT and
// prints the number of requests it answered.
#include <fcntl.h>
#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/server_posix.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "kv_bench.grpc.pb.h"
#include "net/tls.h"
#include "trivial_kv.h"

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

// The first bytes of the HTTP/2 client connection preface (RFC 9113 3.4).
constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

std::atomic<uint64_t> g_answered{0};

class KvService final : public etcdserverpb::KV::CallbackService {
 public:
  grpc::ServerUnaryReactor* Range(grpc::CallbackServerContext* ctx,
                                  const etcdserverpb::RangeRequest* req,
                                  etcdserverpb::RangeResponse* resp) override {
    kv_.range(*req, resp);
    return answer(ctx);
  }
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx,
                                const etcdserverpb::PutRequest* req,
                                etcdserverpb::PutResponse* resp) override {
    kv_.put(*req, resp);
    return answer(ctx);
  }

 private:
  static grpc::ServerUnaryReactor* answer(grpc::CallbackServerContext* ctx) {
    g_answered.fetch_add(1, std::memory_order_relaxed);
    auto* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }

  muster::bench::TrivialKv kv_;
};

bool hand_over(int fd, grpc::Server* server);

// One accepted connection until its preface is seen: then its descriptor
// belongs to grpc++.
class Handoff : public std::enable_shared_from_this<Handoff> {
 public:
  Handoff(tcp::socket s, grpc::Server* server) : socket_(std::move(s)), server_(server) {}

  void start() {
    boost::system::error_code ec;
    socket_.set_option(tcp::no_delay(true), ec);
    wait();
  }

 private:
  void wait() {
    socket_.async_wait(tcp::socket::wait_read,
                       [self = shared_from_this()](boost::system::error_code ec) {
                         if (!ec) self->peek();
                       });
  }

  void peek() {
    std::array<char, kPreface.size()> buf;
    ssize_t n = ::recv(socket_.native_handle(), buf.data(), buf.size(), MSG_PEEK);
    if (n <= 0) return;  // closed or failed: the socket closes with us
    if (std::string_view(buf.data(), n) != kPreface.substr(0, n)) return;  // not HTTP/2
    if (static_cast<std::size_t>(n) < kPreface.size()) {
      wait();  // the rest of the preface is still in flight
      return;
    }
    boost::system::error_code ec;
    int fd = socket_.release(ec);
    if (!ec) hand_over(fd, server_);
  }

  tcp::socket socket_;
  grpc::Server* server_;
};

// Hands a descriptor to grpc++ as a plaintext HTTP/2 connection.
bool hand_over(int fd, grpc::Server* server) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    ::close(fd);
    return false;
  }
  grpc::AddInsecureChannelFromFd(server, fd);
  return true;
}

// One TLS connection: the handshake here, then plaintext copied both ways
// between the TLS stream and our end of a socketpair; grpc++ has the other
// end.  All on the connection's strand.
class TlsRelay : public std::enable_shared_from_this<TlsRelay> {
 public:
  TlsRelay(tcp::socket s, asio::ssl::context& ctx, grpc::Server* server)
      : tls_(std::move(s), ctx), plain_(tls_.get_executor()), server_(server) {}

  void start() {
    boost::system::error_code ec;
    tls_.lowest_layer().set_option(tcp::no_delay(true), ec);
    tls_.async_handshake(asio::ssl::stream_base::server,
                         [self = shared_from_this()](boost::system::error_code ec) {
                           if (!ec) self->connect();
                         });
  }

 private:
  void connect() {
    asio::local::stream_protocol::socket grpc_end(tls_.get_executor());
    boost::system::error_code ec;
    asio::local::connect_pair(plain_, grpc_end, ec);
    if (ec) return;
    int fd = grpc_end.release(ec);
    if (ec || !hand_over(fd, server_)) return;
    up();
    down();
  }

  // client -> grpc++
  void up() {
    tls_.async_read_some(asio::buffer(up_),
                         [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                           if (ec) return self->close();
                           asio::async_write(self->plain_, asio::buffer(self->up_, n),
                                             [self](boost::system::error_code ec, std::size_t) {
                                               if (ec) return self->close();
                                               self->up();
                                             });
                         });
  }

  // grpc++ -> client
  void down() {
    plain_.async_read_some(asio::buffer(down_), [self = shared_from_this()](
                                                    boost::system::error_code ec, std::size_t n) {
      if (ec) return self->close();
      asio::async_write(self->tls_, asio::buffer(self->down_, n),
                        [self](boost::system::error_code ec, std::size_t) {
                          if (ec) return self->close();
                          self->down();
                        });
    });
  }

  void close() {
    boost::system::error_code ec;
    plain_.close(ec);
    tls_.lowest_layer().close(ec);
  }

  asio::ssl::stream<tcp::socket> tls_;
  asio::local::stream_protocol::socket plain_;
  grpc::Server* server_;
  std::array<char, 64 * 1024> up_;
  std::array<char, 64 * 1024> down_;
};

// ALPN: the client must offer h2, as gRPC over TLS requires.
int select_h2(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
              unsigned int inlen, void*) {
  static constexpr unsigned char kH2[] = {2, 'h', '2'};
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, outlen, kH2, sizeof kH2, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

void accept_loop(tcp::acceptor& acceptor, asio::ssl::context* tls, grpc::Server* server) {
  acceptor.async_accept(asio::make_strand(acceptor.get_executor()),
                        [&acceptor, tls, server](boost::system::error_code ec, tcp::socket s) {
                          if (ec == asio::error::operation_aborted) return;
                          if (!ec) {
                            if (tls)
                              std::make_shared<TlsRelay>(std::move(s), *tls, server)->start();
                            else
                              std::make_shared<Handoff>(std::move(s), server)->start();
                          }
                          accept_loop(acceptor, tls, server);
                        });
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:0";
  int acceptor_threads = 1;
  std::string cert, key;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view a = argv[i];
    if (a == "--listen") {
      listen = argv[i + 1];
    } else if (a == "--acceptor-threads") {
      acceptor_threads = std::stoi(argv[i + 1]);
    } else if (a == "--cert") {
      cert = argv[i + 1];
    } else if (a == "--key") {
      key = argv[i + 1];
    } else {
      std::fprintf(stderr,
                   "usage: %s [--listen HOST:PORT] [--acceptor-threads N] [--cert F --key F]\n",
                   argv[0]);
      return 2;
    }
  }
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "--listen wants HOST:PORT\n");
    return 2;
  }

  KvService service;
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  // etcd 3.4's server settings (research/grpc.md): receive limit 1.5 MiB +
  // 512 KiB, unlimited send, unlimited streams, keepalive enforcement at 5 s
  // without strikes (gRPC core's default of 5 min and 2 strikes would send
  // etcdctl's idle watches GOAWAY too_many_pings), server pings after 2 h
  // idle with a 20 s timeout.
  builder.SetMaxReceiveMessageSize(1536 * 1024 + 512 * 1024);
  builder.SetMaxSendMessageSize(INT_MAX);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, INT_MAX);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 2 * 3600 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();  // no port: fds only
  if (!server) {
    std::fprintf(stderr, "grpc++ server did not start\n");
    return 1;
  }

  asio::io_context io;
  tcp::acceptor acceptor(io);
  tcp::endpoint ep(asio::ip::make_address(listen.substr(0, colon)),
                   static_cast<uint16_t>(std::stoi(listen.substr(colon + 1))));
  acceptor.open(ep.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  acceptor.bind(ep);
  acceptor.listen();
  std::shared_ptr<asio::ssl::context> tls;
  if (!cert.empty()) {
    muster::net::TlsOptions o;
    o.cert_file = cert;
    o.key_file = key;
    tls = muster::net::make_server_tls_context(o);
    SSL_CTX_set_alpn_select_cb(tls->native_handle(), select_h2, nullptr);
  }
  accept_loop(acceptor, tls.get(), server.get());

  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](boost::system::error_code, int) {
    boost::system::error_code ec;
    acceptor.close(ec);
    io.stop();
  });

  std::printf("listening on %s:%u\n", ep.address().to_string().c_str(),
              acceptor.local_endpoint().port());
  std::fflush(stdout);

  std::vector<std::thread> threads;
  for (int i = 1; i < acceptor_threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();

  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  std::printf("answered %llu\n", static_cast<unsigned long long>(g_answered.load()));
  return 0;
}
