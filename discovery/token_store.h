// discovery/token_store.h: where muster-discovery keeps tokens and members.
//
// Two implementations: LevelDbTokenStore (embedded, the default; every
// acknowledged write is synced before its callback runs) and EtcdTokenStore
// (tokens kept in an etcd v3 cluster through its JSON gateway, so several
// stateless muster-discovery replicas can serve one token space).
//
// Contract shared by both:
// - Every state change gets the next value of one store-wide index (the
//   X-Etcd-Index the API reports); indexes never go backwards, also across
//   restarts.
// - A callback runs exactly once, on an arbitrary thread, after the change
//   it reports is durable.  Readers never see a change before it is durable.
// - The rules about sizes, names and caps live in discovery/rules.h and are
//   checked by the API before it calls the store; the store enforces only
//   what needs its atomicity: "exists", the registration cap, "not found".
// - Watches deliver only member creations (never deletes), so etcd's
//   discovery client, which counts every event it sees as a member, counts
//   correctly.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace muster::discovery {

struct Member {
  std::string id;     // the member's ID in hex (last path element of its key)
  std::string value;  // "name=peerURL[,name=peerURL...]"
  uint64_t created_index = 0;
  uint64_t modified_index = 0;
  int64_t registered_unix_ms = 0;
};

struct Token {
  std::string name;
  uint32_t size = 0;
  uint64_t created_index = 0;  // index of the creation of _config/size
  int64_t created_unix_ms = 0;
  int64_t expires_unix_ms = 0;
  std::vector<Member> members;  // every registration, ascending created_index
};

enum class StoreStatus {
  kOk,
  kNotFound,      // no such token (or expired), or no such member
  kExists,        // token name or member ID already present
  kQuotaReached,  // the token already holds its maximum of registrations
  kUnavailable,   // the backing store failed; message says why
};

struct StoreResult {
  StoreStatus status = StoreStatus::kOk;
  std::string message;  // for kUnavailable
  uint64_t index = 0;   // store index after the operation (or at the read)
  Token token;          // kOk reads: the token; kOk create: the new token
  Member member;        // kOk add/remove: the member; kExists: the existing one
};

using StoreCallback = std::function<void(StoreResult)>;

// A watch in progress; dropping or cancelling it stops delivery.
class Watch {
 public:
  virtual ~Watch() = default;
  virtual void cancel() = 0;
};

class TokenStore {
 public:
  virtual ~TokenStore() = default;

  // Creates a token.  kExists if the name is taken (even if expired but not
  // yet collected).
  virtual void create_token(const std::string& name, uint32_t size, int64_t now_unix_ms,
                            int64_t expires_unix_ms, StoreCallback cb) = 0;
  // Reads a token with all its members.  kNotFound if absent or expired.
  virtual void get_token(const std::string& name, int64_t now_unix_ms, StoreCallback cb) = 0;
  // Registers a member.  kExists (with the existing member) if the ID is
  // taken; kQuotaReached if the token holds max_registrations members.
  virtual void add_member(const std::string& token, const std::string& id, const std::string& value,
                          uint32_t max_registrations, int64_t now_unix_ms, StoreCallback cb) = 0;
  // Removes a member, freeing its slot.  The result's index is the index of
  // the deletion; result.member is the removed member.
  virtual void remove_member(const std::string& token, const std::string& id, StoreCallback cb) = 0;
  // Calls `cb` once with the first member of `token` (only the member `id`
  // when not empty) whose created_index >= from_index, existing or future,
  // in created_index order.  kNotFound if the token disappears (expiry).
  virtual std::unique_ptr<Watch> watch(const std::string& token, const std::string& id,
                                       uint64_t from_index, StoreCallback cb) = 0;
  // Deletes tokens whose expiry is before now; returns how many.
  virtual std::size_t collect_expired(int64_t now_unix_ms) = 0;
  // The current store-wide index.
  virtual uint64_t current_index() = 0;
  // Quick liveness probe of the backing store: empty when healthy, else why.
  virtual std::string health() = 0;
};

}  // namespace muster::discovery
