// node/server/initial_log.h: what a member's Raft log starts with.
//
// A new cluster's members all write the same first entries, as etcd does:
// one ConfChangeAddNode per initial member at term 1, committed, each
// carrying the member record.  Applying them builds the configuration and
// the member list; nothing special-cases the first start.  Every member
// must write byte-identical entries (same index and term means same entry),
// so the records carry no client URLs: each member publishes its own later
// (leader_chores.h).
//
// --force-new-cluster rewrites an existing member's log so that applying it
// leaves this member alone in the configuration.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "node/bootstrap/member_plan.h"
#include "node/storage/member_storage.h"

namespace muster::server {

using InitialMember = bootstrap::InitialMember;

// Writes the bootstrap entries (sorted by member ID) and a hard state that
// commits them.  Throws std::runtime_error when the log cannot be written.
// REQUIRES: the log is empty.
void write_bootstrap_log(storage::RaftLog& log, const std::vector<InitialMember>& initial);

// etcd's --force-new-cluster: keeps the data, drops uncommitted entries and
// appends one committed ConfChangeRemoveNode per other member.  Throws
// std::runtime_error when the log cannot be written.
void force_new_cluster(storage::MemberStorage& storage, uint64_t member_id);

}  // namespace muster::server
