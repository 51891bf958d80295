#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs dependencies,
# configures, builds, runs every test through ctest. Exits non-zero on any
# failure.  BUILD_DIR (default build) and JOBS (default nproc) can be set.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
# After the main suite, the ASan+UBSan unit suite and the fuzz targets
# (tests/sanitize.sh asan --fuzz: a clang build of the unit programs and the
# libFuzzer targets in build-asan/, every unit program run, then each fuzz
# target for FUZZ_SECONDS over its seeds; any sanitizer report, crash or
# hang fails).  Long fuzz runs and the sanitized integration suite stay on
# demand (docs/reliability.md).  SANITIZE=0 leaves all of it out.
root="$PWD"
. tests/lib/compiler_cache.sh
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMUSTER_SANITIZE_TESTS=OFF \
  ${ccache_flags[@]+"${ccache_flags[@]}"}
cmake --build "$BUILD_DIR" -j "$JOBS"
(cd "$BUILD_DIR" && ctest --output-on-failure --timeout 300 -j "$JOBS" "$@")
if [ "${SANITIZE:-1}" != 0 ]; then
  JOBS="$JOBS" tests/sanitize.sh asan --fuzz
fi
