// net/client.h: the HTTP client for code that may block: net::AsyncHttpClient
// (net/http_client.h) driven to completion on a private io_context, one call
// at a time.
//
// Who uses it: musterctl, a member's discovery bootstrap (it runs before the
// member's event loop exists), tests and benchmarks.  Code that runs on an
// event loop uses AsyncHttpClient directly.  One HttpClient belongs to one
// thread at a time; idle keep-alive connections are reused across calls.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "net/http.h"
#include "net/http_client.h"

namespace muster::net {

class HttpClient {
 public:
  explicit HttpClient(ClientOptions options = {});
  ~HttpClient();
  HttpClient(HttpClient&&) noexcept;
  HttpClient& operator=(HttpClient&&) noexcept;

  // One call, bounded by ClientOptions::timeout.
  ClientResult request(const std::string& method, const std::string& url,
                       const std::string& body = "", const Headers& headers = {});
  ClientResult get(const std::string& url) { return request("GET", url); }

  // Streams a response body: `on_head` sees status and headers (return false
  // to stop), then `on_data` each piece of body as it arrives (return false to
  // stop).  Returns the head (body empty) or an error.  `timeout` bounds the
  // whole call; nullopt = no deadline.
  ClientResult stream(const std::string& method, const std::string& url, const std::string& body,
                      const Headers& headers, const std::function<bool(const Response&)>& on_head,
                      const std::function<bool(std::string_view)>& on_data,
                      std::optional<std::chrono::milliseconds> timeout);

  // Drops idle connections.
  void close();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace muster::net
