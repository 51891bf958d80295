// A tiny in-process cluster for scenario tests: every node is a Raft core with
// a MemoryStorage; the test decides when messages move.  The driver follows
// the Ready contract exactly (persist, then send, then apply, then advance).
#pragma once

#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "node/raft/raft.h"

namespace muster::raft::testing {

struct TestNode {
  std::unique_ptr<MemoryStorage> storage;
  std::unique_ptr<Raft> raft;
  std::vector<std::string> applied;  // data of applied normal entries
  std::vector<ReadState> read_states;
  std::vector<DroppedProposal> dropped;
  uint64_t applied_index = 0;
};

class Cluster {
 public:
  using Tweak = std::function<void(Config&)>;

  // Voters `ids` (and learners `learners`) bootstrapped from a snapshot at
  // index 1, term 1.
  explicit Cluster(std::vector<uint64_t> ids, Tweak tweak = {}, std::vector<uint64_t> learners = {})
      : tweak_(std::move(tweak)) {
    pb::ConfState cs;
    for (uint64_t id : ids) cs.add_voters(id);
    for (uint64_t id : learners) cs.add_learners(id);
    for (uint64_t id : ids) add_node(id, &cs);
    for (uint64_t id : learners) add_node(id, &cs);
  }

  // Adds a node; with cs == nullptr it starts empty (a joiner).
  void add_node(uint64_t id, const pb::ConfState* cs) {
    auto n = std::make_unique<TestNode>();
    n->storage = std::make_unique<MemoryStorage>();
    if (cs != nullptr) {
      pb::Snapshot boot;
      boot.mutable_metadata()->set_index(1);
      boot.mutable_metadata()->set_term(1);
      *boot.mutable_metadata()->mutable_conf_state() = *cs;
      EXPECT_EQ(n->storage->apply_snapshot(boot), StorageError::kOk);
      pb::HardState hs;
      hs.set_term(1);
      hs.set_commit(1);
      n->storage->set_hard_state(hs);
      n->applied_index = 1;
    }
    nodes_[id] = std::move(n);
    restart(id);
  }

  // (Re)creates the Raft object from what the node persisted.
  void restart(uint64_t id) {
    TestNode& n = *nodes_.at(id);
    Config c;
    c.id = id;
    c.election_tick = 10;
    c.heartbeat_tick = 1;
    c.seed = 42 + id;
    c.max_inflight_msgs = 256;
    if (tweak_) tweak_(c);
    pb::Snapshot snap;
    n.storage->snapshot(&snap);
    c.applied = snap.metadata().index();
    n.applied_index = c.applied;
    n.raft = std::make_unique<Raft>(c, n.storage.get());
  }

  Raft& raft(uint64_t id) { return *nodes_.at(id)->raft; }
  TestNode& node(uint64_t id) { return *nodes_.at(id); }
  MemoryStorage& storage(uint64_t id) { return *nodes_.at(id)->storage; }
  std::vector<uint64_t> ids() const {
    std::vector<uint64_t> v;
    for (auto& [id, n] : nodes_) v.push_back(id);
    return v;
  }

  // Persist, queue messages, apply, advance: for one node.
  void process_ready(uint64_t id) {
    TestNode& n = *nodes_.at(id);
    while (n.raft->has_ready()) {
      Ready rd = n.raft->ready();
      if (rd.snapshot) {
        ASSERT_EQ(n.storage->apply_snapshot(*rd.snapshot), StorageError::kOk);
        n.applied_index = rd.snapshot->metadata().index();
      }
      n.storage->append(rd.entries);
      if (rd.hard_state) n.storage->set_hard_state(*rd.hard_state);
      for (auto& m : rd.messages) queue_.push_back(m);
      for (const auto& e : rd.committed_entries) {
        ASSERT_EQ(e.index(), n.applied_index + 1) << "node " << id << " applied out of order";
        n.applied_index = e.index();
        if (e.type() == pb::EntryConfChange) {
          pb::ConfChange cc;
          ASSERT_TRUE(cc.ParseFromString(e.data()));
          // The configuration is persisted only with snapshots: a restart
          // resumes from the snapshot and re-applies later changes.
          n.raft->apply_conf_change(cc);
        } else if (!e.data().empty()) {
          n.applied.push_back(e.data());
        }
      }
      for (auto& r : rd.read_states) n.read_states.push_back(r);
      for (auto& d : rd.dropped_proposals) n.dropped.push_back(d);
      n.raft->advance(rd);
      ASSERT_EQ(n.raft->check_invariants(), "") << "node " << id;
    }
  }

  void process_all() {
    for (auto& [id, n] : nodes_) process_ready(id);
  }

  bool can_deliver(const pb::Message& m) const {
    if (!nodes_.count(m.to())) return false;
    if (isolated_.count(m.from()) || isolated_.count(m.to())) return false;
    if (cut_.count({m.from(), m.to()}) || cut_.count({m.to(), m.from()})) return false;
    if (ignored_.count(m.type())) return false;
    if (drop_hook_ && drop_hook_(m)) return false;
    return true;
  }

  // Delivers messages (and the answers they cause) until none are left.
  // Returns the number delivered.
  size_t stabilize(size_t limit = 100000) {
    size_t delivered = 0;
    process_all();
    while (!queue_.empty() && delivered < limit) {
      pb::Message m = queue_.front();
      queue_.pop_front();
      if (!can_deliver(m)) continue;
      if (m.type() == pb::MsgSnap) {
        // The transfer "completes" as it is delivered.
        deliver(m);
        report_snapshot_done(m.from(), m.to(), false);
      } else {
        deliver(m);
      }
      ++delivered;
      process_all();
    }
    return delivered;
  }

  void deliver(const pb::Message& m) {
    raft(m.to()).step(m);
    process_ready(m.to());
  }

  void report_snapshot_done(uint64_t leader, uint64_t to, bool failure) {
    if (!nodes_.count(leader)) return;
    raft(leader).report_snapshot(to, failure);
    process_ready(leader);
  }

  // Takes (and removes) the queued messages, e.g. to inspect them.
  std::vector<pb::Message> take_messages() {
    process_all();
    std::vector<pb::Message> v(queue_.begin(), queue_.end());
    queue_.clear();
    return v;
  }
  void drop_queued() { queue_.clear(); }

  void tick(uint64_t id, int n = 1) {
    for (int i = 0; i < n; ++i) {
      raft(id).tick();
      process_ready(id);
    }
  }
  void tick_all(int n = 1) {
    for (int i = 0; i < n; ++i) {
      for (auto& [id, node] : nodes_) {
        node->raft->tick();
        process_ready(id);
      }
    }
  }

  void campaign(uint64_t id) {
    raft(id).campaign();
    stabilize();
  }

  uint64_t leader() const {
    for (auto& [id, n] : nodes_) {
      if (n->raft->role() == StateRole::kLeader && !isolated_.count(id)) return id;
    }
    return 0;
  }

  void isolate(uint64_t id) { isolated_.insert(id); }
  void cut(uint64_t a, uint64_t b) { cut_.insert({a, b}); }
  void ignore(pb::MessageType t) { ignored_.insert(t); }
  void set_drop_hook(std::function<bool(const pb::Message&)> h) { drop_hook_ = std::move(h); }
  void recover() {
    isolated_.clear();
    cut_.clear();
    ignored_.clear();
    drop_hook_ = nullptr;
  }

  // The terms of node id's whole log, [first_index-1 .. last_index].
  std::vector<uint64_t> log_terms(uint64_t id) {
    std::vector<uint64_t> t;
    const RaftLog& l = raft(id).log();
    for (uint64_t i = l.first_index(); i <= l.last_index(); ++i) t.push_back(l.term_or_zero(i));
    return t;
  }

 private:
  Tweak tweak_;
  std::map<uint64_t, std::unique_ptr<TestNode>> nodes_;
  std::deque<pb::Message> queue_;
  std::set<uint64_t> isolated_;
  std::set<std::pair<uint64_t, uint64_t>> cut_;
  std::set<int> ignored_;
  std::function<bool(const pb::Message&)> drop_hook_;
};

// Builds a log of entries with the given terms starting at index 2 (index 1 is
// the bootstrap snapshot), for shaping a node's log directly in storage.
inline std::vector<pb::Entry> entries_with_terms(const std::vector<uint64_t>& terms,
                                                 uint64_t first_index = 2) {
  std::vector<pb::Entry> v;
  for (size_t k = 0; k < terms.size(); ++k) {
    pb::Entry e;
    e.set_index(first_index + k);
    e.set_term(terms[k]);
    e.set_data("t" + std::to_string(terms[k]) + "i" + std::to_string(first_index + k));
    v.push_back(e);
  }
  return v;
}

}  // namespace muster::raft::testing
