// tests/support/process.h: child processes that cannot outlive the test,
// and running a program to completion with its output captured.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace muster::testing {

// One child process with stdout and stderr appended to a log file.  It gets
// SIGKILL when the test process dies (PR_SET_PDEATHSIG) and when this object
// is destroyed, so nothing outlives a test, failed or not.
class Child {
 public:
  Child() = default;
  // Starts `argv` (argv[0] a path) at once; aborts the test binary when
  // fork fails.  `cwd`: its working directory ("" = ours); `env`: its whole
  // environment (nullopt = ours).
  Child(const std::vector<std::string>& argv, const std::string& log_path,
        const std::string& cwd = "", std::optional<std::vector<std::string>> env = std::nullopt);
  ~Child() { kill(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Starts `argv`, killing a previous child first.  "" or why not.
  std::string spawn(const std::vector<std::string>& argv, const std::string& log_path,
                    const std::string& cwd = "",
                    std::optional<std::vector<std::string>> env = std::nullopt);
  bool running();
  void kill();  // SIGKILL and reap; nothing when not running

  const std::string& log_path() const { return log_; }
  std::string log() const;  // the log file's text

  // Waits until the log holds a whole line containing `needle` and returns
  // that line; "" when the process exits or the deadline passes first.
  std::string wait_for_line(const std::string& needle, std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  std::string log_;
};

// Runs a shell command; returns whether it exited 0, its stdout in *out.
bool run_command(const std::string& cmd, std::string* out);

struct ProcessResult {
  int exit_code = -1;  // -1 if killed by a signal or timed out
  bool timed_out = false;
  std::string out;
  std::string err;
};

// Runs `argv` (argv[0] a path), captures stdout and stderr, kills it after
// `deadline`.
ProcessResult run_process(const std::vector<std::string>& argv,
                          std::chrono::milliseconds deadline = std::chrono::seconds(30));

}  // namespace muster::testing
