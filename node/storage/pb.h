// node/storage/pb.h: every protobuf message the member's code uses, under
// one namespace.
//
// The client API messages are etcd's, in etcd's packages (api/: etcdserverpb,
// mvccpb, authpb); Muster's internal ones (node/storage/kv.proto) are in
// muster::storagepb.  Code written against them says `pb::RangeRequest`,
// `pb::KeyValue`, `pb::InternalRequest`: `muster::pb` gathers all four
// packages (no name is defined in two of them).  It is not called
// etcdserverpb, as it was: that is etcd's own package (::etcdserverpb),
// which a namespace of the same name inside muster hid, so that
// `etcdserverpb::SnapshotChunk` named a Muster message.
#pragma once

#include "api/authpb/auth.pb.h"
#include "api/etcdserverpb/rpc.pb.h"
#include "api/mvccpb/kv.pb.h"
#include "node/storage/kv.pb.h"

namespace muster::pb {
using namespace ::authpb;
using namespace ::etcdserverpb;
using namespace ::mvccpb;
using namespace ::muster::storagepb;
}  // namespace muster::pb
