// Scenario tests for the Raft core: each test states one rule of the Raft
// paper / thesis and drives a small in-process cluster into the situation.
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/unit/raft/cluster.h"

namespace muster::raft::testing {
namespace {

int count_type(const std::vector<pb::Message>& msgs, pb::MessageType t, uint64_t to = 0) {
  return static_cast<int>(std::count_if(msgs.begin(), msgs.end(), [&](const pb::Message& m) {
    return m.type() == t && (to == 0 || m.to() == to);
  }));
}

pb::ConfChange conf_change(pb::ConfChangeType t, uint64_t id) {
  pb::ConfChange cc;
  cc.set_type(t);
  cc.set_node_id(id);
  return cc;
}

// --- elections -------------------------------------------------------------

TEST(RaftElection, CampaignElectsOneLeaderAndOthersFollow) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  EXPECT_EQ(c.raft(1).role(), StateRole::kLeader);
  EXPECT_EQ(c.raft(1).term(), 2u);
  for (uint64_t id : {2, 3}) {
    EXPECT_EQ(c.raft(id).role(), StateRole::kFollower);
    EXPECT_EQ(c.raft(id).lead(), 1u);
    EXPECT_EQ(c.raft(id).term(), 2u);
  }
  // The leader's no-op of term 2 is committed everywhere.
  for (uint64_t id : {1, 2, 3}) EXPECT_EQ(c.raft(id).log().committed(), 2u);
}

TEST(RaftElection, ElectionTimeoutStartsElectionWithoutHelp) {
  Cluster c({1, 2, 3});
  // Nobody campaigns explicitly: the randomized timeouts do it.
  for (int i = 0; i < 40 && c.leader() == 0; ++i) {
    c.tick_all();
    c.stabilize();
  }
  ASSERT_NE(c.leader(), 0u);
}

TEST(RaftElection, RandomizedTimeoutStaysInRange) {
  MemoryStorage s;
  pb::Snapshot boot;
  boot.mutable_metadata()->set_index(1);
  boot.mutable_metadata()->set_term(1);
  boot.mutable_metadata()->mutable_conf_state()->add_voters(1);
  boot.mutable_metadata()->mutable_conf_state()->add_voters(2);
  ASSERT_EQ(s.apply_snapshot(boot), StorageError::kOk);
  std::set<int> seen;
  for (uint64_t seed = 1; seed < 200; ++seed) {
    Config cfg;
    cfg.id = 1;
    cfg.seed = seed;
    Raft r(cfg, &s);
    EXPECT_GE(r.randomized_election_timeout(), 10);
    EXPECT_LT(r.randomized_election_timeout(), 20);
    seen.insert(r.randomized_election_timeout());
  }
  EXPECT_GT(seen.size(), 5u) << "timeouts should actually be randomized";
}

TEST(RaftElection, VotesAtMostOncePerTerm) {
  Cluster c({1, 2, 3}, [](Config& cfg) { cfg.pre_vote = false; });
  auto vote = [](uint64_t from, uint64_t term) {
    pb::Message m;
    m.set_type(pb::MsgVote);
    m.set_from(from);
    m.set_to(3);
    m.set_term(term);
    m.set_index(1);
    m.set_log_term(1);
    return m;
  };
  c.raft(3).step(vote(1, 5));
  c.raft(3).step(vote(2, 5));
  c.raft(3).step(vote(1, 5));  // a retransmission is granted again
  auto msgs = c.take_messages();
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_FALSE(msgs[0].reject());
  EXPECT_TRUE(msgs[1].reject()) << "second candidate in the same term must be refused";
  EXPECT_FALSE(msgs[2].reject());
  EXPECT_EQ(c.raft(3).vote(), 1u);
}

TEST(RaftElection, RejectsCandidateWithStaleLog) {
  Cluster c({1, 2, 3}, [](Config& cfg) { cfg.pre_vote = false; });
  c.campaign(1);
  ASSERT_TRUE(c.raft(1).propose("x") == DropReason::kNone);
  c.stabilize();
  // Node 3 lost everything after the bootstrap (e.g. a new disk); a vote
  // request from it with an older last log must be refused (§5.4.1).
  pb::Message m;
  m.set_type(pb::MsgVote);
  m.set_from(3);
  m.set_to(2);
  m.set_term(10);
  m.set_index(1);
  m.set_log_term(1);
  c.tick(2, 30);  // leave the leader lease
  c.drop_queued();
  c.raft(2).step(m);
  auto msgs = c.take_messages();
  ASSERT_EQ(count_type(msgs, pb::MsgVoteResp), 1);
  for (auto& r : msgs) {
    if (r.type() == pb::MsgVoteResp) {
      EXPECT_TRUE(r.reject());
    }
  }
}

// --- Figure 7: leader brings divergent followers in line ---------------------

struct Fig7Case {
  const char* name;
  std::vector<uint64_t> terms;  // follower log terms from index 2
};

class Figure7 : public ::testing::TestWithParam<Fig7Case> {};

TEST_P(Figure7, LeaderMakesFollowerLogIdenticalToItsOwn) {
  // Paper Figure 7: the leader (term 8 in the figure) has entries with terms
  // 1,1,1,4,4,5,5,6,6,6 at indexes 1..10; index 1 is our bootstrap snapshot.
  const std::vector<uint64_t> leader_terms = {1, 1, 4, 4, 5, 5, 6, 6, 6};
  Cluster c({1, 2, 3});
  auto shape = [&](uint64_t id, const std::vector<uint64_t>& terms) {
    c.storage(id).append(entries_with_terms(terms));
    pb::HardState hs;
    hs.set_term(8);
    hs.set_commit(1);
    c.storage(id).set_hard_state(hs);
    c.restart(id);
  };
  shape(1, leader_terms);
  shape(2, GetParam().terms);
  shape(3, {});  // votes for the leader; its log is empty
  c.campaign(1);
  ASSERT_EQ(c.raft(1).role(), StateRole::kLeader);
  c.stabilize();
  EXPECT_EQ(c.log_terms(2), c.log_terms(1)) << GetParam().name;
  // Everything, including the leader's no-op of its new term, is committed.
  EXPECT_EQ(c.raft(2).log().committed(), c.raft(1).log().last_index());
}

INSTANTIATE_TEST_SUITE_P(PaperFigure7, Figure7,
                         ::testing::Values(Fig7Case{"a", {1, 1, 4, 4, 5, 5, 6, 6}},
                                           Fig7Case{"b", {1, 1, 4}},
                                           Fig7Case{"c", {1, 1, 4, 4, 5, 5, 6, 6, 6, 6}},
                                           Fig7Case{"d", {1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7}},
                                           Fig7Case{"e", {1, 1, 4, 4, 4, 4}},
                                           Fig7Case{"f", {1, 1, 2, 2, 2, 3, 3, 3, 3, 3}}),
                         [](const ::testing::TestParamInfo<Fig7Case>& i) {
                           return std::string(i.param.name);
                         });

// --- Figure 8: only current-term entries commit by counting --------------------

void figure8(bool broken, uint64_t* committed_after_old_ack) {
  Cluster c({1, 2, 3}, [&](Config& cfg) {
    cfg.pre_vote = false;
    cfg.testing.commit_entries_of_older_terms = broken;
  });
  // Node 1 holds an uncommitted entry of term 2 at index 2 (Figure 8 (c)).
  c.storage(1).append(entries_with_terms({2}));
  pb::HardState hs;
  hs.set_term(3);
  hs.set_commit(1);
  c.storage(1).set_hard_state(hs);
  c.restart(1);
  // Node 1 wins term 4; we hold back replication and answer by hand.
  c.ignore(pb::MsgApp);
  c.campaign(1);
  ASSERT_EQ(c.raft(1).role(), StateRole::kLeader);
  ASSERT_EQ(c.raft(1).log().last_index(), 3u);  // index 3 = no-op of term 4
  c.drop_queued();
  // Node 2 now acknowledges index 2 (the old-term entry) but not the no-op:
  // index 2 is on a majority (nodes 1 and 2).
  pb::Message ack;
  ack.set_type(pb::MsgAppResp);
  ack.set_from(2);
  ack.set_to(1);
  ack.set_term(c.raft(1).term());
  ack.set_index(2);
  c.raft(1).step(ack);
  c.process_ready(1);
  *committed_after_old_ack = c.raft(1).log().committed();
  // Acknowledging the no-op commits both (the old one indirectly).
  ack.set_index(3);
  c.raft(1).step(ack);
  c.process_ready(1);
  EXPECT_EQ(c.raft(1).log().committed(), 3u);
}

TEST(RaftCommit, Figure8OldTermEntryIsNotCommittedByCounting) {
  uint64_t committed = 0;
  figure8(false, &committed);
  EXPECT_EQ(committed, 1u) << "an entry of an older term must not commit by replica count";
}

TEST(RaftCommit, Figure8BrokenKnobCommitsOldTermEntry) {
  // The same scenario with the rule deliberately broken shows the test has
  // teeth: the old-term entry commits as soon as a majority holds it.
  uint64_t committed = 0;
  figure8(true, &committed);
  EXPECT_EQ(committed, 2u);
}

// The full Figure 8 sequence on five nodes.  Returns what node 1 applied and
// what node 2 ends up with at index 3.
struct Fig8Outcome {
  std::vector<std::string> applied_by_1;
  uint64_t term_at_3_on_2 = 0;
  uint64_t committed_on_2 = 0;
};

Fig8Outcome figure8_full(bool broken) {
  std::vector<uint64_t> no_learners;
  Cluster c({1, 2, 3, 4, 5}, [&](Config& cfg) {
    cfg.pre_vote = false;
    cfg.check_quorum = false;
    cfg.max_size_per_msg = 1;  // one entry per MsgApp, as in the figure's timeline
    cfg.testing.commit_entries_of_older_terms = broken;
  });
  // (a) S1 leads term 2 and replicates x (index 3, term 2) to S2 only.
  c.campaign(1);
  EXPECT_EQ(c.raft(1).term(), 2u);
  c.cut(1, 3);
  c.cut(1, 4);
  c.cut(1, 5);
  EXPECT_EQ(c.raft(1).propose("x"), DropReason::kNone);
  c.stabilize();
  EXPECT_EQ(c.raft(2).log().last_index(), 3u);
  EXPECT_EQ(c.raft(1).log().committed(), 2u);
  // (b) S1 goes away; S5 wins term 3 with S3 and S4 and appends its no-op
  // at index 3 (term 3), which reaches nobody.
  c.recover();
  c.restart(1);  // crash: only persisted state survives
  c.isolate(1);
  c.set_drop_hook([](const pb::Message& m) { return m.from() == 5 && m.type() == pb::MsgApp; });
  c.campaign(5);
  EXPECT_EQ(c.raft(5).role(), StateRole::kLeader);
  EXPECT_EQ(c.raft(5).term(), 3u);
  c.drop_queued();
  // (c) S5 goes away; S1 returns, wins term 4 and replicates x to S3 and S4
  // (x is now on a majority: S1, S2, S3, S4), but its own no-op of term 4
  // (index 4) reaches nobody.
  c.recover();
  c.restart(5);
  c.isolate(5);
  c.set_drop_hook([&c](const pb::Message& m) {
    if (m.from() != 1 || m.type() != pb::MsgApp) return false;
    if (m.to() == 2) return true;
    // S3 and S4 may see the no-op only while they cannot accept it (they
    // reject it, which makes S1 back up and send x).
    if (c.raft(m.to()).log().last_index() < 3) return false;
    for (const auto& e : m.entries()) {
      if (e.index() >= 4) return true;
    }
    return false;
  });
  c.campaign(1);
  if (c.raft(1).role() != StateRole::kLeader) c.campaign(1);
  EXPECT_EQ(c.raft(1).role(), StateRole::kLeader);
  EXPECT_EQ(c.raft(1).term(), 4u);
  EXPECT_EQ(c.raft(3).log().term_or_zero(3), 2u);
  c.drop_queued();
  Fig8Outcome out;
  out.applied_by_1 = c.node(1).applied;
  // (d) S1 goes away again; S5 (last term 3) is elected by S2, S3, S4 (last
  // term 2) and overwrites index 3 everywhere.
  c.recover();
  c.restart(1);
  c.isolate(1);
  c.campaign(5);
  if (c.raft(5).role() != StateRole::kLeader) c.campaign(5);
  EXPECT_EQ(c.raft(5).role(), StateRole::kLeader);
  c.stabilize();
  out.term_at_3_on_2 = c.raft(2).log().term_or_zero(3);
  out.committed_on_2 = c.raft(2).log().committed();
  return out;
}

TEST(RaftCommit, Figure8FullSequenceNeverLosesAnAppliedEntry) {
  const Fig8Outcome o = figure8_full(false);
  // S1 did not count x as committed in term 4, so S5 overwriting it is legal.
  EXPECT_TRUE(o.applied_by_1.empty());
  EXPECT_EQ(o.term_at_3_on_2, 3u);
  EXPECT_GE(o.committed_on_2, 3u);
}

TEST(RaftCommit, Figure8FullSequenceWithBrokenRuleLosesAppliedEntry) {
  // With the rule broken, S1 applies x, and then the new majority commits a
  // different entry at the same index: exactly the loss Figure 8 warns about.
  const Fig8Outcome o = figure8_full(true);
  EXPECT_EQ(o.applied_by_1, std::vector<std::string>{"x"});
  EXPECT_EQ(o.term_at_3_on_2, 3u);
  EXPECT_GE(o.committed_on_2, 3u);
}

// --- pre-vote and check-quorum ----------------------------------------------

TEST(RaftPreVote, PartitionedNodeRejoinsWithoutBumpingTerm) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  const uint64_t term = c.raft(1).term();
  c.isolate(3);
  for (int i = 0; i < 100; ++i) {
    c.tick(3);
    c.stabilize();
  }
  EXPECT_EQ(c.raft(3).term(), term) << "pre-vote must not raise the term of an isolated node";
  EXPECT_NE(c.raft(3).role(), StateRole::kLeader);
  c.recover();
  // Rejoin: the leader's next heartbeat brings node 3 back; nobody changes term.
  c.tick(1);
  c.stabilize();
  EXPECT_EQ(c.raft(1).role(), StateRole::kLeader);
  for (uint64_t id : {1, 2, 3}) EXPECT_EQ(c.raft(id).term(), term);
  EXPECT_EQ(c.raft(3).lead(), 1u);
}

TEST(RaftPreVote, WithoutPreVoteRejoiningNodeDisruptsLeader) {
  // The contrast case: without pre-vote (and check-quorum) the isolated node
  // raises its term and forces the leader to step down when it returns.
  Cluster c({1, 2, 3}, [](Config& cfg) {
    cfg.pre_vote = false;
    cfg.check_quorum = false;
  });
  c.campaign(1);
  const uint64_t term = c.raft(1).term();
  c.isolate(3);
  for (int i = 0; i < 100; ++i) c.tick(3);
  c.drop_queued();
  EXPECT_GT(c.raft(3).term(), term);
  c.recover();
  // Node 3 times out again and its higher-term vote request deposes node 1.
  for (int i = 0; i < 30; ++i) {
    c.tick(3);
    c.stabilize();
  }
  EXPECT_GT(c.raft(1).term(), term);
}

TEST(RaftCheckQuorum, LeaderWithoutQuorumStepsDown) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  c.isolate(1);
  // Within two election timeouts: the first check may still see the acks
  // from before the partition.
  for (int i = 0; i < 20 && c.raft(1).role() == StateRole::kLeader; ++i) {
    c.tick(1);
    c.drop_queued();
  }
  EXPECT_EQ(c.raft(1).role(), StateRole::kFollower);
  EXPECT_EQ(c.raft(1).lead(), 0u);
}

TEST(RaftCheckQuorum, LeaderWithQuorumStaysLeader) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  c.isolate(3);
  for (int i = 0; i < 50; ++i) {
    c.tick(1);
    c.stabilize();
  }
  EXPECT_EQ(c.raft(1).role(), StateRole::kLeader);
}

TEST(RaftCheckQuorum, FollowerInLeaseIgnoresDisruptiveVote) {
  Cluster c({1, 2, 3}, [](Config& cfg) { cfg.pre_vote = false; });
  c.campaign(1);
  const uint64_t term = c.raft(1).term();
  pb::Message m;
  m.set_type(pb::MsgVote);
  m.set_from(3);
  m.set_to(2);
  m.set_term(term + 5);
  m.set_index(100);
  m.set_log_term(term);
  c.raft(2).step(m);
  EXPECT_EQ(c.raft(2).term(), term) << "a follower that hears from its leader ignores the vote";
  EXPECT_EQ(c.raft(2).lead(), 1u);
  EXPECT_EQ(count_type(c.take_messages(), pb::MsgVoteResp), 0);
}

// --- learners ----------------------------------------------------------------

TEST(RaftLearner, LearnerNeverCampaignsNorVotesTowardQuorum) {
  Cluster c({1, 2}, {}, {3});
  c.tick(3, 100);
  EXPECT_EQ(c.raft(3).role(), StateRole::kFollower);
  EXPECT_EQ(c.take_messages().size(), 0u) << "a learner must not campaign";
  c.raft(3).campaign();
  EXPECT_EQ(c.take_messages().size(), 0u);
  c.campaign(1);
  ASSERT_EQ(c.raft(1).role(), StateRole::kLeader);
  EXPECT_EQ(c.raft(3).lead(), 1u) << "learners still replicate";
}

TEST(RaftLearner, LearnerVoteDoesNotCountAndLearnerIsNotAsked) {
  Cluster c({1, 2}, [](Config& cfg) { cfg.pre_vote = false; }, {3});
  c.isolate(2);
  c.raft(1).campaign();
  auto msgs = c.take_messages();
  EXPECT_EQ(count_type(msgs, pb::MsgVote, 3), 0) << "candidates ask voters only";
  ASSERT_EQ(c.raft(1).role(), StateRole::kCandidate);
  pb::Message grant;
  grant.set_type(pb::MsgVoteResp);
  grant.set_from(3);
  grant.set_to(1);
  grant.set_term(c.raft(1).term());
  c.raft(1).step(grant);
  EXPECT_EQ(c.raft(1).role(), StateRole::kCandidate) << "a learner's vote must not elect";
}

TEST(RaftLearner, LearnerAckDoesNotCountTowardCommit) {
  Cluster c({1, 2}, {}, {3});
  c.campaign(1);
  const uint64_t before = c.raft(1).log().committed();
  c.cut(1, 2);
  ASSERT_EQ(c.raft(1).propose("x"), DropReason::kNone);
  c.stabilize();
  // Node 3 (learner) has the entry, node 2 (voter) does not: not committed.
  EXPECT_EQ(c.raft(3).log().last_index(), before + 1);
  EXPECT_EQ(c.raft(1).log().committed(), before);
  c.recover();
  c.tick(1);
  c.stabilize();
  EXPECT_EQ(c.raft(1).log().committed(), before + 1);
  EXPECT_EQ(c.node(3).applied, std::vector<std::string>{"x"});
}

TEST(RaftLearner, PromotedLearnerVotes) {
  Cluster c({1, 2}, {}, {3});
  c.campaign(1);
  ASSERT_EQ(c.raft(1).propose_conf_change(conf_change(pb::ConfChangeAddNode, 3)),
            DropReason::kNone);
  c.stabilize();
  EXPECT_TRUE(c.raft(3).is_voter(3));
  EXPECT_TRUE(c.raft(1).is_voter(3));
  // With node 1 gone, 2 can only win with 3's vote (2 of 3 voters).
  c.isolate(1);
  for (int i = 0; i < 60 && c.leader() == 0; ++i) {
    c.tick(2);
    c.tick(3);
    c.stabilize();
  }
  const uint64_t l = c.leader();
  EXPECT_TRUE(l == 2 || l == 3) << l;
}

// --- membership changes --------------------------------------------------------

TEST(RaftConfChange, OnlyOnePendingChangeAtATime) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  c.ignore(pb::MsgApp);  // keep the first change uncommitted
  ASSERT_EQ(c.raft(1).propose_conf_change(conf_change(pb::ConfChangeAddLearnerNode, 4)),
            DropReason::kNone);
  EXPECT_EQ(c.raft(1).propose_conf_change(conf_change(pb::ConfChangeAddLearnerNode, 5)),
            DropReason::kConfChangePending);
  c.process_all();
  ASSERT_EQ(c.node(1).dropped.size(), 1u);
  EXPECT_EQ(c.node(1).dropped[0].reason, DropReason::kConfChangePending);
  // Normal proposals are not blocked.
  EXPECT_EQ(c.raft(1).propose("y"), DropReason::kNone);
  c.recover();
  c.tick(1);
  c.stabilize();
  EXPECT_EQ(c.raft(1).propose_conf_change(conf_change(pb::ConfChangeAddLearnerNode, 5)),
            DropReason::kNone);
}

TEST(RaftConfChange, RemovedLeaderStepsDownAndClusterContinues) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  ASSERT_EQ(c.raft(1).propose_conf_change(conf_change(pb::ConfChangeRemoveNode, 1)),
            DropReason::kNone);
  c.stabilize();
  EXPECT_NE(c.raft(1).role(), StateRole::kLeader);
  EXPECT_FALSE(c.raft(1).is_voter(1));
  // The removed leader handed over (MsgTimeoutNow) to an up-to-date voter.
  const uint64_t l = c.leader();
  ASSERT_TRUE(l == 2 || l == 3) << "leader " << l;
  EXPECT_FALSE(c.raft(l).is_voter(1));
  ASSERT_EQ(c.raft(l).propose("after"), DropReason::kNone);
  c.stabilize();
  const uint64_t other = l == 2 ? 3 : 2;
  EXPECT_EQ(c.node(other).applied.back(), "after");
  // The removed node never campaigns again.
  c.drop_queued();
  c.tick(1, 100);
  EXPECT_EQ(count_type(c.take_messages(), pb::MsgPreVote), 0);
}

TEST(RaftConfChange, AddedNodeCatchesUpFromEmpty) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(c.raft(1).propose("e" + std::to_string(i)), DropReason::kNone);
  c.stabilize();
  ASSERT_EQ(c.raft(1).propose_conf_change(conf_change(pb::ConfChangeAddLearnerNode, 4)),
            DropReason::kNone);
  c.add_node(4, nullptr);  // a fresh member with an empty log
  c.stabilize();
  c.tick(1);
  c.stabilize();
  // The bootstrap prefix exists only as a snapshot, so node 4 gets that
  // snapshot and then every later entry.
  pb::Snapshot got;
  c.storage(4).snapshot(&got);
  EXPECT_EQ(got.metadata().index(), 1u);
  EXPECT_EQ(c.raft(4).log().committed(), c.raft(1).log().committed());
  EXPECT_TRUE(c.raft(4).is_learner(4));
  EXPECT_EQ(c.node(4).applied.size(), 5u);
}

// --- leadership transfer ---------------------------------------------------------

TEST(RaftTransfer, TransferToLaggingFollowerCatchesItUpFirst) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  c.isolate(3);
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(c.raft(1).propose("p" + std::to_string(i)), DropReason::kNone);
  c.stabilize();
  ASSERT_LT(c.raft(3).log().last_index(), c.raft(1).log().last_index());
  c.recover();
  c.raft(1).transfer_leadership(3);
  EXPECT_EQ(c.raft(1).lead_transferee(), 3u);
  // While the transfer runs, proposals are refused with a reason.
  EXPECT_EQ(c.raft(1).propose("during"), DropReason::kLeaderTransferInProgress);
  c.stabilize();
  EXPECT_EQ(c.raft(3).role(), StateRole::kLeader);
  EXPECT_EQ(c.raft(1).role(), StateRole::kFollower);
  EXPECT_EQ(c.raft(1).lead(), 3u);
  EXPECT_EQ(c.node(3).applied.size(), 10u);
}

TEST(RaftTransfer, TransferAbortsAfterElectionTimeout) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  c.isolate(3);
  c.raft(1).transfer_leadership(3);
  EXPECT_EQ(c.raft(1).lead_transferee(), 3u);
  for (int i = 0; i < 10; ++i) {
    c.tick(1);
    c.stabilize();
  }
  EXPECT_EQ(c.raft(1).lead_transferee(), 0u);
  EXPECT_EQ(c.raft(1).role(), StateRole::kLeader);
  EXPECT_EQ(c.raft(1).propose("ok"), DropReason::kNone);
}

TEST(RaftTransfer, FollowerForwardsTransferRequest) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  c.raft(2).transfer_leadership(2);
  c.stabilize();
  EXPECT_EQ(c.raft(2).role(), StateRole::kLeader);
}

// --- replication: backtracking, flow control, snapshots ---------------------------

TEST(RaftReplication, FastBacktrackingSkipsWholeTerms) {
  Cluster c({1, 2, 3}, [](Config& cfg) { cfg.pre_vote = false; });
  // Follower 2 has 60 entries of term 2 that the leader (term 3 entries at
  // the same indexes) will overwrite.
  c.storage(2).append(entries_with_terms(std::vector<uint64_t>(60, 2)));
  pb::HardState hs2;
  hs2.set_term(2);
  hs2.set_commit(1);
  c.storage(2).set_hard_state(hs2);
  c.restart(2);
  c.storage(1).append(entries_with_terms(std::vector<uint64_t>(30, 3)));
  pb::HardState hs1;
  hs1.set_term(3);
  hs1.set_commit(1);
  c.storage(1).set_hard_state(hs1);
  c.restart(1);
  c.storage(3).append(entries_with_terms(std::vector<uint64_t>(30, 3)));
  c.storage(3).set_hard_state(hs1);
  c.restart(3);
  int rejects = 0;
  c.set_drop_hook([&](const pb::Message& m) {
    if (m.type() == pb::MsgAppResp && m.from() == 2 && m.reject()) ++rejects;
    return false;
  });
  c.campaign(1);
  c.stabilize();
  EXPECT_EQ(c.log_terms(2), c.log_terms(1));
  EXPECT_LE(rejects, 3) << "one entry per round trip would need ~60 rejections";
}

TEST(RaftReplication, InflightWindowBoundsUnackedMessages) {
  Cluster c({1, 2}, [](Config& cfg) {
    cfg.max_inflight_msgs = 3;
    cfg.max_size_per_msg = 1;  // one entry per MsgApp
  });
  c.campaign(1);
  ASSERT_EQ(c.raft(1).progress(2)->state, ProgressState::kReplicate);
  c.drop_queued();
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(c.raft(1).propose("w" + std::to_string(i)), DropReason::kNone);
  auto msgs = c.take_messages();
  int with_entries = 0;
  for (auto& m : msgs) {
    if (m.type() == pb::MsgApp && m.to() == 2 && m.entries_size() > 0) ++with_entries;
  }
  EXPECT_EQ(with_entries, 3);
  EXPECT_TRUE(c.raft(1).progress(2)->inflights.full());
  // Acking the first frees one slot, and exactly one more message goes out.
  pb::Message ack;
  ack.set_type(pb::MsgAppResp);
  ack.set_from(2);
  ack.set_to(1);
  ack.set_term(c.raft(1).term());
  ack.set_index(msgs[0].entries(0).index());
  c.raft(1).step(ack);
  msgs = c.take_messages();
  EXPECT_EQ(count_type(msgs, pb::MsgApp, 2), 1);
}

TEST(RaftReplication, MessageSizeLimitSplitsBatches) {
  Cluster c({1, 2}, [](Config& cfg) { cfg.max_size_per_msg = 300; });
  c.campaign(1);
  c.isolate(2);
  for (int i = 0; i < 20; ++i)
    ASSERT_EQ(c.raft(1).propose(std::string(100, 'a' + i)), DropReason::kNone);
  c.stabilize();
  c.recover();
  size_t max_bytes = 0;
  c.set_drop_hook([&](const pb::Message& m) {
    if (m.type() == pb::MsgApp) {
      size_t b = 0;
      for (auto& e : m.entries()) b += e.ByteSizeLong();
      max_bytes = std::max(max_bytes, b);
    }
    return false;
  });
  c.tick(1);
  c.stabilize();
  EXPECT_LE(max_bytes, 300u);
  EXPECT_EQ(c.node(2).applied.size(), 20u);
}

TEST(RaftReplication, FarBehindFollowerGetsSnapshot) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  c.isolate(3);
  for (int i = 0; i < 20; ++i)
    ASSERT_EQ(c.raft(1).propose("s" + std::to_string(i)), DropReason::kNone);
  c.stabilize();
  // Leader snapshots its applied state and compacts its log.
  const uint64_t applied = c.node(1).applied_index;
  pb::ConfState cs = c.raft(1).conf_state();
  ASSERT_EQ(c.storage(1).create_snapshot(applied, &cs, "state"), StorageError::kOk);
  ASSERT_EQ(c.storage(1).compact(applied), StorageError::kOk);
  c.recover();
  int snaps = 0;
  c.set_drop_hook([&](const pb::Message& m) {
    if (m.type() == pb::MsgSnap) ++snaps;
    return false;
  });
  for (int i = 0; i < 3; ++i) {
    c.tick(1);
    c.stabilize();
  }
  EXPECT_EQ(snaps, 1);
  pb::Snapshot got;
  c.storage(3).snapshot(&got);
  EXPECT_EQ(got.metadata().index(), applied);
  EXPECT_EQ(got.data(), "state");
  ASSERT_EQ(c.raft(1).propose("after"), DropReason::kNone);
  c.stabilize();
  EXPECT_EQ(c.node(3).applied, std::vector<std::string>{"after"});
  EXPECT_EQ(c.raft(3).log().committed(), c.raft(1).log().committed());
}

TEST(RaftReplication, FailedSnapshotIsRetried) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  c.isolate(3);
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(c.raft(1).propose("s" + std::to_string(i)), DropReason::kNone);
  c.stabilize();
  const uint64_t applied = c.node(1).applied_index;
  pb::ConfState cs = c.raft(1).conf_state();
  ASSERT_EQ(c.storage(1).create_snapshot(applied, &cs, "st"), StorageError::kOk);
  ASSERT_EQ(c.storage(1).compact(applied), StorageError::kOk);
  c.recover();
  int snaps = 0;
  c.set_drop_hook([&](const pb::Message& m) {
    if (m.type() != pb::MsgSnap) return false;
    // The first snapshot transfer fails.
    if (++snaps == 1) {
      c.report_snapshot_done(1, 3, true);
      return true;
    }
    return false;
  });
  for (int i = 0; i < 5; ++i) {
    c.tick(1);
    c.stabilize();
  }
  EXPECT_EQ(snaps, 2);
  EXPECT_EQ(c.raft(3).log().committed(), c.raft(1).log().committed());
}

TEST(RaftReplication, RestartKeepsOnlyPersistedState) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(c.raft(1).propose("r" + std::to_string(i)), DropReason::kNone);
  c.stabilize();
  const uint64_t term = c.raft(2).term();
  const uint64_t last = c.raft(2).log().last_index();
  c.restart(2);
  EXPECT_EQ(c.raft(2).term(), term);
  EXPECT_EQ(c.raft(2).log().last_index(), last);
  EXPECT_EQ(c.raft(2).role(), StateRole::kFollower);
  c.node(2).applied.clear();
  c.tick(1);
  c.stabilize();
  // Committed entries are re-applied from the (bootstrap) snapshot on.
  EXPECT_EQ(c.node(2).applied.size(), 5u);
}

TEST(RaftReplication, RestartWithAppliedAheadOfStoredCommit) {
  // The commit index may be persisted without sync; the applied index (kept
  // with the state machine) can then be ahead of it after a crash.
  Cluster c({1, 2, 3});
  c.campaign(1);
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(c.raft(1).propose("a" + std::to_string(i)), DropReason::kNone);
  c.stabilize();
  const uint64_t applied = c.node(2).applied_index;
  pb::HardState hs = c.storage(2).hard_state();
  hs.set_commit(1);  // the unsynced commit update was lost
  c.storage(2).set_hard_state(hs);
  Config cfg;
  cfg.id = 2;
  cfg.applied = applied;
  Raft r(cfg, &c.storage(2));
  EXPECT_EQ(r.log().committed(), applied);
  EXPECT_EQ(r.log().applied(), applied);
  EXPECT_EQ(r.check_invariants(), "");
}

// --- ReadIndex -------------------------------------------------------------------

TEST(RaftReadIndex, LeaderAnswersOnlyAfterCommittingInItsTerm) {
  Cluster c({1, 2, 3});
  c.ignore(pb::MsgApp);
  c.campaign(1);
  ASSERT_EQ(c.raft(1).role(), StateRole::kLeader);
  c.raft(1).read_index("r1");
  c.stabilize();
  EXPECT_TRUE(c.node(1).read_states.empty()) << "no-op of the new term not committed yet";
  c.recover();
  c.tick(1);
  c.stabilize();
  ASSERT_EQ(c.node(1).read_states.size(), 1u);
  EXPECT_EQ(c.node(1).read_states[0].context, "r1");
  EXPECT_EQ(c.node(1).read_states[0].index, c.raft(1).log().committed());
}

TEST(RaftReadIndex, FollowerReadIsForwardedAndAnswered) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  ASSERT_EQ(c.raft(1).propose("v"), DropReason::kNone);
  c.stabilize();
  c.raft(3).read_index("f");
  c.stabilize();
  ASSERT_EQ(c.node(3).read_states.size(), 1u);
  EXPECT_EQ(c.node(3).read_states[0].context, "f");
  EXPECT_EQ(c.node(3).read_states[0].index, c.raft(1).log().committed());
}

TEST(RaftReadIndex, PartitionedLeaderCannotServeReads) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  c.isolate(1);
  c.raft(1).read_index("stale?");
  c.stabilize();
  c.tick(1, 3);
  c.stabilize();
  EXPECT_TRUE(c.node(1).read_states.empty()) << "no heartbeat quorum, no read";
}

// The heartbeat round a read started is lost (a partition that healed):
// the leader's next periodic heartbeat carries the newest waiting read, so
// the read is confirmed without asking again.  (A periodic heartbeat with
// no read context would leave it waiting until the leader stepped down.)
TEST(RaftReadIndex, ALostHeartbeatRoundIsMadeUpByTheNextHeartbeat) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  ASSERT_EQ(c.raft(1).propose("v"), DropReason::kNone);
  c.stabilize();
  c.set_drop_hook([](const pb::Message& m) { return m.type() == pb::MsgHeartbeat; });
  c.raft(1).read_index("lost-round");
  c.stabilize();
  EXPECT_TRUE(c.node(1).read_states.empty());
  c.recover();
  c.tick(1);  // heartbeat_tick 1: one periodic heartbeat round
  c.stabilize();
  ASSERT_EQ(c.node(1).read_states.size(), 1u);
  EXPECT_EQ(c.node(1).read_states[0].context, "lost-round");
  EXPECT_EQ(c.node(1).read_states[0].index, c.raft(1).log().committed());
}

// --- proposals -------------------------------------------------------------------

TEST(RaftProposal, FollowerForwardsToLeader) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  EXPECT_EQ(c.raft(2).propose("fwd"), DropReason::kNone);
  c.stabilize();
  for (uint64_t id : {1, 2, 3}) EXPECT_EQ(c.node(id).applied, std::vector<std::string>{"fwd"});
}

TEST(RaftProposal, DroppedWithReasonWhenNoLeaderOrForwardingDisabled) {
  Cluster c({1, 2, 3}, [](Config& cfg) { cfg.disable_proposal_forwarding = cfg.id == 3; });
  EXPECT_EQ(c.raft(2).propose("x"), DropReason::kNoLeader);
  c.process_all();
  ASSERT_EQ(c.node(2).dropped.size(), 1u);
  EXPECT_EQ(c.node(2).dropped[0].entries[0].data(), "x");
  c.campaign(1);
  EXPECT_EQ(c.raft(3).propose("y"), DropReason::kForwardingDisabled);
}

TEST(RaftProposal, UncommittedSizeLimitDropsProposals) {
  Cluster c({1, 2, 3}, [](Config& cfg) { cfg.max_uncommitted_entries_size = 100; });
  c.campaign(1);
  c.isolate(2);
  c.isolate(3);
  EXPECT_EQ(c.raft(1).propose(std::string(60, 'a')), DropReason::kNone);
  EXPECT_EQ(c.raft(1).propose(std::string(60, 'b')), DropReason::kUncommittedSizeLimit);
  c.recover();
  c.tick(1);
  c.stabilize();
  EXPECT_EQ(c.raft(1).propose(std::string(60, 'c')), DropReason::kNone);
}

TEST(RaftProposal, BatchIsAppendedAndReplicatedAsOneUnit) {
  Cluster c({1, 2, 3});
  c.campaign(1);
  c.drop_queued();
  ASSERT_EQ(c.raft(1).propose_batch({"a", "b", "c"}), DropReason::kNone);
  auto msgs = c.take_messages();
  // One MsgApp per follower carrying all three entries.
  ASSERT_EQ(count_type(msgs, pb::MsgApp), 2);
  for (auto& m : msgs) {
    if (m.type() == pb::MsgApp) {
      EXPECT_EQ(m.entries_size(), 3);
    }
  }
  for (auto& m : msgs) c.deliver(m);
  c.stabilize();
  for (uint64_t id : {1, 2, 3}) {
    EXPECT_EQ(c.node(id).applied, (std::vector<std::string>{"a", "b", "c"}));
  }
}

TEST(RaftProposal, SingleNodeCommitsImmediately) {
  Cluster c({1});
  c.campaign(1);
  ASSERT_EQ(c.raft(1).role(), StateRole::kLeader);
  ASSERT_EQ(c.raft(1).propose("solo"), DropReason::kNone);
  c.process_all();
  EXPECT_EQ(c.node(1).applied, std::vector<std::string>{"solo"});
  c.raft(1).read_index("r");
  c.process_all();
  EXPECT_EQ(c.node(1).read_states.size(), 1u);
}

// --- storage -----------------------------------------------------------------------

TEST(RaftMemoryStorage, EntriesTermCompactAndSnapshot) {
  MemoryStorage s;
  EXPECT_EQ(s.first_index(), 1u);
  EXPECT_EQ(s.last_index(), 0u);
  s.append(entries_with_terms({1, 1, 2, 2, 3}, 1));
  EXPECT_EQ(s.last_index(), 5u);
  uint64_t t = 0;
  ASSERT_EQ(s.term(3, &t), StorageError::kOk);
  EXPECT_EQ(t, 2u);
  EXPECT_EQ(s.term(6, &t), StorageError::kUnavailable);
  std::vector<pb::Entry> out;
  ASSERT_EQ(s.entries(1, 6, 0, &out), StorageError::kOk);
  EXPECT_EQ(out.size(), 1u) << "at least one entry even over the byte limit";
  // Truncating append.
  s.append(entries_with_terms({4, 4}, 4));
  EXPECT_EQ(s.last_index(), 5u);
  ASSERT_EQ(s.term(4, &t), StorageError::kOk);
  EXPECT_EQ(t, 4u);
  pb::ConfState cs;
  cs.add_voters(1);
  ASSERT_EQ(s.create_snapshot(3, &cs, "d"), StorageError::kOk);
  EXPECT_EQ(s.create_snapshot(2, &cs, "d"), StorageError::kSnapshotOutOfDate);
  ASSERT_EQ(s.compact(3), StorageError::kOk);
  EXPECT_EQ(s.first_index(), 4u);
  EXPECT_EQ(s.compact(2), StorageError::kCompacted);
  EXPECT_EQ(s.term(2, &t), StorageError::kCompacted);
  ASSERT_EQ(s.term(3, &t), StorageError::kOk);
  EXPECT_EQ(t, 2u);
  out.clear();
  EXPECT_EQ(s.entries(3, 5, UINT64_MAX, &out), StorageError::kCompacted);
  pb::Snapshot snap;
  snap.mutable_metadata()->set_index(10);
  snap.mutable_metadata()->set_term(5);
  ASSERT_EQ(s.apply_snapshot(snap), StorageError::kOk);
  EXPECT_EQ(s.first_index(), 11u);
  EXPECT_EQ(s.last_index(), 10u);
  EXPECT_EQ(s.apply_snapshot(snap), StorageError::kSnapshotOutOfDate);
}

}  // namespace
}  // namespace muster::raft::testing
