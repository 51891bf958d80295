#include "fault_env.h"

#include <sys/stat.h>
#include <unistd.h>

#include <memory>

namespace muster::storage::testing {

namespace {

class TrackedFile : public leveldb::WritableFile {
 public:
  TrackedFile(DropUnsyncedEnv* env, std::string name, leveldb::WritableFile* base, uint64_t pos)
      : env_(env), name_(std::move(name)), base_(base), pos_(pos) {}
  leveldb::Status Append(const leveldb::Slice& data) override {
    leveldb::Status s = base_->Append(data);
    if (s.ok()) pos_ += data.size();
    return s;
  }
  leveldb::Status Close() override { return base_->Close(); }
  leveldb::Status Flush() override { return base_->Flush(); }
  leveldb::Status Sync() override {
    leveldb::Status s = base_->Sync();
    if (s.ok()) env_->note_synced(name_, pos_);
    return s;
  }

 private:
  DropUnsyncedEnv* env_;
  std::string name_;
  std::unique_ptr<leveldb::WritableFile> base_;
  uint64_t pos_;
};

}  // namespace

void DropUnsyncedEnv::note_synced(const std::string& f, uint64_t size) {
  std::lock_guard l(mu_);
  synced_[f] = size;
}

leveldb::Status DropUnsyncedEnv::NewWritableFile(const std::string& f, leveldb::WritableFile** r) {
  leveldb::WritableFile* base = nullptr;
  leveldb::Status s = target()->NewWritableFile(f, &base);
  if (!s.ok()) return s;
  {
    std::lock_guard l(mu_);
    synced_[f] = 0;  // a new file: nothing durable yet
  }
  *r = std::make_unique<TrackedFile>(this, f, base, 0).release();
  return s;
}

leveldb::Status DropUnsyncedEnv::NewAppendableFile(const std::string& f,
                                                   leveldb::WritableFile** r) {
  uint64_t size = 0;
  if (!target()->GetFileSize(f, &size).ok()) size = 0;
  leveldb::WritableFile* base = nullptr;
  leveldb::Status s = target()->NewAppendableFile(f, &base);
  if (!s.ok()) return s;
  {
    std::lock_guard l(mu_);
    if (!synced_.count(f)) synced_[f] = size;  // what existed before is durable
  }
  *r = std::make_unique<TrackedFile>(this, f, base, size).release();
  return s;
}

leveldb::Status DropUnsyncedEnv::RemoveFile(const std::string& f) {
  {
    std::lock_guard l(mu_);
    synced_.erase(f);
  }
  return target()->RemoveFile(f);
}

leveldb::Status DropUnsyncedEnv::RenameFile(const std::string& src, const std::string& target) {
  {
    std::lock_guard l(mu_);
    auto it = synced_.find(src);
    if (it != synced_.end()) {
      synced_[target] = it->second;
      synced_.erase(src);
    } else {
      synced_.erase(target);
    }
  }
  return this->target()->RenameFile(src, target);
}

uint64_t DropUnsyncedEnv::drop_unsynced() {
  std::lock_guard l(mu_);
  uint64_t dropped = 0;
  for (const auto& [f, size] : synced_) {
    struct stat st;
    if (::stat(f.c_str(), &st) != 0) continue;
    if (static_cast<uint64_t>(st.st_size) > size) {
      dropped += static_cast<uint64_t>(st.st_size) - size;
      if (::truncate(f.c_str(), static_cast<off_t>(size)) != 0) std::abort();
    }
  }
  synced_.clear();
  return dropped;
}

}  // namespace muster::storage::testing
