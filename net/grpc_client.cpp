// net/grpc_client.cpp: gRPC calls over an nghttp2 client session (see
// grpc_client.h).  The same shape as the server side (h2.cpp): bytes read go
// to nghttp2_session_mem_recv, whatever the session wants to send is drained
// with mem_send into one buffer and written one write at a time, and request
// bodies are pulled from each call's `out` through a data provider.
#include "net/grpc_client.h"

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include <array>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <cstring>
#include <deque>
#include <map>

#include "net/connection.h"
#include "net/dial.h"

namespace muster::net::grpc {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

template <class S>
class StreamOf final : public detail::ByteStream {
 public:
  explicit StreamOf(std::unique_ptr<S> s) : s_(std::move(s)) {}
  asio::any_io_executor executor() override { return s_->get_executor(); }
  void read_some(asio::mutable_buffer b, IoHandler h) override {
    s_->async_read_some(b, std::move(h));
  }
  void write(asio::const_buffer b, IoHandler h) override {
    asio::async_write(*s_, b, std::move(h));
  }
  void close() override {
    boost::system::error_code ignored;
    auto& sock = s_->lowest_layer();
    sock.shutdown(tcp::socket::shutdown_both, ignored);
    sock.close(ignored);
  }

 private:
  std::unique_ptr<S> s_;
};

nghttp2_nv nv(const std::string& n, const std::string& v) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
                    NGHTTP2_NV_FLAG_NONE};
}

}  // namespace

class CallImpl;

class Channel::Impl : public std::enable_shared_from_this<Channel::Impl> {
 public:
  Impl(asio::io_context& io, ChannelOptions o)
      : io_(io), strand_(asio::make_strand(io)), options_(std::move(o)) {
    if (options_.tls) tls_ = make_client_tls_context(*options_.tls);
  }
  ~Impl() {
    if (session_) nghttp2_session_del(session_);
  }

  asio::strand<asio::io_context::executor_type>& strand() { return strand_; }

  // --- on the strand
  void start(const std::shared_ptr<CallImpl>& c);
  void send(CallImpl* c);
  void half_close(CallImpl* c);
  // Resets the call's stream and ends it with `why`.
  void cancel(CallImpl* c, Status why = {Code::kCancelled, "context canceled"});
  void close_all(const std::string& why);

 private:
  void connect();
  void connected(std::unique_ptr<detail::ByteStream> s);
  void submit(const std::shared_ptr<CallImpl>& c);
  void read_loop();
  void flush();
  void fail_connection(const std::string& why);
  void finish(int32_t id, Status s);

  static int on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* u);
  static int on_data_chunk(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len,
                           void* u);
  static int on_stream_close(nghttp2_session*, int32_t id, uint32_t error_code, void* u);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* u);
  static ssize_t read_body(nghttp2_session*, int32_t id, uint8_t* buf, size_t length,
                           uint32_t* flags, nghttp2_data_source*, void* u);

  asio::io_context& io_;
  asio::strand<asio::io_context::executor_type> strand_;
  ChannelOptions options_;
  std::shared_ptr<asio::ssl::context> tls_;
  enum class State { kIdle, kConnecting, kConnected } state_ = State::kIdle;
  // Shared with the completion handlers of its pending reads and writes:
  // fail_connection() lets go of it while they are pending, and they run
  // later (operation_aborted) inside the stream (a TLS stream's state).
  std::shared_ptr<detail::ByteStream> io_stream_;
  nghttp2_session* session_ = nullptr;
  std::deque<std::shared_ptr<CallImpl>> waiting_;  // for the connection
  std::map<int32_t, std::shared_ptr<CallImpl>> calls_;
  std::array<uint8_t, 16 * 1024> rbuf_{};
  std::string wbuf_;
  bool writing_ = false, receiving_ = false;
  uint64_t generation_ = 0;  // bumped per connection: late I/O of an old one is ignored
  friend class CallImpl;
};

class CallImpl final : public ClientCall, public std::enable_shared_from_this<CallImpl> {
 public:
  CallImpl(std::shared_ptr<Channel::Impl> ch, std::string method, Metadata md, ClientListener l,
           std::optional<std::chrono::milliseconds> timeout)
      : ch_(std::move(ch)),
        method_(std::move(method)),
        md_(std::move(md)),
        listener_(std::move(l)),
        timeout_(timeout) {}

  void send(std::string message) override {
    asio::post(ch_->strand(), [self = shared_from_this(), m = frame_message(message)]() mutable {
      if (self->half_closed_ || self->ended_) return;
      self->out_ += m;
      self->ch_->send(self.get());
    });
  }
  void half_close() override {
    asio::post(ch_->strand(), [self = shared_from_this()] {
      if (self->half_closed_ || self->ended_) return;
      self->half_closed_ = true;
      self->ch_->half_close(self.get());
    });
  }
  void cancel() override {
    asio::post(ch_->strand(), [self = shared_from_this()] { self->ch_->cancel(self.get()); });
  }

  // --- on the strand
  void end(Status s) {
    if (ended_) return;
    ended_ = true;
    if (timer_) timer_->cancel();
    auto l = std::move(listener_);
    listener_ = {};
    if (l.on_finish) l.on_finish(std::move(s));
  }
  void deliver_data(const uint8_t* data, size_t len) {
    in_.append(reinterpret_cast<const char*>(data), len);
    size_t off = 0;
    while (!ended_ && in_.size() - off >= 5) {
      const auto* p = reinterpret_cast<const unsigned char*>(in_.data() + off);
      const uint32_t n =
          (uint32_t{p[1]} << 24) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 8) | uint32_t{p[4]};
      if (in_.size() - off - 5 < n) break;
      std::string m = in_.substr(off + 5, n);
      off += 5 + n;
      if (listener_.on_message) listener_.on_message(std::move(m));
    }
    in_.erase(0, off);
  }

  std::shared_ptr<Channel::Impl> ch_;
  std::string method_;
  Metadata md_;
  ClientListener listener_;
  std::optional<std::chrono::milliseconds> timeout_;
  std::unique_ptr<asio::steady_timer> timer_;
  int32_t id_ = -1;  // the HTTP/2 stream, once submitted
  std::string out_, in_;
  size_t out_off_ = 0;
  bool half_closed_ = false, ended_ = false, deferred_ = false, cancelled_ = false;
  std::optional<int> status_;
  std::string message_;
  std::string http_status_;
};

void Channel::Impl::start(const std::shared_ptr<CallImpl>& c) {
  if (c->timeout_) {
    c->timer_ = std::make_unique<asio::steady_timer>(strand_, *c->timeout_);
    c->timer_->async_wait([c](boost::system::error_code ec) {
      if (ec || c->ended_) return;
      // The server enforces grpc-timeout too; this covers a server that
      // cannot be reached at all.
      c->ch_->cancel(c.get(), {Code::kDeadlineExceeded, "context deadline exceeded"});
    });
  }
  if (state_ == State::kConnected) return submit(c);
  waiting_.push_back(c);
  if (state_ == State::kIdle) connect();
}

void Channel::Impl::connect() {
  state_ = State::kConnecting;
  const uint64_t gen = ++generation_;
  DialOptions d;
  d.connect_timeout = d.handshake_timeout = options_.connect_timeout;
  d.keep_alive = options_.keep_alive;
  if (tls_) {
    d.tls_context = tls_;
    d.tls = *options_.tls;
    d.alpn = std::string("\x02h2", 3);
  }
  const std::string where = options_.host + ":" + std::to_string(options_.port);
  // The connection lives on the strand: its reads and writes (StreamOf)
  // complete there.
  dial(strand_, strand_, options_.host, options_.port, d,
       [self = shared_from_this(), gen, where](DialError e, Dialed c) {
         if (gen != self->generation_) return;
         if (e) return self->fail_connection(e.message);
         if (c.plain)
           return self->connected(std::make_unique<StreamOf<tcp::socket>>(std::move(c.plain)));
         const unsigned char* p = nullptr;
         unsigned int len = 0;
         SSL_get0_alpn_selected(c.tls->native_handle(), &p, &len);
         if (!(len == 2 && p[0] == 'h' && p[1] == '2'))
           return self->fail_connection(where + " did not agree on HTTP/2 (ALPN h2)");
         self->connected(
             std::make_unique<StreamOf<asio::ssl::stream<tcp::socket>>>(std::move(c.tls)));
       });
}

void Channel::Impl::connected(std::unique_ptr<detail::ByteStream> s) {
  io_stream_ = std::move(s);
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &Impl::on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Impl::on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Impl::on_stream_close);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Impl::on_frame_recv);
  if (session_) nghttp2_session_del(session_);
  session_ = nullptr;
  nghttp2_session_client_new(&session_, cbs, this);
  nghttp2_session_callbacks_del(cbs);
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
                                 {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, std::size(iv));
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, 16 << 20);
  state_ = State::kConnected;
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& c : waiting)
    if (!c->ended_) submit(c);
  flush();
  read_loop();
}

void Channel::Impl::submit(const std::shared_ptr<CallImpl>& c) {
  const std::string scheme = tls_ ? "https" : "http";
  const std::string authority = options_.host + ":" + std::to_string(options_.port);
  std::vector<std::pair<std::string, std::string>> h = {{":method", "POST"},
                                                        {":scheme", scheme},
                                                        {":path", c->method_},
                                                        {":authority", authority},
                                                        {"content-type", "application/grpc"},
                                                        {"te", "trailers"}};
  if (c->timeout_) h.emplace_back("grpc-timeout", std::to_string(c->timeout_->count()) + "m");
  for (const auto& [n, v] : c->md_.fields()) {
    if (n.empty() || n[0] == ':' || n == "content-type" || n == "te" || n == "grpc-timeout" ||
        n == "host" || n == "connection")
      continue;
    h.emplace_back(n, v);
  }
  std::vector<nghttp2_nv> nva;
  for (auto& [n, v] : h) nva.push_back(nv(n, v));
  nghttp2_data_provider prd;
  prd.source.ptr = nullptr;
  prd.read_callback = &Impl::read_body;
  int32_t id = nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(), &prd, nullptr);
  if (id < 0)
    return c->end({Code::kUnavailable,
                   std::string("cannot start an HTTP/2 stream: ") + nghttp2_strerror(id)});
  c->id_ = id;
  calls_[id] = c;
  flush();
}

void Channel::Impl::send(CallImpl* c) {
  if (c->id_ < 0 || !session_) return;  // submitted later, with its buffer
  if (c->deferred_) {
    c->deferred_ = false;
    nghttp2_session_resume_data(session_, c->id_);
  }
  flush();
}

void Channel::Impl::half_close(CallImpl* c) { send(c); }

void Channel::Impl::cancel(CallImpl* c, Status why) {
  if (c->ended_) return;
  if (c->id_ >= 0 && session_ && state_ == State::kConnected) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, c->id_, NGHTTP2_CANCEL);
    calls_.erase(c->id_);
    flush();
  }
  c->end(std::move(why));
}

ssize_t Channel::Impl::read_body(nghttp2_session*, int32_t id, uint8_t* buf, size_t length,
                                 uint32_t* flags, nghttp2_data_source*, void* u) {
  auto& self = *static_cast<Impl*>(u);
  auto it = self.calls_.find(id);
  if (it == self.calls_.end()) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  CallImpl& c = *it->second;
  const size_t n = std::min(length, c.out_.size() - c.out_off_);
  std::memcpy(buf, c.out_.data() + c.out_off_, n);
  c.out_off_ += n;
  if (c.out_off_ == c.out_.size()) {
    c.out_.clear();
    c.out_off_ = 0;
  }
  if (c.out_.empty() && c.half_closed_) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }
  if (n == 0) {
    c.deferred_ = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return static_cast<ssize_t>(n);
}

int Channel::Impl::on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name,
                             size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                             void* u) {
  auto& self = *static_cast<Impl*>(u);
  auto it = self.calls_.find(f->hd.stream_id);
  if (it == self.calls_.end()) return 0;
  std::string_view n(reinterpret_cast<const char*>(name), namelen);
  std::string_view v(reinterpret_cast<const char*>(value), valuelen);
  CallImpl& c = *it->second;
  if (n == ":status") c.http_status_ = std::string(v);
  if (n == "grpc-status") c.status_ = std::atoi(std::string(v).c_str());
  if (n == "grpc-message") c.message_ = percent_decode(v);
  return 0;
}

int Channel::Impl::on_data_chunk(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data,
                                 size_t len, void* u) {
  auto& self = *static_cast<Impl*>(u);
  auto it = self.calls_.find(id);
  if (it != self.calls_.end()) it->second->deliver_data(data, len);
  return 0;
}

int Channel::Impl::on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* u) {
  auto& self = *static_cast<Impl*>(u);
  if (f->hd.type == NGHTTP2_GOAWAY) {
    // Streams above last_stream_id were not processed: they end UNAVAILABLE
    // from on_stream_close; new calls go to a fresh connection.
    self.state_ = State::kIdle;
  }
  return 0;
}

int Channel::Impl::on_stream_close(nghttp2_session*, int32_t id, uint32_t error_code, void* u) {
  auto& self = *static_cast<Impl*>(u);
  auto it = self.calls_.find(id);
  if (it == self.calls_.end()) return 0;
  auto c = it->second;
  self.calls_.erase(it);
  if (c->status_) {
    c->end({static_cast<Code>(*c->status_), c->message_});
  } else if (error_code != NGHTTP2_NO_ERROR) {
    c->end({error_code == NGHTTP2_REFUSED_STREAM ? Code::kUnavailable : Code::kInternal,
            "stream terminated by RST_STREAM with error code: " + std::to_string(error_code)});
  } else if (!c->http_status_.empty() && c->http_status_ != "200") {
    c->end(
        {Code::kUnknown, "unexpected HTTP status code received from server: " + c->http_status_});
  } else {
    c->end({Code::kInternal, "server closed the stream without sending trailers"});
  }
  return 0;
}

void Channel::Impl::read_loop() {
  const uint64_t gen = generation_;
  io_stream_->read_some(asio::buffer(rbuf_), [self = shared_from_this(), gen, stream = io_stream_](
                                                 boost::system::error_code ec, std::size_t n) {
    if (gen != self->generation_ || self->state_ == State::kConnecting) return;
    if (ec) return self->fail_connection("connection closed: " + ec.message());
    self->receiving_ = true;
    ssize_t rv = nghttp2_session_mem_recv(self->session_, self->rbuf_.data(), n);
    self->receiving_ = false;
    if (rv < 0)
      return self->fail_connection(std::string("HTTP/2 error: ") +
                                   nghttp2_strerror(static_cast<int>(rv)));
    self->flush();
    if (gen == self->generation_) self->read_loop();
  });
}

void Channel::Impl::flush() {
  if (writing_ || receiving_ || !session_ || !io_stream_) return;
  while (wbuf_.size() < 64 * 1024) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) return fail_connection("HTTP/2 send error");
    if (n == 0) break;
    wbuf_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
  if (wbuf_.empty()) return;
  writing_ = true;
  const uint64_t gen = generation_;
  io_stream_->write(asio::buffer(wbuf_),
                    [self = shared_from_this(), gen, stream = io_stream_](
                        boost::system::error_code ec, std::size_t) {
                      if (gen != self->generation_) return;
                      self->writing_ = false;
                      self->wbuf_.clear();
                      if (ec) return self->fail_connection("write failed: " + ec.message());
                      self->flush();
                    });
}

void Channel::Impl::fail_connection(const std::string& why) {
  ++generation_;
  state_ = State::kIdle;
  writing_ = false;
  wbuf_.clear();
  if (io_stream_) io_stream_->close();
  io_stream_.reset();
  auto calls = std::move(calls_);
  calls_.clear();
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& [id, c] : calls) c->end({Code::kUnavailable, why});
  for (auto& c : waiting) c->end({Code::kUnavailable, why});
}

void Channel::Impl::close_all(const std::string& why) { fail_connection(why); }

Channel::Channel(asio::io_context& io, ChannelOptions options)
    : impl_(std::make_shared<Impl>(io, std::move(options))) {}

Channel::~Channel() { close(); }

std::shared_ptr<ClientCall> Channel::call(std::string method, Metadata metadata, ClientListener l,
                                          std::optional<std::chrono::milliseconds> timeout) {
  auto c = std::make_shared<CallImpl>(impl_, std::move(method), std::move(metadata), std::move(l),
                                      timeout);
  asio::post(impl_->strand(), [impl = impl_, c] { impl->start(c); });
  return c;
}

void Channel::close() {
  asio::post(impl_->strand(), [impl = impl_] { impl->close_all("channel closed"); });
}

}  // namespace muster::net::grpc
