// net/h2.cpp: HTTP/2 server connections and gRPC calls over them (see h2.h
// and grpc.h for the contracts).
//
// Shape: one H2Connection per socket owns an nghttp2 server session and a
// table of its open streams.  Bytes read from the socket go to
// nghttp2_session_mem_recv, whose callbacks build each stream's request;
// whatever the session wants to send is drained with nghttp2_session_mem_send
// into one buffer and written with one write at a time.  Response bodies
// (gRPC messages, HTTP bodies and chunks) wait in the stream's `out` buffer,
// which nghttp2 pulls through a data provider as flow control allows; a
// stream with nothing to send is DEFERRED and resumed when more arrives.
//
// A Call or Exchange handed to the program holds the connection alive and
// names its stream by id; ids are never reused on a connection, so a late
// call on a closed stream finds nothing and is ignored.
//
// Why one file of this size: nghttp2's callbacks, the connection that
// owns the session and the gRPC call objects share one session and its
// threading rule (everything on the connection's strand).
#include "net/h2.h"

#include <nghttp2/nghttp2.h>

#include <array>
#include <atomic>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstring>
#include <map>
#include <optional>

#include "base/log.h"

namespace muster::net::detail {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kCaller = "net/h2";
// Flow-control windows we grant: a 1.5 MiB put should not wait for several
// round trips of WINDOW_UPDATE.
constexpr int32_t kStreamWindow = 1 << 20;
constexpr int32_t kConnectionWindow = 16 << 20;
// Bytes of request data buffered on one connection (partial gRPC messages,
// HTTP bodies) before the connection is closed as abusive.
constexpr std::size_t kMaxBufferedPerConnection = 64u << 20;
constexpr std::size_t kWriteBatch = 64 * 1024;

bool is_grpc_content_type(std::string_view ct) {
  // "application/grpc", "application/grpc+proto", "application/grpc;..."
  constexpr std::string_view g = "application/grpc";
  if (ct.substr(0, g.size()) != g) return false;
  return ct.size() == g.size() || ct[g.size()] == '+' || ct[g.size()] == ';';
}

nghttp2_nv make_nv(const std::string& name, const std::string& value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NONE};
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A name/value list that owns its strings while nghttp2 copies them.
struct NvList {
  std::vector<std::pair<std::string, std::string>> fields;
  std::vector<nghttp2_nv> nv;
  void add(std::string n, std::string v) { fields.emplace_back(std::move(n), std::move(v)); }
  nghttp2_nv* build() {
    nv.clear();
    for (auto& [n, v] : fields) nv.push_back(make_nv(n, v));
    return nv.data();
  }
  size_t size() const { return fields.size(); }
};

}  // namespace

class H2Connection;

// State of one HTTP/2 stream; owned by its connection, on the strand.
struct H2Stream {
  int32_t id = 0;
  // --- request
  std::string method, path, authority, scheme, content_type, grpc_timeout, grpc_encoding;
  grpc::Metadata metadata;  // every regular header (an HTTP exchange's too)
  std::size_t header_bytes = 0;
  bool is_grpc = false;
  bool dispatched = false;
  bool half_closed = false;  // the client sent END_STREAM
  std::string in;            // request body / partial gRPC message
  std::shared_ptr<class H2Call> call;
  std::shared_ptr<class H2Exchange> exchange;
  // --- response
  bool response_submitted = false;  // HEADERS sent (with a data provider)
  bool deferred = false;            // the data provider returned DEFERRED
  bool finishing = false;           // no more body after `out`
  bool done = false;                // finished or cancelled
  std::optional<NvList> trailers;   // gRPC trailers to send after `out`
  std::string out;
  std::size_t out_offset = 0;
  std::unique_ptr<asio::steady_timer> deadline_timer;
};

class H2Connection final : public ConnectionBase,
                           public std::enable_shared_from_this<H2Connection> {
 public:
  H2Connection(std::unique_ptr<ByteStream> io, std::string remote, std::string cn,
               std::shared_ptr<const H2Context> ctx)
      : io_(std::move(io)),
        remote_(std::move(remote)),
        cn_(std::move(cn)),
        ctx_(std::move(ctx)),
        keepalive_timer_(io_->executor()) {}

  ~H2Connection() override {
    if (session_) nghttp2_session_del(session_);
  }

  void start(std::string initial);
  void shutdown() override {
    asio::post(io_->executor(), [self = shared_from_this()] { self->graceful_close(); });
  }

  asio::any_io_executor executor() { return io_->executor(); }
  const std::string& remote() const { return remote_; }
  const std::string& cn() const { return cn_; }

  // --- called on the strand by H2Call / H2Exchange, naming their stream
  void send_message(int32_t id, std::string framed);
  void finish_call(int32_t id, grpc::Status s);
  void respond(int32_t id, Response r);
  void begin_stream(int32_t id, Response head);
  void write_chunk(int32_t id, std::string data);
  void end_stream(int32_t id);

 private:
  static H2Connection& self(void* user) { return *static_cast<H2Connection*>(user); }
  H2Stream* find(int32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }

  // nghttp2 callbacks
  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* u);
  static int on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                       void* u);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* u);
  static int on_data_chunk(nghttp2_session*, uint8_t flags, int32_t id, const uint8_t* data,
                           size_t len, void* u);
  static int on_stream_close(nghttp2_session*, int32_t id, uint32_t error_code, void* u);
  static ssize_t read_body(nghttp2_session*, int32_t id, uint8_t* buf, size_t length,
                           uint32_t* flags, nghttp2_data_source* src, void* u);

  void dispatch(H2Stream& s);
  void dispatch_grpc(H2Stream& s);
  void dispatch_http(H2Stream& s);
  void on_request_end(H2Stream& s);
  void on_grpc_data(H2Stream& s);
  void on_ping();
  // Ends a gRPC call from net/'s side (limits, deadline), telling the program.
  void abort_call(H2Stream& s, grpc::Status st);
  void cancel_stream(H2Stream& s);
  void submit_with_body(H2Stream& s, NvList& headers);
  void resume(H2Stream& s);
  void arm_keepalive();

  void read_loop();
  // Writes what the session wants to send.  Only from the read loop, the
  // write completion and start(): everything else calls schedule_flush(),
  // because sending can close streams (on_stream_close erases them), and a
  // function that changed a stream must not have it destroyed under it.
  void flush();
  void schedule_flush() {
    if (flush_pending_ || closed_) return;
    flush_pending_ = true;
    asio::post(io_->executor(), [self = shared_from_this()] {
      self->flush_pending_ = false;
      self->flush();
    });
  }
  void graceful_close();
  void close();

  std::unique_ptr<ByteStream> io_;
  std::string remote_, cn_;
  std::shared_ptr<const H2Context> ctx_;
  nghttp2_session* session_ = nullptr;
  std::map<int32_t, std::unique_ptr<H2Stream>> streams_;
  std::array<uint8_t, 16 * 1024> rbuf_{};
  std::string wbuf_;
  std::size_t buffered_in_ = 0;  // sum of streams' `in`
  bool receiving_ = false;       // inside nghttp2_session_mem_recv
  bool flush_pending_ = false;
  bool writing_ = false, closed_ = false, close_after_flush_ = false, registered_ = false;
  // Keepalive policy (grpc::Options).
  std::optional<Clock::time_point> last_client_ping_;
  int ping_strikes_ = 0;
  // Set when a DATA frame goes out: the next client ping is not checked
  // (grpc-go's resetPingStrikes, set on each data write).  grpc-go clients
  // send a BDP ping as they receive data, so a long download would
  // otherwise collect strikes and be sent away mid-stream.
  bool reset_ping_strikes_ = false;
  Clock::time_point last_frame_ = Clock::now();
  bool awaiting_ping_ack_ = false;
  asio::steady_timer keepalive_timer_;
};

// ---------------------------------------------------------------- Call

class H2Call final : public grpc::Call, public std::enable_shared_from_this<H2Call> {
 public:
  H2Call(std::shared_ptr<H2Connection> c, int32_t id, std::string method, grpc::Metadata md,
         std::optional<Clock::time_point> deadline)
      : conn_(std::move(c)),
        id_(id),
        method_(std::move(method)),
        md_(std::move(md)),
        deadline_(deadline) {}

  const std::string& method() const override { return method_; }
  const grpc::Metadata& metadata() const override { return md_; }
  const std::string& remote_address() const override { return conn_->remote(); }
  const std::string& peer_common_name() const override { return conn_->cn(); }
  std::optional<Clock::time_point> deadline() const override { return deadline_; }

  void start(Listener l) override {
    // Called by the handler, on the strand, before it returns.
    listener_ = std::move(l);
    started_ = true;
  }
  void send(std::string message) override {
    if (done_.load()) return;
    std::string framed = grpc::frame_message(message);
    queued_.fetch_add(framed.size());
    post([framed = std::move(framed)](H2Connection& c, int32_t id) mutable {
      c.send_message(id, std::move(framed));
    });
  }
  void finish(grpc::Status s) override {
    if (done_.exchange(true)) return;
    post([s = std::move(s)](H2Connection& c, int32_t id) mutable {
      c.finish_call(id, std::move(s));
    });
  }
  void reply(std::string message, grpc::Status s) override {
    if (done_.exchange(true)) return;
    std::string framed = grpc::frame_message(message);
    queued_.fetch_add(framed.size());
    post([framed = std::move(framed), s = std::move(s)](H2Connection& c, int32_t id) mutable {
      c.send_message(id, std::move(framed));
      c.finish_call(id, std::move(s));
    });
  }
  std::size_t queued_bytes() const override { return queued_.load(); }
  bool done() const override { return done_.load(); }

  // --- on the strand, from the connection
  bool started() const { return started_; }
  void deliver(std::string m) {
    if (listener_.on_message && !done_.load()) listener_.on_message(std::move(m));
  }
  void half_close() {
    if (listener_.on_half_close && !done_.load()) listener_.on_half_close();
  }
  // The call ended from net/'s side: no finish() from the program counts.
  void cancel() {
    if (done_.exchange(true)) return;
    if (auto f = std::move(listener_.on_cancel)) f();
    listener_ = {};
  }
  void sent(std::size_t n) { queued_.fetch_sub(std::min(n, queued_.load())); }
  void release() { listener_ = {}; }

 private:
  template <class F>
  void post(F&& f) {
    asio::post(conn_->executor(), [self = shared_from_this(), f = std::forward<F>(f)]() mutable {
      f(*self->conn_, self->id_);
    });
  }

  std::shared_ptr<H2Connection> conn_;
  int32_t id_;
  std::string method_;
  grpc::Metadata md_;
  std::optional<Clock::time_point> deadline_;
  Listener listener_;
  bool started_ = false;
  std::atomic<bool> done_{false};
  std::atomic<std::size_t> queued_{0};
};

// ---------------------------------------------------------------- Exchange

class H2Exchange final : public Exchange, public std::enable_shared_from_this<H2Exchange> {
 public:
  H2Exchange(std::shared_ptr<H2Connection> c, int32_t id, Request r)
      : conn_(std::move(c)), id_(id), request_(std::move(r)) {}

  const Request& request() const override { return request_; }
  const std::string& remote_address() const override { return conn_->remote(); }
  const std::string& peer_common_name() const override { return conn_->cn(); }
  void respond(Response r) override {
    post([r = std::move(r)](H2Connection& c, int32_t id) mutable { c.respond(id, std::move(r)); });
  }
  void begin_stream(Response head) override {
    post([h = std::move(head)](H2Connection& c, int32_t id) mutable {
      c.begin_stream(id, std::move(h));
    });
  }
  void write(std::string chunk) override {
    post([ch = std::move(chunk)](H2Connection& c, int32_t id) mutable {
      c.write_chunk(id, std::move(ch));
    });
  }
  void end_stream() override {
    post([](H2Connection& c, int32_t id) { c.end_stream(id); });
  }
  void on_cancel(std::function<void()> f) override {
    post([self = shared_from_this(), f = std::move(f)](H2Connection&, int32_t) mutable {
      if (self->cancelled_)
        f();
      else if (!self->finished_)
        self->cancel_ = std::move(f);
    });
  }
  bool finished() const override { return finished_.load(); }

  // --- on the strand
  void cancel() {
    if (cancelled_) return;
    cancelled_ = true;
    finished_ = true;
    if (auto f = std::move(cancel_)) f();
  }
  void complete() {
    finished_ = true;
    cancel_ = nullptr;
  }

 private:
  template <class F>
  void post(F&& f) {
    asio::post(conn_->executor(), [self = shared_from_this(), f = std::forward<F>(f)]() mutable {
      f(*self->conn_, self->id_);
    });
  }

  std::shared_ptr<H2Connection> conn_;
  int32_t id_;
  Request request_;
  std::function<void()> cancel_;
  bool cancelled_ = false;
  std::atomic<bool> finished_{false};
};

// ---------------------------------------------------------------- session

void H2Connection::start(std::string initial) {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &H2Connection::on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &H2Connection::on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &H2Connection::on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &H2Connection::on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &H2Connection::on_stream_close);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  // Header blocks are bounded by header_limit in on_header.
  nghttp2_option_set_max_send_header_block_length(opt, 1 << 20);
  // By default a server session keeps closed streams for the priority tree,
  // up to the concurrent-stream limit (unbounded here, as etcd's): memory that
  // grows with traffic for no use of ours.
  nghttp2_option_set_no_closed_streams(opt, 1);
  // nghttp2's HTTP messaging checks refuse what Go's server (and so etcd)
  // accepts: etcdctl sends ":authority: http://127.0.0.1:2379" when its
  // --endpoints carry a scheme, and nghttp2 resets that stream with
  // PROTOCOL_ERROR.  The frame layer stays strict; requests are checked here.
  nghttp2_option_set_no_http_messaging(opt, 1);
  int rv = nghttp2_session_server_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) {
    log::error(kCaller, "cannot create an HTTP/2 session", {{"error", nghttp2_strerror(rv)}});
    io_->close();
    return;
  }
  if (!ctx_->on_open(shared_from_this())) {
    io_->close();
    closed_ = true;
    return;
  }
  registered_ = true;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, ctx_->grpc.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(kStreamWindow)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(ctx_->header_limit)},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, std::size(iv));
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
  if (!initial.empty()) {
    receiving_ = true;
    ssize_t n = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(initial.data()),
                                         initial.size());
    receiving_ = false;
    if (n < 0) {
      log::warn(kCaller, "bad HTTP/2 connection preface",
                {{"remote-addr", remote_}, {"error", nghttp2_strerror(static_cast<int>(n))}});
      return close();
    }
  }
  arm_keepalive();
  flush();
  read_loop();
}

void H2Connection::read_loop() {
  if (closed_) return;
  io_->read_some(asio::buffer(rbuf_),
                 [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                   if (self->closed_) return;
                   if (ec) return self->close();
                   self->last_frame_ = Clock::now();
                   self->receiving_ = true;
                   ssize_t rv = nghttp2_session_mem_recv(self->session_, self->rbuf_.data(), n);
                   self->receiving_ = false;
                   if (rv < 0) {
                     // A protocol error: nghttp2 has queued a GOAWAY; send it, then close.
                     log::warn(kCaller, "HTTP/2 protocol error from client",
                               {{"remote-addr", self->remote_},
                                {"error", nghttp2_strerror(static_cast<int>(rv))}});
                     self->close_after_flush_ = true;
                     self->flush();
                     return;
                   }
                   self->flush();
                   self->read_loop();
                 });
}

void H2Connection::flush() {
  // Never from inside nghttp2's callbacks (mem_send must not be re-entered
  // from mem_recv): the read loop flushes once mem_recv returns.
  if (closed_ || writing_ || receiving_) return;
  while (wbuf_.size() < kWriteBatch) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) {
      log::warn(kCaller, "HTTP/2 send failed", {{"error", nghttp2_strerror(static_cast<int>(n))}});
      return close();
    }
    if (n == 0) break;
    wbuf_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
  if (wbuf_.empty()) {
    if (close_after_flush_ ||
        (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)))
      close();
    return;
  }
  writing_ = true;
  io_->write(asio::buffer(wbuf_),
             [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
               self->writing_ = false;
               self->wbuf_.clear();
               if (ec) return self->close();
               self->flush();
             });
}

void H2Connection::graceful_close() {
  if (closed_) return;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  for (auto& [id, s] : streams_) {
    if (s->done) continue;
    if (s->call) {
      abort_call(*s, {grpc::Code::kUnavailable, "the server is shutting down"});
    } else if (s->exchange) {
      // As HTTP/1.1 exchanges: the cancel callback runs, and an answer given
      // from it (or already queued) is still flushed.
      s->exchange->cancel();
    }
  }
  close_after_flush_ = true;
  schedule_flush();
}

void H2Connection::close() {
  if (closed_) return;
  closed_ = true;
  keepalive_timer_.cancel();
  io_->close();
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, s] : streams) {
    if (s->deadline_timer) s->deadline_timer->cancel();
    if (s->call) {
      s->call->cancel();
      s->call->release();  // the program's listener goes with the stream, finished or not
    }
    if (s->exchange) s->exchange->cancel();
  }
  if (registered_) ctx_->on_closed(this);
}

// ---------------------------------------------------------------- callbacks

int H2Connection::on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* u) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto s = std::make_unique<H2Stream>();
  s->id = f->hd.stream_id;
  self(u).streams_[s->id] = std::move(s);
  return 0;
}

int H2Connection::on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name,
                            size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                            void* u) {
  auto& c = self(u);
  H2Stream* s = c.find(f->hd.stream_id);
  if (!s || f->hd.type != NGHTTP2_HEADERS) return 0;  // trailers of a request: ignored
  if (s->dispatched) return 0;
  s->header_bytes += namelen + valuelen + 32;
  // Past the limit nghttp2 resets the stream for us.
  if (s->header_bytes > c.ctx_->header_limit) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  std::string n(reinterpret_cast<const char*>(name), namelen);
  std::string v(reinterpret_cast<const char*>(value), valuelen);
  if (!n.empty() && n[0] == ':') {
    if (n == ":method")
      s->method = std::move(v);
    else if (n == ":path")
      s->path = std::move(v);
    else if (n == ":authority")
      s->authority = std::move(v);
    else if (n == ":scheme")
      s->scheme = std::move(v);
    return 0;
  }
  if (n == "content-type") s->content_type = v;
  if (n == "grpc-timeout") s->grpc_timeout = v;
  if (n == "grpc-encoding") s->grpc_encoding = v;
  s->metadata.add(std::move(n), std::move(v));
  return 0;
}

int H2Connection::on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* u) {
  auto& c = self(u);
  switch (f->hd.type) {
    case NGHTTP2_HEADERS: {
      H2Stream* s = c.find(f->hd.stream_id);
      if (!s) return 0;
      if (!s->dispatched && (f->hd.flags & NGHTTP2_FLAG_END_HEADERS)) c.dispatch(*s);
      if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) c.on_request_end(*s);
      return 0;
    }
    case NGHTTP2_DATA: {
      H2Stream* s = c.find(f->hd.stream_id);
      if (s && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) c.on_request_end(*s);
      return 0;
    }
    case NGHTTP2_PING:
      if (f->hd.flags & NGHTTP2_FLAG_ACK)
        c.awaiting_ping_ack_ = false;
      else
        c.on_ping();
      return 0;
    default:
      return 0;
  }
}

int H2Connection::on_data_chunk(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data,
                                size_t len, void* u) {
  auto& c = self(u);
  H2Stream* s = c.find(id);
  if (!s || s->done) return 0;  // answered already: the rest of the body is dropped
  if (c.buffered_in_ + len > kMaxBufferedPerConnection) {
    log::warn(kCaller, "client buffered too much request data; closing the connection",
              {{"remote-addr", c.remote_}, {"limit-bytes", kMaxBufferedPerConnection}});
    nghttp2_submit_goaway(c.session_, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(c.session_),
                          NGHTTP2_ENHANCE_YOUR_CALM, nullptr, 0);
    c.close_after_flush_ = true;
    return 0;
  }
  if (!s->is_grpc && s->in.size() + len > c.ctx_->body_limit) {
    Response r = Response::text(413, "request body is larger than the limit of " +
                                         std::to_string(c.ctx_->body_limit) + " bytes\n");
    if (s->exchange) s->exchange->complete();
    c.respond(s->id, std::move(r));
    return 0;
  }
  c.buffered_in_ += len;
  s->in.append(reinterpret_cast<const char*>(data), len);
  if (s->is_grpc) c.on_grpc_data(*s);
  return 0;
}

int H2Connection::on_stream_close(nghttp2_session*, int32_t id, uint32_t, void* u) {
  auto& c = self(u);
  auto it = c.streams_.find(id);
  if (it == c.streams_.end()) return 0;
  std::unique_ptr<H2Stream> s = std::move(it->second);
  c.streams_.erase(it);
  c.buffered_in_ -= std::min(c.buffered_in_, s->in.size());
  if (s->deadline_timer) s->deadline_timer->cancel();
  // A stream closed before its answer was complete: the client reset it (a
  // cancelled context) or the connection is going away.
  if (s->call) {
    if (!s->done) s->call->cancel();
    s->call->release();
  }
  if (s->exchange) {
    if (!s->done)
      s->exchange->cancel();
    else
      s->exchange->complete();
  }
  return 0;
}

ssize_t H2Connection::read_body(nghttp2_session* session, int32_t id, uint8_t* buf, size_t length,
                                uint32_t* flags, nghttp2_data_source*, void* u) {
  auto& c = self(u);
  H2Stream* s = c.find(id);
  if (!s) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  const size_t avail = s->out.size() - s->out_offset;
  const size_t n = std::min(avail, length);
  if (n > 0) {
    std::memcpy(buf, s->out.data() + s->out_offset, n);
    s->out_offset += n;
    if (s->out_offset == s->out.size()) {
      s->out.clear();
      s->out_offset = 0;
    }
    if (s->call) s->call->sent(n);
    c.reset_ping_strikes_ = true;
  }
  if (s->out.empty() && s->finishing) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (s->trailers) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      nghttp2_submit_trailer(session, id, s->trailers->build(), s->trailers->size());
      s->trailers.reset();
    }
    return static_cast<ssize_t>(n);
  }
  if (n == 0) {
    s->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return static_cast<ssize_t>(n);
}

// ---------------------------------------------------------------- requests

void H2Connection::dispatch(H2Stream& s) {
  s.dispatched = true;
  s.is_grpc = s.method == "POST" && is_grpc_content_type(s.content_type);
  if (s.is_grpc) dispatch_grpc(s);
  // An HTTP request is handed over once its body is complete.
}

void H2Connection::dispatch_grpc(H2Stream& s) {
  std::optional<Clock::time_point> deadline;
  if (!s.grpc_timeout.empty()) {
    auto d = grpc::parse_timeout(s.grpc_timeout);
    if (!d) {
      // grpc-go answers a malformed timeout with INTERNAL before the handler.
      s.call = std::make_shared<H2Call>(shared_from_this(), s.id, s.path, s.metadata, deadline);
      abort_call(s, {grpc::Code::kInternal,
                     "transport: malformed grpc-timeout: \"" + s.grpc_timeout + "\""});
      return;
    }
    deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(*d);
  }
  s.call =
      std::make_shared<H2Call>(shared_from_this(), s.id, s.path, std::move(s.metadata), deadline);
  s.metadata = {};
  if (deadline) {
    s.deadline_timer = std::make_unique<asio::steady_timer>(io_->executor(), *deadline);
    s.deadline_timer->async_wait(
        [self = shared_from_this(), id = s.id](boost::system::error_code ec) {
          if (ec) return;
          if (H2Stream* st = self->find(id); st && !st->done) {
            self->abort_call(*st, {grpc::Code::kDeadlineExceeded, "context deadline exceeded"});
            self->schedule_flush();
          }
        });
  }
  if (!ctx_->grpc_handler) {
    abort_call(s, {grpc::Code::kUnimplemented, "unknown service on this port"});
    return;
  }
  auto call = s.call;
  ctx_->grpc_handler(call);
  if (!call->started() && !s.done)
    abort_call(s, {grpc::Code::kUnimplemented, "unknown method " + s.path});
}

void H2Connection::on_grpc_data(H2Stream& s) {
  // Messages: 1 byte compressed flag, 4 bytes big-endian length, the bytes.
  size_t off = 0;
  while (!s.done && s.in.size() - off >= 5) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.in.data() + off);
    const uint32_t len =
        (uint32_t{p[1]} << 24) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 8) | uint32_t{p[4]};
    if (len > ctx_->grpc.max_receive_message_bytes) {
      abort_call(s, {grpc::Code::kResourceExhausted,
                     "grpc: received message larger than max (" + std::to_string(len) + " vs. " +
                         std::to_string(ctx_->grpc.max_receive_message_bytes) + ")"});
      break;
    }
    if (p[0] != 0) {
      if (s.grpc_encoding.empty() || s.grpc_encoding == "identity")
        abort_call(s, {grpc::Code::kInternal,
                       "grpc: compressed flag set with identity or empty encoding"});
      else
        abort_call(s, {grpc::Code::kUnimplemented,
                       "grpc: Decompressor is not installed for "
                       "grpc-encoding \"" +
                           s.grpc_encoding + "\""});
      break;
    }
    if (s.in.size() - off - 5 < len) break;
    std::string m = s.in.substr(off + 5, len);
    off += 5 + len;
    if (s.call) s.call->deliver(std::move(m));
  }
  const size_t keep = s.done ? 0 : s.in.size() - off;
  buffered_in_ -= std::min(buffered_in_, s.in.size() - keep);
  if (s.done)
    s.in.clear();
  else if (off > 0)
    s.in.erase(0, off);
}

void H2Connection::on_request_end(H2Stream& s) {
  if (s.half_closed) return;
  s.half_closed = true;
  if (s.is_grpc) {
    if (!s.done && !s.in.empty())
      abort_call(s, {grpc::Code::kInternal, "grpc: request ended inside a message"});
    if (s.call && !s.done) s.call->half_close();
    return;
  }
  if (!s.done) dispatch_http(s);
}

void H2Connection::dispatch_http(H2Stream& s) {
  Request req;
  req.method = s.method;
  req.target = s.path.empty() ? "/" : s.path;
  for (auto& [n, v] : s.metadata.fields()) req.headers.add(n, v);
  if (!s.authority.empty() && !req.headers.has("Host")) req.headers.set("Host", s.authority);
  req.body = std::move(s.in);
  buffered_in_ -= std::min(buffered_in_, req.body.size());
  s.in.clear();
  req.keep_alive = true;
  if (is_grpc_content_type(s.content_type)) {
    // A gRPC content type with another method than POST.
    Response r = Response::text(405, "gRPC requires POST\n");
    return respond(s.id, std::move(r));
  }
  s.exchange = std::make_shared<H2Exchange>(shared_from_this(), s.id, std::move(req));
  ctx_->http_handler(s.exchange);
}

void H2Connection::abort_call(H2Stream& s, grpc::Status st) {
  if (s.done) return;
  std::shared_ptr<H2Call> call = s.call;
  finish_call(s.id, std::move(st));
  if (call) call->cancel();
}

void H2Connection::on_ping() {
  // grpc-go's enforcement policy, as etcd configures it: pings closer than
  // keepalive_min_time (2 h without an open stream) are strikes; the third
  // strike gets GOAWAY ENHANCE_YOUR_CALM "too_many_pings".  Sending headers
  // or a message resets the count, and a ping right after a DATA frame went
  // out is not checked at all (reset_ping_strikes_).
  const auto now = Clock::now();
  if (reset_ping_strikes_) {
    reset_ping_strikes_ = false;
    ping_strikes_ = 0;
    last_client_ping_ = now;
    return;
  }
  const auto allowed =
      streams_.empty() ? std::chrono::milliseconds(2 * 3600 * 1000) : ctx_->grpc.keepalive_min_time;
  if (last_client_ping_ && now - *last_client_ping_ < allowed) {
    if (++ping_strikes_ > 2) {
      static const std::string debug = "too_many_pings";
      log::warn(kCaller, "client pings too often; sending GOAWAY",
                {{"remote-addr", remote_},
                 {"min-time-ms", static_cast<int64_t>(ctx_->grpc.keepalive_min_time.count())}});
      nghttp2_submit_goaway(
          session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
          NGHTTP2_ENHANCE_YOUR_CALM, reinterpret_cast<const uint8_t*>(debug.data()), debug.size());
      close_after_flush_ = true;
    }
  }
  last_client_ping_ = now;
}

void H2Connection::arm_keepalive() {
  const auto interval = ctx_->grpc.keepalive_interval;
  if (interval.count() <= 0) return;
  keepalive_timer_.expires_after(awaiting_ping_ack_ ? ctx_->grpc.keepalive_timeout : interval);
  keepalive_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->closed_) return;
    if (self->awaiting_ping_ack_) {
      log::warn(kCaller, "client did not answer a keepalive ping; closing",
                {{"remote-addr", self->remote_}});
      return self->close();
    }
    if (Clock::now() - self->last_frame_ >= self->ctx_->grpc.keepalive_interval) {
      nghttp2_submit_ping(self->session_, NGHTTP2_FLAG_NONE, nullptr);
      self->awaiting_ping_ack_ = true;
      self->schedule_flush();
    }
    self->arm_keepalive();
  });
}

// ---------------------------------------------------------------- answers

void H2Connection::submit_with_body(H2Stream& s, NvList& headers) {
  nghttp2_data_provider prd;
  prd.source.ptr = nullptr;
  prd.read_callback = &H2Connection::read_body;
  int rv = nghttp2_submit_response(session_, s.id, headers.build(), headers.size(), &prd);
  if (rv != 0) {
    log::warn(kCaller, "cannot submit an HTTP/2 response", {{"error", nghttp2_strerror(rv)}});
    return;
  }
  s.response_submitted = true;
  ping_strikes_ = 0;
}

void H2Connection::resume(H2Stream& s) {
  if (s.deferred) {
    s.deferred = false;
    nghttp2_session_resume_data(session_, s.id);
  }
}

void H2Connection::send_message(int32_t id, std::string framed) {
  H2Stream* s = find(id);
  if (!s || s->done || closed_) return;
  s->out += framed;
  if (s->out.size() - s->out_offset > ctx_->grpc.max_queued_bytes_per_stream) {
    log::warn(kCaller, "client does not read its stream; resetting it",
              {{"remote-addr", remote_},
               {"method", s->call ? s->call->method() : std::string()},
               {"queued-bytes", s->out.size() - s->out_offset}});
    s->done = true;
    s->out.clear();
    s->out_offset = 0;
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_ENHANCE_YOUR_CALM);
    if (s->call) s->call->cancel();
    return schedule_flush();
  }
  if (!s->response_submitted) {
    NvList h;
    h.add(":status", "200");
    h.add("content-type", "application/grpc");
    submit_with_body(*s, h);
  } else {
    resume(*s);
  }
  ping_strikes_ = 0;
  schedule_flush();
}

void H2Connection::finish_call(int32_t id, grpc::Status st) {
  H2Stream* s = find(id);
  if (!s || s->done || closed_) return;
  s->done = true;
  if (s->deadline_timer) s->deadline_timer->cancel();
  NvList t;
  if (!s->response_submitted) {
    // Trailers-only: one HEADERS frame with END_STREAM.
    t.add(":status", "200");
    t.add("content-type", "application/grpc");
  }
  t.add("grpc-status", std::to_string(static_cast<int>(st.code)));
  if (!st.message.empty()) t.add("grpc-message", grpc::percent_encode(st.message));
  if (!s->response_submitted) {
    int rv = nghttp2_submit_response(session_, id, t.build(), t.size(), nullptr);
    if (rv != 0)
      log::warn(kCaller, "cannot submit gRPC trailers", {{"error", nghttp2_strerror(rv)}});
    s->response_submitted = true;
  } else {
    s->trailers = std::move(t);
    s->finishing = true;
    resume(*s);
  }
  // A client still sending (a stream answered early) gets the rest of its
  // body dropped; once the client half-closes the stream closes.
  schedule_flush();
}

void H2Connection::respond(int32_t id, Response r) {
  H2Stream* s = find(id);
  if (!s || s->done || closed_ || s->response_submitted) return;
  s->done = true;
  NvList h;
  h.add(":status", std::to_string(r.status));
  for (const auto& [name, value] : r.headers.all()) {
    std::string n = lower(name);
    if (n == "connection" || n == "transfer-encoding" || n == "keep-alive" ||
        n == "content-length" || n == "upgrade")
      continue;
    h.add(std::move(n), value);
  }
  const bool head = s->method == "HEAD";
  h.add("content-length", std::to_string(r.body.size()));
  if (head || r.body.empty()) {
    nghttp2_submit_response(session_, id, h.build(), h.size(), nullptr);
    s->response_submitted = true;
  } else {
    s->out = std::move(r.body);
    s->out_offset = 0;
    s->finishing = true;
    submit_with_body(*s, h);
  }
  if (s->exchange) s->exchange->complete();
  schedule_flush();
}

void H2Connection::begin_stream(int32_t id, Response head) {
  H2Stream* s = find(id);
  if (!s || s->done || closed_ || s->response_submitted) return;
  NvList h;
  h.add(":status", std::to_string(head.status));
  for (const auto& [name, value] : head.headers.all()) {
    std::string n = lower(name);
    if (n == "connection" || n == "transfer-encoding" || n == "keep-alive" ||
        n == "content-length" || n == "upgrade")
      continue;
    h.add(std::move(n), value);
  }
  submit_with_body(*s, h);
  schedule_flush();
}

void H2Connection::write_chunk(int32_t id, std::string data) {
  H2Stream* s = find(id);
  if (!s || s->done || closed_ || !s->response_submitted || data.empty()) return;
  s->out += data;
  resume(*s);
  schedule_flush();
}

void H2Connection::end_stream(int32_t id) {
  H2Stream* s = find(id);
  if (!s || s->done || closed_ || !s->response_submitted) return;
  s->done = true;
  s->finishing = true;
  if (s->exchange) s->exchange->complete();
  resume(*s);
  schedule_flush();
}

void start_h2_connection(std::unique_ptr<ByteStream> stream, std::string initial,
                         std::string remote_address, std::string peer_cn,
                         std::shared_ptr<const H2Context> ctx) {
  auto c = std::make_shared<H2Connection>(std::move(stream), std::move(remote_address),
                                          std::move(peer_cn), std::move(ctx));
  c->start(std::move(initial));
}

}  // namespace muster::net::detail
