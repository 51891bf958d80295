// kv.proto carries etcd's names and field numbers so that protobuf's JSON
// mapping (original field names, as grpc-gateway's OrigName) produces the v3
// JSON gateway's shapes byte for byte.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "node/storage/pb.h"

namespace muster::storage {
namespace {

namespace pb = ::muster::pb;

std::string to_json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  std::string out;
  EXPECT_TRUE(google::protobuf::util::MessageToJsonString(m, &out, o).ok());
  return out;
}

TEST(KvJsonTest, RangeResponseMatchesEtcdGateway) {
  pb::RangeResponse r;
  r.mutable_header()->set_cluster_id(14841639068965178418ULL);
  r.mutable_header()->set_revision(2);
  auto* kv = r.add_kvs();
  kv->set_key("foo");
  kv->set_create_revision(2);
  kv->set_mod_revision(2);
  kv->set_version(1);
  kv->set_value("bar");
  r.set_count(1);
  EXPECT_EQ(
      to_json(r),
      R"({"header":{"cluster_id":"14841639068965178418","revision":"2"},"kvs":[{"key":"Zm9v",)"
      R"("create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"})");
}

TEST(KvJsonTest, LeaseMemberAndWatchNames) {
  pb::LeaseGrantResponse g;
  g.set_id(7587848372337537802LL);
  g.set_ttl(60);
  EXPECT_EQ(to_json(g), R"({"ID":"7587848372337537802","TTL":"60"})");
  pb::LeaseTimeToLiveResponse t;
  t.set_grantedttl(60);
  t.add_keys("k");
  EXPECT_EQ(to_json(t), R"({"grantedTTL":"60","keys":["aw=="]})");
  pb::Member m;
  m.set_id(10276657743932975437ULL);
  m.set_name("default");
  m.add_peerurls("http://localhost:2380");
  m.add_clienturls("http://localhost:2379");
  m.set_islearner(true);
  EXPECT_EQ(to_json(m),
            R"({"ID":"10276657743932975437","name":"default","peerURLs":["http://localhost:2380"],)"
            R"("clientURLs":["http://localhost:2379"],"isLearner":true})");
  pb::WatchResponse w;
  auto* e = w.add_events();
  e->set_type(pb::Event::DELETE);
  e->mutable_kv()->set_key("foo");
  e->mutable_kv()->set_mod_revision(4);
  EXPECT_EQ(to_json(w), R"({"events":[{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"4"}}]})");
  pb::Compare c;
  c.set_target(pb::Compare::MOD);
  c.set_result(pb::Compare::GREATER);
  c.set_key("k");
  c.set_mod_revision(3);
  c.set_range_end("l");
  EXPECT_EQ(
      to_json(c),
      R"({"result":"GREATER","target":"MOD","key":"aw==","mod_revision":"3","range_end":"bA=="})");
}

TEST(KvJsonTest, RequestsAcceptProtoAndCamelNames) {
  pb::TxnRequest t;
  google::protobuf::util::JsonParseOptions o;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(
                  R"({"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"0"}],)"
                  R"("success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}}],)"
                  R"("failure":[{"request_range":{"key":"Zm9v","range_end":"AA=="}}]})",
                  &t, o)
                  .ok());
  EXPECT_EQ(t.compare(0).target(), pb::Compare::CREATE);
  EXPECT_EQ(t.compare(0).target_union_case(), pb::Compare::kCreateRevision);
  EXPECT_EQ(t.success(0).request_put().value(), "bar");
  EXPECT_EQ(t.failure(0).request_range().range_end(), std::string(1, '\0'));
}

}  // namespace
}  // namespace muster::storage
