// Peer transport: see transport.h for the model, docs/transport.md for the
// wire format.
//
// Frame: 4-byte big-endian length N, then N bytes: 1 type byte + protobuf
// payload.  1 <= N <= max_frame_bytes.
//
// Concurrency: every connection (FrameConn) lives on its own strand and is
// driven by C++20 coroutines spawned on that strand.  A Peer's state (queue,
// current connection, backoff) is touched only on the Peer's strand, which is
// also the strand of its outgoing connections.  Core::mu guards the maps
// shared between strands (peers, listeners, open connections); handler_mu
// guards the handlers and lets stop() wait for running handlers.
#include "node/server/transport.h"

// GCC 12 flags Boost 1.74's awaitable frames (allocated by a class operator
// new, freed by the matching sized operator delete) as mismatched once
// inlined: a false positive, silenced for this file only.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <sstream>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include "base/log.h"
#include "net/url.h"
#include "node/server/transport.pb.h"

namespace muster::server {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr const char* kCaller = "server/transport";

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

std::string hex_id(uint64_t id) {
  std::ostringstream s;
  s << std::hex << id;
  return s.str();
}

// Appends one frame.  Returns false (and appends nothing) when the frame
// would exceed `max_frame`.
bool append_frame(std::string* out, FrameType type, const google::protobuf::MessageLite& m,
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

// The thread pool for storage work, and whether it still takes work (it
// stops when the Transport is destroyed).
struct StoragePool {
  explicit StoragePool(size_t threads) : pool(std::max<size_t>(1, threads)) {}
  std::mutex mu;
  bool closed = false;
  asio::thread_pool pool;

  void close_and_join() {
    {
      std::lock_guard l(mu);
      closed = true;
    }
    pool.join();
  }
};

// Runs (*job)() on the storage pool (or, once the pool is closed, right here)
// and resumes the awaiting coroutine on its own executor with the result.
// The job must not throw and must outlive the co_await (a named local of the
// awaiting coroutine).  Only pointers cross into the awaitable machinery: with
// g++ 12 we saw a snapshot writer freed while still in use when it reached a
// coroutine inside a temporary, so coroutine arguments here are named values.
template <typename F>
auto offload(StoragePool* sp, F* job) {
  using R = std::invoke_result_t<F&>;
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(R)>(
      [sp, job](auto handler) {
        auto run = [job](auto handler) {
          R r = (*job)();
          auto ex = asio::get_associated_executor(handler);
          asio::post(ex, [handler = std::move(handler), r = std::move(r)]() mutable {
            std::move(handler)(std::move(r));
          });
        };
        std::unique_lock l(sp->mu);
        if (!sp->closed) {
          asio::post(sp->pool,
                     [run, handler = std::move(handler)]() mutable { run(std::move(handler)); });
          return;
        }
        l.unlock();
        run(std::move(handler));
      },
      use_awaitable);
}

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

std::string describe(const std::exception& e, const Deadline& d, const char* what) {
  if (d.expired()) return std::string("timed out ") + what;
  return e.what();
}

}  // namespace

// ---------------------------------------------------------------------------

struct Peer;

struct Transport::Core : std::enable_shared_from_this<Core> {
  Core(asio::io_context& io_, TransportOptions o)
      : io(io_), opts(std::move(o)), pool(std::max<size_t>(1, opts.storage_threads)) {
    if (opts.server_tls) server_ctx = net::make_server_tls_context(*opts.server_tls);
    if (opts.client_tls) client_ctx = net::make_client_tls_context(*opts.client_tls);
  }
  ~Core() { pool.close_and_join(); }

  asio::io_context& io;
  const TransportOptions opts;
  std::shared_ptr<ssl::context> server_ctx, client_ctx;
  StoragePool pool;  // storage work of snapshot streams

  std::atomic<bool> stopped{false};

  // Handlers; calls hold handler_mu shared, stop() takes it exclusively.
  mutable std::shared_mutex handler_mu;
  std::function<void(raftpb::Message)> on_message;
  std::function<std::unique_ptr<SnapshotSink>(const raftpb::Message&)> on_snapshot;
  std::function<void(uint64_t)> on_unreachable;
  std::function<Transport::HttpAnswer(const std::string&)> on_http;
  std::function<void()> on_removed;
  std::function<void(uint64_t, transportpb::Forward)> on_forward;

  mutable std::mutex mu;  // guards everything below
  std::unordered_map<uint64_t, std::shared_ptr<Peer>> peers;
  std::unordered_set<uint64_t> removed_ids;  // members removed from the cluster
  std::vector<std::shared_ptr<tcp::acceptor>> acceptors;
  std::vector<std::weak_ptr<FrameConn>> conns;  // every connection, for stop()/remove_peer()

  void track(const std::shared_ptr<FrameConn>& c) {
    std::lock_guard l(mu);
    std::erase_if(conns, [](const std::weak_ptr<FrameConn>& w) { return w.expired(); });
    conns.push_back(c);
  }

  bool known(uint64_t id) const {
    std::lock_guard l(mu);
    return peers.count(id) != 0;
  }
  bool is_removed(uint64_t id) const {
    std::lock_guard l(mu);
    return removed_ids.count(id) != 0;
  }
  void report_removed() {
    if (stopped) return;
    std::shared_lock l(handler_mu);
    if (stopped || !on_removed) return;
    on_removed();
  }

  void deliver(raftpb::Message m) {
    if (stopped) return;
    std::shared_lock l(handler_mu);
    if (stopped || !on_message) return;
    on_message(std::move(m));
  }
  void deliver_forward(uint64_t from, transportpb::Forward f) {
    if (stopped) return;
    std::shared_lock l(handler_mu);
    if (stopped || !on_forward) return;
    on_forward(from, std::move(f));
  }
  void report_unreachable(uint64_t id) {
    if (stopped) return;
    std::shared_lock l(handler_mu);
    if (stopped || !on_unreachable) return;
    on_unreachable(id);
  }
  // Reports from a thread that must not run the handler itself (send()).
  void report_unreachable_later(uint64_t id) {
    asio::post(io, [self = shared_from_this(), id] { self->report_unreachable(id); });
  }
  std::unique_ptr<SnapshotSink> make_sink(const raftpb::Message& m) {
    if (stopped) return nullptr;
    std::shared_lock l(handler_mu);
    if (stopped || !on_snapshot) return nullptr;
    return on_snapshot(m);
  }

  // One HTTP/1.1 answer (Connection: close) to a GET request head.
  std::string answer_http(const std::string& head) {
    // "GET <target> HTTP/1.1"
    std::string target;
    auto sp1 = head.find(' ');
    auto sp2 = head.find(' ', sp1 + 1);
    if (sp1 != std::string::npos && sp2 != std::string::npos)
      target = head.substr(sp1 + 1, sp2 - sp1 - 1);
    Transport::HttpAnswer a;
    a.body = "404 page not found\n";
    if (!stopped) {
      std::shared_lock l(handler_mu);
      if (!stopped && on_http) a = on_http(target);
    }
    static const std::map<int, const char*> reasons = {{200, "OK"},
                                                       {404, "Not Found"},
                                                       {500, "Internal Server Error"},
                                                       {503, "Service Unavailable"}};
    auto r = reasons.find(a.status);
    std::string out = "HTTP/1.1 " + std::to_string(a.status) + " " +
                      (r == reasons.end() ? "Unknown" : r->second) + "\r\n";
    out += "Content-Type: " + a.content_type + "\r\n";
    for (const auto& [k, v] : a.headers) out += k + ": " + v + "\r\n";
    out += "Content-Length: " + std::to_string(a.body.size()) + "\r\nConnection: close\r\n\r\n";
    out += a.body;
    return out;
  }

  // Empty when the listener accepts the handshake, else the reason.
  std::string check_handshake(const transportpb::Handshake& hs) const {
    if (hs.version() != kTransportProtocolVersion)
      return "unsupported transport protocol version " + std::to_string(hs.version()) +
             " (this member speaks " + std::to_string(kTransportProtocolVersion) + ")";
    if (hs.cluster_id() != opts.cluster_id)
      return "cluster ID mismatch: local " + hex_id(opts.cluster_id) + ", remote " +
             hex_id(hs.cluster_id());
    if (hs.to() != opts.local_id)
      return "member ID mismatch: this member is " + hex_id(opts.local_id) +
             ", the dialer expected " + hex_id(hs.to());
    if (is_removed(hs.from()))
      return "member " + hex_id(hs.from()) + " has been permanently removed from the cluster";
    if (!known(hs.from()))
      return "unknown member " + hex_id(hs.from()) + ": not a peer of member " +
             hex_id(opts.local_id);
    return {};
  }

  // Connects `conn` (already on the caller's strand) to url, runs TLS and the
  // handshake.  Throws std::exception with a readable message on failure.
  awaitable<void> dial(std::shared_ptr<FrameConn> conn, std::string url, uint64_t to,
                       transportpb::StreamKind kind) {
    std::string err;
    auto u = net::parse_url(url, &err);
    if (!u) throw std::runtime_error("bad peer URL \"" + url + "\": " + err);
    if (u->tls() && !client_ctx)
      throw std::runtime_error("peer URL " + url + " is https but no peer client TLS is set");
    auto ex = co_await asio::this_coro::executor;
    Deadline deadline(ex, conn, opts.handshake_timeout);
    tcp::resolver resolver(ex);
    deadline.watch(&resolver);
    std::string failure;
    transportpb::HandshakeReply reply;
    try {
      auto endpoints =
          co_await resolver.async_resolve(u->host, std::to_string(u->port), use_awaitable);
      co_await asio::async_connect(conn->socket(), endpoints, use_awaitable);
      error_code ec;
      conn->socket().set_option(tcp::no_delay(true), ec);
      conn->socket().set_option(asio::socket_base::keep_alive(true), ec);
      // A peer that vanished without a FIN or RST (power loss, partition)
      // is noticed when written data stays unacknowledged this long, instead
      // of after the kernel's retransmission limit (~15 minutes).
      const unsigned user_timeout_ms = static_cast<unsigned>(opts.unacked_timeout.count());
      ::setsockopt(conn->socket().native_handle(), IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms,
                   sizeof user_timeout_ms);
      if (u->tls()) {
        conn->use_tls(*client_ctx);
        const std::string& name =
            opts.client_tls->server_name.empty() ? u->host : opts.client_tls->server_name;
        net::prepare_client_tls(conn->ssl_handle(), name, *opts.client_tls);
        co_await conn->tls_handshake(ssl::stream_base::client);
      }
      transportpb::Handshake hs;
      hs.set_version(kTransportProtocolVersion);
      hs.set_cluster_id(opts.cluster_id);
      hs.set_from(opts.local_id);
      hs.set_to(to);
      hs.set_stream(kind);
      std::string out;
      append_frame(&out, FrameType::kHandshake, hs, opts.max_frame_bytes);
      co_await conn->write(out);
      Frame f = co_await conn->read_frame(opts.max_frame_bytes);
      if (f.type != FrameType::kHandshakeReply)
        throw ProtocolError("expected a handshake reply, got frame type " +
                            std::to_string(static_cast<int>(f.type)));
      reply = parse_payload<transportpb::HandshakeReply>(f, "handshake reply");
    } catch (const std::exception& e) {
      failure = describe(e, deadline, "dialing");
    }
    deadline.unwatch();
    if (!failure.empty()) throw std::runtime_error(url + ": " + failure);
    if (!reply.accepted()) {
      if (reply.removed()) report_removed();
      throw std::runtime_error(url + ": rejected by peer: " + reply.reason());
    }
    conn->peer_id = to;
  }

  awaitable<void> accept_loop(std::shared_ptr<tcp::acceptor> acceptor, bool tls);
  awaitable<void> check_client_san(std::shared_ptr<FrameConn> conn, Deadline& deadline);
  awaitable<void> serve_inbound(std::shared_ptr<FrameConn> conn, bool tls);
  awaitable<void> receive_raft(std::shared_ptr<FrameConn> conn, uint64_t from);
  awaitable<void> receive_snapshot(std::shared_ptr<FrameConn> conn, uint64_t from);
  awaitable<void> send_snapshot(std::shared_ptr<FrameConn> conn, std::vector<std::string> urls,
                                raftpb::Message msg,
                                std::shared_ptr<storage::SnapshotWriter> writer,
                                std::function<void(bool)> done);
};

// ---------------------------------------------------------------------------
// Outgoing side: one Peer per known member.

struct Peer : std::enable_shared_from_this<Peer> {
  using Core = Transport::Core;

  Peer(std::shared_ptr<Core> c, uint64_t id_, std::vector<std::string> u)
      : core(std::move(c)),
        id(id_),
        strand(asio::make_strand(core->io)),
        wake(strand),
        backoff_timer(strand),
        urls(std::move(u)),
        rng(std::random_device{}()) {}

  const std::shared_ptr<Core> core;
  const uint64_t id;
  const asio::strand<asio::io_context::executor_type> strand;

  // --- strand state ---
  asio::steady_timer wake;  // the writer waits on it while the queue is empty
  asio::steady_timer backoff_timer;
  std::vector<std::string> urls;
  size_t url_index = 0;
  // A copy of the URLs for other strands (snapshot senders); guarded by Core::mu.
  std::vector<std::string> published_urls;
  std::deque<raftpb::Message> queue;
  // Forwarded requests and replies (transportpb.Forward) waiting for the
  // connection; the asker resends on its own schedule, so these are simply
  // dropped wherever Raft messages would be.
  std::deque<transportpb::Forward> forwards;
  static constexpr size_t kMaxQueuedForwards = 1024;
  std::shared_ptr<FrameConn> conn;  // being dialed or active
  bool in_backoff = false;
  bool removed = false;
  // Until the first connection, messages wait (a few) instead of being
  // dropped: at a cluster's start the peers come up at slightly different
  // moments, and the first votes must not be lost to a peer that was not
  // listening yet.  Once connected, a broken connection drops as before.
  bool ever_connected = false;
  static constexpr size_t kMaxWaitingBeforeFirstConnection = 64;
  std::mt19937_64 rng;

  // --- any thread ---
  std::atomic<bool> active{false};
  std::atomic<uint64_t> dial_failures{0};
  std::atomic<uint64_t> sent_bytes{0};      // Raft stream frames written
  std::atomic<uint64_t> received_bytes{0};  // Raft stream frames read from this peer
  std::atomic<uint64_t> dropped{0};         // messages never written
  mutable std::mutex error_mu;
  std::string last_error;

  void set_error(const std::string& e) {
    std::lock_guard l(error_mu);
    last_error = e;
  }
  std::string error() const {
    std::lock_guard l(error_mu);
    return last_error;
  }

  // On the strand.
  void enqueue(std::vector<raftpb::Message> msgs) {
    if (removed) return;
    if (in_backoff && ever_connected) {
      // The last dial failed: messages would be stale by the next one.
      dropped += msgs.size();
      core->report_unreachable(id);
      return;
    }
    const size_t limit =
        ever_connected ? core->opts.max_queued_messages : kMaxWaitingBeforeFirstConnection;
    bool dropped = false;
    for (auto& m : msgs) {
      if (queue.size() >= limit) {
        queue.pop_front();
        this->dropped++;
        dropped = true;
      }
      queue.push_back(std::move(m));
    }
    if (dropped) core->report_unreachable(id);
    wake.cancel();
  }

  // On the strand.
  void enqueue_forward(transportpb::Forward f) {
    if (removed || (in_backoff && ever_connected)) return;
    if (forwards.size() >= kMaxQueuedForwards) forwards.pop_front();
    forwards.push_back(std::move(f));
    wake.cancel();
  }

  // On the strand.
  void shutdown() {
    removed = true;
    active = false;
    queue.clear();
    forwards.clear();
    if (conn) conn->close();
    wake.cancel();
    backoff_timer.cancel();
  }

  void set_urls(std::vector<std::string> u) {
    if (u != urls) {
      urls = std::move(u);
      url_index = 0;
    }
  }

  std::chrono::milliseconds jittered(std::chrono::milliseconds d) {
    std::uniform_int_distribution<int64_t> dist(d.count() / 2, d.count());
    return std::chrono::milliseconds(dist(rng));
  }

  // The connection's life: dial, write batches until it breaks, back off,
  // dial again.  Ends when the peer is removed or the transport stops.
  static awaitable<void> run(std::shared_ptr<Peer> self) {
    auto backoff = self->core->opts.backoff_initial;
    while (!self->removed && !self->core->stopped) {
      if (self->urls.empty()) {
        self->set_error("no peer URLs");
      } else {
        const std::string url = self->urls[self->url_index % self->urls.size()];
        self->conn = std::make_shared<FrameConn>(self->strand);
        self->core->track(self->conn);
        std::string failure;
        try {
          co_await self->core->dial(self->conn, url, self->id, transportpb::STREAM_RAFT);
        } catch (const std::exception& e) {
          failure = e.what();
        }
        if (self->removed || self->core->stopped) break;
        if (failure.empty()) {
          // A connection that dies young (a peer that accepts and then drops
          // us) keeps the backoff growing instead of redialing in a tight loop.
          const auto since = std::chrono::steady_clock::now();
          failure = co_await self->serve(self->conn, url);
          if (std::chrono::steady_clock::now() - since > std::chrono::seconds(1))
            backoff = self->core->opts.backoff_initial;
        } else {
          self->url_index++;  // round-robin over the peer's URLs
          const uint64_t n = ++self->dial_failures;
          const bool changed = failure != self->error();
          // Log every change of reason, and now and then while it persists.
          if (changed || n % 30 == 1)
            log::warn(kCaller, "cannot connect to peer",
                      {{"local-member-id", hex_id(self->core->opts.local_id)},
                       {"remote-peer-id", hex_id(self->id)},
                       {"error", failure},
                       {"failures", n}});
        }
        self->set_error(failure);
        self->conn->close();
        self->conn.reset();
      }
      if (self->removed || self->core->stopped) break;
      // Whatever was queued or in flight is lost: let Raft know.  (Before
      // the first connection the queue waits for it; see ever_connected.)
      if (self->ever_connected) {
        self->dropped += self->queue.size();
        self->queue.clear();
        self->forwards.clear();
      }
      self->in_backoff = true;
      self->core->report_unreachable(self->id);
      self->backoff_timer.expires_after(self->jittered(backoff));
      error_code ec;
      co_await self->backoff_timer.async_wait(asio::redirect_error(use_awaitable, ec));
      self->in_backoff = false;
      backoff = std::min(backoff * 2, self->core->opts.backoff_max);
    }
    self->active = false;
    self->queue.clear();
    self->forwards.clear();
  }

  // Writes queued messages on an accepted connection until it breaks;
  // returns the reason.
  awaitable<std::string> serve(std::shared_ptr<FrameConn> c, std::string url) {
    active = true;
    ever_connected = true;
    log::info(kCaller, "peer connection established",
              {{"local-member-id", hex_id(core->opts.local_id)},
               {"remote-peer-id", hex_id(id)},
               {"url", url}});
    // The listener never writes on a Raft stream after its reply: a read
    // completes only when the connection breaks.
    auto self = shared_from_this();
    asio::co_spawn(strand, watch_for_close(self, c), asio::detached);
    std::string reason;
    try {
      while (c->is_open()) {
        if (queue.empty() && forwards.empty()) {
          wake.expires_at(asio::steady_timer::time_point::max());
          error_code ec;
          co_await wake.async_wait(asio::redirect_error(use_awaitable, ec));
          continue;
        }
        std::string batch;
        for (; !forwards.empty(); forwards.pop_front())
          if (!append_frame(&batch, FrameType::kForward, forwards.front(),
                            core->opts.max_frame_bytes))
            log::error(
                kCaller, "dropping a forwarded request larger than the frame limit",
                {{"remote-peer-id", hex_id(id)}, {"bytes", forwards.front().ByteSizeLong()}});
        while (!queue.empty() && batch.size() < core->opts.max_batch_bytes) {
          if (!append_frame(&batch, FrameType::kRaftMessage, queue.front(),
                            core->opts.max_frame_bytes)) {
            log::error(kCaller, "dropping a message larger than the frame limit",
                       {{"remote-peer-id", hex_id(id)},
                        {"type", raftpb::MessageType_Name(queue.front().type())},
                        {"bytes", queue.front().ByteSizeLong()},
                        {"limit", core->opts.max_frame_bytes}});
            dropped++;
            core->report_unreachable(id);
          }
          queue.pop_front();
        }
        if (!batch.empty()) {
          co_await c->write(batch);
          sent_bytes += batch.size();
        }
      }
      reason = "connection closed by peer";
    } catch (const std::exception& e) {
      reason = e.what();
    }
    active = false;
    if (!removed && !core->stopped)
      log::warn(kCaller, "lost peer connection",
                {{"local-member-id", hex_id(core->opts.local_id)},
                 {"remote-peer-id", hex_id(id)},
                 {"error", reason}});
    co_return reason;
  }

  static awaitable<void> watch_for_close(std::shared_ptr<Peer> self, std::shared_ptr<FrameConn> c) {
    try {
      (void)co_await c->read_frame(self->core->opts.max_frame_bytes);
    } catch (const std::exception&) {
    }
    c->close();
    self->wake.cancel();
  }
};

// ---------------------------------------------------------------------------
// Incoming side.

awaitable<void> Transport::Core::accept_loop(std::shared_ptr<tcp::acceptor> acceptor, bool tls) {
  auto self = shared_from_this();
  while (!stopped && acceptor->is_open()) {
    error_code ec;
    tcp::socket s = co_await acceptor->async_accept(asio::make_strand(io),
                                                    asio::redirect_error(use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor->is_open() || stopped) break;
      log::warn(kCaller, "accept failed", {{"error", ec.message()}});
      asio::steady_timer t(acceptor->get_executor(), std::chrono::milliseconds(100));
      co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    auto conn = std::make_shared<FrameConn>(std::move(s));
    track(conn);
    auto ex = conn->socket().get_executor();
    asio::co_spawn(ex, self->serve_inbound(conn, tls), asio::detached);
  }
}

// etcd 3.4's check of an incoming peer (pkg/transport checkSAN): the
// certificate it presented must name the address it connects from, by an IP
// SAN or by a DNS SAN that resolves to it.  A certificate without SANs, or no
// certificate (no --peer-client-cert-auth), passes.  Throws on a mismatch.
awaitable<void> Transport::Core::check_client_san(std::shared_ptr<FrameConn> conn,
                                                  Deadline& deadline) {
  const net::PeerSans sans = net::peer_certificate_sans(conn->ssl_handle());
  if (!sans.has_certificate || (sans.dns_names.empty() && sans.ip_addresses.empty())) co_return;
  error_code ec;
  auto address = conn->socket().remote_endpoint(ec).address();
  if (ec) throw std::runtime_error("cannot read the remote address: " + ec.message());
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  const std::string ip = address.to_string();
  for (const auto& a : sans.ip_addresses)
    if (a == ip) co_return;
  tcp::resolver resolver(co_await asio::this_coro::executor);
  deadline.watch(&resolver);
  bool found = false;
  for (const auto& name : sans.dns_names) {
    auto results =
        co_await resolver.async_resolve(name, "", asio::redirect_error(use_awaitable, ec));
    if (ec) continue;
    for (const auto& r : results)
      if (r.endpoint().address() == address) found = true;
    if (found) break;
  }
  deadline.unwatch();
  if (found) co_return;
  std::string names;
  for (const auto& n : sans.ip_addresses) names += (names.empty() ? "" : ",") + n;
  for (const auto& n : sans.dns_names) names += (names.empty() ? "" : ",") + n;
  throw std::runtime_error("peer certificate SANs [" + names + "] do not name its address " + ip +
                           " (--experimental-peer-skip-client-san-verification skips this check)");
}

awaitable<void> Transport::Core::serve_inbound(std::shared_ptr<FrameConn> conn, bool tls) {
  auto self = shared_from_this();  // keeps the Core alive while this runs
  auto ex = co_await asio::this_coro::executor;
  const std::string remote = conn->remote();
  error_code ec;
  conn->socket().set_option(tcp::no_delay(true), ec);
  conn->socket().set_option(asio::socket_base::keep_alive(true), ec);
  transportpb::Handshake hs;
  std::string failure;
  std::optional<std::string> http_head;
  {
    Deadline deadline(ex, conn, opts.handshake_timeout);
    try {
      if (tls) {
        conn->use_tls(*server_ctx);
        co_await conn->tls_handshake(ssl::stream_base::server);
        if (opts.server_tls->verify_client_san) co_await check_client_san(conn, deadline);
      }
      if (co_await conn->peek(4) == "GET ") {
        http_head = co_await conn->read_http_head(8192);
      } else {
        Frame f = co_await conn->read_frame(opts.max_frame_bytes);
        if (f.type != FrameType::kHandshake) throw ProtocolError("first frame is not a handshake");
        hs = parse_payload<transportpb::Handshake>(f, "handshake");
      }
    } catch (const std::exception& e) {
      failure = describe(e, deadline, "waiting for the handshake");
    }
    if (failure.empty() && http_head) {
      try {
        co_await conn->write(answer_http(*http_head));
        conn->shutdown_send();
      } catch (const std::exception&) {
        // The asker went away; nothing to tell anyone.
      }
      co_return;
    }
    if (failure.empty()) {
      const std::string reason = check_handshake(hs);
      transportpb::HandshakeReply reply;
      reply.set_accepted(reason.empty());
      reply.set_reason(reason);
      reply.set_cluster_id(opts.cluster_id);
      reply.set_member_id(opts.local_id);
      reply.set_removed(!reason.empty() && is_removed(hs.from()));
      std::string out;
      append_frame(&out, FrameType::kHandshakeReply, reply, opts.max_frame_bytes);
      try {
        co_await conn->write(out);
      } catch (const std::exception& e) {
        failure = e.what();
      }
      if (failure.empty() && !reason.empty()) {
        log::warn(kCaller, "rejected peer connection",
                  {{"local-member-id", hex_id(opts.local_id)},
                   {"remote-peer-id", hex_id(hs.from())},
                   {"remote-addr", remote},
                   {"reason", reason}});
        conn->shutdown_send();
        co_return;  // conn closes when the last reference goes
      }
    }
  }
  if (!failure.empty()) {
    if (!stopped)
      log::warn(kCaller, "peer connection failed before the handshake",
                {{"local-member-id", hex_id(opts.local_id)},
                 {"remote-addr", remote},
                 {"error", failure}});
    conn->close();
    co_return;
  }
  conn->peer_id = hs.from();
  // A peer removed between the check and now must not keep a connection.
  if (!known(hs.from())) {
    conn->close();
    co_return;
  }
  if (hs.stream() == transportpb::STREAM_SNAPSHOT)
    co_await receive_snapshot(conn, hs.from());
  else
    co_await receive_raft(conn, hs.from());
  conn->close();
}

awaitable<void> Transport::Core::receive_raft(std::shared_ptr<FrameConn> conn, uint64_t from) {
  std::shared_ptr<Peer> peer;  // for its counters
  {
    std::lock_guard l(mu);
    auto it = peers.find(from);
    if (it != peers.end()) peer = it->second;
  }
  std::string failure;
  try {
    for (;;) {
      Frame f = co_await conn->read_frame(opts.max_frame_bytes);
      if (f.type == FrameType::kForward) {
        if (peer) peer->received_bytes += 5 + f.payload.size();
        deliver_forward(from, parse_payload<transportpb::Forward>(f, "forward"));
        continue;
      }
      if (f.type != FrameType::kRaftMessage)
        throw ProtocolError("unexpected frame type " + std::to_string(static_cast<int>(f.type)) +
                            " on a Raft stream");
      auto m = parse_payload<raftpb::Message>(f, "Raft message");
      if (m.from() != from || m.to() != opts.local_id)
        throw ProtocolError("message from " + hex_id(m.from()) + " to " + hex_id(m.to()) +
                            " on the stream from " + hex_id(from));
      if (m.type() == raftpb::MsgSnap) {
        log::warn(kCaller, "dropping a MsgSnap sent without its snapshot stream",
                  {{"remote-peer-id", hex_id(from)}});
        continue;
      }
      if (peer) peer->received_bytes += 5 + f.payload.size();
      deliver(std::move(m));
    }
  } catch (const ProtocolError& e) {
    failure = e.what();
  } catch (const std::exception&) {
    // EOF or a closed socket: the dialer went away or we are stopping.
  }
  if (!failure.empty())
    log::warn(kCaller, "closing peer connection: protocol violation",
              {{"local-member-id", hex_id(opts.local_id)},
               {"remote-peer-id", hex_id(from)},
               {"error", failure}});
}

namespace {
// Calls finish(false) unless finished; the sink goes with it.
struct SinkGuard {
  std::unique_ptr<SnapshotSink> sink;
  bool finished = false;
  ~SinkGuard() {
    if (sink && !finished) sink->finish(false);
  }
};
}  // namespace

awaitable<void> Transport::Core::receive_snapshot(std::shared_ptr<FrameConn> conn, uint64_t from) {
  auto ex = co_await asio::this_coro::executor;
  Deadline deadline(ex, conn, opts.snapshot_idle_timeout);
  raftpb::Message msg;
  auto guard = std::make_shared<SinkGuard>();
  std::string failure;
  uint64_t chunks = 0, bytes = 0;
  try {
    Frame f = co_await conn->read_frame(opts.max_frame_bytes);
    if (f.type != FrameType::kRaftMessage) throw ProtocolError("snapshot stream without MsgSnap");
    msg = parse_payload<raftpb::Message>(f, "Raft message");
    if (msg.type() != raftpb::MsgSnap || msg.from() != from || msg.to() != opts.local_id)
      throw ProtocolError("snapshot stream must open with a MsgSnap from the dialer to us");
    guard->sink = make_sink(msg);
    if (!guard->sink) throw std::runtime_error("snapshot refused by this member");
    for (;;) {
      deadline.arm(opts.snapshot_idle_timeout);
      Frame c = co_await conn->read_frame(opts.max_frame_bytes);
      if (c.type != FrameType::kSnapshotChunk)
        throw ProtocolError("unexpected frame type " + std::to_string(static_cast<int>(c.type)) +
                            " in a snapshot stream");
      auto chunk = std::make_shared<etcdserverpb::SnapshotChunk>(
          parse_payload<etcdserverpb::SnapshotChunk>(c, "snapshot chunk"));
      bytes += c.payload.size();
      chunks++;
      // The sink writes to disk: not on an I/O thread.  No deadline while it
      // works (the sender waits for TCP window space meanwhile).
      deadline.disarm();
      auto add = [&guard, &chunk] { return guard->sink->add(*chunk); };
      if (stopped) throw std::runtime_error("transport stopped");
      storage::Status s = co_await offload(&pool, &add);
      if (!s) throw std::runtime_error("snapshot sink: " + s.to_string());
      if (chunk->last()) break;
    }
    auto finish = [&guard] {
      guard->finished = true;
      guard->sink->finish(true);
      return 0;
    };
    if (stopped) throw std::runtime_error("transport stopped");
    co_await offload(&pool, &finish);
  } catch (const std::exception& e) {
    failure = describe(e, deadline, "waiting for snapshot data");
  }
  deadline.disarm();
  transportpb::SnapshotResult result;
  if (failure.empty()) {
    log::info(kCaller, "received snapshot",
              {{"local-member-id", hex_id(opts.local_id)},
               {"remote-peer-id", hex_id(from)},
               {"snapshot-index", msg.snapshot().metadata().index()},
               {"chunks", chunks},
               {"bytes", bytes}});
    deliver(msg);
    result.set_ok(true);
  } else {
    if (!stopped)
      log::warn(kCaller, "failed to receive snapshot",
                {{"local-member-id", hex_id(opts.local_id)},
                 {"remote-peer-id", hex_id(from)},
                 {"error", failure}});
    // finish(false) before telling the sender, so a retry finds the sink done.
    if (guard->sink && !guard->finished) {
      auto finish = [&guard] {
        guard->finished = true;
        guard->sink->finish(false);
        return 0;
      };
      co_await offload(&pool, &finish);
    }
    result.set_ok(false);
    result.set_error(failure);
  }
  if (!conn->is_open()) co_return;
  std::string out;
  append_frame(&out, FrameType::kSnapshotResult, result, opts.max_frame_bytes);
  try {
    co_await conn->write(out);
    conn->shutdown_send();
  } catch (const std::exception&) {
  }
}

// ---------------------------------------------------------------------------
// Snapshot sending.

awaitable<void> Transport::Core::send_snapshot(std::shared_ptr<FrameConn> conn,
                                               std::vector<std::string> urls, raftpb::Message msg,
                                               std::shared_ptr<storage::SnapshotWriter> writer,
                                               std::function<void(bool)> done) {
  auto self = shared_from_this();
  auto ex = co_await asio::this_coro::executor;
  const uint64_t to = msg.to();
  std::string failure = "peer has no URLs";
  // Dial each URL once, in order, until one accepts.
  for (const auto& url : urls) {
    if (stopped) break;
    failure.clear();
    try {
      co_await dial(conn, url, to, transportpb::STREAM_SNAPSHOT);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (failure.empty()) break;
    conn->close();
    conn = std::make_shared<FrameConn>(ex);
    track(conn);
  }
  uint64_t chunks = 0, bytes = 0;
  if (failure.empty()) {
    // Generous: a slow receiver's disk holds us up through TCP flow control.
    Deadline deadline(ex, conn, opts.snapshot_result_timeout);
    try {
      msg.mutable_snapshot()->clear_data();  // the state machine follows in chunks
      std::string out;
      if (!append_frame(&out, FrameType::kRaftMessage, msg, opts.max_frame_bytes))
        throw std::runtime_error("MsgSnap exceeds the frame limit");
      co_await conn->write(out);
      struct Next {
        bool ok = false;
        etcdserverpb::SnapshotChunk chunk;
      };
      for (;;) {
        auto produce = [&writer] {
          Next r;
          r.ok = writer->next(&r.chunk);
          return r;
        };
        if (stopped) throw std::runtime_error("transport stopped");
        Next n = co_await offload(&pool, &produce);
        if (!n.ok) {
          if (!writer->status())
            throw std::runtime_error("snapshot writer: " + writer->status().to_string());
          throw std::runtime_error("snapshot writer ended without a last chunk");
        }
        out.clear();
        if (!append_frame(&out, FrameType::kSnapshotChunk, n.chunk, opts.max_frame_bytes))
          throw std::runtime_error("snapshot chunk exceeds the frame limit");
        deadline.arm(opts.snapshot_result_timeout);
        co_await conn->write(out);
        chunks++;
        bytes += out.size();
        if (n.chunk.last()) break;
      }
      Frame f = co_await conn->read_frame(opts.max_frame_bytes);
      if (f.type != FrameType::kSnapshotResult) throw ProtocolError("expected a snapshot result");
      auto r = parse_payload<transportpb::SnapshotResult>(f, "snapshot result");
      if (!r.ok()) failure = "receiver refused the snapshot: " + r.error();
    } catch (const std::exception& e) {
      failure = describe(e, deadline, "sending the snapshot");
    }
  }
  conn->close();
  const bool ok = failure.empty();
  if (ok)
    log::info(kCaller, "sent snapshot",
              {{"local-member-id", hex_id(opts.local_id)},
               {"remote-peer-id", hex_id(to)},
               {"snapshot-index", msg.snapshot().metadata().index()},
               {"chunks", chunks},
               {"bytes", bytes}});
  else if (!stopped)
    log::warn(kCaller, "failed to send snapshot",
              {{"local-member-id", hex_id(opts.local_id)},
               {"remote-peer-id", hex_id(to)},
               {"error", failure}});
  if (stopped) co_return;
  std::shared_lock l(handler_mu);
  if (stopped) co_return;
  done(ok);
}

// ---------------------------------------------------------------------------
// Transport

Transport::Transport(asio::io_context& io, TransportOptions options)
    : core_(std::make_shared<Core>(io, std::move(options))) {}

Transport::~Transport() {
  stop();
  // Wait for storage work in progress (a sink's add, a writer's next): the
  // pool's threads must not outlive the Transport, and the Core must never be
  // destroyed on one of them (its destructor joins the pool).  Storage work
  // that comes later runs on the io_context's thread (see offload()).
  core_->pool.close_and_join();
}

uint16_t Transport::listen(const std::string& host, uint16_t port, bool tls) {
  if (tls && !core_->server_ctx)
    throw std::runtime_error("https peer listener needs peer TLS settings (certificate and key)");
  error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  tcp::endpoint ep;
  if (!ec) {
    ep = tcp::endpoint(addr, port);
  } else {
    tcp::resolver r(core_->io);
    auto res = r.resolve(host, std::to_string(port), ec);
    if (ec || res.empty())
      throw std::runtime_error("cannot resolve peer listen address " + host + ": " + ec.message());
    ep = res.begin()->endpoint();
  }
  auto acceptor = std::make_shared<tcp::acceptor>(asio::make_strand(core_->io));
  auto fail = [&](const char* what) {
    std::ostringstream s;
    s << "cannot " << what << " peer listener on " << ep << ": " << ec.message();
    throw std::runtime_error(s.str());
  };
  acceptor->open(ep.protocol(), ec);
  if (ec) fail("open");
  acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  acceptor->bind(ep, ec);
  if (ec) fail("bind");
  acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail("listen on");
  const uint16_t bound = acceptor->local_endpoint().port();
  {
    std::lock_guard l(core_->mu);
    core_->acceptors.push_back(acceptor);
  }
  asio::co_spawn(acceptor->get_executor(), core_->accept_loop(acceptor, tls), asio::detached);
  log::info(kCaller, "listening for peers",
            {{"local-member-id", hex_id(core_->opts.local_id)},
             {"address", host + ":" + std::to_string(bound)},
             {"tls", tls}});
  return bound;
}

void Transport::set_message_handler(std::function<void(raftpb::Message)> handler) {
  std::unique_lock l(core_->handler_mu);
  core_->on_message = std::move(handler);
}

void Transport::set_snapshot_handler(
    std::function<std::unique_ptr<SnapshotSink>(const raftpb::Message&)> handler) {
  std::unique_lock l(core_->handler_mu);
  core_->on_snapshot = std::move(handler);
}

void Transport::set_unreachable_handler(std::function<void(uint64_t)> handler) {
  std::unique_lock l(core_->handler_mu);
  core_->on_unreachable = std::move(handler);
}

void Transport::set_removed_handler(std::function<void()> handler) {
  std::unique_lock l(core_->handler_mu);
  core_->on_removed = std::move(handler);
}

void Transport::set_forward_handler(std::function<void(uint64_t, transportpb::Forward)> handler) {
  std::unique_lock l(core_->handler_mu);
  core_->on_forward = std::move(handler);
}

void Transport::send_forward(uint64_t to, transportpb::Forward f) {
  if (core_->stopped) return;
  std::shared_ptr<Peer> peer;
  {
    std::lock_guard l(core_->mu);
    auto it = core_->peers.find(to);
    if (it != core_->peers.end()) peer = it->second;
  }
  if (!peer) return;
  asio::post(peer->strand,
             [peer, f = std::move(f)]() mutable { peer->enqueue_forward(std::move(f)); });
}

void Transport::mark_removed(uint64_t id) {
  std::lock_guard l(core_->mu);
  core_->removed_ids.insert(id);
}

void Transport::set_http_handler(std::function<HttpAnswer(const std::string&)> handler) {
  std::unique_lock l(core_->handler_mu);
  core_->on_http = std::move(handler);
}

void Transport::add_peer(uint64_t id, std::vector<std::string> peer_urls) {
  if (core_->stopped) return;
  if (id == core_->opts.local_id || id == 0) {
    // The member itself (or no member): nothing to dial.  A driver that
    // passes the whole membership list lands here for its own entry.
    return;
  }
  std::shared_ptr<Peer> peer;
  bool is_new = false;
  {
    std::lock_guard l(core_->mu);
    core_->removed_ids.erase(id);
    auto& slot = core_->peers[id];
    if (!slot) {
      slot = std::make_shared<Peer>(core_, id, peer_urls);
      is_new = true;
    }
    slot->published_urls = peer_urls;
    peer = slot;
  }
  if (is_new)
    asio::co_spawn(peer->strand, Peer::run(peer), asio::detached);
  else
    asio::post(peer->strand,
               [peer, u = std::move(peer_urls)]() mutable { peer->set_urls(std::move(u)); });
}

void Transport::remove_peer(uint64_t id) {
  std::shared_ptr<Peer> peer;
  std::vector<std::shared_ptr<FrameConn>> inbound;
  {
    std::lock_guard l(core_->mu);
    core_->removed_ids.insert(id);
    auto it = core_->peers.find(id);
    if (it == core_->peers.end()) return;
    peer = std::move(it->second);
    core_->peers.erase(it);
    for (auto& w : core_->conns)
      if (auto c = w.lock(); c && c->peer_id == id) inbound.push_back(std::move(c));
  }
  asio::post(peer->strand, [peer] { peer->shutdown(); });
  for (auto& c : inbound) c->close_soon();
}

void Transport::send(std::vector<raftpb::Message> msgs) {
  if (core_->stopped) return;
  std::map<uint64_t, std::vector<raftpb::Message>> by_peer;
  for (auto& m : msgs) {
    if (m.type() == raftpb::MsgSnap) {
      log::error(kCaller, "MsgSnap given to send(); use send_snapshot()",
                 {{"remote-peer-id", hex_id(m.to())}});
      core_->report_unreachable_later(m.to());
      continue;
    }
    by_peer[m.to()].push_back(std::move(m));
  }
  for (auto& [id, batch] : by_peer) {
    std::shared_ptr<Peer> peer;
    {
      std::lock_guard l(core_->mu);
      auto it = core_->peers.find(id);
      if (it != core_->peers.end()) peer = it->second;
    }
    if (!peer) {
      core_->report_unreachable_later(id);
      continue;
    }
    asio::post(peer->strand,
               [peer, b = std::move(batch)]() mutable { peer->enqueue(std::move(b)); });
  }
}

void Transport::send_snapshot(raftpb::Message msg, std::unique_ptr<storage::SnapshotWriter> writer,
                              std::function<void(bool)> done) {
  if (core_->stopped) return;
  std::vector<std::string> urls;
  bool known = false;
  {
    std::lock_guard l(core_->mu);
    auto it = core_->peers.find(msg.to());
    if (it != core_->peers.end()) {
      known = true;
      urls = it->second->published_urls;
    }
  }
  if (!known) {
    log::warn(kCaller, "cannot send snapshot to an unknown peer",
              {{"remote-peer-id", hex_id(msg.to())}});
    const uint64_t to = msg.to();
    asio::post(core_->io, [core = core_, to, done = std::move(done)] {
      core->report_unreachable(to);
      if (core->stopped) return;
      std::shared_lock l(core->handler_mu);
      if (!core->stopped) done(false);
    });
    return;
  }
  auto conn = std::make_shared<FrameConn>(asio::make_strand(core_->io));
  core_->track(conn);
  // Named, not a temporary: see offload().
  std::shared_ptr<storage::SnapshotWriter> shared_writer(std::move(writer));
  asio::co_spawn(conn->socket().get_executor(),
                 core_->send_snapshot(conn, std::move(urls), std::move(msg),
                                      std::move(shared_writer), std::move(done)),
                 asio::detached);
}

bool Transport::is_active(uint64_t peer) const { return peer_status(peer).active; }

PeerStatus Transport::peer_status(uint64_t id) const {
  std::shared_ptr<Peer> peer;
  {
    std::lock_guard l(core_->mu);
    auto it = core_->peers.find(id);
    if (it == core_->peers.end()) return {};
    peer = it->second;
  }
  PeerStatus s;
  s.known = true;
  s.active = peer->active;
  s.dial_failures = peer->dial_failures;
  s.sent_bytes = peer->sent_bytes;
  s.received_bytes = peer->received_bytes;
  s.dropped_messages = peer->dropped;
  s.last_error = peer->error();
  return s;
}

void Transport::stop() {
  if (core_->stopped.exchange(true)) return;
  // Wait for running handlers; none starts after this (they check stopped).
  { std::unique_lock l(core_->handler_mu); }
  std::vector<std::shared_ptr<tcp::acceptor>> acceptors;
  std::vector<std::shared_ptr<Peer>> peers;
  std::vector<std::shared_ptr<FrameConn>> conns;
  {
    std::lock_guard l(core_->mu);
    acceptors.swap(core_->acceptors);
    for (auto& [id, p] : core_->peers) peers.push_back(p);
    core_->peers.clear();
    for (auto& w : core_->conns)
      if (auto c = w.lock()) conns.push_back(std::move(c));
    core_->conns.clear();
  }
  for (auto& a : acceptors)
    asio::post(a->get_executor(), [a] {
      error_code ec;
      a->close(ec);
    });
  for (auto& p : peers) asio::post(p->strand, [p] { p->shutdown(); });
  for (auto& c : conns) c->close_soon();
  log::info(kCaller, "peer transport stopped", {{"local-member-id", hex_id(core_->opts.local_id)}});
}

}  // namespace muster::server
