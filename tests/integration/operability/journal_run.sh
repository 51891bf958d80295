#!/usr/bin/env bash
# Runs inside `unshare --mount`: a private systemd-journald on tmpfs, then
# `$2` (muster or etcd) with --log-outputs=systemd/journal until it is
# ready, then prints the journal as JSON lines.  Usage: journal_run.sh
# <name> <binary> <work dir>.  Nothing leaves the mount namespace.
set -euo pipefail
name=$1 bin=$2 work=$3
mkdir -p "$work"
mount --make-rprivate /
for d in /run/systemd /run/log /var/log/journal; do
  [ -d "$d" ] || continue
  mount -t tmpfs tmpfs "$d"
done
mkdir -p /run/systemd/journal /run/log/journal
/lib/systemd/systemd-journald &
jpid=$!
trap 'kill $jpid 2>/dev/null; [ -n "${mpid:-}" ] && kill -9 $mpid 2>/dev/null; wait 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cp=$(free_port) pp=$(free_port)
args=(--name "$name" --data-dir "$work/data" --logger zap --log-outputs systemd/journal
      --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp"
      --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp"
      --initial-cluster "$name=http://127.0.0.1:$pp")
"$bin" "${args[@]}" >"$work/stderr" 2>&1 &
mpid=$!
ok=0
for _ in $(seq 300); do
  if curl -sf "http://127.0.0.1:$cp/health" >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.1
done
[ "$ok" = 1 ] || { echo "$name never became healthy"; cat "$work/stderr"; exit 1; }
kill -TERM $mpid; wait $mpid 2>/dev/null || true
mpid=
journalctl -D /run/log/journal --no-pager -o json
