// node/server/leader_forward.h: requests only the leader can answer, carried
// to it over the peer transport.
//
// A lease's clock runs on the leader alone (followers never see keepalives),
// so a keepalive or a time-to-live question that reaches a follower must be
// answered by the leader; so must a learner's promotion (only the leader
// knows how far the learner's log is).  etcd sends these over its peer HTTP
// (/leases, /leases/internal, /members/promote); Muster sends them as
// transportpb.Forward frames on the Raft streams that already join every
// pair of members: no client URL, client certificate or extra connection is
// involved, and the peer TLS settings apply as for Raft itself.
//
// A call is sent to the member believed to lead.  It is sent again, to the
// new leader, when the leadership moves or the asked member answers that it
// does not lead (a request can be lost with a broken connection; the asker
// does not wait for a timeout to learn the leader changed).  The first
// answer wins; a call without one fails with etcd's "request timed out"
// after its deadline.  Every kind is safe to ask twice: keepalives and
// time-to-live questions are idempotent, and a promotion asked again of a
// new leader is checked again against that leader's configuration.
//
// Threads: call() and receive() from any thread; poll() from one thread at a
// time (the driver's housekeeping).  Callbacks (`done`, `serve`'s reply, and
// the `send` hook) run without the forwarder's lock held, on whatever thread
// delivered the answer; they must not block.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "node/server/transport.pb.h"
#include "node/storage/status.h"

namespace muster::server {

class LeaderForwarder {
 public:
  using Clock = std::chrono::steady_clock;
  // An answer: OK with the response message serialized, or etcd's error.
  using Reply = std::function<void(storage::Status, std::string body)>;
  // This member's own answer to a forwarded request.  REQUIRES: reply is
  // called exactly once.  An answer of Status with code kFailedPrecondition
  // and text kNotLeader tells the asker to ask the leader again.
  using Serve = std::function<void(transportpb::ForwardKind, std::string body, Reply reply)>;
  // Queues a frame for peer `to` (Transport::send_forward).
  using Send = std::function<void(uint64_t to, transportpb::Forward f)>;

  static constexpr const char* kNotLeader = "etcdserver: not leader";

  LeaderForwarder(uint64_t local_id, std::chrono::milliseconds timeout, Send send, Serve serve);

  // Asks the leader (`leader`, or 0 when none is known yet: the call waits for
  // poll() to see one).  When `leader` is this member, serve() answers at once.
  void call(uint64_t leader, transportpb::ForwardKind kind, std::string body, Reply done);

  // A Forward frame from peer `from`: a request to serve (the reply goes back
  // to `from`) or the answer to one of our calls.
  void receive(uint64_t from, transportpb::Forward f);

  // Resends calls whose target no longer leads (or said so) to `leader`, and
  // fails calls past their deadline with "etcdserver: request timed out".
  void poll(Clock::time_point now, uint64_t leader);

  // Fails every waiting call with `why` (the member is stopping).
  void fail_all(const storage::Status& why);

  size_t pending() const;

 private:
  struct Pending {
    transportpb::ForwardKind kind;
    std::string body;
    Reply done;
    Clock::time_point deadline;
    uint64_t target = 0;   // the member last asked (0: not yet sent)
    bool refused = false;  // the target answered that it does not lead
  };

  // Sends call `id` to `leader`: over the transport, or to serve() when this
  // member leads.  REQUIRES: mu_ not held.
  void send_to(uint64_t id, uint64_t leader, transportpb::ForwardKind kind,
               const std::string& body);
  void answer(uint64_t id, storage::Status st, std::string body, bool not_leader, uint64_t from);

  const uint64_t local_id_;
  const std::chrono::milliseconds timeout_;
  const Send send_;
  const Serve serve_;

  mutable std::mutex mu_;  // guards everything below
  uint64_t next_id_ = 1;
  std::map<uint64_t, Pending> pending_;
};

}  // namespace muster::server
