// node/bootstrap/identity.h: what a member remembers about itself beside its
// database: <data-dir>/member/identity.json {"name","member_id","cluster_id"}
// (IDs in hex, as etcd prints them).
//
// Its presence is what "already initialized" means: a member that finds it
// ignores every bootstrap flag and restarts from its data.  It is written
// once, after the storage is created, atomically (base/atomic_file.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace muster::bootstrap {

struct Identity {
  std::string name;
  uint64_t member_id = 0;
  uint64_t cluster_id = 0;
};

std::string identity_path(const std::string& data_dir);

// nullopt when the data dir holds no identity.  Throws std::runtime_error
// when the file exists but cannot be read or parsed.
std::optional<Identity> read_identity(const std::string& data_dir);

// Creates <data-dir>/member (data dir mode 0700, as etcd) and writes the
// identity.  Throws std::runtime_error on failure.
void write_identity(const std::string& data_dir, const Identity& id);

}  // namespace muster::bootstrap
