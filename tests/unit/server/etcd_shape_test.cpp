// The same requests sent to a real etcd 3.4 and to V3Api: the JSON key sets
// and value types of the answers must match, and etcd's own error answers
// must match byte for byte.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "tests/support/etcd.h"
#include "tests/unit/server/local_member.h"
#include "tests/unit/server/test_util.h"

namespace muster::server::testing {
namespace {

using ::muster::testing::EtcdProcess;
using ::muster::testing::kEtcd;

// The structure of a JSON value: objects keep their keys, arrays the shape
// of their first element, scalars become their type's name.
json shape(const json& j) {
  if (j.is_object()) {
    json o = json::object();
    for (auto& [k, v] : j.items()) o[k] = shape(v);
    return o;
  }
  if (j.is_array()) return j.empty() ? json::array() : json::array({shape(j[0])});
  if (j.is_string()) return "string";
  if (j.is_boolean()) return "bool";
  if (j.is_number_integer()) return "integer";
  if (j.is_number()) return "number";
  return "null";
}

json first_line(const std::string& raw) {
  return json::parse(raw.substr(0, raw.find('\n')), nullptr, false);
}

class EtcdShapeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kEtcd, X_OK) != 0) GTEST_SKIP() << kEtcd << " is not installed";
    etcd_ = std::make_unique<EtcdProcess>();
    const std::string why = etcd_->start_fresh();
    ASSERT_TRUE(why.empty()) << why;
    member_ = std::make_unique<LocalMember>(muster_dir_.path());
    member_->add_self("http://127.0.0.1:2380", "http://127.0.0.1:2379");
    V3Api::Options o;
    o.request_timeout = 2s;
    server_ = std::make_unique<ApiServer>(*member_, o);
  }

  // Sends the request to both; returns {etcd, muster}.
  std::pair<Reply, Reply> both(const std::string& path, const std::string& body) {
    return {call(etcd_client_, etcd_->endpoint() + path, body),
            call(muster_client_, server_->url(path), body)};
  }
  // Same status, same structure.
  std::pair<Reply, Reply> same_shape(const std::string& path, const json& body) {
    auto [e, m] = both(path, body.dump());
    EXPECT_EQ(e.status, m.status) << path << "\netcd:   " << e.raw << "\nmuster: " << m.raw;
    EXPECT_EQ(shape(e.body), shape(m.body))
        << path << " " << body << "\netcd:   " << e.raw << "\nmuster: " << m.raw;
    return {e, m};
  }
  // etcd's own errors: same status and the same body.
  void same_error(const std::string& path, const json& body) {
    auto [e, m] = both(path, body.dump());
    EXPECT_EQ(e.status, m.status) << path << "\netcd:   " << e.raw << "\nmuster: " << m.raw;
    EXPECT_EQ(e.body, m.body) << path << " " << body;
  }

  ScratchDir muster_dir_;
  std::unique_ptr<EtcdProcess> etcd_;
  std::unique_ptr<LocalMember> member_;
  std::unique_ptr<ApiServer> server_;
  net::HttpClient etcd_client_, muster_client_;
};

TEST_F(EtcdShapeTest, ResponsesHaveEtcdsShapes) {
  same_shape("/v3/kv/put", {{"key", b64("foo")}, {"value", b64("bar")}});
  auto [e, m] =
      same_shape("/v3/kv/put", {{"key", b64("foo")}, {"value", b64("baz")}, {"prev_kv", true}});
  // Same store history on both sides: same revisions in the answers.
  EXPECT_EQ(e.body["prev_kv"], m.body["prev_kv"]);
  EXPECT_EQ(e.body["header"]["revision"], m.body["header"]["revision"]);
  auto [re, rm] = same_shape("/v3/kv/range", {{"key", b64("foo")}});
  EXPECT_EQ(re.body["kvs"], rm.body["kvs"]);
  same_shape("/v3/kv/range", {{"key", b64("missing")}});
  same_shape("/v3/kv/range",
             {{"key", "AA=="}, {"range_end", "AA=="}, {"limit", 1}, {"keys_only", true}});
  json txn = {
      {"compare",
       {{{"key", b64("foo")}, {"result", "EQUAL"}, {"target", "VALUE"}, {"value", b64("baz")}}}},
      {"success",
       {{{"request_range", {{"key", b64("foo")}}}},
        {{"request_put", {{"key", b64("a")}, {"value", b64("b")}}}}}},
      {"failure", {{{"request_delete_range", {{"key", b64("a")}}}}}}};
  auto [te, tm] = same_shape("/v3/kv/txn", txn);
  EXPECT_EQ(te.body["responses"], tm.body["responses"]);
  txn["compare"][0]["value"] = b64("nope");
  same_shape("/v3/kv/txn", txn);
  same_shape("/v3/kv/deleterange", {{"key", b64("a")}, {"prev_kv", true}});

  auto [ge, gm] = same_shape("/v3/lease/grant", {{"TTL", "60"}});
  const std::string eid = ge.body["ID"], mid = gm.body["ID"];
  call(etcd_client_, etcd_->endpoint() + "/v3/kv/put",
       json({{"key", b64("l")}, {"value", "eA=="}, {"lease", eid}}).dump());
  call(muster_client_, server_->url("/v3/kv/put"),
       json({{"key", b64("l")}, {"value", "eA=="}, {"lease", mid}}).dump());
  Reply tte = call(etcd_client_, etcd_->endpoint() + "/v3/lease/timetolive",
                   json({{"ID", eid}, {"keys", true}}).dump());
  Reply ttm = call(muster_client_, server_->url("/v3/lease/timetolive"),
                   json({{"ID", mid}, {"keys", true}}).dump());
  EXPECT_EQ(shape(tte.body), shape(ttm.body)) << tte.raw << "\n" << ttm.raw;
  Reply kae =
      call(etcd_client_, etcd_->endpoint() + "/v3/lease/keepalive", json({{"ID", eid}}).dump());
  Reply kam = call(muster_client_, server_->url("/v3/lease/keepalive"), json({{"ID", mid}}).dump());
  EXPECT_EQ(shape(first_line(kae.raw)), shape(first_line(kam.raw))) << kae.raw << "\n" << kam.raw;
  same_shape("/v3/lease/leases", json::object());
  // Unknown leases: etcd answers TTL -1 / TTL omitted, not an error.
  same_shape("/v3/lease/timetolive", {{"ID", "12345"}});
  auto [ke, km] = both("/v3/lease/keepalive", R"({"ID":"12345"})");
  EXPECT_EQ(shape(first_line(ke.raw)), shape(first_line(km.raw))) << ke.raw << "\n" << km.raw;

  same_shape("/v3/maintenance/status", json::object());
  same_shape("/v3/cluster/member/list", json::object());

  Reply h1 = call(etcd_client_, etcd_->endpoint() + "/health", "", "GET");
  Reply h2 = call(muster_client_, server_->url("/health"), "", "GET");
  EXPECT_EQ(h1.raw, h2.raw);
  EXPECT_EQ(h1.content_type, h2.content_type);
  Reply v1 = call(etcd_client_, etcd_->endpoint() + "/version", "", "GET");
  Reply v2 = call(muster_client_, server_->url("/version"), "", "GET");
  EXPECT_EQ(shape(v1.body), shape(v2.body));
}

TEST_F(EtcdShapeTest, ErrorsMatchEtcd) {
  for (int i = 0; i < 3; ++i)
    both("/v3/kv/put", json({{"key", b64("x")}, {"value", b64(std::to_string(i))}}).dump());
  same_shape("/v3/kv/compaction", {{"revision", "3"}});
  same_error("/v3/kv/range", {{"key", b64("x")}, {"revision", "2"}});
  same_error("/v3/kv/compaction", {{"revision", "2"}});
  same_error("/v3/kv/range", {{"key", b64("x")}, {"revision", "100"}});
  same_error("/v3/kv/range", json::object());
  same_error("/v3/kv/put", {{"key", b64("y")}, {"value", "eA=="}, {"lease", "5"}});
  same_error("/v3/lease/revoke", {{"ID", "5"}});
  json ops = json::array();
  for (int i = 0; i < 129; ++i)
    ops.push_back({{"request_put", {{"key", b64("t" + std::to_string(i))}, {"value", "YQ=="}}}});
  same_error("/v3/kv/txn", {{"success", ops}});
  // Decoding errors: the texts are Go's on one side and protobuf's on the
  // other; status, code and shape agree.
  for (const char* bad : {"{bad", R"({"key":"!!!"})", R"({"key":123})", "[]"}) {
    auto [e, m] = both("/v3/kv/range", bad);
    EXPECT_EQ(e.status, m.status) << bad << "\n" << e.raw << "\n" << m.raw;
    EXPECT_EQ(shape(e.body), shape(m.body)) << bad;
    EXPECT_EQ(e.body["code"], m.body["code"]) << bad;
  }
}

TEST_F(EtcdShapeTest, WatchLinesHaveEtcdsShapes) {
  for (int i = 0; i < 2; ++i)
    both("/v3/kv/put", json({{"key", b64("w")}, {"value", b64(std::to_string(i))}}).dump());
  const std::string body =
      json({{"create_request", {{"key", b64("w")}, {"start_revision", "2"}, {"prev_kv", true}}}})
          .dump();
  StreamReader e(etcd_->endpoint() + "/v3/watch", body);
  StreamReader m(server_->url("/v3/watch"), body);
  json ec = e.next(), mc = m.next();
  EXPECT_EQ(shape(ec), shape(mc)) << ec << "\n" << mc;
  json ee = e.next(), me = m.next();
  EXPECT_EQ(shape(ee), shape(me)) << ee << "\n" << me;
  EXPECT_EQ(ee["result"]["events"], me["result"]["events"]);
  both("/v3/kv/deleterange", json({{"key", b64("w")}}).dump());
  json ed = e.next(), md = m.next();
  EXPECT_EQ(ed["result"]["events"], md["result"]["events"]) << ed << "\n" << md;
  e.hang_up([&] {
    call(etcd_client_, etcd_->endpoint() + "/v3/kv/put", R"({"key":"dw==","value":"eA=="})");
  });
  m.hang_up([&] {
    call(muster_client_, server_->url("/v3/kv/put"), R"({"key":"dw==","value":"eA=="})");
  });
}

}  // namespace
}  // namespace muster::server::testing
