#include <array>
#include <ostream>

#include "ctl/command.h"

#ifndef MUSTER_VERSION
#error "MUSTER_VERSION must be defined by the build"
#endif

namespace muster::ctl {

// Each command's run function lives in ctl/<name>_command.cc.
int run_srv(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

namespace {

int run_version(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (!args.empty()) {
    err << "Error: version takes no arguments\n";
    return kExitBadArgs;
  }
  out << "musterctl version: " << MUSTER_VERSION << "\n";
  return kExitSuccess;
}

constexpr std::string_view kSrvUsage =
    R"(Usage: musterctl srv <domain> [flags]

Prints the initial cluster a member started with --discovery-srv=<domain> and
the same flags would build from DNS now, or fails with the error that member
would stop with.  With --client, prints the client endpoints instead, one
per line, in RFC 2782 priority/weight order.

Queries _etcd-server-ssl[-<srv-name>]._tcp.<domain> (https) and
_etcd-server[-<srv-name>]._tcp.<domain> (http); with --client,
_etcd-client-ssl[-<srv-name>]._tcp.<domain> and _etcd-client[-<srv-name>]._tcp.<domain>.

Flags:
  --name <name>                           member name (default "default")
  --initial-advertise-peer-urls <urls>    comma-separated peer URLs of the member
                                          (default "http://localhost:2380")
  --discovery-srv-name <suffix>           suffix to the SRV service names
  --dns-server <ip:port>                  ask this DNS server only (default: /etc/resolv.conf)
  --dns-timeout <duration>                first wait for an answer, doubled per retry (default 2s)
  --dns-tries <n>                         attempts per server (default 2)
  --client                                print client endpoints instead

Exit status: 0 on success, 1 when discovery fails, 128 on bad arguments.

Example:
  musterctl srv example.com --name infra0 \
    --initial-advertise-peer-urls https://infra0.example.com:2380
)";

constexpr std::array kCommands{
    Command{"srv", "Show the cluster or client endpoints DNS SRV discovery would find", kSrvUsage,
            &run_srv},
    Command{"version", "Print the version", "Usage: musterctl version\n", &run_version},
};

void print_help(std::ostream& out) {
  out << "musterctl: the command-line client for muster (etcd-compatible)\n\n"
         "Usage: musterctl <command> [arguments]\n\nCommands:\n";
  for (const Command& c : kCommands) {
    out << "  " << c.name << std::string(12 - std::min<std::size_t>(c.name.size(), 11), ' ')
        << c.summary << "\n";
  }
  out << "  help        Show help for a command\n\n"
         "Run 'musterctl <command> --help' for a command's flags.\n";
}

const Command* find_command(std::string_view name) {
  for (const Command& c : kCommands)
    if (c.name == name) return &c;
  return nullptr;
}

bool asks_for_help(const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    if (a == "--") return false;
    if (a == "-h" || a == "--help" || a == "-help") return true;
  }
  return false;
}

}  // namespace

std::span<const Command> commands() { return kCommands; }

int run_musterctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty()) {
    err << "Error: no command given\n\n";
    print_help(err);
    return kExitBadArgs;
  }
  const std::string& name = args.front();
  if (name == "-h" || name == "--help") {
    print_help(out);
    return kExitSuccess;
  }
  if (name == "--version") return run_version({}, out, err);
  if (name == "help") {
    if (args.size() == 1) {
      print_help(out);
      return kExitSuccess;
    }
    if (const Command* c = find_command(args[1])) {
      out << c->usage;
      return kExitSuccess;
    }
    err << "Error: unknown command \"" << args[1] << "\"\n";
    return kExitBadArgs;
  }
  const Command* command = find_command(name);
  if (!command) {
    err << "Error: unknown command \"" << name << "\" for \"musterctl\"\n"
        << "Run 'musterctl --help' for usage.\n";
    return kExitBadArgs;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (asks_for_help(rest)) {
    out << command->usage;
    return kExitSuccess;
  }
  return command->run(rest, out, err);
}

}  // namespace muster::ctl
