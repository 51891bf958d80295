// The read side of the Raft core's durable state, and an in-memory
// implementation used by tests, the simulator and (as a cache) by callers.
//
// Who calls what:
//   - The Raft core (node/raft/raft.h) only READS through `Storage`: at start
//     (initial_state, first/last index) and whenever it needs stable log
//     entries or terms (replication, elections, applying).
//   - The caller (the server's driver loop, or the simulator) WRITES: it takes
//     `Ready::entries`, `Ready::hard_state` and `Ready::snapshot` from the core,
//     makes them durable in its implementation, and only then calls
//     `Raft::advance()`.  After advance() the core assumes those entries are
//     readable through this interface.
//   - All calls come from the single thread that owns the Raft object.
//
// Index conventions (the same as etcd-io/raft):
//   - Log indexes start at 1.  The storage always knows the index and term of
//     the entry just before its first entry: that is the last entry covered by
//     its snapshot (index 0, term 0 for an empty, never-compacted log).
//   - first_index() is the index of the first entry still available as an
//     entry (snapshot index + 1); last_index() is the index of the last entry
//     (snapshot index when no entry follows the snapshot).
//   - term(i) is answerable for i in [first_index()-1, last_index()].
//
// Errors are values (`StorageError`), never exceptions.  The core treats
// kCompacted / kUnavailable / kSnapshotTemporarilyUnavailable as expected
// conditions in the places documented below; any other error (for example an
// I/O failure in a disk-backed implementation, reported as kIoError) makes the
// core abort, because a member that cannot read its own log must not keep
// voting.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "node/raft/raft.pb.h"

namespace muster::raft {

namespace pb = ::muster::raftpb;

enum class StorageError {
  kOk = 0,
  // The requested index is at or below the snapshot: the entry is gone.
  kCompacted,
  // The requested index is above last_index().
  kUnavailable,
  // snapshot(): a snapshot is being prepared; the core retries later.
  kSnapshotTemporarilyUnavailable,
  // apply_snapshot()/create_snapshot(): the snapshot is older than the one held.
  kSnapshotOutOfDate,
  // A disk-backed implementation could not read or write. Fatal for the core.
  kIoError,
};

const char* to_string(StorageError e);

// What a member starts from after a restart.
struct InitialState {
  // Term, vote and commit index as last persisted.
  pb::HardState hard_state;
  // The cluster configuration (voters and learners) as of the caller's applied
  // index (Config::applied), or as of the snapshot when nothing after the
  // snapshot was applied.  Configuration changes are applied by the caller
  // through Raft::apply_conf_change() when their entries are applied, so the
  // caller persists the ConfState it returns together with its applied index.
  pb::ConfState conf_state;
};

class Storage {
 public:
  virtual ~Storage() = default;

  // REQUIRES: nothing.  Returns the persisted HardState and ConfState (see
  // InitialState).  A fresh storage returns an empty HardState (term 0, vote 0,
  // commit 0) and an empty ConfState.
  virtual StorageError initial_state(InitialState* out) const = 0;

  // Entries [lo, hi), appended to *out (which is not cleared).
  // REQUIRES: lo <= hi.
  // Returns kCompacted if lo <= snapshot index (lo < first_index()),
  // kUnavailable if hi > last_index() + 1.  Otherwise kOk and at least one
  // entry when lo < hi, even if that single entry is larger than max_bytes;
  // further entries are added only while the total of
  // Entry::ByteSizeLong() stays <= max_bytes.  max_bytes == UINT64_MAX means
  // "no limit".
  virtual StorageError entries(uint64_t lo, uint64_t hi, uint64_t max_bytes,
                               std::vector<pb::Entry>* out) const = 0;

  // The term of entry i.
  // REQUIRES: out != nullptr.
  // For i == first_index() - 1 returns the snapshot's term (0 for a fresh
  // log); kCompacted if i < first_index() - 1; kUnavailable if i > last_index().
  virtual StorageError term(uint64_t i, uint64_t* out) const = 0;

  // Index of the first entry available as an entry: snapshot index + 1.
  // Must not fail: a disk-backed implementation keeps it in memory.
  virtual uint64_t first_index() const = 0;

  // Index of the last entry, or the snapshot index if there is no entry after
  // it.  Must not fail (kept in memory, as first_index()).
  virtual uint64_t last_index() const = 0;

  // The most recent snapshot (data and metadata).  May return
  // kSnapshotTemporarilyUnavailable while one is being produced; the core then
  // retries on a later heartbeat.  A snapshot returned here must have
  // metadata.index >= first_index() - 1.
  virtual StorageError snapshot(pb::Snapshot* out) const = 0;
};

// Storage held entirely in memory.  Not durable: tests and the simulator model
// "persisted" state by keeping one MemoryStorage per node across simulated
// crashes.  Follows the same conventions as etcd-io/raft's MemoryStorage:
// entries_[0] is a dummy entry carrying the snapshot's index and term.
class MemoryStorage final : public Storage {
 public:
  MemoryStorage();

  StorageError initial_state(InitialState* out) const override;
  StorageError entries(uint64_t lo, uint64_t hi, uint64_t max_bytes,
                       std::vector<pb::Entry>* out) const override;
  StorageError term(uint64_t i, uint64_t* out) const override;
  uint64_t first_index() const override;
  uint64_t last_index() const override;
  StorageError snapshot(pb::Snapshot* out) const override;

  // --- write side (called by the owner of the Raft object) ---

  // REQUIRES: nothing.  Replaces the persisted HardState.
  void set_hard_state(const pb::HardState& hs);
  const pb::HardState& hard_state() const { return hard_state_; }

  // Appends entries, discarding any existing entries at index >= the first
  // new entry's index (Raft's "delete the conflicting suffix").  Entries
  // already covered by the snapshot are skipped.
  // REQUIRES: entries are contiguous and entries.front().index <=
  // last_index() + 1 (no gap).  Aborts otherwise.
  void append(const std::vector<pb::Entry>& entries);

  // Replaces the whole log with the snapshot.  Returns kSnapshotOutOfDate (and
  // changes nothing) if snap.metadata().index() <= the current snapshot index.
  StorageError apply_snapshot(const pb::Snapshot& snap);

  // Records a snapshot of the caller's state machine at index i (which it has
  // applied), with the given configuration (also what initial_state() reports
  // from now on) and data; entries are kept (call compact() to drop them).  Returns
  // kSnapshotOutOfDate if i <= current snapshot index.  REQUIRES: i <= last_index().  Aborts
  // otherwise.
  StorageError create_snapshot(uint64_t i, const pb::ConfState* cs, const std::string& data,
                               pb::Snapshot* out = nullptr);

  // Discards entries before compact_index (the entry at compact_index becomes
  // the new dummy entry).  Returns kCompacted if compact_index <= current
  // first_index() - 1.  REQUIRES: compact_index <= last_index().  Aborts
  // otherwise.
  StorageError compact(uint64_t compact_index);

  // Records the configuration that initial_state() reports (the caller calls
  // this when it applies a configuration change, with the ConfState returned
  // by Raft::apply_conf_change()).
  void set_conf_state(const pb::ConfState& cs) { conf_state_ = cs; }

 private:
  uint64_t offset() const { return entries_.front().index(); }

  pb::HardState hard_state_;
  pb::ConfState conf_state_;
  pb::Snapshot snapshot_;
  // entries_[0] is a dummy entry: index/term of the snapshot. Never empty.
  std::vector<pb::Entry> entries_;
};

}  // namespace muster::raft
