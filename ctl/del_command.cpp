// `musterctl del <key> [range_end]`: POST /v3/kv/deleterange; prints the
// number of keys deleted.
#include <ostream>

#include "ctl/command.h"
#include "ctl/command_support.h"
#include "ctl/output.h"
#include "etcdwire/v3_json.h"

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

  std::string key = pos[0], range_end;
  if (flags.get_bool("prefix")) {
    if (key.empty()) key = std::string(1, '\0');
    range_end = key == std::string(1, '\0') ? key : etcdwire::prefix_end(key);
  } else if (flags.get_bool("from-key")) {
    if (key.empty()) key = std::string(1, '\0');
    range_end = std::string(1, '\0');
  } else if (pos.size() == 2) {
    range_end = pos[1];
  }
  nlohmann::ordered_json request = {{"key", etcdwire::base64_encode(key)}};
  if (!range_end.empty()) request["range_end"] = etcdwire::base64_encode(range_end);
  if (flags.get_bool("prev-kv")) request["prev_kv"] = true;

  Client client(options);
  const Reply reply = client.call("/v3/kv/deleterange", request);
  if (!reply.ok()) return request_failed(err, reply);
  print_del(reply.body, options.write_out, out);
  return kExitSuccess;
}

}  // namespace muster::ctl
