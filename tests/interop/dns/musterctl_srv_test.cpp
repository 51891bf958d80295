// The real `musterctl srv` binary against a real dnsmasq: what operators run
// to check DNS before starting members.  Output and exit codes are the
// interface.
#include <gtest/gtest.h>

#include "tests/interop/dns/dns_records.h"
#include "tests/interop/dns/test_support.h"

namespace muster::dns {
namespace {

using testing::Dnsmasq;
using testing::ProcessResult;
using testing::run_process;

ProcessResult musterctl(std::vector<std::string> args) {
  args.insert(args.begin(), std::string(MUSTER_BIN_DIR) + "/musterctl");
  return run_process(args);
}

class MusterctlSrv : public ::testing::Test {
 protected:
  MusterctlSrv() : dnsmasq_(testing::srv_test_zone()) {}
  ProcessResult srv(std::vector<std::string> args) {
    args.insert(args.begin(), {"srv", "--dns-server", dnsmasq_.server()});
    return musterctl(std::move(args));
  }
  Dnsmasq dnsmasq_;
};

TEST_F(MusterctlSrv, PrintsTheInitialCluster) {
  auto r = srv({"plain.muster.test", "--name", "p3", "--initial-advertise-peer-urls",
                "http://127.0.0.1:32380"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "0=http://p1.plain.muster.test:12380,1=http://p2.plain.muster.test:22380,"
            "p3=http://p3.plain.muster.test:32380\n");
  // The https service is missing: a warning, not an error.
  EXPECT_NE(r.err.find("warning: no SRV records for _etcd-server-ssl._tcp.plain.muster.test: "
                       "NXDOMAIN"),
            std::string::npos)
      << r.err;
}

TEST_F(MusterctlSrv, FlagFormsAndSuffix) {
  auto r = srv({"--discovery-srv-name=c1", "--name=c1a",
                "--initial-advertise-peer-urls=https://c1a.suffix.muster.test:2380",
                "suffix.muster.test"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "c1a=https://c1a.suffix.muster.test:2380,0=https://c1b.suffix.muster.test:2380\n");
  EXPECT_NE(r.err.find("\"suffix.muster.test\" (it must be a DNS SAN"), std::string::npos) << r.err;
}

TEST_F(MusterctlSrv, MemberNotFoundFailsLikeAMember) {
  auto r = srv({"plain.muster.test", "--name", "m9", "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err.rfind("Error: cannot find local etcd member \"m9\" in SRV records", 0), 0u)
      << r.err;
  EXPECT_NE(r.err.find("p1.plain.muster.test:12380 -> 127.0.0.1:12380"), std::string::npos)
      << r.err;
}

TEST_F(MusterctlSrv, DefaultsAreEtcds) {
  // --name default, --initial-advertise-peer-urls http://localhost:2380.
  auto r = srv({"plain.muster.test"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot find local etcd member \"default\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("http://localhost:2380 -> 127.0.0.1:2380"), std::string::npos) << r.err;
}

TEST_F(MusterctlSrv, NxDomain) {
  auto r = srv({"nothing.muster.test"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("no SRV records for _etcd-server._tcp.nothing.muster.test: NXDOMAIN"),
            std::string::npos)
      << r.err;
}

TEST_F(MusterctlSrv, ClientEndpointsOnePerLine) {
  auto r = srv({"v6.muster.test", "--client"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "http://[::1]:2379\nhttp://v1.v6.muster.test.:2379\n");
  auto none = srv({"plain.muster.test", "--client"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("Error: no DNS SRV client endpoints for plain.muster.test"),
            std::string::npos)
      << none.err;
}

TEST_F(MusterctlSrv, FiftyRecords) {
  auto r = srv({"many.muster.test", "--name", "m49", "--initial-advertise-peer-urls",
                "http://127.0.0.1:3049"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), ','), 49) << r.out;
  EXPECT_NE(r.out.find(",m49=http://m49.many.muster.test:3049\n"), std::string::npos) << r.out;
}

TEST(MusterctlSrvNoServer, SilentServerTimesOut) {
  testing::SilentUdpServer silent;
  auto r = musterctl({"srv", "example.test", "--dns-server", silent.server(), "--dns-timeout",
                      "100ms", "--dns-tries", "1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("SRV lookup of _etcd-server._tcp.example.test failed: timed out: no "
                       "answer from DNS server " +
                       silent.server() + " after 1 tries (first timeout 100 ms"),
            std::string::npos)
      << r.err;
}

TEST(MusterctlArgs, BadArgumentsExit128) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"srv"},
                                             {"srv", "a.test", "b.test"},
                                             {"srv", "a.test", "--nme", "x"},
                                             {"srv", "a.test", "--dns-server", "dns.example:53"},
                                             {"srv", "a.test", "--dns-timeout", "soon"},
                                             {"srv", "a.test", "--name"},
                                             {"srv", "a.test", "--client=maybe"},
                                             {"nosuchcommand"},
                                             {}}) {
    auto r = musterctl(args);
    EXPECT_EQ(r.exit_code, 128) << ::testing::PrintToString(args) << ": " << r.err;
    EXPECT_NE(r.err.find("Error"), std::string::npos) << r.err;
  }
  auto typo = musterctl({"srv", "a.test", "--nme", "x"});
  EXPECT_NE(typo.err.find("unknown flag: --nme (did you mean --name?)"), std::string::npos)
      << typo.err;
}

TEST(MusterctlArgs, BadAdvertiseUrlExits1WithTheMembersError) {
  auto r = musterctl({"srv", "a.test", "--dns-server", "127.0.0.1:9",
                      "--initial-advertise-peer-urls", "127.0.0.1:2380"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--initial-advertise-peer-urls: peer URL \"127.0.0.1:2380\" has no scheme"),
            std::string::npos)
      << r.err;
}

TEST(MusterctlArgs, HelpAndVersion) {
  auto help = musterctl({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("srv"), std::string::npos);
  auto srv_help = musterctl({"srv", "--help"});
  EXPECT_EQ(srv_help.exit_code, 0);
  EXPECT_NE(srv_help.out.find("Usage: musterctl srv <domain>"), std::string::npos);
  EXPECT_EQ(musterctl({"help", "srv"}).out, srv_help.out);
  auto version = musterctl({"version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out.rfind("musterctl version: ", 0), 0u) << version.out;
}

}  // namespace
}  // namespace muster::dns
