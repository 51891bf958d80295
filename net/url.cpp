#include "net/url.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace muster::net {

std::string Url::authority() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

std::string Url::origin() const {
  return scheme + "://" + (userinfo.empty() ? "" : userinfo + "@") + authority();
}

std::string Url::target() const {
  std::string t = path.empty() ? "/" : path;
  if (!query.empty()) t += "?" + query;
  return t;
}

std::string Url::str() const {
  std::string s = origin() + path;
  if (!query.empty()) s += "?" + query;
  return s;
}

static bool fail(std::string* error, std::string msg) {
  if (error) *error = std::move(msg);
  return false;
}

std::optional<Url> parse_url(std::string_view s, std::string* error) {
  Url u;
  auto sep = s.find("://");
  if (sep == std::string_view::npos) {
    fail(error, "URL \"" + std::string(s) + "\" has no scheme (expected http:// or https://)");
    return std::nullopt;
  }
  u.scheme = std::string(s.substr(0, sep));
  std::transform(u.scheme.begin(), u.scheme.end(), u.scheme.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (u.scheme != "http" && u.scheme != "https") {
    fail(error,
         "URL \"" + std::string(s) + "\" has scheme \"" + u.scheme + "\" (expected http or https)");
    return std::nullopt;
  }
  std::string_view rest = s.substr(sep + 3);
  auto end_auth = rest.find_first_of("/?#");
  std::string_view auth = rest.substr(0, end_auth);
  std::string_view tail = end_auth == std::string_view::npos ? "" : rest.substr(end_auth);
  if (auto hash = tail.find('#'); hash != std::string_view::npos) tail = tail.substr(0, hash);
  if (auto at = auth.rfind('@'); at != std::string_view::npos) {
    u.userinfo = std::string(auth.substr(0, at));
    auth = auth.substr(at + 1);
  }
  std::string_view port_text;
  if (!auth.empty() && auth.front() == '[') {
    auto close = auth.find(']');
    if (close == std::string_view::npos) {
      fail(error, "URL \"" + std::string(s) + "\" has an unterminated IPv6 literal");
      return std::nullopt;
    }
    u.host = std::string(auth.substr(1, close - 1));
    std::string_view after = auth.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        fail(error, "URL \"" + std::string(s) + "\" has junk after the IPv6 literal");
        return std::nullopt;
      }
      port_text = after.substr(1);
    }
  } else {
    auto colon = auth.rfind(':');
    u.host = std::string(auth.substr(0, colon));
    if (colon != std::string_view::npos) port_text = auth.substr(colon + 1);
  }
  if (u.host.empty()) {
    fail(error, "URL \"" + std::string(s) + "\" has no host");
    return std::nullopt;
  }
  if (!port_text.empty()) {
    unsigned p = 0;
    auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), p);
    if (ec != std::errc() || ptr != port_text.data() + port_text.size() || p > 65535) {
      fail(error,
           "URL \"" + std::string(s) + "\" has an invalid port \"" + std::string(port_text) + "\"");
      return std::nullopt;
    }
    u.port = static_cast<uint16_t>(p);
    u.explicit_port = true;
  } else {
    u.port = u.tls() ? 443 : 80;
  }
  auto q = tail.find('?');
  u.path = std::string(tail.substr(0, q));
  if (q != std::string_view::npos) u.query = std::string(tail.substr(q + 1));
  return u;
}

}  // namespace muster::net
