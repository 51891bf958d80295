#include "base/runner.h"

#include <pthread.h>

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <csignal>
#include <thread>
#include <utility>
#include <vector>

namespace muster::base {

void set_thread_name(const char* name) { ::pthread_setname_np(::pthread_self(), name); }

int run_until_signal(boost::asio::io_context& io, int threads, std::function<void()> on_signal,
                     int grace_ms) {
  // The signal set and the grace timer live on their own io_context and
  // thread.  On `io` they would be pending work, so `io` could never run dry:
  // every graceful stop would last the whole grace period, and a run without
  // a signal would never end.
  boost::asio::io_context control;
  boost::asio::signal_set signals(control, SIGINT, SIGTERM);
  boost::asio::steady_timer grace(control);
  std::atomic<int> got{0};
  std::function<void(const boost::system::error_code&, int)> handler =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        if (got.load() != 0) {  // second signal: stop now
          io.stop();
          return;
        }
        got = sig;
        if (on_signal) boost::asio::post(io, on_signal);
        grace.expires_after(std::chrono::milliseconds(grace_ms));
        grace.async_wait([&](const boost::system::error_code& e) {
          if (!e) io.stop();
        });
        signals.async_wait(handler);
      };
  signals.async_wait(handler);
  std::thread control_thread([&] {
    set_thread_name("signals");
    control.run();
  });
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i)
    pool.emplace_back([&] {
      set_thread_name("io");
      io.run();
    });
  io.run();
  for (auto& t : pool) t.join();
  control.stop();
  control_thread.join();
  return got.load();
}

}  // namespace muster::base
