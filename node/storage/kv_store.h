// KvStore: the member's replicated state machine with etcd v3 semantics —
// the MVCC key space, leases, cluster membership and the applied Raft index —
// on the member's LevelDB (key layout in db.h, docs/storage.md).
//
// MVCC (as etcd's mvcc package): a global revision counts committed changes;
// a write request (put, delete that deletes something, txn with writes) gets
// the next main revision, and each change inside it a sub revision 0, 1, ...
// Every change is a LevelDB record keyed by its revision, so any revision not
// yet compacted can be read and every change since any such revision can be
// replayed as watch events.  The per-key index of revisions (key_index.h)
// lives in memory and is rebuilt on open.
//
// Who calls what:
//   - The server's apply loop calls apply() with each committed entry, in log
//     order, from one thread.  apply() writes everything the entry changes
//     together with the applied index in one WriteBatch, and skips entries at
//     or below the applied index (after a restart, or a snapshot install that
//     brought newer state), so replaying the log from applied+1 is exact.
//   - Readers (serializable v3 ranges, watch catch-up, lease and member
//     queries) may call the const methods from any thread.
//   - Leases expire by the leader's clock, never the store's: the leader asks
//     expired_leases(now) and proposes LeaseRevoke for each, so every member
//     deletes the same keys at the same revision.  Expiry times are kept in
//     memory only (reset to now+TTL on open and by reset_lease_expiries(),
//     which a new leader calls, as etcd's lessor Promote does).
#pragma once

#include <absl/container/btree_map.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <vector>

#include "etcdwire/v3_json.h"
#include "node/raft/raft.pb.h"
#include "node/storage/auth_store.h"
#include "node/storage/db.h"
#include "node/storage/key_index.h"
#include "node/storage/pb.h"
#include "node/storage/status.h"

namespace muster::storage {

namespace pb = ::muster::pb;

// A lease's TTL may not exceed this (etcd's MaxLeaseTTL).
inline constexpr int64_t kMaxLeaseTTL = 9000000000;
// etcd's default --max-txn-ops.
inline constexpr int kDefaultMaxTxnOps = 128;

// Checks a request as etcd's API layer does before proposing it: empty keys,
// too many txn ops, duplicate keys in a txn, value/lease given with
// ignore_value/ignore_lease.  apply() runs it as well.
Status validate(const pb::InternalRequest& req, int max_txn_ops = kDefaultMaxTxnOps);

// Revision records staged by an apply batch and not yet in LevelDB, in the
// order they were made (revisions only grow within a batch), serialized as
// they are written: a lookup is a binary search and a parse, which only
// reads of a key changed earlier in the same batch need.
class StagedRecords {
 public:
  // REQUIRES: rev greater than every revision added since clear().
  void add(Revision rev, std::string record);
  const std::string* find(Revision rev) const;
  bool contains(Revision rev) const { return find(rev) != nullptr; }
  void clear() { records_.clear(); }

 private:
  std::vector<std::pair<Revision, std::string>> records_;
};

class KvStore {
 public:
  struct Options {
    // Monotonic milliseconds; used only for lease expiry bookkeeping.
    // Default: std::chrono::steady_clock.
    std::function<int64_t()> clock_ms;
    // Sync each apply batch.  Off by default: the Raft log is synced, and an
    // apply lost to a power failure is replayed from the log (the applied
    // index is in the same batch, so state and index are lost together).
    bool sync_apply = false;
    // --auth-token-ttl: the idle lifetime of a simple token.
    int64_t auth_token_ttl_ms = 300'000;
  };

  struct ApplyResult {
    // Not ok when the request failed (the state is unchanged, the applied
    // index still advances).
    Status status;
    pb::InternalResponse response;
    // The changes the entry made, in revision order: what watchers of the
    // affected keys must be sent.  A put's event carries prev_kv only when
    // the request asked for the previous value (watchers that want it use
    // previous()); a delete's always does.
    std::vector<pb::Event> events;
    // The entry was at or below the applied index and was not applied.
    bool skipped = false;
    // An alarm request that raised the first alarm of its type, or cleared
    // the last one: the member logs it (etcd's "alarm raised").
    enum class AlarmEdge { kNone, kRaised, kDisarmed } alarm_edge = AlarmEdge::kNone;
  };

  // REQUIRES: db outlives the store (or the next reopen()).
  static Status open(Database* db, Options options, std::unique_ptr<KvStore>* out);

  // A snapshot install: with the store locked exclusively, `swap` closes
  // the database and opens its replacement (*db), and the store reloads from
  // it.  The store object stays, so readers holding a reference to it (API
  // handlers, watch catch-ups) wait meanwhile and then read the new state;
  // none ever reads a closed database.  On failure the store has no database
  // left and the member must stop.
  Status reopen(const std::function<Status(Database** db)>& swap);

  // Applies one committed entry at Raft position (index, term).  `cs`, when
  // given, is the configuration as of this entry (after a conf change) and is
  // persisted with it.  One LevelDB write (an ApplyBatch of one entry).
  ApplyResult apply(const pb::InternalRequest& req, uint64_t index, uint64_t term = 0,
                    const raftpb::ConfState* cs = nullptr);
  // Advances the applied index for an entry that carries no request (empty
  // entries, configuration changes).
  void apply_noop(uint64_t index, uint64_t term, const raftpb::ConfState* cs = nullptr);

  // Applies many committed entries with one LevelDB write: what the server's
  // applier does with each batch of committed entries.
  class ApplyBatch;

  // --- reads (any thread) ---
  Status range(const pb::RangeRequest& req, pb::RangeResponse* resp) const;
  // Changes to keys in [key, range_end) (range_end as in RangeRequest) from
  // revision start_rev on, in revision order, at most max_events (whole
  // revisions are never split when possible).  *next_rev is where to resume.
  // kOutOfRange (compacted, with the compacted revision in
  // *compact_rev) when start_rev < the compacted revision.
  Status events(const std::string& key, const std::string& range_end, int64_t start_rev,
                size_t max_events, bool with_prev_kv, std::vector<pb::Event>* out,
                int64_t* next_rev, int64_t* compact_rev = nullptr) const;
  // The value `key` had just before revision `mod_revision` changed it
  // (a watch event's prev_kv); false when it did not exist then, or that
  // version was compacted.
  bool previous(const std::string& key, int64_t mod_revision, pb::KeyValue* out) const;
  int64_t revision() const;
  int64_t compact_revision() const;
  uint64_t applied_index() const;
  uint64_t applied_term() const;
  size_t key_count() const;  // live keys

  // etcd's HashByRev: a CRC-32 (Castagnoli) over the key-values live at the
  // compacted revision and every change after it up to `rev` (0 = the
  // current revision), in revision order.  Members that applied the same
  // history and compactions agree on it at the same revision; a record
  // changed on one member's disk makes its hash differ.  *current_rev is the
  // revision at the time of the call.  kOutOfRange "...future revision"
  // beyond the current revision, "...has been compacted" below the
  // compacted one (also when a compaction runs meanwhile).
  Status hash_by_rev(int64_t rev, uint32_t* hash, int64_t* current_rev, int64_t* compact_rev) const;

  // --- alarms (etcd's alarm store, replicated: InternalRequest.alarm) ---
  // While CORRUPT is raised, Put, DeleteRange, Txn with a write, Compaction,
  // LeaseGrant and LeaseRevoke fail at apply with "etcdserver: corrupt
  // cluster" (etcd's applierV3Corrupt); while NOSPACE is raised, Put, Txn
  // and LeaseGrant fail with "database space exceeded".  Reads pass.
  // The raised alarms of `type` (NONE = every type), by member then type.
  std::vector<pb::AlarmMember> alarms(pb::AlarmType type = pb::NONE) const;

  // --- leases (leader side; not replicated) ---
  // LeaseGrant is applied with the TTL as proposed: the server raises TTLs
  // below its minimum (etcd: ceil(1.5 x election timeout)) before proposing.
  // Refreshes a lease's expiry to now + TTL; returns the TTL, or kNotFound
  // for a lease that does not exist or is already past its expiry.
  Status lease_keepalive(int64_t id, int64_t* ttl);
  Status lease_time_to_live(const pb::LeaseTimeToLiveRequest& req,
                            pb::LeaseTimeToLiveResponse* resp) const;
  pb::LeaseLeasesResponse leases() const;
  // Leases whose expiry is <= now_ms, earliest first.
  std::vector<int64_t> expired_leases(int64_t now_ms) const;
  void reset_lease_expiries();
  bool lease_exists(int64_t id) const;

  // --- membership ---
  std::vector<pb::Member> members() const;
  bool member_removed(uint64_t id) const;
  std::vector<uint64_t> removed_members() const;

  // --- auth (auth_store.h): users, roles, the enabled flag, tokens ---
  // Client writes carry their caller (InternalRequest.auth); while auth is
  // enabled apply() checks them against the auth state as of their own log
  // position (etcd's authApplierV3), so every member decides alike.
  AuthStore& auth() { return auth_; }
  const AuthStore& auth() const { return auth_; }

  // --- internal: the write side used by apply() and the v2 layer ---
  class Writer;

  // Checks the in-memory index against a full scan of the revision records
  // (tests; a server may run it at startup): aborts on mismatch.
  void check_consistency() const;

 private:
  struct PassKey {};

 public:
  KvStore(PassKey, Database* db, Options options);

 private:
  friend class Writer;
  friend class ApplyBatch;
  friend class V2Store;
  friend class V2Apply;
  struct Lease {
    int64_t ttl = 0;
    int64_t expiry_ms = 0;
    std::set<std::string> keys;
  };

  Status load();
  bool read_record(Revision rev, pb::KeyValue* kv) const;
  Status range_locked(const pb::RangeRequest& req, int64_t current_rev, const Writer* w,
                      pb::RangeResponse* resp) const;
  Status check_range_rev(int64_t rev, int64_t current_rev) const;
  struct TxnPlan;
  Status check_put(const pb::PutRequest& p) const;
  bool eval_compares(const pb::TxnRequest& req) const;
  Status plan_txn(const pb::TxnRequest& req, TxnPlan* plan) const;
  void exec_put(Writer& w, const pb::PutRequest& p, pb::PutResponse* resp);
  void exec_delete(Writer& w, const pb::DeleteRangeRequest& d, pb::DeleteRangeResponse* resp);
  void exec_txn(Writer& w, const pb::TxnRequest& req, TxnPlan* plan, pb::TxnResponse* resp);
  Status apply_compaction(Writer& w, const pb::CompactionRequest& req);
  Status apply_lease_grant(Writer& w, const pb::LeaseGrantRequest& req, uint64_t index,
                           pb::LeaseGrantResponse* resp);
  Status apply_lease_revoke(Writer& w, int64_t id);
  Status apply_member(Writer& w, const pb::InternalRequest& req, pb::InternalResponse* resp);
  void apply_alarm(leveldb::WriteBatch& batch, const pb::AlarmRequest& req, pb::AlarmResponse* resp,
                   ApplyResult::AlarmEdge* edge);
  // The refusal a raised alarm imposes on a client write (ok when none).
  // REQUIRES: the write lock.
  Status check_alarms(const pb::InternalRequest& req) const;
  // The caller's permission for a client request (ok for requests without
  // a caller and while auth is off).  REQUIRES: the write lock.
  Status check_permission(const pb::InternalRequest& req) const;
  Status check_txn_permission(const AuthView& v, const AuthInfo& who,
                              const pb::TxnRequest& t) const;
  Status check_lease_puts(const AuthView& v, const AuthInfo& who, int64_t lease) const;
  void fill_members(google::protobuf::RepeatedPtrField<pb::Member>* out) const;

  // Readers share mu_, apply and lease bookkeeping hold it exclusively.
  // glibc's shared_mutex prefers readers, so a steady stream of reads could
  // starve apply; gate_ is a turnstile: a writer holds it while it waits for
  // the readers inside to leave, and new readers queue behind it.
  std::shared_lock<std::shared_mutex> read_lock() const {
    std::lock_guard g(gate_);
    return std::shared_lock<std::shared_mutex>(mu_);
  }
  std::unique_lock<std::shared_mutex> write_lock() {
    std::lock_guard g(gate_);
    return std::unique_lock<std::shared_mutex>(mu_);
  }

  Database* db_;
  Options options_;
  mutable std::mutex gate_;
  mutable std::shared_mutex mu_;
  // The key index: a B-tree (abseil's), not std::map: every put looks its
  // key up among all keys, and a B-tree's few wide nodes miss the cache far
  // less than a red-black tree's many narrow ones (docs/storage.md).  Its
  // iterators and references do not survive an insert or erase.
  absl::btree_map<std::string, KeyHistory, std::less<>> index_;
  size_t live_keys_ = 0;
  int64_t rev_ = 1;  // a fresh store is at revision 1, as etcd's
  int64_t compact_rev_ = 0;
  uint64_t applied_index_ = 0;
  uint64_t applied_term_ = 0;
  std::map<int64_t, Lease> leases_;
  std::map<uint64_t, pb::Member> members_;
  std::set<uint64_t> removed_members_;
  std::set<std::pair<uint64_t, int>> alarms_;  // (member id, AlarmType)
  AuthStore auth_;
  // The records an ApplyBatch staged and has not written yet (set while it
  // holds the write lock; read_record looks here first).
  const StagedRecords* staged_ = nullptr;
};

// The write side of one apply: changes are staged in a WriteBatch and the
// in-memory index is updated as they are made; reads through the writer see
// the changes made so far (as reads inside an etcd txn do).  All changes of
// one Writer share one main revision.  Callers check every precondition
// before the first change: a Writer cannot roll back.
class KvStore::Writer {
 public:
  // Stages into `batch`; records staged earlier in the same batch (by
  // earlier entries of an ApplyBatch) are read from `pending`.
  // REQUIRES: the caller holds store.mu_ exclusively (an ApplyBatch).
  Writer(KvStore& store, leveldb::WriteBatch& batch, StagedRecords& pending)
      : s_(store), main_(store.rev_ + 1), batch_(batch), pending_(pending) {}

  // The revision reads see: the pending one once something changed.
  int64_t read_rev() const { return sub_ > 0 ? main_ : s_.rev_; }
  int64_t pending_main() const { return main_; }
  bool changed() const { return sub_ > 0; }

  // The live value of key (seeing this writer's changes); false if absent.
  bool get(const std::string& key, pb::KeyValue* kv) const;
  // Writes key; the previous live value (if any) goes to *prev (cleared
  // when there was none).  With prev == nullptr the previous value is not
  // read at all, and the put's event has no prev_kv.
  void put(const std::string& key, const std::string& value, int64_t lease, pb::KeyValue* prev);
  // Deletes key if live; returns whether it was.
  bool del(const std::string& key, pb::KeyValue* prev);
  // Live keys in [key, range_end) as seen by this writer, ascending.
  std::vector<std::string> live_keys(const std::string& key, const std::string& range_end) const;
  bool read(Revision rev, pb::KeyValue* kv) const;

  leveldb::WriteBatch& batch() { return batch_; }
  std::vector<pb::Event>& events() { return events_; }
  KvStore& store() { return s_; }

 private:
  void write_record(const pb::KeyValue& kv, Revision rev);
  // A new event of this writer's; its kv is the record to fill and stage.
  pb::Event& add_event(pb::Event::EventType type);

  KvStore& s_;
  int64_t main_;
  int64_t sub_ = 0;
  leveldb::WriteBatch& batch_;
  std::vector<pb::Event> events_;
  StagedRecords& pending_;
};

// Applies committed entries in log order and writes everything they change,
// with the applied index of the last one, as ONE LevelDB WriteBatch at
// commit() (or destruction).  Holds the store's write lock from
// construction to commit: readers never see an entry of the batch before
// its records are written.  A crash before commit loses the whole batch and
// the applied index with it, so the log is replayed from the index before it.
class KvStore::ApplyBatch {
 public:
  explicit ApplyBatch(KvStore& store);
  ~ApplyBatch();
  ApplyBatch(const ApplyBatch&) = delete;
  ApplyBatch& operator=(const ApplyBatch&) = delete;

  ApplyResult apply(const pb::InternalRequest& req, uint64_t index, uint64_t term = 0,
                    const raftpb::ConfState* cs = nullptr);
  void apply_noop(uint64_t index, uint64_t term, const raftpb::ConfState* cs = nullptr);
  // Writes the batch and releases the lock.  Idempotent.
  void commit();

 private:
  // Writes what is staged so far (the lock stays held).
  void flush();
  void advance(uint64_t index, uint64_t term, const raftpb::ConfState* cs);

  KvStore& s_;
  std::unique_lock<std::shared_mutex> lock_;
  leveldb::WriteBatch batch_;
  StagedRecords pending_;
  bool dirty_ = false;  // the applied index moved since the last write
  std::string conf_state_;
  bool committed_ = false;
};

// Key range helpers shared with the v2 layer and tests.
// Upper bound of a range: "" -> single key; "\0" -> unbounded.
bool in_range(const std::string& k, const std::string& key, const std::string& range_end);
// The range_end that selects every key with this prefix ("\0" if none).
using etcdwire::prefix_end;

}  // namespace muster::storage
