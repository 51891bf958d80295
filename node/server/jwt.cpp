// node/server/jwt.cpp: see jwt.h.
#include "node/server/jwt.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "etcdwire/durations.h"

namespace muster::server {

struct JwtTokens::Key {
  // RS*: RSA PKCS#1 v1.5; PS*: RSA-PSS (salt as long as the digest when
  // signing, any length when verifying, as golang-jwt); ES*: ECDSA; HS*:
  // HMAC with the bytes of the priv-key file as the shared secret.
  enum class Family { kRsa, kPss, kEc, kHmac } family = Family::kRsa;
  EVP_PKEY* pub = nullptr;   // verifies (may be the private key itself)
  EVP_PKEY* priv = nullptr;  // signs; null = verify only
  std::string secret;        // HS*: signs and verifies
  const EVP_MD* md = nullptr;
  bool ecdsa = false;
  int coord_bytes = 0;  // ECDSA: width of r and of s in a JWS signature
  ~Key() {
    if (pub != nullptr && pub != priv) EVP_PKEY_free(pub);
    if (priv != nullptr) EVP_PKEY_free(priv);
  }
};

namespace {

std::string b64url(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return out;
}

std::optional<std::string> b64url_decode(std::string in) {
  for (char c : in)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return std::nullopt;
  if (in.size() % 4 == 1) return std::nullopt;
  for (char& c : in) c = c == '-' ? '+' : c == '_' ? '/' : c;
  const size_t pad = (4 - in.size() % 4) % 4;
  in.append(pad, '=');
  std::string out(in.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  if (n < 0) return std::nullopt;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(std::string("auth: cannot read the JWT ") + what + " " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

struct Bio {
  BIO* b;
  explicit Bio(const std::string& s) : b(BIO_new_mem_buf(s.data(), static_cast<int>(s.size()))) {}
  ~Bio() { BIO_free(b); }
};

EVP_PKEY* load_public(const std::string& pem) {
  {
    Bio bio(pem);
    if (EVP_PKEY* k = PEM_read_bio_PUBKEY(bio.b, nullptr, nullptr, nullptr)) return k;
  }
  Bio bio(pem);  // a certificate's key will do too
  X509* cert = PEM_read_bio_X509(bio.b, nullptr, nullptr, nullptr);
  if (cert == nullptr) return nullptr;
  EVP_PKEY* k = X509_get_pubkey(cert);
  X509_free(cert);
  return k;
}

}  // namespace

JwtTokens::~JwtTokens() = default;

std::unique_ptr<JwtTokens> JwtTokens::from_pem(const std::string& method,
                                               const std::string& public_pem,
                                               const std::string& private_pem,
                                               std::chrono::seconds ttl) {
  std::unique_ptr<JwtTokens> t(new JwtTokens());
  t->alg_ = method;
  t->ttl_ = ttl;
  t->key_ = std::make_unique<Key>();
  Key& k = *t->key_;
  using F = Key::Family;
  static const std::map<std::string, std::pair<const EVP_MD* (*)(), F>> kMethods = {
      {"RS256", {EVP_sha256, F::kRsa}},  {"RS384", {EVP_sha384, F::kRsa}},
      {"RS512", {EVP_sha512, F::kRsa}},  {"PS256", {EVP_sha256, F::kPss}},
      {"PS384", {EVP_sha384, F::kPss}},  {"PS512", {EVP_sha512, F::kPss}},
      {"ES256", {EVP_sha256, F::kEc}},   {"ES384", {EVP_sha384, F::kEc}},
      {"ES512", {EVP_sha512, F::kEc}},   {"HS256", {EVP_sha256, F::kHmac}},
      {"HS384", {EVP_sha384, F::kHmac}}, {"HS512", {EVP_sha512, F::kHmac}},
  };
  auto m = kMethods.find(method);
  if (m == kMethods.end())
    throw std::runtime_error("auth: unsupported JWT sign-method \"" + method +
                             "\" (RS256/384/512, PS256/384/512, ES256/384/512, HS256/384/512)");
  k.md = m->second.first();
  k.family = m->second.second;
  k.ecdsa = k.family == F::kEc;
  if (k.family == F::kHmac) {
    // etcd's hmacKey: the priv-key file's bytes, as they are; pub-key is
    // not used.
    if (private_pem.empty())
      throw std::runtime_error("auth: " + method + " needs priv-key (the shared secret)");
    k.secret = private_pem;
    return t;
  }
  if (!private_pem.empty()) {
    Bio bio(private_pem);
    k.priv = PEM_read_bio_PrivateKey(bio.b, nullptr, nullptr, nullptr);
    if (k.priv == nullptr)
      throw std::runtime_error("auth: the JWT priv-key is not a PEM private key");
  }
  if (!public_pem.empty()) {
    k.pub = load_public(public_pem);
    if (k.pub == nullptr)
      throw std::runtime_error("auth: the JWT pub-key is not a PEM public key or certificate");
  } else {
    k.pub = k.priv;
  }
  if (k.pub == nullptr) throw std::runtime_error("auth: a JWT needs pub-key or priv-key");
  // PS* keys are ordinary RSA keys, as golang-jwt reads them.
  const int want = k.ecdsa ? EVP_PKEY_EC : EVP_PKEY_RSA;
  if (EVP_PKEY_get_base_id(k.pub) != want || (k.priv && EVP_PKEY_get_base_id(k.priv) != want))
    throw std::runtime_error("auth: the JWT keys are not " + std::string(k.ecdsa ? "EC" : "RSA") +
                             " keys, as " + method + " needs");
  if (k.priv && k.pub != k.priv && EVP_PKEY_eq(k.pub, k.priv) != 1)
    throw std::runtime_error("auth: the JWT public and private keys don't match");
  if (k.ecdsa) {
    const int bits = EVP_PKEY_get_bits(k.pub);
    const int expected = method == "ES256" ? 256 : method == "ES384" ? 384 : 521;
    if (bits != expected)
      throw std::runtime_error("auth: " + method + " needs a P-" + std::to_string(expected) +
                               " key");
    k.coord_bytes = (bits + 7) / 8;
  }
  return t;
}

std::unique_ptr<JwtTokens> JwtTokens::from_flag(const std::string& flag) {
  std::map<std::string, std::string> opts;
  std::string kind;
  size_t pos = 0;
  while (pos <= flag.size()) {
    size_t comma = flag.find(',', pos);
    if (comma == std::string::npos) comma = flag.size();
    std::string item = flag.substr(pos, comma - pos);
    if (kind.empty() && pos == 0) {
      kind = item;
    } else {
      const size_t eq = item.find('=');
      if (eq == std::string::npos || eq == 0)
        throw std::runtime_error("auth: invalid auth options (\"" + item + "\" is not key=value)");
      opts[item.substr(0, eq)] = item.substr(eq + 1);
    }
    pos = comma + 1;
  }
  if (kind != "jwt") throw std::runtime_error("auth: not a jwt token option: " + flag);
  for (const auto& [key, value] : opts)
    if (key != "pub-key" && key != "priv-key" && key != "sign-method" && key != "ttl")
      throw std::runtime_error("auth: unknown JWT option \"" + key + "\"");
  std::chrono::seconds ttl{300};  // etcd's default: 5 minutes
  if (auto it = opts.find("ttl"); it != opts.end()) {
    std::string err;
    auto d = etcdwire::parse_go_duration(it->second, &err);
    if (!d || *d < std::chrono::seconds(1))
      throw std::runtime_error("auth: invalid JWT ttl \"" + it->second + "\"" +
                               (err.empty() ? "" : ": " + err));
    ttl = std::chrono::duration_cast<std::chrono::seconds>(*d);
  }
  if (!opts.count("sign-method")) throw std::runtime_error("auth: a JWT needs sign-method");
  std::string pub, priv;
  if (auto it = opts.find("pub-key"); it != opts.end()) pub = read_file(it->second, "pub-key");
  if (auto it = opts.find("priv-key"); it != opts.end()) priv = read_file(it->second, "priv-key");
  return from_pem(opts["sign-method"], pub, priv, ttl);
}

bool JwtTokens::can_sign() const {
  return key_->family == Key::Family::kHmac || key_->priv != nullptr;
}

namespace {

// HMAC of `input` with the shared secret.
std::string hmac(const JwtTokens::Key& k, const std::string& input) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(k.md, k.secret.data(), static_cast<int>(k.secret.size()),
           reinterpret_cast<const unsigned char*>(input.data()), input.size(), out,
           &len) == nullptr)
    return "";
  return std::string(reinterpret_cast<char*>(out), len);
}

// RSA-PSS on the digest context's key context, when the method is PS*.
bool set_padding(const JwtTokens::Key& k, EVP_PKEY_CTX* pctx, bool signing) {
  if (k.family != JwtTokens::Key::Family::kPss) return true;
  return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(
             pctx, signing ? RSA_PSS_SALTLEN_DIGEST : RSA_PSS_SALTLEN_AUTO) == 1;
}

}  // namespace

std::optional<std::string> JwtTokens::sign(const std::string& user, uint64_t revision,
                                           int64_t now_unix) const {
  if (!can_sign()) return std::nullopt;
  // jwt-go writes the header's and the claims' keys in sorted order.
  const nlohmann::json header = {{"alg", alg_}, {"typ", "JWT"}};
  const nlohmann::json claims = {
      {"exp", now_unix + ttl_.count()}, {"revision", revision}, {"username", user}};
  const std::string input = b64url(header.dump()) + "." + b64url(claims.dump());
  if (key_->family == Key::Family::kHmac) {
    const std::string mac = hmac(*key_, input);
    if (mac.empty()) return std::nullopt;
    return input + "." + b64url(mac);
  }
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  size_t len = 0;
  std::string sig;
  bool ok = ctx != nullptr && EVP_DigestSignInit(ctx, &pctx, key_->md, nullptr, key_->priv) == 1 &&
            set_padding(*key_, pctx, true) &&
            EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                           input.size()) == 1;
  if (ok) {
    sig.resize(len);
    ok = EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                        reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
    sig.resize(len);
  }
  EVP_MD_CTX_free(ctx);
  if (!ok) return std::nullopt;
  if (key_->ecdsa) {
    // DER -> the fixed-width r||s of JWS (RFC 7518 section 3.4).
    const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
    ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    if (es == nullptr) return std::nullopt;
    const BIGNUM *r = nullptr, *s = nullptr;
    ECDSA_SIG_get0(es, &r, &s);
    std::string raw(static_cast<size_t>(2 * key_->coord_bytes), '\0');
    auto* out = reinterpret_cast<unsigned char*>(raw.data());
    ok = BN_bn2binpad(r, out, key_->coord_bytes) == key_->coord_bytes &&
         BN_bn2binpad(s, out + key_->coord_bytes, key_->coord_bytes) == key_->coord_bytes;
    ECDSA_SIG_free(es);
    if (!ok) return std::nullopt;
    sig = std::move(raw);
  }
  return input + "." + b64url(sig);
}

std::optional<JwtTokens::Claims> JwtTokens::verify(const std::string& token,
                                                   int64_t now_unix) const {
  const size_t d1 = token.find('.');
  const size_t d2 = d1 == std::string::npos ? d1 : token.find('.', d1 + 1);
  if (d2 == std::string::npos || token.find('.', d2 + 1) != std::string::npos) return std::nullopt;
  auto header = b64url_decode(token.substr(0, d1));
  auto payload = b64url_decode(token.substr(d1 + 1, d2 - d1 - 1));
  auto sig = b64url_decode(token.substr(d2 + 1));
  if (!header || !payload || !sig) return std::nullopt;
  auto h = nlohmann::json::parse(*header, nullptr, false);
  if (!h.is_object() || !h.contains("alg") || h["alg"] != alg_) return std::nullopt;

  const std::string input = token.substr(0, d2);
  std::string der = *sig;
  if (key_->family == Key::Family::kHmac) {
    const std::string mac = hmac(*key_, input);
    if (mac.empty() || mac.size() != sig->size() ||
        CRYPTO_memcmp(mac.data(), sig->data(), mac.size()) != 0)
      return std::nullopt;
  } else if (key_->ecdsa) {
    if (sig->size() != static_cast<size_t>(2 * key_->coord_bytes)) return std::nullopt;
    const auto* p = reinterpret_cast<const unsigned char*>(sig->data());
    BIGNUM* r = BN_bin2bn(p, key_->coord_bytes, nullptr);
    BIGNUM* s = BN_bin2bn(p + key_->coord_bytes, key_->coord_bytes, nullptr);
    ECDSA_SIG* es = ECDSA_SIG_new();
    if (r == nullptr || s == nullptr || es == nullptr || ECDSA_SIG_set0(es, r, s) != 1) {
      BN_free(r);
      BN_free(s);
      ECDSA_SIG_free(es);
      return std::nullopt;
    }
    unsigned char* out = nullptr;
    const int n = i2d_ECDSA_SIG(es, &out);
    ECDSA_SIG_free(es);
    if (n <= 0) return std::nullopt;
    der.assign(reinterpret_cast<char*>(out), static_cast<size_t>(n));
    OPENSSL_free(out);
  }
  if (key_->family != Key::Family::kHmac) {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX* pctx = nullptr;
    const bool ok =
        ctx != nullptr && EVP_DigestVerifyInit(ctx, &pctx, key_->md, nullptr, key_->pub) == 1 &&
        set_padding(*key_, pctx, false) &&
        EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(der.data()), der.size(),
                         reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) return std::nullopt;
  }

  auto c = nlohmann::json::parse(*payload, nullptr, false);
  if (!c.is_object() || !c.contains("username") || !c["username"].is_string() ||
      !c.contains("revision") || !c["revision"].is_number() || !c.contains("exp") ||
      !c["exp"].is_number())
    return std::nullopt;
  Claims out;
  out.username = c["username"].get<std::string>();
  out.revision = c["revision"].get<uint64_t>();
  out.exp = c["exp"].get<int64_t>();
  if (now_unix > out.exp) return std::nullopt;  // expired (jwt-go: valid while now <= exp)
  return out;
}

}  // namespace muster::server
