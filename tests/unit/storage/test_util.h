// Helpers shared by the storage tests: scratch directories and store setup.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "node/storage/member_storage.h"

namespace muster::storage::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it
// when the object goes away.
class ScratchDir {
 public:
  ScratchDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/muster-storage-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A controllable clock for lease expiry.
struct FakeClock {
  int64_t now_ms = 1'000'000;
  std::function<int64_t()> fn() {
    return [this] { return now_ms; };
  }
};

inline std::unique_ptr<MemberStorage> open_member(const std::string& dir,
                                                  MemberStorage::Options opts = {}) {
  std::unique_ptr<MemberStorage> m;
  Status s = MemberStorage::open(dir, std::move(opts), &m);
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  return m;
}

}  // namespace muster::storage::testing
