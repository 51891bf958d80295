// node/server/peer_reachability.cpp: see peer_reachability.h.
#include "node/server/peer_reachability.h"

#include <algorithm>

namespace muster::server {

void PeerReachability::sample(Clock::time_point now, bool leader,
                              const std::vector<uint64_t>& voters,
                              const std::vector<uint64_t>& learners) {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  ReachabilityView v;
  if (!leader) {
    leading_ = false;
    heard_.clear();
    std::lock_guard<std::mutex> l(mu_);
    published_ = v;
    return;
  }
  if (!leading_) {
    leading_ = true;
    leader_since_ = now;
    heard_.clear();
  }
  v.leader = true;
  v.leading_for = duration_cast<milliseconds>(now - leader_since_);
  std::map<uint64_t, Heard> next;
  auto note = [&](uint64_t id, bool learner) {
    PeerSilence p;
    p.id = id;
    p.learner = learner;
    if (id != self_) {
      const uint64_t bytes = received_bytes_(id);
      auto it = heard_.find(id);
      // Unknown so far: silent since this member began to lead.
      Heard h = it != heard_.end() ? it->second : Heard{bytes, leader_since_};
      if (it != heard_.end() && bytes != h.bytes) h = Heard{bytes, now};
      next[id] = h;
      p.unheard_for = duration_cast<milliseconds>(now - h.at);
    }
    v.peers.push_back(p);
  };
  for (uint64_t id : voters) note(id, false);
  for (uint64_t id : learners) note(id, true);
  heard_ = std::move(next);
  std::lock_guard<std::mutex> l(mu_);
  published_ = std::move(v);
}

ReachabilityView PeerReachability::view() const {
  std::lock_guard<std::mutex> l(mu_);
  return published_;
}

}  // namespace muster::server
