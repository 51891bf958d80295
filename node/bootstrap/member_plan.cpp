// node/bootstrap/member_plan.cpp: see member_plan.h.
#include "node/bootstrap/member_plan.h"

#include <algorithm>
#include <stdexcept>

#include "base/log.h"
#include "etcdwire/ids.h"
#include "net/client.h"
#include "node/bootstrap/initial_cluster.h"
#include "node/config/urls.h"

namespace muster::bootstrap {

namespace {

[[noreturn]] void fail(const std::string& sentence) { throw std::runtime_error(sentence); }

// --initial-cluster-state existing (see member_plan.h).
MemberPlan join_existing(const config::Config& cfg, const config::UrlsMap& cluster,
                         const net::TlsOptions& peer_tls) {
  std::vector<std::string> mine = cfg.initial_advertise_peer_urls;
  std::sort(mine.begin(), mine.end());
  std::vector<std::string> others;
  for (const auto& [name, urls] : cluster)
    if (name != cfg.name) others.insert(others.end(), urls.begin(), urls.end());
  if (others.empty())
    fail("--initial-cluster-state=existing: --initial-cluster lists no other member to join");
  net::ClientOptions co;
  co.tls = peer_tls;
  co.connect_timeout = co.timeout = std::chrono::seconds(2);
  net::HttpClient client(co);
  std::string err;
  auto fetched = fetch_cluster(others, client, &err);
  if (!fetched || fetched->cluster_id == 0)
    fail("cannot fetch cluster info from peer urls: " +
         (fetched ? std::string("no X-Etcd-Cluster-ID in the answer") : err));
  MemberPlan p;
  p.kind = MemberPlan::Kind::kJoin;
  p.me.name = cfg.name;
  p.me.cluster_id = fetched->cluster_id;
  p.members = fetched->members;
  for (const auto& m : p.members) {
    std::vector<std::string> theirs = m.peer_urls;
    std::sort(theirs.begin(), theirs.end());
    if (theirs == mine) p.me.member_id = m.id;
  }
  if (p.me.member_id == 0) {
    std::string list;
    for (const auto& u : mine) list += (list.empty() ? "" : ",") + u;
    fail("this member's peer URLs (" + list +
         ") are not in the cluster's member list; add it first: musterctl member add " + cfg.name +
         " --peer-urls=" + list);
  }
  log::info("etcdmain", "joining an existing cluster",
            {{"cluster-id", etcdwire::id_to_hex(p.me.cluster_id)},
             {"member-id", etcdwire::id_to_hex(p.me.member_id)},
             {"members", p.members.size()}});
  return p;
}

}  // namespace

MemberPlan new_cluster_plan(const config::Config& cfg, const config::UrlsMap& cluster) {
  MemberPlan p;
  p.kind = MemberPlan::Kind::kNew;
  std::vector<uint64_t> ids;
  for (const auto& [name, urls] : cluster) {
    InitialMember m;
    m.name = name;
    m.peer_urls = urls;
    m.id = etcdwire::member_id(urls, cfg.initial_cluster_token);
    if (name == cfg.name) {
      m.client_urls = cfg.advertise_client_urls;
      p.me.member_id = m.id;
    }
    for (const auto& other : p.initial)
      if (other.id == m.id)
        fail("member " + etcdwire::id_to_hex(m.id) + " has already been bootstrapped");
    ids.push_back(m.id);
    p.initial.push_back(std::move(m));
  }
  if (p.me.member_id == 0)
    fail("couldn't find local name \"" + cfg.name + "\" in the initial cluster configuration");
  p.me.name = cfg.name;
  p.me.cluster_id = etcdwire::cluster_id(ids);
  return p;
}

MemberPlan plan_member(const config::Config& given, const net::TlsOptions& peer_tls) {
  if (auto id = read_identity(given.data_dir)) {
    log::info("etcdmain", "server has been already initialized",
              {{"data-dir", given.data_dir}, {"member-id", etcdwire::id_to_hex(id->member_id)}});
    MemberPlan p;
    p.kind = MemberPlan::Kind::kRestart;
    p.me = *id;
    return p;
  }
  // --discovery / --discovery-srv / --initial-cluster -> one initial cluster
  // string and token; then the static path.  Runs only here, with no
  // identity on disk: a restarted member never asks discovery again.
  config::Config cfg = given;
  auto boot = resolve_initial_cluster(cfg);
  if (boot.kind == InitialCluster::Kind::kFull) {
    if (cfg.discovery_fallback == "exit") fail(boot.message + " (--discovery-fallback=exit)");
    log::warn("etcdmain", "discovery cluster is full, falling back to proxy",
              {{"reason", boot.message}});
    MemberPlan p;
    p.kind = MemberPlan::Kind::kProxy;
    p.proxy_peer_urls = boot.peer_urls;
    return p;
  }
  if (boot.kind == InitialCluster::Kind::kError) fail(boot.message);
  cfg.initial_cluster = boot.initial_cluster;
  cfg.initial_cluster_token = boot.token;
  auto cluster = config::parse_initial_cluster(cfg.initial_cluster);
  if (!cluster.ok()) fail(cluster.error());
  if (auto err = config::verify_bootstrap(cfg, cluster.value()); !err.empty()) fail(err);
  MemberPlan p;
  if (cfg.initial_cluster_state == "existing") {
    net::TlsOptions tls = peer_tls;
    if (boot.peer_tls_server_name) tls.server_name = *boot.peer_tls_server_name;
    p = join_existing(cfg, cluster.value(), tls);
  } else {
    p = new_cluster_plan(cfg, cluster.value());
  }
  p.peer_tls_server_name = boot.peer_tls_server_name;
  return p;
}

}  // namespace muster::bootstrap
