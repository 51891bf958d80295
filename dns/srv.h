// DNS SRV -> cluster membership, etcd's rules, as pure functions.
//
// Nothing here touches the network: the resolver (dns/resolver.h) and the
// lookup orchestration (dns/srv_lookup.h) feed these functions with what DNS
// answered, so every rule below is unit-testable without a DNS server.
//
// Server side (`--discovery-srv <domain>`, etcd's srv.GetCluster):
//   query `_etcd-server-ssl[-<srv-name>]._tcp.<domain>` (https) and
//   `_etcd-server[-<srv-name>]._tcp.<domain>` (http); resolve every target;
//   the target whose resolved "ip:port" equals one of the member's own
//   advertise peer URLs (resolved the same way, IPv4 preferred) is the local
//   member and gets `--name`; the others get placeholder names.  Where we
//   deliberately differ from etcd (see docs/dns.md):
//     - plain `_etcd-server` records alone work (etcd 3.4 ignores them);
//     - placeholder names are unique across both services (etcd restarts the
//       counter per service, merging two peers into one member);
//     - records are ordered deterministically (priority, then weight
//       descending, then target and port), so every member and `musterctl
//       srv` derive the same string;
//     - identical URLs are listed once.
// Client side (`_etcd-client-ssl`, `_etcd-client`): endpoints in RFC 2782
// priority/weight order, https first, deduplicated; host names keep the
// trailing dot (absolute, as etcd >= 3.5.4); IP-literal targets give plain
// (IPv6: bracketed) URLs.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dns/result.h"

namespace muster::dns {

// One SRV resource record.  `target` as DNS returned it: c-ares strips the
// root dot, but a trailing dot is tolerated everywhere.
struct SrvRecord {
  std::string target;
  std::uint16_t port = 0;
  std::uint16_t priority = 0;
  std::uint16_t weight = 0;
};

enum class SrvRole { kServer, kClient };

// One of the two services etcd queries for a role.
struct SrvService {
  std::string scheme;      // "https" or "http"
  std::string service;     // "etcd-server-ssl-foo"
  std::string query_name;  // "_etcd-server-ssl-foo._tcp.example.com" (a rooted
                           // domain "example.com." keeps its dot here)
};

// The services for `role`, in etcd's order: https first, then http.
// `srv_name` is `--discovery-srv-name` (empty: no suffix).
std::vector<SrvService> srv_services(SrvRole role, std::string_view domain,
                                     std::string_view srv_name);

// `name` without ONE trailing dot, if it has one.
std::string trim_trailing_dot(std::string_view name);

// True if `host` (optionally with a trailing dot, optionally bracketed) is an
// IPv4 or IPv6 address literal rather than a host name.
bool is_ip_literal(std::string_view host);

// "host:port", with IPv6 literals bracketed: "[::1]:2380".
std::string join_host_port(std::string_view host, std::uint16_t port);

// "ip:port" / "[ip]:port": the key by which etcd matches SRV targets
// against advertise peer URLs.
std::string address_key(const boost::asio::ip::address& address, std::uint16_t port);

// The address etcd's matching uses: the first IPv4 address, else the first
// address (Go's ResolveTCPAddr).  nullopt if `addresses` is empty.
std::optional<boost::asio::ip::address> preferred_address(
    const std::vector<boost::asio::ip::address>& addresses);

// A peer URL as etcd accepts it in --initial-advertise-peer-urls:
// scheme://host:port with scheme http or https, no path (a lone "/" is fine).
struct PeerUrl {
  std::string scheme;
  std::string host;  // without brackets
  std::uint16_t port = 0;
  std::string text;  // as given
};
Result<PeerUrl> parse_peer_url(std::string_view url);
// Comma-separated list, as the flag takes it.
Result<std::vector<PeerUrl>> parse_peer_urls(std::string_view comma_list);

// ---- server side -------------------------------------------------------

// What resolving one SRV target gave.
struct ResolvedTarget {
  SrvRecord record;
  std::optional<std::string> key;  // address_key() of the preferred address
  std::string error;               // why there is no key
};

// The outcome of one service's SRV query plus its targets' address lookups.
struct ServerLookup {
  SrvService service;
  std::optional<Error> error;  // the SRV query itself failed
  std::vector<ResolvedTarget> targets;
};

// The member running the bootstrap.
struct LocalMember {
  std::string name;
  // address_key() of each advertise peer URL -> that URL.
  std::map<std::string, PeerUrl> keys;
};

struct ClusterEntry {
  std::string name;
  std::string url;  // scheme://<target without trailing dot>:<SRV port>
  bool local = false;
};

struct SrvCluster {
  // The SRV domain (without a trailing dot).  When the cluster has https
  // peers and no --peer-trusted-ca-file is given, peers must present
  // certificates valid for this name (etcd's rule; see
  // peer_tls_server_name()).
  std::string domain;
  std::vector<ClusterEntry> entries;
  // "name=url,name=url,...": what --initial-cluster would have said.
  std::string initial_cluster;
  // Records or services that failed while others succeeded (etcd logs these
  // as "failed to resolve during SRV discovery" and carries on).
  std::vector<std::string> warnings;

  bool has_https() const;
  // The TLS server name to verify peers against: the domain if any entry is
  // https and no trusted CA file is configured, else nullopt.
  std::optional<std::string> peer_tls_server_name(bool trusted_ca_configured) const;
};

// Applies etcd's rules to the lookups (https service first, as srv_services
// returns them).  Errors: kNoRecords when no entry survives (the message lists
// every cause) -- or kTimeout / kUnreachable / kBadResponse when every SRV
// query failed and one of them failed that way, so callers can tell "DNS
// has no records" from "could not ask DNS"; kMemberNotFound when none of them is the local member
// (`cannot find local etcd member "<name>" in SRV records`, with the
// resolved addresses that failed to match).
Result<SrvCluster> build_server_cluster(std::string_view domain, const LocalMember& local,
                                        const std::vector<ServerLookup>& lookups);

// ---- client side -------------------------------------------------------

// Uniform random integer in [0, max_inclusive].  Injected so that tests of
// the weighted order are deterministic.
using UniformRandom = std::function<std::uint32_t(std::uint32_t max_inclusive)>;
// A UniformRandom backed by its own std::mt19937 seeded from std::random_device.
UniformRandom make_system_random();

// RFC 2782 order: ascending priority; within one priority, repeated weighted
// random selection (zero-weight records first in the pool, so they are picked
// only when the random number is 0 or when nothing else is left).
std::vector<SrvRecord> order_by_priority_and_weight(std::vector<SrvRecord> records,
                                                    const UniformRandom& random);

struct ClientLookup {
  SrvService service;
  std::optional<Error> error;
  std::vector<SrvRecord> records;
};

struct ClientEndpoints {
  std::string domain;  // without trailing dot: the TLS server name for secure discovery
  std::vector<std::string> endpoints;
  std::vector<std::string> warnings;
};

// The endpoint URL for one record: "https://host.example.com.:2379",
// "http://10.0.0.1:2379", "http://[::1]:2379".
std::string client_endpoint_url(std::string_view scheme, const SrvRecord& record);

// https records first, then http, each in RFC 2782 order; duplicates
// (case-insensitive) dropped.  Error only if neither service gave an
// endpoint: kNoRecords, or a transient kind as for build_server_cluster.
Result<ClientEndpoints> build_client_endpoints(std::string_view domain,
                                               const std::vector<ClientLookup>& lookups,
                                               const UniformRandom& random);

}  // namespace muster::dns
