// Self-tests of the simulator: determinism, and that its checker has teeth.
#include "tests/sim/sim.h"

#include <gtest/gtest.h>

namespace muster::raft::sim {
namespace {

TEST(RaftSim, SameSeedReplaysIdentically) {
  SimOptions o;
  const SimResult a = run_simulation(77, o);
  const SimResult b = run_simulation(77, o);
  ASSERT_TRUE(a.ok) << a.failure;
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.applied_entries, b.applied_entries);
  EXPECT_EQ(a.elections, b.elections);
  EXPECT_EQ(a.crashes, b.crashes);
  EXPECT_GT(a.applied_entries, 0u);
}

TEST(RaftSim, DifferentSeedsExploreDifferentRuns) {
  SimOptions o;
  const SimResult a = run_simulation(1, o);
  const SimResult b = run_simulation(2, o);
  ASSERT_TRUE(a.ok) << a.failure;
  ASSERT_TRUE(b.ok) << b.failure;
  EXPECT_NE(a.steps, b.steps);
}

TEST(RaftSim, RunsExerciseFaultsAndFeatures) {
  // Over a batch of seeds the simulator must actually crash nodes, change
  // membership, install snapshots and check reads; otherwise it proves little.
  SimOptions o;
  SimResult t;
  for (uint64_t s = 100; s < 140; ++s) {
    const SimResult r = run_simulation(s, o);
    ASSERT_TRUE(r.ok) << r.failure << "\nreplay: " << replay_command(s, o);
    t.crashes += r.crashes;
    t.conf_changes += r.conf_changes;
    t.snapshots_installed += r.snapshots_installed;
    t.reads += r.reads;
    t.elections += r.elections;
  }
  EXPECT_GT(t.crashes, 20u);
  EXPECT_GT(t.conf_changes, 10u);
  EXPECT_GT(t.snapshots_installed, 10u);
  EXPECT_GT(t.reads, 100u);
  EXPECT_GT(t.elections, 80u);
}

// Runs seeds with a rule broken until the checker reports a violation;
// returns the failure text ("" if none of the seeds failed).
std::string first_failure(const SimOptions& o, uint64_t seeds) {
  for (uint64_t s = 1; s <= seeds; ++s) {
    const SimResult r = run_simulation(s, o);
    if (!r.ok) return r.failure;
  }
  return "";
}

TEST(RaftSim, CatchesDoubleVotingByTheVoteCheck) {
  SimOptions o;
  o.knobs.vote_twice = true;
  const std::string f = first_failure(o, 300);
  EXPECT_NE(f.find("voted twice"), std::string::npos) << f;
}

TEST(RaftSim, CatchesDoubleVotingByElectionSafety) {
  SimOptions o;
  o.knobs.vote_twice = true;
  o.skip_vote_check = true;
  const std::string f = first_failure(o, 300);
  EXPECT_NE(f.find("election safety"), std::string::npos) << f;
}

TEST(RaftSim, CatchesVotingWithoutLogComparison) {
  SimOptions o;
  o.knobs.vote_ignoring_log = true;
  const std::string f = first_failure(o, 300);
  EXPECT_TRUE(f.find("leader completeness") != std::string::npos ||
              f.find("state machine safety") != std::string::npos ||
              f.find("log matching") != std::string::npos)
      << f;
}

}  // namespace
}  // namespace muster::raft::sim
