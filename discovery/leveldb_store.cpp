#include "discovery/leveldb_store.h"

#include <leveldb/db.h>
#include <leveldb/write_batch.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace muster::discovery {

using nlohmann::json;

struct LevelDbTokenStore::Op {
  enum class Kind { kCreate, kAdd, kRemove, kExpire } kind;
  std::string token, id, value;
  uint32_t size = 0, max_registrations = 0;
  int64_t now_ms = 0, expires_ms = 0;
  StoreCallback cb;
  std::promise<std::size_t>* expired = nullptr;  // kExpire
};

struct LevelDbTokenStore::Waiter {
  std::string token, id;
  uint64_t from_index = 0;
  StoreCallback cb;
};

namespace {

class WaiterWatch final : public Watch {
 public:
  WaiterWatch(std::mutex& mu,
              std::multimap<std::string, std::shared_ptr<LevelDbTokenStore::Waiter>>& m,
              std::shared_ptr<LevelDbTokenStore::Waiter> w)
      : mu_(mu), map_(m), waiter_(std::move(w)) {}
  ~WaiterWatch() override { cancel(); }
  void cancel() override {
    if (!waiter_) return;
    std::lock_guard lock(mu_);
    auto [b, e] = map_.equal_range(waiter_->token);
    for (auto it = b; it != e; ++it)
      if (it->second == waiter_) {
        map_.erase(it);
        break;
      }
    waiter_.reset();
  }

 private:
  std::mutex& mu_;
  std::multimap<std::string, std::shared_ptr<LevelDbTokenStore::Waiter>>& map_;
  std::shared_ptr<LevelDbTokenStore::Waiter> waiter_;
};

// A watch that already fired (or could not start): nothing to cancel.
class DoneWatch final : public Watch {
 public:
  void cancel() override {}
};

std::string token_key(const std::string& t) { return "t/" + t; }
std::string member_key(const std::string& t, const std::string& id) { return "m/" + t + "/" + id; }

}  // namespace

LevelDbTokenStore::LevelDbTokenStore(const std::string& data_dir) {
  std::filesystem::create_directories(data_dir);
  leveldb::Options opts;
  opts.create_if_missing = true;
  leveldb::DB* raw = nullptr;
  auto st = leveldb::DB::Open(opts, data_dir + "/tokens", &raw);
  if (!st.ok())
    throw std::runtime_error("cannot open token store in " + data_dir + ": " + st.ToString());
  db_.reset(raw);
  load();
  writer_ = std::thread([this] { run_writer(); });
}

LevelDbTokenStore::~LevelDbTokenStore() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  writer_.join();
}

// Rebuilds memory from disk: everything on disk is durable.
void LevelDbTokenStore::load() {
  tokens_.clear();
  index_ = 0;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(leveldb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string k = it->key().ToString();
    json v = json::parse(it->value().ToString(), nullptr, false);
    if (v.is_discarded()) throw std::runtime_error("token store: corrupt value under key " + k);
    if (k == "i") {
      index_ = v.at("index").get<uint64_t>();
    } else if (k.rfind("t/", 0) == 0) {
      Token& t = tokens_[k.substr(2)];
      t.name = k.substr(2);
      t.size = v.at("size").get<uint32_t>();
      t.created_index = v.at("ci").get<uint64_t>();
      t.created_unix_ms = v.at("cms").get<int64_t>();
      t.expires_unix_ms = v.at("ems").get<int64_t>();
    } else if (k.rfind("m/", 0) == 0) {
      auto slash = k.find('/', 2);
      Member m;
      m.id = k.substr(slash + 1);
      m.value = v.at("v").get<std::string>();
      m.created_index = v.at("ci").get<uint64_t>();
      m.modified_index = v.at("mi").get<uint64_t>();
      m.registered_unix_ms = v.at("rms").get<int64_t>();
      tokens_[k.substr(2, slash - 2)].members.push_back(std::move(m));
    }
  }
  for (auto& [name, t] : tokens_)
    std::sort(t.members.begin(), t.members.end(),
              [](const Member& a, const Member& b) { return a.created_index < b.created_index; });
  durable_index_ = index_;
}

Token LevelDbTokenStore::visible(const Token& t) const {
  Token v = t;
  std::erase_if(v.members, [&](const Member& m) { return m.created_index > durable_index_; });
  return v;
}

void LevelDbTokenStore::enqueue(std::unique_ptr<Op> op) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(op));
  }
  cv_.notify_one();
}

void LevelDbTokenStore::create_token(const std::string& name, uint32_t size, int64_t now_unix_ms,
                                     int64_t expires_unix_ms, StoreCallback cb) {
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kCreate;
  op->token = name;
  op->size = size;
  op->now_ms = now_unix_ms;
  op->expires_ms = expires_unix_ms;
  op->cb = std::move(cb);
  enqueue(std::move(op));
}

void LevelDbTokenStore::add_member(const std::string& token, const std::string& id,
                                   const std::string& value, uint32_t max_registrations,
                                   int64_t now_unix_ms, StoreCallback cb) {
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kAdd;
  op->token = token;
  op->id = id;
  op->value = value;
  op->max_registrations = max_registrations;
  op->now_ms = now_unix_ms;
  op->cb = std::move(cb);
  enqueue(std::move(op));
}

void LevelDbTokenStore::remove_member(const std::string& token, const std::string& id,
                                      StoreCallback cb) {
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kRemove;
  op->token = token;
  op->id = id;
  op->cb = std::move(cb);
  enqueue(std::move(op));
}

std::size_t LevelDbTokenStore::collect_expired(int64_t now_unix_ms) {
  std::promise<std::size_t> done;
  auto fut = done.get_future();
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kExpire;
  op->now_ms = now_unix_ms;
  op->expired = &done;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return 0;
    queue_.push_back(std::move(op));
  }
  cv_.notify_one();
  return fut.get();
}

void LevelDbTokenStore::get_token(const std::string& name, int64_t now_unix_ms, StoreCallback cb) {
  StoreResult r;
  {
    std::lock_guard lock(mu_);
    r.index = durable_index_;
    auto it = tokens_.find(name);
    if (it == tokens_.end() || it->second.created_index > durable_index_ ||
        it->second.expires_unix_ms <= now_unix_ms) {
      r.status = StoreStatus::kNotFound;
    } else {
      r.token = visible(it->second);
    }
  }
  cb(std::move(r));
}

std::unique_ptr<Watch> LevelDbTokenStore::watch(const std::string& token, const std::string& id,
                                                uint64_t from_index, StoreCallback cb) {
  StoreResult r;
  {
    std::lock_guard lock(mu_);
    r.index = durable_index_;
    auto it = tokens_.find(token);
    if (it == tokens_.end() || it->second.created_index > durable_index_) {
      r.status = StoreStatus::kNotFound;
    } else {
      const Member* hit = nullptr;
      for (const auto& m : it->second.members) {
        if (m.created_index > durable_index_) break;
        if (m.created_index >= from_index && (id.empty() || m.id == id)) {
          hit = &m;
          break;
        }
      }
      if (!hit) {
        auto w = std::make_shared<Waiter>(Waiter{token, id, from_index, std::move(cb)});
        waiters_.emplace(token, w);
        return std::make_unique<WaiterWatch>(mu_, waiters_, w);
      }
      r.token = visible(it->second);
      r.member = *hit;
    }
  }
  cb(std::move(r));
  return std::make_unique<DoneWatch>();
}

uint64_t LevelDbTokenStore::current_index() {
  std::lock_guard lock(mu_);
  return durable_index_;
}

std::string LevelDbTokenStore::health() {
  std::lock_guard lock(mu_);
  return last_error_;
}

std::size_t LevelDbTokenStore::open_watches() {
  std::lock_guard lock(mu_);
  return waiters_.size();
}

void LevelDbTokenStore::run_writer() {
  for (;;) {
    std::deque<std::unique_ptr<Op>> batch;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      batch.swap(queue_);
    }
    // 1. Apply every op to memory and to one WriteBatch.
    leveldb::WriteBatch wb;
    std::vector<StoreResult> results(batch.size());
    std::vector<std::pair<std::string, Member>> created;  // (token, new member), for the watchers
    std::vector<std::string> vanished;                    // expired tokens, for the watchers
    std::size_t expired_count = 0;
    {
      std::lock_guard lock(mu_);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        Op& op = *batch[i];
        StoreResult& r = results[i];
        auto it = tokens_.find(op.token);
        switch (op.kind) {
          case Op::Kind::kCreate: {
            if (it != tokens_.end()) {
              r.status = StoreStatus::kExists;
              break;
            }
            Token t;
            t.name = op.token;
            t.size = op.size;
            t.created_index = ++index_;
            t.created_unix_ms = op.now_ms;
            t.expires_unix_ms = op.expires_ms;
            wb.Put(token_key(t.name),
                   json{{"size", t.size},
                        {"ci", t.created_index},
                        {"cms", t.created_unix_ms},
                        {"ems", t.expires_unix_ms}}
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
            r.token = t;
            tokens_.emplace(t.name, std::move(t));
            break;
          }
          case Op::Kind::kAdd: {
            if (it == tokens_.end() || it->second.expires_unix_ms <= op.now_ms) {
              r.status = StoreStatus::kNotFound;
              break;
            }
            auto& members = it->second.members;
            auto m = std::find_if(members.begin(), members.end(),
                                  [&](const Member& x) { return x.id == op.id; });
            if (m != members.end()) {
              r.status = StoreStatus::kExists;
              r.member = *m;
              break;
            }
            if (members.size() >= op.max_registrations) {
              r.status = StoreStatus::kQuotaReached;
              break;
            }
            Member nm{op.id, op.value, ++index_, index_, op.now_ms};
            wb.Put(member_key(op.token, op.id),
                   json{{"v", nm.value},
                        {"ci", nm.created_index},
                        {"mi", nm.modified_index},
                        {"rms", nm.registered_unix_ms}}
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
            members.push_back(nm);
            r.member = nm;
            created.emplace_back(op.token, nm);
            break;
          }
          case Op::Kind::kRemove: {
            if (it == tokens_.end()) {
              r.status = StoreStatus::kNotFound;
              break;
            }
            auto& members = it->second.members;
            auto m = std::find_if(members.begin(), members.end(),
                                  [&](const Member& x) { return x.id == op.id; });
            if (m == members.end()) {
              r.status = StoreStatus::kNotFound;
              break;
            }
            r.member = *m;
            r.member.modified_index = ++index_;
            members.erase(m);
            wb.Delete(member_key(op.token, op.id));
            break;
          }
          case Op::Kind::kExpire: {
            for (auto t = tokens_.begin(); t != tokens_.end();) {
              if (t->second.expires_unix_ms > op.now_ms) {
                ++t;
                continue;
              }
              wb.Delete(token_key(t->first));
              for (const auto& m : t->second.members) wb.Delete(member_key(t->first, m.id));
              vanished.push_back(t->first);
              ++index_;
              ++expired_count;
              t = tokens_.erase(t);
            }
            break;
          }
        }
      }
      wb.Put("i", json{{"index", index_}}.dump(-1, ' ', false,
                                               nlohmann::json::error_handler_t::replace));
    }
    // 2. One synced write for the whole batch (group commit).
    leveldb::WriteOptions wo;
    wo.sync = true;
    auto st = db_->Write(wo, &wb);
    // 3. Publish, then answer.
    std::vector<std::pair<std::shared_ptr<Waiter>, StoreResult>> wake;
    {
      std::lock_guard lock(mu_);
      if (!st.ok()) {
        last_error_ = "token store write failed: " + st.ToString();
        load();  // memory back to what is durable
        for (auto& r : results) {
          r = StoreResult{};
          r.status = StoreStatus::kUnavailable;
          r.message = last_error_;
        }
        created.clear();
        vanished.clear();
        expired_count = 0;
      } else {
        last_error_.clear();
      }
      durable_index_ = index_;
      for (auto& r : results) r.index = durable_index_;
      for (const auto& [token, c] : created) {
        auto [b, e] = waiters_.equal_range(token);
        for (auto it = b; it != e;) {
          auto& w = it->second;
          if (c.created_index >= w->from_index && (w->id.empty() || w->id == c.id)) {
            StoreResult r;
            r.index = durable_index_;
            auto t = tokens_.find(token);
            if (t != tokens_.end()) {
              r.token = visible(t->second);
              for (const auto& m : t->second.members)
                if (m.id == c.id) r.member = m;
            }
            wake.emplace_back(w, std::move(r));
            it = waiters_.erase(it);
          } else {
            ++it;
          }
        }
      }
      for (const auto& token : vanished) {
        auto [b, e] = waiters_.equal_range(token);
        for (auto it = b; it != e; ++it) {
          StoreResult r;
          r.status = StoreStatus::kNotFound;
          r.index = durable_index_;
          wake.emplace_back(it->second, std::move(r));
        }
        waiters_.erase(token);
      }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (batch[i]->kind == Op::Kind::kExpire)
        batch[i]->expired->set_value(expired_count);
      else
        batch[i]->cb(std::move(results[i]));
    }
    for (auto& [w, r] : wake) w->cb(std::move(r));
  }
}

}  // namespace muster::discovery
