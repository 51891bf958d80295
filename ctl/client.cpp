#include "ctl/client.h"

#include <termios.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "etcdwire/durations.h"

namespace muster::ctl {
namespace {

using json = nlohmann::ordered_json;

constexpr std::string_view kDefaultEndpoint = "127.0.0.1:2379";

// Flag name -> environment suffix: "dial-timeout" -> "DIAL_TIMEOUT".
std::string env_suffix(std::string_view flag) {
  std::string s;
  for (char c : flag) s += c == '-' ? '_' : static_cast<char>(std::toupper(c));
  return s;
}

// The value of a global flag: command line, MUSTERCTL_*, ETCDCTL_*, default.
std::string global_value(const Flags& flags, const EnvLookup& env, const std::string& name) {
  if (flags.is_set(name)) return flags.get(name);
  for (const char* prefix : {"MUSTERCTL_", "ETCDCTL_"}) {
    if (auto v = env(prefix + env_suffix(name))) return *v;
  }
  return flags.get(name);
}

std::vector<std::string> split_endpoints(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    std::string_view part = text.substr(0, comma);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    while (!part.empty() && part.back() == ' ') part.remove_suffix(1);
    if (!part.empty()) out.emplace_back(part);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

// etcd's texts of the refusals clientv3 answers by authenticating again.
constexpr std::string_view kInvalidAuthToken = "etcdserver: invalid auth token";
constexpr std::string_view kAuthOldRevision = "etcdserver: revision of auth store is old";
constexpr std::string_view kAuthNotEnabled = "etcdserver: authentication is not enabled";

net::ClientOptions client_options(const GlobalOptions& o) {
  net::ClientOptions c;
  c.connect_timeout = o.dial_timeout;
  c.timeout = o.command_timeout;
  c.tls.trusted_ca_file = o.cacert;
  c.tls.cert_file = o.cert;
  c.tls.key_file = o.key;
  c.tls.insecure_skip_verify = o.insecure_skip_tls_verify;
  c.max_redirects = 0;
  return c;
}

}  // namespace

const std::string_view kGlobalFlagsUsage = R"(
Global flags (also read from MUSTERCTL_<FLAG> or ETCDCTL_<FLAG>, e.g.
MUSTERCTL_ENDPOINTS, ETCDCTL_CACERT; a flag beats the environment):
  --endpoints <list>              comma-separated member client URLs or host:port,
                                  tried in order (default "127.0.0.1:2379")
  --cacert <file>                 verify members with this CA bundle
  --cert <file>, --key <file>     present this client certificate
  --insecure-skip-tls-verify      do not verify the member's certificate
  --dial-timeout <duration>       connect timeout per endpoint (default 2s)
  --command-timeout <duration>    timeout of one request (default 5s)
  -w, --write-out <format>        simple, json or table (default simple)
  --user <name[:password]>        authenticate as this user (asks for the
                                  password when it is not given)
  --password <password>           the password (then --user is the name alone)
)";

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    if (const char* v = std::getenv(name.c_str())) return std::string(v);
    return std::nullopt;
  };
}

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  const auto d = etcdwire::parse_go_duration(text);
  if (!d || d->count() <= 0 || *d > std::chrono::hours(24)) return std::nullopt;
  return std::chrono::ceil<std::chrono::milliseconds>(*d);
}

void declare_global_flags(Flags& flags) {
  flags.add_string("endpoints", std::string(kDefaultEndpoint));
  flags.add_string("cacert", "");
  flags.add_string("cert", "");
  flags.add_string("key", "");
  flags.add_bool("insecure-skip-tls-verify");
  flags.add_string("dial-timeout", "2s");
  flags.add_string("command-timeout", "5s");
  flags.add_string("write-out", "simple");
  flags.add_string("w", "");  // -w, the short form of --write-out
  flags.add_string("user", "");
  flags.add_string("password", "");
}

std::optional<std::string> ask_password() {
  std::cout << "Password: " << std::flush;
  termios saved{};
  const bool tty = ::isatty(STDIN_FILENO) == 1 && ::tcgetattr(STDIN_FILENO, &saved) == 0;
  if (tty) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  std::string line;
  const bool got = static_cast<bool>(std::getline(std::cin, line));
  if (tty) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  std::cout << "\n" << std::flush;
  if (!got) return std::nullopt;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

std::optional<std::string> read_global_options(const Flags& flags, const EnvLookup& env,
                                               GlobalOptions* o) {
  o->endpoints = split_endpoints(global_value(flags, env, "endpoints"));
  if (o->endpoints.empty()) return "--endpoints: no endpoint given";
  o->cacert = global_value(flags, env, "cacert");
  o->cert = global_value(flags, env, "cert");
  o->key = global_value(flags, env, "key");
  if (o->cert.empty() != o->key.empty()) return "--cert and --key must be given together";
  const std::string insecure = global_value(flags, env, "insecure-skip-tls-verify");
  if (insecure != "true" && insecure != "false")
    return "--insecure-skip-tls-verify takes true or false, not \"" + insecure + "\"";
  o->insecure_skip_tls_verify = insecure == "true";
  for (const auto& [name, field] :
       {std::pair{"dial-timeout", &o->dial_timeout}, {"command-timeout", &o->command_timeout}}) {
    const std::string text = global_value(flags, env, name);
    const auto d = parse_duration(text);
    if (!d)
      return std::string("--") + name + ": want a duration like 500ms or 2s, not \"" + text + "\"";
    *field = *d;
  }
  // etcdctl's rules: with --password, --user is the name alone; without
  // it, "name:password" (split at the first colon) or a name whose password
  // is asked for.
  const std::string user = global_value(flags, env, "user");
  const std::string password = global_value(flags, env, "password");
  o->ask_password = false;
  if (user.empty()) {
    o->user.clear();
    o->password.clear();
  } else if (!password.empty()) {
    o->user = user;
    o->password = password;
  } else if (const auto colon = user.find(':'); colon != std::string::npos) {
    o->user = user.substr(0, colon);
    o->password = user.substr(colon + 1);
  } else {
    o->user = user;
    o->password.clear();
    o->ask_password = true;
  }
  std::string format = flags.is_set("w") ? flags.get("w") : global_value(flags, env, "write-out");
  if (format == "simple") {
    o->write_out = OutputFormat::kSimple;
  } else if (format == "json") {
    o->write_out = OutputFormat::kJson;
  } else if (format == "table") {
    o->write_out = OutputFormat::kTable;
  } else {
    return format + " not supported as output format (want simple, json or table)";
  }
  return std::nullopt;
}

std::string endpoint_url(const std::string& endpoint, const GlobalOptions& options) {
  if (endpoint.rfind("http://", 0) == 0 || endpoint.rfind("https://", 0) == 0) {
    std::string url = endpoint;
    while (!url.empty() && url.back() == '/') url.pop_back();
    return url;
  }
  const bool tls = !options.cacert.empty() || !options.cert.empty();
  return (tls ? "https://" : "http://") + endpoint;
}

std::string gateway_error(const net::Response& response) {
  const json body = json::parse(response.body, nullptr, false);
  if (body.is_object()) {
    for (const char* field : {"message", "error"}) {
      auto it = body.find(field);
      if (it != body.end() && it->is_string() && !it->get<std::string>().empty())
        return it->get<std::string>();
    }
  }
  std::string text = response.body;
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return "HTTP " + std::to_string(response.status) + " " +
         std::string(net::status_reason(response.status)) + (text.empty() ? "" : ": " + text);
}

Client::Client(GlobalOptions options) : options_(std::move(options)) {
  http_.emplace(client_options(options_));
  transport_ = [this](const std::string& method, const std::string& url, const std::string& body,
                      const net::Headers& headers) {
    return http_->request(method, url, body, headers);
  };
}

Client::Client(GlobalOptions options, Transport transport)
    : options_(std::move(options)), transport_(std::move(transport)) {
  http_.emplace(client_options(options_));
}

Reply Client::call_at(const std::string& endpoint, const std::string& method,
                      const std::string& path, const json* request) {
  Reply reply;
  reply.endpoint = endpoint;
  const net::ClientResult r = transport_(method, endpoint_url(endpoint, options_) + path,
                                         request ? json_text(*request) : "", headers());
  if (!r.ok()) {
    reply.error = r.error.empty() ? "request failed" : r.error;
    reply.connection_failed = true;
    return reply;
  }
  if (r.response->status / 100 != 2) {
    reply.error = gateway_error(*r.response);
    return reply;
  }
  reply.body = json::parse(r.response->body, nullptr, false);
  if (reply.body.is_discarded()) reply.error = "member answered " + path + " with malformed JSON";
  return reply;
}

net::Headers Client::headers() const {
  net::Headers h;
  h.set("Content-Type", "application/json");
  if (token_ && !token_->empty()) h.set("Authorization", *token_);
  return h;
}

bool Client::stale_token(const Reply& reply) {
  return !reply.ok() && !reply.connection_failed &&
         (reply.error == kInvalidAuthToken || reply.error == kAuthOldRevision);
}

// clientv3's getToken: any endpoint will do (a token is good on every
// member); a cluster without auth answers "authentication is not enabled",
// and then no token is sent, as clientv3 does.
Reply Client::authenticate() {
  token_.reset();
  const json request = {{"name", options_.user}, {"password", options_.password}};
  Reply r = call_once("/v3/auth/authenticate", request);
  if (!r.ok()) {
    if (r.error == kAuthNotEnabled) {
      token_ = "";
      return {};
    }
    r.connection_failed = true;  // etcdctl exits 2: no client could be made
    return r;
  }
  auto t = r.body.find("token");
  if (t == r.body.end() || !t->is_string()) {
    r.error = "member answered Authenticate without a token";
    r.connection_failed = true;
    return r;
  }
  token_ = t->get<std::string>();
  return {};
}

Reply Client::token(std::string* out) {
  out->clear();
  if (options_.user.empty()) return {};
  if (!token_)
    if (Reply a = authenticate(); !a.ok()) return a;
  *out = *token_;
  return {};
}

Reply Client::call(const std::string& path, const json& request) {
  if (!options_.user.empty() && !token_)
    if (Reply a = authenticate(); !a.ok()) return a;
  Reply r = call_once(path, request);
  if (!options_.user.empty() && stale_token(r)) {
    if (Reply a = authenticate(); !a.ok()) return a;
    r = call_once(path, request);
  }
  return r;
}

Reply Client::call_once(const std::string& path, const json& request) {
  const std::size_t n = options_.endpoints.size();
  std::string failures;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t index = (preferred_ + i) % n;
    Reply reply = call_at(options_.endpoints[index], "POST", path, &request);
    if (!reply.connection_failed) {
      preferred_ = index;
      return reply;
    }
    failures += (failures.empty() ? "" : "; ") + reply.endpoint + ": " + reply.error;
  }
  Reply reply;
  reply.connection_failed = true;
  reply.error = "no endpoint could be reached (" + failures + ")";
  return reply;
}

Reply Client::stream(const std::string& path, const json& request,
                     const std::function<bool(const json&)>& on_result) {
  if (!options_.user.empty() && !token_)
    if (Reply a = authenticate(); !a.ok()) return a;
  bool delivered = false;
  const auto counted = [&](const json& r) {
    delivered = true;
    return on_result(r);
  };
  Reply r = stream_once(path, request, counted);
  // A stream refused before any result (a watch whose token expired) is
  // opened once more with a fresh token.
  if (!options_.user.empty() && !delivered && stale_token(r)) {
    if (Reply a = authenticate(); !a.ok()) return a;
    r = stream_once(path, request, counted);
  }
  return r;
}

Reply Client::stream_once(const std::string& path, const json& request,
                          const std::function<bool(const json&)>& on_result) {
  const std::size_t n = options_.endpoints.size();
  const std::string body = json_text(request);
  std::string failures;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t index = (preferred_ + i) % n;
    Reply reply;
    reply.endpoint = options_.endpoints[index];
    bool answered = false;
    int status = 0;
    std::string pending;  // bytes after the last complete line
    const auto on_head = [&](const net::Response& head) {
      answered = true;
      status = head.status;
      return true;
    };
    const auto on_data = [&](std::string_view data) {
      pending.append(data);
      if (status != 200) return true;  // collect the error body
      std::size_t start = 0;
      for (std::size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
        std::string_view line(pending.data() + start, nl - start);
        if (line.empty() || line == "\r") continue;
        const json message = json::parse(line, nullptr, false);
        if (!message.is_object()) {
          reply.error = "malformed stream message from " + reply.endpoint;
          return false;
        }
        if (auto e = message.find("error"); e != message.end()) {
          reply.error = e->is_object() && e->contains("message")
                            ? e->value("message", std::string("stream error"))
                            : json_text(*e);
          return false;
        }
        if (auto r = message.find("result"); r != message.end()) {
          if (!on_result(*r)) {
            pending.clear();
            return false;
          }
        }
      }
      pending.erase(0, start);
      return true;
    };
    const net::ClientResult r = http_->stream("POST", endpoint_url(reply.endpoint, options_) + path,
                                              body, headers(), on_head, on_data, std::nullopt);
    if (!answered) {
      failures += (failures.empty() ? "" : "; ") + reply.endpoint + ": " +
                  (r.error.empty() ? "request failed" : r.error);
      continue;
    }
    preferred_ = index;
    if (status != 200) {
      net::Response response;
      response.status = status;
      response.body = pending;
      reply.error = gateway_error(response);
    }
    return reply;
  }
  Reply reply;
  reply.connection_failed = true;
  reply.error = "no endpoint could be reached (" + failures + ")";
  return reply;
}

}  // namespace muster::ctl
