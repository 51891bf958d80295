// Helpers for the etcd-store interop tests: a TCP forwarder that can cut
// connections, on top of what every C++ test shares (tests/support: free
// ports, temporary directories, child processes, a real etcd 3.4).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "tests/support/etcd.h"
#include "tests/support/health.h"
#include "tests/support/ports.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace muster::discovery::etcd_test {

using namespace std::chrono_literals;

using muster::testing::Child;
using muster::testing::EtcdProcess;
using muster::testing::free_port;
using muster::testing::kEtcd;
using muster::testing::TempDir;
using muster::testing::wait_until;

inline int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A TCP forwarder: each accepted connection goes to the next upstream port
// in turn (a round-robin load balancer).  cut() drops every connection and
// refuses new ones until restore(), standing for a network partition.
class TcpProxy {
 public:
  // Listens on `port` (0: any free port).
  explicit TcpProxy(std::vector<uint16_t> upstreams, uint16_t port = 0)
      : upstreams_(std::move(upstreams)), per_upstream_(upstreams_.size()) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a = loopback(port);
    socklen_t len = sizeof a;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listen_fd_, 64) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("proxy: cannot listen");
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~TcpProxy() {
    stop_ = true;
    acceptor_.join();
    std::vector<std::thread> pumps;
    {
      std::lock_guard lock(mu_);
      pumps.swap(pumps_);
    }
    for (auto& t : pumps) t.join();
    ::close(listen_fd_);
  }
  uint16_t port() const { return port_; }
  void cut() { cut_ = true; }
  void restore() { cut_ = false; }
  int open_connections() const { return open_; }
  // Connections forwarded to upstreams[i] so far.
  int connections_to(std::size_t i) const { return per_upstream_[i]; }

 private:
  static sockaddr_in loopback(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    return a;
  }

  void accept_loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int client = ::accept(listen_fd_, nullptr, nullptr);
      if (client < 0) continue;
      if (cut_) {
        ::close(client);
        continue;
      }
      std::size_t which = next_++ % upstreams_.size();
      int up = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a = loopback(upstreams_[which]);
      if (up < 0 || ::connect(up, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        if (up >= 0) ::close(up);
        ::close(client);
        continue;
      }
      ++open_;
      ++per_upstream_[which];
      std::lock_guard lock(mu_);
      pumps_.emplace_back([this, client, up] { pump(client, up); });
    }
  }

  void pump(int a, int b) {
    char buf[16384];
    while (!stop_ && !cut_) {
      pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
      if (::poll(p, 2, 20) <= 0) continue;
      bool broken = false;
      for (int i = 0; i < 2 && !broken; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t n = ::read(p[i].fd, buf, sizeof buf);
        if (n <= 0) {
          broken = true;
          break;
        }
        int to = i == 0 ? b : a;
        for (ssize_t off = 0; off < n && !broken;) {
          ssize_t w = ::write(to, buf + off, std::size_t(n - off));
          if (w <= 0) broken = true;
          off += w;
        }
      }
      if (broken) break;
    }
    ::close(a);
    ::close(b);
    --open_;
  }

  std::vector<uint16_t> upstreams_;
  std::vector<std::atomic<int>> per_upstream_;
  std::size_t next_ = 0;  // acceptor thread only
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false}, cut_{false};
  std::atomic<int> open_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> pumps_;
};

}  // namespace muster::discovery::etcd_test
