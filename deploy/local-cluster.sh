#!/usr/bin/env bash
# The local demo: installs what is missing, builds, starts muster-discovery on
# its embedded defaults, creates a size-3 token and shows how members join it.
# Ctrl-C stops everything it started.
#
#   deploy/local-cluster.sh            # interactive: runs until Ctrl-C
#   deploy/local-cluster.sh --check    # start, verify, stop (used by tests)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1

deploy/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target muster-discovery

WORK=$(mktemp -d /tmp/muster-local.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

PORT=${MUSTER_DISCOVERY_PORT:-8087}
URL=http://127.0.0.1:$PORT
"$ROOT/$BUILD_DIR/bin/muster-discovery" --listen-url "$URL" --data-dir "$WORK/discovery" \
  2>"$WORK/discovery.log" &
PIDS+=($!)

deadline=$((SECONDS + 20))
until curl -fsS "$URL/health" >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    echo "muster-discovery did not become healthy; its log:" >&2
    cat "$WORK/discovery.log" >&2
    exit 1
  fi
  kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$WORK/discovery.log" >&2; exit 1; }
  sleep 0.1
done

TOKEN_URL=$(curl -fsS -X PUT "$URL/new?size=3")
echo "muster-discovery is serving on $URL (data in $WORK/discovery)"
echo "new size-3 token: $TOKEN_URL"
echo
echo "Start three members with it (etcd 3.4 today; muster members take the same flags):"
for i in 1 2 3; do
  echo "  etcd --name m$i --data-dir $WORK/m$i \\"
  echo "    --listen-peer-urls http://127.0.0.1:$((12380 + i * 10)) --initial-advertise-peer-urls http://127.0.0.1:$((12380 + i * 10)) \\"
  echo "    --listen-client-urls http://127.0.0.1:$((12379 + i * 10)) --advertise-client-urls http://127.0.0.1:$((12379 + i * 10)) \\"
  echo "    --discovery $TOKEN_URL &"
done
echo "A fourth joiner finds the cluster full and becomes a proxy."
echo "Watch the token fill up:  curl -s $TOKEN_URL | python3 -m json.tool"

SIZE=$(curl -fsS "$TOKEN_URL/_config/size" | python3 -c 'import json,sys; print(json.load(sys.stdin)["node"]["value"])')
[ "$SIZE" = 3 ] || { echo "unexpected size $SIZE" >&2; exit 1; }
if [ $CHECK = 1 ]; then
  echo "check passed"
  exit 0
fi
echo
echo "Ctrl-C to stop."
wait "${PIDS[0]}"
