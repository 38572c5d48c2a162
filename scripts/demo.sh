#!/usr/bin/env bash
# The one-command demo (`make demo`, which builds first): starts s3commit-mock on a free
# 127.0.0.1 port (objects in memory, 10 ms per request like an in-region S3 PUT), drives
# the stage with s3commit-load for about 10 seconds in two phases, reads every object back
# with `s3commit verify`, and prints a short table. It only talks to 127.0.0.1 and always
# stops the mock it started.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-build/bin}
OUT=${OUT:-build/demo}
DURATION=${DEMO_DURATION:-10}
SIZES=${DEMO_SIZES:-64-4096}
PRODUCERS=${DEMO_PRODUCERS:-4}
RATE_CAP=${DEMO_RATE:-20000}
# Extra mock flags: DEMO_MOCK_ARGS="--data-dir build/demo/data" keeps objects on disk
# (each fsync'd), "--latency-ms 0" shows the stage with a store that answers at once.
MOCK_ARGS=${DEMO_MOCK_ARGS:---latency-ms 10}

for b in s3commit s3commit-load s3commit-mock; do
    if [ ! -x "$BIN/$b" ]; then
        echo "demo: $BIN/$b is missing; run 'make demo' (it builds first) or 'make build'" >&2
        exit 1
    fi
done

rm -rf "$OUT"
mkdir -p "$OUT"

# The mock keeps running across both load phases, so verify reads back what they stored.
# shellcheck disable=SC2086 # MOCK_ARGS is a list of flags
"$BIN/s3commit-mock" --listen 127.0.0.1:0 --bucket commits $MOCK_ARGS \
    >"$OUT/mock.out" 2>"$OUT/mock.log" &
mock_pid=$!
cleanup() {
    if kill -0 "$mock_pid" 2>/dev/null; then
        kill -TERM "$mock_pid" 2>/dev/null || true
        wait "$mock_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT INT TERM

port=""
for _ in $(seq 1 100); do
    line=$(head -n1 "$OUT/mock.out" 2>/dev/null || true)
    case "$line" in
        "listening on "*) port=${line##*:}; break ;;
    esac
    if ! kill -0 "$mock_pid" 2>/dev/null; then break; fi
    sleep 0.05
done
if [ -z "$port" ]; then
    echo "demo: s3commit-mock did not start; its log ($OUT/mock.log):" >&2
    cat "$OUT/mock.log" >&2 || true
    exit 1
fi

# Two phases of DURATION/2 seconds, each under its own prefix (keys are deterministic, so
# two runs must not share one). "max" submits as fast as the stage takes commits: that
# shows capacity, but its ack latency is mostly queueing in the commit ring. "steady"
# then runs at a third of that rate (at most DEMO_RATE): the latency a commit sees below
# saturation.
write_config() { # write_config PREFIX FILE
    cat >"$2" <<EOF
{
  "s3": { "endpoint": "http://127.0.0.1:$port", "bucket": "commits", "prefix": "$1" },
  "persistence": { "batch_timeout_ms": 5, "max_in_flight_requests": 8, "target_pool_size": 16 },
  "log": { "level": "warn" }
}
EOF
}
write_config demo/max/ "$OUT/config-max.json"
write_config demo/steady/ "$OUT/config-steady.json"
half=$(awk -v d="$DURATION" 'BEGIN { h = d / 2; if (h < 1) h = 1; print h }')

# The report is cJSON's pretty print: one "key":<tab>value per line.
field() { # field REPORT NAME [BLOCK]: the first NAME, inside BLOCK's object if given
    awk -v name="\"$2\":" -v block="${3:-}" '
        block != "" && index($0, "\"" block "\":") { inblock = 1 }
        (block == "" || inblock) && index($0, name) {
            v = $0; sub(/^[^:]*:[ \t]*/, "", v); sub(/,$/, "", v); print v; exit }
    ' "$1"
}

echo "demo: s3commit-mock on 127.0.0.1:$port ($MOCK_ARGS)"
echo "demo: s3commit-load ${half}s as fast as possible: $PRODUCERS producers, $SIZES byte commits"
"$BIN/s3commit-load" --config "$OUT/config-max.json" --duration "$half" --size "$SIZES" \
    --producers "$PRODUCERS" --report "$OUT/report-max.json"
rate=$(awk -v c="$(field "$OUT/report-max.json" commits_per_s)" \
    -v cap="$RATE_CAP" 'BEGIN { r = int(c / 3); if (r > cap) r = cap; print (r < 100 ? 100 : r) }')
echo "demo: s3commit-load ${half}s at a steady $rate commits/s"
"$BIN/s3commit-load" --config "$OUT/config-steady.json" --duration "$half" --size "$SIZES" \
    --producers "$PRODUCERS" --rate "$rate" --report "$OUT/report.json"

echo "demo: s3commit verify on both prefixes (reads every object back)"
verify_rc=0
verify() { # verify NAME CONFIG REPORT: leaves verify's JSON in $OUT/verify-NAME.json
    local n
    n=$(field "$3" commits_acked)
    if ! "$BIN/s3commit" verify --config "$2" --expect-commits "$n" >"$OUT/verify-$1.json"; then
        verify_rc=1
    fi
}
verify max "$OUT/config-max.json" "$OUT/report-max.json"
verify steady "$OUT/config-steady.json" "$OUT/report.json"
vfield() { sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" "$OUT/verify-$1.json"; }
vsum() {
    if grep -q '"ok":true' "$OUT/verify-$1.json" 2>/dev/null; then
        echo "ok: $(vfield "$1" objects) objects, seqs $(vfield "$1" first_seq)..$(vfield "$1" last_seq)"
    else
        echo "FAILED: see $OUT/verify-$1.json"
    fi
}

ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }
M=$OUT/report-max.json
S=$OUT/report.json
row() { printf '  %-22s %-32s %s\n' "$1" "$2" "$3"; }
lat() { echo "$(ms "$(field "$1" p50 ack_latency_us)") / $(ms "$(field "$1" p99 ack_latency_us)")"; }
per() { echo "$(field "$1" batches) ($(field "$1" commits_per_batch) commits each)"; }
echo
row "" "as fast as possible" "at $rate commits/s"
row "commits/s" "$(field "$M" commits_per_s)" "$(field "$S" commits_per_s)"
row "MB/s" "$(field "$M" mb_per_s)" "$(field "$S" mb_per_s)"
row "ack latency p50 / p99" "$(lat "$M")" "$(lat "$S")"
row "batches (S3 PUTs)" "$(per "$M")" "$(per "$S")"
row "writes saved" "$(field "$M" writes_saved)" "$(field "$S" writes_saved)"
row "acked in order" "$(field "$M" commits_acked) of $(field "$M" commits_submitted)" \
    "$(field "$S" commits_acked) of $(field "$S" commits_submitted)"
row "verify" "$(vsum max)" "$(vsum steady)"
echo
printf '  %-22s %s\n' "reports" "$M $S"
printf '  %-22s %s\n' "plots" "${M%.json}.svg ${S%.json}.svg"
exit "$verify_rc"
