#!/usr/bin/env bash
# Create TLS certificates for a nairbus broker with openssl: a private CA, the broker's server certificate, and
# client certificates for agents (the production listener requires one).
#
#   make-certs.sh ca     DIR [NAME ...]   CA (ca.crt, ca.key) and server certificate (server.crt, server.key) in DIR;
#                                         NAMEs are the host names/IPs clients connect to (subjectAltName), always
#                                         plus localhost, 127.0.0.1 and mosquitto (the compose service name).
#   make-certs.sh client DIR CN           client certificate DIR/clients/CN.crt + CN.key signed by DIR's CA;
#                                         use the agent's broker user name as CN.
#
# Keys are EC P-256. These are certificates for a private deployment or tests; with your own PKI, put its CA,
# server certificate and key under the same names instead. An existing CA or server certificate is never
# overwritten (delete it to renew). Private keys are mode 0600 (server.key 0640, group mosquitto, when run as root).
set -euo pipefail
umask 077

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2
shift 2
command -v openssl >/dev/null || { echo "make-certs: openssl is not installed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
days_ca=${NAIRBUS_CA_DAYS:-3650}
days=${NAIRBUS_CERT_DAYS:-825}

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

case "$cmd" in
  ca)
    if [ ! -f "$dir/ca.crt" ]; then
      key "$dir/ca.key"
      openssl req -new -x509 -key "$dir/ca.key" -out "$dir/ca.crt" -days "$days_ca" -subj "/O=nairbus/CN=nairbus test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
      echo "make-certs: CA $dir/ca.crt" >&2
    fi
    if [ ! -f "$dir/server.crt" ]; then
      san="DNS:localhost,IP:127.0.0.1,DNS:mosquitto"
      for name in "$@"; do
        if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san="$san,IP:$name"; else san="$san,DNS:$name"; fi
      done
      key "$dir/server.key"
      openssl req -new -key "$dir/server.key" -subj "/O=nairbus/CN=${1:-localhost}" -out "$dir/server.csr" 2>/dev/null
      printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
        "$san" >"$dir/server.ext"
      openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days "$days" -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
      rm -f "$dir/server.csr" "$dir/server.ext"
      echo "make-certs: server certificate $dir/server.crt ($san)" >&2
    fi
    chmod 0644 "$dir/ca.crt" "$dir/server.crt"
    if [ "$(id -u)" -eq 0 ] && getent group mosquitto >/dev/null; then
      chgrp mosquitto "$dir/server.key" && chmod 0640 "$dir/server.key"
    fi
    ;;
  client)
    [ $# -eq 1 ] || usage
    cn=$1
    [[ $cn =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || { echo "make-certs: bad client name '$cn'" >&2; exit 2; }
    [ -f "$dir/ca.key" ] || { echo "make-certs: no CA in $dir (run: make-certs.sh ca $dir)" >&2; exit 1; }
    mkdir -p "$dir/clients"
    key "$dir/clients/$cn.key"
    openssl req -new -key "$dir/clients/$cn.key" -subj "/O=nairbus/CN=$cn" -out "$dir/clients/$cn.csr" 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' \
      >"$dir/clients/$cn.ext"
    openssl x509 -req -in "$dir/clients/$cn.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days "$days" -extfile "$dir/clients/$cn.ext" -out "$dir/clients/$cn.crt" 2>/dev/null
    rm -f "$dir/clients/$cn.csr" "$dir/clients/$cn.ext"
    chmod 0644 "$dir/clients/$cn.crt"
    echo "make-certs: client certificate $dir/clients/$cn.crt" >&2
    ;;
  *) usage ;;
esac
