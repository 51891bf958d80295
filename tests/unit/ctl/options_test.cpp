#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include "ctl/client.h"
#include "ctl/command.h"
#include "ctl/command_support.h"

namespace muster::ctl {
namespace {

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

struct Parsed {
  std::optional<int> code;
  GlobalOptions options;
  std::string err;
};

Parsed parse(const std::vector<std::string>& args, std::map<std::string, std::string> env = {}) {
  Flags flags;
  Parsed p;
  std::ostringstream err;
  p.code = parse_command_line("get", args, flags, p.options, err, env_of(std::move(env)));
  p.err = err.str();
  return p;
}

TEST(GlobalOptions, DefaultsAreEtcdctls) {
  const Parsed p = parse({"foo"});
  ASSERT_FALSE(p.code) << p.err;
  EXPECT_EQ(p.options.endpoints, std::vector<std::string>{"127.0.0.1:2379"});
  EXPECT_EQ(p.options.dial_timeout, std::chrono::seconds(2));
  EXPECT_EQ(p.options.command_timeout, std::chrono::seconds(5));
  EXPECT_EQ(p.options.write_out, OutputFormat::kSimple);
  EXPECT_TRUE(p.options.cacert.empty());
}

TEST(GlobalOptions, EndpointsAreACommaListInOrder) {
  const Parsed p = parse({"--endpoints", "http://a:1, https://b:2,,c:3", "foo"});
  ASSERT_FALSE(p.code) << p.err;
  EXPECT_EQ(p.options.endpoints, (std::vector<std::string>{"http://a:1", "https://b:2", "c:3"}));
}

TEST(GlobalOptions, FlagBeatsMusterctlEnvBeatsEtcdctlEnv) {
  const std::map<std::string, std::string> env = {{"MUSTERCTL_ENDPOINTS", "m:1"},
                                                  {"ETCDCTL_ENDPOINTS", "e:1"},
                                                  {"ETCDCTL_CACERT", "/ca.pem"},
                                                  {"ETCDCTL_WRITE_OUT", "json"},
                                                  {"MUSTERCTL_DIAL_TIMEOUT", "750ms"}};
  Parsed p = parse({"foo"}, env);
  ASSERT_FALSE(p.code) << p.err;
  EXPECT_EQ(p.options.endpoints, std::vector<std::string>{"m:1"});
  EXPECT_EQ(p.options.cacert, "/ca.pem");
  EXPECT_EQ(p.options.write_out, OutputFormat::kJson);
  EXPECT_EQ(p.options.dial_timeout, std::chrono::milliseconds(750));

  p = parse({"--endpoints=f:1", "-w", "table", "--cacert", "/mine.pem", "foo"}, env);
  ASSERT_FALSE(p.code) << p.err;
  EXPECT_EQ(p.options.endpoints, std::vector<std::string>{"f:1"});
  EXPECT_EQ(p.options.cacert, "/mine.pem");
  EXPECT_EQ(p.options.write_out, OutputFormat::kTable);

  p = parse({"foo"}, {{"ETCDCTL_ENDPOINTS", "e:1,e:2"}});
  ASSERT_FALSE(p.code);
  EXPECT_EQ(p.options.endpoints, (std::vector<std::string>{"e:1", "e:2"}));
}

TEST(GlobalOptions, BadValuesAreBadArgs) {
  for (const auto& args : std::vector<std::vector<std::string>>{{"-w", "yaml", "foo"},
                                                                {"--write-out=fields", "foo"},
                                                                {"--dial-timeout", "2", "foo"},
                                                                {"--command-timeout=-1s", "foo"},
                                                                {"--endpoints", ",", "foo"},
                                                                {"--cert", "c.pem", "foo"},
                                                                {"--endpoint", "x", "foo"}}) {
    const Parsed p = parse(args);
    ASSERT_TRUE(p.code) << args[0];
    EXPECT_EQ(*p.code, 128) << args[0];
    EXPECT_EQ(p.err.rfind("Error: ", 0), 0u) << p.err;
  }
  EXPECT_NE(parse({"--endpoint", "x"}).err.find("did you mean --endpoints?"), std::string::npos);
  EXPECT_EQ(*parse({"foo"}, {{"MUSTERCTL_WRITE_OUT", "xml"}}).code, 128);
}

TEST(GlobalOptions, Durations) {
  EXPECT_EQ(parse_duration("500ms"), std::chrono::milliseconds(500));
  EXPECT_EQ(parse_duration("1.5s"), std::chrono::milliseconds(1500));
  EXPECT_EQ(parse_duration("2m"), std::chrono::minutes(2));
  EXPECT_EQ(parse_duration("1h"), std::chrono::hours(1));
  EXPECT_FALSE(parse_duration("5"));
  EXPECT_FALSE(parse_duration("0s"));
  EXPECT_FALSE(parse_duration("s"));
  EXPECT_FALSE(parse_duration("1x"));
}

TEST(Endpoints, SchemeLessEndpointsGetHttpsOnlyWithTlsFiles) {
  GlobalOptions o;
  EXPECT_EQ(endpoint_url("127.0.0.1:2379", o), "http://127.0.0.1:2379");
  EXPECT_EQ(endpoint_url("https://h:2379/", o), "https://h:2379");
  o.cacert = "/ca.pem";
  EXPECT_EQ(endpoint_url("127.0.0.1:2379", o), "https://127.0.0.1:2379");
  EXPECT_EQ(endpoint_url("http://h:1", o), "http://h:1");
}

}  // namespace
}  // namespace muster::ctl

namespace muster::ctl {
namespace {

struct Outcome {
  int code;
  std::string out, err;
};

Outcome run(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int code = run_musterctl(args, out, err);
  return {code, out.str(), err.str()};
}

TEST(CommandLine, GlobalFlagsMayComeBeforeTheCommand) {
  // The bad format is reported by `get`'s own parsing, so the flag reached it.
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"-w", "yaml", "get", "foo"},
           {"--endpoints", "127.0.0.1:1", "--write-out=yaml", "get", "foo"},
           {"--insecure-skip-tls-verify", "-w", "yaml", "get", "foo"},
           {"get", "foo", "-w", "yaml"}}) {
    const Outcome r = run(args);
    EXPECT_EQ(r.code, kExitBadArgs) << args[0];
    EXPECT_NE(r.err.find("yaml not supported as output format"), std::string::npos) << r.err;
  }
  const Outcome unknown = run({"--bogus", "get", "foo"});
  EXPECT_EQ(unknown.code, kExitBadArgs);
  EXPECT_NE(unknown.err.find("unknown command \"--bogus\""), std::string::npos) << unknown.err;
}

TEST(CommandLine, HelpOfClusterCommandsListsTheGlobalFlags) {
  for (const char* name : {"put", "get", "del", "watch", "member", "endpoint", "snapshot"}) {
    const Outcome r = run({"help", name});
    EXPECT_EQ(r.code, kExitSuccess) << name;
    EXPECT_NE(r.out.find("--endpoints <list>"), std::string::npos) << name;
    EXPECT_NE(r.out.find("ETCDCTL_"), std::string::npos) << name;
    EXPECT_EQ(run({name, "--help"}).out, r.out) << name;
  }
  EXPECT_EQ(run({"help", "srv"}).out.find("--endpoints"), std::string::npos);
}

TEST(CommandLine, ArgumentErrorsBeforeAnyRequest) {
  // Port 1 is never listened on: these must fail on their arguments (128),
  // not on the connection (2).
  const std::string ep = "--endpoints=127.0.0.1:1";
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"get", ep},
                                             {"get", "a", "b", "c", ep},
                                             {"get", "a", "--prefix", "b", ep},
                                             {"get", "a", "--rev", "x", ep},
                                             {"put", "a", "b", "c", ep},
                                             {"put", "a", "b", "--lease", "xyz", ep},
                                             {"del", ep},
                                             {"watch", ep},
                                             {"member", ep},
                                             {"member", "frob", ep},
                                             {"member", "remove", "xyz", ep},
                                             {"member", "add", "n", ep},
                                             {"member", "update", "abc", ep},
                                             {"endpoint", "frob", ep},
                                             {"snapshot", "load", "f", ep}}) {
    const Outcome r = run(args);
    EXPECT_EQ(r.code, kExitBadArgs) << args[0] << " " << r.err;
  }
  // Restore and status work on files: muster's, not musterctl's.
  for (const char* sub : {"restore", "status"}) {
    const Outcome r = run({"snapshot", sub, "f", ep});
    EXPECT_EQ(r.code, kExitBadArgs);
    EXPECT_NE(r.err.find(std::string("run `muster snapshot ") + sub + "`"), std::string::npos)
        << r.err;
  }
  // A snapshot comes from one member, as etcdctl insists.
  const Outcome two = run({"snapshot", "save", "f", "--endpoints=127.0.0.1:1,127.0.0.1:2"});
  EXPECT_EQ(two.code, kExitBadArgs);
  EXPECT_NE(two.err.find("snapshot must be requested to one selected node"), std::string::npos);
  EXPECT_EQ(run({"get", "a", "-w", "table", ep}).code, kExitBadFeature);
  EXPECT_EQ(run({"get", "a", ep}).code, kExitBadConnection);
}

// etcdctl's authCfgFromCmd: name:password split at the first colon; with
// --password the user is the whole name; a name alone asks.
TEST(GlobalOptions, UserAndPasswordFollowEtcdctl) {
  auto opts = [](std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
    Flags flags;
    declare_global_flags(flags);
    EXPECT_FALSE(flags.parse(args));
    GlobalOptions o;
    EXPECT_FALSE(read_global_options(flags, env_of(std::move(env)), &o));
    return o;
  };
  GlobalOptions o = opts({});
  EXPECT_TRUE(o.user.empty());
  EXPECT_FALSE(o.ask_password);
  o = opts({"--user", "alice:pw:with:colons"});
  EXPECT_EQ(o.user, "alice");
  EXPECT_EQ(o.password, "pw:with:colons");
  EXPECT_FALSE(o.ask_password);
  o = opts({"--user", "al:ice", "--password", "pw"});
  EXPECT_EQ(o.user, "al:ice");
  EXPECT_EQ(o.password, "pw");
  o = opts({"--user", "alice"});
  EXPECT_EQ(o.user, "alice");
  EXPECT_TRUE(o.ask_password);
  o = opts({}, {{"ETCDCTL_USER", "bob"}, {"ETCDCTL_PASSWORD", "secret"}});
  EXPECT_EQ(o.user, "bob");
  EXPECT_EQ(o.password, "secret");
  o = opts({"--user", "carol:x"}, {{"MUSTERCTL_USER", "bob:y"}});
  EXPECT_EQ(o.user, "carol");  // the command line first
}

}  // namespace
}  // namespace muster::ctl
