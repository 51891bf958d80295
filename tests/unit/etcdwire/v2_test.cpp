// etcdwire/v2.h: etcd's v2 error table and NodeExtern's JSON shape.
#include "etcdwire/v2.h"

#include <gtest/gtest.h>

namespace muster::etcdwire {
namespace {

TEST(V2Errors, CodesCarryEtcdsMessagesAndStatuses) {
  EXPECT_STREQ(v2_error_message(kV2KeyNotFound), "Key not found");
  EXPECT_EQ(v2_error_status(kV2KeyNotFound), 404);
  EXPECT_EQ(v2_error_status(kV2NodeExist), 412);
  EXPECT_EQ(v2_error_status(kV2NotFile), 403);
  EXPECT_EQ(v2_error_status(kV2RaftInternal), 500);
  EXPECT_EQ(v2_error_status(kV2InvalidField), 400);
  EXPECT_STREQ(v2_error_message(999), "Unknown error");
}

TEST(V2Errors, BodyRoundTrips) {
  const std::string body = v2_error_body({kV2NodeExist, "Key already exists", "/a", 7});
  EXPECT_EQ(body, R"({"errorCode":105,"message":"Key already exists","cause":"/a","index":7})"
                  "\n");
  auto e = parse_v2_error(body);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, 105);
  EXPECT_EQ(e->cause, "/a");
  EXPECT_EQ(e->index, 7u);
  EXPECT_EQ(v2_error_body({kV2KeyNotFound, "Key not found", "", 3}),
            R"({"errorCode":100,"message":"Key not found","index":3})"
            "\n");
  EXPECT_FALSE(parse_v2_error("not json"));
  EXPECT_FALSE(parse_v2_error(R"({"action":"get"})"));
}

TEST(V2Nodes, FieldsInNodeExternOrderZeroValuesOmitted) {
  V2Node dir;
  dir.key = "/tok";
  dir.dir = true;
  dir.created_index = dir.modified_index = 4;
  V2Node file;
  file.key = "/tok/a";
  file.value = "";
  file.created_index = file.modified_index = 5;
  dir.nodes.push_back(file);
  EXPECT_EQ(v2_node_json(dir).dump(),
            R"({"key":"/tok","dir":true,"nodes":[{"key":"/tok/a","value":"","modifiedIndex":5,)"
            R"("createdIndex":5}],"modifiedIndex":4,"createdIndex":4})");
  V2Node back = parse_v2_node(nlohmann::json::parse(v2_node_json(dir).dump()));
  ASSERT_EQ(back.nodes.size(), 1u);
  EXPECT_EQ(back.nodes[0].key, "/tok/a");
  EXPECT_EQ(back.nodes[0].value, "");
  EXPECT_TRUE(back.dir);
  EXPECT_EQ(back.created_index, 4u);
}

}  // namespace
}  // namespace muster::etcdwire
