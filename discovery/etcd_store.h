// discovery/etcd_store.h: the TokenStore kept in an etcd v3 cluster, reached
// through etcd's JSON gateway (POST /v3/kv/txn, /v3/watch), so that any number
// of stateless muster-discovery replicas serve one token space.
//
// Key layout in etcd (values are JSON unless stated; <p> = the key prefix,
// "/muster-discovery/" by default):
//   <p>t/<token>               -> {"size","created_ms","expires_ms","req"}
//   <p>c/<token>               -> decimal count of the token's registrations
//   <p>m/<token>/<id>          -> {"value","registered_ms","req"}
//   <p>e/<expires_ms:020>/<token> -> ""   expiry index, read by collect_expired
// "req" is a random request tag: after an answer lost in transit, a retried
// create/add recognises its own earlier write.
//
// Indexes: the store index is etcd's revision.  A token's created_index is the
// create_revision of its t/ key; a member's created_index is the
// create_revision of its m/ key and its modified_index the mod_revision (they
// are equal: member keys are written once).  Every change is one etcd txn, so
// every change gets its own revision and revisions never go backwards.  Other
// writes to the same etcd also advance the revision, so consecutive changes
// here may skip index values (TokenStore's "next value" becomes "a larger
// value"; etcd's discovery client relies only on that).
//
// Atomicity: the registration cap needs a count, and etcd txns cannot compare
// counts, so c/<token> holds it.  add_member reads token, counter and member
// key at one revision, then commits "member key absent, counter and token
// unchanged since that read -> put member, put counter+1" and retries on a
// conflict.  Only one of any set of racing registrations can win a given
// counter value, so the cap holds across replicas.
//
// Threads: the store has one event loop on one thread of its own, where
// net's asynchronous client (net/http_client.h) makes every call to etcd.
// Public methods that read or write start an operation there and return at
// once; at most `workers` operations run at a time, the rest wait their
// turn.  Callbacks run on the store's thread, never under a lock the public
// methods take.  collect_expired and health block their caller (bounded by
// the request / health timeouts) and must not be called from a callback.
// One etcd watch on the whole prefix, on the same loop, wakes local
// waiters.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "discovery/token_store.h"
#include "net/tls.h"

namespace muster::discovery {

struct EtcdStoreOptions {
  // etcd client URLs ("http://127.0.0.1:2379"); requests fail over between
  // them on connection errors and 5xx answers.
  std::vector<std::string> endpoints;
  net::TlsOptions tls;  // for https endpoints (client certificate, CA)
  std::string prefix = "/muster-discovery/";
  std::chrono::milliseconds connect_timeout{2'000};
  std::chrono::milliseconds request_timeout{5'000};
  std::chrono::milliseconds health_timeout{1'000};
  // The watch stream is re-opened (from the next revision, so nothing is
  // lost) after this long, which also detects a silently dead connection.
  std::chrono::milliseconds watch_stream_timeout{60'000};
  int workers = 4;  // operations in flight at a time
};

class EtcdTokenStore final : public TokenStore {
 public:
  // Starts the store's thread, probes etcd once (to learn the current
  // revision; bounded by health_timeout per endpoint), then opens the watch.
  // Does not fail when etcd is down: operations answer kUnavailable until it
  // is back.  Throws
  // std::invalid_argument on an empty or malformed endpoint list or prefix.
  explicit EtcdTokenStore(EtcdStoreOptions options);
  // Ends the watch, lets operations in flight finish, fails queued ones and
  // open watches with kUnavailable, then joins the store's thread.
  ~EtcdTokenStore() override;
  EtcdTokenStore(const EtcdTokenStore&) = delete;
  EtcdTokenStore& operator=(const EtcdTokenStore&) = delete;

  void create_token(const std::string& name, uint32_t size, int64_t now_unix_ms,
                    int64_t expires_unix_ms, StoreCallback cb) override;
  void get_token(const std::string& name, int64_t now_unix_ms, StoreCallback cb) override;
  void add_member(const std::string& token, const std::string& id, const std::string& value,
                  uint32_t max_registrations, int64_t now_unix_ms, StoreCallback cb) override;
  void remove_member(const std::string& token, const std::string& id, StoreCallback cb) override;
  // A watch on a token that has expired (by the wall clock) but is not yet
  // collected answers kNotFound; a waiter on a token that is collected while
  // it waits (by any replica) gets kNotFound.  cancel() prevents any delivery
  // not already begun.
  std::unique_ptr<Watch> watch(const std::string& token, const std::string& id, uint64_t from_index,
                               StoreCallback cb) override;
  std::size_t collect_expired(int64_t now_unix_ms) override;
  // The highest etcd revision this replica has seen (0 before etcd first
  // answered).
  uint64_t current_index() override;
  std::string health() override;

  // Observability for tests and /metrics: waiters registered here, and how
  // many times the watch stream has been (re)established.
  std::size_t open_watches();
  // Of those, how many still wait for their read of the token's state.
  std::size_t watches_reading();
  uint64_t watch_streams_established();

  struct Core;

 private:
  std::shared_ptr<Core> core_;
};

// Splits a comma-separated endpoint list ("http://a:2379,https://b:2379"),
// checking each is an http(s) URL.  Throws std::invalid_argument naming the
// bad entry.
std::vector<std::string> parse_etcd_endpoints(std::string_view list);

// The store muster-discovery's --store etcd builds.
std::unique_ptr<TokenStore> make_etcd_token_store(const std::string& endpoints,
                                                  const std::string& prefix,
                                                  const net::TlsOptions& tls = {});

}  // namespace muster::discovery
