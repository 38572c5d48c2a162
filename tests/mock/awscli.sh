#!/usr/bin/env bash
# Drives s3commit-mock with the real aws CLI (SigV4 on, default checksum settings): s3 mb,
# cp up and down, ls, rm, and s3api put-object/get-object/head-object/list-objects-v2, then
# a wrong secret refused. Fails (never skips) when aws is missing. The mock it starts is
# stopped by pid.
set -euo pipefail

fail() { echo "awscli.sh: FAIL: $*" >&2; exit 1; }

if ! command -v aws >/dev/null 2>&1; then
    fail "the aws CLI is not on PATH; install it with 'scripts/deps.sh test' (Debian package awscli)"
fi
. "$(dirname "$0")/mock_start.sh"
mock_start awscli AKIDAWSCLI 'cli/secret+key'
EP="http://127.0.0.1:$MOCK_PORT"
echo "awscli.sh: $(aws --version 2>&1) against $EP"

export AWS_ACCESS_KEY_ID=AKIDAWSCLI AWS_SECRET_ACCESS_KEY='cli/secret+key'
export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_PAGER=
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_REQUEST_CHECKSUM_CALCULATION || true
aws_() { timeout 60 aws --endpoint-url "$EP" "$@"; }

head -c 1048576 /dev/urandom >"$WORK/big.bin"
printf 'small object\n' >"$WORK/small.txt"

aws_ s3 mb s3://second >/dev/null || fail "s3 mb"
aws_ s3 ls | grep -q ' second$' || fail "s3 ls does not list the new bucket"
aws_ s3 cp "$WORK/big.bin" s3://commits/dir/big.bin >/dev/null || fail "s3 cp upload (1 MiB)"
aws_ s3 cp "$WORK/small.txt" "s3://commits/dir/a key+with\$odd chars.txt" >/dev/null ||
    fail "s3 cp upload (odd key)"
aws_ s3 ls s3://commits/dir/ >"$WORK/ls.txt" || fail "s3 ls"
grep -q ' 1048576 big.bin$' "$WORK/ls.txt" || fail "s3 ls: $(cat "$WORK/ls.txt")"
grep -q 'a key+with\$odd chars.txt$' "$WORK/ls.txt" || fail "s3 ls odd key: $(cat "$WORK/ls.txt")"
aws_ s3 cp s3://commits/dir/big.bin "$WORK/big.back" >/dev/null || fail "s3 cp download"
cmp -s "$WORK/big.bin" "$WORK/big.back" || fail "downloaded bytes differ"

aws_ s3api put-object --bucket commits --key api/obj --body "$WORK/small.txt" >"$WORK/put.json" ||
    fail "s3api put-object"
grep -q '"ETag"' "$WORK/put.json" || fail "put-object: no ETag: $(cat "$WORK/put.json")"
aws_ s3api head-object --bucket commits --key api/obj >"$WORK/head.json" || fail "head-object"
grep -q '"ContentLength": 13' "$WORK/head.json" || fail "head-object: $(cat "$WORK/head.json")"
aws_ s3api get-object --bucket commits --key api/obj --range bytes=0-4 "$WORK/part" >/dev/null ||
    fail "get-object (range)"
[ "$(cat "$WORK/part")" = "small" ] || fail "get-object range gave '$(cat "$WORK/part")'"
aws_ s3api list-objects-v2 --bucket commits --prefix dir/ >"$WORK/list.json" || fail "list-objects-v2"
[ "$(grep -c '"Key":' "$WORK/list.json")" = 2 ] || fail "list-objects-v2: $(cat "$WORK/list.json")"

aws_ s3 rm s3://commits/dir/big.bin >/dev/null || fail "s3 rm"
if aws_ s3api head-object --bucket commits --key dir/big.bin >/dev/null 2>"$WORK/err"; then
    fail "head-object after rm succeeded"
fi
grep -q '404' "$WORK/err" || fail "head-object after rm: $(cat "$WORK/err")"

aws_ s3 cp "$WORK/small.txt" s3://commits/many/1 >/dev/null || fail "s3 cp many/1"
aws_ s3 cp "$WORK/small.txt" s3://commits/many/2 >/dev/null || fail "s3 cp many/2"
aws_ s3 rm --recursive s3://commits/many/ >/dev/null || fail "s3 rm --recursive (DeleteObjects)"
[ -z "$(aws_ s3 ls s3://commits/many/)" ] || fail "s3 rm --recursive left keys"

if AWS_SECRET_ACCESS_KEY=wrong aws_ s3 ls s3://commits/ >/dev/null 2>"$WORK/err"; then
    fail "a wrong secret was accepted"
fi
grep -q 'SignatureDoesNotMatch' "$WORK/err" || fail "wrong secret: $(cat "$WORK/err")"

STATS=$(curl -s "$EP/_mock/stats" || true)
echo "awscli.sh: mock stats $STATS"
echo "awscli.sh: OK"
