// node/server/peer.cpp: see peer.h.
#include "node/server/peer.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "base/log.h"
#include "net/socket_options.h"
#include "net/url.h"

namespace muster::server {

namespace {

using Resolved = std::pair<std::vector<asio::ip::address>, std::string>;

// TransportOptions::resolve_host as an awaitable: its answer comes back on
// the awaiting coroutine's executor.
auto resolve_with(const TransportOptions::ResolveHost& resolve, const std::string& host) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(Resolved)>(
      [&resolve, host](auto handler) {
        auto ex = asio::get_associated_executor(handler);
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        resolve(host, [ex, shared](std::vector<asio::ip::address> addresses, std::string error) {
          asio::post(ex, [shared, r = Resolved(std::move(addresses), std::move(error))]() mutable {
            std::move(*shared)(std::move(r));
          });
        });
      },
      use_awaitable);
}

}  // namespace

// Connects `conn` (already on the caller's strand) to url, runs TLS and the
// handshake.  Throws std::exception with a readable message on failure.
awaitable<void> Transport::Core::dial(std::shared_ptr<FrameConn> conn, std::string url, uint64_t to,
                                      transportpb::StreamKind kind) {
  std::string err;
  auto u = net::parse_url(url, &err);
  if (!u) throw std::runtime_error("bad peer URL \"" + url + "\": " + err);
  if (u->tls() && !client_context())
    throw std::runtime_error("peer URL " + url + " is https but no peer client TLS is set");
  auto ex = co_await asio::this_coro::executor;
  Deadline deadline(ex, conn, opts.handshake_timeout);
  tcp::resolver resolver(ex);
  deadline.watch(&resolver);
  std::string failure;
  transportpb::HandshakeReply reply;
  try {
    std::vector<tcp::endpoint> endpoints;
    if (opts.resolve_host) {
      auto [addresses, error] = co_await resolve_with(opts.resolve_host, u->host);
      if (addresses.empty())
        throw std::runtime_error("cannot resolve " + u->host + ": " +
                                 (error.empty() ? "no addresses" : error));
      for (const auto& a : addresses) endpoints.emplace_back(a, u->port);
    } else {
      for (const auto& r :
           co_await resolver.async_resolve(u->host, std::to_string(u->port), use_awaitable))
        endpoints.push_back(r.endpoint());
    }
    co_await asio::async_connect(conn->socket(), endpoints, use_awaitable);
    error_code ec;
    conn->socket().set_option(tcp::no_delay(true), ec);
    // A peer that vanished without a FIN or RST (power loss, partition)
    // is noticed when written data stays unacknowledged this long, instead
    // of after the kernel's retransmission limit (~15 minutes).
    net::set_keep_alive(conn->socket().native_handle(),
                        {.enabled = true, .user_timeout = opts.unacked_timeout});
    if (u->tls()) {
      conn->use_tls(*client_context());
      net::prepare_client_tls(conn->ssl_handle(), u->host, *opts.client_tls);
      co_await conn->tls_handshake(ssl::stream_base::client);
    }
    transportpb::Handshake hs;
    hs.set_version(kTransportProtocolVersion);
    hs.set_cluster_id(opts.cluster_id);
    hs.set_from(opts.local_id);
    hs.set_to(to);
    hs.set_stream(kind);
    std::string out;
    append_frame(&out, FrameType::kHandshake, hs, opts.max_frame_bytes);
    co_await conn->write(out);
    Frame f = co_await conn->read_frame(opts.max_frame_bytes);
    if (f.type != FrameType::kHandshakeReply)
      throw ProtocolError("expected a handshake reply, got frame type " +
                          std::to_string(static_cast<int>(f.type)));
    reply = parse_payload<transportpb::HandshakeReply>(f, "handshake reply");
  } catch (const std::exception& e) {
    failure = describe(e, deadline, "dialing");
  }
  deadline.unwatch();
  if (!failure.empty()) throw std::runtime_error(url + ": " + failure);
  if (!reply.accepted()) {
    if (reply.removed()) report_removed();
    throw std::runtime_error(url + ": rejected by peer: " + reply.reason());
  }
  conn->peer_id = to;
}

namespace transport_detail {

void Peer::enqueue(std::vector<raftpb::Message> msgs) {
  if (removed) return;
  if (in_backoff && ever_connected) {
    // The last dial failed: messages would be stale by the next one.
    dropped += msgs.size();
    core->report_unreachable(id);
    return;
  }
  const size_t limit =
      ever_connected ? core->opts.max_queued_messages : kMaxWaitingBeforeFirstConnection;
  bool dropped = false;
  for (auto& m : msgs) {
    if (queue.size() >= limit) {
      queue.pop_front();
      this->dropped++;
      dropped = true;
    }
    queue.push_back(std::move(m));
  }
  if (dropped) core->report_unreachable(id);
  wake.cancel();
}

void Peer::enqueue_forward(transportpb::Forward f) {
  if (removed || (in_backoff && ever_connected)) return;
  if (forwards.size() >= kMaxQueuedForwards) forwards.pop_front();
  forwards.push_back(std::move(f));
  wake.cancel();
}

void Peer::shutdown() {
  removed = true;
  active = false;
  queue.clear();
  forwards.clear();
  if (conn) conn->close();
  wake.cancel();
  backoff_timer.cancel();
}

void Peer::dial_now_if_waiting() {
  if (in_backoff && !removed) backoff_timer.cancel();
}

void Peer::set_urls(std::vector<std::string> u) {
  if (u != urls) {
    urls = std::move(u);
    url_index = 0;
  }
}

std::chrono::milliseconds Peer::jittered(std::chrono::milliseconds d) {
  std::uniform_int_distribution<int64_t> dist(d.count() / 2, d.count());
  return std::chrono::milliseconds(dist(rng));
}

awaitable<void> Peer::run(std::shared_ptr<Peer> self) {
  auto backoff = self->core->opts.backoff_initial;
  while (!self->removed && !self->core->stopped) {
    if (self->urls.empty()) {
      self->set_error("no peer URLs");
    } else {
      const std::string url = self->urls[self->url_index % self->urls.size()];
      self->conn = std::make_shared<FrameConn>(self->strand);
      self->core->track(self->conn);
      std::string failure;
      try {
        co_await self->core->dial(self->conn, url, self->id, transportpb::STREAM_RAFT);
      } catch (const std::exception& e) {
        failure = e.what();
      }
      if (self->removed || self->core->stopped) break;
      if (failure.empty()) {
        // A connection that dies young (a peer that accepts and then drops
        // us) keeps the backoff growing instead of redialing in a tight loop.
        const auto since = std::chrono::steady_clock::now();
        failure = co_await self->serve(self->conn, url);
        if (std::chrono::steady_clock::now() - since > std::chrono::seconds(1))
          backoff = self->core->opts.backoff_initial;
      } else {
        self->url_index++;  // round-robin over the peer's URLs
        const uint64_t n = ++self->dial_failures;
        const bool changed = failure != self->error();
        // Log every change of reason, and now and then while it persists.
        if (changed || n % 30 == 1)
          log::warn(kCaller, "cannot connect to peer",
                    {{"local-member-id", hex_id(self->core->opts.local_id)},
                     {"remote-peer-id", hex_id(self->id)},
                     {"error", failure},
                     {"failures", n}});
      }
      self->set_error(failure);
      self->conn->close();
      self->conn.reset();
    }
    if (self->removed || self->core->stopped) break;
    // Whatever was queued or in flight is lost: let Raft know.  (Before
    // the first connection the queue waits for it; see ever_connected.)
    if (self->ever_connected) {
      self->dropped += self->queue.size();
      self->queue.clear();
      self->forwards.clear();
    }
    self->in_backoff = true;
    self->core->report_unreachable(self->id);
    self->backoff_timer.expires_after(self->jittered(backoff));
    error_code ec;
    co_await self->backoff_timer.async_wait(asio::redirect_error(use_awaitable, ec));
    self->in_backoff = false;
    backoff = std::min(backoff * 2, self->core->opts.backoff_max);
  }
  self->active = false;
  self->queue.clear();
  self->forwards.clear();
}

awaitable<std::string> Peer::serve(std::shared_ptr<FrameConn> c, std::string url) {
  active = true;
  ever_connected = true;
  log::info(kCaller, "peer connection established",
            {{"local-member-id", hex_id(core->opts.local_id)},
             {"remote-peer-id", hex_id(id)},
             {"url", url}});
  // The listener never writes on a Raft stream after its reply: a read
  // completes only when the connection breaks.
  auto self = shared_from_this();
  asio::co_spawn(strand, watch_for_close(self, c), asio::detached);
  std::string reason;
  try {
    while (c->is_open()) {
      if (queue.empty() && forwards.empty()) {
        wake.expires_at(asio::steady_timer::time_point::max());
        error_code ec;
        co_await wake.async_wait(asio::redirect_error(use_awaitable, ec));
        continue;
      }
      std::string batch;
      for (; !forwards.empty(); forwards.pop_front())
        if (!append_frame(&batch, FrameType::kForward, forwards.front(),
                          core->opts.max_frame_bytes))
          log::error(kCaller, "dropping a forwarded request larger than the frame limit",
                     {{"remote-peer-id", hex_id(id)}, {"bytes", forwards.front().ByteSizeLong()}});
      while (!queue.empty() && batch.size() < core->opts.max_batch_bytes) {
        if (!append_frame(&batch, FrameType::kRaftMessage, queue.front(),
                          core->opts.max_frame_bytes)) {
          log::error(kCaller, "dropping a message larger than the frame limit",
                     {{"remote-peer-id", hex_id(id)},
                      {"type", raftpb::MessageType_Name(queue.front().type())},
                      {"bytes", queue.front().ByteSizeLong()},
                      {"limit", core->opts.max_frame_bytes}});
          dropped++;
          core->report_unreachable(id);
        }
        queue.pop_front();
      }
      if (!batch.empty()) {
        co_await c->write(batch);
        sent_bytes += batch.size();
      }
    }
    reason = "connection closed by peer";
  } catch (const std::exception& e) {
    reason = e.what();
  }
  active = false;
  if (!removed && !core->stopped)
    log::warn(kCaller, "lost peer connection",
              {{"local-member-id", hex_id(core->opts.local_id)},
               {"remote-peer-id", hex_id(id)},
               {"error", reason}});
  co_return reason;
}

awaitable<void> Peer::watch_for_close(std::shared_ptr<Peer> self, std::shared_ptr<FrameConn> c) {
  try {
    (void)co_await c->read_frame(self->core->opts.max_frame_bytes);
  } catch (const std::exception&) {
  }
  c->close();
  self->wake.cancel();
}

}  // namespace transport_detail

}  // namespace muster::server
