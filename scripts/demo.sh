#!/usr/bin/env bash
# The one-command demo (`make demo`, which builds first): starts s3commit-mock on a free
# 127.0.0.1 port (objects in memory, 10 ms per request like an in-region S3 PUT), drives
# the stage with s3commit-load for about 10 seconds in two phases (the first once more
# against a second mock with --store none, for comparison), reads every object back
# with `s3commit verify`, then restarts the stage on the second phase's prefix twice with
# `s3commit run` (killed with -9 under load, then again to a clean end) and verifies that
# one chain holds every seq printed durable. It prints a short table, only talks to
# 127.0.0.1 and always stops the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-build/bin}
OUT=${OUT:-build/demo}
DURATION=${DEMO_DURATION:-10}
SIZES=${DEMO_SIZES:-64-4096}
PRODUCERS=${DEMO_PRODUCERS:-4}
RATE_CAP=${DEMO_RATE:-20000}
# Extra mock flags: DEMO_MOCK_ARGS="--data-dir build/demo/data" keeps objects on disk
# (each fsync'd), "--latency-ms 0" shows the stage with a store that answers at once. The
# default's --etag kms answers ETags as S3 does under SSE-KMS, without an MD5 of every body
# (MD5 alone is ~565 MB/s a core here: docs/mock.md).
MOCK_ARGS=${DEMO_MOCK_ARGS:---latency-ms 10 --etag kms}

for b in s3commit s3commit-load s3commit-mock; do
    if [ ! -x "$BIN/$b" ]; then
        echo "demo: $BIN/$b is missing; run 'make demo' (it builds first) or 'make build'" >&2
        exit 1
    fi
done

rm -rf "$OUT"
mkdir -p "$OUT"

# The mock keeps running across both load phases, so verify reads back what they stored.
# A second one with --store none (same flags) takes the same flat-out load once more, so the
# table shows how close the in-memory mock comes to a store that keeps nothing.
mock_pid=""
none_pid=""
run_pid=""
cleanup() {
    if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
        kill -KILL "$run_pid" 2>/dev/null || true
    fi
    for p in $mock_pid $none_pid; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
}
trap cleanup EXIT INT TERM

start_mock() { # start_mock NAME FLAGS...: starts it, sets started_pid and started_port
    local name=$1 line
    shift
    "$BIN/s3commit-mock" --listen 127.0.0.1:0 --bucket commits "$@" \
        >"$OUT/$name.out" 2>"$OUT/$name.log" &
    started_pid=$!
    started_port=""
    for _ in $(seq 1 100); do
        line=$(head -n1 "$OUT/$name.out" 2>/dev/null || true)
        case "$line" in
            "listening on "*) started_port=${line##*:}; return 0 ;;
        esac
        if ! kill -0 "$started_pid" 2>/dev/null; then break; fi
        sleep 0.05
    done
    echo "demo: s3commit-mock did not start; its log ($OUT/$name.log):" >&2
    cat "$OUT/$name.log" >&2 || true
    exit 1
}
# shellcheck disable=SC2086 # MOCK_ARGS is a list of flags
start_mock mock $MOCK_ARGS
mock_pid=$started_pid
port=$started_port
none_args=() # MOCK_ARGS less --data-dir and --store, which --store none replaces
# shellcheck disable=SC2086
set -- $MOCK_ARGS
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir|--store) shift 2 || shift ;;
        *) none_args+=("$1"); shift ;;
    esac
done
start_mock mock-none "${none_args[@]}" --store none
none_pid=$started_pid
none_port=$started_port

# Two phases of DURATION/2 seconds, each under its own prefix (a second run on a prefix
# continues its log: the restarts below do that). "max" submits as fast as the stage takes commits: that
# shows capacity, but its ack latency is mostly queueing in the commit ring. "steady"
# then runs at a third of that rate (at most DEMO_RATE): the latency a commit sees below
# saturation.
write_config() { # write_config PREFIX FILE [PORT]
    cat >"$2" <<EOF
{
  "s3": { "endpoint": "http://127.0.0.1:${3:-$port}", "bucket": "commits", "prefix": "$1" },
  "persistence": { "batch_timeout_ms": 5, "max_in_flight_requests": 8, "target_pool_size": 16 },
  "log": { "level": "warn" }
}
EOF
}
write_config demo/max/ "$OUT/config-max.json"
write_config demo/steady/ "$OUT/config-steady.json"
write_config demo/max/ "$OUT/config-none.json" "$none_port"
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
echo "demo: s3commit-load ${half}s as fast as possible again, against s3commit-mock --store none"
"$BIN/s3commit-load" --config "$OUT/config-none.json" --duration "$half" --size "$SIZES" \
    --producers "$PRODUCERS" --report "$OUT/report-none.json"
rate=$(awk -v c="$(field "$OUT/report-max.json" commits_per_s)" \
    -v cap="$RATE_CAP" 'BEGIN { r = int(c / 3); if (r > cap) r = cap; print (r < 100 ? 100 : r) }')
echo "demo: s3commit-load ${half}s at a steady $rate commits/s"
"$BIN/s3commit-load" --config "$OUT/config-steady.json" --duration "$half" --size "$SIZES" \
    --producers "$PRODUCERS" --rate "$rate" --report "$OUT/report.json"

echo "demo: s3commit verify on both prefixes (reads every object back)"
verify_rc=0
vfield() { sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" "$OUT/verify-$1.json"; }
verify() { # verify NAME CONFIG REPORT: leaves verify's JSON in $OUT/verify-NAME.json
    local n
    n=$(field "$3" commits_acked)
    if ! "$BIN/s3commit" verify --config "$2" --expect-commits "$n" >"$OUT/verify-$1.json"; then
        verify_rc=1
    fi
}
verify max "$OUT/config-max.json" "$OUT/report-max.json"
verify steady "$OUT/config-steady.json" "$OUT/report.json"

# Restarts: the stage again on demo/steady/, twice, with `s3commit run` and framed commits
# on stdin (scripts/demo-frames.py). First after the clean end of phase 2: it takes the
# next epoch and is killed with -9 while commits stream in at the steady rate; then after
# the kill: the next epoch again, resuming where the log ends, and it runs to the end of
# its input. Each prints where it resumed, then its durable watermarks.
KILL_AFTER=${DEMO_KILL_AFTER:-1.5}
first_line() { # first_line FILE FIELD: a number from the run's first stdout line
    head -n1 "$1" | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
}
last_durable() { # last_durable FILE: the last {"durable_seq":N} printed (0 if none)
    local n
    n=$(sed -n 's/^{"durable_seq":\([0-9]*\)}$/\1/p' "$1" | tail -n1)
    echo "${n:-0}"
}
echo "demo: restart on demo/steady/ (s3commit run, $rate commits/s on stdin), kill -9 after ${KILL_AFTER}s"
python3 scripts/demo-frames.py 2 0 "$rate" 2>/dev/null |
    "$BIN/s3commit" run --config "$OUT/config-steady.json" >"$OUT/run-killed.out" \
        2>"$OUT/run-killed.log" &
run_pid=$!
for _ in $(seq 1 200); do # its first line: the stage is open and reading
    [ -s "$OUT/run-killed.out" ] && break
    sleep 0.05
done
sleep "$KILL_AFTER"
kill -KILL "$run_pid" 2>/dev/null || true
wait "$run_pid" 2>/dev/null || true # the generator stops on the broken pipe
run_pid=""
after=$(awk -v r="$rate" -v s="$KILL_AFTER" 'BEGIN { print int(r * s) }')
echo "demo: restart after the kill -9 (s3commit run, $after commits on stdin, to the end)"
python3 scripts/demo-frames.py 3 "$after" "$rate" |
    "$BIN/s3commit" run --config "$OUT/config-steady.json" >"$OUT/run-after-kill.out" \
        2>"$OUT/run-after-kill.log" && a_rc=0 || a_rc=$?
[ "$a_rc" -eq 0 ] || verify_rc=1
k_epoch=$(first_line "$OUT/run-killed.out" epoch)
if [ -z "$k_epoch" ] || [ -z "$(first_line "$OUT/run-after-kill.out" epoch)" ]; then
    echo "demo: a restarted s3commit run did not open the stage; see $OUT/run-*.log" >&2
    cat "$OUT"/run-*.log >&2 || true
    exit 1
fi
k_first=$(first_line "$OUT/run-killed.out" first_seq)
k_durable=$(last_durable "$OUT/run-killed.out")
a_epoch=$(first_line "$OUT/run-after-kill.out" epoch)
a_recovered=$(first_line "$OUT/run-after-kill.out" recovered_seq)
a_first=$(first_line "$OUT/run-after-kill.out" first_seq)
a_durable=$(last_durable "$OUT/run-after-kill.out")
# On the chain: phase 2's acked commits, the killed run's commits up to where the next
# run resumed (at least every one it printed durable), and all of the last run's.
expect=$(($(field "$OUT/report.json" commits_acked) + a_recovered - k_first + 1 + after))
if ! "$BIN/s3commit" verify --config "$OUT/config-steady.json" --expect-commits "$expect" \
    >"$OUT/verify-restarts.json"; then
    verify_rc=1
fi
# Nothing lost: every seq the killed run printed durable lies below where the next run
# resumed, the last run made all its commits durable, and verify found one sound chain
# from seq 1 to the end holding all of them.
lost="nothing lost: every seq printed durable is on it"
if [ "$k_durable" -gt "$a_recovered" ] || [ "$a_durable" -ne $((a_first + after - 1)) ] ||
    [ "$(vfield restarts last_seq)" != "$a_durable" ]; then
    lost="LOST: see $OUT/run-*.out"
    verify_rc=1
fi
vsum() {
    if grep -q '"ok":true' "$OUT/verify-$1.json" 2>/dev/null; then
        echo "ok: $(vfield "$1" objects) objects, seqs $(vfield "$1" first_seq)..$(vfield "$1" last_seq)"
    else
        echo "FAILED: see $OUT/verify-$1.json"
    fi
}

vchain() { # the restarted prefix: its epochs and control records, and nothing lost
    local epochs
    epochs=$(grep -o '"epoch":[0-9]*' "$OUT/verify-restarts.json" | cut -d: -f2 | paste -sd, -)
    if grep -q '"ok":true' "$OUT/verify-restarts.json" 2>/dev/null; then
        echo "ok: seqs 1..$(vfield restarts last_seq), epochs $epochs ($(vfield restarts control_records) control records); $lost"
    else
        echo "FAILED: see $OUT/verify-restarts.json; $lost"
    fi
}
ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }
M=$OUT/report-max.json
S=$OUT/report.json
row() { printf '  %-22s %-32s %s\n' "$1" "$2" "$3"; }
wide() { printf '  %-22s %s\n' "$1" "$2"; }
lat() { echo "$(ms "$(field "$1" p50 ack_latency_us)") / $(ms "$(field "$1" p99 ack_latency_us)")"; }
per() { echo "$(field "$1" batches) ($(field "$1" commits_per_batch) commits each)"; }
echo
row "" "as fast as possible" "at $rate commits/s"
row "commits/s" "$(field "$M" commits_per_s)" "$(field "$S" commits_per_s)"
row "MB/s" "$(field "$M" mb_per_s)" "$(field "$S" mb_per_s)"
N=$OUT/report-none.json
row "vs --store none" "$(awk -v a="$(field "$M" commits_per_s)" -v b="$(field "$N" commits_per_s)" \
    'BEGIN { printf "%.2f (%s commits/s there)", (b > 0 ? a / b : 0), b }')" ""
row "ack latency p50 / p99" "$(lat "$M")" "$(lat "$S")"
row "batches (S3 PUTs)" "$(per "$M")" "$(per "$S")"
row "writes saved" "$(field "$M" writes_saved)" "$(field "$S" writes_saved)"
row "acked in order" "$(field "$M" commits_acked) of $(field "$M" commits_submitted)" \
    "$(field "$S" commits_acked) of $(field "$S" commits_submitted)"
row "verify" "$(vsum max)" "$(vsum steady)"
echo
wide "then on demo/steady/" "s3commit run, commits framed on stdin at $rate/s"
wide "epoch $k_epoch, kill -9" "from seq $k_first; killed after ${KILL_AFTER}s, durable_seq $k_durable printed"
wide "epoch $a_epoch, restarted" "found the end at seq $a_recovered; $after commits, durable_seq $a_durable, exit $a_rc"
wide "one chain" "$(vchain)"
echo
wide "reports" "$M $S"
wide "plots" "${M%.json}.svg ${S%.json}.svg"
exit "$verify_rc"
