// musterctl's command table.  A command is a name, a one-line summary, a
// usage text and a function; adding one (put, get, member, discovery ...)
// means writing its run function in ctl/<name>_command.cpp and adding one row
// to commands() in ctl/commands.cpp.
#pragma once

#include <iosfwd>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace muster::ctl {

// Exit codes, as etcdctl's (etcdctl/ctlv3/command/error.go).
inline constexpr int kExitSuccess = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitBadArgs = 128;

struct Command {
  std::string_view name;
  std::string_view summary;  // one line, for the command list
  std::string_view usage;    // full help: synopsis, flags, examples
  // `args` excludes the command name.  Output to `out`, diagnostics to `err`.
  int (*run)(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
  // Takes the global flags (--endpoints, --cacert, -w ...); its help ends
  // with them.
  bool global_flags;
};

// Every command, in the order `musterctl --help` lists them.
std::span<const Command> commands();

// The whole program minus main(): dispatches argv[1..] to a command.
int run_musterctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace muster::ctl
