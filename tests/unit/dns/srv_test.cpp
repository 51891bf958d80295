// etcd's SRV rules, without DNS: service names, URL parsing, matching the
// local member, placeholder names, errors, RFC 2782 ordering, endpoints.
#include "dns/srv.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <random>

namespace muster::dns {
namespace {

using boost::asio::ip::make_address;

// A UniformRandom that replays a script and records the bounds it was asked for.
struct ScriptedRandom {
  std::deque<std::uint32_t> values;
  std::vector<std::uint32_t> bounds;
  UniformRandom fn() {
    return [this](std::uint32_t max) {
      bounds.push_back(max);
      if (values.empty()) ADD_FAILURE() << "random asked more often than scripted";
      std::uint32_t v = values.empty() ? 0 : values.front();
      if (!values.empty()) values.pop_front();
      EXPECT_LE(v, max);
      return v;
    };
  }
};

ResolvedTarget target(std::string host, std::uint16_t port, std::optional<std::string> key,
                      std::uint16_t priority = 0, std::uint16_t weight = 0) {
  return ResolvedTarget{SrvRecord{std::move(host), port, priority, weight}, std::move(key),
                        "NXDOMAIN"};
}

ServerLookup lookup(bool ssl, std::vector<ResolvedTarget> targets, std::string domain = "ex.test") {
  ServerLookup l;
  l.service = srv_services(SrvRole::kServer, domain, "")[ssl ? 0 : 1];
  l.targets = std::move(targets);
  return l;
}

ServerLookup failed_lookup(bool ssl, std::string domain = "ex.test") {
  ServerLookup l;
  l.service = srv_services(SrvRole::kServer, domain, "")[ssl ? 0 : 1];
  l.error =
      Error{ErrorKind::kNxDomain, "no SRV records for " + l.service.query_name + ": NXDOMAIN"};
  return l;
}

LocalMember member(std::string name, std::string url, std::string key) {
  LocalMember m;
  m.name = std::move(name);
  m.keys.emplace(std::move(key), parse_peer_url(url).value());
  return m;
}

TEST(SrvServices, ServerNamesSslFirst) {
  auto s = srv_services(SrvRole::kServer, "example.com", "");
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].scheme, "https");
  EXPECT_EQ(s[0].service, "etcd-server-ssl");
  EXPECT_EQ(s[0].query_name, "_etcd-server-ssl._tcp.example.com");
  EXPECT_EQ(s[1].scheme, "http");
  EXPECT_EQ(s[1].query_name, "_etcd-server._tcp.example.com");
}

TEST(SrvServices, SuffixAndClientNames) {
  auto s = srv_services(SrvRole::kServer, "example.com", "foo");
  EXPECT_EQ(s[0].query_name, "_etcd-server-ssl-foo._tcp.example.com");
  EXPECT_EQ(s[1].query_name, "_etcd-server-foo._tcp.example.com");
  auto c = srv_services(SrvRole::kClient, "example.com", "bar");
  EXPECT_EQ(c[0].service, "etcd-client-ssl-bar");
  EXPECT_EQ(c[1].service, "etcd-client-bar");
}

TEST(SrvServices, RootedDomainStaysRooted) {
  EXPECT_EQ(srv_services(SrvRole::kServer, "example.com.", "")[1].query_name,
            "_etcd-server._tcp.example.com.");
}

TEST(HostHelpers, TrimJoinLiteral) {
  EXPECT_EQ(trim_trailing_dot("a.example.com."), "a.example.com");
  EXPECT_EQ(trim_trailing_dot("a.example.com"), "a.example.com");
  EXPECT_EQ(trim_trailing_dot("a.."), "a.");  // only one dot
  EXPECT_TRUE(is_ip_literal("10.0.0.1"));
  EXPECT_TRUE(is_ip_literal("10.0.0.1."));
  EXPECT_TRUE(is_ip_literal("::1"));
  EXPECT_TRUE(is_ip_literal("[2001:db8::1]"));
  EXPECT_FALSE(is_ip_literal("m1.example.com"));
  EXPECT_FALSE(is_ip_literal(""));
  EXPECT_EQ(join_host_port("m1", 2380), "m1:2380");
  EXPECT_EQ(join_host_port("::1", 2380), "[::1]:2380");
  EXPECT_EQ(join_host_port("[::1]", 2380), "[::1]:2380");
  EXPECT_EQ(address_key(make_address("127.0.0.1"), 12380), "127.0.0.1:12380");
  EXPECT_EQ(address_key(make_address("2001:db8::1"), 2380), "[2001:db8::1]:2380");
}

TEST(HostHelpers, PreferredAddressIsFirstIpv4LikeGo) {
  EXPECT_EQ(
      preferred_address({make_address("::1"), make_address("10.0.0.2"), make_address("10.0.0.3")}),
      make_address("10.0.0.2"));
  EXPECT_EQ(preferred_address({make_address("::2"), make_address("::1")}), make_address("::2"));
  EXPECT_FALSE(preferred_address({}).has_value());
}

TEST(PeerUrl, ParsesEtcdForms) {
  auto u = parse_peer_url("https://m1.example.com:2380");
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_EQ(u->scheme, "https");
  EXPECT_EQ(u->host, "m1.example.com");
  EXPECT_EQ(u->port, 2380);
  auto v6 = parse_peer_url("http://[::1]:2380/");
  ASSERT_TRUE(v6) << v6.error().message;
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->text, "http://[::1]:2380/");
  auto list = parse_peer_urls("http://10.0.0.1:2380,http://m1:2380");
  ASSERT_TRUE(list);
  EXPECT_EQ(list->size(), 2u);
}

TEST(PeerUrl, RejectsWhatEtcdRejects) {
  for (const char* bad : {"m1:2380", "ftp://m1:2380", "http://m1", "http://m1:", "http://:2380",
                          "http://m1:2380/path", "http://m1:99999", "http://::1:2380",
                          "http://user@m1:2380", "http://m1:23x0", ""}) {
    auto r = parse_peer_url(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
      EXPECT_NE(r.error().message.find(bad), std::string::npos) << r.error().message;
    }
  }
  EXPECT_FALSE(parse_peer_urls("http://a:1,,http://b:2"));
}

TEST(ServerCluster, LocalGetsNameOthersPlaceholders) {
  auto r =
      build_server_cluster("ex.test", member("infra1", "https://10.0.0.1:2380", "10.0.0.1:2380"),
                           {lookup(true, {target("m2.ex.test", 2380, "10.0.0.2:2380"),
                                          target("m1.ex.test", 2380, "10.0.0.1:2380"),
                                          target("m3.ex.test", 2380, "10.0.0.3:2380")}),
                            failed_lookup(false)});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->initial_cluster,
            "infra1=https://m1.ex.test:2380,0=https://m2.ex.test:2380,1=https://m3.ex.test:2380");
  EXPECT_EQ(r->domain, "ex.test");
  ASSERT_EQ(r->warnings.size(), 1u);  // the http service had none
  EXPECT_NE(r->warnings[0].find("_etcd-server._tcp.ex.test: NXDOMAIN"), std::string::npos);
  EXPECT_EQ(r->peer_tls_server_name(false), std::optional<std::string>("ex.test"));
  EXPECT_EQ(r->peer_tls_server_name(true), std::nullopt);
}

TEST(ServerCluster, PlainRecordsAloneWorkUnlikeEtcd34) {
  auto r = build_server_cluster(
      "ex.test", member("m1", "http://127.0.0.1:12380", "127.0.0.1:12380"),
      {failed_lookup(true), lookup(false, {target("m1.ex.test.", 12380, "127.0.0.1:12380"),
                                           target("m2.ex.test.", 22380, "127.0.0.1:22380")})});
  ASSERT_TRUE(r) << r.error().message;
  // Trailing dots are trimmed from URLs ("SRV records have a trailing dot but URL shouldn't").
  EXPECT_EQ(r->initial_cluster, "m1=http://m1.ex.test:12380,0=http://m2.ex.test:22380");
  EXPECT_FALSE(r->has_https());
  EXPECT_EQ(r->peer_tls_server_name(false), std::nullopt);
}

TEST(ServerCluster, SeveralMembersOnOneIpMatchByPort) {
  for (std::uint16_t mine : {12380, 22380, 32380}) {
    const std::string key = "127.0.0.1:" + std::to_string(mine);
    auto r = build_server_cluster(
        "ex.test", member("me", "http://127.0.0.1:" + std::to_string(mine), key),
        {failed_lookup(true), lookup(false, {target("a.ex.test", 12380, "127.0.0.1:12380"),
                                             target("b.ex.test", 22380, "127.0.0.1:22380"),
                                             target("c.ex.test", 32380, "127.0.0.1:32380")})});
    ASSERT_TRUE(r) << r.error().message;
    int locals = 0;
    for (const auto& e : r->entries) {
      if (e.local) {
        ++locals;
        EXPECT_EQ(e.name, "me");
        EXPECT_NE(e.url.find(":" + std::to_string(mine)), std::string::npos);
      }
    }
    EXPECT_EQ(locals, 1);
  }
}

TEST(ServerCluster, BothServicesHttpsFirstAndPlaceholdersUnique) {
  auto r = build_server_cluster("ex.test", member("me", "https://10.0.0.1:2380", "10.0.0.1:2380"),
                                {lookup(true, {target("a.ex.test", 2380, "10.0.0.1:2380"),
                                               target("b.ex.test", 2380, "10.0.0.2:2380")}),
                                 lookup(false, {target("c.ex.test", 2380, "10.0.0.3:2380")})});
  ASSERT_TRUE(r) << r.error().message;
  // etcd would name both b and c "0" (counter per service) and merge them.
  EXPECT_EQ(r->initial_cluster,
            "me=https://a.ex.test:2380,0=https://b.ex.test:2380,1=http://c.ex.test:2380");
}

TEST(ServerCluster, PlaceholderNeverEqualsLocalName) {
  auto r = build_server_cluster(
      "ex.test", member("0", "http://10.0.0.3:2380", "10.0.0.3:2380"),
      {failed_lookup(true), lookup(false, {target("a.ex.test", 2380, "10.0.0.1:2380"),
                                           target("b.ex.test", 2380, "10.0.0.2:2380"),
                                           target("c.ex.test", 2380, "10.0.0.3:2380")})});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->initial_cluster,
            "1=http://a.ex.test:2380,2=http://b.ex.test:2380,0=http://c.ex.test:2380");
}

TEST(ServerCluster, OrderIsByPriorityThenWeightThenName) {
  auto r = build_server_cluster(
      "ex.test", member("me", "http://10.0.0.9:2380", "10.0.0.9:2380"),
      {failed_lookup(true), lookup(false, {target("z.ex.test", 2380, "10.0.0.1:2380", 10, 0),
                                           target("B.ex.test", 2380, "10.0.0.2:2380", 0, 0),
                                           target("a.ex.test", 2380, "10.0.0.3:2380", 0, 0),
                                           target("y.ex.test", 2380, "10.0.0.9:2380", 0, 5)})});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->initial_cluster,
            "me=http://y.ex.test:2380,0=http://a.ex.test:2380,1=http://B.ex.test:2380,"
            "2=http://z.ex.test:2380");
}

TEST(ServerCluster, UnresolvableTargetIsDroppedWithWarning) {
  auto r = build_server_cluster(
      "ex.test", member("me", "http://10.0.0.1:2380", "10.0.0.1:2380"),
      {failed_lookup(true), lookup(false, {target("a.ex.test", 2380, "10.0.0.1:2380"),
                                           target("gone.ex.test", 2380, std::nullopt)})});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->initial_cluster, "me=http://a.ex.test:2380");
  ASSERT_EQ(r->warnings.size(), 2u);
  EXPECT_NE(r->warnings[1].find("SRV target gone.ex.test:2380 of _etcd-server._tcp.ex.test does "
                                "not resolve: NXDOMAIN"),
            std::string::npos)
      << r->warnings[1];
}

TEST(ServerCluster, IpLiteralTargetIsDropped) {
  auto r = build_server_cluster(
      "ex.test", member("me", "http://10.0.0.1:2380", "10.0.0.1:2380"),
      {failed_lookup(true), lookup(false, {target("a.ex.test", 2380, "10.0.0.1:2380"),
                                           target("10.0.0.2", 2380, "10.0.0.2:2380")})});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->initial_cluster, "me=http://a.ex.test:2380");
  EXPECT_NE(r->warnings.back().find("is an IP address"), std::string::npos);
}

TEST(ServerCluster, AllUnresolvableIsNoRecordsNamingEveryCause) {
  auto r = build_server_cluster(
      "ex.test", member("me", "http://10.0.0.1:2380", "10.0.0.1:2380"),
      {failed_lookup(true), lookup(false, {target("x.ex.test", 2380, std::nullopt),
                                           target("y.ex.test", 2380, std::nullopt)})});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kNoRecords);
  const auto& m = r.error().message;
  EXPECT_NE(m.find("no usable DNS SRV records for ex.test"), std::string::npos) << m;
  EXPECT_NE(m.find("_etcd-server-ssl._tcp.ex.test: NXDOMAIN"), std::string::npos) << m;
  EXPECT_NE(m.find("x.ex.test:2380"), std::string::npos) << m;
  EXPECT_NE(m.find("y.ex.test:2380"), std::string::npos) << m;
}

TEST(ServerCluster, MemberNotFound) {
  auto r = build_server_cluster(
      "ex.test", member("infra9", "http://10.0.0.9:2380", "10.0.0.9:2380"),
      {failed_lookup(true), lookup(false, {target("a.ex.test", 2380, "10.0.0.1:2380")})});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kMemberNotFound);
  const auto& m = r.error().message;
  EXPECT_EQ(m.rfind("cannot find local etcd member \"infra9\" in SRV records", 0), 0u) << m;
  EXPECT_NE(m.find("http://10.0.0.9:2380 -> 10.0.0.9:2380"), std::string::npos) << m;
  EXPECT_NE(m.find("a.ex.test:2380 -> 10.0.0.1:2380"), std::string::npos) << m;
}

TEST(ServerCluster, SchemeMismatchDropsLocalAndExplains) {
  // The member advertises http but DNS lists it under _etcd-server-ssl.
  auto r = build_server_cluster("ex.test", member("me", "http://10.0.0.1:2380", "10.0.0.1:2380"),
                                {lookup(true, {target("a.ex.test", 2380, "10.0.0.1:2380"),
                                               target("b.ex.test", 2380, "10.0.0.2:2380")}),
                                 failed_lookup(false)});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kMemberNotFound);
  EXPECT_NE(r.error().message.find("bootstrap at https://a.ex.test:2380 from DNS for "
                                   "etcd-server-ssl has scheme mismatch with expected peer "
                                   "http://10.0.0.1:2380"),
            std::string::npos)
      << r.error().message;
}

TEST(ServerCluster, NothingAtAllIsNoRecords) {
  auto r = build_server_cluster("ex.test", member("me", "http://10.0.0.1:2380", "10.0.0.1:2380"),
                                {failed_lookup(true), failed_lookup(false)});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kNoRecords);
  EXPECT_NE(r.error().message.find("no SRV records for _etcd-server-ssl._tcp.ex.test: NXDOMAIN; "
                                   "no SRV records for _etcd-server._tcp.ex.test: NXDOMAIN"),
            std::string::npos)
      << r.error().message;
}

TEST(ServerCluster, TransientFailureKeepsItsKind) {
  auto timed_out = failed_lookup(false);
  timed_out.error =
      Error{ErrorKind::kTimeout, "SRV lookup of _etcd-server._tcp.ex.test failed: timed out"};
  auto r = build_server_cluster("ex.test", member("me", "http://10.0.0.1:2380", "10.0.0.1:2380"),
                                {failed_lookup(true), timed_out});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
  // A service that answered with unusable records means DNS did answer.
  auto answered =
      build_server_cluster("ex.test", member("me", "http://10.0.0.1:2380", "10.0.0.1:2380"),
                           {lookup(true, {target("x.ex.test", 2380, std::nullopt)}), timed_out});
  ASSERT_FALSE(answered);
  EXPECT_EQ(answered.error().kind, ErrorKind::kNoRecords);
}

TEST(ServerCluster, DuplicateRecordListedOnce) {
  auto r = build_server_cluster(
      "ex.test", member("me", "http://10.0.0.1:2380", "10.0.0.1:2380"),
      {failed_lookup(true), lookup(false, {target("a.ex.test", 2380, "10.0.0.1:2380"),
                                           target("A.ex.test.", 2380, "10.0.0.1:2380")})});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->entries.size(), 1u);
}

TEST(ServerCluster, LongTargetListIsTruncatedInMessage) {
  std::vector<ResolvedTarget> many;
  for (int i = 0; i < 50; ++i)
    many.push_back(target("m" + std::to_string(i) + ".ex.test", 2380,
                          "10.0.1." + std::to_string(i) + ":2380"));
  auto r = build_server_cluster("ex.test", member("me", "http://10.0.0.1:2380", "10.0.0.1:2380"),
                                {failed_lookup(true), lookup(false, many)});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("... 42 more"), std::string::npos) << r.error().message;
}

TEST(Rfc2782, PriorityAscendingZeroWeightsKeepOrder) {
  ScriptedRandom rnd;
  rnd.values = {0, 0, 0, 0};
  auto out = order_by_priority_and_weight(
      {{"c", 1, 20, 0}, {"a", 1, 10, 0}, {"b", 1, 10, 0}, {"d", 1, 5, 0}}, rnd.fn());
  std::vector<std::string> names;
  for (auto& r : out) names.push_back(r.target);
  EXPECT_EQ(names, (std::vector<std::string>{"d", "a", "b", "c"}));
}

TEST(Rfc2782, WeightedSelectionFollowsRunningSums) {
  // Pool order: zero-weight first, then input order: z(0) x(10) y(30).
  // Round 1: sum 40, pick 25 -> running sums 0,10,40 -> y.  Round 2: sum 10,
  // pick 0 -> z (running sum 0 >= 0).  Round 3: x.
  ScriptedRandom rnd;
  rnd.values = {25, 0, 7};
  auto out =
      order_by_priority_and_weight({{"x", 1, 0, 10}, {"y", 1, 0, 30}, {"z", 1, 0, 0}}, rnd.fn());
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].target, "y");
  EXPECT_EQ(out[1].target, "z");
  EXPECT_EQ(out[2].target, "x");
  EXPECT_EQ(rnd.bounds, (std::vector<std::uint32_t>{40, 10, 10}));
}

TEST(Rfc2782, WeightsGiveProportionalFirstPicks) {
  std::mt19937 engine(12345);
  UniformRandom random = [&](std::uint32_t max) {
    return std::uniform_int_distribution<std::uint32_t>(0, max)(engine);
  };
  std::map<std::string, int> first;
  const int runs = 20000;
  for (int i = 0; i < runs; ++i)
    ++first[order_by_priority_and_weight({{"light", 1, 0, 10}, {"heavy", 1, 0, 90}}, random)[0]
                .target];
  // Expected 9/10 for heavy (+-2% is > 10 standard deviations here).
  EXPECT_NEAR(first["heavy"] / double(runs), 0.9, 0.02);
  // A lower priority is never first, whatever its weight.
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(
        order_by_priority_and_weight({{"p1", 1, 1, 65535}, {"p0", 1, 0, 0}}, random)[0].target,
        "p0");
}

TEST(ClientEndpoints, UrlForms) {
  EXPECT_EQ(client_endpoint_url("https", {"c.ex.test", 2379, 0, 0}), "https://c.ex.test.:2379");
  EXPECT_EQ(client_endpoint_url("https", {"c.ex.test.", 2379, 0, 0}), "https://c.ex.test.:2379");
  EXPECT_EQ(client_endpoint_url("http", {"10.0.0.1", 2379, 0, 0}), "http://10.0.0.1:2379");
  EXPECT_EQ(client_endpoint_url("http", {"2001:db8::1", 2379, 0, 0}), "http://[2001:db8::1]:2379");
}

TEST(ClientEndpoints, HttpsFirstDedupAndWarnings) {
  ClientLookup ssl;
  ssl.service = srv_services(SrvRole::kClient, "ex.test", "")[0];
  ssl.records = {{"b.ex.test", 2379, 1, 0}, {"a.ex.test", 2379, 0, 0}, {"A.EX.TEST", 2379, 2, 0}};
  ClientLookup plain;
  plain.service = srv_services(SrvRole::kClient, "ex.test", "")[1];
  plain.records = {{"c.ex.test", 2379, 0, 0}};
  ScriptedRandom rnd;
  rnd.values = {0, 0, 0, 0};
  auto r = build_client_endpoints("ex.test.", {ssl, plain}, rnd.fn());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->endpoints,
            (std::vector<std::string>{"https://a.ex.test.:2379", "https://b.ex.test.:2379",
                                      "http://c.ex.test.:2379"}));
  EXPECT_EQ(r->domain, "ex.test");
  EXPECT_TRUE(r->warnings.empty());

  plain.error =
      Error{ErrorKind::kTimeout, "SRV lookup of _etcd-client._tcp.ex.test failed: timed out"};
  plain.records.clear();
  rnd.values = {0, 0, 0};
  auto partial = build_client_endpoints("ex.test", {ssl, plain}, rnd.fn());
  ASSERT_TRUE(partial);
  EXPECT_EQ(partial->endpoints.size(), 2u);
  ASSERT_EQ(partial->warnings.size(), 1u);

  ssl.error =
      Error{ErrorKind::kNxDomain, "no SRV records for _etcd-client-ssl._tcp.ex.test: NXDOMAIN"};
  auto none = build_client_endpoints("ex.test", {ssl, plain}, rnd.fn());
  ASSERT_FALSE(none);
  // One service could not be asked at all: the failure is transient, not "no records".
  EXPECT_EQ(none.error().kind, ErrorKind::kTimeout);
  EXPECT_NE(none.error().message.find("NXDOMAIN; SRV lookup of _etcd-client._tcp.ex.test failed"),
            std::string::npos)
      << none.error().message;
}

}  // namespace
}  // namespace muster::dns
