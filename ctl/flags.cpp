#include "ctl/flags.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "base/edit_distance.h"

namespace muster::ctl {
namespace {

[[noreturn]] void undeclared(const std::string& name) {
  std::fprintf(stderr, "musterctl: internal error: flag --%s read but never declared\n",
               name.c_str());
  std::abort();
}

}  // namespace

void Flags::add_string(std::string name, std::string default_value) {
  flags_[std::move(name)] = Flag{false, std::move(default_value), false};
}

void Flags::add_bool(std::string name) { flags_[std::move(name)] = Flag{true, "false", false}; }

std::string Flags::closest(std::string_view name) const {
  std::string best;
  std::size_t best_distance = 3;  // suggest only near misses
  for (const auto& [candidate, flag] : flags_) {
    const std::size_t d = base::edit_distance(name, candidate, best_distance);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best;
}

std::optional<std::string> Flags::parse(const std::vector<std::string>& args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      positional_.insert(positional_.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (arg.size() < 2 || arg[0] != '-' || arg == "-") {
      positional_.push_back(arg);
      continue;
    }
    // Both -flag and --flag, as Go's flag packages accept.
    std::string_view body = arg;
    body.remove_prefix(body.rfind("--", 0) == 0 ? 2 : 1);
    std::optional<std::string> inline_value;
    if (const auto eq = body.find('='); eq != std::string_view::npos) {
      inline_value = std::string(body.substr(eq + 1));
      body = body.substr(0, eq);
    }
    const auto it = flags_.find(body);
    if (it == flags_.end()) {
      std::string message = "unknown flag: --" + std::string(body);
      if (const std::string near = closest(body); !near.empty())
        message += " (did you mean --" + near + "?)";
      return message;
    }
    Flag& flag = it->second;
    if (flag.is_bool) {
      const std::string v = inline_value.value_or("true");
      if (v != "true" && v != "false")
        return "flag --" + it->first + " takes true or false, not \"" + v + "\"";
      flag.value = v;
    } else if (inline_value) {
      flag.value = *inline_value;
    } else {
      if (i + 1 >= args.size()) return "flag needs an argument: --" + it->first;
      flag.value = args[++i];
    }
    flag.set = true;
  }
  return std::nullopt;
}

const std::string& Flags::get(const std::string& name) const {
  const auto it = flags_.find(name);
  if (it == flags_.end()) undeclared(name);
  return it->second.value;
}

bool Flags::is_set(const std::string& name) const {
  const auto it = flags_.find(name);
  if (it == flags_.end()) undeclared(name);
  return it->second.set;
}

bool Flags::get_bool(const std::string& name) const { return get(name) == "true"; }

}  // namespace muster::ctl
