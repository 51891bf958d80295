// --initial-cluster parsing and URLsMap.String(), etcd 3.4 semantics.
#include "node/config/urls.h"

#include <gtest/gtest.h>

namespace muster::config {
namespace {

TEST(InitialCluster, NamesMapToSortedUrlLists) {
  auto m = parse_initial_cluster("n2=http://c:2380,n1=http://b:2380,n1=http://a:2380");
  ASSERT_TRUE(m.ok()) << m.error();
  ASSERT_EQ(m->size(), 2u);
  EXPECT_EQ(m->at("n1"), (std::vector<std::string>{"http://a:2380", "http://b:2380"}));
  EXPECT_EQ(m->at("n2"), (std::vector<std::string>{"http://c:2380"}));
  EXPECT_EQ(urls_map_string(*m), "n1=http://a:2380,n1=http://b:2380,n2=http://c:2380");
}

TEST(InitialCluster, StringRoundTrips) {
  for (const char* in :
       {"infra0=http://10.0.1.10:2380", "a=https://[::1]:2380,b=http://127.0.0.1:1,b=unix://x:0",
        "z=http://h:1,a=http://h:2,m=http://h:3"}) {
    auto m = parse_initial_cluster(in);
    ASSERT_TRUE(m.ok()) << in << ": " << m.error();
    const std::string s = urls_map_string(*m);
    auto again = parse_initial_cluster(s);
    ASSERT_TRUE(again.ok()) << s;
    EXPECT_EQ(*again, *m) << s;
    EXPECT_EQ(urls_map_string(*again), s);
  }
}

TEST(InitialCluster, EmptyItemsAreSkippedAndSpacesTrimmed) {
  auto m = parse_initial_cluster(",a=http://h:1,,b= http://h:2 ,");
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(urls_map_string(*m), "a=http://h:1,b=http://h:2");
  auto empty = parse_initial_cluster("");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  EXPECT_EQ(urls_map_string(*empty), "");
}

TEST(InitialCluster, BadItemsGetEtcdErrors) {
  EXPECT_EQ(parse_initial_cluster("a=http://h:1,b").error(),
            "URL scheme must be http, https, unix, or unixs: ");
  EXPECT_EQ(parse_initial_cluster("a=http://h").error(),
            "URL address does not have the form \"host:port\": http://h");
  EXPECT_EQ(parse_initial_cluster("a=http://h:1/p").error(),
            "URL must not contain a path: http://h:1/p");
}

TEST(InitialCluster, DuplicateUrlsAreRejected) {
  EXPECT_EQ(parse_initial_cluster("a=http://h:1,a=http://h:1").error(),
            "initial cluster a=http://h:1,a=http://h:1 has duplicate url");
  EXPECT_EQ(parse_initial_cluster("a=http://h:1,b=http://h:1").error(),
            "initial cluster a=http://h:1,b=http://h:1 has duplicate url");
  // The same host on different ports is fine.
  EXPECT_TRUE(parse_initial_cluster("a=http://h:1,b=http://h:2").ok());
}

TEST(EtcdUrl, Rules) {
  EXPECT_EQ(parse_etcd_url("HTTP://H:1")->text, "http://H:1");
  EXPECT_EQ(parse_etcd_url("https://u@h:1")->host, "h");
  EXPECT_EQ(parse_etcd_url("http://[fe80::1]:2380")->host, "fe80::1");
  EXPECT_EQ(parse_etcd_url("http://h:")->port, "");
  EXPECT_FALSE(parse_etcd_url("localhost:2380").ok());
  EXPECT_FALSE(parse_etcd_url("127.0.0.1:2380").ok());
  EXPECT_FALSE(parse_etcd_url("http://a:b:c").ok());
  EXPECT_FALSE(parse_etcd_url("http:h:1").ok());
  EXPECT_FALSE(parse_etcd_url("http://h:1/").ok());
  auto list = parse_url_list("http://b:1,http://a:1");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, (std::vector<std::string>{"http://a:1", "http://b:1"}));
  EXPECT_FALSE(parse_url_list("").ok());
}

TEST(EtcdUrl, IpLiterals) {
  EXPECT_TRUE(is_ip_literal("127.0.0.1"));
  EXPECT_TRUE(is_ip_literal("::"));
  EXPECT_TRUE(is_ip_literal("::ffff:1.2.3.4"));
  EXPECT_FALSE(is_ip_literal("localhost"));
  EXPECT_FALSE(is_ip_literal("1.2.3"));
  EXPECT_FALSE(is_ip_literal(""));
}

}  // namespace
}  // namespace muster::config
