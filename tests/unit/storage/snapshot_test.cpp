// State-machine snapshots: streamed in chunks from a LevelDB snapshot,
// verified and installed atomically by the receiver.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "node/raft/raft.h"
#include "snapshot_util.h"
#include "test_util.h"

namespace muster::storage {
namespace {

using testing::expect_same_keys;
using testing::load_keys;
using testing::ScratchDir;
using testing::transfer;

TEST(SnapshotTest, RoundTripKeepsStateLeasesMembersAndReceiverHardState) {
  ScratchDir d1, d2;
  auto src = testing::open_member(d1.path());
  auto dst = testing::open_member(d2.path());
  uint64_t index = load_keys(*src, 1000);
  pb::InternalRequest g;
  g.mutable_lease_grant()->set_id(77);
  g.mutable_lease_grant()->set_ttl(60);
  src->kv().apply(g, ++index, 1);
  pb::InternalRequest p;
  p.mutable_put()->set_key("leased");
  p.mutable_put()->set_lease(77);
  src->kv().apply(p, ++index, 1);
  pb::InternalRequest add;
  add.mutable_member_add()->mutable_member()->set_id(5);
  add.mutable_member_add()->mutable_member()->add_peerurls("http://x:2380");
  src->kv().apply(add, ++index, 2);
  // The source's Raft log must not travel.
  std::vector<raftpb::Entry> es(3);
  for (int i = 0; i < 3; i++) {
    es[i].set_index(i + 1);
    es[i].set_term(1);
  }
  ASSERT_TRUE(src->log().append(es).is_ok());
  raftpb::HardState hs;
  hs.set_term(9);
  hs.set_vote(3);
  ASSERT_TRUE(dst->log().set_hard_state(hs).is_ok());

  raftpb::SnapshotMetadata meta;
  meta.set_index(index - 1);  // data may be newer than the metadata
  meta.set_term(2);
  meta.mutable_conf_state()->add_voters(5);
  size_t chunks = 0;
  transfer(*src, *dst, meta, 8 << 10, &chunks);
  EXPECT_GT(chunks, 3u);
  expect_same_keys(*src, *dst);
  EXPECT_EQ(dst->kv().revision(), src->kv().revision());
  EXPECT_EQ(dst->kv().applied_index(), index);
  EXPECT_TRUE(dst->kv().lease_exists(77));
  ASSERT_EQ(dst->kv().members().size(), 1u);
  EXPECT_EQ(dst->log().first_index(), index);  // meta.index + 1
  EXPECT_EQ(dst->log().last_index(), index - 1);
  EXPECT_EQ(dst->log().hard_state().term(), 9u);
  EXPECT_EQ(dst->log().hard_state().vote(), 3u);
  EXPECT_EQ(dst->log().hard_state().commit(), index - 1);
  // Entries the installed state already reflects are skipped.
  pb::InternalRequest again;
  again.mutable_put()->set_key("x");
  EXPECT_TRUE(dst->kv().apply(again, index, 2).skipped);
  dst->kv().check_consistency();
  // And it is all still there after a restart.
  dst.reset();
  dst = testing::open_member(d2.path());
  expect_same_keys(*src, *dst);
  EXPECT_FALSE(std::filesystem::exists(d2.path() + "/member/db.new"));
  EXPECT_FALSE(std::filesystem::exists(d2.path() + "/member/db.old"));
}

// Found by tests/robustness (muster soak, seed 32036): a leader retried its
// snapshot while the first stream was still arriving; the second begin()
// cleared db.new -- the first installer's database -- before LevelDB's lock
// refused it, and its destructor cleared it again, so the first install
// failed ("cannot move the new database in: No such file or directory") and
// the member aborted.  A second begin() must fail without touching the
// first one's files.
TEST(SnapshotTest, ASecondInstallWhileOneIsReceivedLeavesTheFirstIntact) {
  ScratchDir d1, d2;
  auto src = testing::open_member(d1.path());
  auto dst = testing::open_member(d2.path());
  const uint64_t index = load_keys(*src, 300);
  raftpb::SnapshotMetadata meta;
  meta.set_index(index);
  meta.set_term(1);
  auto writer = src->snapshot_writer(4 << 10);
  std::unique_ptr<SnapshotInstaller> first;
  ASSERT_TRUE(dst->begin_install(&first).is_ok());
  pb::SnapshotChunk c;
  ASSERT_TRUE(writer->next(&c));
  ASSERT_TRUE(first->add(c).is_ok());
  {
    std::unique_ptr<SnapshotInstaller> second;
    Status s = dst->begin_install(&second);
    EXPECT_FALSE(s.is_ok());
    EXPECT_EQ(second, nullptr);
    EXPECT_NE(s.message().find("already"), std::string::npos) << s.to_string();
  }
  while (writer->next(&c)) ASSERT_TRUE(first->add(c).is_ok());
  ASSERT_TRUE(writer->status().is_ok());
  ASSERT_TRUE(first->complete());
  Status s = dst->install(std::move(first), meta);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  expect_same_keys(*src, *dst);
  // The slot is free again once the first installer is gone.
  std::unique_ptr<SnapshotInstaller> third;
  EXPECT_TRUE(dst->begin_install(&third).is_ok());
}

// The same soak: the aborted install had moved db/ aside to db.old/ and had
// no db.new/ to move in; the restarted member removed db.old/ and started
// from an empty database (it no longer knew the cluster's members).
TEST(SnapshotTest, AnInstallThatLostItsNewDatabaseKeepsTheOldOne) {
  ScratchDir d;
  auto m = testing::open_member(d.path());
  load_keys(*m, 200);
  const int64_t rev = m->kv().revision();
  m.reset();
  std::filesystem::rename(d.path() + "/member/db", d.path() + "/member/db.old");
  m = testing::open_member(d.path());
  EXPECT_EQ(m->kv().revision(), rev);
  EXPECT_FALSE(std::filesystem::exists(d.path() + "/member/db.old"));
}

// Maintenance.Snapshot reads with a pinned writer on its own thread while
// the driver may install a snapshot from the leader: the install must wait
// for the reader, which keeps reading the state it pinned.
TEST(SnapshotTest, PinnedWriterHoldsOffAnInstallUntilItIsDone) {
  ScratchDir d1, d2;
  auto src = testing::open_member(d1.path());
  auto dst = testing::open_member(d2.path());
  uint64_t index = load_keys(*src, 2000);
  load_keys(*dst, 300);
  std::unique_ptr<SnapshotInstaller> inst;
  ASSERT_TRUE(dst->begin_install(&inst).is_ok());
  {
    auto w = src->snapshot_writer(4 << 10);
    pb::SnapshotChunk c;
    while (w->next(&c)) ASSERT_TRUE(inst->add(c).is_ok());
  }
  ASSERT_TRUE(inst->complete());
  raftpb::SnapshotMetadata meta;
  meta.set_index(index);
  meta.set_term(1);

  auto pinned = dst->pinned_snapshot_writer(4 << 10);
  std::atomic<bool> installed{false};
  std::thread installer([&] {
    Status s = dst->install(std::move(inst), meta);
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    installed = true;
  });
  uint64_t revisions = 0;
  pb::SnapshotChunk c;
  while (pinned->next(&c)) {
    for (const auto& k : c.keys()) revisions += k[0] == keys::kRevision;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a slow reader
  }
  ASSERT_TRUE(pinned->status().is_ok());
  EXPECT_EQ(revisions, 300u);  // the state it pinned, whole
  EXPECT_FALSE(installed.load());
  pinned.reset();
  installer.join();
  EXPECT_TRUE(installed.load());
  expect_same_keys(*src, *dst);
}

TEST(SnapshotTest, CorruptStreamIsRejectedAndNothingIsSwapped) {
  ScratchDir d1, d2;
  auto src = testing::open_member(d1.path());
  auto dst = testing::open_member(d2.path());
  load_keys(*src, 300);
  pb::InternalRequest p;
  p.mutable_put()->set_key("mine");
  p.mutable_put()->set_value("kept");
  dst->kv().apply(p, 1, 1);
  auto writer = src->snapshot_writer(1024);
  std::unique_ptr<SnapshotInstaller> inst;
  ASSERT_TRUE(dst->begin_install(&inst).is_ok());
  pb::SnapshotChunk c;
  Status last;
  bool flipped = false;
  while (writer->next(&c)) {
    if (!flipped && c.values_size() > 0) {
      c.set_values(0, c.values(0) + "!");
      flipped = true;
    }
    last = inst->add(c);
    if (!last) break;
  }
  EXPECT_EQ(last.code(), Code::kDataLoss);
  EXPECT_FALSE(inst->complete());
  raftpb::SnapshotMetadata meta;
  EXPECT_FALSE(dst->install(std::move(inst), meta).is_ok());
  pb::RangeRequest rr;
  rr.set_key("mine");
  pb::RangeResponse resp;
  ASSERT_TRUE(dst->kv().range(rr, &resp).is_ok());
  ASSERT_EQ(resp.kvs_size(), 1);
  // A foreign (Raft-side) key is refused too.
  std::unique_ptr<SnapshotInstaller> inst2;
  ASSERT_TRUE(dst->begin_install(&inst2).is_ok());
  pb::SnapshotChunk bad;
  bad.add_keys(keys::log_key(1));
  bad.add_values("x");
  EXPECT_EQ(inst2->add(bad).code(), Code::kDataLoss);
  // So is a record that would not load.
  inst2.reset();  // one install at a time
  std::unique_ptr<SnapshotInstaller> inst3;
  ASSERT_TRUE(dst->begin_install(&inst3).is_ok());
  pb::SnapshotChunk junk;
  junk.add_keys(keys::revision_key(2, 0));
  junk.add_values("\xff\xff\xff");
  Status js = inst3->add(junk);
  EXPECT_EQ(js.code(), Code::kDataLoss);
  EXPECT_EQ(js.message(), "snapshot: unparsable record");
}

TEST(SnapshotTest, InterruptedInstallIsFinishedOrDiscardedOnOpen) {
  ScratchDir d1, d2;
  auto src = testing::open_member(d1.path());
  load_keys(*src, 200);
  {
    // A complete db.new with db/ gone: the crash happened between the renames.
    auto dst = testing::open_member(d2.path());
    auto writer = src->snapshot_writer();
    std::unique_ptr<SnapshotInstaller> inst;
    ASSERT_TRUE(dst->begin_install(&inst).is_ok());
    pb::SnapshotChunk c;
    while (writer->next(&c)) ASSERT_TRUE(inst->add(c).is_ok());
    raftpb::SnapshotMetadata meta;
    meta.set_index(2);
    meta.set_term(1);
    ASSERT_TRUE(inst->finish(meta, raftpb::HardState()).is_ok());
    inst.reset();
    dst.reset();
    std::filesystem::rename(d2.path() + "/member/db", d2.path() + "/member/db.old");
  }
  auto dst = testing::open_member(d2.path());
  EXPECT_EQ(dst->kv().key_count(), 200u);
  EXPECT_FALSE(std::filesystem::exists(d2.path() + "/member/db.old"));
  // An unfinished db.new next to a live db/ is discarded.
  std::filesystem::create_directories(d2.path() + "/member/db.new");
  dst.reset();
  dst = testing::open_member(d2.path());
  EXPECT_FALSE(std::filesystem::exists(d2.path() + "/member/db.new"));
  EXPECT_EQ(dst->kv().key_count(), 200u);
}

// Found by tests/robustness (kill -9 of a follower right after it installed
// a snapshot, seed 102): the restarted member aborted with "Config::applied
// beyond the last index" on every start.  The streamed state is newer than
// the snapshot's index, where the installed log ends, and the member started
// its Raft core at the state's applied index.
TEST(SnapshotTest, MemberRestartedRightAfterANewerInstallStartsItsRaftCore) {
  ScratchDir d1, d2;
  auto src = testing::open_member(d1.path());
  auto dst = testing::open_member(d2.path());
  const uint64_t index = load_keys(*src, 500);
  raftpb::SnapshotMetadata meta;
  meta.set_index(index - 3);  // the sender applied 3 more entries since
  meta.set_term(1);
  meta.mutable_conf_state()->add_voters(1);
  transfer(*src, *dst, meta, 4 << 10);
  dst.reset();  // kill -9 before any entry after the snapshot arrives
  dst = testing::open_member(d2.path());
  ASSERT_EQ(dst->kv().applied_index(), index);
  ASSERT_EQ(dst->log().last_index(), index - 3);

  raft::Config cfg;
  cfg.id = 1;
  cfg.heartbeat_tick = 1;
  cfg.election_tick = 10;
  cfg.applied = dst->kv().applied_index();
  EXPECT_DEATH(raft::Raft(cfg, &dst->log()), "applied beyond the last index");
  cfg.applied = dst->raft_applied_index();
  EXPECT_EQ(cfg.applied, index - 3);
  raft::Raft core(cfg, &dst->log());
  EXPECT_EQ(core.term(), 1u);
}

}  // namespace
}  // namespace muster::storage
