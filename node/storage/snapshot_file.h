// Snapshot files: the backup a member streams from Maintenance.Snapshot and
// `etcdctl snapshot save` stores, and the reader that `muster snapshot
// restore|status` use.  This file owns the format (docs/storage.md repeats it).
//
// Layout (all of it is "the dump" except the last 32 bytes):
//
//   "MUSTER-SNAPSHOT-1\n"                      kSnapshotFileMagic
//   frame*                                     <length: 8 bytes little-endian>
//                                              <SnapshotChunk protobuf (kv.proto)>
//                                              in SnapshotWriter's order; the last
//                                              chunk has `last` set and carries the
//                                              pair count and FNV-1a checksum of
//                                              every pair (snapshot.h)
//   zero bytes up to a multiple of 512
//   SHA-256 of the dump                        32 bytes
//
// The pairs are the state-machine keys of the member's LevelDB (db.h) read
// from one LevelDB snapshot, so the file is a consistent point-in-time copy:
// the MVCC revisions, leases, members and the applied record.  The digest is
// appended as etcd appends one to its bolt file, which is why the dump is
// padded: a reader (etcd's, and ours) tells that a digest is present from
// `size % 512 == 32`.
//
// Reading never trusts the file: the digest is checked before anything is
// parsed, and the structure (frame lengths, protobuf, key order, the last
// chunk's count and checksum, zero padding) is checked as it is read.
//
// Threads: plain functions; no state.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "node/storage/pb.h"
#include "node/storage/status.h"

namespace muster::storage {

inline constexpr std::string_view kSnapshotFileMagic = "MUSTER-SNAPSHOT-1\n";
inline constexpr uint64_t kSnapshotFileAlign = 512;
inline constexpr uint64_t kSnapshotDigestBytes = 32;
// A frame longer than this is corruption, not a chunk (writers use ~1 MiB).
inline constexpr uint64_t kSnapshotMaxFrame = 256ull << 20;

// ---- writing (Maintenance.Snapshot builds the dump with these)

// Appends one frame holding `chunk` to *out.
void append_snapshot_frame(const pb::SnapshotChunk& chunk, std::string* out);
// The zero bytes that pad a dump of `dump_bytes` to a multiple of 512.
std::string snapshot_file_padding(uint64_t dump_bytes);

// ---- reading

struct SnapshotFileInfo {
  uint64_t file_bytes = 0;
  uint64_t dump_bytes = 0;  // file_bytes without the digest
  bool has_digest = false;  // file_bytes % 512 == 32
  bool digest_checked = false;
  std::string sha256_hex;  // of the dump, as computed (when checked)
  // etcdctl snapshot status's columns: HASH is a CRC-32 (IEEE) over every
  // record's key and value in file order, TOTAL KEYS the number of records
  // (etcd counts every key of every bolt bucket the same way).
  uint32_t hash = 0;
  uint64_t records = 0;
  uint64_t revision_records = 0;  // MVCC revisions ('r'), tombstones included
  uint64_t leases = 0;
  uint64_t members = 0;
  pb::AppliedRecord applied;  // revision and compacted revision of the copy
};

struct SnapshotFileReadOptions {
  // etcdctl's --skip-hash-check: a file without a digest is read (its
  // chunks' own checksum still guards the content), and a digest present is
  // not compared.
  bool skip_hash_check = false;
};

// Checks the file at `path` and reads it through, handing each chunk to
// `on_chunk` (may be empty) in order; an error from on_chunk stops the read
// and is returned.  Fills *info.  Errors (kDataLoss for a damaged file,
// kInvalidArgument for one that is not a muster snapshot, kNotFound, kInternal
// for I/O) carry a sentence for the operator that names the file.
// The digest is verified before the first on_chunk call.
Status read_snapshot_file(const std::string& path, const SnapshotFileReadOptions& options,
                          const std::function<Status(const pb::SnapshotChunk&)>& on_chunk,
                          SnapshotFileInfo* info);

// CRC-32 (IEEE, as Go's hash/crc32.ChecksumIEEE), continued from `crc`.
uint32_t crc32_ieee(uint32_t crc, std::string_view bytes);

}  // namespace muster::storage
