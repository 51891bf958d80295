// SRV discovery against a real dnsmasq: etcd's server and client rules end
// to end, through c-ares on asio, plus the failure modes a member meets
// (NXDOMAIN, unresolvable targets, silent and refusing servers).
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <map>
#include <random>
#include <stdexcept>

#include "dns/resolver.h"
#include "dns/srv_lookup.h"
#include "tests/interop/dns/dns_records.h"
#include "tests/interop/dns/test_support.h"

namespace muster::dns {
namespace {

using testing::Dnsmasq;
using testing::SilentUdpServer;
using testing::srv_test_zone;

class SrvDiscovery : public ::testing::Test {
 protected:
  SrvDiscovery() : dnsmasq_(srv_test_zone()) {}

  ResolverOptions options() const {
    ResolverOptions o;
    o.server = dnsmasq_.server();
    o.timeout = std::chrono::milliseconds(500);
    o.tries = 2;
    return o;
  }

  Result<SrvCluster> cluster(std::string domain, std::string name, std::string advertise,
                             std::string srv_name = "") {
    SrvClusterRequest r;
    r.domain = std::move(domain);
    r.member_name = std::move(name);
    r.advertise_peer_urls = std::move(advertise);
    r.srv_name = std::move(srv_name);
    r.resolver = options();
    return resolve_server_cluster(r);
  }

  Result<ClientEndpoints> client(std::string domain, UniformRandom random = {},
                                 std::string srv_name = "") {
    SrvClientRequest r;
    r.domain = std::move(domain);
    r.srv_name = std::move(srv_name);
    r.resolver = options();
    r.random = std::move(random);
    return resolve_client_endpoints(r);
  }

  Dnsmasq dnsmasq_;
};

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST_F(SrvDiscovery, SslOnly) {
  auto r = cluster("ssl.muster.test", "infra2", "https://127.0.0.12:2380");
  ASSERT_TRUE(r) << r.error().message << "\n" << dnsmasq_.log();
  EXPECT_EQ(r->initial_cluster,
            "0=https://s1.ssl.muster.test:2380,infra2=https://s2.ssl.muster.test:2380,"
            "1=https://s3.ssl.muster.test:2380");
  EXPECT_EQ(r->domain, "ssl.muster.test");
  EXPECT_EQ(r->peer_tls_server_name(false), std::optional<std::string>("ssl.muster.test"));
  ASSERT_EQ(r->warnings.size(), 1u);
  EXPECT_EQ(r->warnings[0], "no SRV records for _etcd-server._tcp.ssl.muster.test: NXDOMAIN");
}

TEST_F(SrvDiscovery, AdvertiseUrlByHostNameMatchesToo) {
  auto r = cluster("ssl.muster.test", "infra3", "https://s3.ssl.muster.test:2380");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->initial_cluster,
            "0=https://s1.ssl.muster.test:2380,1=https://s2.ssl.muster.test:2380,"
            "infra3=https://s3.ssl.muster.test:2380");
}

TEST_F(SrvDiscovery, PlainOnlyWorksUnlikeEtcd34) {
  auto r = cluster("plain.muster.test", "p1", "http://127.0.0.1:12380");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->initial_cluster,
            "p1=http://p1.plain.muster.test:12380,0=http://p2.plain.muster.test:22380,"
            "1=http://p3.plain.muster.test:32380");
  EXPECT_EQ(r->peer_tls_server_name(false), std::nullopt);
}

TEST_F(SrvDiscovery, SeveralMembersOnOneIpAreToldApartByPort) {
  const std::map<std::string, std::string> expected = {
      {"22380",
       "0=http://p1.plain.muster.test:12380,me=http://p2.plain.muster.test:22380,"
       "1=http://p3.plain.muster.test:32380"},
      {"32380",
       "0=http://p1.plain.muster.test:12380,1=http://p2.plain.muster.test:22380,"
       "me=http://p3.plain.muster.test:32380"}};
  for (const auto& [port, want] : expected) {
    auto r = cluster("plain.muster.test", "me", "http://127.0.0.1:" + port);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->initial_cluster, want);
  }
  auto none = cluster("plain.muster.test", "me", "http://127.0.0.1:2380");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().kind, ErrorKind::kMemberNotFound);
}

TEST_F(SrvDiscovery, BothServicesHttpsFirst) {
  auto r = cluster("both.muster.test", "b3", "http://127.0.0.23:2380");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->initial_cluster,
            "0=https://b1.both.muster.test:2380,1=https://b2.both.muster.test:2380,"
            "b3=http://b3.both.muster.test:2380");
  EXPECT_TRUE(r->warnings.empty());
  EXPECT_EQ(r->peer_tls_server_name(false), std::optional<std::string>("both.muster.test"));
  EXPECT_EQ(r->peer_tls_server_name(true), std::nullopt);
}

TEST_F(SrvDiscovery, SchemeMismatchIsMemberNotFound) {
  // b1 is listed under _etcd-server-ssl but advertises http.
  auto r = cluster("both.muster.test", "b1", "http://127.0.0.21:2380");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kMemberNotFound);
  EXPECT_TRUE(contains(r.error().message, "cannot find local etcd member \"b1\" in SRV records"))
      << r.error().message;
  EXPECT_TRUE(contains(r.error().message,
                       "bootstrap at https://b1.both.muster.test:2380 from DNS for "
                       "etcd-server-ssl has scheme mismatch with expected peer "
                       "http://127.0.0.21:2380"))
      << r.error().message;
}

TEST_F(SrvDiscovery, NameSuffixSelectsItsOwnRecords) {
  auto r = cluster("suffix.muster.test", "c1b", "https://127.0.0.32:2380", "c1");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->initial_cluster,
            "0=https://c1a.suffix.muster.test:2380,c1b=https://c1b.suffix.muster.test:2380");
  auto unsuffixed = cluster("suffix.muster.test", "o", "https://127.0.0.33:2380");
  ASSERT_TRUE(unsuffixed) << unsuffixed.error().message;
  EXPECT_EQ(unsuffixed->initial_cluster, "o=https://other.suffix.muster.test:2380");
  auto c = client("suffix.muster.test", {}, "c1");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->endpoints, std::vector<std::string>{"http://c1a.suffix.muster.test.:2379"});
}

TEST_F(SrvDiscovery, UnresolvableTargetIsDropped) {
  auto r = cluster("drop.muster.test", "d2", "http://127.0.0.42:2380");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->initial_cluster,
            "0=http://d1.drop.muster.test:2380,d2=http://d2.drop.muster.test:2380");
  ASSERT_EQ(r->warnings.size(), 2u);
  EXPECT_EQ(r->warnings[1],
            "SRV target gone.drop.muster.test:2380 of _etcd-server._tcp.drop.muster.test does "
            "not resolve: NXDOMAIN");
}

TEST_F(SrvDiscovery, AllTargetsUnresolvableIsAnError) {
  auto r = cluster("unres.muster.test", "u1", "http://127.0.0.1:2380");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kNoRecords);
  const std::string& m = r.error().message;
  EXPECT_TRUE(contains(m, "no usable DNS SRV records for unres.muster.test")) << m;
  EXPECT_TRUE(contains(m,
                       "u1.unres.muster.test:2380 of _etcd-server._tcp.unres.muster.test does "
                       "not resolve: NXDOMAIN"))
      << m;
  EXPECT_TRUE(contains(m, "u2.unres.muster.test:2380")) << m;
}

TEST_F(SrvDiscovery, NxDomainNamesTheQueryAndTheAnswer) {
  auto r = cluster("nothing.muster.test", "x", "http://127.0.0.1:2380");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kNoRecords);
  EXPECT_EQ(r.error().message,
            "no usable DNS SRV records for nothing.muster.test: no SRV records for "
            "_etcd-server-ssl._tcp.nothing.muster.test: NXDOMAIN; no SRV records for "
            "_etcd-server._tcp.nothing.muster.test: NXDOMAIN");
  auto c = client("nothing.muster.test");
  ASSERT_FALSE(c);
  EXPECT_TRUE(contains(c.error().message,
                       "no SRV records for _etcd-client._tcp.nothing.muster.test: NXDOMAIN"));
}

TEST_F(SrvDiscovery, NoDataWhenTheNameExistsWithoutSrv) {
  // s1.ssl.muster.test has an A record but no SRV: NOERROR, empty answer.
  boost::asio::io_context io;
  auto resolver = Resolver::create(io, options());
  ASSERT_TRUE(resolver);
  std::optional<Result<std::vector<SrvRecord>>> got;
  resolver.value()->lookup_srv("s1.ssl.muster.test", [&](auto r) { got.emplace(std::move(r)); });
  io.run();
  ASSERT_TRUE(got.has_value());
  ASSERT_FALSE(*got);
  EXPECT_EQ(got->error().kind, ErrorKind::kNoData);
}

TEST_F(SrvDiscovery, AdvertiseHostThatDoesNotResolveIsAnError) {
  auto r = cluster("plain.muster.test", "p1", "http://nobody.muster.test:12380");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kNxDomain);
  EXPECT_EQ(r.error().message,
            "cannot resolve advertise peer URL http://nobody.muster.test:12380: NXDOMAIN");
}

TEST_F(SrvDiscovery, TrailingDotsOnDomainAndTargets) {
  auto plain = cluster("plain.muster.test", "p2", "http://127.0.0.1:22380");
  auto rooted = cluster("plain.muster.test.", "p2", "http://127.0.0.1:22380");
  ASSERT_TRUE(plain) << plain.error().message;
  ASSERT_TRUE(rooted) << rooted.error().message;
  // Targets arrive rooted; URLs carry no trailing dot either way.
  EXPECT_EQ(rooted->initial_cluster, plain->initial_cluster);
  EXPECT_FALSE(contains(plain->initial_cluster, "test.:"));
  EXPECT_EQ(rooted->domain, "plain.muster.test");
  // Client endpoints stay absolute: exactly one trailing dot.
  auto c = client("suffix.muster.test.", {}, "c1");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->endpoints, std::vector<std::string>{"http://c1a.suffix.muster.test.:2379"});
}

TEST_F(SrvDiscovery, Ipv6Targets) {
  auto r = cluster("v6.muster.test", "v2", "http://[::1]:2381");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->initial_cluster,
            "0=http://dual.v6.muster.test:2382,1=http://v1.v6.muster.test:2380,"
            "v2=http://v2.v6.muster.test:2381");
  // A dual-stack target is matched by its IPv4 address, as etcd does.
  auto dual = cluster("v6.muster.test", "d", "http://127.0.0.51:2382");
  ASSERT_TRUE(dual) << dual.error().message;
  EXPECT_TRUE(contains(dual->initial_cluster, "d=http://dual.v6.muster.test:2382"));
  auto dual_by_v6 = cluster("v6.muster.test", "d", "http://[::1]:2382");
  ASSERT_FALSE(dual_by_v6);
  EXPECT_EQ(dual_by_v6.error().kind, ErrorKind::kMemberNotFound);
  // Client endpoints: an IPv6-literal target is bracketed.
  auto c = client("v6.muster.test");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->endpoints,
            (std::vector<std::string>{"http://[::1]:2379", "http://v1.v6.muster.test.:2379"}));
}

TEST_F(SrvDiscovery, ClientPrioritiesAndWeights) {
  std::mt19937 engine(2782);
  UniformRandom random = [&](std::uint32_t max) {
    return std::uniform_int_distribution<std::uint32_t>(0, max)(engine);
  };
  int heavy_first = 0;
  const int runs = 200;
  for (int i = 0; i < runs; ++i) {
    auto c = client("weights.muster.test", random);
    ASSERT_TRUE(c) << c.error().message;
    ASSERT_EQ(c->endpoints.size(), 5u);
    // https before http, and the priority-10 backup after both priority-0 records.
    EXPECT_EQ(c->endpoints[2], "https://backup.weights.muster.test.:2379");
    EXPECT_EQ(c->endpoints[3], "http://plain.weights.muster.test.:2379");
    EXPECT_EQ(c->endpoints[4], "http://heavy.weights.muster.test.:2379");
    if (c->endpoints[0] == "https://heavy.weights.muster.test.:2379") ++heavy_first;
  }
  // Weight 90 vs 10: heavy is first 90% of the time (sd 2.1%; bound is 4.7 sd).
  EXPECT_NEAR(heavy_first / double(runs), 0.9, 0.1);
}

TEST_F(SrvDiscovery, FiftyRecords) {
  auto r = cluster("many.muster.test", "m37", "http://127.0.0.1:3037");
  ASSERT_TRUE(r) << r.error().message << "\n" << dnsmasq_.log();
  ASSERT_EQ(r->entries.size(), 50u);
  std::string want;
  int placeholder = 0;
  for (int i = 0; i < 50; ++i) {
    const std::string n = (i < 10 ? "m0" : "m") + std::to_string(i);
    if (!want.empty()) want += ",";
    want += (i == 37 ? std::string("m37") : std::to_string(placeholder++)) + "=http://" + n +
            ".many.muster.test:" + std::to_string(3000 + i);
  }
  EXPECT_EQ(r->initial_cluster, want);
  // dnsmasq shuffles answers; the string must not depend on that.
  auto again = cluster("many.muster.test", "m37", "http://127.0.0.1:3037");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->initial_cluster, r->initial_cluster);
}

TEST_F(SrvDiscovery, RefusedAnswersAreReportedAsUnreachable) {
  // Without --local and without upstreams, dnsmasq answers REFUSED.
  Dnsmasq refusing({}, /*answer_locally=*/false);
  SrvClusterRequest r;
  r.domain = "plain.muster.test";
  r.advertise_peer_urls = "http://127.0.0.1:12380";
  r.resolver.server = refusing.server();
  r.resolver.timeout = std::chrono::milliseconds(200);
  r.resolver.tries = 1;
  auto result = resolve_server_cluster(r);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().kind, ErrorKind::kUnreachable);
  EXPECT_TRUE(contains(result.error().message,
                       "SRV lookup of _etcd-server._tcp.plain.muster.test failed: could not "
                       "contact DNS server " +
                           refusing.server() + " (connection refused, or it answered REFUSED"))
      << result.error().message;
}

TEST(SrvDiscoveryIpv6Server, DnsServerOverIpv6) {
  if (!testing::ipv6_loopback_available()) GTEST_SKIP() << "no IPv6 loopback on this machine";
  Dnsmasq v6(srv_test_zone(), /*answer_locally=*/true, /*ipv6=*/true);
  SrvClusterRequest r;
  r.domain = "plain.muster.test";
  r.member_name = "p1";
  r.advertise_peer_urls = "http://127.0.0.1:12380";
  r.resolver.server = v6.server();
  auto result = resolve_server_cluster(r);
  ASSERT_TRUE(result) << result.error().message << "\n" << v6.log();
  EXPECT_EQ(result->initial_cluster,
            "p1=http://p1.plain.muster.test:12380,0=http://p2.plain.muster.test:22380,"
            "1=http://p3.plain.muster.test:32380");
}

TEST(SrvDiscoveryFailures, SilentServerTimesOut) {
  SilentUdpServer silent;
  SrvClusterRequest r;
  r.domain = "example.test";
  r.advertise_peer_urls = "http://127.0.0.1:2380";
  r.resolver.server = silent.server();
  r.resolver.timeout = std::chrono::milliseconds(100);
  r.resolver.tries = 2;
  const auto start = std::chrono::steady_clock::now();
  auto result = resolve_server_cluster(r);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().kind, ErrorKind::kTimeout);
  EXPECT_TRUE(contains(result.error().message,
                       "SRV lookup of _etcd-server._tcp.example.test failed: timed out: no "
                       "answer from DNS server " +
                           silent.server() +
                           " after 2 tries (first timeout 100 ms, doubled per retry)"))
      << result.error().message;
  // 100 ms then 200 ms, both services in parallel; generous upper bound.
  EXPECT_GE(elapsed, std::chrono::milliseconds(250));
  EXPECT_LT(elapsed, std::chrono::seconds(5));
}

TEST(SrvDiscoveryFailures, ClosedPortIsUnreachable) {
  SrvClientRequest r;
  r.domain = "example.test";
  r.resolver.server = "127.0.0.1:" + std::to_string(testing::closed_udp_port());
  r.resolver.timeout = std::chrono::milliseconds(200);
  r.resolver.tries = 1;
  auto result = resolve_client_endpoints(r);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().kind, ErrorKind::kUnreachable);
  EXPECT_TRUE(contains(result.error().message, "could not contact DNS server " + r.resolver.server))
      << result.error().message;
}

TEST(SrvDiscoveryFailures, BadInputIsRejectedBeforeAnyQuery) {
  SrvClusterRequest r;
  r.domain = "example.test";
  r.resolver.server = "not-an-address:53";
  auto bad_server = resolve_server_cluster(r);
  ASSERT_FALSE(bad_server);
  EXPECT_EQ(bad_server.error().kind, ErrorKind::kInvalidArgument);
  r.resolver.server = "127.0.0.1:" + std::to_string(testing::closed_udp_port());
  r.advertise_peer_urls = "127.0.0.1:2380";
  auto bad_url = resolve_server_cluster(r);
  ASSERT_FALSE(bad_url);
  EXPECT_EQ(bad_url.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_TRUE(contains(bad_url.error().message, "--initial-advertise-peer-urls"));
  r.domain = "";
  r.advertise_peer_urls = "http://127.0.0.1:2380";
  EXPECT_FALSE(resolve_server_cluster(r));
}

TEST(ResolverLifetime, DestroyingTheResolverCancelsPendingLookups) {
  SilentUdpServer silent;
  boost::asio::io_context io;
  ResolverOptions o;
  o.server = silent.server();
  o.timeout = std::chrono::seconds(10);  // would take long if not cancelled
  auto resolver = Resolver::create(io, o);
  ASSERT_TRUE(resolver);
  std::optional<Result<std::vector<SrvRecord>>> srv;
  // More lookups than the resolver runs at once: some are still queued.
  std::vector<std::optional<Result<std::vector<boost::asio::ip::address>>>> addresses(40);
  resolver.value()->lookup_srv("_etcd-server._tcp.example.test",
                               [&](auto r) { srv.emplace(std::move(r)); });
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    resolver.value()->lookup_addresses("m" + std::to_string(i) + ".example.test.",
                                       [&, i](auto r) { addresses[i].emplace(std::move(r)); });
  }
  // Let the queries go out, then destroy the resolver from inside the loop.
  io.poll();
  auto owned = std::move(resolver).value();
  owned.reset();
  const auto start = std::chrono::steady_clock::now();
  io.run();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  ASSERT_TRUE(srv.has_value());
  ASSERT_FALSE(*srv);
  EXPECT_EQ(srv->error().kind, ErrorKind::kCancelled);
  for (const auto& a : addresses) {
    ASSERT_TRUE(a.has_value());
    ASSERT_FALSE(*a);
    EXPECT_EQ(a->error().kind, ErrorKind::kCancelled);
  }
}

TEST_F(SrvDiscovery, ManyConcurrentLookupsOnOneResolver) {
  boost::asio::io_context io;
  auto resolver = Resolver::create(io, options());
  ASSERT_TRUE(resolver);
  int done = 0;
  for (int i = 0; i < 20; ++i) {
    async_resolve_server_cluster(
        *resolver.value(),
        SrvClusterRequest{"many.muster.test", "", "m05", "http://127.0.0.1:3005", options()},
        [&](Result<SrvCluster> r) {
          EXPECT_TRUE(r) << r.error().message;
          if (r) {
            EXPECT_EQ(r->entries.size(), 50u);
          }
          ++done;
        });
  }
  io.run();
  EXPECT_EQ(done, 20);
}

}  // namespace
}  // namespace muster::dns

namespace muster::dns {
namespace {

// The harness itself: a dnsmasq that cannot start is an error with its
// output, not a hang.
TEST(DnsmasqHarness, StartFailureIsReported) {
  try {
    testing::Dnsmasq broken({"--no-such-option"});
    FAIL() << "dnsmasq started with a bad option";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("dnsmasq did not start"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace muster::dns
