// node/server/applier.h: applies committed entries to the member's state
// machine and answers whoever waits on them (etcd's apply loop).
//
// For each committed entry, in log order: a configuration change goes to
// Membership (which changes the Raft core's configuration too); an empty
// entry only advances the applied index; a request is applied to the
// KvStore, whose result answers the waiting proposal (Waits).  Entries at or
// below the applied index are skipped: a received snapshot may have brought
// newer state than its index.  After a batch, the changes it made go to the
// subscribers (watchers, v2 waits) in revision order, and reads waiting for
// this applied index are released.
//
// Threads: apply() on the driver thread; subscribe/unsubscribe and applied()
// from any thread.  Subscriber callbacks run on the driver thread and must
// not block.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

#include "net/metrics.h"
#include "node/raft/raft.h"
#include "node/server/membership.h"
#include "node/server/waits.h"
#include "node/storage/member_storage.h"

namespace muster::server {

class Applier {
 public:
  using Subscriber = std::function<void(const std::vector<pb::Event>&)>;

  // REQUIRES: every argument outlives the applier.
  Applier(storage::MemberStorage& storage, Membership& membership, Waits& waits,
          metrics::Registry& metrics);

  // Driver thread.
  void apply(const std::vector<raftpb::Entry>& entries, raft::Raft& raft);
  // The storage's applied index changed under us (a snapshot install).  The
  // revisions it jumped over produced no events: subscribers get an empty
  // batch and read them from the store (MemberApi::subscribe).
  void reload_applied();

  // Any thread.
  uint64_t applied() const { return applied_.load(); }
  uint64_t subscribe(Subscriber cb);
  void unsubscribe(uint64_t id);

 private:
  void publish(const std::vector<pb::Event>& events);

  storage::MemberStorage& storage_;
  Membership& membership_;
  Waits& waits_;
  metrics::Histogram& commit_seconds_;
  std::atomic<uint64_t> applied_{0};

  std::mutex mu_;  // guards subscribers_
  std::map<uint64_t, Subscriber> subscribers_;
  uint64_t next_subscriber_ = 1;
};

}  // namespace muster::server
