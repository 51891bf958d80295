#include "dns/srv.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <memory>
#include <random>
#include <set>

namespace muster::dns {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

Error invalid(std::string message) {
  return Error{ErrorKind::kInvalidArgument, std::move(message)};
}

// The kind of an overall failure: if every service failed and one of them
// for a transient reason, DNS did not say "no records" -- we could not find
// out, and a caller may retry.  "Unreachable" wins over "timeout": c-ares
// 1.18 can report one of two queries to a closed port as a timeout (the
// ICMP error is consumed by the other query's send()).
template <class Lookup>
ErrorKind failure_kind(const std::vector<Lookup>& lookups) {
  for (const Lookup& l : lookups)
    if (!l.error) return ErrorKind::kNoRecords;
  for (const ErrorKind k : {ErrorKind::kUnreachable, ErrorKind::kTimeout, ErrorKind::kBadResponse})
    for (const Lookup& l : lookups)
      if (l.error->kind == k) return k;
  return ErrorKind::kNoRecords;
}

// At most this many target descriptions go into a "member not found" message;
// with 50 records the full list would drown the point.
constexpr std::size_t kMaxTargetsInMessage = 8;

}  // namespace

std::vector<SrvService> srv_services(SrvRole role, std::string_view domain,
                                     std::string_view srv_name) {
  const std::string base = role == SrvRole::kServer ? "etcd-server" : "etcd-client";
  const std::string suffix = srv_name.empty() ? "" : "-" + std::string(srv_name);
  std::vector<SrvService> out;
  for (const bool ssl : {true, false}) {
    SrvService s;
    s.scheme = ssl ? "https" : "http";
    s.service = base + (ssl ? "-ssl" : "") + suffix;
    s.query_name = "_" + s.service + "._tcp." + std::string(domain);
    out.push_back(std::move(s));
  }
  return out;
}

std::string trim_trailing_dot(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  return std::string(name);
}

bool is_ip_literal(std::string_view host) {
  std::string h = trim_trailing_dot(host);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.empty()) return false;
  boost::system::error_code ec;
  (void)boost::asio::ip::make_address(h, ec);
  return !ec;
}

std::string join_host_port(std::string_view host, std::uint16_t port) {
  const bool needs_brackets =
      host.find(':') != std::string_view::npos && !(host.size() >= 1 && host.front() == '[');
  std::string out = needs_brackets ? "[" + std::string(host) + "]" : std::string(host);
  return out + ":" + std::to_string(port);
}

std::string address_key(const boost::asio::ip::address& address, std::uint16_t port) {
  return join_host_port(address.to_string(), port);
}

std::optional<boost::asio::ip::address> preferred_address(
    const std::vector<boost::asio::ip::address>& addresses) {
  for (const auto& a : addresses)
    if (a.is_v4()) return a;
  if (addresses.empty()) return std::nullopt;
  return addresses.front();
}

Result<PeerUrl> parse_peer_url(std::string_view url) {
  const std::string quoted = "\"" + std::string(url) + "\"";
  const auto sep = url.find("://");
  if (sep == std::string_view::npos)
    return invalid("peer URL " + quoted + " has no scheme (want http://host:port)");
  PeerUrl out;
  out.text = std::string(url);
  out.scheme = lower(url.substr(0, sep));
  if (out.scheme != "http" && out.scheme != "https")
    return invalid("peer URL " + quoted + " has scheme \"" + out.scheme +
                   "\" (want http or https)");
  std::string_view rest = url.substr(sep + 3);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find_first_of("/?#@") != std::string_view::npos)
    return invalid("peer URL " + quoted + " must be scheme://host:port with no path or user");
  std::string_view host, port;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':')
      return invalid("peer URL " + quoted + " does not have the form \"[ipv6]:port\"");
    host = rest.substr(1, close - 1);
    port = rest.substr(close + 2);
  } else {
    const auto colon = rest.rfind(':');
    if (colon == std::string_view::npos)
      return invalid("peer URL " + quoted + " does not have the form \"host:port\"");
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return invalid("peer URL " + quoted + ": IPv6 addresses must be bracketed");
  }
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (host.empty() || port.empty() || ec != std::errc() || end != port.data() + port.size() ||
      value > 65535)
    return invalid("peer URL " + quoted + " does not have the form \"host:port\"");
  out.host = std::string(host);
  out.port = static_cast<std::uint16_t>(value);
  return out;
}

Result<std::vector<PeerUrl>> parse_peer_urls(std::string_view comma_list) {
  std::vector<PeerUrl> out;
  std::size_t start = 0;
  while (start <= comma_list.size()) {
    auto end = comma_list.find(',', start);
    if (end == std::string_view::npos) end = comma_list.size();
    auto r = parse_peer_url(comma_list.substr(start, end - start));
    if (!r) return r.error();
    out.push_back(std::move(r).value());
    start = end + 1;
  }
  return out;
}

bool SrvCluster::has_https() const {
  return std::any_of(entries.begin(), entries.end(),
                     [](const ClusterEntry& e) { return e.url.rfind("https://", 0) == 0; });
}

std::optional<std::string> SrvCluster::peer_tls_server_name(bool trusted_ca_configured) const {
  if (trusted_ca_configured || !has_https()) return std::nullopt;
  return domain;
}

Result<SrvCluster> build_server_cluster(std::string_view domain, const LocalMember& local,
                                        const std::vector<ServerLookup>& lookups) {
  SrvCluster cluster;
  cluster.domain = trim_trailing_dot(domain);
  std::vector<std::string> problems;  // per service / per record
  std::vector<std::string> resolved;  // "target:port -> ip:port", for the not-found message
  std::set<std::string> seen_urls;
  // One counter across both services: etcd restarts it per service, which
  // names an unknown https peer and an unknown http peer both "0" and merges
  // them into one member.  A placeholder never equals the local name.
  unsigned next_placeholder = 0;
  auto placeholder = [&] {
    std::string n = std::to_string(next_placeholder++);
    if (n == local.name) n = std::to_string(next_placeholder++);
    return n;
  };

  for (const ServerLookup& lookup : lookups) {
    if (lookup.error) {
      problems.push_back(lookup.error->message);
      continue;
    }
    if (lookup.targets.empty()) {
      problems.push_back("no SRV records for " + lookup.service.query_name);
      continue;
    }
    // Deterministic order, so every member (and musterctl srv) derives the
    // same string.  Weight has no meaning for a peer list; it only breaks ties.
    std::vector<const ResolvedTarget*> order;
    for (const auto& t : lookup.targets) order.push_back(&t);
    std::stable_sort(order.begin(), order.end(),
                     [](const ResolvedTarget* a, const ResolvedTarget* b) {
                       const auto& x = a->record;
                       const auto& y = b->record;
                       if (x.priority != y.priority) return x.priority < y.priority;
                       if (x.weight != y.weight) return x.weight > y.weight;
                       const std::string tx = lower(trim_trailing_dot(x.target));
                       const std::string ty = lower(trim_trailing_dot(y.target));
                       if (tx != ty) return tx < ty;
                       return x.port < y.port;
                     });

    for (const ResolvedTarget* t : order) {
      // "SRV records have a trailing dot but URL shouldn't" (etcd).
      const std::string host = trim_trailing_dot(t->record.target);
      const std::string where = join_host_port(host, t->record.port);
      if (is_ip_literal(host)) {
        // RFC 2782: the target is a domain name with A/AAAA records. etcd
        // resolves "10.0.0.1." as a name, which fails; say why instead.
        problems.push_back("SRV target " + where + " of " + lookup.service.query_name +
                           " is an IP address; SRV targets must be host names (RFC 2782)");
        continue;
      }
      if (!t->key) {
        problems.push_back("SRV target " + where + " of " + lookup.service.query_name +
                           " does not resolve: " + t->error);
        continue;
      }
      resolved.push_back(where + " -> " + *t->key);
      const auto mine = local.keys.find(*t->key);
      const std::string url = lookup.service.scheme + "://" + where;
      if (mine != local.keys.end() && mine->second.scheme != lookup.service.scheme) {
        problems.push_back("bootstrap at " + url + " from DNS for " + lookup.service.service +
                           " has scheme mismatch with expected peer " + mine->second.text);
        continue;
      }
      if (!seen_urls.insert(lower(url)).second) {
        problems.push_back("duplicate SRV record " + where + " in " + lookup.service.query_name +
                           " ignored");
        continue;
      }
      const bool is_local = mine != local.keys.end();
      cluster.entries.push_back(ClusterEntry{is_local ? local.name : placeholder(), url, is_local});
    }
  }

  if (cluster.entries.empty())
    return Error{failure_kind(lookups),
                 "no usable DNS SRV records for " + cluster.domain + ": " + join(problems, "; ")};

  if (std::none_of(cluster.entries.begin(), cluster.entries.end(),
                   [](const ClusterEntry& e) { return e.local; })) {
    std::vector<std::string> mine;
    for (const auto& [key, url] : local.keys) mine.push_back(url.text + " -> " + key);
    if (resolved.size() > kMaxTargetsInMessage) {
      const auto more = resolved.size() - kMaxTargetsInMessage;
      resolved.resize(kMaxTargetsInMessage);
      resolved.push_back("... " + std::to_string(more) + " more");
    }
    std::string message =
        "cannot find local etcd member \"" + local.name + "\" in SRV records: no SRV target of " +
        cluster.domain +
        " resolves to an advertise peer URL (advertise peer URLs: " + join(mine, ", ") +
        "; SRV targets: " + join(resolved, ", ") + ")";
    if (!problems.empty()) message += "; also: " + join(problems, "; ");
    return Error{ErrorKind::kMemberNotFound, std::move(message)};
  }

  std::vector<std::string> pairs;
  for (const auto& e : cluster.entries) pairs.push_back(e.name + "=" + e.url);
  cluster.initial_cluster = join(pairs, ",");
  cluster.warnings = std::move(problems);
  return cluster;
}

UniformRandom make_system_random() {
  auto engine = std::make_shared<std::mt19937>(std::random_device{}());
  return [engine](std::uint32_t max_inclusive) {
    return std::uniform_int_distribution<std::uint32_t>(0, max_inclusive)(*engine);
  };
}

std::vector<SrvRecord> order_by_priority_and_weight(std::vector<SrvRecord> records,
                                                    const UniformRandom& random) {
  std::stable_sort(records.begin(), records.end(),
                   [](const SrvRecord& a, const SrvRecord& b) { return a.priority < b.priority; });
  std::vector<SrvRecord> out;
  out.reserve(records.size());
  auto group_begin = records.begin();
  while (group_begin != records.end()) {
    auto group_end = std::find_if(group_begin, records.end(), [&](const SrvRecord& r) {
      return r.priority != group_begin->priority;
    });
    // RFC 2782: zero-weight records at the beginning of the pool, the rest in
    // any order; then pick by running sum >= a uniform number in [0, sum].
    std::vector<SrvRecord> pool;
    std::copy_if(group_begin, group_end, std::back_inserter(pool),
                 [](const SrvRecord& r) { return r.weight == 0; });
    std::copy_if(group_begin, group_end, std::back_inserter(pool),
                 [](const SrvRecord& r) { return r.weight != 0; });
    while (!pool.empty()) {
      std::uint32_t sum = 0;
      for (const auto& r : pool) sum += r.weight;
      const std::uint32_t pick = random(sum);
      std::uint32_t running = 0;
      auto chosen = pool.begin();
      for (auto it = pool.begin(); it != pool.end(); ++it) {
        running += it->weight;
        if (running >= pick) {
          chosen = it;
          break;
        }
      }
      out.push_back(std::move(*chosen));
      pool.erase(chosen);
    }
    group_begin = group_end;
  }
  return out;
}

std::string client_endpoint_url(std::string_view scheme, const SrvRecord& record) {
  const std::string host = trim_trailing_dot(record.target);
  // Names stay absolute (trailing dot), as etcd >= 3.5.4 keeps them: without
  // the dot a resolver may append search domains (etcd issue #13948).
  // Address literals cannot take a dot.
  const std::string shown = is_ip_literal(host) ? host : host + ".";
  return std::string(scheme) + "://" + join_host_port(shown, record.port);
}

Result<ClientEndpoints> build_client_endpoints(std::string_view domain,
                                               const std::vector<ClientLookup>& lookups,
                                               const UniformRandom& random) {
  ClientEndpoints result;
  result.domain = trim_trailing_dot(domain);
  std::vector<std::string> problems;
  std::set<std::string> seen;
  for (const ClientLookup& lookup : lookups) {
    if (lookup.error) {
      problems.push_back(lookup.error->message);
      continue;
    }
    if (lookup.records.empty()) {
      problems.push_back("no SRV records for " + lookup.service.query_name);
      continue;
    }
    for (const SrvRecord& r : order_by_priority_and_weight(lookup.records, random)) {
      std::string url = client_endpoint_url(lookup.service.scheme, r);
      if (!seen.insert(lower(url)).second) continue;
      result.endpoints.push_back(std::move(url));
    }
  }
  if (result.endpoints.empty())
    return Error{failure_kind(lookups),
                 "no DNS SRV client endpoints for " + result.domain + ": " + join(problems, "; ")};
  result.warnings = std::move(problems);
  return result;
}

}  // namespace muster::dns
