#include <algorithm>
#include <array>
#include <ostream>

#include "ctl/client.h"
#include "ctl/command.h"

#ifndef MUSTER_VERSION
#error "MUSTER_VERSION must be defined by the build"
#endif

namespace muster::ctl {

// Each command's run function lives in ctl/<name>_command.cpp.
int run_srv(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int run_put(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int run_get(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int run_del(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int run_watch(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int run_member(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int run_endpoint(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int run_snapshot(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int run_discovery(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);
int run_check(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

namespace {

int run_version(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (!args.empty()) {
    err << "Error: version takes no arguments\n";
    return kExitBadArgs;
  }
  // etcdctl's two lines; the API version is what a script checks.
  out << "musterctl version: " << MUSTER_VERSION << "\n";
  out << "API version: 3.4\n";
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

constexpr std::string_view kDiscoveryUsage =
    R"(Usage: musterctl discovery <subcommand> [flags]

  discovery new [--size N] [--endpoint URL]
      asks a discovery service for a new token of N members (default 3) and
      prints its URL; --endpoint defaults to muster-discovery's default
      listen URL, http://127.0.0.1:8087
  discovery show <token URL> [-w simple|json]
      the token's size and registrations (member ID, name, peer URLs) in
      createdIndex order, then "complete" or "waiting for N more"
  discovery rm <token URL> <member ID>
      removes one registration, so that a bootstrap that failed halfway can
      be retried on the same token (only before the cluster has formed)

show and rm work on any discovery URL a member accepts (muster-discovery,
discovery.etcd.io, an etcd or muster v2 keys directory).  They take
--discovery-proxy <url> and --timeout <ms> (default 5000).

v3 discovery (etcd 3.6: members started with --discovery-token and
--discovery-endpoints; the token lives in any etcd v3 cluster, etcd or muster):

  discovery new --v3 [--size N] [--token T] [--endpoints ...]
      writes /_etcd/registry/<T>/_config/size = N (default 3) unless it
      exists; T defaults to 32 random hex digits.  Prints the token, then
      the flags to give every member:
        --discovery-token=<T> --discovery-endpoints=<endpoints>
      (-w json: token, size, sizeKey, endpoints, memberFlags)
  discovery show --v3 --token T [--endpoints ...] [-w json]
      the token's size and registrations in create-revision order

Both take the global flags (--endpoints, --cacert, --cert, --key,
--insecure-skip-tls-verify, --dial-timeout, --command-timeout, -w).

Exit status: 0 on success, 1 when the service fails, 128 on bad arguments.
)";

// The usage texts of the commands that talk to a cluster; each ends with
// the global flags (ctl/client.h: kGlobalFlagsUsage, appended when printed).
constexpr std::string_view kPutUsage =
    R"(Usage: musterctl put <key> [value] [flags]

Puts the key; without a value argument the value is read from stdin.
Prints OK.

Flags:
  --prev-kv           also print the previous key and value
  --lease <hex id>    attach the key to this lease
)";

constexpr std::string_view kGetUsage =
    R"(Usage: musterctl get <key> [range_end] [flags]

Prints each key and its value on two lines (etcdctl's simple format), or
the range response with -w json.

Flags:
  --prefix            every key starting with <key>
  --from-key          every key >= <key>
  --keys-only         keys only (an empty line stands for each value)
  --rev <n>           read at revision n (0 = latest)
  --limit <n>         at most n keys
)";

constexpr std::string_view kDelUsage =
    R"(Usage: musterctl del <key> [range_end] [flags]

Deletes the key (or range) and prints how many keys were deleted.

Flags:
  --prefix            every key starting with <key>
  --from-key          every key >= <key>
  --prev-kv           also print the deleted keys and values
)";

constexpr std::string_view kWatchUsage =
    R"(Usage: musterctl watch <key> [range_end] [flags]

Prints every change as it happens: PUT or DELETE, the key, the value.
Runs until interrupted; if the member serving the watch goes away it resumes
on the next endpoint after the last revision printed.

Flags:
  --prefix            every key starting with <key>
  --rev <n>           start at revision n (replays history from there)
  --prev-kv           also print the previous key and value
)";

constexpr std::string_view kMemberUsage =
    R"(Usage: musterctl member <subcommand> [flags]

  member list [--show-replacements]             list members (simple, json or table);
                                                --show-replacements (Muster) adds, for a
                                                member that took a dead member's seat
                                                (--discovery-replace-dead), which member
                                                it replaced and when; in json the whole
                                                replacement history as "replacements"
  member add <name> --peer-urls <urls> [--learner]
                                                add a member; prints the ETCD_* settings
                                                it must start with
  member remove <hex id>                        remove a member
  member update <hex id> --peer-urls <urls>     change a member's peer URLs
  member promote <hex id> [--wait-timeout 60s]  promote a learner to voter; while the
                                                learner is catching up, retries and prints
                                                a progress line on stderr (0 = no retry)
)";

constexpr std::string_view kEndpointUsage =
    R"(Usage: musterctl endpoint health|status [--cluster] [flags]

  endpoint health    a linearizable read on each endpoint; prints how long it took.
                     Exit status 1 ("unhealthy cluster") when any fails.
  endpoint status    each endpoint's member ID, version, DB size, leadership and
                     raft term/index.

Flags:
  --cluster          ask every member's client URLs from the member list instead
)";

constexpr std::string_view kSnapshotUsage =
    R"(Usage: musterctl snapshot save <file> [--logical] [flags]

Saves the member's snapshot as `etcdctl snapshot save` does: the
Maintenance.Snapshot stream of the one endpoint given (a point-in-time copy
with a SHA-256 at its end), checked when complete. `muster snapshot status`
prints it and `muster snapshot restore` builds new members from it.

  --logical   write a logical backup instead: every key at one revision plus
              the leases, as JSON lines with a SHA-256 trailer, read through
              the JSON gateway (nothing restores it; docs/musterctl.md)

Written to <file>.part and renamed when complete; progress goes to stderr.
)";

constexpr std::string_view kCheckUsage =
    R"(Usage: musterctl check perf|datascale [flags]

  check perf        writes 256-byte keys with 1 KiB values under --prefix at the
                    load's rate for 60 s, deletes them, and judges the cluster as
                    etcdctl does: PASS when throughput is above 90% of the rate,
                    the slowest write under 0.5 s and the deviation under 0.1 s
  check datascale   writes the load's number of 512-byte keys with 512-byte values
                    and reports how much the first endpoint's resident memory grew

Flags:
  --load s|m|l|xl       workload (perf: 150/1000/8000/15000 writes/s with
                        50/200/500/1000 clients; datascale: 10k/100k/1M/3M keys)
  --prefix <key>        where the keys go (default /etcdctl-check-perf/ or
                        /etcdctl-check-datascale/); it must be empty
  --auto-compact        compact at the last revision afterwards
  --auto-defrag         defragment every endpoint afterwards
  --duration <d>        perf only, Muster's: how long to write (default 60s)

Progress goes to stderr when it is a terminal (MUSTERCTL_PROGRESS=always|never).
Exit status: 0 PASS, 1 FAIL or error, 3 prefix not empty, 4 unknown load.
)";

constexpr std::array kCommands{
    Command{"put", "Put a key", kPutUsage, &run_put, true},
    Command{"get", "Get a key or a range of keys", kGetUsage, &run_get, true},
    Command{"del", "Delete a key or a range of keys", kDelUsage, &run_del, true},
    Command{"watch", "Watch a key or a range of keys for changes", kWatchUsage, &run_watch, true},
    Command{"member", "List, add, remove, update or promote members", kMemberUsage, &run_member,
            true},
    Command{"endpoint", "Health and status of endpoints", kEndpointUsage, &run_endpoint, true},
    Command{"snapshot", "Save a member's snapshot (or a logical backup)", kSnapshotUsage,
            &run_snapshot, true},
    Command{"check", "Check the cluster's write performance or memory use, as etcdctl's",
            kCheckUsage, &run_check, true},
    Command{"srv", "Show the cluster or client endpoints DNS SRV discovery would find", kSrvUsage,
            &run_srv, false},
    Command{"discovery", "Create, inspect or clean up discovery tokens", kDiscoveryUsage,
            &run_discovery, false},
    Command{"version", "Print the version", "Usage: musterctl version\n", &run_version, false},
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

// How many leading arguments are global flags (with their values).
std::size_t leading_global_flags(const std::vector<std::string>& args) {
  static constexpr std::array<std::string_view, 8> kTakesValue = {
      "endpoints", "cacert", "cert", "key", "dial-timeout", "command-timeout", "write-out", "w"};
  std::size_t i = 0;
  while (i < args.size()) {
    std::string_view a = args[i];
    if (a.size() < 2 || a[0] != '-' || a == "--" || a == "-h" || a == "--help" || a == "--version")
      break;
    a.remove_prefix(a.rfind("--", 0) == 0 ? 2 : 1);
    if (a.find('=') != std::string_view::npos || a == "insecure-skip-tls-verify") {
      ++i;
    } else if (std::find(kTakesValue.begin(), kTakesValue.end(), a) != kTakesValue.end()) {
      i += 2;
    } else {
      break;  // not a global flag: let the command report it
    }
  }
  return std::min(i, args.size());
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
  // Global flags may come before the command, as with etcdctl
  // (`musterctl -w json --endpoints=x get foo`): move them after it.
  if (std::size_t skip = leading_global_flags(args); skip > 0 && skip < args.size()) {
    std::vector<std::string> reordered(args.begin() + static_cast<std::ptrdiff_t>(skip),
                                       args.end());
    reordered.insert(reordered.end(), args.begin(),
                     args.begin() + static_cast<std::ptrdiff_t>(skip));
    return run_musterctl(reordered, out, err);
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
      if (c->global_flags) out << kGlobalFlagsUsage;
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
    if (command->global_flags) out << kGlobalFlagsUsage;
    return kExitSuccess;
  }
  return command->run(rest, out, err);
}

}  // namespace muster::ctl
