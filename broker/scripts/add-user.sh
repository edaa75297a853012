#!/usr/bin/env bash
# Add (or re-key) a broker account for a nairbus agent with mosquitto_passwd.
#
#   add-user.sh DIR ROLE ID [--stdin]
#
# ROLE    user name            what it may do (broker/acl)
# sensor  ID                   write nairbus/v1/+/sensors/ID/{status,birth,frag,topk}; read nothing
# fusion  fusion.ID            read sensor topics, write results, its status/stats, its Home Assistant discovery
# ha      ha.ID                Home Assistant: homeassistant/#, read results, states and agent status, command sensors
# watch   watch.ID             read results, agent status and stats
# health  health.ID            read $SYS/broker/uptime (container health check)
#
# The password is random (or read from standard input with --stdin); it never appears on a command line. It lands
# in DIR/passwd (hashed, created if missing) and in DIR/credentials/<user name> (mode 0600) for you to copy to the
# agent, e.g. as the systemd credential "broker-password" (docs/deployment.md). For a fusion, ha, watch or health ID
# other than the ones broker/acl already names, the matching ACL block is appended to DIR/acl (copy broker/acl
# there first). Restart or reload Mosquitto afterwards (systemctl reload mosquitto: it re-reads both files on SIGHUP).
set -euo pipefail
umask 077

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 3 ] || usage
dir=$1 role=$2 id=$3
from_stdin=${4:-}
command -v mosquitto_passwd >/dev/null || {
  echo "add-user: mosquitto_passwd is not installed (apt-get install mosquitto)" >&2; exit 1; }
[[ $id =~ ^[A-Za-z0-9_-]{1,64}$ ]] || {
  echo "add-user: '$id' is not an id (1-64 characters from A-Z a-z 0-9 _ -)" >&2; exit 2; }

case "$role" in
  sensor) user=$id ;;
  fusion|ha|watch|health) user="$role.$id" ;;
  *) echo "add-user: unknown role '$role' (sensor, fusion, ha, watch, health)" >&2; exit 2 ;;
esac

if [ "$from_stdin" = "--stdin" ]; then
  IFS= read -r password
  [ ${#password} -ge 12 ] || { echo "add-user: use a password of at least 12 characters" >&2; exit 2; }
elif [ -n "$from_stdin" ]; then
  usage
else
  password=$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | head -c 32)
fi

mkdir -p "$dir/credentials"
[ -f "$dir/passwd" ] || { : >"$dir/passwd"; }
# mosquitto_passwd asks twice on standard input: the password stays off the process list.
printf '%s\n%s\n' "$password" "$password" | mosquitto_passwd "$dir/passwd" "$user" >/dev/null 2>&1 || {
  echo "add-user: mosquitto_passwd failed for $user" >&2; exit 1; }
printf '%s' "$password" >"$dir/credentials/$user"
chmod 0600 "$dir/credentials/$user"
if [ "$(id -u)" -eq 0 ] && getent group mosquitto >/dev/null; then
  chgrp mosquitto "$dir/passwd" && chmod 0640 "$dir/passwd"
else
  chmod 0600 "$dir/passwd"
fi

acl_block() {
  case "$role" in
    fusion) cat <<BLOCK
user $user
topic read nairbus/v1/+/sensors/+/status
topic read nairbus/v1/+/sensors/+/birth
topic read nairbus/v1/+/sensors/+/frag
topic read nairbus/v1/+/sensors/+/topk
topic read nairbus/v1/+/sensors/+/image
topic read nairbus/v1/+/sensors/+/item
topic write nairbus/v1/+/sensors/+/set
topic write nairbus/v1/+/results/+
topic write nairbus/v1/+/streams/+/+
topic write nairbus/v1/+/fusion/$id/status
topic write nairbus/v1/+/fusion/$id/stats
topic write nairbus/v1/+/fusion/$id/response
topic read nairbus/v1/+/fusion/$id/set
topic read nairbus/v1/+/fusion/+/status
topic readwrite homeassistant/device/nairbus-$id/+/config
topic readwrite homeassistant/sensor/nairbus-$id/+/config
topic read homeassistant/status
BLOCK
    ;;
    ha) cat <<BLOCK
user $user
topic readwrite homeassistant/#
topic read nairbus/v1/+/results/+
topic read nairbus/v1/+/streams/+/+
topic read nairbus/v1/+/fusion/+/status
topic read nairbus/v1/+/fusion/+/stats
topic read nairbus/v1/+/sensors/+/status
topic read nairbus/v1/+/sensors/+/controls
topic read nairbus/v1/+/sensors/+/response
topic write nairbus/v1/+/sensors/+/set
topic read nairbus/v1/+/fusion/+/response
topic write nairbus/v1/+/fusion/+/set
BLOCK
    ;;
    watch) cat <<BLOCK
user $user
topic read nairbus/v1/+/results/+
topic read nairbus/v1/+/fusion/+/status
topic read nairbus/v1/+/fusion/+/stats
topic read nairbus/v1/+/sensors/+/status
BLOCK
    ;;
    health) printf 'user %s\ntopic read $SYS/broker/uptime\n' "$user" ;;
  esac
}
if [ "$role" != sensor ] && [ -f "$dir/acl" ] && ! grep -qx "user $user" "$dir/acl"; then
  { echo; echo "# added by add-user.sh"; acl_block; } >>"$dir/acl"
  echo "add-user: appended the ACL block for $user to $dir/acl" >&2
fi
echo "add-user: $user added to $dir/passwd; password in $dir/credentials/$user" >&2
