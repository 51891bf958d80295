// Helpers shared by the v3 API tests: base64, a V3Api behind a loopback
// server, one-call requests, and a reader for streamed responses.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "etcdwire/v3_json.h"
#include "net/client.h"
#include "net/server.h"
#include "node/server/v3_api.h"
#include "tests/support/wait.h"

namespace muster::server::testing {

using json = nlohmann::json;
using namespace std::chrono_literals;

// Bytes as the gateway writes them (etcdwire/v3_json.h).
inline std::string b64(std::string_view in) { return etcdwire::base64_encode(in); }

// A V3Api behind a net::Server on 127.0.0.1, with its io thread.
// The v3 service's options for tests: small limits, short timeouts, so the
// tests reach them quickly.  Used by the gateway and the gRPC tests alike.
inline V3Service::Options test_options() {
  V3Service::Options o;
  o.max_request_bytes = 4096;
  o.max_txn_ops = 8;
  o.request_timeout = 1000ms;
  o.health_timeout = 300ms;
  o.watch_progress_interval = 200ms;
  return o;
}

class ApiServer {
 public:
  explicit ApiServer(MemberApi& member, V3Api::Options opts = test_options())
      : api_(member, opts, registry_) {
    net::ServerOptions so;
    so.body_limit = V3Api::recommended_body_limit(opts);
    server_ = std::make_unique<net::Server>(io_, so, [this](std::shared_ptr<net::Exchange> ex) {
      if (!api_.handle(ex)) ex->respond(net::Response::text(404, "not the v3 API\n"));
    });
    port_ = server_->listen("127.0.0.1", 0);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~ApiServer() {
    // Stop, then let the io thread run the cancel callbacks of open streams
    // before the API goes away.
    server_->stop();
    guard_.reset();
    thread_.join();
  }

  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  metrics::Registry& registry() { return registry_; }

 private:
  metrics::Registry registry_;
  V3Api api_;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{
      io_.get_executor()};
  std::unique_ptr<net::Server> server_;
  uint16_t port_ = 0;
  std::thread thread_;
};

struct Reply {
  int status = 0;
  json body;
  std::string raw;
  std::string content_type;
};

inline Reply call(net::HttpClient& c, const std::string& url, const std::string& body,
                  const std::string& method = "POST") {
  net::ClientResult r = c.request(method, url, body);
  Reply out;
  if (!r.ok()) {
    ADD_FAILURE() << "request to " << url << " failed: " << r.error;
    return out;
  }
  out.status = r.response->status;
  out.raw = r.response->body;
  out.content_type = r.response->headers.get("Content-Type").value_or("");
  out.body = json::parse(out.raw, nullptr, false);
  return out;
}

// Lines of a streamed response, collected on a thread of their own.
class StreamReader {
 public:
  StreamReader(const std::string& url, const std::string& body) {
    thread_ = std::thread([this, url, body] {
      net::HttpClient c;
      c.stream(
          "POST", url, body, {},
          [this](const net::Response& head) {
            std::lock_guard l(mu_);
            status_ = head.status;
            return true;
          },
          [this](std::string_view data) {
            std::lock_guard l(mu_);
            partial_ += data;
            size_t nl;
            while ((nl = partial_.find('\n')) != std::string::npos) {
              lines_.push_back(json::parse(partial_.substr(0, nl), nullptr, false));
              partial_.erase(0, nl + 1);
            }
            cv_.notify_all();
            return !stop_;
          },
          20s);
      std::lock_guard l(mu_);
      ended_ = true;
      cv_.notify_all();
    });
  }
  ~StreamReader() {
    stop();
    thread_.join();
  }
  // Hangs up: the reader notices on the next chunk, which `wake` causes.
  void hang_up(const std::function<void()>& wake) {
    stop();
    for (int i = 0; i < 50 && !wait_ended(100ms); ++i) wake();
    EXPECT_TRUE(wait_ended(0ms)) << "the stream did not end";
  }
  // The next line within the deadline, or null.
  json next(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock l(mu_);
    cv_.wait_for(l, timeout, [&] { return !lines_.empty() || ended_; });
    if (lines_.empty()) return nullptr;
    json j = std::move(lines_.front());
    lines_.pop_front();
    return j;
  }
  // Asks the reader to hang up on the next chunk it receives.
  void stop() {
    std::lock_guard l(mu_);
    stop_ = true;
  }
  bool wait_ended(std::chrono::milliseconds timeout) {
    std::unique_lock l(mu_);
    return cv_.wait_for(l, timeout, [&] { return ended_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<json> lines_;
  std::string partial_;
  int status_ = 0;
  bool stop_ = false, ended_ = false;
  std::thread thread_;
};

// Waiting on a condition with a deadline: tests/support's.
using ::muster::testing::wait_until;

}  // namespace muster::server::testing
