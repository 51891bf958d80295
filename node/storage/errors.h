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
// muster's own (etcd has no limit): more than kMaxNestedTxns txns inside one
// another.
inline constexpr const char* kTxnTooDeep = "etcdserver: txns nested too deeply in txn request";
inline constexpr const char* kValueProvided = "etcdserver: value is provided";
inline constexpr const char* kLeaseProvided = "etcdserver: lease is provided";
inline constexpr const char* kMemberNotFound = "etcdserver: member not found";
inline constexpr const char* kMemberExist = "etcdserver: member ID already exist";
inline constexpr const char* kPeerURLExist = "etcdserver: Peer URLs already exists";
inline constexpr const char* kMemberRemoved = "etcdserver: member has been permanently removed";
// Writes refused while the CORRUPT alarm is raised (codes.DataLoss), and
// while NOSPACE is (codes.ResourceExhausted).
inline constexpr const char* kCorrupt = "etcdserver: corrupt cluster";
inline constexpr const char* kNoSpace = "etcdserver: mvcc: database space exceeded";
inline constexpr const char* kMemberNotLearner = "etcdserver: can only promote a learner member";

// Auth (etcd's ErrGRPC* of the same text; the codes are etcd's too).
inline constexpr const char* kRootUserNotExist = "etcdserver: root user does not exist";
inline constexpr const char* kRootRoleNotExist = "etcdserver: root user does not have root role";
inline constexpr const char* kUserAlreadyExist = "etcdserver: user name already exists";
inline constexpr const char* kUserEmpty = "etcdserver: user name is empty";
inline constexpr const char* kUserNotFound = "etcdserver: user name not found";
inline constexpr const char* kRoleAlreadyExist = "etcdserver: role name already exists";
inline constexpr const char* kRoleNotFound = "etcdserver: role name not found";
inline constexpr const char* kRoleEmpty = "etcdserver: role name is empty";
inline constexpr const char* kAuthFailed =
    "etcdserver: authentication failed, invalid user ID or password";
inline constexpr const char* kPermissionDenied = "etcdserver: permission denied";
inline constexpr const char* kRoleNotGranted = "etcdserver: role is not granted to the user";
inline constexpr const char* kPermissionNotGranted =
    "etcdserver: permission is not granted to the role";
inline constexpr const char* kAuthNotEnabled = "etcdserver: authentication is not enabled";
inline constexpr const char* kInvalidAuthToken = "etcdserver: invalid auth token";
inline constexpr const char* kInvalidAuthMgmt = "etcdserver: invalid auth management";
inline constexpr const char* kAuthOldRevision = "etcdserver: revision of auth store is old";
inline constexpr const char* kTooManyRequests = "etcdserver: too many requests";

inline Status compacted() { return {Code::kOutOfRange, kCompacted}; }
inline Status future_rev() { return {Code::kOutOfRange, kFutureRev}; }
inline Status corrupt() { return {Code::kDataLoss, kCorrupt}; }
inline Status no_space() { return {Code::kResourceExhausted, kNoSpace}; }
inline Status lease_not_found() { return {Code::kNotFound, kLeaseNotFound}; }
inline Status permission_denied() { return {Code::kPermissionDenied, kPermissionDenied}; }
inline Status user_empty() { return {Code::kInvalidArgument, kUserEmpty}; }
inline Status user_not_found() { return {Code::kFailedPrecondition, kUserNotFound}; }
inline Status role_not_found() { return {Code::kFailedPrecondition, kRoleNotFound}; }
inline Status auth_old_revision() { return {Code::kInvalidArgument, kAuthOldRevision}; }
inline Status invalid_auth_token() { return {Code::kUnauthenticated, kInvalidAuthToken}; }
inline Status auth_failed() { return {Code::kInvalidArgument, kAuthFailed}; }
inline Status auth_not_enabled() { return {Code::kFailedPrecondition, kAuthNotEnabled}; }
inline Status invalid_auth_mgmt() { return {Code::kInvalidArgument, kInvalidAuthMgmt}; }

}  // namespace muster::storage::errors
