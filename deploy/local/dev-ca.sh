#!/usr/bin/env bash
# The development CA and one certificate per identity, for mutual TLS between the services.
#
#   deploy/local/dev-ca.sh [DIR]     (default $ADSMON_LOCAL/secrets/tls; `make secrets` runs it)
#
# Writes, under DIR (mode 700; keys 600):
#   ca.crt, ca.key                   a P-256 development CA ("adsmon development CA"), 10 years
#   <name>.crt, <name>.key           for connects, ads, billing, marketplace, operator: a P-256 key and a
#                                    certificate signed by the CA (2 years) with the identity as
#                                    URI SAN spiffe://adsmon.local/<name> (and CN=<name>). The services'
#                                    certificates are also server certificates: DNS SANs localhost and
#                                    <name> (the compose service name), IP SAN 127.0.0.1.
#
# Idempotent: an existing CA is kept; a certificate is (re)made only when it is missing, not signed by
# this CA, or expires within 30 days. Nothing here is committed (.local is gitignored); this is a
# development CA only: production certificates come from the team's own CA or SPIFFE issuer.
set -euo pipefail

ADSMON_SVC=dev-ca
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DIR="${1:-$ADSMON_LOCAL/secrets/tls}"
TRUST_DOMAIN="${ADSMON_TLS_TRUST_DOMAIN:-adsmon.local}"
SERVICES=(connects ads billing)
CALLERS=(marketplace operator)
RENEW_WITHIN=$((30 * 24 * 3600))

command -v openssl >/dev/null || die "openssl is required (apt-get install openssl)"
umask 077
mkdir -p "$DIR"
chmod 700 "$DIR"

if [[ ! -s "$DIR/ca.key" || ! -s "$DIR/ca.crt" ]] || ! openssl x509 -in "$DIR/ca.crt" -noout -checkend "$RENEW_WITHIN" >/dev/null; then
  info "making the development CA in $DIR"
  openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/ca.key.tmp"
  openssl req -x509 -new -key "$DIR/ca.key.tmp" -sha256 -days 3650 -subj "/O=adsmon/CN=adsmon development CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$DIR/ca.crt.tmp" 2>/dev/null
  mv "$DIR/ca.key.tmp" "$DIR/ca.key"
  mv "$DIR/ca.crt.tmp" "$DIR/ca.crt"
fi

current() { # $1 name: the certificate exists, has its key, is this CA's and is not about to expire
  [[ -s "$DIR/$1.crt" && -s "$DIR/$1.key" ]] &&
    openssl verify -CAfile "$DIR/ca.crt" "$DIR/$1.crt" >/dev/null 2>&1 &&
    openssl x509 -in "$DIR/$1.crt" -noout -checkend "$RENEW_WITHIN" >/dev/null
}

issue() { # $1 name, $2 "server" (also a server certificate) or "client"
  local name=$1 kind=$2 san usage ext
  san="URI:spiffe://$TRUST_DOMAIN/$name"
  usage="clientAuth"
  if [[ $kind == server ]]; then
    san="$san,DNS:localhost,DNS:$name,IP:127.0.0.1"
    usage="serverAuth,clientAuth"
  fi
  ext="$(mktemp "$DIR/.ext.XXXXXX")"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=$usage" "subjectAltName=$san" >"$ext"
  openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/$name.key.tmp"
  openssl req -new -key "$DIR/$name.key.tmp" -subj "/O=adsmon/CN=$name" -out "$DIR/$name.csr" 2>/dev/null
  openssl x509 -req -in "$DIR/$name.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
    -CAserial "$DIR/ca.srl" -days 730 -sha256 -extfile "$ext" -out "$DIR/$name.crt.tmp" 2>/dev/null
  rm -f "$ext" "$DIR/$name.csr"
  chmod 600 "$DIR/$name.key.tmp"
  mv "$DIR/$name.key.tmp" "$DIR/$name.key"
  mv "$DIR/$name.crt.tmp" "$DIR/$name.crt"
  info "issued $name ($san)"
}

for name in "${SERVICES[@]}"; do current "$name" || issue "$name" server; done
for name in "${CALLERS[@]}"; do current "$name" || issue "$name" client; done
chmod 600 "$DIR"/*.key
chmod 644 "$DIR"/*.crt
