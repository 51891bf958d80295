#!/usr/bin/env bash
# Builds the muster and muster-discovery .deb packages with cpack, checks
# their contents, installs them with dpkg -i, checks what an operator of
# Debian's etcd-server expects (binaries on PATH, units in /lib/systemd/system
# that systemd-analyze accepts, /etc/default files kept as conffiles, system
# users owning 0700 data dirs), runs the installed member as its user until
# it is healthy, and purges both packages.  Usage: test_deb.sh <build dir>.
set -euo pipefail
build=$1
fail() { echo "FAIL: $*" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then echo "skipped: dpkg -i needs root"; exit 0; fi

work=$(mktemp -d /tmp/muster-deb-test-XXXXXX)
mpid=
cleanup() {
  [ -n "$mpid" ] && kill -9 "$mpid" 2>/dev/null || true
  dpkg_retry --purge muster muster-discovery >/dev/null 2>&1 || true
  rm -rf "$work" /var/lib/muster/deb-test
}
# dpkg takes a lock; another dpkg run on the machine may hold it for a while.
dpkg_retry() {
  local deadline=$((SECONDS + 180)) out
  while :; do
    if out=$(dpkg "$@" 2>&1); then echo "$out"; return 0; fi
    if ! grep -q "lock" <<<"$out" || [ $SECONDS -ge $deadline ]; then echo "$out" >&2; return 1; fi
    sleep 1
  done
}
trap cleanup EXIT

rm -f "$build"/deb/*.deb
(cd "$build" && cpack -G DEB --config CPackConfig.cmake >"$work/cpack.log" 2>&1) \
  || { cat "$work/cpack.log"; fail "cpack"; }
member=$(ls "$build"/deb/muster_*.deb)
disc=$(ls "$build"/deb/muster-discovery_*.deb)

# --- contents and control data
contents=$(dpkg-deb -c "$member")
for f in ./usr/bin/muster ./usr/bin/musterctl ./lib/systemd/system/muster.service ./etc/default/muster; do
  grep -q " $f\$" <<<"$contents" || fail "$member lacks $f"
done
grep -q " ./usr/bin/muster-discovery\$" <<<"$(dpkg-deb -c "$disc")" || fail "$disc lacks muster-discovery"
[ "$(dpkg-deb -f "$member" Package)" = muster ] || fail "package name"
dpkg-deb -f "$member" Depends | grep -q libleveldb || fail "Depends lacks the shared libraries"
dpkg-deb -e "$member" "$work/ctrl"
grep -qx /etc/default/muster "$work/ctrl/conffiles" || fail "/etc/default/muster is not a conffile"
for s in postinst prerm postrm; do [ -x "$work/ctrl/$s" ] || fail "no $s"; done

# --- install
dpkg_retry -i "$member" "$disc" >"$work/dpkg.log" || { cat "$work/dpkg.log"; fail "dpkg -i"; }
/usr/bin/muster --version | grep -q "^muster Version: " || fail "muster --version"
/usr/bin/musterctl version | grep -qx "API version: 3.4" || fail "musterctl version"
# Debug information stripped, the symbol table kept: the member names its
# own functions for `go tool pprof` (/debug/pprof/symbol, checked below).
sections=$(readelf -S -W /usr/bin/muster)
grep -q " \.symtab " <<<"$sections" || fail "/usr/bin/muster lost its symbol table"
if grep -q " \.debug_info " <<<"$sections"; then fail "/usr/bin/muster kept its debug information"; fi
[ -f /lib/systemd/system/muster.service ] && [ -f /lib/systemd/system/muster-discovery.service ] \
  || fail "units not installed"
[ -f /etc/default/muster ] && [ -f /etc/default/muster-discovery ] || fail "no /etc/default files"
for u in muster muster-discovery; do
  getent passwd "$u" >/dev/null || fail "no $u user"
  [ "$(stat -c '%U %a' /var/lib/$u)" = "$u 700" ] || fail "/var/lib/$u: $(stat -c '%U %a' /var/lib/$u)"
done
[ "$(getent passwd muster | cut -d: -f7)" = /usr/sbin/nologin ] || fail "muster has a login shell"
systemd-analyze verify /lib/systemd/system/muster.service /lib/systemd/system/muster-discovery.service \
  >"$work/verify.log" 2>&1 || { cat "$work/verify.log"; fail "systemd-analyze verify"; }
if grep -v "^$" "$work/verify.log" | grep -qi "muster"; then cat "$work/verify.log"; fail "unit warnings"; fi
# The unit's own settings: notify, the muster user, the defaults file.
grep -qx "Type=notify" /lib/systemd/system/muster.service || fail "not Type=notify"
grep -qx "EnvironmentFile=-/etc/default/%p" /lib/systemd/system/muster.service || fail "no EnvironmentFile"

# --- the installed member runs as its user with the unit's environment
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cp=$(port) pp=$(port)
mkdir -p /var/lib/muster/deb-test && chown muster:muster /var/lib/muster/deb-test && chmod 700 /var/lib/muster/deb-test
runuser -u muster -- env ETCD_NAME=deb-test ETCD_DATA_DIR=/var/lib/muster/deb-test/data \
  ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:$cp ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:$cp \
  ETCD_LISTEN_PEER_URLS=http://127.0.0.1:$pp ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:$pp \
  ETCD_INITIAL_CLUSTER=deb-test=http://127.0.0.1:$pp ETCD_ENABLE_PPROF=true \
  /usr/bin/muster >"$work/member.log" 2>&1 &
mpid=$!
ok=0
for _ in $(seq 300); do
  if curl -sf "http://127.0.0.1:$cp/health" | grep -q '"true"'; then ok=1; break; fi
  kill -0 "$mpid" 2>/dev/null || break
  sleep 0.1
done
[ $ok = 1 ] || { cat "$work/member.log"; fail "installed muster never became healthy"; }
/usr/bin/musterctl --endpoints "http://127.0.0.1:$cp" put deb-key deb-value | grep -qx OK || fail "put"
[ "$(stat -c %U /var/lib/muster/deb-test/data)" = muster ] || fail "data dir not owned by muster"
# The installed member names its own code: main's address in the running
# process (its value in the symbol table plus the load bias, the start of
# the binary's mapping at file offset 0, for a position-independent binary).
pid=$(pgrep -u muster -f '^/usr/bin/muster' | head -1)
main_at=$(nm /usr/bin/muster | awk '$3 == "main" && ($2 == "T" || $2 == "t") {print $1}')
bias=0
if readelf -h /usr/bin/muster | grep -q "Type: *DYN"; then
  bias=$(awk '$6 == "/usr/bin/muster" && $3 == "00000000" {split($1, r, "-"); print r[1]; exit}' \
    "/proc/$pid/maps")
fi
addr=$(printf '0x%x' $((0x$bias + 0x$main_at)))
symbol=$(curl -sf -X POST --data "$addr" "http://127.0.0.1:$cp/debug/pprof/symbol") \
  || fail "/debug/pprof/symbol"
grep -qx "$addr main" <<<"$symbol" || fail "/debug/pprof/symbol did not name main at $addr: $symbol"
kill -TERM "$mpid"; wait "$mpid" 2>/dev/null || true; mpid=

# --- purge: programs and units go, configuration too
dpkg_retry --purge muster muster-discovery >/dev/null || fail "dpkg --purge"
[ ! -e /usr/bin/muster ] && [ ! -e /lib/systemd/system/muster.service ] && [ ! -e /etc/default/muster ] \
  || fail "purge left files"
echo "deb packages: built, installed, ran, purged"
