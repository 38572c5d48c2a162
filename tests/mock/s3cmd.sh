#!/usr/bin/env bash
# Drives s3commit-mock with s3cmd (SigV4, path-style): put, ls, get, del, bucket list.
# Fails (never skips) when s3cmd is missing. The mock it starts is stopped by pid.
set -euo pipefail

fail() { echo "s3cmd.sh: FAIL: $*" >&2; exit 1; }

command -v s3cmd >/dev/null 2>&1 ||
    fail "s3cmd is not on PATH; install it with 'scripts/deps.sh test' (Debian package s3cmd)"
. "$(dirname "$0")/mock_start.sh"
mock_start s3cmd AKIDS3CMD 's3cmd/secret'
HP="127.0.0.1:$MOCK_PORT"
cat >"$WORK/s3cfg" <<CFG
[default]
access_key = AKIDS3CMD
secret_key = s3cmd/secret
host_base = $HP
host_bucket = $HP
use_https = False
signature_v2 = False
bucket_location = us-east-1
CFG
s3c() { timeout 60 s3cmd -c "$WORK/s3cfg" "$@"; }

head -c 300000 /dev/urandom >"$WORK/obj.bin"
s3c put "$WORK/obj.bin" s3://commits/dir/obj.bin >/dev/null || fail "put"
s3c ls s3://commits/dir/ | grep -q ' 300000 .*s3://commits/dir/obj.bin$' || fail "ls"
s3c get --force s3://commits/dir/obj.bin "$WORK/back.bin" >/dev/null || fail "get"
cmp -s "$WORK/obj.bin" "$WORK/back.bin" || fail "downloaded bytes differ"
s3c del s3://commits/dir/obj.bin >/dev/null || fail "del"
[ -z "$(s3c ls s3://commits/dir/)" ] || fail "ls after del is not empty"
s3c ls | grep -q 's3://commits$' || fail "bucket list"
sed -i 's|^secret_key = .*|secret_key = wrong|' "$WORK/s3cfg"
if s3c ls s3://commits/ >/dev/null 2>"$WORK/err"; then
    fail "a wrong secret was accepted"
fi
grep -q 'SignatureDoesNotMatch\|403' "$WORK/err" || fail "wrong secret: $(cat "$WORK/err")"
echo "s3cmd.sh: OK ($(s3cmd --version 2>&1))"
