// net/client.cpp: see client.h.
#include "net/client.h"

#include <boost/asio/io_context.hpp>
#include <utility>

namespace muster::net {

class HttpClient::Impl {
 public:
  explicit Impl(ClientOptions o) : client_(io_.get_executor(), std::move(o)) {}

  // Starts one call with `start` and runs the io_context until it is done.
  template <class Start>
  ClientResult run(Start&& start) {
    std::optional<ClientResult> out;
    start([&out](ClientResult r) { out = std::move(r); });
    io_.restart();
    while (!out && io_.run_one() > 0) {
    }
    io_.poll();  // what the call left ready (timer cancellations)
    if (!out) return ClientResult{std::nullopt, "the call never completed"};
    return std::move(*out);
  }

  boost::asio::io_context io_;  // declared first: the client's calls run on it
  AsyncHttpClient client_;
};

HttpClient::HttpClient(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
HttpClient::~HttpClient() = default;
HttpClient::HttpClient(HttpClient&&) noexcept = default;
HttpClient& HttpClient::operator=(HttpClient&&) noexcept = default;

ClientResult HttpClient::request(const std::string& method, const std::string& url,
                                 const std::string& body, const Headers& headers) {
  ClientRequest req{method, url, body, headers};
  return impl_->run([&](ClientHandler done) { impl_->client_.request(req, std::move(done)); });
}

ClientResult HttpClient::stream(const std::string& method, const std::string& url,
                                const std::string& body, const Headers& headers,
                                const std::function<bool(const Response&)>& on_head,
                                const std::function<bool(std::string_view)>& on_data,
                                std::optional<std::chrono::milliseconds> timeout) {
  ClientRequest req{method, url, body, headers};
  req.timeout = timeout.value_or(std::chrono::milliseconds(0));
  StreamHandlers h;
  h.on_head = [&on_head](const Response& head, std::optional<uint64_t>, bool) {
    return !on_head || on_head(head);
  };
  h.on_data = [&on_data](std::string_view d) { return !on_data || on_data(d); };
  return impl_->run(
      [&](ClientHandler done) { impl_->client_.stream(req, std::move(h), std::move(done)); });
}

void HttpClient::close() { impl_->client_.close_idle(); }

}  // namespace muster::net
