// Unit tests of node/proxy.  The forwarder tests run real net::Server
// upstreams and a real proxy listener on loopback and talk to them with
// net::HttpClient, as a user's client would.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio.hpp>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <thread>

#include "base/metrics.h"
#include "net/client.h"
#include "node/bootstrap/peer_members.h"
#include "node/proxy/cluster_file.h"
#include "node/proxy/director.h"
#include "node/proxy/forwarder.h"
#include "node/proxy/routes.h"
#include "tests/support/pki.h"
#include "tests/unit/net/net_test_support.h"

namespace muster::proxy {
namespace {

using namespace std::chrono_literals;
using net::testing::RunningServer;
using net::testing::Slot;
using net::testing::TempDir;
using net::testing::wait_until;

// --- Director ---

TEST(Director, SkipsAFailedEndpointForTheFailureWaitOnly) {
  Director::Clock::time_point now{};
  Director d(5000ms, [&] { return now; });
  d.set_endpoints({"http://a:1", "http://b:1", "http://a:1"});
  EXPECT_EQ(d.all(), (std::vector<std::string>{"http://a:1", "http://b:1"}));
  d.failed("http://a:1");
  EXPECT_EQ(d.available(), (std::vector<std::string>{"http://b:1"}));
  now += 4999ms;
  EXPECT_EQ(d.available(), (std::vector<std::string>{"http://b:1"}));
  // A refresh that keeps the URL does not clear its failure mark.
  d.set_endpoints({"http://a:1", "http://b:1"});
  EXPECT_EQ(d.available(), (std::vector<std::string>{"http://b:1"}));
  now += 1ms;
  EXPECT_EQ(d.available(), (std::vector<std::string>{"http://a:1", "http://b:1"}));
  d.failed("http://a:1");
  d.failed("http://b:1");
  EXPECT_TRUE(d.available().empty());
  d.failed("http://unknown:1");  // not in the list: ignored
  EXPECT_EQ(d.all().size(), 2u);
}

TEST(Director, PrefersTheEndpointThatLastAnswered) {
  Director d(1000ms);
  d.set_endpoints({"http://a:1", "http://b:1", "http://c:1"});
  d.succeeded("http://c:1");
  EXPECT_EQ(d.available(), (std::vector<std::string>{"http://c:1", "http://a:1", "http://b:1"}));
  d.failed("http://c:1");
  EXPECT_EQ(d.available(), (std::vector<std::string>{"http://a:1", "http://b:1"}));
  d.succeeded("http://c:1");  // answered again: the failure mark goes
  EXPECT_EQ(d.available().front(), "http://c:1");
}

// --- cluster file ---

TEST(ClusterFile, RoundTripsInEtcdsFormatAndRejectsGarbage) {
  TempDir dir;
  std::string data = dir.file("data");
  std::string err;
  EXPECT_FALSE(read_cluster_file(data, &err));
  EXPECT_EQ(err, "");  // no file is not an error
  ASSERT_EQ(write_cluster_file(data, {"http://10.0.0.1:2380", "http://10.0.0.2:2380"}), "");
  std::ifstream in(cluster_file_path(data));
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(text, "{\"PeerURLs\":[\"http://10.0.0.1:2380\",\"http://10.0.0.2:2380\"]}\n");
  auto got = read_cluster_file(data, &err);
  ASSERT_TRUE(got) << err;
  EXPECT_EQ(*got, (std::vector<std::string>{"http://10.0.0.1:2380", "http://10.0.0.2:2380"}));
  EXPECT_EQ(std::filesystem::status(proxy_dir(data)).permissions(),
            std::filesystem::perms::owner_all);
  EXPECT_FALSE(std::filesystem::exists(cluster_file_path(data) + ".bak"));

  std::ofstream(cluster_file_path(data)) << "{\"PeerURLs\":\"http://x\"}";
  EXPECT_FALSE(read_cluster_file(data, &err));
  EXPECT_NE(err.find("is not {\"PeerURLs\":[...]}"), std::string::npos) << err;
}

// --- /members ---

TEST(Members, ParsesEtcdsAnswerIncludingUnpublishedMembers) {
  // As etcd 3.4 writes it: numeric id (above 2^53), a member that has not
  // published its name and client URLs yet has neither field.
  std::string body =
      R"([{"id":13668033151171901709,"name":"m1","peerURLs":["http://127.0.0.1:2380"],)"
      R"("clientURLs":["http://127.0.0.1:2379","http://10.0.0.1:2379"]},)"
      R"({"id":"a1","peerURLs":["http://127.0.0.1:2381"]}])";
  std::string err;
  auto m = bootstrap::parse_members(body, &err);
  ASSERT_TRUE(m) << err;
  ASSERT_EQ(m->size(), 2u);
  EXPECT_EQ((*m)[0].id, 13668033151171901709ull);
  EXPECT_EQ((*m)[1].id, 0xa1u);  // the v2 members API's hex form
  EXPECT_EQ((*m)[0].name, "m1");
  EXPECT_EQ((*m)[0].client_urls.size(), 2u);
  EXPECT_TRUE((*m)[1].client_urls.empty());
  EXPECT_EQ((*m)[1].peer_urls, (std::vector<std::string>{"http://127.0.0.1:2381"}));

  EXPECT_FALSE(bootstrap::parse_members("{}", &err));
  EXPECT_FALSE(bootstrap::parse_members(R"([{"clientURLs":[1]}])", &err));
  EXPECT_FALSE(bootstrap::parse_members("[1]", &err));
}

TEST(Members, FetchAsksPeersInTurnUntilOneAnswers) {
  RunningServer peer([](std::shared_ptr<net::Exchange> ex) {
    if (ex->request().path() != "/members") return ex->respond(net::Response::text(404, ""));
    ex->respond(net::Response::json(
        200, R"([{"id":1,"name":"a","peerURLs":["http://p2:2380","http://p1:2380"],)"
             R"("clientURLs":["http://c1:2379"]},{"id":2,"peerURLs":["http://p1:2380"]}])"));
  });
  RunningServer wrong([](std::shared_ptr<net::Exchange> ex) {
    ex->respond(net::Response::text(404, "404 page not found\n"));
  });
  net::ClientOptions co;
  co.connect_timeout = 500ms;
  net::HttpClient client(co);
  std::string err;
  auto view = bootstrap::fetch_cluster({wrong.url(""), peer.url("/")}, client, &err);
  ASSERT_TRUE(view) << err;
  EXPECT_EQ(view->source, peer.url("/"));
  EXPECT_EQ(view->peer_urls, (std::vector<std::string>{"http://p1:2380", "http://p2:2380"}));
  EXPECT_EQ(view->client_urls, (std::vector<std::string>{"http://c1:2379"}));

  EXPECT_FALSE(bootstrap::fetch_cluster({wrong.url("")}, client, &err));
  EXPECT_NE(err.find("status 404"), std::string::npos) << err;
}

// --- routes ---

net::Request req(std::string method, std::string target, std::string body = "") {
  net::Request r;
  r.method = std::move(method);
  r.target = std::move(target);
  r.body = std::move(body);
  return r;
}

TEST(Routes, ReadOnlyRulesFollowEtcdForV2AndTheRouteForV3) {
  EXPECT_FALSE(is_write(req("GET", "/v2/keys/a?wait=true")));
  EXPECT_TRUE(is_write(req("PUT", "/v2/keys/a")));
  EXPECT_TRUE(is_write(req("POST", "/v2/keys/q")));
  EXPECT_TRUE(is_write(req("DELETE", "/v2/keys/a")));
  EXPECT_TRUE(is_write(req("HEAD", "/v2/keys/a")));  // etcd: anything but GET
  EXPECT_FALSE(is_write(req("GET", "/health")));

  EXPECT_FALSE(is_write(req("POST", "/v3/kv/range", R"({"key":"YQ=="})")));
  EXPECT_FALSE(is_write(req("POST", "/v3beta/kv/range", "")));
  EXPECT_FALSE(is_write(req("POST", "/v3/watch", R"({"create_request":{"key":"YQ=="}})")));
  EXPECT_FALSE(is_write(req("POST", "/v3/cluster/member/list", "{}")));
  EXPECT_FALSE(is_write(req("POST", "/v3/maintenance/status", "{}")));
  EXPECT_FALSE(is_write(req("POST", "/v3/lease/timetolive", "{}")));
  EXPECT_TRUE(is_write(req("POST", "/v3/kv/put", "{}")));
  EXPECT_TRUE(is_write(req("POST", "/v3/kv/deleterange", "{}")));
  EXPECT_TRUE(is_write(req("POST", "/v3/kv/compaction", "{}")));
  EXPECT_TRUE(is_write(req("POST", "/v3/lease/grant", "{}")));
  EXPECT_TRUE(is_write(req("POST", "/v3/lease/keepalive", "{}")));
  EXPECT_TRUE(is_write(req("POST", "/v3/cluster/member/add", "{}")));
  EXPECT_TRUE(is_write(req("POST", "/v3/auth/enable", "{}")));
  EXPECT_FALSE(is_write(req("POST", "/v3/maintenance/alarm", R"({"action":"GET"})")));
  EXPECT_TRUE(is_write(req("POST", "/v3/maintenance/alarm", R"({"action":"DEACTIVATE"})")));

  // Txns: read-only only when every op, nested ones too, is a range.
  EXPECT_FALSE(
      is_write(req("POST", "/v3/kv/txn",
                   R"({"compare":[{"key":"YQ=="}],"success":[{"request_range":{"key":"YQ=="}}],)"
                   R"("failure":[{"requestTxn":{"success":[{"requestRange":{}}]}}]})")));
  EXPECT_FALSE(is_write(req("POST", "/v3/kv/txn", "")));
  EXPECT_TRUE(
      is_write(req("POST", "/v3/kv/txn",
                   R"({"success":[{"request_range":{}}],"failure":[{"request_put":{}}]})")));
  EXPECT_TRUE(
      is_write(req("POST", "/v3/kv/txn",
                   R"({"success":[{"request_txn":{"success":[{"request_delete_range":{}}]}}]})")));
  EXPECT_TRUE(is_write(req("POST", "/v3/kv/txn", "{not json")));

  EXPECT_EQ(v3_route("/v3/kv/range"), "/kv/range");
  EXPECT_EQ(v3_route("/v3beta/watch"), "/watch");
  EXPECT_EQ(v3_route("/v2/keys"), "");
}

// --- forwarder ---

// A TCP port with nothing listening on it (connections are refused).
uint16_t dead_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

// A proxy listener in front of whatever the test puts in its Director.
struct Proxy {
  explicit Proxy(std::vector<std::string> endpoints, ForwarderOptions o = {})
      : director(5000ms), server([this](std::shared_ptr<net::Exchange> ex) {
          // The listener is up before the constructor body has run.
          Forwarder* f;
          while (!(f = forwarder_ptr.load())) std::this_thread::yield();
          f->forward(std::move(ex));
        }) {
    director.set_endpoints(std::move(endpoints));
    forwarder = std::make_unique<Forwarder>(server.io(), director, registry, o);
    forwarder_ptr = forwarder.get();
  }
  // The server's threads call the forwarder: stop them first.  The
  // forwarder's pooled upstream connections live on the server's
  // io_context: destroy it before that goes.
  ~Proxy() {
    server.stop();
    forwarder.reset();
  }

  Director director;
  metrics::Registry registry;
  std::unique_ptr<Forwarder> forwarder;
  std::atomic<Forwarder*> forwarder_ptr{nullptr};
  RunningServer server;
};

struct Seen {
  std::mutex mu;
  std::vector<net::Request> requests;
  std::vector<std::string> remote;
  void add(const std::shared_ptr<net::Exchange>& ex) {
    std::lock_guard lock(mu);
    requests.push_back(ex->request());
    remote.push_back(ex->remote_address());
  }
  std::size_t count() {
    std::lock_guard lock(mu);
    return requests.size();
  }
};

TEST(Forwarder, RelaysMethodTargetBodyAndTheAnswersStatusHeadersAndBody) {
  Seen seen;
  RunningServer member([&](std::shared_ptr<net::Exchange> ex) {
    seen.add(ex);
    auto r = net::Response::json(201, R"({"action":"set"})");
    r.headers.set("X-Etcd-Index", "7");
    r.headers.set("X-Etcd-Cluster-Id", "cdf818194e3a8c32");
    ex->respond(std::move(r));
  });
  Proxy p({member.url("")});
  net::HttpClient c;
  net::Headers h;
  h.set("Content-Type", "application/x-www-form-urlencoded");
  h.set("X-Forwarded-For", "10.1.1.1");
  auto r = c.request("PUT", p.server.url("/v2/keys/a%20b?prevExist=false"), "value=1", h);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->status, 201);
  EXPECT_EQ(r.response->body, R"({"action":"set"})");
  EXPECT_EQ(r.response->headers.get("X-Etcd-Index"), "7");
  EXPECT_EQ(r.response->headers.get("X-Etcd-Cluster-Id"), "cdf818194e3a8c32");
  EXPECT_EQ(r.response->headers.get("Content-Type"), "application/json");
  ASSERT_EQ(seen.count(), 1u);
  const auto& q = seen.requests[0];
  EXPECT_EQ(q.method, "PUT");
  EXPECT_EQ(q.target, "/v2/keys/a%20b?prevExist=false");
  EXPECT_EQ(q.body, "value=1");
  EXPECT_EQ(q.headers.get("Content-Type"), "application/x-www-form-urlencoded");
  EXPECT_EQ(q.headers.get("X-Forwarded-For"), "10.1.1.1, 127.0.0.1");
  EXPECT_EQ(q.headers.get("Host"), "127.0.0.1:" + std::to_string(member.port()));

  // GET with an empty answer body, and an error status passes through too.
  RunningServer notfound(
      [](std::shared_ptr<net::Exchange> ex) { ex->respond(net::Response::text(404, "")); });
  Proxy p2({notfound.url("")});
  auto g = c.get(p2.server.url("/v2/keys/missing"));
  ASSERT_TRUE(g.ok()) << g.error;
  EXPECT_EQ(g.response->status, 404);
  EXPECT_EQ(g.response->body, "");
}

TEST(Forwarder, FailsOverFromARefusedEndpointEvenForWrites) {
  Seen seen;
  RunningServer member([&](std::shared_ptr<net::Exchange> ex) {
    seen.add(ex);
    ex->respond(net::Response::json(200, "{}"));
  });
  std::string dead = "http://127.0.0.1:" + std::to_string(dead_port());
  Proxy p({dead, member.url("")});
  net::HttpClient c;
  auto r = c.request("POST", p.server.url("/v3/kv/put"), R"({"key":"YQ=="})");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->status, 200);
  EXPECT_EQ(seen.count(), 1u);
  // The refused endpoint waits out its failure time; the live one is first.
  EXPECT_EQ(p.director.available(), (std::vector<std::string>{member.url("")}));
  EXPECT_EQ(p.director.all().front(), member.url(""));
}

// A member that reads a request and hangs up without answering.
class Hangup {
 public:
  Hangup() : acceptor_(io_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this] {
      for (;;) {
        boost::asio::ip::tcp::socket s(io_);
        boost::system::error_code ec;
        acceptor_.accept(s, ec);
        if (ec || stop_) return;
        char buf[4096];
        s.read_some(boost::asio::buffer(buf), ec);
        ++requests;
      }
    });
  }
  ~Hangup() {
    stop_ = true;
    boost::system::error_code ec;
    boost::asio::ip::tcp::socket poke(io_);
    poke.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
  }
  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
  }
  std::atomic<int> requests{0};

 private:
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(Forwarder, AWriteThatLostItsAnswerIsNotSentAgainButAReadIs) {
  Hangup bad;
  Seen seen;
  RunningServer good([&](std::shared_ptr<net::Exchange> ex) {
    seen.add(ex);
    ex->respond(net::Response::json(200, "{\"ok\":1}"));
  });
  Proxy p({bad.url(), good.url("")});
  net::HttpClient c;
  auto w = c.request("POST", p.server.url("/v3/kv/put"), R"({"key":"YQ=="})");
  ASSERT_TRUE(w.ok()) << w.error;
  EXPECT_EQ(w.response->status, 502);
  EXPECT_EQ(w.response->body,
            R"x({"message":"httpproxy: unable to get response from 2 endpoint(s)"})x");
  EXPECT_EQ(bad.requests.load(), 1);
  EXPECT_EQ(seen.count(), 0u);  // never applied twice

  p.director.set_endpoints({bad.url(), good.url("")});
  p.director.succeeded(bad.url());  // clear the failure mark, bad goes first
  auto r = c.request("POST", p.server.url("/v3/kv/range"), R"({"key":"YQ=="})");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->status, 200);
  EXPECT_EQ(r.response->body, "{\"ok\":1}");
  EXPECT_EQ(bad.requests.load(), 2);
  EXPECT_EQ(seen.count(), 1u);
}

TEST(Forwarder, NoUsableEndpointGets503AndAllFailingGets502) {
  Proxy none({});
  net::HttpClient c;
  auto r = c.get(none.server.url("/health"));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->status, 503);
  EXPECT_EQ(r.response->body, R"({"message":"httpproxy: zero endpoints currently available"})");

  std::string d1 = "http://127.0.0.1:" + std::to_string(dead_port());
  std::string d2 = "http://127.0.0.1:" + std::to_string(dead_port());
  Proxy dead({d1, d2});
  r = c.get(dead.server.url("/health"));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->status, 502);
  EXPECT_EQ(r.response->body,
            R"x({"message":"httpproxy: unable to get response from 2 endpoint(s)"})x");
  // Both are now in their failure wait.
  r = c.get(dead.server.url("/health"));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->status, 503);
  EXPECT_NE(dead.registry.render().find(
                R"(etcd_proxy_dropped_total{method="GET",proxying_error="zero_endpoints"} 1)"),
            std::string::npos)
      << dead.registry.render();
}

TEST(Forwarder, ReadsReuseAPooledConnectionAndWritesGetTheirOwn) {
  Seen seen;
  RunningServer member([&](std::shared_ptr<net::Exchange> ex) {
    seen.add(ex);
    ex->respond(net::Response::json(200, "{}"));
  });
  Proxy p({member.url("")});
  net::HttpClient c;
  for (int i = 0; i < 5; ++i) {
    auto r = c.request("POST", p.server.url("/v3/kv/range"), "{}");
    ASSERT_TRUE(r.ok()) << r.error;
  }
  // All five reads came from one client address and port: one pooled
  // connection (counting open connections instead raced the server's
  // noticing a close on a loaded machine).
  {
    std::lock_guard lock(seen.mu);
    ASSERT_EQ(seen.remote.size(), 5u);
    for (const auto& r : seen.remote) EXPECT_EQ(r, seen.remote.front());
  }
  for (int i = 0; i < 3; ++i) {
    auto w = c.request("POST", p.server.url("/v3/kv/put"), "{}");
    ASSERT_TRUE(w.ok()) << w.error;
  }
  // Each write's connection is closed after its answer; the read's stays.
  EXPECT_TRUE(wait_until([&] { return member.server().open_connections() == 1u; }))
      << member.server().open_connections();
  ASSERT_EQ(seen.count(), 8u);
  EXPECT_EQ(seen.requests[7].headers.get("Connection"), "close");
  EXPECT_FALSE(seen.requests[0].headers.has("Connection"));
}

TEST(Forwarder, APooledConnectionTheMemberClosedIsReplacedQuietly) {
  Seen seen;
  net::ServerOptions so;
  so.idle_timeout = 100ms;
  RunningServer member(
      [&](std::shared_ptr<net::Exchange> ex) {
        seen.add(ex);
        ex->respond(net::Response::json(200, "{}"));
      },
      so);
  Proxy p({member.url("")});
  net::HttpClient c;
  ASSERT_TRUE(c.get(p.server.url("/v2/keys/a")).ok());
  ASSERT_TRUE(wait_until([&] { return member.server().open_connections() == 0u; }))
      << "the member did not close the idle connection";
  auto r = c.get(p.server.url("/v2/keys/b"));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->status, 200);
  EXPECT_EQ(seen.count(), 2u);
  EXPECT_EQ(p.director.available(), (std::vector<std::string>{member.url("")}));
}

TEST(Forwarder, RelaysAStreamPieceByPieceAndHangsUpUpstreamWhenTheClientLeaves) {
  std::mutex mu;
  std::shared_ptr<net::Exchange> open;
  Slot<bool> upstream_cancelled;
  RunningServer member([&](std::shared_ptr<net::Exchange> ex) {
    auto head = net::Response::json(200, "");
    head.headers.set("X-Etcd-Index", "3");
    ex->begin_stream(head);
    ex->write("{\"result\":{\"created\":true}}\n");
    ex->on_cancel([&] { upstream_cancelled.set(true); });
    std::lock_guard lock(mu);
    open = ex;
  });
  Proxy p({member.url("")});
  net::HttpClient c;
  std::string got;
  std::optional<std::string> index;
  std::thread writer;
  auto r = c.stream(
      "POST", p.server.url("/v3/watch"), R"({"create_request":{"key":"YQ=="}})", {},
      [&](const net::Response& head) {
        index = head.headers.get("X-Etcd-Index");
        return true;
      },
      [&](std::string_view piece) {
        got += piece;
        if (got == "{\"result\":{\"created\":true}}\n") {
          // The first line arrived while the member's stream is still open:
          // now the member sends an event.
          std::lock_guard lock(mu);
          open->write("{\"result\":{\"events\":[]}}\n");
          return true;
        }
        return got.find("events") == std::string::npos;  // then hang up
      },
      5000ms);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->status, 200);
  EXPECT_EQ(index, "3");
  EXPECT_EQ(got, "{\"result\":{\"created\":true}}\n{\"result\":{\"events\":[]}}\n");
  c.close();  // the client goes away mid-stream
  EXPECT_TRUE(upstream_cancelled.wait(5000ms).value_or(false))
      << "the proxy kept the member's stream open after its client left";
  std::lock_guard lock(mu);
  open.reset();
}

TEST(Forwarder, AStreamThatEndsNormallyEndsForTheClientToo) {
  RunningServer member([](std::shared_ptr<net::Exchange> ex) {
    ex->begin_stream(net::Response::json(200, ""));
    ex->write("a\n");
    ex->write("b\n");
    ex->end_stream();
  });
  Proxy p({member.url("")});
  net::HttpClient c;
  auto r = c.request("POST", p.server.url("/v3/lease/keepalive"), "{}");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->status, 200);
  EXPECT_EQ(r.response->body, "a\nb\n");
  EXPECT_EQ(r.response->headers.get("Transfer-Encoding"), "chunked");
}

TEST(Forwarder, AReadTimeoutEndsASilentMember) {
  std::optional<RunningServer> server;  // outlives the exchanges the test holds
  Slot<bool> cancelled;
  std::mutex mu;
  std::vector<std::shared_ptr<net::Exchange>> held;
  RunningServer& silent = server.emplace([&](std::shared_ptr<net::Exchange> ex) {
    ex->on_cancel([&] { cancelled.set(true); });
    std::lock_guard lock(mu);
    held.push_back(ex);  // never answers
  });
  ForwarderOptions o;
  o.read_timeout = 200ms;
  Proxy p({silent.url("")}, o);
  net::HttpClient c;
  auto start = std::chrono::steady_clock::now();
  auto r = c.get(p.server.url("/v2/keys/a"));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->status, 502);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3000ms);
  EXPECT_TRUE(cancelled.wait(5000ms).value_or(false));
  std::lock_guard lock(mu);
  held.clear();
}

// --- TLS on both sides ---

// A CA, a certificate for 127.0.0.1 (member and proxy listener) and a client
// certificate (the proxy's, towards members), made with the openssl command.
class Pki : public muster::testing::TestPki {
 public:
  Pki() {
    ca("ca");
    leaf("server", "ca", "muster-member", "subjectAltName=IP:127.0.0.1\n");
    leaf("client", "ca", "muster-proxy", "extendedKeyUsage=clientAuth\n");
  }
};

TEST(Forwarder, SpeaksMutualTlsToMembersAndTlsToItsClients) {
  Pki pki;
  net::ServerOptions member_opts;
  net::TlsOptions mt;
  mt.cert_file = pki.file("server.crt");
  mt.key_file = pki.file("server.key");
  mt.trusted_ca_file = pki.file("ca.crt");
  mt.client_cert_auth = true;
  member_opts.tls = mt;
  RunningServer member(
      [](std::shared_ptr<net::Exchange> ex) {
        ex->respond(net::Response::text(200, "from " + ex->peer_common_name()));
      },
      member_opts);

  ForwarderOptions fo;
  fo.tls.cert_file = pki.file("client.crt");
  fo.tls.key_file = pki.file("client.key");
  fo.tls.trusted_ca_file = pki.file("ca.crt");
  // The proxy's own listener is https too (--cert-file/--key-file).
  Director director(5000ms);
  director.set_endpoints({member.url("", "https")});
  metrics::Registry registry;
  std::atomic<Forwarder*> fwd{nullptr};
  net::ServerOptions proxy_opts;
  net::TlsOptions pt;
  pt.cert_file = pki.file("server.crt");
  pt.key_file = pki.file("server.key");
  proxy_opts.tls = pt;
  RunningServer proxy(
      [&](std::shared_ptr<net::Exchange> ex) {
        Forwarder* f;
        while (!(f = fwd.load())) std::this_thread::yield();
        f->forward(std::move(ex));
      },
      proxy_opts);
  Forwarder forwarder(proxy.io(), director, registry, fo);
  fwd = &forwarder;

  net::ClientOptions co;
  co.tls.trusted_ca_file = pki.file("ca.crt");
  net::HttpClient c(co);
  auto r = c.get(proxy.url("/health", "https"));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->status, 200);
  EXPECT_EQ(r.response->body, "from muster-proxy");

  // Without a client certificate the member refuses the handshake: the
  // proxy reports that no endpoint answered.
  ForwarderOptions no_cert;
  no_cert.tls.trusted_ca_file = pki.file("ca.crt");
  Director d2(5000ms);
  d2.set_endpoints({member.url("", "https")});
  std::atomic<Forwarder*> fwd2{nullptr};
  RunningServer proxy2([&](std::shared_ptr<net::Exchange> ex) {
    Forwarder* f;
    while (!(f = fwd2.load())) std::this_thread::yield();
    f->forward(std::move(ex));
  });
  Forwarder forwarder2(proxy2.io(), d2, registry, no_cert);
  fwd2 = &forwarder2;
  auto refused = net::HttpClient().get(proxy2.url("/health"));
  ASSERT_TRUE(refused.ok()) << refused.error;
  EXPECT_EQ(refused.response->status, 502);
  EXPECT_TRUE(d2.available().empty());
}

}  // namespace
}  // namespace muster::proxy
