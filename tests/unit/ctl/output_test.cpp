// Output formats from canned gateway responses.  The expected strings are
// what etcdctl 3.4.23 printed for the same data against a real etcd 3.4.23
// (member bdae9bbc11dd390d of cluster d1cfaf999eb97a2a).
#include "ctl/output.h"

#include <gtest/gtest.h>

#include <sstream>

namespace muster::ctl {
namespace {

using json = nlohmann::ordered_json;

const char* kHeader =
    R"("header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"6","raft_term":"2"})";

json gateway(const std::string& rest) {
  return json::parse("{" + std::string(kHeader) + (rest.empty() ? "" : "," + rest) + "}");
}

json range_response() {
  return gateway(
      R"("kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"},)"
      R"({"key":"Zm9vMg==","create_revision":"3","mod_revision":"3","version":"1","value":"YmFyIDI="}],"count":"2")");
}

json member_list() {
  return json::parse(
      R"({"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","raft_term":"2"},)"
      R"("members":[{"ID":"13668033151171901709","name":"e1","peerURLs":["http://127.0.0.1:23801"],)"
      R"("clientURLs":["http://127.0.0.1:23791"]}]})");
}

template <typename F>
std::string printed(F&& f) {
  std::ostringstream out;
  EXPECT_TRUE(f(out));
  return out.str();
}

TEST(GetOutput, SimpleIsKeyLineThenValueLine) {
  EXPECT_EQ(printed([&](auto& o) { return print_get(range_response(), OutputFormat::kSimple, o); }),
            "foo\nbar\nfoo2\nbar 2\n");
  // --keys-only: the gateway leaves the values out; etcdctl still prints an
  // empty line for each, and so for an empty value.
  const json keys_only = gateway(R"("kvs":[{"key":"Zm9v"},{"key":"Zm9vMg=="}],"count":"2")");
  EXPECT_EQ(printed([&](auto& o) { return print_get(keys_only, OutputFormat::kSimple, o); }),
            "foo\n\nfoo2\n\n");
  EXPECT_EQ(printed([&](auto& o) { return print_get(gateway(""), OutputFormat::kSimple, o); }), "");
}

TEST(GetOutput, JsonHasNumbersWhereTheGatewayHasStrings) {
  EXPECT_EQ(
      printed([&](auto& o) { return print_get(range_response(), OutputFormat::kJson, o); }),
      R"({"header":{"cluster_id":15118495548433857066,"member_id":13668033151171901709,"revision":6,"raft_term":2},)"
      R"("kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":2,"version":1,"value":"YmFy"},)"
      R"({"key":"Zm9vMg==","create_revision":3,"mod_revision":3,"version":1,"value":"YmFyIDI="}],"count":2})"
      "\n");
}

TEST(GetOutput, JsonFieldOrderIsEtcdsWhateverTheGatewaySent) {
  const json shuffled = json::parse(
      R"({"count":"1","kvs":[{"value":"YmFy","version":"1","key":"Zm9v"}],"header":{"raft_term":"2","revision":"6"}})");
  EXPECT_EQ(
      printed([&](auto& o) { return print_get(shuffled, OutputFormat::kJson, o); }),
      R"({"header":{"revision":6,"raft_term":2},"kvs":[{"key":"Zm9v","version":1,"value":"YmFy"}],"count":1})"
      "\n");
}

TEST(KvOutput, TableIsNotOfferedForKvCommands) {
  std::ostringstream out;
  EXPECT_FALSE(print_get(range_response(), OutputFormat::kTable, out));
  EXPECT_FALSE(print_put(gateway(""), OutputFormat::kTable, out));
  EXPECT_FALSE(print_del(gateway(""), OutputFormat::kTable, out));
  EXPECT_FALSE(print_watch(gateway(""), OutputFormat::kTable, out));
  EXPECT_EQ(out.str(), "");
}

TEST(PutDelOutput, SimpleAndJson) {
  EXPECT_EQ(printed([&](auto& o) { return print_put(gateway(""), OutputFormat::kSimple, o); }),
            "OK\n");
  EXPECT_EQ(printed([&](auto& o) {
              return print_put(gateway(R"("prev_kv":{"key":"eA==","value":"MQ=="})"),
                               OutputFormat::kSimple, o);
            }),
            "OK\nx\n1\n");
  EXPECT_EQ(
      printed([&](auto& o) { return print_put(gateway(""), OutputFormat::kJson, o); }),
      R"({"header":{"cluster_id":15118495548433857066,"member_id":13668033151171901709,"revision":6,"raft_term":2}})"
      "\n");
  EXPECT_EQ(printed([&](auto& o) {
              return print_del(gateway(R"("deleted":"1")"), OutputFormat::kSimple, o);
            }),
            "1\n");
  // Nothing deleted: the gateway omits the zero; etcdctl prints 0.
  EXPECT_EQ(printed([&](auto& o) { return print_del(gateway(""), OutputFormat::kSimple, o); }),
            "0\n");
  EXPECT_EQ(
      printed(
          [&](auto& o) { return print_del(gateway(R"("deleted":"1")"), OutputFormat::kJson, o); }),
      R"({"header":{"cluster_id":15118495548433857066,"member_id":13668033151171901709,"revision":6,"raft_term":2},"deleted":1})"
      "\n");
}

TEST(WatchOutput, SimpleAndEtcdctlsGoStructJson) {
  const json put = json::parse(
      R"({"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"11","raft_term":"2"},)"
      R"("events":[{"kv":{"key":"dzE=","create_revision":"11","mod_revision":"11","version":"1","value":"djE="}}]})");
  const json del = json::parse(
      R"({"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"12","raft_term":"2"},)"
      R"("events":[{"type":"DELETE","kv":{"key":"dzE=","mod_revision":"12"}}]})");
  EXPECT_EQ(printed([&](auto& o) { return print_watch(put, OutputFormat::kSimple, o); }),
            "PUT\nw1\nv1\n");
  EXPECT_EQ(printed([&](auto& o) { return print_watch(del, OutputFormat::kSimple, o); }),
            "DELETE\nw1\n\n");
  EXPECT_EQ(
      printed([&](auto& o) { return print_watch(put, OutputFormat::kJson, o); }),
      R"({"Header":{"cluster_id":15118495548433857066,"member_id":13668033151171901709,"revision":11,"raft_term":2},)"
      R"("Events":[{"kv":{"key":"dzE=","create_revision":11,"mod_revision":11,"version":1,"value":"djE="}}],)"
      R"("CompactRevision":0,"Canceled":false,"Created":false})"
      "\n");
  EXPECT_EQ(
      printed([&](auto& o) { return print_watch(del, OutputFormat::kJson, o); }),
      R"({"Header":{"cluster_id":15118495548433857066,"member_id":13668033151171901709,"revision":12,"raft_term":2},)"
      R"("Events":[{"type":1,"kv":{"key":"dzE=","mod_revision":12}}],"CompactRevision":0,"Canceled":false,"Created":false})"
      "\n");
}

TEST(MemberOutput, ListInEveryFormat) {
  EXPECT_EQ(
      printed([&](auto& o) { return print_member_list(member_list(), OutputFormat::kSimple, o); }),
      "bdae9bbc11dd390d, started, e1, http://127.0.0.1:23801, http://127.0.0.1:23791, false\n");
  EXPECT_EQ(
      printed([&](auto& o) { return print_member_list(member_list(), OutputFormat::kTable, o); }),
      "+------------------+---------+------+------------------------+------------------------+-----"
      "-------+\n"
      "|        ID        | STATUS  | NAME |       PEER ADDRS       |      CLIENT ADDRS      | IS "
      "LEARNER |\n"
      "+------------------+---------+------+------------------------+------------------------+-----"
      "-------+\n"
      "| bdae9bbc11dd390d | started |   e1 | http://127.0.0.1:23801 | http://127.0.0.1:23791 |     "
      " false |\n"
      "+------------------+---------+------+------------------------+------------------------+-----"
      "-------+\n");
  EXPECT_EQ(
      printed([&](auto& o) { return print_member_list(member_list(), OutputFormat::kJson, o); }),
      R"({"header":{"cluster_id":15118495548433857066,"member_id":13668033151171901709,"raft_term":2},)"
      R"("members":[{"ID":13668033151171901709,"name":"e1","peerURLs":["http://127.0.0.1:23801"],"clientURLs":["http://127.0.0.1:23791"]}]})"
      "\n");
}

TEST(MemberOutput, UnstartedLearnerHasNoNameAndNoClientUrls) {
  json list = member_list();
  list["members"].push_back(json::parse(
      R"({"ID":"7788266211882072418","peerURLs":["http://127.0.0.1:23802","http://10.0.0.2:23802"],"isLearner":true})"));
  EXPECT_EQ(
      printed([&](auto& o) { return print_member_list(list, OutputFormat::kSimple, o); }),
      "bdae9bbc11dd390d, started, e1, http://127.0.0.1:23801, http://127.0.0.1:23791, false\n"
      "6c157adb0f687962, unstarted, , http://127.0.0.1:23802,http://10.0.0.2:23802, , true\n");
}

TEST(MemberOutput, ShowReplacementsAddsWhomEachMemberReplacedAndWhen) {
  json list = member_list();
  list["members"].push_back(json::parse(
      R"({"ID":"7788266211882072418","name":"e4","peerURLs":["http://127.0.0.1:23804"],)"
      R"("clientURLs":["http://127.0.0.1:23794"]})"));
  // e4 (6c157adb0f687962) took e3's seat; a record of a member since
  // removed (1234) shows only in json.
  const json history = json::parse(
      R"([{"member_id":"6c157adb0f687962","name":"e4","peer_urls":["http://127.0.0.1:23804"],)"
      R"("replaced":{"id":"f13fa74fae0c88f6","name":"e3","unheard_for_ms":3012,"reason":"r"},)"
      R"("replaced_at":"2026-12-07T03:18:47Z","threshold_ms":3000,"leader":"bdae9bbc11dd390d"},)"
      R"({"member_id":"1234","name":"old","replaced":null,"replaced_at":"2026-12-01T00:00:00Z"}])");
  EXPECT_EQ(
      printed([&](auto& o) {
        return print_member_list(list, OutputFormat::kSimple, o, &history);
      }),
      "bdae9bbc11dd390d, started, e1, http://127.0.0.1:23801, http://127.0.0.1:23791, false, , \n"
      "6c157adb0f687962, started, e4, http://127.0.0.1:23804, http://127.0.0.1:23794, false, "
      "e3 (f13fa74fae0c88f6), 2026-12-07T03:18:47Z\n");
  const std::string table =
      printed([&](auto& o) { return print_member_list(list, OutputFormat::kTable, o, &history); });
  EXPECT_NE(table.find("| IS LEARNER |       REPLACED        |     REPLACED AT      |"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("| e3 (f13fa74fae0c88f6) | 2026-12-07T03:18:47Z |"), std::string::npos)
      << table;
  const json j = json::parse(
      printed([&](auto& o) { return print_member_list(list, OutputFormat::kJson, o, &history); }));
  EXPECT_EQ(j["members"][1]["ID"], 7788266211882072418ULL);  // etcdctl's shape, unchanged
  EXPECT_EQ(j["replacements"], history);
  // Without the option: etcdctl's output, byte for byte (ListInEveryFormat).
  EXPECT_EQ(printed([&](auto& o) { return print_member_list(list, OutputFormat::kSimple, o); })
                .find("e3"),
            std::string::npos);
}

TEST(MemberOutput, AddPrintsTheEnvironmentTheNewMemberNeeds) {
  const json add = json::parse(
      R"({"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","raft_term":"2"},)"
      R"("member":{"ID":"7788266211882072418","peerURLs":["http://127.0.0.1:23802"],"isLearner":true},)"
      R"("members":[{"ID":"7788266211882072418","peerURLs":["http://127.0.0.1:23802"],"isLearner":true},)"
      R"({"ID":"13668033151171901709","name":"e1","peerURLs":["http://127.0.0.1:23801"],"clientURLs":["http://127.0.0.1:23791"]}]})");
  EXPECT_EQ(printed([&](auto& o) { return print_member_add(add, "e2", OutputFormat::kSimple, o); }),
            "Member 6c157adb0f687962 added to cluster d1cfaf999eb97a2a\n\n"
            "ETCD_NAME=\"e2\"\n"
            "ETCD_INITIAL_CLUSTER=\"e2=http://127.0.0.1:23802,e1=http://127.0.0.1:23801\"\n"
            "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"http://127.0.0.1:23802\"\n"
            "ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n");
  std::ostringstream table;
  EXPECT_FALSE(print_member_add(add, "e2", OutputFormat::kTable, table));
}

TEST(MemberOutput, ChangesPadIdsToSixteenColumns) {
  EXPECT_EQ(printed([&](auto& o) {
              return print_member_change(member_list(), 0x6c157adb0f687962, "removed from",
                                         OutputFormat::kSimple, o);
            }),
            "Member 6c157adb0f687962 removed from cluster d1cfaf999eb97a2a\n");
  EXPECT_EQ(printed([&](auto& o) {
              return print_member_change(member_list(), 0xabc, "promoted in", OutputFormat::kSimple,
                                         o);
            }),
            "Member              abc promoted in cluster d1cfaf999eb97a2a\n");
}

TEST(EndpointOutput, HealthInEveryFormat) {
  const std::vector<EndpointHealth> h = {
      {"127.0.0.1:23791", true, std::chrono::nanoseconds(1'124'152), ""}};
  EXPECT_EQ(printed([&](auto& o) { return print_endpoint_health(h, OutputFormat::kSimple, o, o); }),
            "127.0.0.1:23791 is healthy: successfully committed proposal: took = 1.124152ms\n");
  EXPECT_EQ(printed([&](auto& o) { return print_endpoint_health(h, OutputFormat::kTable, o, o); }),
            "+-----------------+--------+------------+-------+\n"
            "|    ENDPOINT     | HEALTH |    TOOK    | ERROR |\n"
            "+-----------------+--------+------------+-------+\n"
            "| 127.0.0.1:23791 |   true | 1.124152ms |       |\n"
            "+-----------------+--------+------------+-------+\n");
  const std::vector<EndpointHealth> j = {
      {"127.0.0.1:23791", true, std::chrono::nanoseconds(963'013), ""},
      {"127.0.0.1:9", false, std::chrono::seconds(2), "connect: refused"}};
  EXPECT_EQ(printed([&](auto& o) { return print_endpoint_health(j, OutputFormat::kJson, o, o); }),
            R"([{"endpoint":"127.0.0.1:23791","health":true,"took":"963.013µs"},)"
            R"({"endpoint":"127.0.0.1:9","health":false,"took":"2s","error":"connect: refused"}])"
            "\n");
  std::ostringstream out, err;
  EXPECT_TRUE(print_endpoint_health(j, OutputFormat::kSimple, out, err));
  EXPECT_EQ(out.str(),
            "127.0.0.1:23791 is healthy: successfully committed proposal: took = 963.013µs\n");
  EXPECT_EQ(err.str(), "127.0.0.1:9 is unhealthy: failed to commit proposal: connect: refused\n");
}

TEST(EndpointOutput, StatusInEveryFormat) {
  const std::vector<EndpointStatus> s = {
      {"127.0.0.1:23791",
       gateway(
           R"("version":"3.4.23","dbSize":"20480","leader":"13668033151171901709","raftIndex":"13",)"
           R"("raftTerm":"2","raftAppliedIndex":"13","dbSizeInUse":"16384")")}};
  EXPECT_EQ(printed([&](auto& o) { return print_endpoint_status(s, OutputFormat::kSimple, o); }),
            "127.0.0.1:23791, bdae9bbc11dd390d, 3.4.23, 20 kB, true, false, 2, 13, 13, \n");
  EXPECT_EQ(printed([&](auto& o) { return print_endpoint_status(s, OutputFormat::kTable, o); }),
            "+-----------------+------------------+---------+---------+-----------+------------+---"
            "--------+------------+--------------------+--------+\n"
            "|    ENDPOINT     |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | "
            "RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |\n"
            "+-----------------+------------------+---------+---------+-----------+------------+---"
            "--------+------------+--------------------+--------+\n"
            "| 127.0.0.1:23791 | bdae9bbc11dd390d |  3.4.23 |   20 kB |      true |      false |   "
            "      2 |         13 |                 13 |        |\n"
            "+-----------------+------------------+---------+---------+-----------+------------+---"
            "--------+------------+--------------------+--------+\n");
  EXPECT_EQ(
      printed([&](auto& o) { return print_endpoint_status(s, OutputFormat::kJson, o); }),
      R"([{"Endpoint":"127.0.0.1:23791","Status":{"header":{"cluster_id":15118495548433857066,"member_id":13668033151171901709,"revision":6,"raft_term":2},)"
      R"("version":"3.4.23","dbSize":20480,"leader":13668033151171901709,"raftIndex":13,"raftTerm":2,"raftAppliedIndex":13,"dbSizeInUse":16384}}])"
      "\n");
}

TEST(Formatting, HumanizedBytesAsGoHumanize) {
  EXPECT_EQ(humanize_bytes(0), "0 B");
  EXPECT_EQ(humanize_bytes(9), "9 B");
  EXPECT_EQ(humanize_bytes(512), "512 B");
  EXPECT_EQ(humanize_bytes(20480), "20 kB");
  EXPECT_EQ(humanize_bytes(24576), "25 kB");
  EXPECT_EQ(humanize_bytes(1'500'000), "1.5 MB");
  EXPECT_EQ(humanize_bytes(2'147'483'648), "2.1 GB");
}

}  // namespace
}  // namespace muster::ctl
