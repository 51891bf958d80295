// node/bootstrap/member_plan.cpp: see member_plan.h.
#include "node/bootstrap/member_plan.h"

#include <algorithm>
#include <optional>
#include <stdexcept>

#include "base/log.h"
#include "etcdwire/ids.h"
#include "net/client.h"
#include "node/bootstrap/initial_cluster.h"
#include "node/bootstrap/replacement.h"
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

// The member of `view` whose peer URLs are this member's, or nullptr.
const MemberInfo* member_with_my_urls(const config::Config& cfg, const ClusterView& view) {
  std::vector<std::string> mine = cfg.initial_advertise_peer_urls;
  std::sort(mine.begin(), mine.end());
  for (const auto& m : view.members) {
    std::vector<std::string> theirs = m.peer_urls;
    std::sort(theirs.begin(), theirs.end());
    if (theirs == mine) return &m;
  }
  return nullptr;
}

// What etcd asks before it bootstraps a new cluster (isMemberBootstrapped):
// the running cluster the other initial members belong to, from GET
// <peer-url>/members with a one-second budget per URL.  nullopt when none
// answers (nobody is up yet, the ordinary first start).
std::optional<ClusterView> running_cluster(const std::vector<std::string>& others,
                                           const net::TlsOptions& tls) {
  if (others.empty()) return std::nullopt;
  net::ClientOptions co;
  co.tls = tls;
  co.connect_timeout = co.timeout = std::chrono::seconds(1);
  net::HttpClient client(co);
  std::string err;
  auto view = fetch_cluster(others, client, &err);
  if (!view || view->cluster_id == 0) return std::nullopt;
  return view;
}

// --discovery-srv with --discovery-replace-dead (docs/operations.md,
// "Replacing a dead member automatically"): the records name this member,
// but a cluster may already run without it -- an autoscaling group replaced
// a dead instance and pointed the records at the new one, or a pod came back
// under its old name with an empty volume.  Then this member asks for a
// dead member's seat exactly as a full discovery token's node does
// (replacement.h), and falls back as --discovery-fallback says when refused.
// nullopt: no cluster runs yet, or it counts this member among its initial
// members and has not seen it start (an ordinary bootstrap).
std::optional<MemberPlan> srv_replacement(const config::Config& cfg, const config::UrlsMap& cluster,
                                          const net::TlsOptions& tls,
                                          const std::optional<ClusterView>& running) {
  if (!running) return std::nullopt;
  const MemberInfo* mine = member_with_my_urls(cfg, *running);
  // An initial member the others wait for: it never published its client
  // URLs (etcd's test: isMemberBootstrapped).
  if (mine && !mine->is_learner && mine->client_urls.empty()) return std::nullopt;
  log::warn("etcdmain",
            mine ? "the SRV records name a running cluster in which this member's peer URLs "
                   "belong to a member that already started; asking to replace it"
                 : "the SRV records name a running cluster that does not list this member; "
                   "asking for a dead member's seat",
            {{"cluster-id", etcdwire::id_to_hex(running->cluster_id)},
             {"answered-by", running->source},
             {"srv-records", cluster.size()}});
  const std::vector<std::string> others = other_peer_urls(cluster, cfg.name);
  std::string why_not;
  if (auto p = try_replacement(cfg, others, cluster.size(), tls, &why_not)) return p;
  log::warn("etcdmain", "not replacing any member",
            {{"reason", why_not}, {"fallback", cfg.discovery_fallback}});
  if (cfg.discovery_fallback == "exit")
    fail("the SRV records of " + cfg.discovery_srv +
         " name a running cluster that does not count this member; not replacing any member: " +
         why_not + " (--discovery-fallback=exit)");
  log::warn("etcdmain", "falling back to proxy of the running cluster", {{"reason", why_not}});
  MemberPlan p;
  p.kind = MemberPlan::Kind::kProxy;
  p.proxy_peer_urls = others;
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
    // --discovery-replace-dead (Muster): take a dead member's seat instead
    // (replacement.h); whatever refuses, fall back as etcd does.
    if (cfg.discovery_replace_dead.count() > 0) {
      std::string why_not;
      if (auto p = try_replacement(cfg, boot.peer_urls, boot.size, peer_tls, &why_not)) return *p;
      log::warn("etcdmain", "not replacing any member",
                {{"reason", why_not}, {"fallback", cfg.discovery_fallback}});
      if (cfg.discovery_fallback == "exit")
        fail(boot.message + "; not replacing any member: " + why_not +
             " (--discovery-fallback=exit)");
    }
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
  net::TlsOptions tls = peer_tls;
  if (boot.peer_tls_server_name) tls.server_name = *boot.peer_tls_server_name;
  // A new member asks whether the others run already (etcd's
  // isMemberBootstrapped); with SRV records and --discovery-replace-dead
  // the answer may make it a replacement (srv_replacement above).
  const bool srv_replace = !cfg.discovery_srv.empty() && cfg.discovery_replace_dead.count() > 0;
  std::optional<ClusterView> running;
  if (srv_replace || (cfg.discovery.empty() && cfg.initial_cluster_state != "existing"))
    running = running_cluster(other_peer_urls(cluster.value(), cfg.name), tls);
  if (srv_replace) {
    if (auto p = srv_replacement(cfg, cluster.value(), tls, running)) {
      p->peer_tls_server_name = boot.peer_tls_server_name;
      return *p;
    }
  }
  MemberPlan p;
  if (cfg.initial_cluster_state == "existing") {
    p = join_existing(cfg, cluster.value(), tls);
  } else {
    p = new_cluster_plan(cfg, cluster.value());
    // etcd: a member the running cluster lists under this ID, with client
    // URLs, has started before; this one lost its data (or another machine
    // took its address), and must not vote again from an empty log.
    if (running)
      for (const auto& m : running->members)
        if (m.id == p.me.member_id && !m.client_urls.empty())
          fail("member " + etcdwire::id_to_hex(m.id) + " has already been bootstrapped");
  }
  p.peer_tls_server_name = boot.peer_tls_server_name;
  return p;
}

}  // namespace muster::bootstrap
