// The v3 JSON gateway over a real HTTP server on loopback, driven the way
// curl drives etcd: JSON bodies with base64 keys, one POST per call, watch as
// a streamed response.  The member behind it is LocalMember (a real store,
// no Raft).
#include "node/server/v3_api.h"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "net/client.h"
#include "net/server.h"
#include "tests/unit/server/local_member.h"
#include "tests/unit/server/test_util.h"

namespace muster::server::testing {
namespace {

class V3ApiTest : public ::testing::Test {
 protected:
  V3ApiTest() : member_(dir_.path()), server_(member_) {}
  ~V3ApiTest() override { member_.drop_swallowed(); }

  Reply post(const std::string& path, const json& body) {
    return call(client_, server_.url(path), body.dump());
  }
  Reply post_raw(const std::string& path, const std::string& body) {
    return call(client_, server_.url(path), body);
  }
  int64_t put(const std::string& k, const std::string& v, int64_t lease = 0) {
    json b = {{"key", b64(k)}, {"value", b64(v)}};
    if (lease) b["lease"] = std::to_string(lease);
    Reply r = post("/v3/kv/put", b);
    EXPECT_EQ(r.status, 200) << r.raw;
    return std::stoll(r.body["header"]["revision"].get<std::string>());
  }
  void expect_error(const Reply& r, int http, int code, const std::string& msg_part) {
    EXPECT_EQ(r.status, http) << r.raw;
    ASSERT_TRUE(r.body.is_object()) << r.raw;
    EXPECT_EQ(r.body["code"], code) << r.raw;
    EXPECT_NE(r.body["error"].get<std::string>().find(msg_part), std::string::npos) << r.raw;
    EXPECT_EQ(r.body["message"], r.body["error"]);
  }

  // A watch request body: a watcher on `key` from `start`, then one from now
  // on (which also lets hang_up() wake the stream).
  static std::string watch_from_then_now(const std::string& key, const std::string& start) {
    return json({{"create_request", {{"key", b64(key)}, {"start_revision", start}}}}).dump() +
           "\n" + json({{"create_request", {{"key", b64(key)}}}}).dump();
  }
  // The answer that cancels a watcher whose start was compacted.
  static void expect_compacted(const json& c, const std::string& compact_revision) {
    ASSERT_TRUE(c.is_object());
    EXPECT_EQ(c["result"]["canceled"], true) << c;
    EXPECT_EQ(c["result"]["compact_revision"], compact_revision) << c;
    EXPECT_FALSE(c["result"]["header"].contains("revision")) << c;
  }

  ScratchDir dir_;
  LocalMember member_;
  ApiServer server_;
  net::HttpClient client_;
};

TEST_F(V3ApiTest, PutThenRangeUsesEtcdJsonConventions) {
  Reply p = post("/v3/kv/put", {{"key", b64("foo")}, {"value", b64("bar")}});
  ASSERT_EQ(p.status, 200) << p.raw;
  EXPECT_EQ(p.content_type, "application/json");
  const json& h = p.body["header"];
  EXPECT_EQ(h["cluster_id"], std::to_string(LocalMember::kClusterId));
  EXPECT_EQ(h["member_id"], std::to_string(LocalMember::kMemberId));
  EXPECT_EQ(h["revision"], "2");  // a fresh store is at 1, as etcd's
  EXPECT_EQ(h["raft_term"], "2");

  Reply r = post("/v3/kv/range", {{"key", b64("foo")}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["kvs"], json::parse(R"([{"key":"Zm9v","create_revision":"2",
      "mod_revision":"2","version":"1","value":"YmFy"}])"));
  EXPECT_EQ(r.body["count"], "1");
  EXPECT_FALSE(r.body.contains("more"));  // zero values omitted

  // Nothing matched: no kvs, no count.
  Reply none = post("/v3/kv/range", {{"key", b64("nope")}, {"serializable", true}});
  ASSERT_EQ(none.status, 200);
  EXPECT_EQ(none.body.size(), 1u) << none.raw;

  // prev_kv on overwrite; lowerCamel input names are accepted too.
  Reply p2 = post("/v3/kv/put", {{"key", b64("foo")}, {"value", b64("baz")}, {"prevKv", true}});
  EXPECT_EQ(p2.body["prev_kv"]["value"], b64("bar")) << p2.raw;
}

TEST_F(V3ApiTest, PrefixRangeLimitSortAndOldRevision) {
  put("a/1", "x");
  const int64_t rev = put("a/2", "y");
  put("a/3", "z");
  put("b", "w");
  put("a/2", "y2");
  Reply r = post("/v3/kv/range", {{"key", b64("a/")}, {"range_end", b64("a0")}});
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(r.body["kvs"].size(), 3u);
  EXPECT_EQ(r.body["count"], "3");

  Reply lim =
      post("/v3/kv/range",
           {{"key", b64("a/")}, {"range_end", b64("a0")}, {"limit", 1}, {"sort_order", "DESCEND"}});
  ASSERT_EQ(lim.body["kvs"].size(), 1u) << lim.raw;
  EXPECT_EQ(lim.body["kvs"][0]["key"], b64("a/3"));
  EXPECT_EQ(lim.body["more"], true);

  Reply old = post("/v3/kv/range", {{"key", b64("a/2")}, {"revision", std::to_string(rev)}});
  EXPECT_EQ(old.body["kvs"][0]["value"], b64("y")) << old.raw;

  // key "\0" with range_end "\0": everything.
  Reply all = post("/v3/kv/range", {{"key", "AA=="}, {"range_end", "AA=="}, {"keys_only", true}});
  EXPECT_EQ(all.body["count"], "4") << all.raw;
  EXPECT_FALSE(all.body["kvs"][0].contains("value"));

  Reply cnt = post("/v3/kv/range", {{"key", "AA=="}, {"range_end", "AA=="}, {"count_only", true}});
  EXPECT_FALSE(cnt.body.contains("kvs"));
  EXPECT_EQ(cnt.body["count"], "4");
}

TEST_F(V3ApiTest, DeleteRangeReturnsDeletedAndPrevKvs) {
  put("k1", "1");
  put("k2", "2");
  Reply d =
      post("/v3/kv/deleterange", {{"key", b64("k")}, {"range_end", b64("l")}, {"prev_kv", true}});
  ASSERT_EQ(d.status, 200) << d.raw;
  EXPECT_EQ(d.body["deleted"], "2");
  EXPECT_EQ(d.body["prev_kvs"].size(), 2u);
  EXPECT_EQ(post("/v3/kv/range", {{"key", b64("k1")}}).body.count("kvs"), 0u);
}

TEST_F(V3ApiTest, TxnCompareSucceedsOrFails) {
  put("foo", "bar");
  json txn = {
      {"compare",
       {{{"key", b64("foo")}, {"result", "EQUAL"}, {"target", "VALUE"}, {"value", b64("bar")}}}},
      {"success",
       {{{"request_range", {{"key", b64("foo")}}}},
        {{"request_put", {{"key", b64("a")}, {"value", b64("b")}}}}}},
      {"failure", {{{"request_delete_range", {{"key", b64("foo")}}}}}}};
  Reply ok = post("/v3/kv/txn", txn);
  ASSERT_EQ(ok.status, 200) << ok.raw;
  EXPECT_EQ(ok.body["succeeded"], true);
  ASSERT_EQ(ok.body["responses"].size(), 2u);
  EXPECT_EQ(ok.body["responses"][0]["response_range"]["kvs"][0]["value"], b64("bar"));
  // Sub-responses carry a partial header (revision only), as in etcd.
  EXPECT_EQ(ok.body["responses"][1]["response_put"]["header"], json({{"revision", "3"}}));
  EXPECT_EQ(ok.body["header"]["revision"], "3");

  txn["compare"][0]["value"] = b64("other");
  Reply no = post("/v3/kv/txn", txn);
  ASSERT_EQ(no.status, 200) << no.raw;
  EXPECT_FALSE(no.body.contains("succeeded"));
  EXPECT_EQ(no.body["responses"][0]["response_delete_range"]["deleted"], "1");

  // Compare on version with a number given as a JSON number.
  Reply v =
      post("/v3/kv/txn",
           {{"compare",
             {{{"key", b64("a")}, {"result", "GREATER"}, {"target", "VERSION"}, {"version", 0}}}}});
  EXPECT_EQ(v.body["succeeded"], true) << v.raw;
}

TEST_F(V3ApiTest, CompactionThenOldRevisionIsCompacted) {
  put("x", "1");
  const int64_t r2 = put("x", "2");
  put("x", "3");
  Reply c = post("/v3/kv/compaction", {{"revision", std::to_string(r2)}});
  ASSERT_EQ(c.status, 200) << c.raw;
  EXPECT_EQ(c.body.size(), 1u);  // header only
  expect_error(post("/v3/kv/range", {{"key", b64("x")}, {"revision", std::to_string(r2 - 1)}}), 400,
               11, "etcdserver: mvcc: required revision has been compacted");
  expect_error(post("/v3/kv/compaction", {{"revision", "1"}}), 400, 11,
               "required revision has been compacted");
  expect_error(post("/v3/kv/range", {{"key", b64("x")}, {"revision", "1000"}}), 400, 11,
               "etcdserver: mvcc: required revision is a future revision");
  // Still serving.
  EXPECT_EQ(post("/v3/kv/range", {{"key", b64("x")}}).body["kvs"][0]["value"], b64("3"));
}

TEST_F(V3ApiTest, BadInputGetsEtcdErrorsAndServerKeepsServing) {
  expect_error(post_raw("/v3/kv/range", "{bad"), 400, 3, "");
  expect_error(post_raw("/v3/kv/put", R"({"key":"!!!","value":"YQ=="})"), 400, 3, "");
  expect_error(post_raw("/v3/kv/range", R"({"key":123})"), 400, 3, "");
  expect_error(post_raw("/v3/kv/range", R"({"key":"Zm9v","limit":"abc"})"), 400, 3, "");
  // A parse error quotes the input; bytes that are not UTF-8 come back as
  // U+FFFD, as Go's encoding/json writes them (found by fuzz_client_http:
  // the JSON writer threw and took the member down).
  for (const char* path : {"/v3/kv/range", "/v3/watch"}) {
    Reply bad = post_raw(path, "{\"key\":\"Zm9v\",\"limit\"\xca\"1\"}");
    expect_error(bad, 400, 3, "");
    EXPECT_NE(bad.raw.find("\xef\xbf\xbd"), std::string::npos) << bad.raw;
  }
  expect_error(post_raw("/v3/kv/range", "{}"), 400, 3, "etcdserver: key is not provided");
  expect_error(post_raw("/v3/kv/range", ""), 400, 3, "etcdserver: key is not provided");
  expect_error(post("/v3/kv/put", {{"key", ""}, {"value", b64("v")}}), 400, 3,
               "etcdserver: key is not provided");
  // Over --max-request-bytes (4096 here), still under the body limit.
  expect_error(post("/v3/kv/put", {{"key", b64("big")}, {"value", b64(std::string(5000, 'v'))}}),
               400, 3, "etcdserver: request is too large");
  // Over --max-txn-ops (8 here).
  json ops = json::array();
  for (int i = 0; i < 9; ++i)
    ops.push_back({{"request_put", {{"key", b64("t" + std::to_string(i))}, {"value", "YQ=="}}}});
  expect_error(post("/v3/kv/txn", {{"success", ops}}), 400, 3,
               "etcdserver: too many operations in txn request");
  json dup = {{{"request_put", {{"key", b64("d")}, {"value", "YQ=="}}}},
              {{"request_put", {{"key", b64("d")}, {"value", "Yg=="}}}}};
  expect_error(post("/v3/kv/txn", {{"success", dup}}), 400, 3,
               "etcdserver: duplicate key given in txn request");
  expect_error(post("/v3/kv/put", {{"key", b64("l")}, {"value", "YQ=="}, {"lease", "12345"}}), 404,
               5, "etcdserver: requested lease not found");
  expect_error(post("/v3/lease/grant", {{"TTL", "9000000001"}}), 400, 11,
               "etcdserver: too large lease TTL");
  // Unknown fields are ignored, as etcd's gateway ignores them.
  EXPECT_EQ(post_raw("/v3/kv/put", R"({"key":"YQ==","value":"Yg==","bogus":1})").status, 200);
  // Error bodies list their members in etcd's order.
  EXPECT_EQ(post_raw("/v3/kv/range", "{}").raw.rfind(R"({"error":)", 0), 0u);

  Reply unknown = post_raw("/v3/kv/nothing", "{}");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(call(client_, server_.url("/v3/kv/range"), "", "GET").status, 405);
  // Routes outside this API are left to the caller.
  EXPECT_EQ(call(client_, server_.url("/v2/keys/foo"), "", "GET").raw, "not the v3 API\n");
  // Everything above left nothing behind and the server still answers.
  EXPECT_EQ(put("after", "errors"), 3);
}

// An enum name that does not exist is refused, as etcd's gateway refuses
// it, unknown fields beside it or not: protobuf's lenient parse dropped
// it, so a misspelt compare result became EQUAL and the txn compared
// something else than asked.
TEST_F(V3ApiTest, MisspeltEnumIsRefusedUnknownFieldsAreNot) {
  put("e", "1");
  const json typo = {
      {{"key", b64("e")}, {"target", "MOD"}, {"result", "GREATER_THAN"}, {"mod_revision", "1"}}};
  const json put_x = {{{"request_put", {{"key", b64("x")}, {"value", b64("1")}}}}};
  expect_error(post("/v3/kv/txn", {{"compare", typo}, {"success", put_x}}), 400, 3, "GREATER_THAN");
  expect_error(post("/v3/kv/txn", {{"compare", typo}, {"success", put_x}, {"bogus", 1}}), 400, 3,
               "GREATER_THAN");
  expect_error(post("/v3/kv/range", {{"key", b64("e")}, {"sort_order", "BOGUS"}}), 400, 3, "BOGUS");
  EXPECT_EQ(post("/v3/kv/range", {{"key", b64("x")}}).body.count("kvs"), 0u) << "nothing applied";
  // Unknown fields anywhere in the request, by proto or JSON name beside
  // them: ignored, and the known ones honoured.
  const json cmp = {{{"key", b64("e")},
                     {"target", "VALUE"},
                     {"result", "NOT_EQUAL"},
                     {"value", b64("1")},
                     {"newer", true}}};
  const json ops = {{{"request_put", {{"key", b64("x")}, {"value", b64("2")}, {"later", "?"}}},
                     {"extra", {{"deep", 1}}}}};
  Reply r = post("/v3/kv/txn", {{"compare", cmp}, {"failure", ops}, {"bogus", 1}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_FALSE(r.body.contains("succeeded")) << r.raw;
  Reply x = post("/v3/kv/range", {{"key", b64("x")}, {"keysOnly", false}, {"countOnly", false}});
  ASSERT_EQ(x.status, 200) << x.raw;
  EXPECT_EQ(x.body["kvs"][0]["value"], b64("2")) << x.raw;
  Reply g = post_raw("/v3/lease/grant", R"({"TTL":"7","ttl_hint":3})");
  EXPECT_EQ(g.body["TTL"], "7") << g.raw;
}

// A body the strict parse refuses is parsed a second time as a JSON tree;
// one nested far deeper than any request (here in a field the request has)
// is refused without it, not written out again level by level.
TEST_F(V3ApiTest, DeeplyNestedBodyIsRefusedAndServerKeepsServing) {
  const size_t depth = 200000;
  for (const char* field : {"range_end", "bogus"}) {
    std::string body = std::string(R"({"key":"YQ==",")") + field + "\":";
    body += std::string(depth, '[') + std::string(depth, ']') + "}";
    expect_error(post_raw("/v3/kv/range", body), 400, 3, "");
  }
  // As deep as a txn may go (30 txns inside it, about 95 JSON levels),
  // with an unknown field at the bottom: served, and its answer written.
  // One level more is refused before it is proposed: protobuf's JSON writer
  // could not answer it (the member used to stop on that).
  auto nested = [](int levels) {
    json txn = {{"success", {{{"request_put", {{"key", b64("deep")}, {"value", "YQ=="}}}}}},
                {"newer", 1}};
    for (int i = 0; i < levels; ++i) txn = {{"success", {{{"request_txn", txn}}}}};
    return txn;
  };
  expect_error(post("/v3/kv/txn", nested(31)), 400, 3,
               "etcdserver: txns nested too deeply in txn request");
  EXPECT_EQ(post("/v3/kv/range", {{"key", b64("deep")}}).body.count("kvs"), 0u);
  Reply r = post("/v3/kv/txn", nested(30));
  EXPECT_EQ(r.status, 200) << r.raw.substr(0, 300);
  EXPECT_EQ(post("/v3/kv/range", {{"key", b64("deep")}}).body["count"], "1");
  EXPECT_EQ(put("after", "nesting"), 3);
}

TEST_F(V3ApiTest, ProposalTimeoutIsUnavailable) {
  member_.swallow_proposals = true;
  expect_error(post("/v3/kv/put", {{"key", b64("k")}, {"value", b64("v")}}), 503, 14,
               "etcdserver: request timed out");
  member_.swallow_barriers = true;
  expect_error(post("/v3/kv/range", {{"key", b64("k")}}), 503, 14, "etcdserver: request timed out");
  // A serializable read needs no barrier.
  EXPECT_EQ(post("/v3/kv/range", {{"key", b64("k")}, {"serializable", true}}).status, 200);
  std::string text = server_.registry().render();
  EXPECT_NE(text.find("etcd_server_proposals_failed_total 1"), std::string::npos) << text;
  EXPECT_NE(text.find("etcd_server_proposals_pending 0"), std::string::npos) << text;
}

// etcd raises a TTL below its minimum (1.5 election timeouts, 2 s for the
// default timings) instead of granting a lease that could expire during an
// election; zero and negative TTLs get the minimum too.
TEST_F(V3ApiTest, LeaseShorterThanTheMinimumTtlIsGrantedTheMinimum) {
  for (const char* asked : {"1", "0", "-5"}) {
    Reply g = post("/v3/lease/grant", {{"TTL", asked}});
    ASSERT_EQ(g.status, 200) << g.raw;
    EXPECT_EQ(g.body["TTL"], "2") << "asked for " << asked;
    Reply t = post("/v3/lease/timetolive", {{"ID", g.body["ID"]}});
    EXPECT_EQ(t.body["grantedTTL"], "2") << t.raw;
    const int64_t left = std::stoll(t.body["TTL"].get<std::string>());
    EXPECT_TRUE(left >= 1 && left <= 2) << t.raw;
    Reply ka = post("/v3/lease/keepalive", {{"ID", g.body["ID"]}});
    EXPECT_NE(ka.raw.find(R"("TTL":"2")"), std::string::npos) << ka.raw;
  }
  EXPECT_EQ(post("/v3/lease/grant", {{"TTL", "3"}}).body["TTL"], "3");
}

TEST(MinLeaseTtl, IsEtcds) {
  // Figures from etcd 3.4.23 granting a TTL of 0 with these timings.
  EXPECT_EQ(min_lease_ttl_seconds(100, 1000), 2);
  EXPECT_EQ(min_lease_ttl_seconds(100, 3000), 5);
  EXPECT_EQ(min_lease_ttl_seconds(50, 500), 1);
  EXPECT_EQ(min_lease_ttl_seconds(100, 1100), 2);
  // Whole ticks: 1,050 ms is 10 ticks of 100 ms, as 1,000 ms is.
  EXPECT_EQ(min_lease_ttl_seconds(100, 1050), 2);
  EXPECT_EQ(min_lease_ttl_seconds(200, 2000), 3);
}

TEST_F(V3ApiTest, LeaseGrantAttachTimeToLiveRevoke) {
  Reply g = post("/v3/lease/grant", {{"TTL", "60"}});
  ASSERT_EQ(g.status, 200) << g.raw;
  EXPECT_EQ(g.body["TTL"], "60");
  const std::string id = g.body["ID"];
  ASSERT_FALSE(id.empty());
  put("leased/1", "a", std::stoll(id));
  put("leased/2", "b", std::stoll(id));

  Reply ttl = post("/v3/lease/timetolive", {{"ID", id}, {"keys", true}});
  ASSERT_EQ(ttl.status, 200) << ttl.raw;
  EXPECT_EQ(ttl.body["grantedTTL"], "60");
  EXPECT_EQ(ttl.body["keys"], json({b64("leased/1"), b64("leased/2")}));
  const int64_t left = std::stoll(ttl.body["TTL"].get<std::string>());
  EXPECT_TRUE(left > 0 && left <= 60) << ttl.raw;
  EXPECT_EQ(post("/v3/kv/lease/timetolive", {{"ID", id}}).body["ID"], id);

  Reply ka = post("/v3/lease/keepalive", {{"ID", id}});
  ASSERT_EQ(ka.status, 200) << ka.raw;
  json line = json::parse(ka.raw.substr(0, ka.raw.find('\n')));
  EXPECT_EQ(line["result"]["ID"], id);
  EXPECT_EQ(line["result"]["TTL"], "60");

  // Several requests in one body: one line each, in order, then the end.
  Reply ka3 = post_raw("/v3/lease/keepalive",
                       json({{"ID", id}}).dump() + "\n" + json({{"ID", "42"}}).dump() + "\n");
  ASSERT_EQ(ka3.status, 200);
  std::vector<json> lines;
  for (size_t at = 0, nl; (nl = ka3.raw.find('\n', at)) != std::string::npos; at = nl + 1)
    lines.push_back(json::parse(ka3.raw.substr(at, nl - at)));
  ASSERT_EQ(lines.size(), 2u) << ka3.raw;
  EXPECT_EQ(lines[0]["result"]["TTL"], "60");
  EXPECT_EQ(lines[1]["result"]["ID"], "42");
  EXPECT_FALSE(lines[1]["result"].contains("TTL"));
  expect_error(post_raw("/v3/lease/keepalive", "{bad"), 400, 3, "");

  Reply ls = post("/v3/lease/leases", json::object());
  EXPECT_EQ(ls.body["leases"], json({{{"ID", id}}})) << ls.raw;
  EXPECT_EQ(post("/v3/kv/lease/leases", json::object()).body["leases"], ls.body["leases"]);

  Reply rv = post("/v3/lease/revoke", {{"ID", id}});
  ASSERT_EQ(rv.status, 200) << rv.raw;
  EXPECT_FALSE(post("/v3/kv/range", {{"key", b64("leased/")}, {"range_end", b64("leased0")}})
                   .body.contains("kvs"));
  expect_error(post("/v3/kv/lease/revoke", {{"ID", id}}), 404, 5,
               "etcdserver: requested lease not found");
  // etcd answers an unknown lease with TTL -1 (timetolive) and TTL 0
  // (keepalive) rather than an error.
  EXPECT_EQ(post("/v3/lease/timetolive", {{"ID", id}}).body["TTL"], "-1");
  Reply ka2 = post("/v3/lease/keepalive", {{"ID", id}});
  json line2 = json::parse(ka2.raw.substr(0, ka2.raw.find('\n')));
  EXPECT_EQ(line2["result"]["ID"], id);
  EXPECT_FALSE(line2["result"].contains("TTL"));
}

TEST_F(V3ApiTest, MemberListStatusAndV3betaAlias) {
  member_.add_self("http://127.0.0.1:2380", "http://127.0.0.1:2379");
  Reply m = post("/v3/cluster/member/list", json::object());
  ASSERT_EQ(m.status, 200) << m.raw;
  EXPECT_FALSE(m.body["header"].contains("revision"));
  ASSERT_EQ(m.body["members"].size(), 1u);
  EXPECT_EQ(m.body["members"][0]["ID"], std::to_string(LocalMember::kMemberId));
  EXPECT_EQ(m.body["members"][0]["peerURLs"], json({"http://127.0.0.1:2380"}));
  EXPECT_EQ(post("/v3/cluster/member/list", {{"linearizable", true}}).body, m.body);

  Reply s = post("/v3/maintenance/status", json::object());
  ASSERT_EQ(s.status, 200) << s.raw;
  EXPECT_EQ(s.body["version"], "3.4.0");
  EXPECT_EQ(s.body["leader"], std::to_string(LocalMember::kMemberId));
  EXPECT_EQ(s.body["raftIndex"], "1");
  EXPECT_EQ(s.body["raftAppliedIndex"], "1");
  EXPECT_GT(std::stoll(s.body["dbSize"].get<std::string>()), 0);

  put("beta", "1");
  EXPECT_EQ(post("/v3beta/kv/range", {{"key", b64("beta")}}).body["count"], "1");
}

TEST_F(V3ApiTest, HealthVersionMetrics) {
  Reply h = call(client_, server_.url("/health"), "", "GET");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.raw, R"({"health":"true"})");
  member_.has_leader = false;
  Reply nl = call(client_, server_.url("/health"), "", "GET");
  EXPECT_EQ(nl.status, 503);
  EXPECT_EQ(nl.raw, R"({"health":"false"})");
  member_.has_leader = true;
  member_.swallow_barriers = true;  // a linearizable read cannot finish
  EXPECT_EQ(call(client_, server_.url("/health"), "", "GET").status, 503);
  member_.swallow_barriers = false;
  EXPECT_EQ(call(client_, server_.url("/health"), "", "GET").status, 200);
  EXPECT_EQ(call(client_, server_.url("/health"), "", "POST").status, 405);

  Reply v = call(client_, server_.url("/version"), "", "GET");
  EXPECT_EQ(v.body, json({{"etcdserver", "3.4.0"}, {"etcdcluster", "3.4.0"}}));
  EXPECT_EQ(v.content_type, "application/json");

  put("m1", "v");
  put("m2", "v");
  Reply m = call(client_, server_.url("/metrics"), "", "GET");
  ASSERT_EQ(m.status, 200);
  for (const char* line :
       {"etcd_server_has_leader 1", "etcd_server_is_leader 1",
        "etcd_server_leader_changes_seen_total 0", "etcd_server_proposals_committed_total 2",
        "etcd_server_proposals_applied_total 2", "etcd_server_proposals_pending 0",
        "etcd_server_proposals_failed_total 0", "etcd_debugging_mvcc_keys_total 2",
        "etcd_server_health_failures 2", "etcd_server_health_success 2",
        "# TYPE etcd_mvcc_db_total_size_in_bytes gauge",
        "# TYPE etcd_network_client_grpc_received_bytes_total counter",
        "# TYPE process_resident_memory_bytes gauge"})
    EXPECT_NE(m.raw.find(line), std::string::npos) << line << "\n" << m.raw;
}

// Catch-up from an old revision, then live events, with prev_kv; a client
// that hangs up loses its subscription.
TEST_F(V3ApiTest, WatchCatchesUpThenStreamsLiveAndCancelsOnDisconnect) {
  const int64_t first = put("w/a", "1");
  put("w/b", "2");
  put("other", "x");
  put("w/a", "3");
  StreamReader w(server_.url("/v3/watch"), json({{"create_request",
                                                  {{"key", b64("w/")},
                                                   {"range_end", b64("w0")},
                                                   {"start_revision", std::to_string(first)},
                                                   {"prev_kv", true}}}})
                                               .dump());
  json created = w.next();
  ASSERT_TRUE(created.is_object());
  EXPECT_EQ(created["result"]["created"], true);
  EXPECT_FALSE(created["result"].contains("watch_id"));  // id 0 omitted
  EXPECT_EQ(created["result"]["header"]["revision"], "5");

  std::vector<json> events;
  while (events.size() < 3) {
    json j = w.next();
    ASSERT_TRUE(j.is_object()) << "history incomplete";
    for (auto& e : j["result"]["events"]) events.push_back(e);
  }
  EXPECT_EQ(events[0]["kv"]["key"], b64("w/a"));
  EXPECT_EQ(events[1]["kv"]["key"], b64("w/b"));
  EXPECT_EQ(events[2]["kv"]["value"], b64("3"));
  EXPECT_EQ(events[2]["prev_kv"]["value"], b64("1"));
  EXPECT_EQ(member_.subscriber_count(), 1u);

  put("w/c", "live");
  post("/v3/kv/deleterange", {{"key", b64("w/a")}});
  json live = w.next();
  EXPECT_EQ(live["result"]["events"][0]["kv"]["value"], b64("live")) << live;
  json del = w.next();
  ASSERT_TRUE(del.is_object());
  const json& de = del["result"]["events"][0];
  EXPECT_EQ(de["type"], "DELETE");
  EXPECT_EQ(de["kv"], json({{"key", b64("w/a")}, {"mod_revision", "7"}}));
  EXPECT_EQ(de["prev_kv"]["value"], b64("3"));

  w.hang_up([&] { put("w/d", "wake the reader so it hangs up"); });
  EXPECT_TRUE(wait_until([&] { return member_.subscriber_count() == 0; }))
      << "the watch outlived its client";
  EXPECT_GT(put("after", "watch"), 8);
}

// Found by tests/robustness (partition-leader, seed 107): the isolated old
// leader rejoined by installing a snapshot, and a watcher connected to it
// never got the revisions the install jumped over.
TEST_F(V3ApiTest, WatchGetsTheRevisionsASnapshotInstallJumpedOver) {
  put("j/a", "0");
  StreamReader w(server_.url("/v3/watch"),
                 json({{"create_request", {{"key", b64("j/")}, {"range_end", b64("j0")}}}}).dump());
  EXPECT_EQ(w.next()["result"]["created"], true);
  member_.silent_applies = true;  // the state moves on without events...
  put("j/a", "1");
  put("x", "unwatched");
  put("j/b", "2");
  member_.silent_applies = false;
  member_.publish_jump();  // ...and the member says so
  std::vector<json> events;
  while (events.size() < 2) {
    json j = w.next();
    ASSERT_TRUE(j.is_object()) << "the jumped-over revisions never came";
    for (auto& e : j["result"]["events"]) events.push_back(e);
  }
  EXPECT_EQ(events[0]["kv"]["value"], b64("1"));
  EXPECT_EQ(events[1]["kv"]["key"], b64("j/b"));
  put("j/c", "3");  // live again, nothing repeated
  json live = w.next();
  ASSERT_EQ(live["result"]["events"].size(), 1u) << live;
  EXPECT_EQ(live["result"]["events"][0]["kv"]["key"], b64("j/c"));
  w.hang_up([&] { put("j/d", "wake"); });
}

// The same jump noticed from the next applied batch (its first revision does
// not follow the last one seen), and a jump past a compaction cancels the
// watcher with the compacted revision, as etcd does.  (The second watcher,
// from a future revision, is not behind the compaction; its progress
// notifications keep the stream talking so the test can hang up.)
TEST_F(V3ApiTest, WatchNoticesAJumpFromTheNextEventsAndCancelsPastACompaction) {
  put("k", "0");
  StreamReader w(
      server_.url("/v3/watch"),
      json({{"create_request", {{"key", b64("k")}}}}).dump() + "\n" +
          json({{"create_request",
                 {{"key", b64("z")}, {"start_revision", "1000"}, {"progress_notify", true}}}})
              .dump());
  auto next = [&w] {  // the next answer that is not a progress notification
    for (;;) {
      json j = w.next();
      if (!j.is_object() || j["result"].contains("events") || j["result"].contains("created") ||
          j["result"].contains("canceled"))
        return j;
    }
  };
  EXPECT_EQ(next()["result"]["created"], true);
  EXPECT_EQ(next()["result"]["created"], true);
  member_.silent_applies = true;
  put("k", "1");
  member_.silent_applies = false;
  put("k", "2");
  std::vector<json> events;
  while (events.size() < 2) {
    json j = next();
    ASSERT_TRUE(j.is_object());
    for (auto& e : j["result"]["events"]) events.push_back(e);
  }
  EXPECT_EQ(events[0]["kv"]["value"], b64("1"));
  EXPECT_EQ(events[1]["kv"]["value"], b64("2"));

  member_.silent_applies = true;
  put("k", "3");
  const int64_t r = put("k", "4");
  ASSERT_EQ(post("/v3/kv/compaction", {{"revision", std::to_string(r)}}).status, 200);
  member_.silent_applies = false;
  member_.publish_jump();
  json c = next();
  ASSERT_TRUE(c.is_object());
  EXPECT_EQ(c["result"]["canceled"], true) << c;
  EXPECT_EQ(c["result"]["compact_revision"], std::to_string(r)) << c;
  w.hang_up([&] { put("k", "wake"); });
}

TEST_F(V3ApiTest, WatchFromCompactedRevisionIsCanceled) {
  put("c", "1");
  put("c", "2");
  const int64_t r = put("c", "3");
  ASSERT_EQ(post("/v3/kv/compaction", {{"revision", std::to_string(r)}}).status, 200);
  // A second watcher on the same stream, from now on, is not disturbed.
  StreamReader w(server_.url("/v3/watch"), watch_from_then_now("c", "2"));
  EXPECT_EQ(w.next()["result"]["created"], true);
  expect_compacted(w.next(), std::to_string(r));
  json c2 = w.next();
  EXPECT_EQ(c2["result"]["created"], true);
  EXPECT_EQ(c2["result"]["watch_id"], "1");
  put("c", "4");
  json live = w.next();
  EXPECT_EQ(live["result"]["watch_id"], "1");
  EXPECT_EQ(live["result"]["events"][0]["kv"]["value"], b64("4"));
  // The stream stays open (as etcd's does) until the client hangs up.
  w.hang_up([&] { put("c", "wake"); });
}

// A negative start revision, as etcd 3.4 answers it: its store's compacted
// revision is -1 until the first compaction, and a start below it is
// compacted.  (muster answered such a watcher as one from now on.)
TEST_F(V3ApiTest, WatchFromNegativeRevisionIsEtcds) {
  put("n", "1");
  put("n", "2");
  {
    // Never compacted: -1 is the whole history, -2 is compacted at -1.
    StreamReader w(
        server_.url("/v3/watch"),
        json({{"create_request", {{"key", b64("n")}, {"start_revision", "-1"}}}}).dump() + "\n" +
            json({{"create_request", {{"key", b64("n")}, {"start_revision", "-2"}}}}).dump());
    EXPECT_EQ(w.next()["result"]["created"], true);
    json all = w.next();
    ASSERT_EQ(all["result"]["events"].size(), 2u) << all;
    EXPECT_EQ(all["result"]["events"][0]["kv"]["value"], b64("1"));
    EXPECT_EQ(w.next()["result"]["created"], true);
    expect_compacted(w.next(), "-1");
    w.hang_up([&] { put("n", "wake"); });
  }
  const int64_t r = put("n", "3");
  ASSERT_EQ(post("/v3/kv/compaction", {{"revision", std::to_string(r)}}).status, 200);
  StreamReader w(server_.url("/v3/watch"), watch_from_then_now("n", "-1"));
  EXPECT_EQ(w.next()["result"]["created"], true);
  expect_compacted(w.next(), std::to_string(r));
  EXPECT_EQ(w.next()["result"]["created"], true);
  w.hang_up([&] { put("n", "wake"); });
}

TEST_F(V3ApiTest, WatchFiltersSeveralWatchersAndBadBody) {
  // Two watchers on one stream (one create_request per line), one of them
  // without deletes.
  std::string body =
      json({{"create_request", {{"key", b64("f")}, {"filters", {"NODELETE"}}}}}).dump() + "\n" +
      json({{"create_request", {{"key", b64("g")}, {"watch_id", "7"}}}}).dump() + "\n";
  StreamReader w(server_.url("/v3/watch"), body);
  EXPECT_EQ(w.next()["result"]["created"], true);
  json c2 = w.next();
  EXPECT_EQ(c2["result"]["watch_id"], "7");
  put("f", "1");
  post("/v3/kv/deleterange", {{"key", b64("f")}});
  put("g", "1");
  json a = w.next();
  EXPECT_FALSE(a["result"].contains("watch_id"));
  EXPECT_EQ(a["result"]["events"][0]["kv"]["key"], b64("f"));
  json b = w.next();  // the delete of f was filtered out
  EXPECT_EQ(b["result"]["watch_id"], "7") << b;
  EXPECT_EQ(b["result"]["events"][0]["kv"]["key"], b64("g"));

  w.hang_up([&] { put("f", "wake"); });
  Reply bad = post_raw("/v3/watch", "{bad");
  expect_error(bad, 400, 3, "");
}

TEST_F(V3ApiTest, WatchProgressCancelAndDuplicateId) {
  std::string body =
      json({{"create_request", {{"key", b64("p")}, {"progress_notify", true}}}}).dump() + "\n" +
      json({{"create_request", {{"key", b64("q")}, {"watch_id", "5"}}}}).dump() + "\n" +
      json({{"create_request", {{"key", b64("q")}, {"watch_id", "5"}}}}).dump() + "\n" +
      json({{"progress_request", json::object()}}).dump() + "\n" +
      json({{"cancel_request", {{"watch_id", "5"}}}}).dump();
  StreamReader w(server_.url("/v3/watch"), body);
  EXPECT_EQ(w.next()["result"]["created"], true);
  EXPECT_EQ(w.next()["result"]["watch_id"], "5");
  json dup = w.next()["result"];
  EXPECT_EQ(dup["watch_id"], "-1");
  EXPECT_EQ(dup["canceled"], true);
  EXPECT_EQ(dup["cancel_reason"], "mvcc: duplicate watch ID provided on the WatchStream");
  json progress = w.next()["result"];
  EXPECT_EQ(progress["watch_id"], "-1");
  EXPECT_EQ(progress["header"]["revision"], "1");
  EXPECT_FALSE(progress.contains("events"));
  json canceled = w.next()["result"];
  EXPECT_EQ(canceled["watch_id"], "5");
  EXPECT_EQ(canceled["canceled"], true);
  // progress_notify: header-only responses for watch 0 every interval
  // (200 ms here).
  json tick = w.next(3s);
  ASSERT_TRUE(tick.is_object());
  EXPECT_FALSE(tick["result"].contains("watch_id"));
  EXPECT_FALSE(tick["result"].contains("events"));
  EXPECT_EQ(tick["result"]["header"]["revision"], "1");
  put("q", "canceled: no event");
  put("p", "1");
  json ev = w.next();
  while (ev.is_object() && !ev["result"].contains("events")) ev = w.next();  // more ticks
  EXPECT_EQ(ev["result"]["events"][0]["kv"]["key"], b64("p")) << ev;
  w.hang_up([&] { put("p", "wake"); });
}

// Writes racing with a watch created from revision 1: every revision arrives
// exactly once, in order, across the switch from history to live events.
TEST_F(V3ApiTest, WatchCatchUpRacingWritesLosesAndRepeatsNothing) {
  constexpr int kWrites = 3000;
  for (int i = 0; i < 500; ++i) put("r", std::to_string(i));
  std::atomic<bool> go{false};
  std::thread writer([&] {
    net::HttpClient c;
    while (!go) std::this_thread::yield();
    for (int i = 500; i < kWrites; ++i)
      call(c, server_.url("/v3/kv/put"),
           json({{"key", b64("r")}, {"value", b64(std::to_string(i))}}).dump());
  });
  go = true;
  StreamReader w(server_.url("/v3/watch"),
                 json({{"create_request", {{"key", b64("r")}, {"start_revision", "1"}}}}).dump());
  ASSERT_EQ(w.next()["result"]["created"], true);
  int64_t expect_rev = 2;  // the first put
  while (expect_rev < kWrites + 2) {
    json j = w.next(10s);
    ASSERT_TRUE(j.is_object()) << "stalled before revision " << expect_rev;
    for (auto& e : j["result"]["events"]) {
      ASSERT_EQ(e["kv"]["mod_revision"], std::to_string(expect_rev));
      ++expect_rev;
    }
  }
  writer.join();
  w.hang_up([&] { put("r", "wake"); });
}

}  // namespace
}  // namespace muster::server::testing
