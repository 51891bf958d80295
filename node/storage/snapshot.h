// State-machine snapshots: SnapshotWriter streams a consistent LevelDB
// snapshot of the state-machine key spaces (db.h) in chunks; the receiver
// feeds them to a SnapshotInstaller, which builds a complete new database in
// `<member>/db.new/` and is swapped in atomically by MemberStorage
// (member_storage.h; Database::open finishes an interrupted swap).
//
// Stream format: SnapshotChunk messages (kv.proto), each holding consecutive
// key/value pairs in key order; the last one has `last` set, the number of
// pairs in the stream and a checksum over all of them, which the installer
// verifies before anything is swapped in.  The Raft side of the database
// (log, hard state, snapshot metadata) is never streamed: the installer
// writes it fresh from the snapshot's metadata and the receiver's hard state.
//
// Threads: a writer or installer is used by one thread at a time; a writer
// may run concurrently with applies (it reads a LevelDB snapshot).  A writer
// may outlive its database: when the database is closed (a snapshot install
// replaced it) the writer's next() fails with kUnavailable.
#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>

#include "node/raft/raft.pb.h"
#include "node/storage/db.h"
#include "node/storage/pb.h"
#include "node/storage/status.h"

namespace muster::storage {

// FNV-1a 64 over length-prefixed keys and values, chained across pairs.
uint64_t snapshot_checksum(uint64_t h, std::string_view key, std::string_view value);
inline constexpr uint64_t kSnapshotChecksumSeed = 0xcbf29ce484222325ULL;

class SnapshotWriter {
 public:
  // Pins a LevelDB snapshot of db now.  REQUIRES: db is open during the call.
  // `pin`, when held, is released with the writer (MemberStorage's
  // pinned_snapshot_writer keeps an install from swapping db meanwhile).
  explicit SnapshotWriter(Database* db, size_t chunk_bytes = 1 << 20,
                          std::shared_lock<std::shared_mutex> pin = {});
  ~SnapshotWriter();
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;

  // The applied index / revision the snapshot contains.
  uint64_t applied_index() const { return applied_.index(); }
  const pb::AppliedRecord& applied() const { return applied_; }

  // Fills *chunk with the next chunk.  Returns false once the last chunk has
  // been produced (and then leaves *chunk empty), or on error (see status()).
  bool next(pb::SnapshotChunk* chunk);
  const Status& status() const { return status_; }

 private:
  friend class Database;
  // Releases the LevelDB snapshot and iterator and fails the stream: the
  // database is closing.  REQUIRES: writers_->mu held.
  void release_locked();

  // Declared first, so released last (after the LevelDB snapshot).
  std::shared_lock<std::shared_mutex> pin_;
  std::shared_ptr<Database::Writers> writers_;
  Database* db_;  // nullptr once released
  const leveldb::Snapshot* snap_;
  std::unique_ptr<leveldb::Iterator> it_;
  size_t chunk_bytes_;
  pb::AppliedRecord applied_;
  uint64_t pairs_ = 0;
  uint64_t checksum_ = kSnapshotChecksumSeed;
  bool done_ = false;
  Status status_;
};

class SnapshotInstaller {
 public:
  // Creates an empty database at `<member_dir>/db.new` (discarding a stale one).
  // One installer at a time per member: a second begin() fails (kUnavailable)
  // while the first is alive, without touching the first one's db.new.
  static Status begin(const std::string& member_dir, const Database::Options& options,
                      std::unique_ptr<SnapshotInstaller>* out);
  ~SnapshotInstaller();

  // Writes one chunk.  kDataLoss on a bad chunk (non state-machine key,
  // out-of-order keys, checksum or count mismatch on the last chunk).
  Status add(const pb::SnapshotChunk& chunk);
  bool complete() const { return complete_; }

  // After the last chunk: writes the Raft side (log starting after `meta`,
  // hard state `hs` with commit raised to meta.index) with a synced write and
  // closes the new database.  REQUIRES: complete().
  Status finish(const raftpb::SnapshotMetadata& meta, const raftpb::HardState& hs);
  const std::string& member_dir() const { return member_dir_; }

 private:
  struct PassKey {};

 public:
  SnapshotInstaller(PassKey, std::string member_dir) : member_dir_(std::move(member_dir)) {}

 private:
  std::string member_dir_;
  std::unique_ptr<leveldb::Cache> cache_;
  std::unique_ptr<leveldb::DB> db_;
  uint64_t pairs_ = 0;
  uint64_t checksum_ = kSnapshotChecksumSeed;
  std::string last_key_;
  bool complete_ = false;
  bool finished_ = false;
};

}  // namespace muster::storage
