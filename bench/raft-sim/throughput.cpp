// raft-throughput: entries per second committed through a 3-node cluster
// driven by the Raft core alone: in-memory storage, messages handed over
// in-process (no serialization, no network, no fsync).  It measures the cost
// of the algorithm and its bookkeeping, an upper bound for a real member.
//
//   build/bin/raft-throughput [--entries N] [--batch B] [--size S] [--nodes K]
//
// Each round the leader gets one proposal of B entries of S bytes
// (Raft::propose_batch); then every Ready is
// processed (persist to MemoryStorage, hand messages over, apply, advance)
// until the cluster is quiet.  Logs are compacted every 10,000 entries.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "node/raft/raft.h"

namespace {

using muster::raft::Config;
using muster::raft::DropReason;
using muster::raft::MemoryStorage;
using muster::raft::Raft;
using muster::raft::Ready;
using muster::raft::StateRole;
namespace pb = muster::raftpb;

struct Node {
  std::unique_ptr<MemoryStorage> storage;
  std::unique_ptr<Raft> raft;
  uint64_t applied = 0;
  uint64_t applied_bytes = 0;
};

class Bench {
 public:
  explicit Bench(int n) {
    pb::ConfState cs;
    for (int i = 1; i <= n; ++i) cs.add_voters(static_cast<uint64_t>(i));
    for (int i = 1; i <= n; ++i) {
      Node& node = nodes_[static_cast<uint64_t>(i)];
      node.storage = std::make_unique<MemoryStorage>();
      pb::Snapshot boot;
      boot.mutable_metadata()->set_index(1);
      boot.mutable_metadata()->set_term(1);
      *boot.mutable_metadata()->mutable_conf_state() = cs;
      node.storage->apply_snapshot(boot);
      pb::HardState hs;
      hs.set_term(1);
      hs.set_commit(1);
      node.storage->set_hard_state(hs);
      Config c;
      c.id = static_cast<uint64_t>(i);
      c.applied = 1;
      c.max_inflight_msgs = 256;
      c.max_size_per_msg = 1 << 20;
      node.raft = std::make_unique<Raft>(c, node.storage.get());
      node.applied = 1;
    }
  }

  Node& node(uint64_t id) { return nodes_.at(id); }

  void process(uint64_t id) {
    Node& n = nodes_.at(id);
    while (n.raft->has_ready()) {
      Ready rd = n.raft->ready();
      if (rd.snapshot) n.storage->apply_snapshot(*rd.snapshot);
      n.storage->append(rd.entries);
      if (rd.hard_state) n.storage->set_hard_state(*rd.hard_state);
      for (auto& m : rd.messages) queue_.push_back(std::move(m));
      for (const auto& e : rd.committed_entries) {
        n.applied = e.index();
        n.applied_bytes += e.data().size();
      }
      n.raft->advance(rd);
      if (n.applied >= n.storage->first_index() + 10000) {
        const pb::ConfState cs = n.raft->conf_state();
        n.storage->create_snapshot(n.applied, &cs, "");
        n.storage->compact(n.applied);
      }
    }
  }

  void pump() {
    for (auto& [id, n] : nodes_) process(id);
    while (!queue_.empty()) {
      pb::Message m = std::move(queue_.front());
      queue_.pop_front();
      nodes_.at(m.to()).raft->step(m);
      process(m.to());
    }
  }

 private:
  std::map<uint64_t, Node> nodes_;
  std::deque<pb::Message> queue_;
};

uint64_t arg(int argc, char** argv, const char* name, uint64_t def) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::strtoull(argv[i + 1], nullptr, 10);
  }
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t entries = arg(argc, argv, "--entries", 1000000);
  const uint64_t batch = arg(argc, argv, "--batch", 64);
  const uint64_t size = arg(argc, argv, "--size", 256);
  const int nodes = static_cast<int>(arg(argc, argv, "--nodes", 3));
  if (entries == 0 || batch == 0 || nodes < 1) {
    std::fprintf(stderr, "usage: %s [--entries N] [--batch B] [--size S] [--nodes K]\n", argv[0]);
    return 2;
  }
  Bench b(nodes);
  b.node(1).raft->campaign();
  b.pump();
  if (b.node(1).raft->role() != StateRole::kLeader) {
    std::fprintf(stderr, "node 1 did not become leader\n");
    return 1;
  }
  const std::string payload(size, 'x');
  const uint64_t start_index = b.node(1).applied;
  const uint64_t target = start_index + entries;
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  uint64_t proposed = 0;
  while (b.node(1).applied < target) {
    // One proposal of `batch` entries: the way a server groups the client
    // writes that arrived while the previous batch was being persisted.
    std::vector<std::string> group;
    for (uint64_t k = 0; k < batch && proposed < entries; ++k, ++proposed) group.push_back(payload);
    if (b.node(1).raft->propose_batch(std::move(group)) != DropReason::kNone) {
      std::fprintf(stderr, "proposal dropped\n");
      return 1;
    }
    b.pump();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // CPU time as well: on a shared machine wall-clock time also counts other
  // processes; CPU time is what the core itself costs.
  const double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
  // Every follower applied everything as well.
  for (int i = 2; i <= nodes; ++i) {
    if (b.node(static_cast<uint64_t>(i)).applied < target) {
      std::fprintf(stderr, "follower %d lags behind\n", i);
      return 1;
    }
  }
  std::printf(
      "raft-throughput: %d nodes, %llu entries of %llu bytes, batch %llu: %.0f entries/s "
      "(%.1f MB/s of payload) by wall clock (%.3f s); %.0f entries/s per CPU-second (%.3f s "
      "CPU); every node applied every entry\n",
      nodes, static_cast<unsigned long long>(entries), static_cast<unsigned long long>(size),
      static_cast<unsigned long long>(batch), static_cast<double>(entries) / secs,
      static_cast<double>(entries * size) / secs / 1e6, secs, static_cast<double>(entries) / cpu,
      cpu);
  return 0;
}
