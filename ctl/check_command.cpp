// `musterctl check perf` and `musterctl check datascale`: etcdctl's disk and
// memory checks, with etcdctl's workloads, keys, flags, output and exit codes
// (etcdctl/ctlv3/command/check.go), so an operator can validate a machine
// before trusting it.  The requests go through the v3 JSON gateway, one
// connection per simulated client.
//
//   check perf [--load s|m|l|xl] [--prefix /etcdctl-check-perf/]
//              [--auto-compact] [--auto-defrag] [--duration 60s]
//     puts 256-byte random keys with 1 KiB values under the prefix at the
//     load's rate with its number of clients for 60 s, then deletes them;
//     PASS when throughput is above 90% of the rate, the slowest request
//     under 500 ms and the standard deviation under 100 ms.  --duration is
//     Muster's (etcdctl always runs 60 s).
//   check datascale [--load s|m|l|xl] [--prefix /etcdctl-check-datascale/]
//                   [--auto-compact] [--auto-defrag]
//     puts the load's number of 512-byte keys with 512-byte values and
//     reports how much the first endpoint's process_resident_memory_bytes
//     grew.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <ostream>
#include <random>
#include <sstream>
#include <thread>

#include "ctl/command.h"
#include "ctl/command_support.h"
#include "ctl/progress.h"
#include "etcdwire/v3_json.h"

namespace muster::ctl {
namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

// etcdctl's exit codes beyond command.h's.
constexpr int kExitInvalidInput = 3;

struct PerfLoad {
  int limit, clients, duration_s;
};
struct ScaleLoad {
  int limit, kv_size, clients;
};

std::optional<std::string> load_name(const std::string& given) {
  static const std::map<std::string, std::string> kAlias = {
      {"s", "s"}, {"small", "s"}, {"m", "m"},   {"medium", "m"},
      {"l", "l"}, {"large", "l"}, {"xl", "xl"}, {"xLarge", "xl"}};
  auto it = kAlias.find(given);
  if (it == kAlias.end()) return std::nullopt;
  return it->second;
}

// What every worker reports, as etcd's report package sums it.
struct Stats {
  std::mutex mu;
  std::vector<double> latencies;  // seconds, successful requests
  std::map<std::string, int> errors;
  void add(double seconds, const std::string& error) {
    std::lock_guard lock(mu);
    if (error.empty())
      latencies.push_back(seconds);
    else
      ++errors[error];
  }
};

// A bounded queue of keys to put, closed by the producer.
class Requests {
 public:
  explicit Requests(std::size_t cap) : cap_(cap) {}
  bool push(std::string key) {
    std::unique_lock lock(mu_);
    space_.wait(lock, [&] { return q_.size() < cap_; });
    q_.push_back(std::move(key));
    ready_.notify_one();
    return true;
  }
  std::optional<std::string> pop() {
    std::unique_lock lock(mu_);
    ready_.wait(lock, [&] { return !q_.empty() || closed_; });
    if (q_.empty()) return std::nullopt;
    std::string k = std::move(q_.front());
    q_.pop_front();
    space_.notify_one();
    return k;
  }
  void close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    ready_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<std::string> q_;
  std::size_t cap_;
  bool closed_ = false;
};

// etcdctl's keys: the prefix, then a buffer of `size` zero bytes whose
// start holds a random int63 as a Go varint.
std::string random_key(const std::string& prefix, std::size_t size, std::mt19937_64& rng) {
  std::string k(size, '\0');
  int64_t v = static_cast<int64_t>(rng() >> 1);
  uint64_t zz = static_cast<uint64_t>(v) << 1;  // zig-zag, as binary.PutVarint
  if (v < 0) zz = ~zz;
  std::size_t i = 0;
  while (zz >= 0x80 && i < size) {
    k[i++] = static_cast<char>(zz | 0x80);
    zz >>= 7;
  }
  if (i < size) k[i] = static_cast<char>(zz);
  return prefix + k;
}

// Runs `clients` workers putting keys from `requests` with `value`.
std::vector<std::thread> start_workers(const GlobalOptions& options, int clients,
                                       Requests& requests, const std::string& value, Stats& stats,
                                       std::atomic<uint64_t>& done) {
  std::vector<std::thread> workers;
  const std::string value64 = etcdwire::base64_encode(value);
  for (int i = 0; i < clients; ++i) {
    workers.emplace_back([&requests, &stats, &done, options, value64] {
      Client client(options);
      while (auto key = requests.pop()) {
        const auto start = Clock::now();
        Reply r = client.call("/v3/kv/put",
                              json{{"key", etcdwire::base64_encode(*key)}, {"value", value64}});
        stats.add(std::chrono::duration<double>(Clock::now() - start).count(), r.error);
        ++done;
      }
    });
  }
  return workers;
}

std::optional<std::string> prefix_is_empty(Client& client, const std::string& prefix) {
  Reply r = client.call("/v3/kv/range",
                        json{{"key", etcdwire::base64_encode(prefix)},
                             {"range_end", etcdwire::base64_encode(etcdwire::prefix_end(prefix))},
                             {"limit", "1"}});
  if (!r.ok()) return r.error;
  if (r.body.contains("kvs") && !r.body["kvs"].empty())
    return "prefix \"" + prefix + "\" has keys. Delete with etcdctl del --prefix " + prefix +
           " first";
  return std::nullopt;
}

// Deletes the prefix, then compacts and defragments as asked.
std::optional<std::string> clean_up(Client& client, const GlobalOptions& options,
                                    const std::string& prefix, bool compact, bool defrag) {
  Reply d = client.call("/v3/kv/deleterange",
                        json{{"key", etcdwire::base64_encode(prefix)},
                             {"range_end", etcdwire::base64_encode(etcdwire::prefix_end(prefix))}});
  if (!d.ok()) return d.error;
  if (compact) {
    const std::string rev = d.body["header"].value("revision", std::string("0"));
    Reply c = client.call("/v3/kv/compaction", json{{"revision", rev}, {"physical", true}});
    if (!c.ok()) return c.error;
  }
  if (defrag) {
    for (const auto& ep : options.endpoints) {
      const json empty = json::object();
      Reply f = client.call_at(ep, "POST", "/v3/maintenance/defragment", &empty);
      if (!f.ok()) return "defragment " + ep + ": " + f.error;
    }
  }
  return std::nullopt;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

double stddev(const std::vector<double>& v) {
  if (v.empty()) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size()));
}

int report_errors(const Stats& stats, std::ostream& out) {
  out << "FAIL: too many errors\n";
  for (const auto& [e, n] : stats.errors) out << "FAIL: ERROR(" << e << ") -> " << n << "\n";
  return kExitError;
}

void declare_check_flags(Flags& flags, const char* prefix) {
  flags.add_string("load", "s");
  flags.add_string("prefix", prefix);
  flags.add_bool("auto-compact");
  flags.add_bool("auto-defrag");
}

int run_perf(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  declare_check_flags(flags, "/etcdctl-check-perf/");
  flags.add_string("duration", "60s");
  GlobalOptions options;
  if (auto code = parse_command_line("check perf", args, flags, options, err)) return *code;
  static const std::map<std::string, PerfLoad> kLoads = {{"s", {150, 50, 60}},
                                                         {"m", {1000, 200, 60}},
                                                         {"l", {8000, 500, 60}},
                                                         {"xl", {15000, 1000, 60}}};
  auto model = load_name(flags.get("load"));
  if (!model) {
    err << "Error: unknown load option " << flags.get("load") << "\n";
    return kExitBadFeature;
  }
  PerfLoad load = kLoads.at(*model);
  auto duration = parse_duration(flags.get("duration"));
  if (!duration || duration->count() < 1000)
    return bad_args(
        "check perf", err,
        "--duration must be a duration of at least 1s, got \"" + flags.get("duration") + "\"");
  const std::string prefix = flags.get("prefix");
  Client client(options);
  if (auto e = prefix_is_empty(client, prefix)) {
    err << "Error: " << *e << "\n";
    return e->rfind("prefix", 0) == 0 ? kExitInvalidInput : kExitError;
  }

  Stats stats;
  std::atomic<uint64_t> done{0};
  Requests requests(static_cast<std::size_t>(load.clients));
  const std::string value(1024, '\0');
  auto workers = start_workers(options, load.clients, requests, value, stats, done);
  Progress progress("check perf");
  const auto start = Clock::now();
  const auto end = start + *duration;
  const auto total_s = std::chrono::duration<double>(*duration).count();
  std::mt19937_64 rng(std::random_device{}());
  // etcd's rate limiter: one request every 1/limit seconds.
  const auto every = std::chrono::duration<double>(1.0 / load.limit);
  auto next = start;
  while (Clock::now() < end) {
    std::this_thread::sleep_until(next);
    next += std::chrono::duration_cast<Clock::duration>(every);
    if (Clock::now() >= end) break;
    requests.push(random_key(prefix, 256, rng));
    const double t = std::chrono::duration<double>(Clock::now() - start).count();
    char line[128];
    std::snprintf(line, sizeof line, "%3.0f / %.0f s %s %llu writes", t, total_s,
                  Progress::bar(t / total_s).c_str(), static_cast<unsigned long long>(done.load()));
    progress.update(line);
  }
  requests.close();
  for (auto& w : workers) w.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  progress.finish("done, " + std::to_string(done.load()) + " writes");

  if (auto e = clean_up(client, options, prefix, flags.get_bool("auto-compact"),
                        flags.get_bool("auto-defrag"))) {
    err << "Error: " << *e << "\n";
    return kExitError;
  }
  bool ok = true;
  if (!stats.errors.empty()) {
    report_errors(stats, out);
    ok = false;
  }
  const double rps = static_cast<double>(stats.latencies.size()) / elapsed;
  char line[160];
  if (rps / load.limit <= 0.9) {
    std::snprintf(line, sizeof line, "FAIL: Throughput too low: %d writes/s\n",
                  static_cast<int>(rps) + 1);
    ok = false;
  } else {
    std::snprintf(line, sizeof line, "PASS: Throughput is %d writes/s\n",
                  static_cast<int>(rps) + 1);
  }
  out << line;
  const double slowest = stats.latencies.empty()
                             ? 0
                             : *std::max_element(stats.latencies.begin(), stats.latencies.end());
  if (slowest > 0.5) {
    std::snprintf(line, sizeof line, "Slowest request took too long: %fs\n", slowest);
    ok = false;
  } else {
    std::snprintf(line, sizeof line, "PASS: Slowest request took %fs\n", slowest);
  }
  out << line;
  const double sd = stddev(stats.latencies);
  if (sd > 0.1) {
    std::snprintf(line, sizeof line, "Stddev too high: %fs\n", sd);
    ok = false;
  } else {
    std::snprintf(line, sizeof line, "PASS: Stddev is %fs\n", sd);
  }
  out << line;
  out << (ok ? "PASS\n" : "FAIL\n");
  return ok ? kExitSuccess : kExitError;
}

// process_resident_memory_bytes from the endpoint's /metrics, 0 if unknown.
double resident_bytes(const GlobalOptions& options) {
  net::ClientOptions co;
  co.timeout = co.connect_timeout = options.command_timeout;
  co.tls.trusted_ca_file = options.cacert;
  co.tls.cert_file = options.cert;
  co.tls.key_file = options.key;
  co.tls.insecure_skip_verify = options.insecure_skip_tls_verify;
  net::HttpClient http(co);
  auto r = http.get(endpoint_url(options.endpoints.front(), options) + "/metrics");
  if (!r.ok() || r.response->status != 200) return 0;
  std::istringstream in(r.response->body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("process_resident_memory_bytes ", 0) == 0)
      return std::strtod(line.c_str() + std::strlen("process_resident_memory_bytes "), nullptr);
  }
  return 0;
}

int run_datascale(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  declare_check_flags(flags, "/etcdctl-check-datascale/");
  GlobalOptions options;
  if (auto code = parse_command_line("check datascale", args, flags, options, err)) return *code;
  static const std::map<std::string, ScaleLoad> kLoads = {{"s", {10000, 1024, 50}},
                                                          {"m", {100000, 1024, 200}},
                                                          {"l", {1000000, 1024, 500}},
                                                          {"xl", {3000000, 1024, 1000}}};
  auto model = load_name(flags.get("load"));
  if (!model) {
    err << "Error: unknown load option " << flags.get("load") << "\n";
    return kExitBadFeature;
  }
  const ScaleLoad load = kLoads.at(*model);
  const std::string prefix = flags.get("prefix");
  Client client(options);
  if (auto e = prefix_is_empty(client, prefix)) {
    err << "Error: " << *e << "\n";
    return e->rfind("prefix", 0) == 0 ? kExitInvalidInput : kExitError;
  }
  const double before = resident_bytes(options);
  if (before == 0) {
    out << "FAIL: Could not read process_resident_memory_bytes before the put operations.\n";
    return kExitError;
  }
  out << "Start data scale check for work load [" << load.limit << " key-value pairs, "
      << load.kv_size << " bytes per key-value, " << load.clients << " concurrent clients].\n"
      << std::flush;
  Stats stats;
  std::atomic<uint64_t> done{0};
  Requests requests(static_cast<std::size_t>(load.clients));
  const std::string value(512, '\0');
  auto workers = start_workers(options, load.clients, requests, value, stats, done);
  Progress progress("check datascale");
  std::mt19937_64 rng(std::random_device{}());
  for (int i = 0; i < load.limit; ++i) {
    requests.push(random_key(prefix, 512, rng));
    const uint64_t d = done.load();
    char line[128];
    std::snprintf(line, sizeof line, "%llu / %d %s", static_cast<unsigned long long>(d), load.limit,
                  Progress::bar(static_cast<double>(d) / load.limit).c_str());
    progress.update(line);
  }
  requests.close();
  for (auto& w : workers) w.join();
  progress.finish(std::to_string(done.load()) + " / " + std::to_string(load.limit));
  const double after = resident_bytes(options);
  if (after == 0) {
    out << "FAIL: Could not read process_resident_memory_bytes after the put operations.\n";
    return kExitError;
  }
  if (auto e = clean_up(client, options, prefix, flags.get_bool("auto-compact"),
                        flags.get_bool("auto-defrag"))) {
    err << "Error: " << *e << "\n";
    return kExitError;
  }
  if (!stats.errors.empty()) return report_errors(stats, out);
  char line[128];
  std::snprintf(line, sizeof line, "PASS: Approximate system memory used : %.2f MB.\n",
                (after - before) / (1024 * 1024));
  out << line;
  return kExitSuccess;
}

}  // namespace

int run_check(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty() || (args[0] != "perf" && args[0] != "datascale")) {
    err << "Error: check needs a subcommand: perf or datascale\n"
           "Usage: musterctl check perf|datascale [options]\n";
    return kExitBadArgs;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  return args[0] == "perf" ? run_perf(rest, out, err) : run_datascale(rest, out, err);
}

}  // namespace muster::ctl
