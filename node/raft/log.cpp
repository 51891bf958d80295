#include "node/raft/log.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>

namespace muster::raft {

namespace {
[[noreturn]] void log_fatal(const char* what, uint64_t a, uint64_t b) {
  std::fprintf(stderr, "raft log invariant broken: %s (%llu, %llu)\n", what,
               static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
  std::abort();
}

void check_storage(StorageError e, const char* where) {
  if (e != StorageError::kOk) {
    std::fprintf(stderr, "raft: unexpected storage error in %s: %s\n", where, to_string(e));
    std::abort();
  }
}
}  // namespace

RaftLog::RaftLog(const Storage* storage) : storage_(storage) {
  const uint64_t first = storage_->first_index();
  const uint64_t last = storage_->last_index();
  unstable_offset_ = last + 1;
  // Everything up to the snapshot is committed and applied by definition.
  committed_ = first - 1;
  applied_ = first - 1;
}

uint64_t RaftLog::first_index() const {
  if (unstable_snapshot_) return unstable_snapshot_->metadata().index() + 1;
  return storage_->first_index();
}

uint64_t RaftLog::last_index() const {
  if (!unstable_.empty()) return unstable_offset_ + unstable_.size() - 1;
  if (unstable_snapshot_) return unstable_snapshot_->metadata().index();
  return storage_->last_index();
}

uint64_t RaftLog::last_term() const {
  uint64_t t = 0;
  check_storage(term(last_index(), &t), "last_term");
  return t;
}

StorageError RaftLog::term(uint64_t i, uint64_t* out) const {
  const uint64_t dummy = first_index() - 1;
  if (i < dummy) return StorageError::kCompacted;
  if (i > last_index()) return StorageError::kUnavailable;
  if (unstable_snapshot_ && i == unstable_snapshot_->metadata().index()) {
    *out = unstable_snapshot_->metadata().term();
    return StorageError::kOk;
  }
  if (i >= unstable_offset_ && !unstable_.empty()) {
    *out = unstable_[i - unstable_offset_].term();
    return StorageError::kOk;
  }
  const StorageError e = storage_->term(i, out);
  if (e == StorageError::kCompacted || e == StorageError::kUnavailable) return e;
  check_storage(e, "term");
  return e;
}

uint64_t RaftLog::term_or_zero(uint64_t i) const {
  uint64_t t = 0;
  if (term(i, &t) != StorageError::kOk) return 0;
  return t;
}

bool RaftLog::match_term(uint64_t i, uint64_t t) const {
  uint64_t got = 0;
  if (term(i, &got) != StorageError::kOk) return false;
  return got == t;
}

std::optional<uint64_t> RaftLog::maybe_append(
    uint64_t index, uint64_t log_term, uint64_t committed,
    const google::protobuf::RepeatedPtrField<pb::Entry>& ents) {
  if (!match_term(index, log_term)) return std::nullopt;
  const uint64_t last_new = index + static_cast<uint64_t>(ents.size());
  // Find the first entry that is new or conflicts with ours.  Entries that
  // already match are skipped: re-appending them would needlessly truncate
  // (and a delayed, duplicated MsgApp must never cut off entries that a later
  // MsgApp from the same leader already added).
  int k = 0;
  // Fast path: the new entries start right after our last one (no overlap).
  if (ents.empty() || ents[0].index() != last_index() + 1) {
    for (; k < ents.size(); ++k) {
      if (!match_term(ents[k].index(), ents[k].term())) break;
    }
  }
  if (k < ents.size()) {
    const uint64_t ci = ents[k].index();
    // §5.3: a conflicting entry below our commit index means a leader tried to
    // overwrite committed state: Log Matching or Leader Completeness is broken.
    if (ci <= committed_) log_fatal("entry conflicts with a committed entry", ci, committed_);
    append(std::vector<pb::Entry>(ents.begin() + k, ents.end()));  // moved in
  }
  commit_to(std::min(committed, last_new));
  return last_new;
}

uint64_t RaftLog::append(std::vector<pb::Entry>&& ents) {
  if (ents.empty()) return last_index();
  const uint64_t after = ents.front().index();
  if (after <= committed_) log_fatal("append below the commit index", after, committed_);
  if (after > last_index() + 1) log_fatal("append leaves a gap", after, last_index());
  if (after == unstable_offset_ + unstable_.size()) {
    // Plain extension of the unstable tail.
  } else if (after <= unstable_offset_) {
    // Replacing everything unstable (and possibly stable entries the caller
    // will overwrite when it persists these).
    unstable_offset_ = after;
    unstable_.clear();
  } else {
    // Truncate the unstable tail at `after`.
    unstable_.resize(after - unstable_offset_);
  }
  unstable_.insert(unstable_.end(), std::make_move_iterator(ents.begin()),
                   std::make_move_iterator(ents.end()));
  return last_index();
}

std::pair<uint64_t, uint64_t> RaftLog::find_conflict_by_term(uint64_t index, uint64_t term) const {
  for (;;) {
    uint64_t t = 0;
    const StorageError e = this->term(index, &t);
    if (e != StorageError::kOk) return {index, 0};
    if (t <= term) return {index, t};
    if (index == 0) return {0, 0};
    --index;
  }
}

StorageError RaftLog::slice(uint64_t lo, uint64_t hi, uint64_t max_bytes,
                            std::vector<pb::Entry>* out) const {
  if (lo > hi) log_fatal("slice lo > hi", lo, hi);
  if (lo < first_index()) return StorageError::kCompacted;
  if (hi > last_index() + 1) log_fatal("slice beyond last index", hi, last_index());
  if (lo == hi) return StorageError::kOk;
  const size_t start_size = out->size();
  uint64_t used = 0;
  // Stable part, [lo, min(hi, unstable_offset_)).
  if (lo < unstable_offset_) {
    const uint64_t shi = std::min(hi, unstable_offset_);
    const StorageError e = storage_->entries(lo, shi, max_bytes, out);
    if (e == StorageError::kCompacted) return e;
    if (e == StorageError::kUnavailable) log_fatal("stable entries unavailable", lo, shi);
    check_storage(e, "slice");
    for (size_t k = start_size; k < out->size(); ++k) used += (*out)[k].ByteSizeLong();
    // Storage stopped early because of the size limit: do not add more.
    if (out->size() - start_size < shi - lo) return StorageError::kOk;
  }
  // Unstable part.
  if (hi > unstable_offset_) {
    const uint64_t ulo = std::max(lo, unstable_offset_);
    for (uint64_t i = ulo; i < hi; ++i) {
      const pb::Entry& e = unstable_[i - unstable_offset_];
      const uint64_t sz = e.ByteSizeLong();
      if (out->size() > start_size && used + sz > max_bytes) break;
      used += sz;
      out->push_back(e);
    }
  }
  return StorageError::kOk;
}

StorageError RaftLog::entries_from(uint64_t i, uint64_t max_bytes,
                                   std::vector<pb::Entry>* out) const {
  if (i > last_index()) return StorageError::kOk;
  return slice(i, last_index() + 1, max_bytes, out);
}

bool RaftLog::is_up_to_date(uint64_t lasti, uint64_t term) const {
  const uint64_t lt = last_term();
  return term > lt || (term == lt && lasti >= last_index());
}

void RaftLog::commit_to(uint64_t to) {
  if (to <= committed_) return;
  if (to > last_index()) log_fatal("commit index beyond the last index", to, last_index());
  committed_ = to;
}

bool RaftLog::maybe_commit(uint64_t max_index, uint64_t term) {
  if (max_index > committed_ && term_or_zero(max_index) == term) {
    commit_to(max_index);
    return true;
  }
  return false;
}

void RaftLog::applied_to(uint64_t i) {
  if (i == 0) return;
  if (i > committed_ || i < applied_) log_fatal("applied index out of range", i, committed_);
  applied_ = i;
}

void RaftLog::stable_to(uint64_t i, uint64_t t) {
  if (unstable_.empty() || i < unstable_offset_) return;
  if (i >= unstable_offset_ + unstable_.size()) return;
  // The entry the caller persisted was replaced since: keep the new tail.
  if (unstable_[i - unstable_offset_].term() != t) return;
  unstable_.erase(unstable_.begin(),
                  unstable_.begin() + static_cast<std::ptrdiff_t>(i + 1 - unstable_offset_));
  unstable_offset_ = i + 1;
}

void RaftLog::stable_snap_to(uint64_t i) {
  if (unstable_snapshot_ && unstable_snapshot_->metadata().index() == i) {
    unstable_snapshot_.reset();
  }
}

std::vector<pb::Entry> RaftLog::next_committed_entries(uint64_t max_bytes) const {
  std::vector<pb::Entry> out;
  if (unstable_snapshot_) return out;
  const uint64_t lo = std::max(applied_ + 1, first_index());
  if (committed_ + 1 > lo) {
    const StorageError e = slice(lo, committed_ + 1, max_bytes, &out);
    check_storage(e, "next_committed_entries");
  }
  return out;
}

bool RaftLog::has_next_committed_entries() const {
  if (unstable_snapshot_) return false;
  return committed_ + 1 > std::max(applied_ + 1, first_index());
}

StorageError RaftLog::snapshot(pb::Snapshot* out) const {
  if (unstable_snapshot_) {
    *out = *unstable_snapshot_;
    return StorageError::kOk;
  }
  return storage_->snapshot(out);
}

void RaftLog::restore(const pb::Snapshot& snap) {
  const uint64_t idx = snap.metadata().index();
  committed_ = idx;
  unstable_.clear();
  unstable_offset_ = idx + 1;
  unstable_snapshot_ = snap;
}

std::string RaftLog::check_invariants() const {
  char buf[200];
  const uint64_t snap = first_index() - 1;
  if (applied_ > committed_) {
    std::snprintf(buf, sizeof(buf), "applied %llu > committed %llu",
                  static_cast<unsigned long long>(applied_),
                  static_cast<unsigned long long>(committed_));
    return buf;
  }
  if (committed_ > last_index()) {
    std::snprintf(buf, sizeof(buf), "committed %llu > last index %llu",
                  static_cast<unsigned long long>(committed_),
                  static_cast<unsigned long long>(last_index()));
    return buf;
  }
  if (committed_ < snap) return "committed below the snapshot index";
  for (size_t k = 0; k < unstable_.size(); ++k) {
    if (unstable_[k].index() != unstable_offset_ + k) return "unstable entries not contiguous";
    if (k > 0 && unstable_[k].term() < unstable_[k - 1].term()) {
      return "terms decrease along the unstable log";
    }
  }
  if (unstable_snapshot_ && unstable_offset_ != unstable_snapshot_->metadata().index() + 1) {
    return "unstable offset does not follow the unstable snapshot";
  }
  return {};
}

}  // namespace muster::raft
