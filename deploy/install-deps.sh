#!/usr/bin/env bash
# Installs every Debian package Muster's build, tests and benchmarks need.
# Idempotent: packages already present are not downloaded again.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libboost-dev libssl-dev libc-ares-dev nlohmann-json3-dev libleveldb-dev
  libprotobuf-dev protobuf-compiler libnghttp2-dev libyaml-cpp-dev googletest libgtest-dev
  libabsl-dev
  libcrypt-dev  # bcrypt for auth passwords (crypt_r, crypt_gensalt_rn): docs/security.md
  libsystemd-dev libgoogle-perftools-dev
  google-perftools  # google-pprof: names the C++ functions in /debug/pprof profiles (docs/operations.md)
  etcd-server etcd-client dnsmasq dnsutils golang-cfssl openssl wrk curl
  procps psmisc iproute2 python3 python3-yaml python3-grpcio
  # issue 18: /metrics checked with Prometheus' own Python parser; the
  # discovery status page in a real headless browser; the .deb built and
  # checked with dpkg-deb and systemd-analyze.
  python3-prometheus-client chromium dpkg-dev systemd
  # etcd's own v3 clients for the gRPC interop tests and bench/grpc:
  # Go clientv3 (built offline in GOPATH mode); npm etcd3 (npm ci) needs
  # node and npm, installed below only where the machine has none (these
  # machines ship Node.js with its own npm, which Debian's npm conflicts with).
  golang-go golang-etcd-server-dev
  # bench/grpc-transport's grpc_fd_server (grpc++ with fd handoff, issue 12's
  # measured alternative; the bench skips it when gRPC++ is absent).
  libgrpc++-dev protobuf-compiler-grpc
  # The sanitizer build and the libFuzzer targets (tests/sanitize.sh,
  # tests/fuzz): clang and its sanitizer/fuzzer runtimes.
  clang libclang-rt-14-dev
  # tests/robustness: disk faults injected into etcd's system calls (Go
  # bypasses the LD_PRELOAD shim muster's members get).
  strace
)

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The etcd-server package starts a system etcd on 2379/2380; tests and the
# benchmarks start their own, so make sure the packaged one is not running.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
fi
pkill -x etcd -u etcd 2>/dev/null || true
pkill -x dnsmasq -u dnsmasq 2>/dev/null || true
