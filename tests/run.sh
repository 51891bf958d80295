#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs dependencies,
# configures, builds, runs every test through ctest. Exits non-zero on any
# failure.  BUILD_DIR (default build) and JOBS (default nproc) can be set.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
# The fuzz runs (and the sanitized build of the whole tree) stay opt-in
# (docs/reliability.md); the ASan+UBSan unit suite runs after the main
# suite (tests/sanitize.sh asan: a clang build of the unit programs in
# build-asan/, every program run, any sanitizer report fails).  SANITIZE=0
# leaves it out.
root="$PWD"
. tests/lib/compiler_cache.sh
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMUSTER_SANITIZE_TESTS=OFF \
  ${ccache_flags[@]+"${ccache_flags[@]}"}
cmake --build "$BUILD_DIR" -j "$JOBS"
(cd "$BUILD_DIR" && ctest --output-on-failure --timeout 300 -j "$JOBS" "$@")
if [ "${SANITIZE:-1}" != 0 ]; then
  JOBS="$JOBS" tests/sanitize.sh asan
fi
