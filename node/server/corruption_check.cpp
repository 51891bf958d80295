// node/server/corruption_check.cpp: see corruption_check.h.
#include "node/server/corruption_check.h"

#include <future>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "base/log.h"
#include "base/runner.h"
#include "etcdwire/durations.h"
#include "etcdwire/ids.h"
#include "net/client.h"
#include "node/storage/errors.h"

namespace muster::server {

namespace {

using nlohmann::json;
using storage::Status;

constexpr const char* kCaller = "etcdserver";
constexpr const char* kPath = "/members/hashkv";
// Hash requests from peers waiting for the worker beyond this are refused.
constexpr std::size_t kMaxQueuedHashes = 16;

std::string hex(uint64_t id) { return etcdwire::id_to_hex(id); }

// etcd's peer route answers with mvcc's own texts, without the
// "etcdserver: " of the client API's.
std::string mvcc_text(const std::string& message) {
  static const std::string prefix = "etcdserver: ";
  return message.rfind(prefix, 0) == 0 ? message.substr(prefix.size()) : message;
}

// A JSON number, or a number in a string (protobuf's JSON mapping); 0 when
// absent.
std::optional<int64_t> json_int(const json& doc, const char* key) {
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    try {
      size_t used = 0;
      const int64_t v = std::stoll(it->get<std::string>(), &used);
      if (used == it->get<std::string>().size()) return v;
    } catch (const std::exception&) {
    }
  }
  return std::nullopt;
}

Transport::HttpAnswer text_answer(int status, std::string body) {
  Transport::HttpAnswer a;
  a.status = status;
  a.body = std::move(body) + "\n";  // Go's http.Error
  return a;
}

}  // namespace

CorruptionCheck::CorruptionCheck(MemberApi& member, Options options)
    : member_(member), options_(std::move(options)), worker_([this] {
        base::set_thread_name("hashkv");
        run_worker();
      }) {}

CorruptionCheck::~CorruptionCheck() {
  stop();
  {
    std::lock_guard l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

// ---------------------------------------------------------------- peer side

void CorruptionCheck::serve_hashkv(Transport::HttpRequest req, Transport::HttpReply reply) {
  if (req.method != "GET") {
    auto a = text_answer(405, "Method Not Allowed");
    a.headers.emplace_back("Allow", "GET");
    return reply(std::move(a));
  }
  const std::string cid = req.header("x-etcd-cluster-id");
  if (!cid.empty() && cid != hex(options_.cluster_id))
    return reply(text_answer(412, "cluster ID mismatch"));
  const json doc = json::parse(req.body, nullptr, false);
  std::optional<int64_t> rev;
  if (doc.is_object()) rev = json_int(doc, "revision");
  if (!rev) {
    log::warn(kCaller, "failed to unmarshal request", {{"body-bytes", req.body.size()}});
    return reply(text_answer(400, "error unmarshalling request"));
  }
  std::unique_lock l(mu_);
  if (stopping_ || hash_requests_.size() >= kMaxQueuedHashes) {
    l.unlock();
    return reply(text_answer(503, "too many hash requests"));
  }
  hash_requests_.push_back([this, rev = *rev, reply = std::move(reply)] {
    uint32_t hash = 0;
    int64_t current = 0, compacted = 0;
    Status s = member_.kv().hash_by_rev(rev, &hash, &current, &compacted);
    if (!s) {
      log::warn(kCaller, "failed to get hashKV",
                {{"requested-revision", rev}, {"error", s.message()}});
      return reply(text_answer(400, mvcc_text(s.message())));
    }
    // Go's encoding/json of etcd's HashKVResponse: numbers, zero fields
    // left out.
    nlohmann::ordered_json body = nlohmann::ordered_json::object();
    body["header"] = nlohmann::ordered_json{{"revision", current}};
    if (hash != 0) body["hash"] = hash;
    if (compacted != 0) body["compact_revision"] = compacted;
    Transport::HttpAnswer a;
    a.status = 200;
    a.content_type = "application/json";
    a.headers.emplace_back("X-Etcd-Cluster-ID", hex(options_.cluster_id));
    a.body = body.dump();
    reply(std::move(a));
  });
  l.unlock();
  cv_.notify_all();
}

void CorruptionCheck::run_worker() {
  std::unique_lock l(mu_);
  for (;;) {
    cv_.wait(l, [this] { return stopping_ || !hash_requests_.empty(); });
    if (hash_requests_.empty()) return;  // stopping, nothing left
    auto job = std::move(hash_requests_.front());
    hash_requests_.pop_front();
    l.unlock();
    job();
    l.lock();
  }
}

// ---------------------------------------------------------------- asking

CorruptionCheck::PeerHash CorruptionCheck::ask(const std::string& url, int64_t rev) {
  net::ClientOptions co;
  co.timeout = options_.request_timeout;
  co.connect_timeout = options_.request_timeout;
  co.max_redirects = 0;  // etcd follows none
  if (options_.peer_tls) co.tls = *options_.peer_tls;
  net::HttpClient client(co);
  net::Headers headers;
  headers.set("Content-Type", "application/json");
  headers.set("X-Etcd-Cluster-ID", hex(options_.cluster_id));
  json body = json::object();
  if (rev != 0) body["revision"] = rev;
  net::ClientResult r = client.request("GET", url + kPath, body.dump(), headers);
  PeerHash p;
  if (!r.ok()) {
    p.error = r.error;
    return p;
  }
  const net::Response& resp = *r.response;
  if (resp.status == 400) {
    if (resp.body.find("mvcc: required revision has been compacted") != std::string::npos) {
      p.error = "compacted";
      return p;
    }
    if (resp.body.find("mvcc: required revision is a future revision") != std::string::npos) {
      p.error = "future";
      return p;
    }
  } else if (resp.status == 412 && resp.body.find("cluster ID mismatch") != std::string::npos) {
    p.error = "cluster";
    return p;
  }
  if (resp.status != 200) {
    p.error = "unknown error: " + resp.body;
    return p;
  }
  const json doc = json::parse(resp.body, nullptr, false);
  std::optional<int64_t> hash, current, compacted;
  if (doc.is_object()) {
    hash = json_int(doc, "hash");
    compacted = json_int(doc, "compact_revision");
    auto h = doc.find("header");
    current = h != doc.end() && h->is_object() ? json_int(*h, "revision") : 0;
  }
  if (!hash || !current || !compacted || *hash < 0 || *hash > 0xffffffffLL) {
    p.error = "unparsable answer: " + resp.body.substr(0, 200);
    return p;
  }
  p.ok = true;
  p.hash = static_cast<uint32_t>(*hash);
  p.revision = *current;
  p.compact_revision = *compacted;
  return p;
}

std::vector<CorruptionCheck::PeerHash> CorruptionCheck::peer_hashes(int64_t rev) {
  std::vector<PeerHash> out;
  for (const auto& m : member_.kv().members()) {
    {
      std::lock_guard l(mu_);
      if (stopping_) break;  // the member is stopping: no more peers
    }
    if (m.id() == options_.member_id || m.peerurls().empty()) continue;
    PeerHash last;
    for (const auto& url : m.peerurls()) {
      last = ask(url, rev);
      if (last.ok) break;
      log::warn(kCaller, "failed hash kv request",
                {{"local-member-id", hex(options_.member_id)},
                 {"requested-revision", rev},
                 {"remote-peer-endpoint", url},
                 {"error", last.error}});
    }
    last.id = m.id();
    last.urls.assign(m.peerurls().begin(), m.peerurls().end());
    out.push_back(std::move(last));
  }
  return out;
}

// ---------------------------------------------------------------- initial

void CorruptionCheck::initial_check() {
  const std::string me = hex(options_.member_id);
  log::info(kCaller, "starting initial corruption check",
            {{"local-member-id", me},
             {"timeout", etcdwire::format_go_duration(options_.request_timeout)}});
  uint32_t h = 0;
  int64_t rev = 0, crev = 0;
  if (Status s = member_.kv().hash_by_rev(0, &h, &rev, &crev); !s)
    throw std::runtime_error(me + " failed to fetch hash (" + s.message() + ")");
  int mismatch = 0;
  for (const PeerHash& p : peer_hashes(rev)) {
    const json local = {{"local-member-id", me},
                        {"local-member-revision", rev},
                        {"local-member-compact-revision", crev},
                        {"local-member-hash", h},
                        {"remote-peer-id", hex(p.id)},
                        {"remote-peer-endpoints", p.urls}};
    if (p.ok) {
      if (p.hash == h) continue;
      json f = local;
      f["remote-peer-revision"] = p.revision;
      f["remote-peer-compact-revision"] = p.compact_revision;
      f["remote-peer-hash"] = p.hash;
      if (p.compact_revision == crev) {
        log::warn(kCaller, "found different hash values from remote peer", f);
        ++mismatch;
      } else {
        log::warn(kCaller, "found different compact revision values from remote peer", f);
      }
    } else if (p.error == "future") {
      log::warn(kCaller, "cannot fetch hash from slow remote peer", local);
    } else if (p.error == "compacted") {
      log::warn(kCaller, "cannot fetch hash from remote peer; local member is behind", local);
    } else if (p.error == "cluster") {
      log::warn(kCaller, "cluster ID mismatch", local);
    }
  }
  if (mismatch > 0) throw std::runtime_error(me + " found data inconsistency with peers");
  log::info(kCaller, "initial corruption checking passed; no corruption",
            {{"local-member-id", me}});
}

// ---------------------------------------------------------------- periodic

void CorruptionCheck::start() {
  if (options_.interval.count() <= 0 || periodic_.joinable()) return;
  log::info(kCaller, "enabled corruption checking",
            {{"local-member-id", hex(options_.member_id)},
             {"interval", etcdwire::format_go_duration(options_.interval)}});
  periodic_ = std::thread([this] {
    base::set_thread_name("corrupt-check");
    run_periodic();
  });
}

void CorruptionCheck::stop() {
  {
    std::lock_guard l(mu_);
    if (!periodic_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  periodic_.join();
}

void CorruptionCheck::run_periodic() {
  for (;;) {
    {
      std::unique_lock l(mu_);
      if (cv_.wait_for(l, options_.interval, [this] { return stopping_; })) return;
    }
    const MemberStatus st = member_.status();
    if (st.leader != options_.member_id) continue;
    if (Status s = check_hash_kv(); !s)
      log::warn(kCaller, "failed to check hash KV", {{"error", s.message()}});
  }
}

Status CorruptionCheck::check_hash_kv() {
  storage::KvStore& kv = member_.kv();
  uint32_t h = 0, h2 = 0;
  int64_t rev = 0, crev = 0, rev2 = 0, crev2 = 0;
  if (Status s = kv.hash_by_rev(0, &h, &rev, &crev); !s) return s;
  const std::vector<PeerHash> peers = peer_hashes(rev);

  // Everything committed before the peers answered is applied here too.
  auto barrier = std::make_shared<std::promise<Status>>();
  auto done = barrier->get_future();
  member_.read_barrier([barrier](Status s) { barrier->set_value(std::move(s)); });
  if (done.wait_for(options_.request_timeout + std::chrono::seconds(1)) !=
      std::future_status::ready)
    return {storage::Code::kUnavailable, "etcdserver: request timed out"};
  if (Status s = done.get(); !s) return s;
  if (Status s = kv.hash_by_rev(0, &h2, &rev2, &crev2); !s) return s;

  bool alarmed = false;
  auto mismatch = [&] {
    if (alarmed) return;
    alarmed = true;
    raise_corrupt();
  };
  if (h2 != h && rev2 == rev && crev == crev2) {
    log::warn(kCaller, "found hash mismatch",
              {{"revision-1", rev},
               {"compact-revision-1", crev},
               {"hash-1", h},
               {"revision-2", rev2},
               {"compact-revision-2", crev2},
               {"hash-2", h2}});
    mismatch();
  }
  int checked = 0;
  for (const PeerHash& p : peers) {
    if (!p.ok) continue;
    ++checked;
    if (p.revision > rev2) {
      log::warn(kCaller, "revision from follower must be less than or equal to leader's",
                {{"leader-revision", rev2},
                 {"follower-revision", p.revision},
                 {"follower-peer-id", hex(p.id)}});
      mismatch();
    }
    if (p.compact_revision > crev2) {
      log::warn(kCaller, "compact revision from follower must be less than or equal to leader's",
                {{"leader-compact-revision", crev2},
                 {"follower-compact-revision", p.compact_revision},
                 {"follower-peer-id", hex(p.id)}});
      mismatch();
    }
    if (p.compact_revision == crev && p.hash != h) {
      log::warn(kCaller, "same compact revision then hashes must match",
                {{"leader-compact-revision", crev2},
                 {"leader-hash", h},
                 {"follower-compact-revision", p.compact_revision},
                 {"follower-hash", p.hash},
                 {"follower-peer-id", hex(p.id)}});
      mismatch();
    }
  }
  log::info(kCaller, "finished peer corruption check", {{"number-of-peers-checked", checked}});
  return {};
}

// Member ID 0, as etcd 3.4.23: a mismatch does not tell which member is
// wrong.  Every member logs "alarm raised" when it applies it.
void CorruptionCheck::raise_corrupt() {
  pb::InternalRequest req;
  auto* a = req.mutable_alarm();
  a->set_memberid(0);
  a->set_action(pb::AlarmRequest::ACTIVATE);
  a->set_alarm(pb::CORRUPT);
  member_.propose(std::move(req), [](Status s, storage::KvStore::ApplyResult) {
    if (!s) log::warn(kCaller, "failed to raise the CORRUPT alarm", {{"error", s.message()}});
  });
}

}  // namespace muster::server
