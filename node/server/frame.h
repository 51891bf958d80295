// node/server/frame.h: the peer transport's frames and the connection that
// carries them (internal to the transport: frame, peer, snapshot_stream and
// transport .cpp files; nothing else includes it).
//
// Frame: 4-byte big-endian length N, then N bytes: 1 type byte + protobuf
// payload.  1 <= N <= max_frame_bytes (docs/transport.md has the table of
// types and who sends which).
//
// A FrameConn is one TCP (or TLS over TCP) connection.  It lives on its own
// strand and is driven by C++20 coroutines spawned on that strand; every
// method runs there, except close_soon().  A Deadline closes a connection
// whose operation takes too long.
#pragma once

// GCC 12 flags Boost 1.74's awaitable frames (allocated by a class operator
// new, freed by the matching sized operator delete) as mismatched once
// inlined: a false positive, silenced for the transport's files only.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <google/protobuf/message_lite.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace muster::server::transport_detail {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using boost::system::error_code;

inline constexpr const char* kCaller = "server/transport";

enum class FrameType : uint8_t {
  kHandshake = 1,
  kHandshakeReply = 2,
  kRaftMessage = 3,
  kSnapshotChunk = 4,
  kSnapshotResult = 5,
  kForward = 6,  // transportpb.Forward, on a Raft stream
};

// A peer broke the protocol (bad frame, bad payload, unexpected frame).
struct ProtocolError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline std::string hex_id(uint64_t id) {
  std::ostringstream s;
  s << std::hex << id;
  return s.str();
}

// Appends one frame.  Returns false (and appends nothing) when the frame
// would exceed `max_frame`.
inline bool append_frame(std::string* out, FrameType type, const google::protobuf::MessageLite& m,
                         size_t max_frame) {
  const size_t n = m.ByteSizeLong() + 1;
  if (n > max_frame || n > UINT32_MAX) return false;
  const auto len = static_cast<uint32_t>(n);
  const char header[5] = {static_cast<char>(len >> 24), static_cast<char>(len >> 16),
                          static_cast<char>(len >> 8), static_cast<char>(len),
                          static_cast<char>(type)};
  out->append(header, sizeof header);
  m.AppendToString(out);
  return true;
}

struct Frame {
  FrameType type;
  std::string_view payload;  // valid until the next read on the connection
};

template <typename M>
M parse_payload(const Frame& f, const char* what) {
  M m;
  if (!m.ParseFromArray(f.payload.data(), static_cast<int>(f.payload.size())))
    throw ProtocolError(std::string("malformed ") + what + " frame");
  return m;
}

// One TCP (or TLS over TCP) connection carrying frames.  Every method runs
// on the socket's strand, except close_soon().
class FrameConn : public std::enable_shared_from_this<FrameConn> {
 public:
  explicit FrameConn(tcp::socket s) : socket_(std::move(s)) {}
  explicit FrameConn(const asio::any_io_executor& ex) : socket_(ex) {}

  tcp::socket& socket() { return socket_; }
  void use_tls(ssl::context& ctx) { tls_.emplace(socket_, ctx); }
  SSL* ssl_handle() { return tls_->native_handle(); }
  bool tls() const { return tls_.has_value(); }

  awaitable<void> tls_handshake(ssl::stream_base::handshake_type t) {
    co_await tls_->async_handshake(t, use_awaitable);
  }

  awaitable<void> write(const std::string& bytes) {
    if (tls_)
      co_await asio::async_write(*tls_, asio::buffer(bytes), use_awaitable);
    else
      co_await asio::async_write(socket_, asio::buffer(bytes), use_awaitable);
  }

  // Reads one whole frame; throws ProtocolError on a bad length or type and
  // boost::system::system_error on I/O errors (eof when the peer closed).
  awaitable<Frame> read_frame(size_t max_frame) {
    while (end_ - begin_ < 4) co_await fill(4);
    const auto* p = reinterpret_cast<const unsigned char*>(buf_.data() + begin_);
    const uint32_t len =
        (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
    if (len == 0) throw ProtocolError("empty frame");
    if (len > max_frame)
      throw ProtocolError("frame of " + std::to_string(len) + " bytes exceeds the limit of " +
                          std::to_string(max_frame));
    const size_t total = size_t{4} + len;
    while (end_ - begin_ < total) co_await fill(total);
    const auto type = static_cast<uint8_t>(buf_[begin_ + 4]);
    if (type < 1 || type > 6) throw ProtocolError("unknown frame type " + std::to_string(type));
    Frame f{static_cast<FrameType>(type), std::string_view(buf_.data() + begin_ + 5, len - 1)};
    begin_ += total;
    co_return f;
  }

  // The next `n` buffered bytes, without consuming them.
  awaitable<std::string_view> peek(size_t n) {
    while (end_ - begin_ < n) co_await fill(n);
    co_return std::string_view(buf_.data() + begin_, n);
  }

  // The next `n` bytes, consumed.
  awaitable<std::string> read_bytes(size_t n) {
    while (end_ - begin_ < n) co_await fill(n);
    std::string out(buf_.data() + begin_, n);
    begin_ += n;
    co_return out;
  }

  // Reads an HTTP request head (up to the blank line, at most `limit`
  // bytes); throws ProtocolError when it is longer.
  awaitable<std::string> read_http_head(size_t limit) {
    for (;;) {
      std::string_view have(buf_.data() + begin_, end_ - begin_);
      auto pos = have.find("\r\n\r\n");
      if (pos != std::string_view::npos) {
        std::string head(have.substr(0, pos));
        begin_ += pos + 4;
        co_return head;
      }
      if (have.size() >= limit) throw ProtocolError("HTTP request head too long");
      co_await fill(have.size() + 1);
    }
  }

  void close() {
    closed_ = true;
    error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
  }
  // Half-closes after a final frame so the peer reads it before EOF.
  void shutdown_send() {
    error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
  }
  // Any thread.
  void close_soon() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->close(); });
  }
  bool is_open() const { return !closed_ && socket_.is_open(); }

  std::string remote() const {
    error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    if (ec) return "?";
    std::ostringstream s;
    s << ep;
    return s.str();
  }

  // The member at the other end once the handshake is done (0 before).
  std::atomic<uint64_t> peer_id{0};

 private:
  // Reads until at least `need` bytes are buffered from begin_.
  awaitable<void> fill(size_t need) {
    if (buf_.size() - begin_ < need) {
      std::copy(buf_.begin() + begin_, buf_.begin() + end_, buf_.begin());
      end_ -= begin_;
      begin_ = 0;
      if (buf_.size() < need) buf_.resize(std::max(need, size_t{64} << 10));
    }
    if (end_ == begin_ && buf_.size() > (size_t{1} << 20) && need <= (size_t{64} << 10)) {
      // Give back the memory of a past large frame.
      buf_.resize(size_t{64} << 10);
      buf_.shrink_to_fit();
      begin_ = end_ = 0;
    }
    auto space = asio::buffer(buf_.data() + end_, buf_.size() - end_);
    size_t n = tls_ ? co_await tls_->async_read_some(space, use_awaitable)
                    : co_await socket_.async_read_some(space, use_awaitable);
    end_ += n;
  }

  tcp::socket socket_;
  std::optional<ssl::stream<tcp::socket&>> tls_;  // declared after socket_: destroyed first
  std::vector<char> buf_;
  size_t begin_ = 0, end_ = 0;
  bool closed_ = false;
};

// Closes `conn` (and cancels `resolver`) when the deadline passes, unless
// disarmed first.  Lives in the coroutine frame that owns the operation.
class Deadline {
 public:
  Deadline(const asio::any_io_executor& ex, std::shared_ptr<FrameConn> conn,
           std::chrono::milliseconds d)
      : timer_(ex), state_(std::make_shared<State>()) {
    state_->conn = std::move(conn);
    arm(d);
  }
  ~Deadline() { disarm(); }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  void arm(std::chrono::milliseconds d) {
    const uint64_t gen = ++state_->gen;
    timer_.expires_after(d);
    // An expiry already queued when the deadline is re-armed or disarmed
    // cannot be cancelled any more: the generation tells it apart.
    timer_.async_wait([st = state_, gen](error_code ec) {
      if (ec || st->gen != gen) return;
      st->expired = true;
      if (auto c = st->conn.lock()) c->close();
      if (st->resolver) st->resolver->cancel();
    });
  }
  void disarm() {
    ++state_->gen;
    timer_.cancel();
  }
  // REQUIRES: *r outlives the deadline or unwatch() is called first.
  void watch(tcp::resolver* r) { state_->resolver = r; }
  void unwatch() { state_->resolver = nullptr; }
  bool expired() const { return state_->expired; }

 private:
  // Shared with the timer's handler, which may run after the Deadline is
  // gone; touched only on the strand both run on.
  struct State {
    std::weak_ptr<FrameConn> conn;
    tcp::resolver* resolver = nullptr;
    uint64_t gen = 0;
    bool expired = false;
  };
  asio::steady_timer timer_;
  std::shared_ptr<State> state_;
};

inline std::string describe(const std::exception& e, const Deadline& d, const char* what) {
  if (d.expired()) return std::string("timed out ") + what;
  return e.what();
}

}  // namespace muster::server::transport_detail
