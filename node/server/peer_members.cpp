#include "node/server/peer_members.h"

#include <nlohmann/json.hpp>

#include "net/client.h"
#include "node/bootstrap/ids.h"

namespace muster::server {

using nlohmann::json;

std::string members_json(const std::vector<etcdserverpb::Member>& members) {
  json arr = json::array();
  for (const auto& m : members) {
    json j = {
        {"id", bootstrap::id_to_hex(m.id())},
        {"name", m.name()},
        {"peerURLs", std::vector<std::string>(m.peerurls().begin(), m.peerurls().end())},
        {"clientURLs", std::vector<std::string>(m.clienturls().begin(), m.clienturls().end())}};
    if (m.islearner()) j["isLearner"] = true;
    arr.push_back(std::move(j));
  }
  return arr.dump() + "\n";
}

namespace {

std::optional<ClusterInfo> parse_members(const net::Response& r, std::string* why) {
  ClusterInfo info;
  auto cid = r.headers.get("X-Etcd-Cluster-ID");
  if (!cid || !(info.cluster_id = bootstrap::parse_hex_id(*cid).value_or(0))) {
    *why = "no X-Etcd-Cluster-ID header";
    return std::nullopt;
  }
  json j = json::parse(r.body, nullptr, false);
  if (!j.is_array()) {
    *why = "the member list is not a JSON array";
    return std::nullopt;
  }
  for (const auto& m : j) {
    if (!m.is_object()) continue;
    PeerMember pm;
    pm.id = bootstrap::parse_hex_id(m.value("id", "")).value_or(0);
    if (pm.id == 0) {
      *why = "a member without a valid id";
      return std::nullopt;
    }
    pm.name = m.value("name", "");
    pm.peer_urls = m.value("peerURLs", std::vector<std::string>{});
    pm.client_urls = m.value("clientURLs", std::vector<std::string>{});
    pm.is_learner = m.value("isLearner", false);
    info.members.push_back(std::move(pm));
  }
  return info;
}

}  // namespace

FetchResult fetch_cluster_members(const std::vector<std::string>& peer_urls,
                                  const net::TlsOptions& tls, std::chrono::milliseconds timeout) {
  net::ClientOptions o;
  o.tls = tls;
  o.connect_timeout = timeout;
  o.timeout = timeout;
  net::HttpClient client(o);
  FetchResult out;
  std::vector<std::string> errors;
  for (const auto& u : peer_urls) {
    std::string base = u;
    while (!base.empty() && base.back() == '/') base.pop_back();
    auto r = client.get(base + "/members");
    if (!r.ok()) {
      errors.push_back(u + ": " + r.error);
      continue;
    }
    if (r.response->status != 200) {
      errors.push_back(u + ": HTTP " + std::to_string(r.response->status));
      continue;
    }
    std::string why;
    if (auto info = parse_members(*r.response, &why)) {
      out.cluster = std::move(info);
      return out;
    }
    errors.push_back(u + ": " + why);
  }
  out.error = "could not retrieve cluster information from the given URLs";
  for (const auto& e : errors) out.error += "; " + e;
  return out;
}

}  // namespace muster::server
