// The auth state as part of the replicated state machine
// (node/storage/auth_store.h, KvStore's permission checks at apply):
// etcd 3.4's rules for users, roles, root and the auth revision; writes
// checked against the state at their own log position; tokens; restarts.
#include <gtest/gtest.h>

#include "node/storage/db.h"
#include "node/storage/errors.h"
#include "test_util.h"

namespace muster::storage {
namespace {

using testing::FakeClock;
using testing::ScratchDir;

class AuthStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    opts_.kv.clock_ms = clock_.fn();
    opts_.kv.auth_token_ttl_ms = 10'000;
    member_ = testing::open_member(dir_.path(), opts_);
  }
  void reopen() {
    member_.reset();
    member_ = testing::open_member(dir_.path(), opts_);
  }
  KvStore& kv() { return member_->kv(); }
  AuthStore& auth() { return kv().auth(); }

  // Applies `r` as `user` at the current auth revision (user "" = a
  // client without credentials; nullopt = the members' own request).
  KvStore::ApplyResult apply(pb::InternalRequest r, std::optional<std::string> user = "root",
                             std::optional<uint64_t> rev = std::nullopt) {
    if (user) {
      r.mutable_auth()->set_username(*user);
      if (!user->empty()) r.mutable_auth()->set_auth_revision(rev ? *rev : auth().revision());
    }
    return kv().apply(r, ++index_, 1);
  }
  Status ok_or(const KvStore::ApplyResult& r) { return r.status; }

  Status user_add(const std::string& name, std::optional<std::string> as = "root") {
    pb::InternalRequest r;
    r.mutable_user_add()->set_name(name);
    r.mutable_user_add()->set_hashed_password("$2b$04$hash-of-" + name);
    return apply(r, as).status;
  }
  Status role_add(const std::string& name) {
    pb::InternalRequest r;
    r.mutable_role_add()->set_name(name);
    return apply(r).status;
  }
  Status grant_role(const std::string& user, const std::string& role) {
    pb::InternalRequest r;
    r.mutable_user_grant_role()->set_user(user);
    r.mutable_user_grant_role()->set_role(role);
    return apply(r).status;
  }
  Status grant(const std::string& role, pb::Permission::Type t, const std::string& key,
               const std::string& end = "") {
    pb::InternalRequest r;
    auto* g = r.mutable_role_grant_permission();
    g->set_name(role);
    g->mutable_perm()->set_permtype(t);
    g->mutable_perm()->set_key(key);
    g->mutable_perm()->set_range_end(end);
    return apply(r).status;
  }
  Status revoke(const std::string& role, const std::string& key, const std::string& end = "") {
    pb::InternalRequest r;
    auto* g = r.mutable_role_revoke_permission();
    g->set_role(role);
    g->set_key(key);
    g->set_range_end(end);
    return apply(r).status;
  }
  Status enable() {
    pb::InternalRequest r;
    r.mutable_auth_enable();
    return apply(r).status;
  }
  Status put_as(const std::string& user, const std::string& key, int64_t lease = 0) {
    pb::InternalRequest r;
    r.mutable_put()->set_key(key);
    r.mutable_put()->set_value("v");
    r.mutable_put()->set_lease(lease);
    return apply(r, user).status;
  }
  // root (root role) and alice (role "r" with readwrite on prefix /a/).
  void standard_setup() {
    ASSERT_TRUE(user_add("root").is_ok());
    ASSERT_TRUE(grant_role("root", "root").is_ok());
    ASSERT_TRUE(user_add("alice").is_ok());
    ASSERT_TRUE(role_add("r").is_ok());
    ASSERT_TRUE(grant("r", pb::Permission::READWRITE, "/a/", "/a0").is_ok());
    ASSERT_TRUE(grant_role("alice", "r").is_ok());
    ASSERT_TRUE(enable().is_ok());
  }

  ScratchDir dir_;
  FakeClock clock_;
  MemberStorage::Options opts_;
  std::unique_ptr<MemberStorage> member_;
  uint64_t index_ = 0;
};

TEST_F(AuthStoreTest, EnableNeedsARootUserWithTheRootRole) {
  Status s = enable();
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_EQ(s.message(), errors::kRootUserNotExist);
  ASSERT_TRUE(user_add("root").is_ok());
  s = enable();
  EXPECT_EQ(s.message(), errors::kRootRoleNotExist);
  // The root role need not exist as a role to be granted (etcd).
  ASSERT_TRUE(grant_role("root", "root").is_ok());
  EXPECT_TRUE(enable().is_ok());
  EXPECT_TRUE(auth().enabled());
  EXPECT_TRUE(enable().is_ok());  // already on: no-op
}

TEST_F(AuthStoreTest, EveryChangeBumpsTheRevisionAndFailuresChangeNothing) {
  const uint64_t r0 = auth().revision();
  EXPECT_EQ(r0, 1u);
  ASSERT_TRUE(user_add("u").is_ok());
  EXPECT_EQ(auth().revision(), r0 + 1);
  EXPECT_EQ(user_add("u").message(), errors::kUserAlreadyExist);
  EXPECT_EQ(user_add("").code(), Code::kInvalidArgument);
  EXPECT_EQ(grant("nope", pb::Permission::READ, "k").message(), errors::kRoleNotFound);
  EXPECT_EQ(auth().revision(), r0 + 1);
  ASSERT_TRUE(role_add("r").is_ok());
  // A permission whose range_end is at or before its key is refused.
  const uint64_t before = auth().revision();
  Status s = grant("r", pb::Permission::READ, "b", "a");
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("range end"), std::string::npos) << s.message();
  EXPECT_EQ(auth().revision(), before);
  EXPECT_EQ(auth().view()->roles.at("r").keypermission_size(), 0);
  EXPECT_EQ(revoke("r", "b", "a").message(), errors::kPermissionNotGranted);
  EXPECT_EQ(auth().revision(), before);
}

TEST_F(AuthStoreTest, GrantingTheSameRangeAgainReplacesItsType) {
  ASSERT_TRUE(role_add("r").is_ok());
  ASSERT_TRUE(grant("r", pb::Permission::READ, "k").is_ok());
  ASSERT_TRUE(grant("r", pb::Permission::WRITE, "k").is_ok());
  ASSERT_TRUE(grant("r", pb::Permission::READ, "a", "b").is_ok());
  const auto& perms = auth().view()->roles.at("r").keypermission();
  ASSERT_EQ(perms.size(), 2);
  EXPECT_EQ(perms[0].key(), "a");  // sorted by key, as etcd keeps them
  EXPECT_EQ(perms[1].permtype(), pb::Permission::WRITE);
}

TEST_F(AuthStoreTest, RootCannotBeRemovedWhileAuthIsOn) {
  standard_setup();
  pb::InternalRequest del;
  del.mutable_user_delete()->set_name("root");
  EXPECT_EQ(apply(del).status.message(), errors::kInvalidAuthMgmt);
  pb::InternalRequest rr;
  rr.mutable_user_revoke_role()->set_name("root");
  rr.mutable_user_revoke_role()->set_role("root");
  EXPECT_EQ(apply(rr).status.message(), errors::kInvalidAuthMgmt);
  pb::InternalRequest rd;
  rd.mutable_role_delete()->set_role("root");
  EXPECT_EQ(apply(rd).status.message(), errors::kInvalidAuthMgmt);
}

TEST_F(AuthStoreTest, ManagementIsRootsOnceAuthIsOn) {
  standard_setup();
  Status s = user_add("bob", "alice");
  EXPECT_EQ(s.code(), Code::kPermissionDenied);
  s = user_add("bob", "");
  EXPECT_EQ(s.message(), errors::kUserEmpty);
  s = user_add("bob", "mallory");
  EXPECT_EQ(s.message(), errors::kUserNotFound);
  EXPECT_FALSE(auth().view()->users.count("bob"));
  EXPECT_TRUE(user_add("bob", "root").is_ok());
}

TEST_F(AuthStoreTest, WritesAreCheckedAtApplyAgainstTheirOwnLogPosition) {
  standard_setup();
  EXPECT_TRUE(put_as("alice", "/a/1").is_ok());
  EXPECT_EQ(put_as("alice", "/b/1").code(), Code::kPermissionDenied);
  EXPECT_EQ(put_as("", "/a/1").message(), errors::kUserEmpty);
  EXPECT_TRUE(put_as("root", "/b/1").is_ok());
  // The members' own requests carry no caller and are not checked.
  pb::InternalRequest internal;
  internal.mutable_put()->set_key("/z");
  EXPECT_TRUE(apply(internal, std::nullopt).status.is_ok());

  // A put proposed before the revoke (older auth revision) but applied
  // after it is refused as old, not let through.
  const uint64_t proposed_at = auth().revision();
  ASSERT_TRUE(revoke("r", "/a/", "/a0").is_ok());
  pb::InternalRequest late;
  late.mutable_put()->set_key("/a/2");
  Status s = apply(late, "alice", proposed_at).status;
  EXPECT_EQ(s.message(), errors::kAuthOldRevision);
  EXPECT_EQ(put_as("alice", "/a/2").code(), Code::kPermissionDenied);
  pb::RangeRequest get;
  get.set_key("/a/2");
  pb::RangeResponse out;
  ASSERT_TRUE(kv().range(get, &out).is_ok());
  EXPECT_EQ(out.kvs_size(), 0);
}

TEST_F(AuthStoreTest, TxnNeedsPermissionForEveryCompareAndEveryOpOfBothBranches) {
  standard_setup();
  auto txn = [&](const std::string& cmp_key, const std::string& failure_put) {
    pb::InternalRequest r;
    auto* t = r.mutable_txn();
    auto* c = t->add_compare();
    c->set_key(cmp_key);
    c->set_target(pb::Compare::VERSION);
    c->set_result(pb::Compare::EQUAL);
    t->add_success()->mutable_request_put()->set_key("/a/x");
    t->add_failure()->mutable_request_put()->set_key(failure_put);
    return apply(r, "alice").status;
  };
  EXPECT_TRUE(txn("/a/c", "/a/y").is_ok());
  EXPECT_EQ(txn("/b/c", "/a/y").code(), Code::kPermissionDenied);  // compare outside
  EXPECT_EQ(txn("/a/c", "/b/y").code(), Code::kPermissionDenied);  // unused branch outside
}

TEST_F(AuthStoreTest, LeaseRevokeNeedsWriteOnEveryAttachedKey) {
  standard_setup();
  pb::InternalRequest g;
  g.mutable_lease_grant()->set_id(7);
  g.mutable_lease_grant()->set_ttl(100);
  ASSERT_TRUE(apply(g, "alice").status.is_ok());
  ASSERT_TRUE(put_as("alice", "/a/l", 7).is_ok());
  ASSERT_TRUE(put_as("root", "/b/l", 7).is_ok());
  // Attaching another key to a lease that holds keys alice may not write:
  EXPECT_EQ(put_as("alice", "/a/m", 7).code(), Code::kPermissionDenied);
  pb::InternalRequest rv;
  rv.mutable_lease_revoke()->set_id(7);
  EXPECT_EQ(apply(rv, "alice").status.code(), Code::kPermissionDenied);
  EXPECT_TRUE(kv().lease_exists(7));
  EXPECT_TRUE(apply(rv, "root").status.is_ok());
}

TEST_F(AuthStoreTest, DeletingARoleTakesItFromItsUsers) {
  standard_setup();
  pb::InternalRequest rd;
  rd.mutable_role_delete()->set_role("r");
  ASSERT_TRUE(apply(rd).status.is_ok());
  EXPECT_EQ(auth().view()->users.at("alice").roles_size(), 0);
  EXPECT_EQ(put_as("alice", "/a/1").code(), Code::kPermissionDenied);
}

TEST_F(AuthStoreTest, TokensAreIssuedAtApplyAndDieWithPasswordChangeDisableAndTime) {
  standard_setup();
  auto authenticate = [&](const std::string& user, uint64_t checked) {
    pb::InternalRequest r;
    r.mutable_authenticate()->set_name(user);
    r.mutable_authenticate()->set_simple_token("abcdefghijklmnop");
    r.mutable_authenticate()->set_checked_revision(checked);
    return apply(r, std::nullopt);
  };
  auto res = authenticate("alice", auth().revision());
  ASSERT_TRUE(res.status.is_ok()) << res.status.to_string();
  const std::string token = res.response.authenticate().token();
  EXPECT_EQ(token, "abcdefghijklmnop." + std::to_string(index_));
  EXPECT_EQ(auth().token_user(token), "alice");
  EXPECT_FALSE(auth().token_user("abcdefghijklmnop.1").has_value());
  // Checked against an older state: refused.
  EXPECT_EQ(authenticate("alice", auth().revision() - 1).status.message(),
            errors::kAuthOldRevision);
  EXPECT_EQ(authenticate("nobody", auth().revision()).status.message(), errors::kAuthFailed);

  // Idle longer than the TTL: gone.  Used within it: kept alive.
  clock_.now_ms += 9'000;
  EXPECT_TRUE(auth().token_user(token).has_value());
  clock_.now_ms += 9'000;
  EXPECT_TRUE(auth().token_user(token).has_value());
  clock_.now_ms += 10'001;
  EXPECT_FALSE(auth().token_user(token).has_value());

  const std::string t2 = authenticate("alice", auth().revision()).response.authenticate().token();
  const std::string t_root =
      authenticate("root", auth().revision()).response.authenticate().token();
  pb::InternalRequest cp;
  cp.mutable_user_change_password()->set_name("alice");
  cp.mutable_user_change_password()->set_hashed_password("$2b$04$new");
  ASSERT_TRUE(apply(cp).status.is_ok());
  EXPECT_FALSE(auth().token_user(t2).has_value());
  EXPECT_TRUE(auth().token_user(t_root).has_value());

  pb::InternalRequest off;
  off.mutable_auth_disable();
  ASSERT_TRUE(apply(off).status.is_ok());
  EXPECT_FALSE(auth().token_user(t_root).has_value());
  EXPECT_EQ(authenticate("root", auth().revision()).status.message(), errors::kAuthNotEnabled);
}

TEST_F(AuthStoreTest, StateSurvivesARestartAndTravelsInSnapshots) {
  standard_setup();
  const uint64_t rev = auth().revision();
  reopen();
  auto v = auth().view();
  EXPECT_TRUE(v->enabled);
  EXPECT_EQ(v->revision, rev);
  EXPECT_EQ(v->users.at("alice").password(), "$2b$04$hash-of-alice");
  EXPECT_TRUE(v->is_root("root"));
  EXPECT_EQ(put_as("alice", "/b/1").code(), Code::kPermissionDenied);
  EXPECT_TRUE(put_as("alice", "/a/1").is_ok());
  EXPECT_TRUE(keys::is_state_machine_key(keys::kAuth));
  EXPECT_TRUE(keys::is_state_machine_key("Ualice"));
  EXPECT_TRUE(keys::is_state_machine_key("Rr"));
}

TEST_F(AuthStoreTest, NothingIsCheckedWhileAuthIsOff) {
  ASSERT_TRUE(user_add("u", "").is_ok());  // no credentials needed
  EXPECT_TRUE(put_as("", "/any").is_ok());
  EXPECT_TRUE(put_as("stranger", "/any").is_ok());
}

}  // namespace
}  // namespace muster::storage
