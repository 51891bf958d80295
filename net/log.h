// net/log.h: JSON log lines, one object per line on stderr, in the shape
// etcd's zap logger writes: {"level","ts","caller","msg", fields...}.
// Thread-safe; lines are written whole.
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

namespace muster::log {

enum class Level { kDebug, kInfo, kWarn, kError };

void write(Level level, std::string_view caller, std::string_view msg,
           const nlohmann::json& fields = nlohmann::json::object());

// Lines below this level are dropped (default kInfo).
void set_min_level(Level level);

inline void info(std::string_view caller, std::string_view msg,
                 const nlohmann::json& f = nlohmann::json::object()) {
  write(Level::kInfo, caller, msg, f);
}
inline void warn(std::string_view caller, std::string_view msg,
                 const nlohmann::json& f = nlohmann::json::object()) {
  write(Level::kWarn, caller, msg, f);
}
inline void error(std::string_view caller, std::string_view msg,
                  const nlohmann::json& f = nlohmann::json::object()) {
  write(Level::kError, caller, msg, f);
}

}  // namespace muster::log
