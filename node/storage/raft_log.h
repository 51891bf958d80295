// RaftLog: the Raft core's durable log on the member's LevelDB (db.h has the
// key layout).  Implements the read side the core uses (node/raft/storage.h)
// and the write side the server's driver loop calls after each Ready:
// `save()` writes hard state and new entries in ONE WriteBatch with ONE sync
// (group commit: every entry of a Ready batch costs one fsync together).
//
// Threads: every call comes from the thread that owns the Raft object; the
// class is not internally synchronised (the read side is const and may be
// called concurrently only with other const calls).
//
// Snapshots: Raft snapshots of this member carry metadata only
// (`Snapshot::data` is empty).  The state machine itself is streamed from a
// LevelDB snapshot by SnapshotWriter (snapshot.h) when the leader sends one,
// so the data a follower installs may be newer than the metadata's index; the
// state machine skips committed entries it already reflects (KvStore::apply
// ignores indexes <= its applied index).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "node/raft/raft.pb.h"
#include "node/raft/storage.h"
#include "node/storage/db.h"
#include "node/storage/status.h"

namespace muster::storage {

namespace raftpb = ::muster::raftpb;

class RaftLog final : public raft::Storage {
 public:
  // REQUIRES: db outlives the RaftLog.  Loads first/last index and the hard
  // state; a DB with a broken log (holes, unparsable entries) is fatal.
  static Status open(Database* db, std::unique_ptr<RaftLog>* out);

  // --- raft::Storage (see node/raft/storage.h for the contract) ---
  raft::StorageError initial_state(raft::InitialState* out) const override;
  raft::StorageError entries(uint64_t lo, uint64_t hi, uint64_t max_bytes,
                             std::vector<raftpb::Entry>* out) const override;
  raft::StorageError term(uint64_t i, uint64_t* out) const override;
  uint64_t first_index() const override { return log_start_.index() + 1; }
  uint64_t last_index() const override { return last_index_; }
  raft::StorageError snapshot(raftpb::Snapshot* out) const override;

  // --- write side ---

  // Persists `hs` (when non-null) and appends `entries` in one WriteBatch,
  // synced when `sync`.  Appending discards every existing entry at an index
  // >= the first new entry's index (Raft's conflicting suffix); entries at or
  // below the compaction point are skipped.
  // REQUIRES: entries contiguous, entries.front().index() <= last_index()+1.
  Status save(const raftpb::HardState* hs, const std::vector<raftpb::Entry>& entries,
              bool sync = true);
  Status set_hard_state(const raftpb::HardState& hs, bool sync = true) {
    return save(&hs, {}, sync);
  }
  Status append(const std::vector<raftpb::Entry>& entries, bool sync = true) {
    return save(nullptr, entries, sync);
  }
  const raftpb::HardState& hard_state() const { return hard_state_; }
  // Tests: bounds the in-memory cache of the newest entries (see cache_).
  void set_cache_limit_for_testing(size_t entries) { cache_limit_ = entries; }

  // Records that the state machine has a snapshot at index i (which the
  // caller has applied) with configuration cs.  Entries are kept; call
  // compact() to drop them.  kSnapshotOutOfDate if i <= current snapshot
  // index.  REQUIRES: first_index()-1 <= i <= last_index().
  raft::StorageError create_snapshot(uint64_t i, const raftpb::ConfState& cs,
                                     raftpb::Snapshot* out = nullptr);

  // Discards entries at indexes <= compact_index; the entry at compact_index
  // becomes the compaction point (first_index() = compact_index + 1).
  // kCompacted if compact_index < first_index().
  // REQUIRES: compact_index <= the snapshot index (so snapshot() always
  // covers the gap), compact_index <= last_index().
  raft::StorageError compact(uint64_t compact_index);

  // Adds to `batch` the Raft-side keys of a log that starts at snapshot
  // `meta` with hard state `hs`: used by the snapshot installer, which builds
  // a fresh database.
  static void reset_to_snapshot(const raftpb::SnapshotMetadata& meta, const raftpb::HardState& hs,
                                leveldb::WriteBatch* batch);

 private:
  struct PassKey {};

 public:
  RaftLog(PassKey, Database* db) : db_(db) {}

 private:
  Status load();

  Database* db_;
  raftpb::HardState hard_state_;
  raftpb::SnapshotMetadata snapshot_;
  // Index and term of the entry just before the first entry.
  raftpb::Entry log_start_;
  uint64_t last_index_ = 0;
  uint64_t last_term_ = 0;

  // The newest saved entries, in memory: the leader sends, commits and
  // applies entries just after saving them, and reading each back from
  // LevelDB (a lookup and a parse per entry, per term() too) was a large
  // part of its CPU per write.  When not empty the cache holds a contiguous
  // run of entries ending at last_index_; it is bounded by kCacheEntries and
  // kCacheBytes, dropping the oldest first.
  void cache_saved(const std::vector<raftpb::Entry>& entries);
  const raftpb::Entry* cached(uint64_t i) const;
  static constexpr size_t kCacheEntries = 8192;
  static constexpr size_t kCacheBytes = 16u << 20;
  std::deque<raftpb::Entry> cache_;
  size_t cache_bytes_ = 0;
  size_t cache_limit_ = kCacheEntries;
};

}  // namespace muster::storage
