// ctl/progress.h: a progress line on standard error for operations a
// person waits on (snapshot save, check perf/datascale, member add
// waiting for catch-up).  Drawn in place ("\r") and only when standard
// error is a terminal, so scripts and pipes see nothing but the results.
// MUSTERCTL_PROGRESS=always draws it anyway (one line per update, no "\r"),
// =never turns it off.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace muster::ctl {

class Progress {
 public:
  // `what` leads the line: "snapshot save", "check perf".
  explicit Progress(std::string what);
  ~Progress();  // finishes the line
  bool enabled() const { return enabled_; }

  // Redraws with `text` (at most ~10 times a second unless `force`).
  void update(const std::string& text, bool force = false);
  // Ends the line with a final text.
  void finish(const std::string& text);

  // "1.5 MiB", "312 B".
  static std::string bytes(uint64_t n);
  // A bar of `width` cells: "[#####     ]".
  static std::string bar(double fraction, int width = 30);

 private:
  std::string what_;
  bool enabled_ = false;
  bool in_place_ = true;
  bool drawn_ = false;
  std::mutex mu_;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace muster::ctl
