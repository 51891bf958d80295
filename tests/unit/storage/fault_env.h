// A LevelDB Env that remembers how much of every file it wrote was synced,
// and can then cut each file back to that length: what a power failure
// leaves of writes that were handed to the OS but never fsync'ed.
#pragma once

#include <leveldb/env.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace muster::storage::testing {

class DropUnsyncedEnv : public leveldb::EnvWrapper {
 public:
  DropUnsyncedEnv() : leveldb::EnvWrapper(leveldb::Env::Default()) {}

  leveldb::Status NewWritableFile(const std::string& f, leveldb::WritableFile** r) override;
  leveldb::Status NewAppendableFile(const std::string& f, leveldb::WritableFile** r) override;
  leveldb::Status RemoveFile(const std::string& f) override;
  leveldb::Status RenameFile(const std::string& src, const std::string& target) override;

  // REQUIRES: no database opened with this env is still open.  Truncates
  // every tracked file to its synced length and forgets the bookkeeping.
  // Returns the number of bytes dropped.
  uint64_t drop_unsynced();

  // Called by the file wrappers.
  void note_synced(const std::string& f, uint64_t size);

 private:
  std::mutex mu_;
  std::map<std::string, uint64_t> synced_;  // file -> bytes known durable
};

}  // namespace muster::storage::testing
