// node/server/member.cpp: see member.h.
#include "node/server/member.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>

#include "base/log.h"
#include "base/metrics.h"
#include "base/runner.h"
#include "base/systemd.h"
#include "dns/host_resolver.h"
#include "etcdwire/ids.h"
#include "net/pprof.h"
#include "net/server.h"
#include "net/url.h"
#include "node/bootstrap/identity.h"
#include "node/bootstrap/peer_members.h"
#include "node/server/corruption_check.h"
#include "node/server/jwt.h"
#include "node/server/member_server.h"
#include "node/server/peer_metrics.h"
#include "node/server/replacement_api.h"
#include "node/server/transport.h"
#include "node/server/v2_api.h"
#include "node/server/v3_api.h"
#include "node/server/v3_grpc.h"

namespace muster::server {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

MemberServerOptions server_options(const config::Config& cfg, const bootstrap::Identity& me) {
  MemberServerOptions o;
  o.data_dir = cfg.data_dir;
  o.name = me.name;
  o.member_id = me.member_id;
  o.cluster_id = me.cluster_id;
  o.heartbeat_ms = cfg.heartbeat_interval_ms;
  o.election_ms = cfg.election_timeout_ms;
  o.snapshot_count = cfg.snapshot_count;
  o.snapshot_catchup_entries = cfg.experimental_snapshot_catchup_entries;
  o.pre_vote = true;
  o.initial_election_tick_advance = cfg.initial_election_tick_advance;
  o.unsafe_no_fsync = cfg.unsafe_no_fsync;
  o.force_new_cluster = cfg.force_new_cluster;
  o.client_urls = cfg.advertise_client_urls;
  o.auto_compaction_period =
      std::chrono::duration_cast<std::chrono::milliseconds>(cfg.auto_compaction_period);
  o.auto_compaction_revisions = cfg.auto_compaction_revisions;
  o.request_timeout_ms = 5000 + 2 * cfg.election_timeout_ms;  // etcd's ReqTimeout
  o.strict_reconfig_check = cfg.strict_reconfig_check;
  o.auth_token_ttl_ms = int64_t{cfg.auth_token_ttl} * 1000;
  o.on_removed = [] {
    // Stop the way SIGTERM does; the removal is applied and durable.
    ::kill(::getpid(), SIGTERM);
  };
  return o;
}

// etcd's peer HTTP beside the Raft streams: GET /members (joining members
// and proxies read it), GET /version, and GET /members/hashkv (another
// member's corruption check; answered by CorruptionCheck, off the I/O
// threads).
void peer_http(MemberServer& node, CorruptionCheck& check, uint64_t cluster_id,
               Transport::HttpRequest req, Transport::HttpReply reply) {
  Transport::HttpAnswer a;
  const std::string path = req.target.substr(0, req.target.find('?'));
  if (path == "/members/hashkv") return check.serve_hashkv(std::move(req), std::move(reply));
  if (path == "/members") {
    std::vector<bootstrap::MemberInfo> members;
    for (const auto& m : node.kv().members())
      members.push_back({m.id(),
                         m.name(),
                         {m.peerurls().begin(), m.peerurls().end()},
                         {m.clienturls().begin(), m.clienturls().end()},
                         m.islearner()});
    a.status = 200;
    a.content_type = "application/json";
    a.headers.emplace_back("X-Etcd-Cluster-ID", etcdwire::id_to_hex(cluster_id));
    a.body = bootstrap::members_json(members);
  } else if (path == "/version") {
    a.status = 200;
    a.content_type = "application/json";
    // etcd's key order; the cluster version is decided once the member has
    // joined and published itself ("not_decided" before, as etcd).
    a.body = nlohmann::ordered_json{{"etcdserver", "3.4.0"},
                                    {"etcdcluster", node.published() ? "3.4.0" : "not_decided"}}
                 .dump();
  } else {
    a.body = "404 page not found\n";
  }
  reply(std::move(a));
}

}  // namespace

int run_member(const config::Config& cfg, const bootstrap::MemberPlan& plan,
               const config::TlsSetup& tls) {
  const bootstrap::Identity& me = plan.me;
  boost::asio::io_context io;
  metrics::Registry registry;

  // With --dns-server, peer host names resolve through that server too (the
  // one the SRV lookups used), not only through the system resolver.
  std::unique_ptr<dns::HostResolver> peer_dns;
  if (!cfg.dns_server.empty()) {
    dns::ResolverOptions ro;
    ro.server = cfg.dns_server;
    auto r = dns::HostResolver::create(ro);
    if (!r) throw std::runtime_error("--dns-server: " + r.error().message);
    peer_dns = std::move(r).value();
  }

  TransportOptions topts;
  if (peer_dns)
    topts.resolve_host = [&peer_dns](const std::string& host, auto done) {
      peer_dns->lookup_addresses(
          host, [done = std::move(done)](dns::Result<std::vector<boost::asio::ip::address>> r) {
            if (r)
              done(std::move(r).value(), "");
            else
              done({}, r.error().message);
          });
    };
  topts.cluster_id = me.cluster_id;
  topts.local_id = me.member_id;
  topts.server_tls = tls.peer_server;
  topts.client_tls = tls.peer_client;
  if (plan.peer_tls_server_name) topts.client_tls->server_name = *plan.peer_tls_server_name;
  Transport transport(io, topts);
  if (plan.kind == bootstrap::MemberPlan::Kind::kJoin)
    for (const auto& m : plan.members)
      if (m.id != me.member_id) transport.add_peer(m.id, m.peer_urls);

  const MemberServerOptions sopts = server_options(cfg, me);
  const bool fresh = plan.kind != bootstrap::MemberPlan::Kind::kRestart;
  auto node = std::make_unique<MemberServer>(sopts, plan.initial, transport, registry);
  if (fresh) bootstrap::write_identity(cfg.data_dir, me);
  if (node->removed_from_cluster())
    throw std::runtime_error("the member has been permanently removed from the cluster; remove " +
                             cfg.data_dir + " to join again as a new member");
  // --experimental-initial-corrupt-check and --experimental-corrupt-check-time
  // (node/server/corruption_check.h); the peer route answers either way.
  CorruptionCheck::Options copts;
  copts.member_id = me.member_id;
  copts.cluster_id = me.cluster_id;
  copts.peer_tls = topts.client_tls;
  copts.request_timeout = std::chrono::milliseconds(sopts.request_timeout_ms);
  copts.interval =
      std::chrono::duration_cast<std::chrono::milliseconds>(cfg.experimental_corrupt_check_time);
  CorruptionCheck corruption_check(*node, copts);
  transport.set_http_handler([&node, &corruption_check, cid = me.cluster_id](
                                 Transport::HttpRequest req, Transport::HttpReply reply) {
    peer_http(*node, corruption_check, cid, std::move(req), std::move(reply));
  });
  // As etcd: a member that has data compares it with its peers' before it
  // serves anyone (a new member has nothing to compare); a mismatch ends
  // the start with "<id> found data inconsistency with peers".
  if (cfg.experimental_initial_corrupt_check && !fresh) corruption_check.initial_check();

  // Peer listeners.
  for (const auto& u : cfg.listen_peer_urls) {
    std::string err;
    auto url = net::parse_url(u, &err);
    if (!url) throw std::runtime_error("--listen-peer-urls: " + err);
    try {
      transport.listen(url->host, url->port, url->tls());
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("listen tcp ") + url->authority() + ": " + e.what());
    }
  }

  // Client listeners: the JSON gateway, /health, /version, /metrics, the
  // v2 API with --enable-v2, and etcd's gRPC API on the same ports (HTTP/2,
  // net/grpc.h) over the same service as the gateway.
  V3Api::Options aopts;
  aopts.max_request_bytes = cfg.max_request_bytes;
  aopts.max_txn_ops = static_cast<int>(cfg.max_txn_ops);
  aopts.min_lease_ttl = min_lease_ttl_seconds(cfg.heartbeat_interval_ms, cfg.election_timeout_ms);
  if (cfg.quota_backend_bytes > 0) aopts.quota_backend_bytes = cfg.quota_backend_bytes;
  aopts.request_timeout = std::chrono::milliseconds(sopts.request_timeout_ms);
  aopts.client_cert_auth = cfg.client_tls.client_cert_auth;
  aopts.bcrypt_cost = static_cast<int>(cfg.bcrypt_cost);
  // --auth-token jwt,pub-key=...,priv-key=...,sign-method=...: keys that do
  // not load end the start with a sentence.
  if (cfg.auth_token.rfind("jwt", 0) == 0) aopts.jwt = JwtTokens::from_flag(cfg.auth_token);
  V3Api api(*node, aopts, registry);
  // etcd_network_peer_* (node/server/peer_metrics.h).
  PeerMetrics peer_metrics(
      registry, transport,
      [&node, self = me.member_id] {
        std::map<uint64_t, std::vector<std::string>> peers;
        for (const auto& m : node->kv().members())
          if (m.id() != self) peers[m.id()].assign(m.peerurls().begin(), m.peerurls().end());
        return peers;
      },
      tls.peer_client);
  // Muster's /muster/v1/reachability and /muster/v1/replace
  // (--discovery-replace-dead on a new node asks for them).
  ReplacementApi replacement(*node, api.service(), registry);
  api.set_metrics_collector([&peer_metrics, &replacement] {
    peer_metrics.collect();
    replacement.collect_metrics();
  });
  V3Grpc::Options grpc_api_options;
  grpc_api_options.handling_time_histogram = cfg.metrics == "extensive";
  V3Grpc grpc_api(api.service(), registry, grpc_api_options);
  net::grpc::Options gopts;
  gopts.max_concurrent_streams = cfg.max_concurrent_streams;
  gopts.max_receive_message_bytes = std::size_t{cfg.max_request_bytes} + 512 * 1024;  // as etcd
  auto ms = [](std::chrono::nanoseconds d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d);
  };
  gopts.keepalive_min_time = ms(cfg.grpc_keepalive_min_time);
  gopts.keepalive_interval = ms(cfg.grpc_keepalive_interval);
  gopts.keepalive_timeout = ms(cfg.grpc_keepalive_timeout);
  std::unique_ptr<V2Api> v2;
  if (cfg.enable_v2) v2 = std::make_unique<V2Api>(*node, V2Api::Options{cfg.max_request_bytes});
  // --enable-pprof: /debug/pprof/ on the client URLs, as etcd.
  std::unique_ptr<net::pprof::Handler> pprof;
  if (cfg.enable_pprof) pprof = std::make_unique<net::pprof::Handler>(io, cfg.data_dir + "/pprof");
  std::vector<std::unique_ptr<net::Server>> servers;
  std::vector<std::pair<std::string, uint16_t>> addresses;  // servers[i] listens on addresses[i]
  auto serve = [&](const std::vector<std::string>& urls,
                   const std::optional<net::TlsOptions>& tls_options, const char* what,
                   bool with_grpc) {
    for (const auto& u : urls) {
      std::string err;
      auto url = net::parse_url(u, &err);
      if (!url) throw std::runtime_error(std::string(what) + ": " + err);
      net::ServerOptions so;
      so.body_limit = V3Api::recommended_body_limit(aopts);
      if (with_grpc) {
        so.grpc_handler = grpc_api.handler();
        so.grpc = gopts;
      }
      if (url->tls()) {
        if (!tls_options)
          throw std::runtime_error(std::string(what) + " " + u +
                                   " is https but no certificate is configured");
        so.tls = *tls_options;
      }
      auto s =
          std::make_unique<net::Server>(io, so, [&, with_grpc](std::shared_ptr<net::Exchange> ex) {
            // --listen-metrics-urls serve /metrics and /health only, as etcd's.
            const std::string& target = ex->request().target;
            const std::string path = target.substr(0, target.find('?'));
            if (!with_grpc && path != "/metrics" && path != "/health")
              return ex->respond(net::Response::text(404, "404 page not found\n"));
            if (!api.handle(ex) && !(with_grpc && replacement.handle(ex)) &&
                !(v2 && v2->handle(ex)) && !(pprof && pprof->handle(ex)))
              ex->respond(net::Response::json(
                  404, "{\"error\":\"Not Found\",\"message\":\"Not Found\",\"code\":5}\n"));
          });
      addresses.emplace_back(url->host, url->port);
      servers.push_back(std::move(s));
    }
  };
  serve(cfg.listen_client_urls, tls.client_server, "--listen-client-urls", true);
  const std::size_t client_servers = servers.size();
  serve(cfg.listen_metrics_urls, tls.client_server, "--listen-metrics-urls", false);
  // As etcd: the client ports are bound now and their connections wait
  // until the member is ready (below); the metrics ports answer at once.
  for (std::size_t i = 0; i < servers.size(); ++i) {
    try {
      if (i < client_servers)
        servers[i]->bind(addresses[i].first, addresses[i].second);
      else
        servers[i]->listen(addresses[i].first, addresses[i].second);
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("listen tcp ") + addresses[i].first + ":" +
                               std::to_string(addresses[i].second) + ": " + e.what());
    }
  }

  node->start();
  corruption_check.start();
  log::info("etcdserver", "started",
            {{"name", me.name},
             {"member-id", etcdwire::id_to_hex(me.member_id)},
             {"cluster-id", etcdwire::id_to_hex(me.cluster_id)},
             {"data-dir", cfg.data_dir},
             {"listen-peer-urls", cfg.listen_peer_urls}});

  // As etcd: clients are served only once this member has joined, knows a
  // leader and has published its client URLs through Raft (their
  // connections wait until then); then systemd hears READY=1 (Type=notify).
  std::atomic<bool> stopping{false};
  std::thread ready_waiter([&] {
    while (!stopping.load() && !node->published())
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (stopping.load()) return;
    for (std::size_t i = 0; i < client_servers; ++i) servers[i]->accept_connections();
    log::info("etcdserver", "ready to serve client requests",
              {{"listen-client-urls", cfg.listen_client_urls}});
    base::notify_systemd("READY=1", "etcdmain");
  });

  // A replacement (--discovery-replace-dead) joined as a learner: once it
  // has caught up the leader accepts its promotion ("can only promote a
  // learner member which is in sync with leader" until then); then it
  // releases the cluster's replacement lock.
  // <data-dir>/member/promote-when-caught-up (holding the lock's lease ID)
  // keeps that intent across a restart before the promotion.
  const std::string promote_file = cfg.data_dir + "/member/promote-when-caught-up";
  int64_t lock_lease = plan.replacement_lock_lease;
  if (plan.promote_when_caught_up) {
    std::ofstream(promote_file, std::ios::trunc) << lock_lease << "\n";
  } else if (fs::exists(promote_file)) {
    std::ifstream(promote_file) >> lock_lease;
  }
  std::thread promoter;
  if (fs::exists(promote_file))
    promoter = std::thread([&] {
      std::atomic<bool> done{false}, in_flight{false};
      const auto started = std::chrono::steady_clock::now();
      // Asked as soon as this member has published itself (it has applied
      // the log up to its own publish entry, so it is usually caught up
      // then), and again 20 ms after each refusal: one check on the leader
      // each.  Local state is looked at every 5 ms.  (A 50 ms poll cost a
      // replacement 25 ms on average; docs/benchmarks.md.)
      auto next_ask = started;
      while (!stopping.load() && !done.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        if (!node->published() || in_flight.load() || std::chrono::steady_clock::now() < next_ask)
          continue;
        if (!node->status().is_learner) {
          std::error_code ec;
          fs::remove(promote_file, ec);
          done = true;
          break;
        }
        in_flight = true;
        next_ask = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
        pb::MemberPromoteRequest r;
        r.set_id(me.member_id);
        api.service().member_promote(
            r, [&, started](storage::Status st, pb::MemberPromoteResponse) {
              if (st) {
                const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - started);
                log::info("etcdserver", "replacement member promoted to voting member",
                          {{"member-id", etcdwire::id_to_hex(me.member_id)},
                           {"caught-up-in", std::to_string(took.count()) + "ms"}});
                std::error_code ec;
                fs::remove(promote_file, ec);
                if (lock_lease != 0) {
                  pb::LeaseRevokeRequest rv;
                  rv.set_id(lock_lease);
                  api.service().lease_revoke(rv, [](storage::Status, pb::LeaseRevokeResponse) {});
                }
                done = true;
              }
              in_flight = false;
            });
      }
      // The callback may still hold references to the locals: wait for it.
      while (in_flight.load()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    });

  // On SIGTERM: hand leadership off, stop serving, stop the transport.  The
  // stopper runs beside the I/O threads because stopping waits on them.
  std::thread stopper;
  // I/O threads: half the machine's cores (the Raft and apply threads and
  // LevelDB's compaction take the rest); one on a 2-core machine, where a
  // second one mostly hands work back and forth (measured:
  // docs/benchmarks.md).
  const int io_threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency() / 2));
  int sig = base::run_until_signal(
      io, io_threads,
      [&] {
        log::info("etcdserver", "stopping");
        stopping = true;
        stopper = std::thread([&] {
          if (ready_waiter.joinable()) ready_waiter.join();
          corruption_check.stop();
          node->stop(true);  // a promotion in flight hears "server stopped"
          if (promoter.joinable()) promoter.join();
          for (auto& s : servers) s->stop();
          // Let the I/O threads run what stop() posted (each connection's
          // shutdown, answers still being written) before io.stop() drops
          // it: a connection abandoned with its exchange open is never
          // freed (ASan's LeakSanitizer found them; docs/reliability.md).
          const auto drain_until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
          for (auto& s : servers)
            s->wait_closed(std::chrono::duration_cast<std::chrono::milliseconds>(
                drain_until - std::chrono::steady_clock::now()));
          transport.stop();
          io.stop();
        });
      },
      10000);
  if (stopper.joinable()) stopper.join();
  stopping = true;
  if (ready_waiter.joinable()) ready_waiter.join();
  if (promoter.joinable()) promoter.join();
  log::info("etcdserver", "stopped", {{"signal", sig}});
  return 0;
}

}  // namespace muster::server
