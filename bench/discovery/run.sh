#!/usr/bin/env bash
# bench/discovery/run.sh: muster-discovery against etcd 3.4 (--enable-v2, used
# as a self-hosted discovery service, seed 003's form) under the same load:
# many clusters bootstrapping at once with etcd's v2 discovery protocol.  Then
# the memory of each holding HOLD open long-polls.  Prints a markdown table.
#
#   bench/discovery/run.sh                 # defaults below
#   DURATION=30 CLUSTERS=128 bench/discovery/run.sh
#
# The server runs on SERVER_CPUS and the load generator on GEN_CPUS (taskset),
# so that the two do not compete for one core.  Every acknowledged write is
# durable on both sides: muster-discovery syncs LevelDB (group commit), etcd
# fsyncs its WAL.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${BUILD_DIR:-build}
BIN=$BUILD_DIR/bin
DURATION=${DURATION:-15}
CLUSTERS=${CLUSTERS:-32}
SIZE=${SIZE:-3}
HOLD=${HOLD:-10000}
SERVER_CPUS=${SERVER_CPUS:-0}
GEN_CPUS=${GEN_CPUS:-1}
ETCD=${ETCD:-/usr/bin/etcd}

cmake --build "$BUILD_DIR" --target muster-discovery discovery-bench >/dev/null
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/muster-bench-discovery.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_healthy() {  # url
  for _ in $(seq 1 200); do
    if curl -fsS "$1/health" 2>/dev/null | grep -q '"true"'; then return 0; fi
    sleep 0.05
  done
  echo "server at $1 did not become healthy" >&2
  return 1
}
stop() {  # pid
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

start_muster() {  # name
  local port
  port=$(free_port)
  taskset -c "$SERVER_CPUS" "$BIN/muster-discovery" --listen-url "http://127.0.0.1:$port" \
    --data-dir "$work/$1" --new-rate 0 --wait-timeout 60s 2>"$work/$1.log" &
  SERVER_PID=$!
  pids+=("$SERVER_PID")
  SERVER_URL=http://127.0.0.1:$port
  wait_healthy "$SERVER_URL"
}
start_etcd() {  # name
  local cport pport
  cport=$(free_port)
  pport=$(free_port)
  taskset -c "$SERVER_CPUS" "$ETCD" --name "$1" --data-dir "$work/$1" \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "$1=http://127.0.0.1:$pport" --enable-v2 --logger zap --log-level warn \
    2>"$work/$1.log" &
  SERVER_PID=$!
  pids+=("$SERVER_PID")
  SERVER_URL=http://127.0.0.1:$cport
  wait_healthy "$SERVER_URL"
}
bench() {  # target mode [args...]
  local target=$1 mode=$2
  shift 2
  taskset -c "$GEN_CPUS" "$BIN/discovery-bench" --target "$target" --mode "$mode" \
    --url "$SERVER_URL" --pid "$SERVER_PID" "$@"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start_muster muster
bench muster bootstrap --duration "$DURATION" --clusters "$CLUSTERS" --size "$SIZE" >"$work/m.json"
stop "$SERVER_PID"
start_etcd etcd
bench etcd bootstrap --duration "$DURATION" --clusters "$CLUSTERS" --size "$SIZE" >"$work/e.json"
stop "$SERVER_PID"
start_muster muster-hold
bench muster hold --hold "$HOLD" --tokens 100 >"$work/mh.json"
stop "$SERVER_PID"
start_etcd etcd-hold
bench etcd hold --hold "$HOLD" --tokens 100 >"$work/eh.json"
stop "$SERVER_PID"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$work" "$load_before" "$load_after" "$DURATION" "$CLUSTERS" "$SIZE" "$HOLD" <<'EOF'
import json, sys
work, lb, la, duration, clusters, size, hold = sys.argv[1:]
m = json.load(open(work + "/m.json")); e = json.load(open(work + "/e.json"))
mh = json.load(open(work + "/mh.json")); eh = json.load(open(work + "/eh.json"))
def ratio(a, b, fmt="%.1fx"):
    return fmt % (a / b) if b else "n/a"
print("Bootstrap load: %s clusters of %s in flight for %ss; server and generator on separate cores;"
      " load average before %s, after %s.\n" % (clusters, size, duration, lb, la))
print("| metric | muster-discovery | etcd 3.4 --enable-v2 | muster / etcd |")
print("|---|---:|---:|---:|")
rows = [
    ("clusters bootstrapped", "clusters_bootstrapped", "%d"),
    ("requests/s (all timed requests)", "requests_per_s", "%.0f"),
    ("registrations/s (PUT ?prevExist=false)", "registrations_per_s", "%.0f"),
    ("p50 latency, ms (all)", "p50_ms", "%.2f"),
    ("p99 latency, ms (all)", "p99_ms", "%.2f"),
    ("p50 latency, ms (registration)", "put_p50_ms", "%.2f"),
    ("p99 latency, ms (registration)", "put_p99_ms", "%.2f"),
    ("server RSS after run, MB", "server_rss_mb", "%.1f"),
    ("server peak RSS, MB", "server_peak_rss_mb", "%.1f"),
    ("server CPU seconds", "server_cpu_s", "%.1f"),
    ("generator CPU seconds", "generator_cpu_s", "%.1f"),
    ("errors", "errors", "%d"),
]
for label, key, fmt in rows:
    a, b = m.get(key, 0), e.get(key, 0)
    print("| %s | %s | %s | %s |" % (label, fmt % a, fmt % b, ratio(a, b, "%.2f")))
a = m["requests"] / m["server_cpu_s"] if m["server_cpu_s"] else 0
b = e["requests"] / e["server_cpu_s"] if e["server_cpu_s"] else 0
print("| requests per server CPU second | %.0f | %.0f | %s |" % (a, b, ratio(a, b, "%.2f")))
print()
print("Holding %s open long-polls (100 tokens):\n" % hold)
print("| metric | muster-discovery | etcd 3.4 --enable-v2 |")
print("|---|---:|---:|")
print("| long-polls written / still open after 3 s | %d / %d | %d / %d |" % (
    mh["long_polls_written"], mh["still_open_after_settle"],
    eh["long_polls_written"], eh["still_open_after_settle"]))
print("| server's own count of open long-polls | %s | n/a |" % int(mh.get(
    "server_open_long_polls_metric", -1)))
print("| RSS idle, MB | %.1f | %.1f |" % (mh["server_rss_idle_mb"], eh["server_rss_idle_mb"]))
print("| RSS holding, MB | %.1f | %.1f |" % (mh["server_rss_holding_mb"],
                                             eh["server_rss_holding_mb"]))
print()
print("Raw results:\n")
for x in (m, e, mh, eh):
    print("    " + json.dumps(x, sort_keys=True))
EOF
