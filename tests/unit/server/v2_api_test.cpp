// The v2 HTTP API over a real HTTP server on loopback, driven the way curl
// and etcdctl (ETCDCTL_API=2) drive etcd: form bodies, query parameters,
// long-poll waits.  The member behind it is LocalMember (a real store, no
// Raft); a small thread plays the leader's part of revoking expired leases,
// which is what makes TTL keys go away.
#include "node/server/v2_api.h"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <future>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>

#include "net/client.h"
#include "net/server.h"
#include "tests/support/wait.h"
#include "tests/unit/server/local_member.h"

namespace muster::server::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

using ::muster::testing::wait_until;

struct Reply {
  int status = 0;
  json body;
  std::string raw;
  net::Headers headers;
  uint64_t etcd_index() const { return std::stoull(headers.get("X-Etcd-Index").value_or("0")); }
};

Reply call(net::HttpClient& c, const std::string& method, const std::string& url,
           const std::string& form) {
  net::Headers h;
  if (!form.empty()) h.set("Content-Type", "application/x-www-form-urlencoded");
  net::ClientResult r = c.request(method, url, form, h);
  Reply out;
  if (!r.ok()) {
    ADD_FAILURE() << method << " " << url << " failed: " << r.error;
    return out;
  }
  out.status = r.response->status;
  out.raw = r.response->body;
  out.headers = r.response->headers;
  out.body = json::parse(out.raw, nullptr, false);
  return out;
}

// LocalMember whose proposals and read barriers can be made to fail as a
// member without a leader fails them.
class FlakyMember : public LocalMember {
 public:
  using LocalMember::LocalMember;
  void propose(pb::InternalRequest req, ApplyDone done) override {
    if (fail)
      return done(storage::Status(storage::Code::kUnavailable, "etcdserver: no leader"), {});
    LocalMember::propose(std::move(req), std::move(done));
  }
  void read_barrier(std::function<void(storage::Status)> done) override {
    if (fail)
      return done(storage::Status(storage::Code::kUnavailable, "etcdserver: request timed out"));
    LocalMember::read_barrier(std::move(done));
  }
  // No Raft configuration here: the change goes straight to the store, as
  // the driver applies it once the configuration entry commits.
  void change_member(pb::InternalRequest req, ApplyDone done) override {
    propose(std::move(req), std::move(done));
  }
  std::atomic<bool> fail{false};
};

// A V2Api behind a net::Server on 127.0.0.1, with its io thread, and the
// leader's lease expiry loop.
class V2ApiTest : public ::testing::Test {
 protected:
  V2ApiTest() : member_(dir_.path()), api_(member_, V2Api::Options{4096}) {
    member_.add_self("http://127.0.0.1:2380", "http://127.0.0.1:2379");
    server_ = std::make_unique<net::Server>(io_, net::ServerOptions{},
                                            [this](std::shared_ptr<net::Exchange> ex) {
                                              if (!api_.handle(ex))
                                                ex->respond(net::Response::text(404, "other\n"));
                                            });
    port_ = server_->listen("127.0.0.1", 0);
    io_thread_ = std::thread([this] { io_.run(); });
    expirer_ = std::thread([this] {
      while (!stop_.load()) {
        const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::steady_clock::now().time_since_epoch())
                                .count();
        for (int64_t id : member_.kv().expired_leases(now)) {
          pb::InternalRequest req;
          req.mutable_lease_revoke()->set_id(id);
          member_.propose(req, [](storage::Status, storage::KvStore::ApplyResult) {});
        }
        std::this_thread::sleep_for(20ms);
      }
    });
  }
  ~V2ApiTest() override {
    stop_ = true;
    expirer_.join();
    server_->stop();
    guard_.reset();
    io_thread_.join();
  }

  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  Reply get(const std::string& path) { return call(client_, "GET", url(path), ""); }
  Reply put(const std::string& path, const std::string& form) {
    return call(client_, "PUT", url(path), form);
  }
  Reply post(const std::string& path, const std::string& form) {
    return call(client_, "POST", url(path), form);
  }
  Reply del(const std::string& path) { return call(client_, "DELETE", url(path), ""); }
  // A long poll on a client of its own.
  std::future<Reply> wait_async(const std::string& path) {
    return std::async(std::launch::async, [this, path] {
      net::ClientOptions o;
      o.timeout = 10s;
      net::HttpClient c(o);
      return call(c, "GET", url(path), "");
    });
  }
  void expect_error(const Reply& r, int http, int code, const std::string& message,
                    const std::string& cause) {
    EXPECT_EQ(r.status, http) << r.raw;
    ASSERT_TRUE(r.body.is_object()) << r.raw;
    EXPECT_EQ(r.body["errorCode"], code) << r.raw;
    EXPECT_EQ(r.body["message"], message) << r.raw;
    if (cause.empty())
      EXPECT_FALSE(r.body.contains("cause")) << r.raw;
    else
      EXPECT_EQ(r.body["cause"], cause) << r.raw;
    ASSERT_TRUE(r.body.contains("index")) << r.raw;
    EXPECT_EQ(r.body["index"].get<uint64_t>(), r.etcd_index()) << r.raw;
    EXPECT_EQ(r.headers.get("Content-Type").value_or(""), "application/json");
  }

  ScratchDir dir_{"muster-v2api"};
  FlakyMember member_;
  V2Api api_;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{
      io_.get_executor()};
  std::unique_ptr<net::Server> server_;
  uint16_t port_ = 0;
  std::thread io_thread_;
  std::atomic<bool> stop_{false};
  std::thread expirer_;
  net::HttpClient client_;
};

TEST_F(V2ApiTest, SetThenGetWithEtcdHeadersAndShapes) {
  Reply s = put("/v2/keys/message", "value=Hello+world");
  ASSERT_EQ(s.status, 201) << s.raw;  // a set that created the key
  EXPECT_EQ(s.headers.get("Content-Type").value_or(""), "application/json");
  EXPECT_EQ(s.headers.get("X-Etcd-Cluster-Id").value_or(""), "cdef0123456789ab");
  EXPECT_EQ(s.headers.get("X-Raft-Term").value_or(""), "2");
  EXPECT_TRUE(s.headers.has("X-Raft-Index"));
  const uint64_t idx = s.etcd_index();
  EXPECT_EQ(s.body, json::parse(R"({"action":"set","node":{"key":"/message","value":"Hello world",
      "modifiedIndex":)" + std::to_string(idx) +
                                R"(,"createdIndex":)" + std::to_string(idx) + "}}"));
  // The key order on the wire is etcd's.
  EXPECT_EQ(s.raw.substr(0, 38), R"({"action":"set","node":{"key":"/messag)");
  EXPECT_EQ(s.raw.back(), '\n');

  Reply again = put("/v2/keys/message", "value=bye");
  ASSERT_EQ(again.status, 200) << again.raw;
  EXPECT_EQ(again.body["prevNode"]["value"], "Hello world");
  EXPECT_EQ(again.body["node"]["value"], "bye");

  Reply g = get("/v2/keys/message");
  ASSERT_EQ(g.status, 200) << g.raw;
  EXPECT_EQ(g.body["action"], "get");
  EXPECT_EQ(g.body["node"]["value"], "bye");
  EXPECT_EQ(g.etcd_index(), again.etcd_index());

  // Empty values are values: "value":"" is present.
  ASSERT_EQ(put("/v2/keys/empty", "value=").status, 201);
  EXPECT_EQ(get("/v2/keys/empty").body["node"]["value"], "");

  Reply missing = get("/v2/keys/nothing");
  expect_error(missing, 404, 100, "Key not found", "/nothing");
  EXPECT_EQ(missing.raw,
            R"({"errorCode":100,"message":"Key not found","cause":"/nothing","index":)" +
                std::to_string(missing.etcd_index()) + "}\n");
}

TEST_F(V2ApiTest, QueryParametersAndFormBodiesBothWork) {
  ASSERT_EQ(put("/v2/keys/q?value=from-query", "").status, 201);
  EXPECT_EQ(get("/v2/keys/q").body["node"]["value"], "from-query");
  // The body wins over the query, as Go's Request.FormValue.
  ASSERT_EQ(put("/v2/keys/q?value=query", "value=body").status, 200);
  EXPECT_EQ(get("/v2/keys/q").body["node"]["value"], "body");
  // Percent-encoded keys and values.
  ASSERT_EQ(put("/v2/keys/sp%20ace", "value=a%26b%3Dc").status, 201);
  EXPECT_EQ(get("/v2/keys/sp%20ace").body["node"]["value"], "a&b=c");
  EXPECT_EQ(get("/v2/keys/sp%20ace").body["node"]["key"], "/sp ace");
  // HEAD: the headers of a GET, no body.
  Reply h = call(client_, "HEAD", url("/v2/keys/q"), "");
  EXPECT_EQ(h.status, 200);
  EXPECT_TRUE(h.raw.empty());
  EXPECT_EQ(h.headers.get("Content-Length").value_or(""),
            std::to_string(get("/v2/keys/q").raw.size()));
  EXPECT_EQ(call(client_, "HEAD", url("/v2/keys/none"), "").status, 404);
}

TEST_F(V2ApiTest, CreateOnExistingKeyIs105) {
  Reply c = put("/v2/keys/token/abc?prevExist=false", "value=node1%3Dhttp%3A%2F%2Fa%3A2380");
  ASSERT_EQ(c.status, 201) << c.raw;
  EXPECT_EQ(c.body["action"], "create");
  EXPECT_EQ(c.body["node"]["value"], "node1=http://a:2380");
  Reply dup = put("/v2/keys/token/abc?prevExist=false", "value=x");
  expect_error(dup, 412, 105, "Key already exists", "/token/abc");
  // prevExist=true on a missing key: not found.
  expect_error(put("/v2/keys/token/none?prevExist=true", "value=x"), 404, 100, "Key not found",
               "/token/none");
  Reply up = put("/v2/keys/token/abc?prevExist=true", "value=y");
  ASSERT_EQ(up.status, 200) << up.raw;
  EXPECT_EQ(up.body["action"], "update");
  EXPECT_EQ(up.body["node"]["createdIndex"], c.body["node"]["createdIndex"]);
}

TEST_F(V2ApiTest, CompareAndSwapFailuresSayWhy) {
  Reply s = put("/v2/keys/foo", "value=one");
  const uint64_t mod = s.body["node"]["modifiedIndex"];
  expect_error(put("/v2/keys/foo?prevValue=two", "value=three"), 412, 101, "Compare failed",
               "[two != one]");
  expect_error(put("/v2/keys/foo?prevIndex=99999", "value=three"), 412, 101, "Compare failed",
               "[99999 != " + std::to_string(mod) + "]");
  expect_error(put("/v2/keys/foo?prevValue=two&prevIndex=99999", "value=three"), 412, 101,
               "Compare failed", "[two != one] [99999 != " + std::to_string(mod) + "]");
  expect_error(put("/v2/keys/nope?prevValue=two", "value=three"), 404, 100, "Key not found",
               "/nope");
  Reply ok = put("/v2/keys/foo?prevValue=one&prevIndex=" + std::to_string(mod), "value=two");
  ASSERT_EQ(ok.status, 200) << ok.raw;
  EXPECT_EQ(ok.body["action"], "compareAndSwap");
  EXPECT_EQ(ok.body["prevNode"]["value"], "one");
  EXPECT_EQ(ok.body["node"]["value"], "two");
}

TEST_F(V2ApiTest, CompareAndDelete) {
  Reply s = put("/v2/keys/foo", "value=one");
  const uint64_t mod = s.body["node"]["modifiedIndex"];
  expect_error(del("/v2/keys/foo?prevValue=two"), 412, 101, "Compare failed", "[two != one]");
  expect_error(del("/v2/keys/foo?prevIndex=1"), 412, 101, "Compare failed",
               "[1 != " + std::to_string(mod) + "]");
  Reply d = del("/v2/keys/foo?prevIndex=" + std::to_string(mod));
  ASSERT_EQ(d.status, 200) << d.raw;
  EXPECT_EQ(d.body["action"], "compareAndDelete");
  EXPECT_EQ(d.body["prevNode"]["value"], "one");
  EXPECT_FALSE(d.body["node"].contains("value"));
  EXPECT_EQ(get("/v2/keys/foo").status, 404);
}

TEST_F(V2ApiTest, Directories) {
  Reply mk = put("/v2/keys/dir?prevExist=false", "dir=true");
  ASSERT_EQ(mk.status, 201) << mk.raw;
  EXPECT_EQ(mk.body["node"]["dir"], true);
  EXPECT_FALSE(mk.body["node"].contains("value"));
  expect_error(put("/v2/keys/dir?prevExist=false", "dir=true"), 412, 105, "Key already exists",
               "/dir");
  ASSERT_EQ(put("/v2/keys/dir/a", "value=1").status, 201);
  ASSERT_EQ(put("/v2/keys/dir/sub/b", "value=2").status, 201);  // parents made on the way

  Reply list = get("/v2/keys/dir");
  ASSERT_EQ(list.status, 200) << list.raw;
  ASSERT_EQ(list.body["node"]["nodes"].size(), 2u) << list.raw;
  EXPECT_EQ(list.body["node"]["nodes"][0]["key"], "/dir/a");
  EXPECT_EQ(list.body["node"]["nodes"][1]["key"], "/dir/sub");
  EXPECT_EQ(list.body["node"]["nodes"][1]["dir"], true);
  EXPECT_FALSE(list.body["node"]["nodes"][1].contains("nodes"));  // not recursive

  Reply rec = get("/v2/keys/dir?recursive=true&sorted=true");
  ASSERT_EQ(rec.body["node"]["nodes"][1]["nodes"].size(), 1u) << rec.raw;
  EXPECT_EQ(rec.body["node"]["nodes"][1]["nodes"][0]["value"], "2");

  // The root: no key, a directory, the top-level nodes.
  Reply root = get("/v2/keys/");
  ASSERT_EQ(root.status, 200) << root.raw;
  EXPECT_FALSE(root.body["node"].contains("key"));
  EXPECT_EQ(root.body["node"]["dir"], true);
  EXPECT_EQ(root.body["node"]["nodes"][0]["key"], "/dir");
  EXPECT_EQ(get("/v2/keys").status, 200);

  // Errors on the path: the first missing component, or a file in the way.
  expect_error(get("/v2/keys/nodir/x/y"), 404, 100, "Key not found", "/nodir");
  expect_error(get("/v2/keys/dir/a/x"), 400, 104, "Not a directory", "/dir/a");
  expect_error(put("/v2/keys/dir/a/x", "value=1"), 400, 104, "Not a directory", "/dir/a");
  // A value on a directory; a directory where a file is expected.
  expect_error(put("/v2/keys/dir?prevExist=true", "value=x"), 403, 102, "Not a file", "/dir");
  expect_error(put("/v2/keys/dir", "value=x"), 403, 102, "Not a file", "/dir");
  expect_error(put("/v2/keys/", "value=x"), 400, 107, "Root is read only", "/");

  expect_error(del("/v2/keys/dir"), 403, 102, "Not a file", "/dir");
  expect_error(del("/v2/keys/dir?dir=true"), 403, 108, "Directory not empty", "/dir");
  Reply rm = del("/v2/keys/dir?recursive=true");
  ASSERT_EQ(rm.status, 200) << rm.raw;
  EXPECT_EQ(rm.body["action"], "delete");
  EXPECT_EQ(rm.body["node"]["dir"], true);
  EXPECT_EQ(rm.body["prevNode"]["dir"], true);
  EXPECT_EQ(get("/v2/keys/dir/sub/b").status, 404);

  // rmdir of an empty directory.
  ASSERT_EQ(put("/v2/keys/empty", "dir=true").status, 201);
  EXPECT_EQ(del("/v2/keys/empty?dir=true").status, 200);
}

TEST_F(V2ApiTest, TtlKeyExpires) {
  Reply s = put("/v2/keys/tmp", "value=x&ttl=1");
  ASSERT_EQ(s.status, 201) << s.raw;
  EXPECT_EQ(s.body["node"]["ttl"], 1);
  // expiration: RFC 3339 in UTC.
  ASSERT_TRUE(s.body["node"].contains("expiration")) << s.raw;
  EXPECT_TRUE(std::regex_match(s.body["node"]["expiration"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z)")))
      << s.raw;
  // Node keys order: key, value, expiration, ttl, modifiedIndex, createdIndex.
  EXPECT_NE(s.raw.find(R"("value":"x","expiration":")"), std::string::npos) << s.raw;
  EXPECT_TRUE(wait_until([&] { return get("/v2/keys/tmp").status == 404; }, 10s));
  // A permanent key stays.
  ASSERT_EQ(put("/v2/keys/perm", "value=y").status, 201);
  EXPECT_FALSE(get("/v2/keys/perm").body["node"].contains("ttl"));
}

TEST_F(V2ApiTest, RefreshChangesOnlyTheTtl) {
  Reply s = put("/v2/keys/r", "value=x&ttl=100");
  Reply r = put("/v2/keys/r?refresh=true&prevExist=true", "ttl=200");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["action"], "update");
  EXPECT_FALSE(r.body.contains("refresh"));  // etcd 3.4 does not say so either
  EXPECT_EQ(r.body["node"]["value"], "x");
  EXPECT_EQ(r.body["node"]["ttl"], 200);
  // The previous TTL (remaining whole seconds, rounded up).
  EXPECT_GE(r.body["prevNode"]["ttl"].get<int>(), 98);
  EXPECT_LE(r.body["prevNode"]["ttl"].get<int>(), 100);
  Reply cas = put("/v2/keys/r?refresh=true&prevValue=x", "ttl=300");
  EXPECT_EQ(cas.body["action"], "compareAndSwap");
  EXPECT_EQ(cas.body["node"]["ttl"], 300);
  expect_error(put("/v2/keys/r?refresh=true&prevValue=y", "ttl=300"), 412, 101, "Compare failed",
               "[y != x]");
  expect_error(put("/v2/keys/none?refresh=true", "ttl=300"), 404, 100, "Key not found", "/none");
  expect_error(put("/v2/keys/r?refresh=true", "ttl=5&value=y"), 400, 211,
               "Value provided on refresh", "A value was provided on a refresh");
  expect_error(put("/v2/keys/r?refresh=true", ""), 400, 212, "A TTL must be provided on refresh",
               "No TTL value set");
}

TEST_F(V2ApiTest, InOrderKeysAreOrdered) {
  std::vector<std::string> keys;
  for (const char* job : {"job1", "job2", "job3"}) {
    Reply r = post("/v2/keys/queue", std::string("value=") + job);
    ASSERT_EQ(r.status, 201) << r.raw;
    EXPECT_EQ(r.body["action"], "create");
    const std::string key = r.body["node"]["key"];
    EXPECT_TRUE(std::regex_match(key, std::regex(R"(/queue/\d{20})"))) << key;
    EXPECT_EQ(std::stoull(key.substr(7)), r.body["node"]["createdIndex"].get<uint64_t>());
    keys.push_back(key);
  }
  EXPECT_LT(keys[0], keys[1]);
  EXPECT_LT(keys[1], keys[2]);
  Reply list = get("/v2/keys/queue?recursive=true&sorted=true");
  ASSERT_EQ(list.body["node"]["nodes"].size(), 3u) << list.raw;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(list.body["node"]["nodes"][i]["key"], keys[i]);
    EXPECT_EQ(list.body["node"]["nodes"][i]["value"], "job" + std::to_string(i + 1));
  }
  // POST on a file: not a directory.
  expect_error(post("/v2/keys/" + keys[0].substr(1), "value=x"), 400, 104, "Not a directory",
               keys[0]);
}

TEST_F(V2ApiTest, HiddenKeysAreLeftOutOfListings) {
  ASSERT_EQ(put("/v2/keys/t/_config/size", "value=3").status, 201);
  ASSERT_EQ(put("/v2/keys/t/_hidden", "value=h").status, 201);
  ASSERT_EQ(put("/v2/keys/t/visible", "value=v").status, 201);
  Reply list = get("/v2/keys/t?recursive=true");
  ASSERT_EQ(list.body["node"]["nodes"].size(), 1u) << list.raw;
  EXPECT_EQ(list.body["node"]["nodes"][0]["key"], "/t/visible");
  EXPECT_EQ(get("/v2/keys/t/_config/size").body["node"]["value"], "3");
  EXPECT_EQ(get("/v2/keys/t/_hidden").body["node"]["value"], "h");
}

TEST_F(V2ApiTest, WaitForAPastChangeAnswersAtOnce) {
  Reply a = put("/v2/keys/w", "value=1");
  put("/v2/keys/w", "value=2");
  const uint64_t first = a.body["node"]["modifiedIndex"];
  Reply w = get("/v2/keys/w?wait=true&waitIndex=" + std::to_string(first));
  ASSERT_EQ(w.status, 200) << w.raw;
  EXPECT_EQ(w.body["action"], "set");
  EXPECT_EQ(w.body["node"]["value"], "1");
  EXPECT_EQ(w.raw.back(), '\n');
  // X-Etcd-Index: the store index when the wait started.
  EXPECT_EQ(w.etcd_index(), first + 1);
  Reply w2 = get("/v2/keys/w?wait=true&waitIndex=" + std::to_string(first + 1));
  EXPECT_EQ(w2.body["node"]["value"], "2");
  EXPECT_EQ(w2.body["prevNode"]["value"], "1");
}

TEST_F(V2ApiTest, WaitForAFutureChangeWakesOnApply) {
  put("/v2/keys/other", "value=0");
  auto f = wait_async("/v2/keys/w?wait=true");
  ASSERT_TRUE(wait_until([&] { return api_.open_waiters() == 1; }));
  // Changes elsewhere do not answer it.
  put("/v2/keys/other", "value=1");
  put("/v2/keys/w2", "value=1");
  EXPECT_EQ(f.wait_for(100ms), std::future_status::timeout);
  Reply s = put("/v2/keys/w", "value=now");
  Reply w = f.get();
  ASSERT_EQ(w.status, 200) << w.raw;
  EXPECT_EQ(w.body["action"], "set");
  EXPECT_EQ(w.body["node"]["value"], "now");
  EXPECT_EQ(w.body["node"]["modifiedIndex"], s.body["node"]["modifiedIndex"]);
  EXPECT_TRUE(wait_until([&] { return api_.open_waiters() == 0; }));
  // The finished waiter's subscription is dropped by the next request.
  get("/v2/keys/w");
  EXPECT_EQ(member_.subscriber_count(), 0u);
}

TEST_F(V2ApiTest, RecursiveWaitSkipsHiddenKeysAndSeesDeletes) {
  put("/v2/keys/disc/_config/size", "value=3");
  Reply start = get("/v2/keys/disc");
  auto f = wait_async("/v2/keys/disc?wait=true&recursive=true&waitIndex=" +
                      std::to_string(start.etcd_index() + 1));
  ASSERT_TRUE(wait_until([&] { return api_.open_waiters() == 1; }));
  put("/v2/keys/disc/_config/other", "value=x");  // hidden: no answer
  EXPECT_EQ(f.wait_for(100ms), std::future_status::timeout);
  Reply reg =
      put("/v2/keys/disc/8e9e05c52164694d?prevExist=false", "value=infra0%3Dhttp%3A%2F%2Fa");
  Reply w = f.get();
  EXPECT_EQ(w.body["action"], "create");
  EXPECT_EQ(w.body["node"]["key"], "/disc/8e9e05c52164694d");
  EXPECT_EQ(w.body["node"]["createdIndex"], reg.body["node"]["createdIndex"]);

  auto g = wait_async("/v2/keys/disc?wait=true&recursive=true");
  ASSERT_TRUE(wait_until([&] { return api_.open_waiters() == 1; }));
  del("/v2/keys/disc/8e9e05c52164694d");
  Reply d = g.get();
  EXPECT_EQ(d.body["action"], "delete");
  EXPECT_EQ(d.body["prevNode"]["value"], "infra0=http://a");
}

TEST_F(V2ApiTest, StreamWaitKeepsAnswering) {
  std::mutex mu;
  std::string got;
  auto done = std::async(std::launch::async, [&] {
    net::HttpClient c;
    c.stream(
        "GET", url("/v2/keys/s?wait=true&stream=true"), "", {},
        [](const net::Response&) { return true; },
        [&](std::string_view data) {
          std::lock_guard l(mu);
          got += data;
          return std::count(got.begin(), got.end(), '\n') < 2;
        },
        10s);
  });
  ASSERT_TRUE(wait_until([&] { return api_.open_waiters() == 1; }));
  put("/v2/keys/s", "value=1");
  put("/v2/keys/s", "value=2");
  ASSERT_EQ(done.wait_for(10s), std::future_status::ready);
  std::lock_guard l(mu);
  const size_t nl = got.find('\n');
  ASSERT_NE(nl, std::string::npos) << got;
  EXPECT_EQ(json::parse(got.substr(0, nl))["node"]["value"], "1");
  EXPECT_EQ(json::parse(got.substr(nl + 1))["node"]["value"], "2");
}

TEST_F(V2ApiTest, ClosingAWaitReleasesItsWaiter) {
  auto done = std::async(std::launch::async, [&] {
    net::HttpClient c;
    // Hang up once the headers are in.
    return c.stream(
        "GET", url("/v2/keys/gone?wait=true"), "", {},
        [](const net::Response& head) {
          EXPECT_EQ(head.status, 200);
          EXPECT_TRUE(head.headers.has("X-Etcd-Index"));
          return false;
        },
        [](std::string_view) { return false; }, 10s);
  });
  ASSERT_EQ(done.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(wait_until([&] { return api_.open_waiters() == 0; }));
  EXPECT_TRUE(wait_until([&] { return member_.subscriber_count() == 0; }));
  // A later change to the key is harmless.
  EXPECT_EQ(put("/v2/keys/gone", "value=x").status, 201);
}

TEST_F(V2ApiTest, WaitBelowCompactedHistoryIs401) {
  put("/v2/keys/k", "value=1");
  Reply last = put("/v2/keys/k", "value=2");
  pb::InternalRequest compact;
  compact.mutable_compaction()->set_revision(last.etcd_index());
  member_.propose(compact, [](storage::Status, storage::KvStore::ApplyResult) {});
  Reply w = get("/v2/keys/k?wait=true&waitIndex=1");
  expect_error(
      w, 400, 401, "The event in requested index is outdated and cleared",
      "the requested history has been cleared [" + std::to_string(last.etcd_index()) + "/1]");
}

TEST_F(V2ApiTest, BadInputGetsEtcdErrors) {
  put("/v2/keys/k", "value=1");
  expect_error(put("/v2/keys/k", "value=1&ttl=abc"), 400, 202,
               "The given TTL in POST form is not a number", "invalid value for \"ttl\"");
  expect_error(put("/v2/keys/k", "value=1&ttl=-1"), 400, 202,
               "The given TTL in POST form is not a number", "invalid value for \"ttl\"");
  expect_error(get("/v2/keys/k?wait=true&waitIndex=x"), 400, 203,
               "The given index in POST form is not a number", "invalid value for \"waitIndex\"");
  expect_error(put("/v2/keys/k?prevIndex=x", "value=1"), 400, 203,
               "The given index in POST form is not a number", "invalid value for \"prevIndex\"");
  expect_error(get("/v2/keys/k?recursive=maybe"), 400, 209, "Invalid field",
               "invalid value for \"recursive\"");
  expect_error(put("/v2/keys/k?wait=true", "value=1"), 400, 209, "Invalid field",
               "\"wait\" can only be used with GET requests");
  expect_error(put("/v2/keys/k?prevValue=", "value=1"), 400, 201,
               "PrevValue is Required in POST form", "\"prevValue\" cannot be empty");
  expect_error(put("/v2/keys/k?prevExist=perhaps", "value=1"), 400, 209, "Invalid field",
               "invalid value for prevExist");
  expect_error(put("/v2/keys/k?value=%zz", ""), 400, 210, "Invalid POST form",
               "invalid URL escape");
  // Bad requests carry index 0, as etcd's.
  EXPECT_EQ(put("/v2/keys/k", "ttl=abc").etcd_index(), 0u);
  // Too large for one proposal.
  Reply big = put("/v2/keys/big", "value=" + std::string(5000, 'x'));
  expect_error(big, 500, 300, "Raft Internal Error", "etcdserver: request is too large");

  Reply patch = call(client_, "PATCH", url("/v2/keys/k"), "");
  EXPECT_EQ(patch.status, 405);
  EXPECT_EQ(patch.headers.get("Allow").value_or(""), "HEAD,GET,PUT,POST,DELETE");
}

TEST_F(V2ApiTest, NoValueOnSuccessAndQuorumGet) {
  Reply s = put("/v2/keys/n?noValueOnSuccess=true", "value=1");
  ASSERT_EQ(s.status, 201);
  EXPECT_EQ(s.body, json::parse(R"({"action":"set"})"));
  Reply q = get("/v2/keys/n?quorum=true");
  ASSERT_EQ(q.status, 200) << q.raw;
  EXPECT_EQ(q.body["node"]["value"], "1");
}

TEST_F(V2ApiTest, MemberFailuresAreRaftInternalErrors) {
  put("/v2/keys/k", "value=1");
  member_.fail = true;
  expect_error(put("/v2/keys/k", "value=2"), 500, 300, "Raft Internal Error",
               "etcdserver: no leader");
  expect_error(get("/v2/keys/k?quorum=true"), 500, 300, "Raft Internal Error",
               "etcdserver: request timed out");
  // A serializable read is local and still answers.
  EXPECT_EQ(get("/v2/keys/k").body["node"]["value"], "1");
  member_.fail = false;
  EXPECT_EQ(put("/v2/keys/k", "value=2").status, 200);
}

TEST_F(V2ApiTest, ManyWaitersEachGetTheirOwnChange) {
  constexpr int kWaiters = 24;
  std::vector<std::future<Reply>> waits;
  for (int i = 0; i < kWaiters; ++i)
    waits.push_back(wait_async("/v2/keys/many/k" + std::to_string(i) + "?wait=true"));
  // Each waits on its own key; writes come from three clients at once.
  ASSERT_TRUE(wait_until([&] { return api_.open_waiters() == kWaiters; }, 10s));
  std::vector<std::thread> writers;
  for (int t = 0; t < 3; ++t)
    writers.emplace_back([this, t] {
      net::HttpClient c;
      for (int i = t; i < kWaiters; i += 3)
        call(c, "PUT", url("/v2/keys/many/k" + std::to_string(i)), "value=v" + std::to_string(i));
    });
  for (auto& w : writers) w.join();
  for (int i = 0; i < kWaiters; ++i) {
    ASSERT_EQ(waits[i].wait_for(10s), std::future_status::ready) << i;
    Reply r = waits[i].get();
    EXPECT_EQ(r.body["node"]["key"], "/many/k" + std::to_string(i));
    EXPECT_EQ(r.body["node"]["value"], "v" + std::to_string(i));
  }
  EXPECT_TRUE(wait_until([&] { return api_.open_waiters() == 0; }));
  get("/v2/keys/many");
  EXPECT_EQ(member_.subscriber_count(), 0u);
}

TEST_F(V2ApiTest, MembersMachinesAndStats) {
  Reply m = get("/v2/members");
  ASSERT_EQ(m.status, 200) << m.raw;
  EXPECT_EQ(m.headers.get("X-Etcd-Cluster-Id").value_or(""), "cdef0123456789ab");
  EXPECT_EQ(m.raw,
            R"({"members":[{"id":"8e9e05c52164694d","name":"default",)"
            R"("peerURLs":["http://127.0.0.1:2380"],"clientURLs":["http://127.0.0.1:2379"]}]})"
            "\n");
  Reply leader = get("/v2/members/leader");
  ASSERT_EQ(leader.status, 200);
  EXPECT_EQ(leader.body["id"], "8e9e05c52164694d");
  member_.has_leader = false;
  Reply none = get("/v2/members/leader");
  EXPECT_EQ(none.status, 503);
  EXPECT_EQ(none.body["message"], "During election");
  member_.has_leader = true;
  EXPECT_EQ(get("/v2/members/nope").status, 404);
  // Changes need a JSON body, as etcd's members API (415 otherwise).
  EXPECT_EQ(post("/v2/members", "").status, 415);

  Reply machines = get("/v2/machines");
  EXPECT_EQ(machines.status, 200);
  EXPECT_EQ(machines.raw, "http://127.0.0.1:2379");

  put("/v2/keys/a", "value=1");
  put("/v2/keys/a?prevExist=false", "value=1");
  get("/v2/keys/a");
  get("/v2/keys/missing");
  Reply st = get("/v2/stats/store");
  ASSERT_EQ(st.status, 200) << st.raw;
  EXPECT_EQ(st.body["setsSuccess"], 1);
  EXPECT_EQ(st.body["createFail"], 1);
  EXPECT_EQ(st.body["getsSuccess"], 1);
  EXPECT_EQ(st.body["getsFail"], 1);
  EXPECT_EQ(st.body["watchers"], 0);

  Reply self = get("/v2/stats/self");
  ASSERT_EQ(self.status, 200) << self.raw;
  EXPECT_EQ(self.body["name"], "default");
  EXPECT_EQ(self.body["id"], "8e9e05c52164694d");
  EXPECT_EQ(self.body["state"], "StateLeader");
  EXPECT_EQ(self.body["leaderInfo"]["leader"], "8e9e05c52164694d");

  EXPECT_EQ(get("/v2/unknown").status, 404);
  // Not a v2 path: left to the next handler.
  Reply other = get("/v3/kv/range");
  EXPECT_EQ(other.raw, "other\n");
}

}  // namespace
}  // namespace muster::server::testing
