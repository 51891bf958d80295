// discovery/service.h: muster-discovery's HTTP API.
//
// Routes (wire facts: shared/research/discovery.md sections 1-2):
//   /new?size=N           any method: create a token -> 201 "<public-url>/<token>\n"
//   /health /version /metrics /robots.txt
//   [<prefix>]/<token>[/...]  the subset of etcd's v2 keys API that etcd's
//                         discovery client speaks (GET, PUT ?prevExist=false,
//                         GET ?wait=true&waitIndex=N, DELETE), with v2 JSON,
//                         X-Etcd-Index and v2 error JSON.
// The Service is a net::Handler; it never blocks the caller's thread except
// for reads of the embedded store's memory.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/metrics.h"
#include "discovery/token_store.h"
#include "net/server.h"

namespace boost::asio {
class io_context;
}

namespace muster::discovery {

struct ServiceOptions {
  std::string public_url;          // base for new token URLs, no trailing '/'
  uint32_t max_size = 9;           // largest size a token may have
  uint32_t max_registrations = 0;  // per token; 0 = 4 * size + 16
  int64_t token_ttl_ms = 168LL * 3600 * 1000;
  uint32_t new_rate_per_minute = 60;   // tokens per client address; 0 = unlimited
  int64_t wait_timeout_ms = 30'000;    // long-poll: empty 200 after this
  std::size_t max_value_bytes = 4096;  // a registration value
};

class Service {
 public:
  Service(boost::asio::io_context& io, ServiceOptions options, std::shared_ptr<TokenStore> store);
  ~Service();

  // The request handler to give net::Server.
  void handle(const std::shared_ptr<net::Exchange>& ex);
  // Called when the server stops: answers open long-polls with an empty 200
  // (etcd's client re-polls, and reaches a restarted service).
  void stopping();

  metrics::Registry& metrics() { return metrics_; }
  uint32_t max_registrations_for(uint32_t size) const;

 private:
  struct Poll;
  void handle_new(const std::shared_ptr<net::Exchange>& ex);
  void handle_token(const std::shared_ptr<net::Exchange>& ex);
  bool allow_new(const std::string& remote);
  metrics::Histogram& make_store_write_histogram();
  void observe_store_write(std::chrono::steady_clock::time_point submitted);
  void create_named(const std::shared_ptr<net::Exchange>& ex, std::string token, uint32_t size,
                    int attempts, bool generated);

  boost::asio::io_context& io_;
  ServiceOptions options_;
  std::shared_ptr<TokenStore> store_;
  metrics::Registry metrics_;
  metrics::Histogram& store_write_;
  std::mutex rate_mu_;
  // Per client address: window start (minute) and tokens created in it.
  std::map<std::string, std::pair<int64_t, uint32_t>> rate_;
  std::mutex polls_mu_;
  std::map<Poll*, std::weak_ptr<Poll>> polls_;
  bool stopping_ = false;
};

// 32 lowercase hex characters from OpenSSL's CSPRNG.
std::string generate_token();

}  // namespace muster::discovery
