#include "base/log.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
// etcd sends no CODE_FILE/CODE_LINE/CODE_FUNC fields; neither do we.
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace muster::log {

namespace {

constexpr const char* kJournalSocket = "/run/systemd/journal/socket";

// Where lines go.  Each sink writes one whole line.
struct Sink {
  virtual ~Sink() = default;
  virtual void write(Level level, std::string_view component, std::string_view message_only,
                     const std::string& line, std::string_view caller) = 0;
};

struct FdSink : Sink {
  explicit FdSink(int f, bool owned) : fd(f), owns(owned) {}
  ~FdSink() override {
    if (owns) ::close(fd);
  }
  void write(Level, std::string_view, std::string_view, const std::string& line,
             std::string_view) override {
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
      ssize_t n = ::write(fd, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // nowhere left to say it
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  int fd;
  bool owns;
};

int journal_priority(Level l) {
  switch (l) {
    case Level::kDebug:
      return 7;
    case Level::kInfo:
      return 6;
    case Level::kWarn:
      return 4;
    case Level::kError:
      return 3;
    case Level::kPanic:
    case Level::kFatal:
      return 2;
  }
  return 6;
}

// systemd's journal through sd-journal.  As etcd: with zap, MESSAGE is the
// whole JSON line and PACKAGE the caller's directory; with capnslog,
// MESSAGE is the message and PACKAGE the component.  A line the journal
// does not take goes to stderr instead.
struct JournalSink : Sink {
  JournalSink(bool whole_line, std::string program)
      : whole_line_(whole_line), program_(std::move(program)) {}
  void write(Level level, std::string_view component, std::string_view message_only,
             const std::string& line, std::string_view caller) override {
    std::string message = "MESSAGE=";
    if (whole_line_) {
      message.append(line, 0, line.empty() ? 0 : line.size() - 1);  // no trailing newline
    } else {
      message.append(message_only);
    }
    std::string priority = "PRIORITY=" + std::to_string(journal_priority(level));
    std::string package = "PACKAGE=";
    if (whole_line_) {
      auto slash = caller.rfind('/');
      package.append(slash == std::string_view::npos ? std::string_view(".")
                                                     : caller.substr(0, slash));
    } else {
      package.append(component);
    }
    std::string ident = "SYSLOG_IDENTIFIER=" + program_;
    iovec iov[4] = {{message.data(), message.size()},
                    {priority.data(), priority.size()},
                    {package.data(), package.size()},
                    {ident.data(), ident.size()}};
    if (sd_journal_sendv(iov, 4) < 0) stderr_.write(level, component, message_only, line, caller);
  }
  bool whole_line_;
  std::string program_;
  FdSink stderr_{2, false};
};

bool journal_reachable(std::string* err) {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = std::strerror(errno);
    return false;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, kJournalSocket, sizeof addr.sun_path - 1);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  if (!ok)
    *err = std::string("dial unixgram ") + kJournalSocket + ": connect: " + std::strerror(errno);
  ::close(fd);
  return ok;
}

struct State {
  bool capnslog = false;
  std::vector<std::unique_ptr<Sink>> sinks;
};

std::atomic<int> g_min_level{static_cast<int>(Level::kInfo)};
std::mutex g_mu;  // guards g_state and the sampler; whole lines only
std::shared_ptr<State> g_state = [] {
  auto s = std::make_shared<State>();
  s->sinks.push_back(std::make_unique<FdSink>(2, false));
  return s;
}();

// zap's production sampler: per level and message and second, the first 100
// lines, then every 100th.
struct Sampler {
  int64_t second = 0;
  std::unordered_map<std::size_t, uint64_t> seen;
  bool keep(Level level, std::string_view msg, int64_t now_s) {
    if (now_s != second) {
      second = now_s;
      seen.clear();
    }
    std::size_t key = std::hash<std::string_view>{}(msg) ^ (static_cast<std::size_t>(level) << 1);
    uint64_t n = ++seen[key];
    return n <= 100 || (n - 100) % 100 == 0;
  }
};
Sampler g_sampler;

const char* zap_level(Level l) {
  switch (l) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
    case Level::kPanic:
      return "panic";
    case Level::kFatal:
      return "fatal";
  }
  return "info";
}

// capnslog's letters: C E W N I D T.
char capnslog_letter(Level l) {
  switch (l) {
    case Level::kDebug:
      return 'D';
    case Level::kInfo:
      return 'I';
    case Level::kWarn:
      return 'W';
    case Level::kError:
      return 'E';
    case Level::kPanic:
    case Level::kFatal:
      return 'C';
  }
  return 'I';
}

std::string zap_time(std::chrono::system_clock::time_point now) {
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

std::string capnslog_time(std::chrono::system_clock::time_point now) {
  auto t = std::chrono::system_clock::to_time_t(now);
  auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()) % 1'000'000;
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d:%02d.%06ld", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long>(us.count()));
  return buf;
}

// zap's short caller: the file's directory and name, and the line.
std::string short_caller(const SourceLocation& where) {
  std::string_view file = where.file_name();
  auto last = file.rfind('/');
  if (last != std::string_view::npos && last > 0) {
    auto before = file.rfind('/', last - 1);
    file.remove_prefix(before == std::string_view::npos ? 0 : before + 1);
  }
  return std::string(file) + ":" + std::to_string(where.line());
}

std::unique_ptr<Sink> open_output(const std::string& out, const Options& o, std::string* err) {
  const bool capnslog = o.logger == "capnslog";
  if (out == "stderr") return std::make_unique<FdSink>(2, false);
  if (out == "stdout") return std::make_unique<FdSink>(1, false);
  if (out == "default") {
    // capnslog writes to the journal when started by init (systemd).
    std::string ignored;
    if (capnslog && ::getppid() == 1 && journal_reachable(&ignored))
      return std::make_unique<JournalSink>(false, o.program);
    return std::make_unique<FdSink>(2, false);
  }
  if (out == "systemd/journal") {
    std::string why;
    if (!journal_reachable(&why)) {
      *err = "can't find journal (" + why + ")";
      return nullptr;
    }
    return std::make_unique<JournalSink>(!capnslog, o.program);
  }
  int fd = ::open(out.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    *err = "open " + out + ": " + std::strerror(errno);
    return nullptr;
  }
  return std::make_unique<FdSink>(fd, true);
}

}  // namespace

std::optional<Level> parse_level(std::string_view n) {
  if (n == "debug") return Level::kDebug;
  if (n == "info") return Level::kInfo;
  if (n == "warn") return Level::kWarn;
  if (n == "error") return Level::kError;
  if (n == "dpanic" || n == "panic") return Level::kPanic;
  if (n == "fatal") return Level::kFatal;
  return std::nullopt;
}

std::string configure(const Options& o) {
  if (o.logger != "zap" && o.logger != "capnslog")
    return "unknown logger option \"" + o.logger + "\"";
  auto state = std::make_shared<State>();
  state->capnslog = o.logger == "capnslog";
  std::vector<std::string> seen;
  for (const auto& out : o.outputs.empty() ? std::vector<std::string>{"default"} : o.outputs) {
    // Two names for stderr, or one path twice, open one sink (zap merges them).
    std::string canon = out == "default" ? "stderr" : out;
    if (std::find(seen.begin(), seen.end(), canon) != seen.end()) continue;
    seen.push_back(canon);
    std::string err;
    auto sink = open_output(out, o, &err);
    if (!sink) return err;
    state->sinks.push_back(std::move(sink));
  }
  std::lock_guard lock(g_mu);
  g_state = std::move(state);
  g_min_level = static_cast<int>(o.level);
  return "";
}

void set_min_level(Level level) { g_min_level = static_cast<int>(level); }

bool enabled(Level level) { return static_cast<int>(level) >= g_min_level.load(); }

void write(Level level, std::string_view component, std::string_view msg,
           const nlohmann::json& fields, SourceLocation where) {
  if (!enabled(level)) return;
  const auto now = std::chrono::system_clock::now();
  std::shared_ptr<State> state;
  {
    std::lock_guard lock(g_mu);
    state = g_state;
    const auto sec =
        std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    if (level < Level::kPanic && !g_sampler.keep(level, msg, sec)) return;
  }
  const std::string caller = short_caller(where);
  std::string text;
  std::string body(msg);  // capnslog: the message and its fields
  if (state->capnslog) {
    if (fields.is_object())
      for (auto it = fields.begin(); it != fields.end(); ++it) {
        body += ' ';
        body += it.key();
        body += '=';
        body += it.value().is_string()
                    ? it.value().get<std::string>()
                    : it.value().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      }
    text = capnslog_time(now);
    text += ' ';
    text += capnslog_letter(level);
    text += " | ";
    if (!component.empty()) {
      text += component;
      text += ": ";
    }
    text += body;
  } else {
    nlohmann::ordered_json line;
    line["level"] = zap_level(level);
    line["ts"] = zap_time(now);
    line["caller"] = caller;
    line["msg"] = msg;
    if (fields.is_object())
      for (auto it = fields.begin(); it != fields.end(); ++it) line[it.key()] = it.value();
    text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  text.push_back('\n');
  std::lock_guard lock(g_mu);
  for (auto& s : state->sinks) s->write(level, component, body, text, caller);
}

}  // namespace muster::log
