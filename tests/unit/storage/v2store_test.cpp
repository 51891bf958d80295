// The v2 keys model on MVCC: etcd v2 actions, error codes, TTLs, waiting.
#include "node/storage/v2store.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace muster::storage {
namespace {

using testing::FakeClock;
using testing::ScratchDir;

class V2Test : public ::testing::Test {
 protected:
  void SetUp() override {
    opts_.kv.clock_ms = clock_.fn();
    member_ = testing::open_member(dir_.path(), opts_);
  }
  pb::V2Event run(pb::V2Request r) {
    pb::InternalRequest req;
    *req.mutable_v2() = std::move(r);
    auto res = member_->kv().apply(req, ++index_, 1);
    EXPECT_TRUE(res.status.is_ok()) << res.status.to_string();
    return res.response.v2();
  }
  pb::V2Event put(const std::string& path, const std::string& value) {
    pb::V2Request r;
    r.set_method("PUT");
    r.set_path(path);
    r.set_value(value);
    return run(r);
  }
  pb::V2Event get(const std::string& path, bool recursive = false) {
    return V2Store::get(member_->kv(), path, recursive);
  }

  ScratchDir dir_;
  FakeClock clock_;
  MemberStorage::Options opts_;
  std::unique_ptr<MemberStorage> member_;
  uint64_t index_ = 0;
};

TEST_F(V2Test, SetGetAndIndexesAreRevisions) {
  auto e = put("/message", "Hello world");
  EXPECT_EQ(e.action(), "set");
  EXPECT_TRUE(e.created());
  EXPECT_EQ(e.node().key(), "/message");
  EXPECT_EQ(e.node().value(), "Hello world");
  EXPECT_EQ(e.node().createdindex(), 2u);
  EXPECT_EQ(e.node().modifiedindex(), 2u);
  EXPECT_EQ(e.etcd_index(), 2u);
  auto again = put("message", "bye");
  EXPECT_FALSE(again.created());
  EXPECT_EQ(again.prevnode().value(), "Hello world");
  // `set` replaces the node: a fresh createdIndex, as in etcd.
  EXPECT_EQ(again.node().createdindex(), 3u);
  auto g = get("/message");
  EXPECT_EQ(g.action(), "get");
  EXPECT_EQ(g.node().value(), "bye");
  EXPECT_EQ(get("/nothing").error().errorcode(), 100);
}

TEST_F(V2Test, CreateUpdateCompareAndSwapErrors) {
  pb::V2Request c;
  c.set_method("PUT");
  c.set_path("/token/abc");
  c.set_value("node1=http://a:2380");
  c.set_prev_exist(false);
  auto e = run(c);
  EXPECT_EQ(e.action(), "create");
  auto dup = run(c);
  EXPECT_EQ(dup.error().errorcode(), 105);
  EXPECT_EQ(dup.error().message(), "Key already exists");
  EXPECT_EQ(dup.error().cause(), "/token/abc");
  EXPECT_EQ(v2_error_status(105), 412);
  // The parent directory was created implicitly.
  auto dir = get("/token");
  EXPECT_TRUE(dir.node().dir());
  ASSERT_EQ(dir.node().nodes_size(), 1);

  pb::V2Request u;
  u.set_method("PUT");
  u.set_path("/token/missing");
  u.set_prev_exist(true);
  EXPECT_EQ(run(u).error().errorcode(), 100);
  u.set_path("/token/abc");
  u.set_value("v2");
  auto up = run(u);
  EXPECT_EQ(up.action(), "update");
  EXPECT_EQ(up.node().createdindex(), e.node().createdindex());

  pb::V2Request cas;
  cas.set_method("PUT");
  cas.set_path("/token/abc");
  cas.set_prev_value("wrong");
  cas.set_value("v3");
  auto f = run(cas);
  EXPECT_EQ(f.error().errorcode(), 101);
  EXPECT_EQ(f.error().cause(), "[wrong != v2]");
  cas.set_prev_value("v2");
  cas.set_prev_index(up.node().modifiedindex());
  EXPECT_EQ(run(cas).action(), "compareAndSwap");
  EXPECT_EQ(put("/token", "x").error().errorcode(), 102);          // a dir is not a file
  EXPECT_EQ(put("/token/abc/sub", "x").error().errorcode(), 104);  // a file is not a dir
  EXPECT_EQ(put("/", "x").error().errorcode(), 107);
}

TEST_F(V2Test, InOrderKeysHiddenKeysAndRecursiveDelete) {
  put("/q/_config/size", "3");
  pb::V2Request post;
  post.set_method("POST");
  post.set_path("/q");
  post.set_value("job1");
  auto a = run(post);
  EXPECT_EQ(a.action(), "create");
  ASSERT_EQ(a.node().key().size(), std::string("/q/").size() + 20);
  EXPECT_EQ(a.node().key(),
            "/q/" + std::string(20 - std::to_string(a.node().createdindex()).size(), '0') +
                std::to_string(a.node().createdindex()));
  post.set_value("job2");
  auto b = run(post);
  EXPECT_LT(a.node().key(), b.node().key());
  auto list = get("/q");
  ASSERT_EQ(list.node().nodes_size(), 2);  // _config hidden
  EXPECT_EQ(list.node().nodes(0).value(), "job1");
  EXPECT_EQ(get("/q/_config/size").node().value(), "3");  // direct reads work
  auto rec = get("/", true);
  ASSERT_EQ(rec.node().nodes_size(), 1);
  EXPECT_EQ(rec.node().nodes(0).nodes_size(), 2);

  pb::V2Request del;
  del.set_method("DELETE");
  del.set_path("/q");
  EXPECT_EQ(run(del).error().errorcode(), 102);
  del.set_dir(true);
  EXPECT_EQ(run(del).error().errorcode(), 108);
  del.set_recursive(true);
  auto d = run(del);
  EXPECT_EQ(d.action(), "delete");
  EXPECT_TRUE(d.node().dir());
  EXPECT_EQ(get("/q/_config/size").error().errorcode(), 100);
  EXPECT_EQ(member_->kv().key_count(), 0u);
}

TEST_F(V2Test, CompareAndDelete) {
  put("/k", "v");
  pb::V2Request del;
  del.set_method("DELETE");
  del.set_path("/k");
  del.set_prev_value("nope");
  EXPECT_EQ(run(del).error().errorcode(), 101);
  del.set_prev_value("v");
  auto d = run(del);
  EXPECT_EQ(d.action(), "compareAndDelete");
  EXPECT_EQ(d.prevnode().value(), "v");
}

TEST_F(V2Test, TtlIsALeaseRevokedByTheLeader) {
  pb::V2Request r;
  r.set_method("PUT");
  r.set_path("/dir/tmp");
  r.set_value("x");
  r.set_ttl(5);
  auto e = run(r);
  EXPECT_EQ(e.node().ttl(), 5);
  ASSERT_NE(e.node().lease(), 0);
  clock_.now_ms += 2'000;
  EXPECT_EQ(get("/dir/tmp").node().ttl(), 3);
  auto due = member_->kv().expired_leases(clock_.now_ms + 3'000);
  ASSERT_EQ(due.size(), 1u);
  pb::InternalRequest revoke;
  revoke.mutable_lease_revoke()->set_id(due[0]);
  ASSERT_TRUE(member_->kv().apply(revoke, ++index_, 1).status.is_ok());
  EXPECT_EQ(get("/dir/tmp").error().errorcode(), 100);
  // Update without a TTL makes a node permanent and drops its lease.
  r.set_path("/p");
  auto p = run(r);
  pb::V2Request u;
  u.set_method("PUT");
  u.set_path("/p");
  u.set_value("y");
  u.set_prev_exist(true);
  auto up = run(u);
  EXPECT_EQ(up.node().ttl(), 0);
  EXPECT_FALSE(member_->kv().lease_exists(p.node().lease()));
  // A directory with a TTL takes its children with it.
  pb::V2Request d;
  d.set_method("PUT");
  d.set_path("/tdir");
  d.set_dir(true);
  d.set_ttl(1);
  auto de = run(d);
  put("/tdir/a/b", "1");
  revoke.mutable_lease_revoke()->set_id(de.node().lease());
  ASSERT_TRUE(member_->kv().apply(revoke, ++index_, 1).status.is_ok());
  EXPECT_EQ(get("/tdir/a/b").error().errorcode(), 100);
  EXPECT_EQ(get("/tdir/a").error().errorcode(), 100);
}

// Found side by side with etcd 3.4: the previous node of a set, update,
// compareAndSwap or delete carries the TTL it had (muster dropped the lease
// first and answered without one), and `ttl=0` is a node that expires at
// once (muster made it permanent).
TEST_F(V2Test, PrevNodeKeepsItsTtlAndTtlZeroExpiresAtOnce) {
  auto with_ttl = [&](const std::string& path, int64_t ttl) {
    pb::V2Request r;
    r.set_method("PUT");
    r.set_path(path);
    r.set_value("v");
    r.set_ttl(ttl);
    return run(r);
  };
  with_ttl("/s", 30);
  auto s = put("/s", "w");
  EXPECT_EQ(s.prevnode().ttl(), 30);
  EXPECT_NE(s.prevnode().lease(), 0);
  EXPECT_EQ(s.node().lease(), 0);

  with_ttl("/u", 40);
  pb::V2Request u;
  u.set_method("PUT");
  u.set_path("/u");
  u.set_value("w");
  u.set_prev_exist(true);
  EXPECT_EQ(run(u).prevnode().ttl(), 40);

  with_ttl("/c", 50);
  pb::V2Request c;
  c.set_method("PUT");
  c.set_path("/c");
  c.set_value("w");
  c.set_prev_value("v");
  auto ce = run(c);
  EXPECT_EQ(ce.action(), "compareAndSwap");
  EXPECT_EQ(ce.prevnode().ttl(), 50);

  with_ttl("/d", 60);
  pb::V2Request d;
  d.set_method("DELETE");
  d.set_path("/d");
  EXPECT_EQ(run(d).prevnode().ttl(), 60);

  auto z = with_ttl("/z", 0);
  ASSERT_NE(z.node().lease(), 0) << "a TTL of 0 is a TTL";
  EXPECT_EQ(z.node().ttl(), 0);
  auto due = member_->kv().expired_leases(clock_.now_ms);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0], z.node().lease());
  // Without a TTL (an empty `ttl=`), a node is permanent.
  EXPECT_EQ(put("/p", "v").node().lease(), 0);
}

TEST_F(V2Test, WaitFromIndexSeesActionsAndSkipsHiddenKeys) {
  auto c = put("/t/_config/size", "3");
  pb::V2Request reg;
  reg.set_method("PUT");
  reg.set_path("/t/8e9e05c52164694d");
  reg.set_value("infra1=http://a:2380");
  reg.set_prev_exist(false);
  auto r = run(reg);
  pb::V2Event ev;
  uint64_t next = 0;
  // A recursive wait from before both changes skips the hidden _config.
  ASSERT_TRUE(V2Store::wait(member_->kv(), "/t", true, c.node().modifiedindex(), &ev, &next));
  EXPECT_EQ(ev.action(), "create");
  EXPECT_EQ(ev.node().key(), "/t/8e9e05c52164694d");
  EXPECT_EQ(ev.node().createdindex(), r.node().createdindex());
  // Nothing after the last change yet: the caller waits from next.
  EXPECT_FALSE(V2Store::wait(member_->kv(), "/t", true, r.node().modifiedindex() + 1, &ev, &next));
  EXPECT_EQ(next, r.node().modifiedindex() + 1);
  pb::V2Request del;
  del.set_method("DELETE");
  del.set_path("/t/8e9e05c52164694d");
  run(del);
  ASSERT_TRUE(V2Store::wait(member_->kv(), "/t/8e9e05c52164694d", false, next, &ev, &next));
  EXPECT_EQ(ev.action(), "delete");
  EXPECT_EQ(ev.prevnode().value(), "infra1=http://a:2380");
  // A set replacing a value reports "set" with the previous node.
  put("/k", "1");
  auto s2 = put("/k", "2");
  ASSERT_TRUE(V2Store::wait(member_->kv(), "/k", false, s2.node().modifiedindex(), &ev, &next));
  EXPECT_EQ(ev.action(), "set");
  EXPECT_EQ(ev.prevnode().value(), "1");
  // Below the compacted revision: error 401.
  pb::InternalRequest compact;
  compact.mutable_compaction()->set_revision(s2.node().modifiedindex());
  ASSERT_TRUE(member_->kv().apply(compact, ++index_, 1).status.is_ok());
  ASSERT_TRUE(V2Store::wait(member_->kv(), "/k", false, 1, &ev, &next));
  EXPECT_EQ(ev.error().errorcode(), 401);
}

TEST_F(V2Test, WaitInsideADeletedDirectorySeesTheDirectorysDelete) {
  auto a = put("/top/mid/leaf", "x");
  put("/other", "y");
  pb::V2Request del;
  del.set_method("DELETE");
  del.set_path("/top");
  del.set_recursive(true);
  auto d = run(del);
  ASSERT_EQ(d.action(), "delete");
  pb::V2Event ev;
  uint64_t next = 0;
  // Non-recursive and recursive waits on a key inside: the event is /top's.
  for (bool recursive : {false, true}) {
    for (const char* p : {"/top/mid/leaf", "/top/mid"}) {
      ASSERT_TRUE(
          V2Store::wait(member_->kv(), p, recursive, a.node().modifiedindex() + 1, &ev, &next))
          << p;
      EXPECT_EQ(ev.action(), "delete");
      EXPECT_EQ(ev.node().key(), "/top") << p;
      EXPECT_TRUE(ev.node().dir());
      EXPECT_EQ(ev.node().modifiedindex(), d.node().modifiedindex());
      EXPECT_EQ(ev.prevnode().key(), "/top");
    }
  }
  // Deleting a file does not report an unrelated ancestor.
  put("/p/q", "1");
  auto q = put("/p/q", "2");
  pb::V2Request dq;
  dq.set_method("DELETE");
  dq.set_path("/p/q");
  run(dq);
  ASSERT_TRUE(
      V2Store::wait(member_->kv(), "/p/q", false, q.node().modifiedindex() + 1, &ev, &next));
  EXPECT_EQ(ev.node().key(), "/p/q");
}

TEST_F(V2Test, MissingNodesNameTheFirstMissingComponentOrTheFileInTheWay) {
  put("/a/file", "x");
  // Reads: the first missing component is the cause, as etcd's walk says.
  auto g = get("/nope/b/c");
  EXPECT_EQ(g.error().errorcode(), 100);
  EXPECT_EQ(g.error().cause(), "/nope");
  g = get("/a/missing/c");
  EXPECT_EQ(g.error().cause(), "/a/missing");
  // A file on the way: 104 Not a directory, naming the file.
  g = get("/a/file/c");
  EXPECT_EQ(g.error().errorcode(), 104);
  EXPECT_EQ(g.error().cause(), "/a/file");
  // Writes that need the node report it the same way.
  pb::V2Request u;
  u.set_method("PUT");
  u.set_path("/nope/b");
  u.set_prev_exist(true);
  auto e = run(u);
  EXPECT_EQ(e.error().errorcode(), 100);
  EXPECT_EQ(e.error().cause(), "/nope");
  pb::V2Request d;
  d.set_method("DELETE");
  d.set_path("/a/file/x");
  e = run(d);
  EXPECT_EQ(e.error().errorcode(), 104);
  EXPECT_EQ(e.error().cause(), "/a/file");
  d.set_path("/a/gone");
  EXPECT_EQ(run(d).error().cause(), "/a/gone");
}

TEST_F(V2Test, TtlBeyondTheLongestLeaseIsRefusedNotFatal) {
  pb::V2Request r;
  r.set_method("PUT");
  r.set_path("/k");
  r.set_value("v");
  r.set_ttl(kMaxLeaseTTL + 1);
  auto e = run(r);
  EXPECT_EQ(e.error().errorcode(), 202);
  EXPECT_EQ(get("/k").error().errorcode(), 100);
  r.set_ttl(kMaxLeaseTTL);
  EXPECT_EQ(run(r).error().errorcode(), 0);
}

TEST(V2ErrorTest, StatusesAndMessagesAsEtcd) {
  EXPECT_EQ(v2_error_status(100), 404);
  EXPECT_EQ(v2_error_status(101), 412);
  EXPECT_EQ(v2_error_status(102), 403);
  EXPECT_EQ(v2_error_status(104), 400);
  EXPECT_EQ(v2_error_status(108), 403);
  EXPECT_EQ(v2_error_status(110), 401);
  EXPECT_EQ(v2_error_status(300), 500);
  EXPECT_EQ(v2_error_status(301), 500);
  EXPECT_EQ(v2_error_status(401), 400);
  EXPECT_STREQ(v2_error_message(210), "Invalid POST form");
  EXPECT_STREQ(v2_error_message(300), "Raft Internal Error");
  EXPECT_STREQ(v2_error_message(301), "During Leader Election");
}

TEST(V2PathTest, CleanPathLikeGo) {
  EXPECT_EQ(V2Store::clean_path(""), "/");
  EXPECT_EQ(V2Store::clean_path("a//b/"), "/a/b");
  EXPECT_EQ(V2Store::clean_path("/a/./b/../c"), "/a/c");
  EXPECT_EQ(V2Store::clean_path("/../x"), "/x");
}

}  // namespace
}  // namespace muster::storage
