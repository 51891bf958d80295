// The v3 discovery client (node/bootstrap/discovery_v3.h) against a scripted
// etcd v3 gRPC server on loopback: the key layout, etcd 3.6's backoff with
// the sleeps recorded, errors that are fatal at once, faults a real etcd
// does not produce on demand (no leader, a compacted watch).  Real etcd and
// muster backends are tests/integration/bootstrap/test_discovery_v3.py.
#include "node/bootstrap/discovery_v3.h"

#include <gtest/gtest.h>

#include <deque>
#include <future>
#include <map>
#include <mutex>

#include "api/etcdserverpb/rpc.pb.h"
#include "etcdwire/ids.h"
#include "tests/support/ports.h"
#include "tests/unit/net/net_test_support.h"

namespace muster::bootstrap {
namespace {

namespace grpc = net::grpc;
using namespace std::chrono_literals;
using net::testing::RunningServer;

// An in-memory etcd KV with watches, and faults to inject per method.
class FakeEtcd {
 public:
  FakeEtcd()
      : server_(
            [](std::shared_ptr<net::Exchange> ex) { ex->respond(net::Response::text(404, "")); },
            options()) {}

  std::string endpoint() const { return "127.0.0.1:" + std::to_string(server_.port()); }

  void put(const std::string& key, const std::string& value) {
    std::vector<std::pair<std::shared_ptr<grpc::Call>, std::string>> sends;
    {
      std::lock_guard lock(mu_);
      auto& kv = kvs_[key];
      ++rev_;
      if (kv.create_revision() == 0) kv.set_create_revision(rev_);
      kv.set_key(key);
      kv.set_value(value);
      kv.set_mod_revision(rev_);
      for (auto& w : watches_) {
        if (key.rfind(w.prefix, 0) != 0) continue;
        etcdserverpb::WatchResponse r;
        r.mutable_header()->set_revision(rev_);
        auto* ev = r.add_events();
        ev->set_type(mvccpb::Event::PUT);
        *ev->mutable_kv() = kv;
        sends.emplace_back(w.call, r.SerializeAsString());
      }
    }
    for (auto& [c, m] : sends) c->send(m);
  }
  // The next calls of `method` fail with these statuses, in order.
  void fail(const std::string& method, std::vector<grpc::Status> statuses) {
    std::lock_guard lock(mu_);
    for (auto& s : statuses) faults_[method].push_back(s);
  }
  // The next watch is cancelled as compacted right after it is created.
  void compact_next_watch() {
    std::lock_guard lock(mu_);
    compact_next_ = true;
  }
  int calls(const std::string& method) {
    std::lock_guard lock(mu_);
    return calls_[method];
  }
  std::optional<std::string> value(const std::string& key) {
    std::lock_guard lock(mu_);
    auto it = kvs_.find(key);
    if (it == kvs_.end()) return std::nullopt;
    return it->second.value();
  }

 private:
  struct Watch {
    std::string prefix;
    std::shared_ptr<grpc::Call> call;
  };

  net::ServerOptions options() {
    net::ServerOptions o;
    o.grpc_handler = [this](std::shared_ptr<grpc::Call> c) { handle(std::move(c)); };
    return o;
  }

  void handle(std::shared_ptr<grpc::Call> call) {
    std::weak_ptr<grpc::Call> weak = call;
    grpc::Call::Listener l;
    const std::string method = call->method();
    l.on_message = [this, weak, method](std::string m) {
      auto c = weak.lock();
      if (!c) return;
      {
        std::lock_guard lock(mu_);
        ++calls_[method];
        auto& q = faults_[method];
        if (!q.empty()) {
          grpc::Status s = q.front();
          q.pop_front();
          c->finish(s);
          return;
        }
      }
      if (method == "/etcdserverpb.KV/Range") return range(c, m);
      if (method == "/etcdserverpb.KV/Put") {
        etcdserverpb::PutRequest req;
        req.ParseFromString(m);
        put(req.key(), req.value());
        etcdserverpb::PutResponse resp;
        std::lock_guard lock(mu_);
        resp.mutable_header()->set_revision(rev_);
        return c->reply(resp.SerializeAsString(), {});
      }
      if (method == "/etcdserverpb.Watch/Watch") return watch(c, m);
      c->finish({grpc::Code::kUnimplemented, "unknown method " + method});
    };
    l.on_cancel = [this, weak] {
      std::lock_guard lock(mu_);
      auto c = weak.lock();
      std::erase_if(watches_, [&](const Watch& w) { return !c || w.call == c; });
    };
    call->start(std::move(l));
  }

  void range(const std::shared_ptr<grpc::Call>& c, const std::string& m) {
    etcdserverpb::RangeRequest req;
    req.ParseFromString(m);
    etcdserverpb::RangeResponse resp;
    std::lock_guard lock(mu_);
    resp.mutable_header()->set_revision(rev_);
    for (const auto& [k, kv] : kvs_) {
      const bool hit =
          req.range_end().empty() ? k == req.key() : (k >= req.key() && k < req.range_end());
      if (hit) *resp.add_kvs() = kv;
    }
    c->reply(resp.SerializeAsString(), {});
  }

  void watch(const std::shared_ptr<grpc::Call>& c, const std::string& m) {
    etcdserverpb::WatchRequest req;
    req.ParseFromString(m);
    const auto& cr = req.create_request();
    std::vector<std::string> out;
    {
      std::lock_guard lock(mu_);
      etcdserverpb::WatchResponse created;
      created.set_created(true);
      created.mutable_header()->set_revision(rev_);
      out.push_back(created.SerializeAsString());
      if (compact_next_) {
        compact_next_ = false;
        etcdserverpb::WatchResponse cancel;
        cancel.set_canceled(true);
        cancel.set_compact_revision(rev_ + 1);
        out.push_back(cancel.SerializeAsString());
      } else {
        // History: every key under the prefix modified at or after the start.
        etcdserverpb::WatchResponse hist;
        hist.mutable_header()->set_revision(rev_);
        for (const auto& [k, kv] : kvs_)
          if (k.rfind(cr.key(), 0) == 0 && kv.mod_revision() >= cr.start_revision()) {
            auto* ev = hist.add_events();
            ev->set_type(mvccpb::Event::PUT);
            *ev->mutable_kv() = kv;
          }
        if (hist.events_size() > 0) out.push_back(hist.SerializeAsString());
        watches_.push_back({cr.key(), c});
      }
    }
    for (auto& s : out) c->send(s);
  }

  std::mutex mu_;
  std::map<std::string, mvccpb::KeyValue> kvs_;
  int64_t rev_ = 1;
  std::vector<Watch> watches_;
  std::map<std::string, std::deque<grpc::Status>> faults_;
  std::map<std::string, int> calls_;
  bool compact_next_ = false;
  RunningServer server_;
};

DiscoveryV3Options options_for(const std::vector<std::string>& endpoints, const std::string& name,
                               int port, std::vector<std::chrono::milliseconds>* sleeps) {
  DiscoveryV3Options o;
  o.token = "tok";
  o.endpoints = endpoints;
  o.name = name;
  o.peer_urls = {"http://127.0.0.1:" + std::to_string(port)};
  o.dial_timeout = 500ms;
  o.request_timeout = 1000ms;
  o.sleep = [sleeps](std::chrono::milliseconds d) { sleeps->push_back(d); };
  return o;
}

TEST(DiscoveryV3Keys, EtcdLayoutWithPathJoinRules) {
  EXPECT_EQ(v3_size_key("abc"), "/_etcd/registry/abc/_config/size");
  EXPECT_EQ(v3_members_prefix("abc"), "/_etcd/registry/abc/members");
  EXPECT_EQ(v3_member_key("abc", "8e9e05c52164694d"),
            "/_etcd/registry/abc/members/8e9e05c52164694d");
  // path.Join cleans: duplicate slashes, "." and ".." go.
  EXPECT_EQ(v3_size_key("a//b/./c"), "/_etcd/registry/a/b/c/_config/size");
  EXPECT_EQ(v3_size_key("x/../y"), "/_etcd/registry/y/_config/size");
  EXPECT_EQ(v3_token_prefix(""), "/_etcd/registry");
}

TEST(DiscoveryV3, TwoMembersFormACluster) {
  FakeEtcd etcd;
  etcd.put(v3_size_key("tok"), "2");
  std::vector<std::chrono::milliseconds> sleeps;
  auto a = std::async(std::launch::async, [&] {
    return join_cluster_v3(options_for({etcd.endpoint()}, "a", 12380, &sleeps));
  });
  const std::string a_key = v3_member_key(
      "tok", etcdwire::id_to_hex(etcdwire::member_id({"http://127.0.0.1:12380"}, "tok")));
  ASSERT_TRUE(muster::testing::wait_until([&] { return etcd.value(a_key).has_value(); }, 5000ms));
  EXPECT_EQ(*etcd.value(a_key), "a=http://127.0.0.1:12380");
  std::vector<std::chrono::milliseconds> b_sleeps;
  DiscoveryResult b = join_cluster_v3(options_for({etcd.endpoint()}, "b", 12381, &b_sleeps));
  DiscoveryResult ra = a.get();
  ASSERT_TRUE(ra.ok()) << ra.message;
  ASSERT_TRUE(b.ok()) << b.message;
  EXPECT_EQ(ra.initial_cluster, "a=http://127.0.0.1:12380,b=http://127.0.0.1:12381");
  EXPECT_EQ(b.initial_cluster, ra.initial_cluster);
  EXPECT_TRUE(sleeps.empty());

  // A third finds the token full and writes nothing.
  DiscoveryResult c = join_cluster_v3(options_for({etcd.endpoint()}, "c", 12382, &sleeps));
  EXPECT_EQ(c.kind, DiscoveryResult::Kind::kFull);
  EXPECT_EQ(c.message.rfind("discovery: cluster is full", 0), 0u) << c.message;
  EXPECT_EQ(c.peer_urls,
            (std::vector<std::string>{"http://127.0.0.1:12380", "http://127.0.0.1:12381"}));
  EXPECT_EQ(etcd.calls("/etcdserverpb.KV/Put"), 2);
}

TEST(DiscoveryV3, SizeKeyErrorsAreFatalAtOnce) {
  FakeEtcd etcd;
  std::vector<std::chrono::milliseconds> sleeps;
  auto r = join_cluster_v3(options_for({etcd.endpoint()}, "a", 12380, &sleeps));
  EXPECT_EQ(r.error, DiscoveryError::kSizeNotFound);
  EXPECT_EQ(r.message.rfind("discovery: size key not found", 0), 0u) << r.message;
  for (const char* bad : {"x", "0", "-3", "3 ", ""}) {
    etcd.put(v3_size_key("tok"), bad);
    r = join_cluster_v3(options_for({etcd.endpoint()}, "a", 12380, &sleeps));
    EXPECT_EQ(r.error, DiscoveryError::kBadSize) << bad;
    EXPECT_EQ(r.message.rfind("discovery: size key is bad", 0), 0u) << r.message;
  }
  EXPECT_TRUE(sleeps.empty());
  EXPECT_EQ(etcd.calls("/etcdserverpb.KV/Put"), 0);
}

TEST(DiscoveryV3, UnreachableEndpointsBackOffAsEtcdThenGiveUp) {
  std::vector<std::chrono::milliseconds> sleeps;
  auto o = options_for({"127.0.0.1:" + std::to_string(muster::testing::free_port()),
                        "http://127.0.0.1:" + std::to_string(muster::testing::free_port())},
                       "a", 12380, &sleeps);
  o.max_retries = 10;
  auto r = join_cluster_v3(o);
  EXPECT_EQ(r.error, DiscoveryError::kTooManyRetries);
  EXPECT_EQ(r.message.rfind("discovery: too many retries", 0), 0u) << r.message;
  // 2^min(n, 8) seconds: 2, 4, ..., 256, 256.
  std::vector<std::chrono::milliseconds> want;
  for (int n = 1; n <= 10; ++n) want.push_back(std::chrono::seconds(1 << std::min(n, 8)));
  EXPECT_EQ(sleeps, want);
}

TEST(DiscoveryV3, TransientErrorsAreRetriedAndTheCountStartsAgainPerStep) {
  FakeEtcd etcd;
  etcd.put(v3_size_key("tok"), "1");
  const grpc::Status no_leader{grpc::Code::kUnavailable, "etcdserver: no leader"};
  etcd.fail("/etcdserverpb.KV/Range", {no_leader, no_leader});
  etcd.fail("/etcdserverpb.KV/Put", {{grpc::Code::kDeadlineExceeded, "request timed out"}});
  std::vector<std::chrono::milliseconds> sleeps;
  auto r = join_cluster_v3(options_for({etcd.endpoint()}, "a", 12380, &sleeps));
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(r.initial_cluster, "a=http://127.0.0.1:12380");
  // Two failed checks (2 s, 4 s), then the put's first failure waits 2 s
  // again: a step that succeeds resets the count, as etcd's d.retries.
  EXPECT_EQ(sleeps, (std::vector<std::chrono::milliseconds>{2s, 4s, 2s}));
}

TEST(DiscoveryV3, PermissionDeniedIsNotRetried) {
  FakeEtcd etcd;
  etcd.put(v3_size_key("tok"), "1");
  etcd.fail("/etcdserverpb.KV/Range",
            {{grpc::Code::kPermissionDenied, "etcdserver: permission denied"}});
  std::vector<std::chrono::milliseconds> sleeps;
  auto r = join_cluster_v3(options_for({etcd.endpoint()}, "a", 12380, &sleeps));
  EXPECT_EQ(r.kind, DiscoveryResult::Kind::kError);
  EXPECT_NE(r.message.find("etcdserver: permission denied"), std::string::npos) << r.message;
  EXPECT_TRUE(sleeps.empty());
}

TEST(DiscoveryV3, AnUnreachableFirstEndpointPassesToTheNext) {
  FakeEtcd etcd;
  etcd.put(v3_size_key("tok"), "1");
  std::vector<std::chrono::milliseconds> sleeps;
  auto r = join_cluster_v3(
      options_for({"127.0.0.1:" + std::to_string(muster::testing::free_port()), etcd.endpoint()},
                  "a", 12380, &sleeps));
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_TRUE(sleeps.empty());
}

TEST(DiscoveryV3, ACompactedWatchReReadsTheToken) {
  FakeEtcd etcd;
  etcd.put(v3_size_key("tok"), "2");
  etcd.compact_next_watch();
  std::vector<std::chrono::milliseconds> sleeps;
  auto a = std::async(std::launch::async, [&] {
    return join_cluster_v3(options_for({etcd.endpoint()}, "a", 12380, &sleeps));
  });
  // The first watch is cancelled; a's second watch waits for b.
  ASSERT_TRUE(muster::testing::wait_until(
      [&] { return etcd.calls("/etcdserverpb.Watch/Watch") >= 2; }, 5000ms));
  etcd.put(v3_member_key("tok", "bbbb"), "b=http://127.0.0.1:12381");
  auto r = a.get();
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(r.initial_cluster, "a=http://127.0.0.1:12380,b=http://127.0.0.1:12381");
  EXPECT_TRUE(sleeps.empty());  // a compaction is not a failure to back off from
}

TEST(DiscoveryV3, AWipedMemberOfACompleteTokenIsRefused) {
  FakeEtcd etcd;
  etcd.put(v3_size_key("tok"), "1");
  const std::string id =
      etcdwire::id_to_hex(etcdwire::member_id({"http://127.0.0.1:12380"}, "tok"));
  etcd.put(v3_member_key("tok", id), "a=http://127.0.0.1:12380");
  muster::testing::TempDir dir;
  std::vector<std::chrono::milliseconds> sleeps;
  auto o = options_for({etcd.endpoint()}, "a", 12380, &sleeps);
  o.registration_marker = dir.path() + "/discovery-registration";
  auto r = join_cluster_v3(o);
  EXPECT_EQ(r.error, DiscoveryError::kDuplicateId);
  EXPECT_NE(r.message.find("has already been bootstrapped"), std::string::npos) << r.message;
  // With the marker (it registered, then was killed before starting Raft)
  // it resumes.
  write_registration_marker(o.registration_marker, "a=http://127.0.0.1:12380");
  r = join_cluster_v3(o);
  ASSERT_TRUE(r.ok()) << r.message;
}

}  // namespace
}  // namespace muster::bootstrap
