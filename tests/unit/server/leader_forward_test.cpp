// LeaderForwarder (node/server/leader_forward.h): three members' forwarders
// wired to each other through a queue the test delivers by hand, so every
// interleaving is explicit and nothing depends on threads or timing.
#include "node/server/leader_forward.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>

namespace muster::server {
namespace {

using storage::Code;
using storage::Status;
using Clock = LeaderForwarder::Clock;
using namespace std::chrono_literals;

struct Wire {
  uint64_t from, to;
  transportpb::Forward f;
};

// One member: its forwarder, whether it leads, and a counter of what it
// served.  A leader answers every request with "ttl:<body>".
struct Member {
  uint64_t id;
  bool leads = false;
  bool hold = false;  // a leader that keeps its answers (to lose them later)
  int served = 0;
  std::vector<LeaderForwarder::Reply> held;
  std::unique_ptr<LeaderForwarder> fwd;
};

class LeaderForwardTest : public ::testing::Test {
 protected:
  LeaderForwardTest() {
    for (uint64_t id : {1, 2, 3}) {
      auto& m = members_[id];
      m.id = id;
      m.fwd = std::make_unique<LeaderForwarder>(
          id, 1000ms,
          [this, id](uint64_t to, transportpb::Forward f) {
            if (!cut_.count(to)) wire_.push_back({id, to, std::move(f)});
          },
          [this, id](transportpb::ForwardKind, std::string body, LeaderForwarder::Reply reply) {
            Member& self = members_[id];
            if (!self.leads)
              return reply(Status(Code::kFailedPrecondition, LeaderForwarder::kNotLeader), {});
            self.served++;
            if (self.hold) return self.held.push_back(std::move(reply));
            reply({}, "ttl:" + body);
          });
    }
  }

  // Delivers every frame on the wire, including frames sent while
  // delivering.
  void deliver() {
    while (!wire_.empty()) {
      Wire w = std::move(wire_.front());
      wire_.pop_front();
      members_[w.to].fwd->receive(w.from, std::move(w.f));
    }
  }

  struct Result {
    std::optional<Status> status;
    std::string body;
    int calls = 0;
  };
  LeaderForwarder::Reply recorder(std::shared_ptr<Result> r) {
    return [r](Status st, std::string body) {
      r->status = st;
      r->body = body;
      r->calls++;
    };
  }

  std::map<uint64_t, Member> members_;
  std::deque<Wire> wire_;
  std::set<uint64_t> cut_;  // members whose frames are lost (killed)
};

TEST_F(LeaderForwardTest, FollowerCallIsAnsweredByTheLeader) {
  members_[1].leads = true;
  auto r = std::make_shared<Result>();
  members_[2].fwd->call(1, transportpb::FORWARD_LEASE_KEEPALIVE, "7", recorder(r));
  deliver();
  ASSERT_TRUE(r->status.has_value());
  EXPECT_TRUE(r->status->ok());
  EXPECT_EQ(r->body, "ttl:7");
  EXPECT_EQ(members_[1].served, 1);
  EXPECT_EQ(members_[2].fwd->pending(), 0u);
}

TEST_F(LeaderForwardTest, LeaderErrorsPassThroughWithTheirCodeAndText) {
  members_[1].leads = true;
  members_[1].fwd = std::make_unique<LeaderForwarder>(
      1, 1000ms,
      [this](uint64_t to, transportpb::Forward f) {
        wire_.push_back({1, to, f});
      },
      [](transportpb::ForwardKind, std::string, LeaderForwarder::Reply reply) {
        reply(Status(Code::kNotFound, "etcdserver: requested lease not found"), {});
      });
  auto r = std::make_shared<Result>();
  members_[2].fwd->call(1, transportpb::FORWARD_LEASE_TIME_TO_LIVE, "9", recorder(r));
  deliver();
  ASSERT_TRUE(r->status.has_value());
  EXPECT_EQ(r->status->code(), Code::kNotFound);
  EXPECT_EQ(r->status->message(), "etcdserver: requested lease not found");
}

TEST_F(LeaderForwardTest, CallToADeadLeaderIsResentToTheNewOneWithoutWaitingForTheDeadline) {
  members_[1].leads = true;
  cut_.insert(1);  // member 1 was killed: what is sent to it is lost
  auto r = std::make_shared<Result>();
  const auto t0 = Clock::now();
  members_[2].fwd->call(1, transportpb::FORWARD_LEASE_KEEPALIVE, "5", recorder(r));
  deliver();
  members_[2].fwd->poll(t0 + 100ms, 1);  // still believed to lead: nothing to do
  deliver();
  EXPECT_FALSE(r->status.has_value());
  members_[1].leads = false;
  members_[3].leads = true;
  members_[2].fwd->poll(t0 + 200ms, 3);  // the election is over
  deliver();
  ASSERT_TRUE(r->status.has_value());
  EXPECT_TRUE(r->status->ok());
  EXPECT_EQ(r->body, "ttl:5");
  EXPECT_EQ(members_[3].served, 1);
}

TEST_F(LeaderForwardTest, AMemberThatNoLongerLeadsSendsTheAskerToTheLeader) {
  members_[3].leads = true;
  auto r = std::make_shared<Result>();
  const auto t0 = Clock::now();
  // Member 2 still believes 1 leads; 1 says it does not.
  members_[2].fwd->call(1, transportpb::FORWARD_LEASE_KEEPALIVE, "4", recorder(r));
  deliver();
  EXPECT_FALSE(r->status.has_value()) << "a not-leader answer must not reach the client";
  members_[2].fwd->poll(t0 + 100ms, 1);  // asks 1 again: it was refused
  deliver();
  EXPECT_FALSE(r->status.has_value());
  members_[2].fwd->poll(t0 + 200ms, 3);
  deliver();
  ASSERT_TRUE(r->status.has_value());
  EXPECT_EQ(r->body, "ttl:4");
  EXPECT_EQ(r->calls, 1);
}

TEST_F(LeaderForwardTest, NoAnswerBeforeTheDeadlineIsEtcdsTimeout) {
  auto r = std::make_shared<Result>();
  const auto t0 = Clock::now();
  members_[2].fwd->call(0, transportpb::FORWARD_MEMBER_PROMOTE, "x", recorder(r));  // no leader
  members_[2].fwd->poll(t0 + 500ms, 0);
  EXPECT_FALSE(r->status.has_value());
  members_[2].fwd->poll(t0 + 1500ms, 0);
  ASSERT_TRUE(r->status.has_value());
  EXPECT_EQ(r->status->code(), Code::kUnavailable);
  EXPECT_EQ(r->status->message(), "etcdserver: request timed out");
  EXPECT_EQ(members_[2].fwd->pending(), 0u);
}

TEST_F(LeaderForwardTest, OnlyTheFirstOfTwoAnswersCounts) {
  members_[1].leads = true;
  members_[1].hold = true;
  auto r = std::make_shared<Result>();
  const auto t0 = Clock::now();
  members_[2].fwd->call(1, transportpb::FORWARD_LEASE_KEEPALIVE, "3", recorder(r));
  deliver();
  ASSERT_EQ(members_[1].held.size(), 1u);
  // Leadership moves before 1 answers; 3 answers the resent call.
  members_[1].leads = false;
  members_[3].leads = true;
  members_[2].fwd->poll(t0 + 100ms, 3);
  deliver();
  ASSERT_TRUE(r->status.has_value());
  // 1's late answer arrives and is dropped.
  members_[1].held[0]({}, "late");
  deliver();
  EXPECT_EQ(r->calls, 1);
  EXPECT_EQ(r->body, "ttl:3");
}

TEST_F(LeaderForwardTest, TheLeaderItselfAnswersWithoutTheWire) {
  members_[2].leads = true;
  auto r = std::make_shared<Result>();
  members_[2].fwd->call(2, transportpb::FORWARD_LEASE_KEEPALIVE, "1", recorder(r));
  EXPECT_TRUE(wire_.empty());
  ASSERT_TRUE(r->status.has_value());
  EXPECT_EQ(r->body, "ttl:1");
}

TEST_F(LeaderForwardTest, StoppingFailsEveryWaitingCall) {
  auto r = std::make_shared<Result>();
  members_[2].fwd->call(0, transportpb::FORWARD_LEASE_KEEPALIVE, "1", recorder(r));
  members_[2].fwd->fail_all(Status(Code::kUnavailable, "etcdserver: server stopped"));
  ASSERT_TRUE(r->status.has_value());
  EXPECT_EQ(r->status->message(), "etcdserver: server stopped");
}

}  // namespace
}  // namespace muster::server
