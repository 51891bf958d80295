// node/server/v3_grpc.h: etcd 3.4's v3 gRPC API on the member's client
// URLs: routes the calls net/'s HTTP/2 server delivers (net/grpc.h) to
// V3Service (node/server/v3_service.h).
//
// Who uses it: node/main.cpp sets ServerOptions::grpc_handler of every
// client listener to handler().  Paths are "/etcdserverpb.<Service>/<Method>"
// for the six services of api/etcdserverpb/rpc.proto; messages are that
// file's, in protobuf's binary form.
//
// Behaviour as etcd's server (grpc-go) shows it to clients:
//   - an unknown path: UNIMPLEMENTED "unknown service <pkg.Service>" or
//     "unknown method <Method> for service <pkg.Service>";
//   - a request that does not parse: INVALID_ARGUMENT "grpc: error
//     unmarshalling request: ...";
//   - metadata hasleader=true while the member knows no leader: UNAVAILABLE
//     "etcdserver: no leader" (unary calls and streams alike);
//   - errors of the service: its code and etcd's text.
// Streams: Watch (bidi, many watchers per stream), LeaseKeepAlive (bidi,
// one answer per request, in order), Snapshot (server stream).  A watch
// stream whose client leaves more than watch_max_queued_bytes unread is
// ended with UNAVAILABLE, which makes clientv3 resume its watchers on a new
// stream, instead of buffering without bound.
//
// Threads: handle() runs on the connection's strand and never blocks;
// answers go out from the service's callbacks (any thread).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/metrics.h"
#include "net/grpc.h"
#include "node/server/v3_service.h"

namespace google::protobuf {
class Descriptor;
}

namespace muster::server {

class V3Grpc {
 public:
  struct Options {
    std::size_t watch_max_queued_bytes = 16u << 20;
    // --metrics=extensive: grpc_server_handling_seconds as well.
    bool handling_time_histogram = false;
  };

  // REQUIRES: service and metrics outlive this object, and the servers
  // whose handler() it is are stopped before it is destroyed.
  V3Grpc(V3Service& service, metrics::Registry& metrics, Options options);
  V3Grpc(V3Service& service, metrics::Registry& metrics) : V3Grpc(service, metrics, Options{}) {}
  ~V3Grpc();
  V3Grpc(const V3Grpc&) = delete;
  V3Grpc& operator=(const V3Grpc&) = delete;

  void handle(std::shared_ptr<net::grpc::Call> call);
  net::grpc::Handler handler() {
    return [this](std::shared_ptr<net::grpc::Call> c) { handle(std::move(c)); };
  }

  // Every path this adapter answers, with the message types and streaming
  // kinds it treats it with (tests check them against rpc.proto's services).
  struct Route {
    std::string path;
    const google::protobuf::Descriptor* request = nullptr;
    const google::protobuf::Descriptor* response = nullptr;
    bool client_streaming = false;
    bool server_streaming = false;
  };
  static std::vector<Route> routes();

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace muster::server
