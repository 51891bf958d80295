// tests/unit/net/net_test_support.h: a Server running on its own io threads,
// a raw-socket client for byte-exact HTTP and a value awaited across
// threads, shared by the net/ tests (and the proxy's).
#pragma once

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "net/server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace muster::net::testing {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Waiting on a condition and temporary directories: tests/support's.
using muster::testing::TempDir;
using muster::testing::wait_until;

// A value set once by one thread and awaited by another with a deadline.
template <class T>
class Slot {
 public:
  void set(T v) {
    std::lock_guard lock(mu_);
    if (!value_) value_ = std::move(v);
    cv_.notify_all();
  }
  std::optional<T> wait(std::chrono::milliseconds limit = 5000ms) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, limit, [&] { return value_.has_value(); });
    return value_;
  }
  bool has() const {
    std::lock_guard lock(mu_);
    return value_.has_value();
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<T> value_;
};

// A net::Server on 127.0.0.1:<free port>, driven by `threads` io threads.
// The handler is the test's; teardown stops the server and joins the threads
// (forcing io to stop if something is still pending after a grace period, so
// a broken server fails the test instead of hanging it).
class RunningServer {
 public:
  RunningServer(Handler handler, ServerOptions options = {}, int threads = 2)
      : guard_(boost::asio::make_work_guard(io_)) {
    server_ = std::make_unique<Server>(io_, std::move(options), std::move(handler));
    port_ = server_->listen("127.0.0.1", 0);
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~RunningServer() { stop(); }
  // Stops the server and joins its threads; io() stays valid (objects of
  // the test that use it can be destroyed after this, before the server).
  void stop() {
    if (!server_) return;
    server_->stop();
    guard_.reset();
    if (!wait_until([&] { return io_.stopped(); }, 5000ms)) {
      ADD_FAILURE() << "io_context still busy 5 s after Server::stop(); forcing it to stop";
      io_.stop();
    }
    for (auto& t : threads_) t.join();
    threads_.clear();
    server_.reset();
  }
  RunningServer(const RunningServer&) = delete;
  RunningServer& operator=(const RunningServer&) = delete;

  Server& server() { return *server_; }
  boost::asio::io_context& io() { return io_; }
  uint16_t port() const { return port_; }
  std::string url(const std::string& target = "/", const std::string& scheme = "http") const {
    return scheme + "://127.0.0.1:" + std::to_string(port_) + target;
  }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::unique_ptr<Server> server_;
  uint16_t port_ = 0;
  std::vector<std::thread> threads_;
};

// A blocking TCP client for byte-exact requests: write what the test says,
// read what comes back, with deadlines.
class RawClient {
 public:
  explicit RawClient(uint16_t port) : socket_(io_) {
    socket_.connect({boost::asio::ip::make_address("127.0.0.1"), port});
  }

  // Writes all of `bytes`; false if the peer reset the connection.
  bool send(const std::string& bytes) {
    boost::system::error_code ec;
    boost::asio::write(socket_, boost::asio::buffer(bytes), ec);
    return !ec;
  }

  // Reads until `pattern` appears in what was read so far (returns true), the
  // peer closes (false), or `limit` passes (false).
  bool read_until(const std::string& pattern, std::chrono::milliseconds limit = 5000ms) {
    auto deadline = Clock::now() + limit;
    while (received_.find(pattern) == std::string::npos) {
      if (!read_some(deadline)) return received_.find(pattern) != std::string::npos;
    }
    return true;
  }

  // Reads until the peer closes the connection; false on timeout.
  bool read_to_eof(std::chrono::milliseconds limit = 5000ms) {
    auto deadline = Clock::now() + limit;
    while (!eof_) {
      if (!read_some(deadline) && !eof_) return false;
    }
    return true;
  }

  const std::string& received() const { return received_; }
  bool eof() const { return eof_; }
  bool reset() const { return reset_; }
  void close() {
    boost::system::error_code ignored;
    socket_.close(ignored);
  }
  // The client's end of stream (FIN); it can still read.
  void shutdown_send() {
    boost::system::error_code ignored;
    socket_.shutdown(boost::asio::ip::tcp::socket::shutdown_send, ignored);
  }

 private:
  // One read with a deadline.  False on timeout, EOF or error.
  bool read_some(Clock::time_point deadline) {
    if (eof_) return false;
    char buf[8192];
    bool done = false;
    boost::system::error_code ec;
    std::size_t n = 0;
    socket_.async_read_some(boost::asio::buffer(buf),
                            [&](boost::system::error_code e, std::size_t k) {
                              ec = e;
                              n = k;
                              done = true;
                            });
    io_.restart();
    // run_one_until may run reactor bookkeeping (a readiness event for the
    // write side) rather than our handler: loop until ours ran.
    while (!done && Clock::now() < deadline) io_.run_one_until(deadline);
    if (!done) {
      socket_.cancel();
      io_.restart();
      io_.run();
      return false;
    }
    received_.append(buf, n);
    if (ec) {
      eof_ = true;
      reset_ = ec == boost::asio::error::connection_reset;
      return false;
    }
    return true;
  }

  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket socket_;
  std::string received_;
  bool eof_ = false, reset_ = false;
};

}  // namespace muster::net::testing
