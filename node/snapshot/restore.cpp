// node/snapshot/restore.cpp: see restore.h.
#include "node/snapshot/restore.h"

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <stdexcept>

#include "base/log.h"
#include "etcdwire/ids.h"
#include "node/bootstrap/identity.h"
#include "node/bootstrap/member_plan.h"
#include "node/config/config.h"
#include "node/server/initial_log.h"
#include "node/storage/member_storage.h"
#include "node/storage/snapshot.h"

namespace muster::snapshot {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail(const std::string& sentence) { throw std::runtime_error(sentence); }

// Removes the directory being built unless disarmed.
class Scratch {
 public:
  explicit Scratch(std::string path) : path_(std::move(path)) {}
  ~Scratch() {
    if (armed_) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  void disarm() { armed_ = false; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool armed_ = true;
};

// The plan of the restored member: --initial-cluster checked with the same
// rules as a new member's (name present, advertise URLs match its entry, no
// duplicate URL), IDs as etcd computes them.
bootstrap::MemberPlan plan(const RestoreOptions& o) {
  config::Config cfg;
  cfg.name = o.name;
  cfg.initial_cluster = o.initial_cluster;
  cfg.initial_cluster_token = o.initial_cluster_token;
  cfg.initial_cluster_state = "new";
  auto advertise = config::parse_url_list(o.initial_advertise_peer_urls);
  if (!advertise.ok()) fail("--initial-advertise-peer-urls: " + advertise.error());
  cfg.initial_advertise_peer_urls = advertise.value();
  auto cluster = config::parse_initial_cluster(o.initial_cluster);
  if (!cluster.ok()) fail("--initial-cluster: " + cluster.error());
  if (auto err = config::verify_bootstrap(cfg, cluster.value()); !err.empty()) fail(err);
  return bootstrap::new_cluster_plan(cfg, cluster.value());
}

// Takes the old cluster's membership out of the installed snapshot state
// and sets the applied index back to 0, keeping the revision and the
// compacted revision (restore.h says why).
storage::Status forget_old_cluster(const std::string& db_path) {
  std::unique_ptr<leveldb::DB> db;
  std::unique_ptr<leveldb::Cache> cache;
  storage::Status s = storage::Database::open_leveldb(db_path, {}, &db, &cache);
  if (!s) return s;
  leveldb::WriteBatch batch;
  std::unique_ptr<leveldb::Iterator> it(db->NewIterator(leveldb::ReadOptions()));
  for (char prefix : {storage::keys::kMember, storage::keys::kRemovedMember})
    for (it->Seek(std::string(1, prefix)); it->Valid() && it->key()[0] == prefix; it->Next())
      batch.Delete(it->key());
  if (!it->status().ok()) return storage::from_leveldb(it->status());
  it.reset();
  batch.Delete(storage::keys::kConfState);
  std::string v;
  pb::AppliedRecord applied;
  leveldb::Status ls = db->Get(leveldb::ReadOptions(), storage::keys::kApplied, &v);
  if (ls.ok() && !applied.ParseFromString(v))
    return {storage::Code::kDataLoss, "the snapshot's applied record does not parse"};
  if (!ls.ok() && !ls.IsNotFound()) return storage::from_leveldb(ls);
  pb::AppliedRecord reset;
  reset.set_revision(applied.revision());
  reset.set_compact_revision(applied.compact_revision());
  batch.Put(storage::keys::kApplied, reset.SerializeAsString());
  leveldb::WriteOptions wo;
  wo.sync = true;
  return storage::from_leveldb(db->Write(wo, &batch));
}

}  // namespace

RestoreResult restore(const RestoreOptions& o) {
  RestoreResult r;
  r.data_dir = o.data_dir.empty() ? o.name + ".etcd" : o.data_dir;
  while (r.data_dir.size() > 1 && r.data_dir.back() == '/') r.data_dir.pop_back();
  const bootstrap::MemberPlan p = plan(o);
  std::error_code ec;
  if (fs::exists(r.data_dir, ec)) fail("data-dir \"" + r.data_dir + "\" exists");
  log::info("snapshot", "restoring snapshot",
            {{"path", o.snapshot_path}, {"data-dir", r.data_dir}});

  // The digest first, before anything is created (read_snapshot_file checks
  // it before its first chunk, but the scratch directory would exist by then).
  storage::SnapshotFileReadOptions ro;
  ro.skip_hash_check = o.skip_hash_check;
  if (storage::Status s = storage::read_snapshot_file(o.snapshot_path, ro, {}, &r.file); !s)
    fail(s.message());

  const fs::path final_path = fs::absolute(r.data_dir);
  const fs::path parent = final_path.parent_path();
  fs::create_directories(parent, ec);
  if (ec) fail("cannot create " + parent.string() + ": " + ec.message());
  Scratch scratch((parent / (final_path.filename().string() + ".restoring")).string());
  fs::remove_all(scratch.path(), ec);
  const std::string member_dir = scratch.path() + "/member";
  fs::create_directories(member_dir, ec);
  if (ec) fail("cannot create " + member_dir + ": " + ec.message());
  fs::permissions(scratch.path(), fs::perms::owner_all, fs::perm_options::replace, ec);
  fs::permissions(member_dir, fs::perms::owner_all, fs::perm_options::replace, ec);

  // The key space: the file's chunks through the same installer a member
  // uses for a snapshot from its leader (every record is checked to load).
  {
    std::unique_ptr<storage::SnapshotInstaller> inst;
    if (storage::Status s = storage::SnapshotInstaller::begin(member_dir, {}, &inst); !s)
      fail("cannot create the database: " + s.message());
    storage::Status s = storage::read_snapshot_file(
        o.snapshot_path, ro, [&inst](const pb::SnapshotChunk& c) { return inst->add(c); }, &r.file);
    if (!s) fail(s.message());
    if (!inst->complete()) fail("snapshot " + o.snapshot_path + " ends before its last chunk");
    if (s = inst->finish(raftpb::SnapshotMetadata(), raftpb::HardState()); !s)
      fail("cannot write the database: " + s.message());
  }
  const std::string fresh = storage::Database::new_path(member_dir);
  if (storage::Status s = forget_old_cluster(fresh); !s)
    fail("cannot write the database: " + s.message());
  fs::rename(fresh, storage::Database::live_path(member_dir), ec);
  if (ec) fail("cannot move the database into place: " + ec.message());

  // The new membership: the log a new member of --initial-cluster writes.
  {
    std::unique_ptr<storage::MemberStorage> ms;
    if (storage::Status s = storage::MemberStorage::open(scratch.path(), {}, &ms); !s)
      fail("cannot open the restored database: " + s.message());
    server::write_bootstrap_log(ms->log(), p.initial);
    r.revision = ms->kv().revision();
    r.keys = ms->kv().key_count();
    r.leases = static_cast<size_t>(ms->kv().leases().leases_size());
  }
  bootstrap::write_identity(scratch.path(), p.me);
  r.member_id = p.me.member_id;
  r.cluster_id = p.me.cluster_id;
  for (const auto& m : p.initial) r.members.push_back(m.name + "=" + etcdwire::id_to_hex(m.id));

  storage::sync_dir(member_dir);
  storage::sync_dir(scratch.path());
  fs::rename(scratch.path(), final_path, ec);
  if (ec) fail("cannot move " + scratch.path() + " to " + r.data_dir + ": " + ec.message());
  scratch.disarm();
  storage::sync_dir(parent.string());
  log::info("snapshot", "restored snapshot",
            {{"path", o.snapshot_path},
             {"data-dir", r.data_dir},
             {"member-id", etcdwire::id_to_hex(r.member_id)},
             {"cluster-id", etcdwire::id_to_hex(r.cluster_id)},
             {"revision", r.revision},
             {"keys", r.keys},
             {"leases", r.leases}});
  return r;
}

}  // namespace muster::snapshot
