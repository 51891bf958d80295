// Fuzz target: muster-discovery's HTTP port -- the bytes of one connection
// into net/'s server and discovery/service.cpp (token creation, the v2 keys
// subset etcd's discovery client speaks, long-poll waits, /health,
// /metrics) over the LevelDB token store (a directory under $TMPDIR).
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "discovery/leveldb_store.h"
#include "discovery/service.h"
#include "net/server.h"
#include "tests/fuzz/socket_client.h"

namespace {

using namespace muster;

std::string scratch_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/muster-fuzz-discovery-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
  return tmpl;
}

struct DiscoveryPort {
  std::string dir = scratch_dir();
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
  std::shared_ptr<discovery::LevelDbTokenStore> store =
      std::make_shared<discovery::LevelDbTokenStore>(dir);
  std::unique_ptr<discovery::Service> service;
  std::unique_ptr<net::Server> server;
  uint16_t port = 0;

  DiscoveryPort() {
    discovery::ServiceOptions o;
    o.public_url = "http://127.0.0.1:8087";
    o.new_rate_per_minute = 0;  // the fuzzer creates tokens as fast as it can
    // A long-poll (`?wait=true`) holds its connection until this timer: the
    // client's half-close is not a disconnect.  Short, so an input with a
    // wait costs milliseconds, not a fifth of a second (at 200 ms the
    // fuzzer spent most of its time in epoll_wait, 128 inputs/s).
    o.wait_timeout_ms = 5;
    service = std::make_unique<discovery::Service>(io, o, store);
    server = std::make_unique<net::Server>(
        io, net::ServerOptions{},
        [this](std::shared_ptr<net::Exchange> ex) { service->handle(ex); });
    port = server->listen("127.0.0.1", 0);
  }
};

DiscoveryPort& discovery_port() {
  static DiscoveryPort* p = new DiscoveryPort();
  return *p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  DiscoveryPort& p = discovery_port();
  muster::fuzz::exchange(p.io, p.port, data, size);
  return 0;
}
