#include "ctl/progress.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

namespace muster::ctl {

Progress::Progress(std::string what) : what_(std::move(what)) {
  const char* mode = std::getenv("MUSTERCTL_PROGRESS");
  if (mode && std::strcmp(mode, "always") == 0) {
    enabled_ = true;
    in_place_ = ::isatty(2) == 1;
  } else if (mode && std::strcmp(mode, "never") == 0) {
    enabled_ = false;
  } else {
    enabled_ = ::isatty(2) == 1;
  }
}

Progress::~Progress() {
  std::lock_guard lock(mu_);
  if (enabled_ && drawn_ && in_place_) std::cerr << "\n" << std::flush;
}

void Progress::update(const std::string& text, bool force) {
  if (!enabled_) return;
  std::lock_guard lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  if (!force && drawn_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  drawn_ = true;
  if (in_place_)
    std::cerr << "\r\033[K" << what_ << ": " << text << std::flush;
  else
    std::cerr << what_ << ": " << text << "\n" << std::flush;
}

void Progress::finish(const std::string& text) {
  update(text, true);
  std::lock_guard lock(mu_);
  if (enabled_ && in_place_) std::cerr << "\n" << std::flush;
  drawn_ = false;
}

std::string Progress::bytes(uint64_t n) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, kUnits[u]);
  return buf;
}

std::string Progress::bar(double fraction, int width) {
  if (fraction < 0) fraction = 0;
  if (fraction > 1) fraction = 1;
  const int full = static_cast<int>(fraction * width + 0.5);
  return "[" + std::string(full, '#') + std::string(width - full, ' ') + "]";
}

}  // namespace muster::ctl
