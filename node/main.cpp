// muster: a cluster member.  Flags, environment and config file as etcd 3.4
// (docs/configuration.md); static bootstrap with --initial-cluster; restart
// from the data dir.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "net/client.h"
#include "net/log.h"
#include "net/metrics.h"
#include "net/runner.h"
#include "net/server.h"
#include "net/systemd.h"
#include "net/url.h"
#include "node/bootstrap/ids.h"
#include "node/bootstrap/initial_cluster.h"
#include "node/bootstrap/peer_members.h"
#include "node/config/config.h"
#include "node/config/urls.h"
#include "node/proxy/proxy.h"
#include "node/server/leader_client.h"
#include "node/server/peer_members.h"
#include "node/server/raft_node.h"
#include "node/server/tls_setup.h"
#include "node/server/transport.h"
#include "node/server/v2_api.h"
#include "node/server/v3_api.h"
#include "node/server/v3_grpc.h"

extern char** environ;

namespace {

using namespace muster;
namespace fs = std::filesystem;
using nlohmann::json;

[[noreturn]] void die(const std::string& msg) {
  log::error("etcdmain", msg);
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

// What a member remembers about itself beside its database:
// <data-dir>/member/identity.json {"name","member_id","cluster_id"}.
struct Identity {
  std::string name;
  uint64_t member_id = 0;
  uint64_t cluster_id = 0;
};

std::string identity_path(const std::string& data_dir) {
  return data_dir + "/member/identity.json";
}

std::optional<Identity> read_identity(const std::string& data_dir) {
  std::ifstream in(identity_path(data_dir));
  if (!in) return std::nullopt;
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded()) die("corrupt " + identity_path(data_dir));
  return Identity{j.value("name", ""),
                  bootstrap::parse_hex_id(j.value("member_id", "0")).value_or(0),
                  bootstrap::parse_hex_id(j.value("cluster_id", "0")).value_or(0)};
}

void write_identity(const std::string& data_dir, const Identity& id) {
  fs::create_directories(data_dir + "/member");
  fs::permissions(data_dir, fs::perms::owner_all, fs::perm_options::replace);
  std::string tmp = identity_path(data_dir) + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << json{{"name", id.name},
                {"member_id", bootstrap::id_to_hex(id.member_id)},
                {"cluster_id", bootstrap::id_to_hex(id.cluster_id)}}
               .dump()
        << "\n";
    out.flush();
    if (!out) die("cannot write " + tmp);
  }
  int fd = ::open(tmp.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  fs::rename(tmp, identity_path(data_dir));
}

// TLS of every listener and of the peer dialer (node/server/tls_setup.h);
// a bad flag or file stops the member before anything listens.
server::TlsSetup tls_setup_or_die(const config::Config& cfg) {
  try {
    return server::make_tls_setup(cfg);
  } catch (const std::exception& e) {
    die(e.what());
  }
}

// A member that discovery found to be one too many, with
// --discovery-fallback=proxy: it forwards client requests to `peer_urls`'
// cluster instead of joining it, and stays a proxy across restarts
// (<data-dir>/proxy).  Nothing was written to <data-dir>/member before this.
int become_proxy(const config::Config& cfg, const std::vector<std::string>& peer_urls) {
  return proxy::run(cfg, peer_urls);
}

// Joining a running cluster (--initial-cluster-state existing), as etcd:
// the other members listed in --initial-cluster are asked for the member
// list on their peer URLs; the member whose peer URLs are ours (added
// beforehand with "member add") gives this member its ID, and the answer the
// cluster ID.  Unlike etcd, --initial-cluster need not list every member:
// it only has to reach one.
struct Joining {
  Identity me;
  std::vector<bootstrap::MemberInfo> members;
};

Joining join_existing(const config::Config& cfg, const config::UrlsMap& cluster,
                      const net::TlsOptions& peer_tls) {
  std::vector<std::string> mine = cfg.initial_advertise_peer_urls;
  std::sort(mine.begin(), mine.end());
  std::vector<std::string> others;
  for (const auto& [name, urls] : cluster)
    if (name != cfg.name) others.insert(others.end(), urls.begin(), urls.end());
  if (others.empty())
    die("--initial-cluster-state=existing: --initial-cluster lists no other member to join");
  net::ClientOptions co;
  co.tls = peer_tls;
  co.connect_timeout = co.timeout = std::chrono::seconds(2);
  net::HttpClient client(co);
  std::string err;
  auto fetched = bootstrap::fetch_cluster(others, client, &err);
  if (!fetched || fetched->cluster_id == 0)
    die("cannot fetch cluster info from peer urls: " +
        (fetched ? std::string("no X-Etcd-Cluster-ID in the answer") : err));
  Joining j;
  j.me.name = cfg.name;
  j.me.cluster_id = fetched->cluster_id;
  j.members = fetched->members;
  for (const auto& m : j.members) {
    std::vector<std::string> theirs = m.peer_urls;
    std::sort(theirs.begin(), theirs.end());
    if (theirs == mine) j.me.member_id = m.id;
  }
  if (j.me.member_id == 0) {
    std::string list;
    for (const auto& u : mine) list += (list.empty() ? "" : ",") + u;
    die("this member's peer URLs (" + list +
        ") are not in the cluster's member list; add it first: musterctl member add " + cfg.name +
        " --peer-urls=" + list);
  }
  log::info("etcdmain", "joining an existing cluster",
            {{"cluster-id", bootstrap::id_to_hex(j.me.cluster_id)},
             {"member-id", bootstrap::id_to_hex(j.me.member_id)},
             {"members", j.members.size()}});
  return j;
}

}  // namespace

namespace {

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  config::ParseOptions popts;
  popts.default_host = config::detect_default_host();
  auto parsed = config::parse(args, environment(), popts);
  for (const auto& l : parsed.log) {
    if (l.level == config::LogLine::Level::kWarn)
      log::warn("etcdmain", l.message);
    else
      log::info("etcdmain", l.message);
  }
  if (parsed.print_help) {
    std::cout << config::usage_text();
    return 0;
  }
  if (parsed.print_version) {
    std::cout << "muster Version: 0.1.0\netcd API Version: 3.4\n";
    return 0;
  }
  if (!parsed.ok()) die(parsed.error);
  config::Config cfg = *parsed.config;
  if (cfg.log_level == "debug" || cfg.debug) log::set_min_level(log::Level::kDebug);

  // A data dir holding <data-dir>/proxy belongs to a proxy: it stays one,
  // flags or not, following the peers in <data-dir>/proxy/cluster (etcd).
  if (proxy::data_dir_holds_proxy(cfg.data_dir)) {
    if (fs::exists(cfg.data_dir + "/member"))
      die("invalid datadir. Both member and proxy directories exist.");
    return proxy::run(cfg, {});  // the peers stored in <data-dir>/proxy/cluster
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
  const server::TlsSetup tls = tls_setup_or_die(cfg);

  // --- who am I, and which cluster ---
  std::vector<server::InitialMember> initial;
  Identity me;
  std::optional<std::string> peer_tls_server_name;  // set by --discovery-srv with https peers
  std::optional<Joining> joining;
  if (auto id = read_identity(cfg.data_dir)) {
    me = *id;
    log::info("etcdmain", "server has been already initialized",
              {{"data-dir", cfg.data_dir}, {"member-id", bootstrap::id_to_hex(me.member_id)}});
  } else {
    // --discovery / --discovery-srv / --initial-cluster -> one initial
    // cluster string and token (node/bootstrap/initial_cluster.h); then the
    // static path below.  Runs only here, with no identity on disk: a
    // restarted member never asks discovery again.
    auto boot = bootstrap::resolve_initial_cluster(cfg);
    if (boot.kind == bootstrap::InitialCluster::Kind::kFull) {
      if (cfg.discovery_fallback == "exit") die(boot.message + " (--discovery-fallback=exit)");
      log::warn("etcdmain", "discovery cluster is full, falling back to proxy",
                {{"reason", boot.message}});
      return become_proxy(cfg, boot.peer_urls);
    }
    if (boot.kind == bootstrap::InitialCluster::Kind::kError) die(boot.message);
    cfg.initial_cluster = boot.initial_cluster;
    cfg.initial_cluster_token = boot.token;
    peer_tls_server_name = boot.peer_tls_server_name;
    auto cluster = config::parse_initial_cluster(cfg.initial_cluster);
    if (!cluster.ok()) die(cluster.error());
    if (auto err = config::verify_bootstrap(cfg, cluster.value()); !err.empty()) die(err);
    if (cfg.initial_cluster_state == "existing") {
      // With https SRV records the peers' certificates carry the SRV
      // domain, not the host in the URL.
      net::TlsOptions peer_tls = tls.peer_client;
      if (peer_tls_server_name) peer_tls.server_name = *peer_tls_server_name;
      joining = join_existing(cfg, cluster.value(), peer_tls);
      me = joining->me;
    }
  }
  if (!joining && me.member_id == 0) {
    auto cluster = config::parse_initial_cluster(cfg.initial_cluster);
    if (!cluster.ok()) die(cluster.error());
    std::vector<uint64_t> ids;
    for (const auto& [name, urls] : cluster.value()) {
      server::InitialMember m;
      m.name = name;
      m.peer_urls = urls;
      m.id = bootstrap::member_id(urls, cfg.initial_cluster_token);
      if (name == cfg.name) {
        m.client_urls = cfg.advertise_client_urls;
        me.member_id = m.id;
      }
      for (const auto& other : initial)
        if (other.id == m.id)
          die("member " + bootstrap::id_to_hex(m.id) + " has already been bootstrapped");
      ids.push_back(m.id);
      initial.push_back(std::move(m));
    }
    if (me.member_id == 0)
      die("couldn't find local name \"" + cfg.name + "\" in the initial cluster configuration");
    me.name = cfg.name;
    me.cluster_id = bootstrap::cluster_id(ids);
  }

  boost::asio::io_context io;
  metrics::Registry registry;

  server::TransportOptions topts;
  topts.cluster_id = me.cluster_id;
  topts.local_id = me.member_id;
  topts.server_tls = tls.peer_server;
  topts.client_tls = tls.peer_client;
  if (peer_tls_server_name) topts.client_tls->server_name = *peer_tls_server_name;
  server::Transport transport(io, topts);
  if (joining)
    for (const auto& m : joining->members)
      if (m.id != me.member_id) transport.add_peer(m.id, m.peer_urls);

  server::RaftNodeOptions nopts;
  nopts.data_dir = cfg.data_dir;
  nopts.name = me.name;
  nopts.member_id = me.member_id;
  nopts.cluster_id = me.cluster_id;
  nopts.heartbeat_ms = cfg.heartbeat_interval_ms;
  nopts.election_ms = cfg.election_timeout_ms;
  nopts.snapshot_count = cfg.snapshot_count;
  nopts.snapshot_catchup_entries = cfg.experimental_snapshot_catchup_entries;
  nopts.pre_vote = true;
  nopts.initial_election_tick_advance = cfg.initial_election_tick_advance;
  nopts.unsafe_no_fsync = cfg.unsafe_no_fsync;
  nopts.force_new_cluster = cfg.force_new_cluster;
  nopts.client_urls = cfg.advertise_client_urls;
  nopts.auto_compaction_period =
      std::chrono::duration_cast<std::chrono::milliseconds>(cfg.auto_compaction_period);
  nopts.auto_compaction_revisions = cfg.auto_compaction_revisions;
  nopts.request_timeout_ms = 5000 + 2 * cfg.election_timeout_ms;
  nopts.strict_reconfig_check = cfg.strict_reconfig_check;
  nopts.on_removed = [] {
    // Stop the way SIGTERM does; the removal is applied and durable.
    ::kill(::getpid(), SIGTERM);
  };

  std::unique_ptr<server::RaftNode> node;
  // Lease keepalives and learner promotion go to the leader's client URLs
  // as gRPC calls on this io_context (node/server/leader_client.h).  Made
  // before the node, so it outlives the node's callbacks.
  server::LeaderClient leader_client(
      io, tls.member_client, std::chrono::milliseconds(nopts.request_timeout_ms),
      [&node](uint64_t id) {
        std::vector<std::string> urls;
        for (const auto& m : node->kv().members())
          if (m.id() == id) urls.assign(m.clienturls().begin(), m.clienturls().end());
        return urls;
      });
  nopts.forward_keepalive = [&leader_client](uint64_t leader, int64_t lease,
                                             std::function<void(storage::Status, int64_t)> done) {
    leader_client.keepalive(leader, lease, std::move(done));
  };
  nopts.forward_time_to_live =
      [&leader_client](
          uint64_t leader, const server::pb::LeaseTimeToLiveRequest& req,
          std::function<void(storage::Status, server::pb::LeaseTimeToLiveResponse)> done) {
        leader_client.time_to_live(leader, req, std::move(done));
      };
  nopts.forward_promote = [&leader_client](uint64_t leader, uint64_t member,
                                           std::function<void(storage::Status)> done) {
    leader_client.promote(leader, member, std::move(done));
  };
  bool fresh = !fs::exists(identity_path(cfg.data_dir));
  try {
    node = std::make_unique<server::RaftNode>(nopts, initial, transport, registry);
  } catch (const std::exception& e) {
    die(e.what());
  }
  if (fresh) write_identity(cfg.data_dir, me);
  if (node->removed_from_cluster())
    die("the member has been permanently removed from the cluster; remove " + cfg.data_dir +
        " to join again as a new member");

  transport.set_message_handler([&node](raftpb::Message m) { node->step(std::move(m)); });
  transport.set_snapshot_handler(
      [&node](const raftpb::Message& m) { return node->snapshot_sink(m); });
  // etcd's peer HTTP: GET /members (joining members and proxies read it)
  // and GET /version.
  transport.set_http_handler([&node, cid = me.cluster_id](const std::string& target) {
    server::Transport::HttpAnswer a;
    std::string path = target.substr(0, target.find('?'));
    if (path == "/members") {
      a.status = 200;
      a.content_type = "application/json";
      a.headers.emplace_back("X-Etcd-Cluster-ID", bootstrap::id_to_hex(cid));
      a.body = server::members_json(node->kv().members());
    } else if (path == "/version") {
      a.status = 200;
      a.content_type = "application/json";
      a.body = json{{"etcdserver", "3.4.0"}, {"etcdcluster", "3.4.0"}}.dump();
    } else {
      a.body = "404 page not found\n";
    }
    return a;
  });

  // Peer listeners.
  for (const auto& u : cfg.listen_peer_urls) {
    std::string err;
    auto url = net::parse_url(u, &err);
    if (!url) die("--listen-peer-urls: " + err);
    try {
      transport.listen(url->host, url->port, url->tls());
    } catch (const std::exception& e) {
      die(std::string("listen tcp ") + url->authority() + ": " + e.what());
    }
  }

  // Client listeners.
  server::V3Api::Options aopts;
  aopts.max_request_bytes = cfg.max_request_bytes;
  aopts.max_txn_ops = static_cast<int>(cfg.max_txn_ops);
  if (cfg.quota_backend_bytes > 0) aopts.quota_backend_bytes = cfg.quota_backend_bytes;
  aopts.request_timeout = std::chrono::milliseconds(nopts.request_timeout_ms);
  server::V3Api api(*node, aopts, registry);
  // etcd's gRPC API on the same client listeners (HTTP/2, net/grpc.h), over
  // the same service as the JSON gateway.
  server::V3Grpc grpc_api(api.service(), registry);
  net::grpc::Options gopts;
  gopts.max_concurrent_streams = cfg.max_concurrent_streams;
  gopts.max_receive_message_bytes = std::size_t{cfg.max_request_bytes} + 512 * 1024;  // as etcd
  auto ms = [](std::chrono::nanoseconds d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d);
  };
  gopts.keepalive_min_time = ms(cfg.grpc_keepalive_min_time);
  gopts.keepalive_interval = ms(cfg.grpc_keepalive_interval);
  gopts.keepalive_timeout = ms(cfg.grpc_keepalive_timeout);
  // --enable-v2: the v2 API on the client listeners; without it /v2/ is 404.
  std::unique_ptr<server::V2Api> v2;
  if (cfg.enable_v2)
    v2 = std::make_unique<server::V2Api>(*node, server::V2Api::Options{cfg.max_request_bytes});
  std::vector<std::unique_ptr<net::Server>> servers;
  std::vector<std::pair<std::string, uint16_t>> addresses;  // servers[i] listens on addresses[i]
  auto serve = [&](const std::vector<std::string>& urls,
                   const std::optional<net::TlsOptions>& tls_options, const char* what,
                   bool with_grpc) {
    for (const auto& u : urls) {
      std::string err;
      auto url = net::parse_url(u, &err);
      if (!url) die(std::string(what) + ": " + err);
      net::ServerOptions so;
      so.body_limit = server::V3Api::recommended_body_limit(aopts);
      if (with_grpc) {
        so.grpc_handler = grpc_api.handler();
        so.grpc = gopts;
      }
      if (url->tls()) {
        if (!tls_options)
          die(std::string(what) + " " + u + " is https but no certificate is configured");
        so.tls = *tls_options;
      }
      auto s = std::make_unique<net::Server>(io, so, [&](std::shared_ptr<net::Exchange> ex) {
        if (!api.handle(ex) && !(v2 && v2->handle(ex)))
          ex->respond(net::Response::json(
              404, "{\"error\":\"Not Found\",\"message\":\"Not Found\",\"code\":5}\n"));
      });
      addresses.emplace_back(url->host, url->port);
      servers.push_back(std::move(s));
    }
  };
  serve(cfg.listen_client_urls, tls.client_server, "--listen-client-urls", true);
  serve(cfg.listen_metrics_urls, tls.client_server, "--listen-metrics-urls", false);

  node->start();
  log::info("etcdserver", "started",
            {{"name", me.name},
             {"member-id", bootstrap::id_to_hex(me.member_id)},
             {"cluster-id", bootstrap::id_to_hex(me.cluster_id)},
             {"data-dir", cfg.data_dir},
             {"listen-peer-urls", cfg.listen_peer_urls}});

  // As etcd: clients are served only once this member has joined, knows a
  // leader and has published its client URLs through Raft; then systemd
  // hears READY=1 (Type=notify).
  std::atomic<bool> stopping{false};
  std::thread ready_waiter([&] {
    while (!stopping.load() && !node->published())
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (stopping.load()) return;
    for (std::size_t i = 0; i < servers.size(); ++i) {
      try {
        servers[i]->listen(addresses[i].first, addresses[i].second);
      } catch (const std::exception& e) {
        die(std::string("listen tcp ") + addresses[i].first + ":" +
            std::to_string(addresses[i].second) + ": " + e.what());
      }
    }
    log::info("etcdserver", "ready to serve client requests",
              {{"listen-client-urls", cfg.listen_client_urls}});
    net::notify_systemd("READY=1", "etcdmain");
  });

  // On SIGTERM: hand leadership off, stop serving, stop the transport.  The
  // stopper runs beside the I/O threads because stopping waits on them.
  std::thread stopper;
  int sig = net::run_until_signal(
      io, 2,
      [&] {
        log::info("etcdserver", "stopping");
        stopping = true;
        stopper = std::thread([&] {
          if (ready_waiter.joinable()) ready_waiter.join();
          node->stop(true);
          for (auto& s : servers) s->stop();
          transport.stop();
          io.stop();
        });
      },
      10000);
  if (stopper.joinable()) stopper.join();
  stopping = true;
  if (ready_waiter.joinable()) ready_waiter.join();
  log::info("etcdserver", "stopped", {{"signal", sig}});
  return 0;
}

}  // namespace

// Anything thrown while starting (a certificate that does not load, an
// address that cannot be bound) ends the process with its sentence and exit
// status 1, as etcd's startup errors do.
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    die(e.what());
  }
}
