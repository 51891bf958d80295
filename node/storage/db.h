// Database: the one LevelDB a member keeps under `<data-dir>/member/db`, and
// the layout of every key in it.  RaftLog (raft_log.h) and KvStore
// (kv_store.h) share one Database, so that a Raft-log append and a
// state-machine apply are each one atomic WriteBatch in one LevelDB log.
//
// On-disk key layout (also in docs/storage.md).  Integers in keys are
// big-endian fixed 64-bit so that LevelDB's byte order is numeric order.
//
//   Raft side (never part of a state-machine snapshot):
//     'l' <index:8>          raftpb.Entry                 the log entry at index
//     "mhardstate"           raftpb.HardState             term, vote, commit
//     "mlogstart"            raftpb.Entry (no data)       index/term of the entry just
//                                                          before the first entry
//                                                          (the compaction point)
//     "msnapshot"            raftpb.SnapshotMetadata      latest Raft snapshot metadata
//   State machine (streamed in snapshots):
//     "mapplied"             AppliedRecord                applied Raft index/term,
//                                                          current and compacted revision
//     "mconfstate"           raftpb.ConfState             configuration as of "mapplied"
//     'r' <main:8> <sub:8>   KeyValue                     one MVCC revision; version == 0
//                                                          marks a tombstone (deletion)
//     'L' <lease id:8>       LeaseRecord                  a granted lease
//     'M' <member id:8>      Member                       a cluster member
//     'X' <member id:8>      (empty)                      a permanently removed member
//     "mauth"                AuthRecord                   auth enabled flag and revision
//     'U' <user name>        authpb.User                  an auth user (bcrypt hash)
//     'R' <role name>        authpb.Role                  an auth role and its permissions
//     'A' <member id:8> <type:4>  etcdserverpb.AlarmMember  a raised alarm (etcd's alarm
//                                                          bucket: CORRUPT, NOSPACE)
//
// Everything a state-machine apply changes, including "mapplied", is written
// in one WriteBatch, so after a crash the state and the applied index agree
// and the caller replays the log from applied+1.
//
// Directory layout under `<data-dir>/member/`:
//     db/        the live database
//     db.new/    a snapshot being installed (complete once db.old/ exists
//                or db/ is missing); see Database::open's recovery rules
//     db.old/    the database a completed install replaced, being removed
//
// Thread safety: leveldb::DB is thread-safe; Database adds no state after
// open except the set of SnapshotWriters open on it, which ~Database ends
// (their next() then fails), so that a snapshot install may close a database
// while a snapshot of it is still being streamed.
#pragma once

#include <leveldb/cache.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/write_batch.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "node/storage/status.h"

namespace muster::storage {

namespace keys {
inline constexpr char kLog = 'l';
inline constexpr char kRevision = 'r';
inline constexpr char kLease = 'L';
inline constexpr char kMember = 'M';
inline constexpr char kRemovedMember = 'X';
inline constexpr char kUser = 'U';
inline constexpr char kRole = 'R';
inline constexpr char kAlarm = 'A';
inline constexpr const char* kAuth = "mauth";
inline constexpr const char* kHardState = "mhardstate";
inline constexpr const char* kLogStart = "mlogstart";
inline constexpr const char* kSnapshot = "msnapshot";
inline constexpr const char* kApplied = "mapplied";
inline constexpr const char* kConfState = "mconfstate";

void put_be64(std::string* out, uint64_t v);
uint64_t get_be64(const char* p);
// prefix byte + big-endian id
std::string with_id(char prefix, uint64_t id);
std::string log_key(uint64_t index);
std::string revision_key(int64_t main, int64_t sub);
// The same 17 bytes into out (no allocation).
void revision_key(int64_t main, int64_t sub, char out[17]);
// kAlarm + big-endian member id + big-endian 32-bit alarm type
std::string alarm_key(uint64_t member_id, int type);
// True for keys that belong to the state machine (and so to its snapshots).
bool is_state_machine_key(std::string_view key);
}  // namespace keys

class SnapshotWriter;

class Database {
 public:
  struct Options {
    // nullptr = leveldb::Env::Default().  Tests inject fault-injecting envs.
    leveldb::Env* env = nullptr;
    // LevelDB block cache and write buffer; defaults suit a small member.
    size_t block_cache_bytes = 32 << 20;
    size_t write_buffer_bytes = 16 << 20;
  };

  // Opens (creating if needed, mode 0700) `<member_dir>/db`, first finishing
  // or discarding any interrupted snapshot install (see the layout above).
  static Status open(const std::string& member_dir, const Options& options,
                     std::unique_ptr<Database>* out);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  leveldb::DB* db() const { return db_.get(); }
  const std::string& member_dir() const { return member_dir_; }
  const Options& options() const { return options_; }

  Status write(leveldb::WriteBatch* batch, bool sync);
  // Returns kNotFound (with empty message) if the key is absent.
  Status get(std::string_view key, std::string* value,
             const leveldb::Snapshot* snapshot = nullptr) const;

  // Paths used by the snapshot install protocol.
  static std::string live_path(const std::string& member_dir);
  static std::string new_path(const std::string& member_dir);
  static std::string old_path(const std::string& member_dir);

  // Opens a LevelDB at an arbitrary path with this module's settings.
  static Status open_leveldb(const std::string& path, const Options& options,
                             std::unique_ptr<leveldb::DB>* out,
                             std::unique_ptr<leveldb::Cache>* cache);

 private:
  struct PassKey {};

 public:
  explicit Database(PassKey) {}

 private:
  friend class SnapshotWriter;
  // The writers streaming a snapshot of this database.  Shared with them, so
  // that a writer that outlives the database still finds the lock.
  struct Writers {
    std::mutex mu;
    std::set<SnapshotWriter*> open;  // guarded by mu
  };

  std::shared_ptr<Writers> writers_ = std::make_shared<Writers>();
  std::string member_dir_;
  Options options_;
  std::unique_ptr<leveldb::Cache> cache_;
  std::unique_ptr<leveldb::DB> db_;
};

Status from_leveldb(const leveldb::Status& s);

// fsync of a directory, so that renames inside it are durable (best effort).
void sync_dir(const std::string& dir);

}  // namespace muster::storage
