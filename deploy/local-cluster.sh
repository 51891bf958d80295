#!/usr/bin/env bash
# The local demo: a three-member muster cluster plus one proxy on loopback.
#
#   deploy/local-cluster.sh              bootstrap through muster-discovery
#                                        (--discovery); runs until Ctrl-C
#   deploy/local-cluster.sh --srv        bootstrap through DNS SRV records
#                                        served by a private dnsmasq
#   deploy/local-cluster.sh [--srv] --check
#                                        start, verify, stop; exit 0 or 1
#
# Environment:
#   BUILD_DIR              build tree (default: build); binaries in $BUILD_DIR/bin
#   MUSTER_SKIP_BUILD=1    use the binaries already built; skip install-deps and cmake
#   MUSTER_DISCOVERY_PORT  muster-discovery's port (default: its own default, 8087)
#   MUSTER_KEEP=1          keep the data dirs and logs after stopping
#
# Every run uses a fresh temporary directory and free loopback ports (the
# discovery port excepted), so it can be re-run at will. Ctrl-C (or SIGTERM)
# sends SIGTERM to every process it started, waits for them, and removes the
# temporary directory. When something does not come up it says what, prints
# the tail of the relevant logs and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MODE=discovery
CHECK=0
for arg in "$@"; do
  case "$arg" in
    --check) CHECK=1 ;;
    --srv) MODE=srv ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "local-cluster: unknown argument '$arg' (try --help)" >&2
      exit 2
      ;;
  esac
done

BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
if [ "${MUSTER_SKIP_BUILD:-0}" != 1 ]; then
  deploy/install-deps.sh
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target muster muster-discovery musterctl
fi
BIN=$BUILD_DIR/bin
for b in muster muster-discovery musterctl; do
  [ -x "$BIN/$b" ] || { echo "local-cluster: $BIN/$b is missing (build first, or unset MUSTER_SKIP_BUILD)" >&2; exit 1; }
done
DNSMASQ=""
if [ $MODE = srv ]; then
  DNSMASQ=$(command -v dnsmasq || true)
  for d in /usr/sbin/dnsmasq /usr/local/sbin/dnsmasq; do
    [ -n "$DNSMASQ" ] || { [ -x "$d" ] && DNSMASQ=$d; } || true
  done
  [ -n "$DNSMASQ" ] || { echo "local-cluster: --srv needs dnsmasq (deploy/install-deps.sh installs it)" >&2; exit 1; }
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/muster-local.XXXXXX")
PIDS=()   # every process started, in start order
NAMES=()  # its name; the log is $WORK/<name>.log
FAILED=0

# Stops everything: SIGTERM to all, then wait up to 20 s for each to exit
# (a member hands leadership over before it stops); SIGKILL what is left so
# that no process survives the script.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
  local deadline=$((SECONDS + 20))
  for i in "${!PIDS[@]}"; do
    while kill -0 "${PIDS[$i]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if kill -0 "${PIDS[$i]}" 2>/dev/null; then
      echo "local-cluster: ${NAMES[$i]} (pid ${PIDS[$i]}) ignored SIGTERM; killing it" >&2
      kill -KILL "${PIDS[$i]}" 2>/dev/null || true
    fi
    wait "${PIDS[$i]}" 2>/dev/null || true
  done
  if [ ${#PIDS[@]} -gt 0 ]; then echo "local-cluster: stopped ${#PIDS[@]} processes"; fi
  if rmdir "$WORK" 2>/dev/null; then
    : # failed before anything was written: nothing to keep
  elif [ $FAILED = 1 ] || [ "${MUSTER_KEEP:-0}" = 1 ]; then
    echo "local-cluster: data dirs and logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  FAILED=1
  echo >&2
  echo "local-cluster: FAILED: $*" >&2
  local n
  for n in "${NAMES[@]}"; do
    echo "---- last lines of $WORK/$n.log ----" >&2
    tail -n 15 "$WORK/$n.log" >&2 || true
  done
  exit 1
}

# start <name> <argv...>: runs argv in the background, output to $WORK/<name>.log.
start() {
  local name=$1
  shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  NAMES+=("$name")
}

# All started processes must still run (a member that exits early is a failure).
check_alive() {
  local i
  for i in "${!PIDS[@]}"; do
    kill -0 "${PIDS[$i]}" 2>/dev/null || fail "${NAMES[$i]} exited (pid ${PIDS[$i]})"
  done
}

# wait_until <seconds> <what> <command...>: polls command until it succeeds.
wait_until() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    check_alive
    [ $SECONDS -lt $deadline ] || fail "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

# free_ports <n>: n distinct loopback ports free for TCP and UDP right now
# (held open together while picking, so they differ from each other).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
    except OSError:
        t.close(); u.close(); continue
    held += [t, u]
    ports.append(p)
print(" ".join(map(str, ports)))
EOF
}

healthy() { curl -fsS --max-time 3 "$1/health" 2>/dev/null | grep -q '"health":"true"'; }
ctl() { "$BIN/musterctl" "$@"; }
token_complete() { ctl discovery show "$TOKEN" | tee "$WORK/token.txt" | grep -q '^complete'; }

read -r -a P <<<"$(free_ports 9)"
# members m1..m3, proxy m4: client port P[2i], peer port P[2i+1]; P[8]: DNS
CLIENT=() PEER=() CURL=()
for i in 0 1 2 3; do
  CLIENT[i]=${P[2 * i]}
  PEER[i]=${P[2 * i + 1]}
  CURL[i]=http://127.0.0.1:${CLIENT[i]}
done
MEMBER_EPS="${CURL[0]},${CURL[1]},${CURL[2]}"
PROXY_EP=${CURL[3]}

# member_flags <index> <advertised peer host>: sets MF to the member's flags.
member_flags() {
  local i=$1 host=$2
  MF=(--name "m$((i + 1))" --data-dir "$WORK/m$((i + 1)).data" \
    --listen-client-urls "${CURL[$i]}" --advertise-client-urls "${CURL[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${PEER[$i]}" \
    --initial-advertise-peer-urls "http://$host:${PEER[$i]}")
}

if [ $MODE = discovery ]; then
  DISCO_URL=http://127.0.0.1:${MUSTER_DISCOVERY_PORT:-8087}
  if curl -fsS --max-time 2 "$DISCO_URL/health" >/dev/null 2>&1 ||
    ! python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1])))' "${DISCO_URL##*:}" 2>/dev/null; then
    fail "port ${DISCO_URL##*:} is taken (another muster-discovery?); set MUSTER_DISCOVERY_PORT to a free port"
  fi
  # Embedded defaults (listen URL http://127.0.0.1:8087, leveldb store); only
  # the data dir (and the port, when asked) is ours.
  disco_args=(--data-dir "$WORK/discovery.data")
  [ -z "${MUSTER_DISCOVERY_PORT:-}" ] || disco_args+=(--listen-url "$DISCO_URL")
  start discovery "$BIN/muster-discovery" "${disco_args[@]}"
  wait_until 20 "muster-discovery on $DISCO_URL" curl -fsS --max-time 2 "$DISCO_URL/health"

  TOKEN=$(ctl discovery new --size 3 --endpoint "$DISCO_URL") || fail "musterctl discovery new failed"
  echo "discovery token (size 3): $TOKEN"
  for i in 0 1 2; do
    member_flags $i 127.0.0.1
    start "m$((i + 1))" "$BIN/muster" "${MF[@]}" --discovery "$TOKEN"
  done
  # The fourth joiner starts once the three have registered, so it is the
  # one that finds the token full and falls back to a proxy
  # (--discovery-fallback=proxy is the default).
  wait_until 30 "three registrations on $TOKEN" token_complete
  member_flags 3 127.0.0.1
  start m4 "$BIN/muster" "${MF[@]}" --discovery "$TOKEN"
else
  DOMAIN=muster.test
  DNS=127.0.0.1:${P[8]}
  # shellcheck disable=SC2054 # the commas are inside dnsmasq option values
  dns_args=(--keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts
    --listen-address=127.0.0.1 --bind-interfaces "--port=${P[8]}"
    "--pid-file=$WORK/dnsmasq.pid" --log-facility=- --log-queries
    "--local=/$DOMAIN/"
    # Targets are "localhost": a member resolves its peers' URLs with the
    # system resolver, which knows localhost but not this DNS server. The
    # SRV lookup asks this server for the rooted "localhost." itself.
    --local=/localhost/ --host-record=localhost,127.0.0.1)
  [ "$(id -u)" != 0 ] || dns_args+=(--user=root) # else it drops to nobody and cannot write the pid file
  for i in 0 1 2; do dns_args+=("--srv-host=_etcd-server._tcp.$DOMAIN,localhost,${PEER[$i]}"); done
  start dnsmasq "$DNSMASQ" "${dns_args[@]}"
  wait_until 10 "dnsmasq on $DNS" bash -c "dig @127.0.0.1 -p ${P[8]} +time=1 +tries=1 +short SRV _etcd-server._tcp.$DOMAIN | grep -q localhost"
  echo "dnsmasq on $DNS serves _etcd-server._tcp.$DOMAIN -> localhost:${PEER[0]}, :${PEER[1]}, :${PEER[2]}"
  for i in 0 1 2; do
    member_flags $i localhost
    start "m$((i + 1))" "$BIN/muster" "${MF[@]}" \
      --discovery-srv "$DOMAIN" --dns-server "$DNS" --initial-cluster-token muster-local-srv
  done
  # SRV records have no size quota, so nothing would turn a fourth member
  # into a proxy: start it as one, with the static peer list.
  start m4 "$BIN/muster" --proxy on --name m4 --data-dir "$WORK/m4.data" \
    --listen-client-urls "$PROXY_EP" \
    --initial-cluster "m1=http://localhost:${PEER[0]},m2=http://localhost:${PEER[1]},m3=http://localhost:${PEER[2]}"
fi

for i in 0 1 2; do wait_until 60 "m$((i + 1)) to be healthy (${CURL[$i]}/health)" healthy "${CURL[$i]}"; done
wait_until 30 "the proxy m4 to answer ($PROXY_EP/health)" healthy "$PROXY_EP"
if [ $MODE = discovery ]; then
  grep -q "falling back to proxy" "$WORK/m4.log" || fail "m4 answers but did not fall back to a proxy"
  [ ! -d "$WORK/m4.data/member" ] || fail "m4 has a member directory: it joined instead of proxying"
fi
echo
echo "== musterctl member list -w table"
ctl --endpoints "$MEMBER_EPS" member list -w table || fail "member list"
nmembers=$(ctl --endpoints "$MEMBER_EPS" member list | grep -c ', started, ' || true)
[ "$nmembers" = 3 ] || fail "member list shows $nmembers started members, expected 3"
echo "== musterctl endpoint health"
ctl --endpoints "$MEMBER_EPS" endpoint health || fail "endpoint health"

VALUE="hello from $(date -u +%H:%M:%S)"
echo "== put through the proxy ($PROXY_EP), get from m3 (${CURL[2]})"
ctl --endpoints "$PROXY_EP" put demo-key "$VALUE" || fail "put through the proxy"
got=$(ctl --endpoints "${CURL[2]}" get demo-key) || fail "get from m3"
echo "$got"
[ "$(echo "$got" | sed -n 2p)" = "$VALUE" ] || fail "m3 returned '$got', expected demo-key / $VALUE"

echo
echo "Cluster is up ($MODE bootstrap)."
echo "  members:  m1 ${CURL[0]}  m2 ${CURL[1]}  m3 ${CURL[2]}"
echo "  proxy:    m4 $PROXY_EP"
echo "  data:     $WORK/m{1,2,3}.data (members), $WORK/m4.data (proxy)"
echo "  logs:     $WORK/*.log"
[ $MODE = srv ] || echo "  token:    $TOKEN   (musterctl discovery show $TOKEN)"
[ $MODE = discovery ] || echo "  DNS:      dig @127.0.0.1 -p ${P[8]} SRV _etcd-server._tcp.$DOMAIN   (musterctl srv $DOMAIN --dns-server $DNS)"
echo "Talk to it:"
echo "  $BIN/musterctl --endpoints $PROXY_EP put foo bar"
echo "  $BIN/musterctl --endpoints $MEMBER_EPS get foo"
echo "  ETCDCTL_API=3 etcdctl --endpoints $MEMBER_EPS member list"
if [ $CHECK = 1 ]; then
  echo "check passed"
  exit 0
fi
echo "Ctrl-C stops everything."
# Stay up until a signal arrives; a process that dies is reported.
while true; do
  check_alive
  sleep 1
done
