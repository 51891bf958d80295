// Randomised differential test: every v3 operation applied to the KvStore
// and to a deliberately naive in-memory model (a full copy of the key space
// per revision) must give the same answers — responses, errors, watch events
// — including across reopen (index rebuilt from disk) and compaction.
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "node/storage/errors.h"
#include "test_util.h"

namespace muster::storage {
namespace {

using testing::FakeClock;
using testing::ScratchDir;

// ------------------------------------------------------------------ model

bool model_in_range(const std::string& k, const pb::RangeRequest& r) {
  if (r.range_end().empty()) return k == r.key();
  if (r.range_end() == std::string(1, '\0')) return k >= r.key();
  return k >= r.key() && k < r.range_end();
}

struct Model {
  using State = std::map<std::string, pb::KeyValue>;
  std::vector<State> at{State{}, State{}};  // at[r]: the key space at revision r
  std::vector<std::vector<pb::Event>> events_at{{}, {}};
  int64_t compact = 0;
  std::map<int64_t, int64_t> leases;  // id -> ttl

  int64_t rev() const { return static_cast<int64_t>(at.size()) - 1; }

  struct Txn {
    Model& m;
    State cur;
    State before;
    int64_t main;
    bool changed = false;
    std::vector<pb::Event> events;
    explicit Txn(Model& model)
        : m(model), cur(model.at.back()), before(cur), main(model.rev() + 1) {}
    int64_t read_rev() const { return changed ? main : m.rev(); }

    void put(const std::string& k, const std::string& v, int64_t lease) {
      pb::KeyValue kv;
      kv.set_key(k);
      kv.set_value(v);
      kv.set_lease(lease);
      kv.set_mod_revision(main);
      pb::Event ev;
      auto it = cur.find(k);
      if (it != cur.end()) {
        kv.set_create_revision(it->second.create_revision());
        kv.set_version(it->second.version() + 1);
        *ev.mutable_prev_kv() = it->second;
      } else {
        kv.set_create_revision(main);
        kv.set_version(1);
      }
      *ev.mutable_kv() = kv;
      events.push_back(ev);
      cur[k] = kv;
      changed = true;
    }
    bool del(const std::string& k, pb::KeyValue* prev) {
      auto it = cur.find(k);
      if (it == cur.end()) return false;
      *prev = it->second;
      pb::Event ev;
      ev.set_type(pb::Event::DELETE);
      ev.mutable_kv()->set_key(k);
      ev.mutable_kv()->set_mod_revision(main);
      *ev.mutable_prev_kv() = it->second;
      events.push_back(ev);
      cur.erase(it);
      changed = true;
      return true;
    }
    void commit() {
      if (!changed) return;
      m.at.push_back(cur);
      m.events_at.push_back(events);
    }
  };

  Status range(const State& s, int64_t current, const pb::RangeRequest& r,
               pb::RangeResponse* out) const {
    if (r.revision() > current) return errors::future_rev();
    if (r.revision() > 0 && r.revision() < compact) return errors::compacted();
    const State& view = r.revision() > 0 && r.revision() != current ? at[r.revision()] : s;
    out->mutable_header()->set_revision(current);
    std::vector<pb::KeyValue> kvs;
    for (const auto& [k, kv] : view)
      if (model_in_range(k, r)) kvs.push_back(kv);
    out->set_count(static_cast<int64_t>(kvs.size()));
    if (r.count_only()) return {};
    std::vector<pb::KeyValue> kept;
    for (auto& kv : kvs) {
      if (r.max_mod_revision() && kv.mod_revision() > r.max_mod_revision()) continue;
      if (r.min_mod_revision() && kv.mod_revision() < r.min_mod_revision()) continue;
      if (r.max_create_revision() && kv.create_revision() > r.max_create_revision()) continue;
      if (r.min_create_revision() && kv.create_revision() < r.min_create_revision()) continue;
      kept.push_back(kv);
    }
    auto target = [&](const pb::KeyValue& kv) -> std::string {
      auto num = [](int64_t v) {
        char b[32];
        snprintf(b, sizeof b, "%020lld", static_cast<long long>(v));
        return std::string(b);
      };
      switch (r.sort_target()) {
        case pb::RangeRequest::KEY:
          return kv.key();
        case pb::RangeRequest::VERSION:
          return num(kv.version());
        case pb::RangeRequest::CREATE:
          return num(kv.create_revision());
        case pb::RangeRequest::MOD:
          return num(kv.mod_revision());
        default:
          return kv.value();
      }
    };
    auto order = r.sort_order();
    if (order == pb::RangeRequest::NONE && r.sort_target() != pb::RangeRequest::KEY)
      order = pb::RangeRequest::ASCEND;
    if (order == pb::RangeRequest::ASCEND)
      std::stable_sort(kept.begin(), kept.end(),
                       [&](auto& a, auto& b) { return target(a) < target(b); });
    if (order == pb::RangeRequest::DESCEND)
      std::stable_sort(kept.begin(), kept.end(),
                       [&](auto& a, auto& b) { return target(a) > target(b); });
    if (r.limit() > 0 && static_cast<int64_t>(kept.size()) > r.limit()) {
      kept.resize(static_cast<size_t>(r.limit()));
      out->set_more(true);
    }
    for (auto& kv : kept) {
      if (r.keys_only()) kv.clear_value();
      *out->add_kvs() = kv;
    }
    return {};
  }

  static bool cmp(const pb::Compare& c, const pb::KeyValue& kv) {
    int64_t a = 0, b = 0;
    int r = 0;
    switch (c.target()) {
      case pb::Compare::VALUE: {
        std::string want = c.has_value() ? c.value() : "";
        r = kv.value() < want ? -1 : (kv.value() > want ? 1 : 0);
        break;
      }
      case pb::Compare::VERSION:
        a = kv.version(), b = c.has_version() ? c.version() : 0;
        break;
      case pb::Compare::CREATE:
        a = kv.create_revision(), b = c.has_create_revision() ? c.create_revision() : 0;
        break;
      case pb::Compare::MOD:
        a = kv.mod_revision(), b = c.has_mod_revision() ? c.mod_revision() : 0;
        break;
      case pb::Compare::LEASE:
        a = kv.lease(), b = c.has_lease() ? c.lease() : 0;
        break;
      default:
        break;
    }
    if (c.target() != pb::Compare::VALUE) r = a < b ? -1 : (a > b ? 1 : 0);
    switch (c.result()) {
      case pb::Compare::EQUAL:
        return r == 0;
      case pb::Compare::NOT_EQUAL:
        return r != 0;
      case pb::Compare::GREATER:
        return r > 0;
      default:
        return r < 0;
    }
  }

  bool compares(const State& s, const pb::TxnRequest& t) const {
    for (const auto& c : t.compare()) {
      pb::RangeRequest rr;
      rr.set_key(c.key());
      rr.set_range_end(c.range_end());
      std::vector<const pb::KeyValue*> kvs;
      for (const auto& [k, kv] : s)
        if (model_in_range(k, rr)) kvs.push_back(&kv);
      if (kvs.empty()) {
        if (c.target() == pb::Compare::VALUE || !cmp(c, pb::KeyValue())) return false;
      }
      for (auto* kv : kvs)
        if (!cmp(c, *kv)) return false;
    }
    return true;
  }

  Status check(const State& s, const pb::TxnRequest& t) const {
    for (const auto& op : compares(s, t) ? t.success() : t.failure()) {
      if (op.has_request_range()) {
        const auto& r = op.request_range();
        if (r.revision() > rev()) return errors::future_rev();
        if (r.revision() > 0 && r.revision() < compact) return errors::compacted();
      }
      if (op.has_request_put()) {
        const auto& p = op.request_put();
        if (p.lease() && !p.ignore_lease() && !leases.count(p.lease()))
          return errors::lease_not_found();
        if ((p.ignore_value() || p.ignore_lease()) && !s.count(p.key()))
          return {Code::kInvalidArgument, errors::kKeyNotFound};
      }
      if (op.has_request_txn()) {
        Status st = check(s, op.request_txn());
        if (!st) return st;
      }
    }
    return {};
  }

  void exec_put(Txn& t, const pb::PutRequest& p, pb::PutResponse* out) {
    auto it = t.cur.find(p.key());
    pb::KeyValue prev;
    bool had = it != t.cur.end();
    if (had) prev = it->second;
    t.put(p.key(), p.ignore_value() ? prev.value() : p.value(),
          p.ignore_lease() ? prev.lease() : p.lease());
    if (p.prev_kv() && had) *out->mutable_prev_kv() = prev;
    out->mutable_header()->set_revision(t.read_rev());
  }
  void exec_del(Txn& t, const pb::DeleteRangeRequest& d, pb::DeleteRangeResponse* out) {
    pb::RangeRequest rr;
    rr.set_key(d.key());
    rr.set_range_end(d.range_end());
    std::vector<std::string> ks;
    for (const auto& [k, kv] : t.cur)
      if (model_in_range(k, rr)) ks.push_back(k);
    for (const auto& k : ks) {
      pb::KeyValue prev;
      t.del(k, &prev);
      if (d.prev_kv()) *out->add_prev_kvs() = prev;
    }
    out->set_deleted(static_cast<int64_t>(ks.size()));
    out->mutable_header()->set_revision(t.read_rev());
  }
  void exec_txn(Txn& t, const pb::TxnRequest& req, pb::TxnResponse* out) {
    const bool ok = compares(t.before, req);
    out->set_succeeded(ok);
    for (const auto& op : ok ? req.success() : req.failure()) {
      auto* r = out->add_responses();
      if (op.has_request_range()) {
        Status s = range(t.cur, t.read_rev(), op.request_range(), r->mutable_response_range());
        EXPECT_TRUE(s.is_ok());
      } else if (op.has_request_put()) {
        exec_put(t, op.request_put(), r->mutable_response_put());
      } else if (op.has_request_delete_range()) {
        exec_del(t, op.request_delete_range(), r->mutable_response_delete_range());
      } else if (op.has_request_txn()) {
        exec_txn(t, op.request_txn(), r->mutable_response_txn());
      }
    }
    out->mutable_header()->set_revision(t.read_rev());
  }

  KvStore::ApplyResult apply(const pb::InternalRequest& req) {
    KvStore::ApplyResult res;
    Status v = validate(req);
    if (!v) {
      res.status = v;
      return res;
    }
    Txn t(*this);
    auto& out = res.response;
    Status s;
    if (req.has_range()) {
      s = range(at.back(), rev(), req.range(), out.mutable_range());
    } else if (req.has_put()) {
      pb::TxnRequest tr;
      *tr.add_success()->mutable_request_put() = req.put();
      s = check(at.back(), tr);
      if (s) exec_put(t, req.put(), out.mutable_put());
    } else if (req.has_delete_range()) {
      exec_del(t, req.delete_range(), out.mutable_delete_range());
    } else if (req.has_txn()) {
      s = check(at.back(), req.txn());
      if (s) exec_txn(t, req.txn(), out.mutable_txn());
    } else if (req.has_compaction()) {
      const int64_t r = req.compaction().revision();
      if (r <= compact) {
        s = errors::compacted();
      } else if (r > rev()) {
        s = errors::future_rev();
      } else {
        compact = r;
        out.mutable_compaction()->mutable_header();
      }
    } else if (req.has_lease_grant()) {
      const int64_t id = req.lease_grant().id();
      if (leases.count(id)) {
        s = {Code::kFailedPrecondition, errors::kLeaseExist};
      } else {
        leases[id] = req.lease_grant().ttl();
        out.mutable_lease_grant()->set_id(id);
        out.mutable_lease_grant()->set_ttl(req.lease_grant().ttl());
      }
    } else if (req.has_lease_revoke()) {
      const int64_t id = req.lease_revoke().id();
      if (!leases.count(id)) {
        s = errors::lease_not_found();
      } else {
        std::vector<std::string> ks;
        for (const auto& [k, kv] : t.cur)
          if (kv.lease() == id) ks.push_back(k);
        for (const auto& k : ks) {
          pb::KeyValue p;
          t.del(k, &p);
        }
        leases.erase(id);
        out.mutable_lease_revoke()->mutable_header();
      }
    }
    if (!s) {
      out.Clear();
      res.status = s;
      return res;
    }
    t.commit();
    res.events = t.events;
    const int64_t r = rev();
    if (out.has_put()) out.mutable_put()->mutable_header()->set_revision(r);
    if (out.has_delete_range()) out.mutable_delete_range()->mutable_header()->set_revision(r);
    if (out.has_txn()) out.mutable_txn()->mutable_header()->set_revision(r);
    if (out.has_compaction()) out.mutable_compaction()->mutable_header()->set_revision(r);
    if (out.has_lease_grant()) out.mutable_lease_grant()->mutable_header()->set_revision(r);
    if (out.has_lease_revoke()) out.mutable_lease_revoke()->mutable_header()->set_revision(r);
    return res;
  }

  // Events from start (> compact) for keys in r's range.
  std::vector<pb::Event> events(const pb::RangeRequest& r, int64_t start) const {
    std::vector<pb::Event> out;
    for (int64_t v = std::max<int64_t>(start, 1); v <= rev(); v++)
      for (const auto& e : events_at[v])
        if (model_in_range(e.kv().key(), r)) out.push_back(e);
    return out;
  }
};

// ------------------------------------------------------------------ generator

class Gen {
 public:
  explicit Gen(uint32_t seed) : rng_(seed) {}
  int n(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool coin(int pct) { return n(1, 100) <= pct; }
  std::string key() {
    static const char* ks[] = {"a", "a0", "ab", "b", "b/1", "b/2", "c", "d", "e\xff", "f"};
    return ks[n(0, 9)];
  }
  std::string value() { return std::string(1, static_cast<char>('p' + n(0, 5))); }
  void range_of(std::string* key, std::string* end) {
    *key = this->key();
    switch (n(0, 4)) {
      case 0:
      case 1:
        end->clear();
        break;
      case 2:
        *end = prefix_end(*key);
        break;
      case 3:
        *end = std::string(1, '\0');
        break;
      default:
        *end = this->key();
    }
  }
  pb::RangeRequest range(int64_t rev) {
    pb::RangeRequest r;
    range_of(r.mutable_key(), r.mutable_range_end());
    if (coin(30)) r.set_limit(n(1, 4));
    if (coin(30)) r.set_revision(n(0, static_cast<int>(rev) + 2));
    if (coin(30)) r.set_sort_order(static_cast<pb::RangeRequest::SortOrder>(n(0, 2)));
    if (coin(30)) r.set_sort_target(static_cast<pb::RangeRequest::SortTarget>(n(0, 4)));
    r.set_keys_only(coin(20));
    r.set_count_only(coin(10));
    if (coin(10)) r.set_min_mod_revision(n(0, static_cast<int>(rev)));
    if (coin(10)) r.set_max_mod_revision(n(0, static_cast<int>(rev)));
    if (coin(10)) r.set_min_create_revision(n(0, static_cast<int>(rev)));
    if (coin(10)) r.set_max_create_revision(n(0, static_cast<int>(rev)));
    return r;
  }
  pb::PutRequest put() {
    pb::PutRequest p;
    p.set_key(key());
    p.set_value(value());
    if (coin(20)) p.set_lease(n(1, 4));
    p.set_prev_kv(coin(50));
    if (coin(10)) {
      p.set_ignore_value(true);
      p.clear_value();
    }
    if (coin(10)) {
      p.set_ignore_lease(true);
      p.clear_lease();
    }
    return p;
  }
  pb::DeleteRangeRequest del() {
    pb::DeleteRangeRequest d;
    range_of(d.mutable_key(), d.mutable_range_end());
    d.set_prev_kv(coin(50));
    return d;
  }
  pb::Compare compare(int64_t rev) {
    pb::Compare c;
    c.set_key(key());
    if (coin(20)) c.set_range_end(prefix_end(c.key()));
    c.set_result(static_cast<pb::Compare::CompareResult>(n(0, 3)));
    c.set_target(static_cast<pb::Compare::CompareTarget>(n(0, 4)));
    switch (coin(90) ? c.target() : n(0, 4)) {  // sometimes a mismatched union
      case pb::Compare::VERSION:
        c.set_version(n(0, 3));
        break;
      case pb::Compare::CREATE:
        c.set_create_revision(n(0, static_cast<int>(rev)));
        break;
      case pb::Compare::MOD:
        c.set_mod_revision(n(0, static_cast<int>(rev)));
        break;
      case pb::Compare::VALUE:
        c.set_value(value());
        break;
      default:
        c.set_lease(n(0, 4));
    }
    return c;
  }
  pb::TxnRequest txn(int64_t rev, int depth) {
    pb::TxnRequest t;
    for (int i = n(0, 2); i > 0; i--) *t.add_compare() = compare(rev);
    for (auto* ops : {t.mutable_success(), t.mutable_failure()}) {
      for (int i = n(0, 3); i > 0; i--) {
        auto* op = ops->Add();
        switch (n(0, depth > 0 ? 3 : 2)) {
          case 0:
            *op->mutable_request_range() = range(rev);
            break;
          case 1:
            *op->mutable_request_put() = put();
            break;
          case 2:
            *op->mutable_request_delete_range() = del();
            break;
          default:
            *op->mutable_request_txn() = txn(rev, depth - 1);
        }
      }
    }
    return t;
  }
  pb::InternalRequest request(int64_t rev) {
    pb::InternalRequest r;
    int k = n(0, 99);
    if (k < 30) {
      *r.mutable_put() = put();
    } else if (k < 45) {
      *r.mutable_range() = range(rev);
    } else if (k < 55) {
      *r.mutable_delete_range() = del();
    } else if (k < 85) {
      *r.mutable_txn() = txn(rev, 2);
    } else if (k < 89) {
      r.mutable_compaction()->set_revision(n(0, static_cast<int>(rev) + 1));
    } else if (k < 95) {
      r.mutable_lease_grant()->set_id(n(1, 4));
      r.mutable_lease_grant()->set_ttl(n(5, 100));
    } else {
      r.mutable_lease_revoke()->set_id(n(1, 5));
    }
    return r;
  }

 private:
  std::mt19937 rng_;
};

std::string dump(const google::protobuf::Message& m) { return m.ShortDebugString(); }

// Applied puts carry prev_kv only when the request asked for it; a watcher
// that wants it looks it up with KvStore::previous(), as here.
void fill_prev(const KvStore& store, KvStore::ApplyResult* got) {
  for (auto& e : got->events) {
    if (e.type() != pb::Event::PUT || e.has_prev_kv() || e.kv().version() <= 1) continue;
    pb::KeyValue prev;
    if (store.previous(e.kv().key(), e.kv().mod_revision(), &prev)) *e.mutable_prev_kv() = prev;
  }
}

void expect_same(const KvStore::ApplyResult& got, const KvStore::ApplyResult& want,
                 const pb::InternalRequest& req, int step) {
  ASSERT_EQ(got.status.code(), want.status.code())
      << "step " << step << " req " << dump(req) << " got " << got.status.to_string() << " want "
      << want.status.to_string();
  ASSERT_EQ(got.status.message(), want.status.message()) << "step " << step;
  ASSERT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got.response, want.response))
      << "step " << step << " req " << dump(req) << "\n got  " << dump(got.response) << "\n want "
      << dump(want.response);
  ASSERT_EQ(got.events.size(), want.events.size()) << "step " << step;
  for (size_t i = 0; i < got.events.size(); i++)
    ASSERT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got.events[i], want.events[i]))
        << "step " << step << " event " << i << "\n got  " << dump(got.events[i]) << "\n want "
        << dump(want.events[i]);
}

class KvModelTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(KvModelTest, RandomOpsMatchModel) {
  ScratchDir dir;
  FakeClock clock;
  MemberStorage::Options opts;
  opts.kv.clock_ms = clock.fn();
  auto member = testing::open_member(dir.path(), opts);
  Model model;
  Gen gen(GetParam());
  uint64_t index = 0;
  std::map<std::string, int> outcomes;  // what the sequence exercised
  const int steps = 2500;
  for (int step = 0; step < steps; step++) {
    pb::InternalRequest req = gen.request(model.rev());
    index++;
    KvStore::ApplyResult want = model.apply(req);
    KvStore::ApplyResult got = member->kv().apply(req, index, 1);
    ASSERT_FALSE(got.skipped);
    fill_prev(member->kv(), &got);
    expect_same(got, want, req, step);
    if (::testing::Test::HasFatalFailure()) return;
    ASSERT_EQ(member->kv().revision(), model.rev());
    if (!want.status) {
      outcomes[want.status.message()]++;
    } else if (req.has_txn()) {
      outcomes[want.response.txn().succeeded() ? "txn then" : "txn else"]++;
    } else {
      outcomes[std::to_string(req.request_case())]++;
    }

    // Serializable reads see the same.
    pb::RangeRequest rr = gen.range(model.rev());
    pb::RangeResponse g, w;
    Status gs = member->kv().range(rr, &g);
    Status ws = model.range(model.at.back(), model.rev(), rr, &w);
    ASSERT_EQ(gs.code(), ws.code()) << dump(rr);
    ASSERT_TRUE(google::protobuf::util::MessageDifferencer::Equals(g, w))
        << "step " << step << " " << dump(rr) << "\n got  " << dump(g) << "\n want " << dump(w);

    // Watch catch-up from a random revision after the compaction point.
    if (step % 25 == 0) {
      const int64_t start =
          gen.n(static_cast<int>(model.compact) + 1, static_cast<int>(model.rev()) + 1);
      pb::RangeRequest wr;
      gen.range_of(wr.mutable_key(), wr.mutable_range_end());
      std::vector<pb::Event> evs;
      int64_t next = 0;
      Status es = member->kv().events(wr.key(), wr.range_end(), start, SIZE_MAX, true, &evs, &next);
      ASSERT_TRUE(es.is_ok()) << es.to_string();
      auto want_evs = model.events(wr, start);
      ASSERT_EQ(evs.size(), want_evs.size()) << "step " << step << " from " << start;
      for (size_t i = 0; i < evs.size(); i++)
        ASSERT_TRUE(google::protobuf::util::MessageDifferencer::Equals(evs[i], want_evs[i]))
            << "step " << step << "\n got  " << dump(evs[i]) << "\n want " << dump(want_evs[i]);
      ASSERT_EQ(next, model.rev() + 1);
    }
    if (model.compact > 1) {
      std::vector<pb::Event> evs;
      int64_t next = 0;
      Status es = member->kv().events("a", "", model.compact - 1, 10, false, &evs, &next);
      ASSERT_EQ(es.message(), errors::kCompacted);
    }

    // Reopen now and then: the index is rebuilt from disk.
    if (step % 300 == 299) {
      member->kv().check_consistency();
      member.reset();
      member = testing::open_member(dir.path(), opts);
      member->kv().check_consistency();
      ASSERT_EQ(member->kv().applied_index(), index);
      ASSERT_EQ(member->kv().revision(), model.rev());
      ASSERT_EQ(member->kv().compact_revision(), model.compact);
    }
  }
  member->kv().check_consistency();
  for (const std::string& o :
       {std::string("txn then"), std::string("txn else"), std::string(errors::kCompacted),
        std::string(errors::kFutureRev), std::string(errors::kLeaseNotFound),
        std::string(errors::kLeaseExist), std::string(errors::kKeyNotFound),
        std::string(errors::kDuplicateKey), std::to_string(pb::InternalRequest::kCompaction),
        std::to_string(pb::InternalRequest::kLeaseRevoke)})
    EXPECT_GT(outcomes[o], 0) << o;
}

INSTANTIATE_TEST_SUITE_P(Seeds, KvModelTest, ::testing::Values(1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u));

}  // namespace
}  // namespace muster::storage
