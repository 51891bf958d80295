// node/bootstrap/discovery.h: a member's bootstrap through a discovery URL
// (--discovery), etcd's v2 discovery protocol as a client.
//
// The discovery URL names a directory in an etcd v2 keys API: muster-discovery,
// discovery.etcd.io, a real etcd started with --enable-v2
// (http://etcd/v2/keys/discovery/<token>), or a muster cluster's v2 keys.
// Requests, in order (research/discovery.md 1.5):
//   1. GET <dir>/_config/size, GET <dir>: already full? then stop, write nothing;
//   2. PUT <dir>/<member-id>?prevExist=false, form value "name=peerURL,...";
//      wait until that key is visible;
//   3. the two GETs again (another member may have filled the cluster first);
//   4. watch <dir> (recursive, from the listing's X-Etcd-Index + 1) until
//      `size` distinct members are registered;
//   5. the first `size` registrations by createdIndex form the initial cluster.
// Member IDs and the cluster token are etcd's: the token is the exact
// --discovery string.
//
// Where Muster differs from etcd 3.4 (docs/bootstrap.md):
//   * only new registrations count while waiting: a watch event for a key
//     already known, a delete or an overwrite is not a new member (etcd
//     counts every event);
//   * retries (5xx, connection errors, request timeouts) are bounded:
//     exponential backoff with jitter, then a "too many retries" error
//     instead of waiting forever; the register PUT is retried too, and a
//     "key exists" answer whose value is exactly ours, while the cluster is
//     still incomplete, is taken as our own earlier registration (a member
//     killed halfway and restarted resumes instead of poisoning the token);
//   * a missing size key is reported as such (etcd 3.4 prints a raw
//     "100: Key not found"); size 0 is a bad size (etcd wraps around).
//
// Blocking; call from one thread (node/main before the server starts, or
// musterctl).  Logs progress through base/log.h.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace muster::bootstrap {

// Why discovery failed; the message says it in words.
enum class DiscoveryError {
  kNone,
  kBadUrl,          // --discovery or --discovery-proxy is not a usable URL
  kSizeNotFound,    // no <dir>/_config/size (token unknown, expired or never set up)
  kBadSize,         // the size value is not a positive integer
  kBadEndpoint,     // the server answered something that is not the v2 keys API
  kDuplicateId,     // our member ID is registered with another value, or the
                    // cluster formed with it already
  kDuplicateName,   // the first `size` registrations do not carry `size` distinct names
  kInvalidUrl,      // a registration is not "name=peerURL,..."
  kTooManyRetries,  // the service kept failing (5xx / unreachable)
  kProtocol,        // any other answer we cannot act on
};

struct DiscoveryOptions {
  std::string url;                     // --discovery
  std::string proxy;                   // --discovery-proxy ("" = direct; "host:port" gets http://)
  std::string name;                    // --name
  std::vector<std::string> peer_urls;  // --initial-advertise-peer-urls
  // A file this member writes once it has registered (in its data dir,
  // "" = none).  Finding it with our own registration among the cluster's
  // first `size` proves this member registered but never started Raft (a
  // member that did has an identity and skips discovery; one whose data
  // dir was wiped lost the file too), so it may take its place in a
  // cluster the others formed meanwhile.
  std::string registration_marker;

  std::chrono::milliseconds request_timeout{5000};  // one GET or PUT
  // A watch that has delivered nothing for this long is re-issued from the
  // same index (a silent dead connection must not stall the bootstrap).
  std::chrono::milliseconds watch_timeout{60000};
  // Retry policy for 5xx, connection errors and timeouts: the n-th
  // consecutive failure waits a random time in [d/2, d] with
  // d = min(initial * 2^(n-1), max); after max_retries consecutive failures
  // discovery gives up.  Defaults: 0.5 s doubling to 30 s, 12 tries (about
  // 3 minutes); etcd waits 2, 4, ... 256 s and never gives up.
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{30000};
  int max_retries = 12;
  // Injected for tests; default std::this_thread::sleep_for.
  std::function<void(std::chrono::milliseconds)> sleep;
};

struct DiscoveryResult {
  enum class Kind { kCluster, kFull, kError };
  Kind kind = Kind::kError;
  // kCluster: the initial cluster, as --initial-cluster would say it.
  std::string initial_cluster;
  // kFull: peer URLs of the first `size` registered members (what a proxy
  // forwards to); kCluster: every URL of the initial cluster.
  std::vector<std::string> peer_urls;
  uint64_t size = 0;  // the token's size, once known
  DiscoveryError error = DiscoveryError::kNone;
  std::string message;  // kError: one sentence for the operator; kFull: the full-cluster text

  bool ok() const { return kind == Kind::kCluster; }
};

// Runs steps 1-5 above for the member described by `options`.
DiscoveryResult join_cluster(const DiscoveryOptions& options);

// ---- the pieces, shared with musterctl ------------------------------------

// The discovery URL split as etcd splits it: the endpoint (scheme://host[:port])
// and the directory path (the URL's whole path, duplicate slashes collapsed).
struct DiscoveryUrl {
  std::string endpoint;   // "http://127.0.0.1:8087"
  std::string directory;  // "/3e86b59982e49066c5d813af1c2e2579" (no trailing slash)
  bool tls = false;
};
std::optional<DiscoveryUrl> parse_discovery_url(const std::string& url, std::string* error);

// One registration as the directory listing shows it.
struct Registration {
  std::string id;     // the key's last path element: the member ID in hex
  std::string value;  // "name=peerURL,..."
  uint64_t created_index = 0;
  uint64_t modified_index = 0;
};

// The state of a token right now.
struct TokenState {
  uint64_t size = 0;
  std::vector<Registration> members;  // ascending createdIndex, `_config` excluded
  uint64_t index = 0;                 // X-Etcd-Index of the listing
};

// etcd's full-cluster rule (research 1.7; v3 discovery applies it by create
// revision): nullopt while fewer than `size` are registered or `self_id` is
// among the first `size`; otherwise `base` turned into the kFull answer that
// names the cluster's members (`where`: the token, for the message).
std::optional<DiscoveryResult> full_cluster_answer(const TokenState& st, const std::string& self_id,
                                                   const std::string& self_name,
                                                   const std::string& where, DiscoveryResult base);

// A blocking v2-keys client for one discovery URL, with the retry policy of
// DiscoveryOptions.  Errors come back as (DiscoveryError, message).
class DiscoveryClient {
 public:
  // REQUIRES: parse_discovery_url(options.url) succeeded (join_cluster and
  // musterctl check first).
  explicit DiscoveryClient(const DiscoveryOptions& options);
  ~DiscoveryClient();
  DiscoveryClient(const DiscoveryClient&) = delete;
  DiscoveryClient& operator=(const DiscoveryClient&) = delete;

  struct Failure {
    DiscoveryError error = DiscoveryError::kNone;
    std::string message;
  };

  // GET size + GET directory, retried on transient errors.
  std::optional<Failure> state(TokenState* out);
  // DELETE <dir>/<id>.  kProtocol with etcd's message when the key is absent.
  std::optional<Failure> remove(const std::string& id);
  // PUT <dir>/<id> with form value=`value` (creates or overwrites): a
  // replacement member records itself (node/bootstrap/replacement.h).
  std::optional<Failure> put(const std::string& id, const std::string& value);

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Parses a registration value "name=url[,name=url]" and appends each
// name=url pair; false when it is not of that shape.
bool parse_registration(const std::string& value,
                        std::vector<std::pair<std::string, std::string>>* pairs);

// The registration marker (DiscoveryOptions::registration_marker), shared
// by v2 and v3 discovery: true when the file at `path` holds `value`; the
// writer creates its directory (owner-only) and logs a failure.  An empty
// path is no marker.
bool registration_marker_holds(const std::string& path, const std::string& value);
void write_registration_marker(const std::string& path, const std::string& value);

}  // namespace muster::bootstrap
