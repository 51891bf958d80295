// node/proxy/director.h: which member client URLs the proxy may use now.
//
// The refresher replaces the list every --proxy-refresh-interval; the
// forwarder asks for the usable ones, in order of preference, and reports a
// URL that failed (could not connect, or broke before answering).  A failed
// URL is left out for --proxy-failure-wait, then tried again (etcd's
// director does the same).  When every URL is in its failure wait there are
// zero usable endpoints and the forwarder answers 503 (etcd: "zero endpoints
// currently available").
//
// Thread-safe (one mutex); the clock is injected for tests.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace muster::proxy {

class Director {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Director(std::chrono::milliseconds failure_wait,
                    std::function<Clock::time_point()> now = &Clock::now);

  // Replaces the list; order = preference.  A URL that stays in the list
  // keeps its failure mark (a refresh does not resurrect a dead member early).
  void set_endpoints(std::vector<std::string> urls);

  // The URLs not in their failure wait, in preference order.
  std::vector<std::string> available() const;
  // All URLs, failed or not.
  std::vector<std::string> all() const;

  // `url` failed now: skip it for the failure wait.
  void failed(const std::string& url);
  // `url` answered: it goes first until it fails (so the proxy keeps using
  // one member while it works, as a client library would).
  void succeeded(const std::string& url);

 private:
  const std::chrono::milliseconds failure_wait_;
  const std::function<Clock::time_point()> now_;
  mutable std::mutex mu_;
  std::vector<std::string> urls_;
  std::map<std::string, Clock::time_point> failed_until_;
};

}  // namespace muster::proxy
