#include "net/pprof.h"

#ifndef MUSTER_PPROF_NO_TCMALLOC
#include <gperftools/malloc_extension.h>
#endif
#include <gperftools/profiler.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "base/log.h"
#include "net/symbols.h"

extern char** environ;

namespace muster::net::pprof {

namespace {

[[maybe_unused]] constexpr const char* kSampleVar = "TCMALLOC_SAMPLE_PARAMETER";

[[maybe_unused]] bool heap_sampling_on() {
  const char* v = std::getenv(kSampleVar);
  return v && std::atol(v) > 0;
}

// Go's pprof answers its errors as plain text with this header.
Response pprof_error(int status, std::string text) {
  Response r = Response::text(status, std::move(text) + "\n");
  r.headers.set("X-Content-Type-Options", "nosniff");
  r.headers.set("X-Go-Pprof", "1");
  return r;
}

Response attachment(std::string body, const char* name) {
  Response r = Response::text(200, std::move(body));
  r.headers.set("Content-Type", "application/octet-stream");
  r.headers.set("Content-Disposition", std::string("attachment; filename=\"") + name + "\"");
  r.headers.set("X-Content-Type-Options", "nosniff");
  return r;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace

bool enable_heap_sampling(char** argv) {
#ifdef MUSTER_PPROF_NO_TCMALLOC
  (void)argv;
  return false;  // no tcmalloc to sample with (a sanitizer build)
#else
  if (heap_sampling_on()) return true;
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) env.emplace_back(*e);
  env.push_back(std::string(kSampleVar) + "=" + std::to_string(kHeapSampleBytes));
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  ::execve("/proc/self/exe", argv, envp.data());
  log::warn("pprof", "cannot restart with heap sampling; /debug/pprof/heap will be empty",
            {{"error", std::strerror(errno)}});
  return false;
#endif
}

class Handler::Impl : public std::enable_shared_from_this<Handler::Impl> {
 public:
  Impl(boost::asio::io_context& io, std::string dir) : io_(io), dir_(std::move(dir)) {}

  bool handle(const std::shared_ptr<Exchange>& ex) {
    const std::string path = ex->request().path();
    if (path.rfind("/debug/pprof", 0) != 0) return false;
    const std::string& m = ex->request().method;
    if (m != "GET" && m != "HEAD" && m != "POST") {
      Response r = pprof_error(405, "Method Not Allowed");
      r.headers.set("Allow", "GET, HEAD, POST");
      ex->respond(std::move(r));
      return true;
    }
    if (path == "/debug/pprof" || path == "/debug/pprof/") return index(ex), true;
    if (path == "/debug/pprof/profile") return profile(ex), true;
    if (path == "/debug/pprof/heap" || path == "/debug/pprof/allocs") return heap(ex), true;
    if (path == "/debug/pprof/cmdline") return cmdline(ex), true;
    if (path == "/debug/pprof/symbol") return symbol(ex), true;
    ex->respond(pprof_error(404, "Unknown profile: " + path.substr(std::strlen("/debug/pprof/")) +
                                     " (available: profile, heap, allocs, cmdline, symbol)"));
    return true;
  }

 private:
  void index(const std::shared_ptr<Exchange>& ex) {
    Response r = Response::text(
        200,
        "<html><head><title>/debug/pprof/</title></head><body>\n"
        "/debug/pprof/<br>\n<br>\nTypes of profiles available:\n<table>\n"
        "<tr><td><a href='heap?debug=1'>heap</a></td><td>live heap, sampled every 512 KiB "
        "(tcmalloc)</td></tr>\n"
        "<tr><td><a href='allocs?debug=1'>allocs</a></td><td>the same sample as heap</td></tr>\n"
        "<tr><td><a href='profile'>profile</a></td><td>CPU profile (gperftools); "
        "?seconds=N, default 30</td></tr>\n"
        "<tr><td><a href='cmdline'>cmdline</a></td><td>the command line</td></tr>\n"
        "<tr><td><a href='symbol'>symbol</a></td><td>function names for addresses "
        "(remote symbolization)</td></tr>\n"
        "</table>\n<p>Read them with <code>go tool pprof -symbolize=remote "
        "http://&lt;host&gt;/debug/pprof/profile</code> (names from this member) or "
        "gperftools' <code>google-pprof &lt;muster binary&gt; &lt;file&gt;</code>.</p>\n"
        "</body></html>\n");
    r.headers.set("Content-Type", "text/html; charset=utf-8");
    ex->respond(std::move(r));
  }

  void cmdline(const std::shared_ptr<Exchange>& ex) {
    std::string c = read_file("/proc/self/cmdline");
    if (!c.empty() && c.back() == '\0') c.pop_back();
    Response r = Response::text(200, std::move(c));
    r.headers.set("X-Content-Type-Options", "nosniff");
    ex->respond(std::move(r));
  }

  // Remote symbolization, as Go's net/http/pprof answers it: the addresses
  // joined by '+' (a POST body, or the raw query of a GET), each in Go's
  // integer syntax (0x... as pprof sends them); the answer is
  // "num_symbols: 1" (symbols are available) and a line "0x<address> <name>"
  // for each address a function covers.  Words that are not addresses are
  // skipped, as Go does.  The tables are read on the I/O thread, only when
  // someone profiles: 20-40 ms for 5,000 addresses of the member's own code
  // (a debug build, measured with curl).
  void symbol(const std::shared_ptr<Exchange>& ex) {
    const Request& req = ex->request();
    const std::string words = req.method == "POST" ? req.body : req.raw_query();
    std::vector<uint64_t> addrs;
    for (size_t at = 0; at <= words.size();) {
      size_t plus = words.find('+', at);
      if (plus == std::string::npos) plus = words.size();
      const std::string word = words.substr(at, plus - at);
      at = plus + 1;
      char* end = nullptr;
      errno = 0;
      const unsigned long long a = std::strtoull(word.c_str(), &end, 0);
      if (!word.empty() && std::isdigit(static_cast<unsigned char>(word[0])) && *end == '\0' &&
          errno == 0 && a != 0)
        addrs.push_back(a);
    }
    const std::vector<std::string> names = symbols::function_names(addrs);
    std::string out = "num_symbols: 1\n";
    char hex[24];
    for (size_t i = 0; i < addrs.size(); ++i) {
      if (names[i].empty()) continue;
      std::snprintf(hex, sizeof hex, "%#llx ", static_cast<unsigned long long>(addrs[i]));
      out += hex;
      out += names[i];
      out += '\n';
    }
    Response r = Response::text(200, std::move(out));
    r.headers.set("X-Content-Type-Options", "nosniff");
    ex->respond(std::move(r));
  }

  void heap(const std::shared_ptr<Exchange>& ex) {
#ifdef MUSTER_PPROF_NO_TCMALLOC
    ex->respond(pprof_error(
        501, "heap profiling is unavailable: this muster is a sanitizer build, without tcmalloc"));
#else
    if (!heap_sampling_on())
      return ex->respond(pprof_error(
          500,
          "heap profiling is off: start muster with --enable-pprof (it turns sampling on) "
          "or with TCMALLOC_SAMPLE_PARAMETER=524288 in its environment"));
    std::string sample;
    MallocExtension::instance()->GetHeapSample(&sample);
    const auto q = parse_form(ex->request().raw_query()).value_or(FormValues{});
    if (form_get(q, "debug").value_or("0") != "0") {
      Response r = Response::text(200, std::move(sample));
      r.headers.set("X-Content-Type-Options", "nosniff");
      return ex->respond(std::move(r));
    }
    ex->respond(attachment(std::move(sample), "heap"));
#endif
  }

  void profile(const std::shared_ptr<Exchange>& ex) {
    const auto q = parse_form(ex->request().raw_query()).value_or(FormValues{});
    long seconds = 30;
    if (auto s = form_get(q, "seconds"); s && !s->empty()) {
      char* end = nullptr;
      seconds = std::strtol(s->c_str(), &end, 10);
      if (*end != '\0' || seconds <= 0 || seconds > 3600)
        return ex->respond(pprof_error(
            400, "Bad Request: seconds must be an integer from 1 to 3600, got \"" + *s + "\""));
    }
    if (busy_.exchange(true))
      return ex->respond(
          pprof_error(500, "Could not enable CPU profiling: cpu profiling already in use"));
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    std::string file = dir_ + "/cpu.prof.XXXXXX";
    int fd = ::mkstemp(file.data());
    if (fd < 0 || !ProfilerStart(file.c_str())) {
      if (fd >= 0) {
        ::close(fd);
        std::filesystem::remove(file, ec);
      }
      busy_ = false;
      return ex->respond(pprof_error(500, "Could not enable CPU profiling: cannot write " + file));
    }
    ::close(fd);
    log::info("pprof", "cpu profile started", {{"seconds", seconds}});
    auto timer = std::make_shared<boost::asio::steady_timer>(io_, std::chrono::seconds(seconds));
    auto self = shared_from_this();
    auto finish = [self, ex, file, timer] {
      ProfilerStop();
      std::string data = read_file(file);
      std::error_code ignored;
      std::filesystem::remove(file, ignored);
      self->busy_ = false;
      ex->respond(attachment(std::move(data), "profile"));
    };
    auto once = std::make_shared<std::atomic<bool>>(false);
    ex->on_cancel([timer, once, finish] {
      // The client left (or the server stops): stop profiling now.
      if (!once->exchange(true)) finish();
    });
    timer->async_wait([once, finish](boost::system::error_code) {
      if (!once->exchange(true)) finish();
    });
  }

  boost::asio::io_context& io_;
  std::string dir_;
  std::atomic<bool> busy_{false};
};

Handler::Handler(boost::asio::io_context& io, std::string scratch_dir)
    : impl_(std::make_shared<Impl>(io, std::move(scratch_dir))) {}
Handler::~Handler() = default;
bool Handler::handle(const std::shared_ptr<Exchange>& ex) { return impl_->handle(ex); }

}  // namespace muster::net::pprof
