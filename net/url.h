// net/url.h: the URLs Muster accepts on its command lines and in discovery
// answers: scheme://[userinfo@]host[:port][/path][?query].
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace muster::net {

struct Url {
  std::string scheme;    // "http" or "https" (lower case)
  std::string userinfo;  // without the '@'
  std::string host;      // without brackets for IPv6 literals
  uint16_t port = 0;     // explicit or the scheme's default
  bool explicit_port = false;
  std::string path;   // as written (percent-encoded), may be empty
  std::string query;  // without '?'

  bool tls() const { return scheme == "https"; }
  // host:port with brackets around IPv6 literals.
  std::string authority() const;
  // scheme://authority (no path).
  std::string origin() const;
  // path?query, "/" when both are empty.
  std::string target() const;
  std::string str() const;  // the whole URL back
};

// Parses an absolute http(s) URL.  On failure returns nullopt and, if `error`
// is given, a sentence saying what is wrong.
std::optional<Url> parse_url(std::string_view s, std::string* error = nullptr);

}  // namespace muster::net
