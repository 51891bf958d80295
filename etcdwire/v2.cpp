// etcdwire/v2.cpp: see v2.h.
#include "etcdwire/v2.h"

namespace muster::etcdwire {

const char* v2_error_message(int code) {
  switch (code) {
    case kV2KeyNotFound:
      return "Key not found";
    case kV2TestFailed:
      return "Compare failed";
    case kV2NotFile:
      return "Not a file";
    case kV2NotDir:
      return "Not a directory";
    case kV2NodeExist:
      return "Key already exists";
    case kV2RootReadOnly:
      return "Root is read only";
    case kV2DirNotEmpty:
      return "Directory not empty";
    case kV2Unauthorized:
      return "The request requires user authentication";
    case kV2PrevValueRequired:
      return "PrevValue is Required in POST form";
    case kV2TTLNaN:
      return "The given TTL in POST form is not a number";
    case kV2IndexNaN:
      return "The given index in POST form is not a number";
    case kV2InvalidField:
      return "Invalid field";
    case kV2InvalidForm:
      return "Invalid POST form";
    case kV2RefreshValue:
      return "Value provided on refresh";
    case kV2RefreshTTLRequired:
      return "A TTL must be provided on refresh";
    case kV2RaftInternal:
      return "Raft Internal Error";
    case kV2LeaderElect:
      return "During Leader Election";
    case kV2WatcherCleared:
      return "watcher is cleared due to etcd recovery";
    case kV2EventIndexCleared:
      return "The event in requested index is outdated and cleared";
    default:
      return "Unknown error";
  }
}

int v2_error_status(int code) {
  switch (code) {
    case kV2KeyNotFound:
      return 404;
    case kV2TestFailed:
    case kV2NodeExist:
      return 412;
    case kV2NotFile:
    case kV2DirNotEmpty:
      return 403;
    case kV2Unauthorized:
      return 401;
    case kV2RaftInternal:
    case kV2LeaderElect:
      return 500;
    default:
      return 400;
  }
}

std::string v2_error_body(const V2Error& e) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  j["errorCode"] = e.code;
  j["message"] = e.message;
  if (!e.cause.empty()) j["cause"] = e.cause;
  j["index"] = e.index;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::optional<V2Error> parse_v2_error(std::string_view body) {
  const auto j = nlohmann::json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("errorCode") || !j["errorCode"].is_number_integer())
    return std::nullopt;
  V2Error e;
  e.code = j["errorCode"].get<int>();
  if (j.contains("message") && j["message"].is_string()) e.message = j["message"];
  if (j.contains("cause") && j["cause"].is_string()) e.cause = j["cause"];
  if (j.contains("index") && j["index"].is_number_unsigned()) e.index = j["index"];
  return e;
}

nlohmann::ordered_json v2_node_json(const V2Node& n) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (!n.key.empty()) j["key"] = n.key;
  if (n.value) j["value"] = *n.value;
  if (n.dir) j["dir"] = true;
  if (n.expiration) j["expiration"] = *n.expiration;
  if (n.ttl != 0) j["ttl"] = n.ttl;
  if (!n.nodes.empty()) {
    nlohmann::ordered_json a = nlohmann::ordered_json::array();
    for (const auto& c : n.nodes) a.push_back(v2_node_json(c));
    j["nodes"] = std::move(a);
  }
  if (n.modified_index != 0) j["modifiedIndex"] = n.modified_index;
  if (n.created_index != 0) j["createdIndex"] = n.created_index;
  return j;
}

V2Node parse_v2_node(const nlohmann::json& j) {
  V2Node n;
  if (!j.is_object()) return n;
  auto str = [&](const char* f) -> const nlohmann::json* {
    auto it = j.find(f);
    return it != j.end() && it->is_string() ? &*it : nullptr;
  };
  auto u64 = [&](const char* f) -> uint64_t {
    auto it = j.find(f);
    return it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
  };
  if (auto k = str("key")) n.key = k->get<std::string>();
  if (auto v = str("value")) n.value = v->get<std::string>();
  if (auto e = str("expiration")) n.expiration = e->get<std::string>();
  if (auto it = j.find("dir"); it != j.end() && it->is_boolean()) n.dir = it->get<bool>();
  if (auto it = j.find("ttl"); it != j.end() && it->is_number_integer()) n.ttl = it->get<int64_t>();
  if (auto it = j.find("nodes"); it != j.end() && it->is_array())
    for (const auto& c : *it) n.nodes.push_back(parse_v2_node(c));
  n.modified_index = u64("modifiedIndex");
  n.created_index = u64("createdIndex");
  return n;
}

}  // namespace muster::etcdwire
