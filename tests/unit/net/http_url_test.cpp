// The value types of net/http.h and net/url.h: header folding, target
// splitting, percent coding, forms, response heads, URL parsing.
#include <gtest/gtest.h>

#include "net/http.h"
#include "net/url.h"

namespace muster::net {
namespace {

TEST(Headers, NamesAreCaseInsensitiveAndRepeatsAreJoined) {
  Headers h;
  h.set("Content-Type", "text/plain");
  EXPECT_EQ(h.get("content-type"), "text/plain");
  EXPECT_TRUE(h.has("CONTENT-TYPE"));
  h.add("X-Etcd-Index", "1");
  h.add("x-etcd-index", "2");
  EXPECT_EQ(h.get("X-ETCD-INDEX"), "1, 2");
  h.set("x-etcd-index", "7");
  EXPECT_EQ(h.get("X-Etcd-Index"), "7");
  h.erase("X-ETCD-index");
  EXPECT_FALSE(h.has("X-Etcd-Index"));
  EXPECT_EQ(h.all().size(), 1u);
}

TEST(Request, PathIsDecodedAndQueryIsKeptRaw) {
  Request r;
  r.target = "/v2/keys/a%2Fb%20c?wait=true&waitIndex=5";
  EXPECT_EQ(r.path(), "/v2/keys/a/b c");
  EXPECT_EQ(r.raw_query(), "wait=true&waitIndex=5");
  r.target = "/plain";
  EXPECT_EQ(r.path(), "/plain");
  EXPECT_EQ(r.raw_query(), "");
  // A malformed escape leaves the path as written rather than guessing.
  r.target = "/bad%zz?x";
  EXPECT_EQ(r.path(), "/bad%zz");
  r.target = "/%2e%2e/secret";
  EXPECT_EQ(r.path(), "/../secret");
}

TEST(PercentCoding, DecodesEscapesAndRejectsMalformedOnes) {
  EXPECT_EQ(percent_decode("a%20b"), "a b");
  EXPECT_EQ(percent_decode("a+b"), "a+b");
  EXPECT_EQ(percent_decode("a+b", true), "a b");
  EXPECT_EQ(percent_decode("%41%6a"), "Aj");
  EXPECT_EQ(percent_decode("100%"), std::nullopt);
  EXPECT_EQ(percent_decode("%4"), std::nullopt);
  EXPECT_EQ(percent_decode("%g0"), std::nullopt);
  EXPECT_EQ(percent_decode("%00"), std::string(1, '\0'));
  EXPECT_EQ(percent_encode("infra0=http://10.0.1.10:2380"),
            "infra0%3Dhttp%3A%2F%2F10.0.1.10%3A2380");
  EXPECT_EQ(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
  EXPECT_EQ(percent_decode(percent_encode("n1=http://a:2380,n2=http://[::1]:2380 x")),
            "n1=http://a:2380,n2=http://[::1]:2380 x");
}

TEST(Form, ParsesPairsInOrderAndDecodesThem) {
  auto f = parse_form("value=infra0%3Dhttp%3A%2F%2F127.0.0.1%3A2380&prevExist=false&flag&&x=a+b");
  ASSERT_TRUE(f);
  ASSERT_EQ(f->size(), 4u);
  EXPECT_EQ(form_get(*f, "value"), "infra0=http://127.0.0.1:2380");
  EXPECT_EQ(form_get(*f, "prevExist"), "false");
  EXPECT_EQ(form_get(*f, "flag"), "");
  EXPECT_EQ(form_get(*f, "x"), "a b");
  EXPECT_EQ(form_get(*f, "missing"), std::nullopt);
  auto dup = parse_form("size=3&size=5");
  ASSERT_TRUE(dup);
  EXPECT_EQ(form_get(*dup, "size"), "3");  // the first value wins, as Go's FormValue
  EXPECT_EQ(parse_form("value=%zz"), std::nullopt);
  EXPECT_EQ(parse_form("")->size(), 0u);
}

TEST(ResponseHead, SetsLengthAndCloseAndDropsCallerFraming) {
  auto r = Response::json(201, "{}");
  r.headers.set("X-Etcd-Index", "4");
  r.headers.set("content-length", "999");  // the serialiser owns framing
  r.headers.set("Connection", "keep-alive");
  std::string head = serialize_head(r, r.body.size(), false);
  EXPECT_EQ(head.rfind("HTTP/1.1 201 Created\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("Content-Type: application/json\r\n"), std::string::npos);
  EXPECT_NE(head.find("X-Etcd-Index: 4\r\n"), std::string::npos);
  EXPECT_NE(head.find("Content-Length: 2\r\n"), std::string::npos);
  EXPECT_EQ(head.find("999"), std::string::npos);
  EXPECT_EQ(head.find("keep-alive"), std::string::npos);
  EXPECT_NE(head.find("Connection: close\r\n"), std::string::npos);
  EXPECT_EQ(head.substr(head.size() - 4), "\r\n\r\n");
  std::string kept = serialize_head(Response::text(431, "x"), std::nullopt, true);
  EXPECT_EQ(kept.rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0), 0u);
  EXPECT_EQ(kept.find("Content-Length"), std::string::npos);
  EXPECT_EQ(kept.find("Connection"), std::string::npos);
  EXPECT_EQ(status_reason(413), "Payload Too Large");
  EXPECT_EQ(status_reason(429), "Too Many Requests");
}

TEST(Url, ParsesDiscoveryUrls) {
  auto u = parse_url("https://discovery.etcd.io/3e86b59982e49066c5d813af1c2e2579");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->scheme, "https");
  EXPECT_EQ(u->host, "discovery.etcd.io");
  EXPECT_EQ(u->port, 443);
  EXPECT_FALSE(u->explicit_port);
  EXPECT_TRUE(u->tls());
  EXPECT_EQ(u->path, "/3e86b59982e49066c5d813af1c2e2579");
  EXPECT_EQ(u->origin(), "https://discovery.etcd.io:443");

  u = parse_url("HTTP://user:pw@127.0.0.1:2379/v2/keys/discovery/tok?x=1#frag");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->scheme, "http");
  EXPECT_EQ(u->userinfo, "user:pw");
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 2379);
  EXPECT_TRUE(u->explicit_port);
  EXPECT_EQ(u->path, "/v2/keys/discovery/tok");
  EXPECT_EQ(u->query, "x=1");
  EXPECT_EQ(u->target(), "/v2/keys/discovery/tok?x=1");
  EXPECT_EQ(u->str(), "http://user:pw@127.0.0.1:2379/v2/keys/discovery/tok?x=1");

  u = parse_url("http://[::1]:8087");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->authority(), "[::1]:8087");
  EXPECT_EQ(u->target(), "/");

  u = parse_url("http://host?only=query");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->path, "");
  EXPECT_EQ(u->target(), "/?only=query");
}

TEST(Url, RejectsWhatCannotBeDialled) {
  std::string err;
  EXPECT_FALSE(parse_url("127.0.0.1:2379", &err));
  EXPECT_NE(err.find("no scheme"), std::string::npos) << err;
  EXPECT_FALSE(parse_url("unix://x", &err));
  EXPECT_NE(err.find("unix"), std::string::npos) << err;
  EXPECT_FALSE(parse_url("http://:80/", &err));
  EXPECT_NE(err.find("no host"), std::string::npos) << err;
  // Port 0 is allowed: listen URLs use it to ask for any free port.
  auto any = parse_url("http://127.0.0.1:0", &err);
  ASSERT_TRUE(any) << err;
  EXPECT_EQ(any->port, 0);
  EXPECT_TRUE(any->explicit_port);
  for (const char* bad : {"http://h:65536", "http://h:12x", "http://h:-1"}) {
    EXPECT_FALSE(parse_url(bad, &err)) << bad;
    EXPECT_NE(err.find("invalid port"), std::string::npos) << bad << ": " << err;
  }
  EXPECT_FALSE(parse_url("http://[::1", &err));
  EXPECT_FALSE(parse_url("http://[::1]x", &err));
}

}  // namespace
}  // namespace muster::net
