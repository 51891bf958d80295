#include "node/raft/progress.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace muster::raft {

Inflights::Inflights(size_t max_count, uint64_t max_bytes)
    : max_count_(max_count), max_bytes_(max_bytes) {
  if (max_count_ == 0) {
    std::fprintf(stderr, "raft: Inflights needs max_count >= 1\n");
    std::abort();
  }
}

void Inflights::add(uint64_t index, uint64_t bytes) {
  if (full()) {
    std::fprintf(stderr, "raft: Inflights::add on a full window\n");
    std::abort();
  }
  if (!buf_.empty() && index <= buf_.back().index) {
    std::fprintf(stderr, "raft: Inflights::add out of order\n");
    std::abort();
  }
  buf_.push_back({index, bytes});
  bytes_ += bytes;
}

void Inflights::free_le(uint64_t to) {
  while (!buf_.empty() && buf_.front().index <= to) {
    bytes_ -= buf_.front().bytes;
    buf_.pop_front();
  }
}

void Inflights::free_first_one() {
  if (buf_.empty()) return;
  bytes_ -= buf_.front().bytes;
  buf_.pop_front();
}

bool Inflights::full() const {
  return buf_.size() >= max_count_ || (max_bytes_ != 0 && bytes_ >= max_bytes_);
}

void Inflights::reset() {
  buf_.clear();
  bytes_ = 0;
}

const char* to_string(ProgressState s) {
  switch (s) {
    case ProgressState::kProbe:
      return "Probe";
    case ProgressState::kReplicate:
      return "Replicate";
    case ProgressState::kSnapshot:
      return "Snapshot";
  }
  return "?";
}

Progress::Progress(uint64_t next_index, size_t max_inflight, uint64_t max_inflight_bytes,
                   bool learner)
    : next(next_index), is_learner(learner), inflights(max_inflight, max_inflight_bytes) {}

void Progress::reset_state(ProgressState s) {
  msg_app_flow_paused = false;
  pending_snapshot = 0;
  state = s;
  inflights.reset();
}

void Progress::become_probe() {
  // Leaving Snapshot state: the follower has (or will have) the snapshot, so
  // probing starts after it rather than back at match+1.
  if (state == ProgressState::kSnapshot) {
    const uint64_t pending = pending_snapshot;
    reset_state(ProgressState::kProbe);
    next = std::max(match + 1, pending + 1);
  } else {
    reset_state(ProgressState::kProbe);
    next = match + 1;
  }
}

void Progress::become_replicate() {
  reset_state(ProgressState::kReplicate);
  next = match + 1;
}

void Progress::become_snapshot(uint64_t snapshot_index) {
  reset_state(ProgressState::kSnapshot);
  pending_snapshot = snapshot_index;
  next = snapshot_index + 1;
}

void Progress::sent_entries(uint64_t last_index, size_t n, uint64_t bytes) {
  switch (state) {
    case ProgressState::kReplicate:
      if (n > 0) {
        next = last_index + 1;
        inflights.add(last_index, bytes);
      }
      break;
    case ProgressState::kProbe:
      // One probe at a time: wait for its answer (or the next heartbeat).
      msg_app_flow_paused = true;
      break;
    case ProgressState::kSnapshot:
      std::fprintf(stderr, "raft: sending entries to a peer in Snapshot state\n");
      std::abort();
  }
}

bool Progress::maybe_update(uint64_t n) {
  bool updated = false;
  if (match < n) {
    match = n;
    updated = true;
    msg_app_flow_paused = false;
  }
  next = std::max(next, n + 1);
  return updated;
}

bool Progress::maybe_decr_to(uint64_t rejected, uint64_t match_hint) {
  if (state == ProgressState::kReplicate) {
    // A rejection for an index we already know matches is a stale, reordered
    // answer to an earlier message.
    if (rejected <= match) return false;
    // Pipelined messages went wrong: restart right after the match.
    next = match + 1;
    return true;
  }
  // Probe/Snapshot: only the answer to the outstanding probe counts.
  if (next == 0 || next - 1 != rejected) return false;
  next = std::max(std::min(rejected, match_hint + 1), match + 1);
  msg_app_flow_paused = false;
  return true;
}

bool Progress::is_paused() const {
  switch (state) {
    case ProgressState::kProbe:
      return msg_app_flow_paused;
    case ProgressState::kReplicate:
      return inflights.full();
    case ProgressState::kSnapshot:
      return true;
  }
  return true;
}

std::string Progress::describe() const {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "%s match=%llu next=%llu inflight=%zu%s%s", to_string(state),
                static_cast<unsigned long long>(match), static_cast<unsigned long long>(next),
                inflights.count(), msg_app_flow_paused ? " paused" : "",
                is_learner ? " learner" : "");
  return buf;
}

}  // namespace muster::raft
