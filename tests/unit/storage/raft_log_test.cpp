// RaftLog against the raft::Storage contract (node/raft/storage.h), checked
// side by side with the core's own MemoryStorage.
#include <gtest/gtest.h>

#include <random>

#include "test_util.h"

namespace muster::storage {
namespace {

using testing::ScratchDir;

raftpb::Entry entry(uint64_t index, uint64_t term, const std::string& data = "") {
  raftpb::Entry e;
  e.set_index(index);
  e.set_term(term);
  e.set_data(data.empty() ? "d" + std::to_string(index) : data);
  return e;
}

std::vector<raftpb::Entry> range_of(uint64_t lo, uint64_t hi, uint64_t term) {
  std::vector<raftpb::Entry> v;
  for (uint64_t i = lo; i <= hi; i++) v.push_back(entry(i, term));
  return v;
}

TEST(RaftLogTest, FreshLogFollowsTheContract) {
  ScratchDir dir;
  auto m = testing::open_member(dir.path());
  RaftLog& log = m->log();
  EXPECT_EQ(log.first_index(), 1u);
  EXPECT_EQ(log.last_index(), 0u);
  uint64_t t = 99;
  EXPECT_EQ(log.term(0, &t), raft::StorageError::kOk);
  EXPECT_EQ(t, 0u);
  EXPECT_EQ(log.term(1, &t), raft::StorageError::kUnavailable);
  raft::InitialState st;
  ASSERT_EQ(log.initial_state(&st), raft::StorageError::kOk);
  EXPECT_EQ(st.hard_state.term(), 0u);
  std::vector<raftpb::Entry> out;
  EXPECT_EQ(log.entries(1, 1, UINT64_MAX, &out), raft::StorageError::kOk);
  EXPECT_EQ(log.entries(1, 2, UINT64_MAX, &out), raft::StorageError::kUnavailable);
}

TEST(RaftLogTest, AppendTruncatesConflictingSuffixAndSurvivesReopen) {
  ScratchDir dir;
  auto m = testing::open_member(dir.path());
  raftpb::HardState hs;
  hs.set_term(3);
  hs.set_vote(2);
  hs.set_commit(4);
  ASSERT_TRUE(m->log().save(&hs, range_of(1, 10, 1)).is_ok());
  EXPECT_EQ(m->log().last_index(), 10u);
  // A new leader overwrites 6.. with a shorter suffix of term 3.
  ASSERT_TRUE(m->log().append(range_of(6, 7, 3)).is_ok());
  EXPECT_EQ(m->log().last_index(), 7u);
  m.reset();
  m = testing::open_member(dir.path());
  RaftLog& log = m->log();
  EXPECT_EQ(log.last_index(), 7u);
  uint64_t t = 0;
  ASSERT_EQ(log.term(7, &t), raft::StorageError::kOk);
  EXPECT_EQ(t, 3u);
  ASSERT_EQ(log.term(5, &t), raft::StorageError::kOk);
  EXPECT_EQ(t, 1u);
  EXPECT_EQ(log.term(8, &t), raft::StorageError::kUnavailable);
  raft::InitialState st;
  log.initial_state(&st);
  EXPECT_EQ(st.hard_state.vote(), 2u);
  EXPECT_EQ(st.hard_state.commit(), 4u);
  std::vector<raftpb::Entry> out;
  ASSERT_EQ(log.entries(5, 8, UINT64_MAX, &out), raft::StorageError::kOk);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[2].term(), 3u);
  // max_bytes: at least one entry, then only while within the limit.
  out.clear();
  ASSERT_EQ(log.entries(1, 8, 1, &out), raft::StorageError::kOk);
  EXPECT_EQ(out.size(), 1u);
  out.clear();
  const uint64_t two = entry(1, 1).ByteSizeLong() + entry(2, 1).ByteSizeLong();
  ASSERT_EQ(log.entries(1, 8, two, &out), raft::StorageError::kOk);
  EXPECT_EQ(out.size(), 2u);
}

TEST(RaftLogTest, SnapshotAndCompactionMoveTheFirstIndex) {
  ScratchDir dir;
  auto m = testing::open_member(dir.path());
  RaftLog& log = m->log();
  ASSERT_TRUE(log.append(range_of(1, 20, 2)).is_ok());
  raftpb::ConfState cs;
  cs.add_voters(1);
  raftpb::Snapshot snap;
  ASSERT_EQ(log.create_snapshot(15, cs, &snap), raft::StorageError::kOk);
  EXPECT_EQ(snap.metadata().index(), 15u);
  EXPECT_EQ(snap.metadata().term(), 2u);
  EXPECT_EQ(log.create_snapshot(15, cs), raft::StorageError::kSnapshotOutOfDate);
  ASSERT_EQ(log.compact(10), raft::StorageError::kOk);
  EXPECT_EQ(log.first_index(), 11u);
  EXPECT_EQ(log.compact(10), raft::StorageError::kCompacted);
  uint64_t t = 0;
  EXPECT_EQ(log.term(9, &t), raft::StorageError::kCompacted);
  ASSERT_EQ(log.term(10, &t), raft::StorageError::kOk);
  EXPECT_EQ(t, 2u);
  std::vector<raftpb::Entry> out;
  EXPECT_EQ(log.entries(10, 12, UINT64_MAX, &out), raft::StorageError::kCompacted);
  m.reset();
  m = testing::open_member(dir.path());
  EXPECT_EQ(m->log().first_index(), 11u);
  EXPECT_EQ(m->log().last_index(), 20u);
  ASSERT_EQ(m->log().snapshot(&snap), raft::StorageError::kOk);
  EXPECT_EQ(snap.metadata().index(), 15u);
  raft::InitialState st;
  m->log().initial_state(&st);
  EXPECT_EQ(st.conf_state.voters_size(), 1);  // from the snapshot: nothing applied yet
  // Appending entries below the compaction point skips them.
  ASSERT_TRUE(m->log().append(range_of(9, 22, 2)).is_ok());
  EXPECT_EQ(m->log().first_index(), 11u);
  EXPECT_EQ(m->log().last_index(), 22u);
}

TEST(RaftLogTest, RandomOperationsMatchMemoryStorage) {
  ScratchDir dir;
  auto m = testing::open_member(dir.path());
  raft::MemoryStorage mem;
  std::mt19937 rng(7);
  auto n = [&](uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
  };
  uint64_t term = 1;
  // A small cache: reads cross from LevelDB into the cached newest entries.
  m->log().set_cache_limit_for_testing(7);
  for (int step = 0; step < 400; step++) {
    const uint64_t k = n(0, 9);
    if (k < 6) {
      const uint64_t from = n(mem.first_index(), mem.last_index() + 1);
      if (n(0, 3) == 0) term++;
      auto es = range_of(from, from + n(0, 5), term);
      mem.append(es);
      ASSERT_TRUE(m->log().append(es, /*sync=*/false).is_ok());
    } else if (k < 8 && mem.last_index() >= mem.first_index()) {
      const uint64_t i = n(mem.first_index(), mem.last_index());
      raftpb::ConfState cs;
      mem.create_snapshot(i, &cs, "");
      m->log().create_snapshot(i, cs);
      const uint64_t c = n(mem.first_index(), i);
      ASSERT_EQ(m->log().compact(c), mem.compact(c));
    } else if (k == 9) {
      m.reset();
      m = testing::open_member(dir.path());
      m->log().set_cache_limit_for_testing(7);
    }
    ASSERT_EQ(m->log().first_index(), mem.first_index()) << step;
    ASSERT_EQ(m->log().last_index(), mem.last_index()) << step;
    for (uint64_t i = mem.first_index() - 1; i <= mem.last_index() + 1; i++) {
      uint64_t a = 0, b = 0;
      ASSERT_EQ(m->log().term(i, &a), mem.term(i, &b)) << i;
      ASSERT_EQ(a, b);
    }
    std::vector<raftpb::Entry> a, b;
    ASSERT_EQ(m->log().entries(mem.first_index(), mem.last_index() + 1, UINT64_MAX, &a),
              mem.entries(mem.first_index(), mem.last_index() + 1, UINT64_MAX, &b));
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); i++)
      ASSERT_EQ(a[i].SerializeAsString(), b[i].SerializeAsString());
    // Any sub-range, under a size limit.
    const uint64_t lo = n(mem.first_index(), mem.last_index() + 1);
    const uint64_t hi = n(lo, mem.last_index() + 1);
    const uint64_t max_bytes = n(0, 60);
    a.clear();
    b.clear();
    ASSERT_EQ(m->log().entries(lo, hi, max_bytes, &a), mem.entries(lo, hi, max_bytes, &b));
    ASSERT_EQ(a.size(), b.size()) << lo << ".." << hi << " max " << max_bytes;
    for (size_t i = 0; i < a.size(); i++)
      ASSERT_EQ(a[i].SerializeAsString(), b[i].SerializeAsString());
  }
}

}  // namespace
}  // namespace muster::storage
