#!/usr/bin/env bash
# Runs Slim Scheduler across a 3-server NATS cluster (deploy/nats/cluster.sh) and kills one
# server under load: the coordinator and the client on server 1, agent-1 on server 2, agent-2
# on server 3; `slim bench` sends digits requests for 20 s; server 3 is killed (-9) at 6 s and
# restarted at 14 s. Prints the bench summary (sent, answered, lost).
#
# Server 3 is made the leader of the MQTT message stream first (the worst case: every QoS 1
# publish in the cluster stalls until a new leader is elected, docs/deploy.md "Other brokers").
# Every client uses a persistent MQTT session (clean_session = false, a fixed client id), as on
# NATS they should: the daemons through their config, `slim bench` with --client-id and
# --persistent-session. CLEAN_SESSION=1 gives `slim bench` a clean session instead, as before
# it had those flags: with upstream rumqttc its connection could then get stuck for good after
# the failover (a packet-id collision, 3 of 9 runs); with the vendored rumqttc's patches 6 of 6
# passed (docs/deploy.md, "Other brokers").
#
#   deploy/nats/kill-one-under-load.sh DIR [BIN_DIR]    # BIN_DIR: default target/debug
#   NATS_BASE_PORT=24222 deploy/nats/kill-one-under-load.sh DIR   # ports (cluster.sh), default 14222
#   CLEAN_SESSION=1 deploy/nats/kill-one-under-load.sh DIR        # slim bench on a clean session
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,19p' "$0" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../.." && pwd)
dir=$1; bin=${2:-$repo/target/debug}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
prefix=slim-nats/v1
"$here/cluster.sh" start "$dir/nats" "${NATS_BASE_PORT:-14222}"
mapfile -t urls < <("$here/cluster.sh" urls "$dir/nats")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; "$here/cluster.sh" stop "$dir/nats"; }
trap cleanup EXIT
printf '[broker]\nclean_session = false\n' >"$dir/session.toml"
"$bin/slim-coordinator" --config "$dir/session.toml" --broker "${urls[0]}" --topic-prefix "$prefix" --http-listen "" >"$dir/coordinator.log" 2>&1 & pids+=($!)
"$bin/slim-agent" run --config "$dir/session.toml" --broker "${urls[1]}" --topic-prefix "$prefix" --id agent-1 --models-dir "$repo/models" --backend cpu >"$dir/agent-1.log" 2>&1 & pids+=($!)
"$bin/slim-agent" run --config "$dir/session.toml" --broker "${urls[2]}" --topic-prefix "$prefix" --id agent-2 --models-dir "$repo/models" --backend cpu >"$dir/agent-2.log" 2>&1 & pids+=($!)
session=(--client-id "slim-bench-$$" --persistent-session)
[ "${CLEAN_SESSION:-0}" = 1 ] && session=()
sleep 10
"$here/cluster.sh" lead "$dir/nats" '$MQTT_msgs' 3
echo "leaders: $("$here/cluster.sh" leaders "$dir/nats")"
"$bin/slim" bench --broker "${urls[0]}" --topic-prefix "$prefix" --models-dir "$repo/models" \
  --rate 30 --duration 20s --drain 20s "${session[@]}" >"$dir/bench.log" 2>&1 & bench=$!
sleep 6; "$here/cluster.sh" kill "$dir/nats" 3; echo "killed nats n3 at $(date +%T)"
sleep 8; "$here/cluster.sh" restart "$dir/nats" 3; echo "restarted nats n3 at $(date +%T)"
wait "$bench" || true
cat "$dir/bench.log"
echo "--- coordinator: agents"; grep -E "agent (online|offline)|silent|rerout" "$dir/coordinator.log" | tail -8 || true
