// The auth checks of the v3 service (node/server/v3_service.h) as a gRPC
// client meets them: who the caller is (metadata token, client
// certificate CN with --client-cert-auth), what each request needs, the
// watch refusal, Authenticate's slow-down.  Driven through FakeCall over
// LocalMember (a real store, no Raft), as v3_grpc_test.cpp.
#include <gtest/gtest.h>

#include "node/server/v3_grpc.h"
#include "node/server/v3_service.h"
#include "tests/unit/server/fake_call.h"
#include "tests/unit/server/local_member.h"
#include "tests/unit/server/test_util.h"

namespace muster::server::testing {
namespace {

using GCode = net::grpc::Code;

class V3AuthTest : public ::testing::Test {
 protected:
  explicit V3AuthTest(bool client_cert_auth = false)
      : member_(dir_.path()),
        service_(member_, options(client_cert_auth), registry_),
        grpc_(service_, registry_, V3Grpc::Options{64 * 1024}) {}
  ~V3AuthTest() override { member_.drop_swallowed(); }

  static V3Service::Options options(bool client_cert_auth) {
    V3Service::Options o;
    o.request_timeout = 2000ms;
    o.bcrypt_cost = 4;  // fast tests
    o.client_cert_auth = client_cert_auth;
    return o;
  }

  struct As {
    std::string token;
    std::string cn;
  };
  std::shared_ptr<FakeCall> open(const std::string& method, const As& as) {
    net::grpc::Metadata md;
    if (!as.token.empty()) md.add("token", as.token);
    auto c = std::make_shared<FakeCall>(method, std::move(md));
    c->set_common_name(as.cn);
    grpc_.handle(c);
    return c;
  }
  template <class Resp>
  Resp call(const std::string& method, const google::protobuf::Message& req, const As& as = {},
            net::grpc::Status* st = nullptr) {
    auto c = open(method, as);
    c->deliver(req);
    c->half_close();
    EXPECT_TRUE(c->wait_finished()) << method;
    if (st) *st = c->status();
    if (!c->status().ok()) {
      if (!st) ADD_FAILURE() << method << ": " << c->status().message;
      return Resp();
    }
    return c->sent<Resp>(0);
  }
  net::grpc::Status status_of(const std::string& method, const google::protobuf::Message& req,
                              const As& as = {}) {
    auto c = open(method, as);
    c->deliver(req);
    c->half_close();
    EXPECT_TRUE(c->wait_finished()) << method;
    return c->status();
  }

  void user_add(const std::string& name, const std::string& pw, const As& as = {}) {
    pb::AuthUserAddRequest r;
    r.set_name(name);
    r.set_password(pw);
    call<pb::AuthUserAddResponse>("/etcdserverpb.Auth/UserAdd", r, as);
  }
  std::string token(const std::string& name, const std::string& pw) {
    pb::AuthenticateRequest r;
    r.set_name(name);
    r.set_password(pw);
    return call<pb::AuthenticateResponse>("/etcdserverpb.Auth/Authenticate", r).token();
  }
  // root (root role) and alice with readwrite on /a/ ... /a0.
  void standard_setup() {
    user_add("root", "rootpw");
    pb::AuthUserGrantRoleRequest g;
    g.set_user("root");
    g.set_role("root");
    call<pb::AuthUserGrantRoleResponse>("/etcdserverpb.Auth/UserGrantRole", g);
    user_add("alice", "alicepw");
    pb::AuthRoleAddRequest ra;
    ra.set_name("r");
    call<pb::AuthRoleAddResponse>("/etcdserverpb.Auth/RoleAdd", ra);
    pb::AuthRoleGrantPermissionRequest p;
    p.set_name("r");
    p.mutable_perm()->set_permtype(pb::Permission::READWRITE);
    p.mutable_perm()->set_key("/a/");
    p.mutable_perm()->set_range_end("/a0");
    call<pb::AuthRoleGrantPermissionResponse>("/etcdserverpb.Auth/RoleGrantPermission", p);
    g.set_user("alice");
    g.set_role("r");
    call<pb::AuthUserGrantRoleResponse>("/etcdserverpb.Auth/UserGrantRole", g);
    call<pb::AuthEnableResponse>("/etcdserverpb.Auth/AuthEnable", pb::AuthEnableRequest());
    root_ = {token("root", "rootpw"), ""};
    alice_ = {token("alice", "alicepw"), ""};
  }
  pb::PutRequest put_req(const std::string& k) {
    pb::PutRequest p;
    p.set_key(k);
    p.set_value("v");
    return p;
  }

  ScratchDir dir_;
  LocalMember member_;
  metrics::Registry registry_;
  V3Service service_;
  V3Grpc grpc_;
  As root_, alice_;
};

TEST_F(V3AuthTest, PasswordsAreStoredAsBcryptHashesOnly) {
  user_add("bob", "bobpw");
  const auto& u = member_.kv().auth().view()->users.at("bob");
  EXPECT_EQ(u.password().rfind("$2b$04$", 0), 0u);
  EXPECT_EQ(u.password().find("bobpw"), std::string::npos);
}

TEST_F(V3AuthTest, TokensFromMetadataNameTheUser) {
  standard_setup();
  EXPECT_EQ(status_of("/etcdserverpb.KV/Put", put_req("/a/1"), alice_).code, GCode::kOk);
  auto s = status_of("/etcdserverpb.KV/Put", put_req("/b/1"), alice_);
  EXPECT_EQ(s.code, GCode::kPermissionDenied);
  EXPECT_EQ(s.message, "etcdserver: permission denied");
  s = status_of("/etcdserverpb.KV/Put", put_req("/a/1"), {"bogus.1", ""});
  EXPECT_EQ(s.code, GCode::kUnauthenticated);
  EXPECT_EQ(s.message, "etcdserver: invalid auth token");
  s = status_of("/etcdserverpb.KV/Put", put_req("/a/1"));
  EXPECT_EQ(s.code, GCode::kInvalidArgument);
  EXPECT_EQ(s.message, "etcdserver: user name is empty");
  pb::RangeRequest get;
  get.set_key("/a/");
  get.set_range_end("/a0");
  EXPECT_EQ(call<pb::RangeResponse>("/etcdserverpb.KV/Range", get, alice_).kvs_size(), 1);
  get.set_range_end("/b");
  EXPECT_EQ(status_of("/etcdserverpb.KV/Range", get, alice_).code, GCode::kPermissionDenied);
}

TEST_F(V3AuthTest, ACertificateNameIsIgnoredWithoutClientCertAuth) {
  standard_setup();
  auto s = status_of("/etcdserverpb.KV/Put", put_req("/a/1"), {"", "alice"});
  EXPECT_EQ(s.message, "etcdserver: user name is empty");
}

class V3AuthCertTest : public V3AuthTest {
 protected:
  V3AuthCertTest() : V3AuthTest(true) {}
};

TEST_F(V3AuthCertTest, TheCertificateNameIsTheUserWhenNoTokenIsGiven) {
  standard_setup();
  EXPECT_EQ(status_of("/etcdserverpb.KV/Put", put_req("/a/1"), {"", "alice"}).code, GCode::kOk);
  EXPECT_EQ(status_of("/etcdserverpb.KV/Put", put_req("/b/1"), {"", "alice"}).code,
            GCode::kPermissionDenied);
  EXPECT_EQ(status_of("/etcdserverpb.KV/Put", put_req("/b/1"), {"", "root"}).code, GCode::kOk);
  // A token wins over the certificate.
  EXPECT_EQ(status_of("/etcdserverpb.KV/Put", put_req("/b/2"), {alice_.token, "root"}).code,
            GCode::kPermissionDenied);
  // A CN that is no user: denied, not let through.
  EXPECT_EQ(status_of("/etcdserverpb.KV/Put", put_req("/a/1"), {"", "mallory"}).code,
            GCode::kPermissionDenied);
}

TEST_F(V3AuthTest, AWatchOutsideThePermissionsIsCreatedCanceled) {
  standard_setup();
  auto c = open("/etcdserverpb.Watch/Watch", alice_);
  pb::WatchRequest w;
  w.mutable_create_request()->set_key("/b/");
  w.mutable_create_request()->set_range_end("/b0");
  c->deliver(w);
  ASSERT_TRUE(c->wait_sent(1));
  auto r = c->sent<pb::WatchResponse>(0);
  EXPECT_TRUE(r.created());
  EXPECT_TRUE(r.canceled());
  EXPECT_EQ(r.watch_id(), -1);
  EXPECT_EQ(r.cancel_reason(), "etcdserver: permission denied");
  // Inside them: a normal watcher that sees the change.
  w.mutable_create_request()->set_key("/a/");
  w.mutable_create_request()->set_range_end("/a0");
  c->deliver(w);
  ASSERT_TRUE(c->wait_sent(2));
  EXPECT_FALSE(c->sent<pb::WatchResponse>(1).canceled());
  EXPECT_EQ(status_of("/etcdserverpb.KV/Put", put_req("/a/w"), alice_).code, GCode::kOk);
  ASSERT_TRUE(c->wait_sent(3));
  EXPECT_EQ(c->sent<pb::WatchResponse>(2).events(0).kv().key(), "/a/w");
  c->cancel();
}

TEST_F(V3AuthTest, MembershipAndMaintenanceAreRootsOnly) {
  standard_setup();
  pb::MemberAddRequest add;
  add.add_peerurls("http://127.0.0.1:1");
  EXPECT_EQ(status_of("/etcdserverpb.Cluster/MemberAdd", add, alice_).code,
            GCode::kPermissionDenied);
  EXPECT_EQ(status_of("/etcdserverpb.Maintenance/Defragment", pb::DefragmentRequest(), alice_).code,
            GCode::kPermissionDenied);
  EXPECT_EQ(status_of("/etcdserverpb.Maintenance/HashKV", pb::HashKVRequest(), alice_).code,
            GCode::kPermissionDenied);
  EXPECT_EQ(status_of("/etcdserverpb.Maintenance/HashKV", pb::HashKVRequest()).message,
            "etcdserver: user name is empty");
  EXPECT_EQ(status_of("/etcdserverpb.Maintenance/HashKV", pb::HashKVRequest(), root_).code,
            GCode::kOk);
  // Open to everyone, as in etcd 3.4.
  EXPECT_EQ(status_of("/etcdserverpb.Maintenance/Status", pb::StatusRequest()).code, GCode::kOk);
  EXPECT_EQ(status_of("/etcdserverpb.Cluster/MemberList", pb::MemberListRequest()).code,
            GCode::kOk);
  // Snapshot: refused before any data is sent.
  auto snap = open("/etcdserverpb.Maintenance/Snapshot", alice_);
  snap->deliver(pb::SnapshotRequest());
  snap->half_close();
  ASSERT_TRUE(snap->wait_finished());
  EXPECT_EQ(snap->status().code, GCode::kPermissionDenied);
  EXPECT_EQ(snap->sent_count(), 0u);
}

TEST_F(V3AuthTest, UsersReadThemselvesAndTheirRolesOnly) {
  standard_setup();
  pb::AuthUserGetRequest ug;
  ug.set_name("alice");
  EXPECT_EQ(call<pb::AuthUserGetResponse>("/etcdserverpb.Auth/UserGet", ug, alice_).roles(0), "r");
  ug.set_name("root");
  EXPECT_EQ(status_of("/etcdserverpb.Auth/UserGet", ug, alice_).code, GCode::kPermissionDenied);
  pb::AuthRoleGetRequest rg;
  rg.set_role("r");
  EXPECT_EQ(call<pb::AuthRoleGetResponse>("/etcdserverpb.Auth/RoleGet", rg, alice_).perm_size(), 1);
  EXPECT_EQ(status_of("/etcdserverpb.Auth/UserList", pb::AuthUserListRequest(), alice_).code,
            GCode::kPermissionDenied);
  EXPECT_EQ(call<pb::AuthUserListResponse>("/etcdserverpb.Auth/UserList", pb::AuthUserListRequest(),
                                           root_)
                .users_size(),
            2);
}

TEST_F(V3AuthTest, RepeatedFailuresSlowAUserNameDown) {
  standard_setup();
  pb::AuthenticateRequest bad;
  bad.set_name("alice");
  bad.set_password("wrong");
  for (int i = 0; i < 3; ++i) {
    auto s = status_of("/etcdserverpb.Auth/Authenticate", bad);
    EXPECT_EQ(s.code, GCode::kInvalidArgument);
    EXPECT_EQ(s.message, "etcdserver: authentication failed, invalid user ID or password");
  }
  // The 3rd failure started a 1 s wait for this name, even with the
  // right password; other names are not affected.
  bad.set_password("alicepw");
  auto s = status_of("/etcdserverpb.Auth/Authenticate", bad);
  EXPECT_EQ(s.code, GCode::kResourceExhausted);
  EXPECT_EQ(s.message, "etcdserver: too many requests");
  EXPECT_FALSE(token("root", "rootpw").empty());
  std::this_thread::sleep_for(1100ms);
  EXPECT_EQ(status_of("/etcdserverpb.Auth/Authenticate", bad).code, GCode::kOk);
}

TEST_F(V3AuthTest, APasswordChangeEndsTheUsersTokens) {
  standard_setup();
  pb::AuthUserChangePasswordRequest cp;
  cp.set_name("alice");
  cp.set_password("new");
  call<pb::AuthUserChangePasswordResponse>("/etcdserverpb.Auth/UserChangePassword", cp, root_);
  EXPECT_EQ(status_of("/etcdserverpb.KV/Put", put_req("/a/1"), alice_).code,
            GCode::kUnauthenticated);
  EXPECT_EQ(status_of("/etcdserverpb.KV/Put", put_req("/a/1"), root_).code, GCode::kOk);
  As again{token("alice", "new"), ""};
  EXPECT_EQ(status_of("/etcdserverpb.KV/Put", put_req("/a/1"), again).code, GCode::kOk);
}

}  // namespace
}  // namespace muster::server::testing
