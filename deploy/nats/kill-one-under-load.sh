#!/usr/bin/env bash
# Runs Slim Scheduler across a 3-server NATS cluster (deploy/nats/cluster.sh) and kills one
# server under load: the coordinator and the client on server 1, agent-1 on server 2, agent-2
# on server 3; `slim bench` sends digits requests for 20 s; server 3 is killed (-9) at 6 s and
# restarted at 14 s. Prints the bench summary (sent, answered, lost).
#
#   deploy/nats/kill-one-under-load.sh DIR [BIN_DIR]    # BIN_DIR: default target/debug
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,8p' "$0" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../.." && pwd)
dir=$1; bin=${2:-$repo/target/debug}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
prefix=slim-nats/v1
"$here/cluster.sh" start "$dir/nats"
mapfile -t urls < <("$here/cluster.sh" urls "$dir/nats")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; "$here/cluster.sh" stop "$dir/nats"; }
trap cleanup EXIT
"$bin/slim-coordinator" --broker "${urls[0]}" --topic-prefix "$prefix" --http-listen "" >"$dir/coordinator.log" 2>&1 & pids+=($!)
"$bin/slim-agent" run --broker "${urls[1]}" --topic-prefix "$prefix" --id agent-1 --models-dir "$repo/models" --backend cpu >"$dir/agent-1.log" 2>&1 & pids+=($!)
"$bin/slim-agent" run --broker "${urls[2]}" --topic-prefix "$prefix" --id agent-2 --models-dir "$repo/models" --backend cpu >"$dir/agent-2.log" 2>&1 & pids+=($!)
sleep 10
"$bin/slim" bench --broker "${urls[0]}" --topic-prefix "$prefix" --models-dir "$repo/models" \
  --rate 30 --duration 20s --drain 20s >"$dir/bench.log" 2>&1 & bench=$!
sleep 6; "$here/cluster.sh" kill "$dir/nats" 3; echo "killed nats n3 at $(date +%T)"
sleep 8; "$here/cluster.sh" restart "$dir/nats" 3; echo "restarted nats n3 at $(date +%T)"
wait "$bench" || true
cat "$dir/bench.log"
echo "--- coordinator: agents"; grep -E "agent (online|offline)|silent|rerout" "$dir/coordinator.log" | tail -8 || true
