#include "node/server/grpc_metrics.h"

#include <atomic>
#include <chrono>
#include <utility>

namespace muster::server {

namespace {

using net::grpc::Call;
using net::grpc::Code;

const char* type_of(const GrpcServerMetrics::Method& m) {
  if (m.client_streaming && m.server_streaming) return "bidi_stream";
  if (m.client_streaming) return "client_stream";
  if (m.server_streaming) return "server_stream";
  return "unary";
}

// Label text in the order Prometheus' Go client writes it (sorted names).
std::string labels(const GrpcServerMetrics::Method& m, const char* code = nullptr) {
  std::string_view p = m.path;
  if (!p.empty() && p[0] == '/') p.remove_prefix(1);
  auto slash = p.find('/');
  std::string service(p.substr(0, slash)), method(p.substr(slash + 1));
  std::string out;
  if (code) out += "grpc_code=\"" + std::string(code) + "\",";
  out += "grpc_method=\"" + method + "\",grpc_service=\"" + service + "\",grpc_type=\"" +
         type_of(m) + "\"";
  return out;
}

constexpr const char* kStarted = "grpc_server_started_total";
constexpr const char* kStartedHelp = "Total number of RPCs started on the server.";
constexpr const char* kHandled = "grpc_server_handled_total";
constexpr const char* kHandledHelp =
    "Total number of RPCs completed on the server, regardless of success or failure.";
constexpr const char* kReceived = "grpc_server_msg_received_total";
constexpr const char* kReceivedHelp = "Total number of RPC stream messages received on the server.";
constexpr const char* kSent = "grpc_server_msg_sent_total";
constexpr const char* kSentHelp = "Total number of gRPC stream messages sent by the server.";
constexpr const char* kSeconds = "grpc_server_handling_seconds";
constexpr const char* kSecondsHelp =
    "Histogram of response latency (seconds) of gRPC that had been application-level handled by "
    "the server.";

// Prometheus' default buckets (prometheus.DefBuckets).
const std::vector<double>& default_buckets() {
  static const std::vector<double> b = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
  return b;
}

constexpr Code kAllCodes[] = {Code::kOk,
                              Code::kCancelled,
                              Code::kUnknown,
                              Code::kInvalidArgument,
                              Code::kDeadlineExceeded,
                              Code::kNotFound,
                              Code::kAlreadyExists,
                              Code::kPermissionDenied,
                              Code::kResourceExhausted,
                              Code::kFailedPrecondition,
                              Code::kAborted,
                              Code::kOutOfRange,
                              Code::kUnimplemented,
                              Code::kInternal,
                              Code::kUnavailable,
                              Code::kDataLoss,
                              Code::kUnauthenticated};

// What one call reports, shared by the wrapper and the listener it installs.
struct Report {
  const GrpcServerMetrics::Instruments* in;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  std::atomic<bool> handled{false};

  void received() { in->received->inc(); }
  void sent() { in->sent->inc(); }
  void finish(Code code) {
    if (handled.exchange(true)) return;
    const auto i = static_cast<std::size_t>(code);
    in->handled[i < in->handled.size() ? i : static_cast<std::size_t>(Code::kUnknown)]->inc();
    if (in->seconds) {
      std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
      in->seconds->observe(took.count());
    }
  }
};

// Kept alive by the listener it installs in the inner call: net/ drops
// that listener when the stream ends, which ends this object too.
class MeteredCall : public Call, public std::enable_shared_from_this<MeteredCall> {
 public:
  MeteredCall(std::shared_ptr<Call> inner, std::shared_ptr<Report> report)
      : inner_(std::move(inner)), report_(std::move(report)) {}

  const std::string& method() const override { return inner_->method(); }
  const net::grpc::Metadata& metadata() const override { return inner_->metadata(); }
  const std::string& remote_address() const override { return inner_->remote_address(); }
  const std::string& peer_common_name() const override { return inner_->peer_common_name(); }
  std::optional<std::chrono::steady_clock::time_point> deadline() const override {
    return inner_->deadline();
  }
  void start(Listener l) override {
    auto report = report_;
    auto deadline = inner_->deadline();
    if (l.on_message) {
      l.on_message = [report, f = std::move(l.on_message)](std::string m) {
        report->received();
        f(std::move(m));
      };
    }
    l.on_cancel = [self = shared_from_this(), report, deadline, f = std::move(l.on_cancel)] {
      const bool late = deadline && std::chrono::steady_clock::now() >= *deadline;
      report->finish(late ? Code::kDeadlineExceeded : Code::kCancelled);
      if (f) f();
    };
    inner_->start(std::move(l));
  }
  void send(std::string message) override {
    if (!inner_->done()) report_->sent();
    inner_->send(std::move(message));
  }
  void finish(net::grpc::Status s) override {
    if (!inner_->done()) report_->finish(s.code);
    inner_->finish(std::move(s));
  }
  // Kept whole: the connection then takes a unary answer in one hand-off
  // (Call::reply's default would split it into send and finish).
  void reply(std::string message, net::grpc::Status s) override {
    if (!inner_->done()) {
      report_->sent();
      report_->finish(s.code);
    }
    inner_->reply(std::move(message), std::move(s));
  }
  std::size_t queued_bytes() const override { return inner_->queued_bytes(); }
  bool done() const override { return inner_->done(); }

 private:
  std::shared_ptr<Call> inner_;
  std::shared_ptr<Report> report_;
};

}  // namespace

const char* GrpcServerMetrics::code_name(Code code) {
  switch (code) {
    case Code::kOk:
      return "OK";
    case Code::kCancelled:
      return "Canceled";
    case Code::kUnknown:
      return "Unknown";
    case Code::kInvalidArgument:
      return "InvalidArgument";
    case Code::kDeadlineExceeded:
      return "DeadlineExceeded";
    case Code::kNotFound:
      return "NotFound";
    case Code::kAlreadyExists:
      return "AlreadyExists";
    case Code::kPermissionDenied:
      return "PermissionDenied";
    case Code::kResourceExhausted:
      return "ResourceExhausted";
    case Code::kFailedPrecondition:
      return "FailedPrecondition";
    case Code::kAborted:
      return "Aborted";
    case Code::kOutOfRange:
      return "OutOfRange";
    case Code::kUnimplemented:
      return "Unimplemented";
    case Code::kInternal:
      return "Internal";
    case Code::kUnavailable:
      return "Unavailable";
    case Code::kDataLoss:
      return "DataLoss";
    case Code::kUnauthenticated:
      return "Unauthenticated";
  }
  return "Unknown";
}

GrpcServerMetrics::GrpcServerMetrics(metrics::Registry& reg, const std::vector<Method>& methods,
                                     bool histogram)
    : methods_(methods) {
  for (const auto& m : methods_) {
    const std::string base = labels(m);
    Instruments in;
    in.started = &reg.counter(kStarted, kStartedHelp, base);
    in.received = &reg.counter(kReceived, kReceivedHelp, base);
    in.sent = &reg.counter(kSent, kSentHelp, base);
    if (histogram) in.seconds = &reg.histogram(kSeconds, kSecondsHelp, default_buckets(), base);
    for (Code c : kAllCodes)
      in.handled[static_cast<std::size_t>(c)] =
          &reg.counter(kHandled, kHandledHelp, labels(m, code_name(c)));
    instruments_.push_back(in);
  }
}

const GrpcServerMetrics::Method* GrpcServerMetrics::find(std::string_view path) const {
  for (const auto& m : methods_)
    if (m.path == path) return &m;
  return nullptr;
}

std::shared_ptr<Call> GrpcServerMetrics::wrap(std::shared_ptr<Call> call, const Method& method) {
  auto report = std::make_shared<Report>();
  report->in = &instruments_[static_cast<std::size_t>(&method - methods_.data())];
  report->in->started->inc();
  return std::make_shared<MeteredCall>(std::move(call), std::move(report));
}

}  // namespace muster::server
