// KeyHistory: the in-memory index of one key's MVCC revisions (etcd's
// keyIndex), and Revision, the (main, sub) pair that orders every change.
//
// A key's life is a sequence of generations: puts append revisions to the
// current generation, a delete appends a tombstone revision and closes it; the
// next put starts a new generation (create_revision = its first revision).
// Here the generations are kept flat: `revs` ascending, a tombstone ends a
// generation.  The index is rebuilt from LevelDB's 'r' records on open.
//
// Not thread-safe; KvStore guards it.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <vector>

namespace muster::storage {

struct Revision {
  int64_t main = 0;
  int64_t sub = 0;
  auto operator<=>(const Revision&) const = default;
};

struct KeyHistory {
  struct Rev {
    Revision rev;
    bool tombstone = false;
  };
  // Ascending.  Never empty while the key is in the index.
  std::vector<Rev> revs;
  // Of the latest revision when alive: lets keys_only reads, compares and
  // puts avoid reading the record.
  int64_t create_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;

  bool alive() const { return !revs.empty() && !revs.back().tombstone; }

  // The revision visible at store revision `at` (the latest with main <= at),
  // or nullptr when the key did not exist at `at`.
  const Rev* find(int64_t at) const;

  // The revision just before `r` in the same generation (the previous value a
  // watch event's prev_kv shows), or nullptr.
  const Rev* previous(Revision r) const;

  // etcd's compaction: drops every revision with main <= at except the
  // latest one, which is dropped too if it is a tombstone.  Appends the
  // dropped revisions to *removed.
  void compact(int64_t at, std::vector<Revision>* removed);
};

}  // namespace muster::storage
