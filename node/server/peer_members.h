// node/server/peer_members.h: the member list a member serves on its peer
// URLs (`GET <peer-url>/members`), as etcd's peer API does: a JSON array of
// {"id":<number>,"name","peerURLs":[...],"clientURLs":[...]} ("isLearner"
// only for learners), sent with the header X-Etcd-Cluster-ID.  Joining
// members and proxies read it with node/bootstrap/peer_members.h.
#pragma once

#include <string>
#include <vector>

#include "node/storage/pb.h"

namespace muster::server {

// The JSON body of GET /members.
std::string members_json(const std::vector<etcdserverpb::Member>& members);

}  // namespace muster::server
