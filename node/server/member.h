// node/server/member.h: a cluster member's process, from a start plan to
// exit (the composition root; node/main.cpp only picks the mode).
//
// It writes the identity of a new member, opens the storage and the Raft
// driver (MemberServer), listens for peers (Raft streams, snapshots, and
// etcd's peer HTTP: GET /members and /version), and, once the member has
// joined, knows a leader and has published itself, listens for clients:
// the v3 gRPC API and JSON gateway, /health, /version, /metrics, and the v2
// API with --enable-v2.  systemd hears READY=1 then.  SIGTERM or SIGINT
// hands leadership over and stops everything in order.
#pragma once

#include "node/bootstrap/member_plan.h"
#include "node/config/config.h"
#include "node/config/tls_setup.h"

namespace muster::server {

// Runs until a stop signal; returns the exit status.  Throws
// std::runtime_error for a startup failure (a port in use, storage that
// cannot be opened), with the sentence to exit with.
// REQUIRES: plan.kind is kRestart, kNew or kJoin.
int run_member(const config::Config& cfg, const bootstrap::MemberPlan& plan,
               const config::TlsSetup& tls);

}  // namespace muster::server
