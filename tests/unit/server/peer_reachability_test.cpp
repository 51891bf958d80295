// node/server/peer_reachability.h: the leader's view of how long each member
// has gone unheard, driven with a hand-moved clock and byte counters.
#include "node/server/peer_reachability.h"

#include <gtest/gtest.h>

#include <map>

namespace muster::server {
namespace {

using std::chrono::milliseconds;
using Clock = PeerReachability::Clock;

struct Fixture {
  std::map<uint64_t, uint64_t> bytes;
  PeerReachability r{1, [this](uint64_t id) { return bytes[id]; }};
  Clock::time_point t0 = Clock::now();
  milliseconds unheard(uint64_t id) {
    for (const auto& p : r.view().peers)
      if (p.id == id) return p.unheard_for;
    ADD_FAILURE() << "no peer " << id;
    return milliseconds(-1);
  }
};

TEST(PeerReachability, AFollowerHasNoView) {
  Fixture f;
  f.r.sample(f.t0, false, {1, 2, 3}, {});
  EXPECT_FALSE(f.r.view().leader);
  EXPECT_TRUE(f.r.view().peers.empty());
}

TEST(PeerReachability, SilenceGrowsUntilFramesArriveAndStartsAtTheElection) {
  Fixture f;
  f.bytes[2] = 100;  // heard before this member led: does not count
  f.r.sample(f.t0, true, {1, 2, 3}, {});
  EXPECT_TRUE(f.r.view().leader);
  EXPECT_EQ(f.unheard(1), milliseconds(0));  // itself
  f.bytes[2] += 10;                          // 2 answers heartbeats, 3 does not
  f.r.sample(f.t0 + milliseconds(100), true, {1, 2, 3}, {});
  EXPECT_EQ(f.unheard(2), milliseconds(0));
  EXPECT_EQ(f.unheard(3), milliseconds(100));
  f.r.sample(f.t0 + milliseconds(5000), true, {1, 2, 3}, {});
  EXPECT_EQ(f.unheard(2), milliseconds(4900));
  EXPECT_EQ(f.unheard(3), milliseconds(5000));
  EXPECT_EQ(f.r.view().leading_for, milliseconds(5000));
  f.bytes[3] += 1;  // 3 is back
  f.r.sample(f.t0 + milliseconds(5100), true, {1, 2, 3}, {});
  EXPECT_EQ(f.unheard(3), milliseconds(0));
}

TEST(PeerReachability, ANewLeadershipForgetsTheOldView) {
  Fixture f;
  f.r.sample(f.t0, true, {1, 2}, {3});
  f.r.sample(f.t0 + milliseconds(9000), true, {1, 2}, {3});
  EXPECT_EQ(f.unheard(2), milliseconds(9000));
  EXPECT_TRUE(f.r.view().peers.back().learner);
  f.r.sample(f.t0 + milliseconds(9100), false, {1, 2}, {3});
  f.r.sample(f.t0 + milliseconds(12000), true, {1, 2}, {3});
  f.r.sample(f.t0 + milliseconds(12500), true, {1, 2}, {3});
  EXPECT_EQ(f.unheard(2), milliseconds(500));  // never longer than this leadership
  EXPECT_EQ(f.r.view().leading_for, milliseconds(500));
}

}  // namespace
}  // namespace muster::server
