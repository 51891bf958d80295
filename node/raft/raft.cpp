// The Raft core.  References: "In Search of an Understandable Consensus
// Algorithm (Extended Version)" (the paper, §N) and Diego Ongaro's PhD thesis
// "Consensus: Bridging Theory and Practice" (the thesis, §N).
//
// Why one file of this size: the core is one state machine whose
// handlers all read and write the same private state (progress, votes, the
// log's unstable tail); its sections follow the paper's order (election,
// replication, snapshots, membership, reads), as etcd-io/raft's raft.go.
#include "node/raft/raft.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace muster::raft {

namespace {

// Marks a MsgVote sent because the leader asked us to take over (MsgTimeoutNow)
// so that receivers do not ignore it under their check-quorum lease.
constexpr const char* kCampaignTransfer = "CampaignTransfer";

[[noreturn]] void fatal(uint64_t id, const char* what) {
  std::fprintf(stderr, "raft %llu: invariant broken: %s\n", static_cast<unsigned long long>(id),
               what);
  std::abort();
}

void require_ok(uint64_t id, StorageError e, const char* where) {
  if (e != StorageError::kOk) {
    std::fprintf(stderr, "raft %llu: storage error in %s: %s\n",
                 static_cast<unsigned long long>(id), where, to_string(e));
    std::abort();
  }
}

bool is_local(pb::MessageType t) {
  return t == pb::MsgHup || t == pb::MsgBeat || t == pb::MsgCheckQuorum ||
         t == pb::MsgUnreachable || t == pb::MsgSnapStatus;
}

uint64_t payload_size(const std::vector<pb::Entry>& ents) {
  uint64_t s = 0;
  for (const auto& e : ents) s += e.data().size();
  return s;
}

uint64_t entries_bytes(const std::vector<pb::Entry>& ents) {
  uint64_t s = 0;
  for (const auto& e : ents) s += e.ByteSizeLong();
  return s;
}

bool hard_state_equal(const pb::HardState& a, const pb::HardState& b) {
  return a.term() == b.term() && a.vote() == b.vote() && a.commit() == b.commit();
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

const char* to_string(StateRole r) {
  switch (r) {
    case StateRole::kFollower:
      return "StateFollower";
    case StateRole::kCandidate:
      return "StateCandidate";
    case StateRole::kLeader:
      return "StateLeader";
    case StateRole::kPreCandidate:
      return "StatePreCandidate";
  }
  return "?";
}

const char* to_string(DropReason r) {
  switch (r) {
    case DropReason::kNone:
      return "accepted";
    case DropReason::kNoLeader:
      return "no leader";
    case DropReason::kForwardingDisabled:
      return "not the leader and proposal forwarding is disabled";
    case DropReason::kLeaderTransferInProgress:
      return "leadership transfer in progress";
    case DropReason::kConfChangePending:
      return "a configuration change is already pending";
    case DropReason::kUncommittedSizeLimit:
      return "too many uncommitted entries";
    case DropReason::kNotMember:
      return "this member was removed from the cluster";
    case DropReason::kEmpty:
      return "empty proposal";
  }
  return "?";
}

// ---------------------------------------------------------------------------
// construction

Raft::Raft(Config cfg, const Storage* storage) : cfg_(std::move(cfg)), id_(cfg_.id), log_(storage) {
  if (id_ == 0) fatal(id_, "Config::id must not be 0");
  if (cfg_.heartbeat_tick < 1) fatal(id_, "Config::heartbeat_tick must be >= 1");
  if (cfg_.election_tick <= cfg_.heartbeat_tick) {
    fatal(id_, "Config::election_tick must exceed heartbeat_tick");
  }
  if (cfg_.max_inflight_msgs < 1) fatal(id_, "Config::max_inflight_msgs must be >= 1");

  InitialState is;
  require_ok(id_, storage->initial_state(&is), "initial_state");
  for (uint64_t v : is.conf_state.voters()) voters_.insert(v);
  for (uint64_t l : is.conf_state.learners()) learners_.insert(l);
  for (uint64_t l : learners_) {
    if (voters_.count(l)) fatal(id_, "a node is both voter and learner in the stored ConfState");
  }
  const pb::HardState& hs = is.hard_state;
  if (hs.commit() > log_.last_index()) fatal(id_, "stored commit index beyond the last index");
  log_.commit_to(hs.commit());
  term_ = hs.term();
  vote_ = hs.vote();
  if (cfg_.applied > 0) {
    // An applied entry was committed by definition.  A caller that persists
    // the commit index without sync (Ready::must_sync is false when only the
    // commit index changed) may come back with applied > stored commit.
    if (cfg_.applied > log_.last_index()) fatal(id_, "Config::applied beyond the last index");
    log_.commit_to(cfg_.applied);
    log_.applied_to(cfg_.applied);
  }

  rng_state_ = splitmix64((cfg_.seed != 0 ? cfg_.seed : 0x6d75737465720001ull) ^ splitmix64(id_));
  if (rng_state_ == 0) rng_state_ = 1;

  become_follower(term_, 0);
  prev_hard_ = hard_state();
  prev_soft_ = soft_state();
}

uint64_t Raft::next_random() {
  if (cfg_.rng) return cfg_.rng();
  // xorshift64*: deterministic for a given seed, no hidden global state.
  rng_state_ ^= rng_state_ >> 12;
  rng_state_ ^= rng_state_ << 25;
  rng_state_ ^= rng_state_ >> 27;
  return rng_state_ * 2685821657736338717ull;
}

void Raft::reset_randomized_election_timeout() {
  // Paper §5.2: randomized timeouts in [T, 2T) make split votes rare.
  randomized_election_timeout_ =
      cfg_.election_tick +
      static_cast<int>(next_random() % static_cast<uint64_t>(cfg_.election_tick));
}

void Raft::require_not_in_ready(const char* what) const {
  if (in_ready_) {
    std::fprintf(stderr, "raft %llu: %s called between ready() and advance()\n",
                 static_cast<unsigned long long>(id_), what);
    std::abort();
  }
}

void Raft::init_progress(uint64_t id, bool learner) {
  auto it = prs_.try_emplace(id, log_.last_index() + 1, cfg_.max_inflight_msgs,
                             cfg_.max_inflight_bytes, learner)
                .first;
  Progress& pr = it->second;
  pr.is_learner = learner;
  if (id == id_) pr.match = log_.last_index();
  // A new peer counts as active so that a leader will send it a snapshot if
  // needed before the next check-quorum round.
  pr.recent_active = true;
}

pb::ConfState Raft::conf_state() const {
  pb::ConfState cs;
  for (uint64_t v : voters_) cs.add_voters(v);
  for (uint64_t l : learners_) cs.add_learners(l);
  return cs;
}

const Progress* Raft::progress(uint64_t id) const {
  if (state_ != StateRole::kLeader) return nullptr;
  auto it = prs_.find(id);
  return it == prs_.end() ? nullptr : &it->second;
}

pb::HardState Raft::hard_state() const {
  pb::HardState hs;
  hs.set_term(term_);
  hs.set_vote(vote_);
  hs.set_commit(log_.committed());
  return hs;
}

// ---------------------------------------------------------------------------
// roles

void Raft::reset(uint64_t term) {
  if (term_ != term) {
    term_ = term;
    vote_ = 0;
  }
  lead_ = 0;
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  reset_randomized_election_timeout();
  abort_leader_transfer();
  votes_.clear();
  prs_.clear();
  for (uint64_t v : voters_) init_progress(v, false);
  for (uint64_t l : learners_) init_progress(l, true);
  for (auto& [id, pr] : prs_) pr.recent_active = (id == id_);
  pending_conf_index_ = 0;
  uncommitted_size_ = 0;
  // Outstanding read requests die with the leadership that would have
  // answered them; the callers retry (like lost proposals).
  read_pending_.clear();
  read_queue_.clear();
  pending_read_index_messages_.clear();
}

void Raft::become_follower(uint64_t term, uint64_t lead) {
  reset(term);
  lead_ = lead;
  state_ = StateRole::kFollower;
}

void Raft::become_candidate() {
  if (state_ == StateRole::kLeader) fatal(id_, "invalid transition leader -> candidate");
  reset(term_ + 1);
  vote_ = id_;
  state_ = StateRole::kCandidate;
}

void Raft::become_pre_candidate() {
  if (state_ == StateRole::kLeader) fatal(id_, "invalid transition leader -> pre-candidate");
  // Thesis §9.6: a pre-candidate changes neither its term nor its vote; it
  // only asks whether it could win.  So a partitioned node that rejoins does
  // not force the cluster onto a higher term.
  votes_.clear();
  lead_ = 0;
  state_ = StateRole::kPreCandidate;
}

void Raft::become_leader() {
  if (state_ == StateRole::kFollower) fatal(id_, "invalid transition follower -> leader");
  reset(term_);
  lead_ = id_;
  state_ = StateRole::kLeader;
  prs_.at(id_).become_replicate();
  // Paper §8 / thesis §6.4: a new leader commits a no-op entry of its own term
  // so that it learns which entries are committed (and may serve reads).
  DropReason why = DropReason::kNone;
  pb::Entry noop;
  if (!append_entries({noop}, &why)) fatal(id_, "a new leader could not append its no-op entry");
  // One-at-a-time membership changes: a new leader may not know whether a
  // configuration entry in its log is committed.  It accepts a new change only
  // after everything up to and including its no-op is applied, which also
  // closes the single-server-change hole described in Ongaro's 2015 raft-dev
  // post (a change must follow a committed entry of the leader's own term).
  pending_conf_index_ = log_.last_index();
  bcast_append();
}

bool Raft::has_unapplied_conf_change() const {
  if (log_.committed() <= log_.applied()) return false;
  uint64_t lo = std::max(log_.applied() + 1, log_.first_index());
  const uint64_t hi = log_.committed() + 1;
  while (lo < hi) {
    std::vector<pb::Entry> ents;
    require_ok(id_, log_.slice(lo, hi, 1 << 20, &ents), "has_unapplied_conf_change");
    for (const auto& e : ents) {
      if (e.type() == pb::EntryConfChange) return true;
    }
    if (ents.empty()) break;
    lo = ents.back().index() + 1;
  }
  return false;
}

void Raft::hup(bool transfer) {
  if (state_ == StateRole::kLeader) return;
  // Learners and removed nodes never campaign.
  if (!voters_.count(id_)) return;
  // A committed but unapplied configuration change may remove us or change
  // the quorum; campaigning under the old configuration could elect a leader
  // the new configuration does not accept.  Wait until it is applied.
  if (has_unapplied_conf_change()) return;
  campaign_internal(cfg_.pre_vote && !transfer, transfer);
}

void Raft::campaign_internal(bool pre, bool transfer) {
  uint64_t term = 0;
  pb::MessageType type;
  if (pre) {
    become_pre_candidate();
    type = pb::MsgPreVote;
    // Pre-vote requests carry the term we would campaign at.
    term = term_ + 1;
  } else {
    become_candidate();
    type = pb::MsgVote;
    term = term_;
  }
  if (poll(id_, true) == VoteResult::kWon) {
    // Single-voter configuration: we win on our own vote.
    if (pre) {
      campaign_internal(false, transfer);
    } else {
      become_leader();
    }
    return;
  }
  for (uint64_t v : voters_) {
    if (v == id_) continue;
    pb::Message m;
    m.set_type(type);
    m.set_to(v);
    m.set_term(term);
    m.set_index(log_.last_index());
    m.set_log_term(log_.last_term());
    if (transfer) m.set_context(kCampaignTransfer);
    send(std::move(m));
  }
}

Raft::VoteResult Raft::poll(uint64_t id, bool granted) {
  votes_.emplace(id, granted);  // a duplicate response does not count twice
  size_t yes = 0, no = 0;
  for (uint64_t v : voters_) {
    auto it = votes_.find(v);
    if (it == votes_.end()) continue;
    (it->second ? yes : no)++;
  }
  if (yes >= quorum()) return VoteResult::kWon;
  if (voters_.size() - no < quorum()) return VoteResult::kLost;
  return VoteResult::kPending;
}

// ---------------------------------------------------------------------------
// public inputs

void Raft::tick() {
  require_not_in_ready("tick");
  if (state_ == StateRole::kLeader) {
    tick_heartbeat();
  } else {
    tick_election();
  }
}

void Raft::tick_election() {
  ++election_elapsed_;
  if (voters_.count(id_) && election_elapsed_ >= randomized_election_timeout_) {
    election_elapsed_ = 0;
    hup(false);
  }
}

void Raft::tick_heartbeat() {
  ++heartbeat_elapsed_;
  ++election_elapsed_;
  if (election_elapsed_ >= cfg_.election_tick) {
    election_elapsed_ = 0;
    // Thesis §6.2: a leader that has not heard from a quorum within an
    // election timeout steps down, so that clients stop talking to a leader
    // that can no longer commit (and its lease-protected followers can elect
    // a new one).
    if (cfg_.check_quorum && !quorum_active()) {
      become_follower(term_, 0);
      return;
    }
    // Thesis §3.10: a transfer that has not completed within an election
    // timeout is abandoned so that the leader accepts proposals again.
    if (lead_transferee_ != 0) abort_leader_transfer();
  }
  if (state_ != StateRole::kLeader) return;
  if (heartbeat_elapsed_ >= cfg_.heartbeat_tick) {
    heartbeat_elapsed_ = 0;
    // The newest read still waiting for its quorum rides along (as in
    // etcd-raft): if its own heartbeat round was lost, this one confirms it
    // and every read queued before it.
    bcast_heartbeat(read_queue_.empty() ? std::string() : read_queue_.back());
  }
}

bool Raft::quorum_active() {
  size_t active = 0;
  for (auto& [id, pr] : prs_) {
    if (id == id_) {
      if (voters_.count(id)) ++active;
      continue;
    }
    if (pr.recent_active && voters_.count(id)) ++active;
    pr.recent_active = false;
  }
  return active >= quorum();
}

void Raft::campaign() {
  require_not_in_ready("campaign");
  pb::Message m;
  m.set_type(pb::MsgHup);
  step_internal(m);
}

void Raft::step(const pb::Message& m) {
  require_not_in_ready("step");
  // Local-only message types must not arrive over the network.
  if (is_local(m.type())) return;
  if (m.to() != 0 && m.to() != id_) return;
  step_internal(m);
}

DropReason Raft::propose(std::string data) {
  require_not_in_ready("propose");
  pb::Message m;
  m.set_type(pb::MsgProp);
  m.set_from(id_);
  pb::Entry* e = m.add_entries();
  e->set_type(pb::EntryNormal);
  e->set_data(std::move(data));
  last_drop_ = DropReason::kNone;
  step_internal(m);
  return last_drop_;
}

DropReason Raft::propose_batch(std::vector<std::string> data) {
  require_not_in_ready("propose_batch");
  pb::Message m;
  m.set_type(pb::MsgProp);
  m.set_from(id_);
  m.mutable_entries()->Reserve(static_cast<int>(data.size()));
  for (auto& d : data) {
    pb::Entry* e = m.add_entries();
    e->set_type(pb::EntryNormal);
    e->set_data(std::move(d));
  }
  last_drop_ = DropReason::kNone;
  step_internal(m);
  return last_drop_;
}

DropReason Raft::propose_conf_change(const pb::ConfChange& cc) {
  require_not_in_ready("propose_conf_change");
  pb::Message m;
  m.set_type(pb::MsgProp);
  m.set_from(id_);
  pb::Entry* e = m.add_entries();
  e->set_type(pb::EntryConfChange);
  e->set_data(cc.SerializeAsString());
  last_drop_ = DropReason::kNone;
  step_internal(m);
  return last_drop_;
}

void Raft::read_index(std::string ctx) {
  require_not_in_ready("read_index");
  pb::Message m;
  m.set_type(pb::MsgReadIndex);
  m.set_from(id_);
  m.set_context(std::move(ctx));
  step_internal(m);
}

void Raft::transfer_leadership(uint64_t to) {
  require_not_in_ready("transfer_leadership");
  pb::Message m;
  m.set_type(pb::MsgTransferLeader);
  m.set_from(to);
  step_internal(m);
}

void Raft::report_unreachable(uint64_t id) {
  require_not_in_ready("report_unreachable");
  pb::Message m;
  m.set_type(pb::MsgUnreachable);
  m.set_from(id);
  step_internal(m);
}

void Raft::report_snapshot(uint64_t id, bool failure) {
  require_not_in_ready("report_snapshot");
  pb::Message m;
  m.set_type(pb::MsgSnapStatus);
  m.set_from(id);
  m.set_reject(failure);
  step_internal(m);
}

// ---------------------------------------------------------------------------
// step

void Raft::step_internal(const pb::Message& m) {
  // 1. Terms (paper §5.1: "if one server's current term is smaller than the
  //    other's, then it updates its current term to the larger value ... if a
  //    server receives a request with a stale term number, it rejects it").
  if (m.term() == 0) {
    // A local message, or a forwarded proposal / read / transfer request,
    // which carries no term.
  } else if (m.term() > term_) {
    if (m.type() == pb::MsgVote || m.type() == pb::MsgPreVote) {
      // Thesis §4.2.3 (disruptive servers) and §6.2: while we have heard from
      // a leader within the minimum election timeout, ignore requests to
      // elect someone else, even at a higher term.  A removed or partitioned
      // server can then not depose a working leader.  A campaign the leader
      // itself asked for (MsgTimeoutNow, §3.10) is exempt.
      const bool force = m.context() == kCampaignTransfer;
      const bool in_lease =
          cfg_.check_quorum && lead_ != 0 && election_elapsed_ < cfg_.election_tick;
      if (!force && in_lease) return;
    }
    if (m.type() == pb::MsgPreVote) {
      // A pre-vote request never changes our term (thesis §9.6): the sender
      // has not started an election, it only asks whether it could win one.
    } else if (m.type() == pb::MsgPreVoteResp && !m.reject()) {
      // A granted pre-vote is stamped with the term we asked about (our term
      // + 1); it is counted in step_candidate, and our term changes only when
      // we actually campaign.
    } else {
      // A higher term: we are out of date.  If the sender is the leader of
      // that term (it replicates to us), remember it right away.
      if (m.type() == pb::MsgApp || m.type() == pb::MsgHeartbeat || m.type() == pb::MsgSnap) {
        become_follower(m.term(), m.from());
      } else {
        become_follower(m.term(), 0);
      }
    }
  } else if (m.term() < term_) {
    if ((cfg_.check_quorum || cfg_.pre_vote) &&
        (m.type() == pb::MsgHeartbeat || m.type() == pb::MsgApp)) {
      // A stale leader is talking to us.  With check-quorum or pre-vote it
      // may never learn of the newer term otherwise: we ignore its votes
      // while in lease, and a partitioned node using pre-vote never bumps its
      // term.  Answer with our term so that it steps down.
      pb::Message r;
      r.set_type(pb::MsgAppResp);
      r.set_to(m.from());
      send(std::move(r));
    } else if (m.type() == pb::MsgPreVote) {
      // Reject a pre-vote for an old term explicitly, so that a node that
      // fell behind learns our term instead of retrying forever.
      pb::Message r;
      r.set_type(pb::MsgPreVoteResp);
      r.set_to(m.from());
      r.set_term(term_);
      r.set_reject(true);
      send(std::move(r));
    }
    // Everything else from an older term is stale: drop it.
    return;
  }

  // 2. Messages handled the same way in every role.
  switch (m.type()) {
    case pb::MsgHup:
      hup(false);
      return;
    case pb::MsgVote:
    case pb::MsgPreVote:
      handle_vote_request(m);
      return;
    default:
      break;
  }

  // 3. Role-specific handling.
  switch (state_) {
    case StateRole::kLeader:
      step_leader(m);
      break;
    case StateRole::kCandidate:
    case StateRole::kPreCandidate:
      step_candidate(m);
      break;
    case StateRole::kFollower:
      step_follower(m);
      break;
  }
}

void Raft::handle_vote_request(const pb::Message& m) {
  // Paper §5.2: each server votes for at most one candidate in a term, first
  // come first served.  We can (re)grant when:
  //  - we already voted for this candidate (a retransmitted request), or
  //  - we have not voted and know of no leader in this term, or
  //  - it is a pre-vote for a future term: pre-votes bind nothing.
  bool can_vote = vote_ == m.from() || (vote_ == 0 && lead_ == 0) ||
                  (m.type() == pb::MsgPreVote && m.term() > term_);
  if (cfg_.testing.vote_twice && m.type() == pb::MsgVote && state_ == StateRole::kFollower) {
    can_vote = true;  // deliberately broken: see TestingKnobs
  }
  const bool log_ok = cfg_.testing.vote_ignoring_log || log_.is_up_to_date(m.index(), m.log_term());
  pb::Message r;
  r.set_to(m.from());
  r.set_type(m.type() == pb::MsgVote ? pb::MsgVoteResp : pb::MsgPreVoteResp);
  // Paper §5.4.1: only grant if the candidate's log is at least as
  // up-to-date as ours, so that an elected leader holds every committed
  // entry (Leader Completeness).
  if (can_vote && log_ok) {
    // The response carries the request's term: for a pre-vote that is the
    // future term the pre-candidate asked about.
    r.set_term(m.term());
    send(std::move(r));
    if (m.type() == pb::MsgVote) {
      // Granting a real vote resets our election timer, so that we do not
      // immediately compete with the candidate we just supported.
      election_elapsed_ = 0;
      vote_ = m.from();
    }
  } else {
    r.set_term(term_);
    r.set_reject(true);
    send(std::move(r));
  }
}

void Raft::drop(const pb::Message& m, DropReason why) {
  last_drop_ = why;
  // Report proposals that originated here; a forwarded proposal dropped at the
  // leader is lost without notice and its proposer retries (as in etcd).
  if (m.type() == pb::MsgProp && m.from() == id_) {
    DroppedProposal d;
    d.entries.assign(m.entries().begin(), m.entries().end());
    d.reason = why;
    dropped_.push_back(std::move(d));
  }
}

void Raft::step_leader(const pb::Message& m) {
  switch (m.type()) {
    case pb::MsgProp: {
      if (m.entries_size() == 0) return drop(m, DropReason::kEmpty);
      // Removed from the configuration (e.g. the removal is applied but we
      // have not stepped down yet): we must not grow the log.
      if (!prs_.count(id_)) return drop(m, DropReason::kNotMember);
      // Thesis §3.10: during a transfer the leader stops accepting proposals,
      // so the transferee can catch up and take over.
      if (lead_transferee_ != 0) return drop(m, DropReason::kLeaderTransferInProgress);
      bool has_conf = false;
      for (const auto& e : m.entries()) {
        if (e.type() != pb::EntryConfChange) continue;
        // One change at a time (thesis §4.1): the previous one must be applied
        // before the next is appended, so that the old and new majorities
        // always overlap.
        if (has_conf || pending_conf_index_ > log_.applied()) {
          return drop(m, DropReason::kConfChangePending);
        }
        has_conf = true;
      }
      DropReason why = DropReason::kNone;
      if (!append_entries({m.entries().begin(), m.entries().end()}, &why)) return drop(m, why);
      if (has_conf) pending_conf_index_ = log_.last_index();
      bcast_append();
      return;
    }
    case pb::MsgReadIndex:
      handle_read_index_request(m);
      return;
    case pb::MsgApp:
    case pb::MsgHeartbeat:
    case pb::MsgSnap:
      // Another leader in our own term is impossible (Election Safety); such
      // a message can only be a bug or a corrupted frame.  Ignore it.
      return;
    default:
      break;
  }

  // Everything below is about one peer; ignore peers not in the configuration
  // (e.g. answers from a node removed meanwhile).
  auto it = prs_.find(m.from());
  if (it == prs_.end()) return;
  Progress& pr = it->second;

  switch (m.type()) {
    case pb::MsgAppResp: {
      pr.recent_active = true;
      if (m.reject()) {
        // The follower's log does not contain (m.index, term at m.index).  It
        // hinted (reject_hint, log_term): the largest index whose term is at
        // most the term we sent.  Paper §5.3's optimisation: skip, in one
        // round trip, every entry of ours whose term is above that term.
        uint64_t next_probe = m.reject_hint();
        if (m.log_term() > 0) {
          next_probe = log_.find_conflict_by_term(m.reject_hint(), m.log_term()).first;
        }
        if (pr.maybe_decr_to(m.index(), next_probe)) {
          // Pipelining was built on a wrong guess: fall back to probing.
          if (pr.state == ProgressState::kReplicate) pr.become_probe();
          send_append(m.from(), true);
        }
        return;
      }
      const bool was_paused = pr.is_paused();
      if (!pr.maybe_update(m.index())) return;  // stale or duplicate ack
      switch (pr.state) {
        case ProgressState::kProbe:
          // Found where the logs match: stream from here on.
          pr.become_replicate();
          break;
        case ProgressState::kSnapshot:
          // The follower installed the snapshot (or caught up another way),
          // and the log from match+1 is still available: replicate again.
          if (pr.match >= pr.pending_snapshot || pr.match + 1 >= log_.first_index()) {
            pr.become_probe();
            pr.become_replicate();
          }
          break;
        case ProgressState::kReplicate:
          pr.inflights.free_le(m.index());
          break;
      }
      if (maybe_commit()) {
        // Tell everyone about the new commit index.
        bcast_append();
      } else if (was_paused) {
        send_append(m.from(), true);
      }
      // Fill the in-flight window.
      while (send_append(m.from(), false)) {
      }
      // Thesis §3.10: once the transferee has every entry, tell it to start
      // an election right away.
      if (m.from() == lead_transferee_ && pr.match == log_.last_index()) {
        send_timeout_now(m.from());
      }
      return;
    }
    case pb::MsgHeartbeatResp: {
      pr.recent_active = true;
      pr.msg_app_flow_paused = false;
      // All acks for a full window may have been lost: let one more through,
      // so the follower's answer (or rejection) restarts the flow.
      if (pr.state == ProgressState::kReplicate && pr.inflights.full()) {
        pr.inflights.free_first_one();
      }
      if (pr.match < log_.last_index() || pr.state == ProgressState::kProbe) {
        send_append(m.from(), true);
      }
      if (m.context().empty()) return;
      auto rit = read_pending_.find(m.context());
      if (rit == read_pending_.end()) return;
      rit->second.acks.insert(m.from());
      size_t acks = 0;
      for (uint64_t a : rit->second.acks) acks += voters_.count(a);
      if (acks < quorum()) return;
      // A quorum confirmed we were still leader after this request arrived,
      // so its read index is safe; that also covers every earlier request.
      const std::string ctx = m.context();
      while (!read_queue_.empty()) {
        const std::string c = read_queue_.front();
        read_queue_.pop_front();
        auto node = read_pending_.extract(c);
        if (!node.empty()) answer_read_index(node.mapped().req, node.mapped().index);
        if (c == ctx) break;
      }
      return;
    }
    case pb::MsgSnapStatus:
      if (pr.state != ProgressState::kSnapshot) return;
      if (m.reject()) pr.pending_snapshot = 0;
      pr.become_probe();
      // Wait for the next heartbeat response before probing (or sending
      // another snapshot), rather than retrying in a tight loop.
      pr.msg_app_flow_paused = true;
      return;
    case pb::MsgUnreachable:
      // Messages to it were probably lost: stop optimistic pipelining.
      if (pr.state == ProgressState::kReplicate) pr.become_probe();
      return;
    case pb::MsgTransferLeader: {
      if (pr.is_learner) return;  // a learner cannot become leader
      const uint64_t transferee = m.from();
      if (lead_transferee_ != 0) {
        if (lead_transferee_ == transferee) return;  // already under way
        abort_leader_transfer();
      }
      if (transferee == id_) return;  // already leader
      // The transfer must finish within an election timeout (tick_heartbeat).
      election_elapsed_ = 0;
      lead_transferee_ = transferee;
      if (pr.match == log_.last_index()) {
        send_timeout_now(transferee);
      } else {
        // A lagging transferee is first brought up to date.
        send_append(transferee, true);
      }
      return;
    }
    default:
      return;
  }
}

void Raft::step_candidate(const pb::Message& m) {
  const pb::MessageType my_resp =
      state_ == StateRole::kPreCandidate ? pb::MsgPreVoteResp : pb::MsgVoteResp;
  switch (m.type()) {
    case pb::MsgProp:
      drop(m, DropReason::kNoLeader);
      return;
    case pb::MsgApp:
      // Paper §5.2: a candidate that hears from a leader of its own term
      // (or newer; the term was updated above) returns to follower.
      become_follower(m.term(), m.from());
      handle_append(m);
      return;
    case pb::MsgHeartbeat:
      become_follower(m.term(), m.from());
      handle_heartbeat(m);
      return;
    case pb::MsgSnap:
      become_follower(m.term(), m.from());
      handle_snapshot(m);
      return;
    case pb::MsgVoteResp:
    case pb::MsgPreVoteResp: {
      // Only answers to the kind of election we are running count (a late
      // MsgPreVoteResp must not count as a vote, and vice versa).
      if (m.type() != my_resp) return;
      switch (poll(m.from(), !m.reject())) {
        case VoteResult::kWon:
          if (state_ == StateRole::kPreCandidate) {
            campaign_internal(false, false);
          } else {
            become_leader();
          }
          break;
        case VoteResult::kLost:
          // Stay at this term as a follower; a rejection at a higher term
          // already moved us above.
          become_follower(term_, 0);
          break;
        case VoteResult::kPending:
          break;
      }
      return;
    }
    default:
      // MsgTimeoutNow, MsgReadIndex, MsgTransferLeader: no leader to act for.
      return;
  }
}

void Raft::step_follower(const pb::Message& m) {
  switch (m.type()) {
    case pb::MsgProp: {
      if (lead_ == 0) return drop(m, DropReason::kNoLeader);
      if (cfg_.disable_proposal_forwarding) return drop(m, DropReason::kForwardingDisabled);
      pb::Message f = m;
      f.set_to(lead_);
      send(std::move(f));
      return;
    }
    case pb::MsgApp:
      election_elapsed_ = 0;
      lead_ = m.from();
      handle_append(m);
      return;
    case pb::MsgHeartbeat:
      election_elapsed_ = 0;
      lead_ = m.from();
      handle_heartbeat(m);
      return;
    case pb::MsgSnap:
      election_elapsed_ = 0;
      lead_ = m.from();
      handle_snapshot(m);
      return;
    case pb::MsgTransferLeader:
    case pb::MsgReadIndex: {
      // Only the leader can act on these; without one the request is lost
      // and the caller retries.
      if (lead_ == 0) return;
      pb::Message f = m;
      f.set_to(lead_);
      send(std::move(f));
      return;
    }
    case pb::MsgTimeoutNow:
      // Thesis §3.10: the leader asked us to take over; campaign at once,
      // skipping pre-vote (the leader vouches for us) and marked so that
      // peers' check-quorum leases do not ignore the request.
      hup(true);
      return;
    case pb::MsgReadIndexResp:
      read_states_.push_back({m.index(), m.context()});
      return;
    default:
      return;
  }
}

void Raft::handle_append(const pb::Message& m) {
  pb::Message r;
  r.set_type(pb::MsgAppResp);
  r.set_to(m.from());
  if (m.index() < log_.committed()) {
    // Everything up to our commit index already matches the leader's log
    // (Leader Completeness); a delayed or duplicated MsgApp from before we
    // committed is answered with our commit index so the leader skips ahead.
    r.set_index(log_.committed());
    send(std::move(r));
    return;
  }
  if (auto last = log_.maybe_append(m.index(), m.log_term(), m.commit(), m.entries())) {
    r.set_index(*last);
    send(std::move(r));
    return;
  }
  // Paper §5.3: our log does not contain an entry at m.index with term
  // m.log_term; reject.  Hint the largest index whose term is <= m.log_term,
  // so the leader can skip a whole conflicting term per round trip instead
  // of one entry (the optimisation at the end of §5.3).
  const uint64_t hint_index = std::min(m.index(), log_.last_index());
  const auto [hi, ht] = log_.find_conflict_by_term(hint_index, m.log_term());
  r.set_index(m.index());
  r.set_reject(true);
  r.set_reject_hint(hi);
  r.set_log_term(ht);
  send(std::move(r));
}

void Raft::handle_heartbeat(const pb::Message& m) {
  // The leader sends min(our match, its commit), which we are known to hold.
  log_.commit_to(m.commit());
  pb::Message r;
  r.set_type(pb::MsgHeartbeatResp);
  r.set_to(m.from());
  r.set_context(m.context());
  send(std::move(r));
}

void Raft::handle_snapshot(const pb::Message& m) {
  pb::Message r;
  r.set_type(pb::MsgAppResp);
  r.set_to(m.from());
  if (restore(m.snapshot())) {
    r.set_index(log_.last_index());
  } else {
    r.set_index(log_.committed());
  }
  send(std::move(r));
}

bool Raft::restore(const pb::Snapshot& snap) {
  const uint64_t idx = snap.metadata().index();
  // An old snapshot (everything in it is already committed here) is ignored.
  if (idx <= log_.committed()) return false;
  if (state_ != StateRole::kFollower) fatal(id_, "restoring a snapshot while not a follower");
  if (log_.match_term(idx, snap.metadata().term())) {
    // We already hold the snapshot's last entry, hence (Log Matching) every
    // entry before it: just move the commit index forward.
    log_.commit_to(idx);
    return false;
  }
  log_.restore(snap);
  voters_.clear();
  learners_.clear();
  for (uint64_t v : snap.metadata().conf_state().voters()) voters_.insert(v);
  for (uint64_t l : snap.metadata().conf_state().learners()) learners_.insert(l);
  prs_.clear();
  for (uint64_t v : voters_) init_progress(v, false);
  for (uint64_t l : learners_) init_progress(l, true);
  return true;
}

// ---------------------------------------------------------------------------
// leader machinery

void Raft::send(pb::Message m) {
  if (m.from() == 0) m.set_from(id_);
  switch (m.type()) {
    case pb::MsgVote:
    case pb::MsgVoteResp:
    case pb::MsgPreVote:
    case pb::MsgPreVoteResp:
      // Their term is chosen explicitly (pre-votes use a future term).
      if (m.term() == 0) fatal(id_, "vote message without a term");
      break;
    case pb::MsgProp:
    case pb::MsgReadIndex:
    case pb::MsgTransferLeader:
      // Forwarded requests carry no term: they are treated like local input
      // by whichever node is leader when they arrive.
      m.set_term(0);
      break;
    default:
      m.set_term(term_);
      break;
  }
  msgs_.push_back(std::move(m));
}

bool Raft::send_append(uint64_t to, bool send_if_empty) {
  Progress& pr = prs_.at(to);
  if (pr.is_paused()) return false;
  const uint64_t prev_index = pr.next - 1;
  uint64_t prev_term = 0;
  std::vector<pb::Entry> ents;
  StorageError e = log_.term(prev_index, &prev_term);
  if (e == StorageError::kOk) e = log_.entries_from(pr.next, cfg_.max_size_per_msg, &ents);
  if (e == StorageError::kOk) {
    if (ents.empty() && !send_if_empty) return false;
    pb::Message m;
    m.set_type(pb::MsgApp);
    m.set_to(to);
    m.set_index(prev_index);
    m.set_log_term(prev_term);
    m.set_commit(log_.committed());
    const uint64_t bytes = entries_bytes(ents);
    const uint64_t last = ents.empty() ? prev_index : ents.back().index();
    pr.sent_entries(last, ents.size(), bytes);
    for (auto& ent : ents) *m.add_entries() = std::move(ent);
    send(std::move(m));
    return true;
  }
  if (e != StorageError::kCompacted) require_ok(id_, e, "send_append");
  // The entries the follower needs were compacted away: InstallSnapshot
  // (paper §7).  Do not spend a snapshot on a peer we have not heard from.
  if (!pr.recent_active) return false;
  pb::Snapshot snap;
  e = log_.snapshot(&snap);
  if (e == StorageError::kSnapshotTemporarilyUnavailable) return false;
  require_ok(id_, e, "snapshot");
  if (snap.metadata().index() == 0) fatal(id_, "need a snapshot but the storage has none");
  pr.become_snapshot(snap.metadata().index());
  pb::Message m;
  m.set_type(pb::MsgSnap);
  m.set_to(to);
  *m.mutable_snapshot() = std::move(snap);
  send(std::move(m));
  return true;
}

void Raft::bcast_append() {
  for (auto& [id, pr] : prs_) {
    if (id != id_) send_append(id, true);
  }
}

void Raft::bcast_heartbeat(const std::string& ctx) {
  for (auto& [id, pr] : prs_) {
    if (id != id_) send_heartbeat(id, ctx);
  }
}

void Raft::send_heartbeat(uint64_t to, const std::string& ctx) {
  // The follower may not yet have everything we committed: only tell it to
  // commit what it is known to hold.
  pb::Message m;
  m.set_type(pb::MsgHeartbeat);
  m.set_to(to);
  m.set_commit(std::min(prs_.at(to).match, log_.committed()));
  m.set_context(ctx);
  send(std::move(m));
}

bool Raft::maybe_commit() {
  // The highest index replicated on a majority of voters (learners do not
  // count: thesis §4.2.1).
  // Called on every acknowledgement: reuses one buffer rather than
  // allocating each time.
  std::vector<uint64_t>& matches = match_scratch_;
  matches.clear();
  for (uint64_t v : voters_) {
    auto it = prs_.find(v);
    matches.push_back(it == prs_.end() ? 0 : it->second.match);
  }
  if (matches.empty()) return false;
  std::sort(matches.begin(), matches.end(), std::greater<>());
  const uint64_t mci = matches[quorum() - 1];
  bool advanced = false;
  if (cfg_.testing.commit_entries_of_older_terms) {
    // Deliberately broken (TestingKnobs): Figure 8 shows why this is unsafe.
    if (mci > log_.committed()) {
      log_.commit_to(mci);
      advanced = true;
    }
  } else {
    // Paper §5.4.2: only an entry of the current term is committed by
    // counting replicas; earlier entries are committed indirectly with it.
    advanced = log_.maybe_commit(mci, term_);
  }
  if (advanced) release_pending_read_indexes();
  return advanced;
}

bool Raft::append_entries(std::vector<pb::Entry> ents, DropReason* reason) {
  uint64_t li = log_.last_index();
  for (auto& e : ents) {
    e.set_term(term_);
    e.set_index(++li);
  }
  const uint64_t size = payload_size(ents);
  if (cfg_.max_uncommitted_entries_size > 0 && size > 0 && uncommitted_size_ > 0 &&
      uncommitted_size_ + size > cfg_.max_uncommitted_entries_size) {
    *reason = DropReason::kUncommittedSizeLimit;
    return false;
  }
  uncommitted_size_ += size;
  li = log_.append(std::move(ents));
  // The leader's own copy counts toward the majority (it persists it in
  // parallel with replication: thesis §10.2.1).
  auto it = prs_.find(id_);
  if (it != prs_.end()) it->second.maybe_update(li);
  maybe_commit();
  return true;
}

bool Raft::committed_entry_in_current_term() const {
  return log_.term_or_zero(log_.committed()) == term_;
}

void Raft::release_pending_read_indexes() {
  if (pending_read_index_messages_.empty() || !committed_entry_in_current_term()) return;
  std::vector<pb::Message> msgs = std::move(pending_read_index_messages_);
  pending_read_index_messages_.clear();
  for (const auto& m : msgs) handle_read_index_request(m);
}

void Raft::answer_read_index(const pb::Message& req, uint64_t index) {
  if (req.from() == 0 || req.from() == id_) {
    read_states_.push_back({index, req.context()});
    return;
  }
  pb::Message r;
  r.set_type(pb::MsgReadIndexResp);
  r.set_to(req.from());
  r.set_index(index);
  r.set_context(req.context());
  send(std::move(r));
}

void Raft::handle_read_index_request(const pb::Message& m) {
  // Thesis §6.4, ReadIndex.
  if (voters_.size() == 1 && voters_.count(id_)) {
    // A single voter is always the only possible leader.
    answer_read_index(m, log_.committed());
    return;
  }
  // Step 1: until the leader has committed an entry of its own term it does
  // not know the true commit index (entries of older terms in its log may be
  // committed without it knowing); park the request until then.
  if (!committed_entry_in_current_term()) {
    pending_read_index_messages_.push_back(m);
    return;
  }
  // Step 2-3: record the commit index as the read index, then confirm we
  // are still leader with a heartbeat round that a quorum acknowledges.
  if (read_pending_.count(m.context())) return;  // duplicate request
  ReadIndexStatus st;
  st.req = m;
  st.index = log_.committed();
  st.acks.insert(id_);
  read_pending_.emplace(m.context(), std::move(st));
  read_queue_.push_back(m.context());
  bcast_heartbeat(m.context());
}

void Raft::send_timeout_now(uint64_t to) {
  pb::Message m;
  m.set_type(pb::MsgTimeoutNow);
  m.set_to(to);
  send(std::move(m));
}

pb::ConfState Raft::apply_conf_change(const pb::ConfChange& cc) {
  const uint64_t nid = cc.node_id();
  bool added = false;
  switch (cc.type()) {
    case pb::ConfChangeAddNode:
      if (learners_.erase(nid)) {
        // Promotion of a caught-up learner (thesis §4.2.1): it keeps its
        // progress and starts counting toward the quorum.
        voters_.insert(nid);
        auto it = prs_.find(nid);
        if (it != prs_.end()) it->second.is_learner = false;
      } else if (voters_.insert(nid).second) {
        init_progress(nid, false);
        added = true;
      }
      break;
    case pb::ConfChangeAddLearnerNode:
      // Demoting a voter is not supported; adding a known voter as learner
      // is a no-op.
      if (!voters_.count(nid) && learners_.insert(nid).second) {
        init_progress(nid, true);
        added = true;
      }
      break;
    case pb::ConfChangeRemoveNode:
      voters_.erase(nid);
      learners_.erase(nid);
      prs_.erase(nid);
      if (lead_transferee_ == nid) abort_leader_transfer();
      break;
    case pb::ConfChangeUpdateNode:
      break;
    default:
      break;
  }
  if (state_ == StateRole::kLeader) {
    if (!voters_.count(id_) && !learners_.count(id_)) {
      // Thesis §4.2.2: a leader removed from the configuration steps down
      // once the change is committed (it is: we are applying it).  Hand over
      // to an up-to-date voter so the cluster need not wait for an election
      // timeout; otherwise the others time out as usual.
      uint64_t best = 0;
      for (uint64_t v : voters_) {
        auto it = prs_.find(v);
        if (it != prs_.end() && it->second.match == log_.last_index()) {
          best = v;
          break;
        }
      }
      if (best != 0) send_timeout_now(best);
      become_follower(term_, 0);
    } else {
      // The quorum may have shrunk (removal): entries may now be committed.
      if (maybe_commit()) bcast_append();
      if (added) send_append(nid, true);
    }
  }
  return conf_state();
}

// ---------------------------------------------------------------------------
// Ready / advance

bool Raft::has_ready() const {
  if (in_ready_) return false;
  if (!log_.unstable_entries().empty() || log_.unstable_snapshot()) return true;
  if (log_.has_next_committed_entries()) return true;
  if (!msgs_.empty() || !read_states_.empty() || !dropped_.empty()) return true;
  if (!(soft_state() == prev_soft_)) return true;
  return !hard_state_equal(hard_state(), prev_hard_);
}

Ready Raft::ready() {
  require_not_in_ready("ready");
  Ready rd;
  rd.entries = log_.unstable_entries();
  if (log_.unstable_snapshot()) rd.snapshot = *log_.unstable_snapshot();
  rd.committed_entries = log_.next_committed_entries(cfg_.max_committed_size_per_ready);
  if (!rd.committed_entries.empty()) {
    rd.committed_last_index = rd.committed_entries.back().index();
    rd.committed_payload_bytes = payload_size(rd.committed_entries);
  }
  const SoftState ss = soft_state();
  if (!(ss == prev_soft_)) rd.soft_state = ss;
  const pb::HardState hs = hard_state();
  if (!hard_state_equal(hs, prev_hard_)) {
    rd.hard_state = hs;
    rd.must_sync = hs.term() != prev_hard_.term() || hs.vote() != prev_hard_.vote();
  }
  rd.must_sync = rd.must_sync || !rd.entries.empty() || rd.snapshot.has_value();
  rd.messages = std::move(msgs_);
  msgs_.clear();
  rd.read_states = std::move(read_states_);
  read_states_.clear();
  rd.dropped_proposals = std::move(dropped_);
  dropped_.clear();
  in_ready_ = true;
  return rd;
}

void Raft::advance(const Ready& rd) {
  if (!in_ready_) fatal(id_, "advance() without a matching ready()");
  in_ready_ = false;
  if (rd.soft_state) prev_soft_ = *rd.soft_state;
  if (rd.hard_state) prev_hard_ = *rd.hard_state;
  if (rd.snapshot) {
    const uint64_t idx = rd.snapshot->metadata().index();
    log_.stable_snap_to(idx);
    if (idx > log_.applied()) log_.applied_to(idx);
  }
  if (!rd.entries.empty()) log_.stable_to(rd.entries.back().index(), rd.entries.back().term());
  if (rd.committed_last_index != 0) {
    log_.applied_to(rd.committed_last_index);
    if (state_ == StateRole::kLeader) {
      const uint64_t s = rd.committed_payload_bytes;
      uncommitted_size_ = s > uncommitted_size_ ? 0 : uncommitted_size_ - s;
    }
  }
}

// ---------------------------------------------------------------------------
// invariants

std::string Raft::check_invariants() const {
  std::string err = log_.check_invariants();
  if (!err.empty()) return "log: " + err;
  if (log_.last_term() > term_) return "last log term exceeds the current term";
  for (uint64_t l : learners_) {
    if (voters_.count(l)) return "a node is both voter and learner";
  }
  switch (state_) {
    case StateRole::kLeader: {
      if (lead_ != id_) return "leader does not name itself as lead";
      if (vote_ != id_) return "leader did not vote for itself in its term";
      if (prs_.size() != voters_.size() + learners_.size()) {
        return "leader progress does not cover the configuration";
      }
      for (const auto& [id, pr] : prs_) {
        if (!voters_.count(id) && !learners_.count(id)) return "progress for a non-member";
        if (pr.match >= pr.next) return "progress with match >= next";
        if (pr.match > log_.last_index()) return "progress match beyond the leader's log";
        if (pr.is_learner != (learners_.count(id) != 0)) return "learner flag mismatch";
      }
      auto self = prs_.find(id_);
      if (self != prs_.end() && self->second.match != log_.last_index()) {
        return "leader's own match is not its last index";
      }
      if (log_.term_or_zero(log_.last_index()) != term_) {
        return "leader's last entry is not of its term";
      }
      break;
    }
    case StateRole::kCandidate:
      if (vote_ != id_) return "candidate did not vote for itself";
      if (lead_ != 0) return "candidate knows a leader";
      break;
    case StateRole::kPreCandidate:
      if (lead_ != 0) return "pre-candidate knows a leader";
      break;
    case StateRole::kFollower:
      if (lead_ == id_) return "follower names itself as leader";
      break;
  }
  return {};
}

}  // namespace muster::raft
