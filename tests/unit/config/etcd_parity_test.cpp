// Parity with the real etcd 3.4 (/usr/bin/etcd): the same bad command line
// or environment must be refused by both, with the same sentence.  Each case
// runs etcd once (it exits at flag validation, before opening any port) and
// compares its message with parse()'s.  Where Muster deliberately adds to
// etcd's sentence (accepted values, "did you mean"), etcd's sentence must be
// a prefix of ours.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "node/config/config.h"
#include "tests/support/temp_dir.h"

namespace muster::config {
namespace {

struct Case {
  Case(std::vector<std::string> a, std::map<std::string, std::string> e = {}, bool p = false)
      : args(std::move(a)), env(std::move(e)), prefix(p) {}
  std::vector<std::string> args;
  std::map<std::string, std::string> env;
  bool prefix;  // Muster's message extends etcd's
};

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (const char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// etcd's message for a refused configuration, from its stderr:
//   "... E | etcdmain: error verifying flags, <msg>. See 'etcd --help'."
//   "... C | pkg/flags: <msg>"  /  "... C | etcdmain: <msg>"
//   or Go flag's own first line ("invalid value ... for flag -x: ...").
std::string etcd_error(const Case& c, const std::string& dir) {
  std::string cmd = "cd " + shell_quote(dir) + " && env -i";
  for (const auto& [k, v] : c.env) cmd += " " + shell_quote(k + "=" + v);
  cmd += " timeout 10 /usr/bin/etcd";
  for (const auto& a : c.args) cmd += " " + shell_quote(a);
  cmd += " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return "popen failed";
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  size_t start = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    const std::string line = out.substr(start, end - start);
    start = end + 1;
    const std::string verifying = "error verifying flags, ";
    if (auto i = line.find(verifying); i != std::string::npos) {
      std::string msg = line.substr(i + verifying.size());
      const std::string tail = ". See 'etcd --help'.";
      if (msg.size() >= tail.size() &&
          msg.compare(msg.size() - tail.size(), tail.size(), tail) == 0) {
        msg.resize(msg.size() - tail.size());
      }
      return msg;
    }
    for (const char* fatal : {" C | pkg/flags: ", " C | etcdmain: "}) {
      if (auto i = line.find(fatal); i != std::string::npos)
        return line.substr(i + std::strlen(fatal));
    }
    if (line.rfind("invalid ", 0) == 0 || line.rfind("flag ", 0) == 0 ||
        line.rfind("bad flag", 0) == 0) {
      return line;
    }
  }
  return "<no error found in etcd output>\n" + out;
}

TEST(EtcdParity, RefusedConfigurationsGetEtcdsSentence) {
  if (access("/usr/bin/etcd", X_OK) != 0) GTEST_SKIP() << "etcd-server not installed";
  const muster::testing::TempDir tmp("muster-parity");
  const std::string& dir = tmp.path();
  const std::string dd = dir + "/d";  // never created: etcd stops before
  const std::vector<Case> cases = {
      {{"bar"}, {}},
      {{"--name", "y"}, {{"ETCD_NAME", "x"}}},
      {{"--data-dir", dd}, {{"ETCD_SNAPSHOT_COUNT", "abc"}}},
      {{"--data-dir", dd}, {{"ETCD_ELECTION_TIMEOUT", "10"}}},
      {{"--election-timeout", "400"}},
      {{"--election-timeout", "60000"}},
      {{"--heartbeat-interval", "0"}},
      {{"--election-timeout", "0"}},
      {{"--listen-client-urls", "http://127.0.0.1:2379"}},
      {{"--discovery", "http://x/y", "--initial-cluster", "a=http://localhost:2380"}},
      {{"--discovery-srv", "x.com", "--initial-cluster", "a=http://localhost:2380"}},
      {{"--discovery", "http://x/y", "--discovery-srv", "x.com"}},
      {{"--listen-peer-urls", "http://example.com:2380"}},
      {{"--listen-peer-urls", "foo"}},
      {{"--listen-peer-urls", "http://127.0.0.1"}},
      {{"--advertise-client-urls", "ftp://127.0.0.1:1"}},
      {{"--listen-client-urls", "http://127.0.0.1:2379/path", "--advertise-client-urls",
        "http://127.0.0.1:2379"}},
      {{"--initial-advertise-peer-urls", "http://:2380"}},
      {{"--auto-compaction-mode", "foo"}},
      {{"--snapshot-count", "abc"}},
      {{"--heartbeat-interval", "-5"}},
      {{"--enable-v2=maybe"}},
      {{"--name"}},
      {{"--logger", "foo"}},
      // capnslog is etcd 3.4's default logger, zap Muster's: name it.
      {{"--logger", "capnslog", "--log-outputs", "stderr,stdout"}},
      {{"--logger", "capnslog", "--log-outputs", "foo"}},
      {{"--logger", "zap", "--log-outputs", "default,stderr"}},
      {{"--initial-cluster-state", "foo"}, {}, true},
      {{"--discovery-fallback", "foo"}, {}, true},
      {{"--proxy", "foo"}, {}, true},
      {{"--initial-cluster-tokne", "x"}, {}, true},
      {{"--config-file", dir + "/missing.yml"}},
  };
  for (const auto& c : cases) {
    std::string label;
    for (const auto& a : c.args) label += a + " ";
    for (const auto& [k, v] : c.env) label += k + "=" + v + " ";
    const std::string theirs = etcd_error(c, dir);
    const auto ours = parse(c.args, c.env);
    EXPECT_FALSE(ours.ok()) << label;
    if (c.prefix) {
      EXPECT_EQ(ours.error.rfind(theirs, 0), 0u)
          << label << "\n ours: " << ours.error << "\n etcd: " << theirs;
    } else {
      EXPECT_EQ(ours.error, theirs) << label;
    }
  }
}

}  // namespace
}  // namespace muster::config

namespace muster::config {
namespace {

// Every flag `etcd -h` lists is a flag of ours (parsed from etcd's own help).
TEST(EtcdParity, EveryFlagEtcdListsIsAccepted) {
  if (access("/usr/bin/etcd", X_OK) != 0) GTEST_SKIP() << "etcd-server not installed";
  FILE* p = popen("/usr/bin/etcd -h 2>&1", "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  const auto ours = flag_names();
  size_t seen = 0;
  size_t start = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    std::string line = out.substr(start, end - start);
    start = end + 1;
    const size_t dash = line.find_first_not_of(' ');
    if (dash == std::string::npos || line.compare(dash, 2, "--") != 0) continue;
    const std::string name = line.substr(dash + 2, line.find(' ', dash) - dash - 2);
    ++seen;
    EXPECT_TRUE(std::binary_search(ours.begin(), ours.end(), name))
        << "etcd flag --" << name << " not accepted";
  }
  EXPECT_GT(seen, 70u) << out;  // the parse of etcd's help found its flag list
}

}  // namespace
}  // namespace muster::config
