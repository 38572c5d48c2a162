#!/usr/bin/env bash
# The one-command demo (`make demo`, which builds first): starts s3commit-mock on a free
# 127.0.0.1 port with its objects on disk under build/demo/, drives the stage with
# s3commit-load for about 10 seconds, reads every object back with `s3commit verify`, and
# prints a short table. It only talks to 127.0.0.1 and always stops the mock it started.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-build/bin}
OUT=${OUT:-build/demo}
DURATION=${DEMO_DURATION:-10}
SIZES=${DEMO_SIZES:-64-4096}
PRODUCERS=${DEMO_PRODUCERS:-4}

for b in s3commit s3commit-load s3commit-mock; do
    if [ ! -x "$BIN/$b" ]; then
        echo "demo: $BIN/$b is missing; run 'make demo' (it builds first) or 'make build'" >&2
        exit 1
    fi
done

rm -rf "$OUT/data"
mkdir -p "$OUT/data"

# The mock keeps objects on disk (written to a temp file, fsync'd, renamed), so what
# verify reads back below is what the load run stored.
"$BIN/s3commit-mock" --listen 127.0.0.1:0 --bucket commits --data-dir "$OUT/data" \
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

cat >"$OUT/config.json" <<EOF
{
  "s3": { "endpoint": "http://127.0.0.1:$port", "bucket": "commits", "prefix": "demo/" },
  "persistence": { "batch_timeout_ms": 5, "max_in_flight_requests": 8, "target_pool_size": 16 },
  "log": { "level": "warn" }
}
EOF

echo "demo: s3commit-mock on 127.0.0.1:$port (objects in $OUT/data)"
echo "demo: s3commit-load for ${DURATION}s: $PRODUCERS producers, commits of $SIZES bytes"
"$BIN/s3commit-load" --config "$OUT/config.json" --duration "$DURATION" --size "$SIZES" \
    --producers "$PRODUCERS" --report "$OUT/report.json"

# The report is cJSON's pretty print: one "key":<tab>value per line.
field() { # field NAME [BLOCK]: the first NAME, inside BLOCK's object if given
    awk -v name="\"$1\":" -v block="${2:-}" '
        block != "" && index($0, "\"" block "\":") { inblock = 1 }
        (block == "" || inblock) && index($0, name) {
            v = $0; sub(/^[^:]*:[ \t]*/, "", v); sub(/,$/, "", v); print v; exit }
    ' "$OUT/report.json"
}
acked=$(field commits_acked)

echo "demo: s3commit verify (reads every object back)"
set +e
"$BIN/s3commit" verify --config "$OUT/config.json" --expect-commits "$acked" >"$OUT/verify.json"
verify_rc=$?
set -e
verify_line=$(cat "$OUT/verify.json")
vfield() { printf '%s' "$verify_line" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }

ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }
echo
printf '  %-22s %s\n' "commits/s" "$(field commits_per_s)"
printf '  %-22s %s\n' "MB/s" "$(field mb_per_s)"
printf '  %-22s %s / %s\n' "ack latency p50 / p99" "$(ms "$(field p50 ack_latency_us)")" \
    "$(ms "$(field p99 ack_latency_us)")"
printf '  %-22s %s (%s commits each on average)\n' "batches (S3 PUTs)" "$(field batches)" \
    "$(field commits_per_batch)"
printf '  %-22s %s\n' "writes saved" "$(field writes_saved)"
printf '  %-22s %s commits acked in order, %s retries\n' "acknowledged" "$acked" "$(field retries)"
if [ "$verify_rc" -eq 0 ]; then
    printf '  %-22s ok: %s objects, seqs %s..%s, %s gaps, %s bad objects\n' "verify" \
        "$(vfield objects)" "$(vfield first_seq)" "$(vfield last_seq)" "$(vfield gaps)" \
        "$(vfield bad_objects)"
else
    printf '  %-22s FAILED: %s\n' "verify" "$verify_line"
fi
printf '  %-22s %s\n' "report" "$OUT/report.json"
printf '  %-22s %s\n' "plot" "$OUT/report.svg"
exit "$verify_rc"
