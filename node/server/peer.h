// node/server/peer.h: the outgoing side of the peer transport — one Peer per
// known member (internal to the transport's .cpp files).
//
// A Peer owns one persistent connection to its member, dialed to the
// member's first reachable URL (round-robin over its URLs on failure) and
// re-dialed with exponential backoff and jitter after a failure.  The dial
// resolves the host, connects, runs TLS (SNI and the certificate's name
// checked against the URL's host, or the SRV domain) and the handshake
// {cluster ID, from, to, version}; nothing is sent before the listener
// accepts it.  Raft messages and forward frames are queued on the Peer's
// strand and written in batches of up to max_batch_bytes.
//
// Losses are reported to Raft (the unreachable handler), so it probes again
// instead of waiting: a message for a peer in backoff after a failed dial
// (once it had been reached), a message dropped from a full queue, a message
// larger than the frame limit, a connection that breaks.  Until a peer has
// been reached once, a few messages wait through failed dials instead (a new
// cluster's first votes must not be lost to a member not listening yet).
#pragma once

#include <deque>
#include <mutex>
#include <random>

#include "node/server/transport_core.h"

namespace muster::server::transport_detail {

struct Peer : std::enable_shared_from_this<Peer> {
  using Core = Transport::Core;

  Peer(std::shared_ptr<Core> c, uint64_t id_, std::vector<std::string> u)
      : core(std::move(c)),
        id(id_),
        strand(asio::make_strand(core->io)),
        wake(strand),
        backoff_timer(strand),
        urls(std::move(u)),
        rng(std::random_device{}()) {}

  const std::shared_ptr<Core> core;
  const uint64_t id;
  const asio::strand<asio::io_context::executor_type> strand;

  // --- strand state ---
  asio::steady_timer wake;  // the writer waits on it while the queue is empty
  asio::steady_timer backoff_timer;
  std::vector<std::string> urls;
  size_t url_index = 0;
  // A copy of the URLs for other strands (snapshot senders); guarded by Core::mu.
  std::vector<std::string> published_urls;
  std::deque<raftpb::Message> queue;
  // Forwarded requests and replies (transportpb.Forward) waiting for the
  // connection; the asker resends on its own schedule, so these are simply
  // dropped wherever Raft messages would be.
  std::deque<transportpb::Forward> forwards;
  static constexpr size_t kMaxQueuedForwards = 1024;
  std::shared_ptr<FrameConn> conn;  // being dialed or active
  bool in_backoff = false;
  bool removed = false;
  // Until the first connection, messages wait (a few) instead of being
  // dropped: at a cluster's start the peers come up at slightly different
  // moments, and the first votes must not be lost to a peer that was not
  // listening yet.  Once connected, a broken connection drops as before.
  bool ever_connected = false;
  static constexpr size_t kMaxWaitingBeforeFirstConnection = 64;
  std::mt19937_64 rng;

  // --- any thread ---
  std::atomic<bool> active{false};
  std::atomic<uint64_t> dial_failures{0};
  std::atomic<uint64_t> sent_bytes{0};      // Raft stream frames written
  std::atomic<uint64_t> received_bytes{0};  // Raft stream frames read from this peer
  std::atomic<uint64_t> dropped{0};         // messages never written
  mutable std::mutex error_mu;
  std::string last_error;

  void set_error(const std::string& e) {
    std::lock_guard l(error_mu);
    last_error = e;
  }
  std::string error() const {
    std::lock_guard l(error_mu);
    return last_error;
  }

  // On the strand.
  void enqueue(std::vector<raftpb::Message> msgs);

  // On the strand.
  void enqueue_forward(transportpb::Forward f);

  // On the strand.
  void shutdown();

  // On the strand: this peer has just dialed us and passed the handshake,
  // so it listens now; a dial waiting out its backoff goes at once.  (A
  // member added a moment before its process started -- a new member, a
  // replacement -- is otherwise reached only after a backoff of up to
  // 100 ms, then 200 ms ...)
  void dial_now_if_waiting();

  void set_urls(std::vector<std::string> u);

  std::chrono::milliseconds jittered(std::chrono::milliseconds d);

  // The connection's life: dial, write batches until it breaks, back off,
  // dial again.  Ends when the peer is removed or the transport stops.
  static awaitable<void> run(std::shared_ptr<Peer> self);

  // Writes queued messages on an accepted connection until it breaks;
  // returns the reason.
  awaitable<std::string> serve(std::shared_ptr<FrameConn> c, std::string url);

  static awaitable<void> watch_for_close(std::shared_ptr<Peer> self, std::shared_ptr<FrameConn> c);
};

}  // namespace muster::server::transport_detail
