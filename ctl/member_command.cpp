// `musterctl member list|add|remove|update|promote`: the
// /v3/cluster/member/* routes, printed as etcdctl prints them.
//
// promote retries while the leader refuses because the learner has not
// caught up yet, printing a progress line on stderr, until --wait-timeout.
#include <chrono>
#include <ostream>
#include <thread>

#include "ctl/command.h"
#include "ctl/command_support.h"
#include "ctl/output.h"
#include "etcdwire/ids.h"
#include "etcdwire/v3_json.h"

namespace muster::ctl {
namespace {

using json = nlohmann::ordered_json;

// node/server/replacement_api.h's ReplacementApi::kHistoryPrefix (musterctl
// does not link the member).
constexpr const char* kReplacementHistoryPrefix = "/muster/replacement/history/";

std::vector<std::string> split_urls(const std::string& text) {
  std::vector<std::string> urls;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto comma = text.find(',', start);
    std::string u =
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!u.empty()) urls.push_back(u);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return urls;
}

// The leader says this while a learner is behind (etcd's ErrLearnerNotReady).
bool learner_not_ready(const std::string& error) {
  return error.find("in sync with leader") != std::string::npos ||
         (error.find("learner") != std::string::npos &&
          error.find("not ready") != std::string::npos);
}

}  // namespace

int run_member(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  flags.add_string("peer-urls", "");
  flags.add_bool("learner");
  flags.add_string("wait-timeout", "60s");
  flags.add_bool("show-replacements");
  GlobalOptions options;
  if (auto code = parse_command_line("member", args, flags, options, err)) return *code;
  const auto& pos = flags.positional();
  if (pos.empty())
    return bad_args("member", err,
                    "member needs a subcommand: list, add, remove, update or promote");
  const std::string& sub = pos[0];
  Client client(options);

  if (sub == "list") {
    if (pos.size() != 1) return bad_args("member", err, "member list takes no arguments");
    const Reply reply = client.call("/v3/cluster/member/list", json::object());
    if (!reply.ok()) return request_failed(err, reply);
    if (!flags.get_bool("show-replacements")) {
      print_member_list(reply.body, options.write_out, out);
      return kExitSuccess;
    }
    // Muster's replacement history: one key per replacement, written by the
    // leader (node/server/replacement_api.h), read like any key.
    const Reply history = client.call(
        "/v3/kv/range", range_request({kReplacementHistoryPrefix,
                                       etcdwire::prefix_end(kReplacementHistoryPrefix)}));
    if (!history.ok()) return request_failed(err, history);
    json records = json::array();
    for (const json& kv : history.body.value("kvs", json::array())) {
      json record = json::parse(bytes_field(kv, "value"), nullptr, false);
      if (record.is_object()) records.push_back(std::move(record));
    }
    print_member_list(reply.body, options.write_out, out, &records);
    return kExitSuccess;
  }
  if (options.write_out == OutputFormat::kTable) return unsupported_format(err, options.write_out);

  if (sub == "add") {
    if (pos.size() != 2) return bad_args("member", err, "member add needs a name");
    const auto urls = split_urls(flags.get("peer-urls"));
    if (urls.empty()) return bad_args("member", err, "member add needs --peer-urls");
    json request = {{"peerURLs", urls}};
    if (flags.get_bool("learner")) request["isLearner"] = true;
    const Reply reply = client.call("/v3/cluster/member/add", request);
    if (!reply.ok()) return request_failed(err, reply);
    print_member_add(reply.body, pos[1], options.write_out, out);
    return kExitSuccess;
  }

  if (sub != "remove" && sub != "update" && sub != "promote")
    return bad_args("member", err, "unknown member subcommand \"" + sub + "\"");
  if (pos.size() != 2) return bad_args("member", err, "member " + sub + " needs a member ID");
  const auto id = etcdwire::parse_hex_id(pos[1]);
  if (!id)
    return bad_args("member", err, "bad member ID arg (" + pos[1] + "), expecting ID in Hex");
  json request = {{"ID", std::to_string(*id)}};

  if (sub == "remove") {
    const Reply reply = client.call("/v3/cluster/member/remove", request);
    if (!reply.ok()) return request_failed(err, reply);
    print_member_change(reply.body, *id, "removed from", options.write_out, out);
    return kExitSuccess;
  }
  if (sub == "update") {
    const auto urls = split_urls(flags.get("peer-urls"));
    if (urls.empty()) return bad_args("member", err, "member update needs --peer-urls");
    request["peerURLs"] = urls;
    const Reply reply = client.call("/v3/cluster/member/update", request);
    if (!reply.ok()) return request_failed(err, reply);
    print_member_change(reply.body, *id, "updated in", options.write_out, out);
    return kExitSuccess;
  }

  // promote: retry while the learner catches up.
  const auto wait = parse_duration(flags.get("wait-timeout"));
  if (!wait && flags.get("wait-timeout") != "0")
    return bad_args("member", err, "--wait-timeout: want a duration like 30s, or 0");
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + wait.value_or(std::chrono::milliseconds(0));
  auto last_progress = start - std::chrono::seconds(10);
  for (;;) {
    const Reply reply = client.call("/v3/cluster/member/promote", request);
    if (reply.ok()) {
      print_member_change(reply.body, *id, "promoted in", options.write_out, out);
      return kExitSuccess;
    }
    const auto now = std::chrono::steady_clock::now();
    if (!learner_not_ready(reply.error) || now >= deadline) return request_failed(err, reply);
    if (now - last_progress >= std::chrono::seconds(1)) {
      last_progress = now;
      err << "waiting for learner " << etcdwire::id_to_hex(*id) << " to catch up with the leader ("
          << std::chrono::duration_cast<std::chrono::seconds>(now - start).count() << "s of "
          << std::chrono::duration_cast<std::chrono::seconds>(deadline - start).count() << "s)\n"
          << std::flush;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace muster::ctl
