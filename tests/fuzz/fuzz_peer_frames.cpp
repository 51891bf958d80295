// Fuzz target: a member's peer port -- the bytes of one connection into the
// peer transport (node/server/transport.cpp): frame lengths and types, the
// handshake, Raft message frames, a snapshot stream's MsgSnap and chunks,
// and the plain HTTP GET etcd serves there (/members, /version).  The
// transport belongs to member 1 of cluster 0x1000 and knows peers 2 and 3,
// so inputs that get the handshake right reach the message and snapshot
// paths; received messages and snapshots are taken and dropped.
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "node/server/transport.h"
#include "tests/fuzz/socket_client.h"

namespace {

using namespace muster;

class CountingSink : public server::SnapshotSink {
 public:
  storage::Status add(const muster::pb::SnapshotChunk& chunk) override {
    // A sink that refuses some chunks, as a failing installer would.
    if (chunk.keys_size() != chunk.values_size()) return {storage::Code::kDataLoss, "bad chunk"};
    return {};
  }
  void finish(bool) override {}
};

struct PeerPort {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
  std::unique_ptr<server::Transport> transport;
  uint16_t port = 0;

  PeerPort() {
    server::TransportOptions o;
    o.cluster_id = 0x1000;
    o.local_id = 1;
    o.handshake_timeout = std::chrono::milliseconds(2000);
    o.snapshot_idle_timeout = std::chrono::milliseconds(2000);
    o.max_frame_bytes = 1 << 20;
    transport = std::make_unique<server::Transport>(io, o);
    transport->set_message_handler([](raftpb::Message) {});
    transport->set_snapshot_handler(
        [](const raftpb::Message&) -> std::unique_ptr<server::SnapshotSink> {
          return std::make_unique<CountingSink>();
        });
    transport->set_http_handler(
        [](server::Transport::HttpRequest req, server::Transport::HttpReply reply) {
          server::Transport::HttpAnswer a;
          if (req.target == "/members") {
            a.status = 200;
            a.content_type = "application/json";
            a.body = "[]";
          }
          reply(std::move(a));
        });
    // Known peers whose URLs go nowhere (port 9 is discard; nothing listens).
    transport->add_peer(2, {"http://127.0.0.1:9"});
    transport->add_peer(3, {"http://127.0.0.1:9"});
    transport->mark_removed(4);
    port = transport->listen("127.0.0.1", 0, false);
  }
};

PeerPort& peer_port() {
  static PeerPort* p = new PeerPort();
  return *p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  PeerPort& p = peer_port();
  muster::fuzz::exchange(p.io, p.port, data, size);
  return 0;
}
