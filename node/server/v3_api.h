// node/server/v3_api.h: the client-facing HTTP API of a member on
// --listen-client-urls that etcd 3.4 serves through its gRPC JSON gateway,
// plus /health, /version and /metrics (docs/api.md lists every route).
//
// Who uses it: the member's client listener hands every request to handle();
// requests it does not own (v2 keys, /v2/members, the proxy) return false and
// go elsewhere.  Everything it needs from the running member comes through
// MemberApi (node/server/member_api.h): proposals, read barriers, local
// reads, lease keepalives, status and the stream of applied events.  The
// v3 routes are a thin mapping onto V3Service (node/server/v3_service.h),
// which the gRPC adapter serves as well: a route parses its JSON body into
// the method's request message and prints the response message.
//
// Wire conventions are etcd's: request and response bodies are protobuf
// messages with etcd's field names and numbers (api/etcdserverpb/rpc.proto) mapped
// to JSON by protobuf's JSON support with the original field names — bytes
// as standard base64, 64-bit integers as strings, enums as names, zero values
// omitted.  Errors are {"error","message","code"} with the gRPC code and the
// HTTP status grpc-gateway maps it to.
//
// Threads: handle() is called on a connection's strand and never blocks on
// Raft; answers are sent from the MemberApi callbacks (usually the driver's
// apply thread) or from this object's timer thread (request timeouts, watch
// progress notifications).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "base/metrics.h"
#include "net/server.h"
#include "node/server/member_api.h"
#include "node/server/v3_service.h"

namespace muster::server {

class V3Api {
 public:
  // The service's options (node/server/v3_service.h).
  using Options = V3Service::Options;

  // REQUIRES: member and metrics outlive this object; no MemberApi callback
  // of a request handled here runs after it is destroyed, and the servers
  // that call handle() are stopped before it (destroy it after the driver
  // and the client listeners have stopped).
  V3Api(MemberApi& member, Options options, metrics::Registry& metrics);
  ~V3Api();
  V3Api(const V3Api&) = delete;
  V3Api& operator=(const V3Api&) = delete;

  // Serves the request if its route belongs to this API (/v3/..., /v3beta/...,
  // /health, /version, /metrics) and returns true; returns false otherwise
  // without touching the exchange.
  bool handle(const std::shared_ptr<net::Exchange>& ex);

  // The transport-independent API this gateway maps onto; the gRPC adapter
  // (node/server/v3_grpc.h) serves the same one.
  V3Service& service();

  // The request body limit the client listener should use so that oversized
  // writes reach this API and get etcd's "request is too large" answer
  // instead of a bare 413: room for base64 (4/3) and the JSON around it.
  static std::size_t recommended_body_limit(const Options& o) {
    return o.max_request_bytes * 2 + 512 * 1024;
  }

  // etcd_server_leader_changes_seen_total, for the driver to increment when
  // it sees a new leader (the driver knows; this API only sees snapshots).
  static metrics::Counter& leader_changes(metrics::Registry& r);

  // Runs before each /metrics answer, to bring instruments owned elsewhere
  // up to date (the peer transport's counters).  Set before serving.
  void set_metrics_collector(std::function<void()> collect);

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace muster::server
