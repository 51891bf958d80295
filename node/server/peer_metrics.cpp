#include "node/server/peer_metrics.h"

#include "etcdwire/ids.h"
#include "net/client.h"

namespace muster::server {

namespace {

constexpr const char* kSent = "etcd_network_peer_sent_bytes_total";
constexpr const char* kSentHelp = "The total number of bytes sent to peers.";
constexpr const char* kReceived = "etcd_network_peer_received_bytes_total";
constexpr const char* kReceivedHelp = "The total number of bytes received from peers.";
constexpr const char* kFailures = "etcd_network_peer_sent_failures_total";
constexpr const char* kFailuresHelp = "The total number of send failures from peers.";
constexpr const char* kRtt = "etcd_network_peer_round_trip_time_seconds";
constexpr const char* kRttHelp = "Round-Trip-Time histogram between peers";

const std::vector<double>& rtt_buckets() {
  static const std::vector<double> b = metrics::exponential_buckets(0.0001, 2, 16);
  return b;
}

std::string label(const char* name, uint64_t id) {
  return std::string(name) + "=\"" + etcdwire::id_to_hex(id) + "\"";
}

}  // namespace

PeerMetrics::PeerMetrics(metrics::Registry& registry, const Transport& transport, PeerList peers,
                         std::optional<net::TlsOptions> tls, std::chrono::milliseconds interval)
    : reg_(registry),
      transport_(transport),
      peers_(std::move(peers)),
      tls_(std::move(tls)),
      interval_(interval) {
  prober_ = std::thread([this] { probe_loop(); });
}

PeerMetrics::~PeerMetrics() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (prober_.joinable()) prober_.join();
}

void PeerMetrics::collect() {
  for (const auto& [id, urls] : peers_()) {
    const PeerStatus s = transport_.peer_status(id);
    reg_.counter(kSent, kSentHelp, label("To", id)).set(static_cast<double>(s.sent_bytes));
    reg_.counter(kReceived, kReceivedHelp, label("From", id))
        .set(static_cast<double>(s.received_bytes));
    reg_.counter(kFailures, kFailuresHelp, label("To", id))
        .set(static_cast<double>(s.dropped_messages));
    reg_.histogram(kRtt, kRttHelp, rtt_buckets(), label("To", id));
  }
}

void PeerMetrics::probe_loop() {
  net::ClientOptions co;
  if (tls_) co.tls = *tls_;
  co.connect_timeout = co.timeout = std::chrono::seconds(2);
  net::HttpClient client(co);
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, interval_, [this] { return stopping_; })) {
    lock.unlock();
    for (const auto& [id, urls] : peers_()) {
      if (urls.empty()) continue;
      const auto start = std::chrono::steady_clock::now();
      auto r = client.get(urls.front() + "/version");
      if (!r.ok()) continue;
      std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
      reg_.histogram(kRtt, kRttHelp, rtt_buckets(), label("To", id)).observe(took.count());
    }
    lock.lock();
  }
}

}  // namespace muster::server
