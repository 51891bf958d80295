#include "dns/srv_lookup.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <memory>
#include <optional>

namespace muster::dns {
namespace {

// "no SRV records for Q: NXDOMAIN" when DNS said there are none; "SRV lookup
// of Q failed: <why>" when we could not find out.
Error srv_query_error(const SrvService& service, const Error& dns) {
  if (dns.kind == ErrorKind::kNxDomain || dns.kind == ErrorKind::kNoData)
    return Error{dns.kind, "no SRV records for " + service.query_name + ": " + dns.message};
  return Error{dns.kind, "SRV lookup of " + service.query_name + " failed: " + dns.message};
}

Result<std::string> checked_domain(const std::string& domain) {
  if (domain.empty() || domain == ".")
    return Error{ErrorKind::kInvalidArgument, "the SRV discovery domain is empty"};
  return domain;
}

// One server-cluster resolution in flight.  Shared by the callbacks it
// starts; it finishes when its last outstanding lookup completes.
class ServerClusterOp : public std::enable_shared_from_this<ServerClusterOp> {
 public:
  ServerClusterOp(Resolver& resolver, SrvClusterRequest request,
                  std::function<void(Result<SrvCluster>)> handler)
      : resolver_(resolver), request_(std::move(request)), handler_(std::move(handler)) {}

  void start() {
    if (auto d = checked_domain(request_.domain); !d) return finish(d.error());
    auto urls = parse_peer_urls(request_.advertise_peer_urls);
    if (!urls) {
      return finish(Error{ErrorKind::kInvalidArgument,
                          "--initial-advertise-peer-urls: " + urls.error().message});
    }
    local_.name = request_.member_name;
    // Step 1: each advertise URL -> "ip:port".  A failure here fails the
    // whole bootstrap, as in etcd.
    outstanding_ = urls.value().size();
    auto self = shared_from_this();
    for (const PeerUrl& url : urls.value()) {
      if (is_ip_literal(url.host)) {
        boost::system::error_code ec;
        const auto address = boost::asio::ip::make_address(url.host, ec);
        local_.keys.emplace(address_key(address, url.port), url);
        advertise_done();
        continue;
      }
      resolver_.lookup_addresses(url.host, [self, url](auto result) {
        if (!result) {
          self->fail_once(Error{result.error().kind, "cannot resolve advertise peer URL " +
                                                         url.text + ": " + result.error().message});
        } else {
          self->local_.keys.emplace(address_key(*preferred_address(result.value()), url.port), url);
        }
        self->advertise_done();
      });
    }
  }

 private:
  void advertise_done() {
    if (--outstanding_ > 0) return;
    if (failure_) return finish(*failure_);
    query_services();
  }

  // Step 2: both services at once; step 3: every target of each at once.
  void query_services() {
    const auto services = srv_services(SrvRole::kServer, request_.domain, request_.srv_name);
    lookups_.resize(services.size());
    outstanding_ = services.size();
    auto self = shared_from_this();
    for (std::size_t i = 0; i < services.size(); ++i) {
      lookups_[i].service = services[i];
      resolver_.lookup_srv(services[i].query_name, [self, i](auto result) {
        ServerLookup& lookup = self->lookups_[i];
        if (!result) {
          lookup.error = srv_query_error(lookup.service, result.error());
        } else {
          for (SrvRecord& r : result.value()) lookup.targets.push_back({std::move(r), {}, {}});
          self->resolve_targets(i);
        }
        self->lookup_done();
      });
    }
  }

  void resolve_targets(std::size_t service) {
    auto self = shared_from_this();
    auto& targets = lookups_[service].targets;
    for (std::size_t t = 0; t < targets.size(); ++t) {
      // Address literals are rejected by build_server_cluster; do not ask DNS.
      if (is_ip_literal(targets[t].record.target)) continue;
      ++outstanding_;
      // Rooted name: the target is absolute, never subject to search domains.
      const std::string name = trim_trailing_dot(targets[t].record.target) + ".";
      resolver_.lookup_addresses(name, [self, service, t](auto result) {
        ResolvedTarget& target = self->lookups_[service].targets[t];
        if (!result)
          target.error = result.error().message;
        else
          target.key = address_key(*preferred_address(result.value()), target.record.port);
        self->lookup_done();
      });
    }
  }

  void lookup_done() {
    if (--outstanding_ > 0) return;
    finish(build_server_cluster(request_.domain, local_, lookups_));
  }

  void fail_once(Error e) {
    if (!failure_) failure_ = std::move(e);
  }

  // Always posted, so the handler never runs inside async_resolve_*().
  void finish(Result<SrvCluster> result) {
    boost::asio::post(resolver_.context(),
                      [handler = std::move(handler_), result = std::move(result)]() mutable {
                        handler(std::move(result));
                      });
  }

  Resolver& resolver_;
  SrvClusterRequest request_;
  std::function<void(Result<SrvCluster>)> handler_;
  LocalMember local_;
  std::vector<ServerLookup> lookups_;
  std::size_t outstanding_ = 0;
  std::optional<Error> failure_;
};

}  // namespace

void async_resolve_server_cluster(Resolver& resolver, const SrvClusterRequest& request,
                                  std::function<void(Result<SrvCluster>)> handler) {
  std::make_shared<ServerClusterOp>(resolver, request, std::move(handler))->start();
}

void async_resolve_client_endpoints(Resolver& resolver, const SrvClientRequest& request,
                                    std::function<void(Result<ClientEndpoints>)> handler) {
  if (auto d = checked_domain(request.domain); !d) {
    boost::asio::post(resolver.context(),
                      [handler = std::move(handler), e = d.error()] { handler(e); });
    return;
  }
  struct State {
    SrvClientRequest request;
    std::function<void(Result<ClientEndpoints>)> handler;
    std::vector<ClientLookup> lookups;
    std::size_t outstanding = 0;
  };
  auto state = std::make_shared<State>();
  state->request = request;
  if (!state->request.random) state->request.random = make_system_random();
  state->handler = std::move(handler);
  const auto services = srv_services(SrvRole::kClient, request.domain, request.srv_name);
  state->lookups.resize(services.size());
  state->outstanding = services.size();
  for (std::size_t i = 0; i < services.size(); ++i) {
    state->lookups[i].service = services[i];
    resolver.lookup_srv(services[i].query_name, [state, i](auto result) {
      ClientLookup& lookup = state->lookups[i];
      if (!result)
        lookup.error = srv_query_error(lookup.service, result.error());
      else
        lookup.records = std::move(result).value();
      if (--state->outstanding > 0) return;
      auto h = std::move(state->handler);
      h(build_client_endpoints(state->request.domain, state->lookups, state->request.random));
    });
  }
}

namespace {
// Runs one asynchronous resolution on a private io_context.
template <class T, class Request, class Start>
Result<T> run_sync(const Request& request, Start start) {
  boost::asio::io_context io;
  auto resolver = Resolver::create(io, request.resolver);
  if (!resolver) return resolver.error();
  std::optional<Result<T>> out;
  start(*resolver.value(), request, [&](Result<T> r) {
    out.emplace(std::move(r));
    io.stop();
  });
  if (!out) io.run();
  // Every path through the operations ends in the handler: c-ares gives up
  // after its timeouts, so run() cannot return without a result.
  if (!out) std::abort();
  return std::move(*out);
}
}  // namespace

Result<SrvCluster> resolve_server_cluster(const SrvClusterRequest& request) {
  return run_sync<SrvCluster>(request, [](Resolver& r, const SrvClusterRequest& q, auto h) {
    async_resolve_server_cluster(r, q, std::move(h));
  });
}

Result<ClientEndpoints> resolve_client_endpoints(const SrvClientRequest& request) {
  return run_sync<ClientEndpoints>(request, [](Resolver& r, const SrvClientRequest& q, auto h) {
    async_resolve_client_endpoints(r, q, std::move(h));
  });
}

}  // namespace muster::dns
