#include "node/config/tls_setup.h"

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "base/log.h"
#include "node/config/urls.h"

namespace muster::config {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kCaller = "embed";

// Flag names of one side, for messages.
struct Side {
  const char* what;    // "client" | "peer"
  const char* prefix;  // "" | "peer-"
  const config::TlsConfig& tls;
  const std::vector<std::string>& listen_urls;
  bool serves_tls;  // some listener of this side is https
  std::string flag(const char* name) const { return std::string("--") + prefix + name; }
};

net::TlsVersion version_of(const std::string& v) {
  return v == "TLS1.3" ? net::TlsVersion::kTls13 : net::TlsVersion::kTls12;
}

// Settings every context of this member shares.
net::TlsOptions base_options(const config::Config& cfg, const std::string& cipher_list) {
  net::TlsOptions o;
  o.cipher_list = cipher_list;
  o.min_version = version_of(cfg.tls_min_version);
  if (!cfg.tls_max_version.empty()) o.max_version = version_of(cfg.tls_max_version);
  return o;
}

nlohmann::json describe(const net::TlsOptions& o, bool automatic) {
  return {{"cert-file", o.cert_file},
          {"key-file", o.key_file},
          {"trusted-ca-file", o.trusted_ca_file},
          {"client-cert-auth", o.client_cert_auth},
          {"allowed-cn", o.allowed_cn},
          {"allowed-hostname", o.allowed_hostname},
          {"crl-file", o.crl_file},
          {"verify-client-san", o.verify_client_san},
          {"auto-tls", automatic}};
}

// The server options of one side, or nullopt when it has no certificate.
// Also fills the certificate the peer dialer presents (peer side).
std::optional<net::TlsOptions> server_side(const config::Config& cfg, const Side& side,
                                           const net::TlsOptions& base, bool* automatic) {
  const config::TlsConfig& t = side.tls;
  *automatic = false;
  if (!t.empty()) {
    if (t.cert_file.empty() || t.key_file.empty())
      throw std::runtime_error(
          side.flag("cert-file") + " and " + side.flag("key-file") +
          " must both be given (KeyFile and CertFile must both be present[key: " + t.key_file +
          ", cert: " + t.cert_file + "])");
    net::TlsOptions o = base;
    o.cert_file = t.cert_file;
    o.key_file = t.key_file;
    o.trusted_ca_file = t.trusted_ca_file;
    o.client_cert_auth = t.client_cert_auth;
    o.allowed_cn = t.allowed_cn;
    o.allowed_hostname = t.allowed_hostname;
    if (!t.client_cert_auth && (!t.allowed_cn.empty() || !t.allowed_hostname.empty()))
      log::warn(kCaller, side.flag("cert-allowed-cn") + " and " +
                             side.flag("cert-allowed-hostname") + " have no effect without " +
                             side.flag("client-cert-auth") +
                             " (no certificate is asked of the other end)");
    o.crl_file = t.crl_file;
    // Checked only where it matters: etcd ignores TLS settings (with a
    // warning, see config validation) on a side with plain listeners only.
    if (side.serves_tls && t.client_cert_auth && t.trusted_ca_file.empty())
      throw std::runtime_error(side.flag("client-cert-auth") + " needs " +
                               side.flag("trusted-ca-file") + " (the CA that signs the " +
                               side.what + " certificates to accept)");
    // etcd checks an incoming peer's SANs against its address.
    o.verify_client_san = side.prefix[0] != '\0' && t.client_cert_auth &&
                          !cfg.experimental_peer_skip_client_san_verification;
    return o;
  }
  if (!t.auto_tls) return std::nullopt;

  *automatic = true;
  auto files = ensure_self_signed(cfg.data_dir + "/fixtures/" + side.what,
                                  self_signed_hosts(side.listen_urls));
  net::TlsOptions o = base;
  o.cert_file = files.cert_file;
  o.key_file = files.key_file;
  if (t.client_cert_auth || !t.allowed_cn.empty() || !t.allowed_hostname.empty())
    log::warn(kCaller, "ignoring " + side.flag("client-cert-auth") + ", " +
                           side.flag("cert-allowed-cn") + " and " +
                           side.flag("cert-allowed-hostname") + " since " + side.flag("auto-tls") +
                           " is on: self-signed certificates are not verified");
  return o;
}

void check_contexts(const char* what, const std::optional<net::TlsOptions>& server,
                    const std::optional<net::TlsOptions>& client) {
  try {
    if (server) net::make_server_tls_context(*server);
    if (client) {
      // What the user gave (files, versions, ciphers) is checked; the
      // system's trusted roots, which a client without a CA file falls back
      // to, are not the user's to get wrong, and loading them costs some
      // 20 ms of every start: the dialer loads them when it first needs them.
      net::TlsOptions c = *client;
      if (c.trusted_ca_file.empty()) c.insecure_skip_verify = true;
      net::make_client_tls_context(c);
    }
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(what) + " TLS: " + e.what());
  }
}

bool any_tls(const std::vector<std::string>& urls) {
  for (const auto& text : urls) {
    auto u = config::parse_etcd_url(text);
    if (u && (u->scheme == "https" || u->scheme == "unixs")) return true;
  }
  return false;
}

}  // namespace

std::vector<std::string> self_signed_hosts(const std::vector<std::string>& listen_urls) {
  std::vector<std::string> hosts;
  auto add = [&](const std::string& h) {
    if (!h.empty() && std::find(hosts.begin(), hosts.end(), h) == hosts.end()) hosts.push_back(h);
  };
  for (const auto& text : listen_urls) {
    auto u = config::parse_etcd_url(text);
    if (u && (u->scheme == "http" || u->scheme == "https")) add(u->host);
  }
  add("localhost");
  add("127.0.0.1");
  return hosts;
}

SelfSignedFiles ensure_self_signed(const std::string& dir, const std::vector<std::string>& hosts) {
  SelfSignedFiles f{dir + "/cert.pem", dir + "/key.pem", false};
  std::error_code ec;
  if (fs::exists(f.cert_file, ec) && fs::exists(f.key_file, ec)) return f;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create \"" + dir + "\": " + ec.message());
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  net::SelfSignedSpec spec;
  spec.hosts = hosts;
  net::write_self_signed_certificate(spec, f.cert_file, f.key_file);
  f.generated = true;
  log::info(kCaller, "generated a self-signed certificate",
            {{"cert-file", f.cert_file}, {"key-file", f.key_file}, {"hosts", hosts}});
  return f;
}

TlsSetup make_tls_setup(const config::Config& cfg) {
  // etcd checks the names whether or not any listener uses TLS.
  const net::TlsOptions base = base_options(cfg, net::openssl_cipher_list(cfg.cipher_suites));

  TlsSetup s;
  bool client_auto = false, peer_auto = false;
  const bool client_tls_used = any_tls(cfg.listen_client_urls) || any_tls(cfg.listen_metrics_urls);
  const bool peer_tls_used = any_tls(cfg.listen_peer_urls);
  s.client_server =
      server_side(cfg, Side{"client", "", cfg.client_tls, cfg.listen_client_urls, client_tls_used},
                  base, &client_auto);
  s.peer_server =
      server_side(cfg, Side{"peer", "peer-", cfg.peer_tls, cfg.listen_peer_urls, peer_tls_used},
                  base, &peer_auto);

  // The peer dialer presents the peer certificate (a peer with
  // --peer-client-cert-auth asks for it) and verifies the other member's
  // certificate against --peer-trusted-ca-file (system roots when empty) and
  // the host of the peer URL it dials (node/server/transport.cpp).  With
  // --peer-auto-tls nothing is verified, as in etcd.
  s.peer_client = base;
  if (s.peer_server) {
    s.peer_client.cert_file = s.peer_server->cert_file;
    s.peer_client.key_file = s.peer_server->key_file;
  }
  s.peer_client.trusted_ca_file = cfg.peer_tls.trusted_ca_file;
  s.peer_client.insecure_skip_verify = peer_auto;
  if (peer_auto) s.peer_client.trusted_ca_file.clear();

  // --trusted-ca-file is checked even when no listener verifies clients
  // with it, as a client context that trusts it would load it.
  net::TlsOptions ca_check = base;
  if (client_auto)
    ca_check.insecure_skip_verify = true;
  else
    ca_check.trusted_ca_file = cfg.client_tls.trusted_ca_file;

  check_contexts("client", client_tls_used ? s.client_server : std::nullopt, ca_check);
  check_contexts("peer", peer_tls_used ? s.peer_server : std::nullopt, s.peer_client);

  if (s.client_server && client_tls_used)
    log::info(kCaller, "starting with client TLS",
              {{"tls-info", describe(*s.client_server, client_auto)},
               {"cipher-suites", cfg.cipher_suites}});
  if (s.peer_server && peer_tls_used)
    log::info(
        kCaller, "starting with peer TLS",
        {{"tls-info", describe(*s.peer_server, peer_auto)}, {"cipher-suites", cfg.cipher_suites}});
  return s;
}

}  // namespace muster::config
