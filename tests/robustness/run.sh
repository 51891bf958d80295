#!/usr/bin/env bash
# Robustness runs on demand (docs/reliability.md), against the build in
# BUILD_DIR (default build):
#
#   tests/robustness/run.sh run --system muster --seed 7 --faults kill-leader,pause-leader
#   tests/robustness/run.sh soak --system muster --duration 30m
#   tests/robustness/run.sh soak --system etcd --runs 100
#   tests/robustness/run.sh check robustness-out/muster-seed7
#
# `--duration 30m` alone means a soak of muster for that long.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${BUILD_DIR:-build}"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
export MUSTER_BIN_DIR="${MUSTER_BIN_DIR:-$build/bin}"
if [ ! -x "$MUSTER_BIN_DIR/muster" ]; then
  echo "run.sh: no muster in $MUSTER_BIN_DIR (build first, or set BUILD_DIR)" >&2
  exit 2
fi
if [ $# -eq 0 ] || [ "${1#--}" != "$1" ]; then
  set -- soak "$@"
fi
exec python3 "$here/robustness.py" "$@"
