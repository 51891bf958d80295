// The Raft driver (node/server/driver.h) with threads off, in the style of
// LogCabin's RaftConsensus tests: three drivers over real LevelDB storage,
// joined by a fake transport whose messages the test delivers by hand, each
// driver run one turn() at a time on a simulated clock.
//
// What it checks is the driver's side of the Ready contract:
//   - a follower never sends an ack or a vote its disk does not hold yet
//     (checked inside the fake transport, at the moment of sending);
//   - committed entries reach the apply side once each, in log order,
//     never before they are on this member's disk;
//   - a configuration change is applied to the core through the hook and
//     every member's core agrees on the new configuration;
//   - a follower cut off past the leader's compaction catches up from a
//     snapshot: the state machine streamed beside the MsgSnap is installed
//     when the core hands the snapshot over, and the log continues after it.
#include "node/server/driver.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "base/metrics.h"
#include "node/raft/raft.h"
#include "node/server/initial_log.h"
#include "node/server/member_server.h"
#include "node/server/transport.h"
#include "node/storage/member_storage.h"
#include "tests/support/temp_dir.h"

namespace muster::server {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

using ScratchDir = ::muster::testing::TempDir;  // tests/support's

struct Net;

// One member: storage, core, driver, and what its hooks saw.
struct Node {
  uint64_t id = 0;
  std::unique_ptr<storage::MemberStorage> storage;
  std::unique_ptr<LogView> view;
  std::unique_ptr<raft::Raft> raft;
  std::unique_ptr<RaftTransport> transport;
  metrics::Registry metrics;
  std::unique_ptr<Driver> driver;
  std::vector<uint64_t> applied;  // indexes, in the order the hook saw them
  int installs = 0;
  std::vector<raft::ReadState> read_states;  // what on_read_states handed out
  uint64_t snapshot_count = 20;
};

// Messages in flight, delivered by the test; `cut` members lose everything
// sent to or by them.
struct Net {
  struct InFlight {
    raftpb::Message m;
  };
  // A snapshot stream the receiver has opened (its installer holds the
  // receiver's one install slot) and whose data has not all arrived: the
  // sender was paused mid-stream.
  struct HeldSnapshot {
    raftpb::Message m;
    std::unique_ptr<storage::SnapshotWriter> writer;
    std::unique_ptr<storage::SnapshotInstaller> installer;
    std::function<void(bool)> done;
  };
  std::deque<InFlight> wire;
  std::set<uint64_t> cut;
  bool hold_next_snapshot = false;  // the next snapshot stream stops mid-way
  std::vector<HeldSnapshot> held;
  int refused_snapshots = 0;  // streams the receiver refused at the start
  std::map<uint64_t, Node*> nodes;
  std::vector<std::string> violations;
};

class FakeTransport final : public RaftTransport {
 public:
  FakeTransport(Net& net, Node& self) : net_(net), self_(self) {}

  void send(std::vector<raftpb::Message> msgs) override {
    for (auto& m : msgs) {
      check_durable(m);
      if (net_.cut.count(m.from()) || net_.cut.count(m.to())) continue;
      net_.wire.push_back({std::move(m)});
    }
  }
  // The leader's snapshot: what Transport does over a connection of its own
  // (snapshot_stream.h), done at once: the receiver opens an installer
  // (refusing the stream if it cannot, as MemberServer::snapshot_sink does),
  // the writer's chunks go into it, and it is handed to the receiver's driver
  // before the MsgSnap.
  void send_snapshot(raftpb::Message msg, std::unique_ptr<storage::SnapshotWriter> writer,
                     std::function<void(bool)> done) override {
    Node* to = net_.nodes.at(msg.to());
    if (net_.cut.count(msg.to())) return done(false);
    std::unique_ptr<storage::SnapshotInstaller> inst;
    if (!to->storage->begin_install(&inst)) {
      net_.refused_snapshots++;
      return done(false);
    }
    Net::HeldSnapshot s{std::move(msg), std::move(writer), std::move(inst), std::move(done)};
    if (net_.hold_next_snapshot) {
      net_.hold_next_snapshot = false;
      net_.held.push_back(std::move(s));
      return;
    }
    finish_snapshot(net_, std::move(s));
  }
  // The rest of a stream: every chunk, then the installer and the MsgSnap
  // to the receiver's driver.
  static void finish_snapshot(Net& net, Net::HeldSnapshot s) {
    Node* to = net.nodes.at(s.m.to());
    pb::SnapshotChunk chunk;
    while (s.writer->next(&chunk)) {
      ASSERT_TRUE(s.installer->add(chunk));
      const bool last = chunk.last();
      chunk.Clear();
      if (last) break;
    }
    ASSERT_TRUE(s.installer->complete());
    to->driver->queue_install(std::move(s.installer));
    to->driver->step(std::move(s.m));
    s.done(true);
  }
  bool is_active(uint64_t peer) const override { return !net_.cut.count(peer); }

 private:
  // A follower's ack or vote must be backed by its disk at the moment it
  // leaves (Raft §5.2, thesis 10.2.1 allows only the leader to send first).
  void check_durable(const raftpb::Message& m) {
    auto& log = self_.storage->log();
    if (m.type() == raftpb::MsgAppResp && !m.reject() && m.index() > log.last_index())
      net_.violations.push_back("member " + std::to_string(m.from()) + " acked index " +
                                std::to_string(m.index()) + " with only " +
                                std::to_string(log.last_index()) + " on disk");
    if ((m.type() == raftpb::MsgVoteResp) && !m.reject() &&
        (log.hard_state().vote() != m.to() || log.hard_state().term() < m.term()))
      net_.violations.push_back("member " + std::to_string(m.from()) + " granted a vote to " +
                                std::to_string(m.to()) + " not on disk");
  }

  Net& net_;
  Node& self_;
};

class DriverTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kHeartbeatMs = 100;

  void SetUp() override {
    std::vector<InitialMember> initial;
    for (uint64_t id : {1, 2, 3}) initial.push_back({id, "m" + std::to_string(id), {}, {}});
    for (uint64_t id : {1, 2, 3}) {
      auto& n = nodes_[id];
      n = std::make_unique<Node>();
      n->id = id;
      const std::string dir = dir_.path() + "/m" + std::to_string(id);
      ASSERT_TRUE(storage::MemberStorage::open(dir, {}, &n->storage));
      write_bootstrap_log(n->storage->log(), initial);
      net_.nodes[id] = n.get();
      make_driver(*n);
    }
    for (auto& [id, n] : nodes_) n->driver->turn(now_);  // applies the bootstrap entries
  }

  void make_driver(Node& n) {
    raft::Config rc;
    rc.id = n.id;
    rc.heartbeat_tick = 1;
    rc.election_tick = 10;
    rc.applied = n.storage->kv().applied_index();
    rc.pre_vote = true;
    rc.check_quorum = true;
    rc.max_size_per_msg = 1 << 20;
    rc.max_inflight_msgs = 256;
    rc.seed = n.id;
    n.view = std::make_unique<LogView>(*n.storage);
    n.raft = std::make_unique<raft::Raft>(rc, n.view.get());
    n.transport = std::make_unique<FakeTransport>(net_, n);
    DriverOptions o;
    o.member_id = n.id;
    o.heartbeat_ms = kHeartbeatMs;
    o.election_ms = 10 * kHeartbeatMs;
    o.snapshot_count = n.snapshot_count;
    o.snapshot_catchup_entries = 5;
    o.existing_state = false;
    DriverHooks h;
    h.apply_now = [this, &n](const std::vector<raftpb::Entry>& entries) {
      for (const auto& e : entries) {
        if (e.index() <= n.storage->kv().applied_index()) continue;  // came with a snapshot
        // Committed (the core says so; the commit index itself may reach
        // the disk with this Ready's write: a restart raises it to the
        // applied index) and on this member's disk: that very entry, not an
        // older one at its index that this Ready is about to replace.
        uint64_t disk_term = 0;
        const bool on_disk = e.index() <= n.storage->log().last_index() &&
                             n.storage->log().term(e.index(), &disk_term) ==
                                 raft::StorageError::kOk &&
                             disk_term == e.term();
        if (e.index() > n.raft->log().committed() || !on_disk)
          net_.violations.push_back("member " + std::to_string(n.id) + " applies index " +
                                    std::to_string(e.index()) + " (term " +
                                    std::to_string(e.term()) + ") not committed or not on disk");
        if (!n.applied.empty() && e.index() != n.applied.back() + 1)
          net_.violations.push_back("member " + std::to_string(n.id) + " applies " +
                                    std::to_string(e.index()) + " after " +
                                    std::to_string(n.applied.back()));
        n.applied.push_back(e.index());
        if (e.type() == raftpb::EntryConfChange) {
          raftpb::ConfChange cc;
          ASSERT_TRUE(cc.ParseFromString(e.data()));
          raftpb::ConfState cs = n.raft->apply_conf_change(cc);
          n.storage->kv().apply_noop(e.index(), e.term(), &cs);
        } else {
          n.storage->kv().apply_noop(e.index(), e.term());
        }
      }
    };
    // The apply side of the test applies at once (no thread): what the
    // driver hands over must already be persisted.
    h.apply = [apply_now = h.apply_now](std::vector<raftpb::Entry> entries) {
      apply_now(entries);
    };
    h.drain = [] {};
    h.on_read_states = [&n](const std::vector<raft::ReadState>& rs) {
      n.read_states.insert(n.read_states.end(), rs.begin(), rs.end());
    };
    h.on_installed = [&n](const raftpb::SnapshotMetadata& meta) {
      n.installs++;
      // What the member does (membership's adopt_installed): the applied
      // index jumps, and the apply order restarts after it.
      n.applied.push_back(n.storage->kv().applied_index());
      (void)meta;
    };
    n.driver = std::make_unique<Driver>(o, *n.raft, *n.storage, *n.transport, n.metrics, h);
  }

  // One round: every driver takes a turn, then everything on the wire is
  // delivered; the clock moves one heartbeat.
  void round() {
    now_ += std::chrono::milliseconds(kHeartbeatMs);
    for (auto& [id, n] : nodes_)
      if (!net_.cut.count(id)) n->driver->turn(now_);
    while (!net_.wire.empty()) {
      auto f = std::move(net_.wire.front());
      net_.wire.pop_front();
      Driver& to = *nodes_.at(f.m.to())->driver;
      to.step(std::move(f.m));
      to.turn(now_);
    }
  }

  uint64_t leader() {
    for (auto& [id, n] : nodes_)
      if (!net_.cut.count(id) && n->raft->role() == raft::StateRole::kLeader) return id;
    return 0;
  }

  uint64_t elect() {
    for (int i = 0; i < 100 && leader() == 0; ++i) round();
    return leader();
  }

  void propose_on_leader(int count) {
    Driver& d = *nodes_[leader()]->driver;
    for (int i = 0; i < count; ++i) d.propose("entry", 1000 + proposals_++);
  }

  void settle(int rounds = 20) {
    for (int i = 0; i < rounds; ++i) round();
  }

  ScratchDir dir_;
  Net net_;
  std::map<uint64_t, std::unique_ptr<Node>> nodes_;
  Clock::time_point now_ = Clock::now();
  int proposals_ = 0;
};

TEST_F(DriverTest, FollowersAckOnlyWhatTheirDiskHoldsAndApplyInOrder) {
  ASSERT_NE(elect(), 0u);
  propose_on_leader(30);
  settle();
  EXPECT_EQ(net_.violations, std::vector<std::string>{});
  const uint64_t last = nodes_[leader()]->storage->log().last_index();
  for (auto& [id, n] : nodes_) {
    EXPECT_EQ(n->storage->kv().applied_index(), last) << "member " << id;
    ASSERT_FALSE(n->applied.empty());
    EXPECT_EQ(n->applied.back(), last) << "member " << id;
  }
}

// Linearizable reads that arrive in one turn cost one ReadIndex: the leader
// sends one heartbeat round for all of them and a follower one MsgReadIndex,
// and every read is answered with a read point at or past the commit index
// of the moment it was asked.
TEST_F(DriverTest, ReadsOfOneTurnShareOneReadIndex) {
  const uint64_t lead = elect();
  ASSERT_NE(lead, 0u);
  settle(3);  // the leader has committed an entry of its term
  const uint64_t follower = lead == 1 ? 2 : 1;
  const uint64_t committed = nodes_[lead]->raft->log().committed();
  auto count_on_wire = [this](uint64_t from, raftpb::MessageType type) {
    int n = 0;
    for (const auto& f : net_.wire)
      if (f.m.from() == from && f.m.type() == type && !f.m.context().empty()) n++;
    return n;
  };
  for (uint64_t id : {lead, follower}) {
    for (int i = 0; i < 10; ++i)
      nodes_[id]->driver->read_index(std::to_string(id) + "-read-" + std::to_string(i));
    nodes_[id]->driver->turn(now_);
  }
  EXPECT_EQ(count_on_wire(lead, raftpb::MsgHeartbeat), 2);  // one per follower
  EXPECT_EQ(count_on_wire(follower, raftpb::MsgReadIndex), 1);
  settle(3);
  for (uint64_t id : {lead, follower}) {
    std::set<std::string> answered;
    for (const auto& rs : nodes_[id]->read_states) {
      EXPECT_GE(rs.index, committed) << rs.context;
      answered.insert(rs.context);
    }
    EXPECT_EQ(answered.size(), 10u) << "member " << id;
    for (int i = 0; i < 10; ++i)
      EXPECT_TRUE(answered.count(std::to_string(id) + "-read-" + std::to_string(i)));
  }
}

// A follower's ReadIndex request is lost on its way to the leader (a
// partition, or a leader change that drops it): the follower asks again
// after kReadRetryEvery, and the read is answered.  Before, the read waited
// for its request deadline and failed.
TEST_F(DriverTest, ALostReadIndexRequestIsAskedAgain) {
  const uint64_t lead = elect();
  ASSERT_NE(lead, 0u);
  settle(3);
  const uint64_t follower = lead == 1 ? 2 : 1;
  nodes_[follower]->driver->read_index("asked-once");
  nodes_[follower]->driver->turn(now_);
  int dropped = 0;
  for (auto it = net_.wire.begin(); it != net_.wire.end();) {
    if (it->m.type() == raftpb::MsgReadIndex) {
      it = net_.wire.erase(it);
      dropped++;
    } else {
      ++it;
    }
  }
  ASSERT_EQ(dropped, 1);
  settle(2);  // 200 ms: not asked again yet
  EXPECT_TRUE(nodes_[follower]->read_states.empty());
  settle(5);
  ASSERT_EQ(nodes_[follower]->read_states.size(), 1u);
  EXPECT_EQ(nodes_[follower]->read_states[0].context, "asked-once");
}

// A stopping leader hands off to the voter whose log matches the most of its
// own (Driver::stop(true) asks for transfer_leadership_to_best()).  The
// driver once iterated the voters of a temporary copy of the configuration
// after it was destroyed: ASan's stack-use-after-scope in every member
// stopped with SIGTERM while leading (found by the sanitized integration
// suite; docs/reliability.md).
TEST_F(DriverTest, AStoppingLeaderHandsOffToTheMostCaughtUpVoter) {
  const uint64_t lead = elect();
  ASSERT_NE(lead, 0u);
  propose_on_leader(3);
  settle(5);
  // The follower with the higher ID falls behind: picking it (the last voter
  // of a tie, or any voter regardless of its log) fails the transfer.
  std::vector<uint64_t> followers;
  for (auto& [id, n] : nodes_)
    if (id != lead) followers.push_back(id);
  ASSERT_EQ(followers.size(), 2u);
  const uint64_t ahead = followers[0], behind = followers[1];
  net_.cut.insert(behind);
  propose_on_leader(5);
  settle(5);
  const uint64_t term = nodes_[lead]->raft->term();
  nodes_[lead]->driver->transfer_leadership_to_best();
  settle(10);
  EXPECT_EQ(leader(), ahead);
  EXPECT_NE(nodes_[lead]->raft->role(), raft::StateRole::kLeader);
  EXPECT_GT(nodes_[ahead]->raft->term(), term);
  EXPECT_EQ(net_.violations, std::vector<std::string>{});
}

// A deposed leader's own uncommitted entries are replaced when it rejoins:
// the new leader's entries and their commit arrive in one Ready, and what
// its disk holds at those indexes until the write is the old entries, so
// nothing may be applied before the write (the apply-side hand-over must
// take the first entry the Ready writes as the end of what is durable).
TEST_F(DriverTest, ARejoiningLeaderAppliesTheNewEntriesOnlyAfterReplacingItsOwn) {
  const uint64_t old = elect();
  ASSERT_NE(old, 0u);
  propose_on_leader(3);
  settle(5);  // committed everywhere
  // The leader takes proposals no one else hears of, then is cut off.
  net_.cut.insert(old);
  Node& a = *nodes_[old];
  for (int i = 0; i < 3; ++i) a.driver->propose("lost", 5000 + i);
  a.driver->turn(now_);  // appended and persisted by the old leader only
  const uint64_t lost_from = a.storage->log().last_index() - 2;
  ASSERT_GE(lost_from, 1u);
  const uint64_t fresh = elect();
  ASSERT_NE(fresh, 0u);
  ASSERT_NE(fresh, old);
  propose_on_leader(6);
  settle(5);
  net_.cut.erase(old);
  settle(30);
  EXPECT_EQ(net_.violations, std::vector<std::string>{});
  const uint64_t last = nodes_[fresh]->storage->log().last_index();
  EXPECT_EQ(a.storage->kv().applied_index(), last);
  uint64_t t_new = 0, t_old = 0;
  ASSERT_EQ(a.storage->log().term(lost_from, &t_old), raft::StorageError::kOk);
  ASSERT_EQ(nodes_[fresh]->storage->log().term(lost_from, &t_new), raft::StorageError::kOk);
  EXPECT_EQ(t_old, t_new) << "the old leader's lost entries were not replaced";
}

TEST_F(DriverTest, ConfigurationChangeIsAppliedToEveryCore) {
  const uint64_t lead = elect();
  ASSERT_NE(lead, 0u);
  // Remove member 3 (not the leader if it leads: remove another one).
  const uint64_t victim = lead == 3 ? 2 : 3;
  Node& l = *nodes_[lead];
  l.driver->post([&l, victim] {
    raftpb::ConfChange cc;
    cc.set_type(raftpb::ConfChangeRemoveNode);
    cc.set_node_id(victim);
    EXPECT_EQ(l.raft->propose_conf_change(cc), raft::DropReason::kNone);
  });
  settle();
  EXPECT_EQ(net_.violations, std::vector<std::string>{});
  for (auto& [id, n] : nodes_) {
    if (id == victim) continue;
    auto cs = n->raft->conf_state();
    std::set<uint64_t> voters(cs.voters().begin(), cs.voters().end());
    EXPECT_EQ(voters.count(victim), 0u) << "member " << id;
    EXPECT_EQ(voters.size(), 2u) << "member " << id;
  }
}

TEST_F(DriverTest, AFollowerPastTheCompactionCatchesUpFromASnapshot) {
  uint64_t lead = elect();
  ASSERT_NE(lead, 0u);
  const uint64_t lagging = lead == 3 ? 1 : 3;
  net_.cut.insert(lagging);
  // Enough entries for the leader to snapshot (every 20) and compact past
  // what the lagging member has.
  for (int i = 0; i < 6; ++i) {
    propose_on_leader(10);
    settle(3);
  }
  Node& l = *nodes_[lead];
  ASSERT_GT(l.storage->log().first_index(), nodes_[lagging]->storage->log().last_index() + 1)
      << "the leader must have compacted past the lagging member";
  net_.cut.erase(lagging);
  settle(30);
  Node& f = *nodes_[lagging];
  EXPECT_EQ(f.installs, 1);
  EXPECT_EQ(net_.violations, std::vector<std::string>{});
  EXPECT_EQ(f.storage->kv().applied_index(), l.storage->kv().applied_index());
  // The log goes on after the snapshot: new entries reach it too.
  propose_on_leader(5);
  settle();
  EXPECT_EQ(f.storage->kv().applied_index(), l.storage->log().last_index());
  EXPECT_EQ(net_.violations, std::vector<std::string>{});
}

// Found by tests/robustness (muster soak, seed 5035: kill-follower, then
// pause-leader): a restarted follower began receiving a snapshot from a
// leader that was paused mid-stream and deposed meanwhile; the stream
// completed after the resume, the core refused its MsgSnap (a past term),
// and the installer, never taken, kept db.new's LevelDB lock: the follower
// refused every later snapshot ("lock ... already held by process") and
// never caught up.
TEST_F(DriverTest, AFollowerCatchesUpAfterRefusingASnapshotFromADeposedLeader) {
  const uint64_t old_lead = elect();
  ASSERT_NE(old_lead, 0u);
  const uint64_t lagging = old_lead == 3 ? 1 : 3;
  net_.cut.insert(lagging);
  for (int i = 0; i < 6; ++i) {
    propose_on_leader(10);
    settle(3);
  }
  ASSERT_GT(nodes_[old_lead]->storage->log().first_index(),
            nodes_[lagging]->storage->log().last_index() + 1)
      << "the leader must have compacted past the lagging member";
  // The lagging member is back; the leader starts streaming it a snapshot
  // and is paused mid-stream.
  net_.hold_next_snapshot = true;
  net_.cut.erase(lagging);
  for (int i = 0; i < 20 && net_.held.empty(); ++i) round();
  ASSERT_EQ(net_.held.size(), 1u) << "the leader never began a snapshot stream";
  ASSERT_EQ(net_.held[0].m.to(), lagging);
  net_.cut.insert(old_lead);
  // The other two elect a new leader; it too finds the lagging member past
  // its compaction, and its snapshot is refused while the old stream holds
  // the install slot.
  const uint64_t new_lead = elect();
  ASSERT_NE(new_lead, 0u);
  ASSERT_NE(new_lead, old_lead);
  Node& f = *nodes_[lagging];
  ASSERT_GT(f.raft->term(), net_.held[0].m.term());
  // The old leader resumes: its stream completes, and the MsgSnap it opened
  // with now carries a past term.
  net_.cut.erase(old_lead);
  Net::HeldSnapshot stale = std::move(net_.held[0]);
  net_.held.clear();
  FakeTransport::finish_snapshot(net_, std::move(stale));
  f.driver->turn(now_);
  EXPECT_EQ(f.installs, 0) << "a snapshot from a past term was installed";
  // The new leader's next snapshot must get through.
  Node& l = *nodes_[new_lead];
  for (int i = 0; i < 5; ++i) l.driver->propose("entry", 1000 + proposals_++);
  settle(40);
  ASSERT_EQ(leader(), new_lead);
  EXPECT_EQ(f.installs, 1);
  EXPECT_EQ(f.storage->kv().applied_index(), l.storage->log().last_index())
      << "the lagging member never caught up (" << net_.refused_snapshots
      << " snapshot streams refused)";
  EXPECT_EQ(net_.violations, std::vector<std::string>{});
}

// Found by tests/robustness (muster soak, seed 31000: the leader killed,
// restarted, then sent a snapshot): a leader streams its current state with
// its last Raft snapshot's metadata, so the state a follower installs may be
// newer than the metadata's index.  When it was newer by the follower's
// snapshot count, the follower's next snapshot asked the log for an index
// past its last entry and the member aborted ("RaftLog::create_snapshot:
// index 1108 outside the log").
TEST_F(DriverTest, AnInstalledStateNewerThanItsSnapshotDoesNotStopTheFollower) {
  const uint64_t lead = elect();
  ASSERT_NE(lead, 0u);
  const uint64_t lagging = lead == 3 ? 1 : 3;
  // The lagging member snapshots more often than the leader (its own
  // --snapshot-count), so the leader's gap between snapshot and state is
  // enough: restart its driver with that setting.
  Node& f = *nodes_[lagging];
  f.snapshot_count = 3;
  make_driver(f);
  net_.cut.insert(lagging);
  for (int i = 0; i < 6; ++i) {
    propose_on_leader(10);
    settle(3);
  }
  Node& l = *nodes_[lead];
  // Entries applied after the leader's last snapshot travel in the state.
  uint64_t snap_index = 0;
  for (int i = 0; i < 20; ++i) {
    raftpb::Snapshot snap;
    ASSERT_EQ(l.storage->log().snapshot(&snap), raft::StorageError::kOk);
    snap_index = snap.metadata().index();
    if (l.storage->kv().applied_index() >= snap_index + f.snapshot_count) break;
    propose_on_leader(1);
    settle(1);
  }
  ASSERT_GE(l.storage->kv().applied_index(), snap_index + f.snapshot_count);
  ASSERT_GT(l.storage->log().first_index(), f.storage->log().last_index() + 1)
      << "the leader must have compacted past the lagging member";
  net_.cut.erase(lagging);
  settle(20);
  EXPECT_EQ(f.installs, 1);
  EXPECT_EQ(f.storage->kv().applied_index(), l.storage->log().last_index());
  // It keeps taking snapshots once its log has caught up with its state.
  propose_on_leader(10);
  settle(10);
  raftpb::Snapshot fs;
  ASSERT_EQ(f.storage->log().snapshot(&fs), raft::StorageError::kOk);
  EXPECT_GT(fs.metadata().index(), snap_index);
  EXPECT_EQ(net_.violations, std::vector<std::string>{});
}

}  // namespace
}  // namespace muster::server
