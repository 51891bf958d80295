// tests/unit/config/test_util.h: temp dirs, child processes and free ports
// for the config and ID tests.  Every resource is released by its
// destructor, so a failing assertion cannot leak a process or a directory.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace muster::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "muster-config-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string write(const std::string& name, const std::string& text) const {
    const auto p = path_ / name;
    std::ofstream(p) << text;
    return p.string();
  }

 private:
  std::filesystem::path path_;
};

// A port that was free a moment ago on 127.0.0.1 (bind to 0, read, close).
inline int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) std::abort();
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) std::abort();
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One child process with stdout+stderr in a log file; SIGKILLed and reaped
// by the destructor.  `env` (when given) replaces the environment.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& log_path,
        const std::string& cwd = "", std::optional<std::vector<std::string>> env = std::nullopt)
      : log_path_(log_path) {
    std::vector<char*> cargv, cenv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    if (env) {
      for (const auto& e : *env) cenv.push_back(const_cast<char*>(e.c_str()));
      cenv.push_back(nullptr);
    }
    pid_ = fork();
    if (pid_ < 0) std::abort();
    if (pid_ == 0) {
      const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(126);
      if (env) {
        execve(cargv[0], cargv.data(), cenv.data());
      } else {
        execv(cargv[0], cargv.data());
      }
      _exit(127);
    }
  }
  ~Child() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool running() {
    if (pid_ <= 0) return false;
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }
  std::string log() const { return read_text(log_path_); }

  // Waits until the log holds a line containing `needle` and returns that
  // line; "" if the process exits or the deadline passes first.
  std::string wait_for_line(const std::string& needle, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string text = log();
      if (auto i = text.find(needle); i != std::string::npos) {
        const size_t begin = text.rfind('\n', i);
        const size_t end = text.find('\n', i);
        if (end != std::string::npos) {  // only whole lines
          const size_t b = begin == std::string::npos ? 0 : begin + 1;
          return text.substr(b, end - b);
        }
      }
      if (!running()) return "";
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // poll interval under a deadline
    }
    return "";
  }

 private:
  pid_t pid_ = -1;
  std::string log_path_;
};

// Runs a shell command; returns whether it exited 0, its stdout in *out.
inline bool run_command(const std::string& cmd, std::string* out) {
  out->clear();
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return false;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out->append(buf, n);
  return pclose(p) == 0;
}

}  // namespace muster::testing
