// net/ over TLS with certificates the test makes with the openssl command:
// server authentication against a private CA, host-name checks, mutual TLS
// (--client-cert-auth) with the client's common name visible to handlers,
// and clear errors for bad files.
#include "net/tls.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "net/client.h"
#include "net/server.h"
#include "tests/support/pki.h"
#include "tests/unit/net/net_test_support.h"

namespace muster::net {
namespace {

using namespace muster::net::testing;

// Two CAs ("good" signs everything the server trusts, "rogue" signs a client
// certificate the server must refuse), a server certificate for 127.0.0.1 and
// localhost, and client certificates.  EC keys keep generation fast.
class Pki : public muster::testing::TestPki {
 public:
  Pki() {
    ca("ca");
    ca("rogue-ca");
    leaf("server", "ca", "muster-server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    leaf("client", "ca", "client1", "extendedKeyUsage=clientAuth\n");
    leaf("rogue-client", "rogue-ca", "mallory", "extendedKeyUsage=clientAuth\n");
  }
};

class Tls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = std::make_unique<Pki>(); }
  static void TearDownTestSuite() { pki_.reset(); }

  static ServerOptions server_options(bool client_cert_auth) {
    ServerOptions o;
    TlsOptions t;
    t.cert_file = pki_->crt("server");
    t.key_file = pki_->key("server");
    if (client_cert_auth) {
      t.trusted_ca_file = pki_->crt("ca");
      t.client_cert_auth = true;
    }
    o.tls = t;
    return o;
  }
  static ClientOptions client_options(const std::string& client = "") {
    ClientOptions o;
    o.timeout = 3000ms;
    o.tls.trusted_ca_file = pki_->crt("ca");
    if (!client.empty()) {
      o.tls.cert_file = pki_->crt(client);
      o.tls.key_file = pki_->key(client);
    }
    return o;
  }
  static void answer_with_cn(const std::shared_ptr<Exchange>& ex) {
    ex->respond(Response::text(200, "cn=" + ex->peer_common_name() + " " + ex->request().path()));
  }

  // Made once per suite: certificate generation is the slow part.
  static std::unique_ptr<Pki> pki_;
};
std::unique_ptr<Pki> Tls::pki_;

TEST_F(Tls, ServerCertificateVerifiedAgainstThePrivateCa) {
  RunningServer s(answer_with_cn, server_options(false));
  HttpClient c(client_options());
  for (int i = 0; i < 3; ++i) {  // keep-alive over TLS
    auto r = c.get(s.url("/x" + std::to_string(i), "https"));
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.response->body, "cn= /x" + std::to_string(i));
  }
  EXPECT_EQ(s.server().open_connections(), 1u);
  auto big = c.request("PUT", s.url("/big", "https"), std::string(300'000, 'b'));
  ASSERT_TRUE(big.ok()) << big.error;
  // "localhost" is in the certificate too.
  auto by_name =
      HttpClient(client_options()).get("https://localhost:" + std::to_string(s.port()) + "/name");
  ASSERT_TRUE(by_name.ok()) << by_name.error;
}

TEST_F(Tls, ClientRefusesAnUnknownCaOrTheWrongHostUnlessToldToSkip) {
  RunningServer s(answer_with_cn, server_options(false));
  ClientOptions system_roots;
  system_roots.timeout = 3000ms;
  auto r = HttpClient(system_roots).get(s.url("/", "https"));
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("TLS handshake"), std::string::npos) << r.error;

  auto wrong_name = client_options();
  wrong_name.tls.server_name = "discovery.example.com";
  r = HttpClient(wrong_name).get(s.url("/", "https"));
  EXPECT_FALSE(r.ok()) << "accepted a certificate for another host";

  auto insecure = system_roots;
  insecure.tls.insecure_skip_verify = true;
  r = HttpClient(insecure).get(s.url("/", "https"));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->status, 200);
}

// The plaintext client is told what went wrong in the words Go's servers
// (and so etcd) use, and the server keeps serving TLS clients.
TEST_F(Tls, PlainHttpToATlsPortFailsAndTheServerKeepsServing) {
  RunningServer s(answer_with_cn, server_options(false));
  ClientOptions o;
  o.timeout = 2000ms;
  auto plain = HttpClient(o).get(s.url("/", "http"));
  ASSERT_TRUE(plain.ok()) << plain.error;
  EXPECT_EQ(plain.response->status, 400);
  EXPECT_EQ(plain.response->body, "Client sent an HTTP request to an HTTPS server.\n");
  auto r = HttpClient(client_options()).get(s.url("/after", "https"));
  ASSERT_TRUE(r.ok()) << r.error;
}

TEST_F(Tls, MutualTlsAcceptsTrustedClientsAndShowsTheirCommonName) {
  RunningServer s(answer_with_cn, server_options(true));
  auto r = HttpClient(client_options("client")).get(s.url("/m", "https"));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.response->body, "cn=client1 /m");

  EXPECT_FALSE(HttpClient(client_options()).get(s.url("/m", "https")).ok())
      << "a client without a certificate got through --client-cert-auth";
  EXPECT_FALSE(HttpClient(client_options("rogue-client")).get(s.url("/m", "https")).ok())
      << "a client certificate from an untrusted CA got through";

  r = HttpClient(client_options("client")).get(s.url("/again", "https"));
  ASSERT_TRUE(r.ok()) << r.error;
}

TEST_F(Tls, LongPollOverTlsIsCancelledWhenTheClientLeaves) {
  Slot<bool> cancelled;
  Slot<bool> parked;
  RunningServer s(
      [&](std::shared_ptr<Exchange> ex) {
        ex->on_cancel([&] { cancelled.set(true); });
        parked.set(true);
      },
      server_options(false));
  auto o = client_options();
  o.timeout = 300ms;
  HttpClient c(o);
  auto r = c.get(s.url("/wait", "https"));
  EXPECT_FALSE(r.ok());
  ASSERT_TRUE(parked.wait());
  EXPECT_TRUE(cancelled.wait());
}

TEST_F(Tls, BadFilesAreReportedByName) {
  TlsOptions t;
  t.cert_file = pki_->file("missing.crt");
  t.key_file = pki_->key("server");
  try {
    make_server_tls_context(t);
    FAIL() << "no error for a missing certificate";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.crt"), std::string::npos) << e.what();
  }
  t.cert_file = pki_->crt("server");
  t.key_file = pki_->key("client");  // does not match the certificate
  EXPECT_THROW(make_server_tls_context(t), std::runtime_error);
  t.key_file = pki_->key("server");
  t.client_cert_auth = true;  // without a CA to check clients against
  try {
    make_server_tls_context(t);
    FAIL() << "client-cert-auth accepted without a trusted CA file";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("trusted-ca-file"), std::string::npos) << e.what();
  }
  TlsOptions c;
  c.trusted_ca_file = pki_->file("nope.pem");
  EXPECT_THROW(make_client_tls_context(c), std::runtime_error);
  ServerOptions so;
  so.tls = TlsOptions{};
  so.tls->cert_file = pki_->file("absent.crt");
  so.tls->key_file = pki_->file("absent.key");
  boost::asio::io_context io;
  EXPECT_THROW(Server(io, so, [](std::shared_ptr<Exchange>) {}), std::runtime_error);
}

}  // namespace
}  // namespace muster::net
