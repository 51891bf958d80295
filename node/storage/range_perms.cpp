// node/storage/range_perms.cpp: see range_perms.h.
#include "node/storage/range_perms.h"

#include <algorithm>

namespace muster::storage {

namespace {

bool is_unbounded(const std::string& range_end) {
  return range_end.size() == 1 && range_end[0] == '\0';
}

// a.end < b.begin, with an unbounded end after everything.
bool ends_before(const std::optional<std::string>& end, const std::string& begin) {
  return end && *end < begin;
}

// end_a >= end_b, with unbounded ends largest.
bool end_at_least(const std::optional<std::string>& a, const std::optional<std::string>& b) {
  if (!a) return true;
  if (!b) return false;
  return *a >= *b;
}

}  // namespace

std::optional<RangePerms::Interval> RangePerms::interval_of(const std::string& key,
                                                            const std::string& range_end) {
  if (range_end.empty()) return Interval{key, key + '\0'};  // [key, key+"\0") = {key}
  if (is_unbounded(range_end)) return Interval{key, std::nullopt};
  if (range_end <= key) return std::nullopt;
  return Interval{key, range_end};
}

RangePerms::RangePerms(const std::vector<const pb::Permission*>& perms) {
  std::vector<Interval> read, write;
  for (const pb::Permission* p : perms) {
    std::optional<Interval> iv = interval_of(p->key(), p->range_end());
    if (!iv) continue;  // an empty range grants nothing
    if (p->permtype() == pb::Permission::READ || p->permtype() == pb::Permission::READWRITE)
      read.push_back(*iv);
    if (p->permtype() == pb::Permission::WRITE || p->permtype() == pb::Permission::READWRITE)
      write.push_back(*iv);
  }
  read_ = merge(std::move(read));
  write_ = merge(std::move(write));
}

// Sorts by begin and joins intervals that overlap or touch ([a,b) and [b,c)
// become [a,c)), so that a covered range lies inside exactly one interval.
std::vector<RangePerms::Interval> RangePerms::merge(std::vector<Interval> in) {
  std::sort(in.begin(), in.end(),
            [](const Interval& a, const Interval& b) { return a.begin < b.begin; });
  std::vector<Interval> out;
  for (auto& iv : in) {
    if (!out.empty() && !ends_before(out.back().end, iv.begin)) {
      if (!end_at_least(out.back().end, iv.end)) out.back().end = std::move(iv.end);
      continue;
    }
    out.push_back(std::move(iv));
  }
  return out;
}

bool RangePerms::covers(const std::vector<Interval>& set, const Interval& want) {
  // The last interval that begins at or before want.begin is the only one
  // that can contain it (the set is disjoint and sorted).
  auto it = std::upper_bound(set.begin(), set.end(), want.begin,
                             [](const std::string& k, const Interval& iv) { return k < iv.begin; });
  if (it == set.begin()) return false;
  --it;
  return end_at_least(it->end, want.end) && !(it->end && *it->end <= want.begin);
}

bool RangePerms::allows(Type t, const std::string& key, const std::string& range_end) const {
  std::optional<Interval> want = interval_of(key, range_end);
  // A request over an empty range (range_end before key) reads or deletes
  // nothing; it is allowed only where its key itself is, so that it cannot
  // probe keys outside the user's permissions either.
  if (!want) want = interval_of(key, "");
  return covers(t == Type::kRead ? read_ : write_, *want);
}

std::optional<std::string> invalid_permission(const pb::Permission& p) {
  if (p.permtype() != pb::Permission::READ && p.permtype() != pb::Permission::WRITE &&
      p.permtype() != pb::Permission::READWRITE)
    return "unknown permission type";
  if (p.key().empty() && !is_unbounded(p.range_end())) return "permission key is empty";
  if (!p.range_end().empty() && !is_unbounded(p.range_end()) && p.range_end() <= p.key())
    return "permission range end is not after its key";
  return std::nullopt;
}

}  // namespace muster::storage
