// A snapshot round trip of one million keys (a separate ctest entry with the
// label "slow": about 20 s on a loaded 2-core machine).
#include <gtest/gtest.h>

#include <chrono>

#include "snapshot_util.h"
#include "test_util.h"

namespace muster::storage {
namespace {

using testing::expect_same_keys;
using testing::load_keys;
using testing::ScratchDir;
using testing::transfer;

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
  // And the stores answer the same through the API, on a few pages.
  for (const char* from : {"key/00000000", "key/00500000", "key/00999990"}) {
    pb::RangeRequest page;
    page.set_key(from);
    page.set_range_end(prefix_end("key/"));
    page.set_limit(100);
    pb::RangeResponse ra, rb;
    ASSERT_TRUE(src->kv().range(page, &ra).is_ok());
    ASSERT_TRUE(dst->kv().range(page, &rb).is_ok());
    EXPECT_EQ(ra.SerializeAsString(), rb.SerializeAsString());
    EXPECT_GT(ra.kvs_size(), 0);
  }
  const auto ms = [](auto d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  };
  std::printf("load %lld ms, stream+install %lld ms\n", static_cast<long long>(ms(t1 - t0)),
              static_cast<long long>(ms(t2 - t1)));
}

}  // namespace
}  // namespace muster::storage
