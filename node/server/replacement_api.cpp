// node/server/replacement_api.cpp: see replacement_api.h.
#include "node/server/replacement_api.h"

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "etcdwire/ids.h"
#include "etcdwire/v3_json.h"

namespace muster::server {

namespace {

using nlohmann::json;
using Ex = std::shared_ptr<net::Exchange>;
constexpr const char* kLog = "etcdserver";

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// UTC, to the second, as RFC 3339 ("2026-01-02T03:04:05Z").
std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string member_name(MemberServer& m, uint64_t id) {
  for (const auto& x : m.kv().members())
    if (x.id() == id) return x.name();
  return "";
}

}  // namespace

std::string ReplacementApi::history_key(uint64_t member_id) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(member_id));
  return std::string(kHistoryPrefix) + hex;
}

struct ReplacementApi::Attempt {
  Ex ex;
  std::string name;
  std::vector<std::string> peer_urls;
  std::chrono::milliseconds dead_after{0};
  uint64_t size = 0;
  int64_t lease = 0;
  json replaced;  // null: a free seat, nobody removed
  // What an earlier attempt of this caller removed before its addition
  // failed (the caller says so again): the seat it now finds free.
  json removed_earlier;
};

ReplacementApi::ReplacementApi(MemberServer& member, V3Service& service, metrics::Registry& reg)
    : member_(member),
      service_(service),
      replaced_(reg.counter("muster_server_member_replacements_total",
                            "Dead members this member, as leader, replaced by a new node "
                            "(--discovery-replace-dead).")),
      refused_(reg.counter("muster_server_member_replacements_refused_total",
                           "Replacement requests this member refused (nothing dead, quorum at "
                           "risk, another replacement in flight, not leader).")),
      learners_removed_(reg.counter(
          "muster_server_member_replacement_learners_removed_total",
          "Learners this member, as leader, removed because they stayed unreachable for the "
          "threshold (replacements that died before their promotion).")),
      recorded_(reg.gauge("muster_cluster_member_replacements",
                          "Replacements recorded in the cluster's history (" +
                              std::string(kHistoryPrefix) +
                              "*, replicated: every member reports the same number).")) {}

void ReplacementApi::collect_metrics() {
  pb::RangeRequest r;
  r.set_key(kHistoryPrefix);
  r.set_range_end(etcdwire::prefix_end(kHistoryPrefix));
  r.set_count_only(true);
  r.set_serializable(true);
  pb::RangeResponse resp;
  if (member_.kv().range(r, &resp)) recorded_.set(static_cast<double>(resp.count()));
}

bool ReplacementApi::handle(const Ex& ex) {
  const std::string path = ex->request().path();
  if (path.rfind("/muster/v1/", 0) != 0) return false;
  const std::string& method = ex->request().method;
  if (path == "/muster/v1/reachability" && method == "GET") {
    reachability(ex);
  } else if (path == "/muster/v1/replace" && method == "POST") {
    replace(ex);
  } else {
    ex->respond(net::Response::json(404, "{\"error\":\"not found\"}\n"));
  }
  return true;
}

void ReplacementApi::reachability(const Ex& ex) {
  const ReachabilityView v = member_.reachability();
  const MemberStatus st = member_.status();
  json out = {{"member_id", etcdwire::id_to_hex(st.member_id)},
              {"leader_id", etcdwire::id_to_hex(st.leader)},
              {"leader", v.leader},
              {"leading_for_ms", v.leading_for.count()}};
  json members = json::array();
  for (const auto& m : member_.kv().members()) {
    json j = {{"id", etcdwire::id_to_hex(m.id())},
              {"name", m.name()},
              {"peer_urls", std::vector<std::string>(m.peerurls().begin(), m.peerurls().end())},
              {"learner", m.islearner()}};
    for (const auto& p : v.peers)
      if (p.id == m.id()) j["unheard_for_ms"] = p.unheard_for.count();
    members.push_back(std::move(j));
  }
  out["members"] = std::move(members);
  ex->respond(net::Response::json(
      200, out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
}

void ReplacementApi::refuse(std::shared_ptr<Attempt> a, const std::string& reason, bool release,
                            json extra) {
  refused_.inc();
  log::info(kLog, "refused to replace a member", {{"replacement", a->name}, {"reason", reason}});
  json body = {{"error", "refused"}, {"reason", reason}};
  if (extra.is_object()) body.update(extra);
  a->ex->respond(net::Response::json(
      409, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
  if (release && a->lease != 0) {
    pb::LeaseRevokeRequest r;
    r.set_id(a->lease);
    service_.lease_revoke(r, [](storage::Status, pb::LeaseRevokeResponse) {});
  }
}

void ReplacementApi::replace(const Ex& ex) {
  // A replacement removes a member.  With auth enabled only root may do
  // that (MemberRemove is root-only), and this route carries no etcd
  // credentials: it is refused rather than let it bypass auth
  // (docs/security.md).
  if (member_.kv().auth().enabled()) {
    refused_.inc();
    ex->respond(net::Response::json(
        401, json{{"error", "unauthorized"},
                  {"reason", "replacement is not available while auth is enabled"}}
                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
    return;
  }
  auto a = std::make_shared<Attempt>();
  a->ex = ex;
  try {
    json body = json::parse(ex->request().body);
    a->name = body.at("name").get<std::string>();
    a->peer_urls = body.at("peer_urls").get<std::vector<std::string>>();
    a->dead_after = std::chrono::milliseconds(body.at("dead_after_ms").get<int64_t>());
    a->size = body.at("size").get<uint64_t>();
    if (body.contains("replaced") && body["replaced"].is_object())
      a->removed_earlier = body["replaced"];
  } catch (const std::exception& e) {
    ex->respond(net::Response::json(
        400, json{{"error", "bad request"}, {"reason", std::string(e.what())}}.dump(
                 -1, ' ', false, nlohmann::json::error_handler_t::replace)));
    return;
  }
  // The node's own flag refuses thresholds under a second; so does the
  // leader, so no client can ask it to remove a member silent for a moment.
  if (a->peer_urls.empty() || a->dead_after < std::chrono::seconds(1)) {
    ex->respond(net::Response::json(
        400, json{{"error", "bad request"},
                  {"reason", "peer_urls and dead_after_ms (at least 1000) are required"}}
                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
    return;
  }
  const MemberStatus st = member_.status();
  const ReachabilityView view = member_.reachability();
  if (!view.leader) {
    refused_.inc();
    ex->respond(net::Response::json(
        409, json{{"error", "not leader"}, {"leader_id", etcdwire::id_to_hex(st.leader)}}.dump(
                 -1, ' ', false, nlohmann::json::error_handler_t::replace)));
    return;
  }
  // A retry of a request that got through (the caller died or timed out
  // before it heard the answer): its learner is there already.  Only a
  // learner: a voter with these peer URLs is a member whose instance is
  // gone (a pod back under its name with an empty volume, an address
  // reused); handing its ID to a node with an empty log would let that node
  // vote as if it remembered.  Such a voter is replaced like any dead one.
  for (const auto& m : member_.kv().members()) {
    if (m.islearner() && sorted(std::vector<std::string>(
                             m.peerurls().begin(), m.peerurls().end())) == sorted(a->peer_urls)) {
      ex->respond(net::Response::json(
          200, json{{"member_id", etcdwire::id_to_hex(m.id())},
                    {"cluster_id", etcdwire::id_to_hex(st.cluster_id)},
                    {"replaced", nullptr},
                    {"lock_lease", 0}}
                   .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
      return;
    }
  }
  // Without a quorum of voters heard lately nothing can commit: say so
  // rather than wait for the lock's proposal to time out.
  {
    size_t voters = 0, healthy = 0;
    for (const auto& p : view.peers) {
      if (p.learner) continue;
      ++voters;
      if (p.unheard_for < std::chrono::milliseconds(member_.election_ms())) ++healthy;
    }
    if (healthy < voters / 2 + 1)
      return refuse(a,
                    "only " + std::to_string(healthy) + " of " + std::to_string(voters) +
                        " voters answer the leader, fewer than a quorum (" +
                        std::to_string(voters / 2 + 1) +
                        "): the cluster cannot commit a change; restore the dead members or "
                        "recover the cluster by hand",
                    false);
  }
  // 1. The lock: a lease, then a txn that creates the key only if absent.
  pb::LeaseGrantRequest g;
  g.set_ttl(kLockTtl.count());
  service_.lease_grant(g, [this, a](storage::Status s, pb::LeaseGrantResponse gr) {
    // A timeout here is most often a quorum just lost (the check above saw
    // members that died a moment ago as healthy): asked again, that check
    // says so.
    if (!s)
      return refuse(
          a, "cannot grant the lock's lease: " + s.message(), false,
          s.code() == storage::Code::kUnavailable ? json{{"retry_after_ms", 1000}} : json(nullptr));
    a->lease = gr.id();
    pb::TxnRequest t;
    auto* c = t.add_compare();
    c->set_key(kLockKey);
    c->set_target(pb::Compare::CREATE);
    c->set_result(pb::Compare::EQUAL);
    c->set_create_revision(0);
    auto* put = t.add_success()->mutable_request_put();
    put->set_key(kLockKey);
    put->set_value(json{{"name", a->name}, {"peer_urls", a->peer_urls}}.dump(
        -1, ' ', false, nlohmann::json::error_handler_t::replace));
    put->set_lease(a->lease);
    t.add_failure()->mutable_request_range()->set_key(kLockKey);
    service_.txn(t, [this, a](storage::Status s, pb::TxnResponse tr) {
      if (!s) return refuse(a, "cannot take the replacement lock: " + s.message(), true);
      if (!tr.succeeded()) {
        std::string holder;
        if (tr.responses_size() > 0 && tr.responses(0).response_range().kvs_size() > 0)
          holder = tr.responses(0).response_range().kvs(0).value();
        return refuse(a, "another replacement is in flight (" + holder + ")", true);
      }
      choose_and_change(a);
    });
  });
}

// 2. and 3. (replacement_api.h), holding the lock.
void ReplacementApi::choose_and_change(std::shared_ptr<Attempt> a) {
  const ReachabilityView v = member_.reachability();
  if (!v.leader) return refuse(a, "this member lost the leadership", true);
  const auto healthy_within = std::chrono::milliseconds(member_.election_ms());
  std::vector<PeerSilence> voters;
  for (const auto& p : v.peers) {
    if (!p.learner) {
      voters.push_back(p);
      continue;
    }
    if (p.unheard_for < a->dead_after)
      return refuse(a,
                    "learner " + etcdwire::id_to_hex(p.id) +
                        " is still catching up; one replacement at a time",
                    true);
    // A learner unheard for the threshold is a replacement that died
    // before its promotion (it never counted toward the quorum): remove
    // it, then let the caller ask again with the seat it held.
    const uint64_t stale = p.id;
    log::warn(kLog, "removing a learner that has been unreachable for the threshold",
              {{"member-id", etcdwire::id_to_hex(stale)},
               {"unreachable-for", std::to_string(p.unheard_for.count()) + "ms"},
               {"replacement", a->name}});
    pb::MemberRemoveRequest r;
    r.set_id(stale);
    service_.member_remove(r, [this, a, stale](storage::Status s, pb::MemberRemoveResponse) {
      if (s) learners_removed_.inc();
      refuse(a,
             s ? "removed learner " + etcdwire::id_to_hex(stale) +
                     ", a replacement that died before its promotion; ask again"
               : "cannot remove the dead learner: " + s.message(),
             true, json{{"retry_after_ms", 500}});
    });
    return;
  }
  auto healthy = [&](const PeerSilence& p) { return p.unheard_for < healthy_within; };
  // The voter unheard longest is replaced once it has been unheard for the
  // threshold, whatever the size says (SRV records updated in two steps,
  // the new target added before the dead one is dropped, must not grow the
  // cluster around a dead member).  Otherwise a cluster with fewer voters
  // than `size` has a free seat.
  const PeerSilence* dead = nullptr;
  for (const auto& p : voters)
    if (!dead || p.unheard_for > dead->unheard_for) dead = &p;
  if (dead && dead->unheard_for < a->dead_after && voters.size() < a->size) dead = nullptr;
  if (voters.size() >= a->size || dead) {
    if (!dead || dead->unheard_for < a->dead_after) {
      // A voter that is silent already but not for long enough, or a
      // leader whose view is younger than the threshold (it was elected
      // since; the old leader may be the dead one): say when it would know,
      // so the caller can ask again then.
      json extra = nullptr;
      if ((dead && !healthy(*dead)) || v.leading_for < a->dead_after)
        extra = {
            {"retry_after_ms",
             (a->dead_after - (dead ? dead->unheard_for : std::chrono::milliseconds(0))).count() +
                 100}};
      return refuse(a,
                    "no voter has been unreachable for " + std::to_string(a->dead_after.count()) +
                        "ms (longest: " +
                        (dead ? member_name(member_, dead->id) + " " +
                                    std::to_string(dead->unheard_for.count()) + "ms"
                              : std::string("none")) +
                        ", this leader has led for " + std::to_string(v.leading_for.count()) +
                        "ms)",
                    true, extra);
    }
  }
  const size_t remaining = voters.size() - (dead ? 1 : 0);
  size_t healthy_remaining = 0;
  for (const auto& p : voters)
    if ((!dead || p.id != dead->id) && healthy(p)) ++healthy_remaining;
  const size_t quorum = remaining / 2 + 1;
  if (healthy_remaining < quorum)
    return refuse(a,
                  "removing a member would leave " + std::to_string(healthy_remaining) +
                      " healthy of " + std::to_string(remaining) +
                      " voters, fewer than a quorum (" + std::to_string(quorum) + ")",
                  true);
  auto add = [this, a] {
    pb::MemberAddRequest r;
    for (const auto& u : a->peer_urls) r.add_peerurls(u);
    r.set_islearner(true);
    service_.member_add(r, [this, a](storage::Status s, pb::MemberAddResponse resp) {
      // When the dead member was removed the seat is free now, and the
      // caller may ask again (it then finds the free seat); "unhealthy
      // cluster" lasts only until this leader has been connected to every
      // voter for 5 s: ask again too.
      if (!s)
        return refuse(a,
                      "cannot add the replacement as a learner: " + s.message() +
                          (a->replaced.is_null() ? "" : " (the dead member was removed)"),
                      true,
                      a->replaced.is_null() && s.code() != storage::Code::kUnavailable
                          ? json(nullptr)
                          : json{{"retry_after_ms", 1000}, {"replaced", a->replaced}});
      replaced_.inc();
      const MemberStatus st = member_.status();
      const uint64_t id = resp.member().id();
      log::info(kLog, "added a replacement member as a learner",
                {{"replacement", a->name},
                 {"replacement-id", etcdwire::id_to_hex(id)},
                 {"peer-urls", a->peer_urls},
                 {"replaced", a->replaced}});
      const std::string answer = json{
          {"member_id", etcdwire::id_to_hex(id)},
          {"cluster_id", etcdwire::id_to_hex(st.cluster_id)},
          {"replaced", a->replaced},
          {"lock_lease", a->lease}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      // The history (`musterctl member list --show-replacements`): who
      // took whose seat, when and why, replicated like any key.
      pb::PutRequest put;
      put.set_key(history_key(id));
      put.set_value(json{{"member_id", etcdwire::id_to_hex(id)},
                         {"name", a->name},
                         {"peer_urls", a->peer_urls},
                         {"replaced", a->replaced},
                         {"replaced_at", utc_now()},
                         {"threshold_ms", a->dead_after.count()},
                         {"leader", etcdwire::id_to_hex(st.member_id)}}
                        .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      service_.put(put, [a, answer, id](storage::Status s, pb::PutResponse) {
        if (!s)
          log::warn(kLog, "could not record the replacement in the history",
                    {{"replacement-id", etcdwire::id_to_hex(id)}, {"error", s.message()}});
        a->ex->respond(net::Response::json(200, answer));
      });
    });
  };
  if (!dead) {
    // The seat an earlier attempt of this caller freed: its history names
    // the member removed then (once checked to be removed indeed).
    if (a->removed_earlier.is_object()) {
      const auto id = etcdwire::parse_hex_id(a->removed_earlier.value("id", std::string()));
      if (id && member_.kv().member_removed(*id)) a->replaced = a->removed_earlier;
    }
    log::info(kLog, "a seat is free; adding a replacement without removing anyone",
              {{"voters", voters.size()},
               {"size", a->size},
               {"replacement", a->name},
               {"freed-earlier-by-removing", a->replaced}});
    return add();
  }
  const std::string reason =
      "the leader has not heard it for " + std::to_string(dead->unheard_for.count()) +
      "ms, at least --discovery-replace-dead (" + std::to_string(a->dead_after.count()) +
      "ms), and " + std::to_string(healthy_remaining) + " of the " + std::to_string(remaining) +
      " voters left are healthy (quorum " + std::to_string(quorum) + ")";
  a->replaced = {{"id", etcdwire::id_to_hex(dead->id)},
                 {"name", member_name(member_, dead->id)},
                 {"unheard_for_ms", dead->unheard_for.count()},
                 {"reason", reason}};
  log::warn(kLog, "removing a dead member to make room for its replacement",
            {{"dead-member-id", etcdwire::id_to_hex(dead->id)},
             {"dead-member-name", member_name(member_, dead->id)},
             {"reason", reason},
             {"unreachable-for", std::to_string(dead->unheard_for.count()) + "ms"},
             {"threshold", std::to_string(a->dead_after.count()) + "ms"},
             {"healthy-voters-left", healthy_remaining},
             {"replacement", a->name},
             {"replacement-peer-urls", a->peer_urls}});
  pb::MemberRemoveRequest r;
  r.set_id(dead->id);
  service_.member_remove(r, [this, a, add](storage::Status s, pb::MemberRemoveResponse) {
    // "unhealthy cluster" (etcd's strict check: this leader not connected
    // to the voters for 5 s yet) passes with time: the caller may ask again.
    if (!s)
      return refuse(
          a, "cannot remove the dead member: " + s.message(), true,
          s.code() == storage::Code::kUnavailable ? json{{"retry_after_ms", 1000}} : json(nullptr));
    add();
  });
}

}  // namespace muster::server
