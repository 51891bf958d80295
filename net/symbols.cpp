#include "net/symbols.h"

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <utility>

namespace muster::net::symbols {

namespace {

// One file mapped into the process: where its code is, and by how much its
// link-time addresses are moved (the load bias; 0 for a non-PIE program).
struct LoadedFile {
  std::string path;
  uint64_t bias = 0;
  std::vector<std::pair<uint64_t, uint64_t>> code;  // runtime [begin, end)
  std::string build_id;

  bool holds(uint64_t addr) const {
    for (const auto& [begin, end] : code)
      if (addr >= begin && addr < end) return true;
    return false;
  }
};

// The GNU build ID in a run of ELF notes of the given alignment (4, or 8 for
// a PT_NOTE aligned so), or "".
std::string build_id_in_notes(const char* p, uint64_t n, uint64_t align) {
  const uint64_t a = align == 8 ? 8 : 4;
  auto up = [a](uint64_t x) { return (x + a - 1) & ~(a - 1); };
  while (n >= sizeof(Elf64_Nhdr)) {
    Elf64_Nhdr h;
    std::memcpy(&h, p, sizeof h);
    const uint64_t name = up(h.n_namesz), desc = up(h.n_descsz);
    const uint64_t total = sizeof h + name + desc;
    if (total > n) break;
    if (h.n_type == NT_GNU_BUILD_ID && h.n_namesz == 4 && std::memcmp(p + sizeof h, "GNU", 4) == 0)
      return std::string(p + sizeof h + name, h.n_descsz);
    p += total;
    n -= total;
  }
  return "";
}

int add_loaded_file(dl_phdr_info* info, size_t, void* data) {
  auto* files = static_cast<std::vector<LoadedFile>*>(data);
  LoadedFile f;
  // The program itself comes with an empty name.
  f.path = info->dlpi_name && *info->dlpi_name ? info->dlpi_name : "/proc/self/exe";
  f.bias = info->dlpi_addr;
  auto mapped = [info](uint64_t vaddr, uint64_t size) {
    for (int i = 0; i < info->dlpi_phnum; ++i) {
      const ElfW(Phdr)& ph = info->dlpi_phdr[i];
      if (ph.p_type == PT_LOAD && vaddr >= ph.p_vaddr && size <= ph.p_memsz &&
          vaddr - ph.p_vaddr <= ph.p_memsz - size)
        return true;
    }
    return false;
  };
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X) != 0)
      f.code.emplace_back(f.bias + ph.p_vaddr, f.bias + ph.p_vaddr + ph.p_memsz);
    // Notes are read in memory only where a loaded segment covers them.
    if (ph.p_type == PT_NOTE && f.build_id.empty() && mapped(ph.p_vaddr, ph.p_memsz))
      f.build_id = build_id_in_notes(reinterpret_cast<const char*>(f.bias + ph.p_vaddr),
                                     ph.p_memsz, ph.p_align);
  }
  if (!f.code.empty()) files->push_back(std::move(f));
  return 0;
}

std::vector<LoadedFile> loaded_files() {
  std::vector<LoadedFile> files;
  dl_iterate_phdr(add_loaded_file, &files);
  return files;
}

// A file opened read-only and mapped whole; empty when it cannot be.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
      void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
      if (p != MAP_FAILED) {
        data_ = static_cast<const char*>(p);
        size_ = static_cast<size_t>(st.st_size);
      }
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<char*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // The bytes [off, off + n) if the file has them all.
  const char* at(uint64_t off, uint64_t n) const {
    if (!data_ || off > size_ || n > size_ - off) return nullptr;
    return data_ + off;
  }

 private:
  const char* data_ = nullptr;
  size_t size_ = 0;
};

// The file's ELF header if it is an ELF64 file of this machine's byte order
// whose header entries have the sizes this code reads; else nullptr.
const Elf64_Ehdr* elf64_header(const MappedFile& file) {
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(file.at(0, sizeof(Elf64_Ehdr)));
  constexpr unsigned char kHostData =
      __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? ELFDATA2LSB : ELFDATA2MSB;
  if (!eh || std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
      eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != kHostData)
    return nullptr;
  return eh;
}

std::string file_build_id(const MappedFile& file) {
  const Elf64_Ehdr* eh = elf64_header(file);
  if (!eh || eh->e_phentsize != sizeof(Elf64_Phdr)) return "";
  const auto* ph = reinterpret_cast<const Elf64_Phdr*>(
      file.at(eh->e_phoff, uint64_t{eh->e_phnum} * sizeof(Elf64_Phdr)));
  if (!ph) return "";
  for (unsigned i = 0; i < eh->e_phnum; ++i) {
    if (ph[i].p_type != PT_NOTE) continue;
    if (const char* notes = file.at(ph[i].p_offset, ph[i].p_filesz)) {
      std::string id = build_id_in_notes(notes, ph[i].p_filesz, ph[i].p_align);
      if (!id.empty()) return id;
    }
  }
  return "";
}

struct FunctionSymbol {
  uint64_t value;  // link-time address
  uint64_t size;   // 0 when the file does not say
  std::string_view name;
};

// The function symbols of an ELF64 file of this machine's byte order: its
// .symtab, or its .dynsym when it has none.  Every offset is checked against
// the file's size: a truncated or foreign file gives fewer symbols, never a
// read out of bounds.
std::vector<FunctionSymbol> read_function_symbols(const MappedFile& file) {
  std::vector<FunctionSymbol> out;
  const Elf64_Ehdr* eh = elf64_header(file);
  if (!eh || eh->e_shentsize != sizeof(Elf64_Shdr)) return out;
  const auto* sh = reinterpret_cast<const Elf64_Shdr*>(
      file.at(eh->e_shoff, uint64_t{eh->e_shnum} * sizeof(Elf64_Shdr)));
  if (!sh) return out;
  const Elf64_Shdr* table = nullptr;
  for (int want : {SHT_SYMTAB, SHT_DYNSYM}) {
    for (unsigned i = 0; i < eh->e_shnum && !table; ++i)
      if (sh[i].sh_type == static_cast<Elf64_Word>(want)) table = &sh[i];
    if (table) break;
  }
  if (!table || table->sh_link >= eh->e_shnum) return out;
  const Elf64_Shdr& strtab = sh[table->sh_link];
  const char* names = file.at(strtab.sh_offset, strtab.sh_size);
  const uint64_t count = table->sh_size / sizeof(Elf64_Sym);
  const auto* syms =
      reinterpret_cast<const Elf64_Sym*>(file.at(table->sh_offset, count * sizeof(Elf64_Sym)));
  if (!names || !syms) return out;
  for (uint64_t i = 0; i < count; ++i) {
    const Elf64_Sym& s = syms[i];
    const unsigned type = ELF64_ST_TYPE(s.st_info);
    if ((type != STT_FUNC && type != STT_GNU_IFUNC) || s.st_shndx == SHN_UNDEF || s.st_value == 0 ||
        s.st_name >= strtab.sh_size)
      continue;
    const char* name = names + s.st_name;
    const void* end = std::memchr(name, '\0', strtab.sh_size - s.st_name);
    if (!end || name == end) continue;
    out.push_back({s.st_value, s.st_size,
                   std::string_view(name, static_cast<size_t>(static_cast<const char*>(end) - name))});
  }
  // By address; at one address (aliases) the symbol with a size first.
  std::sort(out.begin(), out.end(), [](const FunctionSymbol& a, const FunctionSymbol& b) {
    return a.value != b.value ? a.value < b.value : a.size > b.size;
  });
  return out;
}

// The symbol containing `addr` (link-time), or nullptr.
const FunctionSymbol* containing(const std::vector<FunctionSymbol>& syms, uint64_t addr) {
  auto it = std::upper_bound(syms.begin(), syms.end(), addr,
                             [](uint64_t a, const FunctionSymbol& s) { return a < s.value; });
  if (it == syms.begin()) return nullptr;
  // The first of the symbols at the nearest address below (the one with a
  // size, when there is one).
  const uint64_t at = std::prev(it)->value;
  auto first = std::lower_bound(syms.begin(), it, at, [](const FunctionSymbol& s, uint64_t a) {
    return s.value < a;
  });
  if (first->size != 0 && addr - first->value >= first->size) return nullptr;
  return &*first;
}

}  // namespace

std::vector<std::string> function_names_in(const std::string& path,
                                           const std::vector<uint64_t>& link_addrs,
                                           const std::string& build_id) {
  std::vector<std::string> names(link_addrs.size());
  MappedFile file(path);
  if (!build_id.empty() && file_build_id(file) != build_id) return names;
  const std::vector<FunctionSymbol> syms = read_function_symbols(file);
  for (size_t i = 0; i < link_addrs.size(); ++i) {
    if (const FunctionSymbol* s = containing(syms, link_addrs[i])) names[i] = s->name;
  }
  return names;
}

std::vector<std::string> function_names(const std::vector<uint64_t>& addrs) {
  std::vector<std::string> names(addrs.size());
  for (const LoadedFile& f : loaded_files()) {
    std::vector<size_t> mine;
    std::vector<uint64_t> link_addrs;
    for (size_t i = 0; i < addrs.size(); ++i) {
      if (f.holds(addrs[i])) {
        mine.push_back(i);
        link_addrs.push_back(addrs[i] - f.bias);
      }
    }
    if (mine.empty()) continue;
    std::vector<std::string> found = function_names_in(f.path, link_addrs, f.build_id);
    for (size_t j = 0; j < mine.size(); ++j) names[mine[j]] = std::move(found[j]);
  }
  return names;
}

std::string file_build_id(const std::string& path) { return file_build_id(MappedFile(path)); }

std::string loaded_build_id(uint64_t addr) {
  for (const LoadedFile& f : loaded_files())
    if (f.holds(addr)) return f.build_id;
  return "";
}

}  // namespace muster::net::symbols
