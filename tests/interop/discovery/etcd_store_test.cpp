// EtcdTokenStore against a real etcd 3.4: two store instances ("replica A"
// and "replica B") share one etcd, as two muster-discovery replicas behind a
// load balancer would.
#include "discovery/etcd_store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "net/client.h"
#include "tests/interop/discovery/etcd_store_support.h"

namespace muster::discovery {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

using namespace etcd_test;

// Waits for one callback.
class Result {
 public:
  StoreCallback cb() {
    return [this](StoreResult r) {
      std::lock_guard lock(mu_);
      ++calls_;
      r_ = std::move(r);
      cv_.notify_all();
    };
  }
  // The result, or a failure after the deadline.
  StoreResult get(std::chrono::milliseconds deadline = 10s) {
    std::unique_lock lock(mu_);
    EXPECT_TRUE(cv_.wait_for(lock, deadline, [&] { return calls_ > 0; }))
        << "no callback within the deadline";
    return r_;
  }
  bool fired() {
    std::lock_guard lock(mu_);
    return calls_ > 0;
  }
  int calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int calls_ = 0;
  StoreResult r_;
};

const char* name(StoreStatus s) {
  switch (s) {
    case StoreStatus::kOk:
      return "kOk";
    case StoreStatus::kNotFound:
      return "kNotFound";
    case StoreStatus::kExists:
      return "kExists";
    case StoreStatus::kQuotaReached:
      return "kQuotaReached";
    case StoreStatus::kUnavailable:
      return "kUnavailable";
  }
  return "?";
}

class EtcdStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kEtcd)) << kEtcd << " missing: install etcd-server";
    etcd_ = std::make_unique<EtcdProcess>();
    std::string why = etcd_->start_fresh();
    ASSERT_TRUE(why.empty()) << why;
    a_ = make_store();
    b_ = make_store();
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    etcd_.reset();
  }

  std::unique_ptr<EtcdTokenStore> make_store(std::vector<std::string> endpoints = {}) {
    EtcdStoreOptions o;
    o.endpoints = endpoints.empty() ? std::vector<std::string>{etcd_->endpoint()} : endpoints;
    o.prefix = "/test-discovery/";
    o.request_timeout = 2s;
    o.connect_timeout = 1s;
    return std::make_unique<EtcdTokenStore>(o);
  }

  StoreResult create(EtcdTokenStore& s, const std::string& token, uint32_t size,
                     int64_t ttl_ms = 3'600'000) {
    Result r;
    int64_t now = wall_ms();
    s.create_token(token, size, now, now + ttl_ms, r.cb());
    return r.get();
  }
  StoreResult get(EtcdTokenStore& s, const std::string& token, int64_t now = wall_ms()) {
    Result r;
    s.get_token(token, now, r.cb());
    return r.get();
  }
  StoreResult add(EtcdTokenStore& s, const std::string& token, const std::string& id,
                  uint32_t max = 20) {
    Result r;
    s.add_member(token, id, id + "=http://127.0.0.1:2380", max, wall_ms(), r.cb());
    return r.get();
  }
  StoreResult remove(EtcdTokenStore& s, const std::string& token, const std::string& id) {
    Result r;
    s.remove_member(token, id, r.cb());
    return r.get();
  }

  std::unique_ptr<EtcdProcess> etcd_;
  std::unique_ptr<EtcdTokenStore> a_, b_;
};

#define EXPECT_STATUS(want, result)                                                \
  do {                                                                             \
    auto _r = (result);                                                            \
    EXPECT_EQ(_r.status, want) << "got " << name(_r.status) << ": " << _r.message; \
  } while (0)

TEST_F(EtcdStoreTest, TokenCreatedOnReplicaAIsReadOnReplicaB) {
  auto c = create(*a_, "tok-a", 3);
  ASSERT_EQ(c.status, StoreStatus::kOk) << c.message;
  EXPECT_EQ(c.token.size, 3u);
  EXPECT_GT(c.index, 0u);
  EXPECT_EQ(c.token.created_index, c.index);

  auto g = get(*b_, "tok-a");
  ASSERT_EQ(g.status, StoreStatus::kOk) << g.message;
  EXPECT_EQ(g.token.name, "tok-a");
  EXPECT_EQ(g.token.size, 3u);
  EXPECT_EQ(g.token.created_index, c.index);
  EXPECT_EQ(g.token.created_unix_ms, c.token.created_unix_ms);
  EXPECT_EQ(g.token.expires_unix_ms, c.token.expires_unix_ms);
  EXPECT_TRUE(g.token.members.empty());
  EXPECT_GE(g.index, c.index);

  // The name is taken for both replicas.
  auto again = create(*b_, "tok-a", 5);
  EXPECT_EQ(again.status, StoreStatus::kExists);
  EXPECT_EQ(again.token.size, 3u);

  EXPECT_STATUS(StoreStatus::kNotFound, get(*b_, "no-such-token"));
  EXPECT_STATUS(StoreStatus::kNotFound, add(*b_, "no-such-token", "m1"));
  EXPECT_STATUS(StoreStatus::kNotFound, remove(*b_, "tok-a", "m1"));
  EXPECT_EQ(a_->health(), "");
  EXPECT_GE(b_->current_index(), c.index);
}

TEST_F(EtcdStoreTest, MemberRegisteredOnAWakesWaiterOnB) {
  auto c = create(*a_, "tok-w", 3);
  ASSERT_EQ(c.status, StoreStatus::kOk) << c.message;
  Result any, only_m2;
  auto w1 = b_->watch("tok-w", "", c.index + 1, any.cb());
  auto w2 = b_->watch("tok-w", "m2", c.index + 1, only_m2.cb());
  EXPECT_EQ(b_->open_watches(), 2u);
  EXPECT_FALSE(any.fired());

  auto m1 = add(*a_, "tok-w", "m1");
  ASSERT_EQ(m1.status, StoreStatus::kOk) << m1.message;
  EXPECT_EQ(m1.member.created_index, m1.index);
  auto woke = any.get();
  ASSERT_EQ(woke.status, StoreStatus::kOk) << woke.message;
  EXPECT_EQ(woke.member.id, "m1");
  EXPECT_EQ(woke.member.value, "m1=http://127.0.0.1:2380");
  EXPECT_EQ(woke.member.created_index, m1.index);
  EXPECT_EQ(woke.member.modified_index, m1.index);
  EXPECT_FALSE(only_m2.fired());

  auto m2 = add(*a_, "tok-w", "m2");
  ASSERT_EQ(m2.status, StoreStatus::kOk) << m2.message;
  EXPECT_GT(m2.index, m1.index);
  auto woke2 = only_m2.get();
  ASSERT_EQ(woke2.status, StoreStatus::kOk) << woke2.message;
  EXPECT_EQ(woke2.member.id, "m2");
  EXPECT_EQ(woke2.member.created_index, m2.index);
  EXPECT_EQ(any.calls(), 1);  // exactly once
  EXPECT_EQ(b_->open_watches(), 0u);
}

TEST_F(EtcdStoreTest, CancelledWatchIsNeverCalled) {
  ASSERT_EQ(create(*a_, "tok-c", 3).status, StoreStatus::kOk);
  Result cancelled, witness;
  auto w = b_->watch("tok-c", "", 0, cancelled.cb());
  w->cancel();
  auto w2 = b_->watch("tok-c", "", 0, witness.cb());
  EXPECT_STATUS(StoreStatus::kOk, add(*a_, "tok-c", "m1"));
  // The witness registered after the cancel and woke, so the stream event
  // has been dispatched to this replica's waiters.
  EXPECT_EQ(witness.get().member.id, "m1");
  EXPECT_FALSE(cancelled.fired());
  EXPECT_EQ(b_->open_watches(), 0u);
}

TEST_F(EtcdStoreTest, DuplicateIdIsRefusedWithTheExistingMember) {
  ASSERT_EQ(create(*a_, "tok-d", 3).status, StoreStatus::kOk);
  auto first = add(*a_, "tok-d", "m1");
  ASSERT_EQ(first.status, StoreStatus::kOk) << first.message;
  Result r;
  b_->add_member("tok-d", "m1", "other=http://10.0.0.1:2380", 20, wall_ms(), r.cb());
  auto dup = r.get();
  EXPECT_EQ(dup.status, StoreStatus::kExists);
  EXPECT_EQ(dup.member.id, "m1");
  EXPECT_EQ(dup.member.value, "m1=http://127.0.0.1:2380");
  EXPECT_EQ(dup.member.created_index, first.index);
  auto g = get(*b_, "tok-d");
  ASSERT_EQ(g.token.members.size(), 1u);
  EXPECT_EQ(g.token.members[0].value, "m1=http://127.0.0.1:2380");
}

TEST_F(EtcdStoreTest, ThousandConcurrentRegistrationsThroughTwoReplicasAdmitExactlyTheCap) {
  constexpr uint32_t kCap = 20;
  constexpr int kCalls = 1000;
  ASSERT_EQ(create(*a_, "tok-cap", 3).status, StoreStatus::kOk);
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  std::map<StoreStatus, int> counts;
  std::vector<StoreResult> oks;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kCalls; ++i) {
    EtcdTokenStore& s = i % 2 == 0 ? *a_ : *b_;
    std::string id = "m" + std::to_string(i);
    s.add_member("tok-cap", id, id + "=http://10.0.0.1:2380", kCap, wall_ms(), [&](StoreResult r) {
      std::lock_guard lock(mu);
      ++counts[r.status];
      if (r.status == StoreStatus::kOk) oks.push_back(r);
      ++done;
      cv.notify_all();
    });
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 60s, [&] { return done == kCalls; })) << done << " answered";
  }
  auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  std::cout << "[ figures  ] " << kCalls << " concurrent registrations through 2 replicas in "
            << elapsed.count() << " ms\n";
  EXPECT_EQ(counts[StoreStatus::kOk], int(kCap));
  EXPECT_EQ(counts[StoreStatus::kQuotaReached], kCalls - int(kCap));
  EXPECT_EQ(counts[StoreStatus::kUnavailable], 0);

  auto g = get(*b_, "tok-cap");
  ASSERT_EQ(g.status, StoreStatus::kOk);
  ASSERT_EQ(g.token.members.size(), kCap);
  for (std::size_t i = 0; i < g.token.members.size(); ++i) {
    if (i > 0) {
      EXPECT_LT(g.token.members[i - 1].created_index, g.token.members[i].created_index);
    }
  }
  std::sort(oks.begin(), oks.end(),
            [](const StoreResult& x, const StoreResult& y) { return x.index < y.index; });
  for (std::size_t i = 0; i < oks.size(); ++i) {
    EXPECT_EQ(oks[i].member.created_index, oks[i].index);
    EXPECT_EQ(g.token.members[i].id, oks[i].member.id);
  }
  // The first `size` by created_index stay the first after more traffic.
  std::vector<std::string> first3;
  for (int i = 0; i < 3; ++i) first3.push_back(g.token.members[std::size_t(i)].id);
  EXPECT_STATUS(StoreStatus::kQuotaReached, add(*a_, "tok-cap", "late", kCap));
  EXPECT_STATUS(StoreStatus::kOk, remove(*a_, "tok-cap", g.token.members.back().id));
  EXPECT_STATUS(StoreStatus::kOk, add(*b_, "tok-cap", "late", kCap));
  auto g2 = get(*a_, "tok-cap");
  ASSERT_EQ(g2.token.members.size(), kCap);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(g2.token.members[std::size_t(i)].id, first3[std::size_t(i)]);
  EXPECT_EQ(g2.token.members.back().id, "late");
}

TEST_F(EtcdStoreTest, RemovingAMemberFreesItsSlot) {
  ASSERT_EQ(create(*a_, "tok-r", 1).status, StoreStatus::kOk);
  auto m1 = add(*a_, "tok-r", "m1", 2);
  auto m2 = add(*b_, "tok-r", "m2", 2);
  ASSERT_EQ(m1.status, StoreStatus::kOk);
  ASSERT_EQ(m2.status, StoreStatus::kOk);
  EXPECT_STATUS(StoreStatus::kQuotaReached, add(*a_, "tok-r", "m3", 2));

  auto rm = remove(*b_, "tok-r", "m1");
  ASSERT_EQ(rm.status, StoreStatus::kOk) << rm.message;
  EXPECT_EQ(rm.member.id, "m1");
  EXPECT_EQ(rm.member.created_index, m1.index);
  EXPECT_GT(rm.index, m2.index);  // the deletion got its own index
  EXPECT_STATUS(StoreStatus::kNotFound, remove(*a_, "tok-r", "m1"));

  auto m3 = add(*a_, "tok-r", "m3", 2);
  ASSERT_EQ(m3.status, StoreStatus::kOk) << m3.message;
  EXPECT_GT(m3.index, rm.index);
  EXPECT_STATUS(StoreStatus::kQuotaReached, add(*b_, "tok-r", "m4", 2));
  auto g = get(*a_, "tok-r");
  ASSERT_EQ(g.token.members.size(), 2u);
  EXPECT_EQ(g.token.members[0].id, "m2");
  EXPECT_EQ(g.token.members[1].id, "m3");

  // A re-registration after removal is a new member with a new index.
  EXPECT_STATUS(StoreStatus::kOk, remove(*a_, "tok-r", "m2"));
  auto again = add(*b_, "tok-r", "m2", 2);
  ASSERT_EQ(again.status, StoreStatus::kOk);
  EXPECT_GT(again.member.created_index, m3.index);
}

TEST_F(EtcdStoreTest, ExpiredTokensAreHiddenThenCollected) {
  int64_t now = wall_ms();
  Result r;
  a_->create_token("tok-old", 3, now, now + 1'000, r.cb());
  ASSERT_EQ(r.get().status, StoreStatus::kOk);
  ASSERT_EQ(create(*a_, "tok-young", 3).status, StoreStatus::kOk);
  ASSERT_EQ(add(*a_, "tok-old", "m1").status, StoreStatus::kOk);

  EXPECT_STATUS(StoreStatus::kOk, get(*b_, "tok-old", now + 999));
  EXPECT_STATUS(StoreStatus::kNotFound, get(*b_, "tok-old", now + 1'000));
  {
    Result late;
    b_->add_member("tok-old", "m2", "x", 20, now + 2'000, late.cb());
    EXPECT_STATUS(StoreStatus::kNotFound, late.get());
  }
  // Expired but not collected: the name is still taken.
  {
    Result dup;
    b_->create_token("tok-old", 3, now + 2'000, now + 10'000, dup.cb());
    EXPECT_STATUS(StoreStatus::kExists, dup.get());
  }
  EXPECT_EQ(b_->collect_expired(now + 2'000), 1u);
  EXPECT_EQ(a_->collect_expired(now + 2'000), 0u);  // nothing left for the other replica
  EXPECT_STATUS(StoreStatus::kNotFound, get(*a_, "tok-old", now));
  EXPECT_STATUS(StoreStatus::kOk, get(*a_, "tok-young"));

  // The name can be used again, with nothing of the old token left over.
  auto fresh = create(*a_, "tok-old", 1);
  ASSERT_EQ(fresh.status, StoreStatus::kOk);
  EXPECT_STATUS(StoreStatus::kOk, add(*b_, "tok-old", "m1", 1));  // the old m1 is gone
  EXPECT_STATUS(StoreStatus::kQuotaReached, add(*b_, "tok-old", "m2", 1));
  auto g = get(*a_, "tok-old");
  ASSERT_EQ(g.token.members.size(), 1u);
  EXPECT_EQ(g.token.size, 1u);
}

TEST_F(EtcdStoreTest, IndexesOnlyIncrease) {
  uint64_t last = 0;
  auto check = [&](const StoreResult& r) {
    ASSERT_EQ(r.status, StoreStatus::kOk) << r.message;
    EXPECT_GT(r.index, last);
    last = r.index;
  };
  check(create(*a_, "tok-i", 3));
  check(add(*b_, "tok-i", "m1"));
  check(add(*a_, "tok-i", "m2"));
  check(remove(*b_, "tok-i", "m1"));
  check(create(*b_, "tok-i2", 3));
  check(add(*a_, "tok-i", "m1"));
  EXPECT_GE(a_->current_index(), last);
  auto g = get(*b_, "tok-i");
  EXPECT_GE(g.index, last);
  EXPECT_GE(b_->current_index(), last);
  // A replica that starts now already knows the current index.
  auto fresh = make_store();
  EXPECT_GE(fresh->current_index(), last);
}

TEST_F(EtcdStoreTest, WatchFromAPastIndexReturnsTheExistingMember) {
  ASSERT_EQ(create(*a_, "tok-p", 3).status, StoreStatus::kOk);
  auto m1 = add(*a_, "tok-p", "m1");
  auto m2 = add(*a_, "tok-p", "m2");
  ASSERT_EQ(m2.status, StoreStatus::kOk);
  {
    Result r;
    auto w = b_->watch("tok-p", "", m1.index, r.cb());
    EXPECT_EQ(r.get().member.id, "m1");
  }
  {
    Result r;
    auto w = b_->watch("tok-p", "", m1.index + 1, r.cb());
    auto got = r.get();
    EXPECT_EQ(got.member.id, "m2");
    EXPECT_EQ(got.member.created_index, m2.index);
  }
  {
    Result r;
    auto w = b_->watch("tok-p", "m2", 0, r.cb());
    EXPECT_EQ(r.get().member.id, "m2");
  }
  {
    // Nothing at or after m2 + 1 yet: waits for the next creation; a removal
    // is not an event.
    Result r;
    auto w = b_->watch("tok-p", "", m2.index + 1, r.cb());
    EXPECT_STATUS(StoreStatus::kOk, remove(*a_, "tok-p", "m1"));
    auto m3 = add(*a_, "tok-p", "m3");
    auto got = r.get();
    EXPECT_EQ(got.member.id, "m3");
    EXPECT_EQ(got.member.created_index, m3.index);
  }
}

TEST_F(EtcdStoreTest, WaitersRacingRegistrationsGetTheFirstMemberAtOrAfterTheirIndex) {
  // Waiters open on B while A registers members: whether a member lands
  // before, during or after a waiter's initial read, the waiter must get the
  // first member whose index is >= its waitIndex (no removals here, so that
  // member is known once all registrations are done).
  ASSERT_EQ(create(*a_, "tok-race", 3).status, StoreStatus::kOk);
  constexpr int kMembers = 40;
  std::vector<uint64_t> indexes;
  std::atomic<bool> adding{true};
  std::thread adder([&] {
    for (int i = 0; i < kMembers; ++i) {
      auto r = add(*a_, "tok-race", "m" + std::to_string(i), 100);
      EXPECT_EQ(r.status, StoreStatus::kOk) << r.message;
      indexes.push_back(r.index);
    }
    adding = false;
  });
  struct Waiting {
    uint64_t from = 0;
    Result result;
    std::unique_ptr<Watch> watch;
  };
  std::vector<std::unique_ptr<Waiting>> waiting;
  uint64_t salt = 0;
  while (adding) {
    auto w = std::make_unique<Waiting>();
    uint64_t cur = std::max(b_->current_index(), a_->current_index());
    w->from = cur + (salt++ % 4);  // at, or just after, the newest index
    w->watch = b_->watch("tok-race", "", w->from, w->result.cb());
    waiting.push_back(std::move(w));
    std::this_thread::sleep_for(2ms);  // pacing, about one waiter per registration
  }
  adder.join();
  ASSERT_EQ(indexes.size(), std::size_t(kMembers));
  int checked = 0;
  for (auto& w : waiting) {
    auto first = std::lower_bound(indexes.begin(), indexes.end(), w->from);
    if (first == indexes.end()) continue;  // nothing at or after its index
    auto got = w->result.get(10s);
    ASSERT_EQ(got.status, StoreStatus::kOk) << got.message;
    EXPECT_EQ(got.member.created_index, *first) << "waitIndex " << w->from;
    ++checked;
  }
  EXPECT_GT(checked, kMembers / 2);
  std::cout << "[ figures  ] " << waiting.size() << " racing waiters, " << checked
            << " answered and checked\n";
}

TEST_F(EtcdStoreTest, WatchOnAVanishingTokenAnswersNotFound) {
  int64_t now = wall_ms();
  Result created;
  a_->create_token("tok-x", 3, now, now + 3'600'000, created.cb());
  ASSERT_EQ(created.get().status, StoreStatus::kOk);
  Result r;
  auto w = b_->watch("tok-x", "", 0, r.cb());
  EXPECT_EQ(b_->open_watches(), 1u);
  // Replica A collects it (as if an hour had passed): B's waiter learns.
  EXPECT_EQ(a_->collect_expired(now + 3'600'001), 1u);
  auto got = r.get();
  EXPECT_EQ(got.status, StoreStatus::kNotFound) << name(got.status);

  Result unknown;
  auto w2 = b_->watch("no-such-token", "", 0, unknown.cb());
  EXPECT_STATUS(StoreStatus::kNotFound, unknown.get());

  // Expired by the wall clock, not yet collected.
  Result old, gone;
  a_->create_token("tok-expired", 3, now - 10'000, now - 1, old.cb());
  ASSERT_EQ(old.get().status, StoreStatus::kOk);
  auto w3 = b_->watch("tok-expired", "", 0, gone.cb());
  EXPECT_STATUS(StoreStatus::kNotFound, gone.get());
}

TEST_F(EtcdStoreTest, WatchStreamSurvivesAnEtcdRestart) {
  ASSERT_EQ(create(*a_, "tok-s", 3).status, StoreStatus::kOk);
  auto m1 = add(*a_, "tok-s", "m1");
  ASSERT_EQ(m1.status, StoreStatus::kOk);
  Result r;
  auto w = b_->watch("tok-s", "", m1.index + 1, r.cb());
  // Wait until B's stream is up and its waiter live (initial read done)
  // before the outage, so that what wakes it can only come through the
  // re-opened stream.
  ASSERT_TRUE(wait_until([&] { return b_->watch_streams_established() >= 1; }));
  ASSERT_TRUE(wait_until([&] { return b_->watches_reading() == 0; }));
  ASSERT_FALSE(r.fired());
  uint64_t streams = b_->watch_streams_established();

  etcd_->stop();
  EXPECT_NE(a_->health(), "");
  {
    // While etcd is down, operations answer kUnavailable instead of hanging.
    Result down;
    a_->get_token("tok-s", wall_ms(), down.cb());
    EXPECT_STATUS(StoreStatus::kUnavailable, down.get(30s));
  }
  std::string why = etcd_->start();
  ASSERT_TRUE(why.empty()) << why;
  EXPECT_FALSE(r.fired());

  // The stream comes back (from the revision after the last one it saw).
  EXPECT_TRUE(wait_until([&] { return b_->watch_streams_established() > streams; }));

  StoreResult m2;
  for (int i = 0; i < 20; ++i) {  // the first call may meet etcd still settling
    m2 = add(*a_, "tok-s", "m2");
    if (m2.status != StoreStatus::kUnavailable) break;
  }
  ASSERT_EQ(m2.status, StoreStatus::kOk) << m2.message;
  auto got = r.get(20s);
  ASSERT_EQ(got.status, StoreStatus::kOk) << got.message;
  EXPECT_EQ(got.member.id, "m2");
  EXPECT_GT(got.member.created_index, m1.index);
  EXPECT_EQ(a_->health(), "");
}

TEST_F(EtcdStoreTest, ShutdownAnswersOpenWatchesAndIsPrompt) {
  ASSERT_EQ(create(*a_, "tok-q", 3).status, StoreStatus::kOk);
  Result r;
  auto w = b_->watch("tok-q", "", 0, r.cb());
  // Let the stream come up so that shutdown has to end it.
  ASSERT_TRUE(wait_until([&] { return b_->watch_streams_established() >= 1; }));
  ASSERT_TRUE(wait_until([&] { return b_->watches_reading() == 0; }));
  auto start = std::chrono::steady_clock::now();
  b_.reset();
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, 3s);
  auto got = r.get();
  EXPECT_EQ(got.status, StoreStatus::kUnavailable) << name(got.status);
  w->cancel();  // the store is gone: harmless
}

TEST_F(EtcdStoreTest, FailsOverToTheNextEndpoint) {
  // The first endpoint refuses connections (nothing listens there).
  uint16_t dead = free_port();
  auto c = make_store({"http://127.0.0.1:" + std::to_string(dead), etcd_->endpoint()});
  auto created = create(*c, "tok-f", 3);
  ASSERT_EQ(created.status, StoreStatus::kOk) << created.message;
  Result r;
  auto w = c->watch("tok-f", "", created.index + 1, r.cb());
  EXPECT_STATUS(StoreStatus::kOk, add(*a_, "tok-f", "m1"));
  auto got = r.get();
  ASSERT_EQ(got.status, StoreStatus::kOk) << got.message;
  EXPECT_EQ(got.member.id, "m1");
  EXPECT_EQ(c->health(), "");
}

TEST_F(EtcdStoreTest, WaiterMissedByACompactedStreamIsFoundByReReading) {
  // Replica C reaches etcd through a proxy the test can cut.
  TcpProxy proxy({etcd_->client_port()});
  auto c = make_store({"http://127.0.0.1:" + std::to_string(proxy.port())});
  ASSERT_EQ(create(*a_, "tok-g", 3).status, StoreStatus::kOk);
  auto m1 = add(*a_, "tok-g", "m1");
  ASSERT_EQ(m1.status, StoreStatus::kOk);
  Result r;
  auto w = c->watch("tok-g", "", m1.index + 1, r.cb());
  ASSERT_TRUE(wait_until([&] { return c->watch_streams_established() >= 1; }));
  ASSERT_TRUE(wait_until([&] { return c->watches_reading() == 0; }));
  ASSERT_FALSE(r.fired());

  proxy.cut();
  ASSERT_TRUE(wait_until([&] { return proxy.open_connections() == 0; }));
  // While C is cut off: a registration, a later write, and a compaction
  // that removes the registration's event from etcd's history.
  auto m2 = add(*a_, "tok-g", "m2");
  ASSERT_EQ(m2.status, StoreStatus::kOk);
  auto later = create(*a_, "tok-g-later", 3);
  ASSERT_EQ(later.status, StoreStatus::kOk);
  net::HttpClient http;
  auto compacted =
      http.request("POST", etcd_->endpoint() + "/v3/kv/compaction",
                   "{\"revision\":\"" + std::to_string(later.index) + "\",\"physical\":true}");
  ASSERT_TRUE(compacted.ok()) << compacted.error;
  ASSERT_EQ(compacted.response->status, 200) << compacted.response->body;
  EXPECT_FALSE(r.fired());

  uint64_t streams = c->watch_streams_established();
  proxy.restore();
  // C's stream resumes at a compacted revision, starts afresh and re-reads
  // the waiting token, which finds m2.
  auto got = r.get(20s);
  ASSERT_EQ(got.status, StoreStatus::kOk) << got.message;
  EXPECT_EQ(got.member.id, "m2");
  EXPECT_EQ(got.member.created_index, m2.index);
  EXPECT_GT(c->watch_streams_established(), streams);
}

// A throwaway CA and a server certificate for 127.0.0.1, made with the
// openssl command.  Returns an empty string or why not.
std::string make_certificates(const std::string& dir) {
  std::string cmd =
      "(cd '" + dir +
      "' && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 "
      "-subj /CN=muster-test-ca && "
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
      "-subj /CN=127.0.0.1 && "
      "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
      "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
      "-out server.crt -days 1 -extfile san.ext) > '" +
      dir + "/openssl.log' 2>&1";
  if (std::system(cmd.c_str()) != 0) return "openssl failed; see " + dir + "/openssl.log";
  return "";
}

TEST(EtcdStoreTls, WorksWithAnEtcdServingHttps) {
  ASSERT_TRUE(fs::exists(kEtcd)) << kEtcd << " missing: install etcd-server";
  EtcdProcess etcd;
  std::string why = make_certificates(etcd.dir());
  ASSERT_TRUE(why.empty()) << why;
  etcd.use_tls(etcd.dir() + "/server.crt", etcd.dir() + "/server.key", etcd.dir() + "/ca.crt");
  why = etcd.start_fresh();
  ASSERT_TRUE(why.empty()) << why;
  ASSERT_EQ(etcd.endpoint().rfind("https://", 0), 0u);

  EtcdStoreOptions o;
  o.endpoints = {etcd.endpoint()};
  o.tls.trusted_ca_file = etcd.dir() + "/ca.crt";
  EtcdTokenStore a(o), b(o);
  EXPECT_EQ(a.health(), "");
  Result created;
  int64_t now = wall_ms();
  a.create_token("tok-tls", 3, now, now + 60'000, created.cb());
  auto c = created.get();
  ASSERT_EQ(c.status, StoreStatus::kOk) << c.message;
  Result woke, added;
  auto w = b.watch("tok-tls", "", c.index + 1, woke.cb());
  a.add_member("tok-tls", "m1", "m1=https://127.0.0.1:2380", 20, now, added.cb());
  EXPECT_STATUS(StoreStatus::kOk, added.get());
  auto got = woke.get();
  ASSERT_EQ(got.status, StoreStatus::kOk) << got.message;
  EXPECT_EQ(got.member.id, "m1");

  // Without the CA the server is not trusted: the store says so.
  EtcdStoreOptions untrusted = o;
  untrusted.tls.trusted_ca_file.clear();
  EtcdTokenStore u(untrusted);
  EXPECT_NE(u.health(), "");
  Result refused;
  u.get_token("tok-tls", now, refused.cb());
  EXPECT_STATUS(StoreStatus::kUnavailable, refused.get());
}

TEST(EtcdStoreEndpoints, ParsesCommaSeparatedUrls) {
  auto eps = parse_etcd_endpoints("http://127.0.0.1:2379, https://etcd-1:2379/");
  ASSERT_EQ(eps.size(), 2u);
  EXPECT_EQ(eps[0], "http://127.0.0.1:2379");
  EXPECT_EQ(eps[1], "https://etcd-1:2379");
  EXPECT_THROW(parse_etcd_endpoints(""), std::invalid_argument);
  EXPECT_THROW(parse_etcd_endpoints("127.0.0.1:2379"), std::invalid_argument);
  EXPECT_THROW(parse_etcd_endpoints("http://h:2379/v3"), std::invalid_argument);
}

}  // namespace
}  // namespace muster::discovery
