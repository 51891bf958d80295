// `musterctl endpoint health|status [--cluster]`: asks every endpoint (or,
// with --cluster, every member's client URLs from the member list).
//
// health is etcdctl's check: a linearizable range of the key "health", which
// needs a leader and a quorum; it answers in the time it took.  status is
// /v3/maintenance/status.
#include <chrono>
#include <ostream>

#include "ctl/command.h"
#include "ctl/command_support.h"
#include "ctl/output.h"
#include "etcdwire/v3_json.h"

namespace muster::ctl {
namespace {

using json = nlohmann::ordered_json;

}  // namespace

int run_endpoint(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  flags.add_bool("cluster");
  GlobalOptions options;
  if (auto code = parse_command_line("endpoint", args, flags, options, err)) return *code;
  const auto& pos = flags.positional();
  if (pos.size() != 1 || (pos[0] != "health" && pos[0] != "status"))
    return bad_args("endpoint", err, "endpoint needs one subcommand: health or status");
  Client client(options);

  std::vector<std::string> endpoints = options.endpoints;
  if (flags.get_bool("cluster")) {
    const Reply reply = client.call("/v3/cluster/member/list", json::object());
    if (!reply.ok()) return request_failed(err, reply);
    endpoints.clear();
    for (const json& m : reply.body.value("members", json::array()))
      for (const json& u : m.value("clientURLs", json::array()))
        endpoints.push_back(u.get<std::string>());
  }

  if (pos[0] == "health") {
    std::vector<EndpointHealth> results;
    bool all_healthy = true;
    const json request = {{"key", etcdwire::base64_encode("health")}};
    for (const std::string& ep : endpoints) {
      EndpointHealth h;
      h.endpoint = ep;
      const auto start = std::chrono::steady_clock::now();
      const Reply reply = client.call_at(ep, "POST", "/v3/kv/range", &request);
      h.took = std::chrono::steady_clock::now() - start;
      // A permission error still proves the member commits proposals.
      h.healthy = reply.ok() || reply.error.find("permission denied") != std::string::npos;
      if (!h.healthy) h.error = reply.error;
      all_healthy = all_healthy && h.healthy;
      results.push_back(std::move(h));
    }
    print_endpoint_health(results, options.write_out, out, err);
    if (!all_healthy) {
      err << "Error: unhealthy cluster\n";
      return kExitError;
    }
    return kExitSuccess;
  }

  std::vector<EndpointStatus> statuses;
  bool failed = false;
  const json empty = json::object();
  for (const std::string& ep : endpoints) {
    const Reply reply = client.call_at(ep, "POST", "/v3/maintenance/status", &empty);
    if (!reply.ok()) {
      err << "Failed to get the status of endpoint " << ep << " (" << reply.error << ")\n";
      failed = true;
      continue;
    }
    statuses.push_back({ep, reply.body});
  }
  print_endpoint_status(statuses, options.write_out, out);
  return failed ? kExitError : kExitSuccess;
}

}  // namespace muster::ctl
