// base::run_until_signal: SIGTERM stops servers gracefully and the run ends as
// soon as the io_context has drained; a second signal or the grace period
// ends it outright; without a signal it ends when work runs out.
//
// Signals are sent to this process only from inside the run (posted to the
// io_context), when the runner's handler is certainly installed.
#include "base/runner.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include "net/client.h"
#include "net/server.h"
#include "tests/unit/net/net_test_support.h"

namespace muster::base {
namespace {

using namespace muster::net;
using namespace muster::net::testing;

void send_sigterm() { ::kill(::getpid(), SIGTERM); }

TEST(Runner, ReturnsZeroWhenWorkRunsOutWithoutASignal) {
  boost::asio::io_context io;
  int ran = 0;
  boost::asio::post(io, [&] { ++ran; });
  bool called = false;
  EXPECT_EQ(run_until_signal(
                io, 2, [&] { called = true; }, 10'000),
            0);
  EXPECT_EQ(ran, 1);
  EXPECT_FALSE(called);
}

TEST(Runner, SigtermStopsTheServerAndReturnsAsSoonAsItHasDrained) {
  boost::asio::io_context io;
  Slot<bool> parked;
  Server server(io, {}, [&](std::shared_ptr<Exchange> ex) {
    if (ex->request().path() != "/wait") return ex->respond(Response::text(200, "ok"));
    ex->on_cancel([ex] { ex->respond(Response::text(200, "")); });
    parked.set(true);
  });
  uint16_t port = server.listen("127.0.0.1", 0);
  Slot<ClientResult> poll;
  std::thread client(
      [&] { poll.set(HttpClient().get("http://127.0.0.1:" + std::to_string(port) + "/wait")); });
  // Signal once the long-poll is pending (its handler ran inside the run, so
  // the runner's signal handler is installed by then).
  std::thread signaller([&] {
    if (parked.wait(10'000ms))
      send_sigterm();
    else
      io.stop();
  });
  std::atomic<int> on_signal_calls{0};
  auto start = Clock::now();
  int sig = run_until_signal(
      io, 2,
      [&] {
        ++on_signal_calls;
        server.stop();
      },
      10'000);
  auto took = Clock::now() - start;
  signaller.join();
  client.join();
  EXPECT_EQ(sig, SIGTERM);
  EXPECT_EQ(on_signal_calls.load(), 1);
  // Draining takes milliseconds; waiting out the 10 s grace would be a bug.
  EXPECT_LT(took, 3000ms) << "run_until_signal waited "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                          << " ms after the server had drained";
  auto r = poll.wait();
  ASSERT_TRUE(r && r->ok()) << (r ? r->error : "no answer");
  EXPECT_EQ(r->response->status, 200);
}

TEST(Runner, SecondSignalStopsAtOnce) {
  boost::asio::io_context io;
  Server server(io, {}, [](std::shared_ptr<Exchange>) {});
  server.listen("127.0.0.1", 0);  // the pending accept keeps io busy
  boost::asio::post(io, send_sigterm);
  auto start = Clock::now();
  int calls = 0;
  int sig = run_until_signal(
      io, 1,
      [&] {
        ++calls;
        send_sigterm();  // impatient operator: a second Ctrl-C
      },
      10'000);
  EXPECT_EQ(sig, SIGTERM);
  EXPECT_EQ(calls, 1);
  EXPECT_LT(Clock::now() - start, 3000ms);
  server.stop();
}

TEST(Runner, GracePeriodEndsARunThatWouldNotDrain) {
  boost::asio::io_context io;
  Server server(io, {}, [](std::shared_ptr<Exchange>) {});
  server.listen("127.0.0.1", 0);
  boost::asio::post(io, send_sigterm);
  auto start = Clock::now();
  int sig = run_until_signal(
      io, 2, [] { /* forgets to stop anything */ }, 300);
  auto took = Clock::now() - start;
  EXPECT_EQ(sig, SIGTERM);
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 3000ms);
  server.stop();
}

}  // namespace
}  // namespace muster::base
