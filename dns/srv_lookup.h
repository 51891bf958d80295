// SRV discovery end to end: resolve a member's advertise peer URLs, query
// the SRV services, resolve every target, and apply etcd's rules
// (dns/srv.h).  Asynchronous versions run on a Resolver's io_context; the
// synchronous ones run their own io_context and are what the `muster`
// bootstrap and `musterctl srv` call.
#pragma once

#include <functional>
#include <string>

#include "dns/resolver.h"
#include "dns/result.h"
#include "dns/srv.h"

namespace muster::dns {

// What a member starting with --discovery-srv knows.  Defaults are etcd's
// flag defaults.
struct SrvClusterRequest {
  std::string domain;                                         // --discovery-srv
  std::string srv_name;                                       // --discovery-srv-name
  std::string member_name = "default";                        // --name
  std::string advertise_peer_urls = "http://localhost:2380";  // --initial-advertise-peer-urls
  ResolverOptions resolver;                                   // --dns-server, timeouts
};

struct SrvClientRequest {
  std::string domain;    // --discovery-srv
  std::string srv_name;  // --discovery-srv-name
  ResolverOptions resolver;
  UniformRandom random;  // weighted order; empty: make_system_random()
};

// The initial cluster the member would build, or the error it would stop
// with.  Advertise hosts are resolved like SRV targets (first IPv4 address,
// else the first address); a host that does not resolve is an error, as in
// etcd.
void async_resolve_server_cluster(Resolver& resolver, const SrvClusterRequest& request,
                                  std::function<void(Result<SrvCluster>)> handler);
Result<SrvCluster> resolve_server_cluster(const SrvClusterRequest& request);

// Client endpoints in RFC 2782 order (https first), or kNoRecords if neither
// `_etcd-client-ssl[-S]` nor `_etcd-client[-S]` gives one.
void async_resolve_client_endpoints(Resolver& resolver, const SrvClientRequest& request,
                                    std::function<void(Result<ClientEndpoints>)> handler);
Result<ClientEndpoints> resolve_client_endpoints(const SrvClientRequest& request);

}  // namespace muster::dns
