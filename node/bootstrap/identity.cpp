// node/bootstrap/identity.cpp: see identity.h.
#include "node/bootstrap/identity.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "base/atomic_file.h"
#include "etcdwire/ids.h"

namespace muster::bootstrap {

namespace fs = std::filesystem;
using nlohmann::json;

std::string identity_path(const std::string& data_dir) {
  return data_dir + "/member/identity.json";
}

std::optional<Identity> read_identity(const std::string& data_dir) {
  std::ifstream in(identity_path(data_dir));
  if (!in) return std::nullopt;
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw std::runtime_error("corrupt " + identity_path(data_dir));
  return Identity{j.value("name", ""),
                  etcdwire::parse_hex_id(j.value("member_id", "0")).value_or(0),
                  etcdwire::parse_hex_id(j.value("cluster_id", "0")).value_or(0)};
}

void write_identity(const std::string& data_dir, const Identity& id) {
  fs::create_directories(data_dir + "/member");
  fs::permissions(data_dir, fs::perms::owner_all, fs::perm_options::replace);
  const std::string text = json{{"name", id.name},
                                {"member_id", etcdwire::id_to_hex(id.member_id)},
                                {"cluster_id", etcdwire::id_to_hex(id.cluster_id)}}
                               .dump() +
                           "\n";
  if (std::string err = base::write_file_atomically(identity_path(data_dir), text); !err.empty())
    throw std::runtime_error(err);
}

}  // namespace muster::bootstrap
