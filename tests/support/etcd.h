// tests/support/etcd.h: a real etcd 3.4 (/usr/bin/etcd, Debian's
// etcd-server) on loopback, for tests that hold Muster against it or use it
// as a backend: a single-member cluster by default, or a member that
// bootstraps through a discovery URL.  The process is killed when the
// object goes away.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "net/tls.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace muster::testing {

inline constexpr char kEtcd[] = "/usr/bin/etcd";

class EtcdProcess {
 public:
  explicit EtcdProcess(std::string name = "default");

  // Serves clients over https with this certificate (call before starting).
  void use_tls(std::string cert_file, std::string key_file, std::string ca_file);
  // Bootstraps through `url` (etcd's --discovery) instead of --initial-cluster.
  void use_discovery(std::string url);
  // etcd's own heartbeat and election timeouts (100 ms, 1 s) instead of the
  // fast ones that suit a single member; for multi-member clusters.
  void use_default_timing();
  // The data and log directory.
  const std::string& dir() const { return dir_.path(); }

  // Picks fresh ports and starts etcd without waiting for it.
  std::string spawn_fresh();
  // Starts etcd on fresh ports and waits for /health (retrying with other
  // ports if one was taken meanwhile).  Returns an empty string or why not.
  std::string start_fresh();
  // (Re)starts etcd on the same ports and data dir; waits for /health.
  std::string start();
  // Polls /health until it answers "true", etcd exits, or the deadline
  // passes.  "" or why not.
  std::string wait_healthy(std::chrono::milliseconds deadline = std::chrono::seconds(20));
  void stop() { child_.kill(); }

  std::string endpoint() const;
  uint16_t client_port() const { return client_port_; }

 private:
  std::string spawn();

  std::string name_;
  TempDir dir_{"muster-etcd"};
  std::string cert_file_, key_file_, discovery_;
  std::string heartbeat_ms_ = "20", election_ms_ = "200";
  net::TlsOptions tls_;
  uint16_t client_port_ = 0, peer_port_ = 0;
  Child child_;
};

}  // namespace muster::testing
