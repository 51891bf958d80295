// A net::grpc::Call without a network, for the gRPC router tests: the test
// plays the client (deliver(), half_close(), cancel()) and reads what the
// server sent and how it finished.  Real HTTP/2 end-to-end tests with etcdctl
// live in tests/interop.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "net/grpc.h"

namespace muster::server::testing {

class FakeCall : public net::grpc::Call {
 public:
  explicit FakeCall(std::string method, net::grpc::Metadata md = {})
      : method_(std::move(method)), md_(std::move(md)) {}

  const std::string& method() const override { return method_; }
  const net::grpc::Metadata& metadata() const override { return md_; }
  const std::string& remote_address() const override { return addr_; }
  const std::string& peer_common_name() const override { return cn_; }
  void set_common_name(std::string cn) { cn_ = std::move(cn); }
  std::optional<std::chrono::steady_clock::time_point> deadline() const override {
    return std::nullopt;
  }

  void start(Listener l) override {
    std::lock_guard g(mu_);
    listener_ = std::move(l);
    started_ = true;
  }
  void send(std::string message) override {
    std::lock_guard g(mu_);
    if (finished_ || cancelled_) return;
    if (!started_) ADD_FAILURE() << "send() before start()";
    if (client_reads_) {
      sent_.push_back(std::move(message));
    } else {
      queued_ += message.size();
    }
    cv_.notify_all();
  }
  void finish(net::grpc::Status s) override {
    Listener released;  // destroyed after the lock is let go
    std::lock_guard g(mu_);
    if (!started_) ADD_FAILURE() << "finish() before start()";
    if (finished_ || cancelled_) return;
    finished_ = true;
    status_ = std::move(s);
    // As net/h2's call does once the stream ends: the program's listener
    // (whose closures may hold this call) goes, so no cycle outlives the call.
    released = std::move(listener_);
    listener_ = {};
    cv_.notify_all();
  }
  std::size_t queued_bytes() const override {
    std::lock_guard g(mu_);
    return queued_;
  }
  bool done() const override {
    std::lock_guard g(mu_);
    return finished_ || cancelled_;
  }

  // --- the client side
  void deliver(const google::protobuf::Message& m) { deliver_raw(m.SerializeAsString()); }
  void deliver_raw(std::string bytes) {
    Listener l = listener();
    if (l.on_message) l.on_message(std::move(bytes));
  }
  void half_close() {
    Listener l = listener();
    if (l.on_half_close) l.on_half_close();
  }
  void cancel() {
    Listener l;
    {
      std::lock_guard g(mu_);
      if (finished_ || cancelled_) return;
      cancelled_ = true;
      l = std::move(listener_);
      listener_ = {};
    }
    if (l.on_cancel) l.on_cancel();
  }
  // From now on sent messages pile up unread (queued_bytes() grows).
  void stop_reading() {
    std::lock_guard g(mu_);
    client_reads_ = false;
  }

  bool wait_sent(size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    std::unique_lock g(mu_);
    return cv_.wait_for(g, timeout, [&] { return sent_.size() >= n; });
  }
  bool wait_finished(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    std::unique_lock g(mu_);
    return cv_.wait_for(g, timeout, [&] { return finished_; });
  }
  template <class M>
  M sent(size_t i) {
    std::lock_guard g(mu_);
    M m;
    if (i >= sent_.size() || !m.ParseFromString(sent_[i]))
      ADD_FAILURE() << "no message " << i << " of type " << m.GetTypeName();
    return m;
  }
  size_t sent_count() const {
    std::lock_guard g(mu_);
    return sent_.size();
  }
  std::vector<std::string> sent_raw() const {
    std::lock_guard g(mu_);
    return sent_;
  }
  bool started() const {
    std::lock_guard g(mu_);
    return started_;
  }
  bool finished() const {
    std::lock_guard g(mu_);
    return finished_;
  }
  net::grpc::Status status() const {
    std::lock_guard g(mu_);
    return status_;
  }

 private:
  Listener listener() {
    std::lock_guard g(mu_);
    return listener_;
  }

  std::string method_, addr_ = "127.0.0.1", cn_;
  net::grpc::Metadata md_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Listener listener_;
  bool started_ = false, finished_ = false, cancelled_ = false, client_reads_ = true;
  std::vector<std::string> sent_;
  std::size_t queued_ = 0;
  net::grpc::Status status_;
};

}  // namespace muster::server::testing
