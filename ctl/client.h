// ctl/client.h: how musterctl reaches a cluster.
//
// Global flags every talking command takes (--endpoints, --cacert, --cert,
// --key, --dial-timeout, --command-timeout, --write-out, ...), read from the
// command line first, then MUSTERCTL_<FLAG>, then ETCDCTL_<FLAG>, then the
// default -- so scripts written for etcdctl carry over unchanged.
//
// Client speaks HTTP/1.1 JSON to the etcd v3 gateway routes of a member
// (POST /v3/...).  With --user (etcdctl's `name[:password]`, or --password)
// it authenticates once, before its first request (POST
// /v3/auth/authenticate), and sends the token in the Authorization header
// of every request; a token the members no longer accept ("invalid auth
// token", "revision of auth store is old": expired, or the user's password
// changed) is replaced once and the request repeated, as clientv3 does (the
// member refused the request, so it was not applied).  Endpoints are tried in the order given; a
// request moves on to the next endpoint only when it could not be delivered (connect refused, TLS
// failure, timeout before an answer).  An answer from a member, even an error answer, is final:
// retrying a Put elsewhere could apply it twice.
#pragma once

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ctl/flags.h"
#include "net/client.h"

namespace muster::ctl {

// JSON text for musterctl's requests and output: bytes that are not UTF-8 (a file path,
// say) are written as U+FFFD, as Go's encoding/json does, rather than
// making the writer throw.
template <class Json>
std::string json_text(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// etcdctl's exit code for "could not reach any endpoint".
inline constexpr int kExitBadConnection = 2;

enum class OutputFormat { kSimple, kJson, kTable };

struct GlobalOptions {
  std::vector<std::string> endpoints;  // as written: "127.0.0.1:2379" or "https://h:2379"
  std::string cacert, cert, key;
  bool insecure_skip_tls_verify = false;
  std::chrono::milliseconds dial_timeout{2'000};
  std::chrono::milliseconds command_timeout{5'000};
  OutputFormat write_out = OutputFormat::kSimple;
  // --user name[:password] / --password (etcdctl's rules): empty user = no
  // authentication.  ask_password: --user named no password and --password
  // was not given; the command asks for it (ask_password() below).
  std::string user;
  std::string password;
  bool ask_password = false;
};

// Looks an environment variable up; nullopt when unset.  Tests pass a map.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_env();

// Declares the global flags on `flags` (call before Flags::parse).
void declare_global_flags(Flags& flags);
// Reads the global options after parsing.  Returns an error sentence on a
// bad value (unknown --write-out, malformed duration, empty endpoint list).
std::optional<std::string> read_global_options(const Flags& flags, const EnvLookup& env,
                                               GlobalOptions* options);
// etcdctl's prompt: "Password: " on standard output, then a line read from
// standard input (without echo on a terminal).  nullopt at end of input.
std::optional<std::string> ask_password();
// The help text for the global flags, appended to each command's usage.
extern const std::string_view kGlobalFlagsUsage;

// A positive Go duration of at most 24 hours (etcdwire/durations.h), as
// etcdctl's timeout flags take it ("500ms", "2s", "1.5s", "1m"), rounded up
// to whole milliseconds.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

// The URL for an endpoint: kept when it has a scheme, else https:// when any
// TLS file is configured (as etcdctl decides) and http:// otherwise.
std::string endpoint_url(const std::string& endpoint, const GlobalOptions& options);

// One answer from a member, or why there is none.
struct Reply {
  std::string endpoint;            // the endpoint that answered (or failed last)
  nlohmann::ordered_json body;     // the parsed response when ok (field order kept)
  std::string error;               // set when !ok: gateway message or transport error
  bool connection_failed = false;  // no endpoint could be reached at all
  bool ok() const { return error.empty(); }
};

class Client {
 public:
  // Sends one request to the URL; the real one is net::HttpClient.
  using Transport =
      std::function<net::ClientResult(const std::string& method, const std::string& url,
                                      const std::string& body, const net::Headers& headers)>;

  explicit Client(GlobalOptions options);
  Client(GlobalOptions options, Transport transport);
  // The default transport refers to this object's connection pool.
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const GlobalOptions& options() const { return options_; }

  // POSTs `request` as JSON to `path` (e.g. "/v3/kv/put") on the first
  // endpoint that can be reached, starting with the one that answered last.
  Reply call(const std::string& path, const nlohmann::ordered_json& request);
  // The same against one endpoint only (endpoint health/status).
  Reply call_at(const std::string& endpoint, const std::string& method, const std::string& path,
                const nlohmann::ordered_json* request);

  // The auth token this client sends (authenticating first when --user is
  // set and no token is held yet); "" without --user.  A failure is the
  // Reply of Authenticate: connection_failed (exit 2, as etcdctl) whether
  // the member could not be reached or refused the password.
  Reply token(std::string* out);

  // Streams newline-separated {"result":...} messages from `path` (watch);
  // `on_result` sees each result object and returns false to stop.  Fails
  // over like call() until the first byte of the answer arrives.
  Reply stream(const std::string& path, const nlohmann::ordered_json& request,
               const std::function<bool(const nlohmann::ordered_json&)>& on_result);

 private:
  GlobalOptions options_;
  Transport transport_;
  std::optional<net::HttpClient> http_;  // engaged when transport_ is the real one
  std::size_t preferred_ = 0;            // index of the endpoint that answered last
  std::optional<std::string> token_;     // engaged once authenticated

  Reply authenticate();
  net::Headers headers() const;  // JSON content type and the token
  // A refusal that a fresh token may cure.
  static bool stale_token(const Reply& reply);
  Reply call_once(const std::string& path, const nlohmann::ordered_json& request);
  Reply stream_once(const std::string& path, const nlohmann::ordered_json& request,
                    const std::function<bool(const nlohmann::ordered_json&)>& on_result);
};

// The error sentence of a gateway error body ({"error":..,"message":..}), or
// of a non-JSON answer with its HTTP status.
std::string gateway_error(const net::Response& response);

}  // namespace muster::ctl
