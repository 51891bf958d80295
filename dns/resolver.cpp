#include "dns/resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>

#include <algorithm>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>

namespace muster::dns {
namespace asio = boost::asio;

namespace {

// Lookups handed to c-ares at once per Resolver; more wait in a queue.  A
// burst of hundreds of UDP queries to one server overflows socket buffers
// (ours or the server's) and turns into retries and timeouts; 32 lookups
// (64 datagrams for A+AAAA) stay far below a default 208 KiB buffer.
constexpr std::size_t kMaxInFlight = 32;

// c-ares wants ares_library_init() before first use.  A function-local
// static makes that happen exactly once, thread-safely; we never call
// ares_library_cleanup (on Linux it frees nothing of consequence).
void ensure_library_initialized() {
  static const int status = ares_library_init(ARES_LIB_INIT_ALL);
  if (status != ARES_SUCCESS) {
    std::fprintf(stderr, "fatal: ares_library_init: %s\n", ares_strerror(status));
    std::abort();
  }
}

std::string format_address(int family, const void* addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (!inet_ntop(family, addr, buf, sizeof buf)) return "?";
  return buf;
}

// What an error message says about the resolver that failed.
struct ErrorContext {
  int tries;
  std::chrono::milliseconds timeout;
  std::string servers;
};

// The DNS outcome in words, with the kind callers branch on.
Error describe(int status, const ErrorContext& c) {
  switch (status) {
    case ARES_ENOTFOUND:
      return {ErrorKind::kNxDomain, "NXDOMAIN"};
    case ARES_ENODATA:
      return {ErrorKind::kNoData, "no records of that type (NOERROR, empty answer)"};
    case ARES_ETIMEOUT:
      return {ErrorKind::kTimeout, "timed out: no answer from DNS server " + c.servers + " after " +
                                       std::to_string(c.tries) + " tries (first timeout " +
                                       std::to_string(c.timeout.count()) +
                                       " ms, doubled per retry)"};
    case ARES_ECONNREFUSED:
      // c-ares 1.18 also ends up here when every try was answered REFUSED,
      // SERVFAIL or NOTIMP (those answers are discarded and retried).
      return {ErrorKind::kUnreachable,
              "could not contact DNS server " + c.servers +
                  " (connection refused, or it answered REFUSED/SERVFAIL)"};
    case ARES_EREFUSED:
      return {ErrorKind::kUnreachable, "REFUSED by DNS server " + c.servers};
    case ARES_ESERVFAIL:
      return {ErrorKind::kUnreachable, "SERVFAIL from DNS server " + c.servers};
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED:
      return {ErrorKind::kCancelled, "lookup cancelled: resolver shut down"};
    default:
      return {ErrorKind::kBadResponse, ares_strerror(status)};
  }
}

}  // namespace

Result<std::string> parse_dns_server(std::string_view server) {
  const std::string quoted = "\"" + std::string(server) + "\"";
  std::string_view host = server;
  std::string_view port = "53";
  if (!server.empty() && server.front() == '[') {
    const auto close = server.find(']');
    if (close == std::string_view::npos)
      return Error{ErrorKind::kInvalidArgument, "DNS server " + quoted + ": missing \"]\""};
    host = server.substr(1, close - 1);
    if (close + 1 < server.size()) {
      if (server[close + 1] != ':')
        return Error{ErrorKind::kInvalidArgument, "DNS server " + quoted + ": want [ipv6]:port"};
      port = server.substr(close + 2);
    }
  } else if (std::count(server.begin(), server.end(), ':') == 1) {
    const auto colon = server.find(':');
    host = server.substr(0, colon);
    port = server.substr(colon + 1);
  }
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(std::string(host), ec);
  if (ec)
    return Error{ErrorKind::kInvalidArgument,
                 "DNS server " + quoted +
                     " must be an IP address with an optional port (host:port, [ipv6]:port)"};
  unsigned value = 0;
  const auto [end, perr] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || perr != std::errc() || end != port.data() + port.size() || value == 0 ||
      value > 65535)
    return Error{ErrorKind::kInvalidArgument, "DNS server " + quoted + ": bad port"};
  return join_host_port(address.to_string(), static_cast<std::uint16_t>(value));
}

struct Resolver::Impl : std::enable_shared_from_this<Impl> {
  // One socket c-ares asked us to watch.  `generation` tells a wait that was
  // queued for an earlier socket with the same fd number (c-ares closes and
  // reopens sockets freely) from one for the current socket.
  struct Watch {
    std::unique_ptr<asio::posix::stream_descriptor> descriptor;
    bool want_read = false;
    bool want_write = false;
    bool read_armed = false;
    bool write_armed = false;
    std::uint64_t generation = 0;
  };

  // One lookup: waiting in `waiting`, or owned by c-ares between start()
  // and its callback (which c-ares runs exactly once, also from
  // ares_destroy).  It carries what the error text needs, because the
  // callback may run while the Impl is being destroyed.
  struct Query {
    explicit Query(Impl& impl) : owner(&impl), io(&impl.io), context(impl.error_context()) {}
    virtual ~Query() = default;
    // Hands the query to c-ares, which owns `this` from then on.
    virtual void start(ares_channel channel) = 0;
    // Completes the handler with kCancelled (posted); the query was never started.
    virtual void cancel() = 0;
    Impl* owner;
    asio::io_context* io;
    ErrorContext context;
  };

  struct SrvQuery final : Query {
    SrvQuery(Impl& impl, std::string n, SrvHandler h)
        : Query(impl), name(std::move(n)), handler(std::move(h)) {}
    void start(ares_channel channel) override {
      ares_search(channel, name.c_str(), ns_c_in, ns_t_srv, &Impl::on_srv, this);
    }
    void cancel() override {
      complete<std::vector<SrvRecord>>(*io, std::move(handler), describe(ARES_ECANCELLED, context));
    }
    std::string name;
    SrvHandler handler;
  };

  struct AddressQuery final : Query {
    AddressQuery(Impl& impl, std::string h, AddressHandler cb)
        : Query(impl), host(std::move(h)), handler(std::move(cb)) {}
    void start(ares_channel channel) override {
      ares_addrinfo_hints hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      // We pick the address ourselves (IPv4 first, as etcd); skip c-ares'
      // RFC 6724 sort and the UDP connect() probes it makes.
      hints.ai_flags = ARES_AI_NOSORT;
      ares_getaddrinfo(channel, host.c_str(), nullptr, &hints, &Impl::on_addrinfo, this);
    }
    void cancel() override {
      complete<std::vector<asio::ip::address>>(*io, std::move(handler),
                                               describe(ARES_ECANCELLED, context));
    }
    std::string host;
    AddressHandler handler;
  };

  ErrorContext error_context() const {
    return ErrorContext{options.tries, options.timeout, servers_text()};
  }

  // Queues a lookup and starts as many as the in-flight limit allows.
  void submit(std::unique_ptr<Query> query) {
    waiting.push_back(std::move(query));
    pump();
    update_timer();
  }

  // Starts waiting lookups while fewer than kMaxInFlight run.  Iterative,
  // and guarded against re-entry: a lookup may complete inside start()
  // (an address literal, a hosts-file hit), which calls finished().
  void pump() {
    if (pumping || destroying) return;
    pumping = true;
    while (in_flight < kMaxInFlight && !waiting.empty()) {
      std::unique_ptr<Query> next = std::move(waiting.front());
      waiting.pop_front();
      ++in_flight;
      next.release()->start(channel);  // c-ares owns it until the callback
    }
    pumping = false;
  }

  // Called from every c-ares callback.
  void finished() {
    if (destroying) return;
    --in_flight;
    pump();
  }

  explicit Impl(asio::io_context& io_context, ResolverOptions opts)
      : io(io_context), timer(io_context), options(std::move(opts)) {}

  ~Impl() {
    destroying = true;
    // Completes outstanding queries with ARES_EDESTRUCTION (their handlers
    // are posted as kCancelled) and reports every socket as (0,0) before
    // closing it, which releases our descriptors.
    if (channel) ares_destroy(channel);
    for (auto& query : waiting) query->cancel();
    waiting.clear();
    for (auto& [fd, watch] : watches) release(watch);
    watches.clear();
  }

  static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
    static_cast<Impl*>(data)->sock_state(fd, readable != 0, writable != 0);
  }

  void sock_state(ares_socket_t fd, bool readable, bool writable) {
    auto it = watches.find(fd);
    if (!readable && !writable) {
      // c-ares is about to close fd: stop watching and give the fd back
      // (release, never close: c-ares owns it).
      if (it != watches.end()) {
        release(it->second);
        watches.erase(it);
      }
      return;
    }
    if (it == watches.end()) {
      Watch w;
      w.descriptor = std::make_unique<asio::posix::stream_descriptor>(io, fd);
      w.generation = next_generation++;
      it = watches.emplace(fd, std::move(w)).first;
    }
    it->second.want_read = readable;
    it->second.want_write = writable;
    arm(fd, it->second);
  }

  static void release(Watch& w) {
    boost::system::error_code ignored;
    w.descriptor->cancel(ignored);
    (void)w.descriptor->release();
  }

  void arm(ares_socket_t fd, Watch& w) {
    std::weak_ptr<Impl> weak = weak_from_this();
    if (w.want_read && !w.read_armed) {
      w.read_armed = true;
      w.descriptor->async_wait(asio::posix::descriptor_base::wait_read,
                               [weak, fd, gen = w.generation](boost::system::error_code ec) {
                                 if (auto self = weak.lock()) self->ready(fd, gen, true, ec);
                               });
    }
    if (w.want_write && !w.write_armed) {
      w.write_armed = true;
      w.descriptor->async_wait(asio::posix::descriptor_base::wait_write,
                               [weak, fd, gen = w.generation](boost::system::error_code ec) {
                                 if (auto self = weak.lock()) self->ready(fd, gen, false, ec);
                               });
    }
  }

  void ready(ares_socket_t fd, std::uint64_t gen, bool read, boost::system::error_code ec) {
    auto it = watches.find(fd);
    if (it == watches.end() || it->second.generation != gen) return;  // stale wait
    (read ? it->second.read_armed : it->second.write_armed) = false;
    if (ec == asio::error::operation_aborted) return;
    ares_process_fd(channel, read ? fd : ARES_SOCKET_BAD, read ? ARES_SOCKET_BAD : fd);
    // Processing may have closed the socket, or closed and reopened one with
    // the same number (new generation): re-arm only what is still ours.
    it = watches.find(fd);
    if (it != watches.end() && it->second.generation == gen) arm(fd, it->second);
    update_timer();
  }

  // Keeps one timer armed for c-ares' next timeout (retransmits, give-up).
  void update_timer() {
    if (!channel) return;
    timeval buf{};
    timeval* next = ares_timeout(channel, nullptr, &buf);
    const std::uint64_t gen = ++timer_generation;
    if (!next) {
      timer.cancel();
      return;
    }
    timer.expires_after(std::chrono::seconds(next->tv_sec) +
                        std::chrono::microseconds(next->tv_usec));
    timer.async_wait([weak = weak_from_this(), gen](boost::system::error_code ec) {
      auto self = weak.lock();
      if (!self || ec || gen != self->timer_generation) return;
      ares_process_fd(self->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      self->update_timer();
    });
  }

  std::string servers_text() const {
    std::string out;
    ares_addr_port_node* nodes = nullptr;
    if (ares_get_servers_ports(channel, &nodes) != ARES_SUCCESS) return "?";
    for (auto* n = nodes; n; n = n->next) {
      const std::string ip = format_address(n->family, &n->addr);
      if (!out.empty()) out += ",";
      out += join_host_port(ip, n->udp_port ? static_cast<std::uint16_t>(n->udp_port) : 53);
    }
    ares_free_data(nodes);
    return out.empty() ? "(none configured)" : out;
  }

  template <class T, class Handler>
  static void complete(asio::io_context& io, Handler handler, Result<T> result) {
    asio::post(io, [handler = std::move(handler), result = std::move(result)]() mutable {
      handler(std::move(result));
    });
  }

  static void on_srv(void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
    std::unique_ptr<SrvQuery> call(static_cast<SrvQuery*>(arg));
    call->owner->finished();  // a no-op while the Impl is being destroyed
    if (status != ARES_SUCCESS) {
      complete<std::vector<SrvRecord>>(*call->io, std::move(call->handler),
                                       describe(status, call->context));
      return;
    }
    ares_srv_reply* reply = nullptr;
    const int parsed = ares_parse_srv_reply(abuf, alen, &reply);
    if (parsed != ARES_SUCCESS) {
      complete<std::vector<SrvRecord>>(*call->io, std::move(call->handler),
                                       describe(parsed, call->context));
      return;
    }
    std::vector<SrvRecord> records;
    for (auto* r = reply; r; r = r->next)
      records.push_back(SrvRecord{r->host ? r->host : "", r->port, r->priority, r->weight});
    ares_free_data(reply);
    complete<std::vector<SrvRecord>>(*call->io, std::move(call->handler), std::move(records));
  }

  static void on_addrinfo(void* arg, int status, int /*timeouts*/, ares_addrinfo* info) {
    std::unique_ptr<AddressQuery> call(static_cast<AddressQuery*>(arg));
    call->owner->finished();  // a no-op while the Impl is being destroyed
    using Addresses = std::vector<asio::ip::address>;
    if (status != ARES_SUCCESS) {
      if (info) ares_freeaddrinfo(info);
      complete<Addresses>(*call->io, std::move(call->handler), describe(status, call->context));
      return;
    }
    Addresses addresses;
    for (auto* n = info ? info->nodes : nullptr; n; n = n->ai_next) {
      if (n->ai_family == AF_INET) {
        const auto* sin = reinterpret_cast<const sockaddr_in*>(n->ai_addr);
        asio::ip::address_v4::bytes_type b;
        std::memcpy(b.data(), &sin->sin_addr, b.size());
        addresses.emplace_back(asio::ip::address_v4(b));
      } else if (n->ai_family == AF_INET6) {
        const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(n->ai_addr);
        asio::ip::address_v6::bytes_type b;
        std::memcpy(b.data(), &sin6->sin6_addr, b.size());
        addresses.emplace_back(asio::ip::address_v6(b, sin6->sin6_scope_id));
      }
    }
    if (info) ares_freeaddrinfo(info);
    if (addresses.empty()) {
      complete<Addresses>(*call->io, std::move(call->handler),
                          Error{ErrorKind::kNoData, "no A or AAAA records"});
      return;
    }
    complete<Addresses>(*call->io, std::move(call->handler), std::move(addresses));
  }

  asio::io_context& io;
  asio::steady_timer timer;
  ResolverOptions options;
  ares_channel channel = nullptr;
  std::map<ares_socket_t, Watch> watches;
  std::uint64_t next_generation = 1;
  std::uint64_t timer_generation = 0;
  // Lookups not yet handed to c-ares, FIFO.
  std::deque<std::unique_ptr<Query>> waiting;
  std::size_t in_flight = 0;
  bool pumping = false;
  bool destroying = false;
};

Resolver::Resolver(PrivateTag, std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
Resolver::~Resolver() = default;

Result<std::unique_ptr<Resolver>> Resolver::create(asio::io_context& io,
                                                   const ResolverOptions& options) {
  ensure_library_initialized();
  if (options.tries < 1 || options.timeout.count() < 1)
    return Error{ErrorKind::kInvalidArgument, "DNS timeout and tries must be positive"};
  std::string csv;
  if (!options.server.empty()) {
    auto parsed = parse_dns_server(options.server);
    if (!parsed) return parsed.error();
    csv = std::move(parsed).value();
  }
  auto impl = std::make_shared<Impl>(io, options);
  ares_options opts{};
  int mask = 0;
  opts.sock_state_cb = &Impl::on_sock_state;
  opts.sock_state_cb_data = impl.get();
  mask |= ARES_OPT_SOCK_STATE_CB;
  opts.timeout = static_cast<int>(options.timeout.count());
  mask |= ARES_OPT_TIMEOUTMS;
  opts.tries = options.tries;
  mask |= ARES_OPT_TRIES;
  std::string lookups = "fb";  // hosts file, then DNS: what the system resolver does
  opts.lookups = lookups.data();
  mask |= ARES_OPT_LOOKUPS;
  if (!csv.empty()) {
    // A server override means "ask exactly this server about exactly these
    // names": no resolv.conf search domains.
    opts.domains = nullptr;
    opts.ndomains = 0;
    mask |= ARES_OPT_DOMAINS;
  }
  const int status = ares_init_options(&impl->channel, &opts, mask);
  if (status != ARES_SUCCESS) {
    impl->channel = nullptr;
    return Error{ErrorKind::kBadResponse,
                 std::string("cannot initialise DNS resolver: ") + ares_strerror(status)};
  }
  if (!csv.empty()) {
    const int set = ares_set_servers_ports_csv(impl->channel, csv.c_str());
    if (set != ARES_SUCCESS)
      return Error{ErrorKind::kInvalidArgument,
                   "cannot use DNS server " + csv + ": " + ares_strerror(set)};
  }
  return std::make_unique<Resolver>(PrivateTag{}, std::move(impl));
}

std::string Resolver::servers() const { return impl_->servers_text(); }

asio::io_context& Resolver::context() const { return impl_->io; }

void Resolver::lookup_srv(const std::string& name, SrvHandler handler) {
  impl_->submit(std::make_unique<Impl::SrvQuery>(*impl_, name, std::move(handler)));
}

void Resolver::lookup_addresses(const std::string& host, AddressHandler handler) {
  impl_->submit(std::make_unique<Impl::AddressQuery>(*impl_, host, std::move(handler)));
}

}  // namespace muster::dns
