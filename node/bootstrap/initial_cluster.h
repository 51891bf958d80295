// node/bootstrap/initial_cluster.h: where a member that has no data yet gets
// its initial cluster from: --initial-cluster as given, a --discovery URL, v3
// discovery (--discovery-token + --discovery-endpoints), or --discovery-srv
// DNS records.  node/main calls resolve_initial_cluster()
// once, before the server starts, and then follows the static path with the
// answer.
//
// Blocking; logs progress.  Any thread.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "node/config/config.h"
#include "node/config/urls.h"

namespace muster::bootstrap {

struct InitialCluster {
  enum class Kind {
    kCluster,  // `initial_cluster` and `token` are set: bootstrap with them
    kFull,     // discovery said the cluster is full: `peer_urls` are its members
    kError,    // `message` says why; exit non-zero
  };
  Kind kind = Kind::kError;
  std::string initial_cluster;  // "name=url,..." as --initial-cluster would say it
  std::string token;            // the cluster token member IDs are computed with
  std::vector<std::string> peer_urls;
  uint64_t size = 0;  // kFull from discovery: the token's size
  // For --discovery-srv with https peers and no --peer-trusted-ca-file: the
  // name peer certificates are verified against (the SRV domain), as etcd.
  std::optional<std::string> peer_tls_server_name;
  std::string message;
};

// REQUIRES: `cfg` passed config validation (at most one bootstrap source).
InitialCluster resolve_initial_cluster(const config::Config& cfg);

// The peer URLs of every member of `cluster` (a parsed initial cluster) but
// the one named `name`, sorted.
std::vector<std::string> other_peer_urls(const config::UrlsMap& cluster, const std::string& name);

// The cluster a node started with --proxy on|readonly forwards to, as etcd:
// the peer URLs of --initial-cluster, or with --discovery (or v3 discovery)
// the registered members of the token (the first `size` by createdIndex or
// create revision), read without registering.  Empty with `*error` set when there are none.
std::vector<std::string> proxy_peer_urls(const config::Config& cfg, std::string* error);

}  // namespace muster::bootstrap
