#!/usr/bin/env bash
# Runs one fuzz target over its in-tree seed corpus (docs/reliability.md):
#
#   tests/fuzz/run.sh build-asan/bin/fuzz_apply_entry --seconds 60
#   tests/fuzz/run.sh build-asan/bin/fuzz_apply_entry --runs 10000000
#   tests/fuzz/run.sh build-asan/bin/fuzz_client_http --runs 10000000 -- -entropic=0
#   tests/fuzz/run.sh build-asan/bin/fuzz_client_grpc --runs 10000000 -- -entropic=0 -fork=2
#   tests/fuzz/run.sh build-asan/bin/fuzz_discovery --runs 4000000 --corpus /var/tmp/fd -- -entropic=0 -fork=2
#
# Arguments after `--` go to libFuzzer as they are (-entropic=0 trades the
# entropic input scheduler, a third of the socket targets' time per input,
# for about twice the inputs per second; -fork=N runs N worker processes
# over one corpus, libFuzzer's parallel mode, and counts their inputs
# together).
# The seeds (corpus/<target>) are read, never written: new inputs go to a
# scratch corpus that is deleted at the end, or, with --corpus DIR, to DIR,
# which is kept with the last run's log (DIR.log) so a campaign longer than one
# sitting can go on from where it stopped (a stopped run's last progress
# line in DIR.log says how many inputs it ran).  A crash, a sanitizer report or
# a hang leaves the input in --artifacts (default ./fuzz-artifacts) and makes
# the script fail; turn it into a seed and a regression test.  Prints the
# number of executions.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prog="${1:?usage: run.sh <fuzz program> [--seconds N | --runs N] [--artifacts DIR] [--corpus DIR] [-- libFuzzer flags]}"
shift
seconds=20 runs=0 artifacts="$PWD/fuzz-artifacts" corpus="" extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; extra=("$@"); break ;;
    --seconds) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; seconds=0; shift 2 ;;
    --artifacts) artifacts="$2"; shift 2 ;;
    --corpus) corpus="$2"; shift 2 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
name="$(basename "$prog")"
if [ ! -x "$prog" ]; then
  echo "run.sh: $prog is not built (tests/sanitize.sh asan --fuzz --build-only)" >&2
  exit 2
fi
seeds="$here/corpus/$name"
# The scratch directory holds the targets' LevelDB stores: on tmpfs their
# fsyncs cost nothing, which makes the discovery and client targets a third
# to a half faster (docs/reliability.md, session 11).  FUZZ_TMPDIR picks
# another place.
base="${FUZZ_TMPDIR:-}"
if [ -z "$base" ]; then
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then base=/dev/shm; else base="${TMPDIR:-/tmp}"; fi
fi
scratch="$(mktemp -d "$base/muster-fuzz-$name-XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$artifacts"
export TMPDIR="$scratch"
if [ -n "$corpus" ]; then
  mkdir -p "$corpus"
  corpus="$(cd "$corpus" && pwd)"
  log="$corpus.log"
else
  corpus="$scratch/corpus" log="$scratch/log"
  mkdir -p "$corpus"
fi
limit=()
if [ "$runs" -gt 0 ]; then limit=(-runs="$runs"); else limit=(-max_total_time="$seconds"); fi
# Leak checking is off: the targets keep their servers and stores for the
# whole process on purpose.  -timeout: one input may take this long.
set +e
ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}" \
UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
  "$prog" "${limit[@]}" ${extra[@]+"${extra[@]}"} -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
  -artifact_prefix="$artifacts/$name-" "$corpus" "$seeds" >"$log" 2>&1
rc=$?
set -e
grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|#[0-9]+ +DONE|INFO: fuzzed for|INFO: exiting)" "$log" || true
if [ $rc -ne 0 ]; then
  echo "run.sh: $name failed (exit $rc); the input is in $artifacts:"
  tail -60 "$log"
  exit 1
fi
execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
# Fork mode (-- -fork=N: N worker processes, one corpus) counts in the
# parent and says so differently.
[ -n "$execs" ] || execs="$(sed -n 's/^INFO: fuzzed for \([0-9]*\) iterations.*/\1/p' "$log")"
echo "run.sh: $name ran ${execs:-?} inputs, no crash"
