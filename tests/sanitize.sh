#!/usr/bin/env bash
# Sanitizer builds of the test suites (docs/reliability.md).
#
#   tests/sanitize.sh asan              ASan+UBSan build of the unit suite, run it
#   tests/sanitize.sh tsan              the same with TSan
#   tests/sanitize.sh asan --integration  build everything, run the integration
#                                       tests on sanitized muster, muster-discovery
#                                       and musterctl processes (TESTS=<ctest -R
#                                       regex> picks others; on demand, not CI)
#   tests/sanitize.sh asan --all        ... the whole ctest suite that way
#   tests/sanitize.sh asan --build-only build only (ctest runs the suite itself)
#   tests/sanitize.sh asan --fuzz       also build the libFuzzer targets (tests/fuzz)
#                                       and, after the unit suite, run each over
#                                       its seeds for FUZZ_SECONDS (15)
#
# Builds with clang into SANITIZE_DIR (default build-asan / build-tsan next
# to build/), JOBS parallel jobs (default 2).  Every report aborts the test
# that triggered it (UBSan does not recover); the script exits non-zero if
# any test program failed.  Reports from dependencies (Debian's libraries are
# not instrumented) are listed in tests/tsan.supp (LevelDB's, for TSan) and
# would be in tests/sanitize.supp for LSan -- there are none.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kind="${1:-asan}"
shift || true
all=0 integration=0 build_only=0 fuzz=OFF
for a in "$@"; do
  case "$a" in
    --all) all=1 ;;
    --integration) all=1 integration=1 ;;
    --build-only) build_only=1 ;;
    --fuzz) fuzz=ON ;;
    *) echo "sanitize.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
case "$kind" in
  asan) flags="address,undefined" ;;
  tsan) flags="thread" ;;
  *) echo "usage: tests/sanitize.sh asan|tsan [--integration|--all] [--build-only] [--fuzz]" >&2; exit 2 ;;
esac
[ "$kind" = tsan ] && fuzz=OFF
dir="${SANITIZE_DIR:-$root/build-$kind}"
jobs="${JOBS:-2}"
# A directory already configured with the fuzz targets keeps them: turning
# MUSTER_FUZZ off changes every object's flags (a full rebuild) for nothing.
if [ "$fuzz" = OFF ] && [ "$kind" = asan ] && grep -qs '^MUSTER_FUZZ:BOOL=ON' "$dir/CMakeCache.txt"; then
  fuzz=ON
fi

if ! command -v clang++ >/dev/null; then
  echo "sanitize.sh: clang++ is missing (deploy/install-deps.sh installs it)" >&2
  exit 2
fi
# ccache when installed: a rebuild of the sanitized tree (a second full
# clang build) is cheap, in this checkout or another (compiler_cache.sh).
. "$root/tests/lib/compiler_cache.sh"
# The fuzz build names tests/fuzz/coverage_ignorelist.txt by its absolute
# path, which differs between clones, and ccache does not read the file:
# hash its content instead of its path.  (A -D flag would not do: in its
# preprocessor mode ccache hashes the preprocessed source, not the -D.)
if [ "${#ccache_flags[@]}" -gt 0 ] && [ "$fuzz" = ON ]; then
  export CCACHE_IGNOREOPTIONS="${CCACHE_IGNOREOPTIONS:--fsanitize-coverage-ignorelist=*}"
  export CCACHE_EXTRAFILES="${CCACHE_EXTRAFILES:-$root/tests/fuzz/coverage_ignorelist.txt}"
fi
# -O1 and line tables only: sanitizer builds compile slowly; this keeps the
# stack traces exact and the build time about half of -O2 -g.
CC=clang CXX=clang++ cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Sanitize \
  -DCMAKE_CXX_FLAGS_SANITIZE="-O1 -gline-tables-only" -DCMAKE_C_FLAGS_SANITIZE="-O1 -gline-tables-only" \
  -DMUSTER_SANITIZE="$flags" -DMUSTER_FUZZ="$fuzz" ${ccache_flags[@]+"${ccache_flags[@]}"} >/dev/null
targets=(muster_unit_tests)
[ "$fuzz" = ON ] && targets+=(muster_fuzz_targets)
if [ "$all" = 1 ]; then
  cmake --build "$dir" -j "$jobs"
else
  cmake --build "$dir" -j "$jobs" --target "${targets[@]}"
fi
[ "$build_only" = 1 ] && exit 0

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}:suppressions=$root/tests/tsan.supp"
if [ -f "$root/tests/sanitize.supp" ]; then
  export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$root/tests/sanitize.supp}"
fi

if [ "$all" = 1 ]; then
  # The processes the tests start are sanitized too.  The harness
  # (tests/lib/harness.py) stops them with SIGTERM, so that LeakSanitizer
  # runs, and fails a test whose processes' logs hold a report
  # (MUSTER_SANITIZER); it stretches its deadlines by
  # MUSTER_TEST_TIMEOUT_SCALE.  A process the harness does not own
  # (musterctl run by a test, a C++ test's child) writes its report into
  # $dir/sanitizer-reports/ (log_path; the harness gives its own children
  # their log instead): any file there fails the run below.
  reports="$dir/sanitizer-reports"
  rm -rf "$reports"
  mkdir -p "$reports"
  for v in ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS LSAN_OPTIONS; do
    export "$v=${!v:+${!v}:}log_path=$reports/report"
  done
  export MUSTER_SANITIZER="$flags"
  export MUSTER_TEST_TIMEOUT_SCALE="${MUSTER_TEST_TIMEOUT_SCALE:-3}"
  # The integration tests: gRPC clients (Go clientv3, npm etcd3, musterctl,
  # h2), members and membership, snapshots, the proxy, muster-discovery and
  # bootstrapping, v2, TLS, etcdctl, operability, then the seeded
  # robustness runs.
  subset='^(interop_clientv3_failover_muster|interop_npm_etcd3|musterctl_muster\.|h2\.|node_|snapshot_restore\.|proxy\.(MusterMembersTest|EtcdMembersTest|DataDirTest)\.|discovery_integration_|discovery_interop_|bootstrap_|v2_api\.|tls\.|interop_etcdctl|ops_test_|robustness\.muster\.)'
  select=(-E '^(robustness|sanitize|fuzz)\.')
  if [ "$integration" = 1 ]; then
    select=(-R "${TESTS:-$subset}")
  fi
  cd "$dir"
  rc=0
  ctest --output-on-failure --timeout 900 -j "$jobs" "${select[@]}" || rc=$?
  if [ -n "$(ls -A "$reports")" ]; then
    echo "sanitize[$kind]: sanitizer reports from processes outside the harness:"
    for f in "$reports"/*; do echo "---- $f"; head -60 "$f"; done
    rc=1
  fi
  exit $rc
fi

# The unit programs, each alone (a report names its program); the one-million
# key snapshot test is labelled slow and left out, as ctest -L slow is.
failed=()
while IFS= read -r prog; do
  [ -n "$prog" ] || continue
  name="$(basename "$prog")"
  [ "$name" = storage_snapshot_large_test ] && continue
  start=$SECONDS
  if (cd "$(dirname "$prog")" && "$prog" --gtest_brief=1 >"$dir/$name.log" 2>&1); then
    echo "sanitize[$kind]: $name passed ($((SECONDS - start))s)"
  else
    echo "sanitize[$kind]: $name FAILED ($((SECONDS - start))s); last lines of $dir/$name.log:"
    tail -40 "$dir/$name.log"
    failed+=("$name")
  fi
done <"$dir/unit_tests.txt"
# With --fuzz, each fuzz target then runs over its seeds for FUZZ_SECONDS
# (default 15): a short bounded run that a crash, a sanitizer report or a
# hang fails, its input kept in $dir/fuzz-artifacts (tests/fuzz/run.sh).
if [ "$fuzz" = ON ] && [ -f "$dir/fuzz_targets.txt" ]; then
  while IFS= read -r prog; do
    [ -n "$prog" ] || continue
    name="$(basename "$prog")"
    start=$SECONDS
    if (unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
        "$root/tests/fuzz/run.sh" "$prog" --seconds "${FUZZ_SECONDS:-15}" \
          --artifacts "$dir/fuzz-artifacts" -- -entropic=0 >"$dir/$name.log" 2>&1); then
      echo "sanitize[$kind]: $name passed ($((SECONDS - start))s, $(sed -n 's/^run.sh: .* ran \([0-9]*\) inputs.*/\1/p' "$dir/$name.log") inputs)"
    else
      echo "sanitize[$kind]: $name FAILED ($((SECONDS - start))s); last lines of $dir/$name.log:"
      tail -60 "$dir/$name.log"
      failed+=("$name")
    fi
  done <"$dir/fuzz_targets.txt"
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "sanitize[$kind]: ${#failed[@]} program(s) failed: ${failed[*]}"
  exit 1
fi
if [ "$fuzz" = ON ]; then
  echo "sanitize[$kind]: every unit program and fuzz target passed"
else
  echo "sanitize[$kind]: every unit program passed"
fi
