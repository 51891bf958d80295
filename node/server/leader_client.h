// node/server/leader_client.h: the requests a member sends to its leader's
// client URLs (RaftNodeOptions::forward_keepalive / forward_promote), as
// asynchronous gRPC calls on the member's io_context: one HTTP/2 connection
// per leader URL (net/grpc_client.h) shared by every forwarded request, no
// thread per request.
//
// Some requests only the leader can answer: a lease keepalive refreshes the
// leader's lease clock, a lease's remaining TTL is on that clock, and
// promoting a learner needs its view of the learner's log.  etcd forwards them over its peer
// connection; Muster sends them to the leader's client API as any client would (LeaseKeepAlive and
// MemberPromote), with the member's client TLS settings for https URLs.
//
// Errors: the leader's etcd error passes through (code and text); a leader
// that cannot be reached on any of its URLs, or does not answer within the
// timeout, gives Unavailable "etcdserver: request timed out".
//
// Threads: any method from any thread; callbacks run on the io_context.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "net/grpc_client.h"
#include "net/tls.h"
#include "node/storage/pb.h"
#include "node/storage/status.h"

namespace muster::server {

class LeaderClient {
 public:
  // `urls_of(id)`: the client URLs of member `id` (empty if unknown).
  LeaderClient(boost::asio::io_context& io, net::TlsOptions tls, std::chrono::milliseconds timeout,
               std::function<std::vector<std::string>(uint64_t)> urls_of);
  ~LeaderClient();
  LeaderClient(const LeaderClient&) = delete;
  LeaderClient& operator=(const LeaderClient&) = delete;

  // The leader's TTL for `lease`; kNotFound "etcdserver: requested lease not
  // found" when the leader does not know it.
  void keepalive(uint64_t leader, int64_t lease,
                 std::function<void(storage::Status, int64_t ttl)> done);
  // The leader's answer to LeaseTimeToLive; kNotFound "etcdserver:
  // requested lease not found" when the leader does not know the lease.
  void time_to_live(
      uint64_t leader, const etcdserverpb::LeaseTimeToLiveRequest& req,
      std::function<void(storage::Status, etcdserverpb::LeaseTimeToLiveResponse)> done);
  // Asks the leader to promote learner `member`.
  void promote(uint64_t leader, uint64_t member, std::function<void(storage::Status)> done);

  // Closes the connections; calls in flight end with Unavailable.
  void close();

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace muster::server
