// node/bootstrap/discovery_v3.h: a member's bootstrap through v3 discovery
// (etcd 3.6: --discovery-token + --discovery-endpoints), as a client.
//
// The "service" is any etcd v3 cluster -- a real etcd, or a muster cluster --
// reached over gRPC (KV.Range, KV.Put, Watch.Watch, and Auth.Authenticate
// when --discovery-user is set; net/grpc_client.h carries the calls).  The
// token is a set of keys (research/discovery.md section 3):
//   /_etcd/registry/<token>/_config/size          decimal size, written by the operator
//   /_etcd/registry/<token>/members/<member-id>   "name=peerURL[,name=peerURL]"
// Steps, etcd 3.6's joinCluster:
//   1. checkCluster: read the size key (absent: "size key not found", not a
//      positive integer: "size key is bad"; both fatal) and every key under
//      the members prefix, sorted by create revision; full when `size`
//      members are registered and this member is not among the first `size`;
//   2. registerSelf: a plain Put of this member's key (no lease, no compare);
//   3. checkCluster again (someone may have taken the last seat meanwhile);
//   4. waitPeers: Watch the members prefix from the listing's revision + 1
//      until `size` members are known;
//   5. the first `size` registrations by create revision, joined with ",",
//      are the initial cluster ("invalid peer URL" when that does not parse).
// Member IDs are etcd's, with the --discovery-token string as cluster token.
// Retries are etcd's: a failed step waits 2^min(n,8) seconds (2 s, 4 s, ...,
// 256 s) after its n-th consecutive failure, and the count starts again after
// every step that succeeds.
//
// Where Muster differs from etcd 3.6 (docs/bootstrap.md "v3 discovery"):
//   * it gives up after --discovery-max-retries consecutive failures of one
//     step ("discovery: too many retries"; etcd never does);
//   * errors no retry can mend (permission denied, a wrong password, an
//     endpoint that does not serve etcd's API) fail at once;
//   * a watch that is cancelled (compacted revision) or breaks re-reads the
//     token and watches on from the new revision (etcd re-watches the same
//     revision without end);
//   * a member whose registration is among the first `size` of a token that
//     was already complete must prove (the registration marker of its data
//     dir) that it never started Raft, as with v2 discovery;
//   * a full token leads to muster's full-cluster path (proxy by default,
//     exit with --discovery-fallback=exit, or --discovery-replace-dead);
//     etcd 3.6 always exits.
//
// Blocking; call from one thread.  Logs progress through base/log.h with
// etcd's log messages.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "node/bootstrap/discovery.h"
#include "node/config/config.h"

namespace muster::bootstrap {

struct DiscoveryV3Options {
  std::string token;                   // --discovery-token
  std::vector<std::string> endpoints;  // --discovery-endpoints: host:port or http(s)://host:port
  std::chrono::milliseconds dial_timeout{2000};
  std::chrono::milliseconds request_timeout{5000};
  std::chrono::milliseconds keepalive_time{2000};
  std::chrono::milliseconds keepalive_timeout{6000};
  bool insecure_transport = true;
  bool insecure_skip_tls_verify = false;
  std::string cert, key, cacert;
  std::string user, password;  // user may be "name:password"

  std::string name;                    // --name
  std::vector<std::string> peer_urls;  // --initial-advertise-peer-urls
  std::string registration_marker;     // as DiscoveryOptions::registration_marker

  // etcd's backoff: the n-th consecutive failure of a step waits
  // backoff_unit * 2^min(n, 8); after max_retries of them the step fails.
  std::chrono::milliseconds backoff_unit{1000};
  uint32_t max_retries = 6;
  // Injected for tests; default std::this_thread::sleep_for.
  std::function<void(std::chrono::milliseconds)> sleep;
};

// The options a member's flags give (cfg.discovery_v3, --name, ...).
DiscoveryV3Options discovery_v3_options(const config::Config& cfg);

// Runs steps 1-5 for the member described by `options`.  The same result
// shape as v2 discovery (discovery.h); the token of kCluster is options.token.
DiscoveryResult join_cluster_v3(const DiscoveryV3Options& options);

// ---- the key layout (etcd 3.6's, path.Join semantics) ---------------------
std::string v3_token_prefix(const std::string& token);    // /_etcd/registry/<token>
std::string v3_size_key(const std::string& token);        // .../_config/size
std::string v3_members_prefix(const std::string& token);  // .../members
std::string v3_member_key(const std::string& token, const std::string& id_hex);

// A blocking client for one v3 token, with the retry policy of the options.
// The members of TokenState come sorted by create revision; `index` is the
// revision of the listing; Registration::id is the key's last element.
class DiscoveryV3Client {
 public:
  explicit DiscoveryV3Client(const DiscoveryV3Options& options);
  ~DiscoveryV3Client();
  DiscoveryV3Client(const DiscoveryV3Client&) = delete;
  DiscoveryV3Client& operator=(const DiscoveryV3Client&) = delete;

  using Failure = DiscoveryClient::Failure;

  // The size key and the registrations, retried as etcd's checkCluster.
  std::optional<Failure> state(TokenState* out);
  // A replacement member (replacement.h) takes its place in the token in one
  // Txn: deletes the registrations among the first `size` whose member is
  // not in `cluster_member_ids`, and puts `id_hex` = `value`.  Returns the
  // IDs of the registrations it deleted.
  std::optional<Failure> record_replacement(const std::vector<uint64_t>& cluster_member_ids,
                                            const std::string& id_hex, const std::string& value,
                                            std::vector<std::string>* removed);

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// For a replacement (replacement.cpp): records this member (`member_id`,
// cfg's name and peer URLs) in the v3 token of cfg, in the place of
// registrations whose members the cluster no longer has.  Logs what it did;
// a failure is logged, not fatal (the member is already in the cluster).
void record_replacement_in_v3_token(const config::Config& cfg, uint64_t member_id,
                                    const std::vector<uint64_t>& cluster_member_ids);

// The peer URLs of the first `size` registrations of cfg's v3 token, read
// without registering (a proxy's cluster, a replacement's re-check).  Empty
// with *error set when the token cannot be read or lists nobody.
std::vector<std::string> v3_token_peer_urls(const config::Config& cfg, uint64_t* size,
                                            std::string* error, uint32_t max_retries);

}  // namespace muster::bootstrap
