// net/socket_options.h: socket options written once for every connection
// that must notice a dead peer.
//
// Who uses it: net::dial (net/dial.h) for client connections that ask for it
// (the proxy's member connections), and the peer transport for its streams,
// dialed and accepted.
#pragma once

#include <chrono>

namespace muster::net {

// Dead-peer detection: a peer that vanished without a FIN or RST (power
// loss, partition) is noticed after `idle` + `probes` x `interval` of
// silence, or when written data stays unacknowledged for `user_timeout`
// (TCP_USER_TIMEOUT), instead of after the kernel's retransmission limit
// (about 15 minutes).  Zero fields keep the kernel's value.
struct KeepAlive {
  bool enabled = false;
  std::chrono::seconds idle{0};
  std::chrono::seconds interval{0};
  int probes = 0;
  std::chrono::milliseconds user_timeout{0};
};

// Sets SO_KEEPALIVE, TCP_KEEPIDLE/KEEPINTVL/KEEPCNT and TCP_USER_TIMEOUT on
// the socket `fd` as `k` says; nothing when !k.enabled.
void set_keep_alive(int fd, const KeepAlive& k);

}  // namespace muster::net
