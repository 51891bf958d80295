// discovery-bench: load for an etcd v2 discovery service (muster-discovery or
// a real etcd with --enable-v2 used as a self-hosted one).
//
// Mode "bootstrap": `clusters` clusters of `size` members bootstrap at once,
// over and over, for `duration` seconds.  Each member is a coroutine (all on
// one thread) with its own keep-alive connection and speaks etcd's v2
// discovery protocol request by
// request (shared/research/discovery.md 1.5): size GET, directory GET,
// registration PUT ?prevExist=false, wait for its own key, size and directory
// GET again, then long-poll the directory until `size` members are known.
// One member per cluster first creates the token (/new?size=N on
// muster-discovery; PUT .../_config/size on etcd).  Latency is measured for
// every request except the directory long-polls (their duration is the other
// members' arrival, not the server's speed); those are counted separately.
//
// Mode "hold": opens `hold` long-polls (plain asio sockets, one thread) on
// `tokens` tokens and reports the server's RSS before and while they are open.
//
// Output: one JSON object on stdout.  The server's RSS and CPU time come from
// /proc/<pid> when --pid is given.
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <boost/asio.hpp>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/common/proc_stats.h"
#include "net/client.h"
#include "net/http.h"
#include "net/url.h"

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;
using muster::net::ClientResult;
using muster::net::Headers;
using muster::net::HttpClient;

struct Options {
  std::string mode = "bootstrap";
  std::string target = "muster";  // muster | etcd
  std::string url;                // http://127.0.0.1:PORT
  int pid = 0;
  double duration_s = 10;
  int clusters = 32;
  int size = 3;
  int hold = 10'000;
  int tokens = 100;
  std::string prefix = "/v2/keys/discovery/";  // etcd token directory
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "discovery-bench: " << why
            << "\nusage: discovery-bench --url http://127.0.0.1:PORT [--target muster|etcd]"
               " [--mode bootstrap|hold] [--pid PID] [--duration S] [--clusters N] [--size N]"
               " [--hold N] [--tokens N]\n";
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--mode")
      o.mode = next();
    else if (a == "--target")
      o.target = next();
    else if (a == "--url")
      o.url = next();
    else if (a == "--pid")
      o.pid = std::stoi(next());
    else if (a == "--duration")
      o.duration_s = std::stod(next());
    else if (a == "--clusters")
      o.clusters = std::stoi(next());
    else if (a == "--size")
      o.size = std::stoi(next());
    else if (a == "--hold")
      o.hold = std::stoi(next());
    else if (a == "--tokens")
      o.tokens = std::stoi(next());
    else
      usage("unknown flag " + a);
  }
  if (o.url.empty()) usage("--url is required");
  if (o.target != "muster" && o.target != "etcd") usage("--target is muster or etcd");
  while (!o.url.empty() && o.url.back() == '/') o.url.pop_back();
  return o;
}

// --- the server process, from /proc (bench/common/proc_stats.h) ---
using muster::bench::ProcSample;
ProcSample sample(int pid) { return muster::bench::proc_sample(pid); }

double self_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

std::string random_hex(std::mt19937_64& rng, int chars) {
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < chars; ++i) s.push_back(kHex[rng() & 15]);
  return s;
}

// --- bootstrap mode ---
struct Stats {
  std::vector<uint32_t> latency_us;      // every timed request
  std::vector<uint32_t> put_latency_us;  // registrations only
  uint64_t timed = 0, registrations = 0, polls = 0, errors = 0;
  std::string first_error;
};

class Member {
 public:
  Member(const Options& o, Stats& st, uint64_t seed) : o_(o), st_(st), rng_(seed) {
    muster::net::ClientOptions co;
    co.timeout = std::chrono::milliseconds(10'000);
    client_ = HttpClient(co);
  }

  // A timed request; nullopt (and an error counted) unless `want` came back.
  std::optional<muster::net::Response> timed(const std::string& method, const std::string& target,
                                             const std::string& body, int want,
                                             bool registration = false) {
    Headers h;
    if (!body.empty()) h.set("Content-Type", "application/x-www-form-urlencoded");
    auto start = Clock::now();
    ClientResult r = client_.request(method, o_.url + target, body, h);
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
    st_.latency_us.push_back(static_cast<uint32_t>(us));
    ++st_.timed;
    if (registration) st_.put_latency_us.push_back(static_cast<uint32_t>(us));
    if (!r.ok() || r.response->status != want) {
      ++st_.errors;
      if (st_.first_error.empty())
        st_.first_error =
            method + " " + target + ": " +
            (r.ok() ? std::to_string(r.response->status) + " " + r.response->body : r.error);
      return std::nullopt;
    }
    return std::move(*r.response);
  }

  // Creates a token; returns its path ("/<token>" or "/v2/keys/discovery/<t>").
  std::optional<std::string> create_token() {
    if (o_.target == "muster") {
      auto r = timed("PUT", "/new?size=" + std::to_string(o_.size), "", 201);
      if (!r) return std::nullopt;
      std::string url = r->body;
      while (!url.empty() && (url.back() == '\n' || url.back() == '\r')) url.pop_back();
      auto slash = url.rfind('/');
      return url.substr(slash);
    }
    std::string path = o_.prefix + random_hex(rng_, 32);
    if (!timed("PUT", path + "/_config/size", "value=" + std::to_string(o_.size), 201))
      return std::nullopt;
    return path;
  }

 private:
  const Options& o_;
  Stats& st_;
  std::mt19937_64 rng_;
  HttpClient client_;
};

uint32_t percentile(std::vector<uint32_t>& v, double p) {
  if (v.empty()) return 0;
  std::size_t k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

// The bootstrap load runs on one thread: every member is a coroutine on one
// io_context with its own keep-alive connection, and HTTP/1.1 is written and
// read by hand (Content-Length and chunked bodies, which is all a v2 keys
// server sends).  A thread per member with a general-purpose client cost as
// much CPU per request as the server under test; this costs a fraction.
namespace engine {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

struct Reply {
  int status = 0;
  std::string body;
  uint64_t etcd_index = 0;
};

bool iequals_prefix(std::string_view line, std::string_view name) {
  if (line.size() < name.size()) return false;
  for (std::size_t i = 0; i < name.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  return true;
}

class Conn {
 public:
  Conn(asio::io_context& io, tcp::endpoint ep, std::string host)
      : sock_(io), ep_(ep), host_(std::move(host)) {}

  // One request/response on the kept-alive connection (reconnects when the
  // server closed it).  Throws boost::system::system_error on I/O errors.
  awaitable<Reply> call(std::string_view method, const std::string& target,
                        const std::string& body) {
    if (!open_) {
      buf_.clear();
      co_await sock_.async_connect(ep_, use_awaitable);
      sock_.set_option(tcp::no_delay(true));
      open_ = true;
    }
    std::string req;
    req.reserve(160 + target.size() + body.size());
    req.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: ").append(host_);
    req.append("\r\n");
    if (!body.empty() || method == "PUT")
      req.append("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ")
          .append(std::to_string(body.size()))
          .append("\r\n");
    req.append("\r\n").append(body);
    co_await asio::async_write(sock_, asio::buffer(req), use_awaitable);

    std::size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) co_await fill();
    Reply r;
    if (buf_.size() < 12 || buf_.compare(0, 5, "HTTP/") != 0)
      throw std::runtime_error("not an HTTP response");
    r.status = std::atoi(buf_.c_str() + 9);
    std::size_t length = 0;
    bool chunked = false, close = false;
    std::size_t pos = buf_.find("\r\n") + 2;
    while (pos < end) {
      std::size_t eol = buf_.find("\r\n", pos);
      std::string_view line(buf_.data() + pos, eol - pos);
      auto value = [&] {
        auto colon = line.find(':');
        std::string_view v = line.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
        return v;
      };
      if (iequals_prefix(line, "content-length:"))
        length = std::stoul(std::string(value()));
      else if (iequals_prefix(line, "transfer-encoding:"))
        chunked = value().find("chunked") != std::string_view::npos;
      else if (iequals_prefix(line, "x-etcd-index:"))
        r.etcd_index = std::stoull(std::string(value()));
      else if (iequals_prefix(line, "connection:"))
        close = value().find("close") != std::string_view::npos;
      pos = eol + 2;
    }
    buf_.erase(0, end + 4);
    if (chunked) {
      for (;;) {
        std::size_t eol;
        while ((eol = buf_.find("\r\n")) == std::string::npos) co_await fill();
        std::size_t n = std::stoul(buf_.substr(0, eol), nullptr, 16);
        buf_.erase(0, eol + 2);
        while (buf_.size() < n + 2) co_await fill();
        r.body.append(buf_, 0, n);
        buf_.erase(0, n + 2);
        if (n == 0) break;
      }
    } else {
      while (buf_.size() < length) co_await fill();
      r.body.assign(buf_, 0, length);
      buf_.erase(0, length);
    }
    if (close) {
      boost::system::error_code ignored;
      sock_.close(ignored);
      open_ = false;
    }
    co_return r;
  }

 private:
  awaitable<void> fill() {
    char tmp[16384];
    std::size_t n = co_await sock_.async_read_some(asio::buffer(tmp), use_awaitable);
    buf_.append(tmp, n);
  }

  tcp::socket sock_;
  tcp::endpoint ep_;
  std::string host_;
  std::string buf_;
  bool open_ = false;
};

struct Run {
  Run(const Options& opts, asio::io_context& ctx, tcp::endpoint endpoint, std::string host_header,
      Clock::time_point until)
      : o(opts), io(ctx), ep(endpoint), host(std::move(host_header)), end(until) {}

  const Options& o;
  asio::io_context& io;
  tcp::endpoint ep;
  std::string host;
  Clock::time_point end;
  Stats st;
  uint64_t clusters_done = 0;
  bool failed = false;
  std::mt19937_64 rng{12345};

  void error(std::string what) {
    ++st.errors;
    failed = true;
    if (st.first_error.empty()) st.first_error = std::move(what);
  }

  awaitable<std::optional<Reply>> timed(Conn& c, std::string_view method, const std::string& target,
                                        const std::string& body, int want,
                                        bool registration = false) {
    auto start = Clock::now();
    Reply r = co_await c.call(method, target, body);
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
    st.latency_us.push_back(static_cast<uint32_t>(us));
    ++st.timed;
    if (registration) st.put_latency_us.push_back(static_cast<uint32_t>(us));
    if (r.status != want) {
      error(std::string(method) + " " + target + ": " + std::to_string(r.status) + " " + r.body);
      co_return std::nullopt;
    }
    co_return r;
  }
};

struct Cluster {
  std::string token;
  int remaining = 0;
  std::unique_ptr<asio::steady_timer> all_done;
  std::vector<std::unique_ptr<Conn>> conns;
};

// etcd's JoinCluster, request by request (see the file comment).
awaitable<void> join(Run& run, Cluster& cl, int m) {
  Conn& c = *cl.conns[m];
  const Options& o = run.o;
  const std::string& tok = cl.token;
  const std::string q = "?quorum=false&recursive=false&sorted=false";
  std::string id = random_hex(run.rng, 16);
  if (!co_await run.timed(c, "GET", tok + "/_config/size" + q, "", 200)) co_return;
  if (!co_await run.timed(c, "GET", tok + q, "", 200)) co_return;
  std::string value = "value=m" + std::to_string(m) + "%3Dhttp%3A%2F%2F10.0." +
                      std::to_string(run.rng() % 250) + "." + std::to_string(run.rng() % 250) +
                      "%3A2380";
  auto put = co_await run.timed(c, "PUT", tok + "/" + id + "?prevExist=false", value, 201, true);
  if (!put) co_return;
  ++run.st.registrations;
  uint64_t created = json::parse(put->body)["node"]["createdIndex"].get<uint64_t>();
  if (!co_await run.timed(
          c, "GET",
          tok + "/" + id + "?recursive=false&wait=true&waitIndex=" + std::to_string(created), "",
          200))
    co_return;
  if (!co_await run.timed(c, "GET", tok + "/_config/size" + q, "", 200)) co_return;
  auto dir = co_await run.timed(c, "GET", tok + q, "", 200);
  if (!dir) co_return;
  auto doc = json::parse(dir->body);
  std::size_t known = doc["node"].contains("nodes") ? doc["node"]["nodes"].size() : 0;
  uint64_t index = dir->etcd_index;
  // Wait for the rest (not timed: the wait is the other members' arrival).
  while (known < static_cast<std::size_t>(o.size)) {
    ++run.st.polls;
    Reply r = co_await c.call(
        "GET", tok + "?recursive=true&wait=true&waitIndex=" + std::to_string(index + 1), "");
    if (r.status != 200) {
      run.error("watch " + tok + ": " + std::to_string(r.status) + " " + r.body);
      co_return;
    }
    if (r.body.empty()) continue;  // long-poll timeout: poll again
    index = json::parse(r.body)["node"]["modifiedIndex"].get<uint64_t>();
    ++known;
  }
}

awaitable<void> member(Run& run, Cluster& cl, int m) {
  try {
    co_await join(run, cl, m);
  } catch (const std::exception& e) {
    run.error(std::string("member: ") + e.what());
  }
  if (--cl.remaining == 0) cl.all_done->cancel();
}

awaitable<void> cluster_loop(Run& run, int index) {
  const Options& o = run.o;
  Cluster cl;
  for (int m = 0; m < o.size; ++m)
    cl.conns.push_back(std::make_unique<Conn>(run.io, run.ep, run.host));
  cl.all_done = std::make_unique<asio::steady_timer>(run.io);
  std::mt19937_64 rng(static_cast<uint64_t>(index) * 7919 + 1);
  try {
    while (Clock::now() < run.end && !run.failed) {
      if (o.target == "muster") {
        auto r =
            co_await run.timed(*cl.conns[0], "PUT", "/new?size=" + std::to_string(o.size), "", 201);
        if (!r) co_return;
        std::string url = r->body;
        while (!url.empty() && (url.back() == '\n' || url.back() == '\r')) url.pop_back();
        cl.token = url.substr(url.rfind('/'));
      } else {
        cl.token = o.prefix + random_hex(rng, 32);
        if (!co_await run.timed(*cl.conns[0], "PUT", cl.token + "/_config/size",
                                "value=" + std::to_string(o.size), 201))
          co_return;
      }
      cl.remaining = o.size;
      cl.all_done->expires_at(asio::steady_timer::time_point::max());
      for (int m = 0; m < o.size; ++m) asio::co_spawn(run.io, member(run, cl, m), asio::detached);
      boost::system::error_code ec;
      co_await cl.all_done->async_wait(asio::redirect_error(use_awaitable, ec));
      if (!run.failed) ++run.clusters_done;
    }
  } catch (const std::exception& e) {
    run.error(std::string("cluster: ") + e.what());
  }
}

}  // namespace engine

json bootstrap(const Options& o) {
  boost::asio::io_context io(1);
  auto url = muster::net::parse_url(o.url);
  if (!url) usage("bad --url");
  engine::Run run(
      o, io,
      boost::asio::ip::tcp::endpoint(
          boost::asio::ip::make_address(url->host == "localhost" ? "127.0.0.1" : url->host),
          url->port),
      url->authority(),
      Clock::now() +
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s)));
  ProcSample before = sample(o.pid);
  double gen_cpu_before = self_cpu_s();
  auto start = Clock::now();
  for (int c = 0; c < o.clusters; ++c)
    boost::asio::co_spawn(io, engine::cluster_loop(run, c), boost::asio::detached);
  io.run();
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  ProcSample after = sample(o.pid);
  double gen_cpu = self_cpu_s() - gen_cpu_before;
  Stats& all = run.st;
  json out;
  out["mode"] = "bootstrap";
  out["target"] = o.target;
  out["clusters_in_flight"] = o.clusters;
  out["size"] = o.size;
  out["seconds"] = secs;
  out["clusters_bootstrapped"] = run.clusters_done;
  out["requests"] = all.timed;
  out["requests_per_s"] = static_cast<double>(all.timed) / secs;
  out["registrations"] = all.registrations;
  out["registrations_per_s"] = static_cast<double>(all.registrations) / secs;
  out["directory_long_polls"] = all.polls;
  out["errors"] = all.errors;
  if (!all.first_error.empty()) out["first_error"] = all.first_error;
  out["p50_ms"] = percentile(all.latency_us, 0.50) / 1000.0;
  out["p99_ms"] = percentile(all.latency_us, 0.99) / 1000.0;
  out["put_p50_ms"] = percentile(all.put_latency_us, 0.50) / 1000.0;
  out["put_p99_ms"] = percentile(all.put_latency_us, 0.99) / 1000.0;
  out["server_rss_mb"] = after.rss_kb / 1024.0;
  out["server_peak_rss_mb"] = after.hwm_kb / 1024.0;
  out["server_cpu_s"] = after.cpu_s - before.cpu_s;
  out["generator_cpu_s"] = gen_cpu;
  return out;
}

// --- hold mode ---
json hold(const Options& o) {
  namespace asio = boost::asio;
  using tcp = asio::ip::tcp;
  // Tokens (and one registration each, so that the directory exists on etcd).
  std::vector<std::string> toks;
  {
    Stats st;
    Member m(o, st, 7);
    for (int i = 0; i < o.tokens; ++i) {
      auto t = m.create_token();
      if (!t) {
        std::cerr << "cannot create token: " << st.first_error << "\n";
        std::exit(1);
      }
      toks.push_back(*t);
    }
  }
  auto parsed = muster::net::parse_url(o.url);
  ProcSample idle = sample(o.pid);
  asio::io_context io;
  tcp::endpoint ep(asio::ip::make_address(parsed->host == "localhost" ? "127.0.0.1" : parsed->host),
                   parsed->port);
  struct Conn {
    explicit Conn(asio::io_context& io) : sock(io) {}
    tcp::socket sock;
    std::string req;
    char buf[512];
    bool closed = false;
  };
  std::vector<std::unique_ptr<Conn>> conns;
  std::atomic<int> written{0}, failed{0};
  for (int i = 0; i < o.hold; ++i) {
    auto c = std::make_unique<Conn>(io);
    c->req =
        "GET " + toks[i % toks.size()] +
        "?recursive=true&wait=true&waitIndex=999999999 HTTP/1.1\r\nHost: " + parsed->authority() +
        "\r\n\r\n";
    Conn* raw = c.get();
    raw->sock.async_connect(ep, [raw, &written, &failed](boost::system::error_code ec) {
      if (ec) {
        ++failed;
        return;
      }
      asio::async_write(raw->sock, asio::buffer(raw->req),
                        [raw, &written, &failed](boost::system::error_code ec, std::size_t) {
                          if (ec) {
                            ++failed;
                            return;
                          }
                          ++written;
                          // Read (and discard) whatever comes: etcd flushes its
                          // headers at once; an EOF means the poll is gone.
                          raw->sock.async_read_some(
                              asio::buffer(raw->buf),
                              [raw](boost::system::error_code ec, std::size_t) {
                                if (ec) raw->closed = true;
                              });
                        });
    });
    conns.push_back(std::move(c));
  }
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (written.load() + failed.load() < o.hold && Clock::now() < deadline)
    io.run_for(std::chrono::milliseconds(50));
  // Let the server settle (accept queue drained, watchers registered).
  auto settle = Clock::now() + std::chrono::seconds(3);
  while (Clock::now() < settle) io.run_for(std::chrono::milliseconds(50));
  ProcSample held = sample(o.pid);
  int open = 0;
  for (auto& c : conns)
    if (!c->closed && c->sock.is_open()) ++open;
  double open_polls_metric = -1;
  if (o.target == "muster") {
    HttpClient c;
    auto r = c.get(o.url + "/metrics");
    if (r.ok()) {
      std::istringstream in(r.response->body);
      std::string line;
      while (std::getline(in, line))
        if (line.rfind("muster_discovery_open_long_polls ", 0) == 0)
          open_polls_metric = std::stod(line.substr(line.find(' ') + 1));
    }
  }
  json out;
  out["mode"] = "hold";
  out["target"] = o.target;
  out["long_polls_requested"] = o.hold;
  out["long_polls_written"] = written.load();
  out["connect_or_write_failures"] = failed.load();
  out["still_open_after_settle"] = open;
  if (open_polls_metric >= 0) out["server_open_long_polls_metric"] = open_polls_metric;
  out["server_rss_idle_mb"] = idle.rss_kb / 1024.0;
  out["server_rss_holding_mb"] = held.rss_kb / 1024.0;
  out["server_peak_rss_mb"] = held.hwm_kb / 1024.0;
  for (auto& c : conns) {
    boost::system::error_code ignored;
    c->sock.close(ignored);
  }
  io.run_for(std::chrono::milliseconds(100));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  json out = o.mode == "hold" ? hold(o) : bootstrap(o);
  std::cout << out.dump() << std::endl;
  if (out.value("errors", 0) > 0) return 1;
  return 0;
}
