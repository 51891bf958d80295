// A small GNU-style flag parser for musterctl commands: `--flag value`,
// `--flag=value`, boolean `--flag` / `--flag=true|false`, `--` ends flags,
// everything else is positional.  Unknown flags are errors that suggest the
// closest known name, as etcd's flag errors do.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace muster::ctl {

class Flags {
 public:
  // Declares a flag taking a value, with its default.
  void add_string(std::string name, std::string default_value);
  // Declares a boolean flag (default false).
  void add_bool(std::string name);

  // Parses `args`.  On error returns the message (e.g. `unknown flag: --nme
  // (did you mean --name?)`) and leaves the values unspecified.
  std::optional<std::string> parse(const std::vector<std::string>& args);

  // REQUIRES: `name` was declared with the matching add_*().
  const std::string& get(const std::string& name) const;
  bool is_set(const std::string& name) const;  // given on the command line
  bool get_bool(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  struct Flag {
    bool is_bool = false;
    std::string value;
    bool set = false;
  };
  std::string closest(std::string_view name) const;
  std::map<std::string, Flag, std::less<>> flags_;
  std::vector<std::string> positional_;
};

}  // namespace muster::ctl
