#include "tests/sim/sim.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <queue>
#include <set>
#include <sstream>
#include <vector>

namespace muster::raft::sim {

namespace {

constexpr int kSubTicksPerTick = 10;
constexpr uint64_t kUnknownTerm = ~0ull;

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A small deterministic generator (no std distributions: their output is
// implementation-defined, and a seed must replay identically everywhere).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(splitmix(seed ^ 0x5eed5eed5eedull)) {}
  uint64_t next() { return s_ = splitmix(s_); }
  uint64_t below(uint64_t n) { return n == 0 ? 0 : next() % n; }
  bool chance(double p) { return static_cast<double>(next() >> 11) * 0x1.0p-53 < p; }

 private:
  uint64_t s_;
};

uint64_t entry_hash(const pb::Entry& e) {
  uint64_t h = 0xcbf29ce484222325ull ^ static_cast<uint64_t>(e.type());
  for (unsigned char c : e.data()) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t mix(uint64_t state, uint64_t h) { return splitmix(state * 31 + h); }

std::string encode_state(uint64_t sm) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((sm >> (8 * i)) & 0xff);
  return s;
}

uint64_t decode_state(const std::string& s) {
  if (s.size() != 8) return 0;
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(s[i])) << (8 * i);
  return v;
}

std::string describe(const pb::Message& m) {
  std::ostringstream o;
  o << m.from() << "->" << m.to() << " " << pb::MessageType_Name(m.type()) << " t" << m.term()
    << " lt" << m.log_term() << " i" << m.index() << " c" << m.commit();
  if (m.entries_size() > 0) {
    o << " ents[" << m.entries(0).index() << ".." << m.entries(m.entries_size() - 1).index() << "]";
  }
  if (m.reject()) o << " reject hint" << m.reject_hint();
  if (m.type() == pb::MsgSnap) o << " snap@" << m.snapshot().metadata().index();
  return o.str();
}

struct SimNode {
  uint64_t id = 0;
  std::unique_ptr<MemoryStorage> storage;  // what survives a crash
  std::unique_ptr<Raft> raft;              // null while down
  uint64_t incarnation = 0;
  bool removed = false;
  int64_t restart_at = -1;
  // Volatile state machine: applied index and a hash of everything applied.
  uint64_t applied = 0;
  uint64_t sm = 0;
  pb::HardState last_hs;
  bool alive() const { return raft != nullptr; }
};

struct Flight {
  int64_t at;
  uint64_t seq;
  pb::Message m;
  uint64_t from_incarnation;
  bool operator>(const Flight& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};

struct CommittedEntry {
  uint64_t term;
  uint64_t hash;
  uint64_t sm;  // state hash after applying it
};

struct LoggedEntry {
  uint64_t hash;
  uint64_t prev_term;
};

class Simulation {
 public:
  Simulation(uint64_t seed, const SimOptions& opts) : seed_(seed), opts_(opts), rng_(seed) {}

  SimResult run();

 private:
  // --- setup ---
  void choose_parameters();
  Config make_config(uint64_t id) const;
  void create_node(uint64_t id, const pb::ConfState* bootstrap);
  void start(SimNode& n);
  void crash(SimNode& n);

  // --- steps ---
  void process_ready(SimNode& n);
  void apply(SimNode& n, const pb::Entry& e);
  void send(const pb::Message& m, uint64_t from_incarnation);
  void deliver(const Flight& f);
  void after_step();
  void maybe_compact(SimNode& n);
  void chaos_events(int64_t tick);
  void heal_events(int64_t tick);

  // --- checks ---
  void check_all();
  void on_new_leader(SimNode& n);
  void fail(const std::string& why);
  bool failed() const { return !result_.failure.empty(); }
  void trace(const std::string& s) {
    if (opts_.verbose) std::printf("[t%lld] %s\n", static_cast<long long>(now_), s.c_str());
  }

  SimNode* leader();
  std::vector<SimNode*> live_nodes();
  bool is_member(uint64_t id) const { return voters_.count(id) || learners_.count(id); }
  uint64_t frontier() const { return committed_.empty() ? 0 : committed_.rbegin()->first; }

  uint64_t seed_;
  SimOptions opts_;
  Rng rng_;
  SimResult result_;

  // parameters drawn from the seed
  int initial_voters_ = 3;
  double drop_p_ = 0, dup_p_ = 0, prop_p_ = 0.3, crash_p_ = 0.02, partition_p_ = 0.015;
  int max_delay_ = 10;
  bool pre_vote_ = true, check_quorum_ = true;
  size_t max_inflight_ = 64;
  uint64_t max_msg_size_ = 1 << 20;
  int heartbeat_tick_ = 1;
  uint64_t compact_threshold_ = 50;

  std::map<uint64_t, SimNode> nodes_;
  uint64_t next_id_ = 1;
  std::priority_queue<Flight, std::vector<Flight>, std::greater<>> net_;
  uint64_t seq_ = 0;
  int64_t now_ = 0;
  std::map<uint64_t, int> group_;  // partition: node -> side
  int64_t heal_at_ = -1;
  struct SnapReport {
    uint64_t leader, incarnation, to;
    bool failure;
  };
  std::vector<SnapReport> snap_reports_;
  std::vector<SnapReport> unreachable_reports_;
  std::vector<uint64_t> to_remove_;

  // checker state
  std::map<uint64_t, uint64_t> leaders_;                      // term -> leader
  std::map<uint64_t, CommittedEntry> committed_;              // index -> entry
  std::map<std::pair<uint64_t, uint64_t>, LoggedEntry> log_;  // (index, term)
  std::map<std::string, uint64_t> reads_;                     // ctx -> frontier
  std::set<uint64_t> voters_, learners_;                      // as of committed_
  uint64_t proposal_counter_ = 0;
  uint64_t read_counter_ = 0;
  std::string marker_;
  bool healing_ = false;
};

void Simulation::fail(const std::string& why) {
  if (failed()) return;
  std::ostringstream o;
  o << "seed " << seed_ << " at t" << now_ << ": " << why;
  result_.failure = o.str();
  result_.ok = false;
}

void Simulation::choose_parameters() {
  initial_voters_ = rng_.chance(0.5) ? 3 : 5;
  drop_p_ = static_cast<double>(rng_.below(16)) / 100.0;
  dup_p_ = static_cast<double>(rng_.below(6)) / 100.0;
  max_delay_ = 1 + static_cast<int>(rng_.below(40));
  pre_vote_ = rng_.below(4) != 0;
  check_quorum_ = rng_.below(4) != 0;
  const size_t inflight[] = {1, 4, 64};
  max_inflight_ = inflight[rng_.below(3)];
  const uint64_t sizes[] = {1, 512, 1 << 20};
  max_msg_size_ = sizes[rng_.below(3)];
  heartbeat_tick_ = 1 + static_cast<int>(rng_.below(2));
  prop_p_ = 0.1 + static_cast<double>(rng_.below(60)) / 100.0;
  compact_threshold_ = 10 + rng_.below(60);
  crash_p_ = 0.02;
  partition_p_ = 0.015;
  if (opts_.storm) {
    initial_voters_ = 5;
    max_msg_size_ = 1;
    max_inflight_ = 1;
    max_delay_ = 10 + static_cast<int>(rng_.below(40));
    pre_vote_ = false;
    check_quorum_ = false;
    drop_p_ = 0.05 + static_cast<double>(rng_.below(20)) / 100.0;
    crash_p_ = 0.04;
    partition_p_ = 0.08;
    prop_p_ = 0.05 + static_cast<double>(rng_.below(20)) / 100.0;
  }
}

Config Simulation::make_config(uint64_t id) const {
  Config c;
  c.id = id;
  c.election_tick = 10;
  c.heartbeat_tick = heartbeat_tick_;
  c.pre_vote = pre_vote_;
  c.check_quorum = check_quorum_;
  c.max_inflight_msgs = max_inflight_;
  c.max_size_per_msg = max_msg_size_;
  c.max_uncommitted_entries_size = 1 << 20;
  c.seed = splitmix(seed_ * 131 + id * 7 + nodes_.at(id).incarnation);
  c.testing = opts_.knobs;
  return c;
}

void Simulation::create_node(uint64_t id, const pb::ConfState* bootstrap) {
  SimNode& n = nodes_[id];
  n.id = id;
  n.storage = std::make_unique<MemoryStorage>();
  if (bootstrap != nullptr) {
    // Every founding member starts from the same snapshot at index 1, term 1,
    // holding the initial configuration (so joiners learn it by snapshot).
    pb::Snapshot boot;
    boot.mutable_metadata()->set_index(1);
    boot.mutable_metadata()->set_term(1);
    *boot.mutable_metadata()->mutable_conf_state() = *bootstrap;
    boot.set_data(encode_state(0));
    n.storage->apply_snapshot(boot);
    pb::HardState hs;
    hs.set_term(1);
    hs.set_commit(1);
    n.storage->set_hard_state(hs);
  }
  start(n);
}

void Simulation::start(SimNode& n) {
  pb::Snapshot snap;
  n.storage->snapshot(&snap);
  // The state machine is volatile: it restarts from the snapshot and the
  // committed entries after it are applied again.
  n.applied = snap.metadata().index();
  n.sm = decode_state(snap.data());
  n.last_hs = n.storage->hard_state();
  ++n.incarnation;
  n.restart_at = -1;
  Config c = make_config(n.id);
  c.applied = n.applied;
  n.raft = std::make_unique<Raft>(c, n.storage.get());
  trace("start node " + std::to_string(n.id) + " term " + std::to_string(n.raft->term()));
}

void Simulation::crash(SimNode& n) {
  trace("crash node " + std::to_string(n.id));
  n.raft.reset();
  ++result_.crashes;
}

std::vector<SimNode*> Simulation::live_nodes() {
  std::vector<SimNode*> v;
  for (auto& [id, n] : nodes_) {
    if (n.alive()) v.push_back(&n);
  }
  return v;
}

SimNode* Simulation::leader() {
  SimNode* best = nullptr;
  for (auto& [id, n] : nodes_) {
    if (n.alive() && n.raft->role() == StateRole::kLeader &&
        (best == nullptr || n.raft->term() > best->raft->term())) {
      best = &n;
    }
  }
  return best;
}

void Simulation::send(const pb::Message& m, uint64_t from_incarnation) {
  if (!nodes_.count(m.to())) return;
  const bool snap = m.type() == pb::MsgSnap;
  if (!healing_ && rng_.chance(drop_p_)) {
    if (snap) snap_reports_.push_back({m.from(), from_incarnation, m.to(), true});
    return;
  }
  // Once healed, the network meets Raft's timing requirement (paper §5.6:
  // broadcast time << election timeout): at most one tick of delay, a tenth
  // of the shortest election timeout.  Messages are still reordered.
  const uint64_t max_delay = healing_ ? std::min<uint64_t>(max_delay_, kSubTicksPerTick)
                                      : static_cast<uint64_t>(max_delay_);
  net_.push({now_ + 1 + static_cast<int64_t>(rng_.below(max_delay)), seq_++, m, from_incarnation});
  if (rng_.chance(dup_p_)) {
    net_.push(
        {now_ + 1 + static_cast<int64_t>(rng_.below(max_delay)), seq_++, m, from_incarnation});
  }
}

void Simulation::deliver(const Flight& f) {
  const pb::Message& m = f.m;
  SimNode& to = nodes_.at(m.to());
  const bool cut =
      group_.count(m.from()) && group_.count(m.to()) && group_.at(m.from()) != group_.at(m.to());
  if (!to.alive() || cut) {
    if (m.type() == pb::MsgSnap) {
      snap_reports_.push_back({m.from(), f.from_incarnation, m.to(), true});
    } else if (m.type() == pb::MsgApp && rng_.chance(0.3)) {
      // The transport noticed the peer is unreachable (connection refused).
      unreachable_reports_.push_back({m.from(), f.from_incarnation, m.to(), true});
    }
    after_step();
    return;
  }
  if (opts_.verbose) trace("deliver " + describe(m));
  to.raft->step(m);
  process_ready(to);
  if (m.type() == pb::MsgSnap)
    snap_reports_.push_back({m.from(), f.from_incarnation, m.to(), false});
  after_step();
}

void Simulation::process_ready(SimNode& n) {
  while (!failed() && n.alive() && n.raft->has_ready()) {
    Ready rd = n.raft->ready();
    if (rd.snapshot) {
      const auto& md = rd.snapshot->metadata();
      if (n.storage->apply_snapshot(*rd.snapshot) != StorageError::kOk) {
        fail("node " + std::to_string(n.id) + " got an out-of-date snapshot in Ready");
        return;
      }
      auto it = committed_.find(md.index());
      const uint64_t sm = decode_state(rd.snapshot->data());
      if (it == committed_.end() || it->second.term != md.term() || it->second.sm != sm) {
        fail("snapshot at " + std::to_string(md.index()) + " installed on node " +
             std::to_string(n.id) + " does not match the committed state");
        return;
      }
      n.applied = md.index();
      n.sm = sm;
      ++result_.snapshots_installed;
      trace("node " + std::to_string(n.id) + " installs snapshot @" + std::to_string(md.index()));
    }
    if (!rd.entries.empty()) {
      uint64_t pt = kUnknownTerm;
      if (n.storage->term(rd.entries.front().index() - 1, &pt) != StorageError::kOk) {
        pt = kUnknownTerm;
      }
      for (const auto& e : rd.entries) {
        const LoggedEntry le{entry_hash(e), pt};
        auto [it, inserted] = log_.emplace(std::make_pair(e.index(), e.term()), le);
        if (!inserted) {
          // Log Matching: (index, term) identifies one entry and its history.
          if (it->second.hash != le.hash) {
            fail("log matching: two different entries at index " + std::to_string(e.index()) +
                 " term " + std::to_string(e.term()));
            return;
          }
          if (pt != kUnknownTerm && it->second.prev_term != kUnknownTerm &&
              it->second.prev_term != pt) {
            fail("log matching: entry " + std::to_string(e.index()) + "/" +
                 std::to_string(e.term()) + " preceded by different terms on node " +
                 std::to_string(n.id));
            return;
          }
          if (it->second.prev_term == kUnknownTerm) it->second.prev_term = pt;
        }
        pt = e.term();
      }
      n.storage->append(rd.entries);
    }
    if (rd.hard_state) {
      const pb::HardState& hs = *rd.hard_state;
      const pb::HardState& old = n.last_hs;
      if (hs.term() < old.term()) fail("node " + std::to_string(n.id) + ": term went backwards");
      if (!opts_.skip_vote_check && hs.term() == old.term() && old.vote() != 0 &&
          hs.vote() != old.vote()) {
        fail("node " + std::to_string(n.id) + " voted twice in term " + std::to_string(hs.term()) +
             " (" + std::to_string(old.vote()) + " then " + std::to_string(hs.vote()) + ")");
      }
      if (hs.commit() < old.commit())
        fail("node " + std::to_string(n.id) + ": commit went backwards");
      if (hs.commit() > n.storage->last_index()) {
        fail("node " + std::to_string(n.id) + ": commit beyond its persisted log");
      }
      // Whatever a node considers committed must agree with the committed
      // sequence wherever that is already known.
      for (uint64_t i = std::max(old.commit() + 1, n.storage->first_index());
           i <= hs.commit() && !failed(); ++i) {
        auto c = committed_.find(i);
        if (c == committed_.end()) break;
        uint64_t t = 0;
        if (n.storage->term(i, &t) == StorageError::kOk && t != c->second.term) {
          fail("node " + std::to_string(n.id) + " commits index " + std::to_string(i) +
               " with term " + std::to_string(t) + " but term " + std::to_string(c->second.term) +
               " was committed there");
        }
      }
      n.storage->set_hard_state(hs);
      n.last_hs = hs;
    }
    if (rd.soft_state && rd.soft_state->role == StateRole::kLeader) on_new_leader(n);
    // Messages leave only after the state they depend on is persisted.
    for (const auto& m : rd.messages) send(m, n.incarnation);
    for (const auto& e : rd.committed_entries) {
      apply(n, e);
      if (failed()) return;
    }
    for (const auto& rs : rd.read_states) {
      auto it = reads_.find(rs.context);
      if (it == reads_.end()) continue;
      if (rs.index < it->second) {
        fail("stale read: ReadIndex " + std::to_string(rs.index) + " on node " +
             std::to_string(n.id) + " but index " + std::to_string(it->second) +
             " was applied before the read was requested");
        return;
      }
      ++result_.reads;
    }
    n.raft->advance(rd);
    maybe_compact(n);
  }
}

void Simulation::apply(SimNode& n, const pb::Entry& e) {
  if (e.index() != n.applied + 1) {
    fail("node " + std::to_string(n.id) + " applied index " + std::to_string(e.index()) +
         " after " + std::to_string(n.applied));
    return;
  }
  const uint64_t h = entry_hash(e);
  n.sm = mix(n.sm, h);
  n.applied = e.index();
  auto it = committed_.find(e.index());
  if (it == committed_.end()) {
    if (!committed_.empty() && e.index() != committed_.rbegin()->first + 1) {
      fail("gap in the committed sequence at " + std::to_string(e.index()));
      return;
    }
    committed_[e.index()] = {e.term(), h, n.sm};
    if (e.type() == pb::EntryNormal && !e.data().empty()) ++result_.applied_entries;
    if (e.type() == pb::EntryConfChange) {
      pb::ConfChange cc;
      cc.ParseFromString(e.data());
      const uint64_t id = cc.node_id();
      switch (cc.type()) {
        case pb::ConfChangeAddNode:
          learners_.erase(id);
          voters_.insert(id);
          break;
        case pb::ConfChangeAddLearnerNode:
          if (!voters_.count(id)) learners_.insert(id);
          break;
        case pb::ConfChangeRemoveNode:
          voters_.erase(id);
          learners_.erase(id);
          to_remove_.push_back(id);
          break;
        default:
          break;
      }
      ++result_.conf_changes;
      trace("config change applied: " + pb::ConfChangeType_Name(cc.type()) + " " +
            std::to_string(id));
    }
    if (!marker_.empty() && e.data() == marker_)
      trace("marker committed at " + std::to_string(e.index()));
  } else if (it->second.term != e.term() || it->second.hash != h) {
    fail("state machine safety: node " + std::to_string(n.id) + " applied a different entry at " +
         std::to_string(e.index()) + " (term " + std::to_string(e.term()) + ", committed term " +
         std::to_string(it->second.term) + ")");
    return;
  } else if (it->second.sm != n.sm) {
    fail("node " + std::to_string(n.id) + " state diverged at " + std::to_string(e.index()));
    return;
  }
  if (e.type() == pb::EntryConfChange) {
    pb::ConfChange cc;
    cc.ParseFromString(e.data());
    n.raft->apply_conf_change(cc);
  }
}

void Simulation::maybe_compact(SimNode& n) {
  const uint64_t snap_index = n.storage->first_index() - 1;
  if (n.applied < snap_index + compact_threshold_) return;
  const pb::ConfState cs = n.raft->conf_state();
  if (n.storage->create_snapshot(n.applied, &cs, encode_state(n.sm)) != StorageError::kOk) return;
  // Keep a few entries behind the snapshot for slightly lagging followers.
  const uint64_t keep = rng_.below(8);
  if (n.applied > keep && n.applied - keep > snap_index) n.storage->compact(n.applied - keep);
}

void Simulation::on_new_leader(SimNode& n) {
  const uint64_t term = n.raft->term();
  auto [it, inserted] = leaders_.emplace(term, n.id);
  if (inserted) ++result_.elections;
  if (!inserted && it->second != n.id) {
    fail("election safety: nodes " + std::to_string(it->second) + " and " + std::to_string(n.id) +
         " both leader in term " + std::to_string(term));
    return;
  }
  // Leader Completeness (paper §5.4): every entry applied anywhere so far is
  // committed, so it must be in this new leader's log.
  const RaftLog& log = n.raft->log();
  for (auto c = committed_.lower_bound(log.first_index() - 1); c != committed_.end(); ++c) {
    uint64_t t = 0;
    if (log.term(c->first, &t) != StorageError::kOk || t != c->second.term) {
      fail("leader completeness: new leader " + std::to_string(n.id) + " of term " +
           std::to_string(term) + " lacks committed entry " + std::to_string(c->first));
      return;
    }
  }
  trace("node " + std::to_string(n.id) + " leads term " + std::to_string(term));
}

void Simulation::check_all() {
  for (auto& [id, n] : nodes_) {
    if (!n.alive()) continue;
    if (n.raft->role() == StateRole::kLeader) {
      auto [it, inserted] = leaders_.emplace(n.raft->term(), id);
      if (!inserted && it->second != id) {
        fail("election safety: nodes " + std::to_string(it->second) + " and " + std::to_string(id) +
             " both leader in term " + std::to_string(n.raft->term()));
        return;
      }
    }
    const std::string err = n.raft->check_invariants();
    if (!err.empty()) {
      fail("node " + std::to_string(id) + ": " + err);
      return;
    }
  }
}

void Simulation::after_step() {
  ++result_.steps;
  // Deferred work: snapshot outcomes and removals (never while a node is in
  // the middle of its Ready).
  while (!snap_reports_.empty() && !failed()) {
    auto reports = std::move(snap_reports_);
    snap_reports_.clear();
    for (const auto& r : reports) {
      SimNode& l = nodes_.at(r.leader);
      if (!l.alive() || l.incarnation != r.incarnation) continue;
      l.raft->report_snapshot(r.to, r.failure);
      process_ready(l);
    }
  }
  for (const auto& r : unreachable_reports_) {
    SimNode& l = nodes_.at(r.leader);
    if (failed() || !l.alive() || l.incarnation != r.incarnation) continue;
    l.raft->report_unreachable(r.to);
    process_ready(l);
  }
  unreachable_reports_.clear();
  for (uint64_t id : to_remove_) {
    SimNode& n = nodes_.at(id);
    n.removed = true;
    // A removed member is shut down by its operator, for good.
    if (n.alive()) {
      trace("shut down removed node " + std::to_string(id));
      n.raft.reset();
    }
  }
  to_remove_.clear();
  if (!failed()) check_all();
}

void Simulation::chaos_events(int64_t tick) {
  // Restarts.
  for (auto& [id, n] : nodes_) {
    if (!n.alive() && !n.removed && n.restart_at >= 0 && n.restart_at <= tick) {
      start(n);
      after_step();
    }
  }
  // Crashes: at most a minority of the voters down at a time, so the cluster
  // can also make progress during the chaos.
  if (rng_.chance(crash_p_)) {
    size_t down = 0;
    for (auto& [id, n] : nodes_) down += (!n.alive() && !n.removed && voters_.count(id)) ? 1 : 0;
    auto live = live_nodes();
    const size_t cap = (voters_.size() - 1) / 2 + (rng_.chance(opts_.storm ? 0.6 : 0.2) ? 1 : 0);
    if (!live.empty() && down < cap) {
      SimNode* victim = live[rng_.below(live.size())];
      crash(*victim);
      victim->restart_at = tick + (opts_.storm ? 2 + static_cast<int64_t>(rng_.below(20))
                                               : 5 + static_cast<int64_t>(rng_.below(60)));
      after_step();
    }
  }
  // Partitions that heal.
  if (heal_at_ >= 0 && tick >= heal_at_) {
    group_.clear();
    heal_at_ = -1;
    trace("partition healed");
  } else if (heal_at_ < 0 && rng_.chance(partition_p_)) {
    std::ostringstream o;
    o << "partition:";
    const bool isolate_one = rng_.chance(0.4);
    const uint64_t lonely = 1 + rng_.below(next_id_ - 1);
    for (auto& [id, n] : nodes_) {
      group_[id] = isolate_one ? (id == lonely ? 1 : 0) : static_cast<int>(rng_.below(2));
      o << " " << id << ":" << group_[id];
    }
    heal_at_ = tick + (opts_.storm ? 3 + static_cast<int64_t>(rng_.below(25))
                                   : 10 + static_cast<int64_t>(rng_.below(100)));
    trace(o.str());
  }
  // Client proposals at random members (followers forward them).
  if (rng_.chance(prop_p_)) {
    auto live = live_nodes();
    if (!live.empty()) {
      SimNode* n = live[rng_.below(live.size())];
      n->raft->propose("s" + std::to_string(seed_) + "/" + std::to_string(++proposal_counter_));
      process_ready(*n);
      after_step();
    }
  }
  // Linearizable reads.
  if (rng_.chance(0.05)) {
    auto live = live_nodes();
    if (!live.empty()) {
      SimNode* n = live[rng_.below(live.size())];
      const std::string ctx = "r" + std::to_string(++read_counter_);
      reads_[ctx] = frontier();
      n->raft->read_index(ctx);
      process_ready(*n);
      after_step();
    }
  }
  // Membership changes, through the current leader.
  if (rng_.chance(0.015)) {
    SimNode* l = leader();
    if (l != nullptr) {
      pb::ConfChange cc;
      const uint64_t r = rng_.below(4);
      std::vector<uint64_t> voters(voters_.begin(), voters_.end());
      std::vector<uint64_t> learners(learners_.begin(), learners_.end());
      bool ok = false;
      if (r == 0 && next_id_ <= 8 && learners.size() < 2) {
        // A new member joins as a learner with an empty log.
        cc.set_type(pb::ConfChangeAddLearnerNode);
        cc.set_node_id(next_id_++);
        create_node(cc.node_id(), nullptr);
        ok = true;
      } else if (r == 1 && !learners.empty() && voters.size() < 5) {
        cc.set_type(pb::ConfChangeAddNode);  // promotion
        cc.set_node_id(learners[rng_.below(learners.size())]);
        ok = true;
      } else if (r == 2 && voters.size() > 3) {
        // Possibly the leader itself.
        cc.set_type(pb::ConfChangeRemoveNode);
        cc.set_node_id(voters[rng_.below(voters.size())]);
        ok = true;
      } else if (r == 3 && !learners.empty()) {
        cc.set_type(pb::ConfChangeRemoveNode);
        cc.set_node_id(learners[rng_.below(learners.size())]);
        ok = true;
      }
      if (ok) {
        const DropReason why = l->raft->propose_conf_change(cc);
        trace("propose " + pb::ConfChangeType_Name(cc.type()) + " " + std::to_string(cc.node_id()) +
              ": " + to_string(why));
        process_ready(*l);
        after_step();
      }
    }
  }
  // Leadership transfers.
  if (rng_.chance(opts_.storm ? 0.05 : 0.01)) {
    SimNode* l = leader();
    if (l != nullptr && !voters_.empty()) {
      std::vector<uint64_t> voters(voters_.begin(), voters_.end());
      const uint64_t to = voters[rng_.below(voters.size())];
      trace("transfer leadership " + std::to_string(l->id) + " -> " + std::to_string(to));
      l->raft->transfer_leadership(to);
      process_ready(*l);
      after_step();
    }
  }
}

void Simulation::heal_events(int64_t tick) {
  // Liveness: a client keeps retrying the marker proposal at a random member
  // until it commits (proposals may be dropped without notice).
  if (tick % 15 != 0) return;
  auto live = live_nodes();
  if (live.empty()) return;
  SimNode* n = live[rng_.below(live.size())];
  n->raft->propose(marker_);
  process_ready(*n);
  after_step();
}

SimResult Simulation::run() {
  choose_parameters();
  pb::ConfState cs;
  for (int i = 0; i < initial_voters_; ++i) {
    cs.add_voters(next_id_);
    voters_.insert(next_id_);
    ++next_id_;
  }
  for (uint64_t id : voters_) create_node(id, &cs);
  committed_[1] = {1, 0, 0};
  marker_ = "marker/" + std::to_string(seed_);
  {
    std::ostringstream o;
    o << "seed " << seed_ << ": voters=" << initial_voters_ << " drop=" << drop_p_
      << " dup=" << dup_p_ << " max_delay=" << max_delay_ << " prevote=" << pre_vote_
      << " checkquorum=" << check_quorum_ << " inflight=" << max_inflight_
      << " msgsize=" << max_msg_size_ << " hb=" << heartbeat_tick_ << " prop=" << prop_p_
      << " compact=" << compact_threshold_;
    trace(o.str());
  }

  int64_t end = static_cast<int64_t>(opts_.chaos_ticks) + opts_.liveness_ticks;
  int64_t bound = opts_.liveness_ticks;
  uint64_t marker_index = 0;
  for (int64_t tick = 0; tick < end && !failed(); ++tick) {
    now_ = tick * kSubTicksPerTick;
    ++result_.ticks;
    if (tick == opts_.chaos_ticks) {
      // Heal everything: the network becomes reliable (still delayed and
      // reordered), partitions end, every member that is down restarts.
      healing_ = true;
      group_.clear();
      heal_at_ = -1;
      for (auto& [id, n] : nodes_) {
        if (!n.alive() && !n.removed) {
          start(n);
          after_step();
        }
      }
      // The bound grows with the replication backlog at healing time (each
      // lagging member may have to fetch every missing entry, one message at
      // a time in the harshest configurations).
      uint64_t last = 0, lowest = ~0ull;
      for (auto& [id, n] : nodes_) {
        if (!is_member(id)) continue;
        if (n.alive()) last = std::max(last, n.raft->log().last_index());
        lowest = std::min(lowest, n.applied);
      }
      const uint64_t backlog = last > lowest ? last - lowest : 0;
      bound = opts_.liveness_ticks + 2 * static_cast<int64_t>(backlog);
      end = tick + bound;
      trace("network healed; liveness bound " + std::to_string(bound) + " ticks (backlog " +
            std::to_string(backlog) + ")");
    }
    if (tick < opts_.chaos_ticks) {
      chaos_events(tick);
    } else {
      if (marker_index == 0) {
        for (auto it = committed_.rbegin(); it != committed_.rend() && marker_index == 0; ++it) {
          // The marker entry's hash identifies it.
          pb::Entry probe;
          probe.set_data(marker_);
          if (it->second.hash == entry_hash(probe)) marker_index = it->first;
          if (it->first + 64 < committed_.rbegin()->first) break;
        }
      }
      if (marker_index == 0) {
        heal_events(tick);
      } else {
        bool all = true;
        for (auto& [id, n] : nodes_) {
          if (!is_member(id)) continue;
          if (!n.alive() || n.applied < marker_index) all = false;
        }
        if (all) {
          result_.ticks_to_recover = static_cast<uint64_t>(tick - opts_.chaos_ticks);
          break;
        }
      }
    }
    // Tick every live node, in a seed-dependent order.
    auto live = live_nodes();
    for (size_t i = live.size(); i > 1; --i) std::swap(live[i - 1], live[rng_.below(i)]);
    for (SimNode* n : live) {
      if (failed() || !n->alive()) continue;
      n->raft->tick();
      process_ready(*n);
      after_step();
    }
    // Deliver everything due during this tick.
    const int64_t tick_end = now_ + kSubTicksPerTick;
    while (!net_.empty() && !failed() && net_.top().at < tick_end) {
      Flight f = net_.top();
      net_.pop();
      now_ = std::max(now_, f.at);
      deliver(f);
    }
    if (tick == end - 1 && !failed()) {
      std::ostringstream o;
      o << "liveness: " << bound
        << " ticks after healing, the marker proposal is not applied on every member"
        << " (marker index " << marker_index << "; members:";
      for (auto& [id, n] : nodes_) {
        if (!is_member(id)) continue;
        o << " " << id << (n.alive() ? "" : "(down)") << " applied=" << n.applied;
        if (n.alive()) {
          o << " " << to_string(n.raft->role()) << " term=" << n.raft->term()
            << " lead=" << n.raft->lead();
        }
      }
      o << ")";
      fail(o.str());
    }
  }
  return result_;
}

}  // namespace

SimResult run_simulation(uint64_t seed, const SimOptions& opts) {
  Simulation s(seed, opts);
  return s.run();
}

std::string replay_command(uint64_t seed, const SimOptions& opts) {
  std::ostringstream o;
  o << "build/bin/raft-sim --start " << seed << " --seeds 1 --verbose";
  if (opts.chaos_ticks != SimOptions{}.chaos_ticks) o << " --chaos-ticks " << opts.chaos_ticks;
  if (opts.liveness_ticks != SimOptions{}.liveness_ticks) {
    o << " --liveness-ticks " << opts.liveness_ticks;
  }
  if (opts.knobs.vote_twice) o << " --break-vote-twice";
  if (opts.knobs.commit_entries_of_older_terms) o << " --break-commit-old-terms";
  if (opts.knobs.vote_ignoring_log) o << " --break-vote-ignoring-log";
  if (opts.storm) o << " --storm";
  if (opts.skip_vote_check) o << " --skip-vote-check";
  return o.str();
}

}  // namespace muster::raft::sim
