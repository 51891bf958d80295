// node/bootstrap/peer_members.h: learning the cluster from a member's peer
// listener.
//
// A member serves GET <peer-url>/members on --listen-peer-urls (as etcd's
// peer API; members_json() below writes it): a JSON array of
// {"id","name","peerURLs":[...],"clientURLs":[...]} with the header
// X-Etcd-Cluster-ID.  "id" is a JSON number in etcd; a hex string (the v2
// members API's form) is accepted too.  A member that has not published its
// name and client URLs yet has neither field; a learner has "isLearner".
//
// Who uses it: a member joining a running cluster
// (--initial-cluster-state existing) for its ID and the cluster ID, and the
// proxy for the members' client URLs.  fetch_cluster() blocks: call it from
// a thread that may wait (startup, the proxy's refresher), never from an I/O
// thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/client.h"

namespace muster::bootstrap {

struct MemberInfo {
  uint64_t id = 0;
  std::string name;
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;
  bool is_learner = false;
};

// The /members answer: {"id":<number>,"name","peerURLs","clientURLs"} per
// member, "isLearner" only for learners.
std::string members_json(const std::vector<MemberInfo>& members);

// Parses the /members answer.  nullopt and a sentence in *error when it is
// not an array of member objects.
std::optional<std::vector<MemberInfo>> parse_members(std::string_view body, std::string* error);

struct ClusterView {
  uint64_t cluster_id = 0;  // from X-Etcd-Cluster-ID; 0 when absent
  std::vector<MemberInfo> members;
  std::vector<std::string> peer_urls;    // every member's, sorted, unique
  std::vector<std::string> client_urls;  // every published member's, sorted, unique
  std::string source;                    // the peer URL that answered
};

// Asks each peer URL in turn (GET <url>/members) and returns the first
// answer; nullopt and the last failure in *error when none answered.
std::optional<ClusterView> fetch_cluster(const std::vector<std::string>& peer_urls,
                                         net::HttpClient& client, std::string* error);

}  // namespace muster::bootstrap
