#include "net/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace muster::log {

namespace {
std::atomic<int> g_min_level{static_cast<int>(Level::kInfo)};
std::mutex g_write_mu;  // whole lines only

const char* level_name(Level l) {
  switch (l) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}

std::string now_rfc3339() {
  auto now = std::chrono::system_clock::now();
  auto t = std::chrono::system_clock::to_time_t(now);
  auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()) % 1'000'000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long>(us.count()));
  return buf;
}
}  // namespace

void set_min_level(Level level) { g_min_level = static_cast<int>(level); }

void write(Level level, std::string_view caller, std::string_view msg,
           const nlohmann::json& fields) {
  if (static_cast<int>(level) < g_min_level.load()) return;
  nlohmann::ordered_json line;
  line["level"] = level_name(level);
  line["ts"] = now_rfc3339();
  line["caller"] = caller;
  line["msg"] = msg;
  if (fields.is_object())
    for (auto it = fields.begin(); it != fields.end(); ++it) line[it.key()] = it.value();
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.push_back('\n');
  std::lock_guard lock(g_write_mu);
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

}  // namespace muster::log
