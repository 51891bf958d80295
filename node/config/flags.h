// node/config/flags.h: the table of flags `muster` accepts (internal to
// node/config).  One row per flag: its name, group, default as shown in
// --help, help text and a setter that parses the flag's text into Config.
// The same setters serve the command line, ETCD_* variables and YAML
// scalars, so a value means the same thing from every source.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "node/config/config.h"

namespace muster::config::detail {

enum class FlagKind {
  kValue,     // takes a value: --foo=bar or --foo bar
  kBool,      // --foo means true; a value only as --foo=false
  kDuration,  // a value, Go duration syntax ("5s"); YAML may give integer ns
  kIgnored,   // legacy etcd flag: accepted as a boolean, warned about, no effect
};

struct FlagSpec {
  std::string name;  // without dashes
  std::string group;
  std::string default_text;
  std::string help;
  FlagKind kind;
  // Parses `text` into the config.  Returns "" on success, or the reason
  // in Go flag's words ("parse error", "invalid value", a URL error ...).
  std::function<std::string(Config&, const std::string&)> set;
};

// Every flag, in --help order.  Built once; immutable.
const std::vector<FlagSpec>& flag_table();

// nullptr when `name` is not a flag.
const FlagSpec* find_flag(std::string_view name);

// "initial-cluster-token" -> "ETCD_INITIAL_CLUSTER_TOKEN".
std::string env_name(std::string_view flag);

// Go's strconv.ParseBool.
bool parse_go_bool(std::string_view s, bool* out);

// Up to three flag names closest to `unknown` (edit distance, then prefix /
// substring matches), best first.
std::vector<std::string> suggest_flags(std::string_view unknown);

}  // namespace muster::config::detail

namespace muster::config::detail {

// Reads the YAML file at `path` into `cfg` (which holds the defaults).
// Returns "" or the error sentence.  Appends warnings for keys it does not
// know (etcd ignores them silently).
std::string load_yaml_file(const std::string& path, Config& cfg, std::vector<LogLine>& log);

// etcd 3.4's checks (embed.Config.Validate, etcdmain validate) plus Muster's,
// then the derived defaults (data dir, initial cluster from --name, auto
// compaction).  Returns "" or the error sentence.
std::string validate_and_derive(Config& cfg, std::vector<LogLine>& log,
                                const ParseOptions& options);

}  // namespace muster::config::detail
