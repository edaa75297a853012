#!/usr/bin/env bash
# Create what compose.yaml mounts: broker certificates, accounts and passwords, agent client certificates.
#
#   deploy/compose/init-secrets.sh [DIR]      (default: deploy/compose/secrets)
#
# DIR/broker/   passwd, acl (broker/acl), ca.crt, server.crt, server.key, health/mosquitto_sub (health check login)
# DIR/agents/   ca.crt, and per account: <user>.password, <user>.crt, <user>.key
# DIR/ca-private/  the CA's private key (mounted nowhere; needed to sign more certificates)
# Accounts: cam-1, cam-2, cam-3, cam-own (sensors; cam-own: compose.yaml's own-model camera), fusion.fusion-1,
# watch.results (for `nairbus watch`), health.probe.
# Run as root, it hands the broker files to the eclipse-mosquitto image's user (uid 1883) and the agent files to the
# nairbus image's user (uid 10001), mode 0600; otherwise it makes them readable (0644) and says so. Safe to re-run:
# existing certificates are kept, passwords are renewed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$here/secrets}
broker="$out/broker" agents="$out/agents"
mkdir -p "$broker" "$agents" "$out/ca-private"
# The CA's private key is kept out of the directory the broker container mounts; it comes back only to sign.
for f in ca.key ca.srl; do [ ! -f "$out/ca-private/$f" ] || mv "$out/ca-private/$f" "$broker/$f"; done
cp "$repo/broker/acl" "$broker/acl"
bash "$repo/broker/scripts/make-certs.sh" ca "$broker" mosquitto
for sensor in cam-1 cam-2 cam-3 cam-own; do bash "$repo/broker/scripts/add-user.sh" "$broker" sensor "$sensor"; done
bash "$repo/broker/scripts/add-user.sh" "$broker" fusion fusion-1
bash "$repo/broker/scripts/add-user.sh" "$broker" watch results
bash "$repo/broker/scripts/add-user.sh" "$broker" health probe
cp "$broker/ca.crt" "$agents/ca.crt"
for user in cam-1 cam-2 cam-3 cam-own fusion.fusion-1 watch.results; do
  bash "$repo/broker/scripts/make-certs.sh" client "$broker" "$user"
  cp "$broker/credentials/$user" "$agents/$user.password"
  cp "$broker/clients/$user.crt" "$agents/$user.crt"
  cp "$broker/clients/$user.key" "$agents/$user.key"
done
mkdir -p "$broker/health"
printf -- '-h 127.0.0.1\n-p 1883\n-u health.probe\n-P %s\n' "$(cat "$broker/credentials/health.probe")" \
  >"$broker/health/mosquitto_sub"
rm -rf "$broker/credentials" "$broker/clients"   # the agents' copies live in $agents
for f in ca.key ca.srl; do [ ! -f "$broker/$f" ] || mv "$broker/$f" "$out/ca-private/$f"; done
chmod 0700 "$out/ca-private"

chmod 0755 "$out" "$broker" "$agents" "$broker/health"
if [ "$(id -u)" -eq 0 ]; then
  chown -R 1883:1883 "$broker" && find "$broker" -type f -exec chmod 0600 {} +
  chown -R 10001:10001 "$agents" && find "$agents" -type f -exec chmod 0600 {} +
  chmod 0644 "$broker/ca.crt" "$broker/server.crt" "$agents/ca.crt"
else
  find "$broker" "$agents" -type f -exec chmod 0644 {} +
  echo "init-secrets: not root: files are world-readable (0644) so the containers' users can read them;" \
       "re-run as root for 0600 files owned by the containers' users" >&2
fi
echo "init-secrets: done in $out" >&2
