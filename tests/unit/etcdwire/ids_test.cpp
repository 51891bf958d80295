// Member and cluster IDs: our SHA-1 arithmetic against what a real etcd 3.4
// (/usr/bin/etcd, Debian etcd-server) computes for the same flags.  Each
// test starts real etcd processes on free loopback ports with a temporary
// data dir, reads `etcdctl member list -w json` and compares.  Every process
// is killed when its owner goes out of scope, pass or fail.
#include "etcdwire/ids.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/support/ports.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace muster::etcdwire {
namespace {

using Clock = std::chrono::steady_clock;

// ---- pure checks ------------------------------------------------------------

TEST(Ids, HexFormIsLowercaseWithoutPadding) {
  EXPECT_EQ(id_to_hex(0), "0");
  EXPECT_EQ(id_to_hex(0x1f), "1f");
  EXPECT_EQ(id_to_hex(0x4d59f8148bb377e2ULL), "4d59f8148bb377e2");
  EXPECT_EQ(id_to_hex(0x00000000000abcdeULL), "abcde");
  EXPECT_EQ(id_to_hex(~uint64_t{0}), "ffffffffffffffff");
}

TEST(Ids, HexIdsAsEtcdctlPrintsThem) {
  EXPECT_EQ(id_to_hex(13668033151171901709ULL), "bdae9bbc11dd390d");
  EXPECT_EQ(parse_hex_id("bdae9bbc11dd390d"), 13668033151171901709ULL);
  EXPECT_FALSE(parse_hex_id(""));
  EXPECT_FALSE(parse_hex_id("xyz"));
  EXPECT_FALSE(parse_hex_id("1ffffffffffffffff"));
}

TEST(Ids, ParseHexIdRoundTripsAndRejectsJunk) {
  for (uint64_t v : {uint64_t{0}, uint64_t{1}, uint64_t{0x8e9e05c52164694d}, ~uint64_t{0}}) {
    EXPECT_EQ(parse_hex_id(id_to_hex(v)), v);
  }
  EXPECT_EQ(parse_hex_id("8E9E05C52164694D"), 0x8e9e05c52164694dULL);
  EXPECT_EQ(parse_hex_id("000000000000000001"), 1u);  // leading zeros fit
  EXPECT_EQ(parse_hex_id(""), std::nullopt);
  EXPECT_EQ(parse_hex_id("0x1f"), std::nullopt);
  EXPECT_EQ(parse_hex_id("12g4"), std::nullopt);
  EXPECT_EQ(parse_hex_id("-1"), std::nullopt);
  EXPECT_EQ(parse_hex_id("1ffffffffffffffff"), std::nullopt);  // 65 bits
}

TEST(Ids, MemberIdDependsOnSortedUrlsTokenAndAddTime) {
  const uint64_t a = member_id({"http://10.0.0.2:2380", "http://10.0.0.1:2380"}, "tok");
  EXPECT_EQ(a, member_id({"http://10.0.0.1:2380", "http://10.0.0.2:2380"}, "tok"));
  EXPECT_NE(a, member_id({"http://10.0.0.1:2380", "http://10.0.0.2:2380"}, "tok2"));
  EXPECT_NE(a, member_id({"http://10.0.0.1:2380", "http://10.0.0.2:2380"}, "tok", 1700000000));
  // Concatenation without separator: URLs "ab"+"c" and "a"+"bc" collide
  // by construction in etcd too; we must reproduce that, not "fix" it.
  EXPECT_EQ(member_id({"a", "bc"}, ""), member_id({"ab", "c"}, ""));
}

TEST(Ids, ClusterIdIgnoresMemberOrder) {
  EXPECT_EQ(cluster_id({3, 1, 2}), cluster_id({1, 2, 3}));
  EXPECT_NE(cluster_id({1, 2}), cluster_id({1, 2, 3}));
}

// ---- real etcd ---------------------------------------------------------------

bool have(const char* path) { return access(path, X_OK) == 0; }

using testing::Child;
using testing::free_port;
using testing::run_command;
using testing::TempDir;

struct EtcdMember {
  std::string name;
  std::vector<std::string> peer_urls;  // as given on the command line (any order)
  std::string client_url;
};

// Starts the given members as one static cluster; kills them all on scope exit.
class EtcdCluster {
 public:
  EtcdCluster(const std::vector<EtcdMember>& members, const std::string& token)
      : members_(members) {
    std::string initial_cluster;
    for (const auto& m : members) {
      for (const auto& u : m.peer_urls)
        initial_cluster += (initial_cluster.empty() ? "" : ",") + m.name + "=" + u;
    }
    for (const auto& m : members) {
      std::string peers;
      for (const auto& u : m.peer_urls) peers += (peers.empty() ? "" : ",") + u;
      const std::string data = dir_.file(m.name + ".etcd");
      children_.push_back(
          std::make_unique<Child>(std::vector<std::string>{"/usr/bin/etcd",
                                                           "--name",
                                                           m.name,
                                                           "--data-dir",
                                                           data,
                                                           "--listen-peer-urls",
                                                           peers,
                                                           "--initial-advertise-peer-urls",
                                                           peers,
                                                           "--listen-client-urls",
                                                           m.client_url,
                                                           "--advertise-client-urls",
                                                           m.client_url,
                                                           "--initial-cluster",
                                                           initial_cluster,
                                                           "--initial-cluster-token",
                                                           token,
                                                           "--initial-cluster-state",
                                                           "new",
                                                           "--heartbeat-interval",
                                                           "20",
                                                           "--election-timeout",
                                                           "200",
                                                           "--logger",
                                                           "zap",
                                                           "--log-outputs",
                                                           "stderr"},
                                  dir_.file(m.name + ".log")));
    }
  }

  // `etcdctl member list` (JSON, or simple text) from the first member,
  // retried until it answers or the deadline passes.
  std::string member_list(const std::string& format, std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    const std::string cmd =
        "ETCDCTL_API=3 /usr/bin/etcdctl --endpoints=" + members_.front().client_url +
        " --dial-timeout=1s --command-timeout=2s member list -w " + format + " 2>/dev/null";
    std::string out;
    while (Clock::now() < deadline) {
      for (auto& c : children_) {
        if (!c->running()) {
          ADD_FAILURE() << "etcd exited early:\n" << c->log();
          return "";
        }
      }
      if (run_command(cmd, &out) && !out.empty()) return out;
      std::this_thread::sleep_for(
          std::chrono::milliseconds(100));  // poll interval, bounded by the deadline
    }
    ADD_FAILURE() << "no member list within " << timeout.count() << "s; first member log:\n"
                  << children_.front()->log();
    return "";
  }

 private:
  TempDir dir_;
  std::vector<EtcdMember> members_;
  std::vector<std::unique_ptr<Child>> children_;  // declared last: killed before dir_ is removed
};

std::string loopback(int port) { return "http://127.0.0.1:" + std::to_string(port); }

TEST(IdsAgainstEtcd, OneMemberWithTwoPeerUrls) {
  if (!have("/usr/bin/etcd") || !have("/usr/bin/etcdctl"))
    GTEST_SKIP() << "etcd-server/etcd-client not installed";
  // Two peer URLs given in reverse string order, so the sort matters.
  int a = free_port(), b = free_port();
  if (loopback(a) < loopback(b)) std::swap(a, b);
  const EtcdMember m{"solo", {loopback(a), loopback(b)}, loopback(free_port())};
  const std::string token = "muster-ids-one";
  EtcdCluster cluster({m}, token);
  const std::string out = cluster.member_list("json", std::chrono::seconds(30));
  ASSERT_FALSE(out.empty());
  const auto j = nlohmann::json::parse(out);
  ASSERT_EQ(j["members"].size(), 1u) << out;
  const uint64_t want_member = member_id(m.peer_urls, token);
  EXPECT_EQ(j["members"][0]["ID"].get<uint64_t>(), want_member) << out;
  EXPECT_EQ(j["header"]["member_id"].get<uint64_t>(), want_member) << out;
  EXPECT_EQ(j["header"]["cluster_id"].get<uint64_t>(), cluster_id({want_member})) << out;

  // The simple format prints IDs in etcd's hex form.
  const std::string simple = cluster.member_list("simple", std::chrono::seconds(10));
  EXPECT_EQ(simple.rfind(id_to_hex(want_member) + ", started, solo, ", 0), 0u) << simple;
}

TEST(IdsAgainstEtcd, ThreeMemberStaticCluster) {
  if (!have("/usr/bin/etcd") || !have("/usr/bin/etcdctl"))
    GTEST_SKIP() << "etcd-server/etcd-client not installed";
  std::vector<EtcdMember> members;
  for (const char* name : {"m1", "m2", "m3"}) {
    members.push_back({name, {loopback(free_port())}, loopback(free_port())});
  }
  const std::string token = "muster-ids-three";
  EtcdCluster cluster(members, token);
  const std::string out = cluster.member_list("json", std::chrono::seconds(45));
  ASSERT_FALSE(out.empty());
  const auto j = nlohmann::json::parse(out);
  ASSERT_EQ(j["members"].size(), 3u) << out;
  std::vector<uint64_t> ids;
  for (const auto& m : members) {
    const uint64_t want = member_id(m.peer_urls, token);
    ids.push_back(want);
    bool found = false;
    for (const auto& jm : j["members"]) {
      if (jm["ID"].get<uint64_t>() == want) {
        found = true;
        EXPECT_EQ(jm["peerURLs"][0].get<std::string>(), m.peer_urls[0]);
      }
    }
    EXPECT_TRUE(found) << m.name << " id " << id_to_hex(want) << " not in " << out;
  }
  EXPECT_EQ(j["header"]["cluster_id"].get<uint64_t>(), cluster_id(ids)) << out;
  EXPECT_EQ(j["header"]["member_id"].get<uint64_t>(), ids[0]) << out;
}

}  // namespace
}  // namespace muster::etcdwire
