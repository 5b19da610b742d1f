#!/usr/bin/env bash
# Soak: the coordinator and one agent as separate processes on a broker, open-loop load at a fixed
# rate for a long time, and their resident memory (VmRSS) sampled all along. Answers "is memory
# flat under sustained load?" (issue #22: within 10 % over 10 minutes at 50 % of the maximum).
#
# Usage: bash bench/soak.sh --rate R [--duration 600] [--model digits] [--broker mqtt://127.0.0.1:1883]
#                           [--bin target/release] [--sample 10] [--out FILE]
#   --rate      requests/s to offer (say 50 % of the knee `slim bench --knee` measured)
#   --duration  seconds of load (default 600)
#   --bin       folder with slim, slim-coordinator and slim-agent (default target/release, else
#               target/debug); build them with `cargo build --release -p slim -p slim-coordinator -p slim-agent`
#   --sample    seconds between RSS samples (default 10)
#   --out       also write the report (markdown) there
# Growth is measured from the first sample after one minute of load (warm-up: plans, pools and
# queues reach their working size) to the last sample; the growth over the second half is printed
# too (a leak keeps growing there, a cache that fills to its bound does not). Exit status 0 when
# both stayed within 10 %, 1 when one grew more, 2 on a setup error. Nothing here is a timed
# test: it is a benchmark.
set -euo pipefail

rate="" duration=600 model=digits broker=mqtt://127.0.0.1:1883 bin="" sample=10 out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) rate="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        --broker) broker="$2"; shift 2 ;;
        --bin) bin="$2"; shift 2 ;;
        --sample) sample="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "soak: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$rate" ] || { echo "soak: --rate is required (see --help)" >&2; exit 2; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -z "$bin" ]; then
    if [ -x target/release/slim-agent ]; then bin=target/release; else bin=target/debug; fi
fi
for b in slim slim-coordinator slim-agent; do
    [ -x "$bin/$b" ] || { echo "soak: $bin/$b not found; build it first (see --help)" >&2; exit 2; }
done

prefix="soak/$$/v1"
export SLIM_BROKER="$broker" SLIM_TOPIC_PREFIX="$prefix"
work="$(mktemp -d)"
cleanup() { kill "${coordinator:-}" "${agent:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$bin/slim-coordinator" --http-listen "" > "$work/coordinator.log" 2>&1 &
coordinator=$!
printf 'models = ["%s"]\nstate_dir = "%s"\n' "$model" "$work/agent-state" > "$work/agent.toml"
"$bin/slim-agent" run --config "$work/agent.toml" --id soak-agent --models-dir "$root/models" \
    > "$work/agent.log" 2>&1 &
agent=$!

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
alive() { kill -0 "$1" 2>/dev/null; }

# Ready when a short probe gets every answer.
ready=""
for _ in $(seq 1 30); do
    alive "$coordinator" && alive "$agent" || break
    if "$bin/slim" bench --model "$model" --rate 20 --duration 1s --drain 5s 2>/dev/null \
        | grep -q "errored 0  lost 0"; then ready=yes; break; fi
    sleep 1
done
if [ -z "$ready" ]; then
    echo "soak: the system did not answer a probe within 30 tries" >&2
    tail -n 20 "$work/coordinator.log" "$work/agent.log" >&2
    exit 2
fi

echo "soak: $rate req/s of $model for ${duration}s on $broker; coordinator pid $coordinator, agent pid $agent ($bin)"
"$bin/slim" bench --model "$model" --rate "$rate" --duration "${duration}s" --drain 20s > "$work/bench.txt" 2>&1 &
load=$!
started=$(date +%s)
{
    echo "| s | coordinator RSS MiB | agent RSS MiB |"
    echo "|---:|---:|---:|"
} > "$work/samples.md"
base_c="" base_a=""
while alive "$load"; do
    t=$(( $(date +%s) - started ))
    c=$(rss_kib "$coordinator") a=$(rss_kib "$agent")
    printf '| %d | %.1f | %.1f |\n' "$t" "$(echo "$c / 1024" | bc -l)" "$(echo "$a / 1024" | bc -l)" >> "$work/samples.md"
    if [ -z "$base_c" ] && [ "$t" -ge 60 ]; then base_c=$c base_a=$a base_t=$t; fi
    if [ -z "${mid_c:-}" ] && [ "$t" -ge $((duration / 2)) ]; then mid_c=$c mid_a=$a mid_t=$t; fi
    last_c=$c last_a=$a
    sleep "$sample"
done
wait "$load" || true

growth() { echo "scale=1; ($2 - $1) * 100 / $1" | bc -l; }
verdict=0
{
    echo "Soak: \`bash bench/soak.sh --rate $rate --duration $duration --model $model --broker $broker --bin $bin\`,"
    echo "$(date -u +%Y-%m-%d) on $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1) ($(nproc) cores)."
    echo
    sed -n '/requests/,/latency/p' "$work/bench.txt" | sed 's/^/    /'
    echo
    if [ -n "$base_c" ]; then
        gc=$(growth "$base_c" "$last_c") ga=$(growth "$base_a" "$last_a")
        echo "RSS from ${base_t}s (after warm-up) to the end: coordinator $((base_c / 1024)) -> $((last_c / 1024)) MiB (${gc} %), agent $((base_a / 1024)) -> $((last_a / 1024)) MiB (${ga} %)."
        for g in "$gc" "$ga"; do
            if [ "$(echo "$g > 10" | bc -l)" = 1 ]; then verdict=1; fi
        done
        [ "$verdict" = 0 ] && echo "Both within 10 %." || echo "**Grew more than 10 %.**"
        if [ -n "${mid_c:-}" ]; then
            # A leak keeps growing; a cache or pool that fills to its bound stops.
            echo "Second half, from ${mid_t}s: coordinator $(growth "$mid_c" "$last_c") %, agent $(growth "$mid_a" "$last_a") %."
        fi
    else
        echo "The load ran under a minute: no growth figure (use --duration 120 or more)."
        verdict=1
    fi
    echo
    cat "$work/samples.md"
} > "$work/report.md"
cat "$work/report.md"
[ -z "$out" ] || cp "$work/report.md" "$out"
exit "$verdict"
