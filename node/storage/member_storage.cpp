#include "node/storage/member_storage.h"

#include <filesystem>

namespace muster::storage {

namespace fs = std::filesystem;

Status MemberStorage::open(const std::string& data_dir, Options options,
                           std::unique_ptr<MemberStorage>* out) {
  auto m = std::make_unique<MemberStorage>(PassKey{}, data_dir + "/member", std::move(options));
  Status s = m->open_all();
  if (!s) return s;
  *out = std::move(m);
  return {};
}

Status MemberStorage::open_all() {
  Status s = Database::open(member_dir_, options_.db, &db_);
  if (!s) return s;
  s = RaftLog::open(db_.get(), &log_);
  if (!s) return s;
  return KvStore::open(db_.get(), options_.kv, &kv_);
}

Status MemberStorage::install(std::unique_ptr<SnapshotInstaller> installer,
                              const raftpb::SnapshotMetadata& meta) {
  if (!installer->complete()) return {Code::kFailedPrecondition, "snapshot is incomplete"};
  // No pinned writer reads the old database, no defragment runs on it, no
  // snapshot_writer() is opening on it.
  std::unique_lock swap(swap_mu_);
  Status s = installer->finish(meta, log_->hard_state());
  if (!s) return s;
  installer.reset();
  // The KvStore object stays (readers on other threads hold it); it is
  // locked while its database is swapped underneath.
  return kv_->reopen([this](Database** db) -> Status {
    log_.reset();
    db_.reset();
    const std::string live = Database::live_path(member_dir_),
                      fresh = Database::new_path(member_dir_),
                      old = Database::old_path(member_dir_);
    std::error_code ec;
    fs::remove_all(old, ec);
    fs::rename(live, old, ec);
    if (ec) fatal("snapshot install: cannot move the old database aside: " + ec.message());
    fs::rename(fresh, live, ec);
    if (ec) fatal("snapshot install: cannot move the new database in: " + ec.message());
    sync_dir(member_dir_);
    fs::remove_all(old, ec);
    Status st = Database::open(member_dir_, options_.db, &db_);
    if (!st) return st;
    st = RaftLog::open(db_.get(), &log_);
    if (!st) return st;
    *db = db_.get();
    return {};
  });
}

Status MemberStorage::defragment() {
  std::shared_lock lock(swap_mu_);
  db_->db()->CompactRange(nullptr, nullptr);
  return {};
}

}  // namespace muster::storage
