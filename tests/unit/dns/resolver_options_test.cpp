// --dns-server parsing and the system-resolver path, without a DNS server:
// "localhost" comes from /etc/hosts.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include "dns/resolver.h"

namespace muster::dns {
namespace {

TEST(DnsServerFlag, AcceptsAddressWithOptionalPort) {
  EXPECT_EQ(parse_dns_server("127.0.0.1:5353").value(), "127.0.0.1:5353");
  EXPECT_EQ(parse_dns_server("10.0.0.1").value(), "10.0.0.1:53");
  EXPECT_EQ(parse_dns_server("[::1]:5353").value(), "[::1]:5353");
  EXPECT_EQ(parse_dns_server("[2001:db8::53]").value(), "[2001:db8::53]:53");
  EXPECT_EQ(parse_dns_server("::1").value(), "[::1]:53");
}

TEST(DnsServerFlag, RejectsNamesAndBadPorts) {
  for (const char* bad : {"dns.example:53", "", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:x",
                          "1.2.3.4:", "[::1", "[::1]x", "[::1]:"}) {
    auto r = parse_dns_server(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument) << bad;
    }
  }
}

TEST(ResolverCreate, RejectsNonPositiveTimeoutsAndTries) {
  boost::asio::io_context io;
  ResolverOptions o;
  o.tries = 0;
  EXPECT_FALSE(Resolver::create(io, o));
  o.tries = 1;
  o.timeout = std::chrono::milliseconds(0);
  EXPECT_FALSE(Resolver::create(io, o));
}

TEST(ResolverCreate, ServerOverrideIsWhatQueriesUse) {
  boost::asio::io_context io;
  ResolverOptions o;
  o.server = "127.0.0.1:5399";
  auto r = Resolver::create(io, o);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r.value()->servers(), "127.0.0.1:5399");
}

TEST(SystemResolver, LocalhostComesFromTheHostsFile) {
  boost::asio::io_context io;
  auto r = Resolver::create(io, ResolverOptions{});
  ASSERT_TRUE(r) << r.error().message;
  std::optional<Result<std::vector<boost::asio::ip::address>>> got;
  r.value()->lookup_addresses("localhost", [&](auto result) { got.emplace(std::move(result)); });
  io.run();
  ASSERT_TRUE(got.has_value());
  ASSERT_TRUE(*got) << got->error().message;
  bool loopback = false;
  for (const auto& a : got->value()) loopback |= a.is_loopback();
  EXPECT_TRUE(loopback);
}

TEST(SystemResolver, AddressLiteralNeedsNoDns) {
  boost::asio::io_context io;
  auto r = Resolver::create(io, ResolverOptions{});
  ASSERT_TRUE(r);
  std::optional<Result<std::vector<boost::asio::ip::address>>> got;
  r.value()->lookup_addresses("2001:db8::7", [&](auto result) { got.emplace(std::move(result)); });
  io.run();
  ASSERT_TRUE(got && *got);
  ASSERT_EQ(got->value().size(), 1u);
  EXPECT_EQ(got->value()[0], boost::asio::ip::make_address("2001:db8::7"));
}

}  // namespace
}  // namespace muster::dns
