// net/h2.h: net/'s HTTP/2 server connection (nghttp2 on asio).  Internal to
// net/: the server (server.cpp) hands a connection over once it has seen the
// client's HTTP/2 preface (plaintext, "prior knowledge" as grpc-go dials) or
// agreed on "h2" by ALPN (TLS).
//
// Requests whose content-type is application/grpc become grpc::Calls for the
// gRPC handler (net/grpc.h); every other request becomes an Exchange for the
// HTTP handler, as Go's http2 server lets etcd route by content-type, so
// `curl --http2` reaches /health and /v3/* on the same port.
//
// Threads: everything runs on the stream's strand; Call and Exchange methods
// called from other threads are posted there.
#pragma once

#include <memory>
#include <string>

#include "net/connection.h"
#include "net/grpc.h"
#include "net/server.h"

namespace muster::net::detail {

// What an HTTP/2 connection needs from its server.
struct H2Context {
  Handler http_handler;
  grpc::Handler grpc_handler;
  grpc::Options grpc;
  std::size_t header_limit = 16 * 1024;
  std::size_t body_limit = 1024 * 1024;
  // Removes the connection from the server's registry (runs once, on close).
  std::function<void(ConnectionBase*)> on_closed;
  // Registers it; false = the server is stopping or full (then it is closed).
  std::function<bool(const std::shared_ptr<ConnectionBase>&)> on_open;
};

// Starts serving HTTP/2 on `stream`.  `initial` holds bytes already read from
// it (the preface, maybe more).  REQUIRES: called on stream's strand.
void start_h2_connection(std::unique_ptr<ByteStream> stream, std::string initial,
                         std::string remote_address, std::string peer_cn,
                         std::shared_ptr<const H2Context> ctx);

// The client connection preface every HTTP/2 connection starts with.
inline constexpr std::string_view kH2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

}  // namespace muster::net::detail
