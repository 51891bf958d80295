// `musterctl discovery`: the operator's side of a discovery token.
//   new   ask a discovery service (muster-discovery, discovery.etcd.io) for a token
//   show  the token's size and registrations, and whether the cluster is complete
//   rm    remove one registration, so a bootstrap that failed halfway can be
//         retried on the same token
// It speaks the same v2 keys API the members do (node/bootstrap/discovery.h),
// so it works on any discovery URL a member accepts.
//
// With --v3, the token is etcd 3.6's v3 discovery token: keys under
// /_etcd/registry/<token> in an etcd v3 cluster (node/bootstrap/discovery_v3.h).
//   new --v3   writes the size key through musterctl's own client (the
//              --endpoints and TLS global flags), only if it does not exist
//   show --v3  reads the token over gRPC as the members do
#include <openssl/rand.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <ostream>

#include "ctl/client.h"
#include "ctl/command.h"
#include "ctl/command_support.h"
#include "ctl/flags.h"
#include "etcdwire/v3_json.h"
#include "net/client.h"
#include "net/url.h"
#include "node/bootstrap/discovery.h"
#include "node/bootstrap/discovery_v3.h"

namespace muster::ctl {
namespace {

using nlohmann::ordered_json;

// muster-discovery's default --listen-url (discovery/main.cpp).
constexpr const char* kDefaultEndpoint = "http://127.0.0.1:8087";

int bad_args(std::ostream& err, const std::string& message) {
  err << "Error: " << message << "\nRun 'musterctl discovery --help' for usage.\n";
  return kExitBadArgs;
}

bool json_output(const Flags& flags, std::string* error) {
  std::string w = flags.is_set("w") ? flags.get("w") : flags.get("write-out");
  if (w == "simple") return false;
  if (w == "json") return true;
  *error = "--write-out: want simple or json, got \"" + w + "\"";
  return false;
}

void add_common(Flags& flags) {
  flags.add_string("write-out", "simple");
  flags.add_string("w", "simple");
  flags.add_string("discovery-proxy", "");
  flags.add_string("timeout", "5000");
}

bootstrap::DiscoveryOptions options_for(const std::string& url, const Flags& flags) {
  bootstrap::DiscoveryOptions o;
  o.url = url;
  o.proxy = flags.get("discovery-proxy");
  o.max_retries = 2;  // an operator at a terminal wants an answer soon
  int ms = 5000;
  const std::string& t = flags.get("timeout");
  std::from_chars(t.data(), t.data() + t.size(), ms);
  o.request_timeout = std::chrono::milliseconds(ms > 0 ? ms : 5000);
  return o;
}

bool has_v3(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--") break;
    if (a == "--v3" || a == "-v3" || a == "--v3=true") return true;
  }
  return false;
}

std::string random_token() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) return "";
  static constexpr char kHex[] = "0123456789abcdef";
  std::string t;
  for (unsigned char b : bytes) {
    t += kHex[b >> 4];
    t += kHex[b & 15];
  }
  return t;
}

// `discovery new --v3 [--size N] [--token T]`: the size key, created only if
// absent (a Txn comparing its version with 0), so an existing token is never
// resized under its members' feet.
int run_new_v3(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  flags.add_bool("v3");
  flags.add_string("size", "3");
  flags.add_string("token", "");
  GlobalOptions options;
  if (auto code = parse_command_line("discovery", args, flags, options, err)) return *code;
  if (!flags.positional().empty()) return bad_args(err, "discovery new takes no arguments");
  if (options.write_out == OutputFormat::kTable) return unsupported_format(err, options.write_out);
  const std::string& size_text = flags.get("size");
  int size = 0;
  auto [end, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
  if (ec != std::errc() || end != size_text.data() + size_text.size() || size < 1)
    return bad_args(err, "--size: want a positive number, got \"" + size_text + "\"");
  std::string token = flags.get("token");
  if (token.empty()) token = random_token();
  if (token.empty() || token.find_first_of("/ \t\r\n,") != std::string::npos)
    return bad_args(err, "--token: want a token without '/', ',' or spaces, got \"" + token + "\"");
  const std::string key = bootstrap::v3_size_key(token);
  const std::string k64 = etcdwire::base64_encode(key);
  nlohmann::ordered_json req = {
      {"compare", {{{"key", k64}, {"result", "EQUAL"}, {"target", "VERSION"}, {"version", "0"}}}},
      {"success",
       {{{"request_put",
          {{"key", k64}, {"value", etcdwire::base64_encode(std::to_string(size))}}}}}},
      {"failure", {{{"request_range", {{"key", k64}}}}}}};
  Client client(options);
  const Reply reply = client.call("/v3/kv/txn", req);
  if (!reply.ok()) return request_failed(err, reply);
  if (!reply.body.value("succeeded", false)) {
    std::string existing = "?";
    try {
      existing = etcdwire::base64_decode(reply.body.at("responses")
                                             .at(0)
                                             .at("response_range")
                                             .at("kvs")
                                             .at(0)
                                             .at("value")
                                             .get<std::string>())
                     .value_or("?");
    } catch (const std::exception&) {
    }
    err << "Error: token " << token << " already exists at " << reply.endpoint << " (" << key
        << " = " << existing << "); choose another --token\n";
    return kExitError;
  }
  std::vector<std::string> eps;
  for (const auto& e : options.endpoints) eps.push_back(endpoint_url(e, options));
  std::string joined;
  for (size_t i = 0; i < eps.size(); ++i) joined += (i ? "," : "") + eps[i];
  const std::string member_flags =
      "--discovery-token=" + token + " --discovery-endpoints=" + joined;
  if (options.write_out == OutputFormat::kJson) {
    nlohmann::ordered_json j = {{"token", token},
                                {"size", size},
                                {"sizeKey", key},
                                {"endpoints", eps},
                                {"memberFlags", member_flags}};
    out << json_text(j) << "\n";
    return kExitSuccess;
  }
  out << token << "\n" << member_flags << "\n";
  return kExitSuccess;
}

int run_new(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (has_v3(args)) return run_new_v3(args, out, err);
  Flags flags;
  flags.add_string("size", "3");
  flags.add_string("endpoint", kDefaultEndpoint);
  if (auto e = flags.parse(args)) return bad_args(err, *e);
  if (!flags.positional().empty()) return bad_args(err, "discovery new takes no arguments");
  const std::string& size_text = flags.get("size");
  int size = 0;
  auto [end, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
  if (ec != std::errc() || end != size_text.data() + size_text.size() || size < 1)
    return bad_args(err, "--size: want a positive number, got \"" + size_text + "\"");
  std::string endpoint = flags.get("endpoint");
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  std::string perr;
  if (!net::parse_url(endpoint, &perr)) return bad_args(err, "--endpoint: " + perr);
  net::HttpClient client;
  auto r = client.request("PUT", endpoint + "/new?size=" + std::to_string(size));
  if (!r.ok()) {
    err << "Error: " << r.error << "\n";
    return kExitError;
  }
  std::string body = r.response->body;
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
  if (r.response->status != 201 && r.response->status != 200) {
    err << "Error: " << endpoint << "/new answered " << r.response->status << ": " << body << "\n";
    return kExitError;
  }
  out << body << "\n";
  return kExitSuccess;
}

int print_token(ordered_json head, const bootstrap::TokenState& st, bool as_json,
                std::ostream& out);
int run_show_v3(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

int run_show(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (has_v3(args)) return run_show_v3(args, out, err);
  Flags flags;
  add_common(flags);
  if (auto e = flags.parse(args)) return bad_args(err, *e);
  if (flags.positional().size() != 1) return bad_args(err, "discovery show needs one token URL");
  std::string werr;
  bool as_json = json_output(flags, &werr);
  if (!werr.empty()) return bad_args(err, werr);
  const std::string& url = flags.positional()[0];
  std::string perr;
  if (!bootstrap::parse_discovery_url(url, &perr)) return bad_args(err, perr);
  bootstrap::DiscoveryClient client(options_for(url, flags));
  bootstrap::TokenState st;
  if (auto f = client.state(&st)) {
    err << "Error: " << f->message << "\n";
    return kExitError;
  }
  return print_token(ordered_json{{"url", url}}, st, as_json, out);
}

// `discovery show --v3 --token T [--endpoints ...]`: the token read over
// gRPC exactly as members read it (create-revision order).
int run_show_v3(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  flags.add_bool("v3");
  flags.add_string("token", "");
  GlobalOptions options;
  if (auto code = parse_command_line("discovery", args, flags, options, err)) return *code;
  if (!flags.positional().empty()) return bad_args(err, "discovery show --v3 takes no arguments");
  if (flags.get("token").empty()) return bad_args(err, "discovery show --v3 needs --token");
  if (options.write_out == OutputFormat::kTable) return unsupported_format(err, options.write_out);
  bootstrap::DiscoveryV3Options o;
  o.token = flags.get("token");
  for (const auto& e : options.endpoints) o.endpoints.push_back(endpoint_url(e, options));
  o.dial_timeout = options.dial_timeout;
  o.request_timeout = options.command_timeout;
  o.cacert = options.cacert;
  o.cert = options.cert;
  o.key = options.key;
  o.insecure_skip_tls_verify = options.insecure_skip_tls_verify;
  o.max_retries = 0;  // an operator at a terminal wants an answer now
  bootstrap::DiscoveryV3Client client(o);
  bootstrap::TokenState st;
  if (auto f = client.state(&st)) {
    err << "Error: " << f->message << "\n";
    return kExitError;
  }
  return print_token(ordered_json{{"token", o.token}, {"endpoints", o.endpoints}}, st,
                     options.write_out == OutputFormat::kJson, out);
}

// The token's size and registrations; `head` names the token (JSON fields).
int print_token(ordered_json head, const bootstrap::TokenState& st, bool as_json,
                std::ostream& out) {
  const uint64_t n = st.members.size();
  const bool complete = n >= st.size;
  if (as_json) {
    ordered_json j = std::move(head);
    j["size"] = st.size;
    j["members"] = ordered_json::array();
    for (uint64_t i = 0; i < n; ++i) {
      const auto& m = st.members[i];
      std::vector<std::pair<std::string, std::string>> pairs;
      ordered_json e;
      e["id"] = m.id;
      e["value"] = m.value;
      if (bootstrap::parse_registration(m.value, &pairs)) {
        e["name"] = pairs.front().first;
        e["peerURLs"] = ordered_json::array();
        for (auto& [name, u] : pairs) e["peerURLs"].push_back(u);
      }
      e["createdIndex"] = m.created_index;
      e["inCluster"] = i < st.size;
      j["members"].push_back(e);
    }
    j["complete"] = complete;
    j["waitingFor"] = complete ? 0 : st.size - n;
    out << json_text(j) << "\n";
    return kExitSuccess;
  }
  out << "size: " << st.size << "\n";
  out << "registered: " << n << "\n";
  for (uint64_t i = 0; i < n; ++i) {
    const auto& m = st.members[i];
    std::vector<std::pair<std::string, std::string>> pairs;
    std::string name, urls;
    if (bootstrap::parse_registration(m.value, &pairs)) {
      name = pairs.front().first;
      for (size_t k = 0; k < pairs.size(); ++k) urls += (k ? "," : "") + pairs[k].second;
    } else {
      name = "?";
      urls = m.value;
    }
    out << "  " << m.id << "  " << name << "  " << urls
        << (i < st.size ? "" : "  (late: not in the cluster)") << "\n";
  }
  if (complete)
    out << "complete\n";
  else
    out << "waiting for " << (st.size - n) << " more\n";
  return kExitSuccess;
}

int run_rm(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  add_common(flags);
  if (auto e = flags.parse(args)) return bad_args(err, *e);
  if (flags.positional().size() != 2)
    return bad_args(err, "discovery rm needs a token URL and a member ID");
  const std::string& url = flags.positional()[0];
  const std::string& id = flags.positional()[1];
  std::string perr;
  if (!bootstrap::parse_discovery_url(url, &perr)) return bad_args(err, perr);
  if (id.empty() || id == "_config" || id.find('/') != std::string::npos)
    return bad_args(err, "\"" + id + "\" is not a member ID");
  bootstrap::DiscoveryClient client(options_for(url, flags));
  if (auto f = client.remove(id)) {
    err << "Error: " << f->message << "\n";
    return kExitError;
  }
  out << "Removed registration " << id << " from " << url << "\n";
  return kExitSuccess;
}

}  // namespace

int run_discovery(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty()) return bad_args(err, "discovery needs a subcommand: new, show or rm");
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "new") return run_new(rest, out, err);
  if (args[0] == "show") return run_show(rest, out, err);
  if (args[0] == "rm") return run_rm(rest, out, err);
  return bad_args(err, "unknown discovery subcommand \"" + args[0] + "\"");
}

}  // namespace muster::ctl
