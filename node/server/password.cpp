// node/server/password.cpp: see password.h.
#include "node/server/password.h"

#include <crypt.h>
#include <openssl/crypto.h>

#include <memory>

namespace muster::server::password {

std::optional<std::string> hash(std::string_view password, int cost) {
  if (password.find('\0') != std::string_view::npos || cost < 4 || cost > 31) return std::nullopt;
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  // Random bytes for the salt come from the OS (rbytes = null).
  if (crypt_gensalt_rn("$2b$", static_cast<unsigned long>(cost), nullptr, 0, setting,
                       sizeof setting) == nullptr)
    return std::nullopt;
  auto data = std::make_unique<crypt_data>();
  const std::string pw(password);
  const char* out = crypt_r(pw.c_str(), setting, data.get());
  std::optional<std::string> result;
  if (out != nullptr && out[0] == '$') result = std::string(out);
  OPENSSL_cleanse(data.get(), sizeof(crypt_data));
  return result;
}

bool verify(std::string_view password, const std::string& hashed) {
  if (password.find('\0') != std::string_view::npos) return false;
  if (hashed.size() < 7 || hashed[0] != '$' || hashed[1] != '2') return false;
  auto data = std::make_unique<crypt_data>();
  const std::string pw(password);
  const char* out = crypt_r(pw.c_str(), hashed.c_str(), data.get());
  bool ok = out != nullptr && out[0] == '$' && std::string_view(out).size() == hashed.size() &&
            CRYPTO_memcmp(out, hashed.data(), hashed.size()) == 0;
  OPENSSL_cleanse(data.get(), sizeof(crypt_data));
  return ok;
}

}  // namespace muster::server::password
