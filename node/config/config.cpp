// node/config/config.cpp: reading the command line and the environment the
// way etcd 3.4 does (Go's flag package plus etcd's pkg/flags), then handing
// over to the YAML reader or to validation.
#include "node/config/config.h"

#include "node/config/flags.h"

namespace muster::config {
namespace {

using detail::FlagKind;
using detail::FlagSpec;

LogLine info(std::string m) { return LogLine{LogLine::Level::kInfo, std::move(m)}; }
LogLine warn(std::string m) { return LogLine{LogLine::Level::kWarn, std::move(m)}; }

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string unknown_flag_error(const std::string& name) {
  std::string msg = "flag provided but not defined: -" + name;
  const auto close = detail::suggest_flags(name);
  if (!close.empty()) {
    msg += " (did you mean ";
    for (size_t i = 0; i < close.size(); ++i) {
      if (i) msg += i + 1 == close.size() ? " or " : ", ";
      msg += "--" + close[i];
    }
    msg += "?)";
  }
  return msg;
}

// The command line as Go's flag.FlagSet.Parse reads it: "-name" and
// "--name" alike, "=value" or (non-boolean flags) the next argument; "--"
// ends the flags; parsing stops at the first argument that is not a flag.
struct CommandLine {
  std::set<std::string> set;  // flags given
  bool help = false;
  bool version = false;
  std::vector<std::string> positional;
};

std::string read_command_line(const std::vector<std::string>& args, Config& cfg, CommandLine& cl,
                              std::vector<LogLine>& log) {
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.size() < 2 || arg[0] != '-') break;  // first non-flag argument
    size_t dashes = 1;
    if (arg[1] == '-') {
      dashes = 2;
      if (arg.size() == 2) {  // "--" terminates the flags
        ++i;
        break;
      }
    }
    std::string name = arg.substr(dashes);
    if (name.empty() || name[0] == '-' || name[0] == '=') return "bad flag syntax: " + arg;
    std::string value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    if (name == "h" || name == "help") {
      cl.help = true;  // Go's flag package stops here with ErrHelp
      return "";
    }
    const FlagSpec* spec = detail::find_flag(name);
    if (spec == nullptr) return unknown_flag_error(name);
    if (spec->kind == FlagKind::kBool || spec->kind == FlagKind::kIgnored) {
      if (!has_value) value = "true";
      if (auto err = spec->set(cfg, value); !err.empty()) {
        return "invalid boolean value " + quote(value) + " for -" + name + ": " + err;
      }
      if (spec->kind == FlagKind::kIgnored) {
        log.push_back(warn("flag \"-" + name + "\" is no longer supported - ignoring."));
      }
      if (name == "version") detail::parse_go_bool(value, &cl.version);
    } else {
      if (!has_value) {
        if (i + 1 >= args.size()) return "flag needs an argument: -" + name;
        value = args[++i];
      }
      if (auto err = spec->set(cfg, value); !err.empty()) {
        return "invalid value " + quote(value) + " for flag -" + name + ": " + err;
      }
    }
    cl.set.insert(name);
  }
  cl.positional.assign(args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
  return "";
}

// etcd's flags.SetFlagsFromEnv + verifyEnv: every flag not given on the
// command line takes a non-empty ETCD_<FLAG> value; a variable whose flag
// WAS given is fatal; other ETCD_ variables are warned about.
std::string read_environment(const std::map<std::string, std::string>& env, Config& cfg,
                             const CommandLine& cl, std::set<std::string>& used_flags,
                             std::vector<LogLine>& log) {
  std::string first_error;
  std::set<std::string> known_keys;
  for (const auto& f : detail::flag_table()) {
    const std::string key = detail::env_name(f.name);
    known_keys.insert(key);
    if (cl.set.count(f.name)) continue;
    auto it = env.find(key);
    if (it == env.end() || it->second.empty()) continue;
    if (auto err = f.set(cfg, it->second); !err.empty()) {
      if (first_error.empty())
        first_error = "invalid value " + quote(it->second) + " for " + key + ": " + err;
      continue;
    }
    used_flags.insert(f.name);
    if (f.kind == FlagKind::kIgnored) {
      log.push_back(warn("flag \"-" + f.name + "\" is no longer supported - ignoring."));
    }
    log.push_back(info("recognized and used environment variable " + key + "=" + it->second));
  }
  for (const auto& [key, value] : env) {
    if (key.rfind("ETCD_", 0) != 0) continue;
    if (known_keys.count(key) == 0) {
      log.push_back(warn("unrecognized environment variable " + key + "=" + value));
      continue;
    }
    // The flag of this variable: find it back by name.
    for (const auto& name : cl.set) {
      if (detail::env_name(name) == key) {
        return "conflicting environment variable " + quote(key) +
               " is shadowed by corresponding command-line flag (either unset environment variable "
               "or "
               "disable flag)";
      }
    }
  }
  return first_error;
}

}  // namespace

ParseResult parse(const std::vector<std::string>& args,
                  const std::map<std::string, std::string>& env, const ParseOptions& options) {
  ParseResult r;
  Config cfg;
  CommandLine cl;
  if (auto err = read_command_line(args, cfg, cl, r.log); !err.empty()) {
    r.error = std::move(err);
    return r;
  }
  if (cl.help) {
    r.print_help = true;
    r.config = std::move(cfg);
    return r;
  }
  if (!cl.positional.empty()) {
    r.error = "'" + cl.positional.front() + "' is not a valid flag";
    return r;
  }
  if (cl.version) {
    r.print_version = true;
    r.config = std::move(cfg);
    return r;
  }

  std::string config_file = cfg.config_file;
  if (config_file.empty()) {
    if (auto it = env.find("ETCD_CONFIG_FILE"); it != env.end()) config_file = it->second;
  }
  if (!config_file.empty()) {
    // The file replaces everything else: start again from the defaults.
    r.log.push_back(
        info("Loading server configuration from " + quote(config_file) +
             ". Other configuration command line flags and environment variables will be ignored "
             "if provided."));
    Config from_file;
    from_file.config_file = config_file;
    if (auto err = detail::load_yaml_file(config_file, from_file, r.log); !err.empty()) {
      r.error = std::move(err);
      return r;
    }
    cfg = std::move(from_file);
  } else {
    std::set<std::string> from_env;
    if (auto err = read_environment(env, cfg, cl, from_env, r.log); !err.empty()) {
      r.error = std::move(err);
      return r;
    }
    cfg.explicitly_set = cl.set;
    cfg.explicitly_set.insert(from_env.begin(), from_env.end());
    // etcdmain configFromCmdLine: listening on chosen client URLs without
    // saying which to advertise drops the default advertise URL, so that
    // validation asks for it -- unless this member may end up a proxy.
    if (cfg.is_set("listen-client-urls") && !cfg.is_set("advertise-client-urls") &&
        !cfg.may_be_proxy()) {
      cfg.advertise_client_urls.clear();
    }
    // Discovery (URL, v3 endpoints or SRV) replaces the default static cluster.
    if ((!cfg.discovery.empty() || !cfg.discovery_srv.empty() || cfg.discovery_v3.enabled()) &&
        !cfg.is_set("initial-cluster")) {
      cfg.initial_cluster.clear();
    }
  }
  if (auto err = detail::validate_and_derive(cfg, r.log, options); !err.empty()) {
    r.error = std::move(err);
    return r;
  }
  r.config = std::move(cfg);
  return r;
}

}  // namespace muster::config
