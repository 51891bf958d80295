// discovery/rules.h: the rules of muster-discovery that need no I/O:
// what a size, a token name and a member ID may be, how a request path
// names a token, and etcd's "cluster is full" rule.  Unit-tested in
// tests/unit/discovery/.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "discovery/token_store.h"

namespace muster::discovery {

// A size text from /new?size= or a PUT of _config/size: a decimal integer in
// [1, max_size].  Returns the size, or a sentence saying why not.
std::variant<uint32_t, std::string> parse_size(std::string_view text, uint32_t max_size);

// Generated tokens: 32 lowercase hex characters.  Named tokens (PUT
// .../_config/size, seed 003's form): 16 to 64 of [0-9A-Za-z_-].
bool valid_token_name(std::string_view s);
// Member IDs as etcd writes them: lowercase hex, 1 to 16 characters.
bool valid_member_id(std::string_view s);

// What a token route names.
struct TokenPath {
  enum class Kind { kDirectory, kMember, kSize };
  std::string prefix;  // e.g. "/v2/keys/discovery" (no trailing '/'), or ""
  std::string token;
  Kind kind = Kind::kDirectory;
  std::string member_id;  // kMember
  // The v2 key of the node addressed, as etcd would print it: under etcd's
  // keys API (a prefix starting "/v2/keys") the key is the path without
  // "/v2/keys" (PUT /v2/keys/d/t/_config/size -> "/d/t/_config/size").
  std::string key() const;
  std::string directory_key() const { return key_prefix() + "/" + token; }
  // True when the path is an etcd v2 keys API path ("/v2/keys/..."): the
  // answers are etcd's v2 answers exactly (path mode, docs/discovery.md).
  bool v2_keys_path() const;
  std::string key_prefix() const;
};

// Splits a decoded request path into prefix, token and what follows, or
// returns a sentence saying why the path names no token.  Rules: a path
// ending in "/_config/size" names the size key of the segment before
// "_config"; otherwise, if the last segment is a member ID and the one before
// it a token name, the path names that member; otherwise the last segment is
// the token.  ".." and "." segments are refused.
std::variant<TokenPath, std::string> split_token_path(std::string_view path);

// etcd's rule (discovery.md 1.7): the members that form the cluster are the
// first `size` by created_index.
std::vector<Member> cluster_members(const Token& t);
// Full for `self_id`: at least `size` registrations and self is not among the
// first `size`.
bool is_full_for(const Token& t, std::string_view self_id);
bool is_complete(const Token& t);  // at least `size` registrations

// A non-negative Go duration ("168h", "30s", "1m30s", "500ms", "0"; see
// etcdwire/durations.h) in whole milliseconds.
std::optional<int64_t> parse_duration_ms(std::string_view s);

}  // namespace muster::discovery
