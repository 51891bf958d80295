// node/server/transport.cpp: the Transport facade and the incoming side of
// the peer transport (listeners, handshake checks, Raft streams, etcd's peer
// HTTP).  See transport.h for the model, docs/transport.md for the wire;
// peer.h has the outgoing side, snapshot_stream.h the snapshot streams.
#include "node/server/transport.h"

#include <openssl/x509v3.h>

#include "base/log.h"
#include "net/socket_options.h"
#include "net/url.h"
#include "node/server/peer.h"
#include "node/server/snapshot_stream.h"
#include "node/server/transport_core.h"

namespace muster::server {

std::string Transport::HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return v;
  return "";
}

namespace {

// "GET <target> HTTP/1.1" and its header lines.
Transport::HttpRequest parse_http_head(const std::string& head) {
  Transport::HttpRequest r;
  size_t eol = head.find("\r\n");
  const std::string first = head.substr(0, eol);
  const size_t sp1 = first.find(' ');
  const size_t sp2 = sp1 == std::string::npos ? sp1 : first.find(' ', sp1 + 1);
  if (sp1 != std::string::npos) r.method = first.substr(0, sp1);
  if (sp2 != std::string::npos) r.target = first.substr(sp1 + 1, sp2 - sp1 - 1);
  while (eol != std::string::npos) {
    const size_t start = eol + 2;
    eol = head.find("\r\n", start);
    const std::string line = head.substr(start, eol == std::string::npos ? eol : eol - start);
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    const size_t b = value.find_first_not_of(" \t");
    const size_t e = value.find_last_not_of(" \t");
    value = b == std::string::npos ? "" : value.substr(b, e - b + 1);
    r.headers.emplace_back(std::move(name), std::move(value));
  }
  return r;
}

// One HTTP/1.1 answer (Connection: close).
std::string format_http_answer(const Transport::HttpAnswer& a) {
  static const std::map<int, const char*> reasons = {{200, "OK"},
                                                     {400, "Bad Request"},
                                                     {404, "Not Found"},
                                                     {405, "Method Not Allowed"},
                                                     {412, "Precondition Failed"},
                                                     {413, "Request Entity Too Large"},
                                                     {500, "Internal Server Error"},
                                                     {503, "Service Unavailable"}};
  auto r = reasons.find(a.status);
  std::string out = "HTTP/1.1 " + std::to_string(a.status) + " " +
                    (r == reasons.end() ? "Unknown" : r->second) + "\r\n";
  out += "Content-Type: " + a.content_type + "\r\n";
  for (const auto& [k, v] : a.headers) out += k + ": " + v + "\r\n";
  out += "Content-Length: " + std::to_string(a.body.size()) + "\r\nConnection: close\r\n\r\n";
  out += a.body;
  return out;
}

}  // namespace

// The handler answers whenever it likes, from any thread; the answer comes
// back to the awaiting coroutine's executor.  (A plain function, as
// resolve_with in peer.cpp: g++ 12 mishandles a capturing lambda built
// inside a co_await expression of a coroutine.)
auto Transport::Core::http_answer(std::shared_ptr<Core> self, Transport::HttpRequest req) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(Transport::HttpAnswer)>(
      [self = std::move(self), req = std::move(req)](auto handler) mutable {
        auto ex = asio::get_associated_executor(handler);
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        auto once = std::make_shared<std::atomic<bool>>(false);
        Transport::HttpReply reply = [ex, shared, once](Transport::HttpAnswer a) {
          if (once->exchange(true)) return;
          asio::post(ex,
                     [shared, a = std::move(a)]() mutable { std::move (*shared)(std::move(a)); });
        };
        std::shared_lock l(self->handler_mu);
        if (self->stopped || !self->on_http) {
          Transport::HttpAnswer none;
          none.body = "404 page not found\n";
          return reply(std::move(none));
        }
        self->on_http(std::move(req), std::move(reply));
      },
      use_awaitable);
}

awaitable<void> Transport::Core::serve_http(std::shared_ptr<FrameConn> conn, std::string head) {
  auto ex = co_await asio::this_coro::executor;
  Transport::HttpRequest req = parse_http_head(head);
  Transport::HttpAnswer answer;
  answer.body = "404 page not found\n";
  const std::string length = req.header("content-length");
  size_t n = 0;
  if (!length.empty()) {
    try {
      n = std::stoul(length);
    } catch (const std::exception&) {
      n = kMaxHttpBody + 1;
    }
  }
  if (n > Transport::kMaxHttpBody) {
    answer.status = 413;
    answer.body = "request body too large\n";
  } else {
    {
      Deadline deadline(ex, conn, opts.handshake_timeout);
      req.body = co_await conn->read_bytes(n);
    }
    answer = co_await http_answer(shared_from_this(), std::move(req));
  }
  Deadline deadline(ex, conn, opts.handshake_timeout);
  co_await conn->write(format_http_answer(answer));
  conn->shutdown_send();
}

// Empty when the listener accepts the handshake, else the reason.
std::string Transport::Core::check_handshake(const transportpb::Handshake& hs) const {
  if (hs.version() != kTransportProtocolVersion)
    return "unsupported transport protocol version " + std::to_string(hs.version()) +
           " (this member speaks " + std::to_string(kTransportProtocolVersion) + ")";
  if (hs.cluster_id() != opts.cluster_id)
    return "cluster ID mismatch: local " + hex_id(opts.cluster_id) + ", remote " +
           hex_id(hs.cluster_id());
  if (hs.to() != opts.local_id)
    return "member ID mismatch: this member is " + hex_id(opts.local_id) +
           ", the dialer expected " + hex_id(hs.to());
  if (is_removed(hs.from()))
    return "member " + hex_id(hs.from()) + " has been permanently removed from the cluster";
  if (!known(hs.from()))
    return "unknown member " + hex_id(hs.from()) + ": not a peer of member " +
           hex_id(opts.local_id);
  return {};
}

// ---------------------------------------------------------------------------
// Incoming side.

awaitable<void> Transport::Core::accept_loop(std::shared_ptr<tcp::acceptor> acceptor, bool tls) {
  auto self = shared_from_this();
  while (!stopped && acceptor->is_open()) {
    error_code ec;
    tcp::socket s = co_await acceptor->async_accept(asio::make_strand(io),
                                                    asio::redirect_error(use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor->is_open() || stopped) break;
      log::warn(kCaller, "accept failed", {{"error", ec.message()}});
      asio::steady_timer t(acceptor->get_executor(), std::chrono::milliseconds(100));
      co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    auto conn = std::make_shared<FrameConn>(std::move(s));
    track(conn);
    auto ex = conn->socket().get_executor();
    asio::co_spawn(ex, self->serve_inbound(conn, tls), asio::detached);
  }
}

// etcd 3.4's check of an incoming peer (pkg/transport checkSAN): the
// certificate it presented must name the address it connects from, by an IP
// SAN or by a DNS SAN that resolves to it.  A certificate without SANs, or no
// certificate (no --peer-client-cert-auth), passes.  Throws on a mismatch.
awaitable<void> Transport::Core::check_client_san(std::shared_ptr<FrameConn> conn,
                                                  Deadline& deadline) {
  const net::PeerSans sans = net::peer_certificate_sans(conn->ssl_handle());
  if (!sans.has_certificate || (sans.dns_names.empty() && sans.ip_addresses.empty())) co_return;
  error_code ec;
  auto address = conn->socket().remote_endpoint(ec).address();
  if (ec) throw std::runtime_error("cannot read the remote address: " + ec.message());
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  const std::string ip = address.to_string();
  for (const auto& a : sans.ip_addresses)
    if (a == ip) co_return;
  tcp::resolver resolver(co_await asio::this_coro::executor);
  deadline.watch(&resolver);
  bool found = false;
  for (const auto& name : sans.dns_names) {
    auto results =
        co_await resolver.async_resolve(name, "", asio::redirect_error(use_awaitable, ec));
    if (ec) continue;
    for (const auto& r : results)
      if (r.endpoint().address() == address) found = true;
    if (found) break;
  }
  deadline.unwatch();
  if (found) co_return;
  std::string names;
  for (const auto& n : sans.ip_addresses) names += (names.empty() ? "" : ",") + n;
  for (const auto& n : sans.dns_names) names += (names.empty() ? "" : ",") + n;
  throw std::runtime_error("peer certificate SANs [" + names + "] do not name its address " + ip +
                           " (--experimental-peer-skip-client-san-verification skips this check)");
}

awaitable<void> Transport::Core::serve_inbound(std::shared_ptr<FrameConn> conn, bool tls) {
  auto self = shared_from_this();  // keeps the Core alive while this runs
  auto ex = co_await asio::this_coro::executor;
  const std::string remote = conn->remote();
  error_code ec;
  conn->socket().set_option(tcp::no_delay(true), ec);
  net::set_keep_alive(conn->socket().native_handle(), {.enabled = true});
  transportpb::Handshake hs;
  std::string failure;
  std::optional<std::string> http_head;
  {
    Deadline deadline(ex, conn, opts.handshake_timeout);
    try {
      if (tls) {
        conn->use_tls(*server_ctx);
        co_await conn->tls_handshake(ssl::stream_base::server);
        if (opts.server_tls->verify_client_san) co_await check_client_san(conn, deadline);
      }
      if (co_await conn->peek(4) == "GET ") {
        http_head = co_await conn->read_http_head(8192);
      } else {
        Frame f = co_await conn->read_frame(opts.max_frame_bytes);
        if (f.type != FrameType::kHandshake) throw ProtocolError("first frame is not a handshake");
        hs = parse_payload<transportpb::Handshake>(f, "handshake");
      }
    } catch (const std::exception& e) {
      failure = describe(e, deadline, "waiting for the handshake");
    }
    if (failure.empty() && !http_head) {
      const std::string reason = check_handshake(hs);
      transportpb::HandshakeReply reply;
      reply.set_accepted(reason.empty());
      reply.set_reason(reason);
      reply.set_cluster_id(opts.cluster_id);
      reply.set_member_id(opts.local_id);
      reply.set_removed(!reason.empty() && is_removed(hs.from()));
      std::string out;
      append_frame(&out, FrameType::kHandshakeReply, reply, opts.max_frame_bytes);
      try {
        co_await conn->write(out);
      } catch (const std::exception& e) {
        failure = e.what();
      }
      if (failure.empty() && !reason.empty()) {
        log::warn(kCaller, "rejected peer connection",
                  {{"local-member-id", hex_id(opts.local_id)},
                   {"remote-peer-id", hex_id(hs.from())},
                   {"remote-addr", remote},
                   {"reason", reason}});
        conn->shutdown_send();
        co_return;  // conn closes when the last reference goes
      }
    }
  }
  if (failure.empty() && http_head) {
    try {
      co_await serve_http(conn, std::move(*http_head));
    } catch (const std::exception&) {
      // The asker went away or sent too little; nothing to tell anyone.
    }
    co_return;
  }
  if (!failure.empty()) {
    if (!stopped)
      log::warn(kCaller, "peer connection failed before the handshake",
                {{"local-member-id", hex_id(opts.local_id)},
                 {"remote-addr", remote},
                 {"error", failure}});
    conn->close();
    co_return;
  }
  conn->peer_id = hs.from();
  // A peer removed between the check and now must not keep a connection.
  if (!known(hs.from())) {
    conn->close();
    co_return;
  }
  if (hs.stream() == transportpb::STREAM_SNAPSHOT)
    co_await receive_snapshot(conn, hs.from());
  else
    co_await receive_raft(conn, hs.from());
  conn->close();
}

awaitable<void> Transport::Core::receive_raft(std::shared_ptr<FrameConn> conn, uint64_t from) {
  std::shared_ptr<Peer> peer;  // for its counters
  {
    std::lock_guard l(mu);
    auto it = peers.find(from);
    if (it != peers.end()) peer = it->second;
  }
  if (peer) asio::post(peer->strand, [peer] { peer->dial_now_if_waiting(); });
  std::string failure;
  try {
    for (;;) {
      Frame f = co_await conn->read_frame(opts.max_frame_bytes);
      if (f.type == FrameType::kForward) {
        if (peer) peer->received_bytes += 5 + f.payload.size();
        deliver_forward(from, parse_payload<transportpb::Forward>(f, "forward"));
        continue;
      }
      if (f.type != FrameType::kRaftMessage)
        throw ProtocolError("unexpected frame type " + std::to_string(static_cast<int>(f.type)) +
                            " on a Raft stream");
      auto m = parse_payload<raftpb::Message>(f, "Raft message");
      if (m.from() != from || m.to() != opts.local_id)
        throw ProtocolError("message from " + hex_id(m.from()) + " to " + hex_id(m.to()) +
                            " on the stream from " + hex_id(from));
      if (m.type() == raftpb::MsgSnap) {
        log::warn(kCaller, "dropping a MsgSnap sent without its snapshot stream",
                  {{"remote-peer-id", hex_id(from)}});
        continue;
      }
      if (peer) peer->received_bytes += 5 + f.payload.size();
      deliver(std::move(m));
    }
  } catch (const ProtocolError& e) {
    failure = e.what();
  } catch (const std::exception&) {
    // EOF or a closed socket: the dialer went away or we are stopping.
  }
  if (!failure.empty())
    log::warn(kCaller, "closing peer connection: protocol violation",
              {{"local-member-id", hex_id(opts.local_id)},
               {"remote-peer-id", hex_id(from)},
               {"error", failure}});
}

// ---------------------------------------------------------------------------
// Transport

Transport::Transport(asio::io_context& io, TransportOptions options)
    : core_(std::make_shared<Core>(io, std::move(options))) {}

Transport::~Transport() {
  stop();
  // Wait for storage work in progress (a sink's add, a writer's next): the
  // pool's threads must not outlive the Transport, and the Core must never be
  // destroyed on one of them (its destructor joins the pool).  Storage work
  // that comes later runs on the io_context's thread (see offload()).
  core_->pool.close_and_join();
}

uint16_t Transport::listen(const std::string& host, uint16_t port, bool tls) {
  if (tls && !core_->server_ctx)
    throw std::runtime_error("https peer listener needs peer TLS settings (certificate and key)");
  error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  tcp::endpoint ep;
  if (!ec) {
    ep = tcp::endpoint(addr, port);
  } else {
    tcp::resolver r(core_->io);
    auto res = r.resolve(host, std::to_string(port), ec);
    if (ec || res.empty())
      throw std::runtime_error("cannot resolve peer listen address " + host + ": " + ec.message());
    ep = res.begin()->endpoint();
  }
  auto acceptor = std::make_shared<tcp::acceptor>(asio::make_strand(core_->io));
  auto fail = [&](const char* what) {
    std::ostringstream s;
    s << "cannot " << what << " peer listener on " << ep << ": " << ec.message();
    throw std::runtime_error(s.str());
  };
  acceptor->open(ep.protocol(), ec);
  if (ec) fail("open");
  acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  acceptor->bind(ep, ec);
  if (ec) fail("bind");
  acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail("listen on");
  const uint16_t bound = acceptor->local_endpoint().port();
  {
    std::lock_guard l(core_->mu);
    core_->acceptors.push_back(acceptor);
  }
  asio::co_spawn(acceptor->get_executor(), core_->accept_loop(acceptor, tls), asio::detached);
  log::info(kCaller, "listening for peers",
            {{"local-member-id", hex_id(core_->opts.local_id)},
             {"address", host + ":" + std::to_string(bound)},
             {"tls", tls}});
  return bound;
}

void Transport::set_message_handler(std::function<void(raftpb::Message)> handler) {
  std::unique_lock l(core_->handler_mu);
  core_->on_message = std::move(handler);
}

void Transport::set_snapshot_handler(
    std::function<std::unique_ptr<SnapshotSink>(const raftpb::Message&)> handler) {
  std::unique_lock l(core_->handler_mu);
  core_->on_snapshot = std::move(handler);
}

void Transport::set_unreachable_handler(std::function<void(uint64_t)> handler) {
  std::unique_lock l(core_->handler_mu);
  core_->on_unreachable = std::move(handler);
}

void Transport::set_removed_handler(std::function<void()> handler) {
  std::unique_lock l(core_->handler_mu);
  core_->on_removed = std::move(handler);
}

void Transport::set_forward_handler(std::function<void(uint64_t, transportpb::Forward)> handler) {
  std::unique_lock l(core_->handler_mu);
  core_->on_forward = std::move(handler);
}

void Transport::send_forward(uint64_t to, transportpb::Forward f) {
  if (core_->stopped) return;
  std::shared_ptr<Peer> peer;
  {
    std::lock_guard l(core_->mu);
    auto it = core_->peers.find(to);
    if (it != core_->peers.end()) peer = it->second;
  }
  if (!peer) return;
  asio::post(peer->strand,
             [peer, f = std::move(f)]() mutable { peer->enqueue_forward(std::move(f)); });
}

void Transport::mark_removed(uint64_t id) {
  std::lock_guard l(core_->mu);
  core_->removed_ids.insert(id);
}

void Transport::set_http_handler(std::function<void(HttpRequest, HttpReply)> handler) {
  std::unique_lock l(core_->handler_mu);
  core_->on_http = std::move(handler);
}

void Transport::add_peer(uint64_t id, std::vector<std::string> peer_urls) {
  if (core_->stopped) return;
  if (id == core_->opts.local_id || id == 0) {
    // The member itself (or no member): nothing to dial.  A driver that
    // passes the whole membership list lands here for its own entry.
    return;
  }
  std::shared_ptr<Peer> peer;
  bool is_new = false;
  {
    std::lock_guard l(core_->mu);
    core_->removed_ids.erase(id);
    auto& slot = core_->peers[id];
    if (!slot) {
      slot = std::make_shared<Peer>(core_, id, peer_urls);
      is_new = true;
    }
    slot->published_urls = peer_urls;
    peer = slot;
  }
  if (is_new)
    asio::co_spawn(peer->strand, Peer::run(peer), asio::detached);
  else
    asio::post(peer->strand,
               [peer, u = std::move(peer_urls)]() mutable { peer->set_urls(std::move(u)); });
}

void Transport::remove_peer(uint64_t id) {
  std::shared_ptr<Peer> peer;
  std::vector<std::shared_ptr<FrameConn>> inbound;
  {
    std::lock_guard l(core_->mu);
    core_->removed_ids.insert(id);
    auto it = core_->peers.find(id);
    if (it == core_->peers.end()) return;
    peer = std::move(it->second);
    core_->peers.erase(it);
    for (auto& w : core_->conns)
      if (auto c = w.lock(); c && c->peer_id == id) inbound.push_back(std::move(c));
  }
  asio::post(peer->strand, [peer] { peer->shutdown(); });
  for (auto& c : inbound) c->close_soon();
}

void Transport::send(std::vector<raftpb::Message> msgs) {
  if (core_->stopped) return;
  std::map<uint64_t, std::vector<raftpb::Message>> by_peer;
  for (auto& m : msgs) {
    if (m.type() == raftpb::MsgSnap) {
      log::error(kCaller, "MsgSnap given to send(); use send_snapshot()",
                 {{"remote-peer-id", hex_id(m.to())}});
      core_->report_unreachable_later(m.to());
      continue;
    }
    by_peer[m.to()].push_back(std::move(m));
  }
  for (auto& [id, batch] : by_peer) {
    std::shared_ptr<Peer> peer;
    {
      std::lock_guard l(core_->mu);
      auto it = core_->peers.find(id);
      if (it != core_->peers.end()) peer = it->second;
    }
    if (!peer) {
      core_->report_unreachable_later(id);
      continue;
    }
    asio::post(peer->strand,
               [peer, b = std::move(batch)]() mutable { peer->enqueue(std::move(b)); });
  }
}

void Transport::send_snapshot(raftpb::Message msg, std::unique_ptr<storage::SnapshotWriter> writer,
                              std::function<void(bool)> done) {
  if (core_->stopped) return;
  std::vector<std::string> urls;
  bool known = false;
  {
    std::lock_guard l(core_->mu);
    auto it = core_->peers.find(msg.to());
    if (it != core_->peers.end()) {
      known = true;
      urls = it->second->published_urls;
    }
  }
  if (!known) {
    log::warn(kCaller, "cannot send snapshot to an unknown peer",
              {{"remote-peer-id", hex_id(msg.to())}});
    const uint64_t to = msg.to();
    asio::post(core_->io, [core = core_, to, done = std::move(done)] {
      core->report_unreachable(to);
      if (core->stopped) return;
      std::shared_lock l(core->handler_mu);
      if (!core->stopped) done(false);
    });
    return;
  }
  auto conn = std::make_shared<FrameConn>(asio::make_strand(core_->io));
  core_->track(conn);
  // Named, not a temporary: see offload().
  std::shared_ptr<storage::SnapshotWriter> shared_writer(std::move(writer));
  asio::co_spawn(conn->socket().get_executor(),
                 core_->send_snapshot(conn, std::move(urls), std::move(msg),
                                      std::move(shared_writer), std::move(done)),
                 asio::detached);
}

bool Transport::is_active(uint64_t peer) const { return peer_status(peer).active; }

PeerStatus Transport::peer_status(uint64_t id) const {
  std::shared_ptr<Peer> peer;
  {
    std::lock_guard l(core_->mu);
    auto it = core_->peers.find(id);
    if (it == core_->peers.end()) return {};
    peer = it->second;
  }
  PeerStatus s;
  s.known = true;
  s.active = peer->active;
  s.dial_failures = peer->dial_failures;
  s.sent_bytes = peer->sent_bytes;
  s.received_bytes = peer->received_bytes;
  s.dropped_messages = peer->dropped;
  s.last_error = peer->error();
  return s;
}

void Transport::stop() {
  if (core_->stopped.exchange(true)) return;
  // Wait for running handlers; none starts after this (they check stopped).
  { std::unique_lock l(core_->handler_mu); }
  std::vector<std::shared_ptr<tcp::acceptor>> acceptors;
  std::vector<std::shared_ptr<Peer>> peers;
  std::vector<std::shared_ptr<FrameConn>> conns;
  {
    std::lock_guard l(core_->mu);
    acceptors.swap(core_->acceptors);
    for (auto& [id, p] : core_->peers) peers.push_back(p);
    core_->peers.clear();
    for (auto& w : core_->conns)
      if (auto c = w.lock()) conns.push_back(std::move(c));
    core_->conns.clear();
  }
  for (auto& a : acceptors)
    asio::post(a->get_executor(), [a] {
      error_code ec;
      a->close(ec);
    });
  for (auto& p : peers) asio::post(p->strand, [p] { p->shutdown(); });
  for (auto& c : conns) c->close_soon();
  log::info(kCaller, "peer transport stopped", {{"local-member-id", hex_id(core_->opts.local_id)}});
}

}  // namespace muster::server
