#include "tests/interop/dns/test_support.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace muster::dns::testing {
namespace {

using Clock = std::chrono::steady_clock;

// RAII for a file descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// 127.0.0.1 or ::1 with `port`.
struct Loopback {
  sockaddr_storage storage{};
  socklen_t length = 0;
  const sockaddr* addr() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

Loopback loopback(bool v6, std::uint16_t port) {
  Loopback l;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&l.storage);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    a->sin6_addr = in6addr_loopback;
    l.length = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&l.storage);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    l.length = sizeof *a;
  }
  return l;
}

Fd bound_socket(int type, std::uint16_t port, bool v6 = false) {
  Fd fd(::socket(v6 ? AF_INET6 : AF_INET, type | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return Fd();
  const Loopback a = loopback(v6, port);
  if (::bind(fd.get(), a.addr(), a.length) != 0) return Fd();
  return fd;
}

std::uint16_t port_of(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error(std::string("getsockname: ") + std::strerror(errno));
  return a.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&a)->sin6_port)
                                 : ntohs(reinterpret_cast<sockaddr_in*>(&a)->sin_port);
}

// A port free for both UDP and TCP on 127.0.0.1 right now (dnsmasq serves
// both).  Another process may still take it before dnsmasq binds; callers
// retry on that.
std::uint16_t free_udp_tcp_port(bool v6) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    Fd udp = bound_socket(SOCK_DGRAM, 0, v6);
    if (udp.get() < 0) continue;
    const std::uint16_t port = port_of(udp.get());
    Fd tcp = bound_socket(SOCK_STREAM, port, v6);
    if (tcp.get() >= 0) return port;
  }
  throw std::runtime_error(std::string("no free UDP+TCP port on ") + (v6 ? "::1" : "127.0.0.1"));
}

// A minimal DNS query for "ready.test" A, to see whether dnsmasq answers.
std::vector<unsigned char> readiness_query(std::uint16_t id) {
  std::vector<unsigned char> q = {static_cast<unsigned char>(id >> 8),
                                  static_cast<unsigned char>(id & 0xff),
                                  0x01,
                                  0x00,
                                  0,
                                  1,
                                  0,
                                  0,
                                  0,
                                  0,
                                  0,
                                  0};
  for (const char* label : {"ready", "test"}) {
    q.push_back(static_cast<unsigned char>(std::strlen(label)));
    q.insert(q.end(), label, label + std::strlen(label));
  }
  q.insert(q.end(), {0, 0, 1, 0, 1});
  return q;
}

bool answers_dns(bool v6, std::uint16_t port) {
  Fd fd(::socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  const Loopback a = loopback(v6, port);
  const std::uint16_t id = 0x5eed;
  const auto q = readiness_query(id);
  if (::sendto(fd.get(), q.data(), q.size(), 0, a.addr(), a.length) < 0) return false;
  pollfd p{fd.get(), POLLIN, 0};
  if (::poll(&p, 1, 100) != 1) return false;
  std::array<unsigned char, 512> buf{};
  const ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
  return n >= 12 && buf[0] == (id >> 8) && buf[1] == (id & 0xff) && (buf[2] & 0x80);
}

std::string dnsmasq_path() {
  for (const char* p : {"/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/usr/local/sbin/dnsmasq"})
    if (::access(p, X_OK) == 0) return p;
  return "dnsmasq";  // execvp searches PATH
}

// Waits up to `deadline` for `pid` to exit; returns its wait status or -1.
int wait_with_deadline(pid_t pid, Clock::duration deadline) {
  const auto end = Clock::now() + deadline;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -1;
    if (Clock::now() >= end) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::vector<char*> c_argv(const std::vector<std::string>& args) {
  std::vector<char*> out;
  for (const auto& a : args) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

}  // namespace

bool ipv6_loopback_available() { return bound_socket(SOCK_DGRAM, 0, true).get() >= 0; }

Dnsmasq::Dnsmasq(std::vector<std::string> extra_args, bool answer_locally, bool ipv6)
    : ipv6_(ipv6) {
  if (answer_locally) extra_args.insert(extra_args.begin(), "--local=/test/");
  std::string why;
  bool retry = true;  // dnsmasq exited early, e.g. another process took the port
  for (int attempt = 0; attempt < 5 && retry; ++attempt) {
    if (try_start(extra_args, &why, &retry)) return;
  }
  throw std::runtime_error("dnsmasq did not start: " + why);
}

bool Dnsmasq::try_start(const std::vector<std::string>& extra, std::string* why, bool* retry) {
  port_ = free_udp_tcp_port(ipv6_);
  std::vector<std::string> args = {dnsmasq_path(),
                                   "--keep-in-foreground",
                                   "--conf-file=/dev/null",
                                   "--no-resolv",
                                   "--no-hosts",
                                   std::string("--listen-address=") + (ipv6_ ? "::1" : "127.0.0.1"),
                                   "--bind-interfaces",
                                   "--port=" + std::to_string(port_),
                                   "--pid-file=" + dir_.file("dnsmasq.pid"),
                                   "--log-facility=-",
                                   "--log-queries"};
  // As root dnsmasq would switch to "nobody" after binding; stay who we are.
  if (::geteuid() == 0) args.push_back("--user=root");
  args.insert(args.end(), extra.begin(), extra.end());
  const std::string log_path = dir_.file("dnsmasq.log");

  auto argv = c_argv(args);  // built before fork: the child only execs
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
    const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log >= 0) {
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
    }
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  pid_ = pid;
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // exited: port taken, bad option ...
      pid_ = -1;
      *why = "exit status " + std::to_string(status) + ": " + muster::testing::read_text(log_path);
      return false;
    }
    if (answers_dns(ipv6_, port_)) return true;  // answers_dns waits up to 100 ms
  }
  // Running but silent: retrying on another port would not help.
  *why = "no DNS answer within 5 s: " + muster::testing::read_text(log_path);
  stop();
  *retry = false;
  return false;
}

void Dnsmasq::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  if (wait_with_deadline(pid_, std::chrono::seconds(5)) == -1) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  pid_ = -1;
}

Dnsmasq::~Dnsmasq() { stop(); }

std::string Dnsmasq::log() const { return muster::testing::read_text(dir_.file("dnsmasq.log")); }

SilentUdpServer::SilentUdpServer() {
  Fd fd = bound_socket(SOCK_DGRAM, 0);
  if (fd.get() < 0) throw std::runtime_error("cannot bind a UDP socket on 127.0.0.1");
  port_ = port_of(fd.get());
  fd_ = fd.release();
}

SilentUdpServer::~SilentUdpServer() {
  if (fd_ >= 0) ::close(fd_);
}

std::uint16_t closed_udp_port() {
  Fd fd = bound_socket(SOCK_DGRAM, 0);
  if (fd.get() < 0) throw std::runtime_error("cannot bind a UDP socket on 127.0.0.1");
  return port_of(fd.get());  // closed when fd goes out of scope
}

}  // namespace muster::dns::testing
