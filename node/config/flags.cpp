#include "node/config/flags.h"

#include <algorithm>
#include <cctype>
#include <limits>

#include "base/edit_distance.h"

namespace muster::config::detail {
namespace {

using Setter = std::function<std::string(Config&, const std::string&)>;

constexpr const char* kParseError = "parse error";
constexpr const char* kRangeError = "value out of range";

// Go's strconv.ParseUint(s, 0, 64): decimal, 0x.. hex, 0o../0.. octal, 0b.. binary.
std::string parse_go_uint64(std::string_view s, uint64_t* out) {
  if (s.empty()) return kParseError;
  int base = 10;
  if (s.size() > 1 && s[0] == '0') {
    const char p = static_cast<char>(std::tolower(static_cast<unsigned char>(s[1])));
    if (p == 'x') {
      base = 16, s.remove_prefix(2);
    } else if (p == 'o') {
      base = 8, s.remove_prefix(2);
    } else if (p == 'b') {
      base = 2, s.remove_prefix(2);
    } else {
      base = 8, s.remove_prefix(1);
    }
    if (s.empty()) return kParseError;
  }
  uint64_t v = 0;
  bool overflow = false;
  for (const char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'z') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'Z') {
      d = c - 'A' + 10;
    } else {
      return kParseError;
    }
    if (d >= base) return kParseError;
    if (v > (std::numeric_limits<uint64_t>::max() - static_cast<uint64_t>(d)) /
                static_cast<uint64_t>(base)) {
      overflow = true;
    }
    v = v * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
  }
  if (overflow) return kRangeError;
  *out = v;
  return "";
}

std::string parse_go_int64(std::string_view s, int64_t* out) {
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  uint64_t u = 0;
  if (auto e = parse_go_uint64(s, &u); !e.empty()) return e;
  const uint64_t limit = neg ? uint64_t{1} << 63 : (uint64_t{1} << 63) - 1;
  if (u > limit) return kRangeError;
  *out = neg ? static_cast<int64_t>(~u + 1) : static_cast<int64_t>(u);
  return "";
}

// ---- setter builders -------------------------------------------------------
// Each takes an accessor `F: Config& -> T&` so nested fields (TLS) work too.

template <class F>
Setter str(F field) {
  return [field](Config& c, const std::string& v) -> std::string {
    field(c) = v;
    return "";
  };
}

template <class F>
Setter boolean(F field) {
  return [field](Config& c, const std::string& v) -> std::string {
    bool b;
    if (!parse_go_bool(v, &b)) return kParseError;
    field(c) = b;
    return "";
  };
}

template <class F>
Setter u32(F field) {
  return [field](Config& c, const std::string& v) -> std::string {
    uint64_t n = 0;
    if (auto e = parse_go_uint64(v, &n); !e.empty()) return e;
    if (n > std::numeric_limits<uint32_t>::max()) return kRangeError;
    field(c) = static_cast<uint32_t>(n);
    return "";
  };
}

template <class F>
Setter u64(F field) {
  return [field](Config& c, const std::string& v) -> std::string {
    uint64_t n = 0;
    if (auto e = parse_go_uint64(v, &n); !e.empty()) return e;
    field(c) = n;
    return "";
  };
}

template <class F>
Setter i64(F field) {
  return [field](Config& c, const std::string& v) -> std::string {
    int64_t n = 0;
    if (auto e = parse_go_int64(v, &n); !e.empty()) return e;
    field(c) = n;
    return "";
  };
}

template <class F>
Setter duration(F field) {
  return [field](Config& c, const std::string& v) -> std::string {
    auto d = parse_go_duration(v);
    if (!d) return kParseError;
    field(c) = *d;
    return "";
  };
}

template <class F>
Setter urls(F field) {
  return [field](Config& c, const std::string& v) -> std::string {
    auto list = parse_url_list(v);
    if (!list) return list.error();
    field(c) = list.value();
    return "";
  };
}

// listen-metrics-urls: empty means none (etcd keeps it a plain string and
// only parses a non-empty one).
template <class F>
Setter optional_urls(F field) {
  return [field](Config& c, const std::string& v) -> std::string {
    if (v.empty()) {
      field(c).clear();
      return "";
    }
    auto list = parse_url_list(v);
    if (!list) return list.error();
    field(c) = list.value();
    return "";
  };
}

// A comma-separated list of words (cipher suites, CORS origins, log outputs).
// Empty items are dropped.
std::vector<std::string> split_commas(const std::string& v) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= v.size()) {
    size_t comma = v.find(',', start);
    if (comma == std::string::npos) comma = v.size();
    std::string item = v.substr(start, comma - start);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front())))
      item.erase(item.begin());
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back()))) item.pop_back();
    if (!item.empty()) out.push_back(item);
    start = comma + 1;
  }
  return out;
}

template <class F>
Setter words(F field) {
  return [field](Config& c, const std::string& v) -> std::string {
    field(c) = split_commas(v);
    return "";
  };
}

// etcd's UniqueStringsValue / UniqueURLsValue: a set, shown sorted.  For
// URLs (--cors) every item but "*" must be an etcd URL (host:port, no path).
template <class F>
Setter unique_words(F field, bool urls_except_star) {
  return [field, urls_except_star](Config& c, const std::string& v) -> std::string {
    std::vector<std::string> items;
    for (auto& w : split_commas(v)) {
      if (urls_except_star && w != "*") {
        auto u = parse_etcd_url(w);
        if (!u) return u.error();
        w = u->text;
      }
      items.push_back(w);
    }
    std::sort(items.begin(), items.end());
    items.erase(std::unique(items.begin(), items.end()), items.end());
    field(c) = items;
    return "";
  };
}

// etcd's flags.StringsFlag: one of a fixed set, checked when set; the error
// is Go flag's "invalid value" (Muster adds the accepted values).
template <class F>
Setter one_of(F field, std::vector<std::string> allowed) {
  return [field, allowed](Config& c, const std::string& v) -> std::string {
    if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
      std::string msg = "invalid value (valid values: ";
      for (size_t i = 0; i < allowed.size(); ++i) msg += (i ? ", " : "") + allowed[i];
      return msg + ")";
    }
    field(c) = v;
    return "";
  };
}

#define FIELD(member) \
  [](Config & c) -> auto& { return c.member; }

std::vector<FlagSpec> build_table() {
  using K = FlagKind;
  std::vector<FlagSpec> t;
  auto add = [&t](std::string name, std::string group, std::string def, std::string help, K kind,
                  Setter set) {
    t.push_back(FlagSpec{std::move(name), std::move(group), std::move(def), std::move(help), kind,
                         std::move(set)});
  };
  const std::string m = "Member", c = "Clustering", p = "Proxy", s = "Security", a = "Auth",
                    pr = "Profiling and monitoring", l = "Logging", x = "Experimental",
                    u = "Unsafe", o = "Other";

  add("name", m, "default", "Human-readable name for this member.", K::kValue, str(FIELD(name)));
  add("data-dir", m, "${name}.etcd", "Path to the data directory.", K::kValue,
      str(FIELD(data_dir)));
  add("wal-dir", m, "", "Path to a dedicated directory for the Raft log.", K::kValue,
      str(FIELD(wal_dir)));
  add("snapshot-count", m, "100000", "Committed entries between two snapshots to disk.", K::kValue,
      u64(FIELD(snapshot_count)));
  add("heartbeat-interval", m, "100", "Heartbeat interval in milliseconds.", K::kValue,
      u32(FIELD(heartbeat_interval_ms)));
  add("election-timeout", m, "1000", "Election timeout in milliseconds.", K::kValue,
      u32(FIELD(election_timeout_ms)));
  add("initial-election-tick-advance", m, "true",
      "Fast-forward the election ticks of a booting member to speed up the first election.",
      K::kBool, boolean(FIELD(initial_election_tick_advance)));
  add("listen-peer-urls", m, "http://localhost:2380", "URLs to listen on for peer traffic.",
      K::kValue, urls(FIELD(listen_peer_urls)));
  add("listen-client-urls", m, "http://localhost:2379", "URLs to listen on for client traffic.",
      K::kValue, urls(FIELD(listen_client_urls)));
  add("max-snapshots", m, "5", "Snapshot files to retain (0 is unlimited).", K::kValue,
      u32(FIELD(max_snapshots)));
  add("max-wals", m, "5", "Log files to retain (0 is unlimited).", K::kValue, u32(FIELD(max_wals)));
  add("quota-backend-bytes", m, "0",
      "Raise an alarm when the store exceeds this size (0 = default quota).", K::kValue,
      i64(FIELD(quota_backend_bytes)));
  add("backend-batch-interval", m, "", "Longest time before a backend batch is committed.",
      K::kDuration, duration(FIELD(backend_batch_interval)));
  add("backend-batch-limit", m, "0", "Most operations before a backend batch is committed.",
      K::kValue, i64(FIELD(backend_batch_limit)));
  add("max-txn-ops", m, "128", "Most operations allowed in one transaction.", K::kValue,
      u32(FIELD(max_txn_ops)));
  add("max-request-bytes", m, "1572864", "Largest client request accepted, in bytes.", K::kValue,
      u32(FIELD(max_request_bytes)));
  add("max-concurrent-streams", m, "math.MaxUint32",
      "Most concurrent streams per client connection.", K::kValue,
      u32(FIELD(max_concurrent_streams)));
  add("grpc-keepalive-min-time", m, "5s", "Shortest interval a client may ping the server at.",
      K::kDuration, duration(FIELD(grpc_keepalive_min_time)));
  add("grpc-keepalive-interval", m, "2h", "Interval of server-to-client pings (0 disables).",
      K::kDuration, duration(FIELD(grpc_keepalive_interval)));
  add("grpc-keepalive-timeout", m, "20s", "Wait for a ping answer before closing (0 disables).",
      K::kDuration, duration(FIELD(grpc_keepalive_timeout)));

  add("initial-advertise-peer-urls", c, "http://localhost:2380",
      "This member's peer URLs, as advertised to the rest of the cluster.", K::kValue,
      urls(FIELD(initial_advertise_peer_urls)));
  add("initial-cluster", c, "default=http://localhost:2380",
      "Initial cluster for bootstrapping: name=peer-url pairs, comma-separated.", K::kValue,
      str(FIELD(initial_cluster)));
  add("initial-cluster-state", c, "new", "'new' to bootstrap a cluster, 'existing' to join one.",
      K::kValue, one_of(FIELD(initial_cluster_state), {"new", "existing"}));
  add("initial-cluster-token", c, "etcd-cluster",
      "Cluster token mixed into member and cluster IDs.", K::kValue,
      str(FIELD(initial_cluster_token)));
  add("advertise-client-urls", c, "http://localhost:2379",
      "This member's client URLs, as advertised to clients.", K::kValue,
      urls(FIELD(advertise_client_urls)));
  add("discovery", c, "", "Discovery URL used to bootstrap the cluster.", K::kValue,
      str(FIELD(discovery)));
  add("discovery-fallback", c, "proxy",
      "What to do when discovery says the cluster is full: 'exit' or 'proxy'.", K::kValue,
      one_of(FIELD(discovery_fallback), {"proxy", "exit"}));
  add("discovery-proxy", c, "", "HTTP proxy for traffic to the discovery service.", K::kValue,
      str(FIELD(discovery_proxy)));
  add("discovery-replace-dead", c, "0s",
      "Muster: when the discovery token is full (or the --discovery-srv records name a running "
      "cluster without this member), replace a member the leader has not heard from for this "
      "long (a Go duration; 0 = never, as etcd).",
      K::kDuration, duration(FIELD(discovery_replace_dead)));
  add("discovery-srv", c, "", "DNS domain whose SRV records bootstrap the cluster.", K::kValue,
      str(FIELD(discovery_srv)));
  add("discovery-srv-name", c, "",
      "Suffix of the SRV names queried: _etcd-server-ssl-<suffix>._tcp.<domain>.", K::kValue,
      str(FIELD(discovery_srv_name)));
  // v3 discovery (etcd 3.6).
  add("discovery-token", c, "",
      "V3 discovery: the token of the cluster to bootstrap (keys under /_etcd/registry/<token>).",
      K::kValue, str(FIELD(discovery_v3.token)));
  add("discovery-endpoints", c, "",
      "V3 discovery: comma-separated gRPC endpoints of the etcd v3 cluster holding the token.",
      K::kValue, [](Config& cfg, const std::string& v) -> std::string {
        // etcd's UniqueStringsValue: split on commas, keep empty items
        // (validation names them), unique and sorted.
        std::vector<std::string> items;
        size_t start = 0;
        for (;;) {
          const size_t comma = v.find(',', start);
          items.push_back(v.substr(start, comma == std::string::npos ? comma : comma - start));
          if (comma == std::string::npos) break;
          start = comma + 1;
        }
        std::sort(items.begin(), items.end());
        items.erase(std::unique(items.begin(), items.end()), items.end());
        if (items.size() == 1 && items.front().empty()) items.clear();  // "" = unset
        cfg.discovery_v3.endpoints = std::move(items);
        return "";
      });
  add("discovery-dial-timeout", c, "2s", "V3 discovery: time allowed to connect to an endpoint.",
      K::kDuration, duration(FIELD(discovery_v3.dial_timeout)));
  add("discovery-request-timeout", c, "5s",
      "V3 discovery: time allowed for one request (a read or the registration).", K::kDuration,
      duration(FIELD(discovery_v3.request_timeout)));
  add("discovery-keepalive-time", c, "2s",
      "V3 discovery: idle time before the connection is probed (0 disables).", K::kDuration,
      duration(FIELD(discovery_v3.keepalive_time)));
  add("discovery-keepalive-timeout", c, "6s",
      "V3 discovery: unanswered probing after which the connection is dropped.", K::kDuration,
      duration(FIELD(discovery_v3.keepalive_timeout)));
  add("discovery-insecure-transport", c, "true",
      "V3 discovery: plaintext to endpoints without a scheme (unless TLS files are given).",
      K::kBool, boolean(FIELD(discovery_v3.insecure_transport)));
  add("discovery-insecure-skip-tls-verify", c, "false",
      "V3 discovery: do not verify the endpoints' certificates (testing only).", K::kBool,
      boolean(FIELD(discovery_v3.insecure_skip_tls_verify)));
  add("discovery-cert", c, "", "V3 discovery: client certificate (PEM) presented to endpoints.",
      K::kValue, str(FIELD(discovery_v3.cert)));
  add("discovery-key", c, "", "V3 discovery: key (PEM) of --discovery-cert.", K::kValue,
      str(FIELD(discovery_v3.key)));
  add("discovery-cacert", c, "", "V3 discovery: CA bundle that signs the endpoints' certificates.",
      K::kValue, str(FIELD(discovery_v3.cacert)));
  add("discovery-user", c, "",
      "V3 discovery: user (or user:password) to authenticate as with the endpoints.", K::kValue,
      str(FIELD(discovery_v3.user)));
  add("discovery-password", c, "", "V3 discovery: password of --discovery-user.", K::kValue,
      str(FIELD(discovery_v3.password)));
  add("discovery-max-retries", c, "6",
      "Muster: v3 discovery gives up after this many consecutive failed attempts of one step "
      "(backoff 2s, 4s, ... 256s as etcd; etcd 3.6 retries without end).",
      K::kValue, u32(FIELD(discovery_v3.max_retries)));
  add("dns-server", c, "",
      "Muster: DNS server (host:port) for SRV lookups instead of /etc/resolv.conf.", K::kValue,
      str(FIELD(dns_server)));
  add("strict-reconfig-check", c, "true", "Reject membership changes that would cost quorum.",
      K::kBool, boolean(FIELD(strict_reconfig_check)));
  add("pre-vote", c, "false", "Run Raft's pre-vote phase before elections.", K::kBool,
      boolean(FIELD(pre_vote)));
  add("auto-compaction-retention", c, "0",
      "Auto compaction retention: hours or a duration (periodic), or revisions (revision). 0 "
      "disables.",
      K::kValue, str(FIELD(auto_compaction_retention)));
  add("auto-compaction-mode", c, "periodic",
      "How to read auto-compaction-retention: 'periodic' or 'revision'.", K::kValue,
      str(FIELD(auto_compaction_mode)));
  add("enable-v2", c, "false", "Serve the v2 keys API.", K::kBool, boolean(FIELD(enable_v2)));
  add("experimental-enable-v2v3", c, "", "v3 prefix for emulated v2 state.", K::kValue,
      str(FIELD(experimental_enable_v2v3)));

  add("proxy", p, "off", "v2 proxy mode: 'off', 'readonly' or 'on'.", K::kValue,
      one_of(FIELD(proxy), {"off", "readonly", "on"}));
  add("proxy-failure-wait", p, "5000", "Milliseconds an endpoint stays marked failed.", K::kValue,
      u32(FIELD(proxy_failure_wait_ms)));
  add("proxy-refresh-interval", p, "30000", "Milliseconds between endpoint refreshes.", K::kValue,
      u32(FIELD(proxy_refresh_interval_ms)));
  add("proxy-dial-timeout", p, "1000", "Dial timeout in milliseconds (0 disables).", K::kValue,
      u32(FIELD(proxy_dial_timeout_ms)));
  add("proxy-write-timeout", p, "5000", "Write timeout in milliseconds (0 disables).", K::kValue,
      u32(FIELD(proxy_write_timeout_ms)));
  add("proxy-read-timeout", p, "0",
      "Read timeout in milliseconds (0 disables; keep 0 with watches).", K::kValue,
      u32(FIELD(proxy_read_timeout_ms)));

  add("cert-file", s, "", "Client-side server certificate (PEM).", K::kValue,
      str(FIELD(client_tls.cert_file)));
  add("key-file", s, "", "Client-side server key (PEM, unencrypted).", K::kValue,
      str(FIELD(client_tls.key_file)));
  add("client-cert-auth", s, "false", "Require client certificates signed by --trusted-ca-file.",
      K::kBool, boolean(FIELD(client_tls.client_cert_auth)));
  add("client-crl-file", s, "", "Revoked client certificates (CRL, PEM).", K::kValue,
      str(FIELD(client_tls.crl_file)));
  add("client-cert-allowed-hostname", s, "",
      "Accept only client certificates valid for this host name.", K::kValue,
      str(FIELD(client_tls.allowed_hostname)));
  add("trusted-ca-file", s, "", "CA bundle that signs client certificates.", K::kValue,
      str(FIELD(client_tls.trusted_ca_file)));
  add("auto-tls", s, "false", "Client TLS with a generated self-signed certificate.", K::kBool,
      boolean(FIELD(client_tls.auto_tls)));
  add("peer-cert-file", s, "",
      "Peer certificate (PEM), also used as client certificate towards peers.", K::kValue,
      str(FIELD(peer_tls.cert_file)));
  add("peer-key-file", s, "", "Peer key (PEM, unencrypted).", K::kValue,
      str(FIELD(peer_tls.key_file)));
  add("peer-client-cert-auth", s, "false",
      "Require peer certificates signed by --peer-trusted-ca-file.", K::kBool,
      boolean(FIELD(peer_tls.client_cert_auth)));
  add("peer-trusted-ca-file", s, "", "CA bundle that signs peer certificates.", K::kValue,
      str(FIELD(peer_tls.trusted_ca_file)));
  add("peer-cert-allowed-cn", s, "", "Accept only peer certificates with this common name.",
      K::kValue, str(FIELD(peer_tls.allowed_cn)));
  add("peer-cert-allowed-hostname", s, "",
      "Accept only peer certificates valid for this host name.", K::kValue,
      str(FIELD(peer_tls.allowed_hostname)));
  add("peer-auto-tls", s, "false", "Peer TLS with a generated self-signed certificate.", K::kBool,
      boolean(FIELD(peer_tls.auto_tls)));
  add("peer-crl-file", s, "", "Revoked peer certificates (CRL, PEM).", K::kValue,
      str(FIELD(peer_tls.crl_file)));
  add("cipher-suites", s, "", "Comma-separated TLS cipher suites (empty = library defaults).",
      K::kValue, words(FIELD(cipher_suites)));
  add("tls-min-version", s, "TLS1.2", "Lowest TLS version accepted: TLS1.2 or TLS1.3.", K::kValue,
      str(FIELD(tls_min_version)));
  add("tls-max-version", s, "",
      "Highest TLS version accepted: TLS1.2 or TLS1.3 (empty = highest known).", K::kValue,
      str(FIELD(tls_max_version)));
  add("cors", s, "*", "Comma-separated CORS origins ('*' or scheme://host:port).", K::kValue,
      unique_words(FIELD(cors), true));
  add("host-whitelist", s, "*", "Comma-separated Host header values accepted on plain HTTP.",
      K::kValue, unique_words(FIELD(host_whitelist), false));
  add("experimental-peer-skip-client-san-verification", s, "false",
      "Skip the SAN check on certificates of connecting peers.", K::kBool,
      boolean(FIELD(experimental_peer_skip_client_san_verification)));

  add("auth-token", a, "simple",
      "Auth token type and options: 'simple' or 'jwt,pub-key=...,priv-key=...'.", K::kValue,
      str(FIELD(auth_token)));
  add("bcrypt-cost", a, "10", "bcrypt cost for password hashes (4..31).", K::kValue,
      u32(FIELD(bcrypt_cost)));
  add("auth-token-ttl", a, "300", "Lifetime of a simple token in seconds.", K::kValue,
      u32(FIELD(auth_token_ttl)));

  add("enable-pprof", pr, "false", "Serve profiling data under /debug/pprof/.", K::kBool,
      boolean(FIELD(enable_pprof)));
  add("metrics", pr, "basic", "Metrics detail: 'basic' or 'extensive'.", K::kValue,
      str(FIELD(metrics)));
  add("listen-metrics-urls", pr, "", "Extra URLs serving only /metrics and /health.", K::kValue,
      optional_urls(FIELD(listen_metrics_urls)));

  add("logger", l, "zap", "'zap' (JSON lines) or 'capnslog' (etcd 3.4's text lines, deprecated).",
      K::kValue, str(FIELD(logger)));
  add("log-outputs", l, "default",
      "Comma-separated: default, stderr, stdout, systemd/journal or file paths.", K::kValue,
      words(FIELD(log_outputs)));
  add("log-output", l, "default", "Deprecated: use --log-outputs.", K::kValue,
      words(FIELD(log_outputs)));
  add("log-level", l, "info", "debug, info, warn, error, panic or fatal.", K::kValue,
      str(FIELD(log_level)));
  add("debug", l, "false", "Deprecated: same as --log-level=debug.", K::kBool,
      boolean(FIELD(debug)));
  add("log-package-levels", l, "", "Deprecated and ignored.", K::kValue,
      str(FIELD(log_package_levels)));

  add("experimental-initial-corrupt-check", x, "false", "Check data for corruption before serving.",
      K::kBool, boolean(FIELD(experimental_initial_corrupt_check)));
  add("experimental-corrupt-check-time", x, "0s", "Interval between cluster corruption checks.",
      K::kDuration, duration(FIELD(experimental_corrupt_check_time)));
  add("experimental-backend-bbolt-freelist-type", x, "array",
      "Accepted for etcd compatibility; no effect.", K::kValue,
      str(FIELD(experimental_backend_bbolt_freelist_type)));
  add("experimental-enable-lease-checkpoint", x, "false",
      "Persist remaining lease TTLs periodically.", K::kBool,
      boolean(FIELD(experimental_enable_lease_checkpoint)));
  add("experimental-enable-lease-checkpoint-persist", x, "false",
      "Keep lease checkpoints across restarts.", K::kBool,
      boolean(FIELD(experimental_enable_lease_checkpoint_persist)));
  add("experimental-compaction-batch-limit", x, "1000", "Revisions deleted per compaction batch.",
      K::kValue, u32(FIELD(experimental_compaction_batch_limit)));
  add("experimental-watch-progress-notify-interval", x, "10m",
      "Interval of watch progress notifications.", K::kDuration,
      duration(FIELD(experimental_watch_progress_notify_interval)));
  // etcd 3.5's flag; 3.4 hard-codes 5000.  Tests lower it to force a
  // lagging member onto a snapshot.
  add("experimental-snapshot-catchup-entries", x, "5000",
      "Entries kept after a snapshot for slow followers to catch up.", K::kValue,
      u64(FIELD(experimental_snapshot_catchup_entries)));
  add("experimental-warning-apply-duration", x, "100ms",
      "Warn when applying an entry takes longer.", K::kDuration,
      duration(FIELD(experimental_warning_apply_duration)));

  add("force-new-cluster", u, "false", "Force a new one-member cluster from the existing data.",
      K::kBool, boolean(FIELD(force_new_cluster)));
  add("unsafe-no-fsync", u, "false", "Do not fsync (data loss on crash; tests only).", K::kBool,
      boolean(FIELD(unsafe_no_fsync)));

  // --version is acted on by parse() itself; the setter only checks syntax.
  add("version", o, "false", "Print the version and exit.", K::kBool,
      [](Config&, const std::string& v) -> std::string {
        bool b;
        return parse_go_bool(v, &b) ? "" : kParseError;
      });
  add("config-file", o, "",
      "YAML configuration file; when given, other flags and ETCD_* variables are ignored.",
      K::kValue, str(FIELD(config_file)));

  // Flags of old etcd versions: accepted (as booleans, so "-v" needs no
  // value), warned about, without effect (etcd 3.4 etcdmain/config.go).
  for (const char* old :
       {"cluster-active-size", "cluster-remove-delay", "cluster-sync-interval", "config", "force",
        "max-result-buffer", "max-retry-attempts", "peer-heartbeat-interval",
        "peer-election-timeout", "retry-interval", "snapshot", "v", "vv"}) {
    add(old, "Ignored", "", "", K::kIgnored,
        [](Config&, const std::string&) -> std::string { return ""; });
  }
  return t;
}

#undef FIELD

}  // namespace

bool parse_go_bool(std::string_view s, bool* out) {
  if (s == "1" || s == "t" || s == "T" || s == "TRUE" || s == "true" || s == "True") {
    *out = true;
    return true;
  }
  if (s == "0" || s == "f" || s == "F" || s == "FALSE" || s == "false" || s == "False") {
    *out = false;
    return true;
  }
  return false;
}

const std::vector<FlagSpec>& flag_table() {
  static const std::vector<FlagSpec> table = build_table();
  return table;
}

const FlagSpec* find_flag(std::string_view name) {
  for (const auto& f : flag_table()) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

std::string env_name(std::string_view flag) {
  std::string out = "ETCD_";
  for (const char ch : flag) {
    out += ch == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  }
  return out;
}

std::vector<std::string> suggest_flags(std::string_view unknown) {
  struct Candidate {
    size_t distance;
    std::string name;
  };
  std::vector<Candidate> typos;
  std::vector<std::string> containing;
  // A typo costs about one edit per three characters; allow at least two.
  const size_t budget = std::max<size_t>(2, unknown.size() / 3);
  for (const auto& f : flag_table()) {
    if (f.kind == FlagKind::kIgnored) continue;
    const size_t d = base::edit_distance(unknown, f.name, budget);
    if (d <= budget) {
      typos.push_back({d, f.name});
    } else if (unknown.size() >= 3 && f.name.find(unknown) != std::string::npos) {
      containing.push_back(f.name);  // "--peer-cert" -> every "--peer-cert-*"
    }
  }
  std::sort(typos.begin(), typos.end(), [](const Candidate& x, const Candidate& y) {
    return x.distance != y.distance ? x.distance < y.distance : x.name < y.name;
  });
  std::sort(containing.begin(), containing.end(), [](const std::string& x, const std::string& y) {
    return x.size() != y.size() ? x.size() < y.size() : x < y;
  });
  std::vector<std::string> out;
  // Only the typos about as close as the best one: "initial-cluster-tokne"
  // should suggest "initial-cluster-token", not every "initial-cluster-*".
  for (const auto& c : typos) {
    if (out.size() == 3 || c.distance > typos.front().distance + 1) break;
    out.push_back(c.name);
  }
  for (const auto& n : containing) {
    if (out.size() == 3) break;
    out.push_back(n);
  }
  return out;
}

}  // namespace muster::config::detail

namespace muster::config {

std::vector<std::string> flag_names() {
  std::vector<std::string> out;
  for (const auto& f : detail::flag_table()) {
    if (f.kind != detail::FlagKind::kIgnored) out.push_back(f.name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string usage_text() {
  std::string out =
      "Usage:\n\n  muster [flags]\n    Start a Muster cluster member (etcd-compatible flags).\n\n"
      "  muster --version\n    Show the version.\n\n  muster -h | --help\n    Show this help.\n";
  std::string group;
  for (const auto& f : detail::flag_table()) {
    if (f.kind == detail::FlagKind::kIgnored) continue;
    if (f.group != group) {
      group = f.group;
      out += "\n" + group + " flags:\n\n";
    }
    out += "  --" + f.name + " '" + f.default_text + "'\n      " + f.help + "\n";
  }
  out +=
      "\nEvery flag can also be set by ETCD_<FLAG_IN_UPPER_SNAKE_CASE> (e.g. "
      "ETCD_INITIAL_CLUSTER_TOKEN).\n";
  return out;
}

Result<std::chrono::nanoseconds> parse_go_duration(std::string_view s) {
  std::string why;
  if (auto d = etcdwire::parse_go_duration(s, &why)) return *d;
  return Result<std::chrono::nanoseconds>::failure(why);
}

}  // namespace muster::config
