// `musterctl del <key> [range_end]`: POST /v3/kv/deleterange; prints the
// number of keys deleted.
#include <ostream>

#include "ctl/command.h"
#include "ctl/command_support.h"
#include "ctl/output.h"

namespace muster::ctl {

int run_del(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  flags.add_bool("prefix");
  flags.add_bool("prev-kv");
  flags.add_bool("from-key");
  GlobalOptions options;
  if (auto code = parse_command_line("del", args, flags, options, err)) return *code;
  const auto& pos = flags.positional();
  if (pos.empty() || pos.size() > 2)
    return bad_args("del", err,
                    "del command needs one argument as key and an optional argument as range_end");
  if (flags.get_bool("prefix") && (flags.get_bool("from-key") || pos.size() == 2))
    return bad_args("del", err, "--prefix takes no range_end and excludes --from-key");
  if (options.write_out == OutputFormat::kTable) return unsupported_format(err, options.write_out);

  nlohmann::ordered_json request = range_request(key_range(flags, true));
  if (flags.get_bool("prev-kv")) request["prev_kv"] = true;

  Client client(options);
  const Reply reply = client.call("/v3/kv/deleterange", request);
  if (!reply.ok()) return request_failed(err, reply);
  print_del(reply.body, options.write_out, out);
  return kExitSuccess;
}

}  // namespace muster::ctl
