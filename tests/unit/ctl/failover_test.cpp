// Endpoint failover of ctl::Client against a scripted transport: which URLs
// are tried, in which order, and which failures move on.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "ctl/client.h"

namespace muster::ctl {
namespace {

struct Script {
  std::vector<std::string> tried;  // URLs in the order they were called
  // host:port -> what it does: "down" (no connection) or an HTTP status+body.
  std::map<std::string, std::pair<int, std::string>> answers;

  Client::Transport transport() {
    return [this](const std::string& method, const std::string& url, const std::string&,
                  const net::Headers&) {
      EXPECT_EQ(method, "POST");
      tried.push_back(url);
      net::ClientResult r;
      for (const auto& [host, answer] : answers) {
        if (url.find(host) != std::string::npos) {
          net::Response resp;
          resp.status = answer.first;
          resp.body = answer.second;
          r.response = resp;
          return r;
        }
      }
      r.error = "connect: connection refused";
      return r;
    };
  }
};

GlobalOptions three_endpoints() {
  GlobalOptions o;
  o.endpoints = {"127.0.0.1:1", "127.0.0.1:2", "https://127.0.0.1:3"};
  return o;
}

TEST(Failover, UnreachableEndpointsAreSkippedInOrder) {
  Script s;
  s.answers["127.0.0.1:3"] = {200, R"({"header":{"revision":"7"}})"};
  Client c(three_endpoints(), s.transport());
  const Reply r = c.call("/v3/kv/put", {{"key", "Zm9v"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.endpoint, "https://127.0.0.1:3");
  EXPECT_EQ(r.body["header"]["revision"], "7");
  EXPECT_EQ(s.tried, (std::vector<std::string>{"http://127.0.0.1:1/v3/kv/put",
                                               "http://127.0.0.1:2/v3/kv/put",
                                               "https://127.0.0.1:3/v3/kv/put"}));
}

TEST(Failover, TheEndpointThatAnsweredIsTriedFirstNextTime) {
  Script s;
  s.answers["127.0.0.1:2"] = {200, "{}"};
  Client c(three_endpoints(), s.transport());
  ASSERT_TRUE(c.call("/v3/kv/range", {}).ok());
  s.tried.clear();
  ASSERT_TRUE(c.call("/v3/kv/range", {}).ok());
  EXPECT_EQ(s.tried, std::vector<std::string>{"http://127.0.0.1:2/v3/kv/range"});
  // It goes away: the next one after it is tried, wrapping around.
  s.answers.clear();
  s.answers["127.0.0.1:1"] = {200, "{}"};
  s.tried.clear();
  const Reply r = c.call("/v3/kv/range", {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(s.tried, (std::vector<std::string>{"http://127.0.0.1:2/v3/kv/range",
                                               "https://127.0.0.1:3/v3/kv/range",
                                               "http://127.0.0.1:1/v3/kv/range"}));
}

TEST(Failover, AnErrorAnswerIsFinalAndNotRetriedElsewhere) {
  // A member that answered may have applied the request; retrying a put on
  // another member could apply it twice.
  Script s;
  s.answers["127.0.0.1:1"] = {
      503,
      R"({"error":"etcdserver: request timed out","message":"etcdserver: request timed out","code":14})"};
  s.answers["127.0.0.1:2"] = {200, "{}"};
  Client c(three_endpoints(), s.transport());
  const Reply r = c.call("/v3/kv/put", {});
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(r.connection_failed);
  EXPECT_EQ(r.error, "etcdserver: request timed out");
  EXPECT_EQ(s.tried.size(), 1u);
}

TEST(Failover, NothingReachableIsAConnectionFailureNamingEveryEndpoint) {
  Script s;
  Client c(three_endpoints(), s.transport());
  const Reply r = c.call("/v3/kv/range", {});
  EXPECT_TRUE(r.connection_failed);
  EXPECT_EQ(s.tried.size(), 3u);
  for (const char* ep : {"127.0.0.1:1: connect", "127.0.0.1:2: connect", "127.0.0.1:3: connect"})
    EXPECT_NE(r.error.find(ep), std::string::npos) << r.error;
}

TEST(Failover, CallAtTalksToOneEndpointOnly) {
  Script s;
  Client c(three_endpoints(), s.transport());
  const nlohmann::ordered_json empty = nlohmann::ordered_json::object();
  const Reply r = c.call_at("127.0.0.1:2", "POST", "/v3/maintenance/status", &empty);
  EXPECT_TRUE(r.connection_failed);
  EXPECT_EQ(s.tried, std::vector<std::string>{"http://127.0.0.1:2/v3/maintenance/status"});
}

TEST(GatewayError, MessageThenErrorThenStatusLine) {
  net::Response r;
  r.status = 404;
  r.body = R"({"error":"etcdserver: member not found","code":5})";
  EXPECT_EQ(gateway_error(r), "etcdserver: member not found");
  r.body = R"({"error":"old","message":"etcdserver: member not found","code":5})";
  EXPECT_EQ(gateway_error(r), "etcdserver: member not found");
  r.status = 502;
  r.body = "bad gateway\n";
  EXPECT_EQ(gateway_error(r), "HTTP 502 Bad Gateway: bad gateway");
  Script s;
  s.answers["127.0.0.1:1"] = {200, "not json"};
  Client c(three_endpoints(), s.transport());
  const Reply reply = c.call("/v3/kv/range", {});
  EXPECT_FALSE(reply.ok());
  EXPECT_FALSE(reply.connection_failed);
  EXPECT_NE(reply.error.find("malformed JSON"), std::string::npos);
}

// --user: Authenticate once before the first request, the token in every
// request's Authorization header, a new token once when the old one is
// refused, and etcdctl's exit 2 when the password is wrong.
struct AuthScript {
  std::vector<std::pair<std::string, std::string>> calls;  // path, Authorization
  int tokens_issued = 0;
  std::string password = "pw";
  bool auth_enabled = true;
  int refuse_next = 0;  // answer "invalid auth token" this many times

  Client::Transport transport() {
    return [this](const std::string&, const std::string& url, const std::string& body,
                  const net::Headers& headers) {
      const std::string path = url.substr(url.find("/v3/"));
      calls.emplace_back(path, headers.get("Authorization").value_or(""));
      net::Response resp;
      resp.status = 200;
      if (path == "/v3/auth/authenticate") {
        const auto req = nlohmann::json::parse(body);
        if (!auth_enabled) {
          resp.status = 400;
          resp.body = R"({"error":"etcdserver: authentication is not enabled","code":9})";
        } else if (req["password"] != password) {
          resp.status = 400;
          resp.body =
              R"({"error":"etcdserver: authentication failed, invalid user ID or password","code":3})";
        } else {
          resp.body = R"({"token":"tok)" + std::to_string(++tokens_issued) + "\"}";
        }
      } else if (refuse_next > 0) {
        --refuse_next;
        resp.status = 401;
        resp.body = R"({"error":"etcdserver: invalid auth token","code":16})";
      } else {
        resp.body = "{}";
      }
      net::ClientResult r;
      r.response = resp;
      return r;
    };
  }
};

GlobalOptions as_alice(const std::string& password = "pw") {
  GlobalOptions o;
  o.endpoints = {"127.0.0.1:1"};
  o.user = "alice";
  o.password = password;
  return o;
}

TEST(Auth, TheTokenRidesEveryRequestAndIsRenewedOnceWhenRefused) {
  AuthScript a;
  Client c(as_alice(), a.transport());
  ASSERT_TRUE(c.call("/v3/kv/put", {}).ok());
  ASSERT_TRUE(c.call("/v3/kv/range", {}).ok());
  a.refuse_next = 1;
  ASSERT_TRUE(c.call("/v3/kv/range", {}).ok());
  a.refuse_next = 2;  // refused with the new token too: the error stands
  const Reply r = c.call("/v3/kv/range", {});
  EXPECT_EQ(r.error, "etcdserver: invalid auth token");
  EXPECT_FALSE(r.connection_failed);
  using P = std::pair<std::string, std::string>;
  EXPECT_EQ(a.calls, (std::vector<P>{{"/v3/auth/authenticate", ""},
                                     {"/v3/kv/put", "tok1"},
                                     {"/v3/kv/range", "tok1"},
                                     {"/v3/kv/range", "tok1"},
                                     {"/v3/auth/authenticate", ""},
                                     {"/v3/kv/range", "tok2"},
                                     {"/v3/kv/range", "tok2"},
                                     {"/v3/auth/authenticate", ""},
                                     {"/v3/kv/range", "tok3"}}));
}

TEST(Auth, AWrongPasswordEndsBeforeAnyRequestWithExitTwo) {
  AuthScript a;
  Client c(as_alice("nope"), a.transport());
  const Reply r = c.call("/v3/kv/put", {});
  EXPECT_EQ(r.error, "etcdserver: authentication failed, invalid user ID or password");
  EXPECT_TRUE(r.connection_failed);  // etcdctl: ExitBadConnection
  EXPECT_EQ(a.calls.size(), 1u);
}

TEST(Auth, AClusterWithoutAuthIgnoresTheUser) {
  AuthScript a;
  a.auth_enabled = false;
  Client c(as_alice(), a.transport());
  ASSERT_TRUE(c.call("/v3/kv/put", {}).ok());
  ASSERT_TRUE(c.call("/v3/kv/put", {}).ok());
  using P = std::pair<std::string, std::string>;
  EXPECT_EQ(a.calls, (std::vector<P>{
                         {"/v3/auth/authenticate", ""}, {"/v3/kv/put", ""}, {"/v3/kv/put", ""}}));
}

}  // namespace
}  // namespace muster::ctl
