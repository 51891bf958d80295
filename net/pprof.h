// net/pprof.h: /debug/pprof/ as Go's net/http/pprof serves it, for
// --enable-pprof.  The profiles are gperftools' (Debian's
// libgoogle-perftools-dev), in the format `pprof` and `go tool pprof` read:
//
//   /debug/pprof/profile?seconds=N  CPU profile of the whole process for N
//                                   seconds (default 30, at most 3600);
//                                   one at a time, as Go's
//   /debug/pprof/heap               live heap, sampled every 512 KiB (Go's
//                                   default rate) by tcmalloc
//   /debug/pprof/cmdline            the command line, NUL-separated
//   /debug/pprof/                   an index page
//
// Heap sampling must be on when the process starts (tcmalloc reads
// TCMALLOC_SAMPLE_PARAMETER before main), so enable_heap_sampling()
// re-executes the program once with it set.  Only programs that link
// muster_pprof (which brings tcmalloc and gperftools' profiler) use this.
#pragma once

#include <memory>

#include "net/server.h"

namespace boost::asio {
class io_context;
}

namespace muster::net::pprof {

// Go's runtime.MemProfileRate default.
constexpr long kHeapSampleBytes = 512 * 1024;

// When TCMALLOC_SAMPLE_PARAMETER is not set, re-executes /proc/self/exe with
// the same arguments and environment plus TCMALLOC_SAMPLE_PARAMETER=524288
// (same PID).  Returns only when sampling is already on, or when the
// re-execution failed (then returns false and the heap profile says so).
// REQUIRES: called early in main, before any thread starts.
bool enable_heap_sampling(char** argv);

class Handler {
 public:
  // Profiles are written to files under `scratch_dir` while they are taken.
  Handler(boost::asio::io_context& io, std::string scratch_dir);
  ~Handler();
  // Answers requests under /debug/pprof/; returns false for other paths.
  bool handle(const std::shared_ptr<Exchange>& ex);

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace muster::net::pprof
