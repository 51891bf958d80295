// node/server/initial_log.cpp: see initial_log.h.
#include "node/server/initial_log.h"

#include <algorithm>
#include <set>
#include <stdexcept>

#include "base/log.h"
#include "node/storage/pb.h"

namespace muster::server {

namespace pb = ::muster::pb;

void write_bootstrap_log(storage::RaftLog& log, const std::vector<InitialMember>& initial) {
  // etcd's bootstrap of a new cluster: every member starts with the same log,
  // one ConfChangeAddNode per initial member at term 1, all committed.  Each
  // entry's context is the member record, applied like any later "member add".
  std::vector<InitialMember> sorted = initial;
  std::sort(sorted.begin(), sorted.end(),
            [](const InitialMember& a, const InitialMember& b) { return a.id < b.id; });
  std::vector<raftpb::Entry> entries;
  uint64_t index = 0;
  for (const auto& m : sorted) {
    pb::Member rec;
    rec.set_id(m.id);
    rec.set_name(m.name);
    for (const auto& u : m.peer_urls) rec.add_peerurls(u);
    // No client URLs here: every member must write byte-identical bootstrap
    // entries (same index and term means same entry), and only the local
    // member's client URLs are known.  Each member publishes its own later.
    raftpb::ConfChange cc;
    cc.set_type(raftpb::ConfChangeAddNode);
    cc.set_node_id(m.id);
    cc.set_context(rec.SerializeAsString());
    raftpb::Entry e;
    e.set_type(raftpb::EntryConfChange);
    e.set_term(1);
    e.set_index(++index);
    e.set_data(cc.SerializeAsString());
    entries.push_back(std::move(e));
  }
  raftpb::HardState hs;
  hs.set_term(1);
  hs.set_commit(index);
  auto st = log.save(&hs, entries, true);
  if (!st) throw std::runtime_error("cannot write the bootstrap log: " + st.message());
}

void force_new_cluster(storage::MemberStorage& storage, uint64_t member_id) {
  // etcd's --force-new-cluster: keep the data, forget the other members.
  // Uncommitted entries are dropped (a new entry at commit+1 truncates them),
  // then one committed ConfChangeRemoveNode per other member is appended, so
  // applying the log leaves this member alone in the configuration.
  auto& log_store = storage.log();
  raftpb::HardState hs = log_store.hard_state();
  std::set<uint64_t> ids;
  for (const auto& m : storage.kv().members()) ids.insert(m.id());
  std::vector<raftpb::Entry> committed;
  uint64_t applied = storage.kv().applied_index();
  if (hs.commit() > applied)
    log_store.entries(applied + 1, hs.commit() + 1, UINT64_MAX, &committed);
  for (const auto& e : committed) {
    raftpb::ConfChange cc;
    if (e.type() != raftpb::EntryConfChange || !cc.ParseFromString(e.data())) continue;
    if (cc.type() == raftpb::ConfChangeRemoveNode)
      ids.erase(cc.node_id());
    else
      ids.insert(cc.node_id());
  }
  std::vector<raftpb::Entry> entries;
  uint64_t index = hs.commit();
  for (uint64_t id : ids) {
    if (id == member_id) continue;
    raftpb::ConfChange cc;
    cc.set_type(raftpb::ConfChangeRemoveNode);
    cc.set_node_id(id);
    raftpb::Entry e;
    e.set_type(raftpb::EntryConfChange);
    e.set_term(std::max<uint64_t>(hs.term(), 1));
    e.set_index(++index);
    e.set_data(cc.SerializeAsString());
    entries.push_back(std::move(e));
  }
  if (entries.empty()) return;
  hs.set_commit(index);
  hs.set_term(std::max<uint64_t>(hs.term(), 1));
  auto st = log_store.save(&hs, entries, true);
  if (!st) throw std::runtime_error("--force-new-cluster: cannot write the log: " + st.message());
  log::warn("etcdserver", "forcing restart member in a new cluster: other members removed",
            {{"removed", entries.size()}, {"commit-index", index}});
}

}  // namespace muster::server
