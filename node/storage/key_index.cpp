#include "node/storage/key_index.h"

#include <algorithm>

namespace muster::storage {

const KeyHistory::Rev* KeyHistory::find(int64_t at) const {
  // First revision with main > at; the one before it is visible at `at`.
  auto it = std::upper_bound(revs.begin(), revs.end(), at,
                             [](int64_t a, const Rev& r) { return a < r.rev.main; });
  if (it == revs.begin()) return nullptr;
  --it;
  if (it->tombstone) return nullptr;
  return &*it;
}

const KeyHistory::Rev* KeyHistory::previous(Revision r) const {
  auto it = std::lower_bound(revs.begin(), revs.end(), r,
                             [](const Rev& a, const Revision& b) { return a.rev < b; });
  if (it == revs.begin()) return nullptr;
  --it;
  if (it->tombstone) return nullptr;
  return &*it;
}

void KeyHistory::compact(int64_t at, std::vector<Revision>* removed) {
  auto it = std::upper_bound(revs.begin(), revs.end(), at,
                             [](int64_t a, const Rev& r) { return a < r.rev.main; });
  if (it == revs.begin()) return;
  size_t keep_from = static_cast<size_t>(it - revs.begin()) - 1;  // latest <= at
  if (revs[keep_from].tombstone) keep_from++;
  for (size_t i = 0; i < keep_from; i++) removed->push_back(revs[i].rev);
  revs.erase(revs.begin(), revs.begin() + static_cast<std::ptrdiff_t>(keep_from));
}

}  // namespace muster::storage
