// etcdwire/v3_json.h: the pieces of etcd's v3 JSON gateway encoding that a
// client of it needs by hand: bytes fields as standard base64, 64-bit
// integers as strings, and prefix ranges (etcdctl's --prefix, clientv3's
// GetPrefixRangeEnd).
//
// Who uses it: musterctl (requests and output), muster-discovery's etcd
// store (it talks to etcd's gateway), node/storage (prefix ranges).  The
// member's own gateway maps JSON with protobuf's JSON support instead.
// Pure functions; any thread.
#pragma once

#include <charconv>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace muster::etcdwire {

// Standard base64 (RFC 4648, padded), as the gateway encodes keys and values.
std::string base64_encode(std::string_view data);
// The inverse: padded standard base64 only; nullopt on a length that is not
// a multiple of 4, a character outside the alphabet or misplaced padding.
std::optional<std::string> base64_decode(std::string_view text);

// The end of the range of every key that starts with `prefix`: the prefix
// with its last byte that is not 0xff incremented and what follows dropped;
// "\0" (every key) when nothing is left (an empty prefix, or only 0xff).
std::string prefix_end(std::string_view prefix);

// A 64-bit integer field of a gateway object: the gateway writes int64 and
// uint64 as JSON strings ("123"), other encoders as numbers; 0 when absent
// or not a number.  A negative value reads as its two's complement.
template <class Json>
uint64_t json_u64(const Json& object, std::string_view name) {
  if (!object.is_object()) return 0;
  auto it = object.find(name);
  if (it == object.end()) return 0;
  if (it->is_number_unsigned()) return it->template get<uint64_t>();
  if (it->is_number_integer()) return static_cast<uint64_t>(it->template get<int64_t>());
  if (!it->is_string()) return 0;
  const std::string& s = it->template get_ref<const std::string&>();
  if (!s.empty() && s[0] == '-') {
    int64_t n = 0;
    std::from_chars(s.data(), s.data() + s.size(), n);
    return static_cast<uint64_t>(n);
  }
  uint64_t n = 0;
  std::from_chars(s.data(), s.data() + s.size(), n);
  return n;
}

// A bytes field of a gateway object, base64-decoded; nullopt when absent
// (the gateway omits empty values) or malformed.
template <class Json>
std::optional<std::string> json_bytes(const Json& object, std::string_view name) {
  if (!object.is_object()) return std::nullopt;
  auto it = object.find(name);
  if (it == object.end() || !it->is_string()) return std::nullopt;
  return base64_decode(it->template get_ref<const std::string&>());
}

}  // namespace muster::etcdwire
