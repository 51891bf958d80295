// node/proxy/routes.h: what the proxy needs to know about a request before
// forwarding it: does it change the cluster (refused by a read-only proxy),
// and may it be sent to a second member after the first failed mid-way.
//
// Pure; any thread.
#pragma once

#include "net/http.h"

namespace muster::proxy {

// True when the request may change cluster state:
//   * v2 and everything outside /v3: any method but GET (etcd's read-only
//     proxy refuses every non-GET with 501);
//   * /v3 (and /v3beta): every route except the reads (kv/range, watch,
//     lease timetolive and leases, member list, maintenance status, hash and
//     hashkv, alarm with action GET, auth status) and txns whose every
//     operation, nested txns included, is a range.  A body that cannot be
//     read counts as a write (refusing is the safe side).
bool is_write(const net::Request& r);

// True when a failed attempt may be repeated on another member: the request
// does not write (a write that reached a member and then lost its answer
// might have been applied; resending could apply it twice).
inline bool is_idempotent(const net::Request& r) { return !is_write(r); }

// The /v3 route without its version prefix ("/kv/range"), or "" when the
// path is not under /v3/ or /v3beta/.
std::string v3_route(const std::string& path);

}  // namespace muster::proxy
