// A snapshot install replaces a member's database while client threads read
// its state machine (serializable ranges, watch catch-up, lease and member
// queries, /v3/maintenance/status) and while a snapshot stream may be
// reading it.  Those readers hold `MemberStorage::kv()` and snapshot
// writers across the install; neither may ever see a freed store.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "snapshot_util.h"
#include "test_util.h"

namespace muster::storage {
namespace {

using testing::ScratchDir;
using testing::transfer;

// Puts `which`=<tag> and `tag/<i>`=<tag> for i < keys, one apply each,
// starting after the store's applied index.
uint64_t write_state(MemberStorage& m, const std::string& tag, int keys) {
  uint64_t index = m.kv().applied_index();
  pb::InternalRequest r;
  r.mutable_put()->set_key("which");
  r.mutable_put()->set_value(tag);
  EXPECT_TRUE(m.kv().apply(r, ++index, 1).status.is_ok());
  for (int i = 0; i < keys; ++i) {
    pb::InternalRequest p;
    p.mutable_put()->set_key(tag + "/" + std::to_string(i));
    p.mutable_put()->set_value(tag);
    EXPECT_TRUE(m.kv().apply(p, ++index, 1).status.is_ok());
  }
  return index;
}

raftpb::SnapshotMetadata meta_at(uint64_t index) {
  raftpb::SnapshotMetadata meta;
  meta.set_index(index);
  meta.set_term(1);
  meta.mutable_conf_state()->add_voters(1);
  return meta;
}

std::string get(const KvStore& kv, const std::string& key) {
  pb::RangeRequest q;
  q.set_key(key);
  pb::RangeResponse r;
  EXPECT_TRUE(kv.range(q, &r).is_ok());
  return r.kvs_size() == 1 ? r.kvs(0).value() : "";
}

TEST(InstallRaceTest, KvReferenceTakenBeforeAnInstallReadsTheInstalledState) {
  ScratchDir d1, d2;
  auto src = testing::open_member(d1.path());
  auto dst = testing::open_member(d2.path());
  write_state(*dst, "old", 5);
  const uint64_t index = write_state(*src, "new", 50);

  const KvStore& held = dst->kv();  // as an API handler holds it
  ASSERT_EQ(get(held, "which"), "old");
  transfer(*src, *dst, meta_at(index), 512);
  EXPECT_EQ(&held, &dst->kv());
  EXPECT_EQ(get(held, "which"), "new");
  EXPECT_EQ(held.revision(), src->kv().revision());
  EXPECT_EQ(held.applied_index(), index);
  EXPECT_EQ(get(held, "old/0"), "");
  EXPECT_EQ(get(held, "new/49"), "new");
}

TEST(InstallRaceTest, ReadersRunningThroughInstallsSeeOneWholeStateOrTheOther) {
  ScratchDir da, db, dd;
  auto a = testing::open_member(da.path());
  auto b = testing::open_member(db.path());
  auto dst = testing::open_member(dd.path());
  const uint64_t ia = write_state(*a, "a", 200);
  const uint64_t ib = write_state(*b, "b", 300);
  const int64_t rev_a = a->kv().revision(), rev_b = b->kv().revision();

  const KvStore& kv = dst->kv();
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, bad{0};
  auto reader = [&] {
    while (!stop.load()) {
      pb::RangeRequest q;
      q.set_key("which");
      pb::RangeResponse r;
      if (!kv.range(q, &r).is_ok()) {
        bad++;
        continue;
      }
      const int64_t rev = r.header().revision();
      const std::string tag = r.kvs_size() == 1 ? r.kvs(0).value() : "";
      // Before the first install the store is empty (revision 1).
      const bool whole =
          (rev == 1 && tag.empty()) || (tag == "a" && rev == rev_a) || (tag == "b" && rev == rev_b);
      if (!whole) bad++;
      std::vector<pb::Event> events;
      int64_t next = 0;
      kv.events("which", "", 1, 10, true, &events, &next);
      (void)kv.members();
      (void)kv.key_count();
      reads++;
    }
  };
  std::vector<std::thread> readers;
  for (int i = 0; i < 3; ++i) readers.emplace_back(reader);
  for (int round = 0; round < 20; ++round) {
    if (round % 2 == 0)
      transfer(*a, *dst, meta_at(ia), 4 << 10);
    else
      transfer(*b, *dst, meta_at(ib), 4 << 10);
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(get(kv, "which"), "b");
  dst->kv().check_consistency();
}

TEST(InstallRaceTest, SnapshotStreamOpenAcrossAnInstallEndsWithAnError) {
  ScratchDir d1, d2;
  auto src = testing::open_member(d1.path());
  auto dst = testing::open_member(d2.path());
  write_state(*dst, "old", 300);
  const uint64_t index = write_state(*src, "new", 10);

  // dst is streaming its own state to a peer (or to a Maintenance snapshot
  // client) when it receives a newer state itself.
  auto writer = dst->snapshot_writer(256);
  pb::SnapshotChunk c;
  ASSERT_TRUE(writer->next(&c));
  ASSERT_FALSE(c.last());
  transfer(*src, *dst, meta_at(index), 512);
  EXPECT_FALSE(writer->next(&c));
  EXPECT_FALSE(writer->status().is_ok());
  writer.reset();
  // A writer opened after the install streams the new state.
  auto again = dst->snapshot_writer(1 << 20);
  ASSERT_TRUE(again->next(&c));
  EXPECT_TRUE(again->status().is_ok());
  EXPECT_EQ(again->applied_index(), index);
}

TEST(InstallRaceTest, DefragmentRacingInstallsIsSafe) {
  ScratchDir d1, d2, d3;
  auto a = testing::open_member(d1.path());
  auto b = testing::open_member(d2.path());
  auto dst = testing::open_member(d3.path());
  const uint64_t ia = write_state(*a, "a", 100);
  const uint64_t ib = write_state(*b, "b", 100);
  std::atomic<bool> stop{false};
  std::atomic<int> runs{0};
  std::thread defrag([&] {
    while (!stop.load()) {
      EXPECT_TRUE(dst->defragment().is_ok());
      runs++;
    }
  });
  for (int round = 0; round < 10; ++round)
    transfer(round % 2 == 0 ? *a : *b, *dst, meta_at(round % 2 == 0 ? ia : ib), 4 << 10);
  stop = true;
  defrag.join();
  EXPECT_GT(runs.load(), 0);
  EXPECT_EQ(get(dst->kv(), "which"), "b");
}

}  // namespace
}  // namespace muster::storage
