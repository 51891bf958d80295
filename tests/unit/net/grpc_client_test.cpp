// net::grpc::Channel (the HTTP/2 gRPC client) against net::Server's HTTP/2
// side: unary and streaming calls, status and message, deadlines, cancel,
// many calls on one connection, a server that is not there, TLS with ALPN.
#include "net/grpc_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>

#include "net/tls.h"
#include "tests/unit/net/net_test_support.h"

namespace muster::net::testing {
namespace {

namespace grpc = net::grpc;

// Echo, Fail and Hang methods, as tests/integration/h2/echo_server.cpp.
std::atomic<int> g_calls{0};

void echo_handler(std::shared_ptr<grpc::Call> call, std::atomic<int>* cancels) {
  ++g_calls;
  std::weak_ptr<grpc::Call> weak = call;
  grpc::Call::Listener l;
  l.on_cancel = [cancels] { ++*cancels; };
  if (call->method() == "/t.E/Echo") {
    l.on_message = [weak](std::string m) {
      if (auto c = weak.lock()) c->send(std::move(m));
    };
    l.on_half_close = [weak] {
      if (auto c = weak.lock()) c->finish({});
    };
  } else if (call->method() == "/t.E/Fail") {
    l.on_message = [weak](std::string m) {
      if (auto c = weak.lock()) c->finish({grpc::Code::kNotFound, m});
    };
  } else if (call->method() != "/t.E/Hang") {
    return;
  }
  call->start(std::move(l));
}

struct Result {
  std::vector<std::string> messages;
  grpc::Status status;
};

class ClientIo {
 public:
  ClientIo() : guard_(boost::asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}
  ~ClientIo() {
    guard_.reset();
    io_.stop();
    thread_.join();
  }
  boost::asio::io_context& io() { return io_; }
  // Lets the io thread run until it is out of work (`limit` at most).
  bool drain(std::chrono::milliseconds limit = 5000ms) {
    guard_.reset();
    return wait_until([&] { return io_.stopped(); }, limit);
  }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::thread thread_;
};

std::shared_ptr<Slot<Result>> call(grpc::Channel& ch, const std::string& method,
                                   std::vector<std::string> msgs,
                                   std::optional<std::chrono::milliseconds> timeout = {},
                                   bool half_close = true,
                                   std::shared_ptr<grpc::ClientCall>* out = nullptr) {
  auto slot = std::make_shared<Slot<Result>>();
  auto acc = std::make_shared<Result>();
  grpc::ClientListener l;
  l.on_message = [acc](std::string m) { acc->messages.push_back(std::move(m)); };
  l.on_finish = [acc, slot](grpc::Status s) {
    acc->status = std::move(s);
    slot->set(*acc);
  };
  auto c = ch.call(method, {}, std::move(l), timeout);
  for (auto& m : msgs) c->send(m);
  if (half_close) c->half_close();
  if (out) *out = c;
  return slot;
}

ServerOptions grpc_options(std::atomic<int>* cancels) {
  ServerOptions o;
  o.grpc_handler = [cancels](std::shared_ptr<grpc::Call> c) {
    echo_handler(std::move(c), cancels);
  };
  return o;
}

Handler http_ok() {
  return [](std::shared_ptr<Exchange> ex) { ex->respond(Response::text(200, "ok\n")); };
}

TEST(GrpcClient, UnaryStreamAndErrorsOverOneConnection) {
  std::atomic<int> cancels{0};
  RunningServer srv(http_ok(), grpc_options(&cancels));
  ClientIo cio;
  grpc::Channel ch(cio.io(), {"127.0.0.1", srv.port()});
  auto r = call(ch, "/t.E/Echo", {"hello"})->wait();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->status.ok()) << r->status.message;
  EXPECT_EQ(r->messages, std::vector<std::string>{"hello"});

  std::string big(3 << 20, 'b');
  r = call(ch, "/t.E/Echo", {"a", "", std::string(100000, 'x'), "c"})->wait();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->messages.size(), 4u);
  EXPECT_EQ(r->messages[2].size(), 100000u);

  r = call(ch, "/t.E/Fail", {"etcdserver: requested lease not found 100%"})->wait();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status.code, grpc::Code::kNotFound);
  EXPECT_EQ(r->status.message, "etcdserver: requested lease not found 100%");

  r = call(ch, "/no.Such/Method", {"x"})->wait();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status.code, grpc::Code::kUnimplemented);

  // Over the default 2 MiB receive limit: RESOURCE_EXHAUSTED, connection kept.
  r = call(ch, "/t.E/Echo", {big})->wait();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status.code, grpc::Code::kResourceExhausted) << r->status.message;

  std::vector<std::shared_ptr<Slot<Result>>> many;
  for (int i = 0; i < 1000; ++i) many.push_back(call(ch, "/t.E/Echo", {std::to_string(i)}));
  for (int i = 0; i < 1000; ++i) {
    auto got = many[i]->wait(10s);
    ASSERT_TRUE(got) << i;
    ASSERT_EQ(got->messages, std::vector<std::string>{std::to_string(i)});
  }
  EXPECT_EQ(srv.server().open_connections(), 1u);
}

TEST(GrpcClient, DeadlineAndCancelReachTheServer) {
  std::atomic<int> cancels{0};
  RunningServer srv(http_ok(), grpc_options(&cancels));
  ClientIo cio;
  grpc::Channel ch(cio.io(), {"127.0.0.1", srv.port()});
  auto r = call(ch, "/t.E/Hang", {"x"}, 200ms)->wait();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status.code, grpc::Code::kDeadlineExceeded);
  EXPECT_TRUE(wait_until([&] { return cancels.load() == 1; }));

  std::shared_ptr<grpc::ClientCall> c;
  const int before = g_calls.load();
  auto slot = call(ch, "/t.E/Hang", {"x"}, std::nullopt, false, &c);
  ASSERT_TRUE(wait_until([&] { return g_calls.load() > before; }));  // it reached the server
  c->cancel();
  r = slot->wait();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status.code, grpc::Code::kCancelled);
  EXPECT_TRUE(wait_until([&] { return cancels.load() == 2; }));
}

TEST(GrpcClient, NoServerIsUnavailableWithTheReason) {
  ClientIo cio;
  uint16_t port;
  {
    RunningServer gone(http_ok());
    port = gone.port();
  }
  grpc::Channel ch(cio.io(), {"127.0.0.1", port});
  auto r = call(ch, "/t.E/Echo", {"x"})->wait();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status.code, grpc::Code::kUnavailable);
  EXPECT_EQ(r->status.message.rfind("cannot connect to 127.0.0.1:", 0), 0u) << r->status.message;
}

// The test gRPC server on TLS (a self-signed certificate for 127.0.0.1),
// and channel options that trust it.
struct TlsServer {
  TempDir dir;
  const std::string cert = dir.file("c.pem"), key = dir.file("k.pem");
  std::atomic<int> cancels{0};
  std::unique_ptr<RunningServer> srv;
  grpc::ChannelOptions co;
  TlsServer() {
    write_self_signed_certificate({{"127.0.0.1", "localhost"}}, cert, key);
    ServerOptions so = grpc_options(&cancels);
    so.tls = TlsOptions{};
    so.tls->cert_file = cert;
    so.tls->key_file = key;
    srv = std::make_unique<RunningServer>(http_ok(), so);
    co.host = "127.0.0.1";
    co.port = srv->port();
    co.tls = TlsOptions{};
    co.tls->trusted_ca_file = cert;
  }
};

// One unary Echo over `ch` is answered with its message.
void expect_echo(grpc::Channel& ch) {
  auto r = call(ch, "/t.E/Echo", {"over tls"})->wait();
  ASSERT_TRUE(r);
  ASSERT_TRUE(r->status.ok()) << r->status.message;
  EXPECT_EQ(r->messages, std::vector<std::string>{"over tls"});
}

TEST(GrpcClient, TlsWithAlpnH2) {
  TlsServer tls;
  ClientIo cio;
  grpc::Channel ch(cio.io(), tls.co);
  ASSERT_NO_FATAL_FAILURE(expect_echo(ch));

  // A certificate for another name is refused by the client.
  grpc::ChannelOptions wrong = tls.co;
  wrong.tls->server_name = "other.example";
  grpc::Channel ch2(cio.io(), wrong);
  auto r = call(ch2, "/t.E/Echo", {"x"})->wait();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status.code, grpc::Code::kUnavailable);
  EXPECT_NE(r->status.message.find("TLS handshake"), std::string::npos) << r->status.message;
}

// Closing a TLS channel closes its socket with a read always pending (and
// a write perhaps): their completions run later and reach into the TLS
// stream, which must still be there.  It was freed at once (ASan:
// heap-use-after-free in members whose --discovery-endpoints were https,
// found by the sanitized integration suite).
TEST(GrpcClient, ClosingATlsChannelKeepsItsStreamUntilPendingIoCompletes) {
  TlsServer tls;
  ClientIo cio;
  grpc::Channel ch(cio.io(), tls.co);
  ASSERT_NO_FATAL_FAILURE(expect_echo(ch));
  // A call left open, then the channel closed under it: the call ends, and
  // the aborted reads and writes complete on a stream that still exists.
  const int before = g_calls.load();
  auto open = call(ch, "/t.E/Hang", {"x"}, std::nullopt, false);
  ASSERT_TRUE(wait_until([&] { return g_calls.load() > before; }));  // it reached the server
  ch.close();
  auto ended = open->wait();
  ASSERT_TRUE(ended);
  EXPECT_EQ(ended->status.code, grpc::Code::kUnavailable);
  EXPECT_TRUE(cio.drain()) << "the channel's io never completed";
}

TEST(GrpcWire, PercentEncodingFramingAndTimeouts) {
  EXPECT_EQ(grpc::percent_encode("a b%\n\xc3\xbc"), "a b%25%0A%C3%BC");
  EXPECT_EQ(grpc::percent_decode("a b%25%0A%C3%BC"), "a b%\n\xc3\xbc");
  EXPECT_EQ(grpc::percent_decode("100%"), "100%");
  EXPECT_EQ(grpc::frame_message("ab"), std::string("\0\0\0\0\2ab", 7));
  EXPECT_EQ(grpc::parse_timeout("100m"), std::chrono::milliseconds(100));
  EXPECT_EQ(grpc::parse_timeout("5S"), std::chrono::seconds(5));
  EXPECT_EQ(grpc::parse_timeout("1H"), std::chrono::hours(1));
  EXPECT_FALSE(grpc::parse_timeout("m"));
  EXPECT_FALSE(grpc::parse_timeout("123456789m"));
  EXPECT_FALSE(grpc::parse_timeout("10x"));
}

}  // namespace
}  // namespace muster::net::testing
