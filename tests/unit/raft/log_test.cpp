// RaftLog and Progress/Inflights on their own.
#include "node/raft/log.h"

#include <gtest/gtest.h>

#include "node/raft/progress.h"
#include "tests/unit/raft/cluster.h"

namespace muster::raft::testing {
namespace {

google::protobuf::RepeatedPtrField<pb::Entry> field(const std::vector<pb::Entry>& v) {
  google::protobuf::RepeatedPtrField<pb::Entry> f;
  for (const auto& e : v) *f.Add() = e;
  return f;
}

TEST(RaftLog, StitchesStableAndUnstableEntries) {
  MemoryStorage s;
  s.append(entries_with_terms({1, 1, 2}, 1));  // 1..3 stable
  RaftLog log(&s);
  EXPECT_EQ(log.first_index(), 1u);
  EXPECT_EQ(log.last_index(), 3u);
  log.append(entries_with_terms({3, 3}, 4));  // 4..5 unstable
  EXPECT_EQ(log.last_index(), 5u);
  EXPECT_EQ(log.last_term(), 3u);
  std::vector<pb::Entry> out;
  ASSERT_EQ(log.slice(2, 6, UINT64_MAX, &out), StorageError::kOk);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].index(), 2u);
  EXPECT_EQ(out[3].index(), 5u);
  // Persisting moves them out of the unstable tail.
  s.append(log.unstable_entries());
  log.stable_to(5, 3);
  EXPECT_TRUE(log.unstable_entries().empty());
  EXPECT_EQ(log.last_index(), 5u);
}

TEST(RaftLog, StableToIgnoresReplacedEntries) {
  MemoryStorage s;
  RaftLog log(&s);
  log.append(entries_with_terms({1, 1}, 1));
  // Before the caller reports them stable, a new leader replaces index 2.
  log.append(entries_with_terms({2}, 2));
  log.stable_to(2, 1);  // the old (2, term 1) was persisted: not the current entry
  ASSERT_EQ(log.unstable_entries().size(), 2u);
  log.stable_to(2, 2);
  EXPECT_TRUE(log.unstable_entries().empty());
}

TEST(RaftLog, MaybeAppendTruncatesOnlyConflictingSuffix) {
  MemoryStorage s;
  RaftLog log(&s);
  log.append(entries_with_terms({1, 1, 1, 1}, 1));
  // A duplicate of an old message must not cut entries off.
  auto last = log.maybe_append(1, 1, 0, field(entries_with_terms({1}, 2)));
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(*last, 2u);
  EXPECT_EQ(log.last_index(), 4u);
  // A conflicting entry at 3 replaces 3 and 4.
  last = log.maybe_append(2, 1, 2, field(entries_with_terms({2}, 3)));
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(log.last_index(), 3u);
  EXPECT_EQ(log.term_or_zero(3), 2u);
  EXPECT_EQ(log.committed(), 2u);
  // A mismatching previous entry is refused.
  EXPECT_FALSE(log.maybe_append(3, 1, 3, field({})).has_value());
}

TEST(RaftLog, FindConflictByTermSkipsWholeTerms) {
  MemoryStorage s;
  RaftLog log(&s);
  log.append(entries_with_terms({1, 1, 3, 3, 3, 5, 5}, 1));
  EXPECT_EQ(log.find_conflict_by_term(7, 4), (std::pair<uint64_t, uint64_t>{5, 3}));
  EXPECT_EQ(log.find_conflict_by_term(7, 2), (std::pair<uint64_t, uint64_t>{2, 1}));
  EXPECT_EQ(log.find_conflict_by_term(4, 9), (std::pair<uint64_t, uint64_t>{4, 3}));
}

TEST(RaftLog, UpToDateComparesLastTermThenLength) {
  MemoryStorage s;
  RaftLog log(&s);
  log.append(entries_with_terms({1, 2, 2}, 1));
  EXPECT_TRUE(log.is_up_to_date(1, 3));   // higher last term wins even if shorter
  EXPECT_TRUE(log.is_up_to_date(3, 2));   // same term, same length
  EXPECT_FALSE(log.is_up_to_date(2, 2));  // same term, shorter
  EXPECT_FALSE(log.is_up_to_date(9, 1));  // lower term loses even if longer
}

TEST(RaftLog, RestoreReplacesLogWithSnapshot) {
  MemoryStorage s;
  s.append(entries_with_terms({1, 1}, 1));
  RaftLog log(&s);
  pb::Snapshot snap;
  snap.mutable_metadata()->set_index(10);
  snap.mutable_metadata()->set_term(4);
  log.restore(snap);
  EXPECT_EQ(log.first_index(), 11u);
  EXPECT_EQ(log.last_index(), 10u);
  EXPECT_EQ(log.committed(), 10u);
  EXPECT_EQ(log.term_or_zero(10), 4u);
  EXPECT_TRUE(log.next_committed_entries(UINT64_MAX).empty())
      << "nothing to apply until the snapshot is installed";
  EXPECT_EQ(log.check_invariants(), "");
}

TEST(RaftLog, CommittedEntriesRespectByteLimit) {
  MemoryStorage s;
  s.append(entries_with_terms({1, 1, 1, 1}, 1));
  RaftLog log(&s);
  log.commit_to(4);
  auto ents = log.next_committed_entries(1);
  EXPECT_EQ(ents.size(), 1u) << "at least one entry, then the byte limit";
  log.applied_to(1);
  EXPECT_EQ(log.next_committed_entries(UINT64_MAX).size(), 3u);
}

TEST(RaftInflights, BoundedByCountAndBytes) {
  Inflights in(3, 0);
  in.add(5, 10);
  in.add(7, 10);
  EXPECT_FALSE(in.full());
  in.add(9, 10);
  EXPECT_TRUE(in.full());
  in.free_le(7);
  EXPECT_EQ(in.count(), 1u);
  EXPECT_FALSE(in.full());
  Inflights by_bytes(100, 25);
  by_bytes.add(1, 10);
  by_bytes.add(2, 10);
  EXPECT_FALSE(by_bytes.full());
  by_bytes.add(3, 10);
  EXPECT_TRUE(by_bytes.full());
  by_bytes.free_first_one();
  EXPECT_EQ(by_bytes.bytes(), 20u);
}

TEST(RaftProgress, ProbeSendsOneAtATimeAndReplicatePipelines) {
  Progress pr(5, 2, 0, false);
  EXPECT_EQ(pr.state, ProgressState::kProbe);
  pr.sent_entries(6, 2, 100);
  EXPECT_TRUE(pr.is_paused());
  EXPECT_TRUE(pr.maybe_update(6));
  EXPECT_FALSE(pr.is_paused());
  pr.become_replicate();
  EXPECT_EQ(pr.next, 7u);
  pr.sent_entries(8, 2, 100);
  pr.sent_entries(10, 2, 100);
  EXPECT_EQ(pr.next, 11u);
  EXPECT_TRUE(pr.is_paused()) << "window of two messages is full";
  EXPECT_TRUE(pr.maybe_update(8));
  pr.inflights.free_le(8);
  EXPECT_FALSE(pr.is_paused());
}

TEST(RaftProgress, RejectionsBackUpOnlyForTheOutstandingProbe) {
  Progress pr(10, 4, 0, false);
  pr.match = 3;
  // Answer to a probe at prev index 9, hinting the follower matches up to 5.
  EXPECT_TRUE(pr.maybe_decr_to(9, 5));
  EXPECT_EQ(pr.next, 6u);
  // A stale rejection (for prev index 9 again) changes nothing.
  EXPECT_FALSE(pr.maybe_decr_to(9, 5));
  pr.become_replicate();
  EXPECT_FALSE(pr.maybe_decr_to(2, 2)) << "at or below match: stale";
  EXPECT_TRUE(pr.maybe_decr_to(7, 5));
  EXPECT_EQ(pr.next, 4u);
}

TEST(RaftProgress, SnapshotStateLeavesToProbeAfterTheSnapshot) {
  Progress pr(3, 4, 0, false);
  pr.become_snapshot(20);
  EXPECT_TRUE(pr.is_paused());
  pr.become_probe();
  EXPECT_EQ(pr.next, 21u);
}

}  // namespace
}  // namespace muster::raft::testing
