#include "node/storage/db.h"

#include <fcntl.h>
#include <leveldb/cache.h>
#include <leveldb/filter_policy.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "node/storage/snapshot.h"

namespace muster::storage {

namespace fs = std::filesystem;

void sync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

std::string Status::to_string() const {
  if (is_ok()) return "OK";
  return "code " + std::to_string(static_cast<int>(code_)) + ": " + message_;
}

void fatal(const std::string& what) {
  std::fprintf(stderr, "muster storage: fatal: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

namespace keys {

void put_be64(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}

uint64_t get_be64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string with_id(char prefix, uint64_t id) {
  std::string k(1, prefix);
  put_be64(&k, id);
  return k;
}

std::string log_key(uint64_t index) { return with_id(kLog, index); }

std::string revision_key(int64_t main, int64_t sub) {
  char k[17];
  revision_key(main, sub, k);
  return std::string(k, sizeof k);
}

void revision_key(int64_t main, int64_t sub, char out[17]) {
  out[0] = kRevision;
  for (int i = 0; i < 8; ++i) {
    out[1 + i] = static_cast<char>(static_cast<uint64_t>(main) >> (56 - 8 * i));
    out[9 + i] = static_cast<char>(static_cast<uint64_t>(sub) >> (56 - 8 * i));
  }
}

std::string alarm_key(uint64_t member_id, int type) {
  std::string k = with_id(kAlarm, member_id);
  const auto t = static_cast<uint32_t>(type);
  for (int shift = 24; shift >= 0; shift -= 8) k.push_back(static_cast<char>((t >> shift) & 0xff));
  return k;
}

bool is_state_machine_key(std::string_view key) {
  if (key.empty()) return false;
  switch (key[0]) {
    case kRevision:
    case kLease:
    case kMember:
    case kRemovedMember:
    case kUser:
    case kRole:
    case kAlarm:
      return true;
    case 'm':
      return key == kApplied || key == kConfState || key == kAuth;
    default:
      return false;
  }
}

}  // namespace keys

Status from_leveldb(const leveldb::Status& s) {
  if (s.ok()) return {};
  if (s.IsNotFound()) return {Code::kNotFound, ""};
  if (s.IsCorruption()) return {Code::kDataLoss, "leveldb: " + s.ToString()};
  return {Code::kInternal, "leveldb: " + s.ToString()};
}

std::string Database::live_path(const std::string& member_dir) { return member_dir + "/db"; }
std::string Database::new_path(const std::string& member_dir) { return member_dir + "/db.new"; }
std::string Database::old_path(const std::string& member_dir) { return member_dir + "/db.old"; }

Status Database::open_leveldb(const std::string& path, const Options& options,
                              std::unique_ptr<leveldb::DB>* out,
                              std::unique_ptr<leveldb::Cache>* cache) {
  leveldb::Options lo;
  lo.create_if_missing = true;
  lo.env = options.env ? options.env : leveldb::Env::Default();
  lo.write_buffer_size = options.write_buffer_bytes;
  cache->reset(leveldb::NewLRUCache(options.block_cache_bytes));
  lo.block_cache = cache->get();
  lo.paranoid_checks = true;
  leveldb::DB* raw = nullptr;
  leveldb::Status s = leveldb::DB::Open(lo, path, &raw);
  if (!s.ok()) return from_leveldb(s);
  out->reset(raw);
  return {};
}

Status Database::open(const std::string& member_dir, const Options& options,
                      std::unique_ptr<Database>* out) {
  std::error_code ec;
  fs::create_directories(member_dir, ec);
  if (ec) return {Code::kInternal, "cannot create " + member_dir + ": " + ec.message()};
  ::chmod(member_dir.c_str(), 0700);

  // Finish or discard an interrupted snapshot install.  The installer writes
  // db.new/ completely (last write synced), then renames db/ -> db.old/,
  // then db.new/ -> db/, then removes db.old/.  So:
  //   db/ missing, db.new/ present  -> the install was complete: rename it in;
  //   db/ and db.new/ missing, db.old/ present -> the install lost its new
  //                                     database after moving the old one
  //                                     aside: put the old one back (never
  //                                     start from an empty database here);
  //   db/ and db.new/ present       -> the install never finished: discard it;
  //   db.old/ present (after above) -> leftover of a completed install.
  const std::string live = live_path(member_dir), fresh = new_path(member_dir),
                    old = old_path(member_dir);
  if (!fs::exists(live) && fs::exists(fresh)) {
    fs::rename(fresh, live, ec);
    if (ec) return {Code::kInternal, "cannot finish snapshot install: " + ec.message()};
    sync_dir(member_dir);
  } else if (!fs::exists(live) && fs::exists(old)) {
    fs::rename(old, live, ec);
    if (ec) return {Code::kInternal, "cannot restore the database: " + ec.message()};
    sync_dir(member_dir);
  }
  if (fs::exists(fresh)) fs::remove_all(fresh, ec);
  if (fs::exists(old)) fs::remove_all(old, ec);

  auto d = std::make_unique<Database>(PassKey{});
  d->member_dir_ = member_dir;
  d->options_ = options;
  Status s = open_leveldb(live, options, &d->db_, &d->cache_);
  if (!s) return s;
  ::chmod(live.c_str(), 0700);
  *out = std::move(d);
  return {};
}

Database::~Database() {
  {
    // End every snapshot stream still reading this database: LevelDB
    // snapshots and iterators must go before the DB does.
    std::lock_guard lock(writers_->mu);
    for (SnapshotWriter* w : writers_->open) w->release_locked();
    writers_->open.clear();
  }
  db_.reset();  // the DB must go before the cache it uses
  cache_.reset();
}

Status Database::write(leveldb::WriteBatch* batch, bool sync) {
  leveldb::WriteOptions wo;
  wo.sync = sync;
  return from_leveldb(db_->Write(wo, batch));
}

Status Database::get(std::string_view key, std::string* value,
                     const leveldb::Snapshot* snapshot) const {
  leveldb::ReadOptions ro;
  ro.snapshot = snapshot;
  return from_leveldb(db_->Get(ro, leveldb::Slice(key.data(), key.size()), value));
}

}  // namespace muster::storage
