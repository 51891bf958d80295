// node-bench: load for a cluster that serves etcd's v3 JSON gateway (a muster
// cluster or a real etcd 3.4 one), one kind of operation per run:
//
//   put      POST /v3/kv/put, a value of --value-size bytes to a random key out
//            of --keyspace keys
//   range    POST /v3/kv/range of one key, linearizable (etcd's default)
//   range-s  the same with "serializable": true (a local read on any member)
//
// C keep-alive HTTP/1.1 connections, spread round-robin over the endpoints,
// each with one request in flight (closed loop), all driven by one
// single-threaded asio event loop so that the generator costs as little CPU as
// possible on a machine it shares with the cluster.  The run lasts --warmup
// seconds (not measured) plus --duration seconds (measured: requests completed
// inside that window, latency from write to full response).
//
// With --pids the generator also samples the cluster's processes from /proc:
// the peak of the summed VmRSS during the window (every 100 ms) and the summed
// CPU seconds (utime + stime) spent inside the window.
//
// Output: one JSON object on stdout.
#include <time.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bench/common/proc_stats.h"
#include "etcdwire/v3_json.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

struct Options {
  std::vector<std::string> endpoints;  // http://host:port
  std::string op = "put";              // put | range | range-s
  int conns = 1;
  double duration_s = 5;
  double warmup_s = 1;
  int keyspace = 100'000;
  int value_size = 256;
  std::string key = "node-bench-key";  // the key read by range / range-s
  std::vector<int> pids;
  std::string label;  // copied into the output
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "node-bench: " << why
            << "\nusage: node-bench --endpoints http://H:P[,http://H:P...] [--op put|range|range-s]"
               " [--conns C] [--duration S] [--warmup S] [--keyspace N] [--value-size B]"
               " [--key K] [--pids P1,P2,...] [--label L]\n";
  std::exit(2);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--endpoints")
      o.endpoints = split(next(), ',');
    else if (a == "--op")
      o.op = next();
    else if (a == "--conns")
      o.conns = std::stoi(next());
    else if (a == "--duration")
      o.duration_s = std::stod(next());
    else if (a == "--warmup")
      o.warmup_s = std::stod(next());
    else if (a == "--keyspace")
      o.keyspace = std::stoi(next());
    else if (a == "--value-size")
      o.value_size = std::stoi(next());
    else if (a == "--key")
      o.key = next();
    else if (a == "--pids")
      for (const auto& p : split(next(), ',')) o.pids.push_back(std::stoi(p));
    else if (a == "--label")
      o.label = next();
    else
      usage("unknown flag " + a);
  }
  if (o.endpoints.empty()) usage("--endpoints is required");
  if (o.op != "put" && o.op != "range" && o.op != "range-s") usage("--op is put, range or range-s");
  if (o.conns < 1 || o.duration_s <= 0 || o.warmup_s < 0 || o.keyspace < 1 || o.value_size < 0)
    usage("--conns, --duration and --keyspace must be positive");
  return o;
}

struct Endpoint {
  std::string host, port;
  tcp::endpoint resolved;
};

Endpoint parse_endpoint(asio::io_context& io, const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) usage("only http:// endpoints are supported: " + url);
  std::string rest = url.substr(scheme.size());
  if (auto slash = rest.find('/'); slash != std::string::npos) rest.resize(slash);
  auto colon = rest.rfind(':');
  if (colon == std::string::npos) usage("endpoint needs a port: " + url);
  Endpoint e{rest.substr(0, colon), rest.substr(colon + 1), {}};
  tcp::resolver resolver(io);
  beast::error_code ec;
  auto results = resolver.resolve(e.host, e.port, ec);
  if (ec || results.empty()) usage("cannot resolve " + url + ": " + ec.message());
  e.resolved = results.begin()->endpoint();
  return e;
}

// Everything the connections share.  Single-threaded: no locking.
struct Run {
  const Options& o;
  asio::io_context& io;
  std::vector<Endpoint> endpoints;
  Clock::time_point measure_start, measure_end;
  std::vector<uint32_t> latency_us;  // requests completed inside the window
  uint64_t errors = 0;               // inside the window
  uint64_t errors_total = 0;         // including warm-up
  std::string first_error;
  std::mt19937_64 rng{0x6e6f6465};
  std::string value_b64;  // the (fixed) value of every put
  std::string range_body;

  void error(const std::string& what, Clock::time_point now) {
    ++errors_total;
    if (now >= measure_start && now < measure_end) ++errors;
    if (first_error.empty()) first_error = what;
  }

  std::string body() {
    if (o.op != "put") return range_body;
    char key[32];
    std::snprintf(key, sizeof key, "nb/%08d", static_cast<int>(rng() % o.keyspace));
    return R"({"key":")" + muster::etcdwire::base64_encode(key) + R"(","value":")" + value_b64 +
           R"("})";
  }
};

// One keep-alive connection with one request in flight at a time.  On any
// error the request counts as failed and the connection is re-established.
class Conn {
 public:
  Conn(Run& run, const Endpoint& ep) : run_(run), ep_(ep), socket_(run.io) {
    req_.method(http::verb::post);
    req_.target(run.o.op == "put" ? "/v3/kv/put" : "/v3/kv/range");
    req_.version(11);
    req_.set(http::field::host, ep.host + ":" + ep.port);
    req_.set(http::field::content_type, "application/json");
    req_.keep_alive(true);
  }

  void start() { connect(); }

 private:
  void connect() {
    if (Clock::now() >= run_.measure_end) return;
    beast::error_code ignored;
    socket_.close(ignored);
    socket_.async_connect(ep_.resolved, [this](beast::error_code ec) {
      if (ec) {
        run_.error("connect: " + ec.message(), Clock::now());
        // Back off a little so that a dead member does not spin the loop.
        retry_ = std::make_unique<asio::steady_timer>(run_.io, std::chrono::milliseconds(50));
        retry_->async_wait([this](beast::error_code) { connect(); });
        return;
      }
      socket_.set_option(tcp::no_delay(true), ec);
      send();
    });
  }

  void send() {
    if (Clock::now() >= run_.measure_end) {
      beast::error_code ignored;
      socket_.close(ignored);
      return;
    }
    req_.body() = run_.body();
    req_.prepare_payload();
    started_ = Clock::now();
    http::async_write(socket_, req_, [this](beast::error_code ec, size_t) {
      if (ec) return fail("write: " + ec.message());
      res_.emplace();
      res_->body_limit(64 * 1024 * 1024);
      http::async_read(socket_, buf_, *res_, [this](beast::error_code ec, size_t) {
        if (ec) return fail("read: " + ec.message());
        auto done = Clock::now();
        const auto& res = res_->get();
        // A success is a 200 whose body carries a response header, as both
        // etcd's gateway and muster's write it.
        if (res.result() != http::status::ok ||
            res.body().find("\"header\"") == std::string::npos) {
          run_.error("HTTP " + std::to_string(res.result_int()) + ": " + res.body().substr(0, 200),
                     done);
        } else if (started_ >= run_.measure_start && done <= run_.measure_end) {
          run_.latency_us.push_back(static_cast<uint32_t>(
              std::chrono::duration_cast<std::chrono::microseconds>(done - started_).count()));
        }
        if (!res.keep_alive()) return connect();
        send();
      });
    });
  }

  void fail(const std::string& what) {
    run_.error(what, Clock::now());
    buf_.clear();
    connect();
  }

  Run& run_;
  const Endpoint& ep_;
  tcp::socket socket_;
  beast::flat_buffer buf_;
  http::request<http::string_body> req_;
  std::optional<http::response_parser<http::string_body>> res_;
  std::unique_ptr<asio::steady_timer> retry_;
  Clock::time_point started_;
};

double self_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double percentile_ms(std::vector<uint32_t>& v, double p) {
  if (v.empty()) return 0;
  size_t idx = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(idx), v.end());
  return v[idx] / 1000.0;
}

// Makes sure the key read by range / range-s exists (a blocking put through
// the first endpoint) so that reads return a value, as a real read would.
bool seed_key(Run& run) {
  beast::tcp_stream stream(run.io);
  beast::error_code ec;
  stream.connect(run.endpoints[0].resolved, ec);
  if (ec) return false;
  http::request<http::string_body> req{http::verb::post, "/v3/kv/put", 11};
  req.set(http::field::host, run.endpoints[0].host + ":" + run.endpoints[0].port);
  req.set(http::field::content_type, "application/json");
  req.body() = R"({"key":")" + muster::etcdwire::base64_encode(run.o.key) + R"(","value":")" +
               run.value_b64 + R"("})";
  req.prepare_payload();
  http::write(stream, req, ec);
  if (ec) return false;
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(stream, buf, res, ec);
  return !ec && res.result() == http::status::ok;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  asio::io_context io(1);
  Run run{o, io, {}, {}, {}, {}, 0, 0, {}, {}, {}, {}};
  for (const auto& url : o.endpoints) run.endpoints.push_back(parse_endpoint(io, url));
  {
    std::string value(static_cast<size_t>(o.value_size), '\0');
    for (auto& c : value) c = static_cast<char>(run.rng());
    run.value_b64 = muster::etcdwire::base64_encode(value);
  }
  std::string key_b64 = muster::etcdwire::base64_encode(o.key);
  run.range_body = o.op == "range-s" ? R"({"key":")" + key_b64 + R"(","serializable":true})"
                                     : R"({"key":")" + key_b64 + R"("})";
  if (o.op != "put" && !seed_key(run)) {
    std::cerr << "node-bench: could not write the key to read through " << o.endpoints[0] << "\n";
    return 1;
  }

  auto now = Clock::now();
  run.measure_start =
      now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.warmup_s));
  run.measure_end = run.measure_start + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(o.duration_s));
  run.latency_us.reserve(1 << 20);

  std::vector<std::unique_ptr<Conn>> conns;
  for (int i = 0; i < o.conns; ++i)
    conns.push_back(std::make_unique<Conn>(run, run.endpoints[i % run.endpoints.size()]));
  for (auto& c : conns) c->start();

  // /proc sampling of the cluster: CPU at the edges of the window, summed RSS
  // every 100 ms inside it.
  muster::bench::ProcSample cpu_start, cpu_end;
  long peak_rss_kb = 0;
  bool pids_alive = true;
  double gen_cpu_start = 0, gen_cpu_end = 0;
  asio::steady_timer sampler(io);
  std::function<void(beast::error_code)> tick = [&](beast::error_code) {
    auto t = Clock::now();
    auto s = muster::bench::proc_sample_sum(o.pids);
    pids_alive = pids_alive && (o.pids.empty() || s.alive);
    peak_rss_kb = std::max(peak_rss_kb, s.rss_kb);
    if (t >= run.measure_end) {
      cpu_end = s;
      gen_cpu_end = self_cpu_s();
      return;
    }
    sampler.expires_at(std::min(t + std::chrono::milliseconds(100), run.measure_end));
    sampler.async_wait(tick);
  };
  sampler.expires_at(run.measure_start);
  sampler.async_wait([&](beast::error_code ec) {
    cpu_start = muster::bench::proc_sample_sum(o.pids);
    gen_cpu_start = self_cpu_s();
    tick(ec);
  });

  io.run();

  const double window = o.duration_s;
  const uint64_t ops = run.latency_us.size();
  json out = {
      {"label", o.label},
      {"op", o.op},
      {"conns", o.conns},
      {"endpoints", o.endpoints.size()},
      {"duration_s", window},
      {"ops", ops},
      {"ops_per_s", static_cast<double>(ops) / window},
      {"p50_ms", percentile_ms(run.latency_us, 0.50)},
      {"p99_ms", percentile_ms(run.latency_us, 0.99)},
      {"max_ms", percentile_ms(run.latency_us, 1.0)},
      {"errors", run.errors},
      {"errors_total", run.errors_total},
      {"generator_cpu_s", gen_cpu_end - gen_cpu_start},
  };
  if (!run.first_error.empty()) out["first_error"] = run.first_error;
  if (!o.pids.empty()) {
    const double cpu = cpu_end.cpu_s - cpu_start.cpu_s;
    out["cluster_alive"] = pids_alive;
    out["cluster_peak_rss_mb"] = static_cast<double>(peak_rss_kb) / 1024.0;
    out["cluster_cpu_s"] = cpu;
    out["cluster_cpu_s_per_10k_ops"] = ops ? cpu * 10'000.0 / static_cast<double>(ops) : 0.0;
  }
  std::cout << out.dump() << std::endl;
  return ops > 0 ? 0 : 1;
}
