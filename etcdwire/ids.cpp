#include "etcdwire/ids.h"

#include <openssl/sha.h>

#include <algorithm>
#include <cstdio>

namespace muster::etcdwire {
namespace {

uint64_t first_8_bytes_big_endian(const std::string& data) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | digest[i];
  return v;
}

}  // namespace

uint64_t member_id(std::vector<std::string> peer_urls, std::string_view cluster_token,
                   std::optional<int64_t> added_at_unix_seconds) {
  std::sort(peer_urls.begin(), peer_urls.end());
  std::string b;
  for (const auto& u : peer_urls) b += u;
  b += cluster_token;
  if (added_at_unix_seconds) b += std::to_string(*added_at_unix_seconds);
  return first_8_bytes_big_endian(b);
}

uint64_t cluster_id(std::vector<uint64_t> member_ids) {
  std::sort(member_ids.begin(), member_ids.end());
  std::string b;
  b.reserve(8 * member_ids.size());
  for (const uint64_t id : member_ids) {
    for (int shift = 56; shift >= 0; shift -= 8) b += static_cast<char>((id >> shift) & 0xff);
  }
  return first_8_bytes_big_endian(b);
}

std::string id_to_hex(uint64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(id));
  return buf;
}

std::optional<uint64_t> parse_hex_id(std::string_view s) {
  if (s.empty()) return std::nullopt;
  // Leading zeros are fine (ParseUint accepts them); only the value must fit.
  uint64_t v = 0;
  for (const char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    if (v >> 60) return std::nullopt;  // one more digit would overflow
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  return v;
}

}  // namespace muster::etcdwire
