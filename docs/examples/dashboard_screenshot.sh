#!/usr/bin/env bash
# Screenshot of the coordinator's live dashboard in headless Chromium, taken while `slim demo`
# drives a workload through three agents on this machine.
#
#     docs/examples/dashboard_screenshot.sh            # writes docs/dashboard.png
#     OUT=/tmp/d.png PORT=19464 docs/examples/dashboard_screenshot.sh
#
# Environment: SLIM (path to the slim binary; default: build it with cargo), PORT (9464),
# OUT (<repo>/docs/dashboard.png), DURATION (45s of load), SETTLE (25: seconds of load before
# the shot), CHROMIUM (chromium), SIZE (1400,1500: the window, in CSS pixels). Needs Debian's
# chromium (`apt-get install -y chromium`).
# Exits non-zero when the dashboard never answers or the screenshot is not written.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PORT="${PORT:-9464}"
OUT="${OUT:-$repo/docs/dashboard.png}"
DURATION="${DURATION:-45s}"
SETTLE="${SETTLE:-25}"
CHROMIUM="${CHROMIUM:-chromium}"
SIZE="${SIZE:-1400,1500}"
if [[ -z "${SLIM:-}" ]]; then
    cargo build --quiet --release -p slim --manifest-path "$repo/Cargo.toml"
    SLIM="$repo/target/release/slim"
fi
command -v "$CHROMIUM" >/dev/null || { echo "no $CHROMIUM: apt-get install -y chromium" >&2; exit 2; }

log="$(mktemp)"
profile="$(mktemp -d)"
cd "$repo"
"$SLIM" demo --keep-running --duration "$DURATION" --rates 60,4 --router random \
    --http-listen "127.0.0.1:$PORT" >"$log" 2>&1 &
demo=$!
# A background job of a script ignores SIGINT until `slim demo` installs its Ctrl-C handler
# (after the load), so stop it with SIGTERM and remove the agents' state folder it leaves.
cleanup() {
    kill -TERM "$demo" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$demo" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$demo" 2>/dev/null || true
    wait "$demo" 2>/dev/null || true
    rm -rf "$profile" "$log" "$log.chromium" "${TMPDIR:-/tmp}/slim-demo-$demo"
}
trap cleanup EXIT

url="http://127.0.0.1:$PORT/"
for _ in $(seq 1 120); do
    if grep -q "Dashboard: $url" "$log" && curl -fsS "${url}readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$demo" 2>/dev/null; then cat "$log" >&2; exit 1; fi
    sleep 0.5
done
curl -fsS "${url}readyz" >/dev/null || { echo "dashboard never became ready" >&2; cat "$log" >&2; exit 1; }
echo "dashboard at $url; letting the workload run ${SETTLE}s"
sleep "$SETTLE"

rm -f "$OUT"
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" \
    --hide-scrollbars --virtual-time-budget=5000 --window-size="$SIZE" \
    --screenshot="$OUT" "$url" >"$log.chromium" 2>&1 || { cat "$log.chromium" >&2; exit 1; }
test -s "$OUT" || { echo "no screenshot written" >&2; exit 1; }
echo "wrote $OUT"
