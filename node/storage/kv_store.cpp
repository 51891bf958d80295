// node/storage/kv_store.cpp: the MVCC state machine (contract in kv_store.h).
//
// Why one file of this size: apply, the Writer, range, compaction,
// leases and members share the key index and its locking rules; each
// section keeps the invariants kv_store.h states.
#include "node/storage/kv_store.h"

#include <leveldb/iterator.h>

#include <algorithm>
#include <boost/crc.hpp>
#include <chrono>
#include <mutex>

#include "node/storage/errors.h"
#include "node/storage/v2store.h"

namespace muster::storage {

namespace {

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Revision revision_from_key(const leveldb::Slice& k) {
  return {static_cast<int64_t>(keys::get_be64(k.data() + 1)),
          static_cast<int64_t>(keys::get_be64(k.data() + 9))};
}

bool is_revision_key(const leveldb::Slice& k) { return k.size() == 17 && k[0] == keys::kRevision; }

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// --- etcd's txn duplicate-key rule (v3rpc checkIntervals) ---
struct Interval {
  std::string key, end;  // end as RangeRequest's range_end
};

bool intersects_point(const std::vector<Interval>& dels, const std::string& k) {
  for (const auto& d : dels)
    if (in_range(k, d.key, d.end)) return true;
  return false;
}

Status check_intervals(const google::protobuf::RepeatedPtrField<pb::RequestOp>& reqs,
                       std::set<std::string>* puts, std::vector<Interval>* dels) {
  const Status dup(Code::kInvalidArgument, errors::kDuplicateKey);
  for (const auto& r : reqs)
    if (r.has_request_delete_range())
      dels->push_back({r.request_delete_range().key(), r.request_delete_range().range_end()});
  for (const auto& r : reqs) {
    if (!r.has_request_txn()) continue;
    std::set<std::string> puts_then, puts_else;
    std::vector<Interval> dels_then, dels_else;
    Status s = check_intervals(r.request_txn().success(), &puts_then, &dels_then);
    if (!s) return s;
    s = check_intervals(r.request_txn().failure(), &puts_else, &dels_else);
    if (!s) return s;
    for (const auto& k : puts_then) {
      if (puts->count(k) || intersects_point(*dels, k)) return dup;
      puts->insert(k);
    }
    for (const auto& k : puts_else) {
      // then and else are exclusive: the same key in both is fine.
      if ((puts->count(k) && !puts_then.count(k)) || intersects_point(*dels, k)) return dup;
      puts->insert(k);
    }
    dels->insert(dels->end(), dels_then.begin(), dels_then.end());
    dels->insert(dels->end(), dels_else.begin(), dels_else.end());
  }
  for (const auto& r : reqs) {
    if (!r.has_request_put()) continue;
    const std::string& k = r.request_put().key();
    if (puts->count(k) || intersects_point(*dels, k)) return dup;
    puts->insert(k);
  }
  return {};
}

Status validate_put(const pb::PutRequest& p) {
  if (p.key().empty()) return {Code::kInvalidArgument, errors::kEmptyKey};
  if (p.ignore_value() && !p.value().empty())
    return {Code::kInvalidArgument, errors::kValueProvided};
  if (p.ignore_lease() && p.lease() != 0) return {Code::kInvalidArgument, errors::kLeaseProvided};
  return {};
}

Status validate_ops(const google::protobuf::RepeatedPtrField<pb::RequestOp>& ops, int max_ops,
                    int depth);

// Txns inside a txn, at most: protobuf's JSON writer, which the gateway
// answers with, goes 64 messages deep, a txn level is two of them and the
// answer of a leaf op three more.  No client nests anywhere near this (etcd
// has no limit).  Refused before it is proposed, on every API alike.
constexpr int kMaxNestedTxns = 30;

Status validate_txn(const pb::TxnRequest& t, int max_ops, int depth = 0) {
  if (depth > kMaxNestedTxns) return {Code::kInvalidArgument, errors::kTxnTooDeep};
  if (t.compare_size() > max_ops || t.success_size() > max_ops || t.failure_size() > max_ops)
    return {Code::kInvalidArgument, errors::kTooManyOps};
  for (const auto& c : t.compare())
    if (c.key().empty()) return {Code::kInvalidArgument, errors::kEmptyKey};
  Status s = validate_ops(t.success(), max_ops, depth);
  if (!s) return s;
  s = validate_ops(t.failure(), max_ops, depth);
  if (!s) return s;
  std::set<std::string> puts;
  std::vector<Interval> dels;
  s = check_intervals(t.success(), &puts, &dels);
  if (!s) return s;
  puts.clear();
  dels.clear();
  return check_intervals(t.failure(), &puts, &dels);
}

Status validate_ops(const google::protobuf::RepeatedPtrField<pb::RequestOp>& ops, int max_ops,
                    int depth) {
  for (const auto& op : ops) {
    Status s;
    switch (op.request_case()) {
      case pb::RequestOp::kRequestRange:
        if (op.request_range().key().empty()) s = {Code::kInvalidArgument, errors::kEmptyKey};
        break;
      case pb::RequestOp::kRequestPut:
        s = validate_put(op.request_put());
        break;
      case pb::RequestOp::kRequestDeleteRange:
        if (op.request_delete_range().key().empty())
          s = {Code::kInvalidArgument, errors::kEmptyKey};
        break;
      case pb::RequestOp::kRequestTxn:
        s = validate_txn(op.request_txn(), max_ops, depth + 1);
        break;
      case pb::RequestOp::REQUEST_NOT_SET:
        break;
    }
    if (!s) return s;
  }
  return {};
}

int compare_int(int64_t a, int64_t b) { return a < b ? -1 : (a > b ? 1 : 0); }

bool compare_kv(const pb::Compare& c, const pb::KeyValue& kv) {
  int result = 0;
  switch (c.target()) {
    case pb::Compare::VALUE: {
      const std::string& v = c.target_union_case() == pb::Compare::kValue ? c.value() : "";
      int r = kv.value().compare(v);
      result = r < 0 ? -1 : (r > 0 ? 1 : 0);
      break;
    }
    case pb::Compare::CREATE:
      result = compare_int(
          kv.create_revision(),
          c.target_union_case() == pb::Compare::kCreateRevision ? c.create_revision() : 0);
      break;
    case pb::Compare::MOD:
      result =
          compare_int(kv.mod_revision(),
                      c.target_union_case() == pb::Compare::kModRevision ? c.mod_revision() : 0);
      break;
    case pb::Compare::VERSION:
      result = compare_int(kv.version(),
                           c.target_union_case() == pb::Compare::kVersion ? c.version() : 0);
      break;
    case pb::Compare::LEASE:
      result =
          compare_int(kv.lease(), c.target_union_case() == pb::Compare::kLease ? c.lease() : 0);
      break;
    default:
      break;
  }
  switch (c.result()) {
    case pb::Compare::EQUAL:
      return result == 0;
    case pb::Compare::NOT_EQUAL:
      return result != 0;
    case pb::Compare::GREATER:
      return result > 0;
    case pb::Compare::LESS:
      return result < 0;
    default:
      return true;
  }
}

}  // namespace

bool in_range(const std::string& k, const std::string& key, const std::string& range_end) {
  if (range_end.empty()) return k == key;
  if (range_end.size() == 1 && range_end[0] == '\0') return k >= key;
  return k >= key && k < range_end;
}

Status validate(const pb::InternalRequest& req, int max_txn_ops) {
  switch (req.request_case()) {
    case pb::InternalRequest::kRange:
      if (req.range().key().empty()) return {Code::kInvalidArgument, errors::kEmptyKey};
      return {};
    case pb::InternalRequest::kPut:
      return validate_put(req.put());
    case pb::InternalRequest::kDeleteRange:
      if (req.delete_range().key().empty()) return {Code::kInvalidArgument, errors::kEmptyKey};
      return {};
    case pb::InternalRequest::kTxn:
      return validate_txn(req.txn(), max_txn_ops);
    case pb::InternalRequest::kLeaseGrant:
      if (req.lease_grant().ttl() > kMaxLeaseTTL)
        return {Code::kOutOfRange, errors::kLeaseTTLTooLarge};
      return {};
    case pb::InternalRequest::REQUEST_NOT_SET:
      return {Code::kInvalidArgument, "etcdserver: empty request"};
    default:
      return {};
  }
}

// ------------------------------------------------------------------ open

KvStore::KvStore(PassKey, Database* db, Options options)
    : db_(db),
      options_(std::move(options)),
      auth_(AuthStore::Options{options_.clock_ms ? options_.clock_ms : steady_ms,
                               options_.auth_token_ttl_ms}) {
  if (!options_.clock_ms) options_.clock_ms = steady_ms;
}

Status KvStore::open(Database* db, Options options, std::unique_ptr<KvStore>* out) {
  auto s = std::make_unique<KvStore>(PassKey{}, db, std::move(options));
  Status st = s->load();
  if (!st) return st;
  *out = std::move(s);
  return {};
}

Status KvStore::reopen(const std::function<Status(Database** db)>& swap) {
  auto lock = write_lock();
  Database* db = nullptr;
  Status s = swap(&db);
  db_ = db;
  index_.clear();
  live_keys_ = 0;
  rev_ = 1;
  compact_rev_ = 0;
  applied_index_ = 0;
  applied_term_ = 0;
  leases_.clear();
  members_.clear();
  removed_members_.clear();
  alarms_.clear();
  if (!s) return s;
  return load();
}

Status KvStore::load() {
  std::string v;
  Status s = db_->get(keys::kApplied, &v);
  if (s) {
    pb::AppliedRecord a;
    if (!a.ParseFromString(v)) fatal("unparsable applied record");
    applied_index_ = a.index();
    applied_term_ = a.term();
    rev_ = std::max<int64_t>(1, a.revision());
    compact_rev_ = a.compact_revision();
  } else if (s.code() != Code::kNotFound) {
    return s;
  }

  std::unique_ptr<leveldb::Iterator> it(db_->db()->NewIterator(leveldb::ReadOptions()));
  for (it->Seek(std::string(1, keys::kRevision)); it->Valid() && is_revision_key(it->key());
       it->Next()) {
    Revision r = revision_from_key(it->key());
    if (r.main > rev_) fatal("revision record beyond the applied revision");
    pb::KeyValue kv;
    if (!kv.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())))
      fatal("unparsable revision record");
    KeyHistory& kh = index_[kv.key()];
    const bool tomb = kv.version() == 0;
    kh.revs.push_back({r, tomb});
    kh.create_revision = kv.create_revision();
    kh.version = kv.version();
    kh.lease = kv.lease();
  }
  if (!it->status().ok()) return from_leveldb(it->status());
  // Records at exactly the compacted revision outlive the index entries that
  // compaction removed (see apply_compaction); drop them from the index again.
  std::vector<Revision> dropped;
  for (auto i = index_.begin(); i != index_.end();) {
    i->second.compact(compact_rev_, &dropped);
    if (i->second.revs.empty()) {
      i = index_.erase(i);
      continue;
    }
    if (i->second.alive()) live_keys_++;
    ++i;
  }

  const int64_t now = options_.clock_ms();
  for (it->Seek(std::string(1, keys::kLease));
       it->Valid() && it->key().size() == 9 && it->key()[0] == keys::kLease; it->Next()) {
    pb::LeaseRecord l;
    if (!l.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())))
      fatal("unparsable lease record");
    Lease& lease = leases_[l.id()];
    lease.ttl = l.ttl();
    lease.expiry_ms = now + l.ttl() * 1000;
  }
  for (const auto& [k, kh] : index_) {
    if (!kh.alive() || kh.lease == 0) continue;
    auto l = leases_.find(kh.lease);
    if (l != leases_.end()) l->second.keys.insert(k);
  }
  for (it->Seek(std::string(1, keys::kMember));
       it->Valid() && it->key().size() == 9 && it->key()[0] == keys::kMember; it->Next()) {
    pb::Member m;
    if (!m.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())))
      fatal("unparsable member record");
    members_[m.id()] = m;
  }
  for (it->Seek(std::string(1, keys::kRemovedMember));
       it->Valid() && it->key().size() == 9 && it->key()[0] == keys::kRemovedMember; it->Next())
    removed_members_.insert(keys::get_be64(it->key().data() + 1));
  for (it->Seek(std::string(1, keys::kAlarm));
       it->Valid() && it->key().size() == 13 && it->key()[0] == keys::kAlarm; it->Next()) {
    pb::AlarmMember a;
    if (!a.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())))
      fatal("unparsable alarm record");
    alarms_.emplace(a.memberid(), static_cast<int>(a.alarm()));
  }
  if (!it->status().ok()) return from_leveldb(it->status());
  return auth_.load(db_->db());
}

// ------------------------------------------------------------------ reads

bool KvStore::read_record(Revision rev, pb::KeyValue* kv) const {
  // While an ApplyBatch runs (its thread holds the write lock, so only it
  // reads), records it staged are not in LevelDB yet.
  if (staged_ != nullptr) {
    if (const std::string* rec = staged_->find(rev)) {
      if (!kv->ParseFromString(*rec)) fatal("unparsable staged revision record");
      return true;
    }
  }
  std::string v;
  Status s = db_->get(keys::revision_key(rev.main, rev.sub), &v);
  if (s.code() == Code::kNotFound) return false;
  if (!s) fatal("reading revision record: " + s.message());
  if (!kv->ParseFromString(v)) fatal("unparsable revision record");
  return true;
}

bool KvStore::previous(const std::string& key, int64_t mod_revision, pb::KeyValue* out) const {
  auto l = read_lock();
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  const auto& revs = it->second.revs;
  // A key changes at most once per revision (etcd refuses duplicate keys in
  // a txn), so the change before `mod_revision` is the last one below it.
  auto pos =
      std::lower_bound(revs.begin(), revs.end(), mod_revision,
                       [](const KeyHistory::Rev& r, int64_t main) { return r.rev.main < main; });
  if (pos == revs.begin()) return false;
  --pos;
  if (pos->tombstone) return false;
  return read_record(pos->rev, out);
}

int64_t KvStore::revision() const {
  auto l = read_lock();
  return rev_;
}
int64_t KvStore::compact_revision() const {
  auto l = read_lock();
  return compact_rev_;
}
uint64_t KvStore::applied_index() const {
  auto l = read_lock();
  return applied_index_;
}
uint64_t KvStore::applied_term() const {
  auto l = read_lock();
  return applied_term_;
}
size_t KvStore::key_count() const {
  auto l = read_lock();
  return live_keys_;
}

Status KvStore::check_range_rev(int64_t rev, int64_t current_rev) const {
  if (rev > current_rev) return errors::future_rev();
  if (rev > 0 && rev < compact_rev_) return errors::compacted();
  return {};
}

Status KvStore::range(const pb::RangeRequest& req, pb::RangeResponse* resp) const {
  if (req.key().empty()) return {Code::kInvalidArgument, errors::kEmptyKey};
  auto l = read_lock();
  return range_locked(req, rev_, nullptr, resp);
}

Status KvStore::range_locked(const pb::RangeRequest& req, int64_t current_rev, const Writer* w,
                             pb::RangeResponse* resp) const {
  Status s = check_range_rev(req.revision(), current_rev);
  if (!s) return s;
  const int64_t at = req.revision() > 0 ? req.revision() : current_rev;
  resp->mutable_header()->set_revision(current_rev);

  struct Match {
    const std::string* key;
    const KeyHistory* kh;
    const KeyHistory::Rev* rev;
  };
  const bool filtered = req.min_mod_revision() || req.max_mod_revision() ||
                        req.min_create_revision() || req.max_create_revision();
  const bool sorted =
      req.sort_order() != pb::RangeRequest::NONE || req.sort_target() != pb::RangeRequest::KEY;
  // `count` is every key in the range (as etcd's), but only the keys that
  // can be returned are collected: limit+1 (to tell `more`) unless sorting or
  // filtering needs them all.
  size_t want = SIZE_MAX;
  if (req.count_only()) {
    want = 0;
  } else if (req.limit() > 0 && !filtered && !sorted) {
    want = static_cast<size_t>(req.limit()) + 1;
  }
  std::vector<Match> matches;
  int64_t count = 0;
  auto consider = [&](const std::string& k, const KeyHistory& kh) {
    if (const KeyHistory::Rev* r = kh.find(at)) {
      count++;
      if (matches.size() < want) matches.push_back({&k, &kh, r});
    }
  };
  if (req.range_end().empty()) {
    auto it = index_.find(req.key());
    if (it != index_.end()) consider(it->first, it->second);
  } else {
    for (auto it = index_.lower_bound(req.key());
         it != index_.end() && in_range(it->first, req.key(), req.range_end()); ++it)
      consider(it->first, it->second);
  }
  resp->set_count(count);
  if (req.count_only()) return {};
  const size_t fetch = matches.size();

  std::vector<pb::KeyValue> kvs;
  kvs.reserve(fetch);
  for (size_t i = 0; i < fetch; i++) {
    const Match& m = matches[i];
    pb::KeyValue kv;
    if (req.keys_only() && req.sort_target() != pb::RangeRequest::VALUE &&
        m.rev == &m.kh->revs.back()) {
      // The latest revision: its metadata is cached in the index.
      kv.set_key(*m.key);
      kv.set_create_revision(m.kh->create_revision);
      kv.set_mod_revision(m.rev->rev.main);
      kv.set_version(m.kh->version);
      kv.set_lease(m.kh->lease);
    } else {
      bool ok = w ? w->read(m.rev->rev, &kv) : read_record(m.rev->rev, &kv);
      if (!ok) fatal("indexed revision record missing for key " + *m.key);
    }
    if (req.max_mod_revision() && kv.mod_revision() > req.max_mod_revision()) continue;
    if (req.min_mod_revision() && kv.mod_revision() < req.min_mod_revision()) continue;
    if (req.max_create_revision() && kv.create_revision() > req.max_create_revision()) continue;
    if (req.min_create_revision() && kv.create_revision() < req.min_create_revision()) continue;
    kvs.push_back(std::move(kv));
  }

  auto order = req.sort_order();
  if (req.sort_target() != pb::RangeRequest::KEY && order == pb::RangeRequest::NONE)
    order = pb::RangeRequest::ASCEND;
  if (order != pb::RangeRequest::NONE) {
    auto key_of = [&](const pb::KeyValue& kv) -> int64_t {
      switch (req.sort_target()) {
        case pb::RangeRequest::VERSION:
          return kv.version();
        case pb::RangeRequest::CREATE:
          return kv.create_revision();
        case pb::RangeRequest::MOD:
          return kv.mod_revision();
        default:
          return 0;
      }
    };
    // Stable, so ties keep ascending key order (etcd's sort is unstable and
    // leaves ties in unspecified order).
    auto less = [&](const pb::KeyValue& a, const pb::KeyValue& b) {
      switch (req.sort_target()) {
        case pb::RangeRequest::KEY:
          return a.key() < b.key();
        case pb::RangeRequest::VALUE:
          return a.value() < b.value();
        default:
          return key_of(a) < key_of(b);
      }
    };
    if (order == pb::RangeRequest::ASCEND) {
      std::stable_sort(kvs.begin(), kvs.end(), less);
    } else {
      std::stable_sort(kvs.begin(), kvs.end(),
                       [&](const pb::KeyValue& a, const pb::KeyValue& b) { return less(b, a); });
    }
  }
  if (req.limit() > 0 && kvs.size() > static_cast<size_t>(req.limit())) {
    kvs.resize(static_cast<size_t>(req.limit()));
    resp->set_more(true);
  }
  for (auto& kv : kvs) {
    if (req.keys_only()) kv.clear_value();
    *resp->add_kvs() = std::move(kv);
  }
  return {};
}

Status KvStore::events(const std::string& key, const std::string& range_end, int64_t start_rev,
                       size_t max_events, bool with_prev_kv, std::vector<pb::Event>* out,
                       int64_t* next_rev, int64_t* compact_rev) const {
  auto l = read_lock();
  if (compact_rev) *compact_rev = compact_rev_;
  if (start_rev <= 0) start_rev = rev_ + 1;
  if (start_rev < compact_rev_) return errors::compacted();
  // Resume no earlier than asked: a watcher from a future revision must not
  // be handed revisions below its start.
  *next_rev = std::max(start_rev, rev_ + 1);
  std::unique_ptr<leveldb::Iterator> it(db_->db()->NewIterator(leveldb::ReadOptions()));
  int64_t last_main = 0;
  for (it->Seek(keys::revision_key(start_rev, 0)); it->Valid() && is_revision_key(it->key());
       it->Next()) {
    Revision r = revision_from_key(it->key());
    if (r.main > rev_) break;
    if (out->size() >= max_events && r.main != last_main) {
      *next_rev = r.main;
      return {};
    }
    pb::KeyValue kv;
    if (!kv.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())))
      fatal("unparsable revision record");
    if (!in_range(kv.key(), key, range_end)) continue;
    pb::Event ev;
    ev.set_type(kv.version() == 0 ? pb::Event::DELETE : pb::Event::PUT);
    if (with_prev_kv) {
      auto h = index_.find(kv.key());
      if (h != index_.end()) {
        if (const KeyHistory::Rev* p = h->second.previous(r))
          read_record(p->rev, ev.mutable_prev_kv());
      }
    }
    *ev.mutable_kv() = std::move(kv);
    out->push_back(std::move(ev));
    last_main = r.main;
  }
  if (!it->status().ok()) return from_leveldb(it->status());
  return {};
}

// ------------------------------------------------------------------ writer

bool KvStore::Writer::read(Revision rev, pb::KeyValue* kv) const {
  // Staged by this entry, or by an earlier entry of the same batch: not in
  // LevelDB yet (read_record looks there too).
  if (rev.main == main_ && !pending_.contains(rev)) return false;
  return s_.read_record(rev, kv);
}

bool KvStore::Writer::get(const std::string& key, pb::KeyValue* kv) const {
  auto it = s_.index_.find(key);
  if (it == s_.index_.end() || !it->second.alive()) return false;
  if (!read(it->second.revs.back().rev, kv)) fatal("indexed revision record missing for " + key);
  return true;
}

std::vector<std::string> KvStore::Writer::live_keys(const std::string& key,
                                                    const std::string& range_end) const {
  std::vector<std::string> out;
  if (range_end.empty()) {
    auto it = s_.index_.find(key);
    if (it != s_.index_.end() && it->second.alive()) out.push_back(key);
    return out;
  }
  for (auto it = s_.index_.lower_bound(key);
       it != s_.index_.end() && in_range(it->first, key, range_end); ++it)
    if (it->second.alive()) out.push_back(it->first);
  return out;
}

void StagedRecords::add(Revision rev, std::string record) {
  if (!records_.empty() && !(records_.back().first < rev)) fatal("staged revisions out of order");
  records_.emplace_back(rev, std::move(record));
}

const std::string* StagedRecords::find(Revision rev) const {
  auto it = std::lower_bound(records_.begin(), records_.end(), rev,
                             [](const auto& r, const Revision& x) { return r.first < x; });
  return it != records_.end() && it->first == rev ? &it->second : nullptr;
}

void KvStore::Writer::write_record(const pb::KeyValue& kv, Revision rev) {
  std::string record = kv.SerializeAsString();
  char key[17];
  keys::revision_key(rev.main, rev.sub, key);
  batch_.Put(leveldb::Slice(key, sizeof key), record);
  pending_.add(rev, std::move(record));
}

pb::Event& KvStore::Writer::add_event(pb::Event::EventType type) {
  pb::Event& ev = events_.emplace_back();
  ev.set_type(type);
  return ev;
}

void KvStore::Writer::put(const std::string& key, const std::string& value, int64_t lease,
                          pb::KeyValue* prev) {
  KeyHistory& kh = s_.index_[key];
  const bool had = kh.alive();
  // The previous value is read only when the caller wants it: events go
  // out without prev_kv (watchers that ask for it look it up, previous()).
  const bool read_old = had && prev != nullptr;
  pb::Event& ev = add_event(pb::Event::PUT);
  if (read_old && !read(kh.revs.back().rev, ev.mutable_prev_kv()))
    fatal("indexed revision record missing for " + key);
  const int64_t old_lease = had ? kh.lease : 0;
  const Revision r{main_, sub_++};
  // The record is built in place in the event watchers receive.
  pb::KeyValue& kv = *ev.mutable_kv();
  kv.set_key(key);
  kv.set_create_revision(had ? kh.create_revision : main_);
  kv.set_mod_revision(main_);
  kv.set_version(had ? kh.version + 1 : 1);
  kv.set_value(value);
  kv.set_lease(lease);
  kh.revs.push_back({r, false});
  kh.create_revision = kv.create_revision();
  kh.version = kv.version();
  kh.lease = lease;
  if (!had) s_.live_keys_++;
  if (old_lease != lease && old_lease != 0) {
    auto l = s_.leases_.find(old_lease);
    if (l != s_.leases_.end()) l->second.keys.erase(key);
  }
  if (lease != 0) {
    auto l = s_.leases_.find(lease);
    if (l == s_.leases_.end()) fatal("put attaches a lease that does not exist");
    l->second.keys.insert(key);
  }
  write_record(kv, r);
  if (prev) {
    if (read_old) {
      *prev = ev.prev_kv();
    } else {
      prev->Clear();
    }
  }
}

bool KvStore::Writer::del(const std::string& key, pb::KeyValue* prev) {
  auto it = s_.index_.find(key);
  if (it == s_.index_.end() || !it->second.alive()) return false;
  KeyHistory& kh = it->second;
  pb::Event& ev = add_event(pb::Event::DELETE);
  if (!read(kh.revs.back().rev, ev.mutable_prev_kv()))
    fatal("indexed revision record missing for " + key);
  const Revision r{main_, sub_++};
  pb::KeyValue& tomb = *ev.mutable_kv();
  tomb.set_key(key);
  tomb.set_mod_revision(main_);
  kh.revs.push_back({r, true});
  kh.create_revision = 0;
  kh.version = 0;
  if (kh.lease != 0) {
    auto l = s_.leases_.find(kh.lease);
    if (l != s_.leases_.end()) l->second.keys.erase(key);
  }
  kh.lease = 0;
  s_.live_keys_--;
  write_record(tomb, r);
  if (prev) *prev = ev.prev_kv();
  return true;
}

// ------------------------------------------------------------------ apply

struct KvStore::TxnPlan {
  // The branch chosen by each txn (nested ones too), in visit order.
  std::vector<bool> path;
  size_t next = 0;
};

Status KvStore::check_put(const pb::PutRequest& p) const {
  if (p.lease() != 0 && !p.ignore_lease() && !leases_.count(p.lease()))
    return errors::lease_not_found();
  if (p.ignore_value() || p.ignore_lease()) {
    auto it = index_.find(p.key());
    if (it == index_.end() || !it->second.alive())
      return {Code::kInvalidArgument, errors::kKeyNotFound};
  }
  return {};
}

bool KvStore::eval_compares(const pb::TxnRequest& req) const {
  for (const auto& c : req.compare()) {
    pb::RangeRequest rr;
    rr.set_key(c.key());
    rr.set_range_end(c.range_end());
    pb::RangeResponse resp;
    if (!range_locked(rr, rev_, nullptr, &resp)) return false;
    if (resp.kvs_size() == 0) {
      // A value compare on a missing key always fails (an empty value could
      // not be told from a missing one); others compare against zeros.
      if (c.target() == pb::Compare::VALUE) return false;
      if (!compare_kv(c, pb::KeyValue())) return false;
      continue;
    }
    for (const auto& kv : resp.kvs())
      if (!compare_kv(c, kv)) return false;
  }
  return true;
}

// Chooses the branch of every txn (compares of nested txns too, all against
// the state before the txn, as etcd does) and checks every op on the chosen
// path before anything is written: a failing txn changes nothing.
Status KvStore::plan_txn(const pb::TxnRequest& req, TxnPlan* plan) const {
  const bool ok = eval_compares(req);
  plan->path.push_back(ok);
  for (const auto& op : ok ? req.success() : req.failure()) {
    Status s;
    switch (op.request_case()) {
      case pb::RequestOp::kRequestRange:
        s = check_range_rev(op.request_range().revision(), rev_);
        break;
      case pb::RequestOp::kRequestPut:
        s = check_put(op.request_put());
        break;
      case pb::RequestOp::kRequestTxn:
        s = plan_txn(op.request_txn(), plan);
        break;
      default:
        break;
    }
    if (!s) return s;
  }
  return {};
}

void KvStore::exec_put(Writer& w, const pb::PutRequest& p, pb::PutResponse* resp) {
  // The current value is read only when the request needs it.
  pb::KeyValue cur;
  if (p.ignore_value() || p.ignore_lease()) w.get(p.key(), &cur);
  const std::string& value = p.ignore_value() ? cur.value() : p.value();
  const int64_t lease = p.ignore_lease() ? cur.lease() : p.lease();
  pb::KeyValue prev;
  w.put(p.key(), value, lease, p.prev_kv() ? &prev : nullptr);
  if (p.prev_kv() && !prev.key().empty()) *resp->mutable_prev_kv() = std::move(prev);
  resp->mutable_header()->set_revision(w.read_rev());
}

void KvStore::exec_delete(Writer& w, const pb::DeleteRangeRequest& d,
                          pb::DeleteRangeResponse* resp) {
  int64_t n = 0;
  for (const auto& k : w.live_keys(d.key(), d.range_end())) {
    pb::KeyValue prev;
    if (!w.del(k, &prev)) continue;
    n++;
    if (d.prev_kv()) *resp->add_prev_kvs() = std::move(prev);
  }
  resp->set_deleted(n);
  resp->mutable_header()->set_revision(w.read_rev());
}

void KvStore::exec_txn(Writer& w, const pb::TxnRequest& req, TxnPlan* plan, pb::TxnResponse* resp) {
  if (plan->next >= plan->path.size()) fatal("txn plan exhausted");
  const bool ok = plan->path[plan->next++];
  resp->set_succeeded(ok);
  for (const auto& op : ok ? req.success() : req.failure()) {
    pb::ResponseOp* r = resp->add_responses();
    switch (op.request_case()) {
      case pb::RequestOp::kRequestRange: {
        Status s = range_locked(op.request_range(), w.read_rev(), &w, r->mutable_response_range());
        if (!s) fatal("txn range failed after its check: " + s.message());
        break;
      }
      case pb::RequestOp::kRequestPut:
        exec_put(w, op.request_put(), r->mutable_response_put());
        break;
      case pb::RequestOp::kRequestDeleteRange:
        exec_delete(w, op.request_delete_range(), r->mutable_response_delete_range());
        break;
      case pb::RequestOp::kRequestTxn:
        exec_txn(w, op.request_txn(), plan, r->mutable_response_txn());
        break;
      case pb::RequestOp::REQUEST_NOT_SET:
        break;
    }
  }
  resp->mutable_header()->set_revision(w.read_rev());
}

Status KvStore::apply_compaction(Writer& w, const pb::CompactionRequest& req) {
  const int64_t at = req.revision();
  if (at <= compact_rev_) return errors::compacted();
  if (at > rev_) return errors::future_rev();
  std::vector<Revision> dropped;
  for (auto it = index_.begin(); it != index_.end();) {
    it->second.compact(at, &dropped);
    if (it->second.revs.empty()) {
      it = index_.erase(it);
    } else {
      ++it;
    }
  }
  // Physically delete what the index dropped, except records at exactly
  // `at`: they stay on disk until the next compaction, so that watching from
  // `at` (allowed, as in etcd) still sees the deletions made at `at`; load()
  // drops them from the index again after a restart.  The records the
  // previous compaction left behind that way go now.
  for (const Revision& r : dropped)
    if (r.main < at) w.batch().Delete(keys::revision_key(r.main, r.sub));
  if (compact_rev_ > 0) {
    std::unique_ptr<leveldb::Iterator> it(db_->db()->NewIterator(leveldb::ReadOptions()));
    const std::string end = keys::revision_key(compact_rev_ + 1, 0);
    for (it->Seek(keys::revision_key(compact_rev_, 0));
         it->Valid() && is_revision_key(it->key()) && it->key().compare(end) < 0; it->Next()) {
      const Revision r = revision_from_key(it->key());
      pb::KeyValue kv;
      if (!kv.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())))
        fatal("unparsable revision record");
      auto h = index_.find(kv.key());
      bool kept = false;
      if (h != index_.end()) {
        const auto& revs = h->second.revs;
        kept = std::binary_search(
            revs.begin(), revs.end(), KeyHistory::Rev{r, false},
            [](const KeyHistory::Rev& a, const KeyHistory::Rev& b) { return a.rev < b.rev; });
      }
      if (!kept) w.batch().Delete(it->key());
    }
    if (!it->status().ok()) fatal("compaction scan: " + it->status().ToString());
  }
  compact_rev_ = at;
  return {};
}

Status KvStore::apply_lease_grant(Writer& w, const pb::LeaseGrantRequest& req, uint64_t index,
                                  pb::LeaseGrantResponse* resp) {
  if (req.ttl() > kMaxLeaseTTL) return {Code::kOutOfRange, errors::kLeaseTTLTooLarge};
  int64_t id = req.id();
  if (id == 0) {
    // Derived from the Raft index, so every member picks the same ID.
    id = static_cast<int64_t>(splitmix64(index) & 0x7fffffffffffffffULL);
    while (id == 0 || leases_.count(id)) id = (id + 1) & 0x7fffffffffffffffLL;
  } else if (leases_.count(id)) {
    return {Code::kFailedPrecondition, errors::kLeaseExist};
  }
  pb::LeaseRecord rec;
  rec.set_id(id);
  rec.set_ttl(req.ttl());
  w.batch().Put(keys::with_id(keys::kLease, static_cast<uint64_t>(id)), rec.SerializeAsString());
  Lease& l = leases_[id];
  l.ttl = req.ttl();
  l.expiry_ms = options_.clock_ms() + req.ttl() * 1000;
  resp->set_id(id);
  resp->set_ttl(req.ttl());
  return {};
}

Status KvStore::apply_lease_revoke(Writer& w, int64_t id) {
  auto it = leases_.find(id);
  if (it == leases_.end()) return errors::lease_not_found();
  const std::set<std::string> attached = it->second.keys;  // del() edits the set
  for (const auto& k : attached) {
    pb::KeyValue prev;
    if (!w.del(k, &prev)) continue;
    // A v2 directory with a TTL takes its subtree with it (see v2store.h).
    if (k.compare(0, kV2Prefix.size(), kV2Prefix) == 0 && !prev.value().empty() &&
        prev.value()[0] == 'D') {
      const std::string below = k + "/";
      for (const auto& d : w.live_keys(below, prefix_end(below))) {
        pb::KeyValue p;
        if (!w.del(d, &p) || p.lease() == 0 || p.lease() == id) continue;
        // The child's own lease now has nothing attached: drop it too.
        auto cl = leases_.find(p.lease());
        if (cl != leases_.end() && cl->second.keys.empty()) {
          leases_.erase(cl);
          w.batch().Delete(keys::with_id(keys::kLease, static_cast<uint64_t>(p.lease())));
        }
      }
    }
  }
  leases_.erase(id);
  w.batch().Delete(keys::with_id(keys::kLease, static_cast<uint64_t>(id)));
  return {};
}

void KvStore::fill_members(google::protobuf::RepeatedPtrField<pb::Member>* out) const {
  for (const auto& [id, m] : members_) *out->Add() = m;
}

Status KvStore::apply_member(Writer& w, const pb::InternalRequest& req,
                             pb::InternalResponse* resp) {
  auto save = [&](const pb::Member& m) {
    w.batch().Put(keys::with_id(keys::kMember, m.id()), m.SerializeAsString());
    members_[m.id()] = m;
  };
  auto url_taken = [&](const google::protobuf::RepeatedPtrField<std::string>& urls,
                       uint64_t except) {
    for (const auto& [id, m] : members_) {
      if (id == except) continue;
      for (const auto& u : m.peerurls())
        for (const auto& v : urls)
          if (u == v) return true;
    }
    return false;
  };
  auto lookup = [&](uint64_t id, pb::Member** m) -> Status {
    if (removed_members_.count(id)) return {Code::kNotFound, errors::kMemberRemoved};
    auto it = members_.find(id);
    if (it == members_.end()) return {Code::kNotFound, errors::kMemberNotFound};
    *m = &it->second;
    return {};
  };
  pb::Member* m = nullptr;
  switch (req.request_case()) {
    case pb::InternalRequest::kMemberAdd: {
      const pb::Member& nm = req.member_add().member();
      if (nm.id() == 0) return {Code::kInvalidArgument, "etcdserver: member ID is zero"};
      if (removed_members_.count(nm.id())) return {Code::kNotFound, errors::kMemberRemoved};
      if (members_.count(nm.id())) return {Code::kFailedPrecondition, errors::kMemberExist};
      if (url_taken(nm.peerurls(), 0)) return {Code::kFailedPrecondition, errors::kPeerURLExist};
      save(nm);
      *resp->mutable_member_add()->mutable_member() = nm;
      fill_members(resp->mutable_member_add()->mutable_members());
      return {};
    }
    case pb::InternalRequest::kMemberRemove: {
      Status s = lookup(req.member_remove().id(), &m);
      if (!s) return s;
      const uint64_t id = m->id();
      members_.erase(id);
      removed_members_.insert(id);
      w.batch().Delete(keys::with_id(keys::kMember, id));
      w.batch().Put(keys::with_id(keys::kRemovedMember, id), "");
      fill_members(resp->mutable_member_remove()->mutable_members());
      return {};
    }
    case pb::InternalRequest::kMemberUpdate: {
      Status s = lookup(req.member_update().id(), &m);
      if (!s) return s;
      if (url_taken(req.member_update().peerurls(), m->id()))
        return {Code::kFailedPrecondition, errors::kPeerURLExist};
      pb::Member nm = *m;
      *nm.mutable_peerurls() = req.member_update().peerurls();
      save(nm);
      fill_members(resp->mutable_member_update()->mutable_members());
      return {};
    }
    case pb::InternalRequest::kMemberPromote: {
      Status s = lookup(req.member_promote().id(), &m);
      if (!s) return s;
      if (!m->islearner()) return {Code::kFailedPrecondition, errors::kMemberNotLearner};
      pb::Member nm = *m;
      nm.set_islearner(false);
      save(nm);
      fill_members(resp->mutable_member_promote()->mutable_members());
      return {};
    }
    case pb::InternalRequest::kMemberAttributes: {
      Status s = lookup(req.member_attributes().id(), &m);
      if (!s) return s;
      pb::Member nm = *m;
      nm.set_name(req.member_attributes().name());
      *nm.mutable_clienturls() = req.member_attributes().clienturls();
      save(nm);
      fill_members(resp->mutable_member_attributes()->mutable_members());
      return {};
    }
    default:
      fatal("apply_member: not a member request");
  }
}

KvStore::ApplyResult KvStore::apply(const pb::InternalRequest& req, uint64_t index, uint64_t term,
                                    const raftpb::ConfState* cs) {
  ApplyBatch b(*this);
  ApplyResult res = b.apply(req, index, term, cs);
  b.commit();
  return res;
}

void KvStore::apply_noop(uint64_t index, uint64_t term, const raftpb::ConfState* cs) {
  ApplyBatch b(*this);
  b.apply_noop(index, term, cs);
  b.commit();
}

KvStore::ApplyBatch::ApplyBatch(KvStore& store) : s_(store), lock_(store.write_lock()) {
  s_.staged_ = &pending_;
}

KvStore::ApplyBatch::~ApplyBatch() { commit(); }

void KvStore::ApplyBatch::flush() {
  if (!dirty_) return;
  pb::AppliedRecord a;
  a.set_index(s_.applied_index_);
  a.set_term(s_.applied_term_);
  a.set_revision(s_.rev_);
  a.set_compact_revision(s_.compact_rev_);
  batch_.Put(keys::kApplied, a.SerializeAsString());
  if (!conf_state_.empty()) batch_.Put(keys::kConfState, conf_state_);
  Status ws = s_.db_->write(&batch_, s_.options_.sync_apply);
  // The in-memory state already moved on; a store that cannot persist it
  // must stop rather than diverge from its own disk.
  if (!ws) fatal("apply write failed: " + ws.message());
  batch_.Clear();
  pending_.clear();
  conf_state_.clear();
  dirty_ = false;
}

void KvStore::ApplyBatch::commit() {
  if (committed_) return;
  flush();
  committed_ = true;
  s_.staged_ = nullptr;
  lock_.unlock();
}

void KvStore::ApplyBatch::advance(uint64_t index, uint64_t term, const raftpb::ConfState* cs) {
  s_.applied_index_ = index;
  s_.applied_term_ = term;
  if (cs != nullptr) conf_state_ = cs->SerializeAsString();
  dirty_ = true;
}

void KvStore::ApplyBatch::apply_noop(uint64_t index, uint64_t term, const raftpb::ConfState* cs) {
  if (committed_) fatal("apply on a committed batch");
  if (index <= s_.applied_index_) return;
  advance(index, term, cs);
}

KvStore::ApplyResult KvStore::ApplyBatch::apply(const pb::InternalRequest& req, uint64_t index,
                                                uint64_t term, const raftpb::ConfState* cs) {
  if (committed_) fatal("apply on a committed batch");
  ApplyResult res;
  if (index <= s_.applied_index_) {
    res.skipped = true;
    return res;
  }
  // A compaction scans LevelDB for the previous compaction's records: what
  // this batch staged must be there first.
  if (req.has_compaction()) flush();
  KvStore& st = s_;
  Writer w(st, batch_, pending_);
  pb::InternalResponse& out = res.response;
  Status s = validate(req);
  // A raised alarm refuses writes before anything else is checked, as
  // etcd's corrupt and capped appliers replace its auth applier.
  if (s) s = st.check_alarms(req);
  if (s) s = st.check_permission(req);
  if (s && AuthStore::handles(req)) {
    s = st.auth_.apply(req, index, &batch_, &out);
    if (s) {
      // Auth answers carry the key-value revision, as etcd's headers do.
      const auto* refl = out.GetReflection();
      const auto* f =
          refl->GetOneofFieldDescriptor(out, out.GetDescriptor()->FindOneofByName("response"));
      if (f == nullptr) fatal("an applied auth request without an answer");
      google::protobuf::Message* m = refl->MutableMessage(&out, f);
      auto* h = static_cast<pb::ResponseHeader*>(
          m->GetReflection()->MutableMessage(m, m->GetDescriptor()->FindFieldByName("header")));
      h->set_revision(st.rev_);
    }
  } else if (s) {
    switch (req.request_case()) {
      case pb::InternalRequest::kRange:
        s = st.range_locked(req.range(), st.rev_, &w, out.mutable_range());
        break;
      case pb::InternalRequest::kPut:
        s = st.check_put(req.put());
        if (s) st.exec_put(w, req.put(), out.mutable_put());
        break;
      case pb::InternalRequest::kDeleteRange:
        st.exec_delete(w, req.delete_range(), out.mutable_delete_range());
        break;
      case pb::InternalRequest::kTxn: {
        TxnPlan plan;
        s = st.plan_txn(req.txn(), &plan);
        if (s) st.exec_txn(w, req.txn(), &plan, out.mutable_txn());
        break;
      }
      case pb::InternalRequest::kCompaction:
        s = st.apply_compaction(w, req.compaction());
        if (s) out.mutable_compaction()->mutable_header();
        break;
      case pb::InternalRequest::kLeaseGrant:
        s = st.apply_lease_grant(w, req.lease_grant(), index, out.mutable_lease_grant());
        break;
      case pb::InternalRequest::kLeaseRevoke:
        if (req.expiry_term() != 0 && term != 0 && req.expiry_term() != term)
          s = errors::lease_not_found();  // a deposed leader's expiry: not ours to act on
        else
          s = st.apply_lease_revoke(w, req.lease_revoke().id());
        if (s) out.mutable_lease_revoke()->mutable_header();
        break;
      case pb::InternalRequest::kV2:
        *out.mutable_v2() = apply_v2(w, req.v2(), index);
        break;
      case pb::InternalRequest::kMemberAdd:
      case pb::InternalRequest::kMemberRemove:
      case pb::InternalRequest::kMemberUpdate:
      case pb::InternalRequest::kMemberPromote:
      case pb::InternalRequest::kMemberAttributes:
        s = st.apply_member(w, req, &out);
        break;
      case pb::InternalRequest::kAlarm:
        st.apply_alarm(batch_, req.alarm(), out.mutable_alarm(), &res.alarm_edge);
        break;
      default:
        break;
    }
  }
  if (!s) {
    // Nothing was staged before the failing check; only the index advances.
    if (w.changed()) fatal("a failed request changed the store");
    out.Clear();
    res.status = s;
  }
  if (w.changed()) st.rev_ = w.pending_main();
  advance(index, term, cs);
  res.events = std::move(w.events());
  // Top-level response headers carry the revision after the request.
  switch (out.response_case()) {
    case pb::InternalResponse::kRange:
      break;
    case pb::InternalResponse::kPut:
      out.mutable_put()->mutable_header()->set_revision(st.rev_);
      break;
    case pb::InternalResponse::kDeleteRange:
      out.mutable_delete_range()->mutable_header()->set_revision(st.rev_);
      break;
    case pb::InternalResponse::kTxn:
      out.mutable_txn()->mutable_header()->set_revision(st.rev_);
      break;
    case pb::InternalResponse::kCompaction:
      out.mutable_compaction()->mutable_header()->set_revision(st.rev_);
      break;
    case pb::InternalResponse::kLeaseGrant:
      out.mutable_lease_grant()->mutable_header()->set_revision(st.rev_);
      break;
    case pb::InternalResponse::kLeaseRevoke:
      out.mutable_lease_revoke()->mutable_header()->set_revision(st.rev_);
      break;
    default:
      break;
  }
  return res;
}

// ------------------------------------------------------------------ auth

// etcd's authApplierV3: which permission each client request needs.
Status KvStore::check_permission(const pb::InternalRequest& req) const {
  if (!req.has_auth()) return {};  // the members' own requests
  std::shared_ptr<const AuthView> v = auth_.view();
  if (!v->enabled) return {};
  const AuthInfo who{req.auth().username(), req.auth().auth_revision()};
  using T = RangePerms::Type;
  switch (req.request_case()) {
    case pb::InternalRequest::kRange:
      return v->check(&who, T::kRead, req.range().key(), req.range().range_end());
    case pb::InternalRequest::kPut: {
      const auto& p = req.put();
      if (Status s = v->check(&who, T::kWrite, p.key(), ""); !s) return s;
      if (Status s = check_lease_puts(*v, who, p.lease()); !s) return s;
      if (p.prev_kv()) return v->check(&who, T::kRead, p.key(), "");
      return {};
    }
    case pb::InternalRequest::kDeleteRange: {
      const auto& d = req.delete_range();
      if (Status s = v->check(&who, T::kWrite, d.key(), d.range_end()); !s) return s;
      if (d.prev_kv()) return v->check(&who, T::kRead, d.key(), d.range_end());
      return {};
    }
    case pb::InternalRequest::kTxn:
      return check_txn_permission(*v, who, req.txn());
    case pb::InternalRequest::kLeaseRevoke:
      return check_lease_puts(*v, who, req.lease_revoke().id());
    default:
      return {};  // compaction, lease grant: anyone (etcd 3.4); auth: AuthStore
  }
}

// Every compare reads; every op of both branches needs its own permission,
// whichever branch runs (etcd checks them all before evaluating).
Status KvStore::check_txn_permission(const AuthView& v, const AuthInfo& who,
                                     const pb::TxnRequest& t) const {
  using T = RangePerms::Type;
  for (const auto& c : t.compare())
    if (Status s = v.check(&who, T::kRead, c.key(), c.range_end()); !s) return s;
  for (const auto* ops : {&t.success(), &t.failure()}) {
    for (const auto& op : *ops) {
      Status s;
      switch (op.request_case()) {
        case pb::RequestOp::kRequestRange:
          s = v.check(&who, T::kRead, op.request_range().key(), op.request_range().range_end());
          break;
        case pb::RequestOp::kRequestPut:
          s = v.check(&who, T::kWrite, op.request_put().key(), "");
          if (s) s = check_lease_puts(v, who, op.request_put().lease());
          if (s && op.request_put().prev_kv())
            s = v.check(&who, T::kRead, op.request_put().key(), "");
          break;
        case pb::RequestOp::kRequestDeleteRange: {
          const auto& d = op.request_delete_range();
          if (d.prev_kv()) s = v.check(&who, T::kRead, d.key(), d.range_end());
          if (s) s = v.check(&who, T::kWrite, d.key(), d.range_end());
          break;
        }
        case pb::RequestOp::kRequestTxn:
          s = check_txn_permission(v, who, op.request_txn());
          break;
        default:
          break;
      }
      if (!s) return s;
    }
  }
  return {};
}

// A put with a lease, and a lease revoke, need write permission on every
// key already attached to the lease (etcd's checkLeasePuts).
Status KvStore::check_lease_puts(const AuthView& v, const AuthInfo& who, int64_t lease) const {
  if (lease == 0) return {};
  auto it = leases_.find(lease);
  if (it == leases_.end()) return {};
  for (const auto& k : it->second.keys)
    if (Status s = v.check(&who, RangePerms::Type::kWrite, k, ""); !s) return s;
  return {};
}

// ------------------------------------------------------------------ leases

Status KvStore::lease_keepalive(int64_t id, int64_t* ttl) {
  auto l = write_lock();
  auto it = leases_.find(id);
  if (it == leases_.end()) return errors::lease_not_found();
  // Past its expiry the lease is being revoked (the leader proposes that
  // within a housekeeping round): a refresh now must not be acknowledged,
  // or the client counts on a TTL that the revocation cuts short.  etcd
  // waits for the revocation and answers "not found" too.
  const int64_t now = options_.clock_ms();
  if (it->second.expiry_ms <= now) return errors::lease_not_found();
  it->second.expiry_ms = now + it->second.ttl * 1000;
  *ttl = it->second.ttl;
  return {};
}

Status KvStore::lease_time_to_live(const pb::LeaseTimeToLiveRequest& req,
                                   pb::LeaseTimeToLiveResponse* resp) const {
  auto l = read_lock();
  auto it = leases_.find(req.id());
  if (it == leases_.end()) return errors::lease_not_found();
  const int64_t remaining_ms = it->second.expiry_ms - options_.clock_ms();
  resp->mutable_header()->set_revision(rev_);
  resp->set_id(req.id());
  // An expired lease whose revocation is not applied yet answers 0, as
  // etcd's does for its first second; -1 ("not found") only once it is gone,
  // so a client that sees -1 never reads its keys afterwards.
  resp->set_ttl(remaining_ms <= 0 ? 0 : (remaining_ms + 999) / 1000);
  resp->set_grantedttl(it->second.ttl);
  if (req.keys())
    for (const auto& k : it->second.keys) resp->add_keys(k);
  return {};
}

pb::LeaseLeasesResponse KvStore::leases() const {
  auto l = read_lock();
  pb::LeaseLeasesResponse r;
  r.mutable_header()->set_revision(rev_);
  for (const auto& [id, lease] : leases_) r.add_leases()->set_id(id);
  return r;
}

bool KvStore::lease_exists(int64_t id) const {
  auto l = read_lock();
  return leases_.count(id) > 0;
}

std::vector<int64_t> KvStore::expired_leases(int64_t now_ms) const {
  auto l = read_lock();
  std::vector<std::pair<int64_t, int64_t>> due;
  for (const auto& [id, lease] : leases_)
    if (lease.expiry_ms <= now_ms) due.emplace_back(lease.expiry_ms, id);
  std::sort(due.begin(), due.end());
  std::vector<int64_t> out;
  for (const auto& d : due) out.push_back(d.second);
  return out;
}

void KvStore::reset_lease_expiries() {
  auto l = write_lock();
  const int64_t now = options_.clock_ms();
  for (auto& [id, lease] : leases_) lease.expiry_ms = now + lease.ttl * 1000;
}

std::vector<pb::Member> KvStore::members() const {
  auto l = read_lock();
  std::vector<pb::Member> out;
  for (const auto& [id, m] : members_) out.push_back(m);
  return out;
}

bool KvStore::member_removed(uint64_t id) const {
  auto l = read_lock();
  return removed_members_.count(id) > 0;
}

std::vector<uint64_t> KvStore::removed_members() const {
  auto l = read_lock();
  return {removed_members_.begin(), removed_members_.end()};
}

// ------------------------------------------------------------------ alarms

std::vector<pb::AlarmMember> KvStore::alarms(pb::AlarmType type) const {
  auto l = read_lock();
  std::vector<pb::AlarmMember> out;
  for (const auto& [member, t] : alarms_) {
    if (type != pb::NONE && t != type) continue;
    pb::AlarmMember a;
    a.set_memberid(member);
    a.set_alarm(static_cast<pb::AlarmType>(t));
    out.push_back(std::move(a));
  }
  return out;
}

// etcd's alarm store: ACTIVATE answers the alarm (new or already raised),
// DEACTIVATE the alarm it cleared (nothing when it was not raised), GET
// the raised alarms of the type.  Raising NONE changes nothing (etcd 3.5;
// 3.4 stores it).
void KvStore::apply_alarm(leveldb::WriteBatch& batch, const pb::AlarmRequest& req,
                          pb::AlarmResponse* resp, ApplyResult::AlarmEdge* edge) {
  const int type = static_cast<int>(req.alarm());
  auto count = [this](int t) {
    return std::count_if(alarms_.begin(), alarms_.end(),
                         [t](const auto& a) { return a.second == t; });
  };
  const auto before = count(type);
  const std::pair<uint64_t, int> key(req.memberid(), type);
  switch (req.action()) {
    case pb::AlarmRequest::GET:
      for (const auto& [member, t] : alarms_) {
        if (req.alarm() != pb::NONE && t != type) continue;
        auto* a = resp->add_alarms();
        a->set_memberid(member);
        a->set_alarm(static_cast<pb::AlarmType>(t));
      }
      return;
    case pb::AlarmRequest::ACTIVATE: {
      if (req.alarm() == pb::NONE) return;
      auto* a = resp->add_alarms();
      a->set_memberid(req.memberid());
      a->set_alarm(req.alarm());
      if (!alarms_.insert(key).second) return;
      batch.Put(keys::alarm_key(req.memberid(), type), a->SerializeAsString());
      if (before == 0) *edge = ApplyResult::AlarmEdge::kRaised;
      return;
    }
    case pb::AlarmRequest::DEACTIVATE: {
      if (alarms_.erase(key) == 0) return;
      batch.Delete(keys::alarm_key(req.memberid(), type));
      auto* a = resp->add_alarms();
      a->set_memberid(req.memberid());
      a->set_alarm(req.alarm());
      if (count(type) == 0) *edge = ApplyResult::AlarmEdge::kDisarmed;
      return;
    }
    default:
      return;
  }
}

namespace {

// etcd's isTxnReadonly: every operation of both branches is a range (a
// nested txn is not).
bool txn_read_only(const pb::TxnRequest& t) {
  for (const auto* ops : {&t.success(), &t.failure()})
    for (const auto& op : *ops)
      if (!op.has_request_range()) return false;
  return true;
}

}  // namespace

Status KvStore::check_alarms(const pb::InternalRequest& req) const {
  if (alarms_.empty()) return {};
  bool corrupt = false, nospace = false;
  for (const auto& a : alarms_) {
    corrupt = corrupt || a.second == pb::CORRUPT;
    nospace = nospace || a.second == pb::NOSPACE;
  }
  if (corrupt) {
    switch (req.request_case()) {
      case pb::InternalRequest::kPut:
      case pb::InternalRequest::kDeleteRange:
      case pb::InternalRequest::kCompaction:
      case pb::InternalRequest::kLeaseGrant:
      case pb::InternalRequest::kLeaseRevoke:
        return errors::corrupt();
      case pb::InternalRequest::kTxn:
        // etcd serves a read-only txn without Raft, so CORRUPT never
        // reaches it; muster replicates it, and lets it through.
        if (!txn_read_only(req.txn())) return errors::corrupt();
        break;
      default:
        break;
    }
  }
  if (nospace &&
      (req.has_put() || req.has_lease_grant() || (req.has_txn() && !txn_read_only(req.txn()))))
    return errors::no_space();
  return {};
}

// ------------------------------------------------------------------ hash

Status KvStore::hash_by_rev(int64_t rev, uint32_t* hash, int64_t* current_rev,
                            int64_t* compact_rev) const {
  int64_t current = 0, compacted = 0;
  {
    auto l = read_lock();
    current = rev_;
    compacted = compact_rev_;
  }
  if (rev <= 0) rev = current;
  if (rev > current) return errors::future_rev();
  if (rev < compacted) return errors::compacted();
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  auto add_kv = [&crc](const pb::KeyValue& kvp, int type) {
    std::string bytes;
    kvp.SerializeToString(&bytes);
    const uint32_t n = static_cast<uint32_t>(bytes.size());
    crc.process_bytes(&n, sizeof n);
    crc.process_bytes(&type, sizeof type);
    crc.process_bytes(bytes.data(), bytes.size());
  };
  const std::string all(1, '\0');  // every key: [\0, \0)
  if (compacted > 0) {
    pb::RangeRequest req;
    req.set_key(all);
    req.set_range_end(all);
    req.set_revision(compacted);
    pb::RangeResponse base;
    if (Status s = range(req, &base); !s) return s;
    for (const auto& k : base.kvs()) add_kv(k, 0);
  }
  // Every change after the compacted revision, in pieces.
  constexpr size_t kStep = 1000;
  int64_t next = compacted + 1;
  while (next <= rev) {
    std::vector<pb::Event> events;
    int64_t resume = 0;
    if (Status s = this->events(all, all, next, kStep, false, &events, &resume); !s) return s;
    bool past = false;
    for (const auto& e : events) {
      if (e.kv().mod_revision() > rev) {
        past = true;
        break;
      }
      add_kv(e.kv(), e.type() == pb::Event::PUT ? 1 : 2);
    }
    if (past || events.empty() || resume <= next) break;
    next = resume;
  }
  // A compaction that ran meanwhile may have removed part of what was read.
  if (compact_revision() != compacted) return errors::compacted();
  *hash = crc.checksum();
  *current_rev = current;
  *compact_rev = compacted;
  return {};
}

// ------------------------------------------------------------------ checks

void KvStore::check_consistency() const {
  auto l = read_lock();
  // Rebuild the index from disk exactly as load() does and compare.
  absl::btree_map<std::string, KeyHistory, std::less<>> fresh;
  std::unique_ptr<leveldb::Iterator> it(db_->db()->NewIterator(leveldb::ReadOptions()));
  for (it->Seek(std::string(1, keys::kRevision)); it->Valid() && is_revision_key(it->key());
       it->Next()) {
    const Revision r = revision_from_key(it->key());
    if (r.main > rev_) fatal("consistency: record beyond the current revision");
    pb::KeyValue kv;
    if (!kv.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())))
      fatal("consistency: unparsable record");
    if (kv.mod_revision() != r.main) fatal("consistency: record mod_revision mismatch");
    KeyHistory& kh = fresh[kv.key()];
    kh.revs.push_back({r, kv.version() == 0});
    kh.create_revision = kv.create_revision();
    kh.version = kv.version();
    kh.lease = kv.lease();
  }
  std::vector<Revision> dropped;
  size_t live = 0;
  for (auto i = fresh.begin(); i != fresh.end();) {
    i->second.compact(compact_rev_, &dropped);
    if (i->second.revs.empty()) {
      i = fresh.erase(i);
      continue;
    }
    if (i->second.alive()) live++;
    ++i;
  }
  if (fresh.size() != index_.size()) fatal("consistency: index size differs from disk");
  if (live != live_keys_) fatal("consistency: live key count differs");
  auto a = fresh.begin();
  for (auto b = index_.begin(); b != index_.end(); ++a, ++b) {
    if (a->first != b->first) fatal("consistency: index key differs: " + b->first);
    if (a->second.revs.size() != b->second.revs.size()) {
      std::string d;
      for (const auto& r : a->second.revs)
        d += " disk " + std::to_string(r.rev.main) + "." + std::to_string(r.rev.sub) +
             (r.tombstone ? "t" : "");
      for (const auto& r : b->second.revs)
        d += " mem " + std::to_string(r.rev.main) + "." + std::to_string(r.rev.sub) +
             (r.tombstone ? "t" : "");
      fatal("consistency: history length differs for " + b->first + ":" + d + " compact " +
            std::to_string(compact_rev_));
    }
    for (size_t k = 0; k < a->second.revs.size(); k++)
      if (a->second.revs[k].rev != b->second.revs[k].rev ||
          a->second.revs[k].tombstone != b->second.revs[k].tombstone)
        fatal("consistency: history differs for " + b->first);
    if (b->second.alive() &&
        (a->second.create_revision != b->second.create_revision ||
         a->second.version != b->second.version || a->second.lease != b->second.lease))
      fatal("consistency: cached metadata differs for " + b->first);
  }
  for (const auto& [id, lease] : leases_)
    for (const auto& k : lease.keys) {
      auto h = index_.find(k);
      if (h == index_.end() || !h->second.alive() || h->second.lease != id)
        fatal("consistency: lease attachment differs for " + k);
    }
}

}  // namespace muster::storage
