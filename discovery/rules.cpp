#include "discovery/rules.h"

#include <algorithm>
#include <charconv>
#include <chrono>

#include "etcdwire/durations.h"

namespace muster::discovery {

std::variant<uint32_t, std::string> parse_size(std::string_view text, uint32_t max_size) {
  std::string range = "between 1 and " + std::to_string(max_size);
  if (text.empty()) return "size is empty; it must be an integer " + range;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc::result_out_of_range)
    return "size \"" + std::string(text) + "\" is out of range; it must be " + range;
  if (ec != std::errc() || ptr != text.data() + text.size())
    return "size \"" + std::string(text) + "\" is not an integer; it must be an integer " + range;
  if (v < 1 || v > static_cast<int64_t>(max_size))
    return "size " + std::to_string(v) + " is out of range; it must be " + range;
  return static_cast<uint32_t>(v);
}

bool valid_token_name(std::string_view s) {
  if (s.size() < 16 || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_'; });
}

bool valid_member_id(std::string_view s) {
  if (s.empty() || s.size() > 16) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool TokenPath::v2_keys_path() const {
  constexpr std::string_view kKeys = "/v2/keys";
  return prefix.compare(0, kKeys.size(), kKeys) == 0 &&
         (prefix.size() == kKeys.size() || prefix[kKeys.size()] == '/');
}

std::string TokenPath::key_prefix() const {
  return v2_keys_path() ? prefix.substr(std::string_view("/v2/keys").size()) : prefix;
}

std::string TokenPath::key() const {
  switch (kind) {
    case Kind::kDirectory:
      return directory_key();
    case Kind::kMember:
      return directory_key() + "/" + member_id;
    case Kind::kSize:
      return directory_key() + "/_config/size";
  }
  return directory_key();
}

std::variant<TokenPath, std::string> split_token_path(std::string_view path) {
  std::vector<std::string> segs;
  std::size_t i = 0;
  while (i <= path.size()) {
    auto j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view seg = path.substr(i, j - i);
    if (seg == "." || seg == "..")
      return std::string("path segments \".\" and \"..\" are not allowed");
    if (!seg.empty()) segs.emplace_back(seg);
    i = j + 1;
  }
  auto join = [&](std::size_t n) {
    std::string p;
    for (std::size_t k = 0; k < n; ++k) p += "/" + segs[k];
    return p;
  };
  TokenPath tp;
  std::size_t n = segs.size();
  if (n >= 3 && segs[n - 1] == "size" && segs[n - 2] == "_config") {
    tp.kind = TokenPath::Kind::kSize;
    tp.token = segs[n - 3];
    tp.prefix = join(n - 3);
  } else if (n >= 2 && valid_member_id(segs[n - 1]) && valid_token_name(segs[n - 2])) {
    tp.kind = TokenPath::Kind::kMember;
    tp.member_id = segs[n - 1];
    tp.token = segs[n - 2];
    tp.prefix = join(n - 2);
  } else if (n >= 1) {
    tp.kind = TokenPath::Kind::kDirectory;
    tp.token = segs[n - 1];
    tp.prefix = join(n - 1);
  } else {
    return std::string("no token in path");
  }
  if (!valid_token_name(tp.token))
    return "\"" + tp.token + "\" is not a token: tokens are 16 to 64 characters of [0-9A-Za-z_-]";
  return tp;
}

std::vector<Member> cluster_members(const Token& t) {
  std::vector<Member> m = t.members;
  std::sort(m.begin(), m.end(),
            [](const Member& a, const Member& b) { return a.created_index < b.created_index; });
  if (m.size() > t.size) m.resize(t.size);
  return m;
}

bool is_full_for(const Token& t, std::string_view self_id) {
  if (t.members.size() < t.size) return false;
  for (const auto& m : cluster_members(t))
    if (m.id == self_id) return false;
  return true;
}

bool is_complete(const Token& t) { return t.members.size() >= t.size; }

std::optional<int64_t> parse_duration_ms(std::string_view s) {
  const auto d = etcdwire::parse_go_duration(s);
  if (!d || d->count() < 0) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::milliseconds>(*d).count();
}

}  // namespace muster::discovery
