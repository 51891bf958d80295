// A single-member MemberApi without Raft, for the v3 API tests: a proposal is
// applied at once to a real MemberStorage with the next log index, a read
// barrier passes at once, keepalives go to the store.  Knobs let a test take
// the leader away, swallow read barriers or proposals (to see timeouts).
#pragma once

#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "node/server/member_api.h"
#include "node/storage/member_storage.h"
#include "tests/support/temp_dir.h"

namespace muster::server::testing {

// A fresh directory, removed on destruction: tests/support's.
using ScratchDir = ::muster::testing::TempDir;

class LocalMember : public MemberApi {
 public:
  static constexpr uint64_t kClusterId = 0xcdef0123456789abULL;
  static constexpr uint64_t kMemberId = 0x8e9e05c52164694dULL;

  explicit LocalMember(const std::string& dir) {
    storage::Status s = storage::MemberStorage::open(dir, {}, &storage_);
    if (!s) storage::fatal("cannot open test storage: " + s.to_string());
    index_ = storage_->kv().applied_index();
  }

  // Records this member in the store, as a bootstrapped member would be.
  void add_self(const std::string& peer_url, const std::string& client_url) {
    pb::InternalRequest req;
    pb::Member* m = req.mutable_member_add()->mutable_member();
    m->set_id(kMemberId);
    m->set_name("default");
    m->add_peerurls(peer_url);
    m->add_clienturls(client_url);
    propose(req, [](storage::Status, storage::KvStore::ApplyResult) {});
  }

  // Without Raft a membership change is just its store update: a new
  // member gets the next free ID (the Raft member's checks and
  // configuration changes are tested in tests/integration/node).
  void change_member(pb::InternalRequest req, ApplyDone done) override {
    if (req.has_member_add() && req.member_add().member().id() == 0)
      req.mutable_member_add()->mutable_member()->set_id(next_member_id_++);
    propose(std::move(req), std::move(done));
  }

  void propose(pb::InternalRequest req, ApplyDone done) override {
    if (swallow_proposals) {
      std::lock_guard l(mu_);
      swallowed_.push_back(std::move(done));
      return;
    }
    std::lock_guard l(mu_);
    const uint64_t index = ++index_;
    req.set_id(index);
    storage::KvStore::ApplyResult r = storage_->kv().apply(req, index, kTerm);
    // Under the lock, so subscribers see applies in order, as from a driver's
    // single apply thread.  silent_applies: the state moves on without
    // events, as when a snapshot install brings it (then publish_jump()).
    if (!r.events.empty() && !silent_applies)
      for (auto& [id, cb] : subscribers_) cb(r.events);
    done({}, std::move(r));
  }

  void read_barrier(std::function<void(storage::Status)> done) override {
    if (swallow_barriers) {
      std::lock_guard l(mu_);
      swallowed_barriers_.push_back(std::move(done));
      return;
    }
    done({});
  }

  storage::KvStore& kv() override { return storage_->kv(); }

  void lease_keepalive(int64_t id, std::function<void(storage::Status, int64_t)> done) override {
    int64_t ttl = 0;
    storage::Status s = storage_->kv().lease_keepalive(id, &ttl);
    done(s, ttl);
  }

  void lease_time_to_live(
      const pb::LeaseTimeToLiveRequest& req,
      std::function<void(storage::Status, pb::LeaseTimeToLiveResponse)> done) override {
    pb::LeaseTimeToLiveResponse resp;
    storage::Status s = storage_->kv().lease_time_to_live(req, &resp);
    done(s, std::move(resp));
  }

  // One member: it is the leader and the only voter.
  void move_leader(uint64_t target, std::function<void(storage::Status)> done) override {
    if (!has_leader) return done({storage::Code::kFailedPrecondition, "etcdserver: not leader"});
    if (target != kMemberId)
      return done({storage::Code::kFailedPrecondition, "etcdserver: bad leader transferee"});
    done({});
  }

  MemberStatus status() const override {
    MemberStatus st;
    st.cluster_id = kClusterId;
    st.member_id = kMemberId;
    st.leader = has_leader ? kMemberId : 0;
    st.raft_term = kTerm;
    {
      std::lock_guard l(mu_);
      st.raft_index = index_;
    }
    st.raft_applied_index = storage_->kv().applied_index();
    st.revision = storage_->kv().revision();
    std::error_code ec;
    for (const auto& e : std::filesystem::recursive_directory_iterator(storage_->member_dir(), ec))
      if (e.is_regular_file(ec)) st.db_size += static_cast<int64_t>(e.file_size(ec));
    st.version = "3.4.0";
    return st;
  }

  uint64_t subscribe(std::function<void(const std::vector<pb::Event>&)> cb) override {
    std::lock_guard l(mu_);
    const uint64_t id = next_sub_++;
    subscribers_[id] = std::move(cb);
    return id;
  }
  void unsubscribe(uint64_t id) override {
    std::lock_guard l(mu_);
    subscribers_.erase(id);
  }

  std::unique_ptr<storage::SnapshotWriter> snapshot_writer() override {
    return storage_->snapshot_writer();
  }
  storage::Status defragment() override {
    ++defragments;
    return {};
  }
  // The store's own defragment (LevelDB's whole-range compaction), which
  // defragment() above only counts: for a caller that needs the store small.
  storage::Status compact_store() { return storage_->defragment(); }

  // Forgets swallowed callbacks (and the exchanges they hold): a driver drops
  // its pending callbacks when it stops, before the client servers go away.
  void drop_swallowed() {
    std::vector<ApplyDone> a;
    std::vector<std::function<void(storage::Status)>> b;
    {
      std::lock_guard l(mu_);
      a.swap(swallowed_);
      b.swap(swallowed_barriers_);
    }
  }

  // What a driver does after a snapshot install: an empty batch.
  void publish_jump() {
    std::lock_guard l(mu_);
    for (auto& [id, cb] : subscribers_) cb({});
  }

  size_t subscriber_count() const {
    std::lock_guard l(mu_);
    return subscribers_.size();
  }

  std::atomic<bool> has_leader{true};
  std::atomic<bool> swallow_barriers{false};
  std::atomic<bool> swallow_proposals{false};
  std::atomic<bool> silent_applies{false};
  std::atomic<int> defragments{0};

 private:
  static constexpr uint64_t kTerm = 2;
  std::unique_ptr<storage::MemberStorage> storage_;
  mutable std::mutex mu_;
  std::atomic<uint64_t> next_member_id_{0x1000};
  uint64_t index_ = 0;
  uint64_t next_sub_ = 1;
  std::map<uint64_t, std::function<void(const std::vector<pb::Event>&)>> subscribers_;
  std::vector<ApplyDone> swallowed_;
  std::vector<std::function<void(storage::Status)>> swallowed_barriers_;
};

}  // namespace muster::server::testing
