#!/usr/bin/env bash
# A private, user-local RabbitMQ node with the MQTT plugin, for trying Slim Scheduler on
# RabbitMQ (docs/deploy.md, "Other brokers"). It does not touch a system RabbitMQ: its own node
# name, ports, data folder, cookie and enabled-plugins file, all under DIR.
#
#   deploy/rabbitmq/node.sh start DIR [MQTT_PORT]   # default MQTT port 11883, AMQP 15672+... see below
#   deploy/rabbitmq/node.sh stop DIR
#
# Ports: MQTT MQTT_PORT (default 11883), AMQP MQTT_PORT+1, Erlang distribution MQTT_PORT+2,
# all on 127.0.0.1. Anonymous MQTT clients are mapped to guest/guest (loopback only).
# Needs Debian 12's rabbitmq-server (3.10) and its Erlang; the node runs as the calling user.
set -euo pipefail

usage() { sed -n '2,12p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1; mkdir -p "$2"; dir=$(cd "$2" && pwd)
mqtt=${3:-11883}
sbin=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin 2>/dev/null | tail -1)
[ -n "$sbin" ] || { echo "RabbitMQ not found (Debian: apt-get install rabbitmq-server)" >&2; exit 1; }

export HOME="$dir"    # the Erlang cookie lives in $HOME/.erlang.cookie
export RABBITMQ_NODENAME="slim-mqtt-$mqtt@localhost"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$((mqtt + 1))
export RABBITMQ_DIST_PORT=$((mqtt + 2))
export RABBITMQ_MNESIA_BASE="$dir/mnesia"
export RABBITMQ_LOG_BASE="$dir/log"
export RABBITMQ_PID_FILE="$dir/rabbit.pid"
export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
export RABBITMQ_CONFIG_FILE="$dir/rabbitmq"    # .conf is appended
export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"

case "$cmd" in
  start)
    mkdir -p "$dir/mnesia" "$dir/log"
    : > "$RABBITMQ_CONF_ENV_FILE"
    echo '[].' > "$RABBITMQ_ADVANCED_CONFIG_FILE"
    echo '[rabbitmq_mqtt].' > "$RABBITMQ_ENABLED_PLUGINS_FILE"
    cat > "$dir/rabbitmq.conf" <<CONF
# Written by deploy/rabbitmq/node.sh
listeners.tcp.default = 127.0.0.1:$RABBITMQ_NODE_PORT
loopback_users = none
mqtt.listeners.tcp.default = 127.0.0.1:$mqtt
mqtt.allow_anonymous = true
mqtt.default_user = guest
mqtt.default_pass = guest
mqtt.vhost = /
mqtt.exchange = amq.topic
# Sessions of clean_session = false clients, and their QoS 1 queues, survive restarts.
mqtt.subscription_ttl = 86400000
mqtt.prefetch = 1000
# Retained messages on disk (per node: RabbitMQ 3.10 does not replicate them in a cluster).
mqtt.retained_message_store = rabbit_mqtt_retained_msg_store_dets
CONF
    "$sbin/rabbitmq-server" -detached
    for _ in $(seq 1 120); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$mqtt") 2>/dev/null; then
        echo "rabbitmq node $RABBITMQ_NODENAME: mqtt://127.0.0.1:$mqtt, log $dir/log"; exit 0
      fi
      sleep 0.5
    done
    echo "the node does not listen for MQTT on $mqtt after 60 s; log:" >&2
    tail -30 "$dir"/log/*.log >&2 || true
    exit 1 ;;
  stop)
    "$sbin/rabbitmqctl" -n "$RABBITMQ_NODENAME" stop ;;
  *) usage ;;
esac
