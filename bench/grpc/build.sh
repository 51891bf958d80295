#!/usr/bin/env bash
# bench/grpc/build.sh [output]: builds grpc-bench (bench/grpc/main.go) with
# Debian's golang-go and golang-etcd-server-dev (clientv3 3.4) offline, in
# GOPATH mode, and prints the binary's path.  Default output:
# $BUILD_DIR/bin/grpc-bench (BUILD_DIR defaults to build/ in the repository).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-${BUILD_DIR:-$root/build}/bin/grpc-bench}"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
GOCODE=${GOCODE:-/usr/share/gocode}
if [ ! -d "$GOCODE/src/go.etcd.io/etcd/clientv3" ]; then
  echo "$0: $GOCODE/src/go.etcd.io/etcd/clientv3 missing: apt-get install golang-etcd-server-dev" >&2
  exit 1
fi
# A writable build cache even when $HOME is not (CI containers).
export GOCACHE="${GOCACHE:-$(go env GOCACHE 2>/dev/null || true)}"
if [ -z "$GOCACHE" ] || ! mkdir -p "$GOCACHE" 2>/dev/null; then
  export GOCACHE="$(dirname "$out")/.gocache"
fi
GO111MODULE=off GOPATH="$GOCODE" go build -o "$out" "$here/main.go" >&2
echo "$out"
