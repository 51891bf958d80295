#include "net/client.h"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <limits>
#include <utility>

namespace muster::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

struct Conn {
  std::unique_ptr<beast::tcp_stream> plain;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;

  beast::tcp_stream& lowest() { return plain ? *plain : beast::get_lowest_layer(*tls); }
};

}  // namespace

class HttpClient::Impl {
 public:
  explicit Impl(ClientOptions o) : options_(std::move(o)) {}

  ClientOptions options_;
  asio::io_context io_;
  std::map<std::string, std::unique_ptr<Conn>> conns_;  // by origin
  std::shared_ptr<asio::ssl::context> tls_ctx_;

  // Runs the io_context until `done` or the deadline; on timeout closes the
  // connection so the pending operation completes with an error.
  bool run_until(bool& done, std::optional<Clock::time_point> deadline, Conn& c) {
    io_.restart();
    while (!done) {
      if (deadline) {
        auto now = Clock::now();
        if (now >= *deadline) {
          boost::system::error_code ignored;
          c.lowest().socket().close(ignored);
          io_.restart();
          while (!done) io_.run_one();
          return false;
        }
        io_.run_one_for(*deadline - now);
      } else {
        io_.run_one();
      }
    }
    return true;
  }

  std::string connect(Conn& c, const Url& u, std::optional<Clock::time_point> deadline) {
    const Url& target = options_.proxy ? *options_.proxy : u;
    tcp::resolver resolver(io_);
    boost::system::error_code ec;
    auto results = resolver.resolve(target.host, std::to_string(target.port), ec);
    if (ec) return "cannot resolve " + target.host + ": " + ec.message();
    c.plain = std::make_unique<beast::tcp_stream>(io_);
    bool done = false;
    auto connect_deadline = Clock::now() + options_.connect_timeout;
    if (deadline && *deadline < connect_deadline) connect_deadline = *deadline;
    c.plain->async_connect(results, [&](boost::system::error_code e, const tcp::endpoint&) {
      ec = e;
      done = true;
    });
    if (!run_until(done, connect_deadline, c))
      return "timed out connecting to " + target.authority();
    if (ec) return "cannot connect to " + target.authority() + ": " + ec.message();
    c.plain->socket().set_option(tcp::no_delay(true), ec);
    if (u.tls() && !options_.proxy) {
      if (!tls_ctx_) {
        try {
          tls_ctx_ = make_client_tls_context(options_.tls);
        } catch (const std::exception& e) {
          return e.what();
        }
      }
      c.tls =
          std::make_unique<beast::ssl_stream<beast::tcp_stream>>(std::move(*c.plain), *tls_ctx_);
      c.plain.reset();
      std::string name = options_.tls.server_name.empty() ? u.host : options_.tls.server_name;
      prepare_client_tls(c.tls->native_handle(), name, options_.tls);
      done = false;
      c.tls->async_handshake(asio::ssl::stream_base::client, [&](boost::system::error_code e) {
        ec = e;
        done = true;
      });
      if (!run_until(done, deadline, c)) return "timed out in TLS handshake with " + u.authority();
      if (ec) return "TLS handshake with " + u.authority() + " failed: " + ec.message();
    }
    return "";
  }

  template <class Body>
  http::request<http::string_body> build(const std::string& method, const Url& u,
                                         const std::string& body, const Headers& headers) {
    http::request<http::string_body> req;
    req.method_string(method);
    req.target(options_.proxy ? u.str() : u.target());
    req.version(11);
    req.set(http::field::host, u.explicit_port ? u.authority() : u.host);
    req.set(http::field::user_agent, "muster");
    for (auto& [n, v] : headers.all()) req.set(n, v);
    req.body() = body;
    if (!body.empty() || method == "PUT" || method == "POST") req.prepare_payload();
    return req;
  }

  // One exchange on a (possibly reused) connection.  `streaming` reads the
  // body piecewise through on_data.
  ClientResult once(const std::string& method, const Url& u, const std::string& body,
                    const Headers& headers, std::optional<Clock::time_point> deadline,
                    const std::function<bool(const Response&)>* on_head,
                    const std::function<bool(std::string_view)>* on_data, bool& retryable) {
    retryable = false;
    std::string key = u.scheme + "://" + u.authority();
    auto& slot = conns_[key];
    bool reused = slot != nullptr;
    if (!slot) {
      slot = std::make_unique<Conn>();
      if (auto err = connect(*slot, u, deadline); !err.empty()) {
        conns_.erase(key);
        return {std::nullopt, err};
      }
    }
    Conn& c = *slot;
    auto req = build<http::string_body>(method, u, body, headers);
    boost::system::error_code ec;
    bool done = false;
    auto on_done = [&](boost::system::error_code e, std::size_t) {
      ec = e;
      done = true;
    };
    if (c.tls)
      http::async_write(*c.tls, req, on_done);
    else
      http::async_write(*c.plain, req, on_done);
    if (!run_until(done, deadline, c)) {
      conns_.erase(key);
      return {std::nullopt, "timed out sending request to " + u.authority()};
    }
    if (ec) {
      conns_.erase(key);
      retryable = reused;  // a stale keep-alive connection: try a fresh one
      return {std::nullopt, "cannot send request to " + u.authority() + ": " + ec.message()};
    }

    Response out;
    if (on_data) {
      http::response_parser<http::buffer_body> p;
      // No limit, spelled as the largest value: Boost 1.74's parser compares
      // a Content-Length against an empty optional as "over the limit", so
      // boost::none rejects every streamed response that has a length.
      p.body_limit(std::numeric_limits<std::uint64_t>::max());
      done = false;
      if (c.tls)
        http::async_read_header(*c.tls, c.buffer, p, on_done);
      else
        http::async_read_header(*c.plain, c.buffer, p, on_done);
      if (!run_until(done, deadline, c)) {
        conns_.erase(key);
        return {std::nullopt, "timed out waiting for a response from " + u.authority()};
      }
      if (ec) {
        conns_.erase(key);
        retryable = reused && ec == http::error::end_of_stream;
        return {std::nullopt, "no response from " + u.authority() + ": " + ec.message()};
      }
      out.status = static_cast<int>(p.get().result_int());
      for (auto& f : p.get()) out.headers.add(std::string(f.name_string()), std::string(f.value()));
      if (on_head && *on_head && !(*on_head)(out)) {
        conns_.erase(key);
        return {out, ""};
      }
      char buf[16384];
      while (!p.is_done()) {
        p.get().body().data = buf;
        p.get().body().size = sizeof buf;
        done = false;
        if (c.tls)
          http::async_read_some(*c.tls, c.buffer, p, on_done);
        else
          http::async_read_some(*c.plain, c.buffer, p, on_done);
        if (!run_until(done, deadline, c)) {
          conns_.erase(key);
          return {out, ""};  // deadline reached mid-stream: the head stands
        }
        if (ec == http::error::need_buffer) ec = {};
        if (ec) {
          conns_.erase(key);
          return {std::nullopt, "stream from " + u.authority() + " broke: " + ec.message()};
        }
        std::size_t n = sizeof buf - p.get().body().size;
        if (n > 0 && !(*on_data)(std::string_view(buf, n))) {
          conns_.erase(key);
          return {out, ""};
        }
      }
      if (!p.keep_alive()) conns_.erase(key);
      return {out, ""};
    }

    http::response_parser<http::string_body> p;
    p.body_limit(options_.body_limit);
    if (method == "HEAD") p.skip(true);
    done = false;
    if (c.tls)
      http::async_read(*c.tls, c.buffer, p, on_done);
    else
      http::async_read(*c.plain, c.buffer, p, on_done);
    if (!run_until(done, deadline, c)) {
      conns_.erase(key);
      return {std::nullopt, "timed out waiting for a response from " + u.authority()};
    }
    if (ec) {
      conns_.erase(key);
      retryable = reused && (ec == http::error::end_of_stream || ec == asio::error::eof ||
                             ec == asio::error::connection_reset);
      return {std::nullopt, "no response from " + u.authority() + ": " + ec.message()};
    }
    auto msg = p.release();
    out.status = static_cast<int>(msg.result_int());
    for (auto& f : msg) out.headers.add(std::string(f.name_string()), std::string(f.value()));
    out.body = std::move(msg.body());
    if (!msg.keep_alive()) conns_.erase(key);
    return {std::move(out), ""};
  }

  ClientResult call(const std::string& method, const std::string& url, const std::string& body,
                    const Headers& headers, std::optional<Clock::time_point> deadline,
                    const std::function<bool(const Response&)>* on_head,
                    const std::function<bool(std::string_view)>* on_data) {
    std::string err;
    auto u = parse_url(url, &err);
    if (!u) return {std::nullopt, err};
    for (int redirects = 0;; ++redirects) {
      bool retryable = false;
      auto r = once(method, *u, body, headers, deadline, on_head, on_data, retryable);
      if (!r.ok() && retryable)
        r = once(method, *u, body, headers, deadline, on_head, on_data, retryable);
      if (!r.ok() || on_data) return r;
      int s = r.response->status;
      auto loc = r.response->headers.get("Location");
      if ((s == 301 || s == 302 || s == 303 || s == 307 || s == 308) && loc &&
          redirects < options_.max_redirects) {
        std::string next = *loc;
        if (!next.empty() && next[0] == '/') next = u->origin() + next;
        auto nu = parse_url(next, &err);
        if (!nu) return r;
        u = nu;
        continue;
      }
      return r;
    }
  }
};

HttpClient::HttpClient(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
HttpClient::~HttpClient() = default;
HttpClient::HttpClient(HttpClient&&) noexcept = default;
HttpClient& HttpClient::operator=(HttpClient&&) noexcept = default;

ClientResult HttpClient::request(const std::string& method, const std::string& url,
                                 const std::string& body, const Headers& headers) {
  return impl_->call(method, url, body, headers, Clock::now() + impl_->options_.timeout, nullptr,
                     nullptr);
}

ClientResult HttpClient::stream(const std::string& method, const std::string& url,
                                const std::string& body, const Headers& headers,
                                const std::function<bool(const Response&)>& on_head,
                                const std::function<bool(std::string_view)>& on_data,
                                std::optional<std::chrono::milliseconds> timeout) {
  std::optional<Clock::time_point> deadline;
  if (timeout) deadline = Clock::now() + *timeout;
  return impl_->call(method, url, body, headers, deadline, &on_head, &on_data);
}

void HttpClient::close() { impl_->conns_.clear(); }

}  // namespace muster::net
