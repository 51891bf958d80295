// node/server/leader_forward.cpp: see leader_forward.h.
#include "node/server/leader_forward.h"

#include <utility>
#include <vector>

namespace muster::server {

using storage::Code;
using storage::Status;

namespace {

bool is_not_leader(const Status& s) {
  return s.code() == Code::kFailedPrecondition && s.message() == LeaderForwarder::kNotLeader;
}

}  // namespace

LeaderForwarder::LeaderForwarder(uint64_t local_id, std::chrono::milliseconds timeout, Send send,
                                 Serve serve)
    : local_id_(local_id), timeout_(timeout), send_(std::move(send)), serve_(std::move(serve)) {}

void LeaderForwarder::call(uint64_t leader, transportpb::ForwardKind kind, std::string body,
                           Reply done) {
  uint64_t id;
  {
    std::lock_guard l(mu_);
    id = next_id_++;
    Pending& p = pending_[id];
    p.kind = kind;
    p.body = body;
    p.done = std::move(done);
    p.deadline = Clock::now() + timeout_;
    p.target = leader;
  }
  if (leader != 0) send_to(id, leader, kind, body);
}

void LeaderForwarder::send_to(uint64_t id, uint64_t leader, transportpb::ForwardKind kind,
                              const std::string& body) {
  if (leader == local_id_) {
    serve_(kind, body, [this, id](Status st, std::string resp) {
      answer(id, std::move(st), std::move(resp), false, local_id_);
    });
    return;
  }
  transportpb::Forward f;
  f.set_id(id);
  f.set_kind(kind);
  f.set_body(body);
  send_(leader, std::move(f));
}

void LeaderForwarder::receive(uint64_t from, transportpb::Forward f) {
  if (f.reply()) {
    Status st;
    if (f.code() != 0) st = Status(static_cast<Code>(f.code()), f.error());
    return answer(f.id(), std::move(st), std::move(*f.mutable_body()), f.not_leader(), from);
  }
  const uint64_t id = f.id();
  const transportpb::ForwardKind kind = f.kind();
  serve_(kind, std::move(*f.mutable_body()), [this, from, id, kind](Status st, std::string resp) {
    transportpb::Forward r;
    r.set_id(id);
    r.set_reply(true);
    r.set_kind(kind);
    if (st) {
      r.set_body(std::move(resp));
    } else {
      r.set_code(static_cast<uint32_t>(st.code()));
      r.set_error(st.message());
      r.set_not_leader(is_not_leader(st));
    }
    send_(from, std::move(r));
  });
}

void LeaderForwarder::answer(uint64_t id, Status st, std::string body, bool not_leader,
                             uint64_t from) {
  Reply done;
  {
    std::lock_guard l(mu_);
    auto it = pending_.find(id);
    // A late answer from a member asked before (the call was answered or
    // timed out meanwhile) is dropped.
    if (it == pending_.end()) return;
    if (not_leader || is_not_leader(st)) {
      if (it->second.target == from) it->second.refused = true;
      return;
    }
    done = std::move(it->second.done);
    pending_.erase(it);
  }
  done(std::move(st), std::move(body));
}

void LeaderForwarder::poll(Clock::time_point now, uint64_t leader) {
  std::vector<Reply> expired;
  struct Resend {
    uint64_t id;
    transportpb::ForwardKind kind;
    std::string body;
  };
  std::vector<Resend> resend;
  {
    std::lock_guard l(mu_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      Pending& p = it->second;
      if (now >= p.deadline) {
        expired.push_back(std::move(p.done));
        it = pending_.erase(it);
        continue;
      }
      if (leader != 0 && (leader != p.target || p.refused)) {
        p.target = leader;
        p.refused = false;
        resend.push_back({it->first, p.kind, p.body});
      }
      ++it;
    }
  }
  for (auto& r : resend) send_to(r.id, leader, r.kind, r.body);
  for (auto& d : expired) d(Status(Code::kUnavailable, "etcdserver: request timed out"), {});
}

void LeaderForwarder::fail_all(const Status& why) {
  std::map<uint64_t, Pending> all;
  {
    std::lock_guard l(mu_);
    all.swap(pending_);
  }
  for (auto& [id, p] : all) p.done(why, {});
}

size_t LeaderForwarder::pending() const {
  std::lock_guard l(mu_);
  return pending_.size();
}

}  // namespace muster::server
