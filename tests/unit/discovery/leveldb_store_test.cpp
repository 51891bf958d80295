#include "discovery/leveldb_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <thread>

#include "discovery/rules.h"

namespace muster::discovery {
namespace {

constexpr int64_t kNow = 1'700'000'000'000;
constexpr int64_t kLater = kNow + 3'600'000;

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("muster-store-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::remove_all(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string str() const { return path_.string(); }

 private:
  static inline std::atomic<int> counter_{0};
  std::filesystem::path path_;
};

// Runs an async store call and waits for its callback.
template <class F>
StoreResult wait_for(F&& start) {
  std::promise<StoreResult> p;
  auto f = p.get_future();
  start([&](StoreResult r) { p.set_value(std::move(r)); });
  EXPECT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  return f.get();
}

StoreResult create(TokenStore& s, const std::string& t, uint32_t size, int64_t expires = kLater) {
  return wait_for([&](StoreCallback cb) { s.create_token(t, size, kNow, expires, std::move(cb)); });
}
StoreResult add(TokenStore& s, const std::string& t, const std::string& id, uint32_t cap = 100) {
  return wait_for([&](StoreCallback cb) {
    s.add_member(t, id, id + "=http://127.0.0.1:1", cap, kNow, std::move(cb));
  });
}
StoreResult get(TokenStore& s, const std::string& t, int64_t now = kNow) {
  return wait_for([&](StoreCallback cb) { s.get_token(t, now, std::move(cb)); });
}

const std::string kTok = "0123456789abcdef0123456789abcdef";

TEST(LevelDbTokenStore, CreateGetAndDuplicateToken) {
  TempDir dir;
  LevelDbTokenStore s(dir.str());
  auto c = create(s, kTok, 3);
  ASSERT_EQ(c.status, StoreStatus::kOk);
  EXPECT_EQ(c.index, 1u);
  EXPECT_EQ(create(s, kTok, 5).status, StoreStatus::kExists);
  auto g = get(s, kTok);
  ASSERT_EQ(g.status, StoreStatus::kOk);
  EXPECT_EQ(g.token.size, 3u);
  EXPECT_EQ(get(s, "ffffffffffffffffffffffffffffffff").status, StoreStatus::kNotFound);
}

TEST(LevelDbTokenStore, RegistrationsKeepOrderAndRefuseDuplicates) {
  TempDir dir;
  LevelDbTokenStore s(dir.str());
  create(s, kTok, 3);
  auto a = add(s, kTok, "a1");
  auto b = add(s, kTok, "b2");
  ASSERT_EQ(a.status, StoreStatus::kOk);
  EXPECT_LT(a.member.created_index, b.member.created_index);
  auto dup = add(s, kTok, "a1");
  EXPECT_EQ(dup.status, StoreStatus::kExists);
  EXPECT_EQ(dup.member.created_index, a.member.created_index);
  EXPECT_EQ(add(s, "ffffffffffffffffffffffffffffffff", "a1").status, StoreStatus::kNotFound);
}

TEST(LevelDbTokenStore, EverythingAcknowledgedSurvivesReopenAndIndexKeepsRising) {
  TempDir dir;
  uint64_t last = 0;
  {
    LevelDbTokenStore s(dir.str());
    create(s, kTok, 3);
    add(s, kTok, "a1");
    auto r = add(s, kTok, "b2");
    auto d = wait_for([&](StoreCallback cb) { s.remove_member(kTok, "a1", std::move(cb)); });
    ASSERT_EQ(d.status, StoreStatus::kOk);
    last = d.index;
    EXPECT_GT(d.index, r.index);
  }
  LevelDbTokenStore s(dir.str());
  EXPECT_EQ(s.current_index(), last);
  auto g = get(s, kTok);
  ASSERT_EQ(g.status, StoreStatus::kOk);
  ASSERT_EQ(g.token.members.size(), 1u);
  EXPECT_EQ(g.token.members[0].id, "b2");
  EXPECT_GT(add(s, kTok, "c3").member.created_index, last);
}

TEST(LevelDbTokenStore, ConcurrentRegistrationsAdmitExactlyTheCap) {
  TempDir dir;
  LevelDbTokenStore s(dir.str());
  create(s, kTok, 3);
  constexpr int kClients = 1000;
  constexpr uint32_t kCap = 28;
  std::atomic<int> ok{0}, quota{0}, other{0}, answered{0};
  std::promise<void> all;
  for (int i = 0; i < kClients; ++i) {
    char id[17];
    std::snprintf(id, sizeof id, "%x", i + 1);
    s.add_member(kTok, id, "m=http://x", kCap, kNow, [&](StoreResult r) {
      if (r.status == StoreStatus::kOk)
        ++ok;
      else if (r.status == StoreStatus::kQuotaReached)
        ++quota;
      else
        ++other;
      if (++answered == kClients) all.set_value();
    });
  }
  ASSERT_EQ(all.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(ok.load(), static_cast<int>(kCap));
  EXPECT_EQ(quota.load(), kClients - static_cast<int>(kCap));
  EXPECT_EQ(other.load(), 0);
  auto first = cluster_members(get(s, kTok).token);
  auto again = cluster_members(get(s, kTok).token);
  ASSERT_EQ(first.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(first[i].id, again[i].id);
}

TEST(LevelDbTokenStore, WatchReturnsAPastMemberAtOnce) {
  TempDir dir;
  LevelDbTokenStore s(dir.str());
  create(s, kTok, 3);
  auto a = add(s, kTok, "a1");
  add(s, kTok, "b2");
  std::unique_ptr<Watch> w;
  auto r = wait_for(
      [&](StoreCallback cb) { w = s.watch(kTok, "", a.member.created_index, std::move(cb)); });
  EXPECT_EQ(r.member.id, "a1");
  auto r2 = wait_for([&](StoreCallback cb) { w = s.watch(kTok, "b2", 0, std::move(cb)); });
  EXPECT_EQ(r2.member.id, "b2");
}

TEST(LevelDbTokenStore, WatchWakesOnTheNextRegistrationOnly) {
  TempDir dir;
  LevelDbTokenStore s(dir.str());
  create(s, kTok, 3);
  std::promise<StoreResult> woke;
  auto w = s.watch(kTok, "", s.current_index() + 1, [&](StoreResult r) { woke.set_value(r); });
  auto f = woke.get_future();
  EXPECT_EQ(f.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  EXPECT_EQ(s.open_watches(), 1u);
  auto a = add(s, kTok, "a1");
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  auto r = f.get();
  EXPECT_EQ(r.member.id, "a1");
  EXPECT_EQ(r.member.created_index, a.member.created_index);
  EXPECT_EQ(s.open_watches(), 0u);
}

TEST(LevelDbTokenStore, DeletesDoNotWakeWatchers) {
  TempDir dir;
  LevelDbTokenStore s(dir.str());
  create(s, kTok, 3);
  add(s, kTok, "a1");
  std::atomic<int> calls{0};
  auto w = s.watch(kTok, "", s.current_index() + 1, [&](StoreResult) { ++calls; });
  wait_for([&](StoreCallback cb) { s.remove_member(kTok, "a1", std::move(cb)); });
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(s.open_watches(), 1u);
  w->cancel();
  EXPECT_EQ(s.open_watches(), 0u);
  add(s, kTok, "b2");
  EXPECT_EQ(calls.load(), 0);
}

TEST(LevelDbTokenStore, ExpiryHidesCollectsAndEndsWatches) {
  TempDir dir;
  LevelDbTokenStore s(dir.str());
  create(s, kTok, 3, kNow + 1000);
  EXPECT_EQ(get(s, kTok, kNow + 2000).status, StoreStatus::kNotFound);
  std::promise<StoreResult> woke;
  auto w = s.watch(kTok, "", s.current_index() + 1, [&](StoreResult r) { woke.set_value(r); });
  EXPECT_EQ(s.collect_expired(kNow + 2000), 1u);
  auto f = woke.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(f.get().status, StoreStatus::kNotFound);
  EXPECT_EQ(create(s, kTok, 3).status, StoreStatus::kOk);  // the name is free again
}

}  // namespace
}  // namespace muster::discovery
