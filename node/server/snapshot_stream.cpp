// node/server/snapshot_stream.cpp: see snapshot_stream.h.
#include "node/server/snapshot_stream.h"

#include "base/log.h"

namespace muster::server {

// ---------------------------------------------------------------------------
// Receiving (the follower).

awaitable<void> Transport::Core::receive_snapshot(std::shared_ptr<FrameConn> conn, uint64_t from) {
  auto ex = co_await asio::this_coro::executor;
  Deadline deadline(ex, conn, opts.snapshot_idle_timeout);
  raftpb::Message msg;
  auto guard = std::make_shared<SinkGuard>();
  std::string failure;
  uint64_t chunks = 0, bytes = 0;
  try {
    Frame f = co_await conn->read_frame(opts.max_frame_bytes);
    if (f.type != FrameType::kRaftMessage) throw ProtocolError("snapshot stream without MsgSnap");
    msg = parse_payload<raftpb::Message>(f, "Raft message");
    if (msg.type() != raftpb::MsgSnap || msg.from() != from || msg.to() != opts.local_id)
      throw ProtocolError("snapshot stream must open with a MsgSnap from the dialer to us");
    guard->sink = make_sink(msg);
    if (!guard->sink) throw std::runtime_error("snapshot refused by this member");
    for (;;) {
      deadline.arm(opts.snapshot_idle_timeout);
      Frame c = co_await conn->read_frame(opts.max_frame_bytes);
      if (c.type != FrameType::kSnapshotChunk)
        throw ProtocolError("unexpected frame type " + std::to_string(static_cast<int>(c.type)) +
                            " in a snapshot stream");
      auto chunk = std::make_shared<pb::SnapshotChunk>(
          parse_payload<pb::SnapshotChunk>(c, "snapshot chunk"));
      bytes += c.payload.size();
      chunks++;
      // The sink writes to disk: not on an I/O thread.  No deadline while it
      // works (the sender waits for TCP window space meanwhile).
      deadline.disarm();
      auto add = [&guard, &chunk] { return guard->sink->add(*chunk); };
      if (stopped) throw std::runtime_error("transport stopped");
      storage::Status s = co_await offload(&pool, &add);
      if (!s) throw std::runtime_error("snapshot sink: " + s.to_string());
      if (chunk->last()) break;
    }
    auto finish = [&guard] {
      guard->finished = true;
      guard->sink->finish(true);
      return 0;
    };
    if (stopped) throw std::runtime_error("transport stopped");
    co_await offload(&pool, &finish);
  } catch (const std::exception& e) {
    failure = describe(e, deadline, "waiting for snapshot data");
  }
  deadline.disarm();
  transportpb::SnapshotResult result;
  if (failure.empty()) {
    log::info(kCaller, "received snapshot",
              {{"local-member-id", hex_id(opts.local_id)},
               {"remote-peer-id", hex_id(from)},
               {"snapshot-index", msg.snapshot().metadata().index()},
               {"chunks", chunks},
               {"bytes", bytes}});
    deliver(msg);
    result.set_ok(true);
  } else {
    if (!stopped)
      log::warn(kCaller, "failed to receive snapshot",
                {{"local-member-id", hex_id(opts.local_id)},
                 {"remote-peer-id", hex_id(from)},
                 {"error", failure}});
    // finish(false) before telling the sender, so a retry finds the sink done.
    if (guard->sink && !guard->finished) {
      auto finish = [&guard] {
        guard->finished = true;
        guard->sink->finish(false);
        return 0;
      };
      co_await offload(&pool, &finish);
    }
    result.set_ok(false);
    result.set_error(failure);
  }
  if (!conn->is_open()) co_return;
  std::string out;
  append_frame(&out, FrameType::kSnapshotResult, result, opts.max_frame_bytes);
  try {
    co_await conn->write(out);
    conn->shutdown_send();
  } catch (const std::exception&) {
  }
}

// ---------------------------------------------------------------------------
// Sending (the leader).

awaitable<void> Transport::Core::send_snapshot(std::shared_ptr<FrameConn> conn,
                                               std::vector<std::string> urls, raftpb::Message msg,
                                               std::shared_ptr<storage::SnapshotWriter> writer,
                                               std::function<void(bool)> done) {
  auto self = shared_from_this();
  auto ex = co_await asio::this_coro::executor;
  const uint64_t to = msg.to();
  std::string failure = "peer has no URLs";
  // Dial each URL once, in order, until one accepts.
  for (const auto& url : urls) {
    if (stopped) break;
    failure.clear();
    try {
      co_await dial(conn, url, to, transportpb::STREAM_SNAPSHOT);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (failure.empty()) break;
    conn->close();
    conn = std::make_shared<FrameConn>(ex);
    track(conn);
  }
  uint64_t chunks = 0, bytes = 0;
  if (failure.empty()) {
    // Generous: a slow receiver's disk holds us up through TCP flow control.
    Deadline deadline(ex, conn, opts.snapshot_result_timeout);
    try {
      msg.mutable_snapshot()->clear_data();  // the state machine follows in chunks
      std::string out;
      if (!append_frame(&out, FrameType::kRaftMessage, msg, opts.max_frame_bytes))
        throw std::runtime_error("MsgSnap exceeds the frame limit");
      co_await conn->write(out);
      struct Next {
        bool ok = false;
        pb::SnapshotChunk chunk;
      };
      for (;;) {
        auto produce = [&writer] {
          Next r;
          r.ok = writer->next(&r.chunk);
          return r;
        };
        if (stopped) throw std::runtime_error("transport stopped");
        Next n = co_await offload(&pool, &produce);
        if (!n.ok) {
          if (!writer->status())
            throw std::runtime_error("snapshot writer: " + writer->status().to_string());
          throw std::runtime_error("snapshot writer ended without a last chunk");
        }
        out.clear();
        if (!append_frame(&out, FrameType::kSnapshotChunk, n.chunk, opts.max_frame_bytes))
          throw std::runtime_error("snapshot chunk exceeds the frame limit");
        deadline.arm(opts.snapshot_result_timeout);
        co_await conn->write(out);
        chunks++;
        bytes += out.size();
        if (n.chunk.last()) break;
      }
      Frame f = co_await conn->read_frame(opts.max_frame_bytes);
      if (f.type != FrameType::kSnapshotResult) throw ProtocolError("expected a snapshot result");
      auto r = parse_payload<transportpb::SnapshotResult>(f, "snapshot result");
      if (!r.ok()) failure = "receiver refused the snapshot: " + r.error();
    } catch (const std::exception& e) {
      failure = describe(e, deadline, "sending the snapshot");
    }
  }
  conn->close();
  const bool ok = failure.empty();
  if (ok)
    log::info(kCaller, "sent snapshot",
              {{"local-member-id", hex_id(opts.local_id)},
               {"remote-peer-id", hex_id(to)},
               {"snapshot-index", msg.snapshot().metadata().index()},
               {"chunks", chunks},
               {"bytes", bytes}});
  else if (!stopped)
    log::warn(kCaller, "failed to send snapshot",
              {{"local-member-id", hex_id(opts.local_id)},
               {"remote-peer-id", hex_id(to)},
               {"error", failure}});
  if (stopped) co_return;
  std::shared_lock l(handler_mu);
  if (stopped) co_return;
  done(ok);
}

}  // namespace muster::server
