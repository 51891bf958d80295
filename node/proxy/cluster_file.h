// node/proxy/cluster_file.h: what a proxy remembers across restarts.
//
// Format (etcd 3.4's, so an etcd proxy's data dir reads the same):
//   <data-dir>/proxy/          directory, 0700; its existence marks the data
//                              dir as a proxy's
//   <data-dir>/proxy/cluster   JSON {"PeerURLs":["http://10.0.0.1:2380",...]}
// Updates write <data-dir>/proxy/cluster.bak, fsync it, then rename it over
// `cluster`, so a crash leaves either the old or the new list, never half.
//
// Any thread; callers serialise writes (the proxy has one refresher).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace muster::proxy {

std::string proxy_dir(const std::string& data_dir);
std::string cluster_file_path(const std::string& data_dir);

// The stored peer URLs.  nullopt when there is no file; an error sentence in
// *error (and nullopt) when the file exists but is not the JSON above.
std::optional<std::vector<std::string>> read_cluster_file(const std::string& data_dir,
                                                          std::string* error);

// Creates <data-dir>/proxy (0700) if needed and stores `peer_urls`.  Returns
// "" or a sentence naming the file that could not be written.
std::string write_cluster_file(const std::string& data_dir,
                               const std::vector<std::string>& peer_urls);

}  // namespace muster::proxy
