#include "node/storage/snapshot_file.h"

#include <openssl/evp.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "node/storage/db.h"
#include "node/storage/snapshot.h"

namespace muster::storage {

namespace {

struct FileClose {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileClose>;

struct DigestFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

std::string hex(const unsigned char* p, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += kHex[p[i] >> 4];
    s += kHex[p[i] & 15];
  }
  return s;
}

const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

// Reads exactly n bytes; false at end of file or on error (ferror tells).
bool read_exact(std::FILE* f, void* p, size_t n) { return std::fread(p, 1, n, f) == n; }

// Pass 1: the SHA-256 of the first `dump_bytes` bytes, compared with the
// 32 bytes that follow them.
Status check_digest(std::FILE* f, const std::string& path, uint64_t dump_bytes,
                    SnapshotFileInfo* info) {
  std::unique_ptr<EVP_MD_CTX, DigestFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    return {Code::kInternal, "cannot start SHA-256"};
  std::string buf(1 << 20, '\0');
  for (uint64_t left = dump_bytes; left > 0;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
    if (!read_exact(f, buf.data(), n))
      return {Code::kInternal, "read " + path + ": " + std::strerror(errno)};
    EVP_DigestUpdate(ctx.get(), buf.data(), n);
    left -= n;
  }
  unsigned char saved[kSnapshotDigestBytes];
  if (!read_exact(f, saved, sizeof saved))
    return {Code::kInternal, "read " + path + ": " + std::strerror(errno)};
  unsigned char computed[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), computed, &len);
  info->sha256_hex = hex(computed, len);
  if (len != kSnapshotDigestBytes || std::memcmp(saved, computed, len) != 0)
    return {Code::kDataLoss, "snapshot " + path + " is corrupted: the SHA-256 of its " +
                                 std::to_string(dump_bytes) + " bytes is " + info->sha256_hex +
                                 ", the digest saved at its end is " + hex(saved, sizeof saved)};
  info->digest_checked = true;
  return {};
}

void count_record(const std::string& k, const std::string& v, SnapshotFileInfo* info) {
  info->hash = crc32_ieee(info->hash, k);
  info->hash = crc32_ieee(info->hash, v);
  info->records++;
  switch (k[0]) {
    case keys::kRevision:
      info->revision_records++;
      break;
    case keys::kLease:
      info->leases++;
      break;
    case keys::kMember:
      info->members++;
      break;
    default:
      if (k == keys::kApplied && !info->applied.ParseFromString(v)) info->applied.Clear();
      break;
  }
}

}  // namespace

uint32_t crc32_ieee(uint32_t crc, std::string_view bytes) {
  const auto& t = crc_table();
  crc = ~crc;
  for (unsigned char c : bytes) crc = t[(crc ^ c) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void append_snapshot_frame(const pb::SnapshotChunk& chunk, std::string* out) {
  const std::string bytes = chunk.SerializeAsString();
  for (int b = 0; b < 8; ++b) out->push_back(static_cast<char>(bytes.size() >> (8 * b)));
  out->append(bytes);
}

std::string snapshot_file_padding(uint64_t dump_bytes) {
  return std::string((kSnapshotFileAlign - dump_bytes % kSnapshotFileAlign) % kSnapshotFileAlign,
                     '\0');
}

Status read_snapshot_file(const std::string& path, const SnapshotFileReadOptions& options,
                          const std::function<Status(const pb::SnapshotChunk&)>& on_chunk,
                          SnapshotFileInfo* info) {
  *info = SnapshotFileInfo{};
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) {
    const int e = errno;
    return {e == ENOENT ? Code::kNotFound : Code::kInternal,
            "open " + path + ": " + std::strerror(e)};
  }
  if (std::fseek(f.get(), 0, SEEK_END) != 0)
    return {Code::kInternal, "seek " + path + ": " + std::strerror(errno)};
  const long size = std::ftell(f.get());
  if (size < 0) return {Code::kInternal, "size of " + path + ": " + std::strerror(errno)};
  std::rewind(f.get());
  info->file_bytes = static_cast<uint64_t>(size);
  info->has_digest = info->file_bytes % kSnapshotFileAlign == kSnapshotDigestBytes;
  info->dump_bytes = info->has_digest ? info->file_bytes - kSnapshotDigestBytes : info->file_bytes;

  if (!options.skip_hash_check) {
    if (!info->has_digest)
      return {Code::kDataLoss,
              "snapshot " + path + " has no SHA-256 digest at its end: its size (" +
                  std::to_string(info->file_bytes) +
                  " bytes) is not a multiple of 512 plus 32, so it is truncated or was not "
                  "written by `snapshot save` (snapshot missing hash but "
                  "--skip-hash-check=false)"};
    if (Status s = check_digest(f.get(), path, info->dump_bytes, info); !s) return s;
    std::rewind(f.get());
  }

  // Pass 2: the structure, chunk by chunk.
  const auto damaged = [&path](uint64_t at, const std::string& what) {
    return Status(Code::kDataLoss,
                  "snapshot " + path + " is corrupted at byte " + std::to_string(at) + ": " + what);
  };
  std::string magic(kSnapshotFileMagic.size(), '\0');
  if (info->dump_bytes < magic.size() || !read_exact(f.get(), magic.data(), magic.size()) ||
      magic != kSnapshotFileMagic)
    return {Code::kInvalidArgument,
            "snapshot " + path +
                " is not a muster snapshot (it does not start with MUSTER-SNAPSHOT-1; an etcd "
                "bolt snapshot is restored with etcdctl/etcdutl, not muster)"};
  uint64_t at = magic.size();
  uint64_t pairs = 0;
  uint64_t checksum = kSnapshotChecksumSeed;
  std::string last_key;
  std::string frame;
  pb::SnapshotChunk chunk;
  for (bool last = false; !last;) {
    if (at + 8 > info->dump_bytes) return damaged(at, "the file ends before its last chunk");
    unsigned char len_bytes[8];
    if (!read_exact(f.get(), len_bytes, sizeof len_bytes))
      return {Code::kInternal, "read " + path + ": " + std::strerror(errno)};
    uint64_t len = 0;
    for (int b = 0; b < 8; ++b) len |= static_cast<uint64_t>(len_bytes[b]) << (8 * b);
    if (len > kSnapshotMaxFrame || at + 8 + len > info->dump_bytes)
      return damaged(
          at, "a chunk length of " + std::to_string(len) + " bytes runs past the end of the file");
    frame.resize(static_cast<size_t>(len));
    if (!read_exact(f.get(), frame.data(), frame.size()))
      return {Code::kInternal, "read " + path + ": " + std::strerror(errno)};
    // Parsed and serialized again it must give the same bytes: protobuf
    // accepts encodings no writer produces (a bool of 0x41 is true), and a
    // flipped bit must not hide in one when the digest is not checked.
    if (!chunk.ParseFromString(frame) || chunk.SerializeAsString() != frame)
      return damaged(at, "a chunk does not parse");
    if (chunk.keys_size() != chunk.values_size())
      return damaged(at, "a chunk's keys and values differ in number");
    for (int i = 0; i < chunk.keys_size(); ++i) {
      const std::string& k = chunk.keys(i);
      if (!keys::is_state_machine_key(k)) return damaged(at, "a chunk holds a foreign key");
      if (pairs > 0 && k <= last_key) return damaged(at, "keys out of order");
      last_key = k;
      checksum = snapshot_checksum(checksum, k, chunk.values(i));
      count_record(k, chunk.values(i), info);
      pairs++;
    }
    last = chunk.last();
    if (last && (chunk.total_pairs() != pairs || chunk.checksum() != checksum))
      return damaged(at, "the last chunk's pair count or checksum does not match the pairs read");
    if (on_chunk) {
      if (Status s = on_chunk(chunk); !s) return s;
    }
    at += 8 + len;
  }
  // Only zero padding may follow the last chunk.
  std::string rest(static_cast<size_t>(info->dump_bytes - at), '\0');
  if (!rest.empty() && !read_exact(f.get(), rest.data(), rest.size()))
    return {Code::kInternal, "read " + path + ": " + std::strerror(errno)};
  if (rest.find_first_not_of('\0') != std::string::npos)
    return damaged(at + rest.find_first_not_of('\0'), "data after the last chunk");
  return {};
}

}  // namespace muster::storage
