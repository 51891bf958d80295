#include "base/systemd.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "base/log.h"

namespace muster::base {

void notify_systemd(const std::string& state, const char* caller) {
  const char* env = std::getenv("NOTIFY_SOCKET");
  if (!env || !*env) return;
  const std::string path = env;
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    log::warn(caller, "cannot notify systemd", {{"socket", path}, {"error", "path too long"}});
    return;
  }
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    log::warn(caller, "cannot notify systemd", {{"socket", path}, {"error", std::strerror(errno)}});
    return;
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (::sendto(fd, state.data(), state.size(), 0, reinterpret_cast<sockaddr*>(&addr), len) < 0)
    log::warn(caller, "cannot notify systemd", {{"socket", path}, {"error", std::strerror(errno)}});
  ::close(fd);
}

}  // namespace muster::base
