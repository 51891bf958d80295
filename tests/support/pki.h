// tests/support/pki.h: a scratch certificate authority made with the
// openssl command, for tests that speak TLS: CAs and leaf certificates with
// the extensions a test asks for, in a temporary directory.  EC P-256 keys
// keep generation fast.
#pragma once

#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

#include "tests/support/temp_dir.h"

namespace muster::testing {

class TestPki {
 public:
  TestPki() = default;

  // A self-signed CA: <name>.crt and <name>.key, subject CN `cn` (`name`
  // when empty).
  void ca(const std::string& name, const std::string& cn = "") {
    run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
        " -subj /CN=" +
        (cn.empty() ? name : cn) + " -keyout " + name + ".key -out " + name + ".crt");
  }
  // A certificate <name>.crt (key <name>.key) for subject CN `cn`, signed
  // by the CA `ca`, with the x509 extensions in `ext`
  // ("subjectAltName=IP:127.0.0.1\n").
  void leaf(const std::string& name, const std::string& ca, const std::string& cn,
            const std::string& ext) {
    std::ofstream(dir_.file(name + ".ext")) << ext;
    run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=" + cn +
        " -keyout " + name + ".key -out " + name + ".csr");
    run("openssl x509 -req -in " + name + ".csr -CA " + ca + ".crt -CAkey " + ca +
        ".key -CAcreateserial -days 2 -out " + name + ".crt -extfile " + name + ".ext");
  }
  // Runs a shell command in the directory; throws std::runtime_error naming
  // it when it fails.
  void run(const std::string& cmd) const {
    const std::string full = "cd '" + dir_.path() + "' && " + cmd + " >/dev/null 2>&1";
    if (std::system(full.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
  }

  std::string crt(const std::string& name) const { return dir_.file(name + ".crt"); }
  std::string key(const std::string& name) const { return dir_.file(name + ".key"); }
  std::string file(const std::string& name) const { return dir_.file(name); }
  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_{"muster-pki"};
};

}  // namespace muster::testing
