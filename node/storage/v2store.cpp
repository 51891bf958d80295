#include "node/storage/v2store.h"

#include <cstdio>
#include <map>
#include <mutex>
#include <shared_mutex>

#include "node/storage/errors.h"

namespace muster::storage {

std::string V2Store::clean_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string c = path.substr(i, j - i);
    if (c == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!c.empty() && c != ".") {
      parts.push_back(std::move(c));
    }
    i = j + 1;
  }
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

namespace {

bool is_dir(const pb::KeyValue& kv) { return !kv.value().empty() && kv.value()[0] == 'D'; }

std::string node_path(const std::string& mvcc_key) { return mvcc_key.substr(kV2Prefix.size()); }

const char* action_name(char code) {
  switch (code) {
    case 'c':
      return "create";
    case 'u':
      return "update";
    case 'w':
      return "compareAndSwap";
    default:
      return "set";
  }
}

std::string parent_of(const std::string& p) {
  size_t slash = p.rfind('/');
  return slash == 0 ? "/" : p.substr(0, slash);
}

// Why `path` is not there, as etcd's walk reports it: the first path
// component that is missing (100, Key not found) or a file in the way
// (104, Not a directory), with that component as the cause.
// `lookup(p, &is_dir)` says whether p exists and whether it is a directory.
template <class Lookup>
std::pair<int, std::string> explain_missing(const std::string& path, Lookup lookup) {
  std::vector<std::string> chain;
  for (std::string p = path; p != "/"; p = parent_of(p)) chain.push_back(p);
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    bool dir = false;
    if (!lookup(*it, &dir)) return {kV2KeyNotFound, *it};
    if (!dir && std::next(it) != chain.rend()) return {kV2NotDir, *it};
  }
  return {kV2KeyNotFound, path};
}

// The ancestors of a cleaned path below the root, outermost first.
std::vector<std::string> ancestors_of(const std::string& p) {
  std::vector<std::string> out;
  for (std::string a = parent_of(p); a != "/"; a = parent_of(a)) out.insert(out.begin(), a);
  return out;
}

bool hidden_below(const std::string& watch_path, const std::string& key_path) {
  std::string after = key_path.substr(watch_path == "/" ? 0 : watch_path.size());
  return after.find("/_") != std::string::npos;
}

}  // namespace

// Everything here that touches KvStore internals runs with its lock held:
// apply() under the writer's exclusive lock, get() under a shared one.
class V2Apply {
 public:
  V2Apply(KvStore::Writer& w, const pb::V2Request& req, uint64_t index)
      : w_(w), s_(w.store()), req_(req), index_(index) {}

  pb::V2Event run();

  static pb::V2Node node_of(const KvStore& s, const pb::KeyValue& kv) {
    pb::V2Node n;
    n.set_key(node_path(kv.key()));
    if (is_dir(kv)) {
      n.set_dir(true);
    } else {
      n.set_value(kv.value().size() >= 2 ? kv.value().substr(2) : "");
    }
    n.set_modifiedindex(static_cast<uint64_t>(kv.mod_revision()));
    n.set_createdindex(static_cast<uint64_t>(kv.create_revision()));
    if (kv.lease() != 0) {
      auto l = s.leases_.find(kv.lease());
      if (l != s.leases_.end()) {
        const int64_t left = l->second.expiry_ms - s.options_.clock_ms();
        n.set_lease(kv.lease());
        n.set_ttl(left <= 0 ? 0 : (left + 999) / 1000);
      }
    }
    return n;
  }

 private:
  pb::V2Event fail(int code, const std::string& cause) {
    pb::V2Event ev;
    ev.mutable_error()->set_errorcode(code);
    ev.mutable_error()->set_message(v2_error_message(code));
    ev.mutable_error()->set_cause(cause);
    ev.mutable_error()->set_index(static_cast<uint64_t>(w_.read_rev()));
    ev.set_etcd_index(static_cast<uint64_t>(w_.read_rev()));
    return ev;
  }
  bool lookup(const std::string& path, pb::KeyValue* kv) {
    return w_.get(V2Store::mvcc_key(path), kv);
  }
  // The error for a node that is not there (see explain_missing).
  pb::V2Event missing(const std::string& path) {
    auto [code, cause] = explain_missing(path, [this](const std::string& p, bool* dir) {
      pb::KeyValue kv;
      if (!lookup(p, &kv)) return false;
      *dir = is_dir(kv);
      return true;
    });
    return fail(code, cause);
  }
  // Checks that every ancestor of path is a directory or absent; collects the
  // absent ones (outermost first) to create.
  bool check_parents(const std::string& path, std::vector<std::string>* missing, std::string* bad) {
    std::vector<std::string> chain;
    for (std::string p = parent_of(path); p != "/"; p = parent_of(p)) chain.push_back(p);
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      pb::KeyValue kv;
      if (lookup(*it, &kv)) {
        if (!is_dir(kv)) {
          *bad = *it;
          return false;
        }
      } else {
        missing->push_back(*it);
      }
    }
    return true;
  }
  void create_parents(const std::vector<std::string>& missing) {
    for (const auto& p : missing) w_.put(V2Store::mvcc_key(p), "Dc", 0, nullptr);
  }
  // Grants the lease for req.ttl and returns its ID, or 0 without a TTL.
  // A TTL of 0 is a node that expires at once, as etcd's v2 store has it
  // (an empty `ttl=` is no TTL).
  int64_t grant_ttl() {
    if (!req_.has_ttl() || req_.ttl() < 0) return 0;
    pb::LeaseGrantRequest g;
    g.set_ttl(req_.ttl());
    g.set_id(req_.lease_id());
    pb::LeaseGrantResponse r;
    if (!s_.apply_lease_grant(w_, g, index_, &r)) {
      g.set_id(0);  // the proposer's ID is taken: derive one
      if (!s_.apply_lease_grant(w_, g, index_, &r)) fatal("v2: cannot grant a TTL lease");
    }
    return r.id();
  }
  // A v2 lease belongs to one node: drop it once nothing is attached.
  void release_lease(int64_t id) {
    if (id == 0) return;
    auto l = s_.leases_.find(id);
    if (l == s_.leases_.end() || !l->second.keys.empty()) return;
    s_.leases_.erase(l);
    w_.batch().Delete(keys::with_id(keys::kLease, static_cast<uint64_t>(id)));
  }
  std::vector<std::string> descendants(const std::string& path) {
    const std::string prefix = V2Store::mvcc_key(path) + "/";
    return w_.live_keys(prefix, prefix_end(prefix));
  }
  void finish(pb::V2Event* ev, const std::string& path) {
    pb::KeyValue kv;
    if (lookup(path, &kv)) *ev->mutable_node() = node_of(s_, kv);
    ev->set_etcd_index(static_cast<uint64_t>(w_.read_rev()));
  }
  std::string compare_cause(const pb::KeyValue& kv, bool* ok) {
    const std::string cur = kv.value().substr(2);
    const bool value_bad = !req_.prev_value().empty() && req_.prev_value() != cur;
    const bool index_bad =
        req_.prev_index() != 0 && req_.prev_index() != static_cast<uint64_t>(kv.mod_revision());
    *ok = !value_bad && !index_bad;
    const std::string v = "[" + req_.prev_value() + " != " + cur + "]";
    const std::string i =
        "[" + std::to_string(req_.prev_index()) + " != " + std::to_string(kv.mod_revision()) + "]";
    if (value_bad && index_bad) return v + " " + i;
    return value_bad ? v : i;
  }

  pb::V2Event put();
  pb::V2Event refresh(const std::string& path);
  pb::V2Event set(const std::string& path);
  pb::V2Event create(const std::string& path, bool in_order);
  pb::V2Event update(const std::string& path);
  pb::V2Event cas(const std::string& path);
  pb::V2Event del(const std::string& path);

  KvStore::Writer& w_;
  KvStore& s_;
  const pb::V2Request& req_;
  uint64_t index_;
};

pb::V2Event V2Apply::run() {
  // A TTL no lease can carry would make grant_ttl() abort: refuse it.
  if (req_.has_ttl() && (req_.ttl() < 0 || req_.ttl() > kMaxLeaseTTL))
    return fail(kV2TTLNaN, "invalid value for \"ttl\"");
  const std::string path = V2Store::clean_path(req_.path());
  if (req_.method() == "PUT") return put();
  if (req_.method() == "POST") return create(path, true);
  if (req_.method() == "DELETE") return del(path);
  return fail(kV2InvalidField, "method " + req_.method());
}

pb::V2Event V2Apply::put() {
  const std::string path = V2Store::clean_path(req_.path());
  if (path == "/") return fail(kV2RootReadOnly, "/");
  if (req_.refresh()) return refresh(path);
  if (req_.has_prev_exist()) {
    if (req_.prev_exist()) {
      if (req_.prev_index() == 0 && req_.prev_value().empty()) return update(path);
      return cas(path);
    }
    return create(path, false);
  }
  if (req_.prev_index() > 0 || !req_.prev_value().empty()) return cas(path);
  return set(path);
}

// etcd's refresh: a write that keeps the value and sets a new TTL without
// notifying watchers.  Here it changes only the lease (no new revision, so
// no wait sees it; etcd gives it a new index), and answers as the write it
// stands for would: set, update (prevExist=true) or compareAndSwap.
pb::V2Event V2Apply::refresh(const std::string& path) {
  if (!req_.value().empty()) return fail(kV2RefreshValue, "");
  if (!req_.has_ttl()) return fail(kV2RefreshTTLRequired, "");
  pb::KeyValue kv;
  if (!lookup(path, &kv)) return missing(path);
  if (req_.has_prev_exist() && !req_.prev_exist()) return fail(kV2NodeExist, path);
  const bool compare = req_.prev_index() != 0 || !req_.prev_value().empty();
  if (compare) {
    if (is_dir(kv)) return fail(kV2NotFile, path);
    bool ok = false;
    std::string cause = compare_cause(kv, &ok);
    if (!ok) return fail(kV2TestFailed, cause);
  }
  pb::V2Event ev;
  ev.set_action(compare ? "compareAndSwap"
                        : (req_.has_prev_exist() && req_.prev_exist() ? "update" : "set"));
  // The previous node shows the TTL as it was.
  *ev.mutable_prevnode() = node_of(s_, kv);
  if (kv.lease() != 0) {
    auto l = s_.leases_.find(kv.lease());
    if (l != s_.leases_.end()) {
      if (l->second.ttl != req_.ttl()) {
        l->second.ttl = req_.ttl();
        pb::LeaseRecord rec;
        rec.set_id(kv.lease());
        rec.set_ttl(req_.ttl());
        w_.batch().Put(keys::with_id(keys::kLease, static_cast<uint64_t>(kv.lease())),
                       rec.SerializeAsString());
      }
      l->second.expiry_ms = s_.options_.clock_ms() + req_.ttl() * 1000;
    }
  }
  finish(&ev, path);
  return ev;
}

pb::V2Event V2Apply::set(const std::string& path) {
  pb::KeyValue old;
  const bool existed = lookup(path, &old);
  if (existed && is_dir(old)) return fail(kV2NotFile, path);
  std::vector<std::string> missing;
  std::string bad;
  if (!check_parents(path, &missing, &bad)) return fail(kV2NotDir, bad);
  create_parents(missing);
  const std::string key = V2Store::mvcc_key(path);
  // Replacing makes a new node (fresh createdIndex), as etcd's v2 store does.
  if (existed) w_.del(key, nullptr);
  const int64_t lease = grant_ttl();
  w_.put(key, req_.dir() ? std::string("Ds") : "Fs" + req_.value(), lease, nullptr);
  pb::V2Event ev;
  ev.set_action("set");
  // The previous node with the TTL it had: rendered before its lease goes.
  if (existed) *ev.mutable_prevnode() = node_of(s_, old);
  if (existed) release_lease(old.lease());
  ev.set_created(!existed);
  finish(&ev, path);
  return ev;
}

pb::V2Event V2Apply::create(const std::string& dir_or_path, bool in_order) {
  std::string path = dir_or_path;
  if (in_order) {
    pb::KeyValue kv;
    if (path != "/" && lookup(path, &kv) && !is_dir(kv)) return fail(kV2NotDir, path);
    char name[32];
    std::snprintf(name, sizeof name, "%020lld", static_cast<long long>(w_.pending_main()));
    path = (path == "/" ? "" : path) + "/" + name;
  }
  if (path == "/") return fail(kV2RootReadOnly, "/");
  pb::KeyValue old;
  if (lookup(path, &old)) return fail(kV2NodeExist, path);
  std::vector<std::string> missing;
  std::string bad;
  if (!check_parents(path, &missing, &bad)) return fail(kV2NotDir, bad);
  create_parents(missing);
  const int64_t lease = grant_ttl();
  w_.put(V2Store::mvcc_key(path), req_.dir() ? std::string("Dc") : "Fc" + req_.value(), lease,
         nullptr);
  pb::V2Event ev;
  ev.set_action("create");
  ev.set_created(true);
  finish(&ev, path);
  return ev;
}

pb::V2Event V2Apply::update(const std::string& path) {
  pb::KeyValue old;
  if (!lookup(path, &old)) return missing(path);
  if (is_dir(old) && !req_.value().empty()) return fail(kV2NotFile, path);
  // Without a TTL an update makes the node permanent (etcd v2 semantics).
  const int64_t lease = grant_ttl();
  w_.put(V2Store::mvcc_key(path), is_dir(old) ? std::string("Du") : "Fu" + req_.value(), lease,
         nullptr);
  pb::V2Event ev;
  ev.set_action("update");
  *ev.mutable_prevnode() = node_of(s_, old);
  release_lease(old.lease());
  finish(&ev, path);
  return ev;
}

pb::V2Event V2Apply::cas(const std::string& path) {
  pb::KeyValue old;
  if (!lookup(path, &old)) return missing(path);
  if (is_dir(old)) return fail(kV2NotFile, path);
  bool ok = false;
  std::string cause = compare_cause(old, &ok);
  if (!ok) return fail(kV2TestFailed, cause);
  const int64_t lease = grant_ttl();
  w_.put(V2Store::mvcc_key(path), "Fw" + req_.value(), lease, nullptr);
  pb::V2Event ev;
  ev.set_action("compareAndSwap");
  *ev.mutable_prevnode() = node_of(s_, old);
  release_lease(old.lease());
  finish(&ev, path);
  return ev;
}

pb::V2Event V2Apply::del(const std::string& path) {
  if (path == "/") return fail(kV2RootReadOnly, "/");
  pb::KeyValue old;
  if (!lookup(path, &old)) return missing(path);
  const bool compare = req_.prev_index() != 0 || !req_.prev_value().empty();
  std::vector<std::string> below;
  if (compare) {
    if (is_dir(old)) return fail(kV2NotFile, path);
    bool ok = false;
    std::string cause = compare_cause(old, &ok);
    if (!ok) return fail(kV2TestFailed, cause);
  } else if (is_dir(old)) {
    if (!req_.dir() && !req_.recursive()) return fail(kV2NotFile, path);
    below = descendants(path);
    if (!below.empty() && !req_.recursive()) return fail(kV2DirNotEmpty, path);
  }
  std::vector<int64_t> leases{old.lease()};
  for (const auto& k : below) {
    pb::KeyValue prev;
    if (w_.del(k, &prev)) leases.push_back(prev.lease());
  }
  w_.del(V2Store::mvcc_key(path), nullptr);
  pb::V2Event ev;
  *ev.mutable_prevnode() = node_of(s_, old);
  for (int64_t l : leases) release_lease(l);
  ev.set_action(compare ? "compareAndDelete" : "delete");
  pb::V2Node* n = ev.mutable_node();
  n->set_key(path);
  if (is_dir(old)) n->set_dir(true);
  n->set_modifiedindex(static_cast<uint64_t>(w_.read_rev()));
  n->set_createdindex(static_cast<uint64_t>(old.create_revision()));
  ev.set_etcd_index(static_cast<uint64_t>(w_.read_rev()));
  return ev;
}

pb::V2Event apply_v2(KvStore::Writer& w, const pb::V2Request& req, uint64_t index) {
  return V2Store::apply(w, req, index);
}

pb::V2Event V2Store::apply(KvStore::Writer& w, const pb::V2Request& req, uint64_t index) {
  // A quorum GET reads under the apply's exclusive lock.
  if (req.method() == "GET" || req.method() == "QGET")
    return get_locked(w.store(), clean_path(req.path()), req.recursive());
  return V2Apply(w, req, index).run();
}

pb::V2Event V2Store::get(const KvStore& store, const std::string& path, bool recursive) {
  auto l = store.read_lock();
  return get_locked(store, clean_path(path), recursive);
}

pb::V2Event V2Store::get_locked(const KvStore& s, const std::string& path, bool recursive) {
  pb::V2Event ev;
  ev.set_etcd_index(static_cast<uint64_t>(s.rev_));
  auto latest = [&](const std::string& key, const KeyHistory& kh, pb::KeyValue* kv) {
    if (!s.read_record(kh.revs.back().rev, kv)) fatal("v2: indexed record missing for " + key);
  };
  pb::V2Node root;
  if (path == "/") {
    root.set_key("/");
    root.set_dir(true);
  } else {
    auto it = s.index_.find(mvcc_key(path));
    if (it == s.index_.end() || !it->second.alive()) {
      auto [code, cause] = explain_missing(path, [&](const std::string& p, bool* dir) {
        auto at = s.index_.find(mvcc_key(p));
        if (at == s.index_.end() || !at->second.alive()) return false;
        pb::KeyValue kv;
        latest(at->first, at->second, &kv);
        *dir = is_dir(kv);
        return true;
      });
      ev.mutable_error()->set_errorcode(code);
      ev.mutable_error()->set_message(v2_error_message(code));
      ev.mutable_error()->set_cause(cause);
      ev.mutable_error()->set_index(static_cast<uint64_t>(s.rev_));
      return ev;
    }
    pb::KeyValue kv;
    latest(it->first, it->second, &kv);
    root = V2Apply::node_of(s, kv);
  }
  ev.set_action("get");
  if (root.dir()) {
    // Children (all descendants when recursive), hidden ones left out.
    const std::string prefix = (path == "/" ? std::string(kV2Prefix) : mvcc_key(path)) + "/";
    std::map<std::string, pb::V2Node*> dirs;  // node path -> node in the tree
    dirs[path] = &root;
    for (auto it = s.index_.lower_bound(prefix);
         it != s.index_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
      if (!it->second.alive()) continue;
      const std::string p = node_path(it->first);
      const std::string rel = p.substr(path == "/" ? 0 : path.size());
      const bool direct = rel.find('/', 1) == std::string::npos;
      if (!direct && !recursive) continue;
      if (hidden_below(path, p)) continue;
      auto parent = dirs.find(parent_of(p));
      if (parent == dirs.end()) continue;  // under a hidden directory
      pb::KeyValue kv;
      latest(it->first, it->second, &kv);
      pb::V2Node* n = parent->second->add_nodes();
      *n = V2Apply::node_of(s, kv);
      if (n->dir()) dirs[p] = n;
    }
  }
  *ev.mutable_node() = std::move(root);
  return ev;
}

bool V2Store::wait(const KvStore& store, const std::string& raw_path, bool recursive,
                   uint64_t wait_index, pb::V2Event* out, uint64_t* next_index) {
  const std::string path = clean_path(raw_path);
  const std::string key = path == "/" ? std::string(kV2Prefix) : mvcc_key(path);
  const std::string below = key + "/";
  std::string range_end;
  if (recursive) range_end = prefix_end(below);
  auto matches = [&](const std::string& k) {
    if (!recursive) return k == key;
    if (k != key && k.compare(0, below.size(), below) != 0) return false;
    return !hidden_below(path, node_path(k));
  };
  int64_t start = static_cast<int64_t>(wait_index);
  for (;;) {
    std::vector<pb::Event> evs;
    int64_t next = 0, compact = 0;
    Status s = store.events(key, range_end, start, 1024, true, &evs, &next, &compact);
    if (!s) {
      out->Clear();
      out->mutable_error()->set_errorcode(kV2EventIndexCleared);
      out->mutable_error()->set_message(v2_error_message(kV2EventIndexCleared));
      out->mutable_error()->set_cause("the requested history has been cleared [" +
                                      std::to_string(compact) + "/" + std::to_string(wait_index) +
                                      "]");
      out->mutable_error()->set_index(static_cast<uint64_t>(store.revision()));
      return true;
    }
    // Events come grouped by revision; one v2 event per revision: the node a
    // put wrote (the longest key), or the top of a deleted subtree.
    for (size_t i = 0; i < evs.size();) {
      size_t j = i;
      const int64_t main = evs[i].kv().mod_revision();
      while (j < evs.size() && evs[j].kv().mod_revision() == main) j++;
      // A v2 write puts one node (plus implicit parent directories, which
      // are not events of their own) or deletes a subtree.
      const pb::Event* put = nullptr;
      const pb::Event* del = nullptr;
      for (size_t k = i; k < j; k++)
        if (evs[k].type() == pb::Event::PUT &&
            (!put || evs[k].kv().key().size() > put->kv().key().size()))
          put = &evs[k];
      if (put && !matches(put->kv().key())) put = nullptr;
      for (size_t k = i; k < j && !put; k++) {
        const pb::Event& e = evs[k];
        if (e.type() != pb::Event::DELETE || !matches(e.kv().key())) continue;
        if (!del || e.kv().key().size() < del->kv().key().size()) del = &e;
      }
      // A deleted directory above the watched path: etcd reports the
      // directory's own delete event to watchers of keys inside it.  Its
      // event is outside the range read above; look for it at `main`.
      std::vector<pb::Event> top;
      if (del && path != "/") {
        for (const std::string& a : ancestors_of(path)) {
          int64_t unused = 0;
          if (store.events(mvcc_key(a), "", main, 1, true, &top, &unused) && !top.empty() &&
              top[0].kv().mod_revision() == main && top[0].type() == pb::Event::DELETE) {
            del = &top[0];
            break;
          }
          top.clear();
        }
      }
      if (put || del) {
        out->Clear();
        auto l = store.read_lock();
        if (put) {
          const char code = put->kv().value().size() >= 2 ? put->kv().value()[1] : 's';
          out->set_action(action_name(code));
          *out->mutable_node() = V2Apply::node_of(store, put->kv());
          const pb::KeyValue* prev = put->has_prev_kv() ? &put->prev_kv() : nullptr;
          for (size_t k = i; k < j && !prev; k++)  // replaced by `set`
            if (evs[k].type() == pb::Event::DELETE && evs[k].kv().key() == put->kv().key() &&
                evs[k].has_prev_kv())
              prev = &evs[k].prev_kv();
          if (prev) *out->mutable_prevnode() = V2Apply::node_of(store, *prev);
        } else {
          out->set_action("delete");
          pb::V2Node* n = out->mutable_node();
          n->set_key(node_path(del->kv().key()));
          n->set_modifiedindex(static_cast<uint64_t>(main));
          if (del->has_prev_kv()) {
            if (is_dir(del->prev_kv())) n->set_dir(true);
            n->set_createdindex(static_cast<uint64_t>(del->prev_kv().create_revision()));
            *out->mutable_prevnode() = V2Apply::node_of(store, del->prev_kv());
          }
        }
        out->set_etcd_index(static_cast<uint64_t>(store.rev_));
        return true;
      }
      i = j;
    }
    if (next > store.revision()) {
      *next_index = static_cast<uint64_t>(next);
      return false;
    }
    start = next;
  }
}

}  // namespace muster::storage
