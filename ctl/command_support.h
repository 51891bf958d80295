// ctl/command_support.h: what every command that talks to a cluster does
// first (parse its flags and the global ones) and last (report an error with
// etcdctl's exit codes).
#pragma once

#include <iosfwd>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ctl/client.h"
#include "ctl/flags.h"

namespace muster::ctl {

// etcdctl's ExitBadFeature: the output format is not offered for a command.
inline constexpr int kExitBadFeature = 4;

// Declares the global flags on `flags`, parses `args`, reads the global
// options (environment included).  Returns nullopt on success, else the exit
// code after printing the error and a usage hint for `command`.
std::optional<int> parse_command_line(std::string_view command,
                                      const std::vector<std::string>& args, Flags& flags,
                                      GlobalOptions& options, std::ostream& err,
                                      const EnvLookup& env = process_env());

// Prints "Error: <message>" and a usage hint; returns kExitBadArgs.
int bad_args(std::string_view command, std::ostream& err, const std::string& message);
// Prints "Error: <reply.error>"; returns 2 when no endpoint could be reached,
// else 1 (etcdctl's codes).
int request_failed(std::ostream& err, const Reply& reply);
// Prints "Error: <format> not supported as output format"; returns 4.
int unsupported_format(std::ostream& err, OutputFormat format);
std::string_view format_name(OutputFormat format);

// The keys a command's positional arguments name, as etcdctl reads them:
// <key> [range_end]; with --prefix every key that starts with <key> (every
// key at all when <key> is empty); with --from-key (only for commands that
// declare it) every key from <key> on.
struct KeyRange {
  std::string key;
  std::string range_end;  // "" = the one key
};
KeyRange key_range(const Flags& flags, bool has_from_key);
// {"key", "range_end"} of a range, delete-range or watch request, in the
// gateway's base64.
nlohmann::ordered_json range_request(const KeyRange& range);

}  // namespace muster::ctl
