// base/process_metrics.h: the process_* family Prometheus' client libraries
// export (Go's process collector, which etcd's /metrics carries), read from
// /proc/self: process_cpu_seconds_total, process_open_fds, process_max_fds,
// process_virtual_memory_bytes, process_virtual_memory_max_bytes,
// process_resident_memory_bytes, process_start_time_seconds.
// Dashboards (etcd's Grafana dashboard plots process_resident_memory_bytes)
// and `musterctl check datascale` read them.
#pragma once

#include "base/metrics.h"

namespace muster::metrics {

// Sets the process_* instruments in `registry` to the values of now; called
// just before rendering /metrics.  Any thread.
void update_process_metrics(Registry& registry);

}  // namespace muster::metrics
