#!/usr/bin/env bash
# gencerts-openssl.sh <outdir> [hosts...]: the same files as gencerts.sh,
# made with the openssl command alone (for machines without cfssl):
#   ca.pem ca-key.pem          the CA (reused when <outdir> already holds one)
#   server.pem server-key.pem  serverAuth, SANs = hosts
#   peer.pem peer-key.pem      serverAuth + clientAuth, SANs = hosts
#   client.pem client-key.pem  clientAuth, no SAN
# RSA 2048 keys, SHA-256, valid 5 years (43800h, as ca-config.json).
# Hosts default to localhost 127.0.0.1; SERVER_CN, PEER_CN and CLIENT_CN
# override the common names (defaults muster-server, muster-peer,
# muster-client, as in the cfssl CSR files).
set -euo pipefail

usage() {
  echo "usage: $0 <outdir> [hosts...]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
out="$1"
shift
hosts=("$@")
[ ${#hosts[@]} -gt 0 ] || hosts=(localhost 127.0.0.1)

if ! command -v openssl >/dev/null 2>&1; then
  echo "$0: openssl not found in PATH (Debian/Ubuntu: apt-get install openssl)" >&2
  exit 1
fi

days=1825
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

sans=""
for h in "${hosts[@]}"; do
  if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then
    sans+="${sans:+,}IP:$h"
  else
    sans+="${sans:+,}DNS:$h"
  fi
done

if [ -f "$out/ca.pem" ] && [ -f "$out/ca-key.pem" ]; then
  echo "using the existing CA in $out" >&2
else
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
    -subj "/O=muster/OU=muster cluster CA/CN=Muster CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$out/ca-key.pem" -out "$out/ca.pem" 2>/dev/null
fi

# leaf <name> <common name> <extendedKeyUsage> <subjectAltName or "">
leaf() {
  local name="$1" cn="$2" eku="$3" san="$4"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid"
    [ -z "$san" ] || echo "subjectAltName=$san"
  } >"$tmp/$name.ext"
  openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/O=muster/CN=$cn" \
    -keyout "$out/$name-key.pem" -out "$tmp/$name.csr" 2>/dev/null
  openssl x509 -req -sha256 -days "$days" -in "$tmp/$name.csr" \
    -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$tmp/$name.ext" -out "$out/$name.pem" 2>/dev/null
}
leaf server "${SERVER_CN:-muster-server}" serverAuth "$sans"
leaf peer "${PEER_CN:-muster-peer}" serverAuth,clientAuth "$sans"
leaf client "${CLIENT_CN:-muster-client}" clientAuth ""
chmod 600 "$out"/*-key.pem
echo "wrote ca.pem server.pem server-key.pem peer.pem peer-key.pem client.pem client-key.pem" \
  "to $out (hosts: ${hosts[*]})" >&2
