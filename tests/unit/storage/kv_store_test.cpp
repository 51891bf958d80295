// Targeted behaviour of the v3 state machine: etcd's revision conventions,
// errors, leases, membership, idempotent apply.
#include <gtest/gtest.h>
#include <leveldb/iterator.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "node/storage/errors.h"
#include "test_util.h"

namespace muster::storage {
namespace {

using testing::FakeClock;
using testing::ScratchDir;

class KvStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    opts_.kv.clock_ms = clock_.fn();
    member_ = testing::open_member(dir_.path(), opts_);
  }
  void reopen() {
    member_.reset();
    member_ = testing::open_member(dir_.path(), opts_);
  }
  KvStore& kv() { return member_->kv(); }
  KvStore::ApplyResult apply(const pb::InternalRequest& r) { return kv().apply(r, ++index_, 1); }
  KvStore::ApplyResult put(const std::string& k, const std::string& v, int64_t lease = 0) {
    pb::InternalRequest r;
    r.mutable_put()->set_key(k);
    r.mutable_put()->set_value(v);
    r.mutable_put()->set_lease(lease);
    return apply(r);
  }
  pb::RangeResponse get(const std::string& k, const std::string& end = "", int64_t rev = 0) {
    pb::RangeRequest r;
    r.set_key(k);
    r.set_range_end(end);
    r.set_revision(rev);
    pb::RangeResponse out;
    Status s = kv().range(r, &out);
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    return out;
  }
  int64_t grant(int64_t ttl, int64_t id = 0) {
    pb::InternalRequest r;
    r.mutable_lease_grant()->set_ttl(ttl);
    r.mutable_lease_grant()->set_id(id);
    auto res = apply(r);
    EXPECT_TRUE(res.status.is_ok()) << res.status.to_string();
    return res.response.lease_grant().id();
  }

  ScratchDir dir_;
  FakeClock clock_;
  MemberStorage::Options opts_;
  std::unique_ptr<MemberStorage> member_;
  uint64_t index_ = 0;
};

TEST_F(KvStoreTest, FreshStoreIsAtRevisionOneAndFirstPutIsTwo) {
  EXPECT_EQ(kv().revision(), 1);
  auto r = put("foo", "bar");
  ASSERT_TRUE(r.status.is_ok());
  EXPECT_EQ(r.response.put().header().revision(), 2);
  auto g = get("foo");
  ASSERT_EQ(g.kvs_size(), 1);
  EXPECT_EQ(g.kvs(0).create_revision(), 2);
  EXPECT_EQ(g.kvs(0).mod_revision(), 2);
  EXPECT_EQ(g.kvs(0).version(), 1);
  EXPECT_EQ(g.kvs(0).value(), "bar");
  EXPECT_EQ(g.count(), 1);
  put("foo", "baz");
  g = get("foo");
  EXPECT_EQ(g.kvs(0).create_revision(), 2);
  EXPECT_EQ(g.kvs(0).mod_revision(), 3);
  EXPECT_EQ(g.kvs(0).version(), 2);
  EXPECT_EQ(get("foo", "", 2).kvs(0).value(), "bar");
}

TEST_F(KvStoreTest, OldRevisionsReadableUntilCompactedThenEtcdErrors) {
  put("k", "v1");  // rev 2
  put("k", "v2");  // rev 3
  put("k", "v3");  // rev 4
  pb::InternalRequest c;
  c.mutable_compaction()->set_revision(3);
  ASSERT_TRUE(apply(c).status.is_ok());
  EXPECT_EQ(get("k", "", 3).kvs(0).value(), "v2");
  pb::RangeRequest r;
  r.set_key("k");
  r.set_revision(2);
  pb::RangeResponse out;
  Status s = kv().range(r, &out);
  EXPECT_EQ(s.code(), Code::kOutOfRange);
  EXPECT_EQ(s.message(), "etcdserver: mvcc: required revision has been compacted");
  r.set_revision(5);
  s = kv().range(r, &out);
  EXPECT_EQ(s.message(), "etcdserver: mvcc: required revision is a future revision");
  // Compacting again at or below fails the same way as etcd.
  auto again = apply(c);
  EXPECT_EQ(again.status.message(), errors::kCompacted);
  // Survives a reopen.
  reopen();
  EXPECT_EQ(kv().compact_revision(), 3);
  EXPECT_EQ(get("k", "", 3).kvs(0).value(), "v2");
  kv().check_consistency();
}

TEST_F(KvStoreTest, WatchEventsFromRevisionCarryPrevKvAndDeletes) {
  put("a", "1");  // 2
  put("a", "2");  // 3
  pb::InternalRequest d;
  d.mutable_delete_range()->set_key("a");
  ASSERT_EQ(apply(d).response.delete_range().deleted(), 1);  // 4
  std::vector<pb::Event> evs;
  int64_t next = 0;
  ASSERT_TRUE(kv().events("a", "", 3, 100, true, &evs, &next).is_ok());
  ASSERT_EQ(evs.size(), 2u);
  EXPECT_EQ(evs[0].type(), pb::Event::PUT);
  EXPECT_EQ(evs[0].prev_kv().value(), "1");
  EXPECT_EQ(evs[1].type(), pb::Event::DELETE);
  EXPECT_EQ(evs[1].kv().mod_revision(), 4);
  EXPECT_EQ(evs[1].kv().key(), "a");
  EXPECT_EQ(evs[1].prev_kv().value(), "2");
  EXPECT_EQ(next, 5);
  // Batching stops at a revision boundary and resumes there.
  evs.clear();
  ASSERT_TRUE(kv().events("a", "\0", 2, 1, false, &evs, &next).is_ok());
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(next, 3);
  // From a future revision: nothing yet, and resume from where asked.
  evs.clear();
  ASSERT_TRUE(kv().events("a", "", 10, 100, false, &evs, &next).is_ok());
  EXPECT_TRUE(evs.empty());
  EXPECT_EQ(next, 10);
}

TEST_F(KvStoreTest, ApplyIsIdempotentAndAppliedIndexPersists) {
  pb::InternalRequest r;
  r.mutable_put()->set_key("x");
  r.mutable_put()->set_value("1");
  ASSERT_TRUE(kv().apply(r, 7, 2).status.is_ok());
  EXPECT_TRUE(kv().apply(r, 7, 2).skipped);
  EXPECT_TRUE(kv().apply(r, 5, 2).skipped);
  EXPECT_EQ(kv().revision(), 2);
  reopen();
  EXPECT_EQ(kv().applied_index(), 7u);
  EXPECT_EQ(kv().applied_term(), 2u);
  EXPECT_TRUE(kv().apply(r, 7, 2).skipped);
  // A failed request still advances the applied index.
  pb::InternalRequest bad;
  bad.mutable_put()->set_key("y");
  bad.mutable_put()->set_lease(42);
  auto res = kv().apply(bad, 8, 2);
  EXPECT_EQ(res.status.message(), "etcdserver: requested lease not found");
  EXPECT_EQ(kv().applied_index(), 8u);
  EXPECT_EQ(kv().revision(), 2);
}

// Many entries, one LevelDB write: later entries see what earlier ones
// staged (a put's previous value, a txn's compare, a v2 read), readers see
// the batch only once it is written, and the applied index of the last
// entry survives a restart with every record.
TEST_F(KvStoreTest, ApplyBatchEntriesSeeEachOtherAndLandTogether) {
  put("b/k", "0");
  const uint64_t before = index_;
  {
    KvStore::ApplyBatch batch(kv());
    auto r = [&](const std::string& v) {
      pb::InternalRequest p;
      p.mutable_put()->set_key("b/k");
      p.mutable_put()->set_value(v);
      p.mutable_put()->set_prev_kv(true);
      return batch.apply(p, ++index_, 1);
    };
    EXPECT_EQ(r("1").response.put().prev_kv().value(), "0");
    auto second = r("2");
    EXPECT_EQ(second.response.put().prev_kv().value(), "1");
    ASSERT_EQ(second.events.size(), 1u);
    EXPECT_EQ(second.events[0].prev_kv().value(), "1");
    pb::InternalRequest txn;
    auto* c = txn.mutable_txn()->add_compare();
    c->set_key("b/k");
    c->set_target(pb::Compare::VALUE);
    c->set_result(pb::Compare::EQUAL);
    c->set_value("2");
    auto* then = txn.mutable_txn()->add_success()->mutable_request_put();
    then->set_key("b/t");
    then->set_value("seen");
    auto t = batch.apply(txn, ++index_, 1);
    EXPECT_TRUE(t.response.txn().succeeded());
    pb::InternalRequest range;
    range.mutable_range()->set_key("b/k");
    auto rr = batch.apply(range, ++index_, 1);
    ASSERT_EQ(rr.response.range().kvs_size(), 1);
    EXPECT_EQ(rr.response.range().kvs(0).value(), "2");
    batch.apply_noop(++index_, 1);
    // Not written yet: a reader on another thread waits for the batch.
    std::atomic<bool> read_done{false};
    std::thread reader([&] {
      auto got = get("b/t");
      EXPECT_EQ(got.kvs_size(), 1);
      read_done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_FALSE(read_done.load()) << "a reader saw an unwritten batch";
    batch.commit();
    reader.join();
  }
  EXPECT_EQ(kv().applied_index(), before + 5);
  reopen();
  EXPECT_EQ(kv().applied_index(), before + 5);
  EXPECT_EQ(get("b/k").kvs(0).value(), "2");
  EXPECT_EQ(get("b/t").kvs(0).value(), "seen");
  EXPECT_EQ(get("b/k").kvs(0).version(), 3);
  kv().check_consistency();
}

TEST_F(KvStoreTest, ValidateRejectsWhatEtcdRejects) {
  pb::InternalRequest r;
  r.mutable_put();
  EXPECT_EQ(validate(r).message(), "etcdserver: key is not provided");
  pb::InternalRequest t;
  auto* txn = t.mutable_txn();
  for (int i = 0; i < 2; i++) {
    auto* p = txn->add_success()->mutable_request_put();
    p->set_key("same");
  }
  EXPECT_EQ(validate(t).message(), "etcdserver: duplicate key given in txn request");
  pb::InternalRequest t2;
  t2.mutable_txn()->add_success()->mutable_request_put()->set_key("k");
  auto* nested = t2.mutable_txn()->add_success()->mutable_request_txn();
  nested->add_success()->mutable_request_put()->set_key("k2");
  nested->add_failure()->mutable_request_put()->set_key("k2");  // then/else exclusive: fine
  EXPECT_TRUE(validate(t2).is_ok());
  auto* del = t2.mutable_txn()->add_success()->mutable_request_delete_range();
  del->set_key("k");
  del->set_range_end("l");
  EXPECT_EQ(validate(t2).message(), "etcdserver: duplicate key given in txn request");
  pb::InternalRequest many;
  for (int i = 0; i < 129; i++)
    many.mutable_txn()->add_success()->mutable_request_range()->set_key("k");
  EXPECT_EQ(validate(many).message(), "etcdserver: too many operations in txn request");
  pb::InternalRequest iv;
  iv.mutable_put()->set_key("k");
  iv.mutable_put()->set_value("v");
  iv.mutable_put()->set_ignore_value(true);
  EXPECT_EQ(validate(iv).message(), "etcdserver: value is provided");
}

TEST_F(KvStoreTest, LeaseGrantAttachRevokeDeletesKeysAtOneRevision) {
  const int64_t id = grant(10);
  EXPECT_NE(id, 0);
  EXPECT_GT(id, 0);
  ASSERT_TRUE(put("l1", "v", id).status.is_ok());
  ASSERT_TRUE(put("l2", "v", id).status.is_ok());
  ASSERT_TRUE(put("keep", "v").status.is_ok());
  pb::LeaseTimeToLiveRequest q;
  q.set_id(id);
  q.set_keys(true);
  pb::LeaseTimeToLiveResponse ttl;
  ASSERT_TRUE(kv().lease_time_to_live(q, &ttl).is_ok());
  EXPECT_EQ(ttl.grantedttl(), 10);
  EXPECT_EQ(ttl.ttl(), 10);
  ASSERT_EQ(ttl.keys_size(), 2);
  EXPECT_EQ(ttl.keys(0), "l1");

  // Expiry is by the caller's clock only.
  EXPECT_TRUE(kv().expired_leases(clock_.now_ms + 9'000).empty());
  clock_.now_ms += 6'000;
  int64_t refreshed = 0;
  ASSERT_TRUE(kv().lease_keepalive(id, &refreshed).is_ok());
  EXPECT_EQ(refreshed, 10);
  EXPECT_TRUE(kv().expired_leases(clock_.now_ms + 9'999).empty());
  EXPECT_EQ(kv().expired_leases(clock_.now_ms + 10'000), std::vector<int64_t>{id});
  EXPECT_EQ(kv().key_count(), 3u);  // nothing deleted on its own
  // Expired, its revocation not applied yet: TTL 0, not -1 ("not found",
  // which clients take as gone, while its keys are still readable).
  clock_.now_ms += 10'000;
  ttl.Clear();
  ASSERT_TRUE(kv().lease_time_to_live(q, &ttl).is_ok());
  EXPECT_EQ(ttl.ttl(), 0);
  // ... and a refresh is refused: its revocation is on its way, so an
  // acknowledged refresh would promise a TTL it will not get (soak seed
  // 33001: a lease revoked 1 s after a refresh was acknowledged).
  EXPECT_EQ(kv().lease_keepalive(id, &refreshed).code(), Code::kNotFound);
  EXPECT_EQ(kv().expired_leases(clock_.now_ms), std::vector<int64_t>{id});

  const int64_t before = kv().revision();
  pb::InternalRequest rv;
  rv.mutable_lease_revoke()->set_id(id);
  auto res = apply(rv);
  ASSERT_TRUE(res.status.is_ok());
  EXPECT_EQ(kv().revision(), before + 1);
  ASSERT_EQ(res.events.size(), 2u);
  EXPECT_EQ(res.events[0].type(), pb::Event::DELETE);
  EXPECT_EQ(get("l1").kvs_size(), 0);
  EXPECT_EQ(get("keep").kvs_size(), 1);
  EXPECT_EQ(apply(rv).status.message(), "etcdserver: requested lease not found");
  EXPECT_EQ(kv().leases().leases_size(), 0);
}

// A revocation the leader proposed when the lease expired carries its term;
// committed in another term (a deposed leader's proposal forwarded to its
// successor, whose lease clock says otherwise) it changes nothing.
TEST_F(KvStoreTest, AnExpiryRevocationFromAnotherTermIsIgnored) {
  const int64_t id = grant(10);
  ASSERT_TRUE(put("held", "v", id).status.is_ok());
  pb::InternalRequest rv;
  rv.mutable_lease_revoke()->set_id(id);
  rv.set_expiry_term(2);
  auto res = kv().apply(rv, ++index_, 3);  // proposed in term 2, committed in term 3
  EXPECT_EQ(res.status.code(), Code::kNotFound);
  EXPECT_TRUE(kv().lease_exists(id));
  EXPECT_EQ(get("held").kvs_size(), 1);
  res = kv().apply(rv, ++index_, 2);  // in its own term it revokes
  ASSERT_TRUE(res.status.is_ok()) << res.status.message();
  EXPECT_FALSE(kv().lease_exists(id));
  EXPECT_EQ(get("held").kvs_size(), 0);
}

TEST_F(KvStoreTest, LeaseErrorsAndPersistence) {
  const int64_t id = grant(30, 1234);
  EXPECT_EQ(id, 1234);
  pb::InternalRequest dup;
  dup.mutable_lease_grant()->set_id(1234);
  dup.mutable_lease_grant()->set_ttl(5);
  EXPECT_EQ(apply(dup).status.message(), "etcdserver: lease already exists");
  pb::InternalRequest big;
  big.mutable_lease_grant()->set_ttl(kMaxLeaseTTL + 1);
  EXPECT_EQ(apply(big).status.message(), "etcdserver: too large lease TTL");
  put("k", "v", id);
  // Move the key to no lease: detached.
  put("k", "v2");
  pb::LeaseTimeToLiveRequest q;
  q.set_id(id);
  q.set_keys(true);
  pb::LeaseTimeToLiveResponse ttl;
  ASSERT_TRUE(kv().lease_time_to_live(q, &ttl).is_ok());
  EXPECT_EQ(ttl.keys_size(), 0);
  put("k2", "v", id);
  reopen();
  ASSERT_TRUE(kv().lease_exists(1234));
  ttl.Clear();
  ASSERT_TRUE(kv().lease_time_to_live(q, &ttl).is_ok());
  ASSERT_EQ(ttl.keys_size(), 1);
  EXPECT_EQ(ttl.keys(0), "k2");
  // ignore_lease keeps the attachment.
  pb::InternalRequest p;
  p.mutable_put()->set_key("k2");
  p.mutable_put()->set_value("new");
  p.mutable_put()->set_ignore_lease(true);
  ASSERT_TRUE(apply(p).status.is_ok());
  EXPECT_EQ(get("k2").kvs(0).lease(), 1234);
  kv().check_consistency();
}

TEST_F(KvStoreTest, AutoLeaseIdsAreDeterministicPerIndex) {
  ScratchDir other;
  MemberStorage::Options o;
  o.kv.clock_ms = clock_.fn();
  auto m2 = testing::open_member(other.path(), o);
  pb::InternalRequest g;
  g.mutable_lease_grant()->set_ttl(5);
  auto a = kv().apply(g, 10, 1);
  auto b = m2->kv().apply(g, 10, 1);
  EXPECT_EQ(a.response.lease_grant().id(), b.response.lease_grant().id());
  auto c = kv().apply(g, 11, 1);
  EXPECT_NE(a.response.lease_grant().id(), c.response.lease_grant().id());
}

TEST_F(KvStoreTest, TxnComparesEveryTargetAndOperator) {
  put("k", "m");  // rev 2, version 1
  const int64_t lease = grant(100, 7);
  put("l", "x", lease);  // rev 3
  struct Case {
    pb::Compare::CompareTarget target;
    pb::Compare::CompareResult result;
    int64_t n;
    std::string v;
    std::string key;
    bool want;
  };
  const std::vector<Case> cases = {
      {pb::Compare::VALUE, pb::Compare::EQUAL, 0, "m", "k", true},
      {pb::Compare::VALUE, pb::Compare::GREATER, 0, "a", "k", true},
      {pb::Compare::VALUE, pb::Compare::LESS, 0, "z", "k", true},
      {pb::Compare::VALUE, pb::Compare::NOT_EQUAL, 0, "m", "k", false},
      {pb::Compare::VALUE, pb::Compare::NOT_EQUAL, 0, "m", "missing", false},
      {pb::Compare::VERSION, pb::Compare::EQUAL, 0, "", "missing", true},
      {pb::Compare::VERSION, pb::Compare::GREATER, 0, "", "k", true},
      {pb::Compare::CREATE, pb::Compare::EQUAL, 2, "", "k", true},
      {pb::Compare::CREATE, pb::Compare::LESS, 3, "", "k", true},
      {pb::Compare::MOD, pb::Compare::NOT_EQUAL, 2, "", "k", false},
      {pb::Compare::MOD, pb::Compare::GREATER, 2, "", "l", true},
      {pb::Compare::LEASE, pb::Compare::EQUAL, 7, "", "l", true},
      {pb::Compare::LEASE, pb::Compare::EQUAL, 0, "", "k", true},
  };
  for (const auto& c : cases) {
    pb::InternalRequest r;
    auto* cmp = r.mutable_txn()->add_compare();
    cmp->set_key(c.key);
    cmp->set_target(c.target);
    cmp->set_result(c.result);
    switch (c.target) {
      case pb::Compare::VALUE:
        cmp->set_value(c.v);
        break;
      case pb::Compare::VERSION:
        cmp->set_version(c.n);
        break;
      case pb::Compare::CREATE:
        cmp->set_create_revision(c.n);
        break;
      case pb::Compare::MOD:
        cmp->set_mod_revision(c.n);
        break;
      default:
        cmp->set_lease(c.n);
    }
    r.mutable_txn()->add_success()->mutable_request_range()->set_key(c.key);
    auto res = apply(r);
    ASSERT_TRUE(res.status.is_ok());
    EXPECT_EQ(res.response.txn().succeeded(), c.want) << cmp->ShortDebugString();
  }
  // range_end on a compare: all keys in the range must satisfy it.
  pb::InternalRequest r;
  auto* cmp = r.mutable_txn()->add_compare();
  cmp->set_key("k");
  cmp->set_range_end("m");
  cmp->set_target(pb::Compare::VERSION);
  cmp->set_result(pb::Compare::EQUAL);
  cmp->set_version(1);
  auto* p = r.mutable_txn()->add_success()->mutable_request_put();
  p->set_key("won");
  auto res = apply(r);
  EXPECT_TRUE(res.response.txn().succeeded());
  EXPECT_EQ(get("won").kvs_size(), 1);
}

TEST_F(KvStoreTest, MembershipRecords) {
  pb::InternalRequest add;
  auto* m = add.mutable_member_add()->mutable_member();
  m->set_id(0x8e9e05c52164694dULL);
  m->add_peerurls("http://10.0.0.1:2380");
  m->set_islearner(true);
  auto r = apply(add);
  ASSERT_TRUE(r.status.is_ok()) << r.status.to_string();
  EXPECT_EQ(r.response.member_add().members_size(), 1);
  EXPECT_EQ(apply(add).status.message(), "etcdserver: member ID already exist");
  pb::InternalRequest add2 = add;
  add2.mutable_member_add()->mutable_member()->set_id(2);
  EXPECT_EQ(apply(add2).status.message(), "etcdserver: Peer URLs already exists");

  pb::InternalRequest attrs;
  attrs.mutable_member_attributes()->set_id(m->id());
  attrs.mutable_member_attributes()->set_name("infra1");
  attrs.mutable_member_attributes()->add_clienturls("http://10.0.0.1:2379");
  ASSERT_TRUE(apply(attrs).status.is_ok());
  // New peer URLs leave a learner a learner (etcd 3.4 forgot the flag:
  // etcd issue 21694).
  pb::InternalRequest update;
  update.mutable_member_update()->set_id(m->id());
  update.mutable_member_update()->add_peerurls("http://10.0.0.9:2380");
  ASSERT_TRUE(apply(update).status.is_ok());
  reopen();
  ASSERT_EQ(kv().members().size(), 1u);
  EXPECT_TRUE(kv().members()[0].islearner());
  EXPECT_EQ(kv().members()[0].peerurls(0), "http://10.0.0.9:2380");
  pb::InternalRequest promote;
  promote.mutable_member_promote()->set_id(m->id());
  ASSERT_TRUE(apply(promote).status.is_ok());
  EXPECT_EQ(apply(promote).status.message(), "etcdserver: can only promote a learner member");
  reopen();
  auto ms = kv().members();
  ASSERT_EQ(ms.size(), 1u);
  EXPECT_EQ(ms[0].name(), "infra1");
  EXPECT_FALSE(ms[0].islearner());
  EXPECT_EQ(ms[0].clienturls(0), "http://10.0.0.1:2379");
  pb::InternalRequest rm;
  rm.mutable_member_remove()->set_id(m->id());
  ASSERT_TRUE(apply(rm).status.is_ok());
  EXPECT_EQ(apply(rm).status.code(), Code::kNotFound);
  reopen();
  EXPECT_TRUE(kv().members().empty());
  EXPECT_TRUE(kv().member_removed(m->id()));
}

TEST_F(KvStoreTest, ConfStatePersistsWithTheAppliedIndex) {
  raftpb::ConfState cs;
  cs.add_voters(1);
  cs.add_voters(2);
  cs.add_learners(3);
  kv().apply_noop(4, 2, &cs);
  reopen();
  raft::InitialState st;
  ASSERT_EQ(member_->log().initial_state(&st), raft::StorageError::kOk);
  EXPECT_EQ(st.conf_state.voters_size(), 2);
  EXPECT_EQ(st.conf_state.learners(0), 3u);
  EXPECT_EQ(kv().applied_index(), 4u);
}

}  // namespace
}  // namespace muster::storage

namespace muster::storage {
namespace {

// Serializable reads and watch catch-up run on other threads while the apply
// thread writes: every read sees a whole revision (a txn's two keys always
// agree) and revisions never go backwards.
TEST(KvStoreConcurrencyTest, ReadersSeeWholeRevisionsWhileApplying) {
  testing::ScratchDir dir;
  auto m = testing::open_member(dir.path());
  std::atomic<bool> done{false};
  std::atomic<int> reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; t++) {
    readers.emplace_back([&] {
      int64_t last_rev = 0;
      while (!done) {
        pb::RangeRequest rr;
        rr.set_key("pair/");
        rr.set_range_end(prefix_end("pair/"));
        pb::RangeResponse resp;
        ASSERT_TRUE(m->kv().range(rr, &resp).is_ok());
        ASSERT_GE(resp.header().revision(), last_rev);
        last_rev = resp.header().revision();
        if (resp.kvs_size() == 2) {
          ASSERT_EQ(resp.kvs(0).value(), resp.kvs(1).value());
        }
        std::vector<pb::Event> evs;
        int64_t next = 0;
        ASSERT_TRUE(m->kv()
                        .events("pair/", prefix_end("pair/"), std::max<int64_t>(1, last_rev - 5),
                                100, true, &evs, &next)
                        .is_ok());
        reads++;
      }
    });
  }
  // Start writing once every reader runs (deadline, no fixed sleep).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (reads.load() < 3 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  const int reads_before = reads.load();
  for (uint64_t i = 1; i <= 500; i++) {
    pb::InternalRequest r;
    for (const char* k : {"pair/a", "pair/b"}) {
      auto* p = r.mutable_txn()->add_success()->mutable_request_put();
      p->set_key(k);
      p->set_value(std::to_string(i));
    }
    ASSERT_TRUE(m->kv().apply(r, i, 1).status.is_ok());
  }
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_GE(reads_before, 3);
  EXPECT_GT(reads.load(), reads_before);  // some reads overlapped the writes
  m->kv().check_consistency();
}

// ------------------------------------------------------------------ alarms

pb::InternalRequest alarm_request(pb::AlarmRequest::AlarmAction action, pb::AlarmType type,
                                  uint64_t member = 0) {
  pb::InternalRequest r;
  r.mutable_alarm()->set_action(action);
  r.mutable_alarm()->set_alarm(type);
  r.mutable_alarm()->set_memberid(member);
  return r;
}

// etcd's applierV3Corrupt: while CORRUPT is raised every write fails at
// apply (so on every member alike), reads and read-only txns pass; the
// alarm is persisted and cleared by DEACTIVATE.
TEST_F(KvStoreTest, CorruptAlarmRefusesWritesUntilDisarmedAndSurvivesReopen) {
  put("a", "1");
  const int64_t lease = grant(60);
  auto raised = apply(alarm_request(pb::AlarmRequest::ACTIVATE, pb::CORRUPT));
  ASSERT_TRUE(raised.status.is_ok()) << raised.status.to_string();
  EXPECT_EQ(raised.alarm_edge, KvStore::ApplyResult::AlarmEdge::kRaised);
  ASSERT_EQ(raised.response.alarm().alarms_size(), 1);
  EXPECT_EQ(raised.response.alarm().alarms(0).alarm(), pb::CORRUPT);
  // Raised again: the same answer, no new edge.
  auto again = apply(alarm_request(pb::AlarmRequest::ACTIVATE, pb::CORRUPT));
  EXPECT_EQ(again.response.alarm().alarms_size(), 1);
  EXPECT_EQ(again.alarm_edge, KvStore::ApplyResult::AlarmEdge::kNone);
  reopen();
  ASSERT_EQ(kv().alarms().size(), 1u);
  EXPECT_EQ(kv().alarms(pb::NOSPACE).size(), 0u);

  const int64_t rev = kv().revision();
  std::vector<pb::InternalRequest> refused(6);
  refused[0].mutable_put()->set_key("a");
  refused[1].mutable_delete_range()->set_key("a");
  refused[2].mutable_txn()->add_success()->mutable_request_put()->set_key("b");
  refused[3].mutable_compaction()->set_revision(rev);
  refused[4].mutable_lease_grant()->set_ttl(60);
  refused[5].mutable_lease_revoke()->set_id(lease);
  for (const auto& r : refused) {
    auto res = apply(r);
    EXPECT_EQ(res.status.code(), Code::kDataLoss) << r.ShortDebugString();
    EXPECT_EQ(res.status.message(), "etcdserver: corrupt cluster");
  }
  EXPECT_EQ(kv().revision(), rev);
  EXPECT_EQ(get("a").kvs(0).value(), "1");
  EXPECT_TRUE(kv().lease_exists(lease));
  pb::InternalRequest ro;
  ro.mutable_txn()->add_success()->mutable_request_range()->set_key("a");
  auto res = apply(ro);
  ASSERT_TRUE(res.status.is_ok()) << res.status.to_string();
  EXPECT_EQ(res.response.txn().responses(0).response_range().kvs(0).value(), "1");

  // Clearing an alarm nobody raised answers nothing; the right one clears.
  EXPECT_EQ(apply(alarm_request(pb::AlarmRequest::DEACTIVATE, pb::CORRUPT, 7))
                .response.alarm()
                .alarms_size(),
            0);
  auto cleared = apply(alarm_request(pb::AlarmRequest::DEACTIVATE, pb::CORRUPT));
  EXPECT_EQ(cleared.alarm_edge, KvStore::ApplyResult::AlarmEdge::kDisarmed);
  EXPECT_TRUE(kv().alarms().empty());
  EXPECT_TRUE(put("a", "2").status.is_ok());
  reopen();
  EXPECT_TRUE(kv().alarms().empty());
}

TEST_F(KvStoreTest, NospaceAlarmRefusesGrowthButNotDeletes) {
  put("a", "1");
  apply(alarm_request(pb::AlarmRequest::ACTIVATE, pb::NOSPACE, 5));
  auto p = put("b", "1");
  EXPECT_EQ(p.status.code(), Code::kResourceExhausted);
  EXPECT_EQ(p.status.message(), "etcdserver: mvcc: database space exceeded");
  pb::InternalRequest del;
  del.mutable_delete_range()->set_key("a");
  EXPECT_TRUE(apply(del).status.is_ok());
  auto listed = apply(alarm_request(pb::AlarmRequest::GET, pb::NONE));
  ASSERT_EQ(listed.response.alarm().alarms_size(), 1);
  EXPECT_EQ(listed.response.alarm().alarms(0).memberid(), 5u);
}

// HashKV: equal for equal histories at every revision, also after a
// compaction; a value altered on disk behind the store changes it.
TEST_F(KvStoreTest, HashByRevFollowsHistoryAndSeesARecordAlteredOnDisk) {
  ScratchDir other_dir;
  auto other = testing::open_member(other_dir.path(), opts_);
  uint64_t other_index = 0;
  auto both = [&](const pb::InternalRequest& r) {
    apply(r);
    other->kv().apply(r, ++other_index, 1);
  };
  for (int i = 0; i < 20; ++i) {
    pb::InternalRequest r;
    r.mutable_put()->set_key("k" + std::to_string(i % 7));
    r.mutable_put()->set_value("v" + std::to_string(i));
    both(r);
  }
  pb::InternalRequest compact;
  compact.mutable_compaction()->set_revision(10);
  both(compact);
  uint32_t h1 = 0, h2 = 0;
  int64_t cur1 = 0, cur2 = 0, c1 = 0, c2 = 0;
  for (int64_t rev : {int64_t{0}, int64_t{10}, int64_t{15}}) {
    ASSERT_TRUE(kv().hash_by_rev(rev, &h1, &cur1, &c1).is_ok());
    ASSERT_TRUE(other->kv().hash_by_rev(rev, &h2, &cur2, &c2).is_ok());
    EXPECT_EQ(h1, h2) << rev;
    EXPECT_EQ(cur1, 21);
    EXPECT_EQ(c1, 10);
  }
  ASSERT_TRUE(kv().hash_by_rev(15, &h1, &cur1, &c1).is_ok());
  ASSERT_TRUE(kv().hash_by_rev(16, &h2, &cur1, &c1).is_ok());
  EXPECT_NE(h1, h2);
  EXPECT_EQ(kv().hash_by_rev(9, &h1, &cur1, &c1).message(),
            "etcdserver: mvcc: required revision has been compacted");
  EXPECT_EQ(kv().hash_by_rev(22, &h1, &cur1, &c1).message(),
            "etcdserver: mvcc: required revision is a future revision");

  // Alter the newest record of k3 on the other store's disk.
  ASSERT_TRUE(other->kv().hash_by_rev(0, &h2, &cur2, &c2).is_ok());
  other.reset();
  {
    auto reopened = testing::open_member(other_dir.path(), opts_);
    leveldb::DB* db = reopened->db().db();
    std::unique_ptr<leveldb::Iterator> it(db->NewIterator(leveldb::ReadOptions()));
    std::string last_key;
    pb::KeyValue last;
    for (it->Seek("r"); it->Valid() && it->key()[0] == 'r'; it->Next()) {
      pb::KeyValue kv;
      ASSERT_TRUE(kv.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())));
      if (kv.key() == "k3") {
        last_key = it->key().ToString();
        last = kv;
      }
    }
    ASSERT_FALSE(last_key.empty());
    last.set_value("evil");
    ASSERT_TRUE(db->Put(leveldb::WriteOptions(), last_key, last.SerializeAsString()).ok());
  }
  auto altered = testing::open_member(other_dir.path(), opts_);
  uint32_t h3 = 0;
  ASSERT_TRUE(altered->kv().hash_by_rev(0, &h3, &cur2, &c2).is_ok());
  EXPECT_NE(h3, h2);
  ASSERT_TRUE(kv().hash_by_rev(0, &h1, &cur1, &c1).is_ok());
  EXPECT_EQ(h1, h2);
}

}  // namespace
}  // namespace muster::storage
