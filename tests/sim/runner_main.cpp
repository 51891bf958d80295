// ctest's seed runner (the same front end as bench/raft-sim).
#include "tests/sim/sim_cli.h"

int main(int argc, char** argv) { return muster::raft::sim::sim_main(argc, argv); }
