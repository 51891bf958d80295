// Test helpers: a real dnsmasq on a free loopback port and a UDP socket that
// never answers.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace muster::dns::testing {

// A dnsmasq child process serving only the records given, on 127.0.0.1 (or
// ::1) and a free port.  The constructor returns once dnsmasq answers queries (polled
// with a deadline); the destructor stops it and removes its scratch dir.
// `extra_args` are dnsmasq options such as "--srv-host=..." and
// "--host-record=...".  Unless `answer_locally` is false, the whole ".test"
// TLD is authoritative-local (unknown names -> NXDOMAIN, missing types ->
// NODATA); without it dnsmasq, having no upstream, answers REFUSED.
class Dnsmasq {
 public:
  explicit Dnsmasq(std::vector<std::string> extra_args, bool answer_locally = true,
                   bool ipv6 = false);
  ~Dnsmasq();
  Dnsmasq(const Dnsmasq&) = delete;
  Dnsmasq& operator=(const Dnsmasq&) = delete;

  std::uint16_t port() const { return port_; }
  std::string server() const { return (ipv6_ ? "[::1]:" : "127.0.0.1:") + std::to_string(port_); }
  std::string log() const;  // dnsmasq's output, for failure messages

 private:
  // False with *why set on failure; *retry = false when another port would
  // not help.
  bool try_start(const std::vector<std::string>& args, std::string* why, bool* retry);
  void stop();

  bool ipv6_ = false;
  muster::testing::TempDir dir_{"muster-dnsmasq"};
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
};

// Whether this machine can bind ::1 (some CI containers have no IPv6).
bool ipv6_loopback_available();

// A bound UDP socket on 127.0.0.1 that never reads or replies: a DNS server
// that never answers.
class SilentUdpServer {
 public:
  SilentUdpServer();
  ~SilentUdpServer();
  SilentUdpServer(const SilentUdpServer&) = delete;
  SilentUdpServer& operator=(const SilentUdpServer&) = delete;
  std::string server() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// A 127.0.0.1 UDP port nobody listens on (bound, then closed): queries to it
// are answered by ICMP port-unreachable.
std::uint16_t closed_udp_port();

// Running musterctl with its output captured: tests/support's.
using muster::testing::ProcessResult;
using muster::testing::run_process;

}  // namespace muster::dns::testing
