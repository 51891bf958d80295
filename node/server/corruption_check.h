// node/server/corruption_check.h: etcd's data corruption checks
// (--experimental-initial-corrupt-check, --experimental-corrupt-check-time;
// etcd 3.4's etcdserver/corrupt.go), and the peer route they ask.
//
// What is compared: KvStore::hash_by_rev, a CRC-32C over the key-values
// live at the compacted revision and every change after it, up to one
// revision.  Members that applied the same log agree on it at the same
// revision and compacted revision; a record altered on one member's disk
// (a bad disk, a bug, a hand edit) makes that member's hash differ.
//
// Where peers' hashes come from: `GET <peer-url>/members/hashkv` with the
// JSON body {"revision":N} and the X-Etcd-Cluster-ID header, answered
// {"header":{"revision":current},"hash":H,"compact_revision":C} -- etcd
// 3.4's peer route, on the peer port (docs/architecture.md says why not
// the client API).  Errors are etcd's: 400 with "mvcc: required revision is
// a future revision" (the peer is behind) or "... has been compacted" (this
// member is behind), 412 "cluster ID mismatch".
//
// The initial check: before a member with data serves anyone, it hashes
// its store at its current revision and asks every other member for its
// hash at that revision; a peer at the same compacted revision with a
// different hash stops the start with "<member id> found data
// inconsistency with peers".  Peers that cannot answer (down, behind,
// compacted past it) are logged and skipped, as etcd does.
//
// The periodic check (every interval, on the leader only): hash at the
// leader's revision, ask every peer for its hash at that revision, pass a
// read barrier and hash again; a follower whose revision or compacted
// revision is beyond the leader's, or whose hash at the same compacted
// revision differs, or a leader whose own hash changed under the same
// revision, raises the CORRUPT alarm through Raft (member ID 0, as etcd
// 3.4.23: it cannot tell which side is bad).  Every member then refuses
// writes (node/storage/kv_store.h) until an operator disarms it.
//
// Threads: initial_check() on the starting thread; the periodic check on a
// thread of its own; serve_hashkv() answers from a worker thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "net/tls.h"
#include "node/server/member_api.h"
#include "node/server/transport.h"

namespace muster::server {

class CorruptionCheck {
 public:
  struct Options {
    uint64_t member_id = 0;
    uint64_t cluster_id = 0;
    // For https peer URLs (the member's peer client TLS).
    std::optional<net::TlsOptions> peer_tls;
    // Each peer request's deadline (etcd's ReqTimeout) and the read
    // barrier's.
    std::chrono::milliseconds request_timeout{7000};
    // --experimental-corrupt-check-time; zero: no periodic check.
    std::chrono::milliseconds interval{0};
  };

  // REQUIRES: member outlives this object.
  CorruptionCheck(MemberApi& member, Options options);
  // Stops the periodic check and answers hash requests still queued.
  ~CorruptionCheck();
  CorruptionCheck(const CorruptionCheck&) = delete;
  CorruptionCheck& operator=(const CorruptionCheck&) = delete;

  // etcd's CheckInitialHashKV.  Throws std::runtime_error("<id> found data
  // inconsistency with peers") when a peer disagrees.
  void initial_check();

  // Starts the periodic check (nothing when the interval is zero).
  void start();
  void stop();

  // The peer route: answers GET /members/hashkv through `reply`.
  void serve_hashkv(Transport::HttpRequest req, Transport::HttpReply reply);

  // What a peer answered (or why it did not).
  struct PeerHash {
    uint64_t id = 0;
    std::vector<std::string> urls;
    bool ok = false;
    uint32_t hash = 0;
    int64_t revision = 0;  // the peer's current revision
    int64_t compact_revision = 0;
    // When !ok: "future" (the peer is behind), "compacted" (this member
    // is), "cluster" (another cluster), or another sentence.
    std::string error;
  };

 private:
  // Asks every other member for its hash at `rev`, each of its URLs in
  // turn until one answers.
  std::vector<PeerHash> peer_hashes(int64_t rev);
  PeerHash ask(const std::string& url, int64_t rev);
  // etcd's checkHashKV, run by the leader.
  storage::Status check_hash_kv();
  void raise_corrupt();
  void run_periodic();
  void run_worker();

  MemberApi& member_;
  const Options options_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                            // guarded by mu_
  std::deque<std::function<void()>> hash_requests_;  // guarded by mu_
  std::thread periodic_;
  std::thread worker_;  // last: starts once everything above exists
};

}  // namespace muster::server
