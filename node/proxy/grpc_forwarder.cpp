// node/proxy/grpc_forwarder.cpp: see grpc_forwarder.h.
#include "node/proxy/grpc_forwarder.h"

#include <set>
#include <vector>

#include "base/log.h"
#include "net/url.h"

namespace muster::proxy {

namespace grpc = net::grpc;

namespace {

// Request messages kept for a retry on another member, until the first
// answer arrives; past this a failure is final.
constexpr std::size_t kRetryBufferLimit = 4u << 20;

bool never_reached(const grpc::Status& s) {
  if (s.code != grpc::Code::kUnavailable) return false;
  for (const char* p : {"cannot connect", "cannot resolve", "TLS handshake", "did not agree"})
    if (s.message.rfind(p, 0) == 0) return true;
  return false;
}

}  // namespace

// One accepted call and its upstream counterpart.  Lives until both ends are
// done; everything runs on the accepting call's strand or the channel's, so
// the state is guarded by a mutex.
class GrpcForwarder::Relay : public std::enable_shared_from_this<Relay> {
 public:
  Relay(GrpcForwarder& f, std::shared_ptr<grpc::Call> down, std::vector<std::string> endpoints)
      : f_(f), down_(std::move(down)), endpoints_(std::move(endpoints)) {}

  void start() {
    std::weak_ptr<Relay> weak = shared_from_this();
    grpc::Call::Listener l;
    l.on_message = [weak](std::string m) {
      if (auto r = weak.lock()) r->from_client(std::move(m));
    };
    l.on_half_close = [weak] {
      if (auto r = weak.lock()) r->client_half_closed();
    };
    // The listener holds the relay alive until the call ends.
    l.on_cancel = [self = shared_from_this()] { self->client_cancelled(); };
    down_->start(std::move(l));
    next_endpoint();
  }

 private:
  void next_endpoint() {
    std::shared_ptr<grpc::ClientCall> up;
    std::vector<std::string> replay;
    bool half = false;
    {
      std::lock_guard l(mu_);
      if (ended_) return;
      if (next_ >= endpoints_.size()) {
        ended_ = true;
        const size_t n = endpoints_.size();
        down_->finish({grpc::Code::kUnavailable,
                       "proxy: unable to reach any of " + std::to_string(n) + " endpoint(s)"});
        return;
      }
      url_ = endpoints_[next_++];
      auto ch = f_.channel(url_);
      if (!ch) return fail_locked("proxy: bad member URL " + url_);
      std::weak_ptr<Relay> weak = shared_from_this();
      grpc::ClientListener cl;
      cl.on_message = [weak](std::string m) {
        if (auto r = weak.lock()) r->from_member(std::move(m));
      };
      cl.on_finish = [self = shared_from_this(), gen = ++generation_](grpc::Status s) {
        self->member_finished(gen, std::move(s));
      };
      grpc::Metadata md;
      for (const auto& [n, v] : down_->metadata().fields())
        if (n != "user-agent" && n.rfind("grpc-", 0) != 0) md.add(n, v);
      std::optional<std::chrono::milliseconds> timeout;
      if (auto d = down_->deadline())
        timeout = std::max(std::chrono::milliseconds(1),
                           std::chrono::duration_cast<std::chrono::milliseconds>(
                               *d - std::chrono::steady_clock::now()));
      up_ = ch->call(down_->method(), std::move(md), std::move(cl), timeout);
      up = up_;
      replay = sent_;
      half = client_half_closed_;
    }
    for (auto& m : replay) up->send(std::move(m));
    if (half) up->half_close();
  }

  void fail_locked(const std::string& why) {
    ended_ = true;
    down_->finish({grpc::Code::kUnavailable, why});
  }

  void from_client(std::string m) {
    std::shared_ptr<grpc::ClientCall> up;
    {
      std::lock_guard l(mu_);
      if (ended_) return;
      if (!answered_) {
        buffered_ += m.size();
        if (buffered_ <= kRetryBufferLimit)
          sent_.push_back(m);
        else
          answered_ = true;  // too much to replay: no retry from here on
      }
      up = up_;
    }
    if (up) up->send(std::move(m));
  }

  void client_half_closed() {
    std::shared_ptr<grpc::ClientCall> up;
    {
      std::lock_guard l(mu_);
      client_half_closed_ = true;
      up = up_;
    }
    if (up) up->half_close();
  }

  void client_cancelled() {
    std::shared_ptr<grpc::ClientCall> up;
    {
      std::lock_guard l(mu_);
      ended_ = true;
      up = std::move(up_);
    }
    if (up) up->cancel();
  }

  void from_member(std::string m) {
    {
      std::lock_guard l(mu_);
      if (ended_) return;
      answered_ = true;
      sent_.clear();
    }
    f_.director_.succeeded(url_);
    down_->send(std::move(m));
  }

  void member_finished(uint64_t gen, grpc::Status s) {
    bool retry = false;
    {
      std::lock_guard l(mu_);
      if (ended_ || gen != generation_) return;
      if (!answered_ && never_reached(s)) {
        retry = true;
        up_.reset();
      } else {
        ended_ = true;
      }
    }
    if (retry) {
      log::warn("proxy", "member unreachable for a gRPC call; trying the next",
                {{"endpoint", url_}, {"error", s.message}});
      f_.director_.failed(url_);
      return next_endpoint();
    }
    down_->finish(std::move(s));
  }

  GrpcForwarder& f_;
  std::shared_ptr<grpc::Call> down_;
  std::vector<std::string> endpoints_;
  std::mutex mu_;
  size_t next_ = 0;
  uint64_t generation_ = 0;
  std::string url_;
  std::shared_ptr<grpc::ClientCall> up_;
  std::vector<std::string> sent_;  // request messages so far (for a retry)
  size_t buffered_ = 0;
  bool answered_ = false, client_half_closed_ = false, ended_ = false;
};

GrpcForwarder::GrpcForwarder(boost::asio::io_context& io, Director& director, net::TlsOptions tls,
                             bool readonly)
    : io_(io), director_(director), tls_(std::move(tls)), readonly_(readonly) {}

bool GrpcForwarder::is_write(const std::string& method) {
  static const std::set<std::string> reads = {
      "/etcdserverpb.KV/Range",
      "/etcdserverpb.Watch/Watch",
      "/etcdserverpb.Lease/LeaseTimeToLive",
      "/etcdserverpb.Lease/LeaseLeases",
      "/etcdserverpb.Cluster/MemberList",
      "/etcdserverpb.Maintenance/Status",
      "/etcdserverpb.Maintenance/Hash",
      "/etcdserverpb.Maintenance/HashKV",
      "/etcdserverpb.Maintenance/Snapshot",
      "/etcdserverpb.Auth/AuthStatus",
      "/grpc.health.v1.Health/Check",
      "/grpc.health.v1.Health/Watch",
  };
  return reads.count(method) == 0;
}

void GrpcForwarder::forward(const std::shared_ptr<grpc::Call>& call) {
  if (readonly_ && is_write(call->method())) {
    // Started so that the refusal is the call's answer.
    call->start({});
    call->finish({grpc::Code::kPermissionDenied,
                  "proxy: a readonly proxy does not forward " + call->method()});
    return;
  }
  std::vector<std::string> endpoints = director_.available();
  if (endpoints.empty()) endpoints = director_.all();  // all in their failure wait: try anyway
  if (endpoints.empty()) {
    call->start({});
    call->finish({grpc::Code::kUnavailable, "proxy: zero endpoints currently available"});
    return;
  }
  std::make_shared<Relay>(*this, call, std::move(endpoints))->start();
}

std::shared_ptr<grpc::Channel> GrpcForwarder::channel(const std::string& url) {
  std::lock_guard l(mu_);
  auto it = channels_.find(url);
  if (it != channels_.end()) return it->second;
  std::string err;
  auto u = net::parse_url(url, &err);
  if (!u) return nullptr;
  grpc::ChannelOptions o;
  o.host = u->host;
  o.port = u->port;
  if (u->tls()) o.tls = tls_;
  auto ch = std::make_shared<grpc::Channel>(io_, std::move(o));
  channels_[url] = ch;
  return ch;
}

}  // namespace muster::proxy
