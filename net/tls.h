// net/tls.h: TLS settings shared by servers and clients, in etcd's terms
// (--cert-file, --key-file, --trusted-ca-file, --client-cert-auth,
// --cipher-suites, --tls-min-version, --peer-cert-allowed-cn, ...), and the
// OpenSSL primitives behind them.
//
// Who calls it: net/server and net/client (https), node/server/transport
// (https peer URLs), node/config/tls_setup (turns a member's flags into
// TlsOptions).  Any thread; contexts are built once and then shared.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace boost::asio::ssl {
class context;
}
struct ssl_st;  // OpenSSL's SSL

namespace muster::net {

enum class TlsVersion { kTls12, kTls13 };

struct TlsOptions {
  std::string cert_file;              // PEM certificate (chain) presented to the peer
  std::string key_file;               // PEM private key for cert_file
  std::string trusted_ca_file;        // PEM CA bundle used to verify the peer
  bool client_cert_auth = false;      // server: require and verify client certificates
  bool insecure_skip_verify = false;  // client: do not verify the server certificate
  std::string server_name;            // client: expected host name (SNI + verification)

  // OpenSSL cipher list for TLS 1.2 (colon-separated OpenSSL names, see
  // openssl_cipher_list()); empty = OpenSSL's defaults.  TLS 1.3 suites are
  // not affected, exactly as Go's tls.Config.CipherSuites does not affect
  // them in etcd.
  std::string cipher_list;
  TlsVersion min_version = TlsVersion::kTls12;  // etcd never goes below TLS 1.2
  std::optional<TlsVersion> max_version;        // nullopt = the highest OpenSSL speaks

  // Server with client_cert_auth: accept a client certificate only when its
  // subject common name equals allowed_cn (etcd's --peer-cert-allowed-cn),
  // or when it is valid for allowed_hostname (DNS SAN or IP SAN;
  // --peer-cert-allowed-hostname).  Empty = any certificate the CA signed.
  std::string allowed_cn;
  std::string allowed_hostname;
  // Server with client_cert_auth: a PEM certificate revocation list of the
  // CA; a client certificate listed there is refused (--client-crl-file,
  // --peer-crl-file).  Empty = no revocation check.
  std::string crl_file;
  // Server with client_cert_auth, peer listeners only: the client's
  // certificate must name the address the connection comes from (an IP SAN
  // equal to it, or a DNS SAN resolving to it), as etcd 3.4 checks peers
  // unless --experimental-peer-skip-client-san-verification.  A certificate
  // without any SAN passes.  Applied by the listener after the handshake
  // (node/server/transport.cpp); see peer_certificate_sans().
  bool verify_client_san = false;

  bool has_certificate() const { return !cert_file.empty() && !key_file.empty(); }
};

// Builds an OpenSSL context for a server.  Throws std::runtime_error with a
// message naming the file on a bad certificate, key or CA file, or naming the
// cipher list when OpenSSL knows none of its ciphers.
std::shared_ptr<boost::asio::ssl::context> make_server_tls_context(const TlsOptions& o);
// Builds an OpenSSL context for a client: verifies the server against
// trusted_ca_file (or the system roots when empty) unless insecure.
std::shared_ptr<boost::asio::ssl::context> make_client_tls_context(const TlsOptions& o);
// Before a client handshake on `ssl` toward `host`: sends the name
// (o.server_name when set, else `host`) as SNI and, unless
// o.insecure_skip_verify, requires the server certificate to name it (a DNS
// name, or an IP address SAN when the name is an address).  net::dial
// (net/dial.h) calls it; the peer transport too.
void prepare_client_tls(ssl_st* ssl, const std::string& host, const TlsOptions& o);

// The OpenSSL name of a cipher suite named the way Go and etcd name it
// (IANA names, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 ->
// ECDHE-RSA-AES128-GCM-SHA256).  Covers every suite etcd 3.4's
// --cipher-suites accepts (pkg/tlsutil); nullopt for any other name.
std::optional<std::string> openssl_cipher_name(std::string_view go_name);

// Maps a list of Go/IANA names to an OpenSSL cipher list ("A:B:C").
// Throws std::runtime_error "unexpected TLS cipher suite \"X\"" (etcd's
// words) plus a hint for the first unknown name.
std::string openssl_cipher_list(const std::vector<std::string>& go_names);

// The subject alternative names of the certificate the other end of an
// established TLS connection presented.
struct PeerSans {
  bool has_certificate = false;
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;  // canonical text ("10.0.0.1", "::1")
};
PeerSans peer_certificate_sans(ssl_st* ssl);

// What a self-signed certificate is for: etcd's --auto-tls/--peer-auto-tls.
struct SelfSignedSpec {
  std::vector<std::string> hosts;  // DNS names and IP addresses for the SANs
  std::string organization = "muster";
  std::chrono::hours validity{24 * 365};
};

// Generates an ECDSA P-256 key and a self-signed certificate for it
// (serverAuth + clientAuth, the SANs of spec.hosts) with OpenSSL's C API and
// writes them as PEM to cert_path and key_path (the key with mode 0600).
// Throws std::runtime_error naming the step or file that failed.
void write_self_signed_certificate(const SelfSignedSpec& spec, const std::string& cert_path,
                                   const std::string& key_path);

}  // namespace muster::net
