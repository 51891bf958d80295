#include "node/server/peer_members.h"

#include <nlohmann/json.hpp>

namespace muster::server {

using nlohmann::json;

std::string members_json(const std::vector<etcdserverpb::Member>& members) {
  json arr = json::array();
  for (const auto& m : members) {
    json j = {
        {"id", m.id()},
        {"name", m.name()},
        {"peerURLs", std::vector<std::string>(m.peerurls().begin(), m.peerurls().end())},
        {"clientURLs", std::vector<std::string>(m.clienturls().begin(), m.clienturls().end())}};
    if (m.islearner()) j["isLearner"] = true;
    arr.push_back(std::move(j));
  }
  return arr.dump() + "\n";
}

}  // namespace muster::server
