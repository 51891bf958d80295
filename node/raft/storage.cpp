#include "node/raft/storage.h"

#include <cstdio>
#include <cstdlib>

namespace muster::raft {

namespace {
[[noreturn]] void storage_fatal(const char* what, uint64_t a, uint64_t b) {
  std::fprintf(stderr, "raft MemoryStorage invariant broken: %s (%llu, %llu)\n", what,
               static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
  std::abort();
}
}  // namespace

const char* to_string(StorageError e) {
  switch (e) {
    case StorageError::kOk:
      return "ok";
    case StorageError::kCompacted:
      return "requested index is unavailable due to compaction";
    case StorageError::kUnavailable:
      return "requested entry at index is unavailable";
    case StorageError::kSnapshotTemporarilyUnavailable:
      return "snapshot is temporarily unavailable";
    case StorageError::kSnapshotOutOfDate:
      return "requested index is older than the existing snapshot";
    case StorageError::kIoError:
      return "storage I/O error";
  }
  return "unknown storage error";
}

MemoryStorage::MemoryStorage() { entries_.emplace_back(); }

StorageError MemoryStorage::initial_state(InitialState* out) const {
  out->hard_state = hard_state_;
  out->conf_state = conf_state_;
  return StorageError::kOk;
}

StorageError MemoryStorage::entries(uint64_t lo, uint64_t hi, uint64_t max_bytes,
                                    std::vector<pb::Entry>* out) const {
  if (lo > hi) storage_fatal("entries lo > hi", lo, hi);
  if (lo <= offset()) return StorageError::kCompacted;
  if (hi > last_index() + 1) return StorageError::kUnavailable;
  uint64_t total = 0;
  for (uint64_t i = lo; i < hi; ++i) {
    const pb::Entry& e = entries_[i - offset()];
    total += e.ByteSizeLong();
    if (i > lo && total > max_bytes) break;
    out->push_back(e);
  }
  return StorageError::kOk;
}

StorageError MemoryStorage::term(uint64_t i, uint64_t* out) const {
  if (i < offset()) return StorageError::kCompacted;
  if (i - offset() >= entries_.size()) return StorageError::kUnavailable;
  *out = entries_[i - offset()].term();
  return StorageError::kOk;
}

uint64_t MemoryStorage::first_index() const { return offset() + 1; }

uint64_t MemoryStorage::last_index() const { return offset() + entries_.size() - 1; }

StorageError MemoryStorage::snapshot(pb::Snapshot* out) const {
  *out = snapshot_;
  return StorageError::kOk;
}

void MemoryStorage::set_hard_state(const pb::HardState& hs) { hard_state_ = hs; }

void MemoryStorage::append(const std::vector<pb::Entry>& entries) {
  if (entries.empty()) return;
  for (size_t k = 1; k < entries.size(); ++k) {
    if (entries[k].index() != entries[k - 1].index() + 1) {
      storage_fatal("append of non-contiguous entries", entries[k - 1].index(), entries[k].index());
    }
  }
  const uint64_t first = first_index();
  const uint64_t last_new = entries.back().index();
  // Everything offered is already covered by the snapshot: nothing to do.
  if (last_new < first) return;
  size_t skip = 0;
  if (entries.front().index() < first) skip = first - entries.front().index();
  const uint64_t start = entries[skip].index();
  if (start > last_index() + 1) storage_fatal("append leaves a gap", last_index(), start);
  // Truncate the suffix that the new entries replace, then append.
  entries_.resize(start - offset());
  entries_.insert(entries_.end(), entries.begin() + static_cast<std::ptrdiff_t>(skip),
                  entries.end());
}

StorageError MemoryStorage::apply_snapshot(const pb::Snapshot& snap) {
  if (snap.metadata().index() <= snapshot_.metadata().index() &&
      !(snap.metadata().index() == 0 && snapshot_.metadata().index() == 0)) {
    return StorageError::kSnapshotOutOfDate;
  }
  snapshot_ = snap;
  conf_state_ = snap.metadata().conf_state();
  entries_.clear();
  pb::Entry dummy;
  dummy.set_index(snap.metadata().index());
  dummy.set_term(snap.metadata().term());
  entries_.push_back(dummy);
  return StorageError::kOk;
}

StorageError MemoryStorage::create_snapshot(uint64_t i, const pb::ConfState* cs,
                                            const std::string& data, pb::Snapshot* out) {
  if (i <= snapshot_.metadata().index()) return StorageError::kSnapshotOutOfDate;
  if (i > last_index()) storage_fatal("create_snapshot beyond last index", i, last_index());
  if (i < offset()) return StorageError::kSnapshotOutOfDate;
  snapshot_.mutable_metadata()->set_index(i);
  snapshot_.mutable_metadata()->set_term(entries_[i - offset()].term());
  if (cs != nullptr) {
    *snapshot_.mutable_metadata()->mutable_conf_state() = *cs;
    conf_state_ = *cs;
  }
  snapshot_.set_data(data);
  if (out != nullptr) *out = snapshot_;
  return StorageError::kOk;
}

StorageError MemoryStorage::compact(uint64_t compact_index) {
  if (compact_index <= offset()) return StorageError::kCompacted;
  if (compact_index > last_index()) {
    storage_fatal("compact beyond last index", compact_index, last_index());
  }
  const uint64_t drop = compact_index - offset();
  pb::Entry dummy;
  dummy.set_index(entries_[drop].index());
  dummy.set_term(entries_[drop].term());
  std::vector<pb::Entry> kept;
  kept.reserve(entries_.size() - drop);
  kept.push_back(dummy);
  kept.insert(kept.end(), entries_.begin() + static_cast<std::ptrdiff_t>(drop) + 1, entries_.end());
  entries_ = std::move(kept);
  return StorageError::kOk;
}

}  // namespace muster::raft
