// The TLS policies etcd's security flags ask of net/tls, over real loopback
// connections: --cipher-suites (IANA names mapped to OpenSSL, the TLS 1.2
// list enforced), --tls-min-version, --peer-cert-allowed-cn and
// --peer-cert-allowed-hostname, --client-crl-file, and the self-signed
// certificates of --auto-tls.  Certificates come from the openssl command,
// EC keys to keep generation fast.
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <boost/asio/ssl.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "net/client.h"
#include "net/server.h"
#include "net/tls.h"
#include "tests/support/pki.h"
#include "tests/unit/net/net_test_support.h"

namespace muster::net {
namespace {

using namespace muster::net::testing;

// A CA; a server certificate for 127.0.0.1; client certificates with common
// names muster-peer and intruder, one valid for peer.example.com, and one
// the CA has revoked (listed in crl.pem).
class PolicyPki : public muster::testing::TestPki {
 public:
  PolicyPki() {
    ca("ca", "policy-ca");
    leaf("server", "ca", "muster-server", "subjectAltName=IP:127.0.0.1\n");
    leaf("peer", "ca", "muster-peer", "extendedKeyUsage=clientAuth\n");
    leaf("intruder", "ca", "intruder", "extendedKeyUsage=clientAuth\n");
    leaf("named", "ca", "someone",
         "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:peer.example.com\n");
    leaf("revoked", "ca", "muster-peer", "extendedKeyUsage=clientAuth\n");
    std::ofstream(file("ca.cnf"))
        << "[ca]\ndefault_ca=ca_default\n[ca_default]\ndatabase=index.txt\n"
           "crlnumber=crlnumber\ndefault_md=sha256\ndefault_crl_days=2\n";
    std::ofstream(file("index.txt"));
    std::ofstream(file("crlnumber")) << "01\n";
    run("openssl ca -batch -config ca.cnf -keyfile ca.key -cert ca.crt -revoke revoked.crt");
    run("openssl ca -batch -config ca.cnf -keyfile ca.key -cert ca.crt -gencrl -out crl.pem");
  }
};

class TlsPolicy : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = std::make_unique<PolicyPki>(); }
  static void TearDownTestSuite() { pki_.reset(); }

  static TlsOptions server_tls() {
    TlsOptions t;
    t.cert_file = pki_->crt("server");
    t.key_file = pki_->key("server");
    t.trusted_ca_file = pki_->crt("ca");
    t.client_cert_auth = true;
    return t;
  }
  static ServerOptions server_options(const TlsOptions& t) {
    ServerOptions o;
    o.tls = t;
    return o;
  }
  static ClientOptions client(const std::string& who = "peer") {
    ClientOptions o;
    o.timeout = 3000ms;
    o.tls.trusted_ca_file = pki_->crt("ca");
    if (!who.empty()) {
      o.tls.cert_file = pki_->crt(who);
      o.tls.key_file = pki_->key(who);
    }
    return o;
  }
  static void answer_with_cn(const std::shared_ptr<Exchange>& ex) {
    ex->respond(Response::text(200, ex->peer_common_name()));
  }
  static bool served(const RunningServer& s, const ClientOptions& o) {
    auto r = HttpClient(o).get(s.url("/", "https"));
    return r.ok() && r.response->status == 200;
  }

  static std::unique_ptr<PolicyPki> pki_;
};
std::unique_ptr<PolicyPki> TlsPolicy::pki_;

TEST(CipherSuiteNames, EveryModernSuiteMapsToACipherOpenSslKnows) {
  const char* modern[] = {"TLS_RSA_WITH_AES_128_CBC_SHA",
                          "TLS_RSA_WITH_AES_256_CBC_SHA",
                          "TLS_RSA_WITH_AES_128_CBC_SHA256",
                          "TLS_RSA_WITH_AES_128_GCM_SHA256",
                          "TLS_RSA_WITH_AES_256_GCM_SHA384",
                          "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
                          "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
                          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
                          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
                          "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
                          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
                          "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                          "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                          "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                          "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                          "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
                          "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
                          "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"};
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_method()), SSL_CTX_free);
  for (const char* go : modern) {
    auto name = openssl_cipher_name(go);
    ASSERT_TRUE(name.has_value()) << go;
    // OpenSSL's own IANA name for the cipher must be the one asked for.
    ASSERT_EQ(SSL_CTX_set_cipher_list(ctx.get(), name->c_str()), 1) << go << " -> " << *name;
    STACK_OF(SSL_CIPHER)* list = SSL_CTX_get_ciphers(ctx.get());
    bool found = false;
    std::string want = go;
    if (want.find("CHACHA20_POLY1305") != std::string::npos &&
        want.find("_SHA256") == std::string::npos)
      want += "_SHA256";
    for (int i = 0; i < sk_SSL_CIPHER_num(list); ++i)
      if (want == SSL_CIPHER_standard_name(sk_SSL_CIPHER_value(list, i))) found = true;
    EXPECT_TRUE(found) << go << " mapped to " << *name << ", which OpenSSL calls otherwise";
  }
  EXPECT_EQ(openssl_cipher_list({"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                                 "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"}),
            "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384");
  EXPECT_EQ(openssl_cipher_list({}), "");
}

TEST(CipherSuiteNames, UnknownNamesAreRefusedInEtcdsWordsWithAHint) {
  auto message = [](const std::string& name) {
    try {
      openssl_cipher_list({"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", name});
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(message("TLS_BOGUS"), "unexpected TLS cipher suite \"TLS_BOGUS\"");
  EXPECT_NE(message("ECDHE-RSA-AES128-GCM-SHA256").find("IANA name"), std::string::npos);
  EXPECT_NE(message("TLS_AES_128_GCM_SHA256").find("TLS 1.3"), std::string::npos);
}

TEST_F(TlsPolicy, AllowedCommonNameAdmitsOnlyThatName) {
  TlsOptions t = server_tls();
  t.allowed_cn = "muster-peer";
  RunningServer s(answer_with_cn, server_options(t));
  auto r = HttpClient(client("peer")).get(s.url("/", "https"));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->body, "muster-peer");
  EXPECT_FALSE(served(s, client("intruder"))) << "a certificate with CN intruder got through";
  EXPECT_FALSE(served(s, client(""))) << "no certificate got through";
  EXPECT_TRUE(served(s, client("peer"))) << "the server stopped serving after a refusal";
}

TEST_F(TlsPolicy, AllowedHostnameAdmitsOnlyCertificatesForThatHost) {
  TlsOptions t = server_tls();
  t.allowed_hostname = "peer.example.com";
  RunningServer s(answer_with_cn, server_options(t));
  EXPECT_TRUE(served(s, client("named")));
  EXPECT_FALSE(served(s, client("peer")));
}

TEST_F(TlsPolicy, RevokedClientCertificateIsRefused) {
  TlsOptions t = server_tls();
  t.crl_file = pki_->file("crl.pem");
  RunningServer s(answer_with_cn, server_options(t));
  EXPECT_TRUE(served(s, client("peer")));
  EXPECT_FALSE(served(s, client("revoked")));
  t.crl_file = pki_->file("missing-crl.pem");
  EXPECT_THROW(make_server_tls_context(t), std::runtime_error);
}

TEST_F(TlsPolicy, CipherListDecidesTheTls12Suite) {
  TlsOptions t = server_tls();
  t.cipher_list = openssl_cipher_list({"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"});
  RunningServer s(answer_with_cn, server_options(t));
  auto same = client();
  same.tls.max_version = TlsVersion::kTls12;
  same.tls.cipher_list = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384";
  EXPECT_TRUE(served(s, same));
  auto other = same;
  other.tls.cipher_list = "ECDHE-ECDSA-AES256-GCM-SHA384";
  EXPECT_FALSE(served(s, other)) << "a TLS 1.2 suite outside --cipher-suites was negotiated";
  // TLS 1.3 suites are not governed by the list (as in etcd).
  EXPECT_TRUE(served(s, client()));

  TlsOptions none = server_tls();
  none.cipher_list = "NO-SUCH-CIPHER";
  EXPECT_THROW(make_server_tls_context(none), std::runtime_error);
}

TEST_F(TlsPolicy, MinimumVersionTls13RefusesTls12Clients) {
  TlsOptions t = server_tls();
  t.min_version = TlsVersion::kTls13;
  RunningServer s(answer_with_cn, server_options(t));
  auto old = client();
  old.tls.max_version = TlsVersion::kTls12;
  EXPECT_FALSE(served(s, old));
  EXPECT_TRUE(served(s, client()));
}

TEST(SelfSigned, CertificateNamesTheHostsAndServesTls) {
  TempDir dir;
  SelfSignedSpec spec;
  spec.hosts = {"127.0.0.1", "localhost", "member1.example.com"};
  const std::string cert_path = dir.file("cert.pem"), key_path = dir.file("key.pem");
  write_self_signed_certificate(spec, cert_path, key_path);

  struct stat st {};
  ASSERT_EQ(::stat(key_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(std::filesystem::exists(key_path + ".tmp"));

  std::unique_ptr<std::FILE, decltype(&std::fclose)> f(std::fopen(cert_path.c_str(), "r"),
                                                       std::fclose);
  ASSERT_TRUE(f);
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_X509(f.get(), nullptr, nullptr, nullptr), X509_free);
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "member1.example.com", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_host(cert.get(), "other.example.com", 0, 0, nullptr), 1);
  EVP_PKEY* pub = X509_get0_pubkey(cert.get());
  ASSERT_TRUE(pub);
  EXPECT_EQ(EVP_PKEY_get_base_id(pub), EVP_PKEY_EC);
  EXPECT_EQ(EVP_PKEY_get_bits(pub), 256);
  EXPECT_EQ(X509_verify(cert.get(), pub), 1) << "not self-signed";
  int days = 0, secs = 0;
  ASSERT_EQ(
      ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(cert.get()), X509_get0_notAfter(cert.get())),
      1);
  EXPECT_EQ(days, 365);

  // A server with it; a client trusting exactly this certificate verifies
  // it for 127.0.0.1, a client trusting nothing only with skip-verify.
  TlsOptions t;
  t.cert_file = cert_path;
  t.key_file = key_path;
  ServerOptions so;
  so.tls = t;
  RunningServer s([](std::shared_ptr<Exchange> ex) { ex->respond(Response::text(200, "ok")); }, so);
  ClientOptions pinned;
  pinned.timeout = 3000ms;
  pinned.tls.trusted_ca_file = cert_path;
  auto r = HttpClient(pinned).get(s.url("/", "https"));
  ASSERT_TRUE(r.ok()) << r.error;
  ClientOptions system_roots;
  system_roots.timeout = 3000ms;
  EXPECT_FALSE(HttpClient(system_roots).get(s.url("/", "https")).ok());
  system_roots.tls.insecure_skip_verify = true;
  EXPECT_TRUE(HttpClient(system_roots).get(s.url("/", "https")).ok());

  EXPECT_THROW(write_self_signed_certificate(spec, dir.file("no/such/dir/cert.pem"), key_path),
               std::runtime_error);
}

}  // namespace
}  // namespace muster::net
