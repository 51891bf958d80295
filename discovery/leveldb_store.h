// discovery/leveldb_store.h: the embedded TokenStore (the default).
//
// All state lives in memory and in one LevelDB under <data-dir>/tokens.  A
// single writer thread takes every queued change, applies it to memory,
// writes the whole batch to LevelDB with one synced write (group commit) and
// only then runs the callbacks and wakes watchers.  Readers see a change only
// once it is durable: every entry carries the index of its creation, and
// reads skip entries above `durable_index_`.
//
// On-disk layout (keys are ASCII, values JSON):
//   "i"                 -> {"index": N}            last index used
//   "t/<token>"         -> {"size","ci","cms","ems"}  created index, created
//                                                     and expiry unix ms
//   "m/<token>/<id>"    -> {"v","ci","mi","rms"}   value, created and modified
//                                                  index, registered unix ms
// A batch always rewrites "i", so after a crash the index resumes above
// everything that was acknowledged.
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "discovery/token_store.h"

namespace leveldb {
class DB;
}

namespace muster::discovery {

class LevelDbTokenStore final : public TokenStore {
 public:
  // Opens (creating if needed) the store under `data_dir`.  Throws
  // std::runtime_error with LevelDB's message on failure.
  explicit LevelDbTokenStore(const std::string& data_dir);
  ~LevelDbTokenStore() override;

  void create_token(const std::string& name, uint32_t size, int64_t now_unix_ms,
                    int64_t expires_unix_ms, StoreCallback cb) override;
  void get_token(const std::string& name, int64_t now_unix_ms, StoreCallback cb) override;
  void add_member(const std::string& token, const std::string& id, const std::string& value,
                  uint32_t max_registrations, int64_t now_unix_ms, StoreCallback cb) override;
  void remove_member(const std::string& token, const std::string& id, StoreCallback cb) override;
  std::unique_ptr<Watch> watch(const std::string& token, const std::string& id, uint64_t from_index,
                               StoreCallback cb) override;
  std::size_t collect_expired(int64_t now_unix_ms) override;
  uint64_t current_index() override;
  std::string health() override;

  std::size_t open_watches();
  struct Waiter;

 private:
  struct Op;
  void enqueue(std::unique_ptr<Op> op);  // hands a change to the writer thread
  void run_writer();
  void load();
  Token visible(const Token& t) const;  // REQUIRES: mu_ held

  std::unique_ptr<leveldb::DB> db_;
  std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::map<std::string, Token> tokens_;
  uint64_t index_ = 0;          // last index assigned (maybe not yet durable)
  uint64_t durable_index_ = 0;  // last index synced to disk
  std::deque<std::unique_ptr<Op>> queue_;
  std::multimap<std::string, std::shared_ptr<Waiter>> waiters_;  // by token
  bool stopping_ = false;
  std::string last_error_;
  std::thread writer_;
};

}  // namespace muster::discovery
