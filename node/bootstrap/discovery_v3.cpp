// v3 discovery, client side (see discovery_v3.h for the steps and where we
// differ from etcd 3.6).
#include "node/bootstrap/discovery_v3.h"

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cctype>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "api/etcdserverpb/rpc.pb.h"
#include "base/log.h"
#include "etcdwire/durations.h"
#include "etcdwire/ids.h"
#include "etcdwire/v3_json.h"
#include "net/grpc_client.h"
#include "node/config/urls.h"

namespace muster::bootstrap {
namespace {

namespace grpc = net::grpc;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
constexpr std::string_view kLog = "discovery";
constexpr const char* kRegistry = "/_etcd/registry";
// etcd's maxExponentialRetries: the backoff stops doubling after 2^8 units.
constexpr uint32_t kMaxExponent = 8;

constexpr const char* kRange = "/etcdserverpb.KV/Range";
constexpr const char* kPut = "/etcdserverpb.KV/Put";
constexpr const char* kTxn = "/etcdserverpb.KV/Txn";
constexpr const char* kWatch = "/etcdserverpb.Watch/Watch";
constexpr const char* kAuthenticate = "/etcdserverpb.Auth/Authenticate";

// Go's path.Clean: one slash between elements, "." dropped, ".." applied.
std::string clean_path(const std::string& p) {
  const bool rooted = !p.empty() && p[0] == '/';
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    const std::string e = p.substr(i, j - i);
    if (e == "..") {
      if (!parts.empty() && parts.back() != "..")
        parts.pop_back();
      else if (!rooted)
        parts.push_back(e);
    } else if (!e.empty() && e != ".") {
      parts.push_back(e);
    }
    i = j + 1;
  }
  std::string out = rooted ? "/" : "";
  for (size_t k = 0; k < parts.size(); ++k) out += (k ? "/" : "") + parts[k];
  return out.empty() ? "." : out;
}

// Go's strings.TrimSpace (ASCII).
std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

// Go's strconv.ParseInt(s, 10, 0): an optional sign, decimal digits.
std::optional<int64_t> parse_go_int(std::string_view s) {
  bool neg = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.empty() || s.size() > 18) return std::nullopt;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return neg ? -v : v;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

std::string go_duration(milliseconds d) {
  return etcdwire::format_go_duration(std::chrono::duration_cast<std::chrono::nanoseconds>(d));
}

// Errors a retry cannot mend: the backend refuses us, or is not etcd.
bool permanent(const grpc::Status& s) {
  return s.code == grpc::Code::kPermissionDenied || s.code == grpc::Code::kUnauthenticated ||
         s.code == grpc::Code::kInvalidArgument || s.code == grpc::Code::kUnimplemented;
}

bool invalid_token(const grpc::Status& s) {
  return s.message.find("invalid auth token") != std::string::npos;
}

// One --discovery-endpoints item, as etcd's client dials it: http:// is
// plaintext, https:// TLS, no scheme TLS only when TLS is configured.
struct Endpoint {
  std::string text;
  std::string host;
  uint16_t port = 0;
  bool tls = false;
};

std::optional<Endpoint> parse_endpoint(const std::string& text, bool tls_configured,
                                       std::string* error) {
  Endpoint e;
  e.text = text;
  std::string rest = text;
  e.tls = tls_configured;
  if (rest.rfind("http://", 0) == 0) {
    rest = rest.substr(7);
    e.tls = false;
  } else if (rest.rfind("https://", 0) == 0) {
    rest = rest.substr(8);
    e.tls = true;
  }
  std::string port;
  if (!config::split_host_port(rest, &e.host, &port) || e.host.empty() || port.empty() ||
      port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit) ||
      std::stoi(port) == 0 || std::stoi(port) > 65535) {
    *error = "invalid --discovery-endpoints entry \"" + text +
             "\" (want host:port, http://host:port or https://host:port)";
    return std::nullopt;
  }
  e.port = static_cast<uint16_t>(std::stoi(port));
  return e;
}

// The messages and the end of one call, for a thread that waits for them.
// The call's listener fills it on the channel's strand.
class Inbox {
 public:
  static grpc::ClientListener listener(const std::shared_ptr<Inbox>& self) {
    grpc::ClientListener l;
    l.on_message = [self](std::string m) {
      std::lock_guard lock(self->mu_);
      self->messages_.push_back(std::move(m));
      self->cv_.notify_all();
    };
    l.on_finish = [self](grpc::Status s) {
      std::lock_guard lock(self->mu_);
      self->end_ = std::move(s);
      self->cv_.notify_all();
    };
    return l;
  }
  enum class Next { kMessage, kEnd, kTimeout };
  // The next message, or the end (its status in *status); kTimeout when
  // `timeout` passed first (nullopt: wait as long as it takes).
  Next next(std::string* message, grpc::Status* status,
            std::optional<milliseconds> timeout = std::nullopt) {
    std::unique_lock lock(mu_);
    auto ready = [this] { return !messages_.empty() || end_.has_value(); };
    if (timeout) {
      if (!cv_.wait_for(lock, *timeout, ready)) return Next::kTimeout;
    } else {
      cv_.wait(lock, ready);
    }
    if (!messages_.empty()) {
      *message = std::move(messages_.front());
      messages_.pop_front();
      return Next::kMessage;
    }
    *status = *end_;
    return Next::kEnd;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> messages_;
  std::optional<grpc::Status> end_;
};

}  // namespace

std::string v3_token_prefix(const std::string& token) {
  return clean_path(std::string(kRegistry) + "/" + token);
}
std::string v3_size_key(const std::string& token) {
  return clean_path(v3_token_prefix(token) + "/_config/size");
}
std::string v3_members_prefix(const std::string& token) {
  return clean_path(v3_token_prefix(token) + "/members");
}
std::string v3_member_key(const std::string& token, const std::string& id_hex) {
  return clean_path(v3_members_prefix(token) + "/" + id_hex);
}

DiscoveryV3Options discovery_v3_options(const config::Config& cfg) {
  const config::DiscoveryV3Config& v3 = cfg.discovery_v3;
  auto ms = [](std::chrono::nanoseconds d) {
    return std::chrono::ceil<milliseconds>(d);  // "1ns" must not become 0 (no limit)
  };
  DiscoveryV3Options o;
  o.token = v3.token;
  o.endpoints = v3.endpoints;
  o.dial_timeout = ms(v3.dial_timeout);
  o.request_timeout = ms(v3.request_timeout);
  o.keepalive_time = ms(v3.keepalive_time);
  o.keepalive_timeout = ms(v3.keepalive_timeout);
  o.insecure_transport = v3.insecure_transport;
  o.insecure_skip_tls_verify = v3.insecure_skip_tls_verify;
  o.cert = v3.cert;
  o.key = v3.key;
  o.cacert = v3.cacert;
  o.user = v3.user;
  o.password = v3.password;
  o.max_retries = v3.max_retries;
  o.name = cfg.name;
  o.peer_urls = cfg.initial_advertise_peer_urls;
  o.registration_marker = cfg.data_dir + "/discovery-registration";
  return o;
}

// ---- the client -----------------------------------------------------------

class DiscoveryV3Client::Impl {
 public:
  explicit Impl(const DiscoveryV3Options& o)
      : o_(o),
        size_key_(v3_size_key(o.token)),
        members_prefix_(v3_members_prefix(o.token)),
        guard_(boost::asio::make_work_guard(io_)) {
    user_ = o.user;
    password_ = o.password;
    // "name:password" in --discovery-user, as its help says.
    if (password_.empty()) {
      if (auto colon = user_.find(':'); colon != std::string::npos) {
        password_ = user_.substr(colon + 1);
        user_.resize(colon);
      }
    }
    // etcd's client authenticates only with both a user and a password.
    if (!user_.empty() && password_.empty()) {
      log::warn(kLog, "--discovery-user is set without a password; not authenticating",
                {{"user", user_}});
      user_.clear();
    }
    // etcd 3.6's newTLSConfig: a TLS configuration exists when a TLS file is
    // given, transport security is asked for, or verification is skipped.
    const bool tls_configured = !o.cert.empty() || !o.key.empty() || !o.cacert.empty() ||
                                !o.insecure_transport || o.insecure_skip_tls_verify;
    for (const auto& text : o.endpoints) {
      std::string err;
      if (auto e = parse_endpoint(text, tls_configured, &err)) {
        endpoints_.push_back(*e);
      } else if (bad_.empty()) {
        bad_ = err;
      }
    }
    if (endpoints_.empty() && bad_.empty()) bad_ = "no --discovery-endpoints given";
    channels_.resize(endpoints_.size());
    thread_ = std::thread([this] {
      io_.run();
      ran_out_.set_value();
    });
  }

  ~Impl() {
    for (auto& c : channels_)
      if (c) c->close();
    channels_.clear();
    guard_.reset();
    // Let the io thread run the closes to their end (every call failed, its
    // listener and the channel let go of each other) and run out of work;
    // stopping it at once left each channel and its calls holding one
    // another (LSan: a leak per join).  A connection that does not close in
    // time is abandoned.
    if (ran_out_.get_future().wait_for(std::chrono::seconds(2)) != std::future_status::ready)
      io_.stop();
    thread_.join();
  }

  const DiscoveryV3Options& options() const { return o_; }
  const std::string& size_key() const { return size_key_; }
  const std::string& members_prefix() const { return members_prefix_; }
  std::string endpoints_text() const { return join(o_.endpoints, ","); }

  // ---- retries (etcd's d.retries, shared by every step) ----

  // After a failed attempt of `step`: sleeps etcd's backoff and returns
  // true, or false when max_retries retries have been spent.
  bool back_off(const std::string& step, const std::string& why) {
    if (retries_ >= o_.max_retries) return false;
    ++retries_;
    const milliseconds wait = o_.backoff_unit * (uint64_t{1} << std::min(retries_, kMaxExponent));
    log::warn(kLog, "retry connecting to discovery service",
              {{"reason", step},
               {"backoff", go_duration(wait)},
               {"retry", retries_},
               {"max-retries", o_.max_retries},
               {"error", why}});
    if (o_.sleep)
      o_.sleep(wait);
    else
      std::this_thread::sleep_for(wait);
    return true;
  }
  void reset_retries() { retries_ = 0; }
  Failure too_many(const std::string& step, const std::string& why) const {
    return {DiscoveryError::kTooManyRetries,
            "discovery: too many retries: " + step + " failed " + std::to_string(retries_ + 1) +
                " times in a row (--discovery-max-retries=" + std::to_string(o_.max_retries) +
                "); last error: " + why + " (--discovery-endpoints=" + endpoints_text() + ")"};
  }
  Failure refused(const std::string& what, const grpc::Status& s) const {
    // s.message names the endpoint (unary, open_watch).
    return {DiscoveryError::kProtocol, "discovery: " + what + " failed: " + s.message +
                                           " (a retry would not help: check the endpoints, "
                                           "--discovery-user and the user's permissions)"};
  }
  std::optional<Failure> bad_endpoints() const {
    if (bad_.empty()) return std::nullopt;
    return Failure{DiscoveryError::kBadUrl, "discovery: " + bad_};
  }

  // ---- calls ----

  // One unary call, one attempt: the endpoints in turn, starting with the
  // one that answered last, while they cannot be reached and the request
  // timeout allows.  The status message names the endpoint on failure.
  grpc::Status unary(const char* method, const google::protobuf::Message& request,
                     google::protobuf::Message* response) {
    if (!bad_.empty()) return {grpc::Code::kInvalidArgument, bad_};
    const auto deadline = Clock::now() + o_.request_timeout;
    const std::string body = request.SerializeAsString();
    grpc::Status last{grpc::Code::kDeadlineExceeded, "context deadline exceeded"};
    for (size_t i = 0; i < endpoints_.size(); ++i) {
      const size_t ep = (preferred_ + i) % endpoints_.size();
      const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) break;
      std::string out;
      grpc::Status s = authenticate(ep, left);
      if (s.ok()) s = call_once(ep, method, body, &out, left);
      if (!s.ok() && invalid_token(s) && !user_.empty()) {
        // The token expired (simple tokens live --auth-token-ttl): once more
        // with a fresh one, as etcd's client does.
        token_.reset();
        s = authenticate(ep, left);
        if (s.ok()) s = call_once(ep, method, body, &out, left);
      }
      if (s.ok() && !response->ParseFromString(out))
        s = {grpc::Code::kInternal, std::string("cannot parse the answer to ") + method};
      if (s.ok()) {
        preferred_ = ep;
        return s;
      }
      s.message = endpoints_[ep].text + ": " + s.message;
      last = s;
      if (s.code != grpc::Code::kUnavailable) return s;
    }
    return last;
  }

  // A watch on [key, range_end) from `start_revision`, on the first endpoint
  // that confirms it (created).  On success *call and *inbox hold it.
  grpc::Status open_watch(const std::string& key, int64_t start_revision,
                          std::shared_ptr<grpc::ClientCall>* call, std::shared_ptr<Inbox>* inbox) {
    if (!bad_.empty()) return {grpc::Code::kInvalidArgument, bad_};
    etcdserverpb::WatchRequest req;
    auto* create = req.mutable_create_request();
    create->set_key(key);
    create->set_range_end(etcdwire::prefix_end(key));
    create->set_start_revision(start_revision);
    grpc::Status last{grpc::Code::kUnavailable, "no endpoint"};
    for (size_t i = 0; i < endpoints_.size(); ++i) {
      const size_t ep = (preferred_ + i) % endpoints_.size();
      grpc::Status s = authenticate(ep, o_.request_timeout);
      if (s.ok()) {
        auto box = std::make_shared<Inbox>();
        auto c = channel(ep).call(kWatch, metadata(), Inbox::listener(box));
        c->send(req.SerializeAsString());
        std::string m;
        switch (box->next(&m, &s, o_.request_timeout)) {
          case Inbox::Next::kMessage: {
            etcdserverpb::WatchResponse r;
            if (!r.ParseFromString(m)) {
              s = {grpc::Code::kInternal, "cannot parse a WatchResponse"};
            } else if (r.canceled() || !r.created()) {
              s = {grpc::Code::kUnknown,
                   r.cancel_reason().empty() ? "watch not created" : r.cancel_reason()};
              if (r.compact_revision() > 0) s = {grpc::Code::kOutOfRange, "compacted"};
            } else {
              preferred_ = ep;
              *call = std::move(c);
              *inbox = std::move(box);
              return {};
            }
            break;
          }
          case Inbox::Next::kEnd:
            break;
          case Inbox::Next::kTimeout:
            s = {grpc::Code::kDeadlineExceeded, "context deadline exceeded"};
            break;
        }
        c->cancel();
      }
      s.message = endpoints_[ep].text + ": " + s.message;
      last = s;
      if (s.code != grpc::Code::kUnavailable && s.code != grpc::Code::kDeadlineExceeded) return s;
    }
    return last;
  }

  // ---- the steps ----

  // etcd's checkCluster minus the full rule: the size and the
  // registrations, retried on failure.
  std::optional<Failure> check(TokenState* out) {
    if (auto f = bad_endpoints()) return f;
    for (;;) {
      etcdserverpb::RangeRequest sq;
      sq.set_key(size_key_);
      etcdserverpb::RangeResponse sr;
      grpc::Status s = unary(kRange, sq, &sr);
      if (!s.ok()) {
        log::warn(kLog, "failed to get cluster size from discovery service",
                  {{"clusterSizeKey", size_key_}, {"error", s.message}});
        if (permanent(s)) return refused("reading " + size_key_, s);
        if (!back_off("cluster status check", s.message))
          return too_many("cluster status check", s.message);
        continue;
      }
      if (sr.kvs_size() == 0)
        return Failure{DiscoveryError::kSizeNotFound,
                       "discovery: size key not found: " + size_key_ + " does not exist at " +
                           endpoints_text() +
                           " (an unknown token, or its size was never written: musterctl "
                           "discovery new --v3 --endpoints " +
                           endpoints_text() + " --token " + o_.token + " --size N)"};
      const std::string& value = sr.kvs(0).value();
      const auto size = parse_go_int(value);
      if (!size || *size <= 0)
        return Failure{DiscoveryError::kBadSize, "discovery: size key is bad: " + size_key_ +
                                                     " holds \"" + value.substr(0, 64) +
                                                     "\", want a positive integer"};
      etcdserverpb::RangeRequest mq;
      mq.set_key(members_prefix_);
      mq.set_range_end(etcdwire::prefix_end(members_prefix_));
      etcdserverpb::RangeResponse mr;
      s = unary(kRange, mq, &mr);
      if (!s.ok()) {
        log::warn(kLog, "failed to get cluster members from discovery service",
                  {{"membersKeyPrefix", members_prefix_}, {"error", s.message}});
        if (permanent(s)) return refused("reading " + members_prefix_, s);
        if (!back_off("cluster status check", s.message))
          return too_many("cluster status check", s.message);
        continue;
      }
      TokenState st;
      st.size = static_cast<uint64_t>(*size);
      st.index = static_cast<uint64_t>(mr.header().revision());
      std::set<std::string> seen;
      for (const auto& kv : mr.kvs()) {
        Registration r;
        if (!registration_of(kv, &r) || !seen.insert(r.id).second) continue;
        log::info(kLog, "found peer from discovery service",
                  {{"memberKey", member_key(r.id)}, {"memberInfo", r.value}});
        st.members.push_back(std::move(r));
      }
      sort_registrations(st.members);
      reset_retries();
      *out = std::move(st);
      return std::nullopt;
    }
  }

  // A plain Put, retried ("register member itself").
  std::optional<Failure> put(const std::string& key, const std::string& value) {
    if (auto f = bad_endpoints()) return f;
    for (;;) {
      etcdserverpb::PutRequest req;
      req.set_key(key);
      req.set_value(value);
      etcdserverpb::PutResponse resp;
      grpc::Status s = unary(kPut, req, &resp);
      if (s.ok()) {
        reset_retries();
        log::info(kLog, "register member itself successfully",
                  {{"memberKey", key}, {"memberInfo", value}});
        return std::nullopt;
      }
      log::warn(kLog, "failed to register members itself to the discovery service",
                {{"memberKey", key}, {"error", s.message}});
      if (permanent(s)) return refused("writing " + key, s);
      if (!back_off("register member itself", s.message))
        return too_many("register member itself", s.message);
    }
  }

  // A Txn without compares, retried.
  std::optional<Failure> txn(const etcdserverpb::TxnRequest& req, const std::string& what) {
    for (;;) {
      etcdserverpb::TxnResponse resp;
      grpc::Status s = unary(kTxn, req, &resp);
      if (s.ok()) {
        reset_retries();
        return std::nullopt;
      }
      if (permanent(s)) return refused(what, s);
      if (!back_off(what, s.message)) return too_many(what, s.message);
    }
  }

  // A key/value under the members prefix as a registration; false (and a
  // warning, as etcd's clusterInfo.add) when its value is not "name=...".
  bool registration_of(const mvccpb::KeyValue& kv, Registration* r) const {
    const std::string key = trim(kv.key());
    const std::string value = trim(kv.value());
    if (key.rfind(members_prefix_, 0) != 0) return false;
    if (value.find('=') == std::string::npos) {
      log::warn(kLog, "invalid peer info returned from discovery service",
                {{"memberKey", key}, {"memberInfo", value}});
      return false;
    }
    r->id = key.substr(members_prefix_.size());
    if (!r->id.empty() && r->id[0] == '/') r->id.erase(0, 1);
    r->value = value;
    r->created_index = static_cast<uint64_t>(kv.create_revision());
    r->modified_index = static_cast<uint64_t>(kv.mod_revision());
    return true;
  }
  std::string member_key(const std::string& id) const { return members_prefix_ + "/" + id; }

  static void sort_registrations(std::vector<Registration>& v) {
    std::sort(v.begin(), v.end(), [](const Registration& a, const Registration& b) {
      return a.created_index != b.created_index ? a.created_index < b.created_index : a.id < b.id;
    });
  }

 private:
  grpc::Channel& channel(size_t ep) {
    if (!channels_[ep]) {
      const Endpoint& e = endpoints_[ep];
      grpc::ChannelOptions co;
      co.host = e.host;
      co.port = e.port;
      co.connect_timeout = o_.dial_timeout;
      if (e.tls) {
        net::TlsOptions tls;
        tls.cert_file = o_.cert;
        tls.key_file = o_.key;
        tls.trusted_ca_file = o_.cacert;
        tls.insecure_skip_verify = o_.insecure_skip_tls_verify;
        co.tls = tls;
      }
      // gRPC's keepalive (a ping after keepalive-time of silence, the
      // connection dropped after keepalive-timeout without an answer) as
      // TCP keep-alive probes and TCP_USER_TIMEOUT: the same dead-peer
      // detection, and no HTTP/2 PINGs for a server's ping policy to count.
      if (o_.keepalive_time.count() > 0) {
        co.keep_alive.enabled = true;
        co.keep_alive.idle = std::max<std::chrono::seconds>(
            std::chrono::seconds(1), std::chrono::ceil<std::chrono::seconds>(o_.keepalive_time));
        co.keep_alive.interval = std::chrono::seconds(1);
        const auto t = std::chrono::ceil<std::chrono::seconds>(o_.keepalive_timeout);
        co.keep_alive.probes = static_cast<int>(std::max<int64_t>(1, t.count()));
        co.keep_alive.user_timeout = o_.keepalive_timeout;
      }
      channels_[ep] = std::make_unique<grpc::Channel>(io_, co);
    }
    return *channels_[ep];
  }

  grpc::Metadata metadata() const {
    grpc::Metadata md;
    if (token_ && !token_->empty()) md.add("token", *token_);
    return md;
  }

  grpc::Status call_once(size_t ep, const char* method, const std::string& body, std::string* out,
                         milliseconds timeout) {
    auto box = std::make_shared<Inbox>();
    auto c = channel(ep).call(method, metadata(), Inbox::listener(box), timeout);
    c->send(body);
    c->half_close();
    std::string m;
    grpc::Status s;
    bool got = false;
    while (box->next(&m, &s) == Inbox::Next::kMessage) {
      *out = std::move(m);
      got = true;
    }
    if (s.ok() && !got) s = {grpc::Code::kInternal, std::string("no answer to ") + method};
    return s;
  }

  // With a user: a token for the calls (Auth.Authenticate), once.
  grpc::Status authenticate(size_t ep, milliseconds timeout) {
    if (user_.empty() || token_) return {};
    etcdserverpb::AuthenticateRequest req;
    req.set_name(user_);
    req.set_password(password_);
    std::string out;
    grpc::Status s = call_once(ep, kAuthenticate, req.SerializeAsString(), &out, timeout);
    if (!s.ok()) {
      if (s.message.find("authentication is not enabled") != std::string::npos) {
        token_ = "";  // as etcd's client: go on without a token
        return {};
      }
      s.message = "authenticating as " + user_ + ": " + s.message;
      return s;
    }
    etcdserverpb::AuthenticateResponse resp;
    if (!resp.ParseFromString(out)) return {grpc::Code::kInternal, "bad AuthenticateResponse"};
    token_ = resp.token();
    return {};
  }

  DiscoveryV3Options o_;
  std::string size_key_, members_prefix_;
  std::string user_, password_;
  std::vector<Endpoint> endpoints_;
  std::string bad_;  // why the endpoints cannot be used ("" = they can)
  size_t preferred_ = 0;
  std::optional<std::string> token_;  // set once authenticated ("" = auth is off)
  uint32_t retries_ = 0;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::vector<std::unique_ptr<grpc::Channel>> channels_;
  std::promise<void> ran_out_;  // set when io_.run() returns
  std::thread thread_;
};

DiscoveryV3Client::DiscoveryV3Client(const DiscoveryV3Options& options)
    : impl_(std::make_unique<Impl>(options)) {}
DiscoveryV3Client::~DiscoveryV3Client() = default;

std::optional<DiscoveryV3Client::Failure> DiscoveryV3Client::state(TokenState* out) {
  return impl_->check(out);
}

std::optional<DiscoveryV3Client::Failure> DiscoveryV3Client::record_replacement(
    const std::vector<uint64_t>& cluster_member_ids, const std::string& id_hex,
    const std::string& value, std::vector<std::string>* removed) {
  TokenState st;
  if (auto f = impl_->check(&st)) return f;
  etcdserverpb::TxnRequest req;
  for (size_t i = 0; i < st.members.size() && i < st.size; ++i) {
    const auto id = etcdwire::parse_hex_id(st.members[i].id);
    const bool member = id && std::find(cluster_member_ids.begin(), cluster_member_ids.end(),
                                        *id) != cluster_member_ids.end();
    if (member || st.members[i].id == id_hex) continue;
    req.add_success()->mutable_request_delete_range()->set_key(impl_->member_key(st.members[i].id));
    removed->push_back(st.members[i].id);
  }
  auto* put = req.add_success()->mutable_request_put();
  put->set_key(v3_member_key(impl_->options().token, id_hex));
  put->set_value(value);
  return impl_->txn(req, "record the replacement in the token");
}

// ---- the join, step by step ----------------------------------------------

namespace {

class JoinerV3 {
 public:
  JoinerV3(const DiscoveryV3Options& o, DiscoveryV3Client::Impl& impl) : o_(o), impl_(&impl) {}

  DiscoveryResult run() {
    std::vector<std::string> urls = o_.peer_urls;
    std::sort(urls.begin(), urls.end());
    self_id_ = etcdwire::id_to_hex(etcdwire::member_id(urls, o_.token));
    std::vector<std::string> pairs;
    for (const auto& u : urls) pairs.push_back(o_.name + "=" + u);
    self_value_ = join(pairs, ",");
    log::info(kLog, "Bootstrapping cluster using v3 discovery.",
              {{"discovery-token", o_.token},
               {"discovery-endpoints", impl_->endpoints_text()},
               {"member-id", self_id_},
               {"value", self_value_}});

    // 1. Already full?  Then write nothing.
    TokenState st;
    if (auto f = impl_->check(&st)) return error(*f);
    result_.size = st.size;
    if (auto full = full_check(st)) return *full;
    if (auto r = bootstrapped_before(st)) return *r;

    // 2. Register.
    if (auto f = impl_->put(v3_member_key(o_.token, self_id_), self_value_)) return error(*f);
    write_registration_marker(o_.registration_marker, self_value_);

    // 3. Re-check: someone may have taken the last seat meanwhile.
    if (auto f = impl_->check(&st)) return error(*f);
    if (auto full = full_check(st)) return *full;

    // 4. Wait for the rest.
    if (auto r = wait_peers(st)) return *r;

    // 5. The first `size` registrations form the cluster.
    return build(st);
  }

 private:
  DiscoveryResult error(const DiscoveryV3Client::Failure& f) {
    result_.kind = DiscoveryResult::Kind::kError;
    result_.error = f.error;
    result_.message = f.message;
    return result_;
  }

  std::string where() const { return "token " + o_.token + " at " + impl_->endpoints_text(); }

  // etcd's rule, as v2's (research 1.7), by create revision.
  std::optional<DiscoveryResult> full_check(const TokenState& st) {
    return full_cluster_answer(st, self_id_, o_.name, where(), result_);
  }

  // Our registration among the first `size` of a token that is already
  // complete: the cluster may have formed with us, and a member whose data
  // dir was wiped must not start Raft afresh under its old ID (it may have
  // voted).  Only the registration marker proves it never started.
  std::optional<DiscoveryResult> bootstrapped_before(const TokenState& st) {
    if (st.members.size() < st.size) return std::nullopt;
    for (size_t i = 0; i < st.size && i < st.members.size(); ++i) {
      if (st.members[i].id != self_id_) continue;
      if (st.members[i].value == self_value_ &&
          registration_marker_holds(o_.registration_marker, self_value_)) {
        log::info(kLog, "found this member's own earlier registration; resuming",
                  {{"member-id", self_id_}});
        return std::nullopt;
      }
      return error({DiscoveryError::kDuplicateId,
                    "member " + self_id_ + " has already been bootstrapped: it is registered in " +
                        where() + " as \"" + st.members[i].value +
                        "\" and that token is complete, so its cluster may have formed with it; "
                        "start it with its data dir, or remove it from the cluster (member "
                        "remove) and start it with a new token or --discovery-replace-dead"});
    }
    return std::nullopt;
  }

  // etcd's waitPeers: watch the members prefix from the listing's revision
  // + 1 until `size` registrations are known.  `st` holds them on return.
  std::optional<DiscoveryResult> wait_peers(TokenState& st) {
    std::map<std::string, Registration> known;
    for (const auto& m : st.members) known[m.id] = m;
    int64_t start = static_cast<int64_t>(st.index) + 1;
    while (known.size() < st.size) {
      log::info(kLog, "waiting for peers from discovery service",
                {{"clusterSize", st.size}, {"found-peers", known.size()}});
      std::shared_ptr<net::grpc::ClientCall> call;
      std::shared_ptr<Inbox> inbox;
      net::grpc::Status s = impl_->open_watch(impl_->members_prefix(), start, &call, &inbox);
      bool compacted = s.code == net::grpc::Code::kOutOfRange;
      if (s.ok()) {
        std::string m;
        while (known.size() < st.size) {
          if (inbox->next(&m, &s) == Inbox::Next::kEnd) {
            if (s.ok()) s = {net::grpc::Code::kUnavailable, "the watch ended"};
            break;
          }
          etcdserverpb::WatchResponse r;
          if (!r.ParseFromString(m)) continue;
          if (r.canceled()) {
            compacted = r.compact_revision() > 0;
            s = {net::grpc::Code::kUnknown,
                 compacted ? "watch revision compacted" : r.cancel_reason()};
            if (r.cancel_reason().find("permission denied") != std::string::npos)
              s.code = net::grpc::Code::kPermissionDenied;
            break;
          }
          impl_->reset_retries();  // the watch works
          for (const auto& ev : r.events()) take(ev, known);
        }
        call->cancel();
        if (known.size() >= st.size) break;
      }
      // The watch could not be opened, was cancelled or broke: read the
      // token again and watch on from its revision (etcd re-watches the old
      // revision, which fails for ever once it is compacted).
      log::warn(kLog, "watching the discovery token failed; reading it again",
                {{"error", s.message}});
      if (net::grpc::Code c = s.code;
          c == net::grpc::Code::kPermissionDenied || c == net::grpc::Code::kUnauthenticated ||
          c == net::grpc::Code::kUnimplemented || c == net::grpc::Code::kInvalidArgument)
        return error(impl_->refused("watching " + impl_->members_prefix(), s));
      if (!compacted && !impl_->back_off("wait peers", s.message))
        return error(impl_->too_many("wait peers", s.message));
      TokenState fresh;
      if (auto f = impl_->check(&fresh)) return error(*f);
      if (auto full = full_check(fresh)) return *full;
      known.clear();
      for (const auto& mm : fresh.members) known[mm.id] = mm;
      start = static_cast<int64_t>(fresh.index) + 1;
    }
    log::info(kLog, "found all needed peers from discovery service",
              {{"clusterSize", st.size}, {"found-peers", known.size()}});
    st.members.clear();
    for (auto& [id, r] : known) st.members.push_back(r);
    DiscoveryV3Client::Impl::sort_registrations(st.members);
    return std::nullopt;
  }

  // One watch event: a new registration counts; a deleted one no longer
  // does (etcd keeps counting it); an overwrite is not a new member.
  void take(const mvccpb::Event& ev, std::map<std::string, Registration>& known) {
    if (ev.type() == mvccpb::Event::DELETE) {
      std::string id = trim(ev.kv().key())
                           .substr(std::min(ev.kv().key().size(), impl_->members_prefix().size()));
      if (!id.empty() && id[0] == '/') id.erase(0, 1);
      if (known.erase(id))
        log::warn(kLog, "a registration was removed", {{"memberKey", trim(ev.kv().key())}});
      return;
    }
    Registration r;
    if (!impl_->registration_of(ev.kv(), &r)) return;
    if (known.count(r.id)) {
      log::warn(kLog, "found duplicate peer from discovery service",
                {{"memberKey", impl_->member_key(r.id)}, {"memberInfo", r.value}});
      return;
    }
    log::info(kLog, "found peer from discovery service",
              {{"memberKey", impl_->member_key(r.id)}, {"memberInfo", r.value}});
    known[r.id] = std::move(r);
  }

  DiscoveryResult build(const TokenState& st) {
    std::vector<std::string> values;
    for (size_t i = 0; i < st.size && i < st.members.size(); ++i)
      values.push_back(st.members[i].value);
    const std::string cluster = join(values, ",");
    auto parsed = config::parse_initial_cluster(cluster);
    if (!parsed.ok())
      return error({DiscoveryError::kInvalidUrl, "discovery: invalid peer URL: the first " +
                                                     std::to_string(st.size) +
                                                     " registrations of " + where() + " give \"" +
                                                     cluster + "\": " + parsed.error()});
    result_.kind = DiscoveryResult::Kind::kCluster;
    result_.initial_cluster = cluster;
    for (const auto& [name, us] : parsed.value())
      result_.peer_urls.insert(result_.peer_urls.end(), us.begin(), us.end());
    log::info(kLog, "discovery joined cluster successfully", {{"cluster", cluster}});
    return result_;
  }

  DiscoveryV3Options o_;
  DiscoveryV3Client::Impl* impl_;
  std::string self_id_;
  std::string self_value_;
  DiscoveryResult result_;
};

}  // namespace

DiscoveryResult join_cluster_v3(const DiscoveryV3Options& options) {
  DiscoveryV3Client::Impl impl(options);
  return JoinerV3(options, impl).run();
}

void record_replacement_in_v3_token(const config::Config& cfg, uint64_t member_id,
                                    const std::vector<uint64_t>& cluster_member_ids) {
  DiscoveryV3Options o = discovery_v3_options(cfg);
  o.max_retries = std::min<uint32_t>(o.max_retries, 2);  // the member is in the cluster already
  std::vector<std::string> urls = cfg.initial_advertise_peer_urls;
  std::sort(urls.begin(), urls.end());
  std::vector<std::string> pairs;
  for (const auto& u : urls) pairs.push_back(cfg.name + "=" + u);
  const std::string id_hex = etcdwire::id_to_hex(member_id);
  DiscoveryV3Client token(o);
  std::vector<std::string> removed;
  if (auto f = token.record_replacement(cluster_member_ids, id_hex, join(pairs, ","), &removed)) {
    log::warn("etcdmain", "could not record this member in the discovery token",
              {{"error", f->message}});
    return;
  }
  log::info("etcdmain", "recorded this member in the v3 discovery token",
            {{"member-key", v3_member_key(o.token, id_hex)}, {"removed", removed}});
}

std::vector<std::string> v3_token_peer_urls(const config::Config& cfg, uint64_t* size,
                                            std::string* error, uint32_t max_retries) {
  DiscoveryV3Options o = discovery_v3_options(cfg);
  o.max_retries = max_retries;
  DiscoveryV3Client client(o);
  TokenState st;
  if (auto f = client.state(&st)) {
    *error = f->message;
    return {};
  }
  std::vector<std::string> urls;
  for (size_t i = 0; i < st.members.size() && i < st.size; ++i) {
    std::vector<std::pair<std::string, std::string>> pairs;
    if (!parse_registration(st.members[i].value, &pairs)) continue;
    for (const auto& [name, u] : pairs) urls.push_back(u);
  }
  if (size) *size = st.size;
  if (urls.empty()) *error = "no member has registered with v3 discovery token " + o.token + " yet";
  return urls;
}

}  // namespace muster::bootstrap
