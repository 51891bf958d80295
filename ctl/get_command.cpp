// `musterctl get <key> [range_end]`: POST /v3/kv/range, with --prefix,
// --keys-only, --rev, --limit as etcdctl takes them.
#include <ostream>

#include "ctl/command.h"
#include "ctl/command_support.h"
#include "ctl/output.h"

namespace muster::ctl {

int run_get(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  flags.add_bool("prefix");
  flags.add_bool("keys-only");
  flags.add_bool("from-key");
  flags.add_string("rev", "0");
  flags.add_string("limit", "0");
  GlobalOptions options;
  if (auto code = parse_command_line("get", args, flags, options, err)) return *code;
  const auto& pos = flags.positional();
  if (pos.empty() || pos.size() > 2)
    return bad_args("get", err,
                    "get command needs one argument as key and an optional argument as range_end");
  if (flags.get_bool("prefix") && (flags.get_bool("from-key") || pos.size() == 2))
    return bad_args("get", err, "--prefix takes no range_end and excludes --from-key");
  if (options.write_out == OutputFormat::kTable) return unsupported_format(err, options.write_out);
  int64_t rev = 0, limit = 0;
  try {
    rev = std::stoll(flags.get("rev"));
    limit = std::stoll(flags.get("limit"));
  } catch (const std::exception&) {
    return bad_args("get", err, "--rev and --limit take numbers");
  }
  if (rev < 0 || limit < 0) return bad_args("get", err, "--rev and --limit cannot be negative");

  nlohmann::ordered_json request = range_request(key_range(flags, true));
  if (rev > 0) request["revision"] = std::to_string(rev);
  if (limit > 0) request["limit"] = std::to_string(limit);
  if (flags.get_bool("keys-only")) request["keys_only"] = true;

  Client client(options);
  const Reply reply = client.call("/v3/kv/range", request);
  if (!reply.ok()) return request_failed(err, reply);
  print_get(reply.body, options.write_out, out);
  return kExitSuccess;
}

}  // namespace muster::ctl
