// net/http_client.h: Muster's one HTTP/1.1 client (plain or TLS):
// asynchronous, on the caller's io_context.
//
// Who uses it: the proxy (every forwarded request, node/proxy/forwarder),
// the proxy's member-list refresher and a joining member
// (node/bootstrap/peer_members), the discovery service's etcd store
// (discovery/etcd_store), and -- through net::HttpClient (net/client.h),
// which drives it to completion on a private io_context -- musterctl, the
// discovery bootstrap of a member and tests.  A call holds no thread while
// it waits: a watch open for hours costs a socket and a little memory.
//
// What a call does: dial (net/dial.h) or take an idle keep-alive connection
// to the same origin, send, read the answer whole (request()) or piece by
// piece (stream()).  A call that fails before any byte of the answer
// arrived on a connection taken from the pool is sent again once on a fresh
// connection (the server may have closed the idle one); requests that must
// not be sent twice say reuse_connection = false and always get a fresh
// connection, closed after the answer.  Whole answers follow redirects as
// Go's client does (etcd's discovery client relies on that).
//
// Limits: every phase has its own timeout (connect, handshake, write, each
// read) and the whole call a deadline; 0 = none.
//
// Threads: any thread may start calls; a call's handlers run on a strand of
// its own; cancel() may be called from any thread.  The client must outlive
// its calls' handlers (the io_context's pending work).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "net/http.h"
#include "net/socket_options.h"
#include "net/tls.h"
#include "net/url.h"

namespace muster::net {

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{5'000};  // resolve + connect
  std::chrono::milliseconds handshake_timeout{0};    // TLS; 0 = the deadline only
  std::chrono::milliseconds timeout{5'000};          // a whole call, connect included
  std::chrono::milliseconds write_timeout{0};        // sending the request
  std::chrono::milliseconds read_timeout{0};         // each read of the answer
  TlsOptions tls;                                    // used for https URLs
  std::size_t body_limit = 64 * 1024 * 1024;         // whole answers
  int max_redirects = 10;  // 3xx with Location followed (whole answers only)
  // Sends every request to this http proxy (absolute-form targets) instead.
  std::optional<Url> proxy;
  std::string user_agent = "muster";  // "" = send none (the request's own, if any)
  KeepAlive keep_alive;               // dead-peer detection on every connection
  std::size_t max_idle_per_origin = 64;
  // Idle connections older than this are not reused: servers close theirs
  // (net::Server after 120 s), give them up well before.
  std::chrono::seconds max_idle{30};
};

struct ClientRequest {
  ClientRequest() = default;
  ClientRequest(std::string m, std::string u, std::string b = "", Headers h = {})
      : method(std::move(m)), url(std::move(u)), body(std::move(b)), headers(std::move(h)) {}

  std::string method = "GET";
  std::string url;
  std::string body;
  Headers headers;
  // Keep-alive and the idle pool; false: a fresh connection, closed after
  // the answer, and never a second attempt.
  bool reuse_connection = true;
  // Overrides ClientOptions::timeout for this call (0 = no deadline).
  std::optional<std::chrono::milliseconds> timeout;
};

// The result of a call: a response (for stream(), its head), or a sentence
// saying why there is none, the step that failed and the bare reason.
struct ClientResult {
  enum class Step { kNone, kResolve, kConnect, kHandshake, kSend, kHead, kBody };
  ClientResult() = default;
  ClientResult(std::optional<Response> r, std::string e, Step s = Step::kNone, std::string why = "")
      : response(std::move(r)), error(std::move(e)), step(s), reason(std::move(why)) {}

  std::optional<Response> response;
  std::string error;  // set when !response
  Step step = Step::kNone;
  std::string reason;  // the underlying error alone ("Connection refused")
  bool ok() const { return response.has_value(); }
  // The request may have reached the server (a write may have been applied).
  bool maybe_sent() const { return step >= Step::kSend; }
};

// stream(): the answer's head, then its body piece by piece.  Either
// callback returns false to stop (the connection is then closed and the
// call ends with the head as its result).
struct StreamHandlers {
  // `length`: the Content-Length, when the answer has one; `complete`: no
  // body follows.
  std::function<bool(const Response& head, std::optional<uint64_t> length, bool complete)> on_head;
  std::function<bool(std::string_view data)> on_data;
};

class HttpCall {
 public:
  virtual ~HttpCall() = default;
  // Ends the call: its connection is closed; the completion handler still
  // runs (with an error, unless it had already run).  Any thread.
  virtual void cancel() = 0;
};

using ClientHandler = std::function<void(ClientResult)>;

// The call in flight of work made of calls one after another (a failover
// over endpoints, a fetch over peers): cancelling the work cancels
// whichever call is current and every later one.  Pass it to
// AsyncHttpClient::request/stream rather than holding their result: a call
// may complete, and its completion start the next, before they return.
// Any thread.
class CallSlot {
 public:
  // Makes `call` the current one; false when the work was cancelled
  // already (`call` is then cancelled too).
  bool hold(std::shared_ptr<HttpCall> call);
  void cancel();
  bool cancelled() const;

 private:
  mutable std::mutex mu_;  // guards both below
  bool cancelled_ = false;
  std::shared_ptr<HttpCall> call_;
};

class AsyncHttpClient {
 public:
  // `io`: the executor connections and calls run on (an io_context's).
  AsyncHttpClient(boost::asio::any_io_executor io, ClientOptions options = {});
  ~AsyncHttpClient();
  AsyncHttpClient(const AsyncHttpClient&) = delete;
  AsyncHttpClient& operator=(const AsyncHttpClient&) = delete;

  const ClientOptions& options() const;

  // Builds the TLS context now.  Throws std::runtime_error naming the file
  // that cannot be loaded (otherwise the first https call reports it).
  void load_tls();

  // One exchange, the answer read whole (up to body_limit).  With `slot`,
  // the call is made the slot's current one before it starts, so a
  // completion that starts the next call can never be overtaken by it.
  std::shared_ptr<HttpCall> request(ClientRequest req, ClientHandler done,
                                    CallSlot* slot = nullptr);
  // One exchange, the answer streamed.  A deadline that passes after the
  // head ends the call with the head as its result; any other failure
  // after the head is an error (step kBody).
  std::shared_ptr<HttpCall> stream(ClientRequest req, StreamHandlers handlers, ClientHandler done,
                                   CallSlot* slot = nullptr);

  // Drops idle connections.
  void close_idle();

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace muster::net
