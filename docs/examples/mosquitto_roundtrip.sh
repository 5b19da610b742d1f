#!/usr/bin/env bash
# One inference request to a running Slim Scheduler, with nothing but the Mosquitto command-line
# clients and Python's `msgpack` package (docs/protocol.md, "Worked example").
#
# Start a system first, e.g. from the repository root:
#     slim demo --broker mqtt://127.0.0.1:1883 --keep-running
# then:
#     docs/examples/mosquitto_roundtrip.sh
#
# Environment: BROKER_HOST (127.0.0.1), BROKER_PORT (1883), TOPIC_PREFIX (slim/v1),
# INDEX (0: which held-out digit), MODELS_DIR (<repo>/models), PYTHON (python3).
# Needs: mosquitto_pub and mosquitto_sub (mosquitto-clients), python3 with msgpack.
# Exits 0 with a result, 1 when the answer is an error reply or no answer comes within 20 s.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BROKER_HOST="${BROKER_HOST:-127.0.0.1}"
BROKER_PORT="${BROKER_PORT:-1883}"
TOPIC_PREFIX="${TOPIC_PREFIX:-slim/v1}"
TOPIC_PREFIX="${TOPIC_PREFIX%/}"
INDEX="${INDEX:-0}"
MODELS_DIR="${MODELS_DIR:-$here/../../models}"
PYTHON="${PYTHON:-python3}"

for tool in mosquitto_pub mosquitto_sub; do
    command -v "$tool" >/dev/null || {
        echo "$tool not found: install mosquitto-clients" >&2
        exit 1
    }
done
"$PYTHON" -c 'import msgpack' 2>/dev/null || {
    echo "$PYTHON cannot import msgpack: pip install msgpack" >&2
    exit 1
}

work="$(mktemp -d)"
sub_pid=""
cleanup() {
    if [ -n "$sub_pid" ]; then kill "$sub_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

client="sh-$(hostname -s 2>/dev/null || echo host)-$$"
reply_topic="$TOPIC_PREFIX/clients/$client/replies"
request_topic="$TOPIC_PREFIX/requests/digits"

# 1. The request payload: a MessagePack map with named fields.
"$PYTHON" "$here/make_request.py" --models-dir "$MODELS_DIR" --index "$INDEX" \
    --reply-to "$reply_topic" --out "$work/payload.bin"

# 2. Listen on the reply topic BEFORE publishing: MQTT does not keep messages for a topic
#    nobody has subscribed to yet. -C 1: exit after one message; -W 20: give up after 20 s.
mosquitto_sub -h "$BROKER_HOST" -p "$BROKER_PORT" -q 1 -C 1 -W 20 \
    -t "$reply_topic" >"$work/reply.bin" &
sub_pid=$!
sleep 1

# 3. Publish the request at QoS 1.
echo "publishing to $request_topic on $BROKER_HOST:$BROKER_PORT, answer expected on $reply_topic"
mosquitto_pub -h "$BROKER_HOST" -p "$BROKER_PORT" -q 1 -t "$request_topic" -f "$work/payload.bin"

# 4. Wait for the answer and decode it.
if ! wait "$sub_pid"; then
    sub_pid=""
    echo "no answer on $reply_topic within 20 s: is a system running on $BROKER_HOST:$BROKER_PORT under prefix $TOPIC_PREFIX?" >&2
    exit 1
fi
sub_pid=""
"$PYTHON" "$here/read_reply.py" "$work/reply.bin"
