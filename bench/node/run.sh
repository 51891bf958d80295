#!/usr/bin/env bash
# bench/node/run.sh: a 3-member muster cluster against a 3-member etcd 3.4
# cluster (/usr/bin/etcd) under the same load through the v3 JSON gateway both
# serve: POST /v3/kv/put (256-byte values, random keys), POST /v3/kv/range of
# one key linearizable, and serializable, at 1, 16, 64 and 256 connections.
# Both clusters run side by side for the whole run on loopback, with their own
# data directories on the same disk and the same (default) heartbeat and
# election settings; the cells alternate which cluster goes first to spread
# machine noise.  Prints a markdown table (muster / etcd ratios) and the raw
# JSON lines of node-bench.
#
#   bench/node/run.sh                         # defaults below
#   DURATION=8 CONNS="16 64" OPS=put bench/node/run.sh
#
# Every acknowledged put is durable on both sides: etcd fsyncs its WAL, muster
# syncs its LevelDB log, each once per batch.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${BUILD_DIR:-build}
BIN=$BUILD_DIR/bin
MUSTER=${MUSTER:-$BIN/muster}
ETCD=${ETCD:-/usr/bin/etcd}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-"1 16 64 256"}
OPS=${OPS:-"put range range-s"}
KEYSPACE=${KEYSPACE:-100000}
REPEAT=${REPEAT:-3}  # runs per cell and cluster; the table shows the median by ops/s

if [[ -z "${NO_BUILD:-}" ]]; then
  cmake --build "$BUILD_DIR" --target muster node-bench >/dev/null
fi
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/muster-bench-node.XXXXXX)
pids=()
cleanup() {
  {
    for p in "${pids[@]}"; do kill -9 "$p" || true; done
    wait || true
  } 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_healthy() {  # url
  for _ in $(seq 1 600); do
    if curl -fsS "$1/health" 2>/dev/null | grep -q '"true"'; then return 0; fi
    sleep 0.05
  done
  echo "member at $1 did not become healthy" >&2
  return 1
}

# start_cluster KIND: three members of KIND (muster|etcd); sets
# <KIND>_ENDPOINTS (comma-separated client URLs) and <KIND>_PIDS.
start_cluster() {
  local kind=$1 bin initial="" i
  local -a cports pports cpids=()
  [[ $kind == muster ]] && bin=$MUSTER || bin=$ETCD
  for i in 1 2 3; do
    cports[i]=$(free_port)
    pports[i]=$(free_port)
    initial+="${initial:+,}$kind$i=http://127.0.0.1:${pports[i]}"
  done
  for i in 1 2 3; do
    local extra=()
    [[ $kind == etcd ]] && extra=(--logger zap --log-level warn)
    "$bin" --name "$kind$i" --data-dir "$work/$kind$i" \
      --listen-client-urls "http://127.0.0.1:${cports[i]}" \
      --advertise-client-urls "http://127.0.0.1:${cports[i]}" \
      --listen-peer-urls "http://127.0.0.1:${pports[i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${pports[i]}" \
      --initial-cluster "$initial" --initial-cluster-token "bench-$kind" \
      --initial-cluster-state new "${extra[@]}" 2>"$work/$kind$i.log" &
    cpids+=($!)
    pids+=($!)
  done
  local eps=""
  for i in 1 2 3; do
    wait_healthy "http://127.0.0.1:${cports[i]}"
    eps+="${eps:+,}http://127.0.0.1:${cports[i]}"
  done
  printf -v "${kind}_ENDPOINTS" '%s' "$eps"
  printf -v "${kind}_PIDS" '%s' "$(IFS=,; echo "${cpids[*]}")"
}

rss_mb() {  # comma-separated pids -> summed VmRSS in MB
  local total=0 p
  for p in ${1//,/ }; do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status")))
  done
  echo "scale=1; $total / 1024" | bc
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start_time=$(date -u +%FT%TZ)
start_cluster muster
start_cluster etcd
idle_muster=$(rss_mb "$muster_PIDS")
idle_etcd=$(rss_mb "$etcd_PIDS")

results=$work/results.jsonl
cell=0
for op in $OPS; do
  for c in $CONNS; do
   for _ in $(seq "$REPEAT"); do
    order=(muster etcd)
    ((cell % 2)) && order=(etcd muster)
    for kind in "${order[@]}"; do
      eps=${kind}_ENDPOINTS
      ps=${kind}_PIDS
      "$BIN/node-bench" --label "$kind" --op "$op" --conns "$c" --duration "$DURATION" \
        --warmup "$WARMUP" --keyspace "$KEYSPACE" --endpoints "${!eps}" --pids "${!ps}" \
        >>"$results" || echo "node-bench failed: $kind $op $c" >&2
    done
    cell=$((cell + 1))
   done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
end_rss_muster=$(rss_mb "$muster_PIDS")
end_rss_etcd=$(rss_mb "$etcd_PIDS")

# Where the time of a put goes: WAL/log fsync and backend commit histograms
# (etcd's metric names, which muster also exports).
for kind in muster etcd; do
  eps=${kind}_ENDPOINTS
  i=1
  for url in ${!eps//,/ }; do
    curl -fsS "$url/metrics" >"$work/metrics-$kind$i.txt" 2>/dev/null || true
    i=$((i + 1))
  done
done

python3 - "$work" "$load_before" "$load_after" "$start_time" "$DURATION" "$WARMUP" "$REPEAT" \
  "$idle_muster" "$idle_etcd" "$end_rss_muster" "$end_rss_etcd" <<'EOF'
import glob, json, re, sys
(work, lb, la, start, duration, warmup, repeat, idle_m, idle_e, end_m, end_e) = sys.argv[1:]
rows = [json.loads(l) for l in open(work + "/results.jsonl") if l.strip()]
runs = {}
for r in rows:
    runs.setdefault((r["op"], r["conns"]), {}).setdefault(r["label"], []).append(r)
# Per cell and cluster, the run with the median ops/s (its latency, memory and
# CPU figures are shown as measured in that run).
cells = {}
for key, by_label in runs.items():
    for label, rs in by_label.items():
        rs = sorted(rs, key=lambda r: r["ops_per_s"])
        cells.setdefault(key, {})[label] = rs[(len(rs) - 1) // 2]
names = {"put": "put 256 B", "range": "range (linearizable)", "range-s": "range (serializable)"}
def ratio(a, b):
    return "%.2f" % (a / b) if b else "n/a"
print("Run started %s; %s runs per cell and cluster, each %ss measured after %ss warm-up, the"
      " median run by ops/s shown; load average before %s, after %s."
      % (start, repeat, duration, warmup, lb, la))
print("Both clusters ran side by side; generator: node-bench, one asio thread.\n")
print("| workload | conns | ops/s muster | ops/s etcd | ratio | p50 ms m / e | p99 ms m / e "
      "| p99 ratio | peak RSS MB m / e | RSS ratio | CPU s/10k ops m / e | CPU ratio | errors m / e |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (op, c), d in cells.items():
    m, e = d.get("muster"), d.get("etcd")
    if not m or not e:
        continue
    print("| %s | %d | %.0f | %.0f | %s | %.2f / %.2f | %.2f / %.2f | %s | %.0f / %.0f | %s "
          "| %.2f / %.2f | %s | %d / %d |" % (
              names.get(op, op), c, m["ops_per_s"], e["ops_per_s"],
              ratio(m["ops_per_s"], e["ops_per_s"]), m["p50_ms"], e["p50_ms"], m["p99_ms"],
              e["p99_ms"], ratio(m["p99_ms"], e["p99_ms"]), m["cluster_peak_rss_mb"],
              e["cluster_peak_rss_mb"], ratio(m["cluster_peak_rss_mb"], e["cluster_peak_rss_mb"]),
              m["cluster_cpu_s_per_10k_ops"], e["cluster_cpu_s_per_10k_ops"],
              ratio(m["cluster_cpu_s_per_10k_ops"], e["cluster_cpu_s_per_10k_ops"]),
              m["errors"], e["errors"]))
print()
print("Cluster RSS (sum of 3 members), MB: idle after start muster %s / etcd %s; at the end "
      "muster %s / etcd %s." % (idle_m, idle_e, end_m, end_e))
print()
print("Disk histograms at the end of the run (sum / count over the whole run, per member):\n")
for kind in ("muster", "etcd"):
    for f in sorted(glob.glob("%s/metrics-%s*.txt" % (work, kind))):
        text = open(f).read()
        parts = []
        for metric in ("etcd_disk_wal_fsync_duration_seconds",
                       "etcd_disk_backend_commit_duration_seconds"):
            s = re.search(r"^%s_sum(?:\{[^}]*\})? (\S+)" % metric, text, re.M)
            n = re.search(r"^%s_count(?:\{[^}]*\})? (\S+)" % metric, text, re.M)
            if s and n and float(n.group(1)) > 0:
                parts.append("%s: %d calls, mean %.2f ms" % (
                    metric.replace("etcd_disk_", "").replace("_duration_seconds", ""),
                    float(n.group(1)), 1000 * float(s.group(1)) / float(n.group(1))))
        print("- %s: %s" % (f.split("metrics-")[1][:-4], "; ".join(parts) or "no data"))
print()
print("Raw results:\n")
for r in rows:
    print("    " + json.dumps(r, sort_keys=True))
EOF
