// The permission range logic (node/storage/range_perms.h): etcd's range
// convention for permissions and requests, unions across roles, and the
// permissions a role may not be granted.
#include "node/storage/range_perms.h"

#include <gtest/gtest.h>

namespace muster::storage {
namespace {

using T = RangePerms::Type;

pb::Permission perm(pb::Permission::Type t, const std::string& key, const std::string& end = "") {
  pb::Permission p;
  p.set_permtype(t);
  p.set_key(key);
  p.set_range_end(end);
  return p;
}

RangePerms of(const std::vector<pb::Permission>& ps) {
  std::vector<const pb::Permission*> ptrs;
  for (const auto& p : ps) ptrs.push_back(&p);
  return RangePerms(ptrs);
}

const std::string kAll(1, '\0');

TEST(RangePerms, SingleKeyPermissionAllowsOnlyThatKey) {
  auto p = of({perm(pb::Permission::READ, "foo")});
  EXPECT_TRUE(p.allows(T::kRead, "foo", ""));
  EXPECT_FALSE(p.allows(T::kRead, "foo0", ""));
  EXPECT_FALSE(p.allows(T::kRead, "fo", ""));
  // A range starting at the key but reaching past it is not covered.
  EXPECT_FALSE(p.allows(T::kRead, "foo", "fop"));
  // [foo, foo\0) is exactly {foo}.
  EXPECT_TRUE(p.allows(T::kRead, "foo", std::string("foo") + '\0'));
  EXPECT_FALSE(p.allows(T::kWrite, "foo", ""));
}

TEST(RangePerms, PrefixPermissionCoversKeysAndSubrangesUnderIt) {
  // etcdctl role grant-permission --prefix r read /a/  ->  [/a/, /a0)
  auto p = of({perm(pb::Permission::READ, "/a/", "/a0")});
  EXPECT_TRUE(p.allows(T::kRead, "/a/", ""));
  EXPECT_TRUE(p.allows(T::kRead, "/a/x/y", ""));
  EXPECT_TRUE(p.allows(T::kRead, "/a/", "/a0"));
  EXPECT_TRUE(p.allows(T::kRead, "/a/b", "/a/c"));
  EXPECT_FALSE(p.allows(T::kRead, "/a", ""));
  EXPECT_FALSE(p.allows(T::kRead, "/a0", ""));
  EXPECT_FALSE(p.allows(T::kRead, "/a/", "/a1"));  // reaches past the end
  EXPECT_FALSE(p.allows(T::kRead, "/", "/a0"));    // starts before
  EXPECT_FALSE(p.allows(T::kRead, "/a/", kAll));   // unbounded request
}

TEST(RangePerms, FromKeyPermissionIsUnbounded) {
  auto p = of({perm(pb::Permission::WRITE, "m", kAll)});
  EXPECT_TRUE(p.allows(T::kWrite, "m", ""));
  EXPECT_TRUE(p.allows(T::kWrite, "zzzz", ""));
  EXPECT_TRUE(p.allows(T::kWrite, "m", kAll));
  EXPECT_TRUE(p.allows(T::kWrite, "n", "z"));
  EXPECT_FALSE(p.allows(T::kWrite, "a", ""));
  EXPECT_FALSE(p.allows(T::kWrite, "a", kAll));
}

TEST(RangePerms, EmptyKeyWithUnboundedEndIsEveryKey) {
  auto p = of({perm(pb::Permission::READ, "", kAll)});
  EXPECT_TRUE(p.allows(T::kRead, std::string(1, '\0'), kAll));
  EXPECT_TRUE(p.allows(T::kRead, "a", ""));
  EXPECT_TRUE(p.allows(T::kRead, "\xff\xff", ""));
}

TEST(RangePerms, ReadWriteCountsForBothTypes) {
  auto p = of({perm(pb::Permission::READWRITE, "k")});
  EXPECT_TRUE(p.allows(T::kRead, "k", ""));
  EXPECT_TRUE(p.allows(T::kWrite, "k", ""));
}

TEST(RangePerms, AdjacentAndOverlappingPermissionsOfSeveralRolesAreJoined) {
  // [a,c) + [c,e) + [d,g): one interval [a,g), so [b,f) is covered though
  // no single permission covers it (etcd's interval tree Contains).
  auto p = of({perm(pb::Permission::READ, "a", "c"), perm(pb::Permission::READ, "c", "e"),
               perm(pb::Permission::READWRITE, "d", "g")});
  EXPECT_TRUE(p.allows(T::kRead, "b", "f"));
  EXPECT_TRUE(p.allows(T::kRead, "a", "g"));
  EXPECT_FALSE(p.allows(T::kRead, "a", "h"));
  EXPECT_EQ(p.intervals(T::kRead).size(), 1u);
  EXPECT_EQ(p.intervals(T::kRead)[0], (RangePerms::Interval{"a", std::string("g")}));
  // Write: only [d,g).
  EXPECT_FALSE(p.allows(T::kWrite, "b", "f"));
  EXPECT_TRUE(p.allows(T::kWrite, "d", "f"));
}

TEST(RangePerms, AGapBetweenPermissionsIsNotCovered) {
  auto p = of({perm(pb::Permission::READ, "a", "c"), perm(pb::Permission::READ, "d", "f")});
  EXPECT_EQ(p.intervals(T::kRead).size(), 2u);
  EXPECT_FALSE(p.allows(T::kRead, "b", "e"));
  EXPECT_FALSE(p.allows(T::kRead, "c", ""));
  EXPECT_TRUE(p.allows(T::kRead, "d", ""));
  EXPECT_TRUE(p.allows(T::kRead, "b", ""));
}

TEST(RangePerms, AnUnboundedPermissionSwallowsLaterOnes) {
  auto p = of({perm(pb::Permission::READ, "b", kAll), perm(pb::Permission::READ, "c", "d"),
               perm(pb::Permission::READ, "a", "b")});
  ASSERT_EQ(p.intervals(T::kRead).size(), 1u);
  EXPECT_FALSE(p.intervals(T::kRead)[0].end.has_value());
  EXPECT_TRUE(p.allows(T::kRead, "a", kAll));
}

TEST(RangePerms, NoPermissionsAllowNothing) {
  RangePerms p;
  EXPECT_FALSE(p.allows(T::kRead, "a", ""));
  EXPECT_FALSE(p.allows(T::kWrite, "a", kAll));
}

TEST(RangePerms, ARequestWithAnEmptyRangeNeedsItsKey) {
  auto p = of({perm(pb::Permission::READ, "m")});
  EXPECT_TRUE(p.allows(T::kRead, "m", "a"));  // range_end before key: only "m" is named
  EXPECT_FALSE(p.allows(T::kRead, "n", "a"));
}

TEST(RangePerms, PermissionsWithEndAtOrBeforeKeyAreRefused) {
  EXPECT_TRUE(invalid_permission(perm(pb::Permission::READ, "b", "a")).has_value());
  EXPECT_TRUE(invalid_permission(perm(pb::Permission::READ, "b", "b")).has_value());
  EXPECT_TRUE(invalid_permission(perm(pb::Permission::READ, "", "")).has_value());
  EXPECT_TRUE(invalid_permission(perm(pb::Permission::READ, "", "z")).has_value());
  EXPECT_FALSE(invalid_permission(perm(pb::Permission::READ, "", kAll)).has_value());
  EXPECT_FALSE(invalid_permission(perm(pb::Permission::WRITE, "a", "b")).has_value());
  EXPECT_FALSE(invalid_permission(perm(pb::Permission::READWRITE, "a")).has_value());
  pb::Permission bad = perm(pb::Permission::READ, "a");
  bad.set_permtype(static_cast<pb::Permission::Type>(7));
  EXPECT_TRUE(invalid_permission(bad).has_value());
  // A granted permission of that kind would grant nothing anyway.
  auto p = of({perm(pb::Permission::READ, "b", "a")});
  EXPECT_TRUE(p.intervals(T::kRead).empty());
}

}  // namespace
}  // namespace muster::storage
