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
// Threads: the apply thread (start/stop) applies what the driver enqueues,
// in order, so that applying batch N overlaps the driver persisting batch
// N+1; batches queued meanwhile are applied together, as one LevelDB write.
// A configuration change or a snapshot install is applied on the driver
// thread instead, after drain() (apply()).  subscribe/unsubscribe and
// applied() from any thread.  Subscriber callbacks and the answers to
// waiting proposals run on whichever thread applied the entries and must
// not block.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <thread>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

#include "base/metrics.h"
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

  // Starts and stops the apply thread.  stop() applies what is queued first.
  void start();
  void stop();

  // Driver thread: queues committed entries without configuration changes.
  void enqueue(std::vector<raftpb::Entry> entries);
  // Driver thread: returns once everything enqueued has been applied.
  void drain();
  // Driver thread, with the apply side drained: applies `entries` here,
  // configuration changes included (applied to `raft` too).
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
  // Applies entries on the calling thread; `raft` is null on the apply
  // thread (no configuration change ever reaches it).
  void apply_entries(const std::vector<raftpb::Entry>& entries, raft::Raft* raft);
  void run();

  storage::MemberStorage& storage_;
  Membership& membership_;
  Waits& waits_;
  metrics::Histogram& commit_seconds_;
  metrics::Histogram& batch_entries_;
  metrics::Gauge& queue_depth_;
  std::atomic<uint64_t> applied_{0};

  std::mutex queue_mu_;  // guards the queue below
  std::condition_variable queue_cv_;
  std::deque<std::vector<raftpb::Entry>> queue_;
  bool busy_ = false;
  bool running_ = false;
  std::thread thread_;

  std::mutex mu_;  // guards subscribers_
  std::map<uint64_t, Subscriber> subscribers_;
  uint64_t next_subscriber_ = 1;
};

}  // namespace muster::server
