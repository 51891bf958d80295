// base/systemd.h: sd_notify(3) without libsystemd.
//
// Who uses it: the member and the proxy tell systemd READY=1 (Type=notify
// units, deploy/systemd/) once they serve clients, as etcd does.
#pragma once

#include <string>

namespace muster::base {

// Sends `state` (e.g. "READY=1") as one datagram to $NOTIFY_SOCKET (a path,
// or "@name" in the abstract namespace).  Does nothing without the
// variable; a failure is logged under `caller` and otherwise ignored, as etcd
// does ("failed to notify systemd for readiness").
void notify_systemd(const std::string& state, const char* caller);

}  // namespace muster::base
