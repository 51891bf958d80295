// net/symbols.h: names for this very test program's addresses, read from its
// own ELF symbol tables and libc's, and nothing (no crash) from files that
// are cut short or are not ELF.
#include "net/symbols.h"

#include <elf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

extern "C" __attribute__((noinline)) int muster_symbols_test_marker(int x) {
  return x * 3 + 1;
}

namespace muster_symbols_test {
__attribute__((noinline)) int scaled(int x) { return x * 7 - 2; }
}  // namespace muster_symbols_test

int muster_symbols_test_data = 42;

namespace {

using muster::net::symbols::file_build_id;
using muster::net::symbols::function_names;
using muster::net::symbols::function_names_in;
using muster::net::symbols::loaded_build_id;

uint64_t address_of(int (*f)(int)) { return reinterpret_cast<uint64_t>(f); }

// `bytes` with `lie` applied to each of the `count` headers (section or
// program headers) at `offset`.
template <class Header>
std::string with_each_header(const std::string& bytes, uint64_t offset, unsigned count,
                             const std::function<void(Header&)>& lie) {
  std::string bent = bytes;
  for (unsigned i = 0; i < count; ++i) {
    Header h;
    char* at = bent.data() + offset + i * sizeof(Header);
    std::memcpy(&h, at, sizeof h);
    lie(h);
    std::memcpy(at, &h, sizeof h);
  }
  return bent;
}

TEST(SymbolsTest, NamesThisProgramsFunctionsAndLibcs) {
  const uint64_t marker = address_of(&muster_symbols_test_marker);
  const uint64_t scaled = address_of(&muster_symbols_test::scaled);
  const uint64_t getpid_at = reinterpret_cast<uint64_t>(&::getpid);
  const std::vector<std::string> names = function_names(
      {marker, marker + 1, scaled + 2, 0x10, reinterpret_cast<uint64_t>(&muster_symbols_test_data),
       getpid_at, marker});
  ASSERT_EQ(names.size(), 7u);
  EXPECT_EQ(names[0], "muster_symbols_test_marker");
  EXPECT_EQ(names[1], "muster_symbols_test_marker");  // inside the function
  // C++ names come as the file spells them: pprof demangles them itself.
  EXPECT_EQ(names[2], "_ZN19muster_symbols_test6scaledEi");
  EXPECT_EQ(names[3], "");  // nothing is mapped there
  EXPECT_EQ(names[4], "");  // data, not code
  EXPECT_NE(names[5].find("getpid"), std::string::npos) << names[5];  // libc's table
  EXPECT_EQ(names[6], names[0]);  // one answer per address, in order
  EXPECT_TRUE(function_names({}).empty());
}

TEST(SymbolsTest, TheLoadedBuildIdIsTheFilesOne) {
  // The running program's ID, read from its notes in memory, is the one on
  // disk: function_names compares them before it trusts a file.
  const std::string in_memory = loaded_build_id(address_of(&muster_symbols_test_marker));
  EXPECT_EQ(in_memory.size(), 20u);  // GCC's default: a SHA-1
  EXPECT_EQ(in_memory, file_build_id("/proc/self/exe"));
  const std::string libc = loaded_build_id(reinterpret_cast<uint64_t>(&::getpid));
  EXPECT_FALSE(libc.empty());
  EXPECT_NE(libc, in_memory);
  EXPECT_EQ(loaded_build_id(0x10), "");
  EXPECT_EQ(file_build_id("/nonexistent"), "");
}

TEST(SymbolsTest, AFileCutShortOrNotElfNamesNothingAndNeverReadsPastItsEnd) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe");
  std::ifstream in(self, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 4096u);
  muster::testing::TempDir dir("muster-symbols-test");
  const std::string copy = dir.file("copy");
  auto write = [&](const std::string& content) { dir.write("copy", content); };
  // Whole, the copy names what the running program's own table names.
  write(bytes);
  std::vector<uint64_t> link;
  for (uint64_t a = 0x1000; a < 0x200000; a += 0x777) link.push_back(a);
  const std::vector<std::string> whole = function_names_in(copy, link);
  size_t named = 0;
  for (const auto& n : whole) named += !n.empty();
  EXPECT_GT(named, 0u);
  // Cut anywhere (inside the header, the section table, the symbols, the
  // names): fewer names or none, no crash.  The section table is at the end,
  // so most cuts lose it and with it every name.
  for (size_t cut : {size_t{0}, size_t{3}, size_t{63}, size_t{64}, bytes.size() / 7,
                     bytes.size() / 2, bytes.size() - 4096, bytes.size() - 1}) {
    write(bytes.substr(0, cut));
    const std::string cut_id = file_build_id(copy);
    EXPECT_TRUE(cut_id.empty() || cut_id == file_build_id("/proc/self/exe")) << "cut at " << cut;
    const std::vector<std::string> got = function_names_in(copy, link);
    ASSERT_EQ(got.size(), link.size());
    for (size_t i = 0; i < got.size(); ++i) {
      if (!got[i].empty()) {
        EXPECT_EQ(got[i], whole[i]) << "cut at " << cut;
      }
    }
  }
  // Whole, but with section headers that lie: tables that run past the end,
  // start past it, or link to a section that does not exist.
  Elf64_Ehdr eh;
  std::memcpy(&eh, bytes.data(), sizeof eh);
  ASSERT_EQ(eh.e_shentsize, sizeof(Elf64_Shdr));
  ASSERT_LE(eh.e_shoff + uint64_t{eh.e_shnum} * sizeof(Elf64_Shdr), bytes.size());
  const std::function<void(Elf64_Shdr&)> lies[] = {
      [](Elf64_Shdr& sh) { sh.sh_size = uint64_t{1} << 62; },
      [&](Elf64_Shdr& sh) { sh.sh_offset = bytes.size() - 8; },
      [](Elf64_Shdr& sh) { sh.sh_offset = ~uint64_t{0} - 16; },
      [](Elf64_Shdr& sh) { sh.sh_link = 0xffff; },
  };
  for (const auto& lie : lies) {
    write(with_each_header(bytes, eh.e_shoff, eh.e_shnum, lie));
    const std::vector<std::string> got = function_names_in(copy, link);
    ASSERT_EQ(got.size(), link.size());
    for (size_t i = 0; i < got.size(); ++i) {
      if (!got[i].empty()) {
        EXPECT_EQ(got[i], whole[i]);
      }
    }
  }
  // Program headers that lie: notes past the end, or longer than the file.
  const std::function<void(Elf64_Phdr&)> phdr_lies[] = {
      [](Elf64_Phdr& ph) { ph.p_filesz = uint64_t{1} << 62; },
      [&](Elf64_Phdr& ph) { ph.p_offset = bytes.size() - 8; },
      [](Elf64_Phdr& ph) { ph.p_offset = ~uint64_t{0} - 16; },
  };
  ASSERT_EQ(eh.e_phentsize, sizeof(Elf64_Phdr));
  for (const auto& lie : phdr_lies) {
    write(with_each_header(bytes, eh.e_phoff, eh.e_phnum, lie));
    EXPECT_EQ(file_build_id(copy), "");
  }
  // With a build ID: names only from the file that has it (a library
  // upgraded under a running process has another).
  write(bytes);
  const std::string id = file_build_id(copy);
  EXPECT_EQ(function_names_in(copy, link, id), whole);
  std::string other = id;
  other[0] = static_cast<char>(other[0] ^ 1);
  for (const auto& n : function_names_in(copy, link, other)) EXPECT_EQ(n, "");
  write("#!/bin/sh\necho not an ELF file\n");
  for (const auto& n : function_names_in(copy, link)) EXPECT_EQ(n, "");
  for (const auto& n : function_names_in(dir.path() + "/missing", link)) EXPECT_EQ(n, "");
}

}  // namespace
