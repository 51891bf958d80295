#include "node/storage/raft_log.h"

#include <leveldb/iterator.h>

#include <algorithm>
#include <string>

namespace muster::storage {

namespace {

template <typename Message>
bool load_message(const Database& db, std::string_view key, Message* m, Status* err) {
  std::string v;
  Status s = db.get(key, &v);
  if (s.code() == Code::kNotFound) return false;
  if (!s) {
    *err = s;
    return false;
  }
  if (!m->ParseFromString(v)) fatal("unparsable record at key " + std::string(key));
  return true;
}

}  // namespace

Status RaftLog::open(Database* db, std::unique_ptr<RaftLog>* out) {
  auto log = std::make_unique<RaftLog>(PassKey{}, db);
  Status s = log->load();
  if (!s) return s;
  *out = std::move(log);
  return {};
}

Status RaftLog::load() {
  Status err;
  load_message(*db_, keys::kHardState, &hard_state_, &err);
  load_message(*db_, keys::kSnapshot, &snapshot_, &err);
  load_message(*db_, keys::kLogStart, &log_start_, &err);
  if (!err) return err;
  // The last entry is the greatest 'l' key; every key between the log start
  // and it must be present (checked lazily on reads, and here for the ends).
  last_index_ = log_start_.index();
  last_term_ = log_start_.term();
  std::unique_ptr<leveldb::Iterator> it(db_->db()->NewIterator(leveldb::ReadOptions()));
  it->Seek(keys::log_key(UINT64_MAX));
  if (it->Valid()) {
    it->Prev();
  } else {
    it->SeekToLast();
  }
  // Now on the greatest key below log_key(UINT64_MAX): the last entry if the
  // log is not empty ('L', 'M', 'X' sort below 'l'; "m..." above).
  if (it->Valid() && it->key().size() == 9 && it->key()[0] == keys::kLog) {
    raftpb::Entry e;
    if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())))
      fatal("unparsable last log entry");
    if (e.index() != keys::get_be64(it->key().data() + 1)) fatal("log entry index mismatch");
    if (e.index() > last_index_) {
      last_index_ = e.index();
      last_term_ = e.term();
    }
  }
  if (!it->status().ok()) return from_leveldb(it->status());
  return {};
}

raft::StorageError RaftLog::initial_state(raft::InitialState* out) const {
  out->hard_state = hard_state_;
  out->conf_state.Clear();
  std::string v;
  Status s = db_->get(keys::kConfState, &v);
  if (s.code() == Code::kNotFound) {
    // Nothing applied since the snapshot: its configuration is current.
    out->conf_state = snapshot_.conf_state();
    return raft::StorageError::kOk;
  }
  if (!s) return raft::StorageError::kIoError;
  if (!out->conf_state.ParseFromString(v)) fatal("unparsable conf state");
  return raft::StorageError::kOk;
}

raft::StorageError RaftLog::entries(uint64_t lo, uint64_t hi, uint64_t max_bytes,
                                    std::vector<raftpb::Entry>* out) const {
  if (lo > hi) fatal("RaftLog::entries: lo > hi");
  if (lo < first_index()) return raft::StorageError::kCompacted;
  if (hi > last_index_ + 1) return raft::StorageError::kUnavailable;
  if (lo == hi) return raft::StorageError::kOk;
  if (cached(lo) != nullptr) {
    // hi - 1 <= last_index_, the cache's last entry.
    uint64_t total = 0;
    for (uint64_t i = lo; i < hi; i++) {
      const raftpb::Entry& e = *cached(i);
      const uint64_t size = e.ByteSizeLong();
      if (i > lo && (max_bytes == UINT64_MAX ? false : total + size > max_bytes)) break;
      total += size;
      out->push_back(e);
    }
    return raft::StorageError::kOk;
  }
  std::unique_ptr<leveldb::Iterator> it(db_->db()->NewIterator(leveldb::ReadOptions()));
  uint64_t total = 0;
  uint64_t want = lo;
  for (it->Seek(keys::log_key(lo)); want < hi; it->Next(), want++) {
    if (!it->Valid()) {
      if (!it->status().ok()) return raft::StorageError::kIoError;
      fatal("raft log hole at index " + std::to_string(want));
    }
    if (it->key() != leveldb::Slice(keys::log_key(want)))
      fatal("raft log hole at index " + std::to_string(want));
    raftpb::Entry e;
    if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())))
      fatal("unparsable log entry " + std::to_string(want));
    uint64_t size = e.ByteSizeLong();
    if (want > lo && (max_bytes == UINT64_MAX ? false : total + size > max_bytes)) break;
    total += size;
    out->push_back(std::move(e));
  }
  return raft::StorageError::kOk;
}

raft::StorageError RaftLog::term(uint64_t i, uint64_t* out) const {
  if (i + 1 < first_index()) return raft::StorageError::kCompacted;
  if (i > last_index_) return raft::StorageError::kUnavailable;
  if (i == log_start_.index()) {
    *out = log_start_.term();
    return raft::StorageError::kOk;
  }
  if (i == last_index_) {
    *out = last_term_;
    return raft::StorageError::kOk;
  }
  if (const raftpb::Entry* e = cached(i)) {
    *out = e->term();
    return raft::StorageError::kOk;
  }
  std::string v;
  Status s = db_->get(keys::log_key(i), &v);
  if (s.code() == Code::kNotFound) fatal("raft log hole at index " + std::to_string(i));
  if (!s) return raft::StorageError::kIoError;
  raftpb::Entry e;
  if (!e.ParseFromString(v)) fatal("unparsable log entry " + std::to_string(i));
  *out = e.term();
  return raft::StorageError::kOk;
}

raft::StorageError RaftLog::snapshot(raftpb::Snapshot* out) const {
  out->Clear();
  *out->mutable_metadata() = snapshot_;
  return raft::StorageError::kOk;
}

Status RaftLog::save(const raftpb::HardState* hs, const std::vector<raftpb::Entry>& entries,
                     bool sync) {
  leveldb::WriteBatch batch;
  uint64_t new_last = last_index_, new_last_term = last_term_;
  if (!entries.empty()) {
    const uint64_t first_new = entries.front().index();
    if (first_new > last_index_ + 1)
      fatal("RaftLog::save: gap: first new entry " + std::to_string(first_new) + " after last " +
            std::to_string(last_index_));
    for (size_t k = 1; k < entries.size(); k++)
      if (entries[k].index() != entries[k - 1].index() + 1)
        fatal("RaftLog::save: entries not contiguous");
    std::string buf;
    for (const auto& e : entries) {
      if (e.index() <= log_start_.index()) continue;  // covered by compaction
      buf.clear();
      e.SerializeToString(&buf);
      batch.Put(keys::log_key(e.index()), buf);
    }
    if (entries.back().index() > log_start_.index()) {
      new_last = entries.back().index();
      new_last_term = entries.back().term();
      // Conflicting suffix: drop old entries past the new last one.
      for (uint64_t i = new_last + 1; i <= last_index_; i++) batch.Delete(keys::log_key(i));
    }
  }
  if (hs != nullptr) batch.Put(keys::kHardState, hs->SerializeAsString());
  Status s = db_->write(&batch, sync);
  if (!s) return s;
  if (hs != nullptr) hard_state_ = *hs;
  last_index_ = new_last;
  last_term_ = new_last_term;
  cache_saved(entries);
  return {};
}

const raftpb::Entry* RaftLog::cached(uint64_t i) const {
  if (cache_.empty() || i < cache_.front().index() || i > cache_.back().index()) return nullptr;
  return &cache_[i - cache_.front().index()];
}

void RaftLog::cache_saved(const std::vector<raftpb::Entry>& entries) {
  if (entries.empty() || entries.back().index() <= log_start_.index()) return;
  const uint64_t first = std::max(entries.front().index(), log_start_.index() + 1);
  // A conflicting suffix replaced what the cache holds from `first` on.
  while (!cache_.empty() && cache_.back().index() >= first) {
    cache_bytes_ -= cache_.back().data().size();
    cache_.pop_back();
  }
  if (!cache_.empty() && cache_.back().index() + 1 != first) {
    cache_.clear();
    cache_bytes_ = 0;
  }
  for (const auto& e : entries) {
    if (e.index() < first) continue;
    cache_.push_back(e);
    cache_bytes_ += e.data().size();
  }
  while (!cache_.empty() && (cache_.size() > cache_limit_ || cache_bytes_ > kCacheBytes)) {
    cache_bytes_ -= cache_.front().data().size();
    cache_.pop_front();
  }
}

raft::StorageError RaftLog::create_snapshot(uint64_t i, const raftpb::ConfState& cs,
                                            raftpb::Snapshot* out) {
  if (i <= snapshot_.index()) return raft::StorageError::kSnapshotOutOfDate;
  if (i > last_index_ || i + 1 < first_index())
    fatal("RaftLog::create_snapshot: index " + std::to_string(i) + " outside the log");
  uint64_t t = 0;
  raft::StorageError e = term(i, &t);
  if (e != raft::StorageError::kOk) return e;
  raftpb::SnapshotMetadata meta;
  meta.set_index(i);
  meta.set_term(t);
  *meta.mutable_conf_state() = cs;
  leveldb::WriteBatch batch;
  batch.Put(keys::kSnapshot, meta.SerializeAsString());
  if (!db_->write(&batch, true)) return raft::StorageError::kIoError;
  snapshot_ = meta;
  if (out != nullptr) snapshot(out);
  return raft::StorageError::kOk;
}

raft::StorageError RaftLog::compact(uint64_t compact_index) {
  if (compact_index < first_index()) return raft::StorageError::kCompacted;
  if (compact_index > last_index_ || compact_index > snapshot_.index())
    fatal("RaftLog::compact: index " + std::to_string(compact_index) +
          " beyond the last entry or the snapshot");
  uint64_t t = 0;
  raft::StorageError e = term(compact_index, &t);
  if (e != raft::StorageError::kOk) return e;
  raftpb::Entry start;
  start.set_index(compact_index);
  start.set_term(t);
  leveldb::WriteBatch batch;
  batch.Put(keys::kLogStart, start.SerializeAsString());
  for (uint64_t i = first_index(); i <= compact_index; i++) batch.Delete(keys::log_key(i));
  // Not synced: losing a compaction only keeps entries longer.
  if (!db_->write(&batch, false)) return raft::StorageError::kIoError;
  log_start_ = start;
  while (!cache_.empty() && cache_.front().index() <= compact_index) {
    cache_bytes_ -= cache_.front().data().size();
    cache_.pop_front();
  }
  return raft::StorageError::kOk;
}

void RaftLog::reset_to_snapshot(const raftpb::SnapshotMetadata& meta, const raftpb::HardState& hs,
                                leveldb::WriteBatch* batch) {
  raftpb::Entry start;
  start.set_index(meta.index());
  start.set_term(meta.term());
  batch->Put(keys::kLogStart, start.SerializeAsString());
  batch->Put(keys::kSnapshot, meta.SerializeAsString());
  raftpb::HardState h = hs;
  if (h.commit() < meta.index()) h.set_commit(meta.index());
  if (h.term() < meta.term()) h.set_term(meta.term());
  batch->Put(keys::kHardState, h.SerializeAsString());
}

}  // namespace muster::storage
