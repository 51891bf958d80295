// Crash safety.
//  - KilledWriterLosesNothingAcknowledged: a child process (this binary,
//    re-executed) appends Raft entries (synced), applies them and
//    acknowledges each over a pipe; it is killed with SIGKILL at a random
//    point, the store is reopened and checked, and the next child resumes by
//    replaying the log from applied+1, as a restarted member does.
//  - PowerLossKeepsSyncedEntriesAndAConsistentState: a LevelDB Env that
//    drops every unsynced byte models power loss: synced log entries
//    survive, and the state machine comes back exactly at its applied index.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <random>

#include "fault_env.h"
#include "test_util.h"

namespace muster::storage {
namespace {

using testing::ScratchDir;

constexpr int kKeys = 50;

// Entry i carries "put k<i % kKeys> = <i>"; every 97th entry is a delete of
// that key instead, and every 500th a compaction, so the checks below can
// compute the expected state at any applied index.
pb::InternalRequest request_for(uint64_t i, int64_t revision) {
  pb::InternalRequest r;
  const std::string key = "k" + std::to_string(i % kKeys);
  if (i % 500 == 0 && revision > 10) {
    r.mutable_compaction()->set_revision(revision - 5);
  } else if (i % 97 == 0) {
    r.mutable_delete_range()->set_key(key);
  } else {
    r.mutable_put()->set_key(key);
    r.mutable_put()->set_value(std::to_string(i));
  }
  return r;
}

raftpb::Entry entry_for(uint64_t i, int64_t revision_hint) {
  raftpb::Entry e;
  e.set_index(i);
  e.set_term(1 + i / 1000);
  e.set_data(request_for(i, revision_hint).SerializeAsString());
  return e;
}

// Applies committed entries [applied+1, last] (the restart replay).
void replay(MemberStorage& m) {
  const uint64_t from = m.kv().applied_index() + 1, to = m.log().last_index();
  if (from > to) return;
  std::vector<raftpb::Entry> es;
  if (m.log().entries(from, to + 1, UINT64_MAX, &es) != raft::StorageError::kOk) std::abort();
  for (const auto& e : es) {
    pb::InternalRequest r;
    if (!r.ParseFromString(e.data())) std::abort();
    m.kv().apply(r, e.index(), e.term());
  }
}

// The state after applying entries 1..applied: each key's value is the
// latest put not followed by a delete.
void check_state(MemberStorage& m, uint64_t applied) {
  for (int k = 0; k < kKeys; k++) {
    std::string want;
    bool live = false;
    for (uint64_t i = 1; i <= applied; i++) {
      if (i % kKeys != static_cast<uint64_t>(k) || i % 500 == 0) continue;
      if (i % 97 == 0) {
        live = false;
      } else {
        live = true;
        want = std::to_string(i);
      }
    }
    pb::RangeRequest rr;
    rr.set_key("k" + std::to_string(k));
    pb::RangeResponse resp;
    ASSERT_TRUE(m.kv().range(rr, &resp).is_ok());
    ASSERT_EQ(resp.kvs_size(), live ? 1 : 0) << "key " << k << " applied " << applied;
    if (live) {
      ASSERT_EQ(resp.kvs(0).value(), want) << "key " << k;
    }
  }
  m.kv().check_consistency();
}

// The child: resume, then append+apply+ack forever until killed.
int child_main(const std::string& dir, int ack_fd) {
  std::unique_ptr<MemberStorage> m;
  if (!MemberStorage::open(dir, {}, &m)) return 2;
  replay(*m);
  for (uint64_t i = m->log().last_index() + 1;; i++) {
    raftpb::HardState hs;
    hs.set_term(1 + i / 1000);
    hs.set_commit(i);
    std::vector<raftpb::Entry> es{entry_for(i, m->kv().revision())};
    if (!m->log().save(&hs, es, true)) return 3;
    pb::InternalRequest r;
    r.ParseFromString(es[0].data());
    m->kv().apply(r, i, es[0].term());
    if (i % 300 == 0) {
      raftpb::ConfState cs;
      cs.add_voters(1);
      m->log().create_snapshot(i, cs);
      m->log().compact(i - 100);
    }
    uint64_t ack = i;
    if (::write(ack_fd, &ack, sizeof ack) != sizeof ack) return 4;
  }
}

TEST(CrashTest, KilledWriterLosesNothingAcknowledged) {
  ScratchDir dir;
  std::mt19937 rng(12345);
  uint64_t acked = 0;
  for (int round = 0; round < 6; round++) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      const std::string fd = std::to_string(fds[1]);
      ::execl("/proc/self/exe", "storage_crash_tests", "--crash-child", dir.path().c_str(),
              fd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    // Let it acknowledge a random number of entries, then kill it mid-flight.
    const uint64_t want = std::uniform_int_distribution<uint64_t>(50, 700)(rng);
    uint64_t got = 0, ack = 0;
    while (got < want && ::read(fds[0], &ack, sizeof ack) == sizeof ack) {
      ASSERT_GT(ack, acked);
      acked = ack;
      got++;
    }
    ASSERT_EQ(got, want) << "child stopped early";
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    while (::read(fds[0], &ack, sizeof ack) == sizeof ack) acked = ack;  // acks in the pipe
    ::close(fds[0]);

    auto m = testing::open_member(dir.path());
    ASSERT_GE(m->log().last_index(), acked);
    ASSERT_GE(m->kv().applied_index(), acked);
    std::vector<raftpb::Entry> es;
    ASSERT_EQ(m->log().entries(m->log().first_index(), m->log().last_index() + 1, UINT64_MAX, &es),
              raft::StorageError::kOk);
    check_state(*m, m->kv().applied_index());
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GT(acked, 300u);
}

TEST(CrashTest, PowerLossKeepsSyncedEntriesAndAConsistentState) {
  ScratchDir dir;
  std::mt19937 rng(99);
  uint64_t durable = 0;  // last entry index written with sync
  uint64_t dropped_total = 0;
  for (int round = 0; round < 8; round++) {
    testing::DropUnsyncedEnv env;
    MemberStorage::Options o;
    o.db.env = &env;
    {
      auto m = testing::open_member(dir.path(), o);
      ASSERT_GE(m->log().last_index(), durable);
      replay(*m);
      const int n = std::uniform_int_distribution<int>(20, 400)(rng);
      for (int k = 0; k < n; k++) {
        const uint64_t i = m->log().last_index() + 1;
        const bool sync = std::uniform_int_distribution<int>(0, 3)(rng) == 0;
        std::vector<raftpb::Entry> es{entry_for(i, m->kv().revision())};
        ASSERT_TRUE(m->log().save(nullptr, es, sync).is_ok());
        if (sync) durable = i;
        pb::InternalRequest r;
        r.ParseFromString(es[0].data());
        m->kv().apply(r, i, es[0].term());
      }
    }
    dropped_total += env.drop_unsynced();
    auto m = testing::open_member(dir.path());
    ASSERT_GE(m->log().last_index(), durable) << "round " << round;
    // The log has no holes and the state is exactly that of its applied index.
    std::vector<raftpb::Entry> es;
    ASSERT_EQ(m->log().entries(m->log().first_index(), m->log().last_index() + 1, UINT64_MAX, &es),
              raft::StorageError::kOk);
    ASSERT_LE(m->kv().applied_index(), m->log().last_index());
    check_state(*m, m->kv().applied_index());
    if (::testing::Test::HasFatalFailure()) return;
    replay(*m);
    check_state(*m, m->log().last_index());
    if (::testing::Test::HasFatalFailure()) return;
    durable = m->log().last_index();  // replay's writes are unsynced, the log's are not
  }
  // The env must actually have dropped something, or the test proves nothing.
  EXPECT_GT(dropped_total, 0u);
}

}  // namespace
}  // namespace muster::storage

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "--crash-child") == 0)
    return muster::storage::child_main(argv[2], std::atoi(argv[3]));
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
