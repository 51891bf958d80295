// Deterministic simulator for the Raft core.
//
// One seed fixes everything: the cluster's configuration, the network's
// behaviour (drops, delays and therefore reordering, duplicates, partitions
// that heal), crashes and restarts (a restarted node keeps only what it
// persisted: its MemoryStorage), membership changes, leadership transfers,
// compactions, client proposals and reads.  Single-threaded; the same seed
// always replays the same run.
//
// After every step (one message delivered, or one node ticked, followed by
// processing that node's Ready) the checker verifies:
//   - Election Safety: at most one leader per term, over the whole history;
//   - each node's own invariants (Raft::check_invariants) and hard-state
//     rules (term never decreases, one vote per term, commit never decreases);
//   - Log Matching: an entry is identified by (index, term); every node that
//     persists it holds the same content preceded by the same term (so, by
//     induction, the same prefix);
//   - Leader Completeness: a newly elected leader holds every entry any
//     node has applied (the global committed sequence);
//   - State Machine Safety: entries are applied in order, and every node
//     applies the same entry (and reaches the same state hash) at each index:
//     applied sequences are prefixes of one another, and nothing committed is
//     ever lost or changed; installed snapshots carry exactly that state;
//   - linearizable reads: a ReadIndex answer is at least the highest index
//     applied anywhere when the read was requested;
//   - liveness: once the network heals and every member is up, a new
//     proposal is applied by every member within a bound.
#pragma once

#include <cstdint>
#include <string>

#include "node/raft/raft.h"

namespace muster::raft::sim {

struct SimOptions {
  // Length of the chaotic phase and the liveness bound after healing, in ticks.
  int chaos_ticks = 400;
  int liveness_ticks = 300;
  // Rules deliberately broken in every node (simulator self-tests).
  TestingKnobs knobs;
  // Print every event.
  bool verbose = false;
  // "Storm" profile: five voters, one entry per message, an in-flight window
  // of one, long delays, no pre-vote or check-quorum, frequent crashes,
  // partitions and transfers: many more elections per run.
  bool storm = false;
  // Skip the direct "one vote per term" hard-state check, so that a
  // double-voting core must be caught by Election Safety itself.
  bool skip_vote_check = false;
};

struct SimResult {
  bool ok = true;
  std::string failure;  // first violated property, with context
  uint64_t steps = 0;
  uint64_t ticks = 0;
  uint64_t applied_entries = 0;  // length of the global committed sequence
  uint64_t elections = 0;        // distinct terms with a leader
  uint64_t crashes = 0;
  uint64_t conf_changes = 0;  // applied membership changes
  uint64_t snapshots_installed = 0;
  uint64_t reads = 0;
  // Ticks from healing until every member applied the marker proposal.
  uint64_t ticks_to_recover = 0;
};

SimResult run_simulation(uint64_t seed, const SimOptions& opts);

// The command line that replays `seed` exactly (printed on failure).
std::string replay_command(uint64_t seed, const SimOptions& opts);

}  // namespace muster::raft::sim
