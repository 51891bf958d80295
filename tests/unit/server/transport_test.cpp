// Peer transport: real sockets on loopback, one io_context thread per
// member, every wait bounded by a deadline.
#include "node/server/transport.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "node/server/transport.pb.h"
#include "node/storage/member_storage.h"
#include "tests/support/pki.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"
#include "tests/unit/storage/snapshot_util.h"

namespace muster::server {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr uint64_t kCluster = 0x7e57c1u;

// Waiting on a condition and scratch directories: tests/support's.
using ::muster::testing::wait_until;
using ScratchDir = ::muster::testing::TempDir;

// One member's transport with its own io_context thread, recording what it
// receives.
class Node {
 public:
  Node(uint64_t id, TransportOptions opts, uint16_t port = 0, bool tls = false) : id_(id) {
    opts.local_id = id;
    if (opts.cluster_id == 0) opts.cluster_id = kCluster;
    transport_ = std::make_unique<Transport>(io_, std::move(opts));
    transport_->set_message_handler([this](raftpb::Message m) {
      std::function<void(const raftpb::Message&)> hook;
      {
        std::lock_guard l(mu_);
        hook = hook_;
        by_type_[m.type()]++;
        got_.push_back(m);
      }
      if (hook) hook(m);
    });
    transport_->set_unreachable_handler([this](uint64_t peer) {
      std::lock_guard l(mu_);
      unreachable_[peer]++;
    });
    port_ = transport_->listen("127.0.0.1", port, tls);
    url_ = std::string(tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_);
    thread_ = std::thread([this] { io_.run(); });
  }
  explicit Node(uint64_t id) : Node(id, TransportOptions{}) {}
  ~Node() {
    transport_->stop();
    work_.reset();
    io_.stop();
    thread_.join();
    transport_.reset();
  }

  Transport& t() { return *transport_; }
  uint64_t id() const { return id_; }
  uint16_t port() const { return port_; }
  const std::string& url() const { return url_; }

  size_t received() {
    std::lock_guard l(mu_);
    return got_.size();
  }
  std::vector<raftpb::Message> messages() {
    std::lock_guard l(mu_);
    return got_;
  }
  size_t received_from(uint64_t from) {
    std::lock_guard l(mu_);
    return std::count_if(got_.begin(), got_.end(),
                         [&](const raftpb::Message& m) { return m.from() == from; });
  }
  size_t count_type(raftpb::MessageType t) {
    std::lock_guard l(mu_);
    return by_type_[t];
  }
  // Runs after each received message is recorded.
  void set_hook(std::function<void(const raftpb::Message&)> hook) {
    std::lock_guard l(mu_);
    hook_ = std::move(hook);
  }
  int unreachable(uint64_t peer) {
    std::lock_guard l(mu_);
    return unreachable_[peer];
  }

 private:
  const uint64_t id_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::unique_ptr<Transport> transport_;
  std::thread thread_;
  uint16_t port_ = 0;
  std::string url_;
  std::mutex mu_;
  std::vector<raftpb::Message> got_;
  std::map<uint64_t, int> unreachable_;
  std::map<int, size_t> by_type_;
  std::function<void(const raftpb::Message&)> hook_;
};

raftpb::Message app(uint64_t from, uint64_t to, uint64_t index, size_t data_bytes = 16) {
  raftpb::Message m;
  m.set_type(raftpb::MsgApp);
  m.set_from(from);
  m.set_to(to);
  m.set_term(3);
  m.set_index(index);
  auto* e = m.add_entries();
  e->set_term(3);
  e->set_index(index + 1);
  e->set_data(std::string(data_bytes, static_cast<char>('a' + index % 26)));
  return m;
}

raftpb::Message heartbeat(uint64_t from, uint64_t to) {
  raftpb::Message m;
  m.set_type(raftpb::MsgHeartbeat);
  m.set_from(from);
  m.set_to(to);
  m.set_term(3);
  return m;
}

void connect(Node& a, Node& b) {
  a.t().add_peer(b.id(), {b.url()});
  b.t().add_peer(a.id(), {a.url()});
}

// Sends n MsgApp from a to b in batches of varying size.
void send_apps(Node& a, Node& b, uint64_t n) {
  uint64_t i = 0;
  size_t batch = 1;
  while (i < n) {
    std::vector<raftpb::Message> msgs;
    for (size_t k = 0; k < batch && i < n; k++) msgs.push_back(app(a.id(), b.id(), i++));
    a.t().send(std::move(msgs));
    batch = batch % 17 + 1;
  }
}

// Every message from `from` arrived once, in order, intact.
void expect_in_order(Node& n, uint64_t from, uint64_t count) {
  uint64_t next = 0;
  for (const auto& m : n.messages()) {
    if (m.from() != from) continue;
    ASSERT_EQ(m.to(), n.id());
    ASSERT_EQ(m.type(), raftpb::MsgApp);
    ASSERT_EQ(m.index(), next) << "message out of order";
    ASSERT_EQ(m.entries_size(), 1);
    ASSERT_EQ(m.entries(0).data(), std::string(16, static_cast<char>('a' + next % 26)));
    next++;
  }
  EXPECT_EQ(next, count);
}

TEST(TransportTest, TwoMembersExchangeMessagesInOrder) {
  Node a(1), b(2);
  connect(a, b);
  ASSERT_TRUE(wait_until([&] { return a.t().is_active(2) && b.t().is_active(1); }));
  send_apps(a, b, 3000);
  send_apps(b, a, 3000);
  ASSERT_TRUE(wait_until([&] { return b.received() == 3000 && a.received() == 3000; }));
  expect_in_order(b, 1, 3000);
  expect_in_order(a, 2, 3000);
  EXPECT_EQ(a.unreachable(2), 0);
  EXPECT_EQ(b.unreachable(1), 0);
  // Byte counters agree once the senders have seen their writes complete.
  EXPECT_TRUE(wait_until([&] {
    const PeerStatus ab = a.t().peer_status(2), ba = b.t().peer_status(1);
    return ab.sent_bytes == ba.received_bytes && ba.sent_bytes == ab.received_bytes;
  }));
  EXPECT_GT(a.t().peer_status(2).sent_bytes, 3000u * 16);
  EXPECT_EQ(a.t().peer_status(2).dropped_messages, 0u);
}

TEST(TransportTest, ThreeMembersDeliverEachSendersMessagesInOrder) {
  Node a(1), b(2), c(3);
  connect(a, b);
  connect(a, c);
  connect(b, c);
  Node* nodes[] = {&a, &b, &c};
  ASSERT_TRUE(wait_until([&] {
    for (Node* x : nodes)
      for (Node* y : nodes)
        if (x != y && !x->t().is_active(y->id())) return false;
    return true;
  }));
  // Senders run concurrently.
  std::vector<std::thread> senders;
  for (Node* x : nodes)
    for (Node* y : nodes)
      if (x != y) senders.emplace_back([x, y] { send_apps(*x, *y, 1000); });
  for (auto& s : senders) s.join();
  ASSERT_TRUE(wait_until([&] {
    for (Node* x : nodes)
      if (x->received() != 2000) return false;
    return true;
  }));
  for (Node* x : nodes)
    for (Node* y : nodes)
      if (x != y) expect_in_order(*x, y->id(), 1000);
}

TEST(TransportTest, OtherClusterIdIsRejectedAndItsMessagesNeverDelivered) {
  TransportOptions other;
  other.cluster_id = 0x64;
  TransportOptions ours;
  ours.cluster_id = 0xc8;
  Node a(1, other), b(2, ours);
  connect(a, b);
  ASSERT_TRUE(wait_until([&] { return a.t().peer_status(2).dial_failures >= 2; }));
  EXPECT_NE(a.t().peer_status(2).last_error.find("cluster ID mismatch: local c8, remote 64"),
            std::string::npos)
      << a.t().peer_status(2).last_error;
  ASSERT_TRUE(wait_until([&] { return b.t().peer_status(1).dial_failures >= 2; }));
  EXPECT_NE(b.t().peer_status(1).last_error.find("cluster ID mismatch: local 64, remote c8"),
            std::string::npos)
      << b.t().peer_status(1).last_error;
  EXPECT_FALSE(a.t().is_active(2));
  // Never reached, so up to 64 messages wait for a first connection (that
  // never comes); the rest are dropped, and Raft hears of it.
  for (int i = 0; i < 100; i++) a.t().send({app(1, 2, i)});
  ASSERT_TRUE(wait_until([&] { return a.unreachable(2) > 0; }));
  ASSERT_TRUE(wait_until([&] { return a.t().peer_status(2).dropped_messages == 36; }));
  // Two more rejected dials after the sends: nothing got through meanwhile.
  const uint64_t f = a.t().peer_status(2).dial_failures;
  ASSERT_TRUE(wait_until([&] { return a.t().peer_status(2).dial_failures >= f + 2; }));
  EXPECT_EQ(b.received(), 0u);
  EXPECT_EQ(a.received(), 0u);
}

TEST(TransportTest, UnknownSenderIsRejectedUntilAdded) {
  Node a(1), b(2);
  std::atomic<int> told_removed{0};
  a.t().set_removed_handler([&] { ++told_removed; });
  a.t().add_peer(2, {b.url()});  // b does not know a
  ASSERT_TRUE(wait_until([&] { return a.t().peer_status(2).dial_failures >= 2; }));
  EXPECT_EQ(told_removed.load(), 0);  // unknown is not removed
  EXPECT_NE(a.t().peer_status(2).last_error.find("unknown member 1"), std::string::npos)
      << a.t().peer_status(2).last_error;
  // a has never reached b: the message waits for the first connection (a
  // cluster's first votes must not be lost to a peer that is not up yet),
  // while Raft still hears of every failed dial.
  a.t().send({app(1, 2, 0)});
  ASSERT_TRUE(wait_until([&] { return a.unreachable(2) > 0; }));
  EXPECT_EQ(b.received(), 0u);

  b.t().add_peer(1, {a.url()});
  ASSERT_TRUE(wait_until([&] { return a.t().is_active(2); }));
  for (uint64_t i = 1; i < 10; ++i) a.t().send({app(1, 2, i)});
  ASSERT_TRUE(wait_until([&] { return b.received() == 10; }));
  expect_in_order(b, 1, 10);
}

TEST(TransportTest, WrongTargetMemberIsRejected) {
  Node a(1), b(2);
  b.t().add_peer(1, {a.url()});
  a.t().add_peer(3, {b.url()});  // a believes member 3 lives at b's URL
  ASSERT_TRUE(wait_until([&] { return a.t().peer_status(3).dial_failures >= 2; }));
  EXPECT_NE(a.t().peer_status(3).last_error.find("member ID mismatch"), std::string::npos)
      << a.t().peer_status(3).last_error;
}

TEST(TransportTest, RestartedPeerIsReconnected) {
  Node a(1);
  auto b = std::make_unique<Node>(2);
  connect(a, *b);
  ASSERT_TRUE(wait_until([&] { return a.t().is_active(2); }));
  send_apps(a, *b, 100);
  ASSERT_TRUE(wait_until([&] { return b->received() == 100; }));

  const uint16_t port = b->port();
  b.reset();
  ASSERT_TRUE(wait_until([&] { return !a.t().is_active(2); }));
  a.t().send({app(1, 2, 0)});
  ASSERT_TRUE(wait_until([&] { return a.unreachable(2) > 0; }));

  b = std::make_unique<Node>(2, TransportOptions{}, port);
  b->t().add_peer(1, {a.url()});
  ASSERT_TRUE(wait_until([&] { return a.t().is_active(2) && b->t().is_active(1); }));
  send_apps(a, *b, 100);
  ASSERT_TRUE(wait_until([&] { return b->received() == 100; }));
  expect_in_order(*b, 1, 100);
}

TEST(TransportTest, PeerThatMovedIsReachedAtItsNewUrl) {
  Node a(1);
  auto b = std::make_unique<Node>(2);
  connect(a, *b);
  ASSERT_TRUE(wait_until([&] { return a.t().is_active(2); }));
  b.reset();
  ASSERT_TRUE(wait_until([&] { return !a.t().is_active(2); }));
  b = std::make_unique<Node>(2);  // another port
  b->t().add_peer(1, {a.url()});
  a.t().add_peer(2, {b->url()});
  ASSERT_TRUE(wait_until([&] { return a.t().is_active(2); }));
  send_apps(a, *b, 20);
  ASSERT_TRUE(wait_until([&] { return b->received() == 20; }));
  expect_in_order(*b, 1, 20);
  a.t().add_peer(1, {a.url()});  // its own ID: ignored
  EXPECT_FALSE(a.t().peer_status(1).known);
}

TEST(TransportTest, SendToDeadOrUnknownPeerReportsUnreachable) {
  // A port nobody listens on: bind one, then close it.
  uint16_t dead_port;
  {
    asio::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    dead_port = acc.local_endpoint().port();
  }
  TransportOptions o;
  o.backoff_max = 200ms;
  Node a(1, o);
  a.t().add_peer(2, {"http://127.0.0.1:" + std::to_string(dead_port)});
  a.t().send({heartbeat(1, 2)});
  ASSERT_TRUE(wait_until([&] { return a.unreachable(2) > 0; }));
  EXPECT_FALSE(a.t().is_active(2));
  EXPECT_NE(a.t().peer_status(2).last_error.find("127.0.0.1"), std::string::npos);
  a.t().send({heartbeat(1, 9)});
  ASSERT_TRUE(wait_until([&] { return a.unreachable(9) > 0; }));
}

TEST(TransportTest, SecondUrlIsTriedWhenTheFirstFails) {
  uint16_t dead_port;
  {
    asio::io_context io;
    tcp::acceptor acc(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    dead_port = acc.local_endpoint().port();
  }
  Node a(1), b(2);
  a.t().add_peer(2, {"http://127.0.0.1:" + std::to_string(dead_port), b.url()});
  b.t().add_peer(1, {a.url()});
  ASSERT_TRUE(wait_until([&] { return a.t().is_active(2); }));
  send_apps(a, b, 5);
  ASSERT_TRUE(wait_until([&] { return b.received() == 5; }));
}

TEST(TransportTest, RemovedPeerIsDisconnectedAndRejected) {
  Node a(1), b(2);
  connect(a, b);
  ASSERT_TRUE(wait_until([&] { return a.t().is_active(2); }));
  std::atomic<int> told_removed{0};
  a.t().set_removed_handler([&] { ++told_removed; });
  b.t().remove_peer(1);
  ASSERT_TRUE(wait_until([&] { return !a.t().is_active(2); }));
  // The removed member is told why, so that it can stop (etcd's 410 Gone).
  ASSERT_TRUE(wait_until([&] {
    return a.t().peer_status(2).last_error.find(
               "member 1 has been permanently removed from the cluster") != std::string::npos;
  }));
  EXPECT_GE(told_removed.load(), 1);
  EXPECT_FALSE(b.t().peer_status(1).known);
}

// --- frame limits ---------------------------------------------------------

// A blocking client speaking the frame protocol by hand.
class RawClient {
 public:
  explicit RawClient(uint16_t port) : sock_(io_) {
    sock_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    limit_reads();
  }
  // Takes the next connection accepted on `acc`.
  explicit RawClient(tcp::acceptor& acc) : sock_(io_) {
    acc.accept(sock_);
    limit_reads();
  }
  void write_frame(uint8_t type, const std::string& payload) {
    write_header(static_cast<uint32_t>(payload.size() + 1), type);
    asio::write(sock_, asio::buffer(payload));
  }
  void write_header(uint32_t len, uint8_t type) {
    const unsigned char h[5] = {
        static_cast<unsigned char>(len >> 24), static_cast<unsigned char>(len >> 16),
        static_cast<unsigned char>(len >> 8), static_cast<unsigned char>(len), type};
    asio::write(sock_, asio::buffer(h));
  }
  // Returns the payload of the next frame and its type, or nullopt at EOF.
  std::optional<std::pair<uint8_t, std::string>> read_frame() {
    unsigned char h[5];
    boost::system::error_code ec;
    asio::read(sock_, asio::buffer(h), ec);
    if (ec) {
      last_error_ = ec;
      return std::nullopt;
    }
    const uint32_t len =
        (uint32_t{h[0]} << 24) | (uint32_t{h[1]} << 16) | (uint32_t{h[2]} << 8) | uint32_t{h[3]};
    std::string payload(len - 1, '\0');
    asio::read(sock_, asio::buffer(payload), ec);
    if (ec) return std::nullopt;
    return std::make_pair(h[4], payload);
  }
  boost::system::error_code last_error() const { return last_error_; }

 private:
  void limit_reads() {
    timeval tv{5, 0};  // a read that would hang fails the test instead
    ::setsockopt(sock_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }

  asio::io_context io_;
  tcp::socket sock_;
  boost::system::error_code last_error_;
};

std::string handshake(uint64_t from, uint64_t to) {
  transportpb::Handshake hs;
  hs.set_version(kTransportProtocolVersion);
  hs.set_cluster_id(kCluster);
  hs.set_from(from);
  hs.set_to(to);
  return hs.SerializeAsString();
}

std::string handshake_reply(bool accepted, const std::string& reason) {
  transportpb::HandshakeReply r;
  r.set_accepted(accepted);
  r.set_reason(reason);
  return r.SerializeAsString();
}

// A hand-driven listener checks what the dialer puts on the wire: the
// handshake first, and nothing else until it is accepted.
TEST(TransportTest, DialerSendsNothingBeforeTheHandshakeIsAccepted) {
  asio::io_context io;
  tcp::acceptor acc(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  Node a(1);
  a.t().add_peer(2, {"http://127.0.0.1:" + std::to_string(acc.local_endpoint().port())});
  std::vector<raftpb::Message> early;
  for (int i = 0; i < 5; i++) early.push_back(app(1, 2, i));
  a.t().send(early);  // queued while dialing
  {
    RawClient fake(acc);
    auto f = fake.read_frame();
    ASSERT_TRUE(f.has_value());
    ASSERT_EQ(f->first, 1);  // handshake
    transportpb::Handshake hs;
    ASSERT_TRUE(hs.ParseFromString(f->second));
    EXPECT_EQ(hs.version(), kTransportProtocolVersion);
    EXPECT_EQ(hs.cluster_id(), kCluster);
    EXPECT_EQ(hs.from(), 1u);
    EXPECT_EQ(hs.to(), 2u);
    EXPECT_EQ(hs.stream(), transportpb::STREAM_RAFT);
    fake.write_frame(2, handshake_reply(false, "go away"));
    // The dialer closes without having sent the queued messages.
    EXPECT_FALSE(fake.read_frame().has_value());
    EXPECT_EQ(fake.last_error(), asio::error::eof);
  }
  ASSERT_TRUE(wait_until([&] {
    return a.t().peer_status(2).last_error.find("rejected by peer: go away") != std::string::npos;
  }));
  ASSERT_TRUE(wait_until([&] { return a.unreachable(2) > 0; }));
  {
    RawClient fake(acc);  // the redial
    auto f = fake.read_frame();
    ASSERT_TRUE(f.has_value());
    ASSERT_EQ(f->first, 1);
    fake.write_frame(2, handshake_reply(true, ""));
    ASSERT_TRUE(wait_until([&] { return a.t().is_active(2); }));
    a.t().send({app(1, 2, 7)});
    // The peer had never been reached: the early messages waited for the
    // first accepted connection and come first, in order.
    for (uint64_t want : {0u, 1u, 2u, 3u, 4u, 7u}) {
      auto m = fake.read_frame();
      ASSERT_TRUE(m.has_value());
      ASSERT_EQ(m->first, 3);  // Raft message
      raftpb::Message msg;
      ASSERT_TRUE(msg.ParseFromString(m->second));
      EXPECT_EQ(msg.index(), want);
    }
  }
}

TEST(TransportTest, SilentConnectionIsClosedAfterTheHandshakeTimeout) {
  TransportOptions o;
  o.handshake_timeout = 200ms;
  Node b(2, o);
  RawClient c(b.port());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(c.read_frame().has_value());
  EXPECT_EQ(c.last_error(), asio::error::eof);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
}

TEST(TransportTest, OversizeFrameClosesTheConnection) {
  TransportOptions small;
  small.max_frame_bytes = 1 << 20;
  Node b(2, small);
  b.t().add_peer(1, {"http://127.0.0.1:1"});

  // Before the handshake.
  {
    RawClient c(b.port());
    c.write_header((1 << 20) + 1, 1);
    EXPECT_FALSE(c.read_frame().has_value());
    EXPECT_EQ(c.last_error(), asio::error::eof);
  }
  // After an accepted handshake: a well-formed message is delivered, an
  // oversize header closes the connection.
  {
    RawClient c(b.port());
    c.write_frame(1, handshake(1, 2));
    auto reply = c.read_frame();
    ASSERT_TRUE(reply.has_value());
    ASSERT_EQ(reply->first, 2);
    transportpb::HandshakeReply r;
    ASSERT_TRUE(r.ParseFromString(reply->second));
    ASSERT_TRUE(r.accepted()) << r.reason();
    c.write_frame(3, app(1, 2, 0).SerializeAsString());
    ASSERT_TRUE(wait_until([&] { return b.received() == 1; }));
    c.write_header((1 << 20) + 1, 3);
    EXPECT_FALSE(c.read_frame().has_value());
    EXPECT_EQ(c.last_error(), asio::error::eof);
  }
  EXPECT_EQ(b.received(), 1u);
}

TEST(TransportTest, OversizeMessagesAreDroppedAndTheLinkRecovers) {
  TransportOptions small;
  small.max_frame_bytes = 1 << 20;
  Node a(1, small), b(2);
  connect(a, b);
  ASSERT_TRUE(wait_until([&] { return a.t().is_active(2); }));
  // Over the sender's own limit: dropped before it reaches the wire.
  a.t().send({app(1, 2, 0, 2 << 20)});
  ASSERT_TRUE(wait_until([&] { return a.unreachable(2) > 0; }));
  // Over the receiver's limit: the receiver closes, the sender redials.
  b.t().send({app(2, 1, 0, 2 << 20)});
  ASSERT_TRUE(wait_until([&] { return b.unreachable(1) > 0; }));
  ASSERT_TRUE(wait_until([&] { return b.t().is_active(1); }));
  send_apps(a, b, 10);
  send_apps(b, a, 10);
  ASSERT_TRUE(wait_until([&] { return a.received() == 10 && b.received() == 10; }));
  expect_in_order(b, 1, 10);
  expect_in_order(a, 2, 10);
}

// --- snapshots ------------------------------------------------------------

std::unique_ptr<storage::MemberStorage> open_member(const std::string& dir) {
  std::unique_ptr<storage::MemberStorage> m;
  storage::Status s = storage::MemberStorage::open(dir, {}, &m);
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  return m;
}

// Puts n keys, 100 per applied entry; returns the last index.
using storage::testing::load_keys;

// What the receiving side saw of one snapshot stream.
struct Received {
  std::mutex mu;
  std::unique_ptr<storage::SnapshotInstaller> installer;  // after finish(true)
  int finish_calls = 0;
  bool finish_ok = false;
  size_t chunks = 0;
};

// Feeds a real SnapshotInstaller; `before_add` runs before each chunk.
class InstallerSink : public SnapshotSink {
 public:
  InstallerSink(std::unique_ptr<storage::SnapshotInstaller> inst, Received* out,
                std::function<storage::Status()> before_add)
      : inst_(std::move(inst)), out_(out), before_add_(std::move(before_add)) {}
  storage::Status add(const pb::SnapshotChunk& chunk) override {
    if (before_add_) {
      storage::Status s = before_add_();
      if (!s) return s;
    }
    {
      std::lock_guard l(out_->mu);
      out_->chunks++;
    }
    return inst_->add(chunk);
  }
  void finish(bool ok) override {
    std::lock_guard l(out_->mu);
    out_->finish_calls++;
    out_->finish_ok = ok && inst_->complete();
    if (out_->finish_ok) out_->installer = std::move(inst_);
  }

 private:
  std::unique_ptr<storage::SnapshotInstaller> inst_;
  Received* out_;
  std::function<storage::Status()> before_add_;
};

raftpb::Message snap_message(uint64_t from, uint64_t to, uint64_t index) {
  raftpb::Message m;
  m.set_type(raftpb::MsgSnap);
  m.set_from(from);
  m.set_to(to);
  m.set_term(1);
  auto* meta = m.mutable_snapshot()->mutable_metadata();
  meta->set_index(index);
  meta->set_term(1);
  meta->mutable_conf_state()->add_voters(from);
  meta->mutable_conf_state()->add_voters(to);
  m.mutable_snapshot()->set_data("never sent: the state machine is streamed");
  return m;
}

TEST(TransportTest, SnapshotOf200kKeysInstallsWhileHeartbeatsFlow) {
  ScratchDir d1, d2;
  auto src = open_member(d1.path());
  auto dst = open_member(d2.path());
  const int kKeys = 200'000;
  const uint64_t index = load_keys(*src, kKeys);

  Node a(1), b(2);
  connect(a, b);
  ASSERT_TRUE(wait_until([&] { return a.t().is_active(2); }));

  Received rec;
  // Each chunk waits for a heartbeat newer than the previous chunk's, so the
  // test fails unless heartbeats keep arriving throughout the stream.
  auto last_seen = std::make_shared<size_t>(0);
  auto fresh_heartbeats = std::make_shared<std::atomic<size_t>>(0);
  b.t().set_snapshot_handler([&](const raftpb::Message& m) -> std::unique_ptr<SnapshotSink> {
    EXPECT_TRUE(m.snapshot().data().empty());
    std::unique_ptr<storage::SnapshotInstaller> inst;
    storage::Status s = dst->begin_install(&inst);
    if (!s) return nullptr;
    return std::make_unique<InstallerSink>(
        std::move(inst), &rec, [&b, last_seen, fresh_heartbeats] {
          const bool fresh =
              wait_until([&] { return b.count_type(raftpb::MsgHeartbeat) > *last_seen; }, 10s);
          *last_seen = b.count_type(raftpb::MsgHeartbeat);
          if (fresh) ++*fresh_heartbeats;
          return fresh ? storage::Status{}
                       : storage::Status(storage::Code::kUnavailable, "no heartbeat during stream");
        });
  });
  std::atomic<bool> finished_before_delivery{false};
  b.set_hook([&](const raftpb::Message& m) {
    if (m.type() != raftpb::MsgSnap) return;
    std::lock_guard l(rec.mu);
    finished_before_delivery = rec.finish_calls == 1 && rec.finish_ok;
  });

  std::atomic<bool> pumping{true};
  std::thread pump([&] {
    while (pumping) {
      a.t().send({heartbeat(1, 2)});
      std::this_thread::sleep_for(1ms);  // pacing, not waiting for anything
    }
  });
  std::atomic<int> done_calls{0};
  std::atomic<bool> done_ok{false};
  const auto start = std::chrono::steady_clock::now();
  a.t().send_snapshot(snap_message(1, 2, index), src->snapshot_writer(256 << 10), [&](bool ok) {
    done_ok = ok;
    ++done_calls;
  });
  const bool finished = wait_until([&] { return done_calls > 0; }, 60s);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  pumping = false;
  pump.join();
  ASSERT_TRUE(finished);
  EXPECT_TRUE(done_ok);
  EXPECT_EQ(done_calls, 1);
  ASSERT_TRUE(wait_until([&] { return finished_before_delivery.load(); }));

  std::unique_ptr<storage::SnapshotInstaller> inst;
  {
    std::lock_guard l(rec.mu);
    EXPECT_EQ(rec.finish_calls, 1);
    EXPECT_GT(rec.chunks, 10u);
    EXPECT_EQ(*fresh_heartbeats, rec.chunks);
    inst = std::move(rec.installer);
    std::printf("snapshot: %d keys, %zu chunks, %.0f ms\n", kKeys, rec.chunks,
                std::chrono::duration<double, std::milli>(elapsed).count());
  }
  ASSERT_TRUE(inst);
  raftpb::Message delivered;
  {
    auto got = b.messages();
    auto it = std::find_if(got.begin(), got.end(),
                           [](const auto& m) { return m.type() == raftpb::MsgSnap; });
    ASSERT_NE(it, got.end());
    delivered = *it;
  }
  EXPECT_EQ(b.count_type(raftpb::MsgSnap), 1u);
  EXPECT_EQ(delivered.snapshot().metadata().index(), index);
  storage::Status s = dst->install(std::move(inst), delivered.snapshot().metadata());
  ASSERT_TRUE(s.is_ok()) << s.to_string();

  pb::RangeRequest all;
  all.set_key(std::string(1, '\0'));
  all.set_range_end(std::string(1, '\0'));
  pb::RangeResponse ra, rb;
  ASSERT_TRUE(src->kv().range(all, &ra).is_ok());
  ASSERT_TRUE(dst->kv().range(all, &rb).is_ok());
  EXPECT_EQ(rb.kvs_size(), kKeys);
  EXPECT_EQ(ra.SerializeAsString(), rb.SerializeAsString());
}

TEST(TransportTest, FailingSinkFailsTheSnapshotAndDropsTheMessage) {
  ScratchDir d1, d2;
  auto src = open_member(d1.path());
  auto dst = open_member(d2.path());
  const uint64_t index = load_keys(*src, 3000);
  Node a(1), b(2);
  connect(a, b);
  Received rec;
  int adds = 0;
  b.t().set_snapshot_handler([&](const raftpb::Message&) -> std::unique_ptr<SnapshotSink> {
    std::unique_ptr<storage::SnapshotInstaller> inst;
    if (!dst->begin_install(&inst)) return nullptr;
    return std::make_unique<InstallerSink>(std::move(inst), &rec, [&adds] {
      return ++adds == 3 ? storage::Status(storage::Code::kInternal, "disk full")
                         : storage::Status{};
    });
  });
  std::atomic<int> done_calls{0};
  std::atomic<bool> done_ok{true};
  a.t().send_snapshot(snap_message(1, 2, index), src->snapshot_writer(4 << 10), [&](bool ok) {
    done_ok = ok;
    ++done_calls;
  });
  ASSERT_TRUE(wait_until([&] { return done_calls > 0; }));
  EXPECT_FALSE(done_ok);
  {
    std::lock_guard l(rec.mu);
    EXPECT_EQ(rec.finish_calls, 1);
    EXPECT_FALSE(rec.finish_ok);
  }
  EXPECT_EQ(b.received(), 0u);  // the MsgSnap was dropped

  // A snapshot to an unknown peer fails at once.
  std::atomic<int> unknown_done{0};
  a.t().send_snapshot(snap_message(1, 7, index), src->snapshot_writer(), [&](bool ok) {
    EXPECT_FALSE(ok);
    ++unknown_done;
  });
  ASSERT_TRUE(wait_until([&] { return unknown_done == 1; }));
}

// --- TLS ------------------------------------------------------------------

// A CA and one certificate for 127.0.0.1 usable as server and client.
struct Pki {
  ::muster::testing::TestPki pki;
  std::string ca, cert, key;
  Pki() {
    pki.ca("ca", "muster-test-ca");
    pki.leaf("peer", "ca", "peer",
             "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n");
    ca = pki.crt("ca");
    cert = pki.crt("peer");
    key = pki.key("peer");
  }
  TransportOptions options(bool client_cert) const {
    TransportOptions o;
    net::TlsOptions server;
    server.cert_file = cert;
    server.key_file = key;
    server.trusted_ca_file = ca;
    server.client_cert_auth = true;
    o.server_tls = server;
    net::TlsOptions client;
    client.trusted_ca_file = ca;
    if (client_cert) {
      client.cert_file = cert;
      client.key_file = key;
    }
    o.client_tls = client;
    return o;
  }
};

TEST(TransportTest, MutualTlsWorksAndAPeerWithoutClientCertificateIsRejected) {
  Pki pki;
  Node a(1, pki.options(true), 0, true), b(2, pki.options(true), 0, true);
  connect(a, b);
  ASSERT_TRUE(wait_until([&] { return a.t().is_active(2) && b.t().is_active(1); }));
  send_apps(a, b, 500);
  send_apps(b, a, 500);
  ASSERT_TRUE(wait_until([&] { return a.received() == 500 && b.received() == 500; }));
  expect_in_order(b, 1, 500);
  expect_in_order(a, 2, 500);

  Node c(3, pki.options(false), 0, true);
  c.t().add_peer(2, {b.url()});
  b.t().add_peer(3, {c.url()});
  ASSERT_TRUE(wait_until([&] { return c.t().peer_status(2).dial_failures >= 2; }));
  EXPECT_NE(c.t().peer_status(2).last_error.find("certificate required"), std::string::npos)
      << c.t().peer_status(2).last_error;
  c.t().send({app(3, 2, 0)});
  const uint64_t f = c.t().peer_status(2).dial_failures;
  ASSERT_TRUE(wait_until([&] { return c.t().peer_status(2).dial_failures >= f + 2; }));
  EXPECT_FALSE(c.t().is_active(2));
  EXPECT_EQ(b.received_from(3), 0u);
  // b can still dial c (b presents its certificate; c verifies it).
  ASSERT_TRUE(wait_until([&] { return b.t().is_active(3); }));

  // Plain http to an https listener fails too.
  Node p(4);
  p.t().add_peer(2, {"http://127.0.0.1:" + std::to_string(b.port())});
  b.t().add_peer(4, {p.url()});
  ASSERT_TRUE(wait_until([&] { return p.t().peer_status(2).dial_failures >= 2; }));
  EXPECT_FALSE(p.t().is_active(2));
}

}  // namespace
}  // namespace muster::server
