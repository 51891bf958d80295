// base/log.h: the process's log, in the two shapes etcd 3.4 writes.
//
//   zap (default): one JSON object per line, keys `level`, `ts`, `caller`,
//     `msg`, then the fields: {"level":"info","ts":"...","caller":
//     "server/raft_node.cpp:541","msg":"...","member-id":"..."}.  `caller`
//     is the call site's directory and file, as zap's short caller encoder
//     writes it.
//   capnslog: `2024-01-02 15:04:05.123456 I | etcdserver: msg key=value`,
//     the component name standing where capnslog puts its package.
//
// Outputs, as etcd's --log-outputs: "stderr", "stdout", "default" (stderr;
// with capnslog, the journal when the parent is PID 1 and a journal is
// there, as capnslog does), file paths (appended to, created 0600), and
// "systemd/journal" (sd-journal: MESSAGE is the whole line, PRIORITY from
// the level, PACKAGE and SYSLOG_IDENTIFIER as etcd sets them).
//
// Like zap's production logger, a message logged more than 100 times in one
// second is sampled: after the first 100, every 100th is written.
//
// Thread-safe; lines are written whole.  configure() is called once, early
// in main, before other threads log.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <source_location>
#include <string>
#include <string_view>
#include <vector>

namespace muster::log {

// Where a line was logged.  std::source_location where the library has it;
// clang 14 (the sanitizer and fuzz builds, tests/sanitize.sh) with libstdc++
// 12 does not (its __builtin_source_location came with clang 15), and gets
// the same three facts from the older builtins, which both compilers have.
#if defined(__cpp_lib_source_location)
using SourceLocation = std::source_location;
#else
struct SourceLocation {
  static constexpr SourceLocation current(const char* file = __builtin_FILE(),
                                          unsigned line = __builtin_LINE(),
                                          const char* function = __builtin_FUNCTION()) noexcept {
    return SourceLocation{file, line, function};
  }
  constexpr const char* file_name() const noexcept { return file_; }
  constexpr unsigned line() const noexcept { return line_; }
  constexpr const char* function_name() const noexcept { return function_; }
  const char* file_;
  unsigned line_;
  const char* function_;
};
#endif

enum class Level { kDebug, kInfo, kWarn, kError, kPanic, kFatal };

// "debug", "info", "warn", "error", "dpanic"/"panic", "fatal".
std::optional<Level> parse_level(std::string_view name);

struct Options {
  std::string logger = "zap";                   // "zap" | "capnslog"
  std::vector<std::string> outputs{"default"};  // see above
  Level level = Level::kInfo;
  std::string program;  // SYSLOG_IDENTIFIER for the journal (argv[0]'s base name)
};

// Sets the logger up.  Returns "" or a sentence saying what is wrong (an
// unknown logger, a file that cannot be opened, no journal to write to);
// on error the previous set-up stays.
std::string configure(const Options& options);

// Lines below this level are dropped (default kInfo).
void set_min_level(Level level);
bool enabled(Level level);

void write(Level level, std::string_view component, std::string_view msg,
           const nlohmann::json& fields = nlohmann::json::object(),
           SourceLocation where = SourceLocation::current());

inline void debug(std::string_view c, std::string_view msg,
                  const nlohmann::json& f = nlohmann::json::object(),
                  SourceLocation w = SourceLocation::current()) {
  write(Level::kDebug, c, msg, f, w);
}
inline void info(std::string_view c, std::string_view msg,
                 const nlohmann::json& f = nlohmann::json::object(),
                 SourceLocation w = SourceLocation::current()) {
  write(Level::kInfo, c, msg, f, w);
}
inline void warn(std::string_view c, std::string_view msg,
                 const nlohmann::json& f = nlohmann::json::object(),
                 SourceLocation w = SourceLocation::current()) {
  write(Level::kWarn, c, msg, f, w);
}
inline void error(std::string_view c, std::string_view msg,
                  const nlohmann::json& f = nlohmann::json::object(),
                  SourceLocation w = SourceLocation::current()) {
  write(Level::kError, c, msg, f, w);
}
// A line that ends the program (the caller exits); written at every level.
inline void fatal(std::string_view c, std::string_view msg,
                  const nlohmann::json& f = nlohmann::json::object(),
                  SourceLocation w = SourceLocation::current()) {
  write(Level::kFatal, c, msg, f, w);
}

}  // namespace muster::log
