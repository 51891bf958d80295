// Fuzz target: a member's client port as a client reaches it -- the bytes of
// one connection into net/'s server: the HTTP/1.1 request parser and, when
// the bytes open with the HTTP/2 preface, the HTTP/2 and gRPC layers
// (net/h2.cpp, net/grpc.cpp); then the v3 JSON gateway and its gRPC twin
// (node/server/v3_api.cpp, v3_grpc.cpp, v3_service.cpp), the v2 keys and
// members API (v2_api.cpp) and /health, /version, /metrics, over a real
// state machine (a LevelDB under $TMPDIR) without Raft
// (tests/unit/server/local_member.h).
//
// Built twice: fuzz_client_http sends the input as it is over a loopback
// connection (seed corpus: HTTP/1.1 requests); fuzz_client_grpc puts the
// HTTP/2 preface in front of it (seed corpus: HTTP/2 frames with gRPC
// calls), so the fuzzer spends its time past the preface, and hands it to
// net/'s HTTP/2 connection through an in-memory stream
// (tests/fuzz/memory_stream.h), as the server hands over a socket once it
// has seen the preface: no socket, no kernel, many times the inputs per
// second.  The server's sniffing of the first bytes is fuzz_client_http's.
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "base/metrics.h"
#include "net/h2.h"
#include "net/server.h"
#include "node/server/v2_api.h"
#include "node/server/v3_api.h"
#include "node/server/v3_grpc.h"
#include "tests/fuzz/memory_stream.h"
#include "tests/fuzz/socket_client.h"
#include "tests/unit/server/local_member.h"

namespace {

using namespace muster;

struct ClientPort {
  server::testing::ScratchDir dir{"muster-fuzz-client"};
  server::testing::LocalMember member{dir.path()};
  metrics::Registry registry;
  server::V3Api api;
  server::V3Grpc grpc;
  server::V2Api v2;
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
  std::unique_ptr<net::Server> server;
  uint16_t port = 0;
  std::shared_ptr<net::detail::H2Context> h2 = std::make_shared<net::detail::H2Context>();

  static server::V3Api::Options api_options() {
    server::V3Api::Options o;
    o.request_timeout = std::chrono::milliseconds(500);
    o.health_timeout = std::chrono::milliseconds(200);
    return o;
  }

  ClientPort()
      : api(member, api_options(), registry),
        grpc(api.service(), registry),
        v2(member, server::V2Api::Options{}) {
    member.add_self("http://127.0.0.1:2380", "http://127.0.0.1:2379");
    net::ServerOptions so;
    so.body_limit = server::V3Api::recommended_body_limit(api_options());
    so.grpc_handler = grpc.handler();
    auto handler = [this](std::shared_ptr<net::Exchange> ex) {
      if (!api.handle(ex) && !v2.handle(ex))
        ex->respond(net::Response::json(404, "{\"error\":\"Not Found\"}\n"));
    };
    server = std::make_unique<net::Server>(io, so, handler);
    port = server->listen("127.0.0.1", 0);
    // What the server gives the HTTP/2 connections it hands over.
    h2->http_handler = handler;
    h2->grpc_handler = so.grpc_handler;
    h2->grpc = so.grpc;
    h2->header_limit = so.header_limit;
    h2->body_limit = so.body_limit;
    h2->on_open = [](const std::shared_ptr<net::detail::ConnectionBase>&) { return true; };
    h2->on_closed = [](net::detail::ConnectionBase*) {};
  }

  // What inputs add grows faster than inputs take it away, and every later
  // input that lists it pays for all of it: members (POST /v2/members,
  // Cluster.MemberAdd), keys (a recursive v2 GET of "/" or a v3 range over
  // everything; a long run fell from 1,134 to 92 inputs a second, most of it
  // in v2's recursive GET) and the MVCC history behind them (Maintenance's
  // HashKV and Snapshot read every revision kept: fuzz_client_grpc fell
  // from 1,920 to 630 inputs a second in 20 minutes, most of it in
  // hash_by_rev and snapshot chunks on the service's threads).  Members
  // beyond eight go at once; every 256 inputs all keys go, with one delete
  // of the whole MVCC keyspace (the v2 nodes live there too, under "\0v2",
  // so that takes them with it), and then the history, with a compaction at
  // the revision of that delete, and LevelDB's copy of it: its memtable (16
  // MiB before it is flushed) keeps every version written, and a snapshot
  // or a range walks them all (at 3.2 million inputs a Snapshot input's
  // stream was 45% of the process's CPU, over a 9 MB memtable of mostly
  // dead versions), so the store is compacted too.
  void keep_state_small() {
    auto ignore = [](storage::Status, storage::KvStore::ApplyResult) {};
    const auto members = member.kv().members();
    if (members.size() > 8) {
      for (const auto& m : members) {
        if (m.id() == server::testing::LocalMember::kMemberId) continue;
        pb::InternalRequest req;
        req.mutable_member_remove()->set_id(m.id());
        member.propose(std::move(req), ignore);
      }
    }
    if (++inputs % 256 == 0) {
      pb::InternalRequest all;
      all.mutable_delete_range()->set_key(std::string(1, '\0'));
      all.mutable_delete_range()->set_range_end(std::string(1, '\0'));
      member.propose(std::move(all), ignore);
      pb::InternalRequest compact;
      compact.mutable_compaction()->set_revision(member.kv().revision());
      member.propose(std::move(compact), ignore);
      (void)member.compact_store();
    }
  }

  uint64_t inputs = 0;  // inputs run so far
};

ClientPort& client_port() {
  // Never destroyed: libFuzzer exits without unwinding the fuzzer's state.
  static ClientPort* p = new ClientPort();
  return *p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ClientPort& p = client_port();
#ifdef MUSTER_FUZZ_H2_PREFACE
  std::string bytes(muster::net::detail::kH2Preface);
  bytes.append(reinterpret_cast<const char*>(data), size);
  auto closed = std::make_shared<bool>(false);
  auto stream = std::make_unique<muster::fuzz::MemoryStream>(p.io, std::move(bytes), closed);
  auto executor = stream->executor();
  boost::asio::post(executor, [&p, stream = std::move(stream)]() mutable {
    muster::net::detail::start_h2_connection(std::move(stream), {}, "127.0.0.1", {}, p.h2);
  });
  muster::fuzz::run_until_closed(p.io, closed);
#else
  muster::fuzz::exchange(p.io, p.port, data, size);
#endif
  p.keep_state_small();
  return 0;
}
