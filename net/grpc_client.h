// net/grpc_client.h: an asynchronous gRPC client over one HTTP/2 connection
// (nghttp2's client session on asio), plaintext with prior knowledge or TLS
// with ALPN "h2", the way grpc-go dials.
//
// Who uses it: the proxy (each gRPC call it accepts becomes a call to a
// member), a member forwarding to its leader, tools.  It carries whole
// serialized messages and knows no service.
//
// Model: a Channel owns at most one connection to its address, opened on
// the first call and again after it breaks; calls multiplex over it.  Each
// call's Listener callbacks run on the channel's strand and must not block.
// Channel and ClientCall methods may be called from any thread.  A call whose
// connection fails or closes finishes with UNAVAILABLE and the reason.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "net/grpc.h"
#include "net/socket_options.h"
#include "net/tls.h"

namespace muster::net::grpc {

class ClientCall {
 public:
  virtual ~ClientCall() = default;
  // Queues one request message.  Ignored after half_close() or the end.
  virtual void send(std::string message) = 0;
  // END_STREAM: no more request messages.
  virtual void half_close() = 0;
  // Resets the stream (RST_STREAM CANCEL); on_finish runs with CANCELLED
  // unless the call had already ended.
  virtual void cancel() = 0;
};

struct ClientListener {
  std::function<void(std::string message)> on_message;
  // Runs exactly once, last: the server's status, or the client-side reason
  // the call ended (UNAVAILABLE when the connection failed).
  std::function<void(Status)> on_finish;
};

struct ChannelOptions {
  std::string host;  // an IP address or a name resolved when connecting
  uint16_t port = 0;
  std::optional<TlsOptions> tls;  // set: TLS with ALPN h2
  std::chrono::milliseconds connect_timeout{5'000};
  // Dead-peer detection on the connection (TCP keep-alive probes and
  // TCP_USER_TIMEOUT, net/socket_options.h); off by default.
  KeepAlive keep_alive;
};

class Channel {
 public:
  Channel(boost::asio::io_context& io, ChannelOptions options);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Starts a call of `method` ("/pkg.Service/Method") with `metadata`
  // (lower-case names; pseudo-headers and the gRPC ones are added here).
  std::shared_ptr<ClientCall> call(std::string method, Metadata metadata, ClientListener l,
                                   std::optional<std::chrono::milliseconds> timeout = {});

  // Closes the connection; calls in flight finish with UNAVAILABLE.
  void close();

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace muster::net::grpc
