#!/usr/bin/env bash
# A throwaway single-node Ceph RADOS Gateway for tests: one monitor (msgr v1), one OSD on
# memstore and radosgw (beast), all on 127.0.0.1 under DIR, with a user and a bucket.
# It only ever signals the pids it recorded in DIR, and never reads /etc/ceph.
#
#   scripts/rgw.sh up [DIR]     start (a no-op when DIR is already up); writes DIR/env
#   scripts/rgw.sh down [DIR]   stop the daemons recorded in DIR, then remove DIR
#   scripts/rgw.sh status [DIR] exit 0 when DIR is up
#
# DIR defaults to ${TMPDIR:-/tmp}/s3c-rgw.$UID. DIR/env (mode 0600) is shell-sourceable:
# S3C_RGW_ENDPOINT, S3C_RGW_BUCKET, S3C_RGW_REGION, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, S3C_RGW_PIDS. The secret goes only there, never to stdout/stderr.
# Missing packages are installed through scripts/deps.sh rgw (apt-get as root; otherwise it
# names them and fails).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-}
dir=$(realpath -m -- "${2:-${TMPDIR:-/tmp}/s3c-rgw.$(id -u)}")
case "$dir" in *[[:space:]]*) echo "rgw.sh: DIR must not hold spaces: '$dir'" >&2; exit 2 ;; esac
BUCKET=${S3C_RGW_BUCKET_NAME:-commits}
REGION=us-east-1
UP_TIMEOUT_S=${S3C_RGW_UP_TIMEOUT_S:-60}
MARK=.s3c-rgw        # a DIR holding this file was made by this script
DAEMONS="rgw osd mon" # stop order: radosgw hangs for minutes when the monitor goes first

say() { echo "rgw.sh: $*"; }
die() { echo "rgw.sh: $*" >&2; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# A pid recorded in DIR counts only while it is still the daemon started with DIR's
# ceph.conf, so a reused pid is never signalled.
ours() {
    local pid=$1
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/ceph.conf"
}
pid_of() { cat "$dir/run/$1.pid" 2>/dev/null || true; }

all_up() {
    local d
    [ -f "$dir/$MARK" ] && [ -f "$dir/env" ] || return 1
    for d in $DAEMONS; do ours "$(pid_of "$d")" || return 1; done
}

# Alive and not a zombie (an exiting daemon loses its cmdline before it is gone, and the
# container's init may reap late).
alive() {
    local st
    st=$(sed -n 's/^[0-9]* ([^)]*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

wait_gone() { # pid ms
    local t=$(($(now_ms) + $2))
    while alive "$1" && [ "$(now_ms)" -lt "$t" ]; do sleep 0.02; done
    ! alive "$1"
}

# TERM in order (radosgw, OSD, monitor), each exits within ~0.1 s; what is still there
# after 1.5 s is KILLed (the cluster is throwaway, memstore).
stop_daemons() {
    local d pid
    for d in $DAEMONS; do
        pid=$(pid_of "$d")
        ours "$pid" || continue
        kill -TERM "$pid" 2>/dev/null || true
        wait_gone "$pid" 1500 && continue
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5000 || echo "rgw.sh: $d (pid $pid) did not exit" >&2
    done
    return 0
}

logs_tail() {
    local f
    for f in "$dir"/log/*.log "$dir"/log/*.out; do
        [ -s "$f" ] || continue
        echo "---- ${f#"$dir"/} (last 15 lines)" >&2
        tail -n 15 "$f" >&2
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Signed S3 request by curl, the credentials given on stdin (never on a command line).
s3_curl() {
    printf 'user = "%s:%s"\n' "$AK" "$SK" | curl -sS -K - --aws-sigv4 "aws:amz:$REGION:s3" \
        -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
        --max-time 5 "$@"
}

user_create() {
    timeout 10 radosgw-admin -c "$dir/ceph.conf" user create --uid s3c --display-name s3c \
        >"$dir/user.json" 2>>"$dir/log/radosgw-admin.out"
}

bucket_create() {
    [ "$(s3_curl -o /dev/null -w '%{http_code}' -X PUT "$1/$BUCKET" 2>/dev/null)" = 200 ]
}

print_up() {
    # shellcheck disable=SC1091
    (. "$dir/env" && echo "rgw.sh: up in $dir: endpoint $S3C_RGW_ENDPOINT bucket $S3C_RGW_BUCKET" \
        "access key $AWS_ACCESS_KEY_ID (secret in $dir/env) pids $S3C_RGW_PIDS")
}

start() {
    local t0 deadline monp rgwp fsid osduuid d
    t0=$(now_ms)
    deadline=$((t0 + UP_TIMEOUT_S * 1000))
    "$here/deps.sh" rgw
    for b in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool uuidgen curl python3; do
        command -v "$b" >/dev/null || die "$b is not on PATH (scripts/deps.sh rgw installs it)"
    done
    if [ -e "$dir" ] && [ ! -f "$dir/$MARK" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
        die "$dir exists, is not empty and was not made by rgw.sh; name another DIR"
    fi
    umask 077
    rm -rf "$dir"
    mkdir -p "$dir"/{mon/a,osd/0,run,log,rgw,crash}
    : >"$dir/$MARK"
    : >"$dir/keyring"
    monp=$(free_port)
    rgwp=$(free_port)
    fsid=$(uuidgen)
    cat >"$dir/ceph.conf" <<EOF
# Written by scripts/rgw.sh: a throwaway one-node cluster on 127.0.0.1, auth off.
[global]
fsid = $fsid
mon_host = v1:127.0.0.1:$monp
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr2 = false
ms_bind_ipv6 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
keyring = $dir/keyring
admin_socket =
run_dir = $dir/run
crash_dir = $dir/crash
log_file = $dir/log/\$name.log
mon_cluster_log_file = $dir/log/cluster.log
mon_data = $dir/mon/\$id
osd_data = $dir/osd/\$id
osd_objectstore = memstore
memstore_device_bytes = 1073741824
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
# Ceph's default proposal interval (1 s) makes start-up ~14 s; this makes it ~1 s.
paxos_propose_interval = 0.01
paxos_min_wait = 0.01
# The OSD's own crush update at boot can race its first monmap ('wrong fsid', then the OSD
# never comes up): rgw.sh places it in the crush map itself.
osd_crush_update_on_start = false
osd_class_update_on_start = false
mon_tick_interval = 1
osd_fast_shutdown_notify_mon = false
osd_mon_shutdown_timeout = 0.5
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 2
[client.rgw]
rgw_frontends = beast endpoint=127.0.0.1:$rgwp
rgw_data = $dir/rgw
rgw_thread_pool_size = 16
rgw_enable_lc_threads = false
rgw_enable_quota_threads = false
EOF
    local conf=(-c "$dir/ceph.conf")
    fail() {
        echo "rgw.sh: start failed: $*" >&2
        logs_tail
        stop_daemons
        if [ -n "${S3C_RGW_KEEP_FAILED:-}" ]; then rm -f "$dir/env"; else rm -rf "$dir"; fi
        exit 1
    }
    trap 'fail "interrupted"' INT TERM
    step() { echo "$(($(now_ms) - t0)) ms: $*" >>"$dir/log/up.timing"; }
    wait_for() { # what, command...: retry until it succeeds, the deadline passes or a
        local what=$1 d; shift # daemon started so far has died (a port taken meanwhile)
        until "$@" >/dev/null 2>&1; do
            [ "$(now_ms)" -lt "$deadline" ] || fail "$what (after ${UP_TIMEOUT_S}s)"
            for d in $DAEMONS; do
                [ -f "$dir/run/$d.pid" ] || continue
                alive "$(pid_of "$d")" || fail "$d exited during start"
            done
            sleep 0.1
        done
    }
    monmaptool --create --fsid "$fsid" --addv a "[v1:127.0.0.1:$monp]" "$dir/monmap" \
        >"$dir/log/mkfs.out" 2>&1 || fail "monmaptool"
    ceph-mon "${conf[@]}" --mkfs -i a --monmap "$dir/monmap" >>"$dir/log/mkfs.out" 2>&1 ||
        fail "ceph-mon --mkfs"
    # Not a process-group leader here, so setsid execs in place and $! is the daemon's pid.
    setsid ceph-mon "${conf[@]}" -f -i a </dev/null >"$dir/log/mon.out" 2>&1 &
    echo $! >"$dir/run/mon.pid"
    step mon started
    osduuid=$(uuidgen)
    wait_for "the monitor did not answer 'osd new'" \
        timeout 10 ceph "${conf[@]}" --connect-timeout 5 osd new "$osduuid"
    wait_for "the monitor did not answer 'osd crush add'" \
        timeout 10 ceph "${conf[@]}" --connect-timeout 5 osd crush add osd.0 1 root=default
    ceph-osd "${conf[@]}" -i 0 --mkfs --osd-uuid "$osduuid" >>"$dir/log/mkfs.out" 2>&1 ||
        fail "ceph-osd --mkfs"
    step osd created
    setsid ceph-osd "${conf[@]}" -f -i 0 </dev/null >"$dir/log/osd.out" 2>&1 &
    echo $! >"$dir/run/osd.pid"
    setsid radosgw "${conf[@]}" -f -n client.rgw </dev/null >"$dir/log/rgw.out" 2>&1 &
    echo $! >"$dir/run/rgw.pid"
    # Until setsid has exec'd, a pid's cmdline is still this script's.
    for d in $DAEMONS; do wait_for "$d exited at start" ours "$(pid_of "$d")"; done
    # The user's keys are generated by radosgw-admin (so the secret is on no command line)
    # and read from its JSON, which is removed at once.
    step daemons started
    # radosgw-admin racing radosgw's first start (zone and pools) often stalls for 5 s.
    wait_for "radosgw did not answer on 127.0.0.1:$rgwp" \
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$rgwp/"
    step radosgw answers
    wait_for "radosgw-admin user create" user_create
    step user created
    { read -r AK && read -r SK; } < <(python3 -c '
import json, sys
k = json.load(open(sys.argv[1]))["keys"][0]
print(k["access_key"]); print(k["secret_key"])' "$dir/user.json") || fail "reading the user's keys"
    rm -f "$dir/user.json"
    local ep="http://127.0.0.1:$rgwp"
    wait_for "radosgw did not create bucket $BUCKET" bucket_create "$ep"
    step bucket created
    {
        printf '# Written by scripts/rgw.sh up; holds a secret (mode 0600).\n'
        printf 'S3C_RGW_DIR=%q\n' "$dir"
        printf 'S3C_RGW_ENDPOINT=%q\n' "$ep"
        printf 'S3C_RGW_BUCKET=%q\n' "$BUCKET"
        printf 'S3C_RGW_REGION=%q\n' "$REGION"
        printf 'AWS_ACCESS_KEY_ID=%q\n' "$AK"
        printf 'AWS_SECRET_ACCESS_KEY=%q\n' "$SK"
        printf 'S3C_RGW_PIDS=%q\n' "mon=$(pid_of mon) osd=$(pid_of osd) rgw=$(pid_of rgw)"
        printf 'export S3C_RGW_DIR S3C_RGW_ENDPOINT S3C_RGW_BUCKET S3C_RGW_REGION'
        printf ' AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY S3C_RGW_PIDS\n'
    } >"$dir/env.tmp"
    chmod 600 "$dir/env.tmp"
    mv "$dir/env.tmp" "$dir/env"
    trap - INT TERM
    print_up
    say "started in $(($(now_ms) - t0)) ms"
}

case "$cmd" in
    up)
        if all_up; then print_up; exit 0; fi
        if [ -f "$dir/$MARK" ]; then # a partial or dead cluster of ours: clear it first
            stop_daemons
        fi
        AK='' SK=''
        start
        ;;
    down)
        [ -e "$dir" ] || { say "$dir: nothing to stop"; exit 0; }
        [ -f "$dir/$MARK" ] || die "$dir was not made by rgw.sh; not touching it"
        t0=$(now_ms)
        stop_daemons
        rm -rf "$dir"
        say "stopped in $(($(now_ms) - t0)) ms"
        ;;
    status)
        if all_up; then print_up; else say "$dir is not up"; exit 1; fi
        ;;
    *)
        echo "usage: scripts/rgw.sh up|down|status [DIR]" >&2
        exit 2
        ;;
esac
