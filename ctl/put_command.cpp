// `musterctl put <key> [value]`: POST /v3/kv/put.  Without a value argument
// the value is read from standard input, as etcdctl does.
#include <iostream>
#include <iterator>

#include "ctl/command.h"
#include "ctl/command_support.h"
#include "ctl/output.h"
#include "etcdwire/ids.h"
#include "etcdwire/v3_json.h"

namespace muster::ctl {

int run_put(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  flags.add_bool("prev-kv");
  flags.add_string("lease", "0");
  GlobalOptions options;
  if (auto code = parse_command_line("put", args, flags, options, err)) return *code;
  const auto& pos = flags.positional();
  if (pos.empty() || pos.size() > 2)
    return bad_args("put", err, "put command needs 1 argument and input from stdin or 2 arguments");
  if (options.write_out == OutputFormat::kTable) return unsupported_format(err, options.write_out);
  const auto lease = etcdwire::parse_hex_id(flags.get("lease"));
  if (!lease)
    return bad_args("put", err, "bad lease ID \"" + flags.get("lease") + "\", expecting ID in hex");

  std::string value;
  if (pos.size() == 2) {
    value = pos[1];
  } else {
    value.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  nlohmann::ordered_json request = {{"key", etcdwire::base64_encode(pos[0])},
                                    {"value", etcdwire::base64_encode(value)}};
  if (*lease != 0) request["lease"] = std::to_string(*lease);
  if (flags.get_bool("prev-kv")) request["prev_kv"] = true;

  Client client(options);
  const Reply reply = client.call("/v3/kv/put", request);
  if (!reply.ok()) return request_failed(err, reply);
  print_put(reply.body, options.write_out, out);
  return kExitSuccess;
}

}  // namespace muster::ctl
