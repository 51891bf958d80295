// State-machine snapshots: streamed in chunks from a LevelDB snapshot,
// verified and installed atomically by the receiver.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "test_util.h"

namespace muster::storage {
namespace {

using testing::ScratchDir;

// Loads n keys through 100-put txns (one apply each), starting at index 1.
uint64_t load_keys(MemberStorage& m, int n) {
  uint64_t index = 0;
  for (int base = 0; base < n; base += 100) {
    pb::InternalRequest r;
    for (int k = base; k < std::min(n, base + 100); k++) {
      auto* p = r.mutable_txn()->add_success()->mutable_request_put();
      char key[32];
      std::snprintf(key, sizeof key, "key/%08d", k);
      p->set_key(key);
      p->set_value("value-" + std::to_string(k));
    }
    auto res = m.kv().apply(r, ++index, 1);
    if (!res.status) ADD_FAILURE() << res.status.to_string();
  }
  return index;
}

// Streams a snapshot of `from` into `to` and installs it.
void transfer(MemberStorage& from, MemberStorage& to, const raftpb::SnapshotMetadata& meta,
              size_t chunk_bytes, size_t* chunks = nullptr) {
  auto writer = from.snapshot_writer(chunk_bytes);
  std::unique_ptr<SnapshotInstaller> inst;
  ASSERT_TRUE(to.begin_install(&inst).is_ok());
  pb::SnapshotChunk c;
  size_t n = 0;
  while (writer->next(&c)) {
    // Round-trip each chunk through its wire form, as the transport will.
    pb::SnapshotChunk wire;
    ASSERT_TRUE(wire.ParseFromString(c.SerializeAsString()));
    Status s = inst->add(wire);
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    n++;
  }
  ASSERT_TRUE(writer->status().is_ok());
  ASSERT_TRUE(inst->complete());
  Status s = to.install(std::move(inst), meta);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  if (chunks) *chunks = n;
}

void expect_same_keys(MemberStorage& a, MemberStorage& b) {
  pb::RangeRequest all;
  all.set_key(std::string(1, '\0'));
  all.set_range_end(std::string(1, '\0'));
  pb::RangeResponse ra, rb;
  ASSERT_TRUE(a.kv().range(all, &ra).is_ok());
  ASSERT_TRUE(b.kv().range(all, &rb).is_ok());
  ASSERT_EQ(ra.kvs_size(), rb.kvs_size());
  ASSERT_EQ(ra.SerializeAsString(), rb.SerializeAsString());
}

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

TEST(SnapshotLargeTest, OneMillionKeysRoundTrip) {
  ScratchDir d1, d2;
  auto src = testing::open_member(d1.path());
  auto dst = testing::open_member(d2.path());
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t index = load_keys(*src, 1'000'000);
  const auto t1 = std::chrono::steady_clock::now();
  raftpb::SnapshotMetadata meta;
  meta.set_index(index);
  meta.set_term(1);
  transfer(*src, *dst, meta, 1 << 20);
  const auto t2 = std::chrono::steady_clock::now();
  EXPECT_EQ(dst->kv().key_count(), 1'000'000u);
  EXPECT_EQ(dst->kv().revision(), src->kv().revision());
  expect_same_keys(*src, *dst);
  const auto ms = [](auto d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  };
  std::printf("load %lld ms, stream+install %lld ms\n", static_cast<long long>(ms(t1 - t0)),
              static_cast<long long>(ms(t2 - t1)));
}

}  // namespace
}  // namespace muster::storage
