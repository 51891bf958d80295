// dns/host_resolver.h: a Resolver on a thread of its own, for callers that
// run on other threads (a member's peer dialer resolving peer host names
// through --dns-server).
//
// Threading: lookup_addresses() from any thread; handlers run on the
// resolver's thread and must not block.  The destructor stops the thread;
// lookups still running then complete with ErrorKind::kCancelled.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "dns/resolver.h"

namespace muster::dns {

class HostResolver {
 public:
  static Result<std::unique_ptr<HostResolver>> create(const ResolverOptions& options);
  ~HostResolver();
  HostResolver(const HostResolver&) = delete;
  HostResolver& operator=(const HostResolver&) = delete;

  // A and AAAA addresses of `host` (hosts file, then the configured DNS
  // server); an address literal is returned as is.
  void lookup_addresses(const std::string& host, Resolver::AddressHandler handler);

 private:
  struct PrivateTag {};

 public:
  explicit HostResolver(PrivateTag);

 private:
  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::unique_ptr<Resolver> resolver_;
  std::thread thread_;
};

}  // namespace muster::dns
