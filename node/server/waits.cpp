// node/server/waits.cpp: see waits.h.
#include "node/server/waits.h"

#include <utility>

namespace muster::server {

using storage::Status;

void Waits::add_proposal(uint64_t id, ApplyDone done, Clock::time_point deadline) {
  std::lock_guard l(mu_);
  proposals_.emplace(id, Proposal{std::move(done), deadline});
}

Waits::ApplyDone Waits::take(uint64_t id) {
  std::lock_guard l(mu_);
  auto it = proposals_.find(id);
  if (it == proposals_.end()) return {};
  ApplyDone done = std::move(it->second.done);
  proposals_.erase(it);
  return done;
}

void Waits::finish(uint64_t id, Status st, storage::KvStore::ApplyResult result) {
  if (ApplyDone done = take(id)) done(std::move(st), std::move(result));
}

void Waits::add_read(std::string ctx, ReadDone done, Clock::time_point deadline) {
  std::lock_guard l(mu_);
  reads_waiting_index_.emplace(std::move(ctx), Read{std::move(done), deadline});
}

void Waits::read_index_known(const std::string& ctx, uint64_t index) {
  std::lock_guard l(mu_);
  auto it = reads_waiting_index_.find(ctx);
  if (it == reads_waiting_index_.end()) return;
  reads_waiting_apply_.emplace(index, std::move(it->second));
  reads_waiting_index_.erase(it);
}

void Waits::applied(uint64_t applied) {
  std::vector<Read> ready;
  {
    std::lock_guard l(mu_);
    auto end = reads_waiting_apply_.upper_bound(applied);
    for (auto it = reads_waiting_apply_.begin(); it != end; ++it)
      ready.push_back(std::move(it->second));
    reads_waiting_apply_.erase(reads_waiting_apply_.begin(), end);
  }
  for (auto& r : ready) r.done(Status());
}

void Waits::expire(Clock::time_point now, const Status& st) {
  std::vector<ApplyDone> proposals;
  std::vector<Read> reads;
  {
    std::lock_guard l(mu_);
    for (auto it = proposals_.begin(); it != proposals_.end();) {
      if (it->second.deadline <= now) {
        proposals.push_back(std::move(it->second.done));
        it = proposals_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = reads_waiting_index_.begin(); it != reads_waiting_index_.end();) {
      if (it->second.deadline <= now) {
        reads.push_back(std::move(it->second));
        it = reads_waiting_index_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& p : proposals) p(st, {});
  for (auto& r : reads) r.done(st);
}

void Waits::fail_all(const Status& st) {
  std::map<uint64_t, Proposal> proposals;
  std::map<std::string, Read> reads;
  std::multimap<uint64_t, Read> applying;
  {
    std::lock_guard l(mu_);
    proposals.swap(proposals_);
    reads.swap(reads_waiting_index_);
    applying.swap(reads_waiting_apply_);
  }
  for (auto& [id, p] : proposals) p.done(st, {});
  for (auto& [c, r] : reads) r.done(st);
  for (auto& [i, r] : applying) r.done(st);
}

}  // namespace muster::server
