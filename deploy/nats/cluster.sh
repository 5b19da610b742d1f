#!/usr/bin/env bash
# A local 3-server NATS cluster with JetStream and the MQTT gateway, for trying Slim Scheduler on
# a clustered broker (docs/deploy.md, "Other brokers").
#
#   deploy/nats/cluster.sh start DIR [BASE_PORT]   # writes DIR/n{1,2,3}.conf, starts 3 servers
#   deploy/nats/cluster.sh stop DIR                # SIGTERM to every server started in DIR
#   deploy/nats/cluster.sh kill DIR N              # kill -9 server N (1..3), as a crash would
#   deploy/nats/cluster.sh restart DIR N           # start server N again from its config
#   deploy/nats/cluster.sh urls DIR                # the MQTT URLs, one a line
#
# Server N (1..3) listens on 127.0.0.1 only: NATS clients on BASE_PORT+N-1 (default 14222),
# cluster routes on BASE_PORT+100+N-1, MQTT on BASE_PORT+1000+N-1 (mqtt://127.0.0.1:15222 ...),
# HTTP monitoring on BASE_PORT+2000+N-1. No TLS and no authentication: a test bed, not a
# deployment. nats-server 2.9 (Debian 12 `nats-server`) needs JetStream for MQTT; MQTT's
# streams (sessions, retained messages, QoS 1 messages) are replicated on all 3 servers
# (`stream_replicas 3`), so any one server may die.
set -euo pipefail

usage() { sed -n '2,17p' "$0" >&2; exit 2; }
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
jetstream {
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
}
" > "$(conf "$n")"
}

start_one() {
  local n=$1
  nats-server -c "$(conf "$n")" >>"$dir/n$n.log" 2>&1 &
  echo "nats n$n: pid $!, mqtt://127.0.0.1:$(mqtt_port "$n"), log $dir/n$n.log"
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

case "$cmd" in
  start)
    mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
    for n in 1 2 3; do write_conf "$n"; done
    for n in 1 2 3; do start_one "$n"; done
    for n in 1 2 3; do wait_mqtt "$n"; done
    echo "nats cluster up in $dir" ;;
  stop)
    for n in 1 2 3; do [ -f "$(pidfile "$n")" ] && kill "$(cat "$(pidfile "$n")")" 2>/dev/null || true; done ;;
  kill)
    [ $# -ge 3 ] || usage; kill -9 "$(cat "$(pidfile "$3")")" ;;
  restart)
    [ $# -ge 3 ] || usage; start_one "$3"; wait_mqtt "$3" ;;
  urls)
    for n in 1 2 3; do echo "mqtt://127.0.0.1:$(mqtt_port "$n")"; done ;;
  *) usage ;;
esac
