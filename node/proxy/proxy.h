// node/proxy/proxy.h: the proxy an extra joiner becomes.
//
// A proxy is a `muster` process that is not a cluster member: it listens on
// --listen-client-urls and forwards every client request (v3 JSON, watch
// streams, v2 keys with long-poll waits, /v2/members, /health, /version) to a
// live member, learning the members' client URLs from their peer listeners
// (GET <peer-url>/members, as etcd's proxy does).  /metrics answers the
// proxy's own series.  etcd 3.4's proxy forwards v2 only; this one forwards
// everything.  docs/proxy.md describes the behaviour for operators.
//
// Who calls it: node/main, when --proxy is on/readonly, when the data dir
// already holds <data-dir>/proxy, or (bootstrap) when discovery says the
// cluster is full and --discovery-fallback=proxy.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "node/config/config.h"

namespace muster::proxy {

// Runs this process as a proxy until SIGINT/SIGTERM; returns the exit code.
// peer_urls: the cluster's peer URLs (from --initial-cluster or discovery).
// If <data-dir>/proxy/cluster exists, its URLs win (a restarted proxy keeps
// following the cluster it followed before), as in etcd.
int run(const config::Config& cfg, std::vector<std::string> peer_urls);

// True when <data-dir>/proxy exists: the data dir belongs to a proxy.
bool data_dir_holds_proxy(const std::string& data_dir);

}  // namespace muster::proxy
