// net/client.h: a blocking HTTP/1.1 client (plain or TLS) with keep-alive.
//
// Who uses it: musterctl, a member's discovery client, muster-discovery's
// etcd-backed store, tests and benchmarks.  One HttpClient belongs to one
// thread at a time; it keeps one open connection per origin and reuses it.
// Every call has a deadline (ClientOptions::timeout); streaming calls have an
// optional one.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "net/http.h"
#include "net/tls.h"
#include "net/url.h"

namespace muster::net {

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds timeout{5'000};  // whole request, connect included
  TlsOptions tls;                            // used for https URLs
  std::size_t body_limit = 64 * 1024 * 1024;
  int max_redirects = 10;  // 3xx with Location followed, as Go's client does
  // Sends every request to this http proxy (absolute-form targets) instead.
  std::optional<Url> proxy;
};

// The result of a call: a response, or a sentence saying why there is none.
struct ClientResult {
  std::optional<Response> response;
  std::string error;  // set when !response
  bool ok() const { return response.has_value(); }
};

class HttpClient {
 public:
  explicit HttpClient(ClientOptions options = {});
  ~HttpClient();
  HttpClient(HttpClient&&) noexcept;
  HttpClient& operator=(HttpClient&&) noexcept;

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

  // Drops cached connections.
  void close();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace muster::net
