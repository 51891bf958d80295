// etcdwire/durations.cpp: see durations.h.
#include "etcdwire/durations.h"

#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>

namespace muster::etcdwire {

std::optional<std::chrono::nanoseconds> parse_go_duration(std::string_view s, std::string* error) {
  const std::string orig(s);
  auto fail = [&](std::string why) -> std::optional<std::chrono::nanoseconds> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  auto bad = [&] { return fail("time: invalid duration \"" + orig + "\""); };
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return std::chrono::nanoseconds(0);
  if (s.empty()) return bad();
  long double total = 0;
  while (!s.empty()) {
    size_t i = 0;
    long double whole = 0, frac = 0, scale = 1;
    bool digits = false;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      whole = whole * 10 + (s[i] - '0');
      ++i;
      digits = true;
    }
    if (i < s.size() && s[i] == '.') {
      ++i;
      while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
        scale /= 10;
        frac += (s[i] - '0') * scale;
        ++i;
        digits = true;
      }
    }
    if (!digits) return bad();
    size_t j = i;
    while (j < s.size() && s[j] != '.' && !std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
    const std::string_view unit = s.substr(i, j - i);
    long double mult;
    if (unit == "ns") {
      mult = 1;
    } else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") {
      mult = 1e3;
    } else if (unit == "ms") {
      mult = 1e6;
    } else if (unit == "s") {
      mult = 1e9;
    } else if (unit == "m") {
      mult = 60e9;
    } else if (unit == "h") {
      mult = 3600e9;
    } else {
      return fail(unit.empty() ? "time: missing unit in duration \"" + orig + "\""
                               : "time: unknown unit \"" + std::string(unit) + "\" in duration \"" +
                                     orig + "\"");
    }
    total += (whole + frac) * mult;
    if (total > static_cast<long double>(std::numeric_limits<int64_t>::max())) return bad();
    s.remove_prefix(j);
  }
  const auto ns = static_cast<int64_t>(std::llround(total));
  return std::chrono::nanoseconds(neg ? -ns : ns);
}

std::string format_go_duration(std::chrono::nanoseconds d) {
  int64_t ns = d.count();
  if (ns == 0) return "0s";
  std::string sign = ns < 0 ? "-" : "";
  uint64_t u = ns < 0 ? static_cast<uint64_t>(-(ns + 1)) + 1 : static_cast<uint64_t>(ns);
  auto frac_text = [](uint64_t v, uint64_t unit) {
    // v / unit with trailing-zero-trimmed fraction.
    std::string out = std::to_string(v / unit);
    uint64_t rem = v % unit;
    if (rem != 0) {
      std::string f;
      for (uint64_t p = unit / 10; p > 0; p /= 10) {
        f += static_cast<char>('0' + (rem / p) % 10);
      }
      while (!f.empty() && f.back() == '0') f.pop_back();
      out += "." + f;
    }
    return out;
  };
  if (u < 1000) return sign + std::to_string(u) + "ns";
  if (u < 1000000) return sign + frac_text(u, 1000) + "\xC2\xB5s";
  if (u < 1000000000) return sign + frac_text(u, 1000000) + "ms";
  const uint64_t sec_unit = 1000000000;
  std::string out;
  const uint64_t hours = u / (3600 * sec_unit);
  u -= hours * 3600 * sec_unit;
  const uint64_t mins = u / (60 * sec_unit);
  u -= mins * 60 * sec_unit;
  if (hours > 0) out += std::to_string(hours) + "h";
  if (hours > 0 || mins > 0) out += std::to_string(mins) + "m";
  out += frac_text(u, sec_unit) + "s";
  return sign + out;
}

}  // namespace muster::etcdwire
