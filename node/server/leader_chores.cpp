// node/server/leader_chores.cpp: see leader_chores.h.
#include "node/server/leader_chores.h"

#include <algorithm>
#include <filesystem>

#include "base/log.h"

namespace muster::server {

using storage::Status;

namespace {

int64_t monotonic_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

LeaderChores::LeaderChores(Options options, storage::MemberStorage& storage, Propose propose)
    : options_(std::move(options)), storage_(storage), propose_(std::move(propose)) {
  measure_db_size();
}

void LeaderChores::run(Clock::time_point now, bool leader, bool leader_known, uint64_t term) {
  if (leader) {
    expire_leases(now, term);
    maybe_auto_compact(now);
  } else {
    revision_samples_.clear();
  }
  maybe_publish(leader_known);
  if (now >= next_db_size_) {
    next_db_size_ = now + std::chrono::seconds(1);
    measure_db_size();
  }
}

void LeaderChores::measure_db_size() {
  int64_t total = 0;
  std::error_code ec;
  for (auto& f : std::filesystem::recursive_directory_iterator(storage_.member_dir(), ec))
    if (f.is_regular_file(ec)) total += static_cast<int64_t>(f.file_size(ec));
  db_size_ = total;
}

void LeaderChores::expire_leases(Clock::time_point now, uint64_t term) {
  for (auto it = revoking_.begin(); it != revoking_.end();) {
    if (now - it->second > options_.request_timeout || !storage_.kv().lease_exists(it->first))
      it = revoking_.erase(it);
    else
      ++it;
  }
  for (int64_t id : storage_.kv().expired_leases(monotonic_ms())) {
    if (revoking_.count(id)) continue;
    revoking_[id] = now;
    pb::InternalRequest req;
    req.mutable_lease_revoke()->set_id(id);
    req.set_expiry_term(term);
    propose_(std::move(req), options_.request_timeout,
             [](Status, storage::KvStore::ApplyResult) {});
  }
}

void LeaderChores::maybe_auto_compact(Clock::time_point now) {
  if (now < next_compaction_check_) return;
  int64_t target = 0;
  int64_t rev = storage_.kv().revision();
  if (options_.auto_compaction_revisions > 0) {
    next_compaction_check_ = now + std::chrono::minutes(5);
    target = rev - options_.auto_compaction_revisions;
  } else if (options_.auto_compaction_period.count() > 0) {
    auto step = std::max<std::chrono::milliseconds>(options_.auto_compaction_period / 10,
                                                    std::chrono::milliseconds(100));
    next_compaction_check_ = now + step;
    revision_samples_.emplace_back(now, rev);
    while (revision_samples_.size() > 1 &&
           now - revision_samples_[1].first >= options_.auto_compaction_period)
      revision_samples_.pop_front();
    if (now - revision_samples_.front().first >= options_.auto_compaction_period)
      target = revision_samples_.front().second;
  } else {
    return;
  }
  if (target <= storage_.kv().compact_revision() || target <= 0) return;
  pb::InternalRequest req;
  req.mutable_compaction()->set_revision(target);
  propose_(std::move(req), options_.request_timeout,
           [target](Status st, storage::KvStore::ApplyResult) {
             if (st) log::info("compactor", "auto compaction applied", {{"revision", target}});
           });
  log::info("compactor", "auto compaction proposed", {{"revision", target}});
}

void LeaderChores::maybe_publish(bool leader_known) {
  if (published_.load() || publishing_.load() || !leader_known) return;
  for (const auto& m : storage_.kv().members()) {
    if (m.id() != options_.member_id) continue;
    if (m.name() == options_.name &&
        std::equal(m.clienturls().begin(), m.clienturls().end(), options_.client_urls.begin(),
                   options_.client_urls.end())) {
      published_ = true;
      return;
    }
  }
  publishing_ = true;
  pb::InternalRequest req;
  auto* a = req.mutable_member_attributes();
  a->set_id(options_.member_id);
  a->set_name(options_.name);
  for (const auto& u : options_.client_urls) a->add_clienturls(u);
  // A short timeout: a publish lost with a dropped message is simply
  // proposed again (it is idempotent), instead of holding the member's
  // readiness for a whole request timeout.
  propose_(std::move(req), std::chrono::milliseconds(std::max<uint32_t>(options_.heartbeat_ms, 50)),
           [this](Status st, storage::KvStore::ApplyResult) {
             publishing_ = false;
             if (st) {
               published_ = true;
               log::info("etcdserver", "published local member to cluster through raft",
                         {{"name", options_.name}, {"client-urls", options_.client_urls}});
             }
           });
}

}  // namespace muster::server
