// net/dial.h: the one way Muster opens a client connection: resolve,
// connect, socket options, and for TLS the handshake toward the host (SNI,
// the certificate checked against the host name or IP address, ALPN).
//
// Who uses it: the HTTP client (net/http_client.h, and through it the proxy,
// bootstrap, the discovery etcd store and musterctl) and the gRPC client
// (net/grpc_client.h).
//
// Threads: the sockets live on `io` (so a pooled connection can serve any
// later caller); every handler, the final one included, runs on `strand`,
// and cancel() must be called there too.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "net/socket_options.h"
#include "net/tls.h"

namespace muster::net {

struct DialOptions {
  // Resolving and connecting; 0 = no limit.
  std::chrono::milliseconds connect_timeout{5'000};
  // The TLS handshake; 0 = no limit.
  std::chrono::milliseconds handshake_timeout{5'000};
  // Set for TLS: the context (make_client_tls_context) and the options it
  // was made from (server_name, insecure_skip_verify).
  std::shared_ptr<boost::asio::ssl::context> tls_context;
  TlsOptions tls;
  // ALPN protocols in wire form ("\x02h2"); empty = no ALPN.
  std::string alpn;
  KeepAlive keep_alive;
};

// A connected socket, or the TLS stream over it.
struct Dialed {
  std::unique_ptr<boost::asio::ip::tcp::socket> plain;
  std::unique_ptr<boost::asio::ssl::stream<boost::asio::ip::tcp::socket>> tls;

  boost::asio::ip::tcp::socket& socket() { return plain ? *plain : tls->next_layer(); }
  explicit operator bool() const { return plain || tls; }
};

// Why a dial failed: the step, and a sentence ("cannot connect to h:p: ...").
struct DialError {
  enum class Step { kNone, kResolve, kConnect, kHandshake } step = Step::kNone;
  boost::system::error_code ec;  // the underlying error (timed_out on a deadline)
  std::string message;
  explicit operator bool() const { return step != Step::kNone; }
};

class Dial {
 public:
  using Handler = std::function<void(DialError, Dialed)>;
  virtual ~Dial() = default;
  // Stops the dial; the handler still runs, with an error.
  virtual void cancel() = 0;
};

// Starts dialing host:port; `handler` runs once, on `strand`.
std::shared_ptr<Dial> dial(boost::asio::any_io_executor io, boost::asio::any_io_executor strand,
                           const std::string& host, uint16_t port, const DialOptions& options,
                           Dial::Handler handler);

}  // namespace muster::net
