#include "node/proxy/routes.h"

#include <nlohmann/json.hpp>
#include <set>

namespace muster::proxy {

using nlohmann::json;

std::string v3_route(const std::string& path) {
  for (const char* prefix : {"/v3/", "/v3beta/"}) {
    std::string p = prefix;
    if (path.compare(0, p.size(), p) == 0) return path.substr(p.size() - 1);
  }
  return "";
}

namespace {

// A RequestOp of a txn: reads only?  Field names in either spelling the
// gateway accepts (proto names and lowerCamel).
bool op_reads_only(const json& op, int depth);

bool txn_reads_only(const json& txn, int depth) {
  if (!txn.is_object() || depth > 16) return false;
  for (const char* side : {"success", "failure"}) {
    if (!txn.contains(side) || txn[side].is_null()) continue;
    if (!txn[side].is_array()) return false;
    for (const auto& op : txn[side])
      if (!op_reads_only(op, depth)) return false;
  }
  return true;
}

bool op_reads_only(const json& op, int depth) {
  if (!op.is_object()) return false;
  for (const auto& [name, value] : op.items()) {
    if (name == "request_range" || name == "requestRange") continue;
    if (name == "request_txn" || name == "requestTxn") {
      if (!txn_reads_only(value, depth + 1)) return false;
      continue;
    }
    return false;  // put, delete_range, or something we do not know
  }
  return true;
}

}  // namespace

bool is_write(const net::Request& r) {
  std::string path = r.path();
  std::string route = v3_route(path);
  if (route.empty()) return r.method != "GET";
  static const std::set<std::string> reads = {"/kv/range",
                                              "/watch",
                                              "/lease/timetolive",
                                              "/kv/lease/timetolive",
                                              "/lease/leases",
                                              "/kv/lease/leases",
                                              "/cluster/member/list",
                                              "/maintenance/status",
                                              "/maintenance/hash",
                                              "/maintenance/hashkv",
                                              "/auth/status"};
  if (reads.count(route)) return false;
  if (route == "/kv/txn") {
    json body = json::parse(r.body.empty() ? std::string("{}") : r.body, nullptr, false);
    return body.is_discarded() || !txn_reads_only(body, 0);
  }
  if (route == "/maintenance/alarm") {
    json body = json::parse(r.body.empty() ? std::string("{}") : r.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return true;
    auto action = body.value("action", json("GET"));
    return !(action == "GET" || action == 0);
  }
  return true;
}

}  // namespace muster::proxy
