#!/usr/bin/env bash
# Checks, with mosquitto_pub/mosquitto_sub, the MQTT features Slim Scheduler relies on, against
# any broker; prints one line per feature, `ok` or what happened. The compatibility table in
# docs/deploy.md ("Other brokers") comes from this script.
#
#   deploy/probe-broker.sh HOST PORT [PORT2]
#
# PORT2 (optional): a second server of the same cluster; messages are then published on PORT
# and subscribed on PORT2, so delivery across servers is checked too. Anonymous, plain TCP.
# Leaves retained messages under probe/slim/ behind (cleared at the end where possible).
set -uo pipefail
[ $# -ge 2 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
host=$1 pub_port=$2 sub_port=${3:-$2}
command -v mosquitto_sub >/dev/null || { echo "mosquitto_sub not found (Debian: apt-get install mosquitto-clients)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
id="probe$$"

# sub FILTER COUNT SECONDS > output: topic and payload length of what arrives.
sub() { timeout "$3" mosquitto_sub -h "$host" -p "$sub_port" -q 1 -i "$id-s$RANDOM" -t "$1" -C "$2" -F '%t %l' 2>&1; }
pub() { mosquitto_pub -h "$host" -p "$pub_port" -q 1 -i "$id-p$RANDOM" "$@" 2>&1; }
report() { printf '%-44s %s\n' "$1" "$2"; }

# 1. QoS 1 publish -> subscribe (across servers when PORT2 is given).
sub 'probe/slim/q/+' 1 5 > "$tmp/q" & sleep 1; pub -t probe/slim/q/a -m x >/dev/null; wait
grep -q '^probe/slim/q/a 1$' "$tmp/q" && report "QoS 1 delivery" ok || report "QoS 1 delivery" "FAILED: $(head -c 200 "$tmp/q")"

# 2. Retained message, to a wildcard subscription (the coordinator's agents/+/status).
pub -r -t probe/slim/r/agent-1/status -m online >/dev/null; sleep 1
sub 'probe/slim/r/+/status' 1 3 > "$tmp/r"
if grep -q '^probe/slim/r/agent-1/status 6$' "$tmp/r"; then report "retained, wildcard subscription" ok
else
  sub 'probe/slim/r/agent-1/status' 1 3 > "$tmp/r2"
  if grep -q 'status 6$' "$tmp/r2"; then report "retained, wildcard subscription" "FAILED: delivered only to a subscription without wildcards"
  else report "retained, wildcard subscription" "FAILED: not delivered at all"; fi
fi
pub -r -t probe/slim/r/agent-1/status -n >/dev/null

# 3. Last will on an abrupt disconnect.
sub 'probe/slim/w/+' 1 15 > "$tmp/w" & sleep 1
mosquitto_sub -h "$host" -p "$pub_port" -k 5 -q 1 -i "$id-will" -t probe/slim/none \
  --will-topic probe/slim/w/gone --will-payload dead --will-qos 1 >/dev/null 2>&1 & willer=$!
sleep 1.5; kill -9 "$willer" 2>/dev/null; wait "$willer" 2>/dev/null; wait
grep -q '^probe/slim/w/gone 4$' "$tmp/w" && report "last will" ok || report "last will" "FAILED: not published within 13 s"

# 4. Shared subscription: two members of one group, 6 messages.
for m in a b; do sub '$share/probe/probe/slim/s/+' 6 6 > "$tmp/s$m" & done; sleep 1.5
for i in 1 2 3 4 5 6; do pub -t probe/slim/s/req -m "$i" >/dev/null; done; wait
na=$(grep -c '^probe/slim/s/req' "$tmp/sa"); nb=$(grep -c '^probe/slim/s/req' "$tmp/sb")
if [ $((na + nb)) -eq 6 ] && [ "$na" -gt 0 ] && [ "$nb" -gt 0 ]; then report "\$share/ group (6 messages, 2 members)" "ok ($na + $nb)"
else report "\$share/ group (6 messages, 2 members)" "FAILED: members received $na and $nb"; fi

# 5. Topic characters Slim allows: '.' (model names, reply topics) and ' ' (reply topics).
for c in dot space; do
  case $c in dot) t='probe/slim/c/a.b';; space) t='probe/slim/c/a b';; esac
  sub 'probe/slim/c/+' 1 4 > "$tmp/c" & sleep 1; out=$(pub -t "$t" -m x); wait
  if grep -qxF "$t 1" "$tmp/c"; then report "'$( [ $c = dot ] && echo . || echo ' ')' in a topic level" ok
  else report "'$( [ $c = dot ] && echo . || echo ' ')' in a topic level" "FAILED: publisher: ${out:-accepted}; subscriber saw: $(head -c 80 "$tmp/c" | tr '\n' ' ')"; fi
done

# 6. A 1 KiB reply topic and a 2 MiB payload (an assignment carries a request of up to 1 MiB).
long="probe/slim/l/$(printf 'a%.0s' $(seq 1 1000))"
sub "$long" 1 4 > "$tmp/l" & sleep 1; pub -t "$long" -m x >/dev/null; wait
grep -q " 1$" "$tmp/l" && report "1 KiB topic" ok || report "1 KiB topic" "FAILED"
head -c 2097152 /dev/zero > "$tmp/big"
sub 'probe/slim/b' 1 6 > "$tmp/b" & sleep 1; pub -t probe/slim/b -f "$tmp/big" >/dev/null; wait
grep -q '^probe/slim/b 2097152$' "$tmp/b" && report "2 MiB payload" ok || report "2 MiB payload" "FAILED: $(head -c 100 "$tmp/b")"
