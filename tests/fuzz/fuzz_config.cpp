// Fuzz target: a member's configuration as an operator writes it -- the
// command line (etcd 3.4's flags, --initial-cluster, durations, URLs, TLS
// flags), ETCD_* variables and the YAML config file (node/config/), through
// the same parse() and bootstrap checks `muster` runs at start.
//
// Input: NUL-separated fields.  A field "--config-file" makes the rest of
// the input the YAML file's text (written to a file under $TMPDIR); a field
// "ENV:NAME=value" sets an environment variable; every other field is one
// argument.  Seeds in corpus/fuzz_config.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "node/config/config.h"
#include "node/config/urls.h"

namespace {

const std::string& yaml_path() {
  static const std::string* p = [] {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/muster-fuzz-config-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    return new std::string(tmpl + "/etcd.conf.yml");
  }();
  return *p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace muster::config;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> args;
  std::map<std::string, std::string> env;
  while (!in.empty()) {
    size_t nul = in.find('\0');
    std::string_view field = in.substr(0, nul);
    in = nul == std::string_view::npos ? std::string_view() : in.substr(nul + 1);
    if (field == "--config-file") {
      std::FILE* f = std::fopen(yaml_path().c_str(), "wb");
      if (!f) std::abort();
      std::fwrite(in.data(), 1, in.size(), f);
      std::fclose(f);
      args.push_back("--config-file");
      args.push_back(yaml_path());
      break;
    }
    if (field.substr(0, 4) == "ENV:") {
      std::string_view kv = field.substr(4);
      size_t eq = kv.find('=');
      if (eq != std::string_view::npos) env[std::string(kv.substr(0, eq))] = kv.substr(eq + 1);
      continue;
    }
    args.emplace_back(field);
  }
  ParseResult r = parse(args, env);
  if (r.ok() && !r.config->initial_cluster.empty()) {
    auto cluster = parse_initial_cluster(r.config->initial_cluster);
    if (cluster) (void)verify_bootstrap(*r.config, *cluster);
  }
  // The URL parsers on each argument alone, too.
  for (const auto& a : args) {
    (void)parse_initial_cluster(a);
    (void)parse_url_list(a);
  }
  return 0;
}
