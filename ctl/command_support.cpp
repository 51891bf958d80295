#include "ctl/command_support.h"

#include <ostream>

#include "ctl/command.h"
#include "etcdwire/v3_json.h"

namespace muster::ctl {

std::optional<int> parse_command_line(std::string_view command,
                                      const std::vector<std::string>& args, Flags& flags,
                                      GlobalOptions& options, std::ostream& err,
                                      const EnvLookup& env) {
  declare_global_flags(flags);
  if (auto e = flags.parse(args)) return bad_args(command, err, *e);
  if (auto e = read_global_options(flags, env, &options)) return bad_args(command, err, *e);
  if (options.ask_password) {
    auto password = ask_password();
    if (!password) {
      err << "Error: no password given for user " << options.user << "\n";
      return kExitError;
    }
    options.password = *password;
    options.ask_password = false;
  }
  return std::nullopt;
}

int bad_args(std::string_view command, std::ostream& err, const std::string& message) {
  err << "Error: " << message << "\nRun 'musterctl " << command << " --help' for usage.\n";
  return kExitBadArgs;
}

int request_failed(std::ostream& err, const Reply& reply) {
  err << "Error: " << reply.error << "\n";
  return reply.connection_failed ? kExitBadConnection : kExitError;
}

std::string_view format_name(OutputFormat format) {
  switch (format) {
    case OutputFormat::kSimple:
      return "simple";
    case OutputFormat::kJson:
      return "json";
    case OutputFormat::kTable:
      return "table";
  }
  return "?";
}

int unsupported_format(std::ostream& err, OutputFormat format) {
  err << "Error: " << format_name(format) << " not supported as output format\n";
  return kExitBadFeature;
}

KeyRange key_range(const Flags& flags, bool has_from_key) {
  const auto& pos = flags.positional();
  KeyRange r{pos[0], ""};
  const std::string all(1, '\0');
  if (flags.get_bool("prefix")) {
    // An empty prefix means the whole keyspace: key "\0", range_end "\0".
    if (r.key.empty()) r.key = all;
    r.range_end = r.key == all ? r.key : etcdwire::prefix_end(r.key);
  } else if (has_from_key && flags.get_bool("from-key")) {
    if (r.key.empty()) r.key = all;
    r.range_end = all;
  } else if (pos.size() == 2) {
    r.range_end = pos[1];
  }
  return r;
}

nlohmann::ordered_json range_request(const KeyRange& range) {
  nlohmann::ordered_json request = {{"key", etcdwire::base64_encode(range.key)}};
  if (!range.range_end.empty()) request["range_end"] = etcdwire::base64_encode(range.range_end);
  return request;
}

}  // namespace muster::ctl
