#include "base/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

namespace muster::metrics {

namespace {

// Fields of /proc/self/stat after the command name (which may hold spaces),
// numbered as proc(5) numbers them: state is field 3.
struct Stat {
  double utime_ticks = 0, stime_ticks = 0, start_ticks = 0, vsize = 0, rss_pages = 0;
};

bool read_stat(Stat* s) {
  std::ifstream f("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream in(text.substr(close + 2));
  std::string field;
  for (int n = 3; in >> field; ++n) {
    if (n == 14) s->utime_ticks = std::stod(field);
    if (n == 15) s->stime_ticks = std::stod(field);
    if (n == 22) s->start_ticks = std::stod(field);
    if (n == 23) s->vsize = std::stod(field);
    if (n == 24) {
      s->rss_pages = std::stod(field);
      return true;
    }
  }
  return false;
}

double boot_time_seconds() {
  std::ifstream f("/proc/stat");
  std::string key;
  double value = 0;
  while (f >> key) {
    if (key == "btime" && f >> value) return value;
    f.ignore(1 << 20, '\n');
  }
  return 0;
}

double open_fds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return 0;
  double n = 0;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // the directory stream's own descriptor
}

double limit(int resource) {
  rlimit r{};
  if (::getrlimit(resource, &r) != 0) return 0;
  // RLIM_INFINITY is reported as the largest value, as Go's collector does.
  return r.rlim_cur == RLIM_INFINITY ? 1.8446744073709552e19 : static_cast<double>(r.rlim_cur);
}

}  // namespace

void update_process_metrics(Registry& reg) {
  static const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  static const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  static const double boot = boot_time_seconds();
  Stat s;
  if (read_stat(&s)) {
    reg.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")
        .set((s.utime_ticks + s.stime_ticks) / ticks);
    reg.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.").set(s.vsize);
    reg.gauge("process_resident_memory_bytes", "Resident memory size in bytes.")
        .set(s.rss_pages * page);
    reg.gauge("process_start_time_seconds",
              "Start time of the process since unix epoch in seconds.")
        .set(boot + s.start_ticks / ticks);
  }
  reg.gauge("process_open_fds", "Number of open file descriptors.").set(open_fds());
  reg.gauge("process_max_fds", "Maximum number of open file descriptors.")
      .set(limit(RLIMIT_NOFILE));
  reg.gauge("process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.")
      .set(limit(RLIMIT_AS));
}

}  // namespace muster::metrics
