// node/server/v2_api.h: etcd 3.4's v2 HTTP API on a member, served when the
// member runs with --enable-v2 (docs/api-v2.md lists the routes and where
// they differ from etcd):
//   /v2/keys[/...]   the v2 keys API: GET (recursive, sorted, quorum, wait),
//                    PUT, POST (in-order keys), DELETE, HEAD;
//   /v2/members      GET (the member list), /v2/members/leader;
//   /v2/machines     the client URLs of the cluster, comma separated;
//   /v2/stats/self, /v2/stats/store.
//
// Who uses it: the member's client listener tries handle() on every request
// (after the v3 API); it returns false for paths outside /v2/.  The keys
// model lives in node/storage/v2store.h; writes are replicated through
// MemberApi::propose with InternalRequest.v2, quorum reads pass a
// MemberApi::read_barrier first, and a `wait=true` long poll holds a
// MemberApi::subscribe subscription until a matching change is applied (or
// the client hangs up, which releases it).
//
// Threads: handle() runs on a connection's strand and never blocks on Raft;
// answers go out from MemberApi callbacks (usually the driver's apply
// thread).  Request timeouts are the driver's: a proposal or read barrier it
// gives up on fails with "etcdserver: request timed out", which this API
// reports as etcd does (v2 error 300, HTTP 500).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "net/server.h"
#include "node/server/member_api.h"

namespace muster::server {

class V2Api {
 public:
  struct Options {
    // A PUT/POST whose value is larger than this fails with etcd's
    // "etcdserver: request is too large" (v2 error 300), as --max-request-bytes.
    std::size_t max_request_bytes = 1536 * 1024;
  };

  // REQUIRES: the member outlives every call of handle() and every answer
  // in flight: stop the servers that call handle() and the member's driver
  // before destroying either.  (This object may outlive the member: it keeps
  // no callback the member could still run after both are stopped.)
  V2Api(MemberApi& member, Options options);
  ~V2Api();
  V2Api(const V2Api&) = delete;
  V2Api& operator=(const V2Api&) = delete;

  // Serves the request if its path is under /v2/ (or is /v2/keys) and
  // returns true; returns false otherwise without touching the exchange.
  bool handle(const std::shared_ptr<net::Exchange>& ex);

  // Open `wait=true` long polls (tests: a closed connection must release its
  // waiter).
  std::size_t open_waiters() const;

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace muster::server
