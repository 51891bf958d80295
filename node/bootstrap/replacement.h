// node/bootstrap/replacement.h: the new node's side of replacing a dead
// member automatically (--discovery-replace-dead; docs/operations.md
// "Replacing a dead member automatically").
//
// Called by plan_member when the flag is set and discovery says the token is
// full, or --discovery-srv records name a running cluster that does not
// count this node (member_plan.h).  Step by step:
//   1. learns the running cluster from the token's members' (or the other
//      SRV targets') peer URLs (GET <peer-url>/members): member IDs, client
//      URLs, the cluster ID;
//   2. finds the leader (GET <client-url>/muster/v1/reachability on each
//      member: the one that says it leads);
//   3. asks it to replace a dead member (POST /muster/v1/replace,
//      node/server/replacement_api.h): the leader takes the cluster-wide
//      lock, judges from its own view who is dead and whether removing it
//      keeps a quorum of healthy voters, removes it and adds this node as a
//      learner;
//   4. with a discovery URL, records this node in the token in the dead
//      member's place (DELETE its registration, PUT ours under our new
//      member ID), so the first `size` registrations name the cluster's
//      members again (SRV records are the operator's to keep);
//   5. returns a join plan: start with `existing`, catch up, and promote
//      itself once caught up (MemberPlan::promote_when_caught_up).
// Anything that refuses (nothing dead, quorum at risk, another replacement in
// flight, no leader) comes back as a sentence; the caller falls back.
//
// Blocking; logs progress.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "net/tls.h"
#include "node/bootstrap/member_plan.h"
#include "node/config/config.h"

namespace muster::bootstrap {

// `token_peer_urls`: the peer URLs of the token's first `size` members (or
// of the other SRV targets; `size`: the number of records).  Returns a kJoin
// plan, or nullopt with the reason in *why_not.
std::optional<MemberPlan> try_replacement(const config::Config& cfg,
                                          const std::vector<std::string>& token_peer_urls,
                                          uint64_t size, const net::TlsOptions& peer_tls,
                                          std::string* why_not);

// For a node that fell back to proxy (--discovery-replace-dead set): reads
// the token again (its size and first `size` members), or the SRV records,
// and tries the replacement with them.  Same answers as try_replacement.
std::optional<MemberPlan> recheck_replacement(const config::Config& cfg,
                                              const net::TlsOptions& peer_tls,
                                              std::string* why_not);

}  // namespace muster::bootstrap
