// node/server/test_knobs.h: deliberate faults for the robustness harness's
// self-check (tests/robustness/, docs/reliability.md): a checker that never
// sees a broken build fail proves nothing.
//
// The production `muster` links test_knobs_off.cpp, where every knob is off
// for good: nothing can switch it on.  Only the test-only `muster-broken`
// binary, built in tests/robustness/ and never installed, links
// tests/robustness/test_knobs_env.cpp instead, which reads the comma-separated
// MUSTER_TEST_BREAK environment variable once.
#pragma once

namespace muster::server::test_knobs {

// "stale-reads": linearizable reads are served from the local state without
// a ReadIndex round (a partitioned or paused old leader answers stale data).
bool serve_reads_locally();

// "watch-drop": about one event in fifty is left out of a live watch
// response (a gap no compaction explains).  Called once per event.
bool drop_watch_event();

}  // namespace muster::server::test_knobs
