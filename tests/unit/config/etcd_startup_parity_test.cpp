// Parity with the real etcd 3.4 for ACCEPTED configurations: etcd logs the
// configuration it settled on ("starting an etcd server", zap JSON) after
// reading flags, environment or YAML and deriving its defaults.  For the same
// input, parse() must settle on the same values.  Each etcd runs on free
// loopback ports in a temp dir and is killed as soon as that line appears.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "node/config/config.h"
#include "tests/support/ports.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace muster::config {
namespace {

using testing::Child;
using testing::free_port;
using testing::TempDir;

struct Settled {
  nlohmann::json etcd;  // the "starting an etcd server" fields
  Config ours;
};

// Runs etcd with `args` and exactly `env` in a fresh dir (also cwd, so a
// relative data dir lands there) and parses the same input ourselves.
std::optional<Settled> settle(const TempDir& dir, const std::vector<std::string>& args,
                              const std::map<std::string, std::string>& env) {
  std::vector<std::string> argv{"/usr/bin/etcd"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<std::string> envv;
  for (const auto& [k, v] : env) envv.push_back(k + "=" + v);
  Child etcd(argv, dir.file("etcd.log"), dir.path(), envv);
  const std::string line =
      etcd.wait_for_line("\"msg\":\"starting an etcd server\"", std::chrono::seconds(20));
  if (line.empty()) {
    ADD_FAILURE() << "etcd did not log its configuration:\n" << etcd.log();
    return std::nullopt;
  }
  auto r = parse(args, env);
  if (!r.ok()) {
    ADD_FAILURE() << "etcd accepted what we refuse: " << r.error;
    return std::nullopt;
  }
  return Settled{nlohmann::json::parse(line), *r.config};
}

std::string ms(uint32_t v) { return format_go_duration(std::chrono::milliseconds(v)); }

void expect_same(const Settled& s) {
  const auto& e = s.etcd;
  const Config& c = s.ours;
  EXPECT_EQ(e["name"], c.name);
  EXPECT_EQ(e["data-dir"], c.data_dir);
  EXPECT_EQ(e["heartbeat-interval"], ms(c.heartbeat_interval_ms));
  EXPECT_EQ(e["election-timeout"], ms(c.election_timeout_ms));
  EXPECT_EQ(e["initial-election-tick-advance"], c.initial_election_tick_advance);
  EXPECT_EQ(e["snapshot-count"], c.snapshot_count);
  EXPECT_EQ(e["max-wals"], c.max_wals);
  EXPECT_EQ(e["max-snapshots"], c.max_snapshots);
  EXPECT_EQ(e["initial-advertise-peer-urls"], c.initial_advertise_peer_urls);
  EXPECT_EQ(e["listen-peer-urls"], c.listen_peer_urls);
  EXPECT_EQ(e["advertise-client-urls"], c.advertise_client_urls);
  EXPECT_EQ(e["listen-client-urls"], c.listen_client_urls);
  EXPECT_EQ(e["listen-metrics-urls"], c.listen_metrics_urls);
  // etcd logs the parsed map (URLsMap.String(): pairs sorted).
  auto m = parse_initial_cluster(c.initial_cluster);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(e["initial-cluster"], urls_map_string(*m));
  EXPECT_EQ(e["initial-cluster-state"], c.initial_cluster_state);
  EXPECT_EQ(e["initial-cluster-token"], c.initial_cluster_token);
  EXPECT_EQ(e["max-request-bytes"], c.max_request_bytes);
  EXPECT_EQ(e["max-concurrent-streams"], c.max_concurrent_streams);
  EXPECT_EQ(e["pre-vote"], c.pre_vote);
  EXPECT_EQ(e["initial-corrupt-check"], c.experimental_initial_corrupt_check);
  EXPECT_EQ(e["corrupt-check-time-interval"],
            format_go_duration(c.experimental_corrupt_check_time));
  EXPECT_EQ(e["auto-compaction-mode"], c.auto_compaction_mode);
  if (c.auto_compaction_mode == "periodic") {
    EXPECT_EQ(e["auto-compaction-retention"], format_go_duration(c.auto_compaction_period));
  }
  EXPECT_EQ(e["discovery-url"], c.discovery);
  EXPECT_EQ(e["cors"], c.cors);
  EXPECT_EQ(e["host-whitelist"], c.host_whitelist);
}

std::string loopback(int port) { return "http://127.0.0.1:" + std::to_string(port); }

class EtcdStartupParity : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/usr/bin/etcd", X_OK) != 0) GTEST_SKIP() << "etcd-server not installed";
  }
};

TEST_F(EtcdStartupParity, FlagsWithDerivedDataDirAndInitialCluster) {
  TempDir dir;
  const std::string peer = loopback(free_port()), client = loopback(free_port());
  auto s = settle(dir,
                  {"--name",
                   "n1",
                   "--listen-peer-urls",
                   peer,
                   "--initial-advertise-peer-urls",
                   peer,
                   "--listen-client-urls",
                   client,
                   "--advertise-client-urls",
                   client,
                   "--logger",
                   "zap",
                   "--log-outputs",
                   "stderr",
                   "--auto-compaction-retention",
                   "2",
                   "--heartbeat-interval",
                   "50",
                   "--election-timeout",
                   "700",
                   "--snapshot-count",
                   "777",
                   "--pre-vote",
                   "--max-wals=0"},
                  {});
  ASSERT_TRUE(s);
  EXPECT_EQ(s->ours.initial_cluster, "n1=" + peer);
  expect_same(*s);
}

TEST_F(EtcdStartupParity, EnvironmentVariables) {
  TempDir dir;
  const int pa = free_port(), pb = free_port();
  const std::string peers = loopback(pb) + "," + loopback(pa), client = loopback(free_port());
  auto s = settle(dir, {"--logger", "zap", "--log-outputs", "stderr"},
                  {{"ETCD_NAME", "envmember"},
                   {"ETCD_DATA_DIR", dir.file("data")},
                   {"ETCD_LISTEN_PEER_URLS", peers},
                   {"ETCD_INITIAL_ADVERTISE_PEER_URLS", peers},
                   {"ETCD_LISTEN_CLIENT_URLS", client},
                   {"ETCD_ADVERTISE_CLIENT_URLS", client},
                   {"ETCD_INITIAL_CLUSTER_TOKEN", "env-token"},
                   {"ETCD_AUTO_COMPACTION_RETENTION", "30m"},
                   {"ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME", "1m30s"},
                   {"ETCD_CORS", "http://b.example:80,http://a.example:8080"},
                   {"ETCD_HOST_WHITELIST", "b.example,a.example,b.example"},
                   {"ETCD_UNKNOWN_THING", "1"}});
  ASSERT_TRUE(s);
  expect_same(*s);
}

TEST_F(EtcdStartupParity, ConfigFileIgnoresFlagsAndEnvironment) {
  TempDir dir;
  const int pa = free_port(), pb = free_port();
  const std::string client = loopback(free_port()), metrics = loopback(free_port());
  const std::string path = dir.write("etcd.conf.yml",
                                     "name: yamlmember\n"
                                     "listen-peer-urls: " +
                                         loopback(pa) + "," + loopback(pb) +
                                         "\n"
                                         "initial-advertise-peer-urls: " +
                                         loopback(pb) + "," + loopback(pa) +
                                         "\n"
                                         "initial-cluster: yamlmember=" +
                                         loopback(pa) + ",yamlmember=" + loopback(pb) +
                                         "\n"
                                         "listen-client-urls: " +
                                         client +
                                         "\n"
                                         "advertise-client-urls: " +
                                         client +
                                         "\n"
                                         "listen-metrics-urls: " +
                                         metrics +
                                         "\n"
                                         "initial-cluster-token: yaml-token\n"
                                         "heartbeat-interval: 25\n"
                                         "election-timeout: 250\n"
                                         "snapshot-count: 10000\n"
                                         "auto-compaction-mode: revision\n"
                                         "auto-compaction-retention: \"1000\"\n"
                                         "logger: zap\n"
                                         "log-outputs: [stderr]\n");
  auto s =
      settle(dir, {"--config-file", path, "--name", "ignored"}, {{"ETCD_SNAPSHOT_COUNT", "5"}});
  ASSERT_TRUE(s);
  EXPECT_EQ(s->ours.name, "yamlmember");
  EXPECT_EQ(s->ours.data_dir, "yamlmember.etcd");
  expect_same(*s);
}

}  // namespace
}  // namespace muster::config

namespace muster::config {
namespace {

// The nested TLS blocks of the YAML file: etcd logs the TLS settings it read
// ("starting with peer TLS" / "starting with client TLS") before it opens
// the certificate files (which do not exist here, so it stops right there).
std::string tls_info(const TlsConfig& t) {
  return "cert = " + t.cert_file + ", key = " + t.key_file + ", trusted-ca = " + t.trusted_ca_file +
         ", client-cert-auth = " + (t.client_cert_auth ? "true" : "false") +
         ", crl-file = " + t.crl_file;
}

TEST_F(EtcdStartupParity, NestedTlsBlocksOfTheConfigFile) {
  for (const bool peer_side : {true, false}) {
    TempDir dir;
    const std::string p = std::to_string(free_port()), c = std::to_string(free_port());
    const std::string peer_scheme = peer_side ? "https" : "http",
                      client_scheme = peer_side ? "http" : "https";
    // Only the block under test: etcd also loads the peer certificate for
    // its outgoing peer connections, even over http.
    const std::string block = peer_side ? "peer-transport-security:\n"
                                          "  cert-file: /nonexistent/pc.pem\n"
                                          "  key-file: /nonexistent/pk.pem\n"
                                          "  client-cert-auth: false\n"
                                          "  trusted-ca-file: /nonexistent/pca.pem\n"
                                        : "client-transport-security:\n"
                                          "  cert-file: /nonexistent/c.pem\n"
                                          "  key-file: /nonexistent/k.pem\n"
                                          "  client-cert-auth: true\n"
                                          "  trusted-ca-file: /nonexistent/ca.pem\n";
    const std::string peer_url = peer_scheme + "://127.0.0.1:" + p;
    const std::string client_url = client_scheme + "://127.0.0.1:" + c;
    const std::string path =
        dir.write("tls.yml",
                  "name: t\nlogger: zap\nlog-outputs: [stderr]\n"
                  "heartbeat-interval: 10\nelection-timeout: 100\n"
                  "listen-peer-urls: " +
                      peer_url + "\ninitial-advertise-peer-urls: " + peer_url +
                      "\ninitial-cluster: t=" + peer_url + "\nlisten-client-urls: " + client_url +
                      "\nadvertise-client-urls: " + client_url + "\n" + block);
    Child etcd({"/usr/bin/etcd", "--config-file", path}, dir.file("etcd.log"), dir.path(),
               std::vector<std::string>{});
    const std::string msg =
        peer_side ? "\"msg\":\"starting with peer TLS\"" : "\"msg\":\"starting with client TLS\"";
    const std::string line = etcd.wait_for_line(msg, std::chrono::seconds(20));
    ASSERT_FALSE(line.empty()) << etcd.log();
    auto r = parse({"--config-file", path}, {});
    ASSERT_TRUE(r.ok()) << r.error;
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["tls-info"], tls_info(peer_side ? r.config->peer_tls : r.config->client_tls))
        << line;
  }
}

}  // namespace
}  // namespace muster::config
