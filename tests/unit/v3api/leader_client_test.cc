// LeaderClient (node/server/leader_client.h) against a real gRPC server:
// net::Server speaking HTTP/2 on loopback with V3Grpc over LocalMember, the
// way a follower reaches its leader's client URL.
#include "node/server/leader_client.h"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <future>
#include <thread>

#include "net/server.h"
#include "node/server/v3_grpc.h"
#include "tests/unit/v3api/local_member.h"

namespace muster::server::testing {
namespace {

using namespace std::chrono_literals;

class LeaderClientTest : public ::testing::Test {
 protected:
  LeaderClientTest()
      : member_(dir_.path()), service_(member_, {}, registry_), grpc_(service_, registry_) {
    net::ServerOptions so;
    so.grpc_handler = grpc_.handler();
    server_ = std::make_unique<net::Server>(io_, so, [](std::shared_ptr<net::Exchange> ex) {
      ex->respond(net::Response::text(404, "no\n"));
    });
    port_ = server_->listen("127.0.0.1", 0);
    // A port nobody listens on: bind one and close it.
    {
      net::Server tmp(io_, {}, [](std::shared_ptr<net::Exchange>) {});
      dead_port_ = tmp.listen("127.0.0.1", 0);
      tmp.stop();
    }
    thread_ = std::thread([this] { io_.run(); });
    client_ = std::make_unique<LeaderClient>(io_, net::TlsOptions{}, 2000ms, [this](uint64_t id) {
      std::vector<std::string> urls;
      if (id == 1) urls = {url(dead_port_), url(port_)};
      return urls;
    });
  }
  ~LeaderClientTest() override {
    client_.reset();
    server_->stop();
    guard_.reset();
    thread_.join();
  }
  static std::string url(uint16_t port) { return "http://127.0.0.1:" + std::to_string(port); }

  std::pair<storage::Status, int64_t> keepalive(uint64_t leader, int64_t lease) {
    std::promise<std::pair<storage::Status, int64_t>> p;
    client_->keepalive(leader, lease, [&p](storage::Status s, int64_t ttl) {
      p.set_value({s, ttl});
    });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(10s), std::future_status::ready);
    return f.get();
  }

  ScratchDir dir_;
  LocalMember member_;
  metrics::Registry registry_;
  V3Service service_;
  V3Grpc grpc_;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{
      io_.get_executor()};
  std::unique_ptr<net::Server> server_;
  uint16_t port_ = 0, dead_port_ = 0;
  std::thread thread_;
  std::unique_ptr<LeaderClient> client_;
};

TEST_F(LeaderClientTest, KeepaliveReachesTheLeaderPastADeadUrl) {
  pb::LeaseGrantRequest g;
  g.set_ttl(30);
  std::promise<int64_t> id;
  service_.lease_grant(g,
                       [&id](storage::Status, pb::LeaseGrantResponse r) { id.set_value(r.id()); });
  const int64_t lease = id.get_future().get();
  auto [s, ttl] = keepalive(1, lease);
  EXPECT_TRUE(s) << s.to_string();
  EXPECT_EQ(ttl, 30);
  // Many at once share the connection.
  std::vector<std::future<int64_t>> many;
  for (int i = 0; i < 20; ++i)
    many.push_back(std::async(std::launch::async, [&] { return keepalive(1, lease).second; }));
  for (auto& f : many) EXPECT_EQ(f.get(), 30);

  auto [nf, zero] = keepalive(1, 999);
  EXPECT_EQ(nf.code(), storage::Code::kNotFound);
  EXPECT_EQ(nf.message(), "etcdserver: requested lease not found");
}

TEST_F(LeaderClientTest, LeaderErrorsPassThroughAndNoLeaderUrlTimesOut) {
  std::promise<storage::Status> p;
  client_->promote(1, 0x4242, [&p](storage::Status s) { p.set_value(s); });
  storage::Status s = p.get_future().get();
  EXPECT_EQ(s.code(), storage::Code::kNotFound);
  EXPECT_EQ(s.message(), "etcdserver: member not found");

  auto [t, ttl] = keepalive(7, 1);  // no URL known for member 7
  EXPECT_EQ(t.code(), storage::Code::kUnavailable);
  EXPECT_EQ(t.message(), "etcdserver: request timed out");
}

}  // namespace
}  // namespace muster::server::testing
