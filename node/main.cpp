// muster: a cluster member, or the proxy an extra joiner becomes.  Flags,
// environment and config file as etcd 3.4 (docs/configuration.md).  This
// file only picks the mode; the member is node/server/member.h, the proxy
// node/proxy/proxy.h, the start plan node/bootstrap/member_plan.h, and
// `muster snapshot restore|status` (etcdutl's offline commands)
// node/snapshot/snapshot_command.h.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/log.h"
#include "etcdwire/ids.h"
#include "net/pprof.h"
#include "node/bootstrap/initial_cluster.h"
#include "node/bootstrap/member_plan.h"
#include "node/bootstrap/replacement.h"
#include "node/config/config.h"
#include "node/config/tls_setup.h"
#include "node/proxy/cluster_file.h"
#include "node/proxy/proxy.h"
#include "node/server/member.h"
#include "node/snapshot/snapshot_command.h"

extern char** environ;

namespace {

using namespace muster;
namespace fs = std::filesystem;

[[noreturn]] void die(const std::string& msg) {
  log::fatal("etcdmain", msg);
  std::exit(1);
}

std::map<std::string, std::string> environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

// A proxy that fell back from a full discovery token (or from SRV records
// naming a cluster that does not count it) with --discovery-replace-dead
// keeps asking the cluster (every half threshold,
// 1 s to 30 s); once a dead member's seat is granted, it stops proxying
// (its client ports are released) and starts as that replacement member.
// Without the flag: the proxy, as etcd's.
int run_proxy(const config::Config& cfg, std::vector<std::string> peer_urls) {
  if (cfg.discovery_replace_dead.count() == 0 ||
      (cfg.discovery.empty() && !cfg.discovery_v3.enabled() && cfg.discovery_srv.empty()))
    return proxy::run(cfg, std::move(peer_urls));
  const config::TlsSetup tls = config::make_tls_setup(cfg);
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  std::optional<bootstrap::MemberPlan> plan;
  std::thread recheck([&] {
    const auto interval = std::clamp<std::chrono::milliseconds>(
        std::chrono::duration_cast<std::chrono::milliseconds>(cfg.discovery_replace_dead / 2),
        std::chrono::seconds(1), std::chrono::seconds(30));
    std::unique_lock<std::mutex> l(mu);
    while (!stopping) {
      if (cv.wait_for(l, interval, [&] { return stopping; })) break;
      l.unlock();
      std::string why_not;
      auto p = bootstrap::recheck_replacement(cfg, tls.peer_client, &why_not);
      l.lock();
      if (p) {
        plan = std::move(p);
        if (!stopping) ::kill(::getpid(), SIGTERM);  // ends proxy::run below
        break;
      }
      log::info("etcdmain", "proxy: still not replacing any member", {{"reason", why_not}});
    }
  });
  const int rc = proxy::run(cfg, std::move(peer_urls));
  bool granted_after_stop = false;
  {
    std::lock_guard<std::mutex> l(mu);
    granted_after_stop = !plan;  // decided below, once the thread is done
    stopping = true;
  }
  cv.notify_all();
  recheck.join();
  if (!plan) return rc;
  if (granted_after_stop) {
    // Stopping wins; the cluster holds this node as a learner, and a
    // restart asks again and gets the same seat back (the leader finds
    // these peer URLs in its member list).
    log::warn("etcdmain",
              "a replacement seat was granted while this proxy was stopping; restart it to take "
              "the seat, or remove the learner",
              {{"member-id", etcdwire::id_to_hex(plan->me.member_id)}});
    return rc;
  }
  log::warn("etcdmain", "this proxy becomes the replacement member",
            {{"member-id", etcdwire::id_to_hex(plan->me.member_id)}});
  std::error_code ec;
  fs::remove_all(proxy::proxy_dir(cfg.data_dir), ec);
  return server::run_member(cfg, *plan, tls);
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  // A subcommand, not a member: etcd has no flag named "snapshot".
  if (!args.empty() && args[0] == "snapshot")
    return snapshot::run_snapshot_command({args.begin() + 1, args.end()}, std::cout, std::cerr);
  config::ParseOptions popts;
  popts.default_host = config::detect_default_host();
  auto parsed = config::parse(args, environment(), popts);
  // --enable-pprof: heap sampling must be on from the start (net/pprof.h).
  if (parsed.ok() && parsed.config->enable_pprof) net::pprof::enable_heap_sampling(argv);
  // --logger, --log-outputs, --log-level (base/log.h) before anything else logs.
  if (parsed.ok()) {
    const auto& c = *parsed.config;
    log::Options lo;
    lo.logger = c.logger;
    lo.outputs = c.log_outputs;
    lo.level = log::parse_level(c.log_level).value_or(log::Level::kInfo);
    lo.program = fs::path(argv[0]).filename().string();
    if (auto err = log::configure(lo); !err.empty()) die(err);
  }
  for (const auto& l : parsed.log) {
    if (l.level == config::LogLine::Level::kWarn)
      log::warn("etcdmain", l.message);
    else
      log::info("etcdmain", l.message);
  }
  if (parsed.print_help) {
    std::cout << config::usage_text()
              << "\nOffline commands on snapshot files (see `muster snapshot --help`):\n"
                 "  muster snapshot restore <file> [flags]\n"
                 "  muster snapshot status <file> [-w simple|table|json]\n";
    return 0;
  }
  if (parsed.print_version) {
    std::cout << "muster Version: 0.1.0\netcd API Version: 3.4\n";
    return 0;
  }
  if (!parsed.ok()) die(parsed.error);
  const config::Config cfg = *parsed.config;

  // A data dir holding <data-dir>/proxy belongs to a proxy: it stays one,
  // flags or not, following the peers in <data-dir>/proxy/cluster (etcd).
  if (proxy::data_dir_holds_proxy(cfg.data_dir)) {
    if (fs::exists(cfg.data_dir + "/member"))
      die("invalid datadir. Both member and proxy directories exist.");
    return run_proxy(cfg, {});  // the peers stored in <data-dir>/proxy/cluster
  }
  // --proxy on|readonly: a proxy unless this data dir already holds a member.
  if (cfg.proxy != "off" && !fs::exists(cfg.data_dir + "/member")) {
    std::string err;
    auto urls = bootstrap::proxy_peer_urls(cfg, &err);
    if (urls.empty()) die("proxy: no cluster to forward to: " + err);
    return proxy::run(cfg, urls);
  }

  // TLS of the listeners and of the peer dialer; a bad TLS flag or file
  // stops the member here, before bootstrap.
  const config::TlsSetup tls = config::make_tls_setup(cfg);
  // Restart, new cluster, join, or (discovery found the cluster full) a
  // proxy of it that stays one across restarts.
  const bootstrap::MemberPlan plan = bootstrap::plan_member(cfg, tls.peer_client);
  if (plan.kind == bootstrap::MemberPlan::Kind::kProxy) return run_proxy(cfg, plan.proxy_peer_urls);
  return server::run_member(cfg, plan, tls);
}

}  // namespace

// Anything thrown while starting (a certificate that does not load, an
// address that cannot be bound, a cluster that cannot be reached) ends the
// process with its sentence and exit status 1, as etcd's startup errors do.
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    die(e.what());
  }
}
