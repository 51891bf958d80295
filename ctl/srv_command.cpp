// `musterctl srv`: what a member started with --discovery-srv would build
// from DNS right now, or the error it would stop with.  Operators run it to
// check records before starting members.
#include <charconv>
#include <ostream>

#include "ctl/client.h"
#include "ctl/command.h"
#include "ctl/flags.h"
#include "dns/srv_lookup.h"

namespace muster::ctl {
namespace {

int bad_args(std::ostream& err, const std::string& message) {
  err << "Error: " << message << "\nRun 'musterctl srv --help' for usage.\n";
  return kExitBadArgs;
}

}  // namespace

int run_srv(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  dns::SrvClusterRequest defaults;
  flags.add_string("name", defaults.member_name);
  flags.add_string("initial-advertise-peer-urls", defaults.advertise_peer_urls);
  flags.add_string("discovery-srv-name", "");
  flags.add_string("dns-server", "");
  flags.add_string("dns-timeout", "2s");
  flags.add_string("dns-tries", std::to_string(defaults.resolver.tries));
  flags.add_bool("client");
  if (auto e = flags.parse(args)) return bad_args(err, *e);
  if (flags.positional().size() != 1)
    return bad_args(err, flags.positional().empty()
                             ? "srv needs a domain"
                             : "srv takes one domain, got " +
                                   std::to_string(flags.positional().size()) + " arguments");

  dns::ResolverOptions resolver;
  resolver.server = flags.get("dns-server");
  const auto timeout = parse_duration(flags.get("dns-timeout"));
  if (!timeout) return bad_args(err, "--dns-timeout: want a duration like 500ms or 2s");
  resolver.timeout = *timeout;
  int tries = 0;
  const std::string& tries_text = flags.get("dns-tries");
  const auto [end, ec] =
      std::from_chars(tries_text.data(), tries_text.data() + tries_text.size(), tries);
  if (ec != std::errc() || end != tries_text.data() + tries_text.size() || tries < 1 || tries > 10)
    return bad_args(err, "--dns-tries: want a number from 1 to 10");
  resolver.tries = tries;
  if (!resolver.server.empty()) {
    if (auto s = dns::parse_dns_server(resolver.server); !s)
      return bad_args(err, "--dns-server: " + s.error().message);
  }

  const std::string& domain = flags.positional().front();
  if (flags.get_bool("client")) {
    dns::SrvClientRequest request;
    request.domain = domain;
    request.srv_name = flags.get("discovery-srv-name");
    request.resolver = resolver;
    auto result = dns::resolve_client_endpoints(request);
    if (!result) {
      err << "Error: " << result.error().message << "\n";
      return kExitError;
    }
    for (const auto& w : result->warnings) err << "warning: " << w << "\n";
    for (const auto& e : result->endpoints) out << e << "\n";
    return kExitSuccess;
  }

  dns::SrvClusterRequest request;
  request.domain = domain;
  request.srv_name = flags.get("discovery-srv-name");
  request.member_name = flags.get("name");
  request.advertise_peer_urls = flags.get("initial-advertise-peer-urls");
  request.resolver = resolver;
  auto result = dns::resolve_server_cluster(request);
  if (!result) {
    err << "Error: " << result.error().message << "\n";
    return kExitError;
  }
  for (const auto& w : result->warnings) err << "warning: " << w << "\n";
  if (auto server_name = result->peer_tls_server_name(false)) {
    err << "note: unless --peer-trusted-ca-file is set, peers verify each other's certificates "
           "against \""
        << *server_name << "\" (it must be a DNS SAN of every peer certificate)\n";
  }
  out << result->initial_cluster << "\n";
  return kExitSuccess;
}

}  // namespace muster::ctl
