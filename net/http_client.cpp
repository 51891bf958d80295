// net/http_client.cpp: see http_client.h.  Beast parses answers and writes
// requests; net::dial opens connections.
#include "net/http_client.h"

#include <array>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <limits>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "net/dial.h"

namespace muster::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using Clock = std::chrono::steady_clock;
using Step = ClientResult::Step;

namespace {

// An open connection, with what was read past the last answer (always empty
// while it is idle in the pool).
struct Conn {
  Dialed d;
  beast::flat_buffer buffer;
  Clock::time_point idle_since;

  void close() {
    error_code ignored;
    if (d) d.socket().close(ignored);
  }
};

bool is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

template <class Fields>
void copy_headers(const Fields& from, Headers& to) {
  for (const auto& f : from) to.add(std::string(f.name_string()), std::string(f.value()));
}

}  // namespace

class AsyncHttpClient::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(asio::any_io_executor io, ClientOptions o) : io_(std::move(io)), options_(std::move(o)) {}

  // The TLS context, built once; nullptr and *error when the files do not
  // load.
  std::shared_ptr<asio::ssl::context> tls_context(std::string* error) {
    std::lock_guard lock(mu_);
    if (!tls_ctx_ && tls_error_.empty()) {
      try {
        tls_ctx_ = make_client_tls_context(options_.tls);
      } catch (const std::exception& e) {
        tls_error_ = e.what();
      }
    }
    if (!tls_ctx_) *error = tls_error_;
    return tls_ctx_;
  }

  std::unique_ptr<Conn> take(const std::string& origin) {
    std::lock_guard lock(mu_);
    auto it = pool_.find(origin);
    if (it == pool_.end()) return nullptr;
    const auto now = Clock::now();
    while (!it->second.empty()) {
      auto c = std::move(it->second.back());
      it->second.pop_back();
      if (now - c->idle_since < options_.max_idle) return c;
      c->close();
    }
    return nullptr;
  }

  void put(const std::string& origin, std::unique_ptr<Conn> c) {
    c->idle_since = Clock::now();
    std::lock_guard lock(mu_);
    auto& v = pool_[origin];
    if (v.size() < options_.max_idle_per_origin)
      v.push_back(std::move(c));
    else
      c->close();
  }

  void close_idle() {
    std::lock_guard lock(mu_);
    for (auto& [origin, conns] : pool_)
      for (auto& c : conns) c->close();
    pool_.clear();
  }

  const asio::any_io_executor io_;
  const ClientOptions options_;

 private:
  std::mutex mu_;  // guards everything below
  std::shared_ptr<asio::ssl::context> tls_ctx_;
  std::string tls_error_;
  std::map<std::string, std::vector<std::unique_ptr<Conn>>> pool_;  // idle, by origin
};

namespace {

// One call: every handler runs on strand_.
class Call final : public HttpCall, public std::enable_shared_from_this<Call> {
 public:
  Call(std::shared_ptr<AsyncHttpClient::Impl> client, ClientRequest req,
       std::optional<StreamHandlers> handlers, ClientHandler done)
      : client_(std::move(client)),
        options_(client_->options_),
        strand_(asio::make_strand(client_->io_)),
        timer_(strand_),
        req_(std::move(req)),
        handlers_(std::move(handlers)),
        done_(std::move(done)) {}

  void start() {
    asio::post(strand_, [self = shared_from_this()] { self->begin(self->req_.url); });
  }

  void cancel() override {
    asio::post(strand_, [self = shared_from_this()] {
      self->cancelled_ = true;
      self->stop_io();
    });
  }

 private:
  // ---- steps

  void begin(const std::string& url) {
    std::string err;
    auto u = parse_url(url, &err);
    if (!u) return finish_error(Step::kResolve, err, err);
    url_ = *u;
    if (!deadline_) {
      const auto t = req_.timeout.value_or(options_.timeout);
      if (t.count() > 0) deadline_ = Clock::now() + t;
    }
    const Url& target = options_.proxy ? *options_.proxy : url_;
    origin_ = target.scheme + "://" + target.authority();
    build_message();
    retried_ = false;
    if (req_.reuse_connection) {
      if (auto c = client_->take(origin_)) {
        conn_ = std::move(c);
        reused_ = true;
        return send();
      }
    }
    connect();
  }

  void build_message() {
    msg_ = {};
    msg_.method_string(req_.method);
    msg_.target(options_.proxy ? url_.str() : url_.target());
    msg_.version(11);
    msg_.set(http::field::host, url_.explicit_port ? url_.authority() : url_.host);
    if (!options_.user_agent.empty()) msg_.set(http::field::user_agent, options_.user_agent);
    for (const auto& [n, v] : req_.headers.all()) msg_.set(n, v);
    msg_.body() = req_.body;
    if (!req_.body.empty() || req_.method == "POST" || req_.method == "PUT" ||
        req_.method == "PATCH")
      msg_.prepare_payload();
    msg_.keep_alive(req_.reuse_connection);
  }

  void connect() {
    reused_ = false;
    if (cancelled_) return finish_cancelled(Step::kConnect);
    const Url& target = options_.proxy ? *options_.proxy : url_;
    DialOptions d;
    d.connect_timeout = options_.connect_timeout;
    d.handshake_timeout = options_.handshake_timeout;
    d.keep_alive = options_.keep_alive;
    if (url_.tls() && !options_.proxy) {
      std::string err;
      d.tls_context = client_->tls_context(&err);
      if (!d.tls_context) return finish_error(Step::kHandshake, err, err);
      d.tls = options_.tls;
    }
    arm(std::chrono::milliseconds(0));  // the deadline only
    dial_ = dial(client_->io_, strand_, target.host, target.port, d,
                 [self = shared_from_this()](DialError e, Dialed c) {
                   self->on_dialed(std::move(e), std::move(c));
                 });
  }

  void on_dialed(DialError e, Dialed d) {
    dial_.reset();
    if (cancelled_) return finish_cancelled(Step::kConnect);
    if (e) {
      const Step step = e.step == DialError::Step::kResolve   ? Step::kResolve
                        : e.step == DialError::Step::kConnect ? Step::kConnect
                                                              : Step::kHandshake;
      std::string message = e.message;
      if (deadline_hit_) {
        const Url& target = options_.proxy ? *options_.proxy : url_;
        message = step == Step::kHandshake ? "timed out in TLS handshake with " + target.authority()
                                           : "timed out connecting to " + target.authority();
      }
      return finish_error(step, message, e.ec.message());
    }
    conn_ = std::make_unique<Conn>();
    conn_->d = std::move(d);
    send();
  }

  void send() {
    if (cancelled_) return finish_cancelled(Step::kSend);
    arm(options_.write_timeout);
    with_stream([&](auto& s) {
      http::async_write(
          s, msg_,
          asio::bind_executor(strand_, [self = shared_from_this()](error_code ec, std::size_t) {
            if (ec) return self->failed(Step::kSend, ec);
            if (self->handlers_)
              self->read_head();
            else
              self->read_whole();
          }));
    });
  }

  void read_whole() {
    if (cancelled_) return finish_cancelled(Step::kHead);
    whole_.emplace();
    whole_->body_limit(options_.body_limit);
    if (req_.method == "HEAD") whole_->skip(true);
    arm(options_.read_timeout);
    with_stream([&](auto& s) {
      http::async_read(
          s, conn_->buffer, *whole_,
          asio::bind_executor(strand_, [self = shared_from_this()](error_code ec, std::size_t) {
            if (ec)
              return self->failed(self->whole_->is_header_done() ? Step::kBody : Step::kHead, ec);
            self->on_whole();
          }));
    });
  }

  void on_whole() {
    auto msg = whole_->release();
    Response out;
    out.status = static_cast<int>(msg.result_int());
    copy_headers(msg, out.headers);
    out.body = std::move(msg.body());
    release_connection(msg.keep_alive());
    auto location = out.headers.get("Location");
    if (is_redirect(out.status) && location && redirects_ < options_.max_redirects) {
      std::string next = *location;
      if (!next.empty() && next[0] == '/') next = url_.origin() + next;
      if (parse_url(next)) {
        ++redirects_;
        return begin(next);
      }
    }
    finish(ClientResult{std::move(out), "", Step::kNone, ""});
  }

  void read_head() {
    if (cancelled_) return finish_cancelled(Step::kHead);
    parser_.emplace();
    // No limit, spelled as the largest value: Boost 1.74's parser compares
    // a Content-Length against an empty optional as "over the limit", so
    // boost::none would reject every streamed answer that has a length.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    if (req_.method == "HEAD") parser_->skip(true);
    arm(options_.read_timeout);
    with_stream([&](auto& s) {
      http::async_read_header(
          s, conn_->buffer, *parser_,
          asio::bind_executor(strand_, [self = shared_from_this()](error_code ec, std::size_t) {
            if (ec) return self->failed(Step::kHead, ec);
            self->on_head();
          }));
    });
  }

  void on_head() {
    reused_ = false;  // the connection answered: later failures are the server's
    auto& msg = parser_->get();
    head_ = Response{};
    head_.status = static_cast<int>(msg.result_int());
    copy_headers(msg, head_.headers);
    const bool complete = parser_->is_done();
    std::optional<uint64_t> length;
    if (auto l = parser_->content_length()) length = *l;
    if (handlers_->on_head && !handlers_->on_head(head_, length, complete)) return stop();
    if (complete) return end_of_stream();
    read_body();
  }

  void read_body() {
    if (cancelled_) return finish_cancelled(Step::kBody);
    parser_->get().body().data = buf_.data();
    parser_->get().body().size = buf_.size();
    arm(options_.read_timeout);
    with_stream([&](auto& s) {
      http::async_read_some(
          s, conn_->buffer, *parser_,
          asio::bind_executor(strand_, [self = shared_from_this()](error_code ec, std::size_t) {
            self->on_body(ec);
          }));
    });
  }

  void on_body(error_code ec) {
    if (ec == http::error::need_buffer) ec = {};
    const std::size_t got = buf_.size() - parser_->get().body().size;
    if (got > 0 && !cancelled_ && handlers_->on_data &&
        !handlers_->on_data(std::string_view(buf_.data(), got)))
      return stop();
    if (ec) return failed(Step::kBody, ec);
    if (parser_->is_done()) return end_of_stream();
    read_body();
  }

  void end_of_stream() {
    release_connection(parser_->keep_alive());
    finish(ClientResult{head_, "", Step::kNone, ""});
  }

  // A stream callback said stop: the rest of the answer is not read.
  void stop() {
    close_connection();
    finish(ClientResult{head_, "", Step::kNone, ""});
  }

  // ---- failures

  void failed(Step step, error_code ec) {
    if (cancelled_) return finish_cancelled(step);
    const bool before_answer = step == Step::kSend || step == Step::kHead;
    const bool deadline_passed = deadline_ && Clock::now() >= *deadline_;
    if (reused_ && before_answer && !retried_ && !deadline_passed && !timed_out_) {
      // The server closed this idle connection before our request reached
      // it (or while it did): say nothing, and try once on a fresh one.
      // Only requests that may be sent twice use pooled connections.
      close_connection();
      retried_ = true;
      return connect();
    }
    close_connection();
    if (step == Step::kBody && handlers_ && deadline_hit_) {
      // The stream ran until the call's deadline: the head stands.
      return finish(ClientResult{head_, "", Step::kNone, ""});
    }
    const std::string where = url_.authority();
    std::string message;
    if (step == Step::kSend) {
      message = timed_out_ ? "timed out sending request to " + where
                           : "cannot send request to " + where + ": " + ec.message();
    } else if (step == Step::kBody && handlers_) {
      message = "stream from " + where + " broke: " + (timed_out_ ? "timed out" : ec.message());
    } else {
      message = timed_out_ ? "timed out waiting for a response from " + where
                           : "no response from " + where + ": " + ec.message();
    }
    finish_error(step, message, timed_out_ ? "timed out" : ec.message());
  }

  void finish_cancelled(Step step) { finish_error(step, "cancelled", "cancelled"); }

  void finish_error(Step step, std::string message, std::string reason) {
    close_connection();
    finish(ClientResult{std::nullopt, std::move(message), step, std::move(reason)});
  }

  void finish(ClientResult r) {
    if (finished_) return;
    finished_ = true;
    ++timer_gen_;
    timer_.cancel();
    auto done = std::move(done_);
    done_ = nullptr;
    handlers_.reset();
    if (done) done(std::move(r));
  }

  // ---- connections and timers

  // After a complete answer: back to the pool when it can serve again.
  void release_connection(bool keep_alive) {
    if (req_.reuse_connection && keep_alive && !timed_out_ && conn_ && conn_->buffer.size() == 0) {
      client_->put(origin_, std::move(conn_));
    } else {
      close_connection();
    }
  }

  void close_connection() {
    if (conn_) conn_->close();
    conn_.reset();
  }

  void stop_io() {
    if (dial_) dial_->cancel();
    if (conn_) conn_->close();
  }

  template <class F>
  void with_stream(F&& f) {
    if (conn_->d.tls)
      f(*conn_->d.tls);
    else
      f(*conn_->d.plain);
  }

  // Bounds the next step by `limit` (0 = none) and by the call's deadline;
  // whichever comes first closes the connection, so the pending operation
  // ends with an error.
  void arm(std::chrono::milliseconds limit) {
    const uint64_t gen = ++timer_gen_;
    timer_.cancel();
    std::optional<Clock::time_point> at;
    bool by_deadline = false;
    if (limit.count() > 0) at = Clock::now() + limit;
    if (deadline_ && (!at || *deadline_ <= *at)) {
      at = deadline_;
      by_deadline = true;
    }
    if (!at) return;
    timer_.expires_at(*at);
    timer_.async_wait([self = shared_from_this(), gen, by_deadline](error_code ec) {
      if (ec || gen != self->timer_gen_ || self->finished_) return;
      self->timed_out_ = true;
      self->deadline_hit_ = by_deadline;
      self->stop_io();
    });
  }

  std::shared_ptr<AsyncHttpClient::Impl> client_;
  const ClientOptions& options_;
  asio::strand<asio::any_io_executor> strand_;
  asio::steady_timer timer_;
  uint64_t timer_gen_ = 0;
  ClientRequest req_;
  std::optional<StreamHandlers> handlers_;
  ClientHandler done_;

  std::optional<Clock::time_point> deadline_;
  Url url_;
  std::string origin_;  // the pool key: where the connection goes
  int redirects_ = 0;
  std::shared_ptr<Dial> dial_;
  std::unique_ptr<Conn> conn_;
  bool reused_ = false;   // conn_ came from the pool and has not answered yet
  bool retried_ = false;  // this hop already went to a fresh connection
  bool cancelled_ = false, finished_ = false, timed_out_ = false, deadline_hit_ = false;

  http::request<http::string_body> msg_;
  std::optional<http::response_parser<http::string_body>> whole_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  std::array<char, 16384> buf_{};
  Response head_;
};

}  // namespace

AsyncHttpClient::AsyncHttpClient(asio::any_io_executor io, ClientOptions options)
    : impl_(std::make_shared<Impl>(std::move(io), std::move(options))) {}

AsyncHttpClient::~AsyncHttpClient() { impl_->close_idle(); }

const ClientOptions& AsyncHttpClient::options() const { return impl_->options_; }

void AsyncHttpClient::load_tls() {
  std::string err;
  if (!impl_->tls_context(&err)) throw std::runtime_error(err);
}

std::shared_ptr<HttpCall> AsyncHttpClient::request(ClientRequest req, ClientHandler done,
                                                   CallSlot* slot) {
  auto c = std::make_shared<Call>(impl_, std::move(req), std::nullopt, std::move(done));
  if (slot) slot->hold(c);  // a cancelled slot cancels it: it then ends at once
  c->start();
  return c;
}

std::shared_ptr<HttpCall> AsyncHttpClient::stream(ClientRequest req, StreamHandlers handlers,
                                                  ClientHandler done, CallSlot* slot) {
  auto c = std::make_shared<Call>(impl_, std::move(req), std::move(handlers), std::move(done));
  if (slot) slot->hold(c);
  c->start();
  return c;
}

void AsyncHttpClient::close_idle() { impl_->close_idle(); }

bool CallSlot::hold(std::shared_ptr<HttpCall> call) {
  {
    std::lock_guard lock(mu_);
    if (!cancelled_) {
      call_ = std::move(call);
      return true;
    }
  }
  if (call) call->cancel();
  return false;
}

void CallSlot::cancel() {
  std::shared_ptr<HttpCall> call;
  {
    std::lock_guard lock(mu_);
    cancelled_ = true;
    call = std::move(call_);
  }
  if (call) call->cancel();
}

bool CallSlot::cancelled() const {
  std::lock_guard lock(mu_);
  return cancelled_;
}

}  // namespace muster::net
