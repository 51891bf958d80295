#!/usr/bin/env bash
# bench/bootstrap/run.sh: time from start to a healthy cluster, muster vs
# etcd 3.4 (/usr/bin/etcd), 3 and 5 members, both bootstrapping with
# --discovery through the same muster-discovery on loopback.  Fresh token,
# ports and data dirs for every cluster start; muster and etcd alternate
# which goes first.  Prints a markdown summary (medians, p90, ratios, where
# the time goes per the members' logs); the raw JSON lines go to $OUT.
#
#   bench/bootstrap/run.sh                          # 10 rounds, 3 and 5, 100/1000 and 50/500
#   ROUNDS=1 SIZES=3 CONFIGS=100/1000 bench/bootstrap/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-10}
SIZES=${SIZES:-3,5}
CONFIGS=${CONFIGS:-100/1000,50/500}
OUT=${OUT:-/tmp/muster-bench-bootstrap.jsonl}

if [[ -z "${NO_BUILD:-}" ]]; then
  cmake --build "$BUILD_DIR" --target muster muster-discovery >/dev/null
fi
exec python3 bench/bootstrap/bootstrap_bench.py --rounds "$ROUNDS" --sizes "$SIZES" \
  --configs "$CONFIGS" --out "$OUT" \
  --muster "$BUILD_DIR/bin/muster" --discovery-bin "$BUILD_DIR/bin/muster-discovery" \
  --etcd "${ETCD:-/usr/bin/etcd}" "$@"
