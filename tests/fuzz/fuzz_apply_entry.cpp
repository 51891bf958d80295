// Fuzz target: a committed log entry's payload as the state machine applies
// it -- the bytes parsed as the InternalRequest a client's proposal becomes
// (node/storage/kv.proto), checked as the API checks before proposing
// (validate) and applied to a real KvStore (node/storage/kv_store.cpp) at
// the next index whatever validate() said: apply must refuse what it cannot
// do, never crash, and leave the store consistent.  Puts, ranges, deletes,
// txns with every compare, compactions, leases, members and v2 requests all
// arrive here.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "node/storage/member_storage.h"

namespace {

using namespace muster;

struct Store {
  std::string dir;
  std::unique_ptr<storage::MemberStorage> member;
  uint64_t index = 0;
  uint64_t applies = 0;

  Store() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/muster-fuzz-apply-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    dir = tmpl;
    storage::MemberStorage::Options o;
    o.kv.clock_ms = [] { return int64_t{1'000'000}; };  // leases: the store's clock stands still
    if (!storage::MemberStorage::open(dir, o, &member)) std::abort();
  }
};

Store& store() {
  static Store* s = new Store();
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  muster::pb::InternalRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  Store& s = store();
  (void)storage::validate(req);
  auto result = s.member->kv().apply(req, ++s.index, 1);
  (void)result;
  // The in-memory index must still agree with what is on disk (aborts if not).
  if (++s.applies % 512 == 0) s.member->kv().check_consistency();
  return 0;
}
