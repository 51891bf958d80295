#include "base/edit_distance.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace muster::base {

std::size_t edit_distance(std::string_view a, std::string_view b, std::size_t limit) {
  if (a.size() < b.size()) std::swap(a, b);  // one row per character of the longer
  if (a.size() - b.size() > limit) return limit + 1;
  if (limit < a.size()) {
    // One edit changes the two strings' character counts by two at most: a
    // large difference in counts settles it in one pass (a long argument
    // against every flag name of a "did you mean" search).
    int counts[256] = {};
    for (const char c : a) ++counts[static_cast<unsigned char>(c)];
    for (const char c : b) --counts[static_cast<unsigned char>(c)];
    std::size_t apart = 0;
    for (const int n : counts) apart += static_cast<std::size_t>(n < 0 ? -n : n);
    if ((apart + 1) / 2 > limit) return limit + 1;
  }
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    std::size_t best = row[0];
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
      best = std::min(best, row[j]);
    }
    if (best > limit) return limit + 1;
  }
  return row[b.size()];
}

}  // namespace muster::base
