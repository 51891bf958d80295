// node/server/replacement_api.h: the member's side of replacing a dead
// member automatically (--discovery-replace-dead; docs/operations.md
// "Replacing a dead member automatically").  Muster's own routes on the
// client URLs, beside etcd's:
//
//   GET  /muster/v1/reachability
//     {"member_id","leader_id","leader":bool,"leading_for_ms",
//      "members":[{"id","name","peer_urls","learner","unheard_for_ms"}]}
//     "unheard_for_ms" only on the leader (peer_reachability.h).
//
//   POST /muster/v1/replace   {"name","peer_urls":[...],"dead_after_ms","size",
//                               "replaced" (optional: what an earlier attempt
//                               removed, as its answer said)}
//     Answered by the leader only (409 "not leader" with "leader_id"
//     elsewhere).  In order, each step refusing with 409 {"error","reason"}:
//       1. takes the cluster-wide replacement lock: a txn that creates
//          kLockKey only if it does not exist, attached to a new lease of
//          kLockTtl (so at most one replacement is in flight; a crashed
//          replacer's lock expires);
//       2. removes a learner unheard for dead_after_ms (a replacement that
//          died before its promotion) and asks the caller to come again;
//          refuses while a live learner is catching up;
//          picks, from the leader's view taken now (after the lock), the
//          voter unheard longest, if unheard for at least dead_after_ms
//          (when it is unheard but not for that long yet, or this leader
//          has led for less than that, the refusal says "retry_after_ms":
//          when it would know);
//          refuses when none is, or when removing it would leave fewer
//          healthy voters (heard within an election timeout) than a quorum
//          of the voters that remain; a cluster with fewer voters than
//          `size` and no voter unheard for dead_after_ms has a free seat
//          and nobody is removed;
//       3. removes it (Raft ConfChange), then adds the caller as a learner
//          (the second ConfChange), and records the replacement under
//          kHistoryPrefix;
//     200 {"member_id","cluster_id",
//          "replaced":{"id","name","unheard_for_ms","reason"}|null,"lock_lease"}.
//     The lock is released on refusal; on success the new member revokes
//     "lock_lease" once promoted (or it expires).  A retried request whose
//     learner is already in the member list gets that learner's ID back.
//
// Threads: handle() on the I/O threads; the steps chain through V3Service
// callbacks (apply thread).
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/metrics.h"
#include "net/server.h"
#include "node/server/member_server.h"
#include "node/server/v3_service.h"

namespace muster::server {

class ReplacementApi {
 public:
  static constexpr const char* kLockKey = "/muster/replacement/lock";
  static constexpr std::chrono::seconds kLockTtl{120};
  // One key per replacement, written by the leader once the new member is
  // added: <prefix><new member ID, 16 hex digits> ->
  // {"member_id","name","peer_urls","replaced":{"id","name","unheard_for_ms",
  //  "reason"}|null,"replaced_at" (RFC 3339, UTC),"threshold_ms","leader"}.
  // Read by `musterctl member list --show-replacements`.
  static constexpr const char* kHistoryPrefix = "/muster/replacement/history/";
  static std::string history_key(uint64_t member_id);

  // REQUIRES: member, service and metrics outlive this object and every
  // exchange it answers.
  ReplacementApi(MemberServer& member, V3Service& service, metrics::Registry& metrics);

  // Answers /muster/v1/* and returns true; false for any other path.
  bool handle(const std::shared_ptr<net::Exchange>& ex);

  // Sets muster_cluster_member_replacements from the history (on scrape).
  void collect_metrics();

 private:
  struct Attempt;
  void reachability(const std::shared_ptr<net::Exchange>& ex);
  void replace(const std::shared_ptr<net::Exchange>& ex);
  void choose_and_change(std::shared_ptr<Attempt> a);
  void refuse(std::shared_ptr<Attempt> a, const std::string& reason, bool release,
              nlohmann::json extra = nullptr);

  MemberServer& member_;
  V3Service& service_;
  metrics::Counter& replaced_;
  metrics::Counter& refused_;
  metrics::Counter& learners_removed_;
  metrics::Gauge& recorded_;
};

}  // namespace muster::server
