// node/storage/auth_store.h: etcd 3.4's auth state (users, roles, their key
// permissions, the enabled flag and the auth revision) as part of the
// replicated state machine, and the simple tokens every member registers
// when it applies an Authenticate.
//
// Replication: every change is an InternalRequest applied by KvStore (in
// the same WriteBatch as the applied index), so every member holds the same
// users, roles and auth revision at the same log index, and a permission
// revoked at index N is enforced by every member for every write applied
// after N.  The auth revision counts changes (etcd's authRevision): it
// starts at 1 and every successful change adds one.
//
// On disk (db.h):
//     "mauth"        AuthRecord     enabled flag and auth revision
//     'U' <name>     authpb.User    a user (bcrypt hash in `password`)
//     'R' <name>     authpb.Role    a role and its permissions
//
// Readers: view() is an immutable snapshot (users, roles, merged permissions)
// that request threads check against without a lock held; apply replaces
// it.  Tokens are memory only (etcd's simple tokens are too): lost on
// restart or snapshot install, after which clients authenticate again.
//
// Who calls what: KvStore::ApplyBatch calls apply() (the apply thread);
// the v3 service calls view(), token_user() from any thread.
#pragma once

#include <leveldb/db.h>
#include <leveldb/write_batch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "node/storage/pb.h"
#include "node/storage/range_perms.h"
#include "node/storage/status.h"

namespace muster::storage {

inline constexpr const char* kRootUser = "root";
inline constexpr const char* kRootRole = "root";

// A caller as the proposing member resolved it (etcd's AuthInfo).
struct AuthInfo {
  std::string user;
  uint64_t revision = 0;
};

// One immutable state of the auth store.
struct AuthView {
  bool enabled = false;
  uint64_t revision = 1;
  std::map<std::string, pb::User> users;
  std::map<std::string, pb::Role> roles;
  std::map<std::string, RangePerms> perms;  // per user, the union of its roles

  bool has_role(const std::string& user, const std::string& role) const;
  bool is_root(const std::string& user) const { return has_role(user, kRootRole); }

  // etcd's isOpPermitted: ok when auth is off; otherwise the caller must be
  // known (user name is empty), not older than this revision (revision of
  // auth store is old), exist and hold root or a covering permission
  // (permission denied).  `who` null = no credentials.
  Status check(const AuthInfo* who, RangePerms::Type type, const std::string& key,
               const std::string& range_end) const;
  // etcd's IsAdminPermitted: the caller must hold the root role.
  Status check_admin(const AuthInfo* who) const;
};

class AuthStore {
 public:
  struct Options {
    std::function<int64_t()> clock_ms;  // monotonic milliseconds (token expiry)
    int64_t token_ttl_ms = 300'000;     // --auth-token-ttl
  };

  explicit AuthStore(Options options);

  // Reads the persisted state.  REQUIRES: called once, before any reader.
  Status load(leveldb::DB* db);

  std::shared_ptr<const AuthView> view() const;
  bool enabled() const { return view()->enabled; }
  uint64_t revision() const { return view()->revision; }

  // The user a simple token stands for, refreshing its lifetime; nullopt
  // for a token never issued here, expired, or invalidated.
  std::optional<std::string> token_user(const std::string& token);

  static bool handles(const pb::InternalRequest& req);

  // Applies one auth request at log `index` (apply thread).  Checks the
  // proposer's credentials first (etcd's needAdminPermission), then changes
  // the state, stages the records into `batch` and answers in `out`.  A
  // failure changes nothing.
  Status apply(const pb::InternalRequest& req, uint64_t index, leveldb::WriteBatch* batch,
               pb::InternalResponse* out);

 private:
  struct Token {
    std::string user;
    int64_t expiry_ms = 0;
  };
  void publish(std::shared_ptr<AuthView> v);
  void put_record(const AuthView& v, leveldb::WriteBatch* batch) const;
  static void rebuild_perms(AuthView* v);

  Options options_;
  mutable std::mutex mu_;  // guards view_ and tokens_
  std::shared_ptr<const AuthView> view_;
  std::map<std::string, Token> tokens_;
};

}  // namespace muster::storage
