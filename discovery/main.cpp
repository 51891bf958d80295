// muster-discovery: an etcd discovery service (see docs/discovery.md).
#include <boost/asio.hpp>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/log.h"
#include "base/runner.h"
#include "discovery/etcd_store.h"
#include "discovery/leveldb_store.h"
#include "discovery/rules.h"
#include "discovery/service.h"
#include "net/server.h"
#include "net/url.h"

namespace {

using namespace muster;

struct Flag {
  std::string name, default_value, help;
  bool boolean = false;
};

const std::vector<Flag> kFlags = {
    {"listen-url", "http://127.0.0.1:8087", "URL to serve on (https with --cert-file/--key-file)"},
    {"public-url", "", "base URL written into new tokens (default: the listen URL)"},
    {"data-dir", "./muster-discovery.data", "where the embedded store keeps its data"},
    {"cert-file", "", "TLS certificate for the listen URL"},
    {"key-file", "", "TLS key for the listen URL"},
    {"trusted-ca-file", "", "CA bundle to verify client certificates"},
    {"client-cert-auth", "false", "require client certificates signed by --trusted-ca-file", true},
    {"max-size", "9", "largest cluster size a token may have"},
    {"max-registrations", "0", "registrations accepted per token (0: 4 x size + 16)"},
    {"token-ttl", "168h", "tokens expire this long after creation"},
    {"new-rate", "60", "tokens created per client address per minute (0: unlimited)"},
    {"wait-timeout", "30s", "a long-poll answers an empty 200 after this (clients re-poll)"},
    {"gc-interval", "1m", "how often expired tokens are removed"},
    {"store", "leveldb", "token store: leveldb (embedded) or etcd"},
    {"store-endpoints", "", "etcd client URLs for --store etcd (comma-separated)"},
    {"store-prefix", "/muster-discovery/", "key prefix in etcd for --store etcd"},
    {"max-body-bytes", "65536", "largest request body accepted"},
    {"threads", "2", "I/O threads"},
};

void usage() {
  std::cout << "usage: muster-discovery [flags]\n\nAn etcd discovery service: etcd and muster "
               "members bootstrap through it with --discovery.\n\nflags (also "
               "MUSTER_DISCOVERY_<FLAG> environment variables):\n";
  for (const auto& f : kFlags)
    std::cout << "  --" << f.name << (f.boolean ? "" : " value") << "\n      " << f.help
              << (f.default_value.empty() ? "" : " (default " + f.default_value + ")") << "\n";
}

std::string env_name(const std::string& flag) {
  std::string e = "MUSTER_DISCOVERY_";
  for (char c : flag) e.push_back(c == '-' ? '_' : static_cast<char>(std::toupper(c)));
  return e;
}

[[noreturn]] void die(const std::string& msg) {
  log::error("discovery/main", msg);
  std::cerr << "muster-discovery: " << msg << "\n";
  std::exit(2);
}

std::map<std::string, std::string> parse_flags(int argc, char** argv) {
  std::map<std::string, std::string> v, from_flag;
  for (const auto& f : kFlags) v[f.name] = f.default_value;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      usage();
      std::exit(0);
    }
    if (a == "--version") {
      std::cout << "muster-discovery Version: 0.1.0\n";
      std::exit(0);
    }
    if (a.rfind("-", 0) != 0) die("'" + a + "' is not a valid flag");
    a = a.substr(a.rfind("--", 0) == 0 ? 2 : 1);
    std::string value;
    bool has_value = false;
    if (auto eq = a.find('='); eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_value = true;
    }
    auto f = std::find_if(kFlags.begin(), kFlags.end(), [&](const Flag& x) { return x.name == a; });
    if (f == kFlags.end()) die("unknown flag --" + a + " (see --help)");
    if (!has_value) {
      if (f->boolean) {
        value = "true";
      } else {
        if (i + 1 >= argc) die("flag --" + a + " needs a value");
        value = argv[++i];
      }
    }
    from_flag[a] = value;
  }
  for (const auto& f : kFlags) {
    const char* env = std::getenv(env_name(f.name).c_str());
    if (env && *env) {
      if (from_flag.count(f.name))
        die("conflicting environment variable \"" + env_name(f.name) +
            "\" is shadowed by corresponding command-line flag --" + f.name +
            " (either unset environment variable or disable flag)");
      v[f.name] = env;
    }
  }
  for (auto& [k, val] : from_flag) v[k] = val;
  return v;
}

uint32_t parse_uint(const std::map<std::string, std::string>& v, const std::string& name) {
  try {
    std::size_t used = 0;
    long long n = std::stoll(v.at(name), &used);
    if (used != v.at(name).size() || n < 0 || n > 1'000'000'000) throw std::invalid_argument("");
    return static_cast<uint32_t>(n);
  } catch (const std::exception&) {
    die("invalid value \"" + v.at(name) + "\" for --" + name + ": expected a non-negative integer");
  }
}

int64_t parse_dur(const std::map<std::string, std::string>& v, const std::string& name) {
  auto d = discovery::parse_duration_ms(v.at(name));
  if (!d)
    die("invalid value \"" + v.at(name) + "\" for --" + name +
        ": expected a duration such as 30s, 5m or 168h");
  return *d;
}

}  // namespace

int main(int argc, char** argv) {
  auto flags = parse_flags(argc, argv);
  std::string err;
  auto listen = net::parse_url(flags["listen-url"], &err);
  if (!listen) die("--listen-url: " + err);

  net::ServerOptions sopts;
  sopts.body_limit = parse_uint(flags, "max-body-bytes");
  if (listen->tls() || !flags["cert-file"].empty()) {
    if (flags["cert-file"].empty() || flags["key-file"].empty())
      die("an https --listen-url needs --cert-file and --key-file");
    net::TlsOptions t;
    t.cert_file = flags["cert-file"];
    t.key_file = flags["key-file"];
    t.trusted_ca_file = flags["trusted-ca-file"];
    t.client_cert_auth = flags["client-cert-auth"] == "true";
    sopts.tls = t;
  }

  discovery::ServiceOptions opts;
  opts.max_size = parse_uint(flags, "max-size");
  if (opts.max_size < 1) die("--max-size must be at least 1");
  opts.max_registrations = parse_uint(flags, "max-registrations");
  opts.token_ttl_ms = parse_dur(flags, "token-ttl");
  opts.new_rate_per_minute = parse_uint(flags, "new-rate");
  opts.wait_timeout_ms = parse_dur(flags, "wait-timeout");
  int64_t gc_ms = parse_dur(flags, "gc-interval");
  if (gc_ms <= 0) die("--gc-interval must be positive");
  int threads = static_cast<int>(parse_uint(flags, "threads"));
  if (threads < 1) threads = 1;

  std::shared_ptr<discovery::TokenStore> store;
  try {
    if (flags["store"] == "leveldb") {
      store = std::make_shared<discovery::LevelDbTokenStore>(flags["data-dir"]);
    } else if (flags["store"] == "etcd") {
      if (flags["store-endpoints"].empty()) die("--store etcd needs --store-endpoints");
      store = discovery::make_etcd_token_store(flags["store-endpoints"], flags["store-prefix"]);
    } else {
      die("invalid value \"" + flags["store"] + "\" for --store: expected leveldb or etcd");
    }
  } catch (const std::exception& e) {
    die(e.what());
  }

  boost::asio::io_context io;
  std::unique_ptr<discovery::Service> service;
  std::unique_ptr<net::Server> server;
  uint16_t port = 0;
  try {
    // The public URL needs the bound port when --listen-url asks for port 0.
    server = std::make_unique<net::Server>(
        io, sopts, [&](std::shared_ptr<net::Exchange> ex) { service->handle(ex); });
    port = server->listen(listen->host, listen->port);
  } catch (const std::exception& e) {
    die(e.what());
  }
  net::Url bound = *listen;
  bound.port = port;
  bound.explicit_port = true;
  opts.public_url = flags["public-url"].empty() ? bound.origin() : flags["public-url"];
  service = std::make_unique<discovery::Service>(io, opts, store);

  // Expired tokens are collected on a thread of their own (a store may
  // block), which main stops and joins before anything it uses goes away.
  std::mutex gc_mu;
  std::condition_variable gc_cv;
  bool gc_stop = false;
  std::thread gc([&, s = store] {
    std::unique_lock lock(gc_mu);
    while (!gc_cv.wait_for(lock, std::chrono::milliseconds(gc_ms), [&] { return gc_stop; })) {
      lock.unlock();
      auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
      if (auto n = s->collect_expired(now); n > 0)
        log::info("discovery", "expired tokens collected", {{"count", n}});
      lock.lock();
    }
  });
  auto stop_gc = [&] {
    {
      std::lock_guard lock(gc_mu);
      gc_stop = true;
    }
    gc_cv.notify_all();
    if (gc.joinable()) gc.join();
  };

  log::info("discovery/main", "serving",
            {{"url", bound.origin()},
             {"public-url", opts.public_url},
             {"store", flags["store"]},
             {"data-dir", flags["data-dir"]},
             {"max-size", opts.max_size}});
  int sig = base::run_until_signal(io, threads, [&] {
    log::info("discovery/main", "stopping");
    service->stopping();
    server->stop();
  });
  stop_gc();
  log::info("discovery/main", "stopped", {{"signal", sig}});
  server.reset();
  service.reset();
  store.reset();
  return 0;
}
