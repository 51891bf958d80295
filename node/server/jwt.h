// node/server/jwt.h: etcd's JWT auth tokens (`--auth-token jwt,...`), signed
// and verified with OpenSSL.
//
// A token is a JWS in compact form: base64url(header) "." base64url(claims)
// "." base64url(signature), header {"alg":<sign-method>,"typ":"JWT"}, claims
// {"exp":<unix seconds>,"revision":<auth revision>,"username":<user>} (etcd
// 3.4's auth/jwt.go), so a token etcd signed verifies here with the same
// key and the other way round.  Unlike simple tokens, a JWT is not kept by
// any member: it carries the auth revision it was issued at, so any auth
// change makes it old (writes and reads then fail with "revision of auth
// store is old" and clients authenticate again), and it ends at `exp`.
//
// Sign methods: every one etcd 3.4 accepts (auth/options.go: golang-jwt's
// RSA, RSA-PSS, ECDSA and HMAC families) -- RS256/384/512 (RSA PKCS#1
// v1.5), PS256/384/512 (RSA-PSS, salt the digest's length when signing, any
// length accepted when verifying, as golang-jwt), ES256/384/512 (ECDSA on
// P-256/384/521, signature as the fixed-width r||s JWS asks for) and
// HS256/384/512 (HMAC; the bytes of the priv-key file, as they are, are the
// shared secret and pub-key is not used).  A private key signs and
// verifies; with only `pub-key` the member verifies tokens but cannot issue
// them (etcd's verify-only mode).
//
// Thread-safe after construction.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace muster::server {

class JwtTokens {
 public:
  struct Claims {
    std::string username;
    uint64_t revision = 0;
    int64_t exp = 0;  // unix seconds
  };

  // From etcd's flag value "jwt,pub-key=<pem>,priv-key=<pem>,sign-method=RS256,ttl=5m".
  // Throws std::runtime_error with a sentence naming what is wrong.
  static std::unique_ptr<JwtTokens> from_flag(const std::string& flag);
  // From keys in memory (PEM); `private_pem` may be empty (verify only).
  // For HS* `private_pem` is the shared secret itself.
  static std::unique_ptr<JwtTokens> from_pem(const std::string& sign_method,
                                             const std::string& public_pem,
                                             const std::string& private_pem,
                                             std::chrono::seconds ttl);
  ~JwtTokens();

  bool can_sign() const;
  std::chrono::seconds ttl() const { return ttl_; }
  // A token for `user` at auth `revision`, expiring ttl() after `now_unix`;
  // nullopt when this member holds no private key.
  std::optional<std::string> sign(const std::string& user, uint64_t revision,
                                  int64_t now_unix) const;
  // The claims of a token signed with this key and method that has not
  // expired at `now_unix`; nullopt for anything else.
  std::optional<Claims> verify(const std::string& token, int64_t now_unix) const;

  struct Key;

 private:
  JwtTokens() = default;
  std::string alg_;
  std::chrono::seconds ttl_{300};
  std::unique_ptr<Key> key_;
};

}  // namespace muster::server
