// node/config/tls_setup.h: a member's TLS flags, turned into the TLS options
// of its client listeners, its peer listeners and its peer dialer, the way
// etcd 3.4 turns them into tls.Configs (embed/config.go, embed/etcd.go,
// pkg/transport/listener.go).
//
// Who calls it: node/main (and the proxy), once, before any listener opens.  It reads and
// writes files (the certificates are loaded once to check them; --auto-tls
// writes <data-dir>/fixtures/{client,peer}/{cert,key}.pem) and logs.
//
// Rules, per side (client-facing --cert-file..., peer --peer-cert-file...):
//   * certificate files given: served as they are; --trusted-ca-file and
//     --client-cert-auth verify the other end; --peer-cert-allowed-cn /
//     --peer-cert-allowed-hostname restrict which peer certificates pass;
//   * no files but --auto-tls: a self-signed ECDSA P-256 certificate for the
//     listen URLs' hosts (plus localhost and 127.0.0.1), valid one year,
//     made once and reused on restart.  As in etcd, nothing is verified in
//     this mode: --client-cert-auth is ignored (with a warning) and the peer
//     dialer accepts any certificate;
//   * neither: no certificate (an https listener is refused earlier, by
//     config validation, with etcd's sentence).
// --cipher-suites (Go/IANA names) and --tls-min-version/--tls-max-version
// apply to every side; an unknown suite name is an error even when no TLS is
// used, as in etcd.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "net/tls.h"
#include "node/config/config.h"

namespace muster::config {

struct TlsSetup {
  std::optional<net::TlsOptions> client_server;  // https client and metrics listeners
  std::optional<net::TlsOptions> peer_server;    // https peer listeners
  net::TlsOptions peer_client;                   // dialing https peer URLs (always usable)
};

// Builds the three option sets and checks them by building their OpenSSL
// contexts once.  Throws std::runtime_error with one sentence naming the
// side and the flag or file at fault.
TlsSetup make_tls_setup(const config::Config& cfg);

// The certificate and key of an automatic (--auto-tls) side.
struct SelfSignedFiles {
  std::string cert_file;
  std::string key_file;
  bool generated = false;  // false: found from an earlier start and reused
};

// etcd's transport.SelfCert: <dir>/cert.pem and <dir>/key.pem, reused when
// both exist, else generated for `hosts` (created 0700).  Throws
// std::runtime_error on I/O or OpenSSL failure.
SelfSignedFiles ensure_self_signed(const std::string& dir, const std::vector<std::string>& hosts);

// The hosts a self-signed certificate names for these listen URLs: each
// URL's host, then localhost and 127.0.0.1; no duplicates, order kept.
std::vector<std::string> self_signed_hosts(const std::vector<std::string>& listen_urls);

}  // namespace muster::config
