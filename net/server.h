// net/server.h: an HTTP/1.1 server (plain or TLS) on Boost.Asio + Beast.
//
// Who uses it: every Muster program that serves HTTP (muster-discovery, the
// member's client and metrics listeners, the proxy).
//
// Model: one Server owns its listeners and connections and runs on an
// io_context the caller drives (from one or more threads).  Every request
// becomes an Exchange handed to the Handler on the connection's strand.  The
// handler must not block; it answers now or later, from any thread, with
// respond(), or streams a chunked body with begin_stream()/write()/
// end_stream().  A pending exchange (a long-poll, a watch stream) holds no
// thread.  If the client goes away or the server stops before the answer is
// complete, the exchange's cancel callback runs once, on the strand.
//
// Limits: request header and body sizes (431 / 413 and the connection is
// closed), time to receive a request (connection closed), keep-alive idle
// time, TLS handshake time, and a cap on open connections.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "net/grpc.h"
#include "net/http.h"
#include "net/tls.h"

namespace boost::asio {
class io_context;
}

namespace muster::net {

// One request and its (eventual) answer.  Thread-safe: any method may be called
// from any thread; work is posted to the connection's strand.
class Exchange {
 public:
  virtual ~Exchange() = default;

  virtual const Request& request() const = 0;
  // The client's IP address as text ("127.0.0.1", "::1").
  virtual const std::string& remote_address() const = 0;
  // Common name of the verified client certificate, empty without one.
  virtual const std::string& peer_common_name() const = 0;

  // Sends a whole response.  Only the first answer counts; later calls, and
  // calls after the client went away, are ignored.
  virtual void respond(Response r) = 0;

  // Streaming: sends status and headers with chunked transfer encoding, then
  // each write() as one chunk; end_stream() finishes the response.
  virtual void begin_stream(Response head) = 0;
  virtual void write(std::string chunk) = 0;
  virtual void end_stream() = 0;

  // `f` runs once, on the strand, when the exchange can no longer be
  // answered normally: the client closed the connection, or the server is
  // stopping.  On server stop the exchange may still respond() (for example
  // an empty long-poll answer) and the bytes are flushed before closing.
  virtual void on_cancel(std::function<void()> f) = 0;
  // True once the answer is complete or the client is gone.
  virtual bool finished() const = 0;
};

using Handler = std::function<void(std::shared_ptr<Exchange>)>;

struct ServerOptions {
  std::size_t header_limit = 16 * 1024;
  std::size_t body_limit = 1024 * 1024;
  std::chrono::milliseconds request_timeout{30'000};  // to receive one whole request
  std::chrono::milliseconds idle_timeout{120'000};    // keep-alive with nothing pending
  std::chrono::milliseconds handshake_timeout{10'000};
  std::size_t max_connections = 50'000;
  std::optional<TlsOptions> tls;  // set: serve https
  // Set: the port also speaks HTTP/2 (net/h2.h): plaintext connections that
  // open with the HTTP/2 preface, and TLS connections that agree on "h2" by
  // ALPN (preferred over "http/1.1", as Go's servers prefer it).  HTTP/2
  // requests with content-type application/grpc become grpc::Calls for this
  // handler; other HTTP/2 requests reach the Handler like HTTP/1.1 ones.
  grpc::Handler grpc_handler;
  grpc::Options grpc;
};

class Server {
 public:
  Server(boost::asio::io_context& io, ServerOptions options, Handler handler);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and listens on host:port (port 0 picks a free port).  Returns the
  // bound port.  Throws std::runtime_error naming the address on failure.
  uint16_t listen(const std::string& host, uint16_t port);

  // Binds and listens on host:port like listen(), but accepts nothing yet:
  // clients connect (the kernel queues them, up to its backlog) and their
  // requests wait until accept_connections().  A member that has not joined
  // its cluster holds client connections this way, as etcd does.
  uint16_t bind(const std::string& host, uint16_t port);
  // Starts accepting on every listener bound with bind().  Once.
  void accept_connections();

  // Stops accepting, cancels pending exchanges (their cancel callbacks run),
  // closes idle connections and closes the others once their answer is out.
  // Safe to call from any thread, more than once.
  void stop();
  // After stop(): waits until every connection has closed (their answers
  // written, their shutdown run), `timeout` at most; returns whether they
  // all did.  A program that stops its io_context itself must wait first:
  // an exchange and its connection hold each other until the answer is out,
  // so abandoning the posted work leaves both (and this server) behind.
  // Not from the io_context's own threads.
  bool wait_closed(std::chrono::milliseconds timeout);

  std::size_t open_connections() const;

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace muster::net
