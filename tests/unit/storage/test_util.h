// Helpers shared by the storage tests: scratch directories and store setup.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "node/storage/member_storage.h"
#include "tests/support/temp_dir.h"

namespace muster::storage::testing {

// A fresh directory, removed with everything in it when the object goes
// away: tests/support's.
using ScratchDir = ::muster::testing::TempDir;

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
