// node/config/yaml_file.cpp: --config-file, etcd's YAML layout.
//
// Keys are the flag names.  URL lists are comma-separated strings; TLS
// settings nest under client-transport-security / peer-transport-security;
// log-outputs (and cors, host-whitelist, cipher-suites) may be a YAML list.
// Where Muster is more lenient than etcd 3.4 (docs/configuration.md):
//   * duration keys take a Go duration string ("5s") as well as etcd's
//     integer nanoseconds;
//   * string keys take numbers (auto-compaction-retention: 1);
//   * top-level TLS flag names (cert-file, peer-crl-file, ...) are read too,
//     and unknown keys are warned about instead of silently dropped.
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include "node/config/flags.h"

namespace muster::config::detail {
namespace {

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (const char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// YAML 1.1 booleans (what etcd's YAML library accepts) on top of Go's.
std::string normalise_bool(const std::string& v) {
  std::string l;
  for (const char c : v) l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (l == "yes" || l == "y" || l == "on") return "true";
  if (l == "no" || l == "n" || l == "off") return "false";
  return v;
}

// A scalar or a sequence of scalars as the comma-separated text the flag
// setters read.  Returns false for maps and nested sequences.
bool node_text(const YAML::Node& n, std::string* out) {
  if (n.IsScalar()) {
    *out = n.Scalar();
    return true;
  }
  if (n.IsSequence()) {
    std::string joined;
    for (const auto& item : n) {
      if (!item.IsScalar()) return false;
      if (!joined.empty()) joined += ',';
      joined += item.Scalar();
    }
    *out = joined;
    return true;
  }
  return false;
}

std::string key_error(const std::string& path, const std::string& key, const std::string& value,
                      const std::string& why) {
  return "config file " + path + ": invalid value \"" + value + "\" for key \"" + key +
         "\": " + why;
}

std::string set_key(const std::string& path, const std::string& key, const std::string& flag,
                    const YAML::Node& n, Config& cfg) {
  const FlagSpec* spec = find_flag(flag);
  if (spec == nullptr) return "unknown";
  if (n.IsNull()) return "";  // "key:" with no value keeps the default, as in etcd
  std::string text;
  if (!node_text(n, &text))
    return "config file " + path + ": key \"" + key + "\" must be a scalar or a list";
  if (spec->kind == FlagKind::kBool) text = normalise_bool(text);
  if (spec->kind == FlagKind::kDuration && all_digits(text)) {
    text += "ns";  // etcd's YAML durations are integer nanoseconds
  }
  if (flag == "initial-cluster-state" && text.empty()) text = "new";
  if (auto err = spec->set(cfg, text); !err.empty()) return key_error(path, key, text, err);
  cfg.explicitly_set.insert(flag);
  return "";
}

std::string read_file(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::string why = std::strerror(errno);
    if (!why.empty()) why[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(why[0])));
    return "open " + path + ": " + why;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return "";
}

// etcd 3.6's nested v3 discovery settings (embed.Config's DiscoveryCfg):
//   discovery-config:
//     token: <token>
//     client:
//       endpoints: [...]
//       dial-timeout / request-timeout / keepalive-time / keepalive-timeout
//       secure: {cert, key, cacert, insecure-transport, insecure-skip-tls-verify}
//       auth: {username, password}
// Each leaf sets the same field as its flag.
std::string read_discovery_config(const std::string& path, const YAML::Node& value, Config& cfg,
                                  std::vector<LogLine>& log) {
  struct Leaf {
    const char* key;  // dotted, below discovery-config
    const char* flag;
  };
  static const Leaf kLeaves[] = {
      {"token", "discovery-token"},
      {"client.endpoints", "discovery-endpoints"},
      {"client.dial-timeout", "discovery-dial-timeout"},
      {"client.request-timeout", "discovery-request-timeout"},
      {"client.keepalive-time", "discovery-keepalive-time"},
      {"client.keepalive-timeout", "discovery-keepalive-timeout"},
      {"client.secure.cert", "discovery-cert"},
      {"client.secure.key", "discovery-key"},
      {"client.secure.cacert", "discovery-cacert"},
      {"client.secure.insecure-transport", "discovery-insecure-transport"},
      {"client.secure.insecure-skip-tls-verify", "discovery-insecure-skip-tls-verify"},
      {"client.auth.username", "discovery-user"},
      {"client.auth.password", "discovery-password"},
  };
  // Walks the maps depth first; `prefix` is the dotted path so far.
  std::function<std::string(const YAML::Node&, const std::string&)> walk =
      [&](const YAML::Node& node, const std::string& prefix) -> std::string {
    if (node.IsNull()) return "";
    if (!node.IsMap())
      return "config file " + path + ": key \"discovery-config" +
             (prefix.empty() ? "" : "." + prefix) + "\" must be a map";
    for (const auto& kv : node) {
      const std::string k =
          prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>();
      const Leaf* leaf = nullptr;
      for (const auto& l : kLeaves) leaf = k == l.key ? &l : leaf;
      if (leaf != nullptr) {
        if (auto err = set_key(path, "discovery-config." + k, leaf->flag, kv.second, cfg);
            !err.empty())
          return err;
      } else if (k == "client" || k == "client.secure" || k == "client.auth") {
        if (auto err = walk(kv.second, k); !err.empty()) return err;
      } else {
        log.push_back(
            {LogLine::Level::kWarn,
             "config file " + path + ": ignoring unknown key \"discovery-config." + k + "\""});
      }
    }
    return "";
  };
  return walk(value, "");
}

std::string read_keys(const std::string& path, const YAML::Node& root, Config& cfg,
                      std::vector<LogLine>& log) {
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& value = kv.second;
    if (key == "client-transport-security" || key == "peer-transport-security") {
      if (value.IsNull()) continue;
      if (!value.IsMap()) return "config file " + path + ": key \"" + key + "\" must be a map";
      const bool peer = key[0] == 'p';
      for (const auto& tkv : value) {
        const std::string tkey = tkv.first.as<std::string>();
        // Nested key -> the flag that sets the same field.
        std::string flag;
        if (tkey == "cert-file" || tkey == "key-file" || tkey == "client-cert-auth" ||
            tkey == "trusted-ca-file" || tkey == "auto-tls") {
          flag = peer ? "peer-" + tkey : tkey;
        } else if (tkey == "crl-file") {
          flag = peer ? "peer-crl-file" : "client-crl-file";
        } else if (tkey == "allowed-cn" && peer) {
          flag = "peer-cert-allowed-cn";
        } else if (tkey == "allowed-hostname") {
          flag = peer ? "peer-cert-allowed-hostname" : "client-cert-allowed-hostname";
        }
        const std::string full = key + "." + tkey;
        if (flag.empty()) {
          log.push_back({LogLine::Level::kWarn,
                         "config file " + path + ": ignoring unknown key \"" + full + "\""});
          continue;
        }
        if (auto err = set_key(path, full, flag, tkv.second, cfg); !err.empty()) return err;
      }
      continue;
    }
    if (key == "discovery-config") {
      if (auto err = read_discovery_config(path, value, cfg, log); !err.empty()) return err;
      continue;
    }
    const FlagSpec* spec = find_flag(key);
    if (spec == nullptr || spec->kind == FlagKind::kIgnored || key == "config-file" ||
        key == "version") {
      log.push_back({LogLine::Level::kWarn,
                     "config file " + path + ": ignoring unknown key \"" + key + "\""});
      continue;
    }
    if (auto err = set_key(path, key, key, value, cfg); !err.empty()) return err;
  }
  return "";
}

}  // namespace

std::string load_yaml_file(const std::string& path, Config& cfg, std::vector<LogLine>& log) {
  std::string text;
  if (auto err = read_file(path, &text); !err.empty()) return err;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return "config file " + path + ": " + e.what();
  }
  if (root.IsNull()) return "";  // an empty file: all defaults
  if (!root.IsMap())
    return "config file " + path + ": the top level must be a map of flag names to values";

  const std::string default_initial_cluster = cfg.initial_cluster;
  try {
    if (auto err = read_keys(path, root, cfg, log); !err.empty()) return err;
  } catch (const YAML::Exception& e) {
    return "config file " + path + ": " + e.what();
  }
  // etcd embed.configFromFile: discovery replaces the default static cluster
  // (compared by value, so an explicit copy of the default is dropped too).
  if ((!cfg.discovery.empty() || !cfg.discovery_srv.empty() || cfg.discovery_v3.enabled()) &&
      cfg.initial_cluster == default_initial_cluster) {
    cfg.initial_cluster.clear();
  }
  return "";
}

}  // namespace muster::config::detail
