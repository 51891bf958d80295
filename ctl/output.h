// ctl/output.h: musterctl's output formats, the same bytes etcdctl 3.4/3.5
// prints so scripts written against etcdctl keep working.
//
// Everything here is a pure function of a gateway response (the JSON a
// member's /v3/... route answered), so tests feed canned responses.
//  - simple: etcdctl's printer_simple (e.g. `get` prints key and value lines).
//  - json:   etcdctl's `-w json`: the response message with 64-bit integers
//            as JSON numbers (the gateway sends them as strings).
//  - table:  etcdctl's tablewriter boxes, for the commands etcdctl offers it.
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "ctl/client.h"

namespace muster::ctl {

// The gateway's 64-bit integers (strings) turned into JSON numbers, in place
// of every field etcd declares int64/uint64; other strings left as they are.
nlohmann::ordered_json to_etcdctl_json(const nlohmann::ordered_json& gateway);

// A base64 bytes field decoded (etcdwire::json_bytes); empty when absent or
// malformed.
std::string bytes_field(const nlohmann::ordered_json& object, const char* name);

// go-humanize's Bytes(): "20 kB", "1.5 MB", "512 B".
std::string humanize_bytes(uint64_t n);
// An etcdctl table: centred headers, right-aligned cells, +---+ rules.
std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows);

// Each printer writes the response of one command in `format`.  They return
// false (and print nothing) when etcdctl has no such format for the command.
bool print_put(const nlohmann::ordered_json& response, OutputFormat format, std::ostream& out);
bool print_get(const nlohmann::ordered_json& response, OutputFormat format, std::ostream& out);
bool print_del(const nlohmann::ordered_json& response, OutputFormat format, std::ostream& out);
// One watch response message (the `result` of a stream line).
bool print_watch(const nlohmann::ordered_json& result, OutputFormat format, std::ostream& out);
// With `replacements` (Muster's history records, `member list
// --show-replacements`): simple and table gain two columns, REPLACED (the
// dead member's name and ID, for a member that took its seat) and REPLACED
// AT; json gains "replacements", every record as stored.
bool print_member_list(const nlohmann::ordered_json& response, OutputFormat format,
                       std::ostream& out,
                       const nlohmann::ordered_json* replacements = nullptr);
// member add: `name` is the new member's name, `new_id` its ID.
bool print_member_add(const nlohmann::ordered_json& response, const std::string& name,
                      OutputFormat format, std::ostream& out);
// member remove|update|promote: `verb` is "removed from", "updated in" or
// "promoted in".
bool print_member_change(const nlohmann::ordered_json& response, uint64_t id,
                         const std::string& verb, OutputFormat format, std::ostream& out);

struct EndpointHealth {
  std::string endpoint;
  bool healthy = false;
  std::chrono::nanoseconds took{0};
  std::string error;
};
// Healthy lines go to `out`, unhealthy ones to `err` (as etcdctl 3.5 does).
bool print_endpoint_health(const std::vector<EndpointHealth>& health, OutputFormat format,
                           std::ostream& out, std::ostream& err);

struct EndpointStatus {
  std::string endpoint;
  nlohmann::ordered_json status;  // the /v3/maintenance/status response
};
bool print_endpoint_status(const std::vector<EndpointStatus>& statuses, OutputFormat format,
                           std::ostream& out);

}  // namespace muster::ctl
