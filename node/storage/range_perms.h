// node/storage/range_perms.h: what one user may read and write, as the union
// of the key permissions of the roles granted to it (etcd's
// unifiedRangePermissions, auth/range_perm_cache.go).  Pure: no I/O, no
// locks; built when the auth state changes and then only read.
//
// Ranges follow etcd's convention everywhere (permissions and requests):
//   range_end ""    the single key `key`;
//   range_end "\0"  every key >= key (a prefix of "" with range_end "\0"
//                   is every key);
//   otherwise       the half-open interval [key, range_end).
// A request over a range is allowed only when the union of the user's
// permissions of that type covers the whole range; a request on one key
// when some permission contains the key.  A READWRITE permission counts
// for both types.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "node/storage/pb.h"

namespace muster::storage {

class RangePerms {
 public:
  enum class Type { kRead, kWrite };

  RangePerms() = default;
  // The union of `perms` (several roles' permissions together).
  explicit RangePerms(const std::vector<const pb::Permission*>& perms);

  // [key, range_end) in etcd's convention (see above).
  bool allows(Type t, const std::string& key, const std::string& range_end) const;

  // A half-open interval; no `end` = unbounded.
  struct Interval {
    std::string begin;
    std::optional<std::string> end;
    bool operator==(const Interval&) const = default;
  };
  // The merged, sorted, disjoint intervals (tests).
  const std::vector<Interval>& intervals(Type t) const { return t == Type::kRead ? read_ : write_; }

  // The interval etcd's convention denotes; nullopt for an empty one
  // (range_end at or before key).
  static std::optional<Interval> interval_of(const std::string& key, const std::string& range_end);

 private:
  static std::vector<Interval> merge(std::vector<Interval> in);
  static bool covers(const std::vector<Interval>& set, const Interval& want);

  std::vector<Interval> read_, write_;
};

// A permission a role may be granted: an empty key is refused ("" alone
// names no key) unless it is the whole key space (range_end "\0"), and so is
// a range whose range_end is at or before its key.  Returns the reason, or
// nullopt when the permission is acceptable.
std::optional<std::string> invalid_permission(const pb::Permission& p);

}  // namespace muster::storage
