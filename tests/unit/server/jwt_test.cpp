// etcd's JWT tokens (node/server/jwt.h): round trips with every sign method
// etcd 3.4 accepts (RS, PS, ES and HS, each with SHA-256/384/512), and
// every way a token must fail: another key, another method, a changed
// claim, a broken shape, expiry; verify-only keys; bad flags.
#include "node/server/jwt.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/support/temp_dir.h"

namespace muster::server {
namespace {

struct Pem {
  std::string priv, pub;
};

// `param`: nullptr = RSA, "HMAC" = a random shared secret (priv only),
// else an EC curve.
Pem make_key(const char* type, const char* param) {
  if (param != nullptr && std::string(param) == "HMAC") {
    unsigned char secret[48];
    EXPECT_EQ(RAND_bytes(secret, sizeof secret), 1);
    return Pem{std::string(reinterpret_cast<char*>(secret), sizeof secret), ""};
  }
  EVP_PKEY* k = std::string(type) == "RSA"
                    ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})
                    : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", param);
  EXPECT_NE(k, nullptr);
  Pem out;
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  out.priv.assign(p, static_cast<size_t>(n));
  BIO_free(b);
  b = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(b, k);
  n = BIO_get_mem_data(b, &p);
  out.pub.assign(p, static_cast<size_t>(n));
  BIO_free(b);
  EVP_PKEY_free(k);
  return out;
}

const int64_t kNow = 1'800'000'000;

std::string b64url_json(const std::string& json) {
  std::string out(4 * ((json.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(json.data()),
                          static_cast<int>(json.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return out;
}

class JwtTest : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(JwtTest, SignedTokensVerifyWithTheirClaims) {
  const auto [method, curve] = GetParam();
  Pem key = make_key(curve ? "EC" : "RSA", curve);
  auto t = JwtTokens::from_pem(method, key.pub, key.priv, std::chrono::seconds(300));
  ASSERT_TRUE(t->can_sign());
  auto tok = t->sign("alice", 7, kNow);
  ASSERT_TRUE(tok.has_value());
  auto c = t->verify(*tok, kNow + 10);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->username, "alice");
  EXPECT_EQ(c->revision, 7u);
  EXPECT_EQ(c->exp, kNow + 300);
  // The header is etcd's (jwt-go's).
  const std::string header = tok->substr(0, tok->find('.'));
  EXPECT_EQ(header, b64url_json(std::string("{\"alg\":\"") + method + "\",\"typ\":\"JWT\"}"));
  // Valid up to and including exp, not after.
  EXPECT_TRUE(t->verify(*tok, kNow + 300).has_value());
  EXPECT_FALSE(t->verify(*tok, kNow + 301).has_value());
}

TEST_P(JwtTest, AnythingElseFails) {
  const auto [method, curve] = GetParam();
  Pem key = make_key(curve ? "EC" : "RSA", curve);
  Pem other = make_key(curve ? "EC" : "RSA", curve);
  auto t = JwtTokens::from_pem(method, key.pub, key.priv, std::chrono::seconds(300));
  auto o = JwtTokens::from_pem(method, other.pub, other.priv, std::chrono::seconds(300));
  const std::string tok = *t->sign("alice", 7, kNow);
  EXPECT_FALSE(o->verify(tok, kNow).has_value());  // another key
  // A claim changed: the signature no longer matches.
  const size_t d1 = tok.find('.'), d2 = tok.rfind('.');
  const std::string forged = tok.substr(0, d1 + 1) +
                             b64url_json(R"({"exp":1900000000,"revision":7,"username":"root"})") +
                             tok.substr(d2);
  EXPECT_FALSE(t->verify(forged, kNow).has_value());
  // "alg":"none" and friends.
  const std::string none =
      b64url_json(R"({"alg":"none","typ":"JWT"})") + tok.substr(d1, d2 - d1) + ".";
  EXPECT_FALSE(t->verify(none, kNow).has_value());
  for (const std::string bad :
       {std::string(""), std::string("abc"), std::string("a.b"), std::string("a.b.c.d"), tok + "x",
        tok.substr(0, tok.size() - 2), std::string("!!.??.**")})
    EXPECT_FALSE(t->verify(bad, kNow).has_value()) << bad;
}

INSTANTIATE_TEST_SUITE_P(
    Methods, JwtTest,
    ::testing::Values(std::make_pair("RS256", nullptr), std::make_pair("RS384", nullptr),
                      std::make_pair("RS512", nullptr), std::make_pair("PS256", nullptr),
                      std::make_pair("PS384", nullptr), std::make_pair("PS512", nullptr),
                      std::make_pair("ES256", "P-256"), std::make_pair("ES384", "P-384"),
                      std::make_pair("ES512", "P-521"), std::make_pair("HS256", "HMAC"),
                      std::make_pair("HS384", "HMAC"), std::make_pair("HS512", "HMAC")),
    [](const auto& info) { return std::string(info.param.first); });

TEST(Jwt, AnotherMethodWithTheSameKeyFails) {
  Pem key = make_key("RSA", nullptr);
  auto rs256 = JwtTokens::from_pem("RS256", key.pub, key.priv, std::chrono::seconds(300));
  auto rs512 = JwtTokens::from_pem("RS512", key.pub, key.priv, std::chrono::seconds(300));
  EXPECT_FALSE(rs512->verify(*rs256->sign("a", 1, kNow), kNow).has_value());
}

// RS and PS share a key but not a padding: neither accepts the other's
// token, and a PSS signature is randomised (two tokens differ) yet both
// verify.
TEST(Jwt, PssIsNotPkcs1AndIsRandomised) {
  Pem key = make_key("RSA", nullptr);
  auto rs = JwtTokens::from_pem("RS256", key.pub, key.priv, std::chrono::seconds(300));
  auto ps = JwtTokens::from_pem("PS256", key.pub, key.priv, std::chrono::seconds(300));
  const std::string a = *ps->sign("a", 1, kNow), b = *ps->sign("a", 1, kNow);
  EXPECT_NE(a, b);
  EXPECT_TRUE(ps->verify(a, kNow).has_value());
  EXPECT_TRUE(ps->verify(b, kNow).has_value());
  // The same signature under the other method's header.
  const std::string rs_tok = *rs->sign("a", 1, kNow);
  const std::string swapped =
      b64url_json(R"({"alg":"PS256","typ":"JWT"})") + rs_tok.substr(rs_tok.find('.'));
  EXPECT_FALSE(ps->verify(swapped, kNow).has_value());
}

// HS*: the priv-key file's bytes are the secret, pub-key plays no part.
TEST(Jwt, HmacSecretIsThePrivKeyBytes) {
  auto a = JwtTokens::from_pem("HS256", "", "secret-one\n", std::chrono::seconds(60));
  auto same = JwtTokens::from_pem("HS256", "ignored", "secret-one\n", std::chrono::seconds(60));
  auto other = JwtTokens::from_pem("HS256", "", "secret-one", std::chrono::seconds(60));
  const std::string tok = *a->sign("a", 1, kNow);
  EXPECT_TRUE(same->verify(tok, kNow).has_value());
  EXPECT_FALSE(other->verify(tok, kNow).has_value());  // one byte less of secret
}

TEST(Jwt, APublicKeyAloneVerifiesButCannotSign) {
  Pem key = make_key("EC", "P-256");
  auto full = JwtTokens::from_pem("ES256", key.pub, key.priv, std::chrono::seconds(60));
  auto verify_only = JwtTokens::from_pem("ES256", key.pub, "", std::chrono::seconds(60));
  EXPECT_FALSE(verify_only->can_sign());
  EXPECT_FALSE(verify_only->sign("a", 1, kNow).has_value());
  EXPECT_TRUE(verify_only->verify(*full->sign("a", 1, kNow), kNow).has_value());
}

TEST(Jwt, BadKeysAndOptionsAreRefusedWithASentence) {
  Pem rsa = make_key("RSA", nullptr);
  Pem ec = make_key("EC", "P-256");
  auto refuses = [](auto f, const std::string& words) {
    try {
      f();
      ADD_FAILURE() << "accepted; wanted: " << words;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  using std::chrono::seconds;
  refuses([&] { JwtTokens::from_pem("ES256", rsa.pub, rsa.priv, seconds(1)); }, "EC keys");
  refuses([&] { JwtTokens::from_pem("RS256", ec.pub, ec.priv, seconds(1)); }, "RSA keys");
  refuses([&] { JwtTokens::from_pem("ES384", ec.pub, ec.priv, seconds(1)); }, "P-384");
  refuses([&] { JwtTokens::from_pem("XS256", rsa.pub, rsa.priv, seconds(1)); }, "sign-method");
  refuses([&] { JwtTokens::from_pem("none", rsa.pub, rsa.priv, seconds(1)); }, "sign-method");
  refuses([&] { JwtTokens::from_pem("HS256", rsa.pub, "", seconds(1)); }, "needs priv-key");
  refuses([&] { JwtTokens::from_pem("PS256", ec.pub, ec.priv, seconds(1)); }, "RSA keys");
  refuses([&] { JwtTokens::from_pem("ES512", ec.pub, ec.priv, seconds(1)); }, "P-521");
  refuses([&] { JwtTokens::from_pem("RS256", rsa.pub, make_key("RSA", nullptr).priv, seconds(1)); },
          "don't match");
  refuses([&] { JwtTokens::from_pem("RS256", "junk", "", seconds(1)); }, "pub-key");

  muster::testing::TempDir dir;
  const std::string pub = dir.path() + "/k.pub", priv = dir.path() + "/k.key";
  std::ofstream(pub) << rsa.pub;
  std::ofstream(priv) << rsa.priv;
  auto t = JwtTokens::from_flag("jwt,pub-key=" + pub + ",priv-key=" + priv +
                                ",sign-method=RS256,ttl=10m");
  EXPECT_EQ(t->ttl(), seconds(600));
  EXPECT_EQ(JwtTokens::from_flag("jwt,priv-key=" + priv + ",sign-method=RS256")->ttl(),
            seconds(300));
  refuses([&] { JwtTokens::from_flag("jwt,pub-key=/nonexistent,sign-method=RS256"); },
          "cannot read");
  refuses([&] { JwtTokens::from_flag("jwt,priv-key=" + priv + ",sign-method=RS256,color=red"); },
          "unknown JWT option");
  refuses([&] { JwtTokens::from_flag("jwt,priv-key=" + priv); }, "sign-method");
  refuses([&] { JwtTokens::from_flag("jwt,priv-key=" + priv + ",sign-method=RS256,ttl=5"); },
          "ttl");
}

}  // namespace
}  // namespace muster::server
