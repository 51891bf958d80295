// etcdwire/durations.h: Go's time.Duration as text, the way etcd's flags,
// config files and etcdctl's output spell durations ("300ms", "1h30m",
// "1.5s", "2h0m0s").
//
// Who uses it: node/config (etcd's duration flags and YAML keys),
// muster-discovery's flags, musterctl's --dial-timeout and friends and its
// "took" columns.  Pure functions; any thread.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace muster::etcdwire {

// Go's time.ParseDuration: [-+]?([0-9]*(\.[0-9]*)?[a-z]+)+ or "0", units ns,
// us (or µs), ms, s, m, h.  nullopt on anything else, with Go's sentence in
// *error ("time: invalid duration \"5 s\"", "time: missing unit in duration
// \"5\"", "time: unknown unit \"d\" in duration \"1d\"").
std::optional<std::chrono::nanoseconds> parse_go_duration(std::string_view s,
                                                          std::string* error = nullptr);

// Go's time.Duration.String(): "0s", "999ns", "1.5µs", "100ms", "2.5s",
// "1m3.000000001s", "2h0m0s".
std::string format_go_duration(std::chrono::nanoseconds d);

}  // namespace muster::etcdwire
