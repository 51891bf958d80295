// bench/grpc-transport/trivial_kv.h: the handler both benchmark servers run.
//
// It answers Put and Range with an empty response whose header is filled in
// (cluster_id, member_id, revision, raft_term) and touches no storage, so
// that what the benchmark measures is the transport: HTTP/2, gRPC framing,
// protobuf parsing and serialization, threads and the kernel.  Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>

#include "kv_bench.pb.h"

namespace muster::bench {

class TrivialKv {
 public:
  void put(const etcdserverpb::PutRequest& /*req*/, etcdserverpb::PutResponse* resp) {
    fill(resp->mutable_header(), revision_.fetch_add(1, std::memory_order_relaxed) + 1);
  }
  void range(const etcdserverpb::RangeRequest& /*req*/, etcdserverpb::RangeResponse* resp) {
    fill(resp->mutable_header(), revision_.load(std::memory_order_relaxed));
  }

 private:
  static void fill(etcdserverpb::ResponseHeader* h, int64_t revision) {
    h->set_cluster_id(0x1c6a1b5e2d3f4a01ull);
    h->set_member_id(0x7e2b9c4d5f6a8b02ull);
    h->set_revision(revision);
    h->set_raft_term(2);
  }

  std::atomic<int64_t> revision_{1};
};

}  // namespace muster::bench
