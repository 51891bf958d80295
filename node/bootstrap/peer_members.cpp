#include "node/bootstrap/peer_members.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "etcdwire/ids.h"

namespace muster::bootstrap {

using nlohmann::json;

namespace {

bool string_list(const json& j, const char* field, std::vector<std::string>* out) {
  if (!j.contains(field) || j[field].is_null()) return true;  // omitted = empty
  if (!j[field].is_array()) return false;
  for (const auto& v : j[field]) {
    if (!v.is_string()) return false;
    out->push_back(v.get<std::string>());
  }
  return true;
}

void sort_unique(std::vector<std::string>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

}  // namespace

std::string members_json(const std::vector<MemberInfo>& members) {
  json arr = json::array();
  for (const auto& m : members) {
    json j = {
        {"id", m.id}, {"name", m.name}, {"peerURLs", m.peer_urls}, {"clientURLs", m.client_urls}};
    if (m.is_learner) j["isLearner"] = true;
    arr.push_back(std::move(j));
  }
  return arr.dump() + "\n";
}

std::optional<std::vector<MemberInfo>> parse_members(std::string_view body, std::string* error) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_array()) {
    if (error) *error = "member list is not a JSON array";
    return std::nullopt;
  }
  std::vector<MemberInfo> out;
  for (const auto& m : j) {
    if (!m.is_object()) {
      if (error) *error = "member list holds a member that is not an object";
      return std::nullopt;
    }
    MemberInfo info;
    if (m.contains("id")) {
      const json& id = m["id"];
      if (id.is_number_unsigned())
        info.id = id.get<uint64_t>();
      else if (id.is_string())
        info.id = etcdwire::parse_hex_id(id.get<std::string>()).value_or(0);
    }
    if (m.contains("name") && m["name"].is_string()) info.name = m["name"].get<std::string>();
    if (m.contains("isLearner") && m["isLearner"].is_boolean())
      info.is_learner = m["isLearner"].get<bool>();
    if (!string_list(m, "peerURLs", &info.peer_urls) ||
        !string_list(m, "clientURLs", &info.client_urls)) {
      if (error) *error = "member list holds URLs that are not strings";
      return std::nullopt;
    }
    out.push_back(std::move(info));
  }
  return out;
}

namespace {

std::string members_url(std::string base) {
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/members";
}

// One asynchronous fetch: the peers one after another (a call's completion
// starts the next, so only cancel() comes from elsewhere).
class ClusterFetch final : public net::HttpCall, public std::enable_shared_from_this<ClusterFetch> {
 public:
  ClusterFetch(net::AsyncHttpClient& client, std::vector<std::string> peer_urls,
               ClusterHandler done)
      : client_(client), peer_urls_(std::move(peer_urls)), done_(std::move(done)) {}

  void cancel() override { slot_.cancel(); }

  void next() {
    if (slot_.cancelled() || i_ >= peer_urls_.size()) {
      auto done = std::move(done_);
      done_ = nullptr;
      if (done) done(std::nullopt, slot_.cancelled() ? "cancelled" : last_);
      return;
    }
    const std::string base = peer_urls_[i_++];
    client_.request(
        {"GET", members_url(base)},
        [self = shared_from_this(), base](net::ClientResult r) {
          std::string err;
          auto view = cluster_view(base, r, &err);
          if (!view) {
            self->last_ = err;
            return self->next();
          }
          auto done = std::move(self->done_);
          self->done_ = nullptr;
          if (done) done(std::move(view), "");
        },
        &slot_);
  }

 private:
  net::AsyncHttpClient& client_;
  const std::vector<std::string> peer_urls_;
  ClusterHandler done_;
  std::size_t i_ = 0;
  std::string last_ = "no peer URLs to ask";
  net::CallSlot slot_;
};

}  // namespace

std::optional<ClusterView> cluster_view(const std::string& base, const net::ClientResult& r,
                                        std::string* error) {
  const std::string url = members_url(base);
  if (!r.ok()) {
    *error = r.error;
    return std::nullopt;
  }
  if (r.response->status != 200) {
    *error = "GET " + url + ": status " + std::to_string(r.response->status);
    return std::nullopt;
  }
  std::string err;
  auto members = parse_members(r.response->body, &err);
  if (!members) {
    *error = "GET " + url + ": " + err;
    return std::nullopt;
  }
  ClusterView view;
  view.source = base;
  if (auto cid = r.response->headers.get("X-Etcd-Cluster-ID"))
    view.cluster_id = etcdwire::parse_hex_id(*cid).value_or(0);
  view.members = *members;
  for (const auto& m : *members) {
    view.peer_urls.insert(view.peer_urls.end(), m.peer_urls.begin(), m.peer_urls.end());
    view.client_urls.insert(view.client_urls.end(), m.client_urls.begin(), m.client_urls.end());
  }
  sort_unique(view.peer_urls);
  sort_unique(view.client_urls);
  return view;
}

std::optional<ClusterView> fetch_cluster(const std::vector<std::string>& peer_urls,
                                         net::HttpClient& client, std::string* error) {
  std::string last = "no peer URLs to ask";
  for (const auto& base : peer_urls) {
    if (auto view = cluster_view(base, client.get(members_url(base)), &last)) return view;
  }
  if (error) *error = last;
  return std::nullopt;
}

std::shared_ptr<net::HttpCall> fetch_cluster(net::AsyncHttpClient& client,
                                             std::vector<std::string> peer_urls,
                                             ClusterHandler done) {
  auto f = std::make_shared<ClusterFetch>(client, std::move(peer_urls), std::move(done));
  f->next();
  return f;
}

}  // namespace muster::bootstrap
