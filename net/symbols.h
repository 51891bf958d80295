// net/symbols.h: function names for code addresses of this process, read
// from the ELF symbol tables of the files mapped into it: the program's
// .symtab, a shared library's .symtab or else its .dynsym.
//
// For /debug/pprof/symbol (net/pprof.h): the remote symbolization `go tool
// pprof` asks a server for when it has no copy of the server's binary, as on
// an operator's laptop.  etcd answers it from Go's own function table; a C++
// program has only its ELF symbols, so a binary stripped of .symtab can name
// no function of its own (deploy/debian keeps .symtab for that reason).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace muster::net::symbols {

// For each address (a runtime address in this process), the symbol name of
// the function that contains it, as the file spells it (C++ names mangled:
// pprof demangles them itself, with the options its user picked), or "" when
// no function symbol covers it (not in any loaded file's code, or the file
// has no symbols).  Reads the files' tables on each call and keeps nothing:
// the tables of a large program are megabytes, and profiles are rare.
// A file on disk whose GNU build ID is not the loaded one's (a library
// upgraded under the running process) names nothing: no name is better than
// a wrong one.
std::vector<std::string> function_names(const std::vector<uint64_t>& addrs);

// The same for link-time addresses of one ELF file (what function_names
// does for each loaded file); with `build_id` not empty, only if the file's
// build ID is that one.  A file that is missing, truncated or not ELF64
// names nothing; its offsets are checked, never trusted.
std::vector<std::string> function_names_in(const std::string& path,
                                           const std::vector<uint64_t>& link_addrs,
                                           const std::string& build_id = "");

// The GNU build ID (raw bytes) of an ELF file, and of the file loaded in
// this process at `addr`; "" when there is none.
std::string file_build_id(const std::string& path);
std::string loaded_build_id(uint64_t addr);

}  // namespace muster::net::symbols
