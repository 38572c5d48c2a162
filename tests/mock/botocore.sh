#!/usr/bin/env bash
# Drives s3commit-mock with botocore (through boto3; SigV4 on, path-style): put_object with
# empty and non-empty bodies on one kept-alive connection (botocore sends Expect:
# 100-continue), get_object, head_object, list_objects_v2, delete_object, a conditional put
# refused 412, a 304 on If-None-Match, then a wrong secret refused. Every call has a 5 s
# read timeout and must finish within 4 s, so a hang fails quickly. Fails (never skips)
# when boto3 is missing. The mock it starts is stopped by pid.
set -euo pipefail

fail() { echo "botocore.sh: FAIL: $*" >&2; exit 1; }

# The first interpreter that imports boto3: $S3C_PYTHON, python3 on PATH, Debian's.
PY=
for cand in ${S3C_PYTHON:-} python3 /usr/bin/python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import boto3' 2>/dev/null; then
        PY=$cand
        break
    fi
done
[ -n "$PY" ] ||
    fail "no python3 with boto3; install it with 'scripts/deps.sh test' (Debian package python3-boto3)"
. "$(dirname "$0")/mock_start.sh"
mock_start botocore AKIDBOTOCORE 'boto/secret+key'

export S3C_EP="http://127.0.0.1:$MOCK_PORT"
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY \
    AWS_REQUEST_CHECKSUM_CALCULATION || true
cd "$WORK" # nothing here shadows boto3 or botocore
timeout 120 "$PY" - <<'EOF' || fail "see above"
import hashlib, json, os, sys, time, urllib.request

import boto3, botocore
from botocore.config import Config
from botocore.exceptions import ClientError

EP = os.environ["S3C_EP"]
print(f"botocore.sh: {sys.executable} boto3 {boto3.__version__} botocore {botocore.__version__} "
      f"against {EP}", flush=True)


def client(secret):
    return boto3.client(
        "s3", endpoint_url=EP, region_name="us-east-1", aws_access_key_id="AKIDBOTOCORE",
        aws_secret_access_key=secret,
        config=Config(connect_timeout=5, read_timeout=5, retries={"max_attempts": 1},
                      s3={"addressing_style": "path"}))


def fail(msg):
    print(f"botocore.sh: FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def call(what, fn, *, status=None, code=None):
    """Runs fn: it must answer within 4 s (a hang hits the 5 s read timeout) and, when
    status is given, fail with that status (and code)."""
    t0 = time.monotonic()
    try:
        out = fn()
        err = None
    except ClientError as e:
        out, err = None, e
    except Exception as e:  # a read timeout (a hang) lands here
        fail(f"{what}: {type(e).__name__}: {e} after {time.monotonic() - t0:.1f} s")
    took = time.monotonic() - t0
    if took > 4:
        fail(f"{what}: took {took:.1f} s (a 100-continue or keep-alive hang?)")
    if status is None:
        if err is not None:
            fail(f"{what}: {err}")
        return out
    if err is None:
        fail(f"{what}: succeeded, wanted {status} {code or ''}")
    got = err.response["ResponseMetadata"]["HTTPStatusCode"]
    got_code = err.response.get("Error", {}).get("Code")
    if got != status or (code and got_code != code):
        fail(f"{what}: got {got} {got_code}, wanted {status} {code or ''}")
    return err


s3 = client("boto/secret+key")
put_model = s3.meta.service_model.operation_model("PutObject").input_shape.members

# Headers this botocore cannot send as parameters, added just before signing.
extra = {}


def add_extra(request, **_):
    for k, v in extra.items():
        request.headers[k] = v


s3.meta.events.register("before-sign.s3.PutObject", add_extra)


def put_if_none_match(key, body):
    if "IfNoneMatch" in put_model:
        return s3.put_object(Bucket="commits", Key=key, Body=body, IfNoneMatch="*")
    extra["If-None-Match"] = "*"
    try:
        return s3.put_object(Bucket="commits", Key=key, Body=body)
    finally:
        extra.clear()


def put_if_match(key, body, etag):
    if "IfMatch" in put_model:
        return s3.put_object(Bucket="commits", Key=key, Body=body, IfMatch=etag)
    extra["If-Match"] = etag
    try:
        return s3.put_object(Bucket="commits", Key=key, Body=body)
    finally:
        extra.clear()


hello = b"hello from botocore\n"
md5 = lambda b: '"' + hashlib.md5(b).hexdigest() + '"'

# Empty and non-empty bodies, alternating on the same kept-alive connection: each
# put_object sends Expect: 100-continue, and before the fix the put after an empty one hung.
for i in range(3):
    r = call("put_object empty", lambda: s3.put_object(Bucket="commits", Key=f"empty{i}", Body=b""))
    if r["ETag"] != md5(b""):
        fail(f"put_object empty: ETag {r['ETag']}")
    r = call("put_object after an empty one",
             lambda: s3.put_object(Bucket="commits", Key=f"dir/obj{i}", Body=hello))
    if r["ETag"] != md5(hello):
        fail(f"put_object: ETag {r['ETag']}")
    call("head_object after a put", lambda: s3.head_object(Bucket="commits", Key=f"empty{i}"))

r = call("get_object", lambda: s3.get_object(Bucket="commits", Key="dir/obj0"))
if r["Body"].read() != hello:
    fail("get_object: wrong bytes")
r = call("get_object empty", lambda: s3.get_object(Bucket="commits", Key="empty0"))
if r["Body"].read() != b"":
    fail("get_object empty: bytes")
r = call("head_object", lambda: s3.head_object(Bucket="commits", Key="dir/obj0"))
if r["ContentLength"] != len(hello) or r["ETag"] != md5(hello):
    fail(f"head_object: {r['ContentLength']} {r['ETag']}")
r = call("list_objects_v2", lambda: s3.list_objects_v2(Bucket="commits", Prefix="dir/"))
keys = [o["Key"] for o in r.get("Contents", [])]
if keys != ["dir/obj0", "dir/obj1", "dir/obj2"]:
    fail(f"list_objects_v2: {keys}")

# Conditional writes: refused ones (with and without a body) and then more requests on the
# same client, answered at once.
call("put IfNoneMatch=* on an existing key", lambda: put_if_none_match("dir/obj0", b"x"),
     status=412, code="PreconditionFailed")
call("put IfNoneMatch=* empty on an existing key", lambda: put_if_none_match("empty0", b""),
     status=412, code="PreconditionFailed")
call("put after a refused empty put", lambda: s3.put_object(Bucket="commits", Key="after",
                                                            Body=hello))
call("put IfNoneMatch=* on a new key", lambda: put_if_none_match("new", hello))
call("put IfMatch stale", lambda: put_if_match("new", b"y", md5(b"other")), status=412,
     code="PreconditionFailed")
call("put IfMatch current", lambda: put_if_match("new", b"v2", md5(hello)))
call("put IfMatch on a missing key", lambda: put_if_match("missing", b"v", md5(b"v2")),
     status=404, code="NoSuchKey")
call("get IfNoneMatch current etag",
     lambda: s3.get_object(Bucket="commits", Key="new", IfNoneMatch=md5(b"v2")), status=304)
r = call("get IfNoneMatch old etag",
         lambda: s3.get_object(Bucket="commits", Key="new", IfNoneMatch=md5(hello)))
if r["Body"].read() != b"v2":
    fail("get IfNoneMatch old etag: wrong bytes")

call("delete_object", lambda: s3.delete_object(Bucket="commits", Key="dir/obj0"))
call("head_object after delete", lambda: s3.head_object(Bucket="commits", Key="dir/obj0"),
     status=404)

bad = client("wrong")
call("wrong secret", lambda: bad.list_objects_v2(Bucket="commits"), status=403,
     code="SignatureDoesNotMatch")

stats = json.load(urllib.request.urlopen(EP + "/_mock/stats", timeout=5))
print(f"botocore.sh: mock stats connections {stats['connections']} requests "
      f"{stats['requests']}", flush=True)
# The refused conditional PUTs close their connection; the rest share kept-alive ones.
if stats["connections"]["total"] > 8:
    fail(f"connections were not kept alive: {stats['connections']}")
EOF
echo "botocore.sh: OK"
