// etcdwire/ids.h: member and cluster IDs computed exactly as etcd
// computes them, so a Muster member and an etcd member given the same flags
// agree on every ID (etcd 3.4 etcdserver/api/membership/member.go NewMember,
// cluster.go genID; pkg/types/id.go).
//
// Pure functions; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace muster::etcdwire {

// Member ID: SHA-1 over the member's peer URL strings sorted and
// concatenated (no separator), then the cluster token (the
// --initial-cluster-token, or the --discovery URL when bootstrapping by
// discovery), then -- only for members added at run time ("member add") --
// the decimal Unix time in seconds.  The ID is the first 8 digest bytes read
// big-endian.
//
// Two members advertising identical peer URLs with the same token collide;
// callers detect that ("member exists with identical ID").
uint64_t member_id(std::vector<std::string> peer_urls, std::string_view cluster_token,
                   std::optional<int64_t> added_at_unix_seconds = std::nullopt);

// Cluster ID: SHA-1 over the member IDs sorted ascending, each as 8
// big-endian bytes; the first 8 digest bytes read big-endian.
uint64_t cluster_id(std::vector<uint64_t> member_ids);

// etcd's text form: lowercase hex, no zero padding ("4d59f8148bb377e2", "0").
std::string id_to_hex(uint64_t id);

// Inverse of id_to_hex: hex digits (either case; leading zeros allowed), no "0x" prefix, as
// Go's strconv.ParseUint(s, 16, 64).  nullopt on anything else.
std::optional<uint64_t> parse_hex_id(std::string_view s);

}  // namespace muster::etcdwire
