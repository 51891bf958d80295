// node/snapshot/restore.h: `muster snapshot restore`: a new member's data
// dir built from a snapshot file (node/storage/snapshot_file.h), as etcd's
// `etcdctl snapshot restore` (etcdutl in 3.5) builds one from a bolt file.
//
// What the data dir holds afterwards:
//   - the snapshot's key space as it was: every MVCC revision (history,
//     tombstones), the current and compacted revision, the leases;
//   - none of the old cluster's membership: its members, removed members
//     and configuration are dropped;
//   - the Raft log a new member of --initial-cluster writes
//     (server::write_bootstrap_log: one committed ConfChangeAddNode per
//     member at term 1), with the applied index set back to 0, so applying
//     it on first start builds the new membership exactly as a new cluster
//     does while the key space and revision stay the snapshot's;
//   - the identity (name, member ID, cluster ID computed from the token and
//     the members as etcd does), so `muster` restarts from it and ignores
//     its bootstrap flags.
// Every member restored from the same file with the same --initial-cluster
// and token therefore holds the same state and the same log.
//
// Nothing is written unless the whole file checks out: the digest is
// verified first, the data dir is built beside its final place
// (`<data-dir>.restoring`) and renamed into place at the end; an existing
// data dir is refused.
//
// Blocking; one call at a time per data dir.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "node/storage/snapshot_file.h"

namespace muster::snapshot {

struct RestoreOptions {
  std::string snapshot_path;
  // etcd's flags and defaults.
  std::string name = "default";
  std::string initial_cluster = "default=http://localhost:2380";
  std::string initial_cluster_token = "etcd-cluster";
  std::string initial_advertise_peer_urls = "http://localhost:2380";
  std::string data_dir;  // "<name>.etcd" when empty
  bool skip_hash_check = false;
};

struct RestoreResult {
  std::string data_dir;
  uint64_t member_id = 0;
  uint64_t cluster_id = 0;
  int64_t revision = 0;
  size_t keys = 0;  // live keys
  size_t leases = 0;
  std::vector<std::string> members;  // "name=<id hex>"
  storage::SnapshotFileInfo file;
};

// Throws std::runtime_error with the sentence to print (a bad flag, an
// existing data dir, a damaged file, an I/O error); nothing is left behind.
RestoreResult restore(const RestoreOptions& options);

}  // namespace muster::snapshot
