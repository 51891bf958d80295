// bench/raft-sim: more simulator seeds on demand, e.g.
//   build/bin/raft-sim --seeds 100000 --start 5000
#include "tests/sim/sim_cli.h"

int main(int argc, char** argv) { return muster::raft::sim::sim_main(argc, argv); }
