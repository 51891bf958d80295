// Per-peer replication state kept by a leader (etcd-io/raft's tracker model).
//
// A follower's Progress is in one of three states:
//   Probe     - the leader does not know where the follower's log matches; it
//               sends at most one MsgApp per heartbeat interval and waits for
//               the answer (msg_app_flow_paused) before sending another.
//   Replicate - the follower's log matches up to `match`; the leader streams
//               entries optimistically (next advances as messages are sent),
//               bounded by the in-flight window.
//   Snapshot  - the follower needs a snapshot; replication is paused until the
//               follower acknowledges an index >= pending_snapshot or the
//               caller reports the snapshot failed.
//
// Invariant: match < next.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>

namespace muster::raft {

// A bounded window of MsgApps sent but not yet acknowledged, by count and by
// bytes (Little's law: window / RTT bounds the per-follower throughput).
class Inflights {
 public:
  // max_bytes == 0 means no byte limit.  REQUIRES: max_count >= 1.
  Inflights(size_t max_count, uint64_t max_bytes);

  // Records a MsgApp whose last entry is `index`.  REQUIRES: !full(), and
  // index greater than every index already recorded.
  void add(uint64_t index, uint64_t bytes);
  // Frees every message whose last index is <= to (an ack covers them all).
  void free_le(uint64_t to);
  // Frees the oldest message (used when acks may have been lost).
  void free_first_one();
  bool full() const;
  size_t count() const { return buf_.size(); }
  uint64_t bytes() const { return bytes_; }
  void reset();

 private:
  struct Flight {
    uint64_t index;
    uint64_t bytes;
  };
  size_t max_count_;
  uint64_t max_bytes_;
  std::deque<Flight> buf_;
  uint64_t bytes_ = 0;
};

enum class ProgressState { kProbe, kReplicate, kSnapshot };
const char* to_string(ProgressState s);

class Progress {
 public:
  Progress(uint64_t next, size_t max_inflight, uint64_t max_inflight_bytes, bool is_learner);

  uint64_t match = 0;
  uint64_t next = 1;
  ProgressState state = ProgressState::kProbe;
  // In Snapshot state: the index of the snapshot sent.
  uint64_t pending_snapshot = 0;
  // Heard from this peer since the last check-quorum round.
  bool recent_active = false;
  // Probe: a MsgApp is outstanding; no new probe until it is answered or a
  // heartbeat response arrives.  (Replicate pauses on a full window instead.)
  bool msg_app_flow_paused = false;
  bool is_learner = false;
  Inflights inflights;

  void become_probe();
  void become_replicate();
  void become_snapshot(uint64_t snapshot_index);

  // A MsgApp carrying entries up to `last_index` (n entries, `bytes` bytes)
  // was sent.  In Replicate the window advances optimistically.
  void sent_entries(uint64_t last_index, size_t n, uint64_t bytes);
  // The peer acknowledged index n.  Returns true if match advanced.
  bool maybe_update(uint64_t n);
  // The peer rejected a MsgApp whose previous index was `rejected`; it hinted
  // that its log may match at `match_hint`.  Returns false for a stale reject.
  bool maybe_decr_to(uint64_t rejected, uint64_t match_hint);
  bool is_paused() const;

  std::string describe() const;

 private:
  void reset_state(ProgressState s);
};

}  // namespace muster::raft
