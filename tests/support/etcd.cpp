// tests/support/etcd.cpp: see etcd.h.
#include "tests/support/etcd.h"

#include <filesystem>
#include <utility>
#include <vector>

#include "tests/support/health.h"
#include "tests/support/ports.h"

namespace muster::testing {

EtcdProcess::EtcdProcess(std::string name) : name_(std::move(name)) {}

void EtcdProcess::use_tls(std::string cert_file, std::string key_file, std::string ca_file) {
  cert_file_ = std::move(cert_file);
  key_file_ = std::move(key_file);
  tls_.trusted_ca_file = std::move(ca_file);
}

void EtcdProcess::use_discovery(std::string url) { discovery_ = std::move(url); }

void EtcdProcess::use_default_timing() {
  heartbeat_ms_ = "100";
  election_ms_ = "1000";
}

std::string EtcdProcess::spawn_fresh() {
  client_port_ = free_port();
  peer_port_ = free_port();
  if (client_port_ == 0 || peer_port_ == 0 || client_port_ == peer_port_) return "no free ports";
  return spawn();
}

std::string EtcdProcess::start_fresh() {
  std::string why;
  for (int attempt = 0; attempt < 5; ++attempt) {
    why = spawn_fresh();
    if (why.empty()) why = wait_healthy();
    if (why.empty()) return "";
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_.file("data"), ec);
  }
  return why;
}

std::string EtcdProcess::start() {
  std::string why = spawn();
  return why.empty() ? wait_healthy() : why;
}

std::string EtcdProcess::wait_healthy(std::chrono::milliseconds deadline) {
  return testing::wait_healthy(child_, endpoint() + "/health", "\"true\"", tls_, deadline);
}

std::string EtcdProcess::endpoint() const {
  return (cert_file_.empty() ? "http://127.0.0.1:" : "https://127.0.0.1:") +
         std::to_string(client_port_);
}

std::string EtcdProcess::spawn() {
  const std::string client = endpoint();
  const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
  std::vector<std::string> args = {kEtcd,
                                   "--name",
                                   name_,
                                   "--data-dir",
                                   dir_.file("data"),
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
  return child_.spawn(args, dir_.file("etcd.log"));
}

}  // namespace muster::testing
