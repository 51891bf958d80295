#include "node/proxy/proxy.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <random>

#include "base/log.h"
#include "base/metrics.h"
#include "base/runner.h"
#include "base/systemd.h"
#include "net/http_client.h"
#include "net/server.h"
#include "net/url.h"
#include "node/bootstrap/peer_members.h"
#include "node/config/tls_setup.h"
#include "node/config/urls.h"
#include "node/proxy/cluster_file.h"
#include "node/proxy/director.h"
#include "node/proxy/forwarder.h"
#include "node/proxy/grpc_forwarder.h"
#include "node/proxy/routes.h"

namespace muster::proxy {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

bool data_dir_holds_proxy(const std::string& data_dir) {
  std::error_code ec;
  return fs::is_directory(proxy_dir(data_dir), ec);
}

namespace {

// Keeps the Director's endpoints in step with the cluster: asks the members'
// peer listeners every refresh interval (every second while no endpoint is
// usable, as etcd does, so a proxy started before its cluster comes up
// quickly), shuffles the client URLs so proxies spread their load, and
// stores changed peer URLs in the cluster file.  Runs on the proxy's
// io_context (a timer and net's asynchronous client), on a strand of its
// own.
class Refresher : public std::enable_shared_from_this<Refresher> {
 public:
  Refresher(boost::asio::io_context& io, const config::Config& cfg, const net::TlsOptions& peer_tls,
            std::vector<std::string> peer_urls, Director& director)
      : data_dir_(cfg.data_dir),
        interval_(cfg.proxy_refresh_interval_ms),
        peer_urls_(std::move(peer_urls)),
        director_(director),
        strand_(boost::asio::make_strand(io)),
        timer_(strand_),
        client_(io.get_executor(), client_options(cfg, peer_tls)),
        rng_(std::random_device{}()) {}

  void start() {
    boost::asio::post(strand_, [self = shared_from_this()] { self->refresh(); });
  }

  // Stops refreshing: the timer and any fetch in flight are cancelled.  Any
  // thread.
  void stop() {
    boost::asio::post(strand_, [self = shared_from_this()] {
      self->stopped_ = true;
      self->timer_.cancel();
      if (self->fetch_) self->fetch_->cancel();
    });
  }

 private:
  static net::ClientOptions client_options(const config::Config& cfg,
                                           const net::TlsOptions& peer_tls) {
    net::ClientOptions co;
    // --proxy-dial-timeout 0 means no limit; the refresher still needs one
    // so that stop() is not held up: use the whole-request 10 s.
    co.connect_timeout = cfg.proxy_dial_timeout_ms > 0 ? milliseconds(cfg.proxy_dial_timeout_ms)
                                                       : milliseconds(10000);
    co.timeout = std::chrono::seconds(10);  // etcd: GetClusterFromRemotePeers' 10 s
    co.tls = peer_tls;
    return co;
  }

  void refresh() {
    if (stopped_) return;
    fetch_ = bootstrap::fetch_cluster(
        client_, peer_urls_,
        [self = shared_from_this()](std::optional<bootstrap::ClusterView> view, std::string err) {
          boost::asio::post(self->strand_, [self, view = std::move(view), err = std::move(err)] {
            self->fetch_.reset();
            if (self->stopped_) return;
            self->apply(view, err);
            self->schedule();
          });
        });
  }

  void schedule() {
    milliseconds wait = interval_;
    if (director_.available().empty()) wait = std::min(wait, milliseconds(1000));
    timer_.expires_after(wait);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->refresh();
    });
  }

  // One refresh's outcome.
  void apply(const std::optional<bootstrap::ClusterView>& view, const std::string& err) {
    if (!view) {
      log::warn("proxy", "could not get the member list from any peer",
                {{"peer-urls", peer_urls_}, {"error", err}});
      return;
    }
    if (view->client_urls.empty()) {
      log::warn("proxy", "no member has published client URLs yet", {{"from", view->source}});
      return;
    }
    auto urls = view->client_urls;
    std::shuffle(urls.begin(), urls.end(), rng_);
    auto before = director_.all();
    std::sort(before.begin(), before.end());
    if (before != view->client_urls)
      log::info("proxy", "endpoints changed",
                {{"endpoints", view->client_urls}, {"from", view->source}});
    director_.set_endpoints(std::move(urls));
    if (!view->peer_urls.empty() && view->peer_urls != peer_urls_) {
      peer_urls_ = view->peer_urls;
      if (auto werr = write_cluster_file(data_dir_, peer_urls_); !werr.empty())
        log::warn("proxy", "cannot store the cluster's peer URLs", {{"error", werr}});
      else
        log::info("proxy", "stored the cluster's peer URLs", {{"peer-urls", peer_urls_}});
    }
  }

  const std::string data_dir_;
  const milliseconds interval_;
  std::vector<std::string> peer_urls_;  // the strand's
  Director& director_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::steady_timer timer_;
  net::AsyncHttpClient client_;
  std::mt19937_64 rng_;
  bool stopped_ = false;
  std::shared_ptr<net::HttpCall> fetch_;
};

net::Response readonly_refusal(const net::Request& r) {
  if (v3_route(r.path()).empty()) return net::Response::text(501, "");  // etcd: bare 501
  // The v3 gateway's error shape; code 12 (Unimplemented) is what
  // grpc-gateway maps to 501.
  return net::Response::json(
      501,
      "{\"error\":\"httpproxy: read-only proxy refuses writes\",\"message\":\"httpproxy: "
      "read-only proxy refuses writes\",\"code\":12}\n");
}

}  // namespace

int run(const config::Config& cfg, std::vector<std::string> peer_urls) {
  std::string err;
  if (auto stored = read_cluster_file(cfg.data_dir, &err)) {
    if (!stored->empty()) {
      log::info("proxy", "using peer URLs from the cluster file",
                {{"peer-urls", *stored}, {"file", cluster_file_path(cfg.data_dir)}});
      peer_urls = std::move(*stored);
    }
  } else if (!err.empty()) {
    log::error("proxy", err);
    return 1;
  }
  if (peer_urls.empty()) {
    log::error("proxy", "no peer URLs to learn the cluster from: give --initial-cluster");
    return 1;
  }
  if (auto werr = write_cluster_file(cfg.data_dir, peer_urls); !werr.empty()) {
    log::error("proxy", werr);
    return 1;
  }

  config::TlsSetup tls;
  try {
    tls = config::make_tls_setup(cfg);
  } catch (const std::exception& e) {
    log::error("proxy", e.what());
    return 1;
  }
  const bool readonly = cfg.proxy == "readonly";
  metrics::Registry registry;
  Director director(milliseconds(cfg.proxy_failure_wait_ms));

  ForwarderOptions fo;
  fo.dial_timeout = milliseconds(cfg.proxy_dial_timeout_ms);
  fo.write_timeout = milliseconds(cfg.proxy_write_timeout_ms);
  fo.read_timeout = milliseconds(cfg.proxy_read_timeout_ms);
  // As etcd's proxy: the client-side certificate settings are used towards
  // the members; without them, the peer ones (etcd's old behaviour, kept).
  // Both come from the member's TLS rules (node/config/tls_setup.h), so
  // --cipher-suites, --tls-min/max-version, CRLs and --auto-tls hold here too.
  fo.tls = tls.client_server ? *tls.client_server : tls.peer_client;

  boost::asio::io_context io;
  std::unique_ptr<Forwarder> forwarder;
  try {
    forwarder = std::make_unique<Forwarder>(io, director, registry, fo);
  } catch (const std::exception& e) {
    log::error("proxy", "cannot load the TLS files for member connections", {{"error", e.what()}});
    return 1;
  }

  // gRPC calls (etcdctl, clientv3) are relayed call by call to a member.
  GrpcForwarder grpc_forwarder(io, director, fo.tls, readonly);

  auto handler = [&](std::shared_ptr<net::Exchange> ex) {
    const net::Request& r = ex->request();
    if (r.path() == "/metrics") {
      if (r.method != "GET" && r.method != "HEAD") {
        auto resp = net::Response::text(405, "Method Not Allowed\n");
        resp.headers.set("Allow", "GET");
        return ex->respond(std::move(resp));
      }
      auto resp = net::Response::text(200, registry.render());
      resp.headers.set("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
      return ex->respond(std::move(resp));
    }
    if (readonly && is_write(r)) return ex->respond(readonly_refusal(r));
    forwarder->forward(std::move(ex));
  };

  std::vector<std::unique_ptr<net::Server>> servers;
  auto serve = [&](const std::vector<std::string>& urls, const char* what) -> bool {
    for (const auto& u : urls) {
      std::string uerr;
      auto url = net::parse_url(u, &uerr);
      if (!url) {
        log::error("proxy", std::string(what) + ": " + uerr);
        return false;
      }
      net::ServerOptions so;
      so.body_limit = std::max<std::size_t>(cfg.max_request_bytes + 512 * 1024, 1024 * 1024);
      so.grpc_handler = [&grpc_forwarder](std::shared_ptr<net::grpc::Call> c) {
        grpc_forwarder.forward(c);
      };
      so.grpc.max_receive_message_bytes = cfg.max_request_bytes + 512 * 1024;
      if (url->tls()) {
        if (!tls.client_server) {
          log::error("proxy", std::string(what) + " " + u +
                                  " is https but no certificate is configured (--cert-file)");
          return false;
        }
        so.tls = *tls.client_server;
      }
      try {
        auto s = std::make_unique<net::Server>(io, so, handler);
        s->listen(url->host, url->port);
        servers.push_back(std::move(s));
      } catch (const std::exception& e) {
        log::error("proxy", std::string("listen tcp ") + url->authority() + ": " + e.what());
        return false;
      }
      log::info("proxy", "listening for client requests", {{"address", u}});
    }
    return true;
  };
  if (!serve(cfg.listen_client_urls, "--listen-client-urls") ||
      !serve(cfg.listen_metrics_urls, "--listen-metrics-urls")) {
    for (auto& s : servers) s->stop();
    return 1;
  }

  auto refresher = std::make_shared<Refresher>(io, cfg, tls.peer_client, peer_urls, director);
  refresher->start();
  log::info("proxy", "started as a proxy",
            {{"mode", readonly ? "readonly" : "on"},
             {"data-dir", cfg.data_dir},
             {"peer-urls", peer_urls},
             {"refresh-interval-ms", cfg.proxy_refresh_interval_ms},
             {"failure-wait-ms", cfg.proxy_failure_wait_ms}});
  base::notify_systemd("READY=1", "proxy");

  // On SIGTERM/SIGINT: stop listening and cancel open exchanges (their
  // upstream connections close), stop refreshing; the io_context then runs
  // dry.  A second signal or 5 s end it outright.
  int sig = base::run_until_signal(io, 2, [&] {
    log::info("proxy", "stopping");
    refresher->stop();
    for (auto& s : servers) s->stop();
  });
  log::info("proxy", "stopped", {{"signal", sig}});
  return 0;
}

}  // namespace muster::proxy
