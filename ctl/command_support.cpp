#include "ctl/command_support.h"

#include <ostream>

#include "ctl/command.h"

namespace muster::ctl {

std::optional<int> parse_command_line(std::string_view command,
                                      const std::vector<std::string>& args, Flags& flags,
                                      GlobalOptions& options, std::ostream& err,
                                      const EnvLookup& env) {
  declare_global_flags(flags);
  if (auto e = flags.parse(args)) return bad_args(command, err, *e);
  if (auto e = read_global_options(flags, env, &options)) return bad_args(command, err, *e);
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

}  // namespace muster::ctl
