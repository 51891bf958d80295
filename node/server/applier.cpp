// node/server/applier.cpp: see applier.h.
#include "node/server/applier.h"

#include <optional>

#include "base/log.h"
#include "base/runner.h"
#include "etcdwire/ids.h"

namespace muster::server {

using Clock = std::chrono::steady_clock;
using storage::Status;

namespace {

// etcd's apply.go lines: the first alarm of a type raised, the last one
// cleared ("from" is the member the alarm names; 0 for CORRUPT, which
// names no member).
void log_alarm_edge(const pb::AlarmRequest& a, storage::KvStore::ApplyResult::AlarmEdge edge) {
  const bool raised = edge == storage::KvStore::ApplyResult::AlarmEdge::kRaised;
  const nlohmann::json f = {{"alarm", pb::AlarmType_Name(a.alarm())},
                            {"from", etcdwire::id_to_hex(a.memberid())}};
  if (raised)
    log::warn("etcdserver", "alarm raised", f);
  else
    log::warn("etcdserver", "alarm disarmed", f);
}

}  // namespace

Applier::Applier(storage::MemberStorage& storage, Membership& membership, Waits& waits,
                 metrics::Registry& metrics)
    : storage_(storage),
      membership_(membership),
      waits_(waits),
      commit_seconds_(metrics.histogram("etcd_disk_backend_commit_duration_seconds",
                                        "The latency distributions of commit called by backend.",
                                        metrics::exponential_buckets(0.001, 2, 14))),
      batch_entries_(metrics.histogram("muster_server_apply_batch_entries",
                                       "Committed entries applied with one backend write.",
                                       metrics::exponential_buckets(1, 2, 14))),
      queue_depth_(metrics.gauge("muster_server_apply_queue_batches",
                                 "Batches of committed entries waiting for the apply thread.")) {
  reload_applied();
}

void Applier::start() {
  std::lock_guard l(queue_mu_);
  if (running_) return;
  running_ = true;
  thread_ = std::thread([this] {
    base::set_thread_name("apply");
    run();
  });
}

void Applier::stop() {
  {
    std::lock_guard l(queue_mu_);
    if (!running_) return;
    running_ = false;
  }
  queue_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Applier::enqueue(std::vector<raftpb::Entry> entries) {
  if (entries.empty()) return;
  {
    std::lock_guard l(queue_mu_);
    if (running_) {
      queue_.push_back(std::move(entries));
      queue_depth_.set(static_cast<int64_t>(queue_.size()));
      queue_cv_.notify_all();
      return;
    }
  }
  // Not started (or stopping): apply here.
  apply_entries(entries, nullptr);
}

void Applier::drain() {
  std::unique_lock l(queue_mu_);
  queue_cv_.wait(l, [this] { return queue_.empty() && !busy_; });
}

void Applier::run() {
  std::unique_lock l(queue_mu_);
  for (;;) {
    queue_cv_.wait(l, [this] { return !queue_.empty() || !running_; });
    if (queue_.empty()) break;  // stopping, and everything queued is applied
    // Everything queued goes as one batch.
    std::vector<raftpb::Entry> batch = std::move(queue_.front());
    queue_.pop_front();
    while (!queue_.empty()) {
      for (auto& e : queue_.front()) batch.push_back(std::move(e));
      queue_.pop_front();
    }
    queue_depth_.set(0);
    busy_ = true;
    l.unlock();
    apply_entries(batch, nullptr);
    l.lock();
    busy_ = false;
    queue_cv_.notify_all();  // drain() waits for this
  }
}

void Applier::apply(const std::vector<raftpb::Entry>& entries, raft::Raft& raft) {
  apply_entries(entries, &raft);
}

void Applier::reload_applied() {
  applied_ = storage_.kv().applied_index();
  publish({});
}

void Applier::apply_entries(const std::vector<raftpb::Entry>& entries, raft::Raft* raft) {
  auto start = Clock::now();
  uint64_t written = 0;
  std::vector<pb::Event> events;
  // Answers go out once their batch is written.
  struct Answer {
    uint64_t id;
    storage::KvStore::ApplyResult result;
  };
  std::vector<Answer> answers;
  answers.reserve(entries.size());
  // Every entry between two configuration changes is one LevelDB write; a
  // configuration change is applied on its own (Membership writes it).
  std::optional<storage::KvStore::ApplyBatch> batch;
  auto finish_batch = [&] {
    if (!batch) return;
    batch->commit();
    batch.reset();
    for (auto& a : answers) {
      Status st = a.result.status;
      waits_.finish(a.id, st, std::move(a.result));
    }
    answers.clear();
  };
  for (const auto& e : entries) {
    if (e.index() <= applied_.load()) continue;  // already in the state (snapshot)
    if (e.type() == raftpb::EntryConfChange) {
      if (raft == nullptr) storage::fatal("a configuration change reached the apply thread");
      finish_batch();
      Membership::Applied a = membership_.apply(e, *raft);
      if (a.request_id != 0) {
        Status st = a.result.status;
        waits_.finish(a.request_id, st, std::move(a.result));
      }
      applied_ = e.index();
      continue;
    }
    if (!batch) batch.emplace(storage_.kv());
    ++written;
    if (e.data().empty()) {
      batch->apply_noop(e.index(), e.term());
    } else {
      pb::InternalRequest req;
      if (!req.ParseFromString(e.data())) {
        log::error("apply", "unparsable entry; skipping", {{"index", e.index()}});
        batch->apply_noop(e.index(), e.term());
      } else {
        auto result = batch->apply(req, e.index(), e.term());
        if (result.alarm_edge != storage::KvStore::ApplyResult::AlarmEdge::kNone)
          log_alarm_edge(req.alarm(), result.alarm_edge);
        for (auto& ev : result.events) events.push_back(ev);
        if (!result.skipped) answers.push_back({req.id(), std::move(result)});
      }
    }
    applied_ = e.index();
  }
  finish_batch();
  commit_seconds_.observe(std::chrono::duration<double>(Clock::now() - start).count());
  if (written > 0) batch_entries_.observe(static_cast<double>(written));
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
