#include "discovery/rules.h"

#include <gtest/gtest.h>

namespace muster::discovery {
namespace {

TEST(ParseSize, AcceptsIntegersInRange) {
  EXPECT_EQ(std::get<uint32_t>(parse_size("1", 9)), 1u);
  EXPECT_EQ(std::get<uint32_t>(parse_size("9", 9)), 9u);
}

TEST(ParseSize, RejectsWithAReason) {
  for (const char* bad :
       {"", "0", "-1", "10", "abc", "3x", "1e3", "3.0", " 3", "99999999999999999999"}) {
    auto r = parse_size(bad, 9);
    ASSERT_TRUE(std::holds_alternative<std::string>(r)) << bad;
    EXPECT_NE(std::get<std::string>(r).find("between 1 and 9"), std::string::npos)
        << bad << ": " << std::get<std::string>(r);
  }
}

TEST(TokenNames, GeneratedAndNamedForms) {
  EXPECT_TRUE(valid_token_name("0123456789abcdef0123456789abcdef"));
  EXPECT_TRUE(valid_token_name("my-cluster_token-01"));
  EXPECT_FALSE(valid_token_name("short"));
  EXPECT_FALSE(valid_token_name(std::string(65, 'a')));
  EXPECT_FALSE(valid_token_name("0123456789abcdef/123"));
  EXPECT_FALSE(valid_token_name("0123456789abcdef%2e"));
}

TEST(MemberIds, EtcdHexForm) {
  EXPECT_TRUE(valid_member_id("4d59f8148bb377e2"));
  EXPECT_TRUE(valid_member_id("1"));
  EXPECT_FALSE(valid_member_id("4D59F8148BB377E2"));
  EXPECT_FALSE(valid_member_id("4d59f8148bb377e21"));
  EXPECT_FALSE(valid_member_id("_config"));
  EXPECT_FALSE(valid_member_id(""));
}

TEST(SplitTokenPath, BareToken) {
  auto tp = std::get<TokenPath>(split_token_path("/0123456789abcdef0123456789abcdef"));
  EXPECT_EQ(tp.token, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(tp.prefix, "");
  EXPECT_EQ(tp.kind, TokenPath::Kind::kDirectory);
  EXPECT_EQ(tp.key(), "/0123456789abcdef0123456789abcdef");
}

TEST(SplitTokenPath, TrailingSlashIsTheDirectory) {
  auto tp = std::get<TokenPath>(split_token_path("/0123456789abcdef0123456789abcdef/"));
  EXPECT_EQ(tp.kind, TokenPath::Kind::kDirectory);
}

TEST(SplitTokenPath, MemberAndSizeUnderAPrefix) {
  auto m = std::get<TokenPath>(split_token_path(
      "/v2/keys/_etcd/registry/0123456789abcdef0123456789abcdef/4d59f8148bb377e2"));
  EXPECT_EQ(m.prefix, "/v2/keys/_etcd/registry");
  EXPECT_EQ(m.kind, TokenPath::Kind::kMember);
  EXPECT_EQ(m.member_id, "4d59f8148bb377e2");
  // Keys are printed as etcd's v2 API prints them: without "/v2/keys".
  EXPECT_TRUE(m.v2_keys_path());
  EXPECT_EQ(m.key(), "/_etcd/registry/0123456789abcdef0123456789abcdef/4d59f8148bb377e2");
  auto s =
      std::get<TokenPath>(split_token_path("/v2/keys/discovery/seed-003-token-abc/_config/size"));
  EXPECT_EQ(s.kind, TokenPath::Kind::kSize);
  EXPECT_EQ(s.token, "seed-003-token-abc");
  EXPECT_EQ(s.prefix, "/v2/keys/discovery");
}

TEST(SplitTokenPath, DirectoryUnderAPrefix) {
  auto d =
      std::get<TokenPath>(split_token_path("/v2/keys/discovery/0123456789abcdef0123456789abcdef"));
  EXPECT_EQ(d.kind, TokenPath::Kind::kDirectory);
  EXPECT_EQ(d.prefix, "/v2/keys/discovery");
  EXPECT_EQ(d.key(), "/discovery/0123456789abcdef0123456789abcdef");
}

TEST(SplitTokenPath, OtherPrefixesKeepTheirKeys) {
  auto d = std::get<TokenPath>(split_token_path("/v2/keysx/0123456789abcdef0123456789abcdef"));
  EXPECT_FALSE(d.v2_keys_path());
  EXPECT_EQ(d.key(), "/v2/keysx/0123456789abcdef0123456789abcdef");
  auto bare = std::get<TokenPath>(split_token_path("/0123456789abcdef0123456789abcdef"));
  EXPECT_FALSE(bare.v2_keys_path());
  EXPECT_EQ(bare.key(), "/0123456789abcdef0123456789abcdef");
}

TEST(SplitTokenPath, RefusesTraversalAndBadTokens) {
  EXPECT_TRUE(std::holds_alternative<std::string>(split_token_path("/../etc/passwd")));
  EXPECT_TRUE(std::holds_alternative<std::string>(
      split_token_path("/0123456789abcdef0123456789abcdef/../x")));
  EXPECT_TRUE(std::holds_alternative<std::string>(split_token_path("/short")));
  EXPECT_TRUE(std::holds_alternative<std::string>(split_token_path("/")));
  EXPECT_TRUE(std::holds_alternative<std::string>(split_token_path("/bad*token*characters!!")));
}

Token token_with(uint32_t size, std::vector<std::pair<std::string, uint64_t>> members) {
  Token t;
  t.size = size;
  for (auto& [id, ci] : members) t.members.push_back(Member{id, id + "=http://x", ci, ci, 0});
  return t;
}

TEST(FullRule, FirstSizeByCreatedIndexFormTheCluster) {
  auto t = token_with(3, {{"d", 9}, {"a", 2}, {"c", 7}, {"b", 5}});
  auto formed = cluster_members(t);
  ASSERT_EQ(formed.size(), 3u);
  EXPECT_EQ(formed[0].id, "a");
  EXPECT_EQ(formed[1].id, "b");
  EXPECT_EQ(formed[2].id, "c");
  EXPECT_FALSE(is_full_for(t, "a"));
  EXPECT_FALSE(is_full_for(t, "c"));
  EXPECT_TRUE(is_full_for(t, "d"));
  EXPECT_TRUE(is_full_for(t, "never-registered"));
}

TEST(FullRule, NotFullBeforeSizeRegistrations) {
  auto t = token_with(3, {{"a", 2}, {"b", 3}});
  EXPECT_FALSE(is_full_for(t, "z"));
  EXPECT_FALSE(is_complete(t));
}

TEST(Durations, GoSyntax) {
  EXPECT_EQ(parse_duration_ms("168h"), 168LL * 3600 * 1000);
  EXPECT_EQ(parse_duration_ms("1m30s"), 90'000);
  EXPECT_EQ(parse_duration_ms("500ms"), 500);
  EXPECT_EQ(parse_duration_ms("0"), 0);
  EXPECT_FALSE(parse_duration_ms("10"));
  EXPECT_FALSE(parse_duration_ms("5x"));
  EXPECT_FALSE(parse_duration_ms(""));
}

}  // namespace
}  // namespace muster::discovery
