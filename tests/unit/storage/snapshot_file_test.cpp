// Snapshot files (node/storage/snapshot_file.h): what a member's
// Maintenance.Snapshot writes reads back record for record; any damage is
// refused before a chunk is handed on.
#include "node/storage/snapshot_file.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <fstream>
#include <iterator>

#include "snapshot_util.h"
#include "test_util.h"

namespace muster::storage {
namespace {

using testing::load_keys;
using testing::ScratchDir;

// The file as Maintenance.Snapshot streams it: dump, then its SHA-256.
std::string snapshot_bytes(MemberStorage& m, size_t chunk_bytes) {
  std::string dump(kSnapshotFileMagic);
  auto w = m.snapshot_writer(chunk_bytes);
  pb::SnapshotChunk c;
  while (w->next(&c)) append_snapshot_frame(c, &dump);
  EXPECT_TRUE(w->status().is_ok());
  dump += snapshot_file_padding(dump.size());
  unsigned char md[32];
  unsigned int n = 0;
  EVP_Digest(dump.data(), dump.size(), md, &n, EVP_sha256(), nullptr);
  return dump + std::string(reinterpret_cast<char*>(md), n);
}

void write(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
}

class SnapshotFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    member_ = testing::open_member(dir_.path() + "/m");
    uint64_t index = load_keys(*member_, 300);
    pb::InternalRequest g;
    g.mutable_lease_grant()->set_id(9);
    g.mutable_lease_grant()->set_ttl(30);
    member_->kv().apply(g, ++index, 1);
    pb::InternalRequest add;
    add.mutable_member_add()->mutable_member()->set_id(5);
    add.mutable_member_add()->mutable_member()->add_peerurls("http://x:2380");
    member_->kv().apply(add, ++index, 1);
    bytes_ = snapshot_bytes(*member_, 4 << 10);
    path_ = dir_.path() + "/snap.db";
  }

  Status read(const std::string& bytes, bool skip, SnapshotFileInfo* info, int* chunks = nullptr) {
    write(path_, bytes);
    SnapshotFileReadOptions o;
    o.skip_hash_check = skip;
    int n = 0;
    Status s = read_snapshot_file(
        path_, o,
        [&n](const pb::SnapshotChunk&) {
          n++;
          return Status();
        },
        info);
    if (chunks) *chunks = n;
    return s;
  }

  ScratchDir dir_;
  std::unique_ptr<MemberStorage> member_;
  std::string bytes_, path_;
};

TEST_F(SnapshotFileTest, ReadsBackEveryRecordAndTheRevision) {
  SnapshotFileInfo info;
  int chunks = 0;
  Status s = read(bytes_, false, &info, &chunks);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_GT(chunks, 3);
  EXPECT_TRUE(info.has_digest);
  EXPECT_TRUE(info.digest_checked);
  EXPECT_EQ(info.file_bytes, bytes_.size());
  EXPECT_EQ(info.dump_bytes % kSnapshotFileAlign, 0u);
  EXPECT_EQ(info.applied.revision(), member_->kv().revision());
  EXPECT_EQ(info.revision_records, 300u);
  EXPECT_EQ(info.leases, 1u);
  EXPECT_EQ(info.members, 1u);
  EXPECT_EQ(info.records, 300u + 1 + 1 + 1);  // + mapplied
  // The same content gives the same hash.
  SnapshotFileInfo again;
  ASSERT_TRUE(read(snapshot_bytes(*member_, 64 << 10), false, &again).is_ok());
  EXPECT_EQ(again.hash, info.hash);
}

TEST_F(SnapshotFileTest, EveryFlippedByteIsRefusedBeforeAnyChunk) {
  for (size_t at = 0; at < bytes_.size(); at += bytes_.size() / 400 + 1) {
    std::string bad = bytes_;
    bad[at] ^= 0x10;
    SnapshotFileInfo info;
    int chunks = 0;
    Status s = read(bad, false, &info, &chunks);
    ASSERT_EQ(s.code(), Code::kDataLoss) << "flip at " << at;
    EXPECT_NE(s.message().find("is corrupted: the SHA-256"), std::string::npos) << s.message();
    EXPECT_EQ(chunks, 0);
  }
}

TEST_F(SnapshotFileTest, WithoutTheHashCheckTheStructureStillCatchesAFlip) {
  const std::string dump = bytes_.substr(0, bytes_.size() - kSnapshotDigestBytes);
  for (size_t at = 0; at < dump.size(); at += dump.size() / 400 + 1) {
    std::string bad = dump;
    bad[at] ^= 0x01;
    SnapshotFileInfo info;
    Status s = read(bad, true, &info);
    ASSERT_FALSE(s.is_ok()) << "flip at " << at << " went through";
  }
  SnapshotFileInfo info;
  EXPECT_TRUE(read(dump, true, &info).is_ok());
  EXPECT_FALSE(info.has_digest);
}

TEST_F(SnapshotFileTest, TruncatedFilesAreRefused) {
  // Where the chunks end and the zero padding begins.
  const size_t frames_end =
      bytes_.substr(0, bytes_.size() - kSnapshotDigestBytes).find_last_not_of('\0') + 1;
  for (size_t cut = 1; cut < bytes_.size(); cut += bytes_.size() / 200 + 1) {
    SnapshotFileInfo info;
    Status s = read(bytes_.substr(0, bytes_.size() - cut), false, &info);
    ASSERT_EQ(s.code(), Code::kDataLoss) << "cut " << cut;
    // A cut to 512*k+32 bytes has a "digest" in the wrong place.
    EXPECT_TRUE(s.message().find("has no SHA-256 digest") != std::string::npos ||
                s.message().find("is corrupted") != std::string::npos)
        << s.message();
    // Without the hash check only the whole digest and padding may go: a
    // cut into the chunks, or leaving part of the digest, is refused.
    s = read(bytes_.substr(0, bytes_.size() - cut), true, &info);
    EXPECT_EQ(s.is_ok(), cut >= kSnapshotDigestBytes && bytes_.size() - cut >= frames_end)
        << "cut " << cut << " with --skip-hash-check: " << s.message();
  }
}

TEST_F(SnapshotFileTest, AFileThatIsNotASnapshotSaysSo) {
  SnapshotFileInfo info;
  Status s = read(std::string(4096, 'x'), true, &info);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("not a muster snapshot"), std::string::npos);
  s = read_snapshot_file(dir_.path() + "/missing", {}, {}, &info);
  EXPECT_EQ(s.code(), Code::kNotFound);
}

TEST(Crc32Test, MatchesGoChecksumIEEE) {
  EXPECT_EQ(crc32_ieee(0, "123456789"), 0xcbf43926u);
  EXPECT_EQ(crc32_ieee(crc32_ieee(0, "1234"), "56789"), 0xcbf43926u);
}

}  // namespace
}  // namespace muster::storage
