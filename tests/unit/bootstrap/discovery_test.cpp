// The discovery client (node/bootstrap/discovery.h) against a small v2 keys
// server on loopback whose answers and event history each test scripts:
// etcd's request order, the full-cluster rule, retries with backoff (the
// sleep is injected, so nothing here waits), and what counts as a member
// while waiting.
#include "node/bootstrap/discovery.h"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "etcdwire/ids.h"
#include "net/http.h"
#include "net/server.h"
#include "tests/support/wait.h"

namespace muster::bootstrap {
namespace {

using nlohmann::json;

// An etcd v2 keys directory "/tok" with a size key, registrations and an
// event history, served on 127.0.0.1.
class FakeV2 {
 public:
  FakeV2() : work_(io_.get_executor()), server_(io_, {}, [this](auto ex) { handle(ex); }) {
    port_ = server_.listen("127.0.0.1", 0);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~FakeV2() {
    server_.stop();
    work_.reset();
    // Let the io thread run the connections' posted shutdown rather than
    // abandon it (a connection and its exchange then hold each other and
    // leak: LSan); a server that does not stop in time is forced to.
    if (!muster::testing::wait_until([&] { return io_.stopped(); }, std::chrono::seconds(5))) {
      ADD_FAILURE() << "io_context still busy 5 s after Server::stop(); forcing it to stop";
      io_.stop();
    }
    thread_.join();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/tok"; }

  // Scripting.
  std::optional<std::string> size = "1";
  int fail_next = 0;  // answer 503 to this many requests
  // Runs once (under the lock) when the first directory watch arrives.
  std::function<void()> on_first_dir_watch;

  void add(const std::string& id, const std::string& value) {
    std::lock_guard<std::mutex> l(mu_);
    put_locked(id, value, "create");
  }
  void overwrite(const std::string& id, const std::string& value) { put_locked(id, value, "set"); }
  void remove(const std::string& id) {
    ++index_;
    keys_.erase(id);
    events_.push_back({"delete", id, "", index_, index_});
  }

  std::vector<std::string> requests() {
    std::lock_guard<std::mutex> l(mu_);
    return requests_;
  }

 private:
  struct Node {
    std::string value;
    uint64_t created = 0, modified = 0;
  };
  struct Event {
    std::string action, id, value;
    uint64_t created, modified;
  };

 public:
  void put_locked(const std::string& id, const std::string& value, const std::string& action) {
    ++index_;
    uint64_t created = keys_.count(id) ? keys_[id].created : index_;
    keys_[id] = {value, created, index_};
    events_.push_back({action, id, value, created, index_});
  }

 private:
  static json node_json(const std::string& id, const std::string& value, uint64_t c, uint64_t m) {
    return {{"key", "/tok/" + id}, {"value", value}, {"createdIndex", c}, {"modifiedIndex", m}};
  }
  net::Response reply(int status, const json& body) {
    auto r = net::Response::json(status, body.dump() + "\n");
    r.headers.set("X-Etcd-Index", std::to_string(index_));
    return r;
  }
  net::Response not_found(const std::string& key) {
    return reply(
        404, {{"errorCode", 100}, {"message", "Key not found"}, {"cause", key}, {"index", index_}});
  }

  void handle(std::shared_ptr<net::Exchange> ex) {
    std::lock_guard<std::mutex> l(mu_);
    const net::Request& req = ex->request();
    requests_.push_back(req.method + " " + req.target);
    if (fail_next > 0) {
      --fail_next;
      return ex->respond(net::Response::text(503, "try later\n"));
    }
    auto q = net::parse_form(req.raw_query()).value_or(net::FormValues{});
    const bool wait = net::form_get(q, "wait").value_or("") == "true";
    const uint64_t wait_index = std::stoull(net::form_get(q, "waitIndex").value_or("0"));
    const std::string path = req.path();
    const std::string id = path.size() > 5 ? path.substr(5) : "";
    if (req.method == "GET" && path == "/tok/_config/size") {
      if (!size) return ex->respond(not_found("/tok/_config"));
      return ex->respond(
          reply(200, {{"action", "get"}, {"node", node_json("_config/size", *size, 1, 1)}}));
    }
    if (req.method == "GET" && wait) {
      if (id.empty() && on_first_dir_watch) std::exchange(on_first_dir_watch, nullptr)();
      for (const Event& e : events_) {
        if (e.modified < wait_index || (!id.empty() && e.id != id)) continue;
        json node = node_json(e.id, e.value, e.created, e.modified);
        if (e.action == "delete") node.erase("value");
        return ex->respond(reply(200, {{"action", e.action}, {"node", node}}));
      }
      return ex->respond(net::Response{});  // an empty 200: "poll again"
    }
    if (req.method == "GET" && path == "/tok") {
      json nodes = json::array();
      for (const auto& [k, n] : keys_)
        nodes.push_back(node_json(k, n.value, n.created, n.modified));
      return ex->respond(reply(
          200, {{"action", "get"}, {"node", {{"key", "/tok"}, {"dir", true}, {"nodes", nodes}}}}));
    }
    if (req.method == "GET") {
      auto it = keys_.find(id);
      if (it == keys_.end()) return ex->respond(not_found(path));
      return ex->respond(reply(200, {{"action", "get"},
                                     {"node", node_json(id, it->second.value, it->second.created,
                                                        it->second.modified)}}));
    }
    if (req.method == "PUT") {
      if (keys_.count(id))
        return ex->respond(reply(412, {{"errorCode", 105},
                                       {"message", "Key already exists"},
                                       {"cause", path},
                                       {"index", index_}}));
      auto form = net::parse_form(req.body).value_or(net::FormValues{});
      put_locked(id, net::form_get(form, "value").value_or(""), "create");
      const Node n = keys_[id];
      auto r = reply(
          201, {{"action", "create"}, {"node", node_json(id, n.value, n.created, n.modified)}});
      return ex->respond(r);
    }
    if (req.method == "DELETE") {
      if (!keys_.count(id)) return ex->respond(not_found(path));
      remove(id);
      return ex->respond(reply(200, {{"action", "delete"}}));
    }
    ex->respond(net::Response::text(405, "no\n"));
  }

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  net::Server server_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::map<std::string, Node> keys_;
  std::vector<Event> events_;
  uint64_t index_ = 1;
  std::vector<std::string> requests_;
};

struct Recorded {
  std::vector<std::chrono::milliseconds> sleeps;
};

DiscoveryOptions options_for(const FakeV2& fake, Recorded* rec, const std::string& name = "n1",
                             const std::string& peer = "http://10.0.0.1:2380") {
  DiscoveryOptions o;
  o.url = fake.url();
  o.name = name;
  o.peer_urls = {peer};
  o.watch_timeout = std::chrono::milliseconds(2000);
  o.sleep = [rec](std::chrono::milliseconds d) { rec->sleeps.push_back(d); };
  return o;
}

std::string id_of(const std::string& peer, const std::string& url) {
  return etcdwire::id_to_hex(etcdwire::member_id({peer}, url));
}

TEST(DiscoveryUrl, SplitsEndpointAndDirectoryAsEtcd) {
  std::string err;
  auto d = parse_discovery_url("https://disco.example.com//v2/keys//_etcd/registry/abc/", &err);
  ASSERT_TRUE(d) << err;
  EXPECT_EQ(d->endpoint, "https://disco.example.com");
  EXPECT_EQ(d->directory, "/v2/keys/_etcd/registry/abc");
  EXPECT_TRUE(d->tls);
  EXPECT_FALSE(parse_discovery_url("http://disco.example.com/", &err));
  EXPECT_NE(err.find("no token path"), std::string::npos);
  EXPECT_FALSE(parse_discovery_url("disco.example.com/abc", &err));
  d = parse_discovery_url("http://[::1]:8087/t", &err);
  ASSERT_TRUE(d) << err;
  EXPECT_EQ(d->endpoint, "http://[::1]:8087");
}

TEST(Registration, ParsesNameUrlPairs) {
  std::vector<std::pair<std::string, std::string>> p;
  EXPECT_TRUE(parse_registration("a=http://x:1,a=http://y:2", &p));
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[1], (std::pair<std::string, std::string>{"a", "http://y:2"}));
  for (const char* bad : {"", "a", "=http://x:1", "a=", "a=http://x:1,"}) {
    std::vector<std::pair<std::string, std::string>> q;
    EXPECT_FALSE(parse_registration(bad, &q)) << bad;
  }
}

TEST(JoinCluster, SendsEtcdsRequestsInEtcdsOrder) {
  FakeV2 fake;
  Recorded rec;
  auto r = join_cluster(options_for(fake, &rec));
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(r.initial_cluster, "n1=http://10.0.0.1:2380");
  const std::string id = id_of("http://10.0.0.1:2380", fake.url());
  const std::vector<std::string> want = {
      "GET /tok/_config/size?quorum=false&recursive=false&sorted=false",
      "GET /tok?quorum=false&recursive=false&sorted=false",
      "PUT /tok/" + id + "?prevExist=false",
      "GET /tok/" + id + "?recursive=false&wait=true&waitIndex=2",
      "GET /tok/_config/size?quorum=false&recursive=false&sorted=false",
      "GET /tok?quorum=false&recursive=false&sorted=false",
  };
  EXPECT_EQ(fake.requests(), want);
  EXPECT_TRUE(rec.sleeps.empty());
}

TEST(JoinCluster, FullClusterWritesNothingAndNamesTheMembers) {
  FakeV2 fake;
  fake.add("aaaa", "other=http://10.0.0.9:2380");
  Recorded rec;
  auto r = join_cluster(options_for(fake, &rec));
  EXPECT_EQ(r.kind, DiscoveryResult::Kind::kFull);
  EXPECT_EQ(r.peer_urls, std::vector<std::string>{"http://10.0.0.9:2380"});
  EXPECT_NE(r.message.find("discovery: cluster is full"), std::string::npos);
  for (const auto& q : fake.requests()) EXPECT_EQ(q.rfind("PUT", 0), std::string::npos) << q;
}

TEST(JoinCluster, MissingAndBadSizeAreClearErrors) {
  FakeV2 fake;
  Recorded rec;
  fake.size.reset();
  auto r = join_cluster(options_for(fake, &rec));
  EXPECT_EQ(r.error, DiscoveryError::kSizeNotFound);
  EXPECT_NE(r.message.find("discovery: size key not found"), std::string::npos) << r.message;
  for (const char* bad : {"three", "0", "-1", ""}) {
    fake.size = bad;
    r = join_cluster(options_for(fake, &rec));
    EXPECT_EQ(r.error, DiscoveryError::kBadSize) << bad;
  }
}

TEST(JoinCluster, RetriesServerErrorsWithGrowingJitteredBackoff) {
  FakeV2 fake;
  fake.fail_next = 3;
  Recorded rec;
  auto r = join_cluster(options_for(fake, &rec));
  ASSERT_TRUE(r.ok()) << r.message;
  ASSERT_EQ(rec.sleeps.size(), 3u);
  // [d/2, d] with d = 500 ms, 1 s, 2 s.
  for (int i = 0; i < 3; ++i) {
    const int64_t d = 500LL << i;
    EXPECT_GE(rec.sleeps[i].count(), d / 2) << i;
    EXPECT_LE(rec.sleeps[i].count(), d) << i;
  }
}

TEST(JoinCluster, GivesUpAfterMaxRetries) {
  FakeV2 fake;
  fake.fail_next = 1000;
  Recorded rec;
  auto o = options_for(fake, &rec);
  o.max_retries = 4;
  auto r = join_cluster(o);
  EXPECT_EQ(r.error, DiscoveryError::kTooManyRetries);
  EXPECT_EQ(rec.sleeps.size(), 4u);
  EXPECT_NE(r.message.find("HTTP 503"), std::string::npos) << r.message;
}

TEST(JoinCluster, OnlyNewMemberKeysCountWhileWaiting) {
  FakeV2 fake;
  fake.size = "3";
  const std::string self = id_of("http://10.0.0.1:2380", fake.url());
  // While we wait: our own key overwritten, a registration that comes and
  // goes, then the two real members.  etcd counts every event, so it would
  // stop after the third one with a wrong cluster.
  fake.on_first_dir_watch = [&] {
    fake.overwrite(self, "n1=http://10.0.0.1:2380");
    fake.put_locked("bogus", "bogus=http://10.0.0.7:2380", "create");
    fake.remove("bogus");
    fake.put_locked("bbbb", "n2=http://10.0.0.2:2380", "create");
    fake.put_locked("cccc", "n3=http://10.0.0.3:2380", "create");
  };
  Recorded rec;
  auto r = join_cluster(options_for(fake, &rec));
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(r.initial_cluster,
            "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380,n3=http://10.0.0.3:2380");
}

TEST(JoinCluster, PausesBetweenImmediateEmptyPollAnswers) {
  FakeV2 fake;  // answers a watch with no matching event by an empty 200 at once
  fake.size = "2";
  Recorded rec;
  auto o = options_for(fake, &rec);
  o.sleep = [&](std::chrono::milliseconds d) {
    rec.sleeps.push_back(d);
    if (rec.sleeps.size() == 3) fake.add("bbbb", "n2=http://10.0.0.2:2380");
  };
  auto r = join_cluster(o);
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(r.initial_cluster, "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380");
  EXPECT_EQ(rec.sleeps, std::vector<std::chrono::milliseconds>(3, std::chrono::milliseconds(100)));
}

TEST(JoinCluster, DuplicateIdWithAnotherValueIsAnError) {
  FakeV2 fake;
  fake.size = "3";
  const std::string self = id_of("http://10.0.0.1:2380", fake.url());
  fake.add(self, "impostor=http://10.0.0.1:2380");
  Recorded rec;
  auto r = join_cluster(options_for(fake, &rec));
  EXPECT_EQ(r.error, DiscoveryError::kDuplicateId);
  EXPECT_NE(r.message.find("musterctl discovery rm"), std::string::npos) << r.message;
}

TEST(JoinCluster, DuplicateNamesAreAnError) {
  FakeV2 fake;
  fake.size = "2";
  fake.add("bbbb", "n1=http://10.0.0.2:2380");
  Recorded rec;
  auto r = join_cluster(options_for(fake, &rec));
  EXPECT_EQ(r.error, DiscoveryError::kDuplicateName) << r.message;
}

}  // namespace
}  // namespace muster::bootstrap
