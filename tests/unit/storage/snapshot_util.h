// Helpers for the snapshot tests: bulk loading, transfer, comparison.
#pragma once

#include <gtest/gtest.h>
#include <leveldb/iterator.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "node/storage/member_storage.h"

namespace muster::storage::testing {

// Loads n keys through 100-put txns (one apply each), starting at index 1.
inline uint64_t load_keys(MemberStorage& m, int n) {
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
inline void transfer(MemberStorage& from, MemberStorage& to, const raftpb::SnapshotMetadata& meta,
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

// Compares the state-machine key spaces of a and b byte for byte (the raw
// LevelDB contents: revisions, leases, members, applied record), and the
// live key count and revision the stores report.
inline void expect_same_keys(MemberStorage& a, MemberStorage& b) {
  std::unique_ptr<leveldb::Iterator> ia(a.db().db()->NewIterator(leveldb::ReadOptions()));
  std::unique_ptr<leveldb::Iterator> ib(b.db().db()->NewIterator(leveldb::ReadOptions()));
  auto skip = [](leveldb::Iterator* it) {
    while (it->Valid() && !keys::is_state_machine_key(it->key().ToString())) it->Next();
  };
  ia->SeekToFirst();
  ib->SeekToFirst();
  size_t pairs = 0;
  for (;; ia->Next(), ib->Next(), pairs++) {
    skip(ia.get());
    skip(ib.get());
    ASSERT_EQ(ia->Valid(), ib->Valid()) << "after " << pairs << " pairs";
    if (!ia->Valid()) break;
    ASSERT_EQ(ia->key().ToString(), ib->key().ToString());
    ASSERT_EQ(ia->value().ToString(), ib->value().ToString());
  }
  EXPECT_GT(pairs, 0u);
  EXPECT_EQ(a.kv().key_count(), b.kv().key_count());
  EXPECT_EQ(a.kv().revision(), b.kv().revision());
}

}  // namespace muster::storage::testing
