// node/server/snapshot_stream.h: how a follower that has fallen behind
// catches up — the state machine streamed beside the MsgSnap that describes
// it (internal to the transport's .cpp files; the Transport's public
// send_snapshot() and snapshot handler are the entry points).
//
// The whole story, across the files that tell it:
//   1. The leader's core probes the follower (node/raft/raft.cpp, the
//      MsgAppResp reject path) and finds that the entries it needs were
//      compacted (the log keeps snapshot_catchup_entries after a Raft
//      snapshot, driver.cpp's maybe_snapshot); it sends a MsgSnap carrying
//      the snapshot's metadata only (raft.cpp's send_append -> MsgSnap).
//   2. The driver hands that MsgSnap to Transport::send_snapshot with a
//      SnapshotWriter over a LevelDB snapshot of the live state machine
//      (node/storage/snapshot.h).  The state streamed may be newer than the
//      MsgSnap's index: the follower skips entries it already reflects.
//   3. send_snapshot (snapshot_stream.cpp) dials a connection of its own
//      (STREAM_SNAPSHOT handshake), so heartbeats and appends keep flowing
//      on the Raft stream; it writes the MsgSnap, then the state in chunks
//      (storage reads on the pool, never on an I/O thread), and waits for
//      the receiver's SnapshotResult.
//   4. The follower's receive_snapshot asks the member for a sink
//      (MemberServer::snapshot_sink: a SnapshotInstaller building a new
//      database beside the live one), feeds it each chunk, finishes it, and
//      only then delivers the MsgSnap to Raft and answers ok.
//   5. The follower's core takes the MsgSnap and hands the snapshot over in
//      a Ready; the driver installs the received database in its place
//      (driver.cpp, handle_ready) and the member adopts the configuration
//      stored with it (membership.cpp, adopt_installed).
//   6. The leader's send_snapshot reports the outcome; the driver calls
//      report_snapshot and the core resumes replication from the snapshot's
//      index (or probes again after a failure).
// The wire: docs/transport.md, "Snapshot stream".
#pragma once

#include "node/server/transport_core.h"

namespace muster::server::transport_detail {

// Calls finish(false) on the sink unless it was finished; the sink goes with
// it.
struct SinkGuard {
  std::unique_ptr<SnapshotSink> sink;
  bool finished = false;
  ~SinkGuard() {
    if (sink && !finished) sink->finish(false);
  }
};

}  // namespace muster::server::transport_detail
