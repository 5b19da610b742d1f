#!/usr/bin/env bash
# Writes a Mosquitto password file and the matching ACL for a Slim Scheduler deployment.
#
#   make-passwords.sh OUT_DIR ROLE:USERNAME:PASSWORD...
#
# ROLE is agent, client, coordinator, monitor or bridge (a site broker's bridge to this hub,
# deploy/mosquitto/site.conf). An agent's username must be its agent id.
# Writes OUT_DIR/passwd (hashed with mosquitto_passwd) and OUT_DIR/acl (deploy/mosquitto/acl
# plus one `user` block per agent, client and extra coordinator). Re-running replaces both.
# Passwords on the command line end up in shell history: in production read them from a file,
# e.g. `make-passwords.sh /etc/mosquitto/slim $(cat users.txt)` with users.txt mode 0600.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR ROLE:USERNAME:PASSWORD..." >&2; exit 2; }
[ $# -ge 2 ] || usage
out=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
command -v mosquitto_passwd >/dev/null || { echo "mosquitto_passwd not found (Debian: apt-get install mosquitto)" >&2; exit 1; }

mkdir -p "$out"
passwd="$out/passwd"
acl_tmp=$(mktemp)
trap 'rm -f "$acl_tmp"' EXIT
cp "$here/acl" "$acl_tmp"
rm -f "$passwd"
: > "$passwd"
chmod 0600 "$passwd"

for spec in "$@"; do
  role=${spec%%:*}; rest=${spec#*:}
  user=${rest%%:*}; pass=${rest#*:}
  if [ -z "$user" ] || [ "$rest" = "$spec" ] || [ "$pass" = "$rest" ]; then
    echo "bad user spec '$spec' (want ROLE:USERNAME:PASSWORD)" >&2; exit 2
  fi
  case "$user" in *[/+#%\ ]*) echo "username '$user' must not contain / + # % or spaces" >&2; exit 2;; esac
  mosquitto_passwd -b "$passwd" "$user" "$pass"
  case "$role" in
    agent)
      printf '\n# agent %s (publishes its status/telemetry through the patterns above)\nuser %s\ntopic write slim/v1/clients/+/replies\ntopic write slim/v1/errors\n' "$user" "$user" >> "$acl_tmp" ;;
    client)
      printf '\n# client %s (MQTT client id = username)\nuser %s\ntopic write slim/v1/requests/+\n' "$user" "$user" >> "$acl_tmp" ;;
    coordinator)
      if [ "$user" != coordinator ]; then
        { echo; sed -n "/^user coordinator\$/,/^\$/p" "$here/acl"; } | sed "s/^user coordinator\$/user $user/" >> "$acl_tmp"
      fi ;;
    monitor)
      if [ "$user" != monitor ]; then
        { echo; sed -n "/^user monitor\$/,\$p" "$here/acl"; } | sed "s/^user monitor\$/user $user/" >> "$acl_tmp"
      fi ;;
    bridge)
      printf '\n# bridge %s (a site broker, deploy/mosquitto/site.conf): the site'"'"'s agents, answers and requests\nuser %s\ntopic write slim/v1/agents/+/status\ntopic write slim/v1/agents/+/telemetry\ntopic read slim/v1/agents/+/assign\ntopic readwrite slim/v1/clients/#\ntopic write slim/v1/errors\ntopic write slim/v1/decisions\ntopic write slim/v1/requests/+\ntopic write slim/v1/coordinators/+/status\ntopic write $SYS/broker/connection/+/state\n' "$user" "$user" >> "$acl_tmp" ;;
    *) echo "unknown role '$role' (agent, client, coordinator, monitor, bridge)" >&2; exit 2 ;;
  esac
  echo "$role $user"
done
install -m 0644 "$acl_tmp" "$out/acl"
echo "wrote $passwd and $out/acl"
