// Helpers for the etcd-store interop tests: free loopback ports, child
// processes that cannot outlive the test, and real etcd 3.4 members.
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

#include "net/client.h"

namespace muster::discovery::etcd_test {

using namespace std::chrono_literals;

inline constexpr char kEtcd[] = "/usr/bin/etcd";

inline int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A port that was free a moment ago (callers retry if it is taken meanwhile).
inline uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

// Polls `pred` until it holds or the deadline passes; returns whether it held.
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds deadline = 20s) {
  auto end = std::chrono::steady_clock::now() + deadline;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// A temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/muster-etcdstore-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A child process with its output in a log file.  It gets SIGKILL when the
// test process dies (PR_SET_PDEATHSIG) and when this object is destroyed, so
// nothing outlives a test, failed or not.
class Child {
 public:
  Child() = default;
  ~Child() { kill(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Returns an empty string or why not.
  std::string spawn(std::vector<std::string> args, const std::string& log) {
    kill();
    log_ = log;
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) return "fork failed";
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pid_ = pid;
    return "";
  }

  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }

  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  const std::string& log() const { return log_; }

  // Polls `url` until it answers 200 with `body_has` in its body, the child
  // exits, or the deadline passes.  Returns an empty string or why not.
  std::string wait_healthy(const std::string& url, const std::string& body_has,
                           const net::TlsOptions& tls = {},
                           std::chrono::milliseconds deadline = 20s) {
    net::ClientOptions o;
    o.timeout = 500ms;
    o.connect_timeout = 500ms;
    o.tls = tls;
    net::HttpClient http(o);
    auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
      if (!running()) return "process exited during startup; see " + log_;
      auto r = http.get(url);
      if (r.ok() && r.response->status == 200 &&
          r.response->body.find(body_has) != std::string::npos)
        return "";
      std::this_thread::sleep_for(20ms);  // polling interval, not a wait for an outcome
    }
    return url + " did not become healthy in time; see " + log_;
  }

 private:
  pid_t pid_ = -1;
  std::string log_;
};

// One etcd member on loopback with its own data dir: a single-member cluster
// by default, or a member that bootstraps through a discovery URL.
class EtcdProcess {
 public:
  explicit EtcdProcess(std::string name = "default") : name_(std::move(name)) {}

  // Serves clients over https with this certificate (call before starting).
  void use_tls(std::string cert_file, std::string key_file, std::string ca_file) {
    cert_file_ = std::move(cert_file);
    key_file_ = std::move(key_file);
    tls_.trusted_ca_file = std::move(ca_file);
  }
  // Bootstraps through `url` (etcd's --discovery) instead of --initial-cluster.
  void use_discovery(std::string url) { discovery_ = std::move(url); }
  // etcd's own heartbeat and election timeouts (100 ms, 1 s) instead of the
  // fast ones that suit a single member; for multi-member clusters.
  void use_default_timing() {
    heartbeat_ms_ = "100";
    election_ms_ = "1000";
  }
  const std::string& dir() const { return dir_.path(); }

  // Picks fresh ports and starts etcd without waiting for it.
  std::string spawn_fresh() {
    client_port_ = free_port();
    peer_port_ = free_port();
    if (client_port_ == 0 || peer_port_ == 0 || client_port_ == peer_port_) return "no free ports";
    return spawn();
  }

  // Starts etcd on fresh ports and waits for /health (retrying with other
  // ports if one was taken meanwhile).  Returns an empty string or why not.
  std::string start_fresh() {
    std::string why;
    for (int attempt = 0; attempt < 5; ++attempt) {
      why = spawn_fresh();
      if (why.empty()) why = wait_healthy();
      if (why.empty()) return "";
      stop();
      std::error_code ec;
      std::filesystem::remove_all(dir() + "/data", ec);
    }
    return why;
  }

  // (Re)starts etcd on the same ports and data dir; waits for /health.
  std::string start() {
    std::string why = spawn();
    return why.empty() ? wait_healthy() : why;
  }

  std::string wait_healthy(std::chrono::milliseconds deadline = 20s) {
    return child_.wait_healthy(endpoint() + "/health", "\"true\"", tls_, deadline);
  }

  void stop() { child_.kill(); }

  std::string endpoint() const {
    return (cert_file_.empty() ? "http://127.0.0.1:" : "https://127.0.0.1:") +
           std::to_string(client_port_);
  }
  uint16_t client_port() const { return client_port_; }

 private:
  std::string spawn() {
    std::string client = endpoint();
    std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
    std::vector<std::string> args = {kEtcd,
                                     "--name",
                                     name_,
                                     "--data-dir",
                                     dir() + "/data",
                                     "--listen-client-urls",
                                     client,
                                     "--advertise-client-urls",
                                     client,
                                     "--listen-peer-urls",
                                     peer,
                                     "--initial-advertise-peer-urls",
                                     peer,
                                     "--heartbeat-interval",
                                     heartbeat_ms_,
                                     "--election-timeout",
                                     election_ms_};
    if (discovery_.empty()) {
      args.insert(args.end(), {"--initial-cluster", name_ + "=" + peer});
    } else {
      args.insert(args.end(), {"--discovery", discovery_});
    }
    if (!cert_file_.empty())
      args.insert(args.end(), {"--cert-file", cert_file_, "--key-file", key_file_});
    return child_.spawn(std::move(args), dir() + "/etcd.log");
  }

  std::string name_;
  TempDir dir_;
  std::string cert_file_, key_file_, discovery_;
  std::string heartbeat_ms_ = "20", election_ms_ = "200";
  net::TlsOptions tls_;
  uint16_t client_port_ = 0, peer_port_ = 0;
  Child child_;
};

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
