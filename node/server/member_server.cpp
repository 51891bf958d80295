// node/server/member_server.cpp: see member_server.h.
#include "node/server/member_server.h"

#include <leveldb/db.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <stdexcept>

#include "base/log.h"
#include "node/server/transport.h"

namespace muster::server {

using Clock = std::chrono::steady_clock;
using storage::Code;
using storage::Status;

namespace {

std::string hex(uint64_t id) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(id));
  return buf;
}

// Every error text here is etcd's (rpctypes), so clients that match on them
// keep working.
Status timed_out() { return Status(Code::kUnavailable, "etcdserver: request timed out"); }
Status no_leader() { return Status(Code::kUnavailable, "etcdserver: no leader"); }
Status stopped() { return Status(Code::kUnavailable, "etcdserver: server stopped"); }
Status too_many() { return Status(Code::kUnavailable, "etcdserver: too many requests"); }

// etcd's maxGapBetweenApplyAndCommitIndex: how far the apply side may trail
// the commit index before proposals are refused.
constexpr uint64_t kMaxApplyGap = 5000;

Status dropped(raft::DropReason r) {
  switch (r) {
    case raft::DropReason::kNoLeader:
      return no_leader();
    case raft::DropReason::kLeaderTransferInProgress:
      return Status(Code::kUnavailable, "etcdserver: leader changed");
    case raft::DropReason::kUncommittedSizeLimit:
      return too_many();
    case raft::DropReason::kNotMember:
      return Status(Code::kFailedPrecondition,
                    "etcdserver: the member has been permanently removed from the cluster");
    default:
      return Status(Code::kUnavailable,
                    std::string("etcdserver: proposal dropped: ") + raft::to_string(r));
  }
}

// Feeds a received state machine into a SnapshotInstaller; complete, the
// installer goes to the driver, which installs it when the core hands the
// matching snapshot over.
class InstallerSink final : public SnapshotSink {
 public:
  InstallerSink(Driver& driver, std::unique_ptr<storage::SnapshotInstaller> inst)
      : driver_(driver), inst_(std::move(inst)) {}
  Status add(const pb::SnapshotChunk& chunk) override { return inst_->add(chunk); }
  void finish(bool ok) override {
    if (ok && inst_->complete()) driver_.queue_install(std::move(inst_));
    inst_.reset();
  }

 private:
  Driver& driver_;
  std::unique_ptr<storage::SnapshotInstaller> inst_;
};

}  // namespace

MemberServer::MemberServer(MemberServerOptions options, std::vector<InitialMember> initial,
                           Transport& transport, metrics::Registry& metrics)
    : options_(std::move(options)), transport_(transport) {
  storage::MemberStorage::Options so;
  so.kv.auth_token_ttl_ms = options_.auth_token_ttl_ms;
  auto st = storage::MemberStorage::open(options_.data_dir, so, &storage_);
  if (!st) throw std::runtime_error("cannot open member storage: " + st.message());
  existing_state_ = storage_->log().last_index() > 0 || storage_->kv().applied_index() > 0;
  if (!existing_state_ && !initial.empty()) {
    write_bootstrap_log(storage_->log(), initial);
    // Known to the transport from the start, not only once the bootstrap
    // entries are applied: a peer that dials us first is not refused as
    // unknown (and made to back off) meanwhile.
    for (const auto& m : initial)
      if (m.id != options_.member_id) transport_.add_peer(m.id, m.peer_urls);
  }
  if (existing_state_ && options_.force_new_cluster)
    force_new_cluster(*storage_, options_.member_id);

  // Request IDs: the member's ID in the top 16 bits, a time-seeded counter
  // below, so that IDs of different members and of restarts do not collide.
  request_seq_ =
      (options_.member_id << 48) ^
      (static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) &
       0xffffffffffffull);

  raft::Config rc;
  rc.id = options_.member_id;
  rc.heartbeat_tick = 1;
  rc.election_tick =
      std::max<int>(2, static_cast<int>(options_.election_ms / options_.heartbeat_ms));
  rc.applied = storage_->raft_applied_index();
  rc.pre_vote = options_.pre_vote;
  rc.check_quorum = true;
  rc.max_size_per_msg = 1 << 20;
  rc.max_inflight_msgs = 512;
  rc.max_uncommitted_entries_size = 1ull << 30;
  rc.seed = std::random_device{}() ^ options_.member_id;
  log_view_ = std::make_unique<LogView>(*storage_);
  raft_ = std::make_unique<raft::Raft>(rc, log_view_.get());

  Membership::Options mo;
  mo.member_id = options_.member_id;
  mo.strict_reconfig_check = options_.strict_reconfig_check;
  mo.on_removed = [this](const char* learned_from) { note_removed(learned_from); };
  membership_ = std::make_unique<Membership>(std::move(mo), *storage_, transport_);
  membership_->load(raft_->conf_state());
  membership_->sync_peers();
  reachability_ = std::make_unique<PeerReachability>(options_.member_id, [this](uint64_t id) {
    return transport_.peer_status(id).received_bytes;
  });

  applier_ = std::make_unique<Applier>(*storage_, *membership_, waits_, metrics);

  LeaderChores::Options co;
  co.member_id = options_.member_id;
  co.name = options_.name;
  co.client_urls = options_.client_urls;
  co.heartbeat_ms = options_.heartbeat_ms;
  co.request_timeout = std::chrono::milliseconds(options_.request_timeout_ms);
  co.auto_compaction_period = options_.auto_compaction_period;
  co.auto_compaction_revisions = options_.auto_compaction_revisions;
  chores_ = std::make_unique<LeaderChores>(
      std::move(co), *storage_,
      [this](pb::InternalRequest req, std::chrono::milliseconds timeout, ApplyDone done) {
        submit(std::move(req), timeout, std::move(done));
      });

  forwarder_ = std::make_unique<LeaderForwarder>(
      options_.member_id, std::chrono::milliseconds(options_.request_timeout_ms),
      [this](uint64_t to, transportpb::Forward f) { transport_.send_forward(to, std::move(f)); },
      [this](transportpb::ForwardKind kind, std::string body, LeaderForwarder::Reply reply) {
        serve_forwarded(kind, std::move(body), std::move(reply));
      });

  DriverOptions dopts;
  dopts.member_id = options_.member_id;
  dopts.heartbeat_ms = options_.heartbeat_ms;
  dopts.election_ms = options_.election_ms;
  dopts.snapshot_count = options_.snapshot_count;
  dopts.snapshot_catchup_entries = options_.snapshot_catchup_entries;
  dopts.initial_election_tick_advance = options_.initial_election_tick_advance;
  dopts.existing_state = existing_state_;
  dopts.unsafe_no_fsync = options_.unsafe_no_fsync;
  driver_ = std::make_unique<Driver>(dopts, *raft_, *storage_, transport_, metrics, hooks());

  transport_.set_message_handler([this](raftpb::Message m) { driver_->step(std::move(m)); });
  transport_.set_forward_handler(
      [this](uint64_t from, transportpb::Forward f) { forwarder_->receive(from, std::move(f)); });
  transport_.set_snapshot_handler([this](const raftpb::Message& m) { return snapshot_sink(m); });
  // A peer that refuses us as removed (we missed the commit of our own
  // removal: the leader stopped sending before we learned it) stops us, as
  // etcd's 410 Gone does.
  transport_.set_removed_handler([this] { note_removed("a peer"); });
  transport_.set_unreachable_handler([this](uint64_t peer) { driver_->report_unreachable(peer); });
}

MemberServer::~MemberServer() {
  stop(false);
  transport_.set_message_handler(nullptr);
  transport_.set_forward_handler(nullptr);
  transport_.set_snapshot_handler(nullptr);
  transport_.set_removed_handler(nullptr);
  transport_.set_unreachable_handler(nullptr);
}

DriverHooks MemberServer::hooks() {
  DriverHooks h;
  h.on_soft_state = [this](const raft::SoftState& now, uint64_t) {
    // A new leader restarts every lease's clock (as etcd's lessor Promote):
    // the old leader's view of keepalives is not ours.
    if (now.role == raft::StateRole::kLeader) storage_->kv().reset_lease_expiries();
  };
  h.apply = [this](std::vector<raftpb::Entry> entries) { applier_->enqueue(std::move(entries)); };
  h.drain = [this] { applier_->drain(); };
  h.apply_now = [this](const std::vector<raftpb::Entry>& entries) {
    applier_->apply(entries, *raft_);
  };
  h.on_installed = [this](const raftpb::SnapshotMetadata& meta) {
    membership_->adopt_installed(*raft_, meta.conf_state());
    applier_->reload_applied();
    membership_->sync_peers();
  };
  h.on_read_states = [this](const std::vector<raft::ReadState>& states) {
    for (const auto& rs : states) waits_.read_index_known(rs.context, rs.index);
    // Reads whose index is applied are linearizable now.
    waits_.applied(applier_->applied());
  };
  h.on_rejected = [this](uint64_t id, raft::DropReason why) { waits_.fail(id, dropped(why)); };
  h.on_dropped = [this](const raft::DroppedProposal& d) {
    for (const auto& e : d.entries) {
      pb::InternalRequest req;
      if (e.type() == raftpb::EntryNormal && req.ParseFromString(e.data()))
        waits_.fail(req.id(), dropped(d.reason));
    }
  };
  h.after_turn = [this](Clock::time_point) {
    // Publish as soon as a leader is known (clients wait for it).
    chores_->maybe_publish(driver_->leader() != 0);
    finish_leader_moves();
  };
  h.housekeeping = [this](Clock::time_point now) {
    waits_.expire(now, timed_out());
    forwarder_->poll(now, driver_->leader());
    chores_->run(now, raft_->role() == raft::StateRole::kLeader, driver_->leader() != 0,
                 raft_->term());
    membership_->track_peer_activity();
    const auto& cs = membership_->conf_state();
    reachability_->sample(now, raft_->role() == raft::StateRole::kLeader,
                          std::vector<uint64_t>(cs.voters().begin(), cs.voters().end()),
                          std::vector<uint64_t>(cs.learners().begin(), cs.learners().end()));
  };
  return h;
}

void MemberServer::start() {
  applier_->start();
  driver_->start();
}

void MemberServer::stop(bool transfer_leadership) {
  driver_->stop(transfer_leadership);
  applier_->stop();
  // Everyone still waiting learns the server stopped.
  std::vector<LeaderMove> moves;
  {
    std::lock_guard lock(moves_mu_);
    moves.swap(leader_moves_);
  }
  forwarder_->fail_all(stopped());
  for (auto& m : moves) m.done(stopped());
  waits_.fail_all(stopped());
}

uint64_t MemberServer::next_request_id() { return ++request_seq_; }

void MemberServer::submit(pb::InternalRequest req, std::chrono::milliseconds timeout,
                          ApplyDone done) {
  const uint64_t id = next_request_id();
  req.set_id(id);
  if (!driver_->running()) return done(stopped(), {});
  // Back-pressure, as etcd's: while the apply side is far behind what is
  // committed, new proposals are refused rather than queued without bound.
  const uint64_t committed = driver_->committed(), applied = applier_->applied();
  if (committed > applied && committed - applied > kMaxApplyGap) return done(too_many(), {});
  waits_.add_proposal(id, std::move(done), Clock::now() + timeout);
  driver_->propose(req.SerializeAsString(), id);
}

void MemberServer::propose(pb::InternalRequest req, ApplyDone done) {
  submit(std::move(req), std::chrono::milliseconds(options_.request_timeout_ms), std::move(done));
}

void MemberServer::change_member(pb::InternalRequest req, ApplyDone done) {
  const uint64_t id = next_request_id();
  req.set_id(id);
  if (!driver_->running()) return done(stopped(), {});
  waits_.add_proposal(id, std::move(done),
                      Clock::now() + std::chrono::milliseconds(options_.request_timeout_ms));
  driver_->post([this, req = std::move(req)]() mutable { start_member_change(std::move(req)); });
}

void MemberServer::start_member_change(pb::InternalRequest req) {
  const uint64_t id = req.id();
  if (req.has_member_promote() && raft_->role() != raft::StateRole::kLeader) {
    const uint64_t lead = driver_->leader();
    if (lead == 0) return waits_.fail(id, no_leader());
    forwarder_->call(lead, transportpb::FORWARD_MEMBER_PROMOTE,
                     req.member_promote().SerializeAsString(), [this, id](Status st, std::string) {
                       if (!st) return waits_.fail(id, st);
                       // The leader answered after applying the promotion; once our
                       // applied index passes a read barrier, our member list shows it too.
                       read_barrier([this, id](Status st2) {
                         if (!st2) return waits_.fail(id, st2);
                         storage::KvStore::ApplyResult r;
                         for (auto& m : storage_->kv().members())
                           *r.response.mutable_member_promote()->add_members() = std::move(m);
                         waits_.finish(id, Status(), std::move(r));
                       });
                     });
    return;
  }
  raftpb::ConfChange cc;
  Status st = membership_->check(req, &cc, *raft_);
  if (!st) return waits_.fail(id, st);
  auto r = raft_->propose_conf_change(cc);
  if (r == raft::DropReason::kConfChangePending)
    return waits_.fail(id, Status(Code::kUnavailable,
                                  "etcdserver: a previous membership change is not applied yet"));
  if (r != raft::DropReason::kNone) waits_.fail(id, dropped(r));
}

void MemberServer::read_barrier(std::function<void(Status)> done) {
  if (!driver_->running()) return done(stopped());
  if (driver_->leader() == 0) return done(no_leader());
  std::string ctx = std::to_string(options_.member_id) + "/" + std::to_string(++read_seq_);
  waits_.add_read(ctx, std::move(done),
                  Clock::now() + std::chrono::milliseconds(options_.request_timeout_ms));
  driver_->read_index(std::move(ctx));
}

bool MemberServer::lessor_primary() const {
  return driver_->leader() == options_.member_id &&
         storage_->kv().applied_term() >= driver_->term();
}

void MemberServer::lease_keepalive(int64_t id, std::function<void(Status, int64_t)> done) {
  // Always through the leader forwarder, which serves a call to this member
  // here (serve_forwarded): one path whether this member leads or not.
  if (!driver_->running()) return done(stopped(), 0);
  pb::LeaseKeepAliveRequest req;
  req.set_id(id);
  forwarder_->call(driver_->leader(), transportpb::FORWARD_LEASE_KEEPALIVE,
                   req.SerializeAsString(),
                   [done = std::move(done)](Status st, std::string body) {
                     pb::LeaseKeepAliveResponse resp;
                     if (st && !resp.ParseFromString(body))
                       st = Status(Code::kInternal, "etcdserver: malformed forwarded answer");
                     done(st, st ? resp.ttl() : 0);
                   });
}

void MemberServer::lease_time_to_live(
    const pb::LeaseTimeToLiveRequest& req,
    std::function<void(Status, pb::LeaseTimeToLiveResponse)> done) {
  if (!driver_->running()) return done(stopped(), {});
  forwarder_->call(driver_->leader(), transportpb::FORWARD_LEASE_TIME_TO_LIVE,
                   req.SerializeAsString(),
                   [done = std::move(done)](Status st, std::string body) {
                     pb::LeaseTimeToLiveResponse resp;
                     if (st && !resp.ParseFromString(body))
                       st = Status(Code::kInternal, "etcdserver: malformed forwarded answer");
                     done(st, std::move(resp));
                   });
}

void MemberServer::as_lessor(std::function<void(bool)> then) {
  read_barrier([this, then = std::move(then)](Status st) { then(st && lessor_primary()); });
}

void MemberServer::serve_forwarded(transportpb::ForwardKind kind, std::string body,
                                   LeaderForwarder::Reply reply) {
  // Only the leader answers; anyone else tells the asker to look again.
  const Status not_leader(Code::kFailedPrecondition, LeaderForwarder::kNotLeader);
  if (driver_->leader() != options_.member_id) return reply(not_leader, {});
  const Status malformed(Code::kInvalidArgument, "etcdserver: malformed forwarded request");
  switch (kind) {
    case transportpb::FORWARD_LEASE_KEEPALIVE: {
      pb::LeaseKeepAliveRequest req;
      if (!req.ParseFromString(body)) return reply(malformed, {});
      return as_lessor([this, req, reply, not_leader](bool lessor) {
        if (!lessor) return reply(not_leader, {});
        int64_t ttl = 0;
        Status st = storage_->kv().lease_keepalive(req.id(), &ttl);
        if (!st) return reply(st, {});
        pb::LeaseKeepAliveResponse resp;
        resp.set_id(req.id());
        resp.set_ttl(ttl);
        reply({}, resp.SerializeAsString());
      });
    }
    case transportpb::FORWARD_LEASE_TIME_TO_LIVE: {
      pb::LeaseTimeToLiveRequest req;
      if (!req.ParseFromString(body)) return reply(malformed, {});
      return as_lessor([this, req, reply, not_leader](bool lessor) {
        if (!lessor) return reply(not_leader, {});
        pb::LeaseTimeToLiveResponse resp;
        Status st = storage_->kv().lease_time_to_live(req, &resp);
        if (!st) return reply(st, {});
        reply({}, resp.SerializeAsString());
      });
    }
    case transportpb::FORWARD_MEMBER_PROMOTE: {
      pb::InternalRequest req;
      if (!req.mutable_member_promote()->ParseFromString(body)) return reply(malformed, {});
      return change_member(std::move(req), [reply](Status st, storage::KvStore::ApplyResult r) {
        if (!st) return reply(st, {});
        reply({}, r.response.member_promote().SerializeAsString());
      });
    }
    default:
      return reply(Status(Code::kInvalidArgument, "etcdserver: unknown forwarded request"), {});
  }
}

void MemberServer::move_leader(uint64_t target, std::function<void(Status)> done) {
  if (driver_->leader() != options_.member_id)
    return done(Status(Code::kFailedPrecondition, LeaderForwarder::kNotLeader));
  bool voter = false;
  for (const auto& m : storage_->kv().members())
    if (m.id() == target && !m.islearner()) voter = true;
  if (!voter) return done(Status(Code::kFailedPrecondition, "etcdserver: bad leader transferee"));
  if (target == options_.member_id) return done({});
  {
    std::lock_guard lock(moves_mu_);
    leader_moves_.push_back(
        {target, std::move(done),
         Clock::now() + std::chrono::milliseconds(options_.request_timeout_ms)});
  }
  driver_->transfer_leadership(target);
}

void MemberServer::finish_leader_moves() {
  const uint64_t lead = driver_->leader();
  const auto now = Clock::now();
  std::vector<std::pair<std::function<void(Status)>, Status>> answers;
  {
    std::lock_guard lock(moves_mu_);
    std::erase_if(leader_moves_, [&](LeaderMove& m) {
      if (m.target == lead) {
        answers.emplace_back(std::move(m.done), Status());
        return true;
      }
      if (now >= m.deadline) {
        answers.emplace_back(
            std::move(m.done),
            Status(Code::kUnavailable,
                   "etcdserver: request timed out, leader transfer took too long"));
        return true;
      }
      return false;
    });
  }
  for (auto& [done, st] : answers) done(st);
}

MemberStatus MemberServer::status() const {
  MemberStatus s;
  s.cluster_id = options_.cluster_id;
  s.member_id = options_.member_id;
  s.leader = driver_->leader();
  s.raft_term = driver_->term();
  s.raft_index = driver_->last_index();
  s.raft_applied_index = applier_->applied();
  s.revision = storage_->kv().revision();
  s.db_size = chores_->db_size();
  s.is_learner = membership_->is_learner();
  s.version = "3.4.0";
  return s;
}

uint64_t MemberServer::subscribe(std::function<void(const std::vector<pb::Event>&)> cb) {
  return applier_->subscribe(std::move(cb));
}

void MemberServer::unsubscribe(uint64_t id) { applier_->unsubscribe(id); }

// LevelDB's whole-range compaction: rewrites the tables without deleted and
// overwritten entries (what etcd's defragment achieves for bolt).  Called on
// an API thread: MemberStorage keeps it off a database being replaced.
storage::Status MemberServer::defragment() { return storage_->defragment(); }

std::unique_ptr<SnapshotSink> MemberServer::snapshot_sink(const raftpb::Message& m) {
  std::unique_ptr<storage::SnapshotInstaller> inst;
  auto st = storage_->begin_install(&inst);
  if (!st) {
    log::error("raft", "cannot receive a snapshot", {{"from", m.from()}, {"error", st.message()}});
    return nullptr;
  }
  log::info("raft", "receiving snapshot",
            {{"from", m.from()}, {"index", m.snapshot().metadata().index()}});
  return std::make_unique<InstallerSink>(*driver_, std::move(inst));
}

void MemberServer::note_removed(const char* learned_from) {
  if (removed_.exchange(true)) return;
  log::warn("etcdserver", "the member has been permanently removed from the cluster",
            {{"local-member-id", hex(options_.member_id)}, {"learned-from", learned_from}});
  if (options_.on_removed) options_.on_removed();
}

}  // namespace muster::server
