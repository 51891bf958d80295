// --config-file / ETCD_CONFIG_FILE: etcd's YAML keys, nested TLS blocks, and
// "the file replaces flags and environment".
#include <gtest/gtest.h>

#include <algorithm>

#include "node/config/config.h"
#include "node/config/flags.h"
#include "tests/support/temp_dir.h"

namespace muster::config {
namespace {

using testing::TempDir;

bool logged(const ParseResult& r, const std::string& needle) {
  return std::any_of(r.log.begin(), r.log.end(),
                     [&](const LogLine& l) { return l.message.find(needle) != std::string::npos; });
}

TEST(ConfigFile, ReadsEtcdKeysAndNestedTls) {
  TempDir dir;
  const std::string path = dir.write("etcd.conf.yml", R"(
name: 'infra1'
data-dir: /var/lib/muster
snapshot-count: 10000
heartbeat-interval: 50
election-timeout: 500
listen-peer-urls: http://10.0.0.1:2380
listen-client-urls: http://10.0.0.1:2379,http://127.0.0.1:2379
initial-advertise-peer-urls: https://10.0.0.1:2380
advertise-client-urls: http://10.0.0.1:2379
initial-cluster: infra1=https://10.0.0.1:2380,infra2=https://10.0.0.2:2380
initial-cluster-token: 'etcd-cluster-1'
initial-cluster-state: 'new'
enable-v2: true
strict-reconfig-check: yes
auto-compaction-retention: 1
grpc-keepalive-min-time: 3000000000
grpc-keepalive-interval: 90s
log-outputs: [stderr]
logger: zap
proxy: 'off'
discovery-fallback: 'exit'
cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
client-transport-security:
  cert-file: /etc/ssl/client.pem
  key-file: /etc/ssl/client-key.pem
  client-cert-auth: true
  trusted-ca-file: /etc/ssl/ca.pem
  auto-tls: false
  crl-file: /etc/ssl/client.crl
peer-transport-security:
  cert-file: /etc/ssl/peer.pem
  key-file: /etc/ssl/peer-key.pem
  client-cert-auth: true
  trusted-ca-file: /etc/ssl/peer-ca.pem
  auto-tls: true
  allowed-cn: member
debug:
)");
  auto r = parse({"--config-file", path}, {});
  ASSERT_TRUE(r.ok()) << r.error;
  const Config& c = *r.config;
  EXPECT_EQ(c.config_file, path);
  EXPECT_EQ(c.name, "infra1");
  EXPECT_EQ(c.data_dir, "/var/lib/muster");
  EXPECT_EQ(c.snapshot_count, 10000u);
  EXPECT_EQ(c.heartbeat_interval_ms, 50u);
  EXPECT_EQ(c.election_timeout_ms, 500u);
  EXPECT_EQ(c.listen_client_urls,
            (std::vector<std::string>{"http://10.0.0.1:2379", "http://127.0.0.1:2379"}));
  EXPECT_EQ(c.initial_advertise_peer_urls, std::vector<std::string>{"https://10.0.0.1:2380"});
  EXPECT_EQ(c.initial_cluster, "infra1=https://10.0.0.1:2380,infra2=https://10.0.0.2:2380");
  EXPECT_EQ(c.initial_cluster_token, "etcd-cluster-1");
  EXPECT_TRUE(c.enable_v2);
  EXPECT_TRUE(c.strict_reconfig_check);
  EXPECT_EQ(c.auto_compaction_period, std::chrono::hours(1));
  EXPECT_EQ(c.grpc_keepalive_min_time, std::chrono::seconds(3));
  EXPECT_EQ(c.grpc_keepalive_interval, std::chrono::seconds(90));
  EXPECT_EQ(c.log_outputs, std::vector<std::string>{"stderr"});
  EXPECT_EQ(c.discovery_fallback, "exit");
  EXPECT_EQ(c.cipher_suites, std::vector<std::string>{"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"});
  EXPECT_EQ(c.client_tls.cert_file, "/etc/ssl/client.pem");
  EXPECT_EQ(c.client_tls.key_file, "/etc/ssl/client-key.pem");
  EXPECT_TRUE(c.client_tls.client_cert_auth);
  EXPECT_EQ(c.client_tls.trusted_ca_file, "/etc/ssl/ca.pem");
  EXPECT_FALSE(c.client_tls.auto_tls);
  EXPECT_EQ(c.client_tls.crl_file, "/etc/ssl/client.crl");
  EXPECT_EQ(c.peer_tls.cert_file, "/etc/ssl/peer.pem");
  EXPECT_EQ(c.peer_tls.key_file, "/etc/ssl/peer-key.pem");
  EXPECT_TRUE(c.peer_tls.client_cert_auth);
  EXPECT_EQ(c.peer_tls.trusted_ca_file, "/etc/ssl/peer-ca.pem");
  EXPECT_TRUE(c.peer_tls.auto_tls);
  EXPECT_EQ(c.peer_tls.allowed_cn, "member");
  EXPECT_FALSE(c.debug);  // "debug:" with no value keeps the default
  EXPECT_TRUE(c.is_set("name"));
  EXPECT_TRUE(logged(
      r, "Loading server configuration from \"" + path +
             "\". Other configuration command line flags and environment variables will be ignored "
             "if provided."));
}

TEST(ConfigFile, FlagsAndEnvironmentAreIgnored) {
  TempDir dir;
  const std::string path = dir.write("c.yml", "name: fromfile\n");
  auto r = parse({"--config-file", path, "--data-dir", "/tmp/ignored", "--name", "flag"},
                 {{"ETCD_NAME", "env"}, {"ETCD_SNAPSHOT_COUNT", "abc"}});
  ASSERT_TRUE(r.ok()) << r.error;  // no conflict error, no bad-value error
  EXPECT_EQ(r.config->name, "fromfile");
  EXPECT_EQ(r.config->data_dir, "fromfile.etcd");
  EXPECT_EQ(r.config->snapshot_count, 100000u);
  EXPECT_EQ(r.config->initial_cluster, "fromfile=http://localhost:2380");
}

TEST(ConfigFile, EnvironmentVariableNamesTheFile) {
  TempDir dir;
  const std::string path =
      dir.write("c.yml", "name: viaenv\nheartbeat-interval: 10\nelection-timeout: 100\n");
  auto r = parse({}, {{"ETCD_CONFIG_FILE", path}, {"ETCD_NAME", "ignored"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.config->name, "viaenv");
  EXPECT_EQ(r.config->heartbeat_interval_ms, 10u);
}

TEST(ConfigFile, Errors) {
  TempDir dir;
  EXPECT_EQ(parse({"--config-file", "/nonexistent/x.yml"}, {}).error,
            "open /nonexistent/x.yml: no such file or directory");
  const std::string bad_int = dir.write("a.yml", "heartbeat-interval: abc\n");
  EXPECT_EQ(parse({"--config-file", bad_int}, {}).error,
            "config file " + bad_int +
                ": invalid value \"abc\" for key \"heartbeat-interval\": parse error");
  const std::string bad_state = dir.write("b.yml", "initial-cluster-state: later\n");
  EXPECT_EQ(parse({"--config-file", bad_state}, {}).error,
            "config file " + bad_state +
                ": invalid value \"later\" for key \"initial-cluster-state\": invalid value (valid "
                "values: new, "
                "existing)");
  const std::string bad_tls =
      dir.write("c.yml", "peer-transport-security:\n  client-cert-auth: maybe\n");
  EXPECT_EQ(parse({"--config-file", bad_tls}, {}).error,
            "config file " + bad_tls +
                ": invalid value \"maybe\" for key \"peer-transport-security.client-cert-auth\": "
                "parse error");
  const std::string not_map = dir.write("d.yml", "- a\n- b\n");
  EXPECT_EQ(parse({"--config-file", not_map}, {}).error,
            "config file " + not_map + ": the top level must be a map of flag names to values");
  const std::string broken = dir.write("e.yml", "name: [unclosed\n");
  EXPECT_EQ(parse({"--config-file", broken}, {}).error.rfind("config file " + broken + ": ", 0),
            0u);
  // Validation runs on file values too.
  const std::string timing = dir.write("f.yml", "election-timeout: 100\n");
  EXPECT_EQ(
      parse({"--config-file", timing}, {}).error,
      "--election-timeout[100ms] should be at least as 5 times as --heartbeat-interval[100ms]");
  const std::string conflict =
      dir.write("g.yml", "discovery-srv: example.com\ninitial-cluster: a=http://h:1\n");
  EXPECT_EQ(parse({"--config-file", conflict}, {}).error,
            "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", "
            "\"discovery\" or "
            "\"discovery-srv\"");
}

TEST(ConfigFile, UnknownKeysAreWarnedAbout) {
  TempDir dir;
  const std::string path =
      dir.write("c.yml", "name: x\nfoo: 1\nclient-transport-security:\n  bar: 2\n");
  auto r = parse({"--config-file", path}, {});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(logged(r, "ignoring unknown key \"foo\""));
  EXPECT_TRUE(logged(r, "ignoring unknown key \"client-transport-security.bar\""));
}

TEST(ConfigFile, DiscoveryClearsTheDefaultInitialClusterAndProxyNeedsNoAdvertise) {
  TempDir dir;
  const std::string path = dir.write("c.yml",
                                     "discovery: https://discovery.example/abc\n"
                                     "listen-client-urls: http://127.0.0.1:2379\n");
  auto r = parse({"--config-file", path}, {});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.config->initial_cluster, "");
  EXPECT_EQ(r.config->discovery, "https://discovery.example/abc");
  // etcd keeps the default advertise URL when the file sets only listen URLs.
  EXPECT_EQ(r.config->advertise_client_urls, std::vector<std::string>{"http://localhost:2379"});
}

// etcd 3.6 keeps v3 discovery in a nested discovery-config block; the flag
// names work at the top level too.
TEST(ConfigFile, V3DiscoveryNestedAndFlat) {
  TempDir dir;
  const std::string nested = dir.write("n.yml", R"(
name: n1
discovery-config:
  token: tok-1
  client:
    endpoints:
    - 10.0.0.2:2379
    - https://10.0.0.1:2379
    dial-timeout: 3000000000
    request-timeout: 7s
    keepalive-time: 4000000000
    keepalive-timeout: 8000000000
    secure:
      cert: /c.pem
      key: /k.pem
      cacert: /ca.pem
      insecure-transport: false
      insecure-skip-tls-verify: true
    auth:
      username: root
      password: pw
    max-recv-bytes: 5
)");
  auto r = parse({"--config-file", nested}, {});
  ASSERT_TRUE(r.ok()) << r.error;
  const DiscoveryV3Config& v3 = r.config->discovery_v3;
  EXPECT_EQ(v3.token, "tok-1");
  EXPECT_EQ(v3.endpoints, (std::vector<std::string>{"10.0.0.2:2379", "https://10.0.0.1:2379"}));
  EXPECT_EQ(v3.dial_timeout, std::chrono::seconds(3));
  EXPECT_EQ(v3.request_timeout, std::chrono::seconds(7));
  EXPECT_EQ(v3.keepalive_time, std::chrono::seconds(4));
  EXPECT_EQ(v3.keepalive_timeout, std::chrono::seconds(8));
  EXPECT_EQ(v3.cert, "/c.pem");
  EXPECT_EQ(v3.key, "/k.pem");
  EXPECT_EQ(v3.cacert, "/ca.pem");
  EXPECT_FALSE(v3.insecure_transport);
  EXPECT_TRUE(v3.insecure_skip_tls_verify);
  EXPECT_EQ(v3.user, "root");
  EXPECT_EQ(v3.password, "pw");
  EXPECT_EQ(r.config->initial_cluster, "");  // discovery replaces the default cluster
  EXPECT_TRUE(logged(r, "ignoring unknown key \"discovery-config.client.max-recv-bytes\""));

  const std::string flat =
      dir.write("f.yml", "discovery-token: t\ndiscovery-endpoints: 127.0.0.1:2379\n");
  auto f = parse({"--config-file", flat}, {});
  ASSERT_TRUE(f.ok()) << f.error;
  EXPECT_EQ(f.config->discovery_v3.token, "t");
  EXPECT_EQ(f.config->discovery_v3.endpoints, std::vector<std::string>{"127.0.0.1:2379"});

  const std::string half = dir.write("h.yml", "discovery-config:\n  token: t\n");
  EXPECT_EQ(parse({"--config-file", half}, {}).error,
            "both --discovery-token and --discovery-endpoints must be set");
  const std::string bad = dir.write("b.yml", "discovery-config:\n  client: 3\n");
  EXPECT_EQ(parse({"--config-file", bad}, {}).error,
            "config file " + bad + ": key \"discovery-config.client\" must be a map");
}

TEST(ConfigFile, EmptyFileMeansDefaults) {
  TempDir dir;
  const std::string path = dir.write("c.yml", "");
  auto r = parse({"--config-file", path}, {});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.config->name, "default");
  EXPECT_EQ(r.config->data_dir, "default.etcd");
}

}  // namespace
}  // namespace muster::config

namespace muster::config {
namespace {

// Every flag is reachable under its ETCD_* name and its YAML key.
TEST(ConfigSources, EveryFlagHasAnEnvironmentVariableAndAYamlKey) {
  TempDir dir;
  for (const auto& spec : detail::flag_table()) {
    if (spec.kind == detail::FlagKind::kIgnored || spec.name == "config-file") continue;
    // A value the flag accepts: its default where that parses, else a sample.
    std::string value = spec.kind == detail::FlagKind::kBool       ? "true"
                        : spec.kind == detail::FlagKind::kDuration ? "7s"
                        : spec.default_text.empty()                ? "x"
                                                                   : spec.default_text;
    Config scratch;
    if (!spec.set(scratch, value).empty()) value = "10";
    if (!spec.set(scratch, value).empty()) value = "http://127.0.0.1:9000";
    ASSERT_EQ(spec.set(scratch, value), "") << spec.name << " has no sample value";

    const std::string key = detail::env_name(spec.name);
    auto by_env = parse({}, {{key, value}});
    EXPECT_TRUE(logged(by_env, "recognized and used environment variable " + key + "=" + value))
        << spec.name;

    if (spec.name == "version") continue;  // not a YAML key in etcd either
    const std::string path = dir.write("one.yml", spec.name + ": \"" + value + "\"\n");
    auto by_yaml = parse({"--config-file", path}, {});
    EXPECT_FALSE(logged(by_yaml, "ignoring unknown key")) << spec.name;
    EXPECT_NE(by_yaml.error.rfind("config file ", 0), 0u) << spec.name << ": " << by_yaml.error;
  }
}

}  // namespace
}  // namespace muster::config
