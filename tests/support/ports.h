// tests/support/ports.h: loopback ports for servers a test starts.
//
// Prefer binding to port 0 and asking the server for its port; this is for
// programs that must be told a port up front (etcd, dnsmasq, muster).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>

namespace muster::testing {

// A TCP port that was free on 127.0.0.1 a moment ago (bound to 0, read,
// closed); 0 when none could be had.  Callers retry if it is taken meanwhile.
inline uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

}  // namespace muster::testing
