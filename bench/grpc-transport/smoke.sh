#!/usr/bin/env bash
# smoke.sh SERVER_BINARY: the ctest for this bench.  Starts the server on a
# free loopback port, plaintext and then with TLS, and checks through the
# real etcdctl 3.4 that Put and Range are answered with the trivial header,
# that another method (DeleteRange) is refused, and that
# SIGTERM stops it with exit status 0.  Says nothing about speed.
set -euo pipefail
server=${1:?usage: smoke.sh SERVER_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/grpc-transport-smoke.XXXXXX")
spid=
cleanup() {
  [ -n "$spid" ] && kill -KILL "$spid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  cat "$work/server.err" >&2 || true
  exit 1
}

"$here/../../deploy/certs/gencerts-openssl.sh" "$work/certs" localhost 127.0.0.1 >/dev/null 2>&1
for mode in plain tls; do
  args=()
  ctl=(etcdctl --dial-timeout 5s --command-timeout 5s)
  scheme=
  if [ $mode = tls ]; then
    args=(--cert "$work/certs/server.pem" --key "$work/certs/server-key.pem")
    ctl+=(--cacert "$work/certs/ca.pem")
    scheme=https://
  fi
  # One output file per mode: with a shared one, the wait below could read
  # the previous server's "listening on" before the new process truncated it.
  out="$work/server-$mode.out"
  "$server" --listen 127.0.0.1:0 "${args[@]}" >"$out" 2>"$work/server.err" &
  spid=$!
  deadline=$((SECONDS + 10))
  until grep -qs '^listening on ' "$out"; do
    kill -0 "$spid" 2>/dev/null || fail "$mode: server exited before listening"
    [ $SECONDS -lt $deadline ] || fail "$mode: server not listening after 10 s"
    sleep 0.05
  done
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$out")
  ctl+=(--endpoints "${scheme}127.0.0.1:$port")
  export ETCDCTL_API=3

  [ "$("${ctl[@]}" put k v)" = OK ] || fail "$mode: put did not answer OK"
  got=$("${ctl[@]}" get k -w json)
  grep -q '"revision":2' <<<"$got" || fail "$mode: get after one put: $got"
  grep -q '"raft_term":2' <<<"$got" || fail "$mode: get: no raft_term in $got"
  if "${ctl[@]}" del k >"$work/del.out" 2>&1; then fail "$mode: DeleteRange was answered"; fi

  kill -TERM "$spid"
  deadline=$((SECONDS + 10))
  while kill -0 "$spid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "$mode: still running 10 s after SIGTERM"
    sleep 0.05
  done
  rc=0
  wait "$spid" || rc=$?
  spid=
  [ $rc -eq 0 ] || fail "$mode: exit status $rc after SIGTERM"
  grep -q '^answered 2$' "$out" || fail "$mode: $(tail -1 "$out")"
  echo "ok: $(basename "$server") $mode"
done
