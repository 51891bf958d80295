// net/tls.h: TLS settings shared by servers and clients, in etcd's terms
// (--cert-file, --key-file, --trusted-ca-file, --client-cert-auth).
#pragma once

#include <memory>
#include <string>

namespace boost::asio::ssl {
class context;
}

namespace muster::net {

struct TlsOptions {
  std::string cert_file;              // PEM certificate (chain) presented to the peer
  std::string key_file;               // PEM private key for cert_file
  std::string trusted_ca_file;        // PEM CA bundle used to verify the peer
  bool client_cert_auth = false;      // server: require and verify client certificates
  bool insecure_skip_verify = false;  // client: do not verify the server certificate
  std::string server_name;            // client: expected host name (SNI + verification)

  bool has_certificate() const { return !cert_file.empty() && !key_file.empty(); }
};

// Builds an OpenSSL context for a server.  Throws std::runtime_error with a
// message naming the file on a bad certificate, key or CA file.
std::shared_ptr<boost::asio::ssl::context> make_server_tls_context(const TlsOptions& o);
// Builds an OpenSSL context for a client: verifies the server against
// trusted_ca_file (or the system roots when empty) unless insecure.
std::shared_ptr<boost::asio::ssl::context> make_client_tls_context(const TlsOptions& o);

}  // namespace muster::net
