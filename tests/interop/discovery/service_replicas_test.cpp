// Two muster-discovery processes with --store etcd on one real etcd 3.4, as
// replicas behind a load balancer: what one is told, the other knows, and
// real etcd members bootstrap through them in any mix.
#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "net/client.h"
#include "tests/interop/discovery/etcd_store_support.h"

#ifndef MUSTER_DISCOVERY_BIN
#error "MUSTER_DISCOVERY_BIN must name the muster-discovery binary"
#endif

namespace muster::discovery {
namespace {

using namespace etcd_test;
using json = nlohmann::json;

// One muster-discovery replica serving from the shared etcd.
class Replica {
 public:
  Replica() : port_(free_port()) {}
  // `public_url`: the load balancer's URL, written into new tokens.
  std::string start(const std::string& etcd_endpoint, const std::string& public_url) {
    if (port_ == 0) return "no free port";
    std::string why =
        child_.spawn({MUSTER_DISCOVERY_BIN, "--listen-url", url(), "--public-url", public_url,
                      "--store", "etcd", "--store-endpoints", etcd_endpoint, "--store-prefix",
                      "/e2e/", "--data-dir", dir_.path() + "/data", "--new-rate", "0"},
                     dir_.path() + "/discovery.log");
    return why.empty() ? testing::wait_healthy(child_, url() + "/health", "\"true\"") : why;
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  uint16_t port() const { return port_; }

 private:
  TempDir dir_;
  Child child_;
  uint16_t port_ = 0;
};

// Replicas A and B on one etcd, behind a round-robin TCP load balancer.
class ReplicasTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(kEtcd)) << kEtcd << " missing: install etcd-server";
    std::string why = store_.start_fresh();
    ASSERT_TRUE(why.empty()) << why;
    uint16_t lb_port = free_port();
    ASSERT_NE(lb_port, 0);
    lb_url_ = "http://127.0.0.1:" + std::to_string(lb_port);
    why = a_.start(store_.endpoint(), lb_url_);
    ASSERT_TRUE(why.empty()) << why;
    why = b_.start(store_.endpoint(), lb_url_);
    ASSERT_TRUE(why.empty()) << why;
    lb_ = std::make_unique<TcpProxy>(std::vector<uint16_t>{a_.port(), b_.port()}, lb_port);
  }

  // A new token of `size` from replica A; returns its path ("/<token>").
  std::string new_token(int size) {
    net::HttpClient http;
    auto r = http.request("POST", a_.url() + "/new?size=" + std::to_string(size));
    EXPECT_TRUE(r.ok()) << r.error;
    if (!r.ok()) return "";
    EXPECT_EQ(r.response->status, 201) << r.response->body;
    std::string body = r.response->body;
    while (!body.empty() && body.back() == '\n') body.pop_back();
    EXPECT_EQ(body.rfind(lb_url_ + "/", 0), 0u) << body;
    return body.substr(lb_url_.size());
  }

  EtcdProcess store_;
  Replica a_, b_;
  std::string lb_url_;
  std::unique_ptr<TcpProxy> lb_;
};

net::Headers form() {
  net::Headers h;
  h.set("Content-Type", "application/x-www-form-urlencoded");
  return h;
}

TEST_F(ReplicasTest, RegistrationOnAWakesLongPollOnB) {
  std::string token = new_token(3);
  ASSERT_FALSE(token.empty());
  net::HttpClient http;
  auto size = http.get(b_.url() + token + "/_config/size");
  ASSERT_TRUE(size.ok()) << size.error;
  ASSERT_EQ(size.response->status, 200) << size.response->body;
  EXPECT_EQ(json::parse(size.response->body)["node"]["value"], "3");
  auto list = http.get(b_.url() + token);
  ASSERT_TRUE(list.ok()) << list.error;
  auto index = list.response->headers.get("X-Etcd-Index");
  ASSERT_TRUE(index.has_value());
  uint64_t wait_index = std::stoull(*index) + 1;

  // The long-poll on B, from its own thread and connection.
  auto poll = std::async(std::launch::async, [&] {
    net::ClientOptions o;
    o.timeout = 60s;
    net::HttpClient h(o);
    return h.get(b_.url() + token +
                 "?wait=true&recursive=true&waitIndex=" + std::to_string(wait_index));
  });
  ASSERT_EQ(poll.wait_for(300ms), std::future_status::timeout) << "answered before any event";

  auto put = http.request("PUT", a_.url() + token + "/8e9e05c52164694d?prevExist=false",
                          "value=infra1%3Dhttp%3A%2F%2F127.0.0.1%3A2380", form());
  ASSERT_TRUE(put.ok()) << put.error;
  ASSERT_EQ(put.response->status, 201) << put.response->body;

  ASSERT_EQ(poll.wait_for(20s), std::future_status::ready);
  auto woke = poll.get();
  ASSERT_TRUE(woke.ok()) << woke.error;
  ASSERT_EQ(woke.response->status, 200) << woke.response->body;
  auto j = json::parse(woke.response->body);
  EXPECT_EQ(j["action"], "create");
  EXPECT_EQ(j["node"]["key"], token + "/8e9e05c52164694d");
  EXPECT_EQ(j["node"]["value"], "infra1=http://127.0.0.1:2380");

  // The ID is taken for B as well.
  auto dup = http.request("PUT", b_.url() + token + "/8e9e05c52164694d?prevExist=false",
                          "value=other%3Dhttp%3A%2F%2F127.0.0.1%3A2390", form());
  ASSERT_TRUE(dup.ok()) << dup.error;
  EXPECT_EQ(dup.response->status, 412) << dup.response->body;
  EXPECT_EQ(json::parse(dup.response->body)["errorCode"], 105);
}

TEST_F(ReplicasTest, EtcdMembersBootstrapThroughBothReplicas) {
  std::string token = new_token(3);
  ASSERT_FALSE(token.empty());
  // etcd derives member and cluster IDs from the discovery URL, so every
  // member must be given the same URL: the load balancer's, which hands
  // their connections to A and B in turn.  Members therefore register
  // through one replica and wait on the other.
  std::vector<std::unique_ptr<EtcdProcess>> members;
  for (int i = 1; i <= 3; ++i) {
    auto m = std::make_unique<EtcdProcess>("m" + std::to_string(i));
    m->use_discovery(lb_url_ + token);
    m->use_default_timing();
    std::string why = m->spawn_fresh();
    ASSERT_TRUE(why.empty()) << why;
    members.push_back(std::move(m));
  }
  for (auto& m : members) {
    std::string why = m->wait_healthy(60s);
    ASSERT_TRUE(why.empty()) << why;
  }
  net::HttpClient http;
  auto list = http.request("POST", members[0]->endpoint() + "/v3/cluster/member/list", "{}");
  ASSERT_TRUE(list.ok()) << list.error;
  ASSERT_EQ(list.response->status, 200) << list.response->body;
  auto ms = json::parse(list.response->body)["members"];
  ASSERT_EQ(ms.size(), 3u) << list.response->body;
  std::set<std::string> names;
  for (const auto& m : ms) names.insert(m.value("name", ""));
  EXPECT_EQ(names, (std::set<std::string>{"m1", "m2", "m3"}));

  EXPECT_GT(lb_->connections_to(0), 0);
  EXPECT_GT(lb_->connections_to(1), 0);

  // Both replicas list the three registrations.
  for (const auto& base : {a_.url(), b_.url()}) {
    auto r = http.get(base + token);
    ASSERT_TRUE(r.ok()) << r.error;
    ASSERT_EQ(r.response->status, 200) << r.response->body;
    EXPECT_EQ(json::parse(r.response->body)["node"]["nodes"].size(), 3u) << r.response->body;
  }
}

}  // namespace
}  // namespace muster::discovery
