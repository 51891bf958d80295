// base/atomic_file.cpp: see atomic_file.h.
#include "base/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace muster::base {

namespace {

std::string error(const std::string& what, const std::string& path) {
  return "cannot " + what + " " + path + ": " + std::strerror(errno);
}

std::string parent_dir(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

std::string commit_file(const std::string& tmp, const std::string& path) {
  if (::rename(tmp.c_str(), path.c_str()) != 0) return error("rename", tmp);
  const std::string dir = parent_dir(path);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return error("open directory", dir);
  const int rc = ::fsync(dfd);
  const int saved = errno;
  ::close(dfd);
  if (rc != 0) {
    errno = saved;
    return error("sync directory", dir);
  }
  return "";
}

std::string write_file_atomically(const std::string& path, std::string_view contents, mode_t mode) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return error("create", tmp);
  std::size_t off = 0;
  while (off < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + off, contents.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string err = error("write", tmp);
      ::close(fd);
      return err;
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    std::string err = error("sync", tmp);
    ::close(fd);
    return err;
  }
  ::close(fd);
  return commit_file(tmp, path);
}

}  // namespace muster::base
