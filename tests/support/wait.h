// tests/support/wait.h: waiting on a condition with a deadline, never
// sleeping and hoping.
#pragma once

#include <chrono>
#include <thread>

namespace muster::testing {

// Polls `cond` until it holds or `limit` passes; returns its last value.
template <class Cond>
bool wait_until(Cond&& cond, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return cond();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the poll interval
  }
  return true;
}

}  // namespace muster::testing
