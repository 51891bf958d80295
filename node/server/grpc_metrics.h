// node/server/grpc_metrics.h: the grpc_server_* families etcd exports
// through go-grpc-prometheus, which etcd's Grafana dashboard and alert rules
// query (RPC rate, failed RPCs, open watch and lease streams, slow RPCs):
//
//   grpc_server_started_total{grpc_method,grpc_service,grpc_type}
//   grpc_server_handled_total{grpc_code,grpc_method,grpc_service,grpc_type}
//   grpc_server_msg_received_total{grpc_method,grpc_service,grpc_type}
//   grpc_server_msg_sent_total{grpc_method,grpc_service,grpc_type}
//   grpc_server_handling_seconds{...} histogram, with --metrics=extensive
//
// grpc_type is unary, client_stream, server_stream or bidi_stream; codes are
// Go's names ("OK", "Canceled", "Unavailable").  As go-grpc-prometheus
// does, every method's series exist from the start (at 0, every code).
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "base/metrics.h"
#include "net/grpc.h"

namespace muster::server {

class GrpcServerMetrics {
 public:
  struct Method {
    std::string path;  // "/etcdserverpb.KV/Range"
    bool client_streaming = false;
    bool server_streaming = false;
  };
  // REQUIRES: `registry` outlives this object and every call it wraps.
  GrpcServerMetrics(metrics::Registry& registry, const std::vector<Method>& methods,
                    bool handling_time_histogram);

  // A call that counts itself: started now, each message received and sent,
  // handled with its code at finish() (Canceled or DeadlineExceeded when it
  // is cancelled).  `method` is one of the methods given above.
  std::shared_ptr<net::grpc::Call> wrap(std::shared_ptr<net::grpc::Call> call,
                                        const Method& method);

  // The method of `path`, or nullptr.
  const Method* find(std::string_view path) const;

  // Go's name of a gRPC code, as grpc_code carries it.
  static const char* code_name(net::grpc::Code code);

  // One method's instruments, looked up once (calls touch no map).
  struct Instruments {
    metrics::Counter* started = nullptr;
    metrics::Counter* received = nullptr;
    metrics::Counter* sent = nullptr;
    metrics::Histogram* seconds = nullptr;        // with --metrics=extensive only
    std::array<metrics::Counter*, 17> handled{};  // by code
  };

 private:
  std::vector<Method> methods_;
  std::vector<Instruments> instruments_;  // parallel to methods_
};

}  // namespace muster::server
