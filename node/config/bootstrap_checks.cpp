// node/config/bootstrap_checks.cpp: the sanity checks etcd runs on the
// initial cluster when a member bootstraps (etcd 3.4 etcdserver/config.go),
// and the default-host detection etcd uses for 0.0.0.0 listeners
// (pkg/netutil/routes_linux.go), read here from /proc/net/route.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include "node/config/config.h"

namespace muster::config {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + v[i];
  return out;
}

bool has_duplicate_url(const UrlsMap& m) {
  std::set<std::string> seen;
  for (const auto& [name, urls] : m) {
    for (const auto& u : urls) {
      if (!seen.insert(u).second) return true;
    }
  }
  return false;
}

// etcd advertiseMatchesCluster, minus DNS resolution: the member's URLs in
// the initial cluster must be exactly its advertised peer URLs.
std::string advertise_matches_cluster(const Config& cfg, const UrlsMap& cluster) {
  std::vector<std::string> in_cluster = cluster.at(cfg.name);
  std::vector<std::string> advertised = cfg.initial_advertise_peer_urls;
  std::sort(in_cluster.begin(), in_cluster.end());
  std::sort(advertised.begin(), advertised.end());
  if (in_cluster == advertised) return "";
  const std::string mismatch = "\"" + join(advertised) + "\" != \"" + join(in_cluster) + "\"";
  std::vector<std::string> missing;
  for (const auto& u : in_cluster) {
    if (std::find(advertised.begin(), advertised.end(), u) == advertised.end())
      missing.push_back(cfg.name + "=" + u);
  }
  if (!missing.empty()) {
    return "--initial-cluster has " + join(missing) +
           " but missing from --initial-advertise-peer-urls=" + join(advertised) + " (" + mismatch +
           ")";
  }
  for (const auto& u : advertised) {
    if (std::find(in_cluster.begin(), in_cluster.end(), u) == in_cluster.end())
      missing.push_back(u);
  }
  // Equal sets with different multiplicity cannot happen (URLs are unique),
  // so `missing` is non-empty here.
  return "--initial-advertise-peer-urls has " + join(missing) +
         " but missing from --initial-cluster=" + urls_map_string(UrlsMap{{cfg.name, advertised}});
}

}  // namespace

std::string verify_bootstrap(const Config& cfg, const UrlsMap& cluster) {
  // A name with no URLs counts as absent (etcd looks up a nil slice).
  if (auto it = cluster.find(cfg.name); it == cluster.end() || it->second.empty()) {
    return "couldn't find local name \"" + cfg.name + "\" in the initial cluster configuration";
  }
  if (cfg.initial_cluster_state == "new") {
    if (auto e = advertise_matches_cluster(cfg, cluster); !e.empty()) return e;
  }
  if (has_duplicate_url(cluster))
    return "initial cluster " + urls_map_string(cluster) + " has duplicate url";
  if (cfg.initial_cluster_state == "new") {
    if (urls_map_string(cluster).empty() && cfg.discovery.empty()) {
      return "initial cluster unset and no discovery URL found";
    }
  } else if (!cfg.discovery.empty()) {
    return "discovery URL should not be set when joining existing initial cluster";
  }
  return "";
}

std::optional<std::string> detect_default_host() {
  // /proc/net/route: "Iface Destination Gateway Flags ... Mask ..." in hex;
  // the default route has destination and mask 0.
  std::ifstream routes("/proc/net/route");
  std::string line, iface;
  std::getline(routes, line);  // header
  while (std::getline(routes, line)) {
    std::istringstream fields(line);
    std::string name, dest, gateway, flags, refcnt, use, metric, mask;
    if (!(fields >> name >> dest >> gateway >> flags >> refcnt >> use >> metric >> mask)) continue;
    if (dest == "00000000" && mask == "00000000") {
      iface = name;
      break;
    }
  }
  if (iface.empty()) return std::nullopt;
  ifaddrs* raw = nullptr;
  if (getifaddrs(&raw) != 0) return std::nullopt;
  const std::unique_ptr<ifaddrs, void (*)(ifaddrs*)> addrs(raw, freeifaddrs);
  for (const ifaddrs* a = addrs.get(); a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET || iface != a->ifa_name)
      continue;
    char buf[INET_ADDRSTRLEN];
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
    if (inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf) != nullptr) return std::string(buf);
  }
  return std::nullopt;
}

}  // namespace muster::config
