// `musterctl snapshot save <file>`: a logical backup of a member's keyspace.
//
// etcd 3.4 serves its backend snapshot only over gRPC, so this reads what the
// JSON gateway offers: every key at one revision through paginated
// /v3/kv/range calls (all pages pinned to the revision of the first), then
// the leases (/v3/lease/leases + /v3/lease/timetolive).  It is not a bolt
// database and `etcdutl snapshot restore` cannot read it.
//
// File format (JSON lines, one object per line, documented in
// docs/musterctl.md):
//   {"muster_snapshot":1,"kind":"logical","revision":"R","cluster_id":"..",
//    "member_id":"..","endpoint":"..","saved_at":"<UTC RFC 3339>"}
//   {"kv":{<the gateway KeyValue: key/value base64, revisions as strings>}}
//   ... one line per key, in key order ...
//   {"lease":{"ID":"..","TTL":"..","grantedTTL":".."}}
//   ... one line per lease ...
//   {"end":{"kvs":N,"leases":M,"sha256":"<hex SHA-256 of every byte before this line>"}}
// The file is written to <file>.part, fsynced, then renamed, so <file> is
// either absent or complete; a reader checks the end line's digest.
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <ostream>

#include "ctl/command.h"
#include "ctl/command_support.h"
#include "ctl/output.h"
#include "etcdwire/durations.h"
#include "etcdwire/v3_json.h"

namespace muster::ctl {
namespace {

using json = nlohmann::ordered_json;

constexpr int kPageSize = 1000;

// An output file being written: digest of everything written so far; the
// destructor removes the .part file unless commit() renamed it.
class SnapshotFile {
 public:
  SnapshotFile(std::string path) : path_(std::move(path)), part_(path_ + ".part") {}
  ~SnapshotFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(part_.c_str());
  }
  SnapshotFile(const SnapshotFile&) = delete;
  SnapshotFile& operator=(const SnapshotFile&) = delete;

  std::optional<std::string> open() {
    fd_ = ::open(part_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd_ < 0) return "could not create " + part_ + ": " + std::strerror(errno);
    digest_.reset(EVP_MD_CTX_new());
    if (!digest_ || EVP_DigestInit_ex(digest_.get(), EVP_sha256(), nullptr) != 1)
      return std::string("could not start SHA-256");
    return std::nullopt;
  }

  std::optional<std::string> write_line(const json& line, bool digested = true) {
    const std::string text = line.dump() + "\n";
    if (digested) EVP_DigestUpdate(digest_.get(), text.data(), text.size());
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return "writing " + part_ + ": " + std::strerror(errno);
      done += static_cast<std::size_t>(n);
    }
    bytes_ += text.size();
    return std::nullopt;
  }

  std::string digest_hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(digest_.get(), md, &len);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string hex;
    for (unsigned int i = 0; i < len; ++i) {
      hex += kHex[md[i] >> 4];
      hex += kHex[md[i] & 15];
    }
    return hex;
  }

  // fsync, rename over the final name, fsync the directory.
  std::optional<std::string> commit() {
    if (::fsync(fd_) != 0) return "fsync " + part_ + ": " + std::strerror(errno);
    ::close(fd_);
    fd_ = -1;
    if (::rename(part_.c_str(), path_.c_str()) != 0)
      return "rename " + part_ + " to " + path_ + ": " + std::strerror(errno);
    committed_ = true;
    const auto slash = path_.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
    if (int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); d >= 0) {
      ::fsync(d);
      ::close(d);
    }
    return std::nullopt;
  }

  std::size_t bytes() const { return bytes_; }

 private:
  struct DigestFree {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
  };
  std::string path_, part_;
  int fd_ = -1;
  bool committed_ = false;
  std::size_t bytes_ = 0;
  std::unique_ptr<EVP_MD_CTX, DigestFree> digest_;
};

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

int run_snapshot(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  GlobalOptions options;
  if (auto code = parse_command_line("snapshot", args, flags, options, err)) return *code;
  const auto& pos = flags.positional();
  if (pos.size() != 2 || pos[0] != "save")
    return bad_args("snapshot", err,
                    "snapshot save needs exactly one file name: snapshot save <file>");
  const std::string& path = pos[1];

  Client client(options);
  SnapshotFile file(path);
  if (auto e = file.open()) {
    err << "Error: " << *e << "\n";
    return kExitError;
  }

  const auto start = std::chrono::steady_clock::now();
  auto last_progress = start;
  std::string from(1, '\0');  // the first key of the next page
  uint64_t revision = 0, kvs = 0;
  std::string endpoint;
  for (bool more = true; more;) {
    json request = {{"key", etcdwire::base64_encode(from)},
                    {"range_end", etcdwire::base64_encode(std::string(1, '\0'))},
                    {"limit", std::to_string(kPageSize)}};
    if (revision != 0) request["revision"] = std::to_string(revision);
    const Reply reply = client.call("/v3/kv/range", request);
    if (!reply.ok()) return request_failed(err, reply);
    const json header = reply.body.value("header", json::object());
    if (revision == 0) {
      // The first page fixes the revision every later page reads at, and
      // the member the backup came from.
      revision = etcdwire::json_u64(header, "revision");
      endpoint = reply.endpoint;
      json head = {{"muster_snapshot", 1},
                   {"kind", "logical"},
                   {"revision", std::to_string(revision)},
                   {"cluster_id", std::to_string(etcdwire::json_u64(header, "cluster_id"))},
                   {"member_id", std::to_string(etcdwire::json_u64(header, "member_id"))},
                   {"endpoint", endpoint},
                   {"saved_at", utc_now()}};
      if (auto e = file.write_line(head)) {
        err << "Error: " << *e << "\n";
        return kExitError;
      }
    }
    const json page = reply.body.value("kvs", json::array());
    for (const json& kv : page) {
      if (auto e = file.write_line({{"kv", kv}})) {
        err << "Error: " << *e << "\n";
        return kExitError;
      }
      ++kvs;
    }
    more = reply.body.value("more", false) && !page.empty();
    if (more) from = bytes_field(page.back(), "key") + std::string(1, '\0');
    const auto now = std::chrono::steady_clock::now();
    if (now - last_progress >= std::chrono::seconds(1)) {
      last_progress = now;
      // Bytes written so far and the rate since the start, for the person waiting.
      const double secs = std::chrono::duration<double>(now - start).count();
      err << "snapshot: " << kvs << " keys (" << humanize_bytes(file.bytes()) << ", "
          << humanize_bytes(static_cast<uint64_t>(static_cast<double>(file.bytes()) / secs))
          << "/s) read at revision " << revision << "\n"
          << std::flush;
    }
  }

  // Leases: the list, then each lease's TTLs.  A lease that expires between
  // the two calls is left out (it would be gone on restore anyway).
  uint64_t leases = 0;
  const Reply list = client.call("/v3/lease/leases", json::object());
  if (!list.ok()) return request_failed(err, list);
  for (const json& l : list.body.value("leases", json::array())) {
    const json request = {{"ID", std::to_string(etcdwire::json_u64(l, "ID"))}};
    const Reply ttl = client.call("/v3/lease/timetolive", request);
    if (!ttl.ok()) {
      if (ttl.error.find("lease not found") != std::string::npos) continue;
      return request_failed(err, ttl);
    }
    if (static_cast<int64_t>(etcdwire::json_u64(ttl.body, "TTL")) < 0) continue;  // expired
    json lease = {{"ID", std::to_string(etcdwire::json_u64(ttl.body, "ID"))},
                  {"TTL", std::to_string(etcdwire::json_u64(ttl.body, "TTL"))},
                  {"grantedTTL", std::to_string(etcdwire::json_u64(ttl.body, "grantedTTL"))}};
    if (auto e = file.write_line({{"lease", lease}})) {
      err << "Error: " << *e << "\n";
      return kExitError;
    }
    ++leases;
  }

  const std::string digest = file.digest_hex();
  if (auto e = file.write_line({{"end", {{"kvs", kvs}, {"leases", leases}, {"sha256", digest}}}},
                               /*digested=*/false)) {
    err << "Error: " << *e << "\n";
    return kExitError;
  }
  const std::size_t bytes = file.bytes();
  if (auto e = file.commit()) {
    err << "Error: " << *e << "\n";
    return kExitError;
  }
  const auto took = std::chrono::steady_clock::now() - start;
  const double secs = std::max(std::chrono::duration<double>(took).count(), 1e-3);
  err << "snapshot: " << kvs << " keys, " << leases << " leases (" << humanize_bytes(bytes) << ", "
      << humanize_bytes(static_cast<uint64_t>(static_cast<double>(bytes) / secs))
      << "/s) at revision " << revision << " from " << endpoint << " in "
      << etcdwire::format_go_duration(took) << "\n";
  if (options.write_out == OutputFormat::kJson) {
    out << json{{"path", path},
                {"revision", revision},
                {"kvs", kvs},
                {"leases", leases},
                {"sha256", digest}}
               .dump()
        << "\n";
  } else {
    out << "Snapshot saved at " << path << "\n";
  }
  return kExitSuccess;
}

}  // namespace muster::ctl
