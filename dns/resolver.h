// An asynchronous DNS resolver: c-ares 1.18 driven by an asio io_context.
//
// Threading: every call, and every completion handler, runs on the thread
// that runs `io` (c-ares 1.18 has no channel locking).  REQUIRES: `io` is run
// by a single thread, or all use of one Resolver is confined to one strand.
//
// REQUIRES: the Resolver is destroyed before `io`.
//
// Completion handlers are always posted to `io`, never called from inside a
// Resolver method, so a handler may start new lookups or destroy the
// Resolver.  Lookups still running when the Resolver is destroyed complete
// with ErrorKind::kCancelled (if `io` still runs).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dns/result.h"
#include "dns/srv.h"

namespace muster::dns {

struct ResolverOptions {
  // "host:port", "[ipv6]:port" or a bare address (port 53): send every query
  // to this server only (--dns-server), without resolv.conf search domains.
  // Empty: servers, search domains and options from /etc/resolv.conf.
  std::string server;
  // Time to wait for one answer; c-ares doubles it on each retry round.
  std::chrono::milliseconds timeout{2000};
  // Attempts per server before giving up.
  int tries = 2;
};

// Parses ResolverOptions::server ("host:port" forms above) into c-ares'
// "ip:port" csv form.  The host must be an address literal.
Result<std::string> parse_dns_server(std::string_view server);

class Resolver {
 public:
  using SrvHandler = std::function<void(Result<std::vector<SrvRecord>>)>;
  using AddressHandler = std::function<void(Result<std::vector<boost::asio::ip::address>>)>;

  static Result<std::unique_ptr<Resolver>> create(boost::asio::io_context& io,
                                                  const ResolverOptions& options);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // SRV records of `name` in answer order (a name ending in "." is absolute;
  // otherwise resolv.conf search rules apply, as for etcd).  Errors carry
  // only the DNS outcome ("NXDOMAIN", "timed out after ..."): callers add
  // what they asked.
  void lookup_srv(const std::string& name, SrvHandler handler);

  // A and AAAA addresses of `host` (hosts file, then DNS).  An address
  // literal is returned as is.
  void lookup_addresses(const std::string& host, AddressHandler handler);

  // The servers queries go to, "ip:port,...", for error messages.
  std::string servers() const;

  // The io_context handlers are posted to.
  boost::asio::io_context& context() const;

 private:
  struct Impl;
  struct PrivateTag {};

 public:
  // Use create().
  Resolver(PrivateTag, std::shared_ptr<Impl> impl);

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace muster::dns
