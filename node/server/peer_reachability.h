// node/server/peer_reachability.h: how long each member has gone unheard,
// as this member sees it -- the evidence an automatic replacement
// (node/server/replacement_api.h, docs/operations.md "Replacing a dead
// member automatically") decides on.
//
// A peer is "heard" when Raft frames from it arrive: the transport's
// received-bytes counter for it has grown since the last sample.  Only the
// leader's view means something: followers exchange no Raft traffic with
// each other, but every member answers the leader's heartbeats (one per
// --heartbeat-interval).  So the view is kept only while this member leads,
// and it starts when it became leader: a peer that was never heard counts
// as unheard since then, never longer.  A new leader therefore knows of no
// long silence (it errs towards "not dead"), and a member that stops
// answering (killed, paused with SIGSTOP, partitioned) grows its silence
// with the leader's clock.
//
// Threads: sample() on the driver thread (housekeeping, each tick); view()
// from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

namespace muster::server {

struct PeerSilence {
  uint64_t id = 0;
  bool learner = false;
  std::chrono::milliseconds unheard_for{0};  // 0 for this member
};

struct ReachabilityView {
  bool leader = false;  // false: `peers` is empty, ask the leader
  std::chrono::milliseconds leading_for{0};
  std::vector<PeerSilence> peers;  // every voter and learner, this member too
};

class PeerReachability {
 public:
  using Clock = std::chrono::steady_clock;
  // `received_bytes(id)`: the transport's count of bytes received from peer id.
  explicit PeerReachability(uint64_t self, std::function<uint64_t(uint64_t)> received_bytes)
      : self_(self), received_bytes_(std::move(received_bytes)) {}

  // Driver thread, each housekeeping turn.
  void sample(Clock::time_point now, bool leader, const std::vector<uint64_t>& voters,
              const std::vector<uint64_t>& learners);

  ReachabilityView view() const;

 private:
  struct Heard {
    uint64_t bytes = 0;
    Clock::time_point at;
  };
  const uint64_t self_;
  const std::function<uint64_t(uint64_t)> received_bytes_;
  // Driver thread only.
  bool leading_ = false;
  Clock::time_point leader_since_;
  std::map<uint64_t, Heard> heard_;

  mutable std::mutex mu_;
  ReachabilityView published_;  // GUARDED_BY(mu_)
};

}  // namespace muster::server
