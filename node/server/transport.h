// node/server/transport.h: the peer transport of a cluster member — Raft
// messages and snapshots between members, on `--listen-peer-urls`.
//
// Who uses it: the Raft driver (one Transport per member).  Wire format and
// behaviour are written down in docs/transport.md.
//
// Model:
//   - One persistent outgoing connection per peer, dialed to the peer's first
//     reachable URL (round-robin over its URLs on failure), re-dialed with
//     exponential backoff and jitter after a failure.  The dialer opens with a
//     handshake {cluster ID, from, to, protocol version}; the listener
//     rejects another cluster ID, a `to` that is not itself and a `from` that
//     is not a known peer (add_peer), replying with the reason before closing.
//     Nothing is sent before the handshake is accepted.
//   - Messages to a peer are queued (bounded, oldest dropped first) while its
//     connection is up or being dialed, and written in batches.  Until a peer
//     has been reached once, up to 64 messages also wait through failed dials
//     (a new cluster's first votes must not be lost to a peer that is not
//     listening yet).  Messages for an unknown peer, a peer in backoff after a
//     failed dial once it had been reached, messages dropped
//     from a full queue and messages lost with a broken connection are
//     reported through the unreachable handler (the driver calls
//     raft.report_unreachable), so Raft probes again instead of waiting.
//   - Snapshots travel on a connection of their own (one per snapshot), so
//     heartbeats and appends keep flowing on the persistent one.
//
// Threads: the caller drives the io_context (one or more threads).  Every
// public method is thread-safe.  Handlers run on io_context threads, possibly
// several at once (one inbound connection each); messages from one peer are
// delivered one at a time, in the order it sent them.  Handlers must not
// block for long and must not call stop() or the set_*_handler methods.
// After stop() returns, no handler is running and none will start.
//
// Storage work (SnapshotWriter::next, SnapshotSink::add/finish) runs on a
// small internal thread pool, never on the io_context's threads.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/tls.h"
#include "node/raft/raft.pb.h"
#include "node/server/transport.pb.h"
#include "node/storage/pb.h"
#include "node/storage/snapshot.h"
#include "node/storage/status.h"

namespace boost::asio {
class io_context;
}

namespace muster::server {

// Version of the frame protocol spoken here; the listener rejects others.
inline constexpr uint32_t kTransportProtocolVersion = 1;

struct TransportOptions {
  // Resolves a peer URL's host name: `done(addresses, error)` once, from any
  // thread.  Empty: the system resolver.  A member started with
  // --dns-server resolves peer names through that server, the same one its
  // SRV lookups used.
  using ResolveHost = std::function<void(
      const std::string& host,
      std::function<void(std::vector<boost::asio::ip::address>, std::string error)> done)>;

  uint64_t cluster_id = 0;
  uint64_t local_id = 0;
  std::optional<net::TlsOptions> server_tls;  // REQUIRED for https listeners
  std::optional<net::TlsOptions> client_tls;  // REQUIRED to dial https peer URLs
  ResolveHost resolve_host;

  // Redial delay after a failure: doubles from initial up to max; each wait
  // is drawn uniformly from [delay/2, delay] so members do not redial in step.
  std::chrono::milliseconds backoff_initial{50};
  std::chrono::milliseconds backoff_max{2000};
  // Dial: resolve + connect + TLS + handshake exchange.  Listener: TLS + the
  // first frame.
  std::chrono::milliseconds handshake_timeout{5000};
  // Snapshot receiver: longest silence between two frames of the stream.
  std::chrono::milliseconds snapshot_idle_timeout{30000};
  // Snapshot sender: how long to wait for the receiver's verdict after the
  // last chunk (the receiver's sink finishes first, which may install).
  std::chrono::milliseconds snapshot_result_timeout{120000};
  // Dialer: a connection whose written data stays unacknowledged this long
  // is dropped (TCP_USER_TIMEOUT), so a peer that vanished is noticed.
  std::chrono::milliseconds unacked_timeout{10000};
  // Messages queued per peer; when full the oldest is dropped.
  size_t max_queued_messages = 4096;
  // Largest frame (type byte + payload) accepted or sent.  A peer that
  // announces a larger one is disconnected; a larger outgoing message is
  // dropped and reported unreachable.
  size_t max_frame_bytes = 64u << 20;
  // One write to a peer carries queued messages up to about this many bytes.
  size_t max_batch_bytes = 1u << 20;
  // Threads for snapshot storage work.
  size_t storage_threads = 2;
};

// Receives one snapshot's state machine.  add() is called with each chunk in
// order, from one thread at a time (not an io_context thread).  After the
// last chunk was added successfully, finish(true) is called and then the
// MsgSnap is delivered through the message handler.  If add() fails, the
// connection breaks, the stream times out or the transport stops, finish(false)
// is called instead (possibly from the destructor path of a stopped
// transport, after stop() returned) and the MsgSnap is dropped.
class SnapshotSink {
 public:
  virtual ~SnapshotSink() = default;
  virtual storage::Status add(const pb::SnapshotChunk& chunk) = 0;
  virtual void finish(bool ok) = 0;
};

// What the transport knows about one peer (for logs, metrics and tests).
struct PeerStatus {
  bool known = false;   // add_peer'd and not removed
  bool active = false;  // outgoing connection up and handshaken
  uint64_t dial_failures = 0;
  uint64_t sent_bytes = 0;        // Raft stream frames written to the peer
  uint64_t received_bytes = 0;    // Raft stream frames received from the peer
  uint64_t dropped_messages = 0;  // queued for the peer but never written
  std::string last_error;         // the most recent dial or connection error
};

// What the Raft driver needs from the peer transport (driver.h); Transport
// implements it, and the driver's unit test fakes it.
class RaftTransport {
 public:
  virtual ~RaftTransport() = default;
  // Queues messages for their `to` peers; never blocks.
  virtual void send(std::vector<raftpb::Message> msgs) = 0;
  // Sends a MsgSnap with the state machine from `writer`; `done(ok)` once.
  virtual void send_snapshot(raftpb::Message msg, std::unique_ptr<storage::SnapshotWriter> writer,
                             std::function<void(bool ok)> done) = 0;
  // The outgoing connection to `peer` is up.
  virtual bool is_active(uint64_t peer) const = 0;
};

class Transport final : public RaftTransport {
 public:
  // Builds the TLS contexts from options; throws std::runtime_error on bad
  // certificate, key or CA files.  REQUIRES: io outlives the Transport.
  Transport(boost::asio::io_context& io, TransportOptions options);
  // stop()s, then waits for snapshot storage work in progress (a running
  // SnapshotSink::add or SnapshotWriter::next) to return.
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Starts accepting peer connections on host:port (port 0: any free port)
  // and returns the bound port.  `tls` = an https peer URL.  Throws
  // std::runtime_error when the address cannot be bound, or when tls is set
  // without options.server_tls.  May be called more than once.
  uint16_t listen(const std::string& host, uint16_t port, bool tls);

  void set_message_handler(std::function<void(raftpb::Message)> handler);
  // Called with an incoming MsgSnap (its snapshot.data is empty); returns the
  // sink its state machine is fed into, or nullptr to refuse the snapshot.
  void set_snapshot_handler(
      std::function<std::unique_ptr<SnapshotSink>(const raftpb::Message&)> handler);
  void set_unreachable_handler(std::function<void(uint64_t peer)> handler);
  // Forwarded requests and replies (transportpb.Forward) from peer `from`,
  // delivered in the order that peer sent them, interleaved with its Raft
  // messages.
  void set_forward_handler(std::function<void(uint64_t from, transportpb::Forward)> handler);

  // Plain HTTP on the peer listener.  etcd serves `GET /members` (and
  // /version, and /members/hashkv for the corruption check) on its peer
  // URLs; joining members, proxies, checking members and operators with
  // curl read them there.  A connection whose first bytes are an HTTP GET
  // (not a frame: a frame length never spells "GET ") gets one answer from
  // this handler and is closed.  Without a handler: 404.
  struct HttpRequest {
    std::string method;  // "GET"
    std::string target;  // "/members/hashkv", query included
    // Header names in lower case, values trimmed.
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;  // as long as Content-Length says (at most kMaxHttpBody)
    // The first value of header `name` (lower case), or "".
    std::string header(std::string_view name) const;
  };
  static constexpr std::size_t kMaxHttpBody = 64 * 1024;
  struct HttpAnswer {
    int status = 404;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
  };
  // The handler answers by calling `reply` exactly once, from any thread:
  // a slow answer (a hash of the whole store) is computed elsewhere and
  // holds no I/O thread meanwhile.
  using HttpReply = std::function<void(HttpAnswer)>;
  void set_http_handler(std::function<void(HttpRequest, HttpReply)> handler);

  // Adds a peer, or replaces the URLs of a known one (used from its next dial
  // on).  A known peer may also dial us.  URLs: http://host:port or
  // https://host:port.  The local member's own ID (and 0) is ignored.
  void add_peer(uint64_t id, std::vector<std::string> peer_urls);
  // Forgets a peer: closes its connections both ways and drops its queue.
  // A removed member that dials us later is told it was removed.
  void remove_peer(uint64_t id);
  // Records a member removed before this transport started (from the
  // member's state), so that it is told too if it dials.
  void mark_removed(uint64_t id);
  // Called (any thread) when a peer refuses us because this member has been
  // removed from the cluster.
  void set_removed_handler(std::function<void()> handler);

  // Queues messages for their `to` peers.  Never blocks.  MsgSnap must go
  // through send_snapshot(); given here it is dropped and reported
  // unreachable.
  void send(std::vector<raftpb::Message> msgs) override;

  // Queues a forwarded request or reply for peer `to` on its Raft stream.
  // Never blocks.  Dropped, silently, where Raft messages would be (unknown
  // peer, a dial that failed, a broken connection): the asker retries on its
  // own schedule (LeaderForwarder).
  void send_forward(uint64_t to, transportpb::Forward f);

  // Sends a MsgSnap on a connection of its own and streams the state machine
  // from `writer` after it.  `done(ok)` runs once, when the receiver has
  // taken the whole snapshot (ok) or the attempt failed; not after stop().
  void send_snapshot(raftpb::Message msg, std::unique_ptr<storage::SnapshotWriter> writer,
                     std::function<void(bool ok)> done) override;

  bool is_active(uint64_t peer) const override;
  PeerStatus peer_status(uint64_t peer) const;

  // Closes listeners and connections; idempotent.  REQUIRES: not called from
  // a handler.
  void stop();

  struct Core;

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace muster::server
