// node/server/waits.h: the clients waiting on the member (etcd's pkg/wait):
// proposals waiting for their entry to be applied, and linearizable reads
// waiting first for the leader's read index, then for this member to apply
// up to it.
//
// Who calls what: MemberServer registers (any thread); the apply side
// finishes proposals and releases reads as entries are applied; the driver
// fails proposals Raft dropped and places reads when their ReadState
// arrives; housekeeping expires whatever outlived its deadline; stop() fails
// everything.  Every method is thread-safe; callbacks run without the lock,
// on the caller's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "node/storage/kv_store.h"
#include "node/storage/status.h"

namespace muster::server {

class Waits {
 public:
  using Clock = std::chrono::steady_clock;
  using ApplyDone = std::function<void(storage::Status, storage::KvStore::ApplyResult)>;
  using ReadDone = std::function<void(storage::Status)>;

  // --- proposals, by request ID ---
  void add_proposal(uint64_t id, ApplyDone done, Clock::time_point deadline);
  // The waiting proposal's callback, removed (empty when none waits: another
  // member proposed it, or it timed out).
  ApplyDone take(uint64_t id);
  // Answers proposal `id`, if it waits.
  void finish(uint64_t id, storage::Status st, storage::KvStore::ApplyResult result);
  void fail(uint64_t id, storage::Status st) { finish(id, std::move(st), {}); }

  // --- linearizable reads ---
  // A read waiting for the ReadState with context `ctx`.
  void add_read(std::string ctx, ReadDone done, Clock::time_point deadline);
  // The leader confirmed read `ctx` at `index`: it waits for the apply now.
  void read_index_known(const std::string& ctx, uint64_t index);
  // Releases (answers OK) every read whose index is <= applied.
  void applied(uint64_t applied);

  // Fails every proposal and read whose deadline has passed with `st`.
  void expire(Clock::time_point now, const storage::Status& st);
  // Fails everything waiting with `st` (the member is stopping).
  void fail_all(const storage::Status& st);

 private:
  struct Proposal {
    ApplyDone done;
    Clock::time_point deadline;
  };
  struct Read {
    ReadDone done;
    Clock::time_point deadline;
  };

  std::mutex mu_;  // guards everything below
  std::map<uint64_t, Proposal> proposals_;
  std::map<std::string, Read> reads_waiting_index_;    // ctx -> read
  std::multimap<uint64_t, Read> reads_waiting_apply_;  // index -> read
};

}  // namespace muster::server
