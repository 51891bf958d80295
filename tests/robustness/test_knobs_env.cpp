// muster-broken's test knobs (node/server/test_knobs.h): switched on by
// MUSTER_TEST_BREAK, e.g. MUSTER_TEST_BREAK=stale-reads,watch-drop.  Linked
// only into the test-only muster-broken binary, in place of
// node/server/test_knobs_off.cpp.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "node/server/test_knobs.h"

namespace muster::server::test_knobs {

namespace {

struct Knobs {
  bool stale_reads = false;
  bool watch_drop = false;
  Knobs() {
    const char* env = std::getenv("MUSTER_TEST_BREAK");
    std::stringstream in(env ? env : "");
    std::string knob;
    while (std::getline(in, knob, ',')) {
      if (knob == "stale-reads") {
        stale_reads = true;
      } else if (knob == "watch-drop") {
        watch_drop = true;
      } else if (!knob.empty()) {
        std::fprintf(stderr, "muster-broken: unknown MUSTER_TEST_BREAK knob %s\n", knob.c_str());
        std::exit(2);
      }
    }
    std::fprintf(stderr, "muster-broken: deliberately broken: %s\n", env ? env : "(nothing)");
  }
};

const Knobs& knobs() {
  static const Knobs k;
  return k;
}

}  // namespace

bool serve_reads_locally() { return knobs().stale_reads; }

bool drop_watch_event() {
  static std::atomic<unsigned> n{0};
  return knobs().watch_drop && ++n % 50 == 0;
}

}  // namespace muster::server::test_knobs
