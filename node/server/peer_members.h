// node/server/peer_members.h: the member list as etcd serves it on peer URLs
// (`GET <peer-url>/members`), both sides.
//
// Who uses it: the member answers the request on its peer listener (through
// Transport::set_http_handler); a member joining an existing cluster
// (--initial-cluster-state existing) and a proxy read it to learn the
// cluster ID, the member IDs and the members' client URLs.
//
// Wire shape, as etcd 3.4: a JSON array of
//   {"id":"<hex>","name":"...","peerURLs":[...],"clientURLs":[...]}
// ("isLearner":true only for learners) and the header X-Etcd-Cluster-ID.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "net/tls.h"
#include "node/storage/kv.pb.h"

namespace muster::server {

struct PeerMember {
  uint64_t id = 0;
  std::string name;
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;
  bool is_learner = false;
};

struct ClusterInfo {
  uint64_t cluster_id = 0;
  std::vector<PeerMember> members;
};

// The JSON body of GET /members.
std::string members_json(const std::vector<etcdserverpb::Member>& members);

// Asks each URL in turn (GET <url>/members) until one answers with a member
// list; `error` says why none did.  `tls` is used for https URLs.
struct FetchResult {
  std::optional<ClusterInfo> cluster;
  std::string error;
};
FetchResult fetch_cluster_members(const std::vector<std::string>& peer_urls,
                                  const net::TlsOptions& tls,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(2));

}  // namespace muster::server
