// Command line, environment and validation of `muster`'s configuration,
// checked against etcd 3.4's behaviour and error texts (the texts were taken
// from /usr/bin/etcd 3.4.23 runs).
#include "node/config/config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace muster::config {
namespace {

using Env = std::map<std::string, std::string>;

ParseResult run(std::vector<std::string> args, Env env = {}) { return parse(args, env); }

Config ok(std::vector<std::string> args, Env env = {}) {
  auto r = parse(args, env);
  EXPECT_TRUE(r.ok()) << r.error;
  return r.config.value_or(Config{});
}

std::string err(std::vector<std::string> args, Env env = {}) {
  auto r = parse(args, env);
  EXPECT_FALSE(r.ok());
  return r.error;
}

bool logged(const ParseResult& r, LogLine::Level level, const std::string& text) {
  return std::any_of(r.log.begin(), r.log.end(),
                     [&](const LogLine& l) { return l.level == level && l.message == text; });
}

TEST(ConfigDefaults, MatchEtcd34) {
  auto r = run({});
  ASSERT_TRUE(r.ok()) << r.error;
  const Config& c = *r.config;
  EXPECT_EQ(c.name, "default");
  EXPECT_EQ(c.data_dir, "default.etcd");
  EXPECT_TRUE(logged(r, LogLine::Level::kWarn,
                     "no data-dir provided, using default data-dir ./default.etcd"));
  EXPECT_EQ(c.snapshot_count, 100000u);
  EXPECT_EQ(c.heartbeat_interval_ms, 100u);
  EXPECT_EQ(c.election_timeout_ms, 1000u);
  EXPECT_EQ(c.listen_peer_urls, std::vector<std::string>{"http://localhost:2380"});
  EXPECT_EQ(c.listen_client_urls, std::vector<std::string>{"http://localhost:2379"});
  EXPECT_EQ(c.initial_advertise_peer_urls, std::vector<std::string>{"http://localhost:2380"});
  EXPECT_EQ(c.advertise_client_urls, std::vector<std::string>{"http://localhost:2379"});
  EXPECT_EQ(c.initial_cluster, "default=http://localhost:2380");
  EXPECT_EQ(c.initial_cluster_state, "new");
  EXPECT_EQ(c.initial_cluster_token, "etcd-cluster");
  EXPECT_EQ(c.max_request_bytes, 1572864u);
  EXPECT_EQ(c.max_txn_ops, 128u);
  EXPECT_EQ(c.quota_backend_bytes, 0);
  EXPECT_EQ(c.max_concurrent_streams, 4294967295u);
  EXPECT_EQ(c.grpc_keepalive_interval, std::chrono::hours(2));
  EXPECT_EQ(c.discovery_fallback, "proxy");
  EXPECT_EQ(c.proxy, "off");
  EXPECT_EQ(c.proxy_refresh_interval_ms, 30000u);
  EXPECT_TRUE(c.strict_reconfig_check);
  EXPECT_FALSE(c.enable_v2);
  EXPECT_EQ(c.auto_compaction_mode, "periodic");
  EXPECT_EQ(c.auto_compaction_retention, "0");
  EXPECT_EQ(c.auto_compaction_period.count(), 0);
  EXPECT_EQ(c.tls_min_version, "TLS1.2");
  EXPECT_EQ(c.cors, std::vector<std::string>{"*"});
  EXPECT_EQ(c.auth_token, "simple");
  EXPECT_EQ(c.bcrypt_cost, 10u);
  EXPECT_EQ(c.metrics, "basic");
  EXPECT_TRUE(c.listen_metrics_urls.empty());
  EXPECT_EQ(c.logger, "zap");  // Muster's default: JSON lines (etcd 3.5's default)
  EXPECT_EQ(c.log_outputs, std::vector<std::string>{"default"});
  EXPECT_EQ(c.experimental_watch_progress_notify_interval, std::chrono::minutes(10));
  EXPECT_FALSE(c.force_new_cluster);
  EXPECT_TRUE(c.explicitly_set.empty());
}

TEST(ConfigFlags, AcceptsGoFlagSyntaxes) {
  EXPECT_EQ(ok({"--name=a"}).name, "a");
  EXPECT_EQ(ok({"--name", "b"}).name, "b");
  EXPECT_EQ(ok({"-name", "c"}).name, "c");
  EXPECT_EQ(ok({"-name=d"}).name, "d");
  EXPECT_TRUE(ok({"--enable-v2"}).enable_v2);
  EXPECT_FALSE(ok({"--strict-reconfig-check=false"}).strict_reconfig_check);
  EXPECT_FALSE(ok({"-strict-reconfig-check=0"}).strict_reconfig_check);
  EXPECT_TRUE(ok({"--enable-v2=T"}).enable_v2);
  // Last occurrence wins, as with Go's flag package.
  EXPECT_EQ(ok({"--name=a", "--name=z"}).name, "z");
  EXPECT_EQ(ok({"--snapshot-count", "0x10"}).snapshot_count, 16u);
  EXPECT_EQ(ok({"--grpc-keepalive-timeout", "1m30s"}).grpc_keepalive_timeout,
            std::chrono::seconds(90));
  auto c = ok({"--name", "x", "--data-dir", "/tmp/x"});
  EXPECT_TRUE(c.is_set("name"));
  EXPECT_TRUE(c.is_set("data-dir"));
  EXPECT_FALSE(c.is_set("wal-dir"));
}

TEST(ConfigFlags, BooleanFlagDoesNotTakeTheNextArgument) {
  EXPECT_EQ(err({"--enable-v2", "true"}), "'true' is not a valid flag");
}

TEST(ConfigFlags, PositionalArgumentIsNotAValidFlag) {
  EXPECT_EQ(err({"bar"}), "'bar' is not a valid flag");
  EXPECT_EQ(err({"--name", "x", "bar", "--data-dir", "y"}), "'bar' is not a valid flag");
  EXPECT_EQ(err({"--", "--name"}), "'--name' is not a valid flag");
}

TEST(ConfigFlags, SyntaxErrors) {
  EXPECT_EQ(err({"--name"}), "flag needs an argument: -name");
  EXPECT_EQ(err({"---name=x"}), "bad flag syntax: ---name=x");
  EXPECT_EQ(err({"--snapshot-count", "abc"}),
            "invalid value \"abc\" for flag -snapshot-count: parse error");
  EXPECT_EQ(err({"--heartbeat-interval", "-5"}),
            "invalid value \"-5\" for flag -heartbeat-interval: parse error");
  EXPECT_EQ(err({"--max-txn-ops", "99999999999"}),
            "invalid value \"99999999999\" for flag -max-txn-ops: value out of range");
  EXPECT_EQ(err({"--enable-v2=maybe"}),
            "invalid boolean value \"maybe\" for -enable-v2: parse error");
  EXPECT_EQ(err({"--grpc-keepalive-time", "5"})
                .rfind("flag provided but not defined: -grpc-keepalive-time", 0),
            0u);
  EXPECT_EQ(err({"--grpc-keepalive-timeout", "5"}),
            "invalid value \"5\" for flag -grpc-keepalive-timeout: parse error");
  EXPECT_EQ(err({"--initial-cluster-state", "foo"}),
            "invalid value \"foo\" for flag -initial-cluster-state: invalid value (valid values: "
            "new, existing)");
  EXPECT_EQ(err({"--discovery-fallback", "foo"}),
            "invalid value \"foo\" for flag -discovery-fallback: invalid value (valid values: "
            "proxy, exit)");
  EXPECT_EQ(
      err({"--proxy", "foo"}),
      "invalid value \"foo\" for flag -proxy: invalid value (valid values: off, readonly, on)");
}

TEST(ConfigFlags, UrlFlagsParseAsEtcdUrlsAndAreSorted) {
  EXPECT_EQ(err({"--listen-peer-urls", "foo"}),
            "invalid value \"foo\" for flag -listen-peer-urls: URL scheme must be http, https, "
            "unix, or unixs: foo");
  EXPECT_EQ(err({"--listen-peer-urls", "http://127.0.0.1"}),
            "invalid value \"http://127.0.0.1\" for flag -listen-peer-urls: URL address does not "
            "have the form "
            "\"host:port\": http://127.0.0.1");
  EXPECT_EQ(err({"--advertise-client-urls", "ftp://127.0.0.1:1"}),
            "invalid value \"ftp://127.0.0.1:1\" for flag -advertise-client-urls: URL scheme must "
            "be http, https, "
            "unix, or unixs: ftp://127.0.0.1:1");
  EXPECT_EQ(err({"--listen-client-urls", "http://127.0.0.1:2379/path", "--advertise-client-urls",
                 "http://127.0.0.1:2379"}),
            "invalid value \"http://127.0.0.1:2379/path\" for flag -listen-client-urls: URL must "
            "not contain a "
            "path: http://127.0.0.1:2379/path");
  auto c = ok({"--initial-advertise-peer-urls", "https://10.0.0.2:2380, http://10.0.0.9:2380",
               "--listen-peer-urls", "http://[::1]:2380,unix://localhost:7"});
  EXPECT_EQ(c.initial_advertise_peer_urls,
            (std::vector<std::string>{"http://10.0.0.9:2380", "https://10.0.0.2:2380"}));
  EXPECT_EQ(c.listen_peer_urls,
            (std::vector<std::string>{"http://[::1]:2380", "unix://localhost:7"}));
}

TEST(ConfigFlags, CorsAndHostWhitelistAreSortedSets) {
  auto c =
      ok({"--cors", "http://b.example:80,*,http://a.example:8080,*", "--host-whitelist", "b,a,b"});
  EXPECT_EQ(c.cors,
            (std::vector<std::string>{"*", "http://a.example:8080", "http://b.example:80"}));
  EXPECT_EQ(c.host_whitelist, (std::vector<std::string>{"a", "b"}));
  // etcd 3.4 parses CORS origins as its URLs: a port is required.
  EXPECT_EQ(err({"--cors", "http://a.example"}),
            "invalid value \"http://a.example\" for flag -cors: URL address does not have the form "
            "\"host:port\": "
            "http://a.example");
}

TEST(ConfigFlags, LegacyFlagsAreIgnoredWithAWarning) {
  auto r = run({"--snapshot", "-v", "--peer-heartbeat-interval=7"});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(
      logged(r, LogLine::Level::kWarn, "flag \"-snapshot\" is no longer supported - ignoring."));
  EXPECT_TRUE(logged(r, LogLine::Level::kWarn, "flag \"-v\" is no longer supported - ignoring."));
  EXPECT_EQ(r.config->snapshot_count, 100000u);
}

TEST(ConfigFlags, UnknownFlagListsClosestMatches) {
  EXPECT_EQ(err({"--initial-cluster-tokne", "x"}),
            "flag provided but not defined: -initial-cluster-tokne (did you mean "
            "--initial-cluster-token?)");
  EXPECT_EQ(err({"--nmae=x"}), "flag provided but not defined: -nmae (did you mean --name?)");
  const std::string e = err({"--peer-cert", "x"});
  EXPECT_EQ(e.rfind("flag provided but not defined: -peer-cert (did you mean --peer-cert-file", 0),
            0u)
      << e;
  EXPECT_EQ(err({"--zzzzzzzzzzzzzzzzzz"}), "flag provided but not defined: -zzzzzzzzzzzzzzzzzz");
  // Muster's own additions are flags like any other.
  EXPECT_EQ(err({"--dns-sever=1.2.3.4:53"}),
            "flag provided but not defined: -dns-sever (did you mean --dns-server?)");
}

TEST(ConfigFlags, HelpAndVersionAreReportedNotActedOn) {
  auto h = run({"--name", "x", "-h", "--bogus"});
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h.print_help);
  EXPECT_TRUE(run({"--help"}).print_help);
  auto v = run({"--version"});
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v.print_version);
  EXPECT_FALSE(run({"--version=false"}).print_version);
  // Positional arguments are checked before --version, as in etcd.
  EXPECT_EQ(err({"--version", "x"}), "'x' is not a valid flag");
  // --version skips validation.
  EXPECT_TRUE(run({"--version", "--heartbeat-interval=0"}).print_version);
}

TEST(ConfigUsage, ListsEveryFlagWithItsDefault) {
  const std::string u = usage_text();
  for (const auto& name : flag_names())
    EXPECT_NE(u.find("--" + name + " '"), std::string::npos) << name;
  EXPECT_NE(u.find("--initial-cluster 'default=http://localhost:2380'"), std::string::npos);
  EXPECT_EQ(u.find("--vv"), std::string::npos);  // legacy flags are not advertised
}

// ---- environment ------------------------------------------------------------

TEST(ConfigEnv, VariablesSetFlagsAndAreLogged) {
  auto r = run({}, {{"ETCD_NAME", "infra1"},
                    {"ETCD_INITIAL_CLUSTER_TOKEN", "tok"},
                    {"ETCD_ENABLE_V2", "true"},
                    {"ETCD_PEER_CLIENT_CERT_AUTH", "1"},
                    {"ETCD_DATA_DIR", ""},  // empty values are ignored
                    {"PATH", "/bin"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.config->name, "infra1");
  EXPECT_EQ(r.config->initial_cluster_token, "tok");
  EXPECT_TRUE(r.config->enable_v2);
  EXPECT_TRUE(r.config->peer_tls.client_cert_auth);
  EXPECT_EQ(r.config->data_dir, "infra1.etcd");
  EXPECT_TRUE(r.config->is_set("name"));
  EXPECT_FALSE(r.config->is_set("data-dir"));
  EXPECT_TRUE(logged(r, LogLine::Level::kInfo,
                     "recognized and used environment variable ETCD_NAME=infra1"));
}

TEST(ConfigEnv, FlagBeatsDefaultAndEnvBeatsDefault) {
  auto c = ok({"--snapshot-count", "5"}, {{"ETCD_HEARTBEAT_INTERVAL", "50"}});
  EXPECT_EQ(c.snapshot_count, 5u);
  EXPECT_EQ(c.heartbeat_interval_ms, 50u);
}

TEST(ConfigEnv, FlagAndItsVariableBothSetIsAnError) {
  const std::string want =
      "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding command-line "
      "flag (either "
      "unset environment variable or disable flag)";
  EXPECT_EQ(err({"--name", "y"}, {{"ETCD_NAME", "x"}}), want);
  // Even an empty variable counts, as in etcd 3.4.
  EXPECT_EQ(err({"--name", "y"}, {{"ETCD_NAME", ""}}), want);
  EXPECT_EQ(err({"-enable-v2"}, {{"ETCD_ENABLE_V2", "false"}}),
            "conflicting environment variable \"ETCD_ENABLE_V2\" is shadowed by corresponding "
            "command-line flag "
            "(either unset environment variable or disable flag)");
}

TEST(ConfigEnv, UnrecognizedVariableIsAWarning) {
  auto r = run({}, {{"ETCD_FOO", "1"}, {"ETCDCTL_API", "3"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(logged(r, LogLine::Level::kWarn, "unrecognized environment variable ETCD_FOO=1"));
  EXPECT_EQ(std::count_if(
                r.log.begin(), r.log.end(),
                [](const LogLine& l) { return l.message.find("ETCDCTL") != std::string::npos; }),
            0);
}

TEST(ConfigEnv, InvalidValueNamesTheVariable) {
  auto r = run({}, {{"ETCD_SNAPSHOT_COUNT", "abc"}, {"ETCD_FOO", "1"}});
  EXPECT_EQ(r.error, "invalid value \"abc\" for ETCD_SNAPSHOT_COUNT: parse error");
  EXPECT_TRUE(logged(r, LogLine::Level::kWarn, "unrecognized environment variable ETCD_FOO=1"));
}

TEST(ConfigEnv, ValidationSeesEnvironmentValues) {
  EXPECT_EQ(
      err({}, {{"ETCD_ELECTION_TIMEOUT", "10"}}),
      "--election-timeout[10ms] should be at least as 5 times as --heartbeat-interval[100ms]");
  // listen-client-urls from the environment counts as "set explicitly".
  EXPECT_EQ(err({}, {{"ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:2379"}}),
            "--advertise-client-urls is required when --listen-client-urls is set explicitly");
}

// ---- validation -------------------------------------------------------------

TEST(ConfigValidate, ElectionTimeoutBounds) {
  EXPECT_EQ(
      err({"--election-timeout", "400"}),
      "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]");
  EXPECT_EQ(ok({"--election-timeout", "500"}).election_timeout_ms, 500u);
  EXPECT_EQ(err({"--election-timeout", "60000"}),
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms");
  EXPECT_EQ(ok({"--election-timeout", "50000"}).election_timeout_ms, 50000u);
  EXPECT_EQ(err({"--heartbeat-interval", "0"}), "--heartbeat-interval must be >0 (set to 0ms)");
  EXPECT_EQ(err({"--election-timeout", "0"}), "--election-timeout must be >0 (set to 0ms)");
}

TEST(ConfigValidate, AdvertiseClientUrlsRequiredUnlessMayBeProxy) {
  const std::string want =
      "--advertise-client-urls is required when --listen-client-urls is set explicitly";
  EXPECT_EQ(err({"--listen-client-urls", "http://127.0.0.1:2379"}), want);
  auto c = ok({"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls",
               "http://10.1.1.1:2379"});
  EXPECT_EQ(c.advertise_client_urls, std::vector<std::string>{"http://10.1.1.1:2379"});
  // A v2 proxy, or a discovery member that may fall back to one, is excused
  // and keeps the default advertise URL.
  EXPECT_EQ(
      ok({"--listen-client-urls", "http://127.0.0.1:2379", "--proxy", "on"}).advertise_client_urls,
      std::vector<std::string>{"http://localhost:2379"});
  ok({"--listen-client-urls", "http://127.0.0.1:2379", "--discovery", "http://d.example/x"});
  EXPECT_EQ(err({"--listen-client-urls", "http://127.0.0.1:2379", "--discovery",
                 "http://d.example/x", "--discovery-fallback", "exit"}),
            want);
}

TEST(ConfigValidate, ListenUrlsMustBeIpsOrLocalhost) {
  EXPECT_EQ(err({"--listen-peer-urls", "http://example.com:2380"}),
            "expected IP in URL for binding (http://example.com:2380)");
  EXPECT_EQ(err({"--listen-metrics-urls", "http://metrics.local:9000"}),
            "expected IP in URL for binding (http://metrics.local:9000)");
  ok({"--listen-peer-urls",
      "http://0.0.0.0:2380,https://[::]:2381,http://localhost:1,unixs://sock:0",
      "--peer-auto-tls"});
}

TEST(ConfigValidate, AdvertisedUrlsNeedAHost) {
  EXPECT_EQ(
      err({"--initial-advertise-peer-urls", "http://:2380"}),
      "--initial-advertise-peer-urls \"http://:2380\" must be \"host:port\" (unexpected empty host "
      "(http://:2380))");
  EXPECT_EQ(err({"--advertise-client-urls", "http://:2379"}),
            "--advertise-client-urls \"http://:2379\" must be \"host:port\" (unexpected empty host "
            "(http://:2379))");
}

TEST(ConfigValidate, ConflictingBootstrapFlags) {
  const std::string want =
      "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", "
      "\"discovery\" or "
      "\"discovery-srv\"";
  EXPECT_EQ(err({"--discovery", "http://x/y", "--initial-cluster", "a=http://localhost:2380"}),
            want);
  EXPECT_EQ(err({"--discovery-srv", "x.com", "--initial-cluster", "a=http://localhost:2380"}),
            want);
  EXPECT_EQ(err({"--discovery", "http://x/y", "--discovery-srv", "x.com"}), want);
  EXPECT_EQ(
      err({"--discovery-srv", "x.com"}, {{"ETCD_INITIAL_CLUSTER", "a=http://localhost:2380"}}),
      want);
}

// v3 discovery (etcd 3.6's flags and rules, embed/config.go Validate).
TEST(ConfigV3Discovery, DefaultsAndValues) {
  const Config d = ok({});
  EXPECT_FALSE(d.discovery_v3.enabled());
  EXPECT_EQ(d.discovery_v3.dial_timeout, std::chrono::seconds(2));
  EXPECT_EQ(d.discovery_v3.request_timeout, std::chrono::seconds(5));
  EXPECT_EQ(d.discovery_v3.keepalive_time, std::chrono::seconds(2));
  EXPECT_EQ(d.discovery_v3.keepalive_timeout, std::chrono::seconds(6));
  EXPECT_TRUE(d.discovery_v3.insecure_transport);
  EXPECT_FALSE(d.discovery_v3.insecure_skip_tls_verify);
  EXPECT_EQ(d.discovery_v3.max_retries, 6u);

  const Config c =
      ok({"--name", "n1", "--discovery-token", "tok", "--discovery-endpoints",
          "https://10.0.0.2:2379,10.0.0.1:2379,10.0.0.1:2379", "--discovery-request-timeout",
          "300ms", "--discovery-insecure-transport=false", "--discovery-user", "root",
          "--listen-client-urls", "http://127.0.0.1:2379"});
  EXPECT_TRUE(c.discovery_v3.enabled());
  EXPECT_EQ(c.discovery_v3.token, "tok");
  // etcd's UniqueStringsValue: unique and sorted.
  EXPECT_EQ(c.discovery_v3.endpoints,
            (std::vector<std::string>{"10.0.0.1:2379", "https://10.0.0.2:2379"}));
  EXPECT_EQ(c.discovery_v3.request_timeout, std::chrono::milliseconds(300));
  EXPECT_FALSE(c.discovery_v3.insecure_transport);
  EXPECT_EQ(c.discovery_v3.user, "root");
  // Discovery replaces the default initial cluster; a member that may fall
  // back to proxy needs no --advertise-client-urls.
  EXPECT_EQ(c.initial_cluster, "");
  EXPECT_TRUE(c.may_be_proxy());

  const Config e = ok({}, {{"ETCD_DISCOVERY_TOKEN", "t2"},
                           {"ETCD_DISCOVERY_ENDPOINTS", "127.0.0.1:2379"},
                           {"ETCD_DISCOVERY_KEEPALIVE_TIMEOUT", "9s"}});
  EXPECT_EQ(e.discovery_v3.token, "t2");
  EXPECT_EQ(e.discovery_v3.keepalive_timeout, std::chrono::seconds(9));
}

TEST(ConfigV3Discovery, EtcdRules) {
  const std::string both = "both --discovery-token and --discovery-endpoints must be set";
  EXPECT_EQ(err({"--discovery-token", "t"}), both);
  EXPECT_EQ(err({"--discovery-endpoints", "127.0.0.1:2379"}), both);
  EXPECT_EQ(err({}, {{"ETCD_DISCOVERY_ENDPOINTS", "127.0.0.1:2379"}}), both);
  // etcd 3.6's sentence when v3 discovery is involved (3.4's, which does not
  // name discovery-endpoints, otherwise: ConflictingBootstrapFlags).
  const std::string conflict =
      "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", "
      "\"discovery\", \"discovery-endpoints\" or \"discovery-srv\"";
  const std::vector<std::string> v3 = {"--discovery-token", "t", "--discovery-endpoints",
                                       "127.0.0.1:2379"};
  auto with = [&v3](std::vector<std::string> more) {
    more.insert(more.end(), v3.begin(), v3.end());
    return more;
  };
  EXPECT_EQ(err(with({"--discovery", "http://d.example/abc"})), conflict);
  EXPECT_EQ(err(with({"--discovery-srv", "example.com"})), conflict);
  EXPECT_EQ(err(with({"--initial-cluster", "default=http://localhost:2380"})), conflict);
  const std::string v2v3 =
      "both v2 discovery settings (discovery, discovery-proxy) and v3 discovery settings "
      "(discovery-token, discovery-endpoints, discovery-cert, discovery-key, discovery-cacert, "
      "discovery-user, discovery-password) are set";
  EXPECT_EQ(err(with({"--discovery-proxy", "http://p:3128"})), v2v3);
  // Any of etcd's "v3 settings" counts, even without endpoints.
  EXPECT_EQ(err({"--discovery-proxy", "http://p:3128", "--discovery-password", "x"}), v2v3);
  // ... but not the timeouts (not in etcd's list).
  ok({"--discovery-proxy", "http://p:3128", "--discovery-dial-timeout", "1s"});
  EXPECT_EQ(err({"--discovery-token", "t", "--discovery-endpoints", "a:1,,b:2"}),
            "--discovery-endpoints must not contain empty endpoints");
  EXPECT_EQ(err({"--discovery-token", "t", "--discovery-endpoints", "a:1, "}),
            "--discovery-endpoints must not contain empty endpoints");
}

TEST(ConfigV3Discovery, MustersChecks) {
  const std::vector<std::string> v3 = {"--discovery-token", "t", "--discovery-endpoints",
                                       "127.0.0.1:2379"};
  auto with = [&v3](std::vector<std::string> more) {
    more.insert(more.end(), v3.begin(), v3.end());
    return more;
  };
  EXPECT_EQ(err({"--discovery-token", "t", "--discovery-endpoints", "etcd.example"}),
            "--discovery-endpoints: invalid endpoint \"etcd.example\" (want host:port, "
            "http://host:port or https://host:port)");
  EXPECT_EQ(err({"--discovery-token", "t", "--discovery-endpoints", "unix://x:1"}),
            "--discovery-endpoints: invalid endpoint \"unix://x:1\" (want host:port, "
            "http://host:port or https://host:port)");
  ok({"--discovery-token", "t", "--discovery-endpoints", "http://[::1]:2379,https://h:1"});
  EXPECT_EQ(err(with({"--discovery-request-timeout", "0s"})),
            "--discovery-request-timeout must be > 0 (set to 0s)");
  EXPECT_EQ(err(with({"--discovery-cert", "/c.pem"})),
            "--discovery-cert and --discovery-key must be given together");
  EXPECT_EQ(err(with({"--initial-cluster-state", "existing"})),
            "discovery endpoints should not be set when joining existing initial cluster");
  // --discovery-replace-dead works with a v3 token too.
  EXPECT_EQ(ok(with({"--discovery-replace-dead", "5s"})).discovery_replace_dead,
            std::chrono::seconds(5));
}

TEST(ConfigValidate, DiscoveryClearsTheDefaultInitialCluster) {
  EXPECT_EQ(ok({"--discovery", "http://d.example/abc"}).initial_cluster, "");
  EXPECT_EQ(ok({"--discovery-srv", "example.com", "--name", "n1"}).initial_cluster, "");
  EXPECT_EQ(ok({"--discovery-srv", "example.com", "--discovery-srv-name", "c1", "--dns-server",
                "127.0.0.1:5353"})
                .dns_server,
            "127.0.0.1:5353");
}

TEST(ConfigValidate, DiscoveryReplaceDeadIsOffByDefaultAndNeedsDiscoveryOrSrv) {
  using std::chrono::seconds;
  EXPECT_EQ(ok({"--discovery", "http://d.example/abc"}).discovery_replace_dead.count(), 0);
  EXPECT_EQ(ok({"--discovery", "http://d.example/abc", "--discovery-replace-dead", "30s"})
                .discovery_replace_dead,
            seconds(30));
  EXPECT_EQ(ok({"--discovery", "http://d.example/abc"}, {{"ETCD_DISCOVERY_REPLACE_DEAD", "1m"}})
                .discovery_replace_dead,
            seconds(60));
  EXPECT_EQ(err({"--discovery-replace-dead", "30s"}).rfind("--discovery-replace-dead needs", 0),
            0u);
  // SRV records: a node they name that the running cluster does not count
  // asks for a dead member's seat too (YAML key as well).
  EXPECT_EQ(ok({"--discovery-srv", "example.com", "--name", "n1", "--discovery-replace-dead", "5m"})
                .discovery_replace_dead,
            seconds(300));
  EXPECT_EQ(err({"--discovery", "http://d.example/abc", "--discovery-replace-dead", "100ms"})
                .rfind("--discovery-replace-dead must be at least 1s", 0),
            0u);
}

TEST(ConfigValidate, DiscoveryCannotJoinAnExistingCluster) {
  EXPECT_EQ(err({"--discovery", "http://d.example/abc", "--initial-cluster-state", "existing"}),
            "discovery URL should not be set when joining existing initial cluster");
  EXPECT_EQ(ok({"--initial-cluster-state", "existing"}).initial_cluster_state, "existing");
}

TEST(ConfigValidate, AutoCompaction) {
  EXPECT_EQ(err({"--auto-compaction-mode", "foo"}), "unknown auto-compaction-mode \"foo\"");
  EXPECT_EQ(ok({"--auto-compaction-retention", "1"}).auto_compaction_period, std::chrono::hours(1));
  EXPECT_EQ(ok({"--auto-compaction-retention", "5m"}).auto_compaction_period,
            std::chrono::minutes(5));
  auto rev = ok({"--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000"});
  EXPECT_EQ(rev.auto_compaction_revisions, 1000);
  EXPECT_EQ(rev.auto_compaction_period.count(), 0);
  EXPECT_EQ(err({"--auto-compaction-retention", "soon"}),
            "error parsing CompactionRetention: time: invalid duration \"soon\"");
}

TEST(ConfigValidate, Logging) {
  EXPECT_EQ(err({"--logger", "foo"}), "unknown logger option \"foo\"");
  // capnslog (etcd 3.4's default; muster's is zap) takes one output only.
  EXPECT_EQ(
      err({"--logger", "capnslog", "--log-outputs", "stderr,stdout"}),
      "--logger=capnslog supports only 1 value in '--log-outputs', got [\"stderr\" \"stdout\"]");
  EXPECT_EQ(err({"--logger", "capnslog", "--log-outputs", "foo"}),
            "unknown log-output \"foo\" (only supports \"default\", \"stderr\", \"stdout\")");
  EXPECT_EQ(err({"--logger", "zap", "--log-outputs", "default,stderr"}),
            "multi logoutput for \"default\" is not supported yet");
  EXPECT_EQ(ok({"--logger", "zap", "--log-outputs", "stderr,/var/log/m.log"}).log_outputs,
            (std::vector<std::string>{"stderr", "/var/log/m.log"}));
  EXPECT_EQ(err({"--logger", "zap", "--log-level", "loud"}),
            "unknown log-level \"loud\" (valid: debug, info, warn, error, panic, fatal)");
  auto r = run({"--debug"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.config->log_level, "debug");
  EXPECT_EQ(ok({"--log-output", "stdout"}).log_outputs, std::vector<std::string>{"stdout"});
}

TEST(ConfigValidate, InitialClusterMustParse) {
  EXPECT_EQ(
      err({"--initial-cluster", "a=foo"}),
      "error setting up initial cluster: URL scheme must be http, https, unix, or unixs: foo");
  EXPECT_EQ(err({"--initial-cluster", "a=http://127.0.0.1:2380,b"}),
            "error setting up initial cluster: URL scheme must be http, https, unix, or unixs: ");
  EXPECT_EQ(err({"--initial-cluster", "a=http://127.0.0.1:2380,b=http://127.0.0.1:2380"}),
            "initial cluster a=http://127.0.0.1:2380,b=http://127.0.0.1:2380 has duplicate url");
}

TEST(ConfigValidate, TlsSettings) {
  auto c = ok({"--cert-file", "c.pem", "--key-file", "k.pem", "--trusted-ca-file", "ca.pem",
               "--client-cert-auth", "--client-crl-file", "crl.pem", "--peer-cert-file", "pc.pem",
               "--peer-key-file", "pk.pem", "--peer-auto-tls", "--peer-cert-allowed-cn", "member",
               "--cipher-suites",
               "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"});
  EXPECT_EQ(c.client_tls.cert_file, "c.pem");
  EXPECT_EQ(c.client_tls.key_file, "k.pem");
  EXPECT_EQ(c.client_tls.trusted_ca_file, "ca.pem");
  EXPECT_TRUE(c.client_tls.client_cert_auth);
  EXPECT_EQ(c.client_tls.crl_file, "crl.pem");
  EXPECT_EQ(c.peer_tls.cert_file, "pc.pem");
  EXPECT_TRUE(c.peer_tls.auto_tls);
  EXPECT_EQ(c.peer_tls.allowed_cn, "member");
  EXPECT_EQ(c.cipher_suites, (std::vector<std::string>{"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                                                       "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"}));
  EXPECT_EQ(err({"--tls-min-version", "TLS1.0"}),
            "unknown tls-min-version \"TLS1.0\" (valid: TLS1.2, TLS1.3)");
  EXPECT_EQ(err({"--tls-min-version", "TLS1.3", "--cipher-suites", "TLS_AES_128_GCM_SHA256"}),
            "cipher suites cannot be configured when only TLS1.3 is enabled");
  EXPECT_EQ(err({"--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"}),
            "min version (TLS1.3) is greater than max version (TLS1.2)");
  EXPECT_EQ(err({"--peer-cert-allowed-cn", "a", "--peer-cert-allowed-hostname", "b"}),
            "AllowedCN and AllowedHostname are mutually exclusive (cn=\"a\", hostname=\"b\")");
}

TEST(ConfigValidate, TlsListenersNeedCertificates) {
  EXPECT_EQ(err({"--listen-client-urls", "https://127.0.0.1:2379", "--advertise-client-urls",
                 "https://h:2379"}),
            "TLS key/cert (--cert-file, --key-file) must be provided for client url "
            "https://127.0.0.1:2379 with "
            "HTTPS scheme");
  EXPECT_EQ(err({"--listen-peer-urls", "https://[::1]:2380"}),
            "cannot listen on TLS for [::1]:2380: KeyFile and CertFile are not presented");
  ok({"--listen-peer-urls", "https://127.0.0.1:2380", "--peer-auto-tls"});
  ok({"--listen-client-urls", "https://127.0.0.1:2379", "--advertise-client-urls", "https://h:2379",
      "--cert-file", "c.pem", "--key-file", "k.pem"});
  auto r = run({"--cert-file", "c.pem", "--key-file", "k.pem", "--client-cert-auth", "--auto-tls"});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(logged(r, LogLine::Level::kWarn, "ignoring client auto TLS since certs given"));
  EXPECT_TRUE(
      logged(r, LogLine::Level::kWarn,
             "The scheme of client url http://localhost:2379 is HTTP while client cert auth "
             "(--client-cert-auth) is enabled. Ignored client cert auth for this url."));
}

TEST(ConfigValidate, DnsServerMustBeHostPort) {
  EXPECT_EQ(err({"--dns-server", "127.0.0.1"}), "--dns-server \"127.0.0.1\" must be \"host:port\"");
  EXPECT_EQ(err({"--dns-server", "127.0.0.1:99999"}),
            "--dns-server \"127.0.0.1:99999\" must be \"host:port\"");
  EXPECT_EQ(ok({"--dns-server", "[::1]:53"}).dns_server, "[::1]:53");
}

TEST(ConfigValidate, AuthOptions) {
  EXPECT_EQ(err({"--auth-token", "magic"}),
            "auth: invalid auth options (unknown token type \"magic\")");
  ok({"--auth-token", "jwt,pub-key=a.pub,priv-key=a.key,sign-method=RS256"});
  auto r = run({"--bcrypt-cost", "2"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.config->bcrypt_cost, 10u);
  EXPECT_TRUE(logged(r, LogLine::Level::kWarn,
                     "Use default bcrypt-cost 10 instead of the invalid value 2"));
}

// ---- derived defaults -------------------------------------------------------

TEST(ConfigDerived, NameAloneSetsDataDirAndInitialCluster) {
  auto c = ok({"--name", "n1"});
  EXPECT_EQ(c.data_dir, "n1.etcd");
  EXPECT_EQ(c.initial_cluster, "n1=http://localhost:2380");
  auto c2 = ok({"--name", "n1", "--initial-advertise-peer-urls",
                "http://10.0.0.2:2380,http://10.0.0.1:2380", "--data-dir", "/var/lib/m"});
  EXPECT_EQ(c2.initial_cluster, "n1=http://10.0.0.1:2380,n1=http://10.0.0.2:2380");
  EXPECT_EQ(c2.data_dir, "/var/lib/m");
  // An explicit initial cluster is kept.
  EXPECT_EQ(ok({"--name", "n1", "--initial-cluster", "n1=http://127.0.0.1:2380"}).initial_cluster,
            "n1=http://127.0.0.1:2380");
}

TEST(ConfigDuration, GoSyntax) {
  EXPECT_EQ(*parse_go_duration("0"), std::chrono::nanoseconds(0));
  EXPECT_EQ(*parse_go_duration("1h30m"), std::chrono::minutes(90));
  EXPECT_EQ(*parse_go_duration("1.5s"), std::chrono::milliseconds(1500));
  EXPECT_EQ(*parse_go_duration("300ms"), std::chrono::milliseconds(300));
  EXPECT_EQ(*parse_go_duration("-2us"), std::chrono::microseconds(-2));
  EXPECT_FALSE(parse_go_duration("5").ok());
  EXPECT_FALSE(parse_go_duration("").ok());
  EXPECT_FALSE(parse_go_duration("5 s").ok());
  EXPECT_FALSE(parse_go_duration("1d").ok());
  EXPECT_EQ(format_go_duration(std::chrono::hours(2)), "2h0m0s");
  EXPECT_EQ(format_go_duration(std::chrono::milliseconds(100)), "100ms");
  EXPECT_EQ(format_go_duration(std::chrono::milliseconds(1500)), "1.5s");
  EXPECT_EQ(format_go_duration(std::chrono::nanoseconds(0)), "0s");
}

}  // namespace
}  // namespace muster::config

namespace muster::config {
namespace {

TEST(ConfigDerived, ZeroListenerAdvertisesTheDefaultHost) {
  ParseOptions opts;
  opts.default_host = "10.1.2.3";
  auto r =
      parse({"--name", "n1", "--listen-peer-urls", "http://0.0.0.0:7001", "--listen-client-urls",
             "http://0.0.0.0:7002", "--advertise-client-urls", "http://localhost:2379"},
            {}, opts);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.config->initial_advertise_peer_urls,
            std::vector<std::string>{"http://10.1.2.3:7001"});
  EXPECT_EQ(r.config->advertise_client_urls, std::vector<std::string>{"http://10.1.2.3:7002"});
  EXPECT_EQ(r.config->initial_cluster, "n1=http://10.1.2.3:7001");
  EXPECT_TRUE(std::any_of(r.log.begin(), r.log.end(), [](const LogLine& l) {
    return l.message == "advertising using detected default host \"10.1.2.3\"";
  }));
  // A specific listener, or a chosen advertise URL, is left alone.
  auto kept = parse({"--listen-peer-urls", "http://127.0.0.1:7001", "--listen-client-urls",
                     "http://0.0.0.0:7002", "--advertise-client-urls", "http://10.9.9.9:7002"},
                    {}, opts);
  ASSERT_TRUE(kept.ok()) << kept.error;
  EXPECT_EQ(kept.config->initial_advertise_peer_urls,
            std::vector<std::string>{"http://localhost:2380"});
  EXPECT_EQ(kept.config->advertise_client_urls, std::vector<std::string>{"http://10.9.9.9:7002"});
  // Without a detected host nothing changes.
  auto none = parse({"--listen-peer-urls", "http://0.0.0.0:7001"}, {});
  ASSERT_TRUE(none.ok()) << none.error;
  EXPECT_EQ(none.config->initial_advertise_peer_urls,
            std::vector<std::string>{"http://localhost:2380"});
}

TEST(ConfigDerived, DetectDefaultHostGivesAnIpOrNothing) {
  const auto h = detect_default_host();
  if (h) {
    EXPECT_TRUE(is_ip_literal(*h)) << *h;
  }
}

Config config_for(std::vector<std::string> args) {
  auto r = parse(args, {});
  EXPECT_TRUE(r.ok()) << r.error;
  return r.config.value_or(Config{});
}

UrlsMap cluster_of(const Config& c) {
  auto m = parse_initial_cluster(c.initial_cluster);
  EXPECT_TRUE(m.ok()) << m.error();
  return m.ok() ? m.value() : UrlsMap{};
}

TEST(VerifyBootstrap, StaticClusterMustContainThisMemberAsAdvertised) {
  auto good = config_for({"--name", "a", "--initial-advertise-peer-urls", "http://10.0.0.1:2380",
                          "--initial-cluster", "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380"});
  EXPECT_EQ(verify_bootstrap(good, cluster_of(good)), "");

  auto stranger = config_for({"--name", "c", "--initial-cluster", "a=http://10.0.0.1:2380"});
  EXPECT_EQ(verify_bootstrap(stranger, cluster_of(stranger)),
            "couldn't find local name \"c\" in the initial cluster configuration");

  auto moved = config_for({"--name", "a", "--initial-advertise-peer-urls", "http://10.0.0.9:2380",
                           "--initial-cluster", "a=http://10.0.0.1:2380"});
  EXPECT_EQ(verify_bootstrap(moved, cluster_of(moved)),
            "--initial-cluster has a=http://10.0.0.1:2380 but missing from "
            "--initial-advertise-peer-urls=http://10.0.0.9:2380 (\"http://10.0.0.9:2380\" != "
            "\"http://10.0.0.1:2380\")");

  auto extra = config_for({"--name", "a", "--initial-advertise-peer-urls",
                           "http://10.0.0.1:2380,http://10.0.0.2:2380", "--initial-cluster",
                           "a=http://10.0.0.1:2380"});
  EXPECT_EQ(verify_bootstrap(extra, cluster_of(extra)),
            "--initial-advertise-peer-urls has http://10.0.0.2:2380 but missing from "
            "--initial-cluster=a=http://10.0.0.1:2380,a=http://10.0.0.2:2380");

  // Joining: the advertise URLs are not compared, discovery is refused.
  auto join = config_for({"--name", "a", "--initial-cluster-state", "existing", "--initial-cluster",
                          "a=http://10.0.0.5:2380,b=http://10.0.0.2:2380"});
  EXPECT_EQ(verify_bootstrap(join, cluster_of(join)), "");

  auto nothing = config_for({"--discovery-srv", "example.com"});
  EXPECT_EQ(verify_bootstrap(nothing, UrlsMap{{"default", {}}}),
            "couldn't find local name \"default\" in the initial cluster configuration");
  EXPECT_EQ(
      verify_bootstrap(nothing, UrlsMap{{"default", {"http://h:1"}}, {"x", {"http://h:1"}}}),
      "--initial-cluster has default=http://h:1 but missing from --initial-advertise-peer-urls="
      "http://localhost:2380 (\"http://localhost:2380\" != \"http://h:1\")");
}

}  // namespace
}  // namespace muster::config

namespace muster::config {
namespace {

// docs/configuration.md must list every flag the parser accepts.
TEST(ConfigDocs, EveryFlagIsDocumented) {
  std::ifstream in(MUSTER_CONFIG_DOC);
  ASSERT_TRUE(in.good()) << MUSTER_CONFIG_DOC;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  for (const auto& name : flag_names()) {
    EXPECT_NE(doc.find("| `--" + name + "` |"), std::string::npos)
        << name << " missing from " << MUSTER_CONFIG_DOC;
  }
}

}  // namespace
TEST(ConfigWarnings, WalDirIsAcceptedButSaidToBeIgnored) {
  // etcd's configs set it; muster has no separate WAL, and says so.
  auto r = parse({"--wal-dir", "/fast/wal"}, {});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(logged(r, LogLine::Level::kWarn,
                     "--wal-dir \"/fast/wal\" is ignored: muster keeps the Raft log in the "
                     "member database under --data-dir"));
  auto quiet = parse({}, {});
  ASSERT_TRUE(quiet.ok());
  for (const auto& l : quiet.log) EXPECT_EQ(l.message.find("wal-dir"), std::string::npos);
}

}  // namespace muster::config
