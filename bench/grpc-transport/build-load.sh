#!/usr/bin/env bash
# Builds the clientv3 load loop (load/main.go) offline, in GOPATH mode,
# against Debian's golang-etcd-server-dev.  Usage: build-load.sh OUT_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build-load.sh OUT_BINARY}
mkdir -p "$(dirname "$out")"
export GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS=
export GOCACHE=${GOCACHE:-${TMPDIR:-/tmp}/muster-go-cache}
cd "$here/load"
go build -o "$out" main.go
