// tests/fuzz/socket_client.h: one fuzz input as one client connection to a
// server running in the fuzzer's process, on loopback.
//
// The input is written, the client half-closes, and everything the server
// answers is read until it closes the connection.  A server that neither
// answers nor closes within the deadline after the client's end of stream
// is a bug (a connection, and whatever it holds, that never goes away): the
// fuzzer aborts so libFuzzer keeps the input.  The socket lingers 0 seconds
// on close (a reset, no TIME_WAIT), so millions of inputs do not exhaust the
// loopback ports.
//
// The server's io_context runs inside exchange() (tests/fuzz/server_io.h).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <boost/asio/io_context.hpp>

#include "tests/fuzz/server_io.h"

namespace muster::fuzz {

inline std::string exchange(boost::asio::io_context& io, uint16_t port, const uint8_t* data,
                            size_t size,
                            std::chrono::milliseconds deadline = std::chrono::seconds(20)) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) std::abort();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // libFuzzer's timers interrupt system calls (SIGALRM every second with
  // -timeout): an interrupted connect goes on in the background, so wait for
  // it; an interrupted send or recv is retried.
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    if (err == EINTR) {
      pollfd w{fd, POLLOUT, 0};
      while (::poll(&w, 1, -1) < 0 && errno == EINTR) {
      }
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    }
    if (err != 0) {
      errno = err;
      std::perror("fuzz: connect");
      std::abort();
    }
  }
  linger lg{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  // Non-blocking from here: the server reads only while io runs below.
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  size_t off = 0;
  while (off < size) {
    ssize_t n = ::send(fd, data + off, size - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      run_a_moment(io, std::chrono::milliseconds(10));  // the server drains its socket
      continue;
    }
    if (n <= 0) break;  // the server closed early: fine
    off += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string answer;
  const auto until = std::chrono::steady_clock::now() + deadline;
  char buf[65536];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      std::fprintf(stderr,
                   "fuzz: the server kept the connection open %lld ms after the client's "
                   "end of stream\n",
                   static_cast<long long>(deadline.count()));
      std::abort();
    }
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Nothing yet: run the server until its next handler (a timer, the
      // client's bytes, another thread's post), then look again.
      run_a_moment(io, std::min(left, std::chrono::milliseconds(50)));
      continue;
    }
    if (n <= 0) break;  // closed (or reset)
    if (answer.size() < (1u << 20)) answer.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return answer;
}

}  // namespace muster::fuzz
