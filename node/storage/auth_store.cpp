// node/storage/auth_store.cpp: see auth_store.h.  The rules (what may be
// deleted while auth is on, what bumps the revision, which error for what)
// are etcd 3.4's auth/store.go and etcdserver/apply_auth.go.
#include "node/storage/auth_store.h"

#include <algorithm>
#include <chrono>

#include "node/storage/db.h"
#include "node/storage/errors.h"

namespace muster::storage {

namespace {

int64_t steady_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string user_key(const std::string& name) { return std::string(1, keys::kUser) + name; }
std::string role_key(const std::string& name) { return std::string(1, keys::kRole) + name; }

Status failed_precondition(const char* msg) { return {Code::kFailedPrecondition, msg}; }

}  // namespace

// ---------------------------------------------------------------- AuthView

bool AuthView::has_role(const std::string& user, const std::string& role) const {
  auto it = users.find(user);
  if (it == users.end()) return false;
  const auto& r = it->second.roles();
  return std::find(r.begin(), r.end(), role) != r.end();
}

Status AuthView::check(const AuthInfo* who, RangePerms::Type type, const std::string& key,
                       const std::string& range_end) const {
  if (!enabled) return {};
  if (who == nullptr || who->revision == 0) return errors::user_empty();
  if (who->revision < revision) return errors::auth_old_revision();
  if (!users.count(who->user)) return errors::permission_denied();
  if (is_root(who->user)) return {};
  auto p = perms.find(who->user);
  if (p != perms.end() && p->second.allows(type, key, range_end)) return {};
  return errors::permission_denied();
}

Status AuthView::check_admin(const AuthInfo* who) const {
  if (!enabled) return {};
  if (who == nullptr || who->user.empty()) return errors::user_empty();
  if (!users.count(who->user)) return errors::user_not_found();
  if (!is_root(who->user)) return errors::permission_denied();
  return {};
}

// ---------------------------------------------------------------- AuthStore

AuthStore::AuthStore(Options options)
    : options_(std::move(options)), view_(std::make_shared<AuthView>()) {
  if (!options_.clock_ms) options_.clock_ms = steady_now_ms;
  if (options_.token_ttl_ms <= 0) options_.token_ttl_ms = 300'000;
}

std::shared_ptr<const AuthView> AuthStore::view() const {
  std::lock_guard l(mu_);
  return view_;
}

void AuthStore::publish(std::shared_ptr<AuthView> v) {
  std::lock_guard l(mu_);
  view_ = std::move(v);
}

void AuthStore::rebuild_perms(AuthView* v) {
  v->perms.clear();
  for (const auto& [name, user] : v->users) {
    std::vector<const pb::Permission*> all;
    for (const auto& role : user.roles()) {
      auto r = v->roles.find(role);
      if (r == v->roles.end()) continue;
      for (const auto& p : r->second.keypermission()) all.push_back(&p);
    }
    v->perms.emplace(name, RangePerms(all));
  }
}

Status AuthStore::load(leveldb::DB* db) {
  auto v = std::make_shared<AuthView>();
  std::string raw;
  leveldb::Status s = db->Get(leveldb::ReadOptions(), keys::kAuth, &raw);
  if (s.ok()) {
    pb::AuthRecord rec;
    if (!rec.ParseFromString(raw)) fatal("unparsable auth record");
    v->enabled = rec.enabled();
    v->revision = std::max<uint64_t>(1, rec.revision());
  } else if (!s.IsNotFound()) {
    return from_leveldb(s);
  }
  std::unique_ptr<leveldb::Iterator> it(db->NewIterator(leveldb::ReadOptions()));
  for (it->Seek(std::string(1, keys::kUser)); it->Valid() && it->key()[0] == keys::kUser;
       it->Next()) {
    pb::User u;
    if (!u.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())))
      fatal("unparsable auth user record");
    v->users[u.name()] = std::move(u);
  }
  for (it->Seek(std::string(1, keys::kRole)); it->Valid() && it->key()[0] == keys::kRole;
       it->Next()) {
    pb::Role r;
    if (!r.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())))
      fatal("unparsable auth role record");
    v->roles[r.name()] = std::move(r);
  }
  if (!it->status().ok()) return from_leveldb(it->status());
  rebuild_perms(v.get());
  publish(std::move(v));
  return {};
}

std::optional<std::string> AuthStore::token_user(const std::string& token) {
  std::lock_guard l(mu_);
  auto it = tokens_.find(token);
  if (it == tokens_.end()) return std::nullopt;
  const int64_t now = options_.clock_ms();
  if (it->second.expiry_ms <= now) {
    tokens_.erase(it);
    return std::nullopt;
  }
  it->second.expiry_ms = now + options_.token_ttl_ms;  // etcd resets the TTL on use
  return it->second.user;
}

void AuthStore::put_record(const AuthView& v, leveldb::WriteBatch* batch) const {
  pb::AuthRecord rec;
  rec.set_enabled(v.enabled);
  rec.set_revision(v.revision);
  batch->Put(keys::kAuth, rec.SerializeAsString());
}

bool AuthStore::handles(const pb::InternalRequest& req) {
  switch (req.request_case()) {
    case pb::InternalRequest::kAuthEnable:
    case pb::InternalRequest::kAuthDisable:
    case pb::InternalRequest::kAuthenticate:
    case pb::InternalRequest::kUserAdd:
    case pb::InternalRequest::kUserDelete:
    case pb::InternalRequest::kUserChangePassword:
    case pb::InternalRequest::kUserGrantRole:
    case pb::InternalRequest::kUserRevokeRole:
    case pb::InternalRequest::kRoleAdd:
    case pb::InternalRequest::kRoleDelete:
    case pb::InternalRequest::kRoleGrantPermission:
    case pb::InternalRequest::kRoleRevokePermission:
      return true;
    default:
      return false;
  }
}

Status AuthStore::apply(const pb::InternalRequest& req, uint64_t index, leveldb::WriteBatch* batch,
                        pb::InternalResponse* out) {
  std::shared_ptr<const AuthView> cur = view();
  // Everything but Authenticate is the root user's (etcd's
  // needAdminPermission), decided here, at apply, so that every member
  // decides alike.
  if (!req.has_authenticate()) {
    AuthInfo who{req.auth().username(), req.auth().auth_revision()};
    if (Status s = cur->check_admin(req.has_auth() ? &who : nullptr); !s) return s;
  }
  auto next = std::make_shared<AuthView>(*cur);
  AuthView& v = *next;
  bool changed = true;         // bumps the revision, stages the record
  bool perms_changed = false;  // users' roles or roles' permissions
  std::optional<std::string> invalidate_user;
  bool clear_tokens = false;

  switch (req.request_case()) {
    case pb::InternalRequest::kAuthEnable: {
      out->mutable_auth_enable();
      if (v.enabled) return {};  // already on: nothing changes (etcd)
      auto root = v.users.find(kRootUser);
      if (root == v.users.end()) return failed_precondition(errors::kRootUserNotExist);
      if (!v.is_root(kRootUser)) return failed_precondition(errors::kRootRoleNotExist);
      v.enabled = true;
      // etcd does not count enabling as a revision.
      put_record(v, batch);
      publish(std::move(next));
      return {};
    }
    case pb::InternalRequest::kAuthDisable:
      out->mutable_auth_disable();
      if (!v.enabled) return {};
      v.enabled = false;
      clear_tokens = true;
      break;
    case pb::InternalRequest::kAuthenticate: {
      const auto& a = req.authenticate();
      if (!v.enabled) return errors::auth_not_enabled();
      auto u = v.users.find(a.name());
      if (u == v.users.end() || u->second.options().no_password()) return errors::auth_failed();
      // The password was checked against an older state (a new password or
      // a re-created user since): the proposer checks again.
      if (a.checked_revision() != v.revision) return errors::auth_old_revision();
      if (a.simple_token().empty()) {  // a JWT, signed by the proposer
        out->mutable_authenticate();
        return {};
      }
      const std::string token = a.simple_token() + "." + std::to_string(index);
      {
        std::lock_guard l(mu_);
        const int64_t now = options_.clock_ms();
        for (auto it = tokens_.begin(); it != tokens_.end();)
          it = it->second.expiry_ms <= now ? tokens_.erase(it) : std::next(it);
        tokens_[token] = Token{a.name(), now + options_.token_ttl_ms};
      }
      out->mutable_authenticate()->set_token(token);
      return {};  // no state change, no revision
    }
    case pb::InternalRequest::kUserAdd: {
      const auto& r = req.user_add();
      if (r.name().empty()) return errors::user_empty();
      if (v.users.count(r.name())) return failed_precondition(errors::kUserAlreadyExist);
      pb::User u;
      u.set_name(r.name());
      u.set_password(r.hashed_password());
      *u.mutable_options() = r.options();
      batch->Put(user_key(r.name()), u.SerializeAsString());
      v.users[r.name()] = std::move(u);
      perms_changed = true;
      out->mutable_user_add();
      break;
    }
    case pb::InternalRequest::kUserDelete: {
      const std::string& name = req.user_delete().name();
      if (v.enabled && name == kRootUser) return errors::invalid_auth_mgmt();
      if (!v.users.erase(name)) return errors::user_not_found();
      batch->Delete(user_key(name));
      perms_changed = true;
      invalidate_user = name;
      out->mutable_user_delete();
      break;
    }
    case pb::InternalRequest::kUserChangePassword: {
      const auto& r = req.user_change_password();
      auto u = v.users.find(r.name());
      if (u == v.users.end()) return errors::user_not_found();
      u->second.set_password(r.hashed_password());
      batch->Put(user_key(r.name()), u->second.SerializeAsString());
      invalidate_user = r.name();
      out->mutable_user_change_password();
      break;
    }
    case pb::InternalRequest::kUserGrantRole: {
      const auto& r = req.user_grant_role();
      auto u = v.users.find(r.user());
      if (u == v.users.end()) return errors::user_not_found();
      // The root role need not exist as a role to be granted (etcd).
      if (r.role() != kRootRole && !v.roles.count(r.role())) return errors::role_not_found();
      out->mutable_user_grant_role();
      auto* roles = u->second.mutable_roles();
      if (std::find(roles->begin(), roles->end(), r.role()) != roles->end()) return {};
      roles->Add(std::string(r.role()));
      std::sort(roles->begin(), roles->end());
      batch->Put(user_key(r.user()), u->second.SerializeAsString());
      perms_changed = true;
      break;
    }
    case pb::InternalRequest::kUserRevokeRole: {
      const auto& r = req.user_revoke_role();
      if (v.enabled && r.name() == kRootUser && r.role() == kRootRole)
        return errors::invalid_auth_mgmt();
      auto u = v.users.find(r.name());
      if (u == v.users.end()) return errors::user_not_found();
      auto* roles = u->second.mutable_roles();
      auto it = std::find(roles->begin(), roles->end(), r.role());
      if (it == roles->end()) return failed_precondition(errors::kRoleNotGranted);
      roles->erase(it);
      batch->Put(user_key(r.name()), u->second.SerializeAsString());
      perms_changed = true;
      out->mutable_user_revoke_role();
      break;
    }
    case pb::InternalRequest::kRoleAdd: {
      const std::string& name = req.role_add().name();
      if (name.empty()) return {Code::kInvalidArgument, errors::kRoleEmpty};
      if (v.roles.count(name)) return failed_precondition(errors::kRoleAlreadyExist);
      pb::Role role;
      role.set_name(name);
      batch->Put(role_key(name), role.SerializeAsString());
      v.roles[name] = std::move(role);
      out->mutable_role_add();
      break;
    }
    case pb::InternalRequest::kRoleDelete: {
      const std::string& name = req.role_delete().role();
      if (v.enabled && name == kRootRole) return errors::invalid_auth_mgmt();
      if (!v.roles.erase(name)) return errors::role_not_found();
      batch->Delete(role_key(name));
      for (auto& [uname, u] : v.users) {
        auto* roles = u.mutable_roles();
        auto it = std::find(roles->begin(), roles->end(), name);
        if (it == roles->end()) continue;
        roles->erase(it);
        batch->Put(user_key(uname), u.SerializeAsString());
      }
      perms_changed = true;
      out->mutable_role_delete();
      break;
    }
    case pb::InternalRequest::kRoleGrantPermission: {
      const auto& r = req.role_grant_permission();
      auto role = v.roles.find(r.name());
      if (role == v.roles.end()) return errors::role_not_found();
      if (!r.has_perm()) return {Code::kInvalidArgument, "etcdserver: permission not given"};
      if (auto why = invalid_permission(r.perm()))
        return {Code::kInvalidArgument, "etcdserver: invalid permission: " + *why};
      auto* perms = role->second.mutable_keypermission();
      auto same = std::find_if(perms->begin(), perms->end(), [&](const pb::Permission& p) {
        return p.key() == r.perm().key() && p.range_end() == r.perm().range_end();
      });
      if (same != perms->end()) {
        same->set_permtype(r.perm().permtype());
      } else {
        *perms->Add() = r.perm();
        std::stable_sort(
            perms->begin(), perms->end(),
            [](const pb::Permission& a, const pb::Permission& b) { return a.key() < b.key(); });
      }
      batch->Put(role_key(r.name()), role->second.SerializeAsString());
      perms_changed = true;
      out->mutable_role_grant_permission();
      break;
    }
    case pb::InternalRequest::kRoleRevokePermission: {
      const auto& r = req.role_revoke_permission();
      auto role = v.roles.find(r.role());
      if (role == v.roles.end()) return errors::role_not_found();
      auto* perms = role->second.mutable_keypermission();
      const int before = perms->size();
      for (int i = perms->size() - 1; i >= 0; --i)
        if (perms->Get(i).key() == r.key() && perms->Get(i).range_end() == r.range_end())
          perms->DeleteSubrange(i, 1);
      if (perms->size() == before) return failed_precondition(errors::kPermissionNotGranted);
      batch->Put(role_key(r.role()), role->second.SerializeAsString());
      perms_changed = true;
      out->mutable_role_revoke_permission();
      break;
    }
    default:
      changed = false;
      break;
  }
  if (!changed) fatal("AuthStore::apply given a request it does not handle");
  v.revision++;
  put_record(v, batch);
  if (perms_changed) rebuild_perms(&v);
  {
    std::lock_guard l(mu_);
    view_ = std::move(next);
    if (clear_tokens) tokens_.clear();
    if (invalidate_user)
      for (auto it = tokens_.begin(); it != tokens_.end();)
        it = it->second.user == *invalidate_user ? tokens_.erase(it) : std::next(it);
  }
  return {};
}

}  // namespace muster::storage
