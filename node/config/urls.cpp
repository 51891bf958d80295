#include "node/config/urls.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <set>

namespace muster::config {
namespace {

std::string_view trim_space(std::string_view s) {
  auto is_space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
  };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Go's url.getScheme: a scheme is [A-Za-z][A-Za-z0-9+-.]* followed by ':'.
// Returns the scheme (empty when there is none) and what follows the ':'.
std::pair<std::string, std::string_view> split_scheme(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (std::isalpha(static_cast<unsigned char>(c))) continue;
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.') {
      if (i == 0) return {"", s};
      continue;
    }
    if (c == ':') {
      if (i == 0) return {"", s};
      std::string scheme(s.substr(0, i));
      std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                     [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
      return {scheme, s.substr(i + 1)};
    }
    return {"", s};
  }
  return {"", s};
}

}  // namespace

bool split_host_port(std::string_view hp, std::string* host, std::string* port) {
  if (hp.empty()) return false;
  if (hp.front() == '[') {
    const size_t close = hp.find(']');
    if (close == std::string_view::npos) return false;
    // After "]" there must be exactly ":port".
    if (close + 1 >= hp.size() || hp[close + 1] != ':') return false;
    const std::string_view p = hp.substr(close + 2);
    if (p.find(':') != std::string_view::npos || p.find('[') != std::string_view::npos ||
        p.find(']') != std::string_view::npos) {
      return false;
    }
    *host = std::string(hp.substr(1, close - 1));
    *port = std::string(p);
    return true;
  }
  const size_t colon = hp.rfind(':');
  if (colon == std::string_view::npos) return false;  // missing port
  const std::string_view h = hp.substr(0, colon);
  if (h.find(':') != std::string_view::npos) return false;  // too many colons
  if (h.find('[') != std::string_view::npos || h.find(']') != std::string_view::npos) return false;
  const std::string_view p = hp.substr(colon + 1);
  if (p.find('[') != std::string_view::npos || p.find(']') != std::string_view::npos) return false;
  *host = std::string(h);
  *port = std::string(p);
  return true;
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

Result<EtcdUrl> parse_etcd_url(std::string_view raw) {
  const std::string_view in = trim_space(raw);
  const std::string in_text(in);
  auto [scheme, rest] = split_scheme(in);
  if (scheme != "http" && scheme != "https" && scheme != "unix" && scheme != "unixs") {
    return Result<EtcdUrl>::failure("URL scheme must be http, https, unix, or unixs: " + in_text);
  }
  EtcdUrl u;
  u.scheme = scheme;
  // Only "scheme://authority..." has a host; "http:foo" is an opaque URL
  // with an empty host, which fails the host:port check below.
  std::string_view authority;
  std::string_view after;  // path, query and fragment
  if (rest.substr(0, 2) == "//") {
    rest.remove_prefix(2);
    const size_t end = rest.find_first_of("/?#");
    authority = rest.substr(0, end == std::string_view::npos ? rest.size() : end);
    after = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
  } else {
    after = rest;
  }
  std::string_view hostport = authority;
  if (const size_t at = hostport.rfind('@'); at != std::string_view::npos) {
    hostport.remove_prefix(at + 1);
  }
  if (!split_host_port(hostport, &u.host, &u.port)) {
    return Result<EtcdUrl>::failure("URL address does not have the form \"host:port\": " + in_text);
  }
  // The path is what precedes '?' or '#'; for an opaque URL the whole rest
  // counts (Go puts it in Opaque, and etcd's Host check has already failed).
  const size_t path_end = after.find_first_of("?#");
  const std::string_view path =
      after.substr(0, path_end == std::string_view::npos ? after.size() : path_end);
  if (!path.empty()) {
    return Result<EtcdUrl>::failure("URL must not contain a path: " + in_text);
  }
  u.text = u.scheme + "://" + std::string(authority) + std::string(after);
  return u;
}

Result<std::vector<std::string>> parse_url_list(std::string_view s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = s.find(',', start);
    const std::string_view item =
        s.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    auto u = parse_etcd_url(item);
    if (!u) return Result<std::vector<std::string>>::failure(u.error());
    out.push_back(u->text);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string urls_map_string(const UrlsMap& m) {
  std::vector<std::string> pairs;
  for (const auto& [name, urls] : m) {
    for (const auto& u : urls) pairs.push_back(name + "=" + u);
  }
  std::sort(pairs.begin(), pairs.end());
  std::string out;
  for (const auto& p : pairs) {
    if (!out.empty()) out += ',';
    out += p;
  }
  return out;
}

Result<UrlsMap> parse_initial_cluster(std::string_view s) {
  // Same splitting as etcd's types.parse: items separated by ',', empty items
  // skipped, the first '=' separates the name from the URL.
  std::map<std::string, std::vector<std::string>> raw;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const std::string_view item =
        s.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (!item.empty()) {
      const size_t eq = item.find('=');
      const std::string name(item.substr(0, eq));
      const std::string value =
          eq == std::string_view::npos ? "" : std::string(item.substr(eq + 1));
      raw[name].push_back(value);
    }
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  UrlsMap out;
  for (auto& [name, values] : raw) {
    std::vector<std::string> urls;
    for (const auto& v : values) {
      auto u = parse_etcd_url(v);
      if (!u) return Result<UrlsMap>::failure(u.error());
      urls.push_back(u->text);
    }
    std::sort(urls.begin(), urls.end());
    out.emplace(name, std::move(urls));
  }
  // etcd rejects a URL that appears twice anywhere in the initial cluster
  // (etcdserver/config.go checkDuplicateURL, run by VerifyBootstrap).
  std::set<std::string> seen;
  for (const auto& [name, urls] : out) {
    for (const auto& u : urls) {
      if (!seen.insert(u).second) {
        return Result<UrlsMap>::failure("initial cluster " + urls_map_string(out) +
                                        " has duplicate url");
      }
    }
  }
  return out;
}

}  // namespace muster::config
