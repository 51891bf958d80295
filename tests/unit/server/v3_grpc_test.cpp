// The gRPC router (node/server/v3_grpc.h) and the service behind it
// (node/server/v3_service.h), driven through FakeCall the way net/'s HTTP/2
// server drives them: binary protobuf in, binary protobuf and a final status
// out.  The member is LocalMember (a real store, no Raft).
#include "node/server/v3_grpc.h"

#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "node/storage/snapshot.h"
#include "tests/unit/server/fake_call.h"
#include "tests/unit/server/local_member.h"
#include "tests/unit/server/test_util.h"

namespace muster::server::testing {
namespace {

using GCode = net::grpc::Code;

class V3GrpcTest : public ::testing::Test {
 protected:
  V3GrpcTest()
      : member_(dir_.path()),
        service_(member_, test_options(), registry_),
        grpc_(service_, registry_, V3Grpc::Options{64 * 1024}) {}
  ~V3GrpcTest() override { member_.drop_swallowed(); }

  std::shared_ptr<FakeCall> open(const std::string& method, net::grpc::Metadata md = {}) {
    auto c = std::make_shared<FakeCall>(method, std::move(md));
    grpc_.handle(c);
    EXPECT_TRUE(c->started()) << method << ": the handler must start() the call";
    return c;
  }

  // One unary call: the answer, or the failing status in *st.
  template <class Resp>
  Resp unary(const std::string& method, const google::protobuf::Message& req,
             net::grpc::Status* st = nullptr) {
    auto c = open(method);
    c->deliver(req);
    c->half_close();
    EXPECT_TRUE(c->wait_finished()) << method;
    if (st) *st = c->status();
    if (!c->status().ok()) {
      if (!st) ADD_FAILURE() << method << ": " << c->status().message;
      EXPECT_EQ(c->sent_count(), 0u);
      return Resp();
    }
    EXPECT_EQ(c->sent_count(), 1u) << method;
    return c->sent<Resp>(0);
  }

  int64_t put(const std::string& k, const std::string& v, int64_t lease = 0) {
    pb::PutRequest p;
    p.set_key(k);
    p.set_value(v);
    p.set_lease(lease);
    return unary<pb::PutResponse>("/etcdserverpb.KV/Put", p).header().revision();
  }

  ScratchDir dir_;
  LocalMember member_;
  metrics::Registry registry_;
  V3Service service_;
  V3Grpc grpc_;
};

// Every method of every service in etcdserverpb's file descriptor has a
// route with the same message types and streaming kinds, and nothing else
// is routed.
TEST(V3GrpcRoutes, EveryRpcOfRpcProtoIsRouted) {
  const google::protobuf::FileDescriptor* file = pb::RangeRequest::descriptor()->file();
  ASSERT_EQ(file->package(), "etcdserverpb");
  ASSERT_EQ(file->service_count(), 6);
  std::map<std::string, V3Grpc::Route> routes;
  for (auto& r : V3Grpc::routes()) routes[r.path] = r;
  size_t methods = 0;
  for (int i = 0; i < file->service_count(); ++i) {
    const auto* svc = file->service(i);
    for (int j = 0; j < svc->method_count(); ++j, ++methods) {
      const auto* m = svc->method(j);
      const std::string path = "/" + svc->full_name() + "/" + m->name();
      auto it = routes.find(path);
      ASSERT_NE(it, routes.end()) << path << " has no route";
      EXPECT_EQ(it->second.request, m->input_type()) << path;
      EXPECT_EQ(it->second.response, m->output_type()) << path;
      EXPECT_EQ(it->second.client_streaming, m->client_streaming()) << path;
      EXPECT_EQ(it->second.server_streaming, m->server_streaming()) << path;
    }
  }
  EXPECT_EQ(methods, 39u);  // etcd 3.4: 5 + 1 + 5 + 5 + 7 + 16
  EXPECT_EQ(routes.size(), methods);
}

// Every route answers (a real answer or an explicit status): none is left
// without a finish.
TEST_F(V3GrpcTest, EveryUnaryRouteAnswers) {
  for (const auto& r : V3Grpc::routes()) {
    if (r.client_streaming || r.server_streaming) continue;
    if (r.path.find("/Member") != std::string::npos) continue;  // need real members
    auto c = open(r.path);
    std::unique_ptr<google::protobuf::Message> req(
        google::protobuf::MessageFactory::generated_factory()->GetPrototype(r.request)->New());
    if (r.path == "/etcdserverpb.KV/Put" || r.path == "/etcdserverpb.KV/DeleteRange" ||
        r.path == "/etcdserverpb.KV/Range")
      req->GetReflection()->SetString(req.get(), r.request->FindFieldByName("key"), "k");
    c->deliver(*req);
    c->half_close();
    ASSERT_TRUE(c->wait_finished()) << r.path;
    if (c->status().ok()) {
      ASSERT_EQ(c->sent_count(), 1u) << r.path;
    } else {
      EXPECT_FALSE(c->status().message.empty()) << r.path;
      EXPECT_EQ(c->status().message.rfind("etcdserver: ", 0), 0u) << c->status().message;
    }
  }
}

TEST_F(V3GrpcTest, PutRangeTxnCarryHeadersAndEtcdErrors) {
  EXPECT_EQ(put("foo", "bar"), 2);
  pb::RangeRequest rr;
  rr.set_key("foo");
  auto r = unary<pb::RangeResponse>("/etcdserverpb.KV/Range", rr);
  EXPECT_EQ(r.header().cluster_id(), LocalMember::kClusterId);
  EXPECT_EQ(r.header().member_id(), LocalMember::kMemberId);
  EXPECT_EQ(r.header().revision(), 2);
  EXPECT_EQ(r.header().raft_term(), 2u);
  ASSERT_EQ(r.kvs_size(), 1);
  EXPECT_EQ(r.kvs(0).value(), "bar");
  EXPECT_EQ(r.kvs(0).create_revision(), 2);

  pb::TxnRequest dup;
  for (const char* v : {"a", "b"}) {
    auto* p = dup.add_success()->mutable_request_put();
    p->set_key("d");
    p->set_value(v);
  }
  net::grpc::Status st;
  unary<pb::TxnResponse>("/etcdserverpb.KV/Txn", dup, &st);
  EXPECT_EQ(st.code, GCode::kInvalidArgument);
  EXPECT_EQ(st.message, "etcdserver: duplicate key given in txn request");

  pb::PutRequest big;
  big.set_key("big");
  big.set_value(std::string(5000, 'x'));
  unary<pb::PutResponse>("/etcdserverpb.KV/Put", big, &st);
  EXPECT_EQ(st.code, GCode::kInvalidArgument);
  EXPECT_EQ(st.message, "etcdserver: request is too large");

  pb::PutRequest leased;
  leased.set_key("l");
  leased.set_lease(12345);
  unary<pb::PutResponse>("/etcdserverpb.KV/Put", leased, &st);
  EXPECT_EQ(st.code, GCode::kNotFound);
  EXPECT_EQ(st.message, "etcdserver: requested lease not found");

  // A compacted revision: OutOfRange with etcd's text (clients match it).
  put("foo", "baz");
  pb::CompactionRequest cr;
  cr.set_revision(3);
  unary<pb::CompactionResponse>("/etcdserverpb.KV/Compact", cr);
  rr.set_revision(2);
  unary<pb::RangeResponse>("/etcdserverpb.KV/Range", rr, &st);
  EXPECT_EQ(st.code, GCode::kOutOfRange);
  EXPECT_EQ(st.message, "etcdserver: mvcc: required revision has been compacted");
}

TEST_F(V3GrpcTest, ProposalTimeoutIsUnavailable) {
  member_.swallow_proposals = true;
  pb::PutRequest p;
  p.set_key("k");
  net::grpc::Status st;
  unary<pb::PutResponse>("/etcdserverpb.KV/Put", p, &st);
  EXPECT_EQ(st.code, GCode::kUnavailable);
  EXPECT_EQ(st.message, "etcdserver: request timed out");
}

TEST_F(V3GrpcTest, UnknownMethodsAndBadMessages) {
  auto c = open("/etcdserverpb.KV/Nothing");
  ASSERT_TRUE(c->finished());
  EXPECT_EQ(c->status().code, GCode::kUnimplemented);
  EXPECT_EQ(c->status().message, "unknown method Nothing for service etcdserverpb.KV");

  c = open("/etcdserverpb.Nope/Range");
  ASSERT_TRUE(c->finished());
  EXPECT_EQ(c->status().code, GCode::kUnimplemented);
  EXPECT_EQ(c->status().message, "unknown service etcdserverpb.Nope");

  c = open("/etcdserverpb.KV/Range");
  c->deliver_raw(std::string("\x0a\xff\xff\xff", 4));  // a length past the end
  ASSERT_TRUE(c->wait_finished());
  EXPECT_EQ(c->status().code, GCode::kInvalidArgument);
  EXPECT_EQ(c->status().message.rfind("grpc: error unmarshalling request: ", 0), 0u)
      << c->status().message;

  c = open("/etcdserverpb.Watch/Watch");
  c->deliver_raw("\xff");
  ASSERT_TRUE(c->wait_finished());
  EXPECT_EQ(c->status().code, GCode::kInvalidArgument);
}

TEST_F(V3GrpcTest, RequireLeaderWithoutLeaderIsUnavailable) {
  net::grpc::Metadata md;
  md.add("hasleader", "true");
  member_.has_leader = false;
  for (const char* m : {"/etcdserverpb.KV/Range", "/etcdserverpb.Watch/Watch",
                        "/etcdserverpb.Lease/LeaseKeepAlive"}) {
    auto c = open(m, md);
    ASSERT_TRUE(c->finished()) << m;
    EXPECT_EQ(c->status().code, GCode::kUnavailable);
    EXPECT_EQ(c->status().message, "etcdserver: no leader");
  }
  // Without the metadata a serializable read still works.
  pb::RangeRequest rr;
  rr.set_key("x");
  rr.set_serializable(true);
  unary<pb::RangeResponse>("/etcdserverpb.KV/Range", rr);
  member_.has_leader = true;
  auto c = open("/etcdserverpb.Watch/Watch", md);
  EXPECT_FALSE(c->finished());
  c->cancel();
}

pb::WatchRequest create(const std::string& key, int64_t id = 0, int64_t start = 0) {
  pb::WatchRequest w;
  auto* c = w.mutable_create_request();
  c->set_key(key);
  c->set_watch_id(id);
  c->set_start_revision(start);
  return w;
}

TEST_F(V3GrpcTest, WatchManyWatchersFiltersCancelProgress) {
  auto c = open("/etcdserverpb.Watch/Watch");
  c->deliver(create("a"));  // automatic id 0
  pb::WatchRequest w7 = create("b", 7);
  w7.mutable_create_request()->set_prev_kv(true);
  w7.mutable_create_request()->add_filters(pb::WatchCreateRequest::NODELETE);
  c->deliver(w7);
  ASSERT_TRUE(c->wait_sent(2));
  auto created0 = c->sent<pb::WatchResponse>(0);
  EXPECT_TRUE(created0.created());
  EXPECT_EQ(created0.watch_id(), 0);
  EXPECT_EQ(created0.header().cluster_id(), LocalMember::kClusterId);
  EXPECT_EQ(c->sent<pb::WatchResponse>(1).watch_id(), 7);

  put("a", "1");
  put("b", "1");
  put("b", "2");
  pb::DeleteRangeRequest del;
  del.set_key("b");
  unary<pb::DeleteRangeResponse>("/etcdserverpb.KV/DeleteRange", del);
  ASSERT_TRUE(c->wait_sent(5));
  auto ea = c->sent<pb::WatchResponse>(2);
  EXPECT_EQ(ea.watch_id(), 0);
  ASSERT_EQ(ea.events_size(), 1);
  EXPECT_EQ(ea.events(0).kv().key(), "a");
  EXPECT_FALSE(ea.events(0).has_prev_kv());
  auto eb = c->sent<pb::WatchResponse>(4);
  EXPECT_EQ(eb.watch_id(), 7);
  ASSERT_EQ(eb.events_size(), 1);
  EXPECT_EQ(eb.events(0).kv().value(), "2");
  EXPECT_EQ(eb.events(0).prev_kv().value(), "1");  // prev_kv asked for

  // The delete was filtered out (NODELETE); cancel answers canceled=true.
  pb::WatchRequest cancel;
  cancel.mutable_cancel_request()->set_watch_id(7);
  c->deliver(cancel);
  ASSERT_TRUE(c->wait_sent(6));
  auto cr = c->sent<pb::WatchResponse>(5);
  EXPECT_EQ(cr.watch_id(), 7);
  EXPECT_TRUE(cr.canceled());
  EXPECT_EQ(cr.events_size(), 0);

  pb::WatchRequest progress;
  progress.mutable_progress_request();
  c->deliver(progress);
  ASSERT_TRUE(c->wait_sent(7));
  auto pr = c->sent<pb::WatchResponse>(6);
  EXPECT_EQ(pr.watch_id(), -1);
  EXPECT_EQ(pr.header().revision(), 5);

  // A watch_id in use is refused on the stream, which stays open.
  c->deliver(create("z", 5));
  c->deliver(create("z", 5));
  ASSERT_TRUE(c->wait_sent(9));
  EXPECT_TRUE(c->sent<pb::WatchResponse>(7).created());
  auto dup = c->sent<pb::WatchResponse>(8);
  EXPECT_TRUE(dup.canceled());
  EXPECT_EQ(dup.watch_id(), -1);

  // Half-close keeps the watchers (etcd's server does), cancel ends it.
  c->half_close();
  put("a", "2");
  ASSERT_TRUE(c->wait_sent(10));
  EXPECT_EQ(c->sent<pb::WatchResponse>(9).events(0).kv().value(), "2");
  EXPECT_FALSE(c->finished());
  c->cancel();
  EXPECT_TRUE(wait_until([&] { return member_.subscriber_count() == 0; }));
}

TEST_F(V3GrpcTest, WatchHistoryCompactedAndFragments) {
  for (int i = 0; i < 5; ++i) put("h", std::string(1500, char('a' + i)));  // revs 2..6
  auto c = open("/etcdserverpb.Watch/Watch");
  pb::WatchRequest w = create("h", 0, 2);
  w.mutable_create_request()->set_fragment(true);  // 5 x 1.5 KB > 4096 bytes
  c->deliver(w);
  // created, then the history in fragments of at most max_request_bytes.
  ASSERT_TRUE(c->wait_sent(2));
  ASSERT_TRUE(wait_until([&] {
    int events = 0;
    for (size_t i = 1; i < c->sent_count(); ++i)
      events += c->sent<pb::WatchResponse>(i).events_size();
    return events == 5;
  }));
  const size_t n = c->sent_count();
  EXPECT_GE(n, 3u);
  for (size_t i = 1; i < n; ++i) {
    auto r = c->sent<pb::WatchResponse>(i);
    EXPECT_EQ(r.fragment(), i + 1 < n) << i;
    EXPECT_LE(r.ByteSizeLong(), 4096u + 100) << i;
  }

  // Without fragment the same history is one response.
  pb::WatchRequest whole = create("h", 3, 2);
  c->deliver(whole);
  ASSERT_TRUE(c->wait_sent(n + 2));
  EXPECT_EQ(c->sent<pb::WatchResponse>(n + 1).events_size(), 5);

  pb::CompactionRequest cr;
  cr.set_revision(4);
  unary<pb::CompactionResponse>("/etcdserverpb.KV/Compact", cr);
  c->deliver(create("h", 9, 2));
  ASSERT_TRUE(c->wait_sent(n + 4));
  EXPECT_TRUE(c->sent<pb::WatchResponse>(n + 2).created());
  auto compacted = c->sent<pb::WatchResponse>(n + 3);
  EXPECT_EQ(compacted.watch_id(), 9);
  EXPECT_TRUE(compacted.canceled());
  EXPECT_EQ(compacted.compact_revision(), 4);
  c->cancel();
}

// A txn's puts and a prefix delete share one revision: a watcher gets every
// event of it, live and from history alike (etcd's "atomic" guarantee).
TEST_F(V3GrpcTest, WatchDeliversEveryEventOfARevision) {
  put("t/pre", "0");
  const int64_t start = put("t/x", "0");
  auto c = open("/etcdserverpb.Watch/Watch");
  pb::WatchRequest live = create("t/", 1);
  live.mutable_create_request()->set_range_end("t0");
  c->deliver(live);
  ASSERT_TRUE(c->wait_sent(1));
  pb::TxnRequest txn;
  for (const char* k : {"t/a", "t/b", "t/c"}) {
    auto* put = txn.add_success()->mutable_request_put();
    put->set_key(k);
    put->set_value("v");
  }
  const int64_t txn_rev = unary<pb::TxnResponse>("/etcdserverpb.KV/Txn", txn).header().revision();
  pb::DeleteRangeRequest del;
  del.set_key("t/");
  del.set_range_end("t0");
  const int64_t del_rev =
      unary<pb::DeleteRangeResponse>("/etcdserverpb.KV/DeleteRange", del).header().revision();
  auto count_events = [&](int64_t id, size_t from) {
    std::vector<pb::Event> out;
    for (size_t i = from; i < c->sent_count(); ++i) {
      auto r = c->sent<pb::WatchResponse>(i);
      if (r.watch_id() == id)
        for (const auto& e : r.events()) out.push_back(e);
    }
    return out;
  };
  // 3 puts at txn_rev, then 5 deletes (t/pre, t/x, t/a, t/b, t/c) at del_rev.
  ASSERT_TRUE(wait_until([&] { return count_events(1, 1).size() == 8; }))
      << count_events(1, 1).size() << " events";
  auto events = count_events(1, 1);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(events[i].kv().mod_revision(), txn_rev);
  for (size_t i = 3; i < 8; ++i) {
    EXPECT_EQ(events[i].type(), pb::Event::DELETE);
    EXPECT_EQ(events[i].kv().mod_revision(), del_rev);
  }
  // The same from history.
  const size_t before = c->sent_count();
  pb::WatchRequest past = create("t/", 2, start);
  past.mutable_create_request()->set_range_end("t0");
  c->deliver(past);
  ASSERT_TRUE(wait_until([&] { return count_events(2, before).size() == 9; }))
      << count_events(2, before).size() << " events from history";
  c->cancel();
}

TEST_F(V3GrpcTest, ProgressNotifyWatchReportsRevision) {
  auto c = open("/etcdserverpb.Watch/Watch");
  pb::WatchRequest w = create("p");
  w.mutable_create_request()->set_progress_notify(true);
  c->deliver(w);
  ASSERT_TRUE(c->wait_sent(2));  // created, then a progress notification (200 ms)
  auto p = c->sent<pb::WatchResponse>(1);
  EXPECT_EQ(p.watch_id(), 0);
  EXPECT_EQ(p.events_size(), 0);
  EXPECT_EQ(p.header().revision(), 1);
  c->cancel();
}

// A client that stops reading gets its stream ended (and can resume on a
// new one) instead of the member buffering for it without bound.
TEST_F(V3GrpcTest, WatchStreamOfAClientThatDoesNotReadIsEnded) {
  auto c = open("/etcdserverpb.Watch/Watch");
  c->deliver(create("s"));
  ASSERT_TRUE(c->wait_sent(1));
  c->stop_reading();
  for (int i = 0; i < 40 && !c->finished(); ++i) put("s", std::string(3000, 'v'));
  ASSERT_TRUE(c->wait_finished());
  EXPECT_EQ(c->status().code, GCode::kUnavailable);
  EXPECT_TRUE(wait_until([&] { return member_.subscriber_count() == 0; }));
}

TEST_F(V3GrpcTest, LeaseKeepAliveStream) {
  pb::LeaseGrantRequest g;
  g.set_ttl(60);
  auto lease = unary<pb::LeaseGrantResponse>("/etcdserverpb.Lease/LeaseGrant", g);
  ASSERT_NE(lease.id(), 0);
  auto c = open("/etcdserverpb.Lease/LeaseKeepAlive");
  pb::LeaseKeepAliveRequest k;
  k.set_id(lease.id());
  c->deliver(k);
  c->deliver(k);
  k.set_id(424242);  // unknown: TTL 0, not an error
  c->deliver(k);
  ASSERT_TRUE(c->wait_sent(3));
  for (int i = 0; i < 2; ++i) {
    auto r = c->sent<pb::LeaseKeepAliveResponse>(i);
    EXPECT_EQ(r.id(), lease.id());
    EXPECT_EQ(r.ttl(), 60);
    EXPECT_EQ(r.header().member_id(), LocalMember::kMemberId);
  }
  auto unknown = c->sent<pb::LeaseKeepAliveResponse>(2);
  EXPECT_EQ(unknown.id(), 424242);
  EXPECT_EQ(unknown.ttl(), 0);
  EXPECT_FALSE(c->finished());
  c->half_close();
  ASSERT_TRUE(c->wait_finished());
  EXPECT_TRUE(c->status().ok()) << c->status().message;

  pb::LeaseTimeToLiveRequest t;
  t.set_id(lease.id());
  EXPECT_EQ(
      unary<pb::LeaseTimeToLiveResponse>("/etcdserverpb.Lease/LeaseTimeToLive", t).grantedttl(),
      60);
}

TEST_F(V3GrpcTest, MaintenanceAnswers) {
  auto st = unary<pb::StatusResponse>("/etcdserverpb.Maintenance/Status", pb::StatusRequest());
  EXPECT_EQ(st.leader(), LocalMember::kMemberId);
  EXPECT_FALSE(st.version().empty());

  auto alarms = unary<pb::AlarmResponse>("/etcdserverpb.Maintenance/Alarm", pb::AlarmRequest());
  EXPECT_EQ(alarms.alarms_size(), 0);
  pb::AlarmRequest deactivate;
  deactivate.set_action(pb::AlarmRequest::DEACTIVATE);
  deactivate.set_alarm(pb::NOSPACE);
  EXPECT_EQ(unary<pb::AlarmResponse>("/etcdserverpb.Maintenance/Alarm", deactivate).alarms_size(),
            0);

  // CORRUPT raised by request: listed, in Status's errors as Go prints it,
  // and writes fail with etcd's DataLoss until it is cleared.
  pb::AlarmRequest corrupt;
  corrupt.set_action(pb::AlarmRequest::ACTIVATE);
  corrupt.set_alarm(pb::CORRUPT);
  auto raised = unary<pb::AlarmResponse>("/etcdserverpb.Maintenance/Alarm", corrupt);
  ASSERT_EQ(raised.alarms_size(), 1);
  EXPECT_FALSE(raised.has_header());  // as etcd's
  EXPECT_EQ(unary<pb::AlarmResponse>("/etcdserverpb.Maintenance/Alarm", pb::AlarmRequest())
                .alarms_size(),
            1);
  st = unary<pb::StatusResponse>("/etcdserverpb.Maintenance/Status", pb::StatusRequest());
  ASSERT_EQ(st.errors_size(), 1);
  EXPECT_EQ(st.errors(0), "alarm:CORRUPT ");
  pb::PutRequest put;
  put.set_key("k");
  net::grpc::Status put_status;
  unary<pb::PutResponse>("/etcdserverpb.KV/Put", put, &put_status);
  EXPECT_EQ(static_cast<int>(put_status.code), 15);  // DataLoss
  EXPECT_EQ(put_status.message, "etcdserver: corrupt cluster");
  corrupt.set_action(pb::AlarmRequest::DEACTIVATE);
  EXPECT_EQ(unary<pb::AlarmResponse>("/etcdserverpb.Maintenance/Alarm", corrupt).alarms_size(), 1);
  unary<pb::PutResponse>("/etcdserverpb.KV/Put", put);

  unary<pb::DefragmentResponse>("/etcdserverpb.Maintenance/Defragment", pb::DefragmentRequest());
  EXPECT_EQ(member_.defragments.load(), 1);

  net::grpc::Status s;
  pb::MoveLeaderRequest ml;
  ml.set_targetid(2);
  unary<pb::MoveLeaderResponse>("/etcdserverpb.Maintenance/MoveLeader", ml, &s);
  EXPECT_EQ(s.code, GCode::kFailedPrecondition);
  EXPECT_EQ(s.message, "etcdserver: bad leader transferee");
  // To the leader itself: nothing to move, answered with a header.
  ml.set_targetid(LocalMember::kMemberId);
  EXPECT_EQ(unary<pb::MoveLeaderResponse>("/etcdserverpb.Maintenance/MoveLeader", ml)
                .header()
                .member_id(),
            LocalMember::kMemberId);
  member_.has_leader = false;
  unary<pb::MoveLeaderResponse>("/etcdserverpb.Maintenance/MoveLeader", ml, &s);
  EXPECT_EQ(s.code, GCode::kFailedPrecondition);
  EXPECT_EQ(s.message, "etcdserver: not leader");
  member_.has_leader = true;

  unary<pb::AuthDisableResponse>("/etcdserverpb.Auth/AuthDisable", pb::AuthDisableRequest());
  unary<pb::AuthenticateResponse>("/etcdserverpb.Auth/Authenticate", pb::AuthenticateRequest(), &s);
  EXPECT_EQ(s.code, GCode::kFailedPrecondition);
  EXPECT_EQ(s.message, "etcdserver: authentication is not enabled");
  EXPECT_EQ(
      unary<pb::AuthUserListResponse>("/etcdserverpb.Auth/UserList", pb::AuthUserListRequest())
          .users_size(),
      0);
}

TEST_F(V3GrpcTest, HashKVFollowsTheMvccState) {
  auto hash_kv = [&](int64_t rev, net::grpc::Status* st = nullptr) {
    pb::HashKVRequest r;
    r.set_revision(rev);
    return unary<pb::HashKVResponse>("/etcdserverpb.Maintenance/HashKV", r, st);
  };
  put("a", "1");  // rev 2
  const uint32_t at2 = hash_kv(0).hash();
  EXPECT_EQ(hash_kv(2).hash(), at2);
  put("b", "1");  // rev 3
  EXPECT_NE(hash_kv(0).hash(), at2);
  EXPECT_EQ(hash_kv(2).hash(), at2);  // the past does not change
  EXPECT_EQ(unary<pb::HashResponse>("/etcdserverpb.Maintenance/Hash", pb::HashRequest()).hash(),
            hash_kv(3).hash());

  net::grpc::Status st;
  hash_kv(99, &st);
  EXPECT_EQ(st.code, GCode::kOutOfRange);
  EXPECT_EQ(st.message, "etcdserver: mvcc: required revision is a future revision");

  pb::CompactionRequest cr;
  cr.set_revision(3);
  unary<pb::CompactionResponse>("/etcdserverpb.KV/Compact", cr);
  auto after = hash_kv(3);
  EXPECT_EQ(after.compact_revision(), 3);
  hash_kv(2, &st);
  EXPECT_EQ(st.code, GCode::kOutOfRange);
  EXPECT_EQ(st.message, "etcdserver: mvcc: required revision has been compacted");

  // A second store with the same history and compaction hashes the same.
  ScratchDir dir2;
  LocalMember other(dir2.path());
  metrics::Registry reg2;
  V3Service svc2(other, test_options(), reg2);
  V3Grpc grpc2(svc2, reg2);
  for (auto [k, v] : {std::pair{"a", "1"}, std::pair{"b", "1"}}) {
    pb::PutRequest p;
    p.set_key(k);
    p.set_value(v);
    auto c = std::make_shared<FakeCall>("/etcdserverpb.KV/Put");
    grpc2.handle(c);
    c->deliver(p);
    ASSERT_TRUE(c->wait_finished());
  }
  auto c = std::make_shared<FakeCall>("/etcdserverpb.KV/Compact");
  grpc2.handle(c);
  c->deliver(cr);
  ASSERT_TRUE(c->wait_finished());
  c = std::make_shared<FakeCall>("/etcdserverpb.Maintenance/HashKV");
  grpc2.handle(c);
  pb::HashKVRequest r;
  c->deliver(r);
  ASSERT_TRUE(c->wait_finished());
  EXPECT_EQ(c->sent<pb::HashKVResponse>(0).hash(), after.hash());
}

TEST_F(V3GrpcTest, SnapshotStreamIsDumpPaddedPlusSha256) {
  for (int i = 0; i < 50; ++i) put("k" + std::to_string(i), std::string(100, 'x'));
  auto c = open("/etcdserverpb.Maintenance/Snapshot");
  c->deliver(pb::SnapshotRequest());
  c->half_close();
  ASSERT_TRUE(c->wait_finished(10s));
  ASSERT_TRUE(c->status().ok()) << c->status().message;
  std::string file;
  uint64_t last_remaining = ~0ull;
  for (size_t i = 0; i < c->sent_count(); ++i) {
    auto r = c->sent<pb::SnapshotResponse>(i);
    EXPECT_LT(r.remaining_bytes(), last_remaining);
    last_remaining = r.remaining_bytes();
    file += r.blob();
  }
  EXPECT_EQ(last_remaining, 0u);
  // etcdctl's check: the dump is a multiple of 512, then a SHA-256.
  ASSERT_EQ(file.size() % 512, 32u);
  const std::string dump = file.substr(0, file.size() - 32);
  unsigned char digest[32];
  unsigned int n = 0;
  EVP_Digest(dump.data(), dump.size(), digest, &n, EVP_sha256(), nullptr);
  EXPECT_EQ(file.substr(dump.size()), std::string(reinterpret_cast<char*>(digest), n));

  // The dump reads back: magic, length-prefixed chunks up to `last`, and
  // its pairs feed a SnapshotInstaller.
  const std::string magic = "MUSTER-SNAPSHOT-1\n";
  ASSERT_EQ(dump.rfind(magic, 0), 0u);
  size_t pos = magic.size();
  ScratchDir restore;
  std::unique_ptr<storage::SnapshotInstaller> inst;
  ASSERT_TRUE(storage::SnapshotInstaller::begin(restore.path(), {}, &inst));
  bool last = false;
  while (!last) {
    ASSERT_LE(pos + 8, dump.size());
    uint64_t len = 0;
    for (int b = 0; b < 8; ++b) len |= uint64_t(uint8_t(dump[pos + b])) << (8 * b);
    pos += 8;
    pb::SnapshotChunk chunk;
    ASSERT_TRUE(chunk.ParseFromString(dump.substr(pos, len)));
    pos += len;
    ASSERT_TRUE(inst->add(chunk));
    last = chunk.last();
  }
  EXPECT_TRUE(inst->complete());
  EXPECT_EQ(dump.find_first_not_of('\0', pos), std::string::npos);  // padding only
}

}  // namespace
}  // namespace muster::server::testing
