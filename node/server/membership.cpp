// node/server/membership.cpp: see membership.h.
#include "node/server/membership.h"

#include <optional>
#include <set>

#include "base/log.h"
#include "etcdwire/ids.h"
#include "net/url.h"
#include "node/server/transport.h"

namespace muster::server {

using storage::Code;
using storage::Status;

namespace {

std::string hex(uint64_t id) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(id));
  return buf;
}

// True when a member other than `except` already has one of `urls`.
bool peer_urls_taken(const std::vector<pb::Member>& members,
                     const google::protobuf::RepeatedPtrField<std::string>& urls, uint64_t except) {
  for (const auto& x : members) {
    if (x.id() == except) continue;
    for (const auto& u : x.peerurls())
      for (const auto& v : urls)
        if (u == v) return true;
  }
  return false;
}

}  // namespace

Membership::Membership(Options options, storage::MemberStorage& storage, Transport& transport)
    : options_(std::move(options)), storage_(storage), transport_(transport) {}

void Membership::load(const raftpb::ConfState& cs) {
  conf_state_ = cs;
  note_conf_state();
}

Membership::Applied Membership::apply(const raftpb::Entry& e, raft::Raft& raft) {
  raftpb::ConfChange cc;
  if (!cc.ParseFromString(e.data())) {
    log::error("apply", "unparsable conf change; skipping", {{"index", e.index()}});
    storage_.kv().apply_noop(e.index(), e.term());
    return {};
  }
  // The member record the change carries (bootstrap entries and "member
  // add/update/promote" put it in the context).
  pb::Member m;
  if (!cc.context().empty() && !m.ParseFromString(cc.context())) m.Clear();
  m.set_id(cc.node_id());
  std::optional<pb::Member> existing;
  for (auto& x : storage_.kv().members())
    if (x.id() == cc.node_id()) existing = std::move(x);

  // Which membership request this entry is, and whether it still holds
  // against the applied state (every member decides the same: the check
  // reads only applied state).  A change that no longer holds (a racing
  // change took the URLs, the member went away) leaves the Raft
  // configuration alone and answers with the store's error.
  pb::InternalRequest req;
  bool holds = cc.node_id() != 0;
  switch (cc.type()) {
    case raftpb::ConfChangeAddNode:
      if (existing && existing->islearner()) {
        req.mutable_member_promote()->set_id(cc.node_id());
      } else {
        m.set_islearner(false);
        *req.mutable_member_add()->mutable_member() = m;
        holds = holds && !existing && !storage_.kv().member_removed(cc.node_id());
      }
      break;
    case raftpb::ConfChangeAddLearnerNode:
      m.set_islearner(true);
      *req.mutable_member_add()->mutable_member() = m;
      holds = holds && !existing && !storage_.kv().member_removed(cc.node_id());
      break;
    case raftpb::ConfChangeUpdateNode: {
      auto* u = req.mutable_member_update();
      u->set_id(cc.node_id());
      *u->mutable_peerurls() = m.peerurls();
      holds = holds && existing.has_value();
      break;
    }
    case raftpb::ConfChangeRemoveNode:
      req.mutable_member_remove()->set_id(cc.node_id());
      holds = holds && existing.has_value();
      break;
    default:
      holds = false;
      break;
  }
  if (holds && req.has_member_add() && peer_urls_taken(storage_.kv().members(), m.peerurls(), 0))
    holds = false;
  if (holds) {
    conf_state_ = raft.apply_conf_change(cc);
    note_conf_state();
    switch (cc.type()) {
      case raftpb::ConfChangeAddNode:
      case raftpb::ConfChangeAddLearnerNode:
      case raftpb::ConfChangeUpdateNode:
        if (cc.node_id() != options_.member_id && !m.peerurls().empty())
          transport_.add_peer(cc.node_id(), {m.peerurls().begin(), m.peerurls().end()});
        break;
      case raftpb::ConfChangeRemoveNode:
        if (cc.node_id() != options_.member_id) transport_.remove_peer(cc.node_id());
        break;
      default:
        break;
    }
  }
  auto result = storage_.kv().apply(req, e.index(), e.term(), &conf_state_);
  if (!result.status && !result.skipped)
    log::warn("apply", "membership change refused at apply",
              {{"index", e.index()}, {"error", result.status.message()}});
  else if (!result.skipped)
    log::info("etcdserver", "applied membership change",
              {{"index", e.index()},
               {"change", raftpb::ConfChangeType_Name(cc.type())},
               {"member-id", hex(cc.node_id())}});
  if (holds && cc.type() == raftpb::ConfChangeRemoveNode && cc.node_id() == options_.member_id &&
      options_.on_removed)
    options_.on_removed("the log");
  return {cc.id(), std::move(result)};
}

void Membership::adopt_installed(raft::Raft& raft, const raftpb::ConfState& snapshot_cs) {
  conf_state_ = snapshot_cs;
  // The received state machine is streamed from the sender's live state, so
  // it may be newer than the snapshot's index: membership changes between
  // the two are in it (and their entries will be skipped as applied) but not
  // in the core's configuration, which is the snapshot's.  Bring the core to
  // the configuration the state was written with.
  raft::InitialState is;
  if (storage_.log().initial_state(&is) != raft::StorageError::kOk) {
    note_conf_state();
    return;
  }
  const auto& target = is.conf_state;
  const std::set<uint64_t> tv(target.voters().begin(), target.voters().end()),
      tl(target.learners().begin(), target.learners().end());
  const raftpb::ConfState cur = raft.conf_state();
  auto change = [&](raftpb::ConfChangeType t, uint64_t id) {
    raftpb::ConfChange cc;
    cc.set_type(t);
    cc.set_node_id(id);
    raft.apply_conf_change(cc);
  };
  for (uint64_t id : cur.voters())
    if (!tv.count(id) && !tl.count(id)) change(raftpb::ConfChangeRemoveNode, id);
  for (uint64_t id : cur.learners())
    if (!tv.count(id) && !tl.count(id)) change(raftpb::ConfChangeRemoveNode, id);
  for (uint64_t id : tl) change(raftpb::ConfChangeAddLearnerNode, id);  // no-op when known
  for (uint64_t id : tv) change(raftpb::ConfChangeAddNode, id);         // promotes learners
  conf_state_ = raft.conf_state();
  note_conf_state();
  if (storage_.kv().member_removed(options_.member_id) && options_.on_removed)
    options_.on_removed("a received snapshot");
}

void Membership::note_conf_state() {
  bool learner = false;
  for (uint64_t l : conf_state_.learners())
    if (l == options_.member_id) learner = true;
  is_learner_ = learner;
}

void Membership::track_peer_activity() {
  auto now = std::chrono::steady_clock::now();
  std::set<uint64_t> ids(conf_state_.voters().begin(), conf_state_.voters().end());
  ids.insert(conf_state_.learners().begin(), conf_state_.learners().end());
  for (auto it = active_since_.begin(); it != active_since_.end();)
    it = ids.count(it->first) ? std::next(it) : active_since_.erase(it);
  for (uint64_t id : ids) {
    if (id == options_.member_id) continue;
    if (transport_.is_active(id))
      active_since_.emplace(id, now);  // keeps an earlier time
    else
      active_since_.erase(id);
  }
}

bool Membership::connected_since(uint64_t id, std::chrono::steady_clock::time_point cutoff) const {
  if (id == options_.member_id) return true;
  auto it = active_since_.find(id);
  return it != active_since_.end() && it->second <= cutoff;
}

Status Membership::check(pb::InternalRequest& req, raftpb::ConfChange* cc, const raft::Raft& raft) {
  // etcd's --strict-reconfig-check rules (etcdserver mayAddMember,
  // mayRemoveMember, mayPromoteMember):
  //   - "started" members are those that have published their name;
  //   - a voter may be added only while a quorum of the grown voter set is
  //     started (not enough started members) and this member has been
  //     connected to every voter for the health interval (unhealthy
  //     cluster); learners skip the first check;
  //   - a voter may be removed only while a quorum of the remaining voters is
  //     started, and, unless it is already disconnected, while the voters
  //     connected for the health interval minus it still make a quorum;
  //   - a learner may be promoted once it has 90% of the leader's log (even
  //     without strict checks), with a started quorum of the grown voter set
  //     and every voter connected.
  const auto members = storage_.kv().members();
  auto find = [&](uint64_t id) -> const pb::Member* {
    for (const auto& x : members)
      if (x.id() == id) return &x;
    return nullptr;
  };
  auto bad_urls = [](const google::protobuf::RepeatedPtrField<std::string>& urls) {
    if (urls.empty()) return true;
    for (const auto& u : urls) {
      std::string err;
      auto p = net::parse_url(u, &err);
      if (!p || p->host.empty() || p->port == 0 || (p->path != "" && p->path != "/")) return true;
    }
    return false;
  };
  auto url_taken = [&](const google::protobuf::RepeatedPtrField<std::string>& urls,
                       uint64_t except) { return peer_urls_taken(members, urls, except); };
  track_peer_activity();
  const auto cutoff = std::chrono::steady_clock::now() - kHealthInterval;
  const std::set<uint64_t> voters(conf_state_.voters().begin(), conf_state_.voters().end());
  const std::set<uint64_t> learners(conf_state_.learners().begin(), conf_state_.learners().end());
  auto started_voters = [&](uint64_t except) {
    size_t n = 0;
    for (uint64_t v : voters) {
      const pb::Member* m = find(v);
      if (v != except && m && !m->name().empty()) ++n;
    }
    return n;
  };
  auto connected_fully = [&] {
    for (uint64_t v : voters)
      if (!connected_since(v, cutoff)) return false;
    return true;
  };
  const Status not_enough(Code::kFailedPrecondition,
                          "etcdserver: re-configuration failed due to not enough started members");
  const Status unhealthy(Code::kUnavailable, "etcdserver: unhealthy cluster");
  const Status bad_urls_error(Code::kInvalidArgument, "etcdserver: given member URLs are invalid");
  const bool strict = options_.strict_reconfig_check;
  cc->set_id(req.id());
  switch (req.request_case()) {
    case pb::InternalRequest::kMemberAdd: {
      pb::Member& m = *req.mutable_member_add()->mutable_member();
      // etcd's order: the URLs' syntax (gRPC handler), the strict checks
      // (mayAddMember), then what the apply validates (URLs in use, one
      // learner at a time).
      if (bad_urls(m.peerurls())) return bad_urls_error;
      if (strict) {
        if (!m.islearner()) {
          // etcd's exception: a second member for a one-member cluster.
          const size_t n = voters.size() + 1, started = started_voters(0);
          if (!(started == 1 && n == 2) && started < n / 2 + 1) return not_enough;
        }
        if (!connected_fully()) return unhealthy;
      }
      if (url_taken(m.peerurls(), 0))
        return Status(Code::kFailedPrecondition, "etcdserver: Peer URLs already exists");
      if (m.islearner() && !learners.empty())
        return Status(Code::kFailedPrecondition, "etcdserver: too many learner members in cluster");
      // etcd's ID for a member added at run time: its peer URLs and the
      // current time; bumped past any ID in use or removed.
      uint64_t id = etcdwire::member_id({m.peerurls().begin(), m.peerurls().end()}, "",
                                        std::chrono::duration_cast<std::chrono::seconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count());
      while (id == 0 || find(id) || storage_.kv().member_removed(id)) ++id;
      m.set_id(id);
      m.clear_clienturls();
      m.clear_name();
      cc->set_type(m.islearner() ? raftpb::ConfChangeAddLearnerNode : raftpb::ConfChangeAddNode);
      cc->set_node_id(id);
      cc->set_context(m.SerializeAsString());
      return Status();
    }
    case pb::InternalRequest::kMemberRemove: {
      const uint64_t id = req.member_remove().id();
      if (!find(id)) return Status(Code::kNotFound, "etcdserver: member not found");
      if (strict && voters.count(id)) {
        const size_t n = voters.size() - 1;
        if (started_voters(id) < n / 2 + 1) return not_enough;
        // A member that is down is safe to remove: it is not part of the
        // active quorum.
        if (id == options_.member_id || active_since_.count(id)) {
          size_t active = 0;
          for (uint64_t v : voters)
            if (connected_since(v, cutoff)) ++active;
          if (active < 1 || active - 1 < 1 + n / 2) return unhealthy;
        }
      }
      cc->set_type(raftpb::ConfChangeRemoveNode);
      cc->set_node_id(id);
      return Status();
    }
    case pb::InternalRequest::kMemberUpdate: {
      const uint64_t id = req.member_update().id();
      const pb::Member* old = find(id);
      if (!old) return Status(Code::kNotFound, "etcdserver: member not found");
      if (bad_urls(req.member_update().peerurls())) return bad_urls_error;
      if (url_taken(req.member_update().peerurls(), id))
        return Status(Code::kFailedPrecondition, "etcdserver: Peer URLs already exists");
      pb::Member m = *old;
      *m.mutable_peerurls() = req.member_update().peerurls();
      cc->set_type(raftpb::ConfChangeUpdateNode);
      cc->set_node_id(id);
      cc->set_context(m.SerializeAsString());
      return Status();
    }
    case pb::InternalRequest::kMemberPromote: {
      const uint64_t id = req.member_promote().id();
      const pb::Member* old = find(id);
      if (!old) return Status(Code::kNotFound, "etcdserver: member not found");
      if (!old->islearner())
        return Status(Code::kFailedPrecondition, "etcdserver: can only promote a learner member");
      // Only the leader knows how far the learner is; the caller made sure
      // we are it.
      const auto* p = raft.progress(id);
      const uint64_t last = storage_.log().last_index();
      if (!p || static_cast<double>(p->match) < 0.9 * static_cast<double>(last))
        return Status(Code::kFailedPrecondition,
                      "etcdserver: can only promote a learner member which is in sync with leader");
      if (strict) {
        const size_t n = voters.size() + 1, started = started_voters(0) + 1;
        if (started < n / 2 + 1) return not_enough;
        if (!connected_fully()) return unhealthy;
      }
      pb::Member m = *old;
      m.set_islearner(false);
      cc->set_type(raftpb::ConfChangeAddNode);
      cc->set_node_id(id);
      cc->set_context(m.SerializeAsString());
      return Status();
    }
    default:
      return Status(Code::kInvalidArgument, "etcdserver: not a membership change");
  }
}

void Membership::sync_peers() {
  for (const auto& m : storage_.kv().members()) {
    if (m.id() == options_.member_id) continue;
    transport_.add_peer(m.id(), {m.peerurls().begin(), m.peerurls().end()});
  }
  for (uint64_t id : storage_.kv().removed_members()) transport_.mark_removed(id);
}

}  // namespace muster::server
