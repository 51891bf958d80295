// etcd's client-visible error strings (etcdserver/api/v3rpc/rpctypes), reused
// verbatim because clients match on them, and the Status values carrying them.
#pragma once

#include "node/storage/status.h"

namespace muster::storage::errors {

inline constexpr const char* kCompacted = "etcdserver: mvcc: required revision has been compacted";
inline constexpr const char* kFutureRev =
    "etcdserver: mvcc: required revision is a future revision";
inline constexpr const char* kLeaseNotFound = "etcdserver: requested lease not found";
inline constexpr const char* kLeaseExist = "etcdserver: lease already exists";
inline constexpr const char* kLeaseTTLTooLarge = "etcdserver: too large lease TTL";
inline constexpr const char* kKeyNotFound = "etcdserver: key not found";
inline constexpr const char* kEmptyKey = "etcdserver: key is not provided";
inline constexpr const char* kTooManyOps = "etcdserver: too many operations in txn request";
inline constexpr const char* kDuplicateKey = "etcdserver: duplicate key given in txn request";
inline constexpr const char* kValueProvided = "etcdserver: value is provided";
inline constexpr const char* kLeaseProvided = "etcdserver: lease is provided";
inline constexpr const char* kMemberNotFound = "etcdserver: member not found";
inline constexpr const char* kMemberExist = "etcdserver: member ID already exist";
inline constexpr const char* kPeerURLExist = "etcdserver: Peer URLs already exists";
inline constexpr const char* kMemberRemoved = "etcdserver: member has been permanently removed";
inline constexpr const char* kMemberNotLearner = "etcdserver: can only promote a learner member";

inline Status compacted() { return {Code::kOutOfRange, kCompacted}; }
inline Status future_rev() { return {Code::kOutOfRange, kFutureRev}; }
inline Status lease_not_found() { return {Code::kNotFound, kLeaseNotFound}; }

}  // namespace muster::storage::errors
