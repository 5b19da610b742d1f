#!/usr/bin/env bash
# Makes a local CA and a server certificate for localhost/127.0.0.1 (plus any names given),
# for testing TLS. Not for production: the CA key sits next to the certificates.
#
#   make-test-certs.sh OUT_DIR [EXTRA_DNS_NAME...]
#   SLIM_CLIENT_CERTS="agent-1 coordinator" make-test-certs.sh OUT_DIR   # also client certs
#
# Writes OUT_DIR/ca.crt, ca.key, server.crt, server.key and, for each SLIM_CLIENT_CERTS name,
# NAME.crt and NAME.key (CN = NAME, for require_certificate / use_identity_as_username).
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [EXTRA_DNS_NAME...]" >&2; exit 2; }
out=$1; shift
command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
days=${SLIM_CERT_DAYS:-825}

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
  -subj "/CN=Slim Scheduler test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout ca.key -out ca.crt 2>/dev/null

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do san="$san,DNS:$name"; done

leaf() { # name cn extendedKeyUsage san
  local name=$1 cn=$2 eku=$3 alt=$4 ext
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$alt" ] && echo "subjectAltName=$alt"
  } > "$ext"
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$cn" \
    -keyout "$name.key" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days "$days" -sha256 -extfile "$ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$ext"
  chmod 0600 "$name.key"
}

leaf server localhost serverAuth "$san"
for client in ${SLIM_CLIENT_CERTS:-}; do
  leaf "$client" "$client" clientAuth ""
done
chmod 0600 ca.key
rm -f ca.srl
echo "wrote $(pwd)/ca.crt and server.crt (SAN $san)${SLIM_CLIENT_CERTS:+ and client certs for $SLIM_CLIENT_CERTS}"
