// node/bootstrap/replacement.cpp: see replacement.h.
#include "node/bootstrap/replacement.h"

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/log.h"
#include "etcdwire/ids.h"
#include "net/client.h"
#include "node/bootstrap/discovery.h"
#include "node/bootstrap/discovery_v3.h"
#include "node/bootstrap/initial_cluster.h"
#include "node/bootstrap/peer_members.h"

namespace muster::bootstrap {

namespace {

using nlohmann::json;
constexpr const char* kLog = "etcdmain";

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// GET/POST a JSON route; nullopt with *error on a transport error or an
// answer that is not JSON.
std::optional<std::pair<int, json>> call(net::HttpClient& client, const std::string& method,
                                         const std::string& url, const std::string& body,
                                         std::string* error) {
  net::Headers h;
  if (!body.empty()) h.set("Content-Type", "application/json");
  auto r = client.request(method, url, body, h);
  if (!r.ok()) {
    *error = url + ": " + r.error;
    return std::nullopt;
  }
  json j = json::parse(r.response->body, nullptr, false);
  if (j.is_discarded()) {
    *error = url + ": answered " + std::to_string(r.response->status) + " without JSON";
    return std::nullopt;
  }
  return std::make_pair(r.response->status, std::move(j));
}

// Step 4 (replacement.h) with a discovery URL: the token's registrations
// of members the cluster no longer has are deleted, ours is written.
void record_in_token(const config::Config& cfg, uint64_t id,
                     const std::optional<ClusterView>& after) {
  DiscoveryOptions dopts;
  dopts.url = cfg.discovery;
  dopts.proxy = cfg.discovery_proxy;
  dopts.name = cfg.name;
  dopts.peer_urls = cfg.initial_advertise_peer_urls;
  DiscoveryClient token(dopts);
  TokenState st;
  if (after && !token.state(&st)) {
    for (size_t i = 0; i < st.members.size() && i < st.size; ++i) {
      auto rid = etcdwire::parse_hex_id(st.members[i].id);
      bool member = false;
      for (const auto& m : after->members) member = member || (rid && m.id == *rid);
      if (member) continue;
      log::info(kLog, "removing a registration whose member left the cluster from the token",
                {{"member-id", st.members[i].id}, {"value", st.members[i].value}});
      if (auto f = token.remove(st.members[i].id))
        log::warn(kLog, "could not remove a registration from the discovery token",
                  {{"member-id", st.members[i].id}, {"error", f->message}});
    }
  }
  std::vector<std::string> urls = cfg.initial_advertise_peer_urls;
  std::sort(urls.begin(), urls.end());
  std::vector<std::string> pairs;
  for (const auto& u : urls) pairs.push_back(cfg.name + "=" + u);
  if (auto f = token.put(etcdwire::id_to_hex(id), join(pairs, ",")))
    log::warn(kLog, "could not record this member in the discovery token", {{"error", f->message}});
}

// recheck_replacement with --discovery-srv: the records again, the
// members they name other than this one.
std::optional<MemberPlan> recheck_srv_replacement(const config::Config& cfg,
                                                  const net::TlsOptions& peer_tls,
                                                  std::string* why_not) {
  const InitialCluster boot = resolve_initial_cluster(cfg);
  if (boot.kind != InitialCluster::Kind::kCluster) {
    *why_not = boot.message;
    return std::nullopt;
  }
  auto cluster = config::parse_initial_cluster(boot.initial_cluster);
  if (!cluster.ok()) {
    *why_not = cluster.error();
    return std::nullopt;
  }
  net::TlsOptions tls = peer_tls;
  if (boot.peer_tls_server_name) tls.server_name = *boot.peer_tls_server_name;
  auto p = try_replacement(cfg, other_peer_urls(cluster.value(), cfg.name), cluster.value().size(),
                           tls, why_not);
  if (p) p->peer_tls_server_name = boot.peer_tls_server_name;
  return p;
}

}  // namespace

std::optional<MemberPlan> try_replacement(const config::Config& cfg,
                                          const std::vector<std::string>& token_peer_urls,
                                          uint64_t size, const net::TlsOptions& peer_tls,
                                          std::string* why_not) {
  const auto dead_after =
      std::chrono::duration_cast<std::chrono::milliseconds>(cfg.discovery_replace_dead);
  net::ClientOptions co;
  co.tls = peer_tls;
  co.connect_timeout = std::chrono::seconds(2);
  co.timeout = std::chrono::seconds(2);
  net::HttpClient quick(co);

  // 1. The running cluster, from any member the token names.
  std::string err;
  auto view = fetch_cluster(token_peer_urls, quick, &err);
  if (!view || view->cluster_id == 0) {
    *why_not = "cannot reach any member of the cluster: " + (view ? "no cluster ID" : err);
    return std::nullopt;
  }

  // 2. The leader, as the members themselves say.
  std::vector<std::string> asked;
  auto find_leader = [&]() -> std::string {
    asked.clear();
    for (const auto& m : view->members) {
      for (const auto& cu : m.client_urls) {
        auto r = call(quick, "GET", cu + "/muster/v1/reachability", "", &err);
        if (!r) {
          asked.push_back(m.name + ": unreachable");
          continue;
        }
        const json& j = r->second;
        if (j.value("leader", false)) return cu;
        asked.push_back(m.name + ": leader " + j.value("leader_id", std::string("0")));
        break;
      }
    }
    return "";
  };

  // 3. The guarded step, on the leader.  Two ConfChanges and a txn: give it
  // the request timeouts of all three.
  net::ClientOptions slow = co;
  slow.timeout = std::chrono::seconds(30);
  net::HttpClient client(slow);
  json req = {{"name", cfg.name},
              {"peer_urls", cfg.initial_advertise_peer_urls},
              {"dead_after_ms", dead_after.count()},
              {"size", size}};
  // Asked again: while an election is under way (no leader for a few
  // seconds, or the one asked no longer leads), and while a member is
  // silent but not yet for --discovery-replace-dead (the leader says when
  // it would be; the lock is free meanwhile).  At most the threshold plus a
  // minute in all.
  const auto started = std::chrono::steady_clock::now();
  const auto give_up = started + dead_after + std::chrono::minutes(1);
  const auto election_grace = std::chrono::seconds(5);
  std::optional<std::pair<int, json>> r;
  json replaced;
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    const std::string leader_url = find_leader();
    if (leader_url.empty()) {
      if (now - started < election_grace) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        continue;
      }
      *why_not = "no member of the cluster is leader (" + join(asked, "; ") +
                 "); without a leader the cluster has lost its quorum, and a replacement cannot "
                 "be added safely: restore the dead members or recover the cluster by hand";
      return std::nullopt;
    }
    log::info(kLog,
              "the cluster formed without this node; asking the leader to replace a dead member",
              {{"leader", leader_url},
               {"discovery-replace-dead", std::to_string(dead_after.count()) + "ms"}});
    r = call(client, "POST", leader_url + "/muster/v1/replace", req.dump(), &err);
    // A removal done by an attempt whose addition failed: remember whom.
    if (r && r->second.is_object() && r->second.value("replaced", json()).is_object())
      req["replaced"] = replaced = r->second["replaced"];  // told again, for the history
    if (!r || r->first != 409 || now >= give_up) break;
    if (r->second.value("error", std::string()) == "not leader") {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      continue;
    }
    if (!r->second.contains("retry_after_ms")) break;
    const std::chrono::milliseconds wait(r->second.value("retry_after_ms", int64_t{1000}));
    log::info(kLog, "the leader asks to be asked again later",
              {{"reason", r->second.value("reason", std::string())},
               {"retry-in", std::to_string(wait.count()) + "ms"}});
    std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(wait, dead_after));
  }
  if (!r) {
    *why_not = "the replacement request failed: " + err;
    return std::nullopt;
  }
  if (r->first != 200) {
    *why_not = "the leader refused: " + r->second.value("reason", r->second.value("error", "?"));
    return std::nullopt;
  }
  const json& ok = r->second;
  auto id = etcdwire::parse_hex_id(ok.value("member_id", std::string()));
  auto cid = etcdwire::parse_hex_id(ok.value("cluster_id", std::string()));
  if (!id || !cid) {
    *why_not = "the leader's answer has no member ID: " + ok.dump();
    return std::nullopt;
  }
  if (ok.value("replaced", json()).is_object()) replaced = ok["replaced"];
  log::warn(kLog, "this node replaces a dead member; joining as a learner",
            {{"member-id", etcdwire::id_to_hex(*id)},
             {"replaced", replaced},
             {"discovery-replace-dead", std::to_string(dead_after.count()) + "ms"}});

  // 4. The token: our registration in the dead member's place.  Every
  // registration among the first `size` whose member the cluster no longer
  // has is deleted (the dead one; also one an earlier, failed replacement
  // removed), then ours is written.  With --discovery-srv there is no
  // token: the records are the operator's (or Kubernetes') to keep.
  auto after = fetch_cluster(token_peer_urls, quick, &err);
  if (cfg.discovery_v3.enabled()) {  // a v3 token (discovery_v3.h): one Txn does both
    std::vector<uint64_t> ids;
    for (const auto& m : (after ? after->members : view->members)) ids.push_back(m.id);
    record_replacement_in_v3_token(cfg, *id, ids);
  } else if (!cfg.discovery.empty()) {
    record_in_token(cfg, *id, after);
  }

  // 5. Join: the member list now holds this node as a learner.
  MemberPlan p;
  p.kind = MemberPlan::Kind::kJoin;
  p.me.name = cfg.name;
  p.me.member_id = *id;
  p.me.cluster_id = *cid;
  p.members = after ? after->members : view->members;
  bool listed = false;
  for (const auto& m : p.members) listed = listed || m.id == *id;
  if (!listed) p.members.push_back({*id, "", cfg.initial_advertise_peer_urls, {}, true});
  p.promote_when_caught_up = true;
  p.replacement_lock_lease = ok.value("lock_lease", int64_t{0});
  return p;
}

std::optional<MemberPlan> recheck_replacement(const config::Config& cfg,
                                              const net::TlsOptions& peer_tls,
                                              std::string* why_not) {
  if (cfg.discovery_v3.enabled()) {
    uint64_t size = 0;
    std::string err;
    auto urls = v3_token_peer_urls(cfg, &size, &err, 2);
    if (urls.empty()) {
      *why_not = "cannot read the discovery token: " + err;
      return std::nullopt;
    }
    return try_replacement(cfg, urls, size, peer_tls, why_not);
  }
  if (!cfg.discovery_srv.empty()) return recheck_srv_replacement(cfg, peer_tls, why_not);
  DiscoveryOptions dopts;
  dopts.url = cfg.discovery;
  dopts.proxy = cfg.discovery_proxy;
  dopts.name = cfg.name;
  dopts.peer_urls = cfg.initial_advertise_peer_urls;
  dopts.max_retries = 2;
  std::string err;
  if (!parse_discovery_url(cfg.discovery, &err)) {
    *why_not = err;
    return std::nullopt;
  }
  DiscoveryClient token(dopts);
  TokenState st;
  if (auto f = token.state(&st)) {
    *why_not = "cannot read the discovery token: " + f->message;
    return std::nullopt;
  }
  std::vector<std::string> peer_urls;
  for (size_t i = 0; i < st.members.size() && i < st.size; ++i) {
    std::vector<std::pair<std::string, std::string>> pairs;
    parse_registration(st.members[i].value, &pairs);
    for (auto& [name, url] : pairs) peer_urls.push_back(url);
  }
  if (peer_urls.empty()) {
    *why_not = "the discovery token lists no members";
    return std::nullopt;
  }
  return try_replacement(cfg, peer_urls, st.size, peer_tls, why_not);
}

}  // namespace muster::bootstrap
