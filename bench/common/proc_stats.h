// bench/common/proc_stats.h: resident memory and CPU time of server processes
// from /proc, for load generators that report a server's cost next to its
// speed.  Header-only; Linux only.
#pragma once

#include <unistd.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace muster::bench {

struct ProcSample {
  long rss_kb = 0;     // VmRSS
  long hwm_kb = 0;     // VmHWM (peak RSS since the process started)
  double cpu_s = 0;    // utime + stime
  bool alive = false;  // false when /proc/<pid> could not be read
};

// One process.  A pid that is gone (or <= 0) yields alive == false and zeros.
inline ProcSample proc_sample(int pid) {
  ProcSample s;
  if (pid <= 0) return s;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  if (!status) return s;
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kb = std::stol(line.substr(6));
    if (line.rfind("VmHWM:", 0) == 0) s.hwm_kb = std::stol(line.substr(6));
  }
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // The command name (field 2) is in parentheses and may contain spaces, so
  // fields are counted from the last ')'.  After it, state is field 3 and
  // utime/stime are fields 14 and 15 (clock ticks).
  auto close = all.rfind(')');
  if (close == std::string::npos || close + 2 >= all.size()) return s;
  std::istringstream rest(all.substr(close + 2));
  std::vector<std::string> f;
  std::string x;
  while (rest >> x) f.push_back(x);
  if (f.size() <= 13) return s;
  s.cpu_s = (std::stod(f[11]) + std::stod(f[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
  s.alive = true;
  return s;
}

// The sum over several processes (e.g. the members of one cluster); alive only
// when every one of them could be read.
inline ProcSample proc_sample_sum(const std::vector<int>& pids) {
  ProcSample total;
  total.alive = !pids.empty();
  for (int pid : pids) {
    ProcSample s = proc_sample(pid);
    total.rss_kb += s.rss_kb;
    total.hwm_kb += s.hwm_kb;
    total.cpu_s += s.cpu_s;
    total.alive = total.alive && s.alive;
  }
  return total;
}

}  // namespace muster::bench
