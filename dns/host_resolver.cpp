// dns/host_resolver.cpp: see host_resolver.h.
#include "dns/host_resolver.h"

#include <boost/asio/post.hpp>

namespace muster::dns {

HostResolver::HostResolver(PrivateTag) : work_(boost::asio::make_work_guard(io_)) {}

Result<std::unique_ptr<HostResolver>> HostResolver::create(const ResolverOptions& options) {
  auto h = std::make_unique<HostResolver>(PrivateTag{});
  auto r = Resolver::create(h->io_, options);
  if (!r) return r.error();
  h->resolver_ = std::move(r).value();
  h->thread_ = std::thread([raw = h.get()] { raw->io_.run(); });
  return h;
}

HostResolver::~HostResolver() {
  // The resolver is destroyed on its own thread (c-ares is not thread-safe);
  // its cancelled lookups' handlers run there too, then the thread ends.
  boost::asio::post(io_, [this] {
    resolver_.reset();
    work_.reset();
  });
  if (thread_.joinable()) thread_.join();
}

void HostResolver::lookup_addresses(const std::string& host, Resolver::AddressHandler handler) {
  boost::asio::post(io_, [this, host, handler = std::move(handler)]() mutable {
    if (resolver_) resolver_->lookup_addresses(host, std::move(handler));
  });
}

}  // namespace muster::dns
