// The v2 wire format of muster-discovery, through a real server on loopback.
#include "discovery/service.h"

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "discovery/leveldb_store.h"
#include "net/client.h"
#include "net/server.h"

namespace muster::discovery {
namespace {

using nlohmann::json;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }
  void start(ServiceOptions opts) {
    dir_ = std::filesystem::temp_directory_path() /
           ("muster-svc-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    store_ = std::make_shared<LevelDbTokenStore>(dir_.string());
    if (opts.wait_timeout_ms == 30'000) opts.wait_timeout_ms = 500;
    server_ = std::make_unique<net::Server>(
        io_, net::ServerOptions{},
        [this](std::shared_ptr<net::Exchange> ex) { service_->handle(ex); });
    port_ = server_->listen("127.0.0.1", 0);
    opts.public_url = base();
    service_ = std::make_unique<Service>(io_, opts, store_);
    io_.restart();
    work_.emplace(io_.get_executor());
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    server_->stop();
    work_.reset();
    // Let the io thread run what stop() posted (closing the connections and
    // cancelling open long polls) rather than abandon it: an abandoned
    // connection and its exchange hold each other and leak.  A stuck server
    // is forced to stop after the deadline (and fails the test).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!io_.stopped() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (!io_.stopped()) {
      ADD_FAILURE() << "io_context still busy 5 s after Server::stop(); forcing it to stop";
      io_.stop();
    }
    thread_.join();
    server_.reset();
    service_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  net::Response call(const std::string& method, const std::string& target,
                     const std::string& body = "", net::Headers h = {}) {
    net::HttpClient c;
    if (!body.empty()) h.set("Content-Type", "application/x-www-form-urlencoded");
    auto r = c.request(method, base() + target, body, h);
    EXPECT_TRUE(r.ok()) << r.error;
    return r.ok() ? *r.response : net::Response{};
  }
  std::string new_token(int size = 3) {
    auto r = call("PUT", "/new?size=" + std::to_string(size));
    EXPECT_EQ(r.status, 201) << r.body;
    auto slash = r.body.rfind('/');
    return r.body.substr(slash + 1, 32);
  }

  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::thread thread_;
  std::filesystem::path dir_;
  std::shared_ptr<LevelDbTokenStore> store_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<net::Server> server_;
  uint16_t port_ = 0;
};

TEST_F(ServiceTest, NewReturnsThePublicUrlOfA32HexToken) {
  for (const char* method : {"GET", "PUT", "POST"}) {
    auto r = call(method, "/new?size=5");
    ASSERT_EQ(r.status, 201);
    ASSERT_EQ(r.body.size(), base().size() + 1 + 32 + 1) << r.body;
    EXPECT_EQ(r.body.substr(0, base().size() + 1), base() + "/");
    EXPECT_EQ(r.body.back(), '\n');
    std::string tok = r.body.substr(base().size() + 1, 32);
    EXPECT_TRUE(std::all_of(tok.begin(), tok.end(), [](char c) {
      return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    }));
  }
}

TEST_F(ServiceTest, NewDefaultsToSizeThreeAndRejectsBadSizes) {
  auto tok = new_token(3);
  auto plain = call("GET", "/new");
  ASSERT_EQ(plain.status, 201);
  std::string t2 = plain.body.substr(plain.body.rfind('/') + 1, 32);
  EXPECT_EQ(json::parse(call("GET", "/" + t2 + "/_config/size").body)["node"]["value"], "3");
  for (const char* bad : {"0", "-1", "10", "abc", "1e3", ""}) {
    auto r = call("GET", std::string("/new?size=") + bad);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_NE(r.body.find("between 1 and 9"), std::string::npos) << r.body;
  }
}

TEST_F(ServiceTest, SizeKeyAndEmptyDirectoryInEtcdShape) {
  auto tok = new_token(3);
  auto s = call("GET", "/" + tok + "/_config/size?quorum=false&recursive=false&sorted=false");
  ASSERT_EQ(s.status, 200);
  auto j = json::parse(s.body);
  EXPECT_EQ(j["action"], "get");
  EXPECT_EQ(j["node"]["key"], "/" + tok + "/_config/size");
  EXPECT_EQ(j["node"]["value"], "3");
  EXPECT_TRUE(s.headers.has("X-Etcd-Index"));
  auto d = json::parse(call("GET", "/" + tok + "?quorum=false&recursive=false&sorted=false").body);
  EXPECT_EQ(d["node"]["dir"], true);
  EXPECT_FALSE(d["node"].contains("nodes"));  // omitted when empty, as etcd does
}

TEST_F(ServiceTest, RegisterListAndDuplicate) {
  auto tok = new_token(3);
  auto r = call("PUT", "/" + tok + "/4d59f8148bb377e2?prevExist=false",
                "value=infra0%3Dhttp%3A%2F%2F10.0.1.10%3A2380");
  ASSERT_EQ(r.status, 201) << r.body;
  auto j = json::parse(r.body);
  EXPECT_EQ(j["action"], "create");
  EXPECT_EQ(j["node"]["value"], "infra0=http://10.0.1.10:2380");
  EXPECT_EQ(j["node"]["key"], "/" + tok + "/4d59f8148bb377e2");
  uint64_t ci = j["node"]["createdIndex"];
  EXPECT_EQ(r.headers.get("X-Etcd-Index"), std::to_string(ci));
  auto dup = call("PUT", "/" + tok + "/4d59f8148bb377e2?prevExist=false",
                  "value=infra0%3Dhttp%3A%2F%2Fx%3A1");
  EXPECT_EQ(dup.status, 412);
  EXPECT_EQ(json::parse(dup.body)["errorCode"], 105);
  call("PUT", "/" + tok + "/1?prevExist=false", "value=infra1%3Dhttp%3A%2F%2F10.0.1.11%3A2380");
  auto list = json::parse(call("GET", "/" + tok).body);
  ASSERT_EQ(list["node"]["nodes"].size(), 2u);
  EXPECT_EQ(list["node"]["nodes"][0]["key"], "/" + tok + "/4d59f8148bb377e2");
  EXPECT_LT(list["node"]["nodes"][0]["createdIndex"], list["node"]["nodes"][1]["createdIndex"]);
}

TEST_F(ServiceTest, UnknownTokenIsV2Error100) {
  auto r = call("GET", "/ffffffffffffffffffffffffffffffff/_config/size");
  EXPECT_EQ(r.status, 404);
  auto j = json::parse(r.body);
  EXPECT_EQ(j["errorCode"], 100);
  EXPECT_EQ(j["message"], "Key not found");
  auto p = call("PUT", "/ffffffffffffffffffffffffffffffff/1?prevExist=false",
                "value=a%3Dhttp%3A%2F%2Fx%3A1");
  EXPECT_EQ(p.status, 404);
}

TEST_F(ServiceTest, LongPollWakesOnRegistrationAndTimesOutEmpty) {
  auto tok = new_token(3);
  auto before = call("GET", "/" + tok);
  uint64_t idx = std::stoull(*before.headers.get("X-Etcd-Index"));
  auto waiter = std::async(std::launch::async, [&] {
    return call("GET",
                "/" + tok + "?recursive=true&wait=true&waitIndex=" + std::to_string(idx + 1));
  });
  // The waiter is parked once the open-poll gauge says so.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (store_->open_watches() == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_EQ(store_->open_watches(), 1u);
  call("PUT", "/" + tok + "/abc?prevExist=false", "value=n%3Dhttp%3A%2F%2Fx%3A1");
  auto w = waiter.get();
  ASSERT_EQ(w.status, 200);
  auto j = json::parse(w.body);
  EXPECT_EQ(j["action"], "create");
  EXPECT_EQ(j["node"]["key"], "/" + tok + "/abc");
  // Nothing new: an empty 200 after the wait timeout (etcd's client re-polls).
  auto empty = call("GET", "/" + tok + "?recursive=true&wait=true&waitIndex=1000");
  EXPECT_EQ(empty.status, 200);
  EXPECT_EQ(empty.body, "");
  EXPECT_EQ(store_->open_watches(), 0u);
}

TEST_F(ServiceTest, PathPrefixAndNamedTokens) {
  std::string t = "/v2/keys/discovery/seed-003-token-0001";
  const std::string k = "/discovery/seed-003-token-0001";  // etcd's key: no "/v2/keys"
  auto c = call("PUT", t + "/_config/size", "value=3");
  ASSERT_EQ(c.status, 201) << c.body;
  EXPECT_EQ(json::parse(c.body)["action"], "set");  // a PUT without prevExist, as etcd's
  EXPECT_EQ(json::parse(c.body)["node"]["key"], k + "/_config/size");
  auto again = call("PUT", t + "/_config/size", "value=5");
  EXPECT_EQ(again.status, 412);
  // The error names the key; bytes of it that are not UTF-8 come back as
  // U+FFFD (found by fuzz_discovery: the JSON writer threw and took the
  // service down).
  const std::string odd = "/\xf7" "2/keys/discovery/seed-003-token-0002/_config/size";
  ASSERT_EQ(call("PUT", odd, "value=3").status, 201);
  auto exists = call("PUT", odd, "value=3");
  EXPECT_EQ(exists.status, 412) << exists.body;
  EXPECT_NE(exists.body.find("\xef\xbf\xbd"), std::string::npos) << exists.body;
  EXPECT_EQ(json::parse(exists.body)["errorCode"], 105);
  auto bad = call("PUT", "/v2/keys/discovery/another-token-00001/_config/size", "value=100");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(json::parse(bad.body)["errorCode"], 209);
  auto reg = call("PUT", t + "/4d59f8148bb377e2?prevExist=false", "value=n%3Dhttp%3A%2F%2Fx%3A1");
  ASSERT_EQ(reg.status, 201);
  EXPECT_EQ(json::parse(reg.body)["action"], "create");  // prevExist=false
  EXPECT_EQ(json::parse(reg.body)["node"]["key"], k + "/4d59f8148bb377e2");
  // The same token is reachable without the prefix too.
  auto bare = json::parse(call("GET", "/seed-003-token-0001").body);
  EXPECT_EQ(bare["node"]["nodes"].size(), 1u);
}

TEST_F(ServiceTest, NamedTokensThatLookLikeMemberIdsAreRefused) {
  // "/v2/keys/my-discovery-prefix/0123456789abcdef" could be that token or
  // member 0123456789abcdef of token "my-discovery-prefix": refuse the name.
  auto r = call("PUT", "/v2/keys/my-discovery-prefix/0123456789abcdef/_config/size", "value=3");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(json::parse(r.body)["errorCode"], 209);
  EXPECT_EQ(
      call("PUT", "/v2/keys/my-discovery-prefix/0123456789abcdefg/_config/size", "value=3").status,
      201);
}

TEST_F(ServiceTest, DeleteFreesTheSlot) {
  auto tok = new_token(1);
  call("PUT", "/" + tok + "/a?prevExist=false", "value=n%3Dhttp%3A%2F%2Fx%3A1");
  auto d = call("DELETE", "/" + tok + "/a");
  ASSERT_EQ(d.status, 200) << d.body;
  auto j = json::parse(d.body);
  EXPECT_EQ(j["action"], "delete");
  EXPECT_EQ(j["prevNode"]["value"], "n=http://x:1");
  EXPECT_EQ(call("DELETE", "/" + tok + "/a").status, 404);
  EXPECT_FALSE(json::parse(call("GET", "/" + tok).body)["node"].contains("nodes"));
  EXPECT_EQ(call("DELETE", "/" + tok + "/_config/size").status, 403);
}

TEST_F(ServiceTest, QuotaAnswers403ButListingStillSaysFull) {
  TearDown();
  ServiceOptions o;
  o.max_registrations = 2;
  start(o);
  auto tok = new_token(1);
  EXPECT_EQ(call("PUT", "/" + tok + "/a?prevExist=false", "value=a%3Dhttp%3A%2F%2Fx%3A1").status,
            201);
  EXPECT_EQ(call("PUT", "/" + tok + "/b?prevExist=false", "value=b%3Dhttp%3A%2F%2Fx%3A2").status,
            201);
  auto q = call("PUT", "/" + tok + "/c?prevExist=false", "value=c%3Dhttp%3A%2F%2Fx%3A3");
  EXPECT_EQ(q.status, 403);
  EXPECT_NE(json::parse(q.body)["message"].get<std::string>().find("full"), std::string::npos);
  EXPECT_EQ(json::parse(call("GET", "/" + tok).body)["node"]["nodes"].size(), 2u);
}

TEST_F(ServiceTest, BadRegistrationsGetV2Errors) {
  auto tok = new_token(3);
  EXPECT_EQ(call("PUT", "/" + tok + "/abc?prevExist=false", "value=no-equals-sign").status, 400);
  EXPECT_EQ(call("PUT", "/" + tok + "/abc?prevExist=false", "novalue=1").status, 400);
  EXPECT_EQ(call("PUT", "/" + tok + "/abc?prevExist=false", "value=%zz").status, 400);
  EXPECT_EQ(call("PUT", "/" + tok, "value=a%3Dhttp%3A%2F%2Fx%3A1").status, 403);
  EXPECT_EQ(call("PUT", "/" + tok + "/abc?prevExist=false",
                 "value=" + std::string(5000, 'a') + "%3Dhttp%3A%2F%2Fx%3A1")
                .status,
            400);
  EXPECT_EQ(call("GET", "/" + tok + "?wait=true&waitIndex=abc").status, 400);
  EXPECT_EQ(call("PATCH", "/" + tok).status, 405);
  EXPECT_EQ(call("GET", "/health").status, 200);
}

TEST_F(ServiceTest, BrowsersGetAPage) {
  auto tok = new_token(2);
  call("PUT", "/" + tok + "/abc?prevExist=false", "value=infra0%3Dhttp%3A%2F%2F10.0.1.10%3A2380");
  net::Headers h;
  h.set("Accept", "text/html,application/xhtml+xml");
  auto r = call("GET", "/" + tok, "", h);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.get("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(r.body.find("infra0"), std::string::npos);
  EXPECT_NE(r.body.find("waiting for 1 more"), std::string::npos);
}

TEST_F(ServiceTest, NewIsRateLimitedPerAddress) {
  TearDown();
  ServiceOptions o;
  o.new_rate_per_minute = 3;
  start(o);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(call("GET", "/new").status, 201);
  auto r = call("GET", "/new");
  EXPECT_EQ(r.status, 429);
  EXPECT_TRUE(r.headers.has("Retry-After"));
}

TEST_F(ServiceTest, StopAnswersOpenLongPollsEmpty) {
  auto tok = new_token(3);
  auto waiter = std::async(std::launch::async, [&] {
    net::HttpClient c;
    return c.request("GET", base() + "/" + tok + "?wait=true&recursive=true&waitIndex=100");
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (store_->open_watches() == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  service_->stopping();
  server_->stop();
  auto r = waiter.get();
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->status, 200);
  EXPECT_EQ(r.response->body, "");
}

}  // namespace
}  // namespace muster::discovery
