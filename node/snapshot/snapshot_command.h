// node/snapshot/snapshot_command.h: `muster snapshot restore|status`, the
// offline half of etcd's snapshot commands (etcdctl 3.4 had them; etcd 3.5
// moved them to etcdutl, because they read and write files, not a cluster).
// They live in `muster` because they need the member's storage code;
// `etcdctl snapshot save` and `musterctl snapshot save` take the file from a
// running member.  docs/operations.md has the disaster-recovery steps.
//
//   muster snapshot restore <file> [--name N] [--data-dir D]
//       [--initial-cluster C] [--initial-cluster-token T]
//       [--initial-advertise-peer-urls U] [--skip-hash-check]
//   muster snapshot status <file> [-w simple|table|json]
//
// Exit status as etcdctl's: 0, 1 on an error, 128 on bad arguments.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace muster::snapshot {

// `args` are the words after "snapshot".
int run_snapshot_command(const std::vector<std::string>& args, std::ostream& out,
                         std::ostream& err);

}  // namespace muster::snapshot
