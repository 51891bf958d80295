// `musterctl watch <key> [range_end]`: the /v3/watch stream, printed event by
// event until interrupted.  When the member serving the stream goes away the
// watch resumes on the next endpoint from the revision after the last one
// seen, so no event is printed twice or skipped.
#include <ostream>

#include "ctl/command.h"
#include "ctl/command_support.h"
#include "ctl/output.h"
#include "etcdwire/v3_json.h"

namespace muster::ctl {

int run_watch(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  flags.add_bool("prefix");
  flags.add_bool("prev-kv");
  flags.add_string("rev", "0");
  GlobalOptions options;
  if (auto code = parse_command_line("watch", args, flags, options, err)) return *code;
  const auto& pos = flags.positional();
  if (pos.empty() || pos.size() > 2)
    return bad_args("watch", err, "watch needs a key and an optional range_end");
  if (flags.get_bool("prefix") && pos.size() == 2)
    return bad_args("watch", err, "--prefix takes no range_end");
  if (options.write_out == OutputFormat::kTable) return unsupported_format(err, options.write_out);
  int64_t rev = 0;
  try {
    rev = std::stoll(flags.get("rev"));
  } catch (const std::exception&) {
    return bad_args("watch", err, "--rev takes a number");
  }
  if (rev < 0) return bad_args("watch", err, "--rev cannot be negative");

  const KeyRange range = key_range(flags, false);

  Client client(options);
  // The revision the (next) stream starts at; 0 = "from now" until the first
  // stream has told us where now is.
  int64_t next_revision = rev;
  std::string cancel_reason;
  bool canceled = false;
  for (;;) {
    nlohmann::ordered_json create = range_request(range);
    if (next_revision > 0) create["start_revision"] = std::to_string(next_revision);
    if (flags.get_bool("prev-kv")) create["prev_kv"] = true;
    const nlohmann::ordered_json request = {{"create_request", create}};
    bool saw_result = false;
    const Reply reply = client.stream("/v3/watch", request, [&](const nlohmann::ordered_json& r) {
      saw_result = true;
      if (r.value("canceled", false)) {
        canceled = true;
        cancel_reason = r.value("cancel_reason", std::string());
        if (cancel_reason.empty() && etcdwire::json_u64(r, "compact_revision") != 0)
          cancel_reason = "etcdserver: mvcc: required revision has been compacted";
        return false;
      }
      // Where to resume: after the newest event, or after the revision the
      // watch was created at when nothing has happened yet.
      int64_t newest = 0;
      if (auto events = r.find("events"); events != r.end() && events->is_array()) {
        for (const auto& e : *events)
          newest = std::max<int64_t>(
              newest, static_cast<int64_t>(etcdwire::json_u64(
                          e.value("kv", nlohmann::ordered_json::object()), "mod_revision")));
      }
      if (newest > 0) {
        next_revision = newest + 1;
      } else if (next_revision == 0 && r.contains("header")) {
        next_revision = static_cast<int64_t>(etcdwire::json_u64(r["header"], "revision")) + 1;
      }
      if (r.value("created", false) && !r.contains("events")) return true;
      print_watch(r, options.write_out, out);
      out.flush();
      return true;
    });
    if (canceled) {
      err << "watch was canceled (" << cancel_reason << ")\n"
          << "Error: watch is canceled by the server\n";
      return kExitError;
    }
    if (!reply.ok() && (reply.connection_failed || !saw_result)) return request_failed(err, reply);
    if (!saw_result) {
      err << "Error: " << reply.endpoint << " closed the watch stream without answering\n";
      return kExitError;
    }
    // The stream ended after it had worked: the member went away or closed
    // it.  Resume elsewhere from next_revision.
    err << "watch stream from " << reply.endpoint << " ended"
        << (reply.error.empty() ? "" : " (" + reply.error + ")") << "; resuming at revision "
        << next_revision << "\n";
  }
}

}  // namespace muster::ctl
