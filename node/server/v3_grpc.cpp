// node/server/v3_grpc.cpp: the gRPC routes over V3Service (see v3_grpc.h).
#include "node/server/v3_grpc.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <deque>
#include <mutex>
#include <utility>

#include "node/server/grpc_metrics.h"

namespace muster::server {

namespace {

using Call = net::grpc::Call;
using GStatus = net::grpc::Status;
using GCode = net::grpc::Code;
using Status = storage::Status;

constexpr std::string_view kPackage = "etcdserverpb.";

GStatus to_grpc(const Status& s) {
  return {static_cast<GCode>(static_cast<int>(s.code())), s.message()};
}

GStatus unmarshal_error(const google::protobuf::Descriptor* d) {
  return {GCode::kInvalidArgument, "grpc: error unmarshalling request: proto: " + d->full_name() +
                                       ": illegal wire-format data"};
}

std::unique_ptr<google::protobuf::Message> new_message(const google::protobuf::Descriptor* d) {
  return std::unique_ptr<google::protobuf::Message>(
      google::protobuf::MessageFactory::generated_factory()->GetPrototype(d)->New());
}

}  // namespace

class V3Grpc::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(V3Service& service, metrics::Registry& reg, Options options)
      : service_(service),
        options_(options),
        received_bytes_(reg.counter("etcd_network_client_grpc_received_bytes_total",
                                    "The total number of bytes received from grpc clients.")),
        sent_bytes_(reg.counter("etcd_network_client_grpc_sent_bytes_total",
                                "The total number of bytes sent to grpc clients.")),
        grpc_metrics_(reg, methods(), options.handling_time_histogram) {}

  static std::vector<GrpcServerMetrics::Method> methods() {
    std::vector<GrpcServerMetrics::Method> out;
    for (const auto& r : routes()) out.push_back({r.path, r.client_streaming, r.server_streaming});
    return out;
  }

  void handle(const std::shared_ptr<Call>& call);

  void send(Call& call, const google::protobuf::Message& m) {
    std::string out = m.SerializeAsString();
    sent_bytes_.inc(static_cast<double>(out.size()) + 5);
    call.send(std::move(out));
  }
  void received(const std::string& msg) {
    received_bytes_.inc(static_cast<double>(msg.size()) + 5);
  }

  void unary(const std::shared_ptr<Call>& call, const V3Service::UnaryMethod& m);
  void watch(const std::shared_ptr<Call>& call);
  void lease_keepalive(const std::shared_ptr<Call>& call);
  void snapshot(const std::shared_ptr<Call>& call);

  V3Service& service_;
  Options options_;
  metrics::Counter& received_bytes_;
  metrics::Counter& sent_bytes_;
  GrpcServerMetrics grpc_metrics_;
};

// Refuses a call before any message: start() is required before finish().
static void refuse(const std::shared_ptr<Call>& call, GStatus s) {
  call->start({});
  call->finish(std::move(s));
}

void V3Grpc::Impl::handle(const std::shared_ptr<Call>& raw) {
  std::string_view path = raw->method();
  // "/etcdserverpb.KV/Range" -> service "etcdserverpb.KV", method "Range".
  std::string_view service, method;
  if (!path.empty() && path[0] == '/') path.remove_prefix(1);
  if (auto slash = path.find('/'); slash != std::string_view::npos) {
    service = path.substr(0, slash);
    method = path.substr(slash + 1);
  } else {
    service = path;
  }
  static const std::vector<Route> kRoutes = routes();
  bool known_service = false, known = false;
  for (const auto& r : kRoutes) {
    std::string_view p = r.path;
    p.remove_prefix(1);
    if (p.substr(0, p.find('/')) != service) continue;
    known_service = true;
    if (p.substr(p.find('/') + 1) == method) known = true;
  }
  if (!known) {
    if (!known_service)
      return refuse(raw, {GCode::kUnimplemented, "unknown service " + std::string(service)});
    return refuse(raw, {GCode::kUnimplemented, "unknown method " + std::string(method) +
                                                   " for service " + std::string(service)});
  }
  // clientv3's WithRequireLeader (etcdctl's watch and lease keepalive).
  if (auto v = raw->metadata().get("hasleader"); v && *v == "true") {
    if (service_.member().status().leader == 0)
      return refuse(raw, {GCode::kUnavailable, kNoLeader});
  }
  // Counted from here on, as etcd's prometheus interceptor (the last in its
  // chain) counts only calls that reach the service.
  const GrpcServerMetrics::Method* metered = grpc_metrics_.find(raw->method());
  const std::shared_ptr<Call> call = metered ? grpc_metrics_.wrap(raw, *metered) : raw;
  service_.request_arrived();
  const std::string_view name = path.substr(kPackage.size());  // "KV/Range"
  if (const V3Service::UnaryMethod* m = V3Service::unary(name)) return unary(call, *m);
  if (name == "Watch/Watch") return watch(call);
  if (name == "Lease/LeaseKeepAlive") return lease_keepalive(call);
  return snapshot(call);  // Maintenance/Snapshot, the last one routes() lists
}

// ---------------------------------------------------------------- unary

void V3Grpc::Impl::unary(const std::shared_ptr<Call>& call, const V3Service::UnaryMethod& m) {
  std::weak_ptr<Call> weak = call;
  auto self = shared_from_this();
  auto got = std::make_shared<bool>(false);  // only touched on the strand
  Call::Listener l;
  l.on_message = [self, weak, got, &m](std::string msg) {
    auto call = weak.lock();
    if (!call || *got) return;
    *got = true;
    self->received(msg);
    auto req = new_message(m.request);
    if (!req->ParseFromString(msg)) return call->finish(unmarshal_error(m.request));
    m.call(self->service_, *req, [self, call](Status s, const google::protobuf::Message& resp) {
      if (!s) return call->finish(to_grpc(s));
      std::string out = resp.SerializeAsString();
      self->sent_bytes_.inc(static_cast<double>(out.size()) + 5);
      call->reply(std::move(out), {});
    });
  };
  l.on_half_close = [weak, got] {
    auto call = weak.lock();
    if (call && !*got)
      call->finish({GCode::kInternal, "grpc: a unary call ended without its request"});
  };
  call->start(std::move(l));
}

// ---------------------------------------------------------------- Watch

namespace {

class GrpcWatchSink : public V3Service::WatchSink {
 public:
  GrpcWatchSink(std::shared_ptr<V3Grpc::Impl> g, std::shared_ptr<Call> call)
      : g_(std::move(g)), call_(std::move(call)) {}
  void send(const pb::WatchResponse& r) override;
  void close(const Status& why) override { call_->finish(to_grpc(why)); }
  std::size_t queued_bytes() const override { return call_->queued_bytes(); }

 private:
  std::shared_ptr<V3Grpc::Impl> g_;
  std::shared_ptr<Call> call_;
};

}  // namespace

void GrpcWatchSink::send(const pb::WatchResponse& r) { g_->send(*call_, r); }

void V3Grpc::Impl::watch(const std::shared_ptr<Call>& call) {
  std::weak_ptr<V3Service::WatchSession> session = service_.watch(
      std::make_shared<GrpcWatchSink>(shared_from_this(), call), options_.watch_max_queued_bytes);
  std::weak_ptr<Call> weak = call;
  auto self = shared_from_this();
  Call::Listener l;
  l.on_message = [self, weak, session](std::string msg) {
    auto s = session.lock();
    auto call = weak.lock();
    if (!s || !call) return;
    self->received(msg);
    pb::WatchRequest req;
    if (!req.ParseFromString(msg)) {
      s->close();
      return call->finish(unmarshal_error(pb::WatchRequest::descriptor()));
    }
    s->request(req);
  };
  // etcd keeps the stream (and its watchers) after the client half-closes.
  l.on_half_close = [] {};
  l.on_cancel = [session] {
    if (auto s = session.lock()) s->close();
  };
  call->start(std::move(l));
}

// ---------------------------------------------------------------- LeaseKeepAlive

namespace {

// Requests are answered one at a time, in order, as etcd's stream does; the
// stream ends OK once the client half-closed and every request is answered.
class KeepAliveStream : public std::enable_shared_from_this<KeepAliveStream> {
 public:
  KeepAliveStream(std::shared_ptr<V3Grpc::Impl> g, std::weak_ptr<Call> call)
      : g_(std::move(g)), call_(std::move(call)) {}

  void push(int64_t id) {
    {
      std::lock_guard l(mu_);
      if (ended_) return;
      queue_.push_back(id);
      if (busy_) return;
      busy_ = true;
    }
    next();
  }
  void half_close() {
    bool finish = false;
    {
      std::lock_guard l(mu_);
      half_closed_ = true;
      finish = !busy_ && !ended_;
      if (finish) ended_ = true;
    }
    if (finish)
      if (auto c = call_.lock()) c->finish({});
  }
  void end() {
    std::lock_guard l(mu_);
    ended_ = true;
  }

 private:
  void next() {
    int64_t id = 0;
    bool finish = false;
    {
      std::lock_guard l(mu_);
      if (ended_) return;
      if (queue_.empty()) {
        busy_ = false;
        if (!half_closed_) return;
        ended_ = finish = true;
      } else {
        id = queue_.front();
        queue_.pop_front();
      }
    }
    auto call = call_.lock();
    if (!call) return end();
    if (finish) return call->finish({});
    pb::LeaseKeepAliveRequest req;
    req.set_id(id);
    auto self = shared_from_this();
    g_->service_.lease_keepalive(req, [self, call](Status s, pb::LeaseKeepAliveResponse resp) {
      if (!s) {
        self->end();
        return call->finish(to_grpc(s));
      }
      self->g_->send(*call, resp);
      self->next();
    });
  }
  std::shared_ptr<V3Grpc::Impl> g_;
  std::weak_ptr<Call> call_;
  std::mutex mu_;
  std::deque<int64_t> queue_;
  bool busy_ = false, half_closed_ = false, ended_ = false;
};

}  // namespace

void V3Grpc::Impl::lease_keepalive(const std::shared_ptr<Call>& call) {
  auto stream = std::make_shared<KeepAliveStream>(shared_from_this(), call);
  std::weak_ptr<Call> weak = call;
  auto self = shared_from_this();
  Call::Listener l;
  l.on_message = [self, weak, stream](std::string msg) {
    auto call = weak.lock();
    if (!call) return;
    self->received(msg);
    pb::LeaseKeepAliveRequest req;
    if (!req.ParseFromString(msg)) {
      stream->end();
      return call->finish(unmarshal_error(pb::LeaseKeepAliveRequest::descriptor()));
    }
    stream->push(req.id());
  };
  l.on_half_close = [stream] { stream->half_close(); };
  l.on_cancel = [stream] { stream->end(); };
  call->start(std::move(l));
}

// ---------------------------------------------------------------- Snapshot

namespace {

class GrpcSnapshotSink : public V3Service::SnapshotSink {
 public:
  GrpcSnapshotSink(std::shared_ptr<V3Grpc::Impl> g, std::shared_ptr<Call> call)
      : g_(std::move(g)), call_(std::move(call)) {}
  void send(const pb::SnapshotResponse& r) override { g_->send(*call_, r); }
  void finish(const Status& s) override { call_->finish(to_grpc(s)); }
  std::size_t queued_bytes() const override { return call_->queued_bytes(); }
  bool cancelled() const override { return call_->done(); }

 private:
  std::shared_ptr<V3Grpc::Impl> g_;
  std::shared_ptr<Call> call_;
};

}  // namespace

void V3Grpc::Impl::snapshot(const std::shared_ptr<Call>& call) {
  std::weak_ptr<Call> weak = call;
  auto self = shared_from_this();
  auto got = std::make_shared<bool>(false);
  Call::Listener l;
  l.on_message = [self, weak, got](std::string msg) {
    auto call = weak.lock();
    if (!call || *got) return;
    *got = true;
    self->received(msg);
    pb::SnapshotRequest req;
    if (!req.ParseFromString(msg))
      return call->finish(unmarshal_error(pb::SnapshotRequest::descriptor()));
    self->service_.snapshot(req, std::make_shared<GrpcSnapshotSink>(self, call));
  };
  l.on_half_close = [weak, got] {
    auto call = weak.lock();
    if (call && !*got)
      call->finish({GCode::kInternal, "grpc: a server-streaming call ended without its request"});
  };
  call->start(std::move(l));
}

// ---------------------------------------------------------------- V3Grpc

V3Grpc::V3Grpc(V3Service& service, metrics::Registry& metrics, Options options)
    : impl_(std::make_shared<Impl>(service, metrics, options)) {}

V3Grpc::~V3Grpc() = default;

void V3Grpc::handle(std::shared_ptr<net::grpc::Call> call) { impl_->handle(call); }

std::vector<V3Grpc::Route> V3Grpc::routes() {
  std::vector<Route> out;
  for (const auto& [name, m] : V3Service::unary_methods())
    out.push_back({"/" + std::string(kPackage) + name, m.request, m.response, false, false});
  out.push_back({"/etcdserverpb.Watch/Watch", pb::WatchRequest::descriptor(),
                 pb::WatchResponse::descriptor(), true, true});
  out.push_back({"/etcdserverpb.Lease/LeaseKeepAlive", pb::LeaseKeepAliveRequest::descriptor(),
                 pb::LeaseKeepAliveResponse::descriptor(), true, true});
  out.push_back({"/etcdserverpb.Maintenance/Snapshot", pb::SnapshotRequest::descriptor(),
                 pb::SnapshotResponse::descriptor(), false, true});
  return out;
}

}  // namespace muster::server
