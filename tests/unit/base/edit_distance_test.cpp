#include "base/edit_distance.h"

#include <gtest/gtest.h>

#include <string>

namespace {

using muster::base::edit_distance;

TEST(EditDistance, CountsInsertionsDeletionsAndSubstitutions) {
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(edit_distance("abc", ""), 3u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("sitting", "kitten"), 3u);
  EXPECT_EQ(edit_distance("name", "name"), 0u);
  EXPECT_EQ(edit_distance("initial-cluster-tokne", "initial-cluster-token"), 2u);
}

TEST(EditDistance, ABoundAnswersExactlyUpToItAndAboveItPastIt) {
  EXPECT_EQ(edit_distance("kitten", "sitting", 3), 3u);
  EXPECT_GT(edit_distance("kitten", "sitting", 2), 2u);
  EXPECT_GT(edit_distance("kitten", "sitting", 0), 0u);
  EXPECT_EQ(edit_distance("name", "name", 0), 0u);
  // The length difference alone exceeds the bound.
  EXPECT_GT(edit_distance(std::string(5000, 'x'), "listen-client-urls", 10), 10u);
  // Same lengths, nothing in common: every row's minimum passes the bound early.
  const std::string a(400, 'a'), b(400, 'b');
  EXPECT_GT(edit_distance(a, b, 5), 5u);
  EXPECT_EQ(edit_distance(a, b), 400u);
  // A distance equal to the length difference is still found under a tight bound.
  EXPECT_EQ(edit_distance("peer-cert-file", "peer-cert-file-extra", 6), 6u);
}

}  // namespace
