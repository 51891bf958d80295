// node/server/driver.cpp: see driver.h.
#include "node/server/driver.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "base/log.h"
#include "base/runner.h"
#include "node/server/transport.h"

namespace muster::server {

namespace {

std::string hex(uint64_t id) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(id));
  return buf;
}

}  // namespace

namespace {
uint64_t random_incarnation() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) | rd();
}
}  // namespace

Driver::Driver(DriverOptions options, raft::Raft& raft, storage::MemberStorage& storage,
               RaftTransport& transport, metrics::Registry& metrics, DriverHooks hooks)
    : options_(options),
      raft_(raft),
      storage_(storage),
      transport_(transport),
      leader_changes_(metrics.counter("etcd_server_leader_changes_seen_total",
                                      "The number of leader changes seen.")),
      fsync_seconds_(metrics.histogram("etcd_disk_wal_fsync_duration_seconds",
                                       "The latency distributions of fsync called by WAL.",
                                       metrics::exponential_buckets(0.001, 2, 14))),
      entries_per_save_(metrics.histogram("muster_server_entries_per_log_save",
                                          "Raft log entries written (and synced) together.",
                                          metrics::exponential_buckets(1, 2, 14))),
      hooks_(std::move(hooks)),
      incarnation_(random_incarnation()) {
  raftpb::Snapshot snap;
  if (storage_.log().snapshot(&snap) == raft::StorageError::kOk)
    snapshot_index_ = snap.metadata().index();
  last_index_ = storage_.log().last_index();
  term_ = raft_.term();
  started_ = Clock::now();
  next_tick_ = started_ + std::chrono::milliseconds(options_.heartbeat_ms);
  next_housekeeping_ = started_;
}

Driver::~Driver() { stop(false); }

void Driver::start() {
  started_ = Clock::now();
  next_tick_ = started_ + std::chrono::milliseconds(options_.heartbeat_ms);
  next_housekeeping_ = started_;
  drain_ready();
  running_ = true;
  thread_ = std::thread([this] {
    base::set_thread_name("raft");
    run();
  });
}

void Driver::stop(bool transfer_leadership) {
  if (!running_.load()) {
    if (thread_.joinable()) thread_.join();
    return;
  }
  if (transfer_leadership && leader_.load() == options_.member_id) {
    transfer_leadership_to_best();
    auto deadline = Clock::now() + std::chrono::milliseconds(options_.election_ms);
    while (Clock::now() < deadline && leader_.load() == options_.member_id)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  running_ = false;
  notify();
  if (thread_.joinable()) thread_.join();
}

void Driver::notify() { cv_.notify_one(); }

void Driver::step(raftpb::Message m) {
  {
    std::lock_guard lock(mu_);
    inbox_.messages.push_back(std::move(m));
  }
  notify();
}

void Driver::propose(std::string data, uint64_t id) {
  {
    std::lock_guard lock(mu_);
    inbox_.proposals.emplace_back(std::move(data), id);
  }
  notify();
}

void Driver::read_index(std::string ctx) {
  {
    std::lock_guard lock(mu_);
    inbox_.reads.push_back(std::move(ctx));
  }
  notify();
}

void Driver::post(std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    inbox_.tasks.push_back(std::move(task));
  }
  notify();
}

void Driver::transfer_leadership(uint64_t to) {
  {
    std::lock_guard lock(mu_);
    inbox_.transfer_to = to;
  }
  notify();
}

void Driver::transfer_leadership_to_best() {
  {
    std::lock_guard lock(mu_);
    inbox_.transfer_to_best = true;
  }
  notify();
}

void Driver::queue_install(std::unique_ptr<storage::SnapshotInstaller> installer) {
  {
    std::lock_guard lock(mu_);
    inbox_.installs.push_back(std::move(installer));
  }
  notify();
}

void Driver::report_unreachable(uint64_t peer) {
  {
    std::lock_guard lock(mu_);
    inbox_.unreachable.push_back(peer);
  }
  notify();
}

Driver::Inbox Driver::take_inbox() {
  Inbox in;
  std::lock_guard lock(mu_);
  std::swap(in, inbox_);
  return in;
}

void Driver::run() {
  while (running_.load()) {
    {
      std::unique_lock lock(mu_);
      // While the first election waits for peers to connect, look again
      // every few milliseconds rather than every heartbeat.
      auto wake_at = next_tick_;
      if (first_election_pending_)
        wake_at = std::min(wake_at, Clock::now() + std::chrono::milliseconds(2));
      cv_.wait_until(lock, wake_at, [&] { return !running_.load() || !inbox_.empty(); });
    }
    if (!running_.load()) break;
    turn(Clock::now());
  }
}

void Driver::turn(Clock::time_point now) {
  Inbox in = take_inbox();
  handle_inbox(in, now);
  if (first_election_pending_ &&
      (maybe_hasten_first_election() || now - started_ > std::chrono::seconds(5)))
    first_election_pending_ = false;  // (etcd gives up waiting for peers after 5 s too)
  const auto tick_every = std::chrono::milliseconds(options_.heartbeat_ms);
  while (now >= next_tick_) {
    raft_.tick();
    next_tick_ += tick_every;
  }
  drain_ready();
  if (snapshot_stepped_) {
    snapshot_stepped_ = false;
    // The core refused the snapshot it came with: let it go, or its database
    // (db.new/) keeps the one install slot and every later snapshot is
    // refused.
    if (pending_install_) {
      log::warn("raft", "dropping a received snapshot the core refused",
                {{"local-member-id", hex(options_.member_id)}});
      pending_install_.reset();
    }
  }
  if (hooks_.after_turn) hooks_.after_turn(now);
  if (now >= next_housekeeping_) {
    next_housekeeping_ = now + std::chrono::milliseconds(100);
    if (hooks_.housekeeping) hooks_.housekeeping(now);
  }
}

void Driver::handle_inbox(Inbox& in, Clock::time_point now) {
  // The transport hands a received state machine over before the MsgSnap
  // that describes it, so it is here before the core asks for it.
  for (auto& inst : in.installs) pending_install_ = std::move(inst);
  for (auto& m : in.messages) {
    if (m.type() == raftpb::MsgSnap) snapshot_stepped_ = true;
    raft_.step(m);
  }
  if (!in.proposals.empty()) {
    // Every proposal of this turn as one batch: one append, one round of
    // MsgApp to each follower (group commit starts here).
    std::vector<std::string> batch;
    batch.reserve(in.proposals.size());
    for (auto& [data, id] : in.proposals) batch.push_back(std::move(data));
    auto r = raft_.propose_batch(std::move(batch));
    if (r != raft::DropReason::kNone && hooks_.on_rejected)
      for (auto& [data, id] : in.proposals) hooks_.on_rejected(id, r);
  }
  for (auto& task : in.tasks) task();
  if (!read_batches_.empty()) retry_read_batches(now);
  if (!in.reads.empty()) send_read_batch(std::move(in.reads), now);
  for (auto& [peer, failed] : in.snapshot_reports) raft_.report_snapshot(peer, failed);
  for (auto peer : in.unreachable) raft_.report_unreachable(peer);
  if (raft_.role() == raft::StateRole::kLeader) {
    if (in.transfer_to_best) {
      uint64_t best = 0, best_match = 0;
      // conf_state() returns a copy: it must outlive the loop over its voters.
      const raftpb::ConfState conf = raft_.conf_state();
      for (uint64_t v : conf.voters()) {
        if (v == options_.member_id) continue;
        const auto* p = raft_.progress(v);
        if (p && p->match >= best_match) {
          best = v;
          best_match = p->match;
        }
      }
      if (best) raft_.transfer_leadership(best);
    } else if (in.transfer_to != 0) {
      raft_.transfer_leadership(in.transfer_to);
    }
  }
}

void Driver::drain_ready() {
  while (raft_.has_ready()) {
    raft::Ready rd = raft_.ready();
    handle_ready(rd);
    raft_.advance(rd);
  }
}

bool Driver::maybe_hasten_first_election() {
  // etcd's initial election tick advance waits until peers are connected,
  // then skips all but two ticks of the election timeout.  Here a quorum of
  // voters must be connected (a lone member that advanced would only
  // pre-vote in vain).  On a brand-new cluster, the voter with the lowest ID
  // campaigns at once instead: every member agrees who that is, so the
  // first election is not a race of timeouts; with pre-vote it cannot
  // disrupt anything, and the others' shortened timeouts remain the
  // fallback if it is down.
  if (raft_.role() == raft::StateRole::kLeader || leader_.load() != 0) return true;
  const raftpb::ConfState cs = raft_.conf_state();
  const int voters = cs.voters_size();
  if (voters == 0) return false;  // joining: the configuration comes from the leader
  bool voter = false;
  int connected = 0;
  uint64_t lowest = UINT64_MAX;
  for (uint64_t v : cs.voters()) {
    lowest = std::min(lowest, v);
    if (v == options_.member_id) voter = true;
    if (v == options_.member_id || transport_.is_active(v)) ++connected;
  }
  if (!voter) return true;
  if (connected * 2 <= voters) return false;
  if (!options_.existing_state && raft_.term() <= 1 && lowest == options_.member_id) {
    log::info("raft", "campaigning at once as the new cluster's first candidate",
              {{"local-member-id", hex(options_.member_id)}});
    raft_.campaign();
  } else if (options_.initial_election_tick_advance) {
    const int ticks =
        std::max<int>(2, static_cast<int>(options_.election_ms / options_.heartbeat_ms)) - 2;
    log::info("raft", "fast-forwarding election ticks",
              {{"local-member-id", hex(options_.member_id)}, {"forward-ticks", ticks}});
    for (int i = 0; i < ticks; ++i) raft_.tick();
  }
  return true;
}

void Driver::send(std::vector<raftpb::Message> msgs) {
  std::vector<raftpb::Message> plain;
  for (auto& m : msgs) {
    if (m.type() == raftpb::MsgSnap) {
      // The state machine streams beside the MsgSnap (snapshot_stream.h);
      // the core hears how it went.
      uint64_t to = m.to();
      auto writer = storage_.snapshot_writer();
      transport_.send_snapshot(std::move(m), std::move(writer), [this, to](bool ok) {
        {
          std::lock_guard lock(mu_);
          inbox_.snapshot_reports.emplace_back(to, !ok);
        }
        notify();
      });
    } else {
      plain.push_back(std::move(m));
    }
  }
  if (!plain.empty()) transport_.send(std::move(plain));
}

void Driver::handle_ready(raft::Ready& rd) {
  if (rd.soft_state) {
    uint64_t old = leader_.exchange(rd.soft_state->lead);
    if (old != rd.soft_state->lead) {
      if (rd.soft_state->lead != 0) leader_changes_.inc();
      log::info("raft", "leader changed",
                {{"local-member-id", hex(options_.member_id)},
                 {"leader", hex(rd.soft_state->lead)},
                 {"role", raft::to_string(rd.soft_state->role)}});
    }
    if (hooks_.on_soft_state) hooks_.on_soft_state(*rd.soft_state, old);
  }
  const bool leader = raft_.role() == raft::StateRole::kLeader;
  // Raft thesis 10.2.1: the leader may send AppendEntries before its own
  // write.
  if (leader) send(std::move(rd.messages));

  // A configuration change or a snapshot install needs the apply side quiet
  // (see driver.h, step 2e).
  bool apply_here = rd.snapshot.has_value();
  for (const auto& e : rd.committed_entries)
    if (e.type() == raftpb::EntryConfChange) apply_here = true;
  if (apply_here && hooks_.drain) hooks_.drain();

  if (rd.snapshot) {
    if (!pending_install_) {
      log::error("raft", "snapshot to install but no received state; ignoring",
                 {{"index", rd.snapshot->metadata().index()}});
    } else {
      auto st = storage_.install(std::move(pending_install_), rd.snapshot->metadata());
      if (!st) {
        log::error("raft", "snapshot install failed", {{"error", st.message()}});
        std::abort();  // the log now points past state we do not have
      }
      snapshot_index_ = rd.snapshot->metadata().index();
      if (hooks_.on_installed) hooks_.on_installed(rd.snapshot->metadata());
      log::info("raft", "installed snapshot",
                {{"index", snapshot_index_}, {"applied", storage_.kv().applied_index()}});
    }
  }
  // Committed entries this member's disk already holds may be applied while
  // this Ready's write is in flight.  What the disk holds is its log up to
  // the first entry this Ready writes: a follower may be replacing a
  // conflicting suffix, and an entry at or past that point is not there yet.
  std::vector<raftpb::Entry> later;
  if (!rd.committed_entries.empty() && !apply_here && hooks_.apply) {
    uint64_t durable = storage_.log().last_index();
    if (!rd.entries.empty()) durable = std::min(durable, rd.entries.front().index() - 1);
    auto split = std::find_if(rd.committed_entries.begin(), rd.committed_entries.end(),
                              [durable](const raftpb::Entry& e) { return e.index() > durable; });
    later.assign(std::make_move_iterator(split), std::make_move_iterator(rd.committed_entries.end()));
    rd.committed_entries.erase(split, rd.committed_entries.end());
    if (!rd.committed_entries.empty()) hooks_.apply(std::move(rd.committed_entries));
  }
  if (rd.hard_state || !rd.entries.empty()) {
    auto start = Clock::now();
    auto st = storage_.log().save(rd.hard_state ? &*rd.hard_state : nullptr, rd.entries,
                                  rd.must_sync && !options_.unsafe_no_fsync);
    if (!st) {
      log::error("raft", "cannot persist raft log", {{"error", st.message()}});
      std::abort();  // a member that cannot persist must not keep voting
    }
    fsync_seconds_.observe(std::chrono::duration<double>(Clock::now() - start).count());
    if (!rd.entries.empty()) entries_per_save_.observe(static_cast<double>(rd.entries.size()));
    last_index_ = storage_.log().last_index();
  }
  if (rd.hard_state) {
    term_ = rd.hard_state->term();
    committed_ = rd.hard_state->commit();
  }
  // A follower acks only what its disk holds.
  if (!leader) send(std::move(rd.messages));

  if (hooks_.on_dropped)
    for (const auto& d : rd.dropped_proposals) hooks_.on_dropped(d);
  if (apply_here) {
    if (!rd.committed_entries.empty() && hooks_.apply_now) hooks_.apply_now(rd.committed_entries);
  } else if (!later.empty()) {
    hooks_.apply(std::move(later));
  }
  if (hooks_.on_read_states && !rd.read_states.empty())
    hooks_.on_read_states(expand_read_states(rd.read_states));
  maybe_snapshot();
}

void Driver::send_read_batch(std::vector<std::string> contexts, Clock::time_point now) {
  // A batch nobody answered (the request was lost with a leader change)
  // has no waiter left once the reads' deadline passed: forget it.
  constexpr auto kForgetAfter = std::chrono::minutes(1);
  for (auto it = read_batches_.begin(); it != read_batches_.end();)
    it = now - it->second.sent > kForgetAfter ? read_batches_.erase(it) : std::next(it);
  std::string ctx = std::to_string(options_.member_id) + "/" + std::to_string(incarnation_) +
                    "/" + std::to_string(++read_batch_seq_);
  read_batches_.emplace(ctx, ReadBatch{std::move(contexts), now, now, raft_.lead()});
  raft_.read_index(std::move(ctx));
}

void Driver::retry_read_batches(Clock::time_point now) {
  const uint64_t lead = raft_.lead();
  if (lead == 0) return;  // the core would drop it: wait for a leader
  for (auto& [ctx, batch] : read_batches_) {
    if (batch.leader == lead && now - batch.asked < kReadRetryEvery) continue;
    batch.asked = now;
    batch.leader = lead;
    raft_.read_index(ctx);
  }
}

std::vector<raft::ReadState> Driver::expand_read_states(
    const std::vector<raft::ReadState>& batches) {
  std::vector<raft::ReadState> out;
  for (const auto& rs : batches) {
    auto it = read_batches_.find(rs.context);
    if (it == read_batches_.end()) continue;
    for (auto& ctx : it->second.contexts) out.push_back({rs.index, std::move(ctx)});
    read_batches_.erase(it);
  }
  return out;
}

void Driver::maybe_snapshot() {
  uint64_t applied = storage_.kv().applied_index();
  if (applied < snapshot_index_ + options_.snapshot_count) return;
  // An installed snapshot's state may be newer than its metadata (the
  // leader streams its current state): until the leader's appends bring the
  // log up to that state, there is no entry to record a snapshot at.
  if (applied > storage_.log().last_index()) return;
  raftpb::Snapshot snap;
  auto err = storage_.log().create_snapshot(applied, raft_.conf_state(), &snap);
  if (err != raft::StorageError::kOk) return;
  snapshot_index_ = applied;
  if (applied > options_.snapshot_catchup_entries) {
    uint64_t compact_to = applied - options_.snapshot_catchup_entries;
    if (compact_to >= storage_.log().first_index()) storage_.log().compact(compact_to);
  }
  log::info("raft", "snapshot taken", {{"index", applied}});
}

}  // namespace muster::server
