// base/runner.h: runs an io_context on a few threads until SIGTERM/SIGINT.
#pragma once

#include <functional>

namespace boost::asio {
class io_context;
}

namespace muster::base {

// Names the calling thread (as ps, top and perf show it; 15 characters at
// most), e.g. "raft", "apply", "io".
void set_thread_name(const char* name);

// Runs `io` on `threads` threads.  On the first SIGTERM or SIGINT calls
// `on_signal` (on an io thread): it should stop servers and release work so
// that `io` runs dry.  A second signal, or `grace_ms` after the first, stops
// `io` outright.  Returns the signal number that ended the run (0 if `io`
// ran out of work by itself).
int run_until_signal(boost::asio::io_context& io, int threads, std::function<void()> on_signal,
                     int grace_ms = 5000);

}  // namespace muster::base
