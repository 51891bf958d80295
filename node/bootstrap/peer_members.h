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
// (--initial-cluster-state existing) for its ID and the cluster ID, at
// startup, with the blocking fetch_cluster(); and the proxy's refresher for
// the members' client URLs, on its event loop, with the asynchronous one.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/client.h"
#include "net/http_client.h"

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

// The view one peer gave: its answer to GET <base>/members.  nullopt and a
// sentence in *error when the call failed or the answer is not a member list.
std::optional<ClusterView> cluster_view(const std::string& base, const net::ClientResult& answer,
                                        std::string* error);

// Asks each peer URL in turn (GET <url>/members) and returns the first
// answer; nullopt and the last failure in *error when none answered.
// Blocks: for startup, before any event loop runs.
std::optional<ClusterView> fetch_cluster(const std::vector<std::string>& peer_urls,
                                         net::HttpClient& client, std::string* error);

// The same on an event loop: `done` runs once, on a strand of the client's
// executor, with the view or the last failure.  The handle cancels (done
// then runs with an error).
using ClusterHandler = std::function<void(std::optional<ClusterView>, std::string error)>;
std::shared_ptr<net::HttpCall> fetch_cluster(net::AsyncHttpClient& client,
                                             std::vector<std::string> peer_urls,
                                             ClusterHandler done);

}  // namespace muster::bootstrap
