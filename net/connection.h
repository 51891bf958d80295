// net/connection.h: what net/'s server keeps of an accepted connection,
// whichever protocol it speaks.  Internal to net/ (server.cpp, h2.cpp).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <functional>
#include <memory>

namespace muster::net::detail {

// Connections register with their server so stop() can reach them.
class ConnectionBase {
 public:
  virtual ~ConnectionBase() = default;
  virtual void shutdown() = 0;  // called on the server's stop, any thread
};

// A connected byte stream (plain TCP or TLS) with its strand, so that the
// HTTP/2 connection is written once for both.  One read and one write may be
// outstanding at a time; handlers run on executor().
class ByteStream {
 public:
  using IoHandler = std::function<void(boost::system::error_code, std::size_t)>;
  virtual ~ByteStream() = default;
  virtual boost::asio::any_io_executor executor() = 0;
  virtual void read_some(boost::asio::mutable_buffer b, IoHandler h) = 0;
  // Writes all of `b`.
  virtual void write(boost::asio::const_buffer b, IoHandler h) = 0;
  virtual void close() = 0;
};

}  // namespace muster::net::detail
