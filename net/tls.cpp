#include "net/tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <array>
#include <boost/asio/ssl.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <utility>

#include "base/atomic_file.h"
#include "base/log.h"

namespace muster::net {

namespace ssl = boost::asio::ssl;

namespace {

constexpr std::string_view kCaller = "net/tls";

void load(const char* what, const std::string& file, const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("cannot load ") + what + " \"" + file + "\": " + e.what());
  }
}

// The oldest OpenSSL error on this thread as text (and clears the queue).
std::string openssl_error() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  std::array<char, 256> buf{};
  ERR_error_string_n(e, buf.data(), buf.size());
  return buf.data();
}

int openssl_version(TlsVersion v) {
  return v == TlsVersion::kTls13 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

// Protocol range and TLS 1.2 cipher list, common to servers and clients.
void apply_protocol(ssl::context& ctx, const TlsOptions& o) {
  SSL_CTX* native = ctx.native_handle();
  SSL_CTX_set_min_proto_version(native, openssl_version(o.min_version));
  if (o.max_version) SSL_CTX_set_max_proto_version(native, openssl_version(*o.max_version));
  if (!o.cipher_list.empty() && SSL_CTX_set_cipher_list(native, o.cipher_list.c_str()) != 1) {
    ERR_clear_error();
    throw std::runtime_error("none of the cipher suites \"" + o.cipher_list +
                             "\" is available in this OpenSSL build");
  }
}

// The subject common name of a certificate, "" when it has none.
std::string common_name(X509* cert) {
  X509_NAME* subject = X509_get_subject_name(cert);
  int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx < 0) return "";
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return "";
  std::string cn(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return cn;
}

bool is_ip(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Server side of --peer-cert-allowed-cn / --peer-cert-allowed-hostname: runs
// after OpenSSL has verified the chain, on the client's own certificate
// (depth 0) only; a refusal fails the TLS handshake, as etcd's
// VerifyPeerCertificate does, so nothing of the connection reaches the
// application.
void restrict_client_certificates(ssl::context& ctx, const TlsOptions& o) {
  if (o.allowed_cn.empty() && o.allowed_hostname.empty()) return;
  ctx.set_verify_callback(
      [cn = o.allowed_cn, host = o.allowed_hostname](bool preverified, ssl::verify_context& vc) {
        X509_STORE_CTX* store = vc.native_handle();
        if (!preverified || X509_STORE_CTX_get_error_depth(store) != 0) return preverified;
        X509* cert = X509_STORE_CTX_get_current_cert(store);
        std::string reason;
        if (!cn.empty()) {
          std::string got = common_name(cert);
          if (got != cn)
            reason = "certificate common name \"" + got + "\" is not the allowed \"" + cn + "\"";
        } else {
          bool ok = is_ip(host) ? X509_check_ip_asc(cert, host.c_str(), 0) == 1
                                : X509_check_host(cert, host.c_str(), host.size(), 0, nullptr) == 1;
          if (!ok) reason = "certificate is not valid for the allowed host name \"" + host + "\"";
        }
        if (reason.empty()) return true;
        log::warn(kCaller, "rejected client certificate",
                  {{"reason", reason}, {"common-name", common_name(cert)}});
        X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
        return false;
      });
}

}  // namespace

std::shared_ptr<ssl::context> make_server_tls_context(const TlsOptions& o) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                   ssl::context::single_dh_use);
  apply_protocol(*ctx, o);
  load("certificate", o.cert_file, [&] { ctx->use_certificate_chain_file(o.cert_file); });
  load("private key", o.key_file,
       [&] { ctx->use_private_key_file(o.key_file, ssl::context::pem); });
  if (!o.trusted_ca_file.empty())
    load("trusted CA file", o.trusted_ca_file, [&] { ctx->load_verify_file(o.trusted_ca_file); });
  if (o.client_cert_auth) {
    if (o.trusted_ca_file.empty())
      throw std::runtime_error("--client-cert-auth needs --trusted-ca-file");
    ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    restrict_client_certificates(*ctx, o);
    if (!o.crl_file.empty()) {
      // Checked for the client's own certificate (not the CAs above it),
      // as etcd checks the presented certificates' serial numbers.
      X509_STORE* store = SSL_CTX_get_cert_store(ctx->native_handle());
      X509_LOOKUP* lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
      if (!lookup || X509_load_crl_file(lookup, o.crl_file.c_str(), X509_FILETYPE_PEM) <= 0)
        throw std::runtime_error("cannot load CRL file \"" + o.crl_file + "\": " + openssl_error());
      X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
  }
  return ctx;
}

void prepare_client_tls(ssl_st* ssl, const std::string& host, const TlsOptions& o) {
  const std::string& name = o.server_name.empty() ? host : o.server_name;
  SSL_set_tlsext_host_name(ssl, name.c_str());
  if (o.insecure_skip_verify) return;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  if (is_ip(name))
    X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());
  else
    X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
}

std::shared_ptr<ssl::context> make_client_tls_context(const TlsOptions& o) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  apply_protocol(*ctx, o);
  if (o.insecure_skip_verify) {
    ctx->set_verify_mode(ssl::verify_none);
  } else {
    if (!o.trusted_ca_file.empty())
      load("trusted CA file", o.trusted_ca_file, [&] { ctx->load_verify_file(o.trusted_ca_file); });
    else
      ctx->set_default_verify_paths();
    ctx->set_verify_mode(ssl::verify_peer);
  }
  if (o.has_certificate()) {
    load("client certificate", o.cert_file, [&] { ctx->use_certificate_chain_file(o.cert_file); });
    load("client key", o.key_file,
         [&] { ctx->use_private_key_file(o.key_file, ssl::context::pem); });
  }
  return ctx;
}

// ---------------------------------------------------------------------------
// Cipher suite names.

namespace {

struct CipherName {
  std::string_view go;
  std::string_view openssl;
};

// The suites Go's crypto/tls implements and etcd 3.4 accepts by name
// (pkg/tlsutil/cipher_suites.go), with their OpenSSL names.  The two
// ChaCha20 suites are accepted under Go's short name and the IANA name.
constexpr CipherName kCipherNames[] = {
    {"TLS_RSA_WITH_RC4_128_SHA", "RC4-SHA"},
    {"TLS_RSA_WITH_3DES_EDE_CBC_SHA", "DES-CBC3-SHA"},
    {"TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"},
    {"TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA"},
    {"TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256"},
    {"TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"},
    {"TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384"},
    {"TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", "ECDHE-ECDSA-RC4-SHA"},
    {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "ECDHE-ECDSA-AES128-SHA"},
    {"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "ECDHE-ECDSA-AES256-SHA"},
    {"TLS_ECDHE_RSA_WITH_RC4_128_SHA", "ECDHE-RSA-RC4-SHA"},
    {"TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", "ECDHE-RSA-DES-CBC3-SHA"},
    {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"},
    {"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA"},
    {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "ECDHE-ECDSA-AES128-SHA256"},
    {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256"},
    {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"},
    {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"},
    {"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"},
    {"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"},
    {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "ECDHE-ECDSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"},
};

}  // namespace

std::optional<std::string> openssl_cipher_name(std::string_view go_name) {
  for (const auto& c : kCipherNames)
    if (c.go == go_name) return std::string(c.openssl);
  return std::nullopt;
}

std::string openssl_cipher_list(const std::vector<std::string>& go_names) {
  std::string list;
  for (const auto& name : go_names) {
    auto o = openssl_cipher_name(name);
    if (!o) {
      std::string hint;
      if (name.find('-') != std::string::npos)
        hint =
            " (give the IANA name, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, not the "
            "OpenSSL name)";
      else if (name.rfind("TLS_AES_", 0) == 0 || name.rfind("TLS_CHACHA20_", 0) == 0)
        hint = " (TLS 1.3 suites cannot be configured, as in etcd)";
      throw std::runtime_error("unexpected TLS cipher suite \"" + name + "\"" + hint);
    }
    if (!list.empty()) list += ':';
    list += *o;
  }
  return list;
}

PeerSans peer_certificate_sans(SSL* ssl) {
  PeerSans out;
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (!cert) return out;
  out.has_certificate = true;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (!names) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type == GEN_DNS) {
      const ASN1_STRING* v = n->d.dNSName;
      out.dns_names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                                 static_cast<size_t>(ASN1_STRING_length(v)));
    } else if (n->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* v = n->d.iPAddress;
      const int len = ASN1_STRING_length(v);
      char text[INET6_ADDRSTRLEN] = {};
      const int family = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
      if (family && inet_ntop(family, ASN1_STRING_get0_data(v), text, sizeof text))
        out.ip_addresses.emplace_back(text);
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

// ---------------------------------------------------------------------------
// Self-signed certificates.

namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(std::FILE* f) const { std::fclose(f); }
};
template <typename T>
using Owned = std::unique_ptr<T, Free>;

[[noreturn]] void fail(const std::string& step) {
  throw std::runtime_error("cannot generate a self-signed certificate: " + step + ": " +
                           openssl_error());
}

void add_extension(X509* cert, int nid, const std::string& value) {
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert, cert, nullptr, nullptr, 0);
  Owned<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, &v3, nid, value.c_str()));
  if (!ext) fail("extension " + value);
  if (X509_add_ext(cert, ext.get(), -1) != 1) fail("adding extension " + value);
}

// Writes through a temporary file renamed into place, so that a crash never
// leaves a half-written file that a restart would take for a finished one.
void write_pem(const std::string& path, mode_t mode, const std::function<bool(std::FILE*)>& write) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw std::runtime_error("cannot create \"" + tmp + "\": " + std::strerror(errno));
  Owned<std::FILE> f(::fdopen(fd, "w"));
  if (!f) {
    ::close(fd);
    throw std::runtime_error("cannot open \"" + tmp + "\"");
  }
  if (!write(f.get())) fail("writing " + tmp);
  if (std::fflush(f.get()) != 0 || ::fsync(fd) != 0)
    throw std::runtime_error("cannot write \"" + tmp + "\": " + std::strerror(errno));
  f.reset();
  if (std::string err = base::commit_file(tmp, path); !err.empty()) throw std::runtime_error(err);
}

}  // namespace

void write_self_signed_certificate(const SelfSignedSpec& spec, const std::string& cert_path,
                                   const std::string& key_path) {
  Owned<EVP_PKEY> key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) fail("ECDSA P-256 key");

  Owned<X509> cert(X509_new());
  if (!cert) fail("X509_new");
  X509_set_version(cert.get(), 2);  // v3
  Owned<BIGNUM> serial(BN_new());
  if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1)
    fail("serial number");
  if (!BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()))) fail("serial number");
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()),
                  static_cast<long>(std::chrono::seconds(spec.validity).count()));
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(spec.organization.c_str()), -1,
                             -1, 0);
  X509_set_issuer_name(cert.get(), name);
  if (X509_set_pubkey(cert.get(), key.get()) != 1) fail("public key");

  add_extension(cert.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_extension(cert.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment");
  add_extension(cert.get(), NID_ext_key_usage, "serverAuth,clientAuth");
  std::string sans;
  for (const auto& h : spec.hosts) {
    if (h.empty() || h.find(',') != std::string::npos) continue;
    if (!sans.empty()) sans += ',';
    sans += (is_ip(h) ? "IP:" : "DNS:") + h;
  }
  if (!sans.empty()) add_extension(cert.get(), NID_subject_alt_name, sans);
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) fail("signing");

  write_pem(key_path, 0600, [&](std::FILE* f) {
    return PEM_write_PrivateKey(f, key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
  });
  write_pem(cert_path, 0644, [&](std::FILE* f) { return PEM_write_X509(f, cert.get()) == 1; });
}

}  // namespace muster::net
