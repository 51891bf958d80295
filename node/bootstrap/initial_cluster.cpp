#include "node/bootstrap/initial_cluster.h"

#include <algorithm>

#include "base/log.h"
#include "dns/srv_lookup.h"
#include "node/bootstrap/discovery.h"
#include "node/bootstrap/discovery_v3.h"

namespace muster::bootstrap {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + v[i];
  return out;
}

InitialCluster from_discovery(const config::Config& cfg) {
  DiscoveryResult r;
  if (cfg.discovery_v3.enabled()) {
    r = join_cluster_v3(discovery_v3_options(cfg));
  } else {
    DiscoveryOptions o;
    o.url = cfg.discovery;
    o.proxy = cfg.discovery_proxy;
    o.name = cfg.name;
    o.peer_urls = cfg.initial_advertise_peer_urls;
    o.registration_marker = cfg.data_dir + "/discovery-registration";
    r = join_cluster(o);
  }
  InitialCluster out;
  out.message = r.message;
  out.peer_urls = r.peer_urls;
  out.size = r.size;
  switch (r.kind) {
    case DiscoveryResult::Kind::kCluster:
      out.kind = InitialCluster::Kind::kCluster;
      out.initial_cluster = r.initial_cluster;
      // etcd: the discovery URL (v2) or the --discovery-token (v3) is the
      // cluster token.
      out.token = cfg.discovery_v3.enabled() ? cfg.discovery_v3.token : cfg.discovery;
      break;
    case DiscoveryResult::Kind::kFull:
      out.kind = InitialCluster::Kind::kFull;
      break;
    case DiscoveryResult::Kind::kError:
      out.kind = InitialCluster::Kind::kError;
      break;
  }
  return out;
}

InitialCluster from_srv(const config::Config& cfg) {
  dns::SrvClusterRequest req;
  req.domain = cfg.discovery_srv;
  req.srv_name = cfg.discovery_srv_name;
  req.member_name = cfg.name;
  req.advertise_peer_urls = join(cfg.initial_advertise_peer_urls);
  req.resolver.server = cfg.dns_server;
  auto r = dns::resolve_server_cluster(req);
  InitialCluster out;
  if (!r) {
    out.message = "error setting up initial cluster: " + r.error().message;
    return out;
  }
  for (const auto& w : r->warnings)
    log::warn("discovery-srv", "failed to resolve during SRV discovery", {{"error", w}});
  for (const auto& e : r->entries)
    log::info("discovery-srv", "got bootstrap from DNS for etcd-server",
              {{"node", e.name + "=" + e.url}});
  out.kind = InitialCluster::Kind::kCluster;
  out.initial_cluster = r->initial_cluster;
  out.token = cfg.initial_cluster_token;  // SRV keeps --initial-cluster-token, as etcd
  out.peer_tls_server_name = r->peer_tls_server_name(!cfg.peer_tls.trusted_ca_file.empty());
  return out;
}

}  // namespace

InitialCluster resolve_initial_cluster(const config::Config& cfg) {
  if (!cfg.discovery.empty() || cfg.discovery_v3.enabled()) return from_discovery(cfg);
  if (!cfg.discovery_srv.empty()) return from_srv(cfg);
  InitialCluster out;
  out.kind = InitialCluster::Kind::kCluster;
  out.initial_cluster = cfg.initial_cluster;
  out.token = cfg.initial_cluster_token;
  return out;
}

std::vector<std::string> other_peer_urls(const config::UrlsMap& cluster, const std::string& name) {
  std::vector<std::string> urls;
  for (const auto& [n, u] : cluster)
    if (n != name) urls.insert(urls.end(), u.begin(), u.end());
  std::sort(urls.begin(), urls.end());
  return urls;
}

std::vector<std::string> proxy_peer_urls(const config::Config& cfg, std::string* error) {
  std::vector<std::string> urls;
  if (cfg.discovery_v3.enabled()) {
    urls = v3_token_peer_urls(cfg, nullptr, error, cfg.discovery_v3.max_retries);
  } else if (cfg.discovery.empty()) {
    auto cluster = config::parse_initial_cluster(cfg.initial_cluster);
    if (!cluster.ok()) {
      *error = cluster.error();
      return {};
    }
    for (const auto& [name, u] : cluster.value()) urls.insert(urls.end(), u.begin(), u.end());
  } else {
    std::string perr;
    if (!parse_discovery_url(cfg.discovery, &perr)) {
      *error = perr;
      return {};
    }
    DiscoveryOptions o;
    o.url = cfg.discovery;
    o.proxy = cfg.discovery_proxy;
    DiscoveryClient client(o);
    TokenState st;
    if (auto f = client.state(&st)) {
      *error = f->message;
      return {};
    }
    for (size_t i = 0; i < st.members.size() && i < st.size; ++i) {
      std::vector<std::pair<std::string, std::string>> pairs;
      if (!parse_registration(st.members[i].value, &pairs)) continue;
      for (const auto& [name, u] : pairs) urls.push_back(u);
    }
  }
  std::sort(urls.begin(), urls.end());
  urls.erase(std::unique(urls.begin(), urls.end()), urls.end());
  if (urls.empty() && error->empty())
    *error = cfg.discovery.empty() ? std::string("--initial-cluster names no peer URLs")
                                   : "no member has registered with " + cfg.discovery + " yet";
  return urls;
}

}  // namespace muster::bootstrap
