// tests/fuzz/memory_stream.h: a connection without a socket, for fuzzing
// net/'s HTTP/2 layer in the fuzzer's process at memory speed.
//
// The input arrives in reads of whatever size the reader asks for, then end
// of stream; whatever the server writes is counted and dropped.  Every
// completion is posted to the stream's strand, never run inline, as a
// socket's would be.  The fuzz target runs the io_context on its own thread
// until the server closes the stream (memory_exchange below).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "net/connection.h"
#include "tests/fuzz/server_io.h"

namespace muster::fuzz {

class MemoryStream final : public net::detail::ByteStream {
 public:
  MemoryStream(boost::asio::io_context& io, std::string input, std::shared_ptr<bool> closed)
      : strand_(boost::asio::make_strand(io)),
        input_(std::move(input)),
        closed_(std::move(closed)) {}

  boost::asio::any_io_executor executor() override { return strand_; }

  void read_some(boost::asio::mutable_buffer b, IoHandler h) override {
    const std::size_t n = std::min(b.size(), input_.size() - offset_);
    if (n > 0) std::memcpy(b.data(), input_.data() + offset_, n);
    offset_ += n;
    boost::system::error_code ec;
    if (n == 0 && b.size() > 0) ec = boost::asio::error::eof;
    boost::asio::post(strand_, [h = std::move(h), ec, n] { h(ec, n); });
  }

  void write(boost::asio::const_buffer b, IoHandler h) override {
    const std::size_t n = b.size();
    boost::asio::post(strand_, [h = std::move(h), n] { h({}, n); });
  }

  void close() override { *closed_ = true; }

 private:
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  std::string input_;
  std::size_t offset_ = 0;
  std::shared_ptr<bool> closed_;
};

// Runs `io` on this thread until `closed` is set and what that made ready
// has run (the streams' cancellations and answers).  A server that keeps the
// stream past the deadline is a bug, as in socket_client.h.
inline void run_until_closed(boost::asio::io_context& io, const std::shared_ptr<bool>& closed,
                             std::chrono::milliseconds deadline = std::chrono::seconds(20)) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (!*closed) {
    if (std::chrono::steady_clock::now() >= until) {
      std::fprintf(stderr, "fuzz: the server kept the connection open %lld ms after its input\n",
                   static_cast<long long>(deadline.count()));
      std::abort();
    }
    run_a_moment(io, std::chrono::milliseconds(50));
  }
}

}  // namespace muster::fuzz
