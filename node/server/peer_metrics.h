// node/server/peer_metrics.h: etcd's etcd_network_peer_* families, which
// etcd's dashboard (peer traffic, peer round trip time) and alert rules
// (etcdMembersDown, etcdMemberCommunicationSlow) query:
//
//   etcd_network_peer_sent_bytes_total{To}       counter  \  from the
//   etcd_network_peer_received_bytes_total{From} counter   > transport's
//   etcd_network_peer_sent_failures_total{To}    counter  /  PeerStatus
//   etcd_network_peer_round_trip_time_seconds{To} histogram, 0.0001 * 2^n,
//       16 buckets, observed by a prober
//
// Label values are member IDs in etcd's hex.  As etcd's prober (which
// fetches /raft/probing on each peer URL every few seconds), a thread here
// fetches GET <peer URL>/version from each peer every `probe_interval` and
// observes the round trip; a probe that fails is not observed.  "Sent
// failures" are the messages the transport queued for a peer and could not
// write (dropped), etcd's meaning: a send that did not reach the peer.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/metrics.h"
#include "net/tls.h"
#include "node/server/transport.h"

namespace muster::server {

class PeerMetrics {
 public:
  // The current peers (not this member) and their peer URLs.
  using PeerList = std::function<std::map<uint64_t, std::vector<std::string>>()>;

  // Starts the prober thread.  REQUIRES: registry, transport and `peers`
  // outlive this object.
  PeerMetrics(metrics::Registry& registry, const Transport& transport, PeerList peers,
              std::optional<net::TlsOptions> peer_client_tls,
              std::chrono::milliseconds probe_interval = std::chrono::seconds(5));
  // Stops and joins the prober.
  ~PeerMetrics();
  PeerMetrics(const PeerMetrics&) = delete;
  PeerMetrics& operator=(const PeerMetrics&) = delete;

  // Brings the byte and failure counters up to the transport's figures;
  // called before /metrics is rendered.  Any thread.
  void collect();

 private:
  void probe_loop();

  metrics::Registry& reg_;
  const Transport& transport_;
  PeerList peers_;
  std::optional<net::TlsOptions> tls_;
  std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread prober_;
};

}  // namespace muster::server
