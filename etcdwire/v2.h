// etcdwire/v2.h: etcd's v2 keys API on the wire: the error table (codes,
// messages, HTTP statuses: etcd's error/error.go), the error body, and a
// node as etcd's NodeExtern marshals it.
//
// Who uses it: muster-discovery (it answers as etcd's v2 keys API), the
// member's v2 API and its v2 store (node/server/v2_api, node/storage/v2store)
// and the discovery client (node/bootstrap/discovery), which reads what
// either of them or etcd itself answers.  Pure functions; any thread.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace muster::etcdwire {

// etcd's v2 error codes.
enum V2ErrorCode : int {
  kV2KeyNotFound = 100,
  kV2TestFailed = 101,
  kV2NotFile = 102,
  kV2NotDir = 104,
  kV2NodeExist = 105,
  kV2RootReadOnly = 107,
  kV2DirNotEmpty = 108,
  kV2Unauthorized = 110,
  kV2PrevValueRequired = 201,
  kV2TTLNaN = 202,
  kV2IndexNaN = 203,
  kV2InvalidField = 209,
  kV2InvalidForm = 210,
  kV2RefreshValue = 211,
  kV2RefreshTTLRequired = 212,
  kV2RaftInternal = 300,
  kV2LeaderElect = 301,
  kV2WatcherCleared = 400,
  kV2EventIndexCleared = 401,
};
// etcd's message for a code ("Key not found"); "Unknown error" for others.
const char* v2_error_message(int code);
// The HTTP status etcd sends with a code (404, 412, 403, 401, 500; 400 for
// every other code).
int v2_error_status(int code);

// An error answer: {"errorCode","message","cause","index"}, cause omitted
// when empty.
struct V2Error {
  int code = 0;
  std::string message;
  std::string cause;
  uint64_t index = 0;
};
// The body etcd writes, newline-terminated.
std::string v2_error_body(const V2Error& e);
// Reads an error body; nullopt when it is not a JSON object with an integer
// errorCode.
std::optional<V2Error> parse_v2_error(std::string_view body);

// A node: fields in NodeExtern's order, zero values omitted (etcd's
// omitempty), `value` written whenever it is set.
struct V2Node {
  std::string key;                   // "" = omitted (etcd's root)
  std::optional<std::string> value;  // files
  bool dir = false;
  std::optional<std::string> expiration;  // RFC 3339, for nodes with a TTL
  int64_t ttl = 0;
  std::vector<V2Node> nodes;  // a directory's children, when listed
  uint64_t modified_index = 0;
  uint64_t created_index = 0;
};
nlohmann::ordered_json v2_node_json(const V2Node& n);
// Reads a node leniently, as a client must: a field that is absent or of
// another type keeps its zero value.
V2Node parse_v2_node(const nlohmann::json& j);

}  // namespace muster::etcdwire
