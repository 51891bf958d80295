// `musterctl snapshot save <file>`: a backup of a member.
//
// By default the member's snapshot, exactly as `etcdctl snapshot save` takes
// it: the Maintenance.Snapshot gRPC stream of one endpoint (a point-in-time
// copy of the state machine, then its SHA-256; node/storage/snapshot_file.h
// has the format), written as it arrives and checked at the end (size and
// digest), so `muster snapshot restore` can rebuild members from it.
//
// With --logical, a logical backup read through the JSON gateway instead:
// every key at one revision through paginated /v3/kv/range calls (all pages
// pinned to the revision of the first), then the leases (/v3/lease/leases +
// /v3/lease/timetolive).  Nothing restores it; it is for reading and for
// replaying into any etcd-compatible cluster.
//
// Logical file format (JSON lines, one object per line, documented in
// docs/musterctl.md):
//   {"muster_snapshot":1,"kind":"logical","revision":"R","cluster_id":"..",
//    "member_id":"..","endpoint":"..","saved_at":"<UTC RFC 3339>"}
//   {"kv":{<the gateway KeyValue: key/value base64, revisions as strings>}}
//   ... one line per key, in key order ...
//   {"lease":{"ID":"..","TTL":"..","grantedTTL":".."}}
//   ... one line per lease ...
//   {"end":{"kvs":N,"leases":M,"sha256":"<hex SHA-256 of every byte before this line>"}}
// Either file is written to <file>.part, fsynced, then renamed, so <file> is
// either absent or complete.
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <future>
#include <memory>
#include <ostream>
#include <thread>

#include "api/etcdserverpb/rpc.pb.h"
#include "ctl/command.h"
#include "ctl/command_support.h"
#include "ctl/output.h"
#include "etcdwire/durations.h"
#include "etcdwire/v3_json.h"
#include "net/grpc_client.h"
#include "net/url.h"

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
    const std::string text = json_text(line) + "\n";
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

  std::optional<std::string> write_bytes(std::string_view data) {
    std::size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(fd_, data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return "writing " + part_ + ": " + std::strerror(errno);
      done += static_cast<std::size_t>(n);
    }
    bytes_ += data.size();
    return std::nullopt;
  }
  void digest(std::string_view data) { EVP_DigestUpdate(digest_.get(), data.data(), data.size()); }

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

// The member's snapshot over gRPC (Maintenance.Snapshot), as etcdctl.
int save_snapshot(const GlobalOptions& options, const std::string& path, std::ostream& out,
                  std::ostream& err) {
  if (options.endpoints.size() != 1) {
    std::string list;
    for (const auto& e : options.endpoints) list += (list.empty() ? "" : " ") + e;
    return bad_args("snapshot", err,
                    "snapshot must be requested to one selected node, not multiple [" + list + "]");
  }
  const std::string endpoint = options.endpoints.front();
  std::string url_error;
  const auto url = net::parse_url(endpoint_url(endpoint, options), &url_error);
  if (!url) return bad_args("snapshot", err, "--endpoints " + endpoint + ": " + url_error);

  // With --user the token comes from the JSON gateway of the same member
  // and rides the call's metadata, as clientv3's does.
  net::grpc::Metadata metadata;
  {
    Client client(options);
    std::string token;
    if (Reply a = client.token(&token); !a.ok()) return request_failed(err, a);
    if (!token.empty()) metadata.add("token", token);
  }

  SnapshotFile file(path);
  if (auto e = file.open()) {
    err << "Error: " << *e << "\n";
    return kExitError;
  }
  net::grpc::ChannelOptions co;
  co.host = url->host;
  co.port = url->port;
  co.connect_timeout = options.dial_timeout;
  if (url->scheme == "https") {
    net::TlsOptions tls;
    tls.trusted_ca_file = options.cacert;
    tls.cert_file = options.cert;
    tls.key_file = options.key;
    tls.insecure_skip_verify = options.insecure_skip_tls_verify;
    co.tls = tls;
  }

  // Everything below runs on the I/O thread until the call finishes; this
  // thread waits for the outcome.  The last 32 bytes received are the
  // digest of all before them, so they are held back from the digest.
  struct Progress {
    std::string held;  // the last <= 32 bytes received, not yet digested
    uint64_t revision = 0;
    std::string error;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now(), last;
  } p;
  p.last = p.start;
  std::promise<net::grpc::Status> finished;
  boost::asio::io_context io;
  auto guard = boost::asio::make_work_guard(io);
  std::thread io_thread([&io] { io.run(); });
  {
    net::grpc::Channel channel(io, co);
    net::grpc::ClientListener l;
    l.on_message = [&](std::string message) {
      if (!p.error.empty()) return;
      ::etcdserverpb::SnapshotResponse r;
      if (!r.ParseFromString(message)) {
        p.error = "unparsable SnapshotResponse";
        return;
      }
      if (p.revision == 0) p.revision = static_cast<uint64_t>(r.header().revision());
      std::string data = std::move(p.held) + r.blob();
      const std::size_t keep = std::min<std::size_t>(32, data.size());
      file.digest(std::string_view(data).substr(0, data.size() - keep));
      p.held = data.substr(data.size() - keep);
      if (auto e = file.write_bytes(r.blob())) p.error = *e;
      const auto now = std::chrono::steady_clock::now();
      if (now - p.last >= std::chrono::seconds(1)) {
        p.last = now;
        const double secs = std::chrono::duration<double>(now - p.start).count();
        err << "snapshot: " << humanize_bytes(file.bytes()) << " ("
            << humanize_bytes(static_cast<uint64_t>(static_cast<double>(file.bytes()) / secs))
            << "/s) from " << endpoint << "\n"
            << std::flush;
      }
    };
    l.on_finish = [&finished](net::grpc::Status s) { finished.set_value(std::move(s)); };
    auto call =
        channel.call("/etcdserverpb.Maintenance/Snapshot", std::move(metadata), std::move(l));
    call->send(::etcdserverpb::SnapshotRequest().SerializeAsString());
    call->half_close();
    const net::grpc::Status status = finished.get_future().get();
    channel.close();
    guard.reset();
    io.stop();
    io_thread.join();
    if (!status.ok()) {
      err << "Error: " << status.message << "\n";
      return status.code == net::grpc::Code::kUnavailable ? kExitBadConnection : kExitError;
    }
  }
  if (!p.error.empty()) {
    err << "Error: " << p.error << "\n";
    return kExitError;
  }
  // The file must be dump + digest: size % 512 == 32 and the digest matching.
  const std::size_t bytes = file.bytes();
  const std::string digest = file.digest_hex();
  static constexpr char kHex[] = "0123456789abcdef";
  std::string held_hex;
  for (unsigned char c : p.held) {
    held_hex += kHex[c >> 4];
    held_hex += kHex[c & 15];
  }
  if (bytes % 512 != 32 || held_hex != digest) {
    err << "Error: the snapshot from " << endpoint << " is incomplete or damaged (" << bytes
        << " bytes; its trailing digest " << held_hex << " is not the SHA-256 " << digest
        << " of the rest); nothing was saved\n";
    return kExitError;
  }
  if (auto e = file.commit()) {
    err << "Error: " << *e << "\n";
    return kExitError;
  }
  const auto took = std::chrono::steady_clock::now() - p.start;
  const double secs = std::max(std::chrono::duration<double>(took).count(), 1e-3);
  err << "snapshot: " << humanize_bytes(bytes) << " ("
      << humanize_bytes(static_cast<uint64_t>(static_cast<double>(bytes) / secs))
      << "/s) at revision " << p.revision << " from " << endpoint << " in "
      << etcdwire::format_go_duration(took) << "\n";
  if (options.write_out == OutputFormat::kJson) {
    out << json_text(
               json{{"path", path}, {"revision", p.revision}, {"size", bytes}, {"sha256", digest}})
        << "\n";
  } else {
    out << "Snapshot saved at " << path << "\n";
  }
  return kExitSuccess;
}

// The logical JSON-lines dump (--logical).
int save_logical(const GlobalOptions& options, const std::string& path, std::ostream& out,
                 std::ostream& err) {
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
    out << json_text(json{{"path", path},
                          {"revision", revision},
                          {"kvs", kvs},
                          {"leases", leases},
                          {"sha256", digest}})
        << "\n";
  } else {
    out << "Snapshot saved at " << path << "\n";
  }
  return kExitSuccess;
}

}  // namespace

int run_snapshot(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Flags flags;
  flags.add_bool("logical");
  GlobalOptions options;
  if (auto code = parse_command_line("snapshot", args, flags, options, err)) return *code;
  const auto& pos = flags.positional();
  if (!pos.empty() && (pos[0] == "restore" || pos[0] == "status"))
    return bad_args("snapshot", err,
                    "snapshot " + pos[0] +
                        " works on files, not on a cluster: run `muster snapshot " + pos[0] +
                        "` (etcdutl's role; docs/operations.md)");
  if (pos.size() != 2 || pos[0] != "save")
    return bad_args("snapshot", err,
                    "snapshot save needs exactly one file name: snapshot save <file>");
  if (flags.get_bool("logical")) return save_logical(options, pos[1], out, err);
  return save_snapshot(options, pos[1], out, err);
}

}  // namespace muster::ctl
