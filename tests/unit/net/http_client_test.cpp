// net::AsyncHttpClient on its own io_context: calls that hold no thread,
// the connection rules (pooled reads, fresh connections for calls that must
// not be sent twice), per-read timeouts versus the call's deadline on a
// streamed answer, cancellation, and dial failures that name their step.
#include "net/http_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <thread>

#include "tests/support/ports.h"
#include "tests/unit/net/net_test_support.h"

namespace muster::net {
namespace {

using namespace muster::net::testing;
using Step = ClientResult::Step;

// An io_context on one thread for the client under test.
class ClientLoop {
 public:
  ClientLoop() : guard_(boost::asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}
  ~ClientLoop() {
    guard_.reset();
    thread_.join();
  }
  boost::asio::any_io_executor executor() { return io_.get_executor(); }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::thread thread_;
};

void echo(const std::shared_ptr<Exchange>& ex) {
  ex->respond(Response::text(200, ex->request().method + " " + ex->request().target));
}

TEST(AsyncHttpClient, ManyCallsInFlightOnOneThread) {
  RunningServer s(echo);
  ClientLoop loop;
  AsyncHttpClient c(loop.executor());
  constexpr int kCalls = 20;
  std::atomic<int> ok{0};
  Slot<bool> all_done;
  std::atomic<int> done{0};
  for (int i = 0; i < kCalls; ++i) {
    c.request({"GET", s.url("/n/" + std::to_string(i))}, [&, i](ClientResult r) {
      if (r.ok() && r.response->body == "GET /n/" + std::to_string(i)) ++ok;
      if (++done == kCalls) all_done.set(true);
    });
  }
  ASSERT_TRUE(all_done.wait());
  EXPECT_EQ(ok.load(), kCalls);
}

TEST(AsyncHttpClient, ReadsShareAConnectionCallsThatMustNotRepeatGetTheirOwn) {
  RunningServer s(echo);
  ClientLoop loop;
  AsyncHttpClient c(loop.executor());
  for (int i = 0; i < 3; ++i) {
    Slot<ClientResult> r;
    c.request({"GET", s.url("/read")}, [&](ClientResult x) { r.set(std::move(x)); });
    ASSERT_TRUE(r.wait()->ok());
  }
  EXPECT_TRUE(wait_until([&] { return s.server().open_connections() == 1; }));
  ClientRequest write("POST", s.url("/write"), "v");
  write.reuse_connection = false;
  Slot<ClientResult> w;
  c.request(write, [&](ClientResult x) { w.set(std::move(x)); });
  ASSERT_TRUE(w.wait()->ok());
  // The write's connection was closed after its answer; the pooled one stays.
  EXPECT_TRUE(wait_until([&] { return s.server().open_connections() == 1; }));
}

TEST(AsyncHttpClient, AStalledStreamIsBrokenByTheReadTimeoutButEndsCleanlyAtTheDeadline) {
  RunningServer s([](std::shared_ptr<Exchange> ex) {
    ex->begin_stream(Response::json(200, ""));
    ex->write("first\n");
  });
  ClientLoop loop;
  ClientOptions o;
  o.read_timeout = std::chrono::milliseconds(200);
  AsyncHttpClient stalls(loop.executor(), o);
  Slot<ClientResult> broken;
  std::string got;
  stalls.stream({"GET", s.url("/watch")},
                {nullptr,
                 [&](std::string_view d) {
                   got.append(d);
                   return true;
                 }},
                [&](ClientResult r) { broken.set(std::move(r)); });
  auto r = broken.wait();
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->ok());
  EXPECT_EQ(r->step, Step::kBody);
  EXPECT_NE(r->error.find("broke"), std::string::npos) << r->error;
  EXPECT_EQ(got, "first\n");

  AsyncHttpClient ends(loop.executor());
  ClientRequest req("GET", s.url("/watch"));
  req.timeout = std::chrono::milliseconds(300);
  Slot<ClientResult> ended;
  ends.stream(req, {}, [&](ClientResult r) { ended.set(std::move(r)); });
  r = ended.wait();
  ASSERT_TRUE(r);
  ASSERT_TRUE(r->ok()) << r->error;  // the head stands
  EXPECT_EQ(r->response->status, 200);
}

TEST(AsyncHttpClient, CancelEndsAnOpenStreamAtOnce) {
  RunningServer s([](std::shared_ptr<Exchange> ex) { ex->begin_stream(Response::json(200, "")); });
  ClientLoop loop;
  AsyncHttpClient c(loop.executor());
  Slot<bool> head;
  Slot<ClientResult> done;
  ClientRequest req("GET", s.url("/watch"));
  req.timeout = std::chrono::milliseconds(0);
  auto call = c.stream(req,
                       {[&](const Response&, std::optional<uint64_t>, bool) {
                          head.set(true);
                          return true;
                        },
                        nullptr},
                       [&](ClientResult r) { done.set(std::move(r)); });
  ASSERT_TRUE(head.wait());
  call->cancel();
  auto r = done.wait();
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->ok());
  EXPECT_EQ(r->error, "cancelled");
}

TEST(AsyncHttpClient, DialFailuresNameTheirStep) {
  ClientLoop loop;
  AsyncHttpClient c(loop.executor());
  const uint16_t closed = muster::testing::free_port();
  Slot<ClientResult> r;
  c.request({"POST", "http://127.0.0.1:" + std::to_string(closed) + "/x", "body"},
            [&](ClientResult x) { r.set(std::move(x)); });
  auto got = r.wait();
  ASSERT_TRUE(got);
  EXPECT_FALSE(got->ok());
  EXPECT_EQ(got->step, Step::kConnect);
  EXPECT_FALSE(got->maybe_sent());  // nothing can have been applied
  EXPECT_EQ(got->error.rfind("cannot connect to 127.0.0.1:", 0), 0u) << got->error;
}

}  // namespace
}  // namespace muster::net
