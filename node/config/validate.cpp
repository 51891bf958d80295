// node/config/validate.cpp: the checks etcd 3.4 runs on its configuration
// (embed/config.go Validate, embed/config_logging.go setupLogging,
// etcdmain/config.go validate, etcdserver/config.go), in etcd's order so the
// first error a user sees is etcd's first error, then the defaults etcd
// derives at start-up.  Muster's own checks (TLS versions, --dns-server)
// come after etcd's.
#include <algorithm>

#include "node/config/flags.h"

namespace muster::config::detail {
namespace {

const char* const kDefaultInitialCluster = "default=http://localhost:2380";

std::string q(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Go's %q of a []string: ["a" "b"].
std::string q_list(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? " " : "") + q(v[i]);
  return out + "]";
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

void warn(std::vector<LogLine>& log, std::string m) {
  log.push_back({LogLine::Level::kWarn, std::move(m)});
}

std::string check_logging(Config& cfg, std::vector<LogLine>& log) {
  if (cfg.is_set("log-output")) {
    warn(log, "'--log-output' flag has been deprecated! Please use '--log-outputs' flag");
  }
  if (cfg.debug) {
    warn(log, "'--debug' flag is deprecated; use '--log-level=debug' instead");
    cfg.log_level = "debug";
  }
  if (!cfg.log_package_levels.empty()) {
    warn(log, "'--log-package-levels' is deprecated and has no effect in Muster");
  }
  if (cfg.log_outputs.empty()) cfg.log_outputs = {"default"};
  if (cfg.logger == "capnslog") {
    warn(log, "Deprecated '--logger=capnslog' flag is set; use '--logger=zap' flag instead");
    if (cfg.log_outputs.size() != 1) {
      return "--logger=capnslog supports only 1 value in '--log-outputs', got " +
             q_list(cfg.log_outputs);
    }
    const std::string& o = cfg.log_outputs.front();
    if (o != "default" && o != "stderr" && o != "stdout") {
      return "unknown log-output " + q(o) + " (only supports \"default\", \"stderr\", \"stdout\")";
    }
  } else if (cfg.logger == "zap") {
    const auto& outs = cfg.log_outputs;
    const bool has_default = std::find(outs.begin(), outs.end(), "default") != outs.end();
    const bool has_journal = std::find(outs.begin(), outs.end(), "systemd/journal") != outs.end();
    if (outs.size() > 1 && has_default)
      return "multi logoutput for \"default\" is not supported yet";
    if (outs.size() > 1 && has_journal) {
      return "running with systemd/journal but other '--log-outputs' values (" + q_list(outs) +
             ") are configured with 'default'; override 'default' value with something else";
    }
  } else {
    return "unknown logger option " + q(cfg.logger);
  }
  static const char* const kLevels[] = {"debug",  "info",  "warn", "error",
                                        "dpanic", "panic", "fatal"};
  if (std::find(std::begin(kLevels), std::end(kLevels), cfg.log_level) == std::end(kLevels)) {
    return "unknown log-level " + q(cfg.log_level) +
           " (valid: debug, info, warn, error, panic, fatal)";
  }
  return "";
}

// etcd checkBindURLs: listeners bind to IP literals or "localhost" (unix
// sockets exempt), never to names that would need resolving.
std::string check_bind_urls(const std::vector<std::string>& urls) {
  for (const auto& text : urls) {
    auto u = parse_etcd_url(text);
    if (!u) return u.error();
    if (u->scheme == "unix" || u->scheme == "unixs") continue;
    if (u->host == "localhost") continue;
    if (!is_ip_literal(u->host)) return "expected IP in URL for binding (" + text + ")";
  }
  return "";
}

// etcd checkHostURLs: advertised URLs need a host.
std::string check_host_urls(const std::vector<std::string>& urls) {
  for (const auto& text : urls) {
    auto u = parse_etcd_url(text);
    if (!u) return u.error();
    if (u->host.empty()) return "unexpected empty host (" + text + ")";
  }
  return "";
}

// etcd parseCompactionRetention: a non-negative integer is hours (periodic)
// or revisions (revision); anything else must be a Go duration.
std::string derive_auto_compaction(Config& cfg) {
  const std::string r = cfg.auto_compaction_retention.empty() ? "0" : cfg.auto_compaction_retention;
  cfg.auto_compaction_period = std::chrono::nanoseconds(0);
  cfg.auto_compaction_revisions = 0;
  bool integer =
      !r.empty() && std::all_of(r.begin(), r.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (integer && r.size() <= 12) {
    const int64_t n = std::stoll(r);
    if (cfg.auto_compaction_mode == "revision") {
      cfg.auto_compaction_revisions = n;
    } else {
      cfg.auto_compaction_period = std::chrono::hours(n);
    }
    return "";
  }
  auto d = parse_go_duration(r);
  if (!d) return "error parsing CompactionRetention: " + d.error();
  if (cfg.auto_compaction_mode == "revision") {
    // etcd would read the duration's nanoseconds as a revision count.
    return "error parsing CompactionRetention: auto-compaction-mode=revision needs a revision "
           "count, got " +
           q(r);
  }
  if (d->count() < 0) return "error parsing CompactionRetention: negative retention " + q(r);
  cfg.auto_compaction_period = *d;
  return "";
}

std::string check_tls(const Config& cfg) {
  auto known = [](const std::string& v) { return v == "TLS1.2" || v == "TLS1.3"; };
  if (!known(cfg.tls_min_version)) {
    return "unknown tls-min-version " + q(cfg.tls_min_version) + " (valid: TLS1.2, TLS1.3)";
  }
  if (!cfg.tls_max_version.empty() && !known(cfg.tls_max_version)) {
    return "unknown tls-max-version " + q(cfg.tls_max_version) + " (valid: TLS1.2, TLS1.3)";
  }
  if (!cfg.tls_max_version.empty() && cfg.tls_max_version < cfg.tls_min_version) {
    return "min version (" + cfg.tls_min_version + ") is greater than max version (" +
           cfg.tls_max_version + ")";
  }
  if (!cfg.cipher_suites.empty() && cfg.tls_min_version == "TLS1.3") {
    return "cipher suites cannot be configured when only TLS1.3 is enabled";
  }
  for (const TlsConfig* t : {&cfg.client_tls, &cfg.peer_tls}) {
    if (!t->allowed_cn.empty() && !t->allowed_hostname.empty()) {
      return "AllowedCN and AllowedHostname are mutually exclusive (cn=" + q(t->allowed_cn) +
             ", hostname=" + q(t->allowed_hostname) + ")";
    }
  }
  return "";
}

// etcd UpdateDefaultClusterFromName: a member listening on 0.0.0.0 that
// left its advertise URL at the localhost default advertises the machine's
// default host instead (with the listener's port; the advertise scheme).
void apply_default_host(Config& cfg, const std::string& host, std::vector<LogLine>& log) {
  bool used = false;
  auto rewrite = [&](const std::vector<std::string>& listen, std::vector<std::string>& advertise,
                     const char* default_url) {
    if (listen.empty() || advertise.size() != 1 || advertise.front() != default_url) return;
    auto l = parse_etcd_url(listen.front());
    auto a = parse_etcd_url(advertise.front());
    if (!l || !a || l->host != "0.0.0.0") return;
    advertise.front() = a->scheme + "://" + host + ":" + l->port;
    used = true;
  };
  rewrite(cfg.listen_peer_urls, cfg.initial_advertise_peer_urls, "http://localhost:2380");
  rewrite(cfg.listen_client_urls, cfg.advertise_client_urls, "http://localhost:2379");
  if (used)
    log.push_back({LogLine::Level::kInfo, "advertising using detected default host " + q(host)});
}

// What etcd checks and warns about when it opens its listeners
// (embed/etcd.go configurePeerListeners / configureClientListeners): a TLS
// scheme needs a certificate (given or automatic); TLS settings on a plain
// listener are ignored with a warning.
std::string check_listener_tls(const Config& cfg, std::vector<LogLine>& log) {
  const bool peer_certs = !cfg.peer_tls.empty() || cfg.peer_tls.auto_tls;
  const bool client_certs = !cfg.client_tls.empty() || cfg.client_tls.auto_tls;
  if (cfg.peer_tls.auto_tls && !cfg.peer_tls.empty())
    warn(log, "ignoring peer auto TLS since certs given");
  if (cfg.client_tls.auto_tls && !cfg.client_tls.empty())
    warn(log, "ignoring client auto TLS since certs given");
  for (const auto& text : cfg.listen_peer_urls) {
    auto u = parse_etcd_url(text);
    if (!u) return u.error();
    const bool tls = u->scheme == "https" || u->scheme == "unixs";
    if (tls && !peer_certs) {
      const std::string hostport =
          (u->host.find(':') != std::string::npos ? "[" + u->host + "]" : u->host) + ":" + u->port;
      return "cannot listen on TLS for " + hostport + ": KeyFile and CertFile are not presented";
    }
    if (!tls && !cfg.peer_tls.empty()) {
      warn(log,
           "The scheme of peer url " + text +
               " is HTTP while peer key/cert files are presented. Ignored peer key/cert files.");
    }
    if (!tls && cfg.peer_tls.client_cert_auth) {
      warn(log, "The scheme of peer url " + text +
                    " is HTTP while client cert auth (--peer-client-cert-auth) is enabled. Ignored "
                    "client cert "
                    "auth for this url.");
    }
  }
  for (const auto& text : cfg.listen_client_urls) {
    auto u = parse_etcd_url(text);
    if (!u) return u.error();
    const bool tls = u->scheme == "https" || u->scheme == "unixs";
    if (tls && !client_certs) {
      return "TLS key/cert (--cert-file, --key-file) must be provided for client url " + text +
             " with HTTPS scheme";
    }
    if (!tls && !cfg.client_tls.empty()) {
      // etcd's sentence says "peer" here too; kept word for word.
      warn(log, "The scheme of client url " + text +
                    " is HTTP while peer key/cert files are presented. Ignored key/cert files.");
    }
    if (!tls && cfg.client_tls.client_cert_auth) {
      warn(log, "The scheme of client url " + text +
                    " is HTTP while client cert auth (--client-cert-auth) is enabled. Ignored "
                    "client cert auth "
                    "for this url.");
    }
  }
  return "";
}

// A --discovery-endpoints item: host:port, http://host:port or
// https://host:port (what etcd's client dials; no path).
std::string check_discovery_endpoint(const std::string& ep) {
  std::string rest = ep;
  for (const char* scheme : {"http://", "https://"}) {
    if (rest.rfind(scheme, 0) == 0) rest = rest.substr(std::string(scheme).size());
  }
  std::string host, port;
  const bool digits =
      split_host_port(rest, &host, &port) && !port.empty() && port.size() <= 5 &&
      std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (rest.find("://") != std::string::npos || rest.find('/') != std::string::npos || !digits ||
      host.empty() || std::stoi(port) > 65535 || std::stoi(port) == 0)
    return "--discovery-endpoints: invalid endpoint " + q(ep) +
           " (want host:port, http://host:port or https://host:port)";
  return "";
}

}  // namespace

std::string validate_and_derive(Config& cfg, std::vector<LogLine>& log,
                                const ParseOptions& options) {
  // --- embed.Config.Validate, in etcd's order ---
  if (auto e = check_logging(cfg, log); !e.empty()) return e;
  for (const auto* urls :
       {&cfg.listen_peer_urls, &cfg.listen_client_urls, &cfg.listen_metrics_urls}) {
    if (auto e = check_bind_urls(*urls); !e.empty()) return e;
  }
  if (auto e = check_host_urls(cfg.initial_advertise_peer_urls); !e.empty()) {
    return "--initial-advertise-peer-urls " + q(join(cfg.initial_advertise_peer_urls, ",")) +
           " must be \"host:port\" (" + e + ")";
  }
  if (auto e = check_host_urls(cfg.advertise_client_urls); !e.empty()) {
    return "--advertise-client-urls " + q(join(cfg.advertise_client_urls, ",")) +
           " must be \"host:port\" (" + e + ")";
  }
  if (cfg.initial_cluster_state != "new" && cfg.initial_cluster_state != "existing") {
    return "unexpected clusterState " + q(cfg.initial_cluster_state);
  }
  // etcd 3.4's sentence, or etcd 3.6's (which names "discovery-endpoints")
  // when v3 discovery is one of the sources.
  const DiscoveryV3Config& v3 = cfg.discovery_v3;
  const int bootstrap_sources = int{!cfg.discovery.empty()} + int{!cfg.initial_cluster.empty()} +
                                int{!cfg.discovery_srv.empty()} + int{v3.enabled()};
  if (bootstrap_sources > 1) {
    return v3.enabled() ? "multiple discovery or bootstrap flags are set. Choose one of "
                          "\"initial-cluster\", \"discovery\", \"discovery-endpoints\" or "
                          "\"discovery-srv\""
                        : "multiple discovery or bootstrap flags are set. Choose one of "
                          "\"initial-cluster\", \"discovery\" or \"discovery-srv\"";
  }
  // etcd 3.6: --discovery-proxy belongs to v2 discovery only.
  if (!cfg.discovery_proxy.empty() && v3.any_set()) {
    return "both v2 discovery settings (discovery, discovery-proxy) and v3 discovery settings "
           "(discovery-token, discovery-endpoints, discovery-cert, discovery-key, "
           "discovery-cacert, discovery-user, discovery-password) are set";
  }
  if (v3.token.empty() != v3.endpoints.empty())
    return "both --discovery-token and --discovery-endpoints must be set";
  for (const auto& ep : v3.endpoints) {
    if (ep.find_first_not_of(" \t\r\n") == std::string::npos)
      return "--discovery-endpoints must not contain empty endpoints";
  }
  if (cfg.heartbeat_interval_ms == 0) {
    return "--heartbeat-interval must be >0 (set to " + std::to_string(cfg.heartbeat_interval_ms) +
           "ms)";
  }
  if (cfg.election_timeout_ms == 0) {
    return "--election-timeout must be >0 (set to " + std::to_string(cfg.election_timeout_ms) +
           "ms)";
  }
  if (uint64_t{5} * cfg.heartbeat_interval_ms > cfg.election_timeout_ms) {
    return "--election-timeout[" + std::to_string(cfg.election_timeout_ms) +
           "ms] should be at least as 5 times as --heartbeat-interval[" +
           std::to_string(cfg.heartbeat_interval_ms) + "ms]";
  }
  if (cfg.election_timeout_ms > 50000) {
    return "--election-timeout[" + std::to_string(cfg.election_timeout_ms) +
           "ms] is too long, and should be set less than 50000ms";
  }
  // etcdmain validate() forgives this one when the member may become a proxy.
  if (!cfg.listen_client_urls.empty() && cfg.advertise_client_urls.empty() && !cfg.may_be_proxy()) {
    return "--advertise-client-urls is required when --listen-client-urls is set explicitly";
  }
  if (cfg.auto_compaction_mode != "periodic" && cfg.auto_compaction_mode != "revision" &&
      !cfg.auto_compaction_mode.empty()) {
    return "unknown auto-compaction-mode " + q(cfg.auto_compaction_mode);
  }
  if (cfg.experimental_enable_lease_checkpoint_persist &&
      !cfg.experimental_enable_lease_checkpoint) {
    return "setting experimental-enable-lease-checkpoint-persist requires "
           "experimental-enable-lease-checkpoint";
  }

  // --- values etcd checks when a flag is set (StringsFlag) but YAML can
  // bring in unchecked ---
  if (cfg.proxy != "off" && cfg.proxy != "readonly" && cfg.proxy != "on") {
    return "invalid value " + q(cfg.proxy) + " for proxy (valid values: off, readonly, on)";
  }
  if (cfg.discovery_fallback != "proxy" && cfg.discovery_fallback != "exit") {
    return "invalid value " + q(cfg.discovery_fallback) +
           " for discovery-fallback (valid values: proxy, exit)";
  }
  // etcdserver VerifyJoinExisting.
  if (cfg.discovery_replace_dead.count() < 0)
    return "--discovery-replace-dead must not be negative";
  if (cfg.discovery_replace_dead.count() > 0 && cfg.discovery.empty() && !v3.enabled() &&
      cfg.discovery_srv.empty())
    return "--discovery-replace-dead needs --discovery, --discovery-endpoints or --discovery-srv "
           "(a member replaces a dead one only when its discovery token is full, or when the "
           "SRV records name a running cluster that does not count it)";
  if (cfg.discovery_replace_dead.count() > 0 &&
      cfg.discovery_replace_dead < std::chrono::seconds(1))
    return "--discovery-replace-dead must be at least 1s (a member is judged dead by the leader's "
           "heartbeats; shorter silences are ordinary hiccups)";
  if (!cfg.discovery.empty() && cfg.initial_cluster_state == "existing") {
    return "discovery URL should not be set when joining existing initial cluster";
  }

  // --- Muster's checks ---
  if (v3.enabled()) {
    // etcd 3.6 lets a member join an existing cluster with the v3 flags set
    // and then fails on its own one-member cluster; say it at once.
    if (cfg.initial_cluster_state == "existing")
      return "discovery endpoints should not be set when joining existing initial cluster";
    for (const auto& ep : v3.endpoints) {
      if (auto e = check_discovery_endpoint(ep); !e.empty()) return e;
    }
    if (v3.request_timeout.count() <= 0)
      return "--discovery-request-timeout must be > 0 (set to " +
             format_go_duration(v3.request_timeout) + ")";
    for (const auto* d : {&v3.dial_timeout, &v3.keepalive_time, &v3.keepalive_timeout}) {
      if (d->count() < 0) return "v3 discovery timeouts must not be negative";
    }
    if (v3.cert.empty() != v3.key.empty())
      return "--discovery-cert and --discovery-key must be given together";
  }
  if (auto e = check_tls(cfg); !e.empty()) return e;
  if (auto e = check_listener_tls(cfg, log); !e.empty()) return e;
  if (!cfg.dns_server.empty()) {
    std::string host, port;
    if (!split_host_port(cfg.dns_server, &host, &port) || host.empty() || port.empty() ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        port.size() > 5 || std::stoi(port) > 65535) {
      return "--dns-server " + q(cfg.dns_server) + " must be \"host:port\"";
    }
  }
  {
    const std::string kind = cfg.auth_token.substr(0, cfg.auth_token.find(','));
    if (kind != "simple" && kind != "jwt")
      return "auth: invalid auth options (unknown token type " + q(kind) + ")";
  }
  if (cfg.bcrypt_cost < 4 || cfg.bcrypt_cost > 31) {
    warn(log, "Use default bcrypt-cost 10 instead of the invalid value " +
                  std::to_string(cfg.bcrypt_cost));
    cfg.bcrypt_cost = 10;
  }
  if (cfg.metrics != "basic" && cfg.metrics != "extensive") {
    warn(log, "unknown --metrics " + q(cfg.metrics) + "; serving basic metrics");
    cfg.metrics = "basic";
  }
  if (auto e = derive_auto_compaction(cfg); !e.empty()) return e;

  // etcd puts its WAL there (often a separate, faster disk); muster keeps
  // the Raft log in the member's one database, so say so rather than let an
  // operator believe the log is on the disk the flag names.
  if (!cfg.wal_dir.empty()) {
    warn(log, "--wal-dir " + q(cfg.wal_dir) +
                  " is ignored: muster keeps the Raft log in the member database under "
                  "--data-dir");
  }

  // --- derived defaults (etcdmain startEtcdOrProxyV2) ---
  if (cfg.data_dir.empty()) {
    cfg.data_dir = cfg.name + ".etcd";
    warn(log, "no data-dir provided, using default data-dir ./" + cfg.data_dir);
  }
  if (options.default_host) apply_default_host(cfg, *options.default_host, log);
  // UpdateDefaultClusterFromName: "--name foo" alone makes the default
  // initial cluster "foo=<advertised peer URLs>".  etcd compares with the
  // default by value, and so do we.
  if (cfg.name != "default" && cfg.initial_cluster == kDefaultInitialCluster) {
    std::string ic;
    for (const auto& u : cfg.initial_advertise_peer_urls)
      ic += (ic.empty() ? "" : ",") + cfg.name + "=" + u;
    cfg.initial_cluster = ic;
  }
  // The initial cluster must parse (etcd checks it when starting).
  if (!cfg.initial_cluster.empty()) {
    auto m = parse_initial_cluster(cfg.initial_cluster);
    if (!m) {
      const bool duplicate = m.error().rfind("initial cluster ", 0) == 0;
      return duplicate ? m.error() : "error setting up initial cluster: " + m.error();
    }
  }
  return "";
}

}  // namespace muster::config::detail
