// node/proxy/forwarder.h: forwards one client exchange to a member.
//
// Asynchronous on the proxy's io_context, through net's one HTTP client
// (net/http_client.h): a forwarded request holds no thread while it waits
// for the member, so a watch stream or a v2 long-poll wait that stays open
// for hours costs one upstream socket and some memory, not a thread.
//
// Per request:
//   1. the Director's usable endpoints, in order; none -> 503 JSON
//      {"message":"httpproxy: zero endpoints currently available"} (etcd);
//   2. connect (--proxy-dial-timeout), send (--proxy-write-timeout), read the
//      answer's head; every read waits at most --proxy-read-timeout (0 = no
//      limit, etcd's default; a positive value also ends idle watches);
//   3. a failure before anything reached the client marks the endpoint
//      failed and moves to the next one if nothing can have been applied:
//      the connection never opened, or the request only reads (routes.h);
//      otherwise, or when every endpoint failed, 502 JSON
//      {"message":"httpproxy: unable to get response from N endpoint(s)"}
//      (etcd's words);
//   4. an answer with a known length is read whole and relayed with its
//      status and headers; a chunked (or open-ended) answer is relayed
//      piece by piece as it arrives and stays open as long as the member's.
//      If the member's stream breaks, a /v3 stream gets a gateway error line
//      (code 14, Unavailable) before it ends; others just end.
//   5. the client hanging up closes the upstream connection at once.
//
// Connections: reads reuse idle keep-alive connections to the member (the
// client's pool; a read that meets a connection the member just closed is
// sent again on a fresh one to the same member, which is not marked
// failed); every write gets a fresh connection that is closed after its
// answer, so a write is never sent on a connection the member may have just
// closed.  Connections probe a silent member (keep-alive, TCP_USER_TIMEOUT).
//
// Limits: no back-pressure from a slow client to a fast stream (pieces
// queue in the server's memory); a buffered answer above
// `buffered_body_limit` is relayed chunked instead.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "base/metrics.h"
#include "net/server.h"
#include "net/tls.h"
#include "node/proxy/director.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace muster::net {
class AsyncHttpClient;
}  // namespace muster::net

namespace muster::proxy {

// Every timeout: 0 = no limit (etcd's meaning for the --proxy-*-timeout flags).
struct ForwarderOptions {
  std::chrono::milliseconds dial_timeout{1000};   // connect and TLS handshake
  std::chrono::milliseconds write_timeout{5000};  // sending the request
  std::chrono::milliseconds read_timeout{0};      // each read of the answer
  net::TlsOptions tls;                            // for https member URLs
  std::size_t buffered_body_limit = 64 * 1024 * 1024;
};

class Forwarder {
 public:
  // `director` and `registry` must outlive the io_context's pending work
  // (declare them before the io_context).  Throws std::runtime_error when
  // the TLS files in `options.tls` cannot be loaded.
  Forwarder(boost::asio::io_context& io, Director& director, metrics::Registry& registry,
            ForwarderOptions options);
  ~Forwarder();

  // Starts forwarding; returns at once.  Any thread.
  void forward(std::shared_ptr<net::Exchange> ex);

 private:
  Director& director_;
  metrics::Registry& registry_;
  std::shared_ptr<const ForwarderOptions> options_;
  std::shared_ptr<net::AsyncHttpClient> client_;  // its pool holds idle member connections
};

}  // namespace muster::proxy
