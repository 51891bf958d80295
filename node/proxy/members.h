// node/proxy/members.h: learning the cluster from a member's peer listener.
//
// A member serves GET <peer-url>/members on --listen-peer-urls: a JSON array
// of {"id","name","peerURLs":[...],"clientURLs":[...]} (etcd's shape; "id"
// is a JSON number in etcd, a string is accepted too).  A member that has not
// published its client URLs yet has no "clientURLs".
//
// fetch_cluster() blocks (it is called from the proxy's refresher thread,
// never from an I/O thread).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/client.h"

namespace muster::proxy {

struct MemberInfo {
  std::string name;
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;
};

// Parses the /members answer.  nullopt and a sentence in *error when it is
// not an array of member objects.
std::optional<std::vector<MemberInfo>> parse_members(std::string_view body, std::string* error);

struct ClusterView {
  std::vector<std::string> peer_urls;    // every member's, sorted, unique
  std::vector<std::string> client_urls;  // every published member's, sorted, unique
  std::string source;                    // the peer URL that answered
};

// Asks each peer URL in turn (GET <url>/members) and returns the first
// answer; nullopt and the last failure in *error when none answered.
std::optional<ClusterView> fetch_cluster(const std::vector<std::string>& peer_urls,
                                         net::HttpClient& client, std::string* error);

}  // namespace muster::proxy
