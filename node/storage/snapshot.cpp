#include "node/storage/snapshot.h"

#include <leveldb/cache.h>
#include <leveldb/iterator.h>

#include <filesystem>
#include <mutex>
#include <set>
#include <string>

#include "node/storage/raft_log.h"

namespace muster::storage {

namespace fs = std::filesystem;

uint64_t snapshot_checksum(uint64_t h, std::string_view key, std::string_view value) {
  auto mix = [&h](std::string_view s) {
    uint64_t n = s.size();
    for (int i = 0; i < 8; i++) {
      h ^= (n >> (8 * i)) & 0xff;
      h *= 0x100000001b3ULL;
    }
    for (unsigned char c : s) {
      h ^= c;
      h *= 0x100000001b3ULL;
    }
  };
  mix(key);
  mix(value);
  return h;
}

SnapshotWriter::SnapshotWriter(Database* db, size_t chunk_bytes,
                               std::shared_lock<std::shared_mutex> pin)
    : pin_(std::move(pin)),
      writers_(db->writers_),
      db_(db),
      snap_(db->db()->GetSnapshot()),
      chunk_bytes_(chunk_bytes) {
  std::string v;
  Status s = db_->get(keys::kApplied, &v, snap_);
  if (s) {
    if (!applied_.ParseFromString(v)) fatal("unparsable applied record");
  } else if (s.code() != Code::kNotFound) {
    status_ = s;
  }
  leveldb::ReadOptions ro;
  ro.snapshot = snap_;
  ro.fill_cache = false;
  it_.reset(db_->db()->NewIterator(ro));
  it_->SeekToFirst();
  std::lock_guard lock(writers_->mu);
  writers_->open.insert(this);
}

SnapshotWriter::~SnapshotWriter() {
  std::lock_guard lock(writers_->mu);
  if (db_ == nullptr) return;  // released when its database closed
  writers_->open.erase(this);
  it_.reset();
  db_->db()->ReleaseSnapshot(snap_);
}

void SnapshotWriter::release_locked() {
  it_.reset();
  db_->db()->ReleaseSnapshot(snap_);
  snap_ = nullptr;
  db_ = nullptr;
  if (status_) status_ = Status(Code::kUnavailable, "snapshot source closed by a snapshot install");
}

bool SnapshotWriter::next(pb::SnapshotChunk* chunk) {
  chunk->Clear();
  // Held while reading, so that the database cannot close under the chunk.
  std::lock_guard lock(writers_->mu);
  if (done_ || !status_) return false;
  size_t bytes = 0;
  while (it_->Valid() && bytes < chunk_bytes_) {
    const leveldb::Slice k = it_->key();
    if (!keys::is_state_machine_key(std::string_view(k.data(), k.size()))) {
      if (k[0] == keys::kLog) {
        it_->Seek(std::string(1, keys::kLog + 1));  // skip the whole Raft log
      } else {
        it_->Next();
      }
      continue;
    }
    chunk->add_keys(k.data(), k.size());
    chunk->add_values(it_->value().data(), it_->value().size());
    checksum_ = snapshot_checksum(checksum_, std::string_view(k.data(), k.size()),
                                  std::string_view(it_->value().data(), it_->value().size()));
    pairs_++;
    bytes += k.size() + it_->value().size();
    it_->Next();
  }
  if (!it_->status().ok()) {
    status_ = from_leveldb(it_->status());
    return false;
  }
  if (!it_->Valid()) {
    chunk->set_last(true);
    chunk->set_total_pairs(pairs_);
    chunk->set_checksum(checksum_);
    done_ = true;
  }
  return true;
}

namespace {

// The member directories with a live installer in this process.  db.new is
// the installer's: a second begin() must fail before it touches the
// directory (clearing it, or removing it on the way out), not after, when
// LevelDB's lock refuses it.
std::mutex installers_mu;
std::set<std::string>& installers() {
  static auto* s = new std::set<std::string>;
  return *s;
}

}  // namespace

Status SnapshotInstaller::begin(const std::string& member_dir, const Database::Options& options,
                                std::unique_ptr<SnapshotInstaller>* out) {
  {
    std::lock_guard lock(installers_mu);
    if (!installers().insert(member_dir).second)
      return {Code::kUnavailable, "a snapshot is already being received into " + member_dir};
  }
  // From here the slot is this installer's; its destructor gives it back.
  auto inst = std::make_unique<SnapshotInstaller>(PassKey{}, member_dir);
  const std::string path = Database::new_path(member_dir);
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return {Code::kInternal, "cannot clear " + path + ": " + ec.message()};
  Status s = Database::open_leveldb(path, options, &inst->db_, &inst->cache_);
  if (!s) return s;
  *out = std::move(inst);
  return {};
}

SnapshotInstaller::~SnapshotInstaller() {
  db_.reset();
  cache_.reset();
  if (!finished_) {
    std::error_code ec;
    fs::remove_all(Database::new_path(member_dir_), ec);
  }
  std::lock_guard lock(installers_mu);
  installers().erase(member_dir_);
}

namespace {

// A record this member could not load later must not get in: a sender bug
// would otherwise turn into a receiver that aborts on every restart.
bool parses(const std::string& k, const std::string& v) {
  switch (k[0]) {
    case keys::kRevision: {
      pb::KeyValue kv;
      return k.size() == 17 && kv.ParseFromString(v) && !kv.key().empty();
    }
    case keys::kLease: {
      pb::LeaseRecord l;
      return k.size() == 9 && l.ParseFromString(v);
    }
    case keys::kMember: {
      pb::Member m;
      return k.size() == 9 && m.ParseFromString(v);
    }
    case keys::kRemovedMember:
      return k.size() == 9;
    default:
      break;
  }
  if (k == keys::kApplied) {
    pb::AppliedRecord a;
    return a.ParseFromString(v);
  }
  raftpb::ConfState cs;
  return cs.ParseFromString(v);  // keys::kConfState, the only other kind
}

}  // namespace

Status SnapshotInstaller::add(const pb::SnapshotChunk& chunk) {
  if (complete_) return {Code::kDataLoss, "snapshot: chunk after the last one"};
  if (chunk.keys_size() != chunk.values_size())
    return {Code::kDataLoss, "snapshot: keys and values differ in number"};
  leveldb::WriteBatch batch;
  for (int i = 0; i < chunk.keys_size(); i++) {
    const std::string& k = chunk.keys(i);
    if (!keys::is_state_machine_key(k)) return {Code::kDataLoss, "snapshot: foreign key"};
    if (!parses(k, chunk.values(i))) return {Code::kDataLoss, "snapshot: unparsable record"};
    if (pairs_ > 0 && k <= last_key_) return {Code::kDataLoss, "snapshot: keys out of order"};
    last_key_ = k;
    batch.Put(k, chunk.values(i));
    checksum_ = snapshot_checksum(checksum_, k, chunk.values(i));
    pairs_++;
  }
  leveldb::WriteOptions wo;  // unsynced: finish() syncs once at the end
  Status s = from_leveldb(db_->Write(wo, &batch));
  if (!s) return s;
  if (chunk.last()) {
    if (chunk.total_pairs() != pairs_ || chunk.checksum() != checksum_)
      return {Code::kDataLoss, "snapshot: checksum or pair count mismatch"};
    complete_ = true;
  }
  return {};
}

Status SnapshotInstaller::finish(const raftpb::SnapshotMetadata& meta,
                                 const raftpb::HardState& hs) {
  if (!complete_) fatal("SnapshotInstaller::finish before the last chunk");
  leveldb::WriteBatch batch;
  RaftLog::reset_to_snapshot(meta, hs, &batch);
  leveldb::WriteOptions wo;
  wo.sync = true;  // LevelDB's log is sequential: this syncs every chunk too
  Status s = from_leveldb(db_->Write(wo, &batch));
  if (!s) return s;
  db_.reset();
  cache_.reset();
  finished_ = true;
  return {};
}

}  // namespace muster::storage
