#!/usr/bin/env bash
# s3commit-load against Ceph RGW and against the mock, side by side, for 4 KiB and 1 MiB
# batches: prints the table docs/rgw.md shows. A benchmark, not a test: it never gates CI.
#
#   bench/rgw_load.sh [BUILD_DIR]
#
# LOAD_DURATION (5 s), LOAD_SIZE (1024: commit bytes), LOAD_PRODUCERS (4). Each RGW run gets
# a fresh RGW of its own (scripts/rgw.sh up/down in BUILD_DIR/rgw-load/rgw): its OSD is a
# 1 GiB memstore, which a 1 MiB-batch run fills in ~8 s, and a full OSD makes RGW stall
# every PUT (the stage then times out). The RGW runs are checked with s3commit verify.
# Reports go to BUILD_DIR/rgw-load/. The secret reaches the programs only through
# AWS_SECRET_ACCESS_KEY in their environment.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$(realpath "${1:-build}")
dur=${LOAD_DURATION:-5}
size=${LOAD_SIZE:-1024}
producers=${LOAD_PRODUCERS:-4}
out=$build/rgw-load
rgwdir=$out/rgw
mkdir -p "$out"
chmod 700 "$out"
trap '"$here/../scripts/rgw.sh" down "$rgwdir" >/dev/null 2>&1 || true' EXIT
stamp=$(date +%s)

# The ring holds 16 batches (at least 64 KiB): producers run as fast as the stage takes
# commits, so the ring is kept full and the ack latency is mostly the wait in it; a bigger
# ring would only add latency (and a long drain) for the same throughput.
config() { # name endpoint batch_bytes
    local ring=65536
    while [ "$ring" -lt $(($3 * 16)) ]; do ring=$((ring * 2)); done
    cat >"$out/$1.json" <<EOF
{"s3": {"endpoint": "$2", "bucket": "${S3C_RGW_BUCKET:-commits}", "prefix": "load-$stamp/$1/"},
 "persistence": {"batch_bytes_threshold": $3, "batch_size_threshold": 1000000},
 "pipeline": {"ring_bytes": $ring, "max_commit_bytes": 16384},
 "log": {"level": "warn"}}
EOF
}

printf '| store | batch | commits/s | MB/s | commits/batch | ack p50 ms | ack p99 ms |\n'
printf '|---|---|---|---|---|---|---|\n'
for batch in 4096 1048576; do
    for store in rgw mock; do
        name=$store-$batch
        config "$name" http://127.0.0.1:1 "$batch" # the mock's: --mock sets the endpoint
        if [ "$store" = mock ]; then
            env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "$build/bin/s3commit-load" \
                --mock --config "$out/$name.json" --duration "$dur" --size "$size" \
                --producers "$producers" --report "$out/$name-report.json" 2>"$out/$name.log"
        else
            "$here/../scripts/rgw.sh" up "$rgwdir" >/dev/null
            set -a
            . "$rgwdir/env"
            set +a
            config "$name" "$S3C_RGW_ENDPOINT" "$batch"
            "$build/bin/s3commit-load" --config "$out/$name.json" --duration "$dur" \
                --size "$size" --producers "$producers" --report "$out/$name-report.json" \
                2>"$out/$name.log"
            acked=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["commits_acked"])' \
                "$out/$name-report.json")
            "$build/bin/s3commit" verify --config "$out/$name.json" --expect-commits "$acked" \
                >"$out/$name-verify.json" 2>>"$out/$name.log" ||
                { echo "rgw_load.sh: verify failed for $name" >&2; exit 1; }
            "$here/../scripts/rgw.sh" down "$rgwdir" >/dev/null
        fi
        python3 - "$out/$name-report.json" "$store" "$batch" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
lat = r["ack_latency_us"]
batch = "4 KiB" if sys.argv[3] == "4096" else "1 MiB"
print(f"| {sys.argv[2]} | {batch} | {r['commits_per_s']:,.0f} | {r['mb_per_s']:.1f} | "
      f"{r['commits_per_batch']:.1f} | {lat['p50'] / 1000:.2f} | {lat['p99'] / 1000:.2f} |")
EOF
    done
done
echo "reports: $out" >&2
