// h2_trivial_server: option (b) of issue 12 as a benchmark server.
//
// net/'s own server (HTTP/2 on asio with nghttp2, gRPC framing in net/)
// hands each gRPC call to ServerOptions::grpc_handler as a net::grpc::Call;
// this program answers /etcdserverpb.KV/Put and /etcdserverpb.KV/Range with
// the trivial handler (trivial_kv.h) that grpc_fd_server runs too, and
// UNIMPLEMENTED for any other method.  Requests are parsed and responses
// serialized with the same protobuf messages.
//
// Usage: h2_trivial_server [--listen 127.0.0.1:0] [--threads 2]
//                          [--cert server.pem --key server-key.pem]
// Prints "listening on HOST:PORT" once ready; stops on SIGTERM/SIGINT and
// prints the number of requests it answered.
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "base/runner.h"
#include "net/grpc.h"
#include "net/server.h"
#include "trivial_kv.h"

namespace {

namespace grpc = muster::net::grpc;

std::atomic<uint64_t> g_answered{0};

// Parses one request of type Req, runs `serve` and answers the call.
template <typename Req, typename Resp, typename Serve>
void answer(grpc::Call& call, const std::string& message, Serve serve) {
  Req req;
  if (!req.ParseFromString(message)) {
    call.finish({grpc::Code::kInternal, "grpc: error unmarshalling request"});
    return;
  }
  Resp resp;
  serve(req, &resp);
  call.send(resp.SerializeAsString());
  call.finish({});
  g_answered.fetch_add(1, std::memory_order_relaxed);
}

void serve_call(muster::bench::TrivialKv& kv, const std::shared_ptr<grpc::Call>& call) {
  const std::string& method = call->method();
  bool put = method == "/etcdserverpb.KV/Put";
  bool range = method == "/etcdserverpb.KV/Range";
  if (!put && !range) {
    call->start({});
    call->finish({grpc::Code::kUnimplemented, "unknown method " + method});
    return;
  }
  std::weak_ptr<grpc::Call> weak = call;
  grpc::Call::Listener l;
  l.on_message = [weak, put, &kv](std::string message) {
    auto c = weak.lock();
    if (!c) return;
    if (put)
      answer<etcdserverpb::PutRequest, etcdserverpb::PutResponse>(
          *c, message, [&kv](const auto& req, auto* resp) { kv.put(req, resp); });
    else
      answer<etcdserverpb::RangeRequest, etcdserverpb::RangeResponse>(
          *c, message, [&kv](const auto& req, auto* resp) { kv.range(req, resp); });
  };
  call->start(std::move(l));
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:0";
  int threads = 2;
  std::string cert, key;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view a = argv[i];
    if (a == "--listen") {
      listen = argv[i + 1];
    } else if (a == "--threads") {
      threads = std::stoi(argv[i + 1]);
    } else if (a == "--cert") {
      cert = argv[i + 1];
    } else if (a == "--key") {
      key = argv[i + 1];
    } else {
      std::fprintf(stderr, "usage: %s [--listen HOST:PORT] [--threads N] [--cert F --key F]\n",
                   argv[0]);
      return 2;
    }
  }
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "--listen wants HOST:PORT\n");
    return 2;
  }

  muster::bench::TrivialKv kv;
  muster::net::ServerOptions options;
  if (!cert.empty()) {
    muster::net::TlsOptions t;
    t.cert_file = cert;
    t.key_file = key;
    options.tls = t;
  }
  options.grpc_handler = [&kv](std::shared_ptr<grpc::Call> call) { serve_call(kv, call); };

  boost::asio::io_context io;
  muster::net::Server server(io, options, [](std::shared_ptr<muster::net::Exchange> ex) {
    ex->respond(muster::net::Response::text(404, "not found\n"));
  });
  uint16_t port = server.listen(listen.substr(0, colon),
                                static_cast<uint16_t>(std::stoi(listen.substr(colon + 1))));
  std::printf("listening on %s:%u\n", listen.substr(0, colon).c_str(), port);
  std::fflush(stdout);

  muster::base::run_until_signal(io, threads, [&server] { server.stop(); });
  std::printf("answered %llu\n", static_cast<unsigned long long>(g_answered.load()));
  return 0;
}
