// tests/support/health.cpp: see health.h.
#include "tests/support/health.h"

#include <thread>

#include "net/client.h"

namespace muster::testing {

std::string wait_healthy(Child& child, const std::string& url, const std::string& body_has,
                         const net::TlsOptions& tls, std::chrono::milliseconds deadline) {
  net::ClientOptions o;
  o.timeout = std::chrono::milliseconds(500);
  o.connect_timeout = std::chrono::milliseconds(500);
  o.tls = tls;
  net::HttpClient http(o);
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (!child.running()) return "process exited during startup; see " + child.log_path();
    auto r = http.get(url);
    if (r.ok() && r.response->status == 200 && r.response->body.find(body_has) != std::string::npos)
      return "";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling interval
  }
  return url + " did not become healthy in time; see " + child.log_path();
}

}  // namespace muster::testing
