// Randomised differential test of the v2 keys layer: the same random v2
// requests (set, create, update, compareAndSwap, in-order POST, delete with
// dir/recursive, compareAndDelete, gets) applied to V2Store on MVCC and to a
// naive tree of nodes must give identical events and errors.  TTLs are
// covered by v2store_test.
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "node/storage/v2store.h"
#include "test_util.h"

namespace muster::storage {
namespace {

struct MNode {
  bool dir = false;
  std::string value;
  uint64_t created = 0, modified = 0;
};

std::string parent(const std::string& p) {
  size_t s = p.rfind('/');
  return s == 0 ? "/" : p.substr(0, s);
}

struct V2Model {
  std::map<std::string, MNode> nodes;  // path -> node; the root is implicit
  uint64_t rev = 1;

  pb::V2Node repr(const std::string& path, const MNode& n) const {
    pb::V2Node out;
    out.set_key(path);
    if (n.dir) {
      out.set_dir(true);
    } else {
      out.set_value(n.value);
    }
    out.set_createdindex(n.created);
    out.set_modifiedindex(n.modified);
    return out;
  }
  pb::V2Event fail(int code, const std::string& cause) const {
    pb::V2Event ev;
    ev.mutable_error()->set_errorcode(code);
    ev.mutable_error()->set_message(v2_error_message(code));
    ev.mutable_error()->set_cause(cause);
    ev.mutable_error()->set_index(rev);
    ev.set_etcd_index(rev);
    return ev;
  }
  std::vector<std::string> ancestors(const std::string& p) const {  // outermost first
    std::vector<std::string> out;
    for (std::string a = parent(p); a != "/"; a = parent(a)) out.insert(out.begin(), a);
    return out;
  }
  // Checks ancestors; returns the first that is a file, or "".
  std::string file_ancestor(const std::string& p) const {
    for (const auto& a : ancestors(p)) {
      auto it = nodes.find(a);
      if (it != nodes.end() && !it->second.dir) return a;
    }
    return "";
  }
  // etcd's tree walk for a node that is not there: the first missing
  // component (100), or a file where a directory must be (104).
  pb::V2Event missing(const std::string& p) const {
    std::vector<std::string> chain = ancestors(p);
    chain.push_back(p);
    for (const auto& a : chain) {
      auto it = nodes.find(a);
      if (it == nodes.end()) return fail(100, a);
      if (!it->second.dir && a != p) return fail(104, a);
    }
    return fail(100, p);
  }
  void make_parents(const std::string& p) {
    for (const auto& a : ancestors(p))
      if (!nodes.count(a)) nodes[a] = MNode{true, "", rev, rev};
  }
  bool has_children(const std::string& p) const {
    auto lo = nodes.lower_bound(p + "/");
    return lo != nodes.end() && lo->first.compare(0, p.size() + 1, p + "/") == 0;
  }
  void remove_subtree(const std::string& p) {
    for (auto it = nodes.lower_bound(p + "/");
         it != nodes.end() && it->first.compare(0, p.size() + 1, p + "/") == 0;)
      it = nodes.erase(it);
    nodes.erase(p);
  }
  std::string compare_cause(const pb::V2Request& r, const MNode& n, bool* ok) const {
    const bool vb = !r.prev_value().empty() && r.prev_value() != n.value;
    const bool ib = r.prev_index() != 0 && r.prev_index() != n.modified;
    *ok = !vb && !ib;
    std::string v = "[" + r.prev_value() + " != " + n.value + "]";
    std::string i =
        "[" + std::to_string(r.prev_index()) + " != " + std::to_string(n.modified) + "]";
    if (vb && ib) return v + " " + i;
    return vb ? v : i;
  }

  pb::V2Event write(const std::string& path, const pb::V2Request& r, const char* action,
                    bool must_not_exist, bool replace) {
    if (path == "/") return fail(107, "/");
    auto it = nodes.find(path);
    if (it != nodes.end() && must_not_exist) return fail(105, path);
    if (it != nodes.end() && replace && it->second.dir) return fail(102, path);
    std::string bad = file_ancestor(path);
    if (!bad.empty()) return fail(104, bad);
    pb::V2Event ev;
    ev.set_action(action);
    if (it != nodes.end()) *ev.mutable_prevnode() = repr(path, it->second);
    ev.set_created(it == nodes.end());
    rev++;
    make_parents(path);
    nodes[path] = MNode{r.dir(), r.dir() ? "" : r.value(), rev, rev};
    *ev.mutable_node() = repr(path, nodes[path]);
    ev.set_etcd_index(rev);
    return ev;
  }

  pb::V2Event apply(const pb::V2Request& r) {
    const std::string path = V2Store::clean_path(r.path());
    if (r.method() == "POST") {
      auto it = nodes.find(path);
      if (path != "/" && it != nodes.end() && !it->second.dir) return fail(104, path);
      char name[32];
      std::snprintf(name, sizeof name, "%020llu", static_cast<unsigned long long>(rev + 1));
      return write((path == "/" ? "" : path) + "/" + name, r, "create", true, false);
    }
    if (r.method() == "DELETE") return del(path, r);
    // PUT
    if (path == "/") return fail(107, "/");
    const bool cas = r.prev_index() > 0 || !r.prev_value().empty();
    if (r.has_prev_exist() && !r.prev_exist()) return write(path, r, "create", true, false);
    if ((r.has_prev_exist() && r.prev_exist()) || cas) {
      auto it = nodes.find(path);
      if (it == nodes.end()) return missing(path);
      MNode& n = it->second;
      if (cas) {
        if (n.dir) return fail(102, path);
        bool ok = false;
        std::string cause = compare_cause(r, n, &ok);
        if (!ok) return fail(101, cause);
      } else if (n.dir && !r.value().empty()) {
        return fail(102, path);
      }
      pb::V2Event ev;
      ev.set_action(cas ? "compareAndSwap" : "update");
      *ev.mutable_prevnode() = repr(path, n);
      rev++;
      n.modified = rev;
      if (!n.dir) n.value = r.value();
      *ev.mutable_node() = repr(path, n);
      ev.set_etcd_index(rev);
      return ev;
    }
    return write(path, r, "set", false, true);
  }

  pb::V2Event del(const std::string& path, const pb::V2Request& r) {
    if (path == "/") return fail(107, "/");
    auto it = nodes.find(path);
    if (it == nodes.end()) return missing(path);
    const MNode old = it->second;
    const bool cmp = r.prev_index() != 0 || !r.prev_value().empty();
    if (cmp) {
      if (old.dir) return fail(102, path);
      bool ok = false;
      std::string cause = compare_cause(r, old, &ok);
      if (!ok) return fail(101, cause);
    } else if (old.dir) {
      if (!r.dir() && !r.recursive()) return fail(102, path);
      if (has_children(path) && !r.recursive()) return fail(108, path);
    }
    rev++;
    remove_subtree(path);
    pb::V2Event ev;
    ev.set_action(cmp ? "compareAndDelete" : "delete");
    ev.mutable_node()->set_key(path);
    if (old.dir) ev.mutable_node()->set_dir(true);
    ev.mutable_node()->set_modifiedindex(rev);
    ev.mutable_node()->set_createdindex(old.created);
    *ev.mutable_prevnode() = repr(path, old);
    ev.set_etcd_index(rev);
    return ev;
  }

  void list(const std::string& path, bool recursive, pb::V2Node* into) const {
    const std::string prefix = (path == "/" ? "" : path) + "/";
    for (auto it = nodes.lower_bound(prefix);
         it != nodes.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
      const std::string rest = it->first.substr(prefix.size());
      if (rest.find('/') != std::string::npos) continue;  // not a direct child
      if (rest[0] == '_') continue;                       // hidden
      pb::V2Node* n = into->add_nodes();
      *n = repr(it->first, it->second);
      if (it->second.dir && recursive) list(it->first, true, n);
    }
  }

  pb::V2Event get(const std::string& raw, bool recursive) const {
    const std::string path = V2Store::clean_path(raw);
    pb::V2Event ev;
    pb::V2Node root;
    if (path == "/") {
      root.set_key("/");
      root.set_dir(true);
    } else {
      auto it = nodes.find(path);
      if (it == nodes.end()) return missing(path);
      root = repr(path, it->second);
    }
    ev.set_action("get");
    ev.set_etcd_index(rev);
    if (root.dir()) list(path, recursive, &root);
    *ev.mutable_node() = root;
    return ev;
  }
};

class V2ModelTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(V2ModelTest, RandomRequestsMatchModel) {
  testing::ScratchDir dir;
  auto m = testing::open_member(dir.path());
  V2Model model;
  std::mt19937 rng(GetParam());
  auto n = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto path = [&] {
    static const char* parts[] = {"a", "b", "_h", "c0"};
    std::string p;
    for (int d = n(0, 3); d > 0; d--) p += std::string("/") + parts[n(0, 3)];
    return n(0, 9) == 0 ? p + "/" : p;  // "" is the root; a trailing slash is cleaned
  };
  auto value = [&] {
    static const char* vs[] = {"", "v1", "v2"};
    return std::string(vs[n(0, 2)]);
  };
  uint64_t index = 0;
  std::map<std::string, int> outcomes;  // action or error code -> count
  for (int step = 0; step < 2000; step++) {
    pb::V2Request r;
    const int k = n(0, 99);
    r.set_path(path());
    if (k < 55) {
      r.set_method("PUT");
      r.set_value(value());
      r.set_dir(n(0, 5) == 0);
      if (r.dir()) r.clear_value();
      switch (n(0, 4)) {
        case 0:
          r.set_prev_exist(false);
          break;
        case 1:
          r.set_prev_exist(true);
          break;
        case 2:
          r.set_prev_value(value());
          if (auto it = model.nodes.find(V2Store::clean_path(r.path()));
              it != model.nodes.end() && n(0, 1)) {  // often the right answer
            r.set_prev_value(it->second.value);
            if (n(0, 1)) r.set_prev_index(it->second.modified);
            break;
          }
          if (n(0, 1))
            r.set_prev_index(static_cast<uint64_t>(n(0, static_cast<int>(model.rev) + 1)));
          break;
        default:
          break;
      }
    } else if (k < 65) {
      r.set_method("POST");
      r.set_value(value());
    } else if (k < 85) {
      r.set_method("DELETE");
      r.set_dir(n(0, 1) == 0);
      r.set_recursive(n(0, 2) == 0);
      if (n(0, 4) == 0) r.set_prev_value(value());
      if (n(0, 6) == 0) r.set_prev_index(static_cast<uint64_t>(n(0, static_cast<int>(model.rev))));
    } else {
      const bool rec = n(0, 1);
      pb::V2Event got = V2Store::get(m->kv(), r.path(), rec);
      pb::V2Event want = model.get(r.path(), rec);
      ASSERT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got, want))
          << "step " << step << " GET " << r.path() << " rec " << rec << "\n got  "
          << got.ShortDebugString() << "\n want " << want.ShortDebugString();
      continue;
    }
    pb::InternalRequest req;
    *req.mutable_v2() = r;
    auto res = m->kv().apply(req, ++index, 1);
    ASSERT_TRUE(res.status.is_ok());
    pb::V2Event want = model.apply(r);
    ASSERT_TRUE(google::protobuf::util::MessageDifferencer::Equals(res.response.v2(), want))
        << "step " << step << " " << r.ShortDebugString() << "\n got  "
        << res.response.v2().ShortDebugString() << "\n want " << want.ShortDebugString();
    ASSERT_EQ(m->kv().revision(), static_cast<int64_t>(model.rev));
    outcomes[want.has_error() ? std::to_string(want.error().errorcode()) : want.action()]++;
  }
  m->kv().check_consistency();
  // The sequence must reach every action and most error paths, or it tests little.
  for (const char* o : {"set", "create", "update", "compareAndSwap", "delete", "compareAndDelete",
                        "100", "101", "102", "104", "105", "107", "108"})
    EXPECT_GT(outcomes[o], 0) << o;
}

INSTANTIATE_TEST_SUITE_P(Seeds, V2ModelTest, ::testing::Values(11u, 12u, 13u, 14u));

}  // namespace
}  // namespace muster::storage
