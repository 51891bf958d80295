// node/server/applier.cpp: see applier.h.
#include "node/server/applier.h"

#include "net/log.h"

namespace muster::server {

using Clock = std::chrono::steady_clock;
using storage::Status;

Applier::Applier(storage::MemberStorage& storage, Membership& membership, Waits& waits,
                 metrics::Registry& metrics)
    : storage_(storage),
      membership_(membership),
      waits_(waits),
      commit_seconds_(metrics.histogram("etcd_disk_backend_commit_duration_seconds",
                                        "The latency distributions of commit called by backend.",
                                        metrics::exponential_buckets(0.001, 2, 14))) {
  reload_applied();
}

void Applier::reload_applied() {
  applied_ = storage_.kv().applied_index();
  publish({});
}

void Applier::apply(const std::vector<raftpb::Entry>& entries, raft::Raft& raft) {
  auto start = Clock::now();
  std::vector<pb::Event> events;
  for (const auto& e : entries) {
    if (e.index() <= storage_.kv().applied_index()) continue;  // already in the state (snapshot)
    if (e.type() == raftpb::EntryConfChange) {
      Membership::Applied a = membership_.apply(e, raft);
      if (a.request_id != 0) {
        Status st = a.result.status;
        waits_.finish(a.request_id, st, std::move(a.result));
      }
    } else if (e.data().empty()) {
      storage_.kv().apply_noop(e.index(), e.term());
    } else {
      pb::InternalRequest req;
      if (!req.ParseFromString(e.data())) {
        log::error("apply", "unparsable entry; skipping", {{"index", e.index()}});
        storage_.kv().apply_noop(e.index(), e.term());
      } else {
        auto result = storage_.kv().apply(req, e.index(), e.term());
        for (auto& ev : result.events) events.push_back(ev);
        Status st = result.status;
        waits_.finish(req.id(), st, std::move(result));
      }
    }
    applied_ = e.index();
  }
  commit_seconds_.observe(std::chrono::duration<double>(Clock::now() - start).count());
  if (!events.empty()) publish(events);
  waits_.applied(applied_.load());
}

void Applier::publish(const std::vector<pb::Event>& events) {
  std::vector<Subscriber> subs;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, cb] : subscribers_) subs.push_back(cb);
  }
  for (auto& cb : subs) cb(events);
}

uint64_t Applier::subscribe(Subscriber cb) {
  std::lock_guard lock(mu_);
  uint64_t id = next_subscriber_++;
  subscribers_.emplace(id, std::move(cb));
  return id;
}

void Applier::unsubscribe(uint64_t id) {
  std::lock_guard lock(mu_);
  subscribers_.erase(id);
}

}  // namespace muster::server
