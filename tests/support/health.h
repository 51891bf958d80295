// tests/support/health.h: waiting for a child process's HTTP endpoint
// (/health) to answer, with a deadline.
#pragma once

#include <chrono>
#include <string>

#include "net/tls.h"
#include "tests/support/process.h"

namespace muster::testing {

// Polls `url` until it answers 200 with `body_has` in its body, `child`
// exits, or the deadline passes.  Returns an empty string or why not.
std::string wait_healthy(Child& child, const std::string& url, const std::string& body_has,
                         const net::TlsOptions& tls = {},
                         std::chrono::milliseconds deadline = std::chrono::seconds(20));

}  // namespace muster::testing
