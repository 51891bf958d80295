// tests/fuzz/server_io.h: how a fuzz target runs its in-process server.
//
// The server's io_context runs on the fuzzer's own thread, only while an
// input is in flight (socket_client.h, memory_stream.h): no thread
// hand-off per step of a conversation, and every handler an input causes
// has run before the next input starts.  The server must never block in a
// handler, which net/'s servers promise anyway.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>

namespace muster::fuzz {

// Runs the server for a moment: its next handler, or nothing for `wait`
// if none becomes ready, then whatever that made ready.
inline void run_a_moment(boost::asio::io_context& io, std::chrono::milliseconds wait) {
  if (io.stopped()) io.restart();
  io.run_one_for(wait);
  io.poll();
}

}  // namespace muster::fuzz
