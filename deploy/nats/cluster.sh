#!/usr/bin/env bash
# A local 3-server NATS cluster with JetStream and the MQTT gateway, for trying Slim Scheduler on
# a clustered broker (docs/deploy.md, "Other brokers").
#
#   deploy/nats/cluster.sh start DIR [BASE_PORT]   # writes DIR/n{1,2,3}.conf, starts 3 servers
#   deploy/nats/cluster.sh stop DIR                # SIGTERM to every server started in DIR
#   deploy/nats/cluster.sh kill DIR N              # kill -9 server N (1..3), as a crash would
#   deploy/nats/cluster.sh restart DIR N           # start server N again from its config
#   deploy/nats/cluster.sh urls DIR                # the MQTT URLs, one a line
#   deploy/nats/cluster.sh leaders DIR             # JetStream meta leader, MQTT streams' leaders
#   deploy/nats/cluster.sh lead DIR STREAM N       # step STREAM's leader down until server N leads
#   deploy/nats/cluster.sh snapshot DIR NAME       # DIR/NAME/nN-{jsz,connz}.json from each server
#
# Server N (1..3) listens on 127.0.0.1 only: NATS clients on BASE_PORT+N-1 (default 14222),
# cluster routes on BASE_PORT+100+N-1, MQTT on BASE_PORT+1000+N-1 (mqtt://127.0.0.1:15222 ...),
# HTTP monitoring on BASE_PORT+2000+N-1. No TLS and no authentication: a test bed, not a
# deployment. nats-server 2.9 (Debian 12 `nats-server`) needs JetStream for MQTT; MQTT's
# streams (sessions, retained messages, QoS 1 messages) are replicated on all 3 servers
# (`stream_replicas 3`), so any one server may die; when it leads `$MQTT_msgs`, QoS 1 stalls
# everywhere for 5-13 s, and clients need persistent sessions (docs/deploy.md, "Other
# brokers"). `start` returns once every server accepts an MQTT connection.
#
# For experiments: NATS_MQTT_EXTRA (e.g. "consumer_replicas: 1") is added to each server's
# mqtt block; NATS_PROF=1 adds a Go profiling port (BASE_PORT+3000+N-1) whose goroutine dump
# `snapshot` saves. `leaders`, `lead` and `snapshot` need curl and jq.
set -euo pipefail

usage() { sed -n '2,25p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2
command -v nats-server >/dev/null || { echo "nats-server not found (Debian: apt-get install nats-server)" >&2; exit 1; }

base=${3:-14222}
conf() { echo "$dir/n$1.conf"; }
pidfile() { echo "$dir/n$1.pid"; }

write_conf() {
  local n=$1 routes="" m
  for m in 1 2 3; do
    [ "$m" = "$n" ] || routes="$routes    nats-route://127.0.0.1:$((base + 100 + m - 1))\n"
  done
  mkdir -p "$dir/n$n/js"
  printf '%b' "# Written by deploy/nats/cluster.sh
server_name: n$n
listen: 127.0.0.1:$((base + n - 1))
http: 127.0.0.1:$((base + 2000 + n - 1))
pid_file: \"$(pidfile "$n")\"
# Slim's largest message is a 1 MiB request (assignments carry it, up to 2 MiB); NATS's
# default max_payload is 1 MiB, so raise it like the 8 MiB of deploy/mosquitto.
max_payload: 8MB
${NATS_PROF:+# NATS_PROF: Go profiling (goroutine dumps for \`snapshot\`)
prof_port: $((base + 3000 + n - 1))
}jetstream {
  store_dir: \"$dir/n$n/js\"
  max_memory_store: 256MB
  max_file_store: 2GB
}
cluster {
  name: slim
  listen: 127.0.0.1:$((base + 100 + n - 1))
  routes: [
$routes  ]
}
mqtt {
  listen: 127.0.0.1:$((base + 1000 + n - 1))
  # Sessions, retained messages and QoS 1 messages survive the loss of any one server.
  stream_replicas: 3
  # QoS 1 messages in flight per subscription before NATS waits for PUBACKs (default 1024).
  max_ack_pending: 4096
  # Redeliver an unacknowledged QoS 1 message after this long (default 30 s).
  ack_wait: \"10s\"
${NATS_MQTT_EXTRA:+  # From NATS_MQTT_EXTRA:
  $NATS_MQTT_EXTRA
}}
" > "$(conf "$n")"
}

start_one() {
  local n=$1
  nats-server -c "$(conf "$n")" >>"$dir/n$n.log" 2>&1 &
  echo $! >"$(pidfile "$n")"  # the server writes the same; written here too for stop_all
  echo "nats n$n: pid $!, mqtt://127.0.0.1:$(mqtt_port "$n"), log $dir/n$n.log"
}

http_port() { sed -n 's/^http: 127.0.0.1:\([0-9]*\)$/\1/p' "$(conf "$1")"; }

# One line: "meta=nX $MQTT_sess=nY $MQTT_msgs=nZ ..." as the first server that answers sees it.
leaders() {
  command -v curl >/dev/null && command -v jq >/dev/null || { echo "leaders needs curl and jq" >&2; return 1; }
  local n
  for n in 1 2 3; do
    curl -sf -m 2 "http://127.0.0.1:$(http_port "$n")/jsz?accounts=true&streams=true" 2>/dev/null |
      jq -j '"meta=\(.meta_cluster.leader // "none")", (.account_details[]?.stream_detail[]? | " \(.name)=\(.cluster.leader // "none")"), "\n"' &&
      return 0
  done
  echo "no server answers on its monitoring port" >&2; return 1
}

client_port() { sed -n 's/^listen: 127.0.0.1:\([0-9]*\)$/\1/p' "$(conf "$1")"; }

# Asks STREAM's leader to step down (NATS protocol on server 1's client port) until server N
# leads it: for trying the worst case, a crash of the server that leads $MQTT_msgs.
lead() {
  local stream=$1 want=n$2 i now
  for i in $(seq 1 20); do
    now=$(leaders | tr ' ' '\n' | sed -n "s/^$stream=//p")
    [ "$now" = "$want" ] && { echo "$stream: leader $now"; return 0; }
    exec 5<>"/dev/tcp/127.0.0.1/$(client_port 1)"
    printf 'CONNECT {"verbose":false}\r\nPUB $JS.API.STREAM.LEADER.STEPDOWN.%s 0\r\n\r\nPING\r\n' "$stream" >&5
    timeout 2 grep -m1 -q PONG <&5 || true
    exec 5>&-
    sleep 1.5
  done
  echo "$stream: leader is $now, not $want, after 20 step-downs" >&2; return 1
}

mqtt_port() { sed -n 's/^  listen: 127.0.0.1:\([0-9]*\)$/\1/p' "$(conf "$1")" | tail -1; }

wait_mqtt() {
  local n=$1 i
  for i in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$(mqtt_port "$n")") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nats n$n does not listen for MQTT after 20 s; log:" >&2; tail -20 "$dir/n$n.log" >&2; return 1
}

# An MQTT CONNECT (clean session, client id "cluster-sh-N") to server N, answered by a CONNACK
# that accepts it. NATS creates the MQTT streams on the first connection and answers only once
# JetStream has a meta leader and the streams have leaders: until then daemons' connections
# time out (4 s each) and retained messages published meanwhile may be missed.
mqtt_handshake() {
  local n=$1 ack
  exec 3<>"/dev/tcp/127.0.0.1/$(mqtt_port "$n")" 2>/dev/null || return 1
  printf '\x10\x18\x00\x04MQTT\x04\x02\x00\x3c\x00\x0ccluster-sh-%s' "$n" >&3
  ack=$(timeout 6 head -c 4 <&3 | od -An -tx1 | tr -d ' \n') || true
  printf '\xe0\x00' >&3 2>/dev/null || true
  exec 3>&-
  [ "$ack" = "20020000" ]
}

wait_ready() {
  local n i
  for i in $(seq 1 15); do
    mqtt_handshake 1 && break
    sleep 1
  done
  for n in 1 2 3; do
    mqtt_handshake "$n" || { echo "nats n$n does not accept an MQTT connection; log:" >&2; tail -20 "$dir/n$n.log" >&2; return 1; }
  done
}

# SIGTERM to every server of DIR, then waits until they have exited (SIGKILL after 15 s), so
# their ports are free for the next cluster.
stop_all() {
  local n pids=() p i
  for n in 1 2 3; do
    [ -f "$(pidfile "$n")" ] || continue
    p=$(cat "$(pidfile "$n")")
    kill "$p" 2>/dev/null && pids+=("$p")
  done
  for p in "${pids[@]}"; do
    for i in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
}

case "$cmd" in
  start)
    mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
    for n in 1 2 3; do write_conf "$n"; done
    for n in 1 2 3; do start_one "$n"; done
    # A port still held by another server makes ours exit at once (see its log).
    sleep 0.5
    for n in 1 2 3; do
      if ! kill -0 "$(cat "$(pidfile "$n")")" 2>/dev/null; then
        echo "nats n$n exited; log:" >&2; tail -5 "$dir/n$n.log" >&2; stop_all; exit 1
      fi
    done
    for n in 1 2 3; do wait_mqtt "$n" || { stop_all; exit 1; }; done
    wait_ready || { stop_all; exit 1; }
    echo "nats cluster up in $dir" ;;
  stop) stop_all ;;
  kill)
    [ $# -ge 3 ] || usage; kill -9 "$(cat "$(pidfile "$3")")" ;;
  restart)
    [ $# -ge 3 ] || usage; start_one "$3"; wait_mqtt "$3" ;;
  leaders) leaders ;;
  snapshot)
    [ $# -ge 3 ] || usage; mkdir -p "$dir/$3"
    for n in 1 2 3; do
      curl -sf -m 3 "http://127.0.0.1:$(http_port "$n")/jsz?accounts=true&streams=true&consumers=true&config=true" >"$dir/$3/n$n-jsz.json" || true
      curl -sf -m 3 "http://127.0.0.1:$(http_port "$n")/connz?subs=detail" >"$dir/$3/n$n-connz.json" || true
      p=$(sed -n 's/^prof_port: \([0-9]*\)$/\1/p' "$(conf "$n")")
      [ -z "$p" ] || curl -sf -m 5 "http://127.0.0.1:$p/debug/pprof/goroutine?debug=2" >"$dir/$3/n$n-goroutines.txt" || true
    done ;;
  lead)
    [ $# -ge 4 ] || usage; lead "$3" "$4" ;;
  urls)
    for n in 1 2 3; do echo "mqtt://127.0.0.1:$(mqtt_port "$n")"; done ;;
  *) usage ;;
esac
