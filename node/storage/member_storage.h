// MemberStorage: everything a member keeps on disk, in one place — the
// LevelDB under `<data-dir>/member/db` (db.h), the Raft log on it
// (raft_log.h) and the key-value state machine (kv_store.h) — plus the
// snapshot install that replaces all of it atomically.
//
// Who calls what: the server opens one MemberStorage at start, hands log() to
// the Raft core, applies committed entries to kv(), streams snapshots with
// snapshot_writer() and installs received ones with install().
//
// Threads: one thread (the Raft driver) calls install(), log() and db().
// kv(), snapshot_writer(), pinned_snapshot_writer() and defragment() may be
// called from any thread, also while an install runs: the KvStore object
// lives as long as this object (an install swaps the database under it,
// kv_store.h reopen()), a pinned writer makes the install wait, and an
// unpinned snapshot stream still open on the old database ends with an error.
// install() replaces log(): a RaftLog reference obtained before it is
// invalid after.
#pragma once

#include <algorithm>
#include <memory>
#include <shared_mutex>
#include <string>

#include "node/storage/db.h"
#include "node/storage/kv_store.h"
#include "node/storage/raft_log.h"
#include "node/storage/snapshot.h"

namespace muster::storage {

class MemberStorage {
 public:
  struct Options {
    Database::Options db;
    KvStore::Options kv;
  };

  // Opens `<data_dir>/member` (creating it, mode 0700).
  static Status open(const std::string& data_dir, Options options,
                     std::unique_ptr<MemberStorage>* out);

  RaftLog& log() { return *log_; }
  KvStore& kv() { return *kv_; }

  // The applied index to start the Raft core with: the state machine's, but
  // never past the log's last index.  An install streams the sender's live
  // state, newer than the snapshot's index where the new log starts; until
  // the log catches up (the entries in between arrive again and apply skips
  // them) the state is ahead of the log, and the core refuses an applied
  // index it has no entry for.
  uint64_t raft_applied_index() {
    return std::min<uint64_t>(kv_->applied_index(), log_->last_index());
  }
  Database& db() { return *db_; }
  const std::string& member_dir() const { return member_dir_; }

  // Any thread (see above).
  std::unique_ptr<SnapshotWriter> snapshot_writer(size_t chunk_bytes = 1 << 20) {
    std::shared_lock lock(swap_mu_);
    return std::make_unique<SnapshotWriter>(db_.get(), chunk_bytes);
  }
  // LevelDB's whole-range compaction (what etcd's defragment achieves for
  // bolt).  Any thread; an install waits for it.
  Status defragment();
  // The same, for a reader on another thread than the one that installs
  // (Maintenance.Snapshot): while it lives, install() waits before it swaps
  // the database, so the writer never reads a closed one.  The wait lasts
  // as long as the holder keeps it: hold it only to read, not to send.
  std::unique_ptr<SnapshotWriter> pinned_snapshot_writer(size_t chunk_bytes = 1 << 20) {
    std::shared_lock pin(swap_mu_);
    return std::make_unique<SnapshotWriter>(db_.get(), chunk_bytes, std::move(pin));
  }
  Status begin_install(std::unique_ptr<SnapshotInstaller>* out) {
    return SnapshotInstaller::begin(member_dir_, options_.db, out);
  }
  // Finishes a complete installer (all chunks added) with the snapshot's
  // metadata, keeping this member's hard state, and swaps the new database
  // in: db/ -> db.old/, db.new/ -> db/, then db.old/ is removed.  A crash at
  // any point leaves either the old or the new state (Database::open).
  // A failure after the swap started (reopening the new database) leaves
  // this object without a database: the caller must stop the member.
  Status install(std::unique_ptr<SnapshotInstaller> installer,
                 const raftpb::SnapshotMetadata& meta);

 private:
  struct PassKey {};

 public:
  MemberStorage(PassKey, std::string member_dir, Options options)
      : member_dir_(std::move(member_dir)), options_(std::move(options)) {}

 private:
  Status open_all();

  std::string member_dir_;
  Options options_;
  // Held shared by callers on other threads that use db_ (snapshot_writer
  // while it opens, defragment while it runs, a pinned snapshot writer for
  // its whole life) and exclusively by install() while it replaces db_.
  std::shared_mutex swap_mu_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<RaftLog> log_;
  std::unique_ptr<KvStore> kv_;
};

}  // namespace muster::storage
