// node/server/transport_core.h: the shared state of one Transport (internal
// to the transport's .cpp files).
//
// Concurrency: every connection (FrameConn) lives on its own strand.  A
// Peer's state (queue, current connection, backoff) is touched only on the
// Peer's strand, which is also the strand of its outgoing connections.
// Core::mu guards the maps shared between strands (peers, listeners, open
// connections); handler_mu guards the handlers and lets stop() wait for
// running handlers.  Storage work of snapshot streams runs on `pool`, never
// on an I/O thread.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include "node/server/frame.h"
#include "node/server/transport.h"
#include "node/server/transport.pb.h"

namespace muster::server {

namespace transport_detail {

// The thread pool for storage work, and whether it still takes work (it
// stops when the Transport is destroyed).
struct StoragePool {
  explicit StoragePool(size_t threads) : pool(std::max<size_t>(1, threads)) {}
  std::mutex mu;
  bool closed = false;
  asio::thread_pool pool;

  void close_and_join() {
    {
      std::lock_guard l(mu);
      closed = true;
    }
    pool.join();
  }
};

// Runs (*job)() on the storage pool (or, once the pool is closed, right here)
// and resumes the awaiting coroutine on its own executor with the result.
// The job must not throw and must outlive the co_await (a named local of the
// awaiting coroutine).  Only pointers cross into the awaitable machinery: with
// g++ 12 we saw a snapshot writer freed while still in use when it reached a
// coroutine inside a temporary, so coroutine arguments here are named values.
template <typename F>
auto offload(StoragePool* sp, F* job) {
  using R = std::invoke_result_t<F&>;
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(R)>(
      [sp, job](auto handler) {
        auto run = [job](auto handler) {
          R r = (*job)();
          auto ex = asio::get_associated_executor(handler);
          asio::post(ex, [handler = std::move(handler), r = std::move(r)]() mutable {
            std::move(handler)(std::move(r));
          });
        };
        std::unique_lock l(sp->mu);
        if (!sp->closed) {
          asio::post(sp->pool,
                     [run, handler = std::move(handler)]() mutable { run(std::move(handler)); });
          return;
        }
        l.unlock();
        run(std::move(handler));
      },
      use_awaitable);
}

struct Peer;

}  // namespace transport_detail

using namespace transport_detail;

struct Transport::Core : std::enable_shared_from_this<Core> {
  Core(asio::io_context& io_, TransportOptions o)
      : io(io_), opts(std::move(o)), pool(std::max<size_t>(1, opts.storage_threads)) {
    if (opts.server_tls) server_ctx = net::make_server_tls_context(*opts.server_tls);
  }
  ~Core() { pool.close_and_join(); }

  asio::io_context& io;
  const TransportOptions opts;
  std::shared_ptr<ssl::context> server_ctx;
  // The dialer's context, built on the first https dial (any strand): with
  // no --peer-trusted-ca-file it loads the system's trusted roots, some
  // 20 ms that a member dialing only http peers (most test and replacement
  // starts) need not wait for.  Null when opts.client_tls is unset.
  std::shared_ptr<ssl::context> client_context() {
    std::call_once(client_ctx_once_, [this] {
      if (opts.client_tls) client_ctx_ = net::make_client_tls_context(*opts.client_tls);
    });
    return client_ctx_;
  }
  StoragePool pool;  // storage work of snapshot streams
  std::once_flag client_ctx_once_;
  std::shared_ptr<ssl::context> client_ctx_;  // see client_context()

  std::atomic<bool> stopped{false};

  // Handlers; calls hold handler_mu shared, stop() takes it exclusively.
  mutable std::shared_mutex handler_mu;
  std::function<void(raftpb::Message)> on_message;
  std::function<std::unique_ptr<SnapshotSink>(const raftpb::Message&)> on_snapshot;
  std::function<void(uint64_t)> on_unreachable;
  std::function<void(Transport::HttpRequest, Transport::HttpReply)> on_http;
  std::function<void()> on_removed;
  std::function<void(uint64_t, transportpb::Forward)> on_forward;

  mutable std::mutex mu;  // guards everything below
  std::unordered_map<uint64_t, std::shared_ptr<Peer>> peers;
  std::unordered_set<uint64_t> removed_ids;  // members removed from the cluster
  std::vector<std::shared_ptr<tcp::acceptor>> acceptors;
  std::vector<std::weak_ptr<FrameConn>> conns;  // every connection, for stop()/remove_peer()

  void track(const std::shared_ptr<FrameConn>& c) {
    std::lock_guard l(mu);
    std::erase_if(conns, [](const std::weak_ptr<FrameConn>& w) { return w.expired(); });
    conns.push_back(c);
  }

  bool known(uint64_t id) const {
    std::lock_guard l(mu);
    return peers.count(id) != 0;
  }
  bool is_removed(uint64_t id) const {
    std::lock_guard l(mu);
    return removed_ids.count(id) != 0;
  }
  void report_removed() {
    if (stopped) return;
    std::shared_lock l(handler_mu);
    if (stopped || !on_removed) return;
    on_removed();
  }

  void deliver(raftpb::Message m) {
    if (stopped) return;
    std::shared_lock l(handler_mu);
    if (stopped || !on_message) return;
    on_message(std::move(m));
  }
  void deliver_forward(uint64_t from, transportpb::Forward f) {
    if (stopped) return;
    std::shared_lock l(handler_mu);
    if (stopped || !on_forward) return;
    on_forward(from, std::move(f));
  }
  void report_unreachable(uint64_t id) {
    if (stopped) return;
    std::shared_lock l(handler_mu);
    if (stopped || !on_unreachable) return;
    on_unreachable(id);
  }
  // Reports from a thread that must not run the handler itself (send()).
  void report_unreachable_later(uint64_t id) {
    asio::post(io, [self = shared_from_this(), id] { self->report_unreachable(id); });
  }
  std::unique_ptr<SnapshotSink> make_sink(const raftpb::Message& m) {
    if (stopped) return nullptr;
    std::shared_lock l(handler_mu);
    if (stopped || !on_snapshot) return nullptr;
    return on_snapshot(m);
  }

  // One HTTP/1.1 answer (Connection: close) to a GET request head.
  // etcd's peer HTTP: the request `head` (and its body, read here) gets
  // the handler's answer, written as one HTTP/1.1 response.
  awaitable<void> serve_http(std::shared_ptr<FrameConn> conn, std::string head);
  static auto http_answer(std::shared_ptr<Core> self, Transport::HttpRequest req);
  // Empty when the listener accepts the handshake, else the reason.
  std::string check_handshake(const transportpb::Handshake& hs) const;
  // Connects `conn` (already on the caller's strand) to url, runs TLS and the
  // handshake.  Throws std::exception with a readable message on failure
  // (peer.cpp).
  awaitable<void> dial(std::shared_ptr<FrameConn> conn, std::string url, uint64_t to,
                       transportpb::StreamKind kind);

  awaitable<void> accept_loop(std::shared_ptr<tcp::acceptor> acceptor, bool tls);
  awaitable<void> check_client_san(std::shared_ptr<FrameConn> conn, Deadline& deadline);
  awaitable<void> serve_inbound(std::shared_ptr<FrameConn> conn, bool tls);
  awaitable<void> receive_raft(std::shared_ptr<FrameConn> conn, uint64_t from);
  awaitable<void> receive_snapshot(std::shared_ptr<FrameConn> conn, uint64_t from);
  awaitable<void> send_snapshot(std::shared_ptr<FrameConn> conn, std::vector<std::string> urls,
                                raftpb::Message msg,
                                std::shared_ptr<storage::SnapshotWriter> writer,
                                std::function<void(bool)> done);
};

}  // namespace muster::server
