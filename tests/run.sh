#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs dependencies,
# configures, builds, runs every test through ctest. Exits non-zero on any
# failure.  BUILD_DIR (default build) and JOBS (default nproc) can be set.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
# The sanitizer build and the fuzz runs are opt-in (docs/reliability.md): a
# second full clang build does not fit this suite's budget.
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMUSTER_SANITIZE_TESTS=OFF
cmake --build "$BUILD_DIR" -j "$JOBS"
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 300 -j "$JOBS" "$@"
