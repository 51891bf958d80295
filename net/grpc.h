// net/grpc.h: gRPC calls as net/'s HTTP/2 server delivers them.
//
// Who uses it: a program that serves gRPC on a net::Server port (the
// member's client URLs serve etcd's etcdserverpb services this way).  net/
// knows no service: it hands every HTTP/2 request whose content-type is
// application/grpc to ServerOptions::grpc_handler as a Call, and the program
// routes by method() ("/etcdserverpb.KV/Range").
//
// The wire (gRPC over HTTP/2, PROTOCOL-HTTP2.md): each message is a 5-byte
// prefix (compressed flag, 4-byte big-endian length) and its bytes; the
// answer is response headers, messages, then trailers with grpc-status and a
// percent-encoded grpc-message.  An error before any message is a
// "trailers-only" answer.  net/ does the framing, reassembly, limits,
// deadlines (grpc-timeout), cancellation (RST_STREAM) and flow control; a
// Call carries whole serialized messages.
//
// Threads: the handler, and every Listener callback, run on the connection's
// strand; they must not block.  Call's methods may be called from any thread
// (work is posted to the strand).  REQUIRES: the handler calls start() before
// it returns; until then no message is delivered.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace muster::net::grpc {

// gRPC status codes (grpc/include/grpc/impl/codegen/status.h).
enum class Code : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

struct Status {
  Code code = Code::kOk;
  std::string message;
  bool ok() const { return code == Code::kOk; }
};

// Request metadata: the HTTP/2 header fields that are not pseudo-headers,
// names in lower case as HTTP/2 requires ("hasleader", "token",
// "client-api-version", "authorization").
class Metadata {
 public:
  void add(std::string name, std::string value) {
    if (fields_.empty()) fields_.reserve(8);
    fields_.emplace_back(std::move(name), std::move(value));
  }
  // The first value of `name`, or nullopt.
  std::optional<std::string_view> get(std::string_view name) const {
    for (const auto& [n, v] : fields_)
      if (n == name) return std::string_view(v);
    return std::nullopt;
  }
  const std::vector<std::pair<std::string, std::string>>& fields() const { return fields_; }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

// One gRPC call: unary, server-streaming, client-streaming or bidi look the
// same here.  The program answers unary calls with one send() then
// finish({}), or with finish(error).
class Call {
 public:
  virtual ~Call() = default;

  // What the client sent with the request.
  virtual const std::string& method() const = 0;  // the :path, "/pkg.Service/Method"
  virtual const Metadata& metadata() const = 0;
  virtual const std::string& remote_address() const = 0;    // "127.0.0.1"
  virtual const std::string& peer_common_name() const = 0;  // verified client cert CN
  // The client's deadline (grpc-timeout), if it sent one.  When it passes,
  // net/ answers DEADLINE_EXCEEDED and the listener's on_cancel runs.
  virtual std::optional<std::chrono::steady_clock::time_point> deadline() const = 0;

  struct Listener {
    // One whole request message (its bytes, without the 5-byte prefix).
    std::function<void(std::string message)> on_message;
    // The client finished sending (END_STREAM); for a unary call this comes
    // right after its single message.
    std::function<void()> on_half_close;
    // Runs once when the call can no longer be answered: the client reset
    // the stream or went away, the deadline passed, the server stops, or a
    // limit was hit (net/ then answered the client itself).  Not run after
    // finish().
    std::function<void()> on_cancel;
  };
  virtual void start(Listener l) = 0;

  // Queues one response message (its serialized bytes).  Ignored after
  // finish() or cancellation.  Response headers go out with the first one.
  virtual void send(std::string message) = 0;
  // Ends the call with trailers.  Only the first call counts.
  virtual void finish(Status s) = 0;
  // send() then finish(): a unary call's answer, handed to the connection
  // in one step.
  virtual void reply(std::string message, Status s) {
    send(std::move(message));
    finish(std::move(s));
  }

  // Bytes of response messages queued and not yet written to the socket,
  // for a producer (a watch) that wants to slow down or drop a slow client.
  virtual std::size_t queued_bytes() const = 0;
  // True once finished or cancelled.
  virtual bool done() const = 0;
};

using Handler = std::function<void(std::shared_ptr<Call>)>;

// HTTP/2 and gRPC settings of a port (etcd's flags in brackets).
struct Options {
  // SETTINGS_MAX_CONCURRENT_STREAMS per connection [--max-concurrent-streams].
  uint32_t max_concurrent_streams = 0xffffffffu;
  // A request message larger than this is refused with RESOURCE_EXHAUSTED
  // [etcd: --max-request-bytes + 512 KiB].
  std::size_t max_receive_message_bytes = 1536 * 1024 + 512 * 1024;
  // A client that pings more often than this (twice over) is sent GOAWAY
  // ENHANCE_YOUR_CALM "too_many_pings" [--grpc-keepalive-min-time].
  std::chrono::milliseconds keepalive_min_time{5'000};
  // After this long without a frame from the client the server pings it
  // [--grpc-keepalive-interval], and closes the connection when no answer
  // comes within keepalive_timeout [--grpc-keepalive-timeout].
  std::chrono::milliseconds keepalive_interval{2 * 3600 * 1000};
  std::chrono::milliseconds keepalive_timeout{20'000};
  // A stream whose unsent response bytes exceed this is reset with
  // RESOURCE_EXHAUSTED: a client that does not read cannot make the server
  // buffer without bound.
  std::size_t max_queued_bytes_per_stream = 64u << 20;
};

// Encodes/decodes grpc-message (percent-encoding of bytes outside 0x20-0x7e
// and of '%'), and the 5-byte message prefix.  Shared by the server and by
// clients written on top of net/.
std::string percent_encode(std::string_view s);
std::string percent_decode(std::string_view s);
std::string frame_message(std::string_view message);
// grpc-timeout ("100m", "5S", "1H", ...) -> duration; nullopt if malformed.
std::optional<std::chrono::nanoseconds> parse_timeout(std::string_view v);

}  // namespace muster::net::grpc
