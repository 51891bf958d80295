// storage_bench: throughput and memory of the member's storage alone (no
// Raft, no network): puts/s through KvStore::apply, ranges/s through the
// serializable read path, Raft log appends/s with one fsync per batch, RSS
// with N keys loaded, and the time to reopen (rebuild the index).
//
//   storage_bench [--keys N] [--dir PATH] [--value-bytes B] [--cache-mib M]
//
// Figures and the command used are recorded in docs/benchmarks-storage.md.
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "node/storage/member_storage.h"

namespace {

using muster::storage::MemberStorage;
namespace pb = muster::pb;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

long rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

std::string key_of(long i) {
  char k[32];
  std::snprintf(k, sizeof k, "bench/%08ld", i);
  return k;
}

std::unique_ptr<MemberStorage> open_or_die(const std::string& dir, size_t cache_mib) {
  std::unique_ptr<MemberStorage> m;
  MemberStorage::Options o;
  if (cache_mib > 0) o.db.block_cache_bytes = cache_mib << 20;
  auto s = MemberStorage::open(dir, o, &m);
  if (!s) {
    std::fprintf(stderr, "open %s: %s\n", dir.c_str(), s.to_string().c_str());
    std::exit(1);
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  long keys = 1'000'000;
  size_t value_bytes = 100;
  size_t cache_mib = 0;  // 0 = the default
  std::string dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--keys")) keys = std::atol(argv[i + 1]);
    if (!std::strcmp(argv[i], "--dir")) dir = argv[i + 1];
    if (!std::strcmp(argv[i], "--value-bytes"))
      value_bytes = std::strtoul(argv[i + 1], nullptr, 10);
  }
  const bool own_dir = dir.empty();
  if (own_dir) {
    std::string tmpl = "/tmp/muster-storage-bench-XXXXXX";
    if (!::mkdtemp(tmpl.data())) return 1;
    dir = tmpl;
  }
  const std::string value(value_bytes, 'v');
  std::printf("storage_bench: %ld keys, %zu-byte values, dir %s\n", keys, value_bytes, dir.c_str());
  const long rss0 = rss_kib();
  uint64_t index = 0;
  {
    auto m = open_or_die(dir, cache_mib);

    // 1. Single puts, one apply (one LevelDB write) each: the apply loop's
    //    cost per committed entry.
    const long single = std::min<long>(keys, 100'000);
    auto t0 = Clock::now();
    for (long i = 0; i < single; i++) {
      pb::InternalRequest r;
      r.mutable_put()->set_key(key_of(i));
      r.mutable_put()->set_value(value);
      m->kv().apply(r, ++index, 1);
    }
    double s = seconds_since(t0);
    std::printf("put (1 per apply):      %10.0f puts/s  (%ld puts, %.2f s)\n", single / s, single,
                s);

    // 2. The rest in txns of 100 puts (one apply each).
    t0 = Clock::now();
    long done = 0;
    for (long base = single; base < keys; base += 100) {
      pb::InternalRequest r;
      for (long i = base; i < std::min(keys, base + 100); i++) {
        auto* p = r.mutable_txn()->add_success()->mutable_request_put();
        p->set_key(key_of(i));
        p->set_value(value);
        done++;
      }
      m->kv().apply(r, ++index, 1);
    }
    s = seconds_since(t0);
    if (done > 0)
      std::printf("put (100 per txn):      %10.0f puts/s  (%ld puts, %.2f s)\n", done / s, done, s);
    std::printf("RSS with %ld keys:     %10ld MiB (start %ld MiB)\n", keys, rss_kib() / 1024,
                rss0 / 1024);

    // 3. Reads through the serializable path.
    std::mt19937 rng(1);
    std::uniform_int_distribution<long> pick(0, keys - 1);
    const long gets = 200'000;
    t0 = Clock::now();
    long found = 0;
    for (long i = 0; i < gets; i++) {
      pb::RangeRequest rr;
      rr.set_key(key_of(pick(rng)));
      pb::RangeResponse resp;
      m->kv().range(rr, &resp);
      found += resp.kvs_size();
    }
    s = seconds_since(t0);
    std::printf("range (single key):     %10.0f ranges/s (%ld found)\n", gets / s, found);
    const long scans = 50'000;
    t0 = Clock::now();
    for (long i = 0; i < scans; i++) {
      pb::RangeRequest rr;
      std::string from = key_of(pick(rng));
      rr.set_key(from);
      rr.set_range_end(from.substr(0, from.size() - 2) + "a");  // ~100 keys, limit 10
      rr.set_limit(10);
      pb::RangeResponse resp;
      m->kv().range(rr, &resp);
    }
    s = seconds_since(t0);
    std::printf("range (10 of a prefix): %10.0f ranges/s\n", scans / s);

    // 4. Raft log: batches of 100 entries, one fsync per batch.
    const int batches = 200;
    t0 = Clock::now();
    uint64_t li = m->log().last_index();
    for (int b = 0; b < batches; b++) {
      std::vector<muster::raftpb::Entry> es(100);
      for (auto& e : es) {
        e.set_index(++li);
        e.set_term(1);
        e.set_data(value);
      }
      muster::raftpb::HardState hs;
      hs.set_term(1);
      hs.set_commit(li);
      m->log().save(&hs, es, true);
    }
    s = seconds_since(t0);
    std::printf(
        "raft log append:        %10.0f entries/s (%d synced batches of 100, %.1f ms/fsync)\n",
        batches * 100 / s, batches, s * 1000 / batches);
  }
  // 5. Reopen: the key index is rebuilt from the revision records.
  auto t0 = Clock::now();
  {
    auto m = open_or_die(dir, cache_mib);
    std::printf("reopen (index rebuild): %10.2f s for %zu keys\n", seconds_since(t0),
                m->kv().key_count());
  }
  if (own_dir) std::filesystem::remove_all(dir);
  return 0;
}
