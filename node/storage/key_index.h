// KeyHistory: the in-memory index of one key's MVCC revisions (etcd's
// keyIndex), and Revision, the (main, sub) pair that orders every change.
//
// A key's life is a sequence of generations: puts append revisions to the
// current generation, a delete appends a tombstone revision and closes it; the
// next put starts a new generation (create_revision = its first revision).
// Here the generations are kept flat: `revs` ascending, a tombstone ends a
// generation.  The index is rebuilt from LevelDB's 'r' records on open.
//
// Not thread-safe; KvStore guards it.
#pragma once

#include <absl/container/btree_map.h>
#include <absl/container/node_hash_map.h>

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace muster::storage {

struct Revision {
  int64_t main = 0;
  int64_t sub = 0;
  auto operator<=>(const Revision&) const = default;
};

struct KeyHistory {
  struct Rev {
    Revision rev;
    bool tombstone = false;
  };
  // Ascending.  Never empty while the key is in the index.
  std::vector<Rev> revs;
  // Of the latest revision when alive: lets keys_only reads, compares and
  // puts avoid reading the record.
  int64_t create_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;

  bool alive() const { return !revs.empty() && !revs.back().tombstone; }

  // The revision visible at store revision `at` (the latest with main <= at),
  // or nullptr when the key did not exist at `at`.
  const Rev* find(int64_t at) const;

  // The revision just before `r` in the same generation (the previous value a
  // watch event's prev_kv shows), or nullptr.
  const Rev* previous(Revision r) const;

  // etcd's compaction: drops every revision with main <= at except the
  // latest one, which is dropped too if it is a tombstone.  Appends the
  // dropped revisions to *removed.
  void compact(int64_t at, std::vector<Revision>* removed);
};

// Every key's history, ordered for range reads and hashed for the point
// lookups of each put, delete and single-key read.  An ordered tree alone
// made every put's lookup a walk of string comparisons down a deep tree (a
// key history is large, so few fit in a node): about 4% of a member's CPU
// under a put load over 100k keys.  Entries live in hash nodes (stable
// addresses); the tree maps a view of each key to its entry.  Iteration is
// in key order and yields std::pair<const std::string, KeyHistory>&.
class KeyMap {
 public:
  using value_type = std::pair<const std::string, KeyHistory>;

 private:
  using Nodes = absl::node_hash_map<std::string, KeyHistory>;
  using Order = absl::btree_map<std::string_view, value_type*>;

 public:
  template <bool Const>
  class Iter {
   public:
    using Base = std::conditional_t<Const, Order::const_iterator, Order::iterator>;
    using Value = std::conditional_t<Const, const value_type, value_type>;
    Iter() = default;
    explicit Iter(Base b) : b_(b) {}
    operator Iter<true>() const { return Iter<true>(b_); }  // NOLINT: as std iterators
    Value& operator*() const { return *b_->second; }
    Value* operator->() const { return b_->second; }
    Iter& operator++() {
      ++b_;
      return *this;
    }
    bool operator==(const Iter& o) const { return b_ == o.b_; }
    const Base& base() const { return b_; }

   private:
    Base b_;
  };
  using iterator = Iter<false>;
  using const_iterator = Iter<true>;

  // The key's entry, or nullptr when absent (a hash lookup).
  value_type* find(std::string_view key) {
    auto it = nodes_.find(absl_view(key));
    return it == nodes_.end() ? nullptr : &*it;
  }
  const value_type* find(std::string_view key) const {
    auto it = nodes_.find(absl_view(key));
    return it == nodes_.end() ? nullptr : &*it;
  }
  // The key's history, created empty if absent.
  KeyHistory& operator[](std::string_view key) {
    auto [it, fresh] = nodes_.try_emplace(absl_view(key));
    if (fresh) order_.emplace(std::string_view(it->first), &*it);
    return it->second;
  }
  iterator begin() { return iterator(order_.begin()); }
  iterator end() { return iterator(order_.end()); }
  const_iterator begin() const { return const_iterator(order_.begin()); }
  const_iterator end() const { return const_iterator(order_.end()); }
  iterator lower_bound(std::string_view key) { return iterator(order_.lower_bound(key)); }
  const_iterator lower_bound(std::string_view key) const {
    return const_iterator(order_.lower_bound(key));
  }
  iterator erase(iterator it) {
    const value_type* v = &*it;
    auto next = order_.erase(it.base());
    nodes_.erase(nodes_.find(v->first));
    return iterator(next);
  }
  size_t size() const { return order_.size(); }
  void clear() {
    order_.clear();
    nodes_.clear();
  }

 private:
  // Debian's abseil has its own string_view type.
  static absl::string_view absl_view(std::string_view s) { return {s.data(), s.size()}; }

  Nodes nodes_;
  Order order_;
};

}  // namespace muster::storage
