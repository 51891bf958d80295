#include "net/runner.h"

#include <boost/asio.hpp>
#include <csignal>
#include <thread>
#include <utility>
#include <vector>

namespace muster::net {

int run_until_signal(boost::asio::io_context& io, int threads, std::function<void()> on_signal,
                     int grace_ms) {
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  boost::asio::steady_timer grace(io);
  int got = 0;
  std::function<void(const boost::system::error_code&, int)> handler =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        if (got != 0) {  // second signal: stop now
          io.stop();
          return;
        }
        got = sig;
        if (on_signal) on_signal();
        grace.expires_after(std::chrono::milliseconds(grace_ms));
        grace.async_wait([&](const boost::system::error_code& e) {
          if (!e) io.stop();
        });
        signals.async_wait(handler);
      };
  signals.async_wait(handler);
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  return got;
}

}  // namespace muster::net
