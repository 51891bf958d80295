// node/bootstrap/member_plan.h: how a `muster` process starts — decided
// once, before anything listens, from its data dir and bootstrap flags.
//
//   - a data dir with an identity (identity.h): restart from it; every
//     bootstrap flag is ignored, as in etcd;
//   - --initial-cluster-state new: a new cluster from --initial-cluster, a
//     --discovery URL or --discovery-srv records (initial_cluster.h): the
//     initial members and their IDs, computed as etcd computes them.  As
//     etcd does first (isMemberBootstrapped), the other initial members are
//     asked for GET <peer-url>/members: a running cluster that lists this
//     member's ID as started means its data is lost, and it stops ("member
//     <id> has already been bootstrapped");
//   - --discovery-srv with --discovery-replace-dead: when that running
//     cluster does not count this member as a waiting initial member, it
//     asks for a dead member's seat (replacement.h) and joins, or falls back
//     as --discovery-fallback says;
//   - --initial-cluster-state existing: join a running cluster, asking the
//     members listed in --initial-cluster for GET <peer-url>/members
//     (peer_members.h): the member whose peer URLs are ours (added
//     beforehand with "member add") gives this member its ID.  Unlike etcd,
//     --initial-cluster need not list every member: it has to reach one;
//   - discovery says the cluster is full: become a proxy of it
//     (--discovery-fallback=proxy), or stop (exit).
//
// Blocking (discovery, DNS, peer requests); logs progress.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "net/tls.h"
#include "node/bootstrap/identity.h"
#include "node/bootstrap/peer_members.h"
#include "node/config/config.h"

namespace muster::bootstrap {

// An initial member of a new cluster.
struct InitialMember {
  uint64_t id = 0;
  std::string name;
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;  // known for the local member only
};

struct MemberPlan {
  enum class Kind {
    kRestart,  // `me` from the data dir
    kNew,      // `me` and `initial`: write the bootstrap log
    kJoin,     // `me` and `members`: the running cluster's members
    kProxy,    // `proxy_peer_urls`: the full cluster to forward to
  };
  Kind kind = Kind::kRestart;
  Identity me;
  std::vector<InitialMember> initial;
  std::vector<MemberInfo> members;
  std::vector<std::string> proxy_peer_urls;
  // With https SRV records the peers' certificates carry the SRV domain, not
  // the host in the URL: the name the peer dialer verifies.
  std::optional<std::string> peer_tls_server_name;
  // A replacement (replacement.h) joins as a learner: it asks to be promoted
  // once caught up, then releases the cluster's replacement lock by revoking
  // `replacement_lock_lease` (0: nothing to release).
  bool promote_when_caught_up = false;
  int64_t replacement_lock_lease = 0;
};

// The plan of a member of a new cluster made of `cluster` (a parsed
// --initial-cluster), from cfg's name, token and client URLs: every member's
// ID and the cluster ID, computed as etcd computes them.  Also what `muster
// snapshot restore` gives a restored member.  Throws std::runtime_error
// when the name is not in the cluster or two members get one ID.
MemberPlan new_cluster_plan(const config::Config& cfg, const config::UrlsMap& cluster);

// Decides how to start.  `peer_tls`: how to reach peers' https URLs (for
// --initial-cluster-state existing).  Throws std::runtime_error with the
// sentence to exit with (a bad --initial-cluster, a full cluster with
// --discovery-fallback=exit, peers that cannot be reached, ...).
// REQUIRES: `cfg` passed config validation.
MemberPlan plan_member(const config::Config& cfg, const net::TlsOptions& peer_tls);

}  // namespace muster::bootstrap
