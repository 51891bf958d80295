// V2Store: etcd's v2 keys model (directories, TTLs, compare-and-swap,
// in-order keys, recursive get/delete, waiting from an index) served from the
// same MVCC store as v3, so that a muster cluster can host discovery tokens.
//
// Mapping onto MVCC keys (also in docs/storage.md):
//   - the v2 node at path P ("/a/b", cleaned as Go's path.Clean) is the MVCC
//     key kV2Prefix + P; the root "/" is implicit and never stored;
//   - the value is one type byte ('F' file, 'D' directory), one action byte
//     (the v2 action that last wrote the node: 's' set, 'c' create,
//     'u' update, 'w' compareAndSwap, so waiting can report it), then for
//     files the v2 value;
//   - createdIndex = create_revision, modifiedIndex = mod_revision, and the
//     store index (X-Etcd-Index) is the current revision.  `set` on an
//     existing file replaces the node (delete + put in one revision), so it
//     gets a fresh createdIndex as in etcd;
//   - a TTL is a lease (granted in the same revision) attached to the node;
//     when a directory's lease is revoked its whole subtree is deleted;
//   - keys whose last path component starts with '_' are hidden from
//     listings and recursive waits (not from direct reads).
//
// Who calls what: modifications come through KvStore::apply (InternalRequest
// with `v2` set), which calls V2Store::apply under the store's write lock.
// get() and wait() are reads and may be called from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "etcdwire/v2.h"
#include "node/storage/kv_store.h"
#include "node/storage/pb.h"

namespace muster::storage {

// v2 error codes, messages and HTTP statuses: etcd's table (etcdwire/v2.h).
using enum etcdwire::V2ErrorCode;
using etcdwire::v2_error_message;
using etcdwire::v2_error_status;

inline constexpr std::string_view kV2Prefix{"\0v2", 3};

class V2Store {
 public:
  // Go's path.Clean of "/" + path.
  static std::string clean_path(const std::string& path);
  static std::string mvcc_key(const std::string& clean_path) {
    return std::string(kV2Prefix) + clean_path;
  }

  // Applies a modifying request (PUT, POST, DELETE, QGET) inside an apply.
  static pb::V2Event apply(KvStore::Writer& w, const pb::V2Request& req, uint64_t index);

  // GET: the node at path (children listed for a directory, all descendants
  // when recursive, in key order).
  static pb::V2Event get(const KvStore& store, const std::string& path, bool recursive);

  // Waiting: the first change at revision >= wait_index to path (or, when
  // recursive, to path or a non-hidden descendant).  Returns true with *out
  // set when there is one; false when the caller must wait for new revisions
  // (then *next_index is the revision to retry from).  A wait_index below
  // the compacted revision gives error 401 in *out (returns true).
  static bool wait(const KvStore& store, const std::string& path, bool recursive,
                   uint64_t wait_index, pb::V2Event* out, uint64_t* next_index);

 private:
  // REQUIRES: store.mu_ held (shared or exclusive); path cleaned.
  static pb::V2Event get_locked(const KvStore& store, const std::string& path, bool recursive);
};

// Called by KvStore::apply for v2 requests.
pb::V2Event apply_v2(KvStore::Writer& w, const pb::V2Request& req, uint64_t index);

}  // namespace muster::storage
