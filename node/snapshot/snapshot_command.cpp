// node/snapshot/snapshot_command.cpp: see snapshot_command.h.
#include "node/snapshot/snapshot_command.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>

#include "node/snapshot/restore.h"

namespace muster::snapshot {

namespace {

constexpr int kExitSuccess = 0;
constexpr int kExitError = 1;
constexpr int kExitBadArgs = 128;

constexpr const char* kUsage =
    "Usage:\n"
    "  muster snapshot restore <file> [flags]   build a new member's data dir from a snapshot\n"
    "  muster snapshot status <file> [-w simple|table|json]\n"
    "                                           the file's hash, revision, records and size\n"
    "\n"
    "restore flags (etcd's names and defaults):\n"
    "  --name                          this member's name (default \"default\")\n"
    "  --data-dir                      where to build its data dir; must not exist\n"
    "                                  (default \"<name>.etcd\")\n"
    "  --initial-cluster               every member of the new cluster, name=peer-url,...\n"
    "                                  (default \"default=http://localhost:2380\")\n"
    "  --initial-cluster-token         the new cluster's token; member and cluster IDs\n"
    "                                  derive from it (default \"etcd-cluster\")\n"
    "  --initial-advertise-peer-urls   this member's peer URLs, as listed in\n"
    "                                  --initial-cluster (default \"http://localhost:2380\")\n"
    "  --skip-hash-check               accept a file without its SHA-256 digest (the\n"
    "                                  chunks' own checksum is still checked)\n"
    "\n"
    "Take the file with `etcdctl snapshot save` or `musterctl snapshot save`.\n";

// go-humanize's Bytes(), as etcdctl prints TOTAL SIZE.
std::string humanize_bytes(uint64_t n) {
  if (n < 10) return std::to_string(n) + " B";
  static constexpr std::array<const char*, 7> kUnits = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  const double e = std::floor(std::log(static_cast<double>(n)) / std::log(1000.0));
  const size_t unit = std::min<size_t>(static_cast<size_t>(e), kUnits.size() - 1);
  const double value =
      std::floor(static_cast<double>(n) / std::pow(1000.0, static_cast<double>(unit)) * 10 + 0.5) /
      10;
  char buf[64];
  std::snprintf(buf, sizeof buf, value < 10 ? "%.1f %s" : "%.0f %s", value, kUnits[unit]);
  return buf;
}

// etcdctl's `snapshot status -w table` (tablewriter): centred headers,
// cells aligned right.
std::string status_table(const std::vector<std::string>& header,
                         const std::vector<std::string>& row) {
  std::vector<size_t> w(header.size());
  for (size_t i = 0; i < header.size(); ++i) w[i] = std::max(header[i].size(), row[i].size());
  std::string rule = "+";
  for (size_t x : w) rule += std::string(x + 2, '-') + "+";
  std::string head = "|", body = "|";
  for (size_t i = 0; i < header.size(); ++i) {
    const size_t pad = w[i] - header[i].size();
    head += " " + std::string(pad / 2, ' ') + header[i] + std::string(pad - pad / 2, ' ') + " |";
    body += " " + std::string(w[i] - row[i].size(), ' ') + row[i] + " |";
  }
  return rule + "\n" + head + "\n" + rule + "\n" + body + "\n" + rule + "\n";
}

struct Parsed {
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;
  bool skip_hash_check = false;
};

// --flag=value, --flag value, -w value; booleans as --flag or --flag=true|false.
std::optional<std::string> parse(const std::vector<std::string>& args,
                                 const std::vector<std::string>& value_flags, bool allow_skip,
                                 Parsed* p) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() < 2 || a[0] != '-') {
      p->positional.push_back(a);
      continue;
    }
    std::string name = a.substr(a[1] == '-' ? 2 : 1);
    std::optional<std::string> value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    if (name == "w") name = "write-out";
    if (allow_skip && name == "skip-hash-check") {
      if (!value || *value == "true" || *value == "1")
        p->skip_hash_check = true;
      else if (*value == "false" || *value == "0")
        p->skip_hash_check = false;
      else
        return "invalid argument \"" + *value + "\" for \"--skip-hash-check\" flag";
      continue;
    }
    if (std::find(value_flags.begin(), value_flags.end(), name) == value_flags.end())
      return "unknown flag: " + a.substr(0, a.find('='));
    if (!value) {
      if (i + 1 >= args.size()) return "flag needs an argument: --" + name;
      value = args[++i];
    }
    p->values[name] = *value;
  }
  return std::nullopt;
}

int run_restore(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Parsed p;
  if (auto e = parse(args,
                     {"name", "data-dir", "initial-cluster", "initial-cluster-token",
                      "initial-advertise-peer-urls"},
                     true, &p)) {
    err << "Error: " << *e << "\n";
    return kExitBadArgs;
  }
  if (p.positional.size() != 1) {
    err << "Error: snapshot restore requires exactly one argument\n";
    return kExitBadArgs;
  }
  RestoreOptions o;
  o.snapshot_path = p.positional[0];
  if (auto it = p.values.find("name"); it != p.values.end()) o.name = it->second;
  if (auto it = p.values.find("data-dir"); it != p.values.end()) o.data_dir = it->second;
  if (auto it = p.values.find("initial-cluster"); it != p.values.end())
    o.initial_cluster = it->second;
  if (auto it = p.values.find("initial-cluster-token"); it != p.values.end())
    o.initial_cluster_token = it->second;
  if (auto it = p.values.find("initial-advertise-peer-urls"); it != p.values.end())
    o.initial_advertise_peer_urls = it->second;
  o.skip_hash_check = p.skip_hash_check;
  (void)out;  // as etcdctl: the outcome is logged (stderr), nothing on stdout
  try {
    restore(o);
  } catch (const std::exception& e) {
    err << "Error: " << e.what() << "\n";
    return kExitError;
  }
  return kExitSuccess;
}

int run_status(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Parsed p;
  if (auto e = parse(args, {"write-out"}, false, &p)) {
    err << "Error: " << *e << "\n";
    return kExitBadArgs;
  }
  if (p.positional.size() != 1) {
    err << "Error: snapshot status requires exactly one argument\n";
    return kExitBadArgs;
  }
  const std::string format = p.values.count("write-out") ? p.values["write-out"] : "simple";
  if (format != "simple" && format != "table" && format != "json") {
    err << "Error: " << format << " not supported as output format\n";
    return 4;  // etcdctl's ExitBadFeature
  }
  // A digest that is present must match; a file without one is still shown
  // (its chunks' own checksum is checked either way).
  storage::SnapshotFileReadOptions ro;
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(p.positional[0], ec);
  ro.skip_hash_check = !ec && size % storage::kSnapshotFileAlign != storage::kSnapshotDigestBytes;
  storage::SnapshotFileInfo info;
  if (storage::Status s = storage::read_snapshot_file(p.positional[0], ro, {}, &info); !s) {
    err << "Error: " << s.message() << "\n";
    return kExitError;
  }
  char hash[16];
  std::snprintf(hash, sizeof hash, "%x", info.hash);
  const int64_t revision = info.applied.revision();
  if (format == "json") {
    out << nlohmann::ordered_json{{"hash", info.hash},
                                  {"revision", revision},
                                  {"totalKey", info.records},
                                  {"totalSize", info.dump_bytes}}
               .dump()
        << "\n";
  } else if (format == "table") {
    out << status_table({"HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"},
                        {hash, std::to_string(revision), std::to_string(info.records),
                         humanize_bytes(info.dump_bytes)});
  } else {
    out << hash << ", " << revision << ", " << info.records << ", "
        << humanize_bytes(info.dump_bytes) << "\n";
  }
  return kExitSuccess;
}

}  // namespace

int run_snapshot_command(const std::vector<std::string>& args, std::ostream& out,
                         std::ostream& err) {
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    (args.empty() ? err : out) << kUsage;
    return args.empty() ? kExitBadArgs : kExitSuccess;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (std::find(rest.begin(), rest.end(), "--help") != rest.end() ||
      std::find(rest.begin(), rest.end(), "-h") != rest.end()) {
    out << kUsage;
    return kExitSuccess;
  }
  if (args[0] == "restore") return run_restore(rest, out, err);
  if (args[0] == "status") return run_status(rest, out, err);
  if (args[0] == "save")
    err << "Error: `muster snapshot` works on files; save a snapshot from a running member "
           "with `etcdctl snapshot save <file>` or `musterctl snapshot save <file>`\n";
  else
    err << "Error: unknown snapshot command \"" << args[0] << "\"\n" << kUsage;
  return kExitBadArgs;
}

}  // namespace muster::snapshot
