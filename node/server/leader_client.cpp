// node/server/leader_client.cpp: keepalive, lease time-to-live and promote
// forwarded to the leader over gRPC (see leader_client.h).
#include "node/server/leader_client.h"

#include <utility>

#include "net/url.h"
#include "node/storage/errors.h"
#include "node/storage/pb.h"

namespace muster::server {

namespace {

namespace pb = ::muster::etcdserverpb;
using storage::Code;
using storage::Status;

constexpr const char* kTimedOut = "etcdserver: request timed out";

// The leader's own error, or nullopt when the call did not reach a member
// that answered it (connection, TLS, deadline): then another URL may work.
bool is_member_answer(const net::grpc::Status& s) {
  return s.message.rfind("etcdserver: ", 0) == 0;
}

}  // namespace

class LeaderClient::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(boost::asio::io_context& io, net::TlsOptions tls, std::chrono::milliseconds timeout,
       std::function<std::vector<std::string>(uint64_t)> urls_of)
      : io_(io), tls_(std::move(tls)), timeout_(timeout), urls_of_(std::move(urls_of)) {}

  // One request message, the first answer message (or none) and the status.
  using Answer = std::function<void(net::grpc::Status, std::optional<std::string>)>;

  void call(uint64_t leader, std::string method, std::string request, Answer done) {
    auto urls = std::make_shared<std::vector<std::string>>(urls_of_(leader));
    attempt(std::move(urls), 0, std::move(method), std::move(request), std::move(done));
  }

  void close() {
    std::map<std::string, std::shared_ptr<net::grpc::Channel>> chans;
    {
      std::lock_guard l(mu_);
      chans.swap(channels_);
    }
    for (auto& [u, c] : chans) c->close();
  }

 private:
  std::shared_ptr<net::grpc::Channel> channel(const std::string& url) {
    std::lock_guard l(mu_);
    auto it = channels_.find(url);
    if (it != channels_.end()) return it->second;
    auto u = net::parse_url(url);
    if (!u) return nullptr;
    net::grpc::ChannelOptions o;
    o.host = u->host;
    o.port = u->port;
    if (u->tls()) o.tls = tls_;
    o.connect_timeout = timeout_;
    auto c = std::make_shared<net::grpc::Channel>(io_, std::move(o));
    channels_[url] = c;
    return c;
  }

  void attempt(std::shared_ptr<std::vector<std::string>> urls, size_t i, std::string method,
               std::string request, Answer done) {
    if (i >= urls->size()) return done({net::grpc::Code::kUnavailable, kTimedOut}, std::nullopt);
    auto ch = channel((*urls)[i]);
    if (!ch) return attempt(urls, i + 1, std::move(method), std::move(request), std::move(done));
    auto first = std::make_shared<std::optional<std::string>>();
    auto self = shared_from_this();
    net::grpc::ClientListener l;
    l.on_message = [first](std::string m) {
      if (!*first) *first = std::move(m);
    };
    l.on_finish = [self, urls, i, method, request, first, done](net::grpc::Status s) {
      if (!*first && !s.ok() && !is_member_answer(s))
        return self->attempt(urls, i + 1, method, request, done);
      done(std::move(s), std::move(*first));
    };
    auto c = ch->call(method, {}, std::move(l), timeout_);
    c->send(request);
    c->half_close();
  }

  boost::asio::io_context& io_;
  net::TlsOptions tls_;
  std::chrono::milliseconds timeout_;
  std::function<std::vector<std::string>(uint64_t)> urls_of_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<net::grpc::Channel>> channels_;
};

LeaderClient::LeaderClient(boost::asio::io_context& io, net::TlsOptions tls,
                           std::chrono::milliseconds timeout,
                           std::function<std::vector<std::string>(uint64_t)> urls_of)
    : impl_(std::make_shared<Impl>(io, std::move(tls), timeout, std::move(urls_of))) {}

LeaderClient::~LeaderClient() { impl_->close(); }

void LeaderClient::close() { impl_->close(); }

// The leader answers an unknown lease with TTL 0 on the stream.
void LeaderClient::keepalive(uint64_t leader, int64_t lease,
                             std::function<void(Status, int64_t)> done) {
  pb::LeaseKeepAliveRequest req;
  req.set_id(lease);
  impl_->call(leader, "/etcdserverpb.Lease/LeaseKeepAlive", req.SerializeAsString(),
              [done = std::move(done)](net::grpc::Status s, std::optional<std::string> m) {
                pb::LeaseKeepAliveResponse resp;
                if (!m || !resp.ParseFromString(*m)) {
                  if (s.ok() || !is_member_answer(s))
                    return done({Code::kUnavailable, kTimedOut}, 0);
                  return done({static_cast<Code>(static_cast<int>(s.code)), s.message}, 0);
                }
                if (resp.ttl() <= 0) return done(storage::errors::lease_not_found(), 0);
                done({}, resp.ttl());
              });
}

// The leader answers an unknown lease with TTL -1 (etcd's answer too).
void LeaderClient::time_to_live(uint64_t leader, const pb::LeaseTimeToLiveRequest& req,
                                std::function<void(Status, pb::LeaseTimeToLiveResponse)> done) {
  impl_->call(leader, "/etcdserverpb.Lease/LeaseTimeToLive", req.SerializeAsString(),
              [done = std::move(done)](net::grpc::Status s, std::optional<std::string> m) {
                pb::LeaseTimeToLiveResponse resp;
                if (!m || !resp.ParseFromString(*m)) {
                  if (s.ok() || !is_member_answer(s))
                    return done({Code::kUnavailable, kTimedOut}, {});
                  return done({static_cast<Code>(static_cast<int>(s.code)), s.message}, {});
                }
                if (resp.ttl() == -1) return done(storage::errors::lease_not_found(), {});
                done({}, std::move(resp));
              });
}

void LeaderClient::promote(uint64_t leader, uint64_t member, std::function<void(Status)> done) {
  pb::MemberPromoteRequest req;
  req.set_id(member);
  impl_->call(leader, "/etcdserverpb.Cluster/MemberPromote", req.SerializeAsString(),
              [done = std::move(done)](net::grpc::Status s, std::optional<std::string> m) {
                if (s.ok() && m) return done({});
                if (s.ok() || !is_member_answer(s)) return done({Code::kUnavailable, kTimedOut});
                done({static_cast<Code>(static_cast<int>(s.code)), s.message});
              });
}

}  // namespace muster::server
