#include "node/proxy/cluster_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/atomic_file.h"

namespace muster::proxy {

namespace fs = std::filesystem;
using nlohmann::json;

std::string proxy_dir(const std::string& data_dir) { return data_dir + "/proxy"; }
std::string cluster_file_path(const std::string& data_dir) {
  return proxy_dir(data_dir) + "/cluster";
}

std::optional<std::vector<std::string>> read_cluster_file(const std::string& data_dir,
                                                          std::string* error) {
  std::string path = cluster_file_path(data_dir);
  std::ifstream in(path);
  if (!in) {
    if (errno != ENOENT && error) *error = "cannot read " + path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("PeerURLs") || !j["PeerURLs"].is_array()) {
    if (error) *error = path + " is not {\"PeerURLs\":[...]}";
    return std::nullopt;
  }
  std::vector<std::string> urls;
  for (const auto& u : j["PeerURLs"]) {
    if (!u.is_string()) {
      if (error) *error = path + " holds a peer URL that is not a string";
      return std::nullopt;
    }
    urls.push_back(u.get<std::string>());
  }
  return urls;
}

std::string write_cluster_file(const std::string& data_dir,
                               const std::vector<std::string>& peer_urls) {
  std::error_code ec;
  std::string dir = proxy_dir(data_dir);
  fs::create_directories(dir, ec);
  if (ec) return "cannot create " + dir + ": " + ec.message();
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  std::string text = json{{"PeerURLs", peer_urls}}.dump() + "\n";
  return base::write_file_atomically(cluster_file_path(data_dir), text);
}

}  // namespace muster::proxy
