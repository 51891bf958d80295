#include "node/server/raft_node.h"

#include <leveldb/db.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>

#include "net/log.h"
#include "net/url.h"
#include "node/bootstrap/ids.h"
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

int64_t monotonic_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
      .count();
}

// Every error text here is etcd's (rpctypes), so clients that match on them
// keep working.
Status timed_out() { return Status(Code::kUnavailable, "etcdserver: request timed out"); }
Status no_leader() { return Status(Code::kUnavailable, "etcdserver: no leader"); }
Status stopped() { return Status(Code::kUnavailable, "etcdserver: server stopped"); }

Status dropped(raft::DropReason r) {
  switch (r) {
    case raft::DropReason::kNoLeader:
      return no_leader();
    case raft::DropReason::kLeaderTransferInProgress:
      return Status(Code::kUnavailable, "etcdserver: leader changed");
    case raft::DropReason::kUncommittedSizeLimit:
      return Status(Code::kUnavailable, "etcdserver: too many requests");
    case raft::DropReason::kNotMember:
      return Status(Code::kFailedPrecondition,
                    "etcdserver: the member has been permanently removed from the cluster");
    default:
      return Status(Code::kUnavailable,
                    std::string("etcdserver: proposal dropped: ") + raft::to_string(r));
  }
}

// True when a member other than `except` already has one of `urls`.
bool peer_urls_taken(const std::vector<pb::Member>& members,
                     const google::protobuf::RepeatedPtrField<std::string>& urls, uint64_t except) {
  for (const auto& x : members) {
    if (x.id() == except) continue;
    for (const auto& u : x.peerurls())
      for (const auto& v : urls)
        if (u == v) return true;
  }
  return false;
}

}  // namespace

RaftNode::RaftNode(RaftNodeOptions options, std::vector<InitialMember> initial,
                   Transport& transport, metrics::Registry& metrics)
    : options_(std::move(options)), transport_(transport), metrics_(metrics) {
  storage::MemberStorage::Options so;
  auto st = storage::MemberStorage::open(options_.data_dir, so, &storage_);
  if (!st) throw std::runtime_error("cannot open member storage: " + st.message());
  storage_ptr_ = storage_.get();
  existing_state_ = storage_->log().last_index() > 0 || storage_->kv().applied_index() > 0;
  if (!existing_state_ && !initial.empty()) {
    write_bootstrap(initial);
    // Known to the transport from the start, not only once the bootstrap
    // entries are applied: a peer that dials us first is not refused as
    // unknown (and made to back off) meanwhile.
    for (const auto& m : initial)
      if (m.id != options_.member_id) transport_.add_peer(m.id, m.peer_urls);
  }
  if (existing_state_ && options_.force_new_cluster) force_new_cluster();

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
  raft_ = std::make_unique<raft::Raft>(rc, &log_view_);
  conf_state_ = raft_->conf_state();
  note_conf_state();
  raftpb::Snapshot snap;
  if (storage_->log().snapshot(&snap) == raft::StorageError::kOk)
    snapshot_index_ = snap.metadata().index();
  applied_ = storage_->kv().applied_index();
  last_index_ = storage_->log().last_index();
  term_ = raft_->term();
  measure_db_size();
  sync_peers();

  metrics_.counter("etcd_server_leader_changes_seen_total", "The number of leader changes seen.");
  metrics_.histogram("etcd_disk_wal_fsync_duration_seconds",
                     "The latency distributions of fsync called by WAL.",
                     metrics::exponential_buckets(0.001, 2, 14));
  metrics_.histogram("etcd_disk_backend_commit_duration_seconds",
                     "The latency distributions of commit called by backend.",
                     metrics::exponential_buckets(0.001, 2, 14));
}

RaftNode::~RaftNode() { stop(false); }

void RaftNode::write_bootstrap(const std::vector<InitialMember>& initial) {
  // etcd's bootstrap of a new cluster: every member starts with the same log,
  // one ConfChangeAddNode per initial member at term 1, all committed.  Each
  // entry's context is the member record, applied like any later "member add".
  std::vector<InitialMember> sorted = initial;
  std::sort(sorted.begin(), sorted.end(),
            [](const InitialMember& a, const InitialMember& b) { return a.id < b.id; });
  std::vector<raftpb::Entry> entries;
  uint64_t index = 0;
  for (const auto& m : sorted) {
    pb::Member rec;
    rec.set_id(m.id);
    rec.set_name(m.name);
    for (const auto& u : m.peer_urls) rec.add_peerurls(u);
    // No client URLs here: every member must write byte-identical bootstrap
    // entries (same index and term means same entry), and only the local
    // member's client URLs are known.  Each member publishes its own later.
    raftpb::ConfChange cc;
    cc.set_type(raftpb::ConfChangeAddNode);
    cc.set_node_id(m.id);
    cc.set_context(rec.SerializeAsString());
    raftpb::Entry e;
    e.set_type(raftpb::EntryConfChange);
    e.set_term(1);
    e.set_index(++index);
    e.set_data(cc.SerializeAsString());
    entries.push_back(std::move(e));
  }
  raftpb::HardState hs;
  hs.set_term(1);
  hs.set_commit(index);
  auto st = storage_->log().save(&hs, entries, true);
  if (!st) throw std::runtime_error("cannot write the bootstrap log: " + st.message());
}

void RaftNode::force_new_cluster() {
  // etcd's --force-new-cluster: keep the data, forget the other members.
  // Uncommitted entries are dropped (a new entry at commit+1 truncates them),
  // then one committed ConfChangeRemoveNode per other member is appended, so
  // applying the log leaves this member alone in the configuration.
  auto& log_store = storage_->log();
  raftpb::HardState hs = log_store.hard_state();
  std::set<uint64_t> ids;
  for (const auto& m : storage_->kv().members()) ids.insert(m.id());
  std::vector<raftpb::Entry> committed;
  uint64_t applied = storage_->kv().applied_index();
  if (hs.commit() > applied)
    log_store.entries(applied + 1, hs.commit() + 1, UINT64_MAX, &committed);
  for (const auto& e : committed) {
    raftpb::ConfChange cc;
    if (e.type() != raftpb::EntryConfChange || !cc.ParseFromString(e.data())) continue;
    if (cc.type() == raftpb::ConfChangeRemoveNode)
      ids.erase(cc.node_id());
    else
      ids.insert(cc.node_id());
  }
  std::vector<raftpb::Entry> entries;
  uint64_t index = hs.commit();
  for (uint64_t id : ids) {
    if (id == options_.member_id) continue;
    raftpb::ConfChange cc;
    cc.set_type(raftpb::ConfChangeRemoveNode);
    cc.set_node_id(id);
    raftpb::Entry e;
    e.set_type(raftpb::EntryConfChange);
    e.set_term(std::max<uint64_t>(hs.term(), 1));
    e.set_index(++index);
    e.set_data(cc.SerializeAsString());
    entries.push_back(std::move(e));
  }
  if (entries.empty()) return;
  hs.set_commit(index);
  hs.set_term(std::max<uint64_t>(hs.term(), 1));
  auto st = log_store.save(&hs, entries, true);
  if (!st) throw std::runtime_error("--force-new-cluster: cannot write the log: " + st.message());
  log::warn("etcdserver", "forcing restart member in a new cluster: other members removed",
            {{"removed", entries.size()}, {"commit-index", index}});
}

void RaftNode::sync_peers() {
  for (const auto& m : storage_->kv().members()) {
    if (m.id() == options_.member_id) continue;
    transport_.add_peer(m.id(), {m.peerurls().begin(), m.peerurls().end()});
  }
  for (uint64_t id : storage_->kv().removed_members()) transport_.mark_removed(id);
}

void RaftNode::start() {
  running_ = true;
  thread_ = std::thread([this] { run(); });
}

void RaftNode::stop(bool transfer_leadership) {
  if (!running_.load()) {
    if (thread_.joinable()) thread_.join();
    return;
  }
  if (transfer_leadership && leader_.load() == options_.member_id) {
    {
      std::lock_guard lock(mu_);
      inbox_.transfer = true;
    }
    cv_.notify_one();
    auto deadline = Clock::now() + std::chrono::milliseconds(options_.election_ms);
    while (Clock::now() < deadline && leader_.load() == options_.member_id)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  running_ = false;
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  // Everyone still waiting learns the server stopped.
  std::map<uint64_t, PendingProposal> pending;
  std::map<std::string, PendingRead> reads;
  std::multimap<uint64_t, PendingRead> applying;
  {
    std::lock_guard lock(mu_);
    pending.swap(pending_);
    reads.swap(reads_waiting_index_);
    applying.swap(reads_waiting_apply_);
  }
  for (auto& [id, p] : pending) p.done(stopped(), {});
  for (auto& [c, r] : reads) r.done(stopped());
  for (auto& [i, r] : applying) r.done(stopped());
}

uint64_t RaftNode::next_request_id() { return ++request_seq_; }

void RaftNode::propose(pb::InternalRequest req, ApplyDone done) {
  uint64_t id = next_request_id();
  req.set_id(id);
  if (!running_.load()) return done(stopped(), {});
  {
    std::lock_guard lock(mu_);
    pending_.emplace(
        id, PendingProposal{std::move(done),
                            Clock::now() + std::chrono::milliseconds(options_.request_timeout_ms)});
    inbox_.proposals.emplace_back(req.SerializeAsString(), id);
  }
  cv_.notify_one();
}

void RaftNode::change_member(pb::InternalRequest req, ApplyDone done) {
  uint64_t id = next_request_id();
  req.set_id(id);
  if (!running_.load()) return done(stopped(), {});
  {
    std::lock_guard lock(mu_);
    pending_.emplace(
        id, PendingProposal{std::move(done),
                            Clock::now() + std::chrono::milliseconds(options_.request_timeout_ms)});
    inbox_.member_changes.push_back(std::move(req));
  }
  cv_.notify_one();
}

void RaftNode::read_barrier(std::function<void(Status)> done) {
  if (!running_.load()) return done(stopped());
  if (leader_.load() == 0) return done(no_leader());
  {
    std::lock_guard lock(mu_);
    std::string ctx = std::to_string(options_.member_id) + "/" + std::to_string(++read_seq_);
    reads_waiting_index_.emplace(
        ctx, PendingRead{std::move(done),
                         Clock::now() + std::chrono::milliseconds(options_.request_timeout_ms)});
    inbox_.reads.push_back(ctx);
  }
  cv_.notify_one();
}

void RaftNode::lease_keepalive(int64_t id, std::function<void(Status, int64_t)> done) {
  uint64_t lead = leader_.load();
  if (lead == 0) return done(no_leader(), 0);
  if (lead == options_.member_id) {
    int64_t ttl = 0;
    auto st = storage_->kv().lease_keepalive(id, &ttl);
    return done(st, ttl);
  }
  if (!options_.forward_keepalive)
    return done(Status(Code::kUnavailable, "etcdserver: not leader"), 0);
  options_.forward_keepalive(lead, id, std::move(done));
}

void RaftNode::lease_time_to_live(const pb::LeaseTimeToLiveRequest& req,
                                  std::function<void(Status, pb::LeaseTimeToLiveResponse)> done) {
  uint64_t lead = leader_.load();
  if (lead == 0) return done(no_leader(), {});
  if (lead == options_.member_id || !options_.forward_time_to_live) {
    pb::LeaseTimeToLiveResponse resp;
    auto st = storage_->kv().lease_time_to_live(req, &resp);
    return done(st, std::move(resp));
  }
  options_.forward_time_to_live(lead, req, std::move(done));
}

MemberStatus RaftNode::status() const {
  MemberStatus s;
  s.cluster_id = options_.cluster_id;
  s.member_id = options_.member_id;
  s.leader = leader_.load();
  s.raft_term = term_.load();
  s.raft_index = last_index_.load();
  s.raft_applied_index = applied_.load();
  s.revision = storage_->kv().revision();
  s.db_size = db_size_.load();
  s.is_learner = is_learner_.load();
  s.version = "3.4.0";
  return s;
}

uint64_t RaftNode::subscribe(std::function<void(const std::vector<pb::Event>&)> cb) {
  std::lock_guard lock(mu_);
  uint64_t id = next_subscriber_++;
  subscribers_.emplace(id, std::move(cb));
  return id;
}

void RaftNode::unsubscribe(uint64_t id) {
  std::lock_guard lock(mu_);
  subscribers_.erase(id);
}

// LevelDB's whole-range compaction: rewrites the tables without deleted and
// overwritten entries (what etcd's defragment achieves for bolt).  Called on
// an API thread: MemberStorage keeps it off a database being replaced.
storage::Status RaftNode::defragment() { return storage_->defragment(); }

void RaftNode::step(raftpb::Message m) {
  {
    std::lock_guard lock(mu_);
    inbox_.messages.push_back(std::move(m));
  }
  cv_.notify_one();
}

RaftNode::ApplyDone RaftNode::take_pending(uint64_t id) {
  std::lock_guard lock(mu_);
  auto it = pending_.find(id);
  if (it == pending_.end()) return {};
  ApplyDone done = std::move(it->second.done);
  pending_.erase(it);
  return done;
}

void RaftNode::finish(uint64_t id, Status st, storage::KvStore::ApplyResult result) {
  if (ApplyDone done = take_pending(id)) done(st, std::move(result));
}

void RaftNode::fail(uint64_t id, Status st) { finish(id, std::move(st), {}); }

void RaftNode::note_removed(const char* learned_from) {
  if (removed_.exchange(true)) return;
  log::warn("etcdserver", "the member has been permanently removed from the cluster",
            {{"local-member-id", hex(options_.member_id)}, {"learned-from", learned_from}});
  if (options_.on_removed) options_.on_removed();
}

void RaftNode::run() {
  auto tick_every = std::chrono::milliseconds(options_.heartbeat_ms);
  auto next_tick = Clock::now() + tick_every;
  auto next_housekeeping = Clock::now();
  const auto started = Clock::now();
  bool first_election_pending = true;
  // What is ready at start (a new cluster's committed bootstrap entries)
  // is handled before the first wait: the configuration and the peers are
  // known at once, not a heartbeat later.
  while (raft_->has_ready()) {
    raft::Ready rd = raft_->ready();
    handle_ready(rd);
    raft_->advance(rd);
  }
  // A peer that refuses us as removed (we missed the commit of our own
  // removal: the leader stopped sending before we learned it) stops us, as
  // etcd's 410 Gone does.
  transport_.set_removed_handler([this] { note_removed("a peer"); });
  transport_.set_unreachable_handler([this](uint64_t peer) {
    {
      std::lock_guard lock(mu_);
      inbox_.unreachable.push_back(peer);
    }
    cv_.notify_one();
  });
  while (running_.load()) {
    Inbox in;
    {
      std::unique_lock lock(mu_);
      // While the first election waits for peers to connect, look again
      // every few milliseconds rather than every heartbeat.
      auto wake_at = next_tick;
      if (first_election_pending)
        wake_at = std::min(wake_at, Clock::now() + std::chrono::milliseconds(2));
      cv_.wait_until(lock, wake_at, [&] {
        return !running_.load() || !inbox_.messages.empty() || !inbox_.proposals.empty() ||
               !inbox_.reads.empty() || !inbox_.snapshot_reports.empty() ||
               !inbox_.unreachable.empty() || !inbox_.installs.empty() ||
               !inbox_.member_changes.empty() || inbox_.transfer;
      });
      std::swap(in, inbox_);
    }
    if (!running_.load()) break;
    // The transport hands a received state machine over before the MsgSnap
    // that describes it, so it is here before the core asks for it.
    for (auto& inst : in.installs) pending_install_ = std::move(inst);
    for (auto& m : in.messages) raft_->step(m);
    for (auto& [data, id] : in.proposals) {
      auto r = raft_->propose(std::move(data));
      if (r != raft::DropReason::kNone) fail(id, dropped(r));
    }
    for (auto& req : in.member_changes) start_member_change(std::move(req));
    for (auto& ctx : in.reads) raft_->read_index(ctx);
    for (auto& [peer, failed] : in.snapshot_reports) raft_->report_snapshot(peer, failed);
    for (auto peer : in.unreachable) raft_->report_unreachable(peer);
    if (in.transfer && raft_->role() == raft::StateRole::kLeader) {
      uint64_t best = 0, best_match = 0;
      for (uint64_t v : conf_state_.voters()) {
        if (v == options_.member_id) continue;
        const auto* p = raft_->progress(v);
        if (p && p->match >= best_match) {
          best = v;
          best_match = p->match;
        }
      }
      if (best) raft_->transfer_leadership(best);
    }
    if (first_election_pending &&
        (maybe_hasten_first_election() || Clock::now() - started > std::chrono::seconds(5)))
      first_election_pending = false;  // (etcd gives up waiting for peers after 5 s too)
    auto now = Clock::now();
    while (now >= next_tick) {
      raft_->tick();
      next_tick += tick_every;
    }
    while (raft_->has_ready()) {
      raft::Ready rd = raft_->ready();
      handle_ready(rd);
      raft_->advance(rd);
    }
    // Publish as soon as a leader is known (clients wait for it).
    if (!published_.load() && leader_.load() != 0) maybe_publish();
    if (now >= next_housekeeping) {
      next_housekeeping = now + std::chrono::milliseconds(100);
      fail_timeouts();
      if (raft_->role() == raft::StateRole::kLeader) {
        expire_leases();
        maybe_auto_compact();
      } else {
        revision_samples_.clear();
      }
      maybe_publish();
      track_peer_activity();
      if (now >= next_db_size_) {
        next_db_size_ = now + std::chrono::seconds(1);
        measure_db_size();
      }
    }
  }
}

bool RaftNode::maybe_hasten_first_election() {
  // etcd's initial election tick advance waits until peers are connected,
  // then skips all but two ticks of the election timeout.  Here a quorum of
  // voters must be connected (a lone member that advanced would only
  // pre-vote in vain).  On a brand-new cluster, the voter with the lowest ID
  // campaigns at once instead: every member agrees who that is, so the
  // first election is not a race of timeouts; with pre-vote it cannot
  // disrupt anything, and the others' shortened timeouts remain the
  // fallback if it is down.
  if (raft_->role() == raft::StateRole::kLeader || leader_.load() != 0) return true;
  const int voters = conf_state_.voters_size();
  if (voters == 0) return false;  // joining: the configuration comes from the leader
  bool voter = false;
  int connected = 0;
  uint64_t lowest = UINT64_MAX;
  for (uint64_t v : conf_state_.voters()) {
    lowest = std::min(lowest, v);
    if (v == options_.member_id) voter = true;
    if (v == options_.member_id || transport_.is_active(v)) ++connected;
  }
  if (!voter) return true;
  if (connected * 2 <= voters) return false;
  if (!existing_state_ && raft_->term() <= 1 && lowest == options_.member_id) {
    log::info("raft", "campaigning at once as the new cluster's first candidate",
              {{"local-member-id", hex(options_.member_id)}});
    raft_->campaign();
  } else if (options_.initial_election_tick_advance) {
    const int ticks =
        std::max<int>(2, static_cast<int>(options_.election_ms / options_.heartbeat_ms)) - 2;
    log::info("raft", "fast-forwarding election ticks",
              {{"local-member-id", hex(options_.member_id)}, {"forward-ticks", ticks}});
    for (int i = 0; i < ticks; ++i) raft_->tick();
  }
  return true;
}

void RaftNode::send(std::vector<raftpb::Message> msgs) {
  std::vector<raftpb::Message> plain;
  for (auto& m : msgs) {
    if (m.type() == raftpb::MsgSnap) {
      uint64_t to = m.to();
      auto writer = storage_->snapshot_writer();
      transport_.send_snapshot(std::move(m), std::move(writer), [this, to](bool ok) {
        {
          std::lock_guard lock(mu_);
          inbox_.snapshot_reports.emplace_back(to, !ok);
        }
        cv_.notify_one();
      });
    } else {
      plain.push_back(std::move(m));
    }
  }
  if (!plain.empty()) transport_.send(std::move(plain));
}

void RaftNode::handle_ready(raft::Ready& rd) {
  if (rd.soft_state) {
    uint64_t old = leader_.exchange(rd.soft_state->lead);
    if (old != rd.soft_state->lead) {
      if (rd.soft_state->lead != 0)
        metrics_.counter("etcd_server_leader_changes_seen_total", "").inc();
      log::info("raft", "leader changed",
                {{"local-member-id", hex(options_.member_id)},
                 {"leader", hex(rd.soft_state->lead)},
                 {"role", raft::to_string(rd.soft_state->role)}});
    }
    bool leader = rd.soft_state->role == raft::StateRole::kLeader;
    // A new leader restarts every lease's clock (as etcd's lessor Promote):
    // the old leader's view of keepalives is not ours.
    if (leader) storage_->kv().reset_lease_expiries();
  }
  bool leader = raft_->role() == raft::StateRole::kLeader;
  // Paper 10.2.1: the leader may send AppendEntries before its own write.
  if (leader) send(std::move(rd.messages));

  if (rd.snapshot) {
    if (!pending_install_) {
      log::error("raft", "snapshot to install but no received state; ignoring",
                 {{"index", rd.snapshot->metadata().index()}});
    } else {
      auto st = storage_->install(std::move(pending_install_), rd.snapshot->metadata());
      if (!st) {
        log::error("raft", "snapshot install failed", {{"error", st.message()}});
        std::abort();  // the log now points past state we do not have
      }
      snapshot_index_ = rd.snapshot->metadata().index();
      conf_state_ = rd.snapshot->metadata().conf_state();
      adopt_installed_configuration();
      applied_ = storage_->kv().applied_index();
      sync_peers();
      log::info("raft", "installed snapshot",
                {{"index", snapshot_index_}, {"applied", applied_.load()}});
      // The revisions the state jumped over produced no events: an empty
      // batch tells subscribers to read them from the store (MemberApi).
      publish_events({});
    }
  }
  if (rd.hard_state || !rd.entries.empty()) {
    auto start = Clock::now();
    auto st = storage_->log().save(rd.hard_state ? &*rd.hard_state : nullptr, rd.entries,
                                   rd.must_sync && !options_.unsafe_no_fsync);
    if (!st) {
      log::error("raft", "cannot persist raft log", {{"error", st.message()}});
      std::abort();  // a member that cannot persist must not keep voting
    }
    metrics_.histogram("etcd_disk_wal_fsync_duration_seconds", "", {})
        .observe(std::chrono::duration<double>(Clock::now() - start).count());
    last_index_ = storage_->log().last_index();
  }
  if (rd.hard_state) term_ = rd.hard_state->term();
  if (!leader) send(std::move(rd.messages));

  for (auto& d : rd.dropped_proposals) {
    for (auto& e : d.entries) {
      pb::InternalRequest req;
      if (e.type() == raftpb::EntryNormal && req.ParseFromString(e.data()))
        fail(req.id(), dropped(d.reason));
    }
  }
  if (!rd.committed_entries.empty()) apply_entries(rd.committed_entries);

  for (auto& rs : rd.read_states) {
    std::lock_guard lock(mu_);
    auto it = reads_waiting_index_.find(rs.context);
    if (it == reads_waiting_index_.end()) continue;
    reads_waiting_apply_.emplace(rs.index, std::move(it->second));
    reads_waiting_index_.erase(it);
  }
  // Reads whose index is applied are linearizable now.
  std::vector<PendingRead> ready;
  {
    std::lock_guard lock(mu_);
    auto end = reads_waiting_apply_.upper_bound(applied_.load());
    for (auto it = reads_waiting_apply_.begin(); it != end; ++it)
      ready.push_back(std::move(it->second));
    reads_waiting_apply_.erase(reads_waiting_apply_.begin(), end);
  }
  for (auto& r : ready) r.done(Status());
  maybe_snapshot();
}

void RaftNode::apply_entries(const std::vector<raftpb::Entry>& entries) {
  auto start = Clock::now();
  std::vector<pb::Event> events;
  for (const auto& e : entries) {
    if (e.index() <= storage_->kv().applied_index()) continue;  // already in the state (snapshot)
    if (e.type() == raftpb::EntryConfChange) {
      apply_conf_change(e);
    } else if (e.data().empty()) {
      storage_->kv().apply_noop(e.index(), e.term());
    } else {
      pb::InternalRequest req;
      if (!req.ParseFromString(e.data())) {
        log::error("apply", "unparsable entry; skipping", {{"index", e.index()}});
        storage_->kv().apply_noop(e.index(), e.term());
      } else {
        auto result = storage_->kv().apply(req, e.index(), e.term());
        for (auto& ev : result.events) events.push_back(ev);
        Status st = result.status;
        finish(req.id(), st, std::move(result));
      }
    }
    applied_ = e.index();
  }
  metrics_.histogram("etcd_disk_backend_commit_duration_seconds", "", {})
      .observe(std::chrono::duration<double>(Clock::now() - start).count());
  if (!events.empty()) publish_events(events);
}

void RaftNode::publish_events(const std::vector<pb::Event>& events) {
  std::vector<std::function<void(const std::vector<pb::Event>&)>> subs;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, cb] : subscribers_) subs.push_back(cb);
  }
  for (auto& cb : subs) cb(events);
}

void RaftNode::apply_conf_change(const raftpb::Entry& e) {
  raftpb::ConfChange cc;
  if (!cc.ParseFromString(e.data())) {
    log::error("apply", "unparsable conf change; skipping", {{"index", e.index()}});
    storage_->kv().apply_noop(e.index(), e.term());
    return;
  }
  // The member record the change carries (bootstrap entries and "member
  // add/update/promote" put it in the context).
  pb::Member m;
  if (!cc.context().empty() && !m.ParseFromString(cc.context())) m.Clear();
  m.set_id(cc.node_id());
  std::optional<pb::Member> existing;
  for (auto& x : storage_->kv().members())
    if (x.id() == cc.node_id()) existing = std::move(x);

  // Which membership request this entry is, and whether it still holds
  // against the applied state (every member decides the same: the check
  // reads only applied state).  A change that no longer holds (a racing
  // change took the URLs, the member went away) leaves the Raft
  // configuration alone and answers with the store's error.
  pb::InternalRequest req;
  bool holds = cc.node_id() != 0;
  switch (cc.type()) {
    case raftpb::ConfChangeAddNode:
      if (existing && existing->islearner()) {
        req.mutable_member_promote()->set_id(cc.node_id());
      } else {
        m.set_islearner(false);
        *req.mutable_member_add()->mutable_member() = m;
        holds = holds && !existing && !storage_->kv().member_removed(cc.node_id());
      }
      break;
    case raftpb::ConfChangeAddLearnerNode:
      m.set_islearner(true);
      *req.mutable_member_add()->mutable_member() = m;
      holds = holds && !existing && !storage_->kv().member_removed(cc.node_id());
      break;
    case raftpb::ConfChangeUpdateNode: {
      auto* u = req.mutable_member_update();
      u->set_id(cc.node_id());
      *u->mutable_peerurls() = m.peerurls();
      holds = holds && existing.has_value();
      break;
    }
    case raftpb::ConfChangeRemoveNode:
      req.mutable_member_remove()->set_id(cc.node_id());
      holds = holds && existing.has_value();
      break;
    default:
      holds = false;
      break;
  }
  if (holds && req.has_member_add() && peer_urls_taken(storage_->kv().members(), m.peerurls(), 0))
    holds = false;
  if (holds) {
    conf_state_ = raft_->apply_conf_change(cc);
    note_conf_state();
    switch (cc.type()) {
      case raftpb::ConfChangeAddNode:
      case raftpb::ConfChangeAddLearnerNode:
      case raftpb::ConfChangeUpdateNode:
        if (cc.node_id() != options_.member_id && !m.peerurls().empty())
          transport_.add_peer(cc.node_id(), {m.peerurls().begin(), m.peerurls().end()});
        break;
      case raftpb::ConfChangeRemoveNode:
        if (cc.node_id() != options_.member_id) transport_.remove_peer(cc.node_id());
        break;
      default:
        break;
    }
  }
  auto result = storage_->kv().apply(req, e.index(), e.term(), &conf_state_);
  if (!result.status && !result.skipped)
    log::warn("apply", "membership change refused at apply",
              {{"index", e.index()}, {"error", result.status.message()}});
  else if (!result.skipped)
    log::info("etcdserver", "applied membership change",
              {{"index", e.index()},
               {"change", raftpb::ConfChangeType_Name(cc.type())},
               {"member-id", hex(cc.node_id())}});
  if (cc.id() != 0) {
    Status st = result.status;
    finish(cc.id(), st, std::move(result));
  }
  if (holds && cc.type() == raftpb::ConfChangeRemoveNode && cc.node_id() == options_.member_id)
    note_removed("the log");
}

void RaftNode::adopt_installed_configuration() {
  // The received state machine is streamed from the sender's live state, so
  // it may be newer than the snapshot's index: membership changes between
  // the two are in it (and their entries will be skipped as applied) but not
  // in the core's configuration, which is the snapshot's.  Bring the core to
  // the configuration the state was written with.
  raft::InitialState is;
  if (storage_->log().initial_state(&is) != raft::StorageError::kOk) {
    note_conf_state();
    return;
  }
  const auto& target = is.conf_state;
  const std::set<uint64_t> tv(target.voters().begin(), target.voters().end()),
      tl(target.learners().begin(), target.learners().end());
  const raftpb::ConfState cur = raft_->conf_state();
  auto change = [&](raftpb::ConfChangeType t, uint64_t id) {
    raftpb::ConfChange cc;
    cc.set_type(t);
    cc.set_node_id(id);
    raft_->apply_conf_change(cc);
  };
  for (uint64_t id : cur.voters())
    if (!tv.count(id) && !tl.count(id)) change(raftpb::ConfChangeRemoveNode, id);
  for (uint64_t id : cur.learners())
    if (!tv.count(id) && !tl.count(id)) change(raftpb::ConfChangeRemoveNode, id);
  for (uint64_t id : tl) change(raftpb::ConfChangeAddLearnerNode, id);  // no-op when known
  for (uint64_t id : tv) change(raftpb::ConfChangeAddNode, id);         // promotes learners
  conf_state_ = raft_->conf_state();
  note_conf_state();
  if (storage_->kv().member_removed(options_.member_id)) note_removed("a received snapshot");
}

void RaftNode::note_conf_state() {
  bool learner = false;
  for (uint64_t l : conf_state_.learners())
    if (l == options_.member_id) learner = true;
  is_learner_ = learner;
}

void RaftNode::track_peer_activity() {
  auto now = Clock::now();
  std::set<uint64_t> ids(conf_state_.voters().begin(), conf_state_.voters().end());
  ids.insert(conf_state_.learners().begin(), conf_state_.learners().end());
  for (auto it = active_since_.begin(); it != active_since_.end();)
    it = ids.count(it->first) ? std::next(it) : active_since_.erase(it);
  for (uint64_t id : ids) {
    if (id == options_.member_id) continue;
    if (transport_.is_active(id))
      active_since_.emplace(id, now);  // keeps an earlier time
    else
      active_since_.erase(id);
  }
}

bool RaftNode::connected_since(uint64_t id, Clock::time_point cutoff) const {
  if (id == options_.member_id) return true;
  auto it = active_since_.find(id);
  return it != active_since_.end() && it->second <= cutoff;
}

Status RaftNode::check_member_change(pb::InternalRequest& req, raftpb::ConfChange* cc) {
  // etcd's --strict-reconfig-check rules (etcdserver mayAddMember,
  // mayRemoveMember, mayPromoteMember):
  //   - "started" members are those that have published their name;
  //   - a voter may be added only while a quorum of the grown voter set is
  //     started (not enough started members) and this member has been
  //     connected to every voter for the health interval (unhealthy
  //     cluster); learners skip the first check;
  //   - a voter may be removed only while a quorum of the remaining voters is
  //     started, and, unless it is already disconnected, while the voters
  //     connected for the health interval minus it still make a quorum;
  //   - a learner may be promoted once it has 90% of the leader's log (even
  //     without strict checks), with a started quorum of the grown voter set
  //     and every voter connected.
  const auto members = storage_->kv().members();
  auto find = [&](uint64_t id) -> const pb::Member* {
    for (const auto& x : members)
      if (x.id() == id) return &x;
    return nullptr;
  };
  auto bad_urls = [](const google::protobuf::RepeatedPtrField<std::string>& urls) {
    if (urls.empty()) return true;
    for (const auto& u : urls) {
      std::string err;
      auto p = net::parse_url(u, &err);
      if (!p || p->host.empty() || p->port == 0 || (p->path != "" && p->path != "/")) return true;
    }
    return false;
  };
  auto url_taken = [&](const google::protobuf::RepeatedPtrField<std::string>& urls,
                       uint64_t except) { return peer_urls_taken(members, urls, except); };
  track_peer_activity();
  const auto cutoff = Clock::now() - kHealthInterval;
  const std::set<uint64_t> voters(conf_state_.voters().begin(), conf_state_.voters().end());
  const std::set<uint64_t> learners(conf_state_.learners().begin(), conf_state_.learners().end());
  auto started_voters = [&](uint64_t except) {
    size_t n = 0;
    for (uint64_t v : voters) {
      const pb::Member* m = find(v);
      if (v != except && m && !m->name().empty()) ++n;
    }
    return n;
  };
  auto connected_fully = [&] {
    for (uint64_t v : voters)
      if (!connected_since(v, cutoff)) return false;
    return true;
  };
  const Status not_enough(Code::kFailedPrecondition,
                          "etcdserver: re-configuration failed due to not enough started members");
  const Status unhealthy(Code::kUnavailable, "etcdserver: unhealthy cluster");
  const Status bad_urls_error(Code::kInvalidArgument, "etcdserver: given member URLs are invalid");
  const bool strict = options_.strict_reconfig_check;
  cc->set_id(req.id());
  switch (req.request_case()) {
    case pb::InternalRequest::kMemberAdd: {
      pb::Member& m = *req.mutable_member_add()->mutable_member();
      if (bad_urls(m.peerurls())) return bad_urls_error;
      if (url_taken(m.peerurls(), 0))
        return Status(Code::kFailedPrecondition, "etcdserver: Peer URLs already exists");
      // etcd 3.4 allows one learner at a time.
      if (m.islearner() && !learners.empty())
        return Status(Code::kFailedPrecondition, "etcdserver: too many learner members in cluster");
      if (strict) {
        if (!m.islearner()) {
          // etcd's exception: a second member for a one-member cluster.
          const size_t n = voters.size() + 1, started = started_voters(0);
          if (!(started == 1 && n == 2) && started < n / 2 + 1) return not_enough;
        }
        if (!connected_fully()) return unhealthy;
      }
      // etcd's ID for a member added at run time: its peer URLs and the
      // current time; bumped past any ID in use or removed.
      uint64_t id = bootstrap::member_id({m.peerurls().begin(), m.peerurls().end()}, "",
                                         std::chrono::duration_cast<std::chrono::seconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
      while (id == 0 || find(id) || storage_->kv().member_removed(id)) ++id;
      m.set_id(id);
      m.clear_clienturls();
      m.clear_name();
      cc->set_type(m.islearner() ? raftpb::ConfChangeAddLearnerNode : raftpb::ConfChangeAddNode);
      cc->set_node_id(id);
      cc->set_context(m.SerializeAsString());
      return Status();
    }
    case pb::InternalRequest::kMemberRemove: {
      const uint64_t id = req.member_remove().id();
      if (!find(id)) return Status(Code::kNotFound, "etcdserver: member not found");
      if (strict && voters.count(id)) {
        const size_t n = voters.size() - 1;
        if (started_voters(id) < n / 2 + 1) return not_enough;
        // A member that is down is safe to remove: it is not part of the
        // active quorum.
        if (id == options_.member_id || active_since_.count(id)) {
          size_t active = 0;
          for (uint64_t v : voters)
            if (connected_since(v, cutoff)) ++active;
          if (active < 1 || active - 1 < 1 + n / 2) return unhealthy;
        }
      }
      cc->set_type(raftpb::ConfChangeRemoveNode);
      cc->set_node_id(id);
      return Status();
    }
    case pb::InternalRequest::kMemberUpdate: {
      const uint64_t id = req.member_update().id();
      const pb::Member* old = find(id);
      if (!old) return Status(Code::kNotFound, "etcdserver: member not found");
      if (bad_urls(req.member_update().peerurls())) return bad_urls_error;
      if (url_taken(req.member_update().peerurls(), id))
        return Status(Code::kFailedPrecondition, "etcdserver: Peer URLs already exists");
      pb::Member m = *old;
      *m.mutable_peerurls() = req.member_update().peerurls();
      cc->set_type(raftpb::ConfChangeUpdateNode);
      cc->set_node_id(id);
      cc->set_context(m.SerializeAsString());
      return Status();
    }
    case pb::InternalRequest::kMemberPromote: {
      const uint64_t id = req.member_promote().id();
      const pb::Member* old = find(id);
      if (!old) return Status(Code::kNotFound, "etcdserver: member not found");
      if (!old->islearner())
        return Status(Code::kFailedPrecondition, "etcdserver: can only promote a learner member");
      // Only the leader knows how far the learner is; the caller made sure
      // we are it.
      const auto* p = raft_->progress(id);
      const uint64_t last = storage_->log().last_index();
      if (!p || static_cast<double>(p->match) < 0.9 * static_cast<double>(last))
        return Status(Code::kFailedPrecondition,
                      "etcdserver: can only promote a learner member which is in sync with leader");
      if (strict) {
        const size_t n = voters.size() + 1, started = started_voters(0) + 1;
        if (started < n / 2 + 1) return not_enough;
        if (!connected_fully()) return unhealthy;
      }
      pb::Member m = *old;
      m.set_islearner(false);
      cc->set_type(raftpb::ConfChangeAddNode);
      cc->set_node_id(id);
      cc->set_context(m.SerializeAsString());
      return Status();
    }
    default:
      return Status(Code::kInvalidArgument, "etcdserver: not a membership change");
  }
}

void RaftNode::start_member_change(pb::InternalRequest req) {
  const uint64_t id = req.id();
  if (req.has_member_promote() && raft_->role() != raft::StateRole::kLeader) {
    const uint64_t lead = leader_.load();
    if (lead == 0) return fail(id, no_leader());
    if (!options_.forward_promote)
      return fail(id, Status(Code::kFailedPrecondition, "etcdserver: not leader"));
    options_.forward_promote(lead, req.member_promote().id(), [this, id](Status st) {
      if (!st) return fail(id, st);
      // The leader answered after applying the promotion; once our applied
      // index passes a read barrier, our member list shows it too.
      read_barrier([this, id](Status st2) {
        if (!st2) return fail(id, st2);
        storage::KvStore::ApplyResult r;
        for (auto& m : storage_->kv().members())
          *r.response.mutable_member_promote()->add_members() = std::move(m);
        finish(id, Status(), std::move(r));
      });
    });
    return;
  }
  raftpb::ConfChange cc;
  Status st = check_member_change(req, &cc);
  if (!st) return fail(id, st);
  auto r = raft_->propose_conf_change(cc);
  if (r == raft::DropReason::kConfChangePending)
    return fail(id, Status(Code::kUnavailable,
                           "etcdserver: a previous membership change is not applied yet"));
  if (r != raft::DropReason::kNone) fail(id, dropped(r));
}

void RaftNode::measure_db_size() {
  int64_t total = 0;
  std::error_code ec;
  for (auto& f : std::filesystem::recursive_directory_iterator(storage_->member_dir(), ec))
    if (f.is_regular_file(ec)) total += static_cast<int64_t>(f.file_size(ec));
  db_size_ = total;
}

void RaftNode::maybe_auto_compact() {
  // etcd's compactors: revision mode looks every 5 minutes (here: every
  // tenth of nothing longer than that), periodic mode samples the revision
  // every tenth of the period and compacts to the sample one period old.
  auto now = Clock::now();
  if (now < next_compaction_check_) return;
  int64_t target = 0;
  int64_t rev = storage_->kv().revision();
  if (options_.auto_compaction_revisions > 0) {
    next_compaction_check_ = now + std::chrono::minutes(5);
    target = rev - options_.auto_compaction_revisions;
  } else if (options_.auto_compaction_period.count() > 0) {
    auto step = std::max<std::chrono::milliseconds>(options_.auto_compaction_period / 10,
                                                    std::chrono::milliseconds(100));
    next_compaction_check_ = now + step;
    revision_samples_.emplace_back(now, rev);
    while (revision_samples_.size() > 1 &&
           now - revision_samples_[1].first >= options_.auto_compaction_period)
      revision_samples_.pop_front();
    if (now - revision_samples_.front().first >= options_.auto_compaction_period)
      target = revision_samples_.front().second;
  } else {
    return;
  }
  if (target <= storage_->kv().compact_revision() || target <= 0) return;
  pb::InternalRequest req;
  req.set_id(next_request_id());
  req.mutable_compaction()->set_revision(target);
  if (raft_->propose(req.SerializeAsString()) == raft::DropReason::kNone)
    log::info("compactor", "auto compaction proposed", {{"revision", target}});
}

void RaftNode::maybe_publish() {
  if (published_.load() || publishing_.load() || leader_.load() == 0) return;
  for (const auto& m : storage_->kv().members()) {
    if (m.id() != options_.member_id) continue;
    if (m.name() == options_.name &&
        std::equal(m.clienturls().begin(), m.clienturls().end(), options_.client_urls.begin(),
                   options_.client_urls.end())) {
      published_ = true;
      return;
    }
  }
  publishing_ = true;
  pb::InternalRequest req;
  auto* a = req.mutable_member_attributes();
  a->set_id(options_.member_id);
  a->set_name(options_.name);
  for (const auto& u : options_.client_urls) a->add_clienturls(u);
  uint64_t id = next_request_id();
  req.set_id(id);
  {
    std::lock_guard lock(mu_);
    pending_.emplace(
        id, PendingProposal{
                [this](Status st, storage::KvStore::ApplyResult) {
                  publishing_ = false;
                  if (st) {
                    published_ = true;
                    log::info("etcdserver", "published local member to cluster through raft",
                              {{"name", options_.name}, {"client-urls", options_.client_urls}});
                  }
                },
                // Short: a publish lost with a dropped message is simply
                // proposed again (it is idempotent), instead of holding the
                // member's readiness for a whole request timeout.
                Clock::now() +
                    std::chrono::milliseconds(std::max<uint32_t>(options_.heartbeat_ms, 50))});
  }
  if (raft_->propose(req.SerializeAsString()) != raft::DropReason::kNone) {
    std::lock_guard lock(mu_);
    pending_.erase(id);
    publishing_ = false;
  }
}

void RaftNode::maybe_snapshot() {
  uint64_t applied = storage_->kv().applied_index();
  if (applied < snapshot_index_ + options_.snapshot_count) return;
  raftpb::Snapshot snap;
  auto err = storage_->log().create_snapshot(applied, conf_state_, &snap);
  if (err != raft::StorageError::kOk) return;
  snapshot_index_ = applied;
  if (applied > options_.snapshot_catchup_entries) {
    uint64_t compact_to = applied - options_.snapshot_catchup_entries;
    if (compact_to >= storage_->log().first_index()) storage_->log().compact(compact_to);
  }
  log::info("raft", "snapshot taken", {{"index", applied}});
}

void RaftNode::expire_leases() {
  auto now = Clock::now();
  for (auto it = revoking_.begin(); it != revoking_.end();) {
    if (now - it->second > std::chrono::milliseconds(options_.request_timeout_ms) ||
        !storage_->kv().lease_exists(it->first))
      it = revoking_.erase(it);
    else
      ++it;
  }
  for (int64_t id : storage_->kv().expired_leases(monotonic_ms())) {
    if (revoking_.count(id)) continue;
    revoking_[id] = now;
    pb::InternalRequest req;
    req.set_id(next_request_id());
    req.mutable_lease_revoke()->set_id(id);
    raft_->propose(req.SerializeAsString());
  }
}

namespace {

class InstallerSink final : public SnapshotSink {
 public:
  InstallerSink(RaftNode& node, std::unique_ptr<storage::SnapshotInstaller> inst)
      : node_(node), inst_(std::move(inst)) {}
  Status add(const pb::SnapshotChunk& chunk) override { return inst_->add(chunk); }
  void finish(bool ok) override {
    if (ok && inst_->complete()) node_.queue_install(std::move(inst_));
    inst_.reset();
  }

 private:
  RaftNode& node_;
  std::unique_ptr<storage::SnapshotInstaller> inst_;
};

}  // namespace

std::unique_ptr<SnapshotSink> RaftNode::snapshot_sink(const raftpb::Message& m) {
  std::unique_ptr<storage::SnapshotInstaller> inst;
  auto st = storage_->begin_install(&inst);
  if (!st) {
    log::error("raft", "cannot receive a snapshot", {{"from", m.from()}, {"error", st.message()}});
    return nullptr;
  }
  log::info("raft", "receiving snapshot",
            {{"from", m.from()}, {"index", m.snapshot().metadata().index()}});
  return std::make_unique<InstallerSink>(*this, std::move(inst));
}

void RaftNode::queue_install(std::unique_ptr<storage::SnapshotInstaller> installer) {
  {
    std::lock_guard lock(mu_);
    inbox_.installs.push_back(std::move(installer));
  }
  cv_.notify_one();
}

void RaftNode::fail_timeouts() {
  auto now = Clock::now();
  std::vector<uint64_t> expired;
  std::vector<PendingRead> reads;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, p] : pending_)
      if (p.deadline <= now) expired.push_back(id);
    for (auto it = reads_waiting_index_.begin(); it != reads_waiting_index_.end();) {
      if (it->second.deadline <= now) {
        reads.push_back(std::move(it->second));
        it = reads_waiting_index_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto id : expired) fail(id, timed_out());
  for (auto& r : reads) r.done(timed_out());
}

}  // namespace muster::server
