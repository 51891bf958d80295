#include "base/edit_distance.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

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
  // Anagrams: the character counts agree, the table still decides.
  EXPECT_EQ(edit_distance("listen", "silent", 4), 4u);
  EXPECT_GT(edit_distance("listen", "silent", 3), 3u);
  // The counts alone are far apart.
  EXPECT_GT(edit_distance("zzzzzzzzzzzzzzzzzzzzzzzz", "initial-advertise-peer", 8), 8u);
  EXPECT_EQ(edit_distance("zzzzzzzzzzzzzzzzzzzzzz", "initial-advertise-peer"), 22u);
  // A distance equal to the length difference is still found under a tight bound.
  EXPECT_EQ(edit_distance("peer-cert-file", "peer-cert-file-extra", 6), 6u);
}

// The plain quadratic table, for reference.
std::size_t reference(const std::string& a, const std::string& b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i)
    for (std::size_t j = 1; j <= b.size(); ++j)
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
  return d[a.size()][b.size()];
}

TEST(EditDistance, EveryBoundAgreesWithTheWholeTable) {
  std::mt19937 rng(12345);
  auto word = [&rng] {
    std::string w(rng() % 14, ' ');
    for (char& c : w) c = static_cast<char>('a' + rng() % 4);
    return w;
  };
  for (int n = 0; n < 3000; ++n) {
    const std::string a = word(), b = word();
    const std::size_t exact = reference(a, b);
    ASSERT_EQ(edit_distance(a, b), exact) << a << " / " << b;
    for (std::size_t limit = 0; limit <= 14; ++limit) {
      const std::size_t got = edit_distance(a, b, limit);
      if (exact <= limit) {
        ASSERT_EQ(got, exact) << a << " / " << b << " limit " << limit;
      } else {
        ASSERT_GT(got, limit) << a << " / " << b << " limit " << limit;
      }
    }
  }
}

}  // namespace
