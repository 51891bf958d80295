// RaftLog: the core's view of the replicated log.  It stitches together the
// entries the caller has already made durable (read through `Storage`) and the
// "unstable" tail (and possibly a snapshot) the core produced but the caller
// has not yet persisted.  Owned by one Raft object; single-threaded.
//
// Invariants (checked by check_invariants()):
//   snapshot index (first_index() - 1) <= applied <= committed <= last_index()
//   unstable entries, when present, are contiguous and start at unstable_offset_
//   if an unstable snapshot is present, unstable_offset_ == its index + 1
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "node/raft/storage.h"

namespace muster::raft {

class RaftLog {
 public:
  // REQUIRES: storage outlives this object.
  explicit RaftLog(const Storage* storage);

  uint64_t first_index() const;
  uint64_t last_index() const;
  uint64_t last_term() const;
  uint64_t committed() const { return committed_; }
  uint64_t applied() const { return applied_; }

  // Term of entry i; kCompacted below first_index()-1, kUnavailable above
  // last_index().  Any other storage error aborts.
  StorageError term(uint64_t i, uint64_t* out) const;
  // Term of entry i, or 0 if it is compacted or not there.
  uint64_t term_or_zero(uint64_t i) const;
  bool match_term(uint64_t i, uint64_t t) const;

  // The follower side of AppendEntries (Raft paper §5.3).  If the entry at
  // `index` has term `log_term`, appends `ents` (truncating a conflicting
  // suffix), commits up to min(committed, index + ents.size()) and returns the
  // index of the last new entry.  Otherwise returns nullopt.
  std::optional<uint64_t> maybe_append(uint64_t index, uint64_t log_term, uint64_t committed,
                                       const google::protobuf::RepeatedPtrField<pb::Entry>& ents);
  // Appends ents to the unstable tail (truncating anything from
  // ents.front().index on).  REQUIRES: ents.front().index > committed and
  // <= last_index() + 1.  Returns last_index().
  uint64_t append(std::vector<pb::Entry>&& ents);

  // Fast backtracking (Raft thesis §5.3 / etcd's findConflictByTerm): the
  // largest index <= `index` whose term is <= `term`, and that term.  Used by a
  // follower to tell the leader where its log may match, and by the leader to
  // jump over a whole term of mismatching entries at once.
  std::pair<uint64_t, uint64_t> find_conflict_by_term(uint64_t index, uint64_t term) const;

  // Entries [lo, hi), at most max_bytes (at least one entry when lo < hi).
  StorageError slice(uint64_t lo, uint64_t hi, uint64_t max_bytes,
                     std::vector<pb::Entry>* out) const;
  // Entries from i to the end, limited as slice().
  StorageError entries_from(uint64_t i, uint64_t max_bytes, std::vector<pb::Entry>* out) const;

  // Raft paper §5.4.1: is a log ending at (lasti, term) at least as
  // up-to-date as ours?
  bool is_up_to_date(uint64_t lasti, uint64_t term) const;

  // Advances committed to `to` if that is higher.  Aborts if `to` is beyond
  // last_index() (a leader told us to commit what we do not have).
  void commit_to(uint64_t to);
  // Commits max_index if it is higher than committed and its entry has term
  // `term` (the caller passes the leader's current term: §5.4.2).
  bool maybe_commit(uint64_t max_index, uint64_t term);
  void applied_to(uint64_t i);

  // Unstable tail and snapshot: what the caller must persist next.
  const std::vector<pb::Entry>& unstable_entries() const { return unstable_; }
  const std::optional<pb::Snapshot>& unstable_snapshot() const { return unstable_snapshot_; }
  // The caller persisted entries up to (i, t): drop them from the unstable
  // tail, unless they were replaced in the meantime (term mismatch).
  void stable_to(uint64_t i, uint64_t t);
  void stable_snap_to(uint64_t i);

  // Committed entries not yet applied, up to max_bytes.  Empty while an
  // unstable snapshot waits to be installed.
  std::vector<pb::Entry> next_committed_entries(uint64_t max_bytes) const;
  bool has_next_committed_entries() const;

  // The most recent snapshot: the unstable one if any, else the storage's.
  StorageError snapshot(pb::Snapshot* out) const;
  // Replaces the whole log with the snapshot (follower installing it).
  void restore(const pb::Snapshot& snap);

  // Empty string when all invariants hold, else a description.
  std::string check_invariants() const;

 private:
  const Storage* storage_;
  std::optional<pb::Snapshot> unstable_snapshot_;
  std::vector<pb::Entry> unstable_;
  uint64_t unstable_offset_ = 0;  // index of unstable_[0] (or the next one)
  uint64_t committed_ = 0;
  uint64_t applied_ = 0;
};

}  // namespace muster::raft
