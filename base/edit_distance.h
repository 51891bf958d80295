// base/edit_distance.h: the Levenshtein distance behind every "did you
// mean" hint (muster's and musterctl's flags).
#pragma once

#include <cstddef>
#include <limits>
#include <string_view>

namespace muster::base {

// The number of single-character insertions, deletions and substitutions
// that turn `a` into `b` when that is at most `limit`; otherwise some value
// above `limit`.  The bound makes a hint for a long argument cheap: the
// search stops once the length difference, the difference in character
// counts, or every partial alignment already costs more (a row's minimum
// never decreases).
std::size_t edit_distance(std::string_view a, std::string_view b,
                          std::size_t limit = std::numeric_limits<std::size_t>::max() - 1);

}  // namespace muster::base
