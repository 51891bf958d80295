// Command-line front end shared by the ctest seed runners and bench/raft-sim:
//   raft-sim [--start S] [--seeds N] [--verbose] [--chaos-ticks T]
//            [--liveness-ticks T] [--break-vote-twice] [--break-commit-old-terms]
//            [--expect-failure]
// Runs seeds S .. S+N-1; on the first failure prints the seed, the violated
// property and the command that replays it, and exits 1.  With
// --expect-failure the exit status is inverted (used to prove that a broken
// core is caught).
#pragma once

namespace muster::raft::sim {
int sim_main(int argc, char** argv);
}
