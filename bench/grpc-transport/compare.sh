#!/usr/bin/env bash
# compare.sh: grpc++ with fd handoff (grpc_fd_server) against net/'s own
# HTTP/2 server (h2_trivial_server), both running the same trivial KV handler,
# side by side in one run on this machine, under the same clientv3 load loop.
#
# Usage: bench/grpc-transport/compare.sh [BIN_DIR]      (default: build/bin)
# Env:   DURATION (10s per run)  ROUNDS (3)  SCENARIOS ("1/1 8/64 10/100",
#        conns/clients)  OP (put)  WARMUP (2s, not counted)
#        TLS=1: both servers terminate TLS (certificates made with
#        deploy/certs/gencerts-openssl.sh); grpc_fd_server then relays
#        plaintext to grpc++ over a socketpair.
#        DRIVER: the load tool; unset: bench/grpc/build.sh (grpc-bench, the
#        tests' clientv3 tool) when it is in the tree, else this directory's
#        fallback loop (build-load.sh).  Both take the same command line.
#
# Both servers run for the whole comparison; each scenario is run ROUNDS
# times per server, alternating which server goes first, so that load from
# elsewhere on the machine falls on both.  Per run it records the driver's
# requests/s and p50/p99 (after a separate warm-up run), the server's CPU
# time (utime+stime from /proc/PID/stat) over the measured run divided by
# the requests it answered, and the server's RSS after the run.  Prints one line per run and a markdown table
# of the means.  A server binary that is missing is reported as "not built".
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${1:-$repo/build/bin}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"1/1 8/64 10/100"}
OP=${OP:-put}
WARMUP=${WARMUP:-2s}
TLS=${TLS:-0}
work=$(mktemp -d "${TMPDIR:-/tmp}/grpc-transport.XXXXXX")
hz=$(getconf CLK_TCK)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

driver=${DRIVER:-}
if [ -z "$driver" ]; then
  if [ -x "$repo/bench/grpc/build.sh" ]; then
    driver=$("$repo/bench/grpc/build.sh" "$work/grpc-bench")
  else
    driver=$work/grpc-load
    "$here/build-load.sh" "$driver"
  fi
fi

scheme=
tls_server=()
tls_client=()
if [ "$TLS" = 1 ]; then
  "$repo/deploy/certs/gencerts-openssl.sh" "$work/certs" localhost 127.0.0.1 >/dev/null 2>&1
  scheme=https://
  tls_server=(--cert "$work/certs/server.pem" --key "$work/certs/server-key.pem")
  tls_client=(--cacert "$work/certs/ca.pem")
fi

# start NAME BINARY ARGS...: starts a server on a free loopback port and
# waits (10 s deadline) for its "listening on HOST:PORT" line.
declare -A port pid
start() {
  local name=$1
  shift
  "$@" --listen 127.0.0.1:0 >"$work/$name.out" 2>"$work/$name.err" &
  local p=$!
  pids+=("$p")
  local deadline=$((SECONDS + 10))
  until grep -qs '^listening on ' "$work/$name.out"; do
    if ! kill -0 "$p" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      echo "compare: $name did not start:" >&2
      cat "$work/$name.err" >&2
      exit 1
    fi
    sleep 0.05
  done
  port[$name]=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/$name.out")
  pid[$name]=$p
}

servers=()
if [ -x "$bin/grpc_fd_server" ]; then
  start grpc_fd "$bin/grpc_fd_server" "${tls_server[@]}"
  servers+=(grpc_fd)
fi
if [ -x "$bin/h2_trivial_server" ]; then
  start net_h2 "$bin/h2_trivial_server" --threads 2 "${tls_server[@]}"
  servers+=(net_h2)
fi
if [ ${#servers[@]} -eq 0 ]; then
  echo "compare: neither grpc_fd_server nor h2_trivial_server in $bin" >&2
  exit 1
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # utime + stime
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
field() { sed -n "s/.*\"$1\":\([0-9.eE+-]*\).*/\1/p"; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# op=$OP tls=$TLS duration=$DURATION warmup=$WARMUP rounds=$ROUNDS; servers: ${servers[*]}; driver: $(basename "$driver")"
printf '%-8s %-8s %5s %10s %8s %8s %10s %9s\n' server conns/cl round req/s p50_ms p99_ms cpu_us/req rss_MiB
: >"$work/runs"
for sc in $SCENARIOS; do
  conns=${sc%/*}
  clients=${sc#*/}
  for ((r = 1; r <= ROUNDS; r++)); do
    order=("${servers[@]}")
    if ((r % 2 == 0)) && [ ${#servers[@]} -eq 2 ]; then order=("${servers[1]}" "${servers[0]}"); fi
    for s in "${order[@]}"; do
      p=${pid[$s]}
      # Warm-up in its own run, so that the CPU counted below is the
      # measured requests' only.
      "$driver" "$OP" --endpoints "${scheme}127.0.0.1:${port[$s]}" "${tls_client[@]}" --conns "$conns" \
        --clients "$clients" --duration "$WARMUP" --json >/dev/null 2>"$work/driver.err" || {
        cat "$work/driver.err" >&2
        exit 1
      }
      before=$(cpu_ticks "$p")
      out=$("$driver" "$OP" --endpoints "${scheme}127.0.0.1:${port[$s]}" "${tls_client[@]}" --conns "$conns" \
        --clients "$clients" --duration "$DURATION" --json 2>"$work/driver.err") || {
        cat "$work/driver.err" >&2
        echo "compare: driver failed against $s: $out" >&2
        exit 1
      }
      after=$(cpu_ticks "$p")
      rss=$(rss_kib "$p")
      reqs=$(field requests <<<"$out")
      rps=$(field rps <<<"$out")
      p50=$(field p50_ms <<<"$out")
      p99=$(field p99_ms <<<"$out")
      cpu_us=$(awk -v d=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", d * 1e6 / hz / n}')
      rss_mib=$(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}')
      printf '%-8s %-8s %5d %10.0f %8.2f %8.2f %10s %9s\n' "$s" "$sc" "$r" "$rps" "$p50" "$p99" \
        "$cpu_us" "$rss_mib"
      echo "$s $sc $rps $p50 $p99 $cpu_us $rss_mib" >>"$work/runs"
    done
  done
done

echo
echo "Means over $ROUNDS rounds of $DURATION ($OP, 256-byte values, TLS=$TLS):"
echo
echo "| server | conns / clients | ${OP}s/s | p50 ms | p99 ms | server CPU us/req | RSS MiB (max after a run) |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
for sc in $SCENARIOS; do
  for s in "${servers[@]}"; do
    awk -v s="$s" -v sc="$sc" '$1 == s && $2 == sc {n++; a += $3; b += $4; c += $5; d += $6; if ($7 > e) e = $7}
      END {printf "| %s | %s | %.0f | %.2f | %.2f | %.1f | %.1f |\n", s, sc, a/n, b/n, c/n, d/n, e}' \
      "$work/runs"
  done
done
for s in grpc_fd_server h2_trivial_server; do
  [ -x "$bin/$s" ] || echo "($s: not built)"
done
