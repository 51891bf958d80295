#!/usr/bin/env bash
# gencerts.sh <outdir> [hosts...]: a CA and the certificates a muster (or
# etcd) cluster needs, made with cfssl + cfssljson as etcd's documentation
# makes them (hack/tls-setup):
#   ca.pem ca-key.pem          the CA (reused when <outdir> already holds one,
#                              so certificates for new members can be added)
#   server.pem server-key.pem  --cert-file/--key-file (profile "server")
#   peer.pem peer-key.pem      --peer-cert-file/--peer-key-file (profile
#                              "peer": server and client auth)
#   client.pem client-key.pem  musterctl/etcdctl --cert/--key (profile "client")
# Hosts (DNS names or IP addresses) go into the server and peer certificates'
# SANs; default: localhost 127.0.0.1.  The common names come from the CSR
# files next to this script; override them with SERVER_CN, PEER_CN and
# CLIENT_CN (e.g. to match --peer-cert-allowed-cn).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
  echo "usage: $0 <outdir> [hosts...]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
out="$1"
shift
hosts=("$@")
[ ${#hosts[@]} -gt 0 ] || hosts=(localhost 127.0.0.1)

for tool in cfssl cfssljson; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$0: $tool not found in PATH; install cfssl and cfssljson" \
      "(Debian/Ubuntu: apt-get install golang-cfssl; or go install" \
      "github.com/cloudflare/cfssl/cmd/$tool@latest), or use gencerts-openssl.sh" >&2
    exit 1
  fi
done

mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# A CSR file with the common name replaced when the caller asked for one.
csr() {
  local name="$1" cn="$2"
  if [ -z "$cn" ]; then
    echo "$here/$name.json"
  else
    sed "s/\"CN\": \"[^\"]*\"/\"CN\": \"$cn\"/" "$here/$name.json" >"$tmp/$name.json"
    echo "$tmp/$name.json"
  fi
}

if [ -f "$out/ca.pem" ] && [ -f "$out/ca-key.pem" ]; then
  echo "using the existing CA in $out" >&2
else
  cfssl gencert -loglevel=3 -initca "$here/ca-csr.json" | cfssljson -bare "$out/ca"
fi

joined="$(
  IFS=,
  echo "${hosts[*]}"
)"
sign() {
  local name="$1" profile="$2" cn="$3" hostname="$4"
  local args=(-loglevel=3 -ca="$out/ca.pem" -ca-key="$out/ca-key.pem"
    -config="$here/ca-config.json" -profile="$profile")
  # A client certificate names no host: no -hostname, no SAN.
  [ -z "$hostname" ] || args+=(-hostname="$hostname")
  cfssl gencert "${args[@]}" "$(csr "$name" "$cn")" | cfssljson -bare "$out/$name"
}
sign server server "${SERVER_CN:-}" "$joined"
sign peer peer "${PEER_CN:-}" "$joined"
sign client client "${CLIENT_CN:-}" ""
rm -f "$out"/*.csr
chmod 600 "$out"/*-key.pem
echo "wrote ca.pem server.pem server-key.pem peer.pem peer-key.pem client.pem client-key.pem" \
  "to $out (hosts: $joined)" >&2
