// node/config/config.h: the `muster` member's configuration, read the way
// etcd 3.4 reads its own: command-line flags, ETCD_* environment variables,
// or a YAML file given by --config-file / ETCD_CONFIG_FILE.
//
// Who calls it: node/main (once, at start-up), and every later piece reads the
// resulting Config (server, bootstrap, TLS, proxy).  Pure: no I/O except
// reading the YAML file; no logging (log lines are returned to the caller,
// which owns the logger).  Any thread.
//
// Sources and precedence (etcd 3.4 etcdmain/config.go, pkg/flags):
//   * with a config file, ONLY the file counts; other flags and environment
//     variables are ignored (and that is logged, as etcd does);
//   * otherwise a flag beats its ETCD_<FLAG> variable, which beats the
//     default; a flag and its variable both present is an error.
// After reading, the values are validated and the derived defaults filled in
// (data dir, initial cluster from --name, ...) exactly as etcd 3.4 does;
// docs/configuration.md lists every flag and where Muster differs.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "etcdwire/durations.h"
#include "node/config/urls.h"

namespace muster::config {

// The TLS settings of one side (client-facing or peer).  Flag names:
// client side --cert-file ..., peer side --peer-cert-file ...; YAML nests them
// under client-transport-security / peer-transport-security.
struct TlsConfig {
  std::string cert_file;
  std::string key_file;
  std::string trusted_ca_file;
  bool client_cert_auth = false;
  bool auto_tls = false;
  std::string crl_file;
  std::string allowed_cn;        // peer side only in etcd 3.4 (--peer-cert-allowed-cn)
  std::string allowed_hostname;  // --client-cert-allowed-hostname / --peer-cert-allowed-hostname

  bool empty() const { return cert_file.empty() && key_file.empty(); }
};

// v3 discovery (etcd 3.6: --discovery-token + --discovery-endpoints): the
// token's keys live in any etcd v3 cluster reached over gRPC
// (node/bootstrap/discovery_v3.h; docs/bootstrap.md "v3 discovery").  YAML:
// the flag names at the top level, or etcd 3.6's nested discovery-config.
struct DiscoveryV3Config {
  std::string token;
  // As given, unique and sorted (etcd's UniqueStringsValue); an empty item
  // is kept so that validation can name it.  "host:port", "http://host:port"
  // or "https://host:port".
  std::vector<std::string> endpoints;
  std::chrono::nanoseconds dial_timeout = std::chrono::seconds(2);
  std::chrono::nanoseconds request_timeout = std::chrono::seconds(5);
  std::chrono::nanoseconds keepalive_time = std::chrono::seconds(2);
  std::chrono::nanoseconds keepalive_timeout = std::chrono::seconds(6);
  bool insecure_transport = true;
  bool insecure_skip_tls_verify = false;
  std::string cert;
  std::string key;
  std::string cacert;
  std::string user;  // "name" or "name:password"
  std::string password;
  // Muster: consecutive failed attempts of one step before discovery gives
  // up with "discovery: too many retries" (etcd 3.6 never gives up).
  uint32_t max_retries = 6;

  bool enabled() const { return !endpoints.empty(); }
  // etcd 3.6's list of "v3 discovery settings" (embed Config.Validate).
  bool any_set() const {
    return !endpoints.empty() || !token.empty() || !cert.empty() || !key.empty() ||
           !cacert.empty() || !user.empty() || !password.empty();
  }
};

// Every etcd 3.4 server flag, with etcd's default.  Durations are
// nanoseconds; the millisecond flags of etcd stay plain integers named *_ms.
// URL lists hold the normalised URL texts, sorted (etcd sorts them too).
struct Config {
  // --- member ---
  std::string name = "default";
  std::string data_dir;  // derived: "<name>.etcd" when not given
  std::string wal_dir;
  uint64_t snapshot_count = 100000;
  uint64_t experimental_snapshot_catchup_entries = 5000;
  uint32_t heartbeat_interval_ms = 100;
  uint32_t election_timeout_ms = 1000;
  bool initial_election_tick_advance = true;
  std::vector<std::string> listen_peer_urls{"http://localhost:2380"};
  std::vector<std::string> listen_client_urls{"http://localhost:2379"};
  uint32_t max_snapshots = 5;       // 0 = unlimited
  uint32_t max_wals = 5;            // 0 = unlimited
  int64_t quota_backend_bytes = 0;  // 0 = the default quota (2 GiB)
  std::chrono::nanoseconds backend_batch_interval{0};
  int64_t backend_batch_limit = 0;
  uint32_t max_txn_ops = 128;
  uint32_t max_request_bytes = 1572864;
  uint32_t max_concurrent_streams = 4294967295u;
  std::chrono::nanoseconds grpc_keepalive_min_time = std::chrono::seconds(5);
  std::chrono::nanoseconds grpc_keepalive_interval = std::chrono::hours(2);
  std::chrono::nanoseconds grpc_keepalive_timeout = std::chrono::seconds(20);

  // --- clustering ---
  std::vector<std::string> initial_advertise_peer_urls{"http://localhost:2380"};
  std::string initial_cluster = "default=http://localhost:2380";
  std::string initial_cluster_state = "new";  // new | existing
  std::string initial_cluster_token = "etcd-cluster";
  std::vector<std::string> advertise_client_urls{"http://localhost:2379"};
  std::string discovery;
  std::string discovery_fallback = "proxy";  // proxy | exit
  std::string discovery_proxy;
  std::string discovery_srv;
  std::string discovery_srv_name;
  DiscoveryV3Config discovery_v3;  // --discovery-token, --discovery-endpoints, ... (etcd 3.6)
  // Muster: with a full discovery token, replace a member unreachable for
  // longer than this instead of becoming a proxy (0: off, etcd's behaviour;
  // docs/operations.md "Replacing a dead member automatically").
  std::chrono::nanoseconds discovery_replace_dead{0};
  std::string dns_server;  // Muster: host:port of the DNS server for SRV lookups
  bool strict_reconfig_check = true;
  bool pre_vote = false;
  std::string auto_compaction_retention = "0";
  std::string auto_compaction_mode = "periodic";  // periodic | revision
  bool enable_v2 = false;
  std::string experimental_enable_v2v3;

  // --- v2 proxy ---
  std::string proxy = "off";  // off | readonly | on
  uint32_t proxy_failure_wait_ms = 5000;
  uint32_t proxy_refresh_interval_ms = 30000;
  uint32_t proxy_dial_timeout_ms = 1000;
  uint32_t proxy_write_timeout_ms = 5000;
  uint32_t proxy_read_timeout_ms = 0;

  // --- security ---
  TlsConfig client_tls;
  TlsConfig peer_tls;
  std::vector<std::string> cipher_suites;  // Go/IANA names; empty = library defaults
  std::string tls_min_version = "TLS1.2";  // TLS1.2 | TLS1.3
  std::string tls_max_version;             // "" | TLS1.2 | TLS1.3
  std::vector<std::string> cors{"*"};
  std::vector<std::string> host_whitelist{"*"};
  bool experimental_peer_skip_client_san_verification = false;

  // --- auth ---
  std::string auth_token = "simple";  // simple | jwt,pub-key=...,priv-key=...,sign-method=...
  uint32_t bcrypt_cost = 10;
  uint32_t auth_token_ttl = 300;  // seconds

  // --- profiling and monitoring ---
  bool enable_pprof = false;
  std::string metrics = "basic";  // basic | extensive
  std::vector<std::string> listen_metrics_urls;

  // --- logging ---
  std::string logger =
      "zap";  // zap (JSON lines) | capnslog (etcd 3.4's text lines); see base/log.h
  std::vector<std::string> log_outputs{"default"};
  std::string log_level = "info";  // debug | info | warn | error | panic | fatal
  bool debug = false;              // deprecated: same as --log-level=debug
  std::string log_package_levels;  // deprecated, accepted and ignored

  // --- experimental ---
  bool experimental_initial_corrupt_check = false;
  std::chrono::nanoseconds experimental_corrupt_check_time{0};
  std::string experimental_backend_bbolt_freelist_type = "array";
  bool experimental_enable_lease_checkpoint = false;
  bool experimental_enable_lease_checkpoint_persist = false;
  uint32_t experimental_compaction_batch_limit = 1000;
  std::chrono::nanoseconds experimental_watch_progress_notify_interval = std::chrono::minutes(10);
  std::chrono::nanoseconds experimental_warning_apply_duration = std::chrono::milliseconds(100);

  // --- unsafe ---
  bool force_new_cluster = false;
  bool unsafe_no_fsync = false;

  // --- bookkeeping (not flags) ---
  std::string config_file;  // the YAML file read, if any
  // Flag names given by the user (flag, env or YAML key).  etcd consults
  // this ("IsSet") for listen-client-urls and initial-cluster.
  std::set<std::string> explicitly_set;
  // Derived from auto_compaction_mode/_retention: the retention as a period
  // (periodic mode; a bare number means hours) or as a revision count
  // (revision mode).  Zero means auto compaction is off.
  std::chrono::nanoseconds auto_compaction_period{0};
  int64_t auto_compaction_revisions = 0;

  bool is_set(const std::string& flag) const { return explicitly_set.count(flag) != 0; }
  // etcd's mayBeProxy: a proxy, or a discovery member (v2 or v3) that may
  // fall back to one, does not need --advertise-client-urls.
  bool may_be_proxy() const {
    return proxy != "off" ||
           ((!discovery.empty() || discovery_v3.enabled()) && discovery_fallback == "proxy");
  }
  bool is_proxy() const { return proxy != "off"; }
};

// A line for the caller to log (etcd logs these while reading its config).
struct LogLine {
  enum class Level { kInfo, kWarn };
  Level level;
  std::string message;
};

struct ParseResult {
  std::optional<Config> config;  // set on success
  std::string error;             // set on failure: one sentence, etcd's words
  std::vector<LogLine> log;      // to be logged in order, success or not
  bool print_version = false;    // --version: print and exit 0 (config is unvalidated)
  bool print_help = false;       // -h/--help: print usage_text() and exit 0

  bool ok() const { return config.has_value(); }
};

// What parse() may know about the machine.  Kept out of parse() itself so
// that parsing stays pure and testable; node/main fills it in.
struct ParseOptions {
  // The host of the machine's default route (detect_default_host()).  etcd
  // advertises it instead of "localhost" when a listener is 0.0.0.0 and the
  // matching advertise URL was left at its default.  nullopt: no rewrite.
  std::optional<std::string> default_host;
};

// Reads args (WITHOUT the program name) and the environment.  Never throws,
// never exits.  On -h/--help and --version the result is ok with the
// matching print_* flag set and validation skipped (as etcd does).
ParseResult parse(const std::vector<std::string>& args,
                  const std::map<std::string, std::string>& env, const ParseOptions& options = {});

// The IPv4 address of the interface that holds the default route (from
// /proc/net/route and getifaddrs), like etcd's netutil.GetDefaultHost.
// nullopt when there is no default route or it has no IPv4 address.
std::optional<std::string> detect_default_host();

// etcd's bootstrap checks (etcdserver/config.go VerifyBootstrap for
// --initial-cluster-state=new, VerifyJoinExisting for existing), for the
// bootstrap code to run when the data dir holds no member yet.  `cluster` is
// the initial cluster in force: parse_initial_cluster(cfg.initial_cluster)
// for static bootstrap, the SRV answer, or {name: advertise URLs} before a
// discovery run.  Checks: the local --name is in it; for a new cluster its
// URLs there equal --initial-advertise-peer-urls (compared as strings; etcd
// also tries resolving host names); no URL twice; not empty without
// --discovery; no --discovery when joining.  Returns "" or etcd's sentence.
std::string verify_bootstrap(const Config& cfg, const UrlsMap& cluster);

// The flag list for --help, grouped as etcd groups it, with defaults.
std::string usage_text();

// All flag names accepted (without dashes), sorted; the legacy ignored ones
// are not included.
std::vector<std::string> flag_names();

// Go's time.ParseDuration ("300ms", "1h30m", "1.5s", "0"), as a Result
// (etcdwire/durations.h holds it).
Result<std::chrono::nanoseconds> parse_go_duration(std::string_view s);

// Go's time.Duration.String() ("1h0m0s", "100ms", "0s").
using etcdwire::format_go_duration;

}  // namespace muster::config
