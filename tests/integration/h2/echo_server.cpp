// tests/integration/h2/echo_server.cpp: a net::Server that speaks gRPC and
// HTTP on one port, for tests that drive net/'s HTTP/2 with real clients
// (grpc C-core through python3-grpcio, curl).  Knows no etcd.
//
//   h2_echo_server [--cert FILE --key FILE] [--max-message BYTES]
//                  [--max-queued BYTES]
// prints "PORT <n>" once listening on 127.0.0.1, serves until SIGTERM.
//
// gRPC methods (raw bytes in, raw bytes out):
//   /test.Echo/Unary   answers the request message
//   /test.Echo/Stream  answers each message as it comes, finishes on half-close
//   /test.Echo/Fail    finishes with INVALID_ARGUMENT and the request as message
//   /test.Echo/Hang    never answers (deadlines, cancellation)
//   /test.Echo/Flood   queues 200 messages of the requested size at once
// HTTP: GET /hello, POST /echo (the body back), GET /stats (counters as JSON),
// GET /stream (three chunks).
#include <atomic>
#include <boost/asio.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "base/runner.h"
#include "net/grpc.h"
#include "net/server.h"

using namespace muster;
namespace grpc = muster::net::grpc;

namespace {

std::atomic<int> g_cancels{0}, g_calls{0};

// Queues `count` messages of `size` bytes at once: more than the stream's
// send-queue bound when the client cannot drain them as fast.
void flood(const std::shared_ptr<grpc::Call>& call, size_t size, int count) {
  for (int i = 0; i < count && !call->done(); ++i) call->send(std::string(size, 'f'));
  call->finish({});
}

void serve_grpc(std::shared_ptr<grpc::Call> call) {
  g_calls++;
  const std::string m = call->method();
  std::weak_ptr<grpc::Call> weak = call;
  grpc::Call::Listener l;
  l.on_cancel = [] { g_cancels++; };
  if (m == "/test.Echo/Unary" || m == "/test.Echo/Stream") {
    l.on_message = [weak](std::string msg) {
      if (auto c = weak.lock()) c->send(std::move(msg));
    };
    l.on_half_close = [weak] {
      if (auto c = weak.lock()) c->finish({});
    };
  } else if (m == "/test.Echo/Fail") {
    l.on_message = [weak](std::string msg) {
      if (auto c = weak.lock()) c->finish({grpc::Code::kInvalidArgument, msg});
    };
  } else if (m == "/test.Echo/Hang") {
  } else if (m == "/test.Echo/Flood") {
    l.on_message = [weak](std::string msg) {
      if (auto c = weak.lock()) flood(c, std::stoul(msg), 200);
    };
  } else {
    return;  // not started: net/ answers UNIMPLEMENTED
  }
  call->start(std::move(l));
}

}  // namespace

int main(int argc, char** argv) {
  net::ServerOptions so;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i], v = argv[i + 1];
    if (f == "--cert") {
      if (!so.tls) so.tls.emplace();
      so.tls->cert_file = v;
    } else if (f == "--key") {
      if (!so.tls) so.tls.emplace();
      so.tls->key_file = v;
    } else if (f == "--max-message") {
      so.grpc.max_receive_message_bytes = std::stoul(v);
    } else if (f == "--max-queued") {
      so.grpc.max_queued_bytes_per_stream = std::stoul(v);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", f.c_str());
      return 2;
    }
  }
  so.grpc_handler = serve_grpc;
  boost::asio::io_context io;
  net::Server server(io, so, [](std::shared_ptr<net::Exchange> ex) {
    const auto& r = ex->request();
    if (r.target == "/hello") return ex->respond(net::Response::text(200, "hello\n"));
    if (r.target == "/echo") return ex->respond(net::Response::text(200, r.body));
    if (r.target == "/stats")
      return ex->respond(
          net::Response::json(200, "{\"calls\":" + std::to_string(g_calls.load()) +
                                       ",\"cancels\":" + std::to_string(g_cancels.load()) + "}"));
    if (r.target == "/stream") {
      ex->begin_stream(net::Response::text(200, ""));
      for (int i = 0; i < 3; ++i) ex->write("chunk" + std::to_string(i) + "\n");
      return ex->end_stream();
    }
    ex->respond(net::Response::text(404, "not found\n"));
  });
  uint16_t port = server.listen("127.0.0.1", 0);
  std::printf("PORT %u\n", port);
  std::fflush(stdout);
  base::run_until_signal(
      io, 2,
      [&] {
        server.stop();
        io.stop();
      },
      3000);
  return 0;
}
