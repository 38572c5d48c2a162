#!/usr/bin/env python3
"""One request script against s3commit-mock and Ceph RGW, compared case by case.

Each case sends the same signed requests (SigV4 done here with hashlib/hmac over raw HTTP/1.1
sockets, so every header and byte is under control) to both servers and records the status,
the S3 error code and a short detail. Cases whose outcomes differ are printed as a table and
checked against the expected list (tests/rgw/differences.txt): a difference not listed fails,
and so does a listed one that no longer happens or now looks different. It never prints a
secret: requests and answers are reduced to status, code and detail.

  conformance.py --mock BIN --rgw-env DIR/env [--expected FILE] [--write-expected]
"""
import argparse
import base64
import datetime
import hashlib
import hmac
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
import urllib.parse
import zlib

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


# ---------------------------------------------------------------- checksums
def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC32C = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def b64(raw):
    return base64.b64encode(raw).decode()


def crc32c_b64(data):
    return b64(crc32c(data).to_bytes(4, "big"))


def crc32_b64(data):
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def md5_b64(data):
    return b64(hashlib.md5(data).digest())


# ---------------------------------------------------------------- HTTP + SigV4
class Reply:
    def __init__(self, status, headers, body, interim=None):
        self.status, self.headers, self.body, self.interim = status, headers, body, interim

    def h(self, name):
        return self.headers.get(name.lower())

    @property
    def code(self):
        m = re.search(rb"<Code>([^<]*)</Code>", self.body or b"")
        return m.group(1).decode() if m else "-"


class Conn:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closed it."""

    def __init__(self, host, port):
        self.host, self.port, self.sock, self.buf = host, port, None, b""

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _ensure(self):
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=15)
            self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by server")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        status_line = self._line().decode("latin-1")
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = self._line()
            if not line:
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers

    def read_reply(self, method):
        interim = None
        status, headers = self.read_head()
        while 100 <= status < 200:
            interim = status
            status, headers = self.read_head()
        body = b""
        if method == "HEAD" or status in (204, 304):
            pass
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                n = int(self._line().split(b";")[0], 16)
                if n == 0:
                    while self._line():
                        pass
                    break
                body += self._take(n)
                self._take(2)
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:  # until close
            try:
                while True:
                    self._fill()
            except ConnectionError:
                pass
            body, self.buf = self.buf, b""
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Reply(status, headers, body, interim)

    def send(self, data):
        self._ensure()
        self.sock.sendall(data)


def q(s, safe="-_.~"):
    return urllib.parse.quote(s, safe=safe)


class Target:
    def __init__(self, name, endpoint, bucket, ak, sk, region="us-east-1"):
        u = urllib.parse.urlparse(endpoint)
        self.name, self.host, self.port = name, u.hostname, u.port
        self.bucket, self.ak, self.sk, self.region = bucket, ak, sk, region
        self.conn = Conn(self.host, self.port)

    def build(self, method, path, query=(), headers=None, body=b"", payload_hash="hash",
              ak=None, sk=None, sign=True, skew_s=0):
        """The request bytes. payload_hash: "hash" (the body's SHA-256), "omit" (no
        x-amz-content-sha256 header; the body's hash in the canonical request), or a literal
        value sent and signed as is (UNSIGNED-PAYLOAD, a wrong hash)."""
        now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=skew_s)
        amzdate, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        hdrs = {"host": f"{self.host}:{self.port}"}
        for k, v in (headers or {}).items():
            hdrs[k.lower()] = v
        real_hash = hashlib.sha256(body).hexdigest()
        if sign:
            hdrs["x-amz-date"] = amzdate
            if payload_hash == "hash":
                hdrs["x-amz-content-sha256"] = real_hash
            elif payload_hash != "omit":
                hdrs["x-amz-content-sha256"] = payload_hash
        curi = q(path, safe="/-_.~")
        cq = "&".join(f"{q(k)}={q(v)}" for k, v in sorted(query))
        if sign:
            signed = sorted(k for k in hdrs if k not in ("expect", "content-length", "connection"))
            chdrs = "".join(f"{k}:{' '.join(str(hdrs[k]).split())}\n" for k in signed)
            ph = hdrs.get("x-amz-content-sha256", real_hash)
            creq = "\n".join([method, curi, cq, chdrs, ";".join(signed), ph])
            scope = f"{day}/{self.region}/s3/aws4_request"
            sts = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope,
                             hashlib.sha256(creq.encode()).hexdigest()])
            key = ("AWS4" + (sk if sk is not None else self.sk)).encode()
            for part in (day, self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
            hdrs["authorization"] = (
                f"AWS4-HMAC-SHA256 Credential={ak if ak is not None else self.ak}/{scope}, "
                f"SignedHeaders={';'.join(signed)}, Signature={sig}")
        if body or method in ("PUT", "POST"):
            hdrs.setdefault("content-length", str(len(body)))
        target = curi + ("?" + cq if cq else "")
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        return head.encode("latin-1")

    def request(self, method, key=None, bucket=None, **kw):
        path = "/" + (bucket if bucket is not None else self.bucket)
        if key is not None:
            path += "/" + key
        body = kw.get("body", b"")
        data = self.build(method, path, **kw)
        for attempt in (0, 1):  # once more on a connection the server had closed
            try:
                self.conn.send(data + body)
                return self.conn.read_reply(method)
            except (ConnectionError, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")


# ---------------------------------------------------------------- cases
BODY = b"0123456789abcdefghij"  # 20 bytes
CASES = []  # (name, aws, function)


def case(name, aws):
    """aws: what AWS S3 documents (status and code), '?' where not documented."""
    def deco(fn):
        CASES.append((name, aws, fn))
        return fn
    return deco


def http_date(offset_s):
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + offset_s))


def sc(r, detail=""):
    s = f"{r.status} {r.code}"
    return s + (f" {detail}" if detail else "")


def etag_of(t, key):
    return t.request("HEAD", key).h("etag")


@case("put_plain", "200")
def _(t, p):
    r = t.request("PUT", p + "obj", body=BODY)
    etag_ok = r.h("etag") == '"' + hashlib.md5(BODY).hexdigest() + '"'
    return sc(r, "etag=md5" if etag_ok else f"etag={r.h('etag')}")


@case("get_plain", "200")
def _(t, p):
    r = t.request("GET", p + "obj")
    return sc(r, "body=same" if r.body == BODY else f"body={len(r.body)}B")


@case("put_if_none_match_star_new", "200")
def _(t, p):
    return sc(t.request("PUT", p + "inm", body=BODY, headers={"If-None-Match": "*"}))


@case("put_if_none_match_star_existing", "412 PreconditionFailed")
def _(t, p):
    return sc(t.request("PUT", p + "inm", body=BODY, headers={"If-None-Match": "*"}))


@case("put_if_match_quoted_match", "200")
def _(t, p):
    e = etag_of(t, p + "obj")
    return sc(t.request("PUT", p + "obj", body=BODY, headers={"If-Match": e}))


@case("put_if_match_unquoted_match", "?")
def _(t, p):
    e = etag_of(t, p + "obj").strip('"')
    return sc(t.request("PUT", p + "obj", body=BODY, headers={"If-Match": e}))


@case("put_if_match_quoted_mismatch", "412 PreconditionFailed")
def _(t, p):
    return sc(t.request("PUT", p + "obj", body=BODY,
                        headers={"If-Match": '"0123456789abcdef0123456789abcdef"'}))


@case("put_if_match_unquoted_mismatch", "412 PreconditionFailed")
def _(t, p):
    return sc(t.request("PUT", p + "obj", body=BODY,
                        headers={"If-Match": "0123456789abcdef0123456789abcdef"}))


@case("put_if_match_missing_key", "404 NoSuchKey")
def _(t, p):
    return sc(t.request("PUT", p + "nokey-im", body=BODY,
                        headers={"If-Match": '"0123456789abcdef0123456789abcdef"'}))


def ranged(t, p, spec):
    r = t.request("GET", p + "obj", headers={"Range": spec})
    d = f"len={len(r.body)}" if r.status < 300 else ""
    if r.h("content-range"):
        d += f" cr={r.h('content-range')}"
    return sc(r, d.strip())


for _name, _spec, _aws in [
        ("get_range_a_b", "bytes=2-5", "206"),
        ("get_range_a_open", "bytes=15-", "206"),
        ("get_range_suffix", "bytes=-3", "206"),
        ("get_range_end_past_size", "bytes=10-100", "206"),
        ("get_range_suffix_past_size", "bytes=-100", "206"),
        ("get_range_start_past_size", "bytes=100-200", "416 InvalidRange cr=bytes */20"),
        ("get_range_malformed", "bytes=abc", "200"),
        ("get_range_end_before_start", "bytes=5-2", "200"),
        ("get_range_multiple", "bytes=0-1,4-5", "200"),
]:
    case(_name, _aws)(lambda t, p, s=_spec: ranged(t, p, s))


@case("get_if_none_match_etag", "304")
def _(t, p):
    return sc(t.request("GET", p + "obj", headers={"If-None-Match": etag_of(t, p + "obj")}))


@case("get_if_match_mismatch", "412 PreconditionFailed")
def _(t, p):
    return sc(t.request("GET", p + "obj",
                        headers={"If-Match": '"0123456789abcdef0123456789abcdef"'}))


@case("head_existing", "200")
def _(t, p):
    r = t.request("HEAD", p + "obj")
    return sc(r, f"cl={r.h('content-length')}")


@case("head_missing", "404")
def _(t, p):
    return sc(t.request("HEAD", p + "nokey"))


@case("get_missing", "404 NoSuchKey")
def _(t, p):
    return sc(t.request("GET", p + "nokey"))


@case("get_no_bucket", "404 NoSuchBucket")
def _(t, p):
    return sc(t.request("GET", "k", bucket="s3c-no-such-bucket"))


@case("put_no_bucket", "404 NoSuchBucket")
def _(t, p):
    return sc(t.request("PUT", "k", bucket="s3c-no-such-bucket", body=BODY))


@case("delete_missing", "204")
def _(t, p):
    return sc(t.request("DELETE", p + "nokey"))


@case("delete_existing", "204")
def _(t, p):
    t.request("PUT", p + "del", body=BODY)
    r = t.request("DELETE", p + "del")
    return sc(r, f"then-head={t.request('HEAD', p + 'del').status}")


@case("get_if_none_match_other", "200")
def _(t, p):
    return sc(t.request("GET", p + "obj",
                        headers={"If-None-Match": '"0123456789abcdef0123456789abcdef"'}))


@case("get_if_modified_since_future", "304")
def _(t, p):
    return sc(t.request("GET", p + "obj", headers={"If-Modified-Since": http_date(+86400)}))


@case("get_if_unmodified_since_past", "412 PreconditionFailed")
def _(t, p):
    return sc(t.request("GET", p + "obj", headers={"If-Unmodified-Since": http_date(-86400)}))


@case("head_range", "206")
def _(t, p):
    r = t.request("HEAD", p + "obj", headers={"Range": "bytes=2-5"})
    return sc(r, f"cl={r.h('content-length')} cr={r.h('content-range')}")


@case("put_if_none_match_etag", "501 NotImplemented")
def _(t, p):
    return sc(t.request("PUT", p + "obj", body=BODY,
                        headers={"If-None-Match": '"0123456789abcdef0123456789abcdef"'}))


@case("put_if_match_and_if_none_match", "?")
def _(t, p):
    return sc(t.request("PUT", p + "obj", body=BODY,
                        headers={"If-Match": etag_of(t, p + "obj"), "If-None-Match": "*"}))


@case("put_key_too_long", "400 KeyTooLongError")
def _(t, p):
    return sc(t.request("PUT", p + "k" * 1025, body=BODY))


@case("put_key_odd_chars", "200")
def _(t, p):
    key = p + "odd/a b+c%d~e\u00e9=&?.txt"
    r = t.request("PUT", key, body=BODY)
    g = t.request("GET", key)
    _, keys, _, _, _, _ = listing(t, [("prefix", p + "odd/")])
    listed = [k.decode() for k in keys] == [key.replace("&", "&amp;")]
    return sc(r, f"get={g.status} same={g.body == BODY} listed={listed}")


@case("auth_clock_skew_1h", "403 RequestTimeTooSkewed")
def _(t, p):
    return sc(t.request("GET", p + "obj", skew_s=-3600))


@case("head_bucket", "200")
def _(t, p):
    return sc(t.request("HEAD"))


@case("head_bucket_missing", "404")
def _(t, p):
    return sc(t.request("HEAD", bucket="s3c-no-such-bucket"))


@case("create_bucket_existing", "200 (us-east-1; 409 BucketAlreadyOwnedByYou elsewhere)")
def _(t, p):
    return sc(t.request("PUT"))


@case("create_bucket_invalid_name", "400 InvalidBucketName")
def _(t, p):
    return sc(t.request("PUT", bucket="Bad_Bucket"))


def delete_objects(t, p, with_md5):
    t.request("PUT", p + "dm/1", body=b"x")
    xml = (f"<Delete><Quiet>false</Quiet><Object><Key>{p}dm/1</Key></Object>"
           f"<Object><Key>{p}dm/none</Key></Object></Delete>").encode()
    h = {"Content-MD5": md5_b64(xml)} if with_md5 else {}
    r = t.request("POST", query=[("delete", "")], body=xml, headers=h)
    n = len(re.findall(rb"<Deleted>", r.body))
    return sc(r, f"deleted={n}" if r.status == 200 else "")


@case("delete_objects_md5", "200")
def _(t, p):
    return delete_objects(t, p, True)


@case("delete_objects_no_md5", "400 InvalidRequest (Content-MD5 or x-amz-checksum-* required)")
def _(t, p):
    return delete_objects(t, p, False)


# ---- listing
def listing(t, query, bucket=None):
    r = t.request("GET", bucket=bucket, query=[("list-type", "2")] + list(query))
    keys = re.findall(rb"<Key>([^<]*)</Key>", r.body)
    cps = re.findall(rb"<CommonPrefixes><Prefix>([^<]*)</Prefix>", r.body)
    trunc = re.search(rb"<IsTruncated>([^<]*)</IsTruncated>", r.body)
    kc = re.search(rb"<KeyCount>([^<]*)</KeyCount>", r.body)
    tok = re.search(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>", r.body)
    return r, keys, cps, (trunc.group(1).decode() if trunc else "-"), \
        (kc.group(1).decode() if kc else "-"), (tok.group(1).decode() if tok else None)


def list_case(t, p, extra):
    r, keys, cps, trunc, kc, tok = listing(t, [("prefix", p + "ls/")] + extra)
    if r.status != 200:
        return sc(r)
    names = ",".join(k.decode()[len(p + "ls/"):] for k in keys)
    cpn = ",".join(c.decode()[len(p + "ls/"):] for c in cps)
    return sc(r, f"keys=[{names}] cps=[{cpn}] truncated={trunc} keycount={kc}"
                 f"{' token' if tok else ''}")


@case("list_setup", "200")
def _(t, p):
    st = {t.request("PUT", p + "ls/" + k, body=b"x").status for k in ("a", "b/1", "b/2", "c")}
    return " ".join(str(s) for s in sorted(st))


@case("list_prefix", "200")
def _(t, p):
    return list_case(t, p, [])


@case("list_delimiter", "200")
def _(t, p):
    return list_case(t, p, [("delimiter", "/")])


@case("list_start_after", "200")
def _(t, p):
    return list_case(t, p, [("start-after", p + "ls/b/1")])


@case("list_max_keys_2", "200")
def _(t, p):
    return list_case(t, p, [("max-keys", "2")])


@case("list_max_keys_0", "200")
def _(t, p):
    return list_case(t, p, [("max-keys", "0")])


@case("list_1005_keys", "200")
def _(t, p):
    for i in range(1005):
        r = t.request("PUT", p + f"many/{i:04d}", body=b"k")
        if r.status != 200:
            return sc(r, f"put many/{i:04d}")
    pages, total, seen, tok = [], 0, [], None
    while len(pages) < 5:
        q_ = [("prefix", p + "many/")] + ([("continuation-token", tok)] if tok else [])
        r, keys, _, trunc, kc, tok = listing(t, q_)
        if r.status != 200:
            return sc(r, f"page {len(pages) + 1}")
        pages.append(f"{len(keys)}/{trunc}")
        seen += keys
        if trunc != "true" or not tok:
            break
    in_order = seen == sorted(seen) and len(set(seen)) == len(seen)
    return f"200 - pages={'+'.join(pages)} total={len(seen)} ordered={in_order}"


@case("list_bad_continuation_token", "400 InvalidArgument")
def _(t, p):
    return sc(listing(t, [("prefix", p + "ls/"), ("continuation-token", "not-a-token")])[0])


@case("list_no_bucket", "404 NoSuchBucket")
def _(t, p):
    return sc(listing(t, [], bucket="s3c-no-such-bucket")[0])


# ---- authentication
@case("auth_wrong_secret", "403 SignatureDoesNotMatch")
def _(t, p):
    return sc(t.request("GET", p + "obj", sk="wrong-secret-key"))


@case("auth_wrong_access_key", "403 InvalidAccessKeyId")
def _(t, p):
    return sc(t.request("GET", p + "obj", ak="AKIANOSUCHKEY0000000"))


@case("auth_anonymous_get", "403 AccessDenied")
def _(t, p):
    return sc(t.request("GET", p + "obj", sign=False))


@case("auth_no_content_sha256_header", "400 InvalidRequest")
def _(t, p):
    return sc(t.request("GET", p + "obj", payload_hash="omit"))


# ---- checksums
@case("put_crc32c_right", "200 (checksum echoed)")
def _(t, p):
    r = t.request("PUT", p + "ck", body=BODY, headers={"x-amz-checksum-crc32c": crc32c_b64(BODY)})
    return sc(r, "echo=" + ("yes" if r.h("x-amz-checksum-crc32c") == crc32c_b64(BODY) else "no"))


@case("put_crc32c_wrong", "400 BadDigest")
def _(t, p):
    r = t.request("PUT", p + "ck-crc32c-wrong", body=BODY,
                  headers={"x-amz-checksum-crc32c": crc32c_b64(b"other")})
    return sc(r, f"stored={t.request('HEAD', p + 'ck-crc32c-wrong').status == 200}")


@case("put_crc32_right", "200")
def _(t, p):
    return sc(t.request("PUT", p + "ck", body=BODY,
                        headers={"x-amz-checksum-crc32": crc32_b64(BODY)}))


@case("put_crc32_wrong", "400 BadDigest")
def _(t, p):
    return sc(t.request("PUT", p + "ck", body=BODY,
                        headers={"x-amz-checksum-crc32": crc32_b64(b"other")}))


@case("put_md5_right", "200")
def _(t, p):
    return sc(t.request("PUT", p + "ck", body=BODY, headers={"Content-MD5": md5_b64(BODY)}))


@case("put_md5_wrong", "400 BadDigest")
def _(t, p):
    return sc(t.request("PUT", p + "ck", body=BODY, headers={"Content-MD5": md5_b64(b"x")}))


@case("put_md5_malformed", "400 InvalidDigest")
def _(t, p):
    return sc(t.request("PUT", p + "ck", body=BODY, headers={"Content-MD5": "not-base64!"}))


@case("put_sha256_signed_right", "200")
def _(t, p):
    return sc(t.request("PUT", p + "ck", body=BODY))


@case("put_sha256_signed_wrong", "400 XAmzContentSHA256Mismatch")
def _(t, p):
    return sc(t.request("PUT", p + "ck", body=BODY,
                        payload_hash=hashlib.sha256(b"other").hexdigest()))


@case("put_unsigned_payload", "200")
def _(t, p):
    return sc(t.request("PUT", p + "ck", body=BODY, payload_hash="UNSIGNED-PAYLOAD"))


# ---- Expect: 100-continue, then one more request on the same connection
def expect_case(t, p, body, sk=None):
    """PUT with Expect: 100-continue. The body goes only after a 100 (or 2 s of silence, as
    clients do); after a final answer that came first the body is never sent, and the case
    records whether the server closed the connection. Then one HEAD on the same socket."""
    t.conn.close()
    c = t.conn
    head = t.build("PUT", f"/{t.bucket}/{p}expect", body=body, sk=sk,
                   headers={"Expect": "100-continue", "Content-Length": str(len(body))})
    c.send(head)
    c.sock.settimeout(2.0)
    interim = "none"
    try:
        while b"\r\n\r\n" not in c.buf:
            c._fill()
        if c.buf.startswith(b"HTTP/1.1 100"):
            interim = "100"
    except socket.timeout:
        interim = "timeout"
    except ConnectionError:
        interim = "closed"
    c.sock.settimeout(10)
    try:
        if interim in ("100", "timeout") and body:
            c.sock.sendall(body)
        final = c.read_reply("PUT")
        fin = f"final={final.status} {final.code}"
    except (ConnectionError, OSError) as e:
        fin = f"final=error({type(e).__name__})"
    if interim == "none" and body:
        # Refused before the body: did the server close, or does it wait for the body?
        after = "closed"
        if c.sock is not None:
            c.sock.settimeout(0.5)
            try:
                c._fill()
                after = "open"
            except socket.timeout:
                after = "open"
            except (ConnectionError, OSError):
                pass
        c.close()
        return f"interim={interim} {fin} after={after}"
    nxt = "next=closed"
    if c.sock is not None:
        try:
            c.sock.sendall(t.build("HEAD", f"/{t.bucket}/{p}obj"))
            nxt = f"next={c.read_reply('HEAD').status}"
        except (ConnectionError, OSError):
            pass
    c.close()
    return f"interim={interim} {fin} {nxt}"


@case("expect_100_empty_body", "200")
def _(t, p):
    return expect_case(t, p, b"")


@case("expect_100_with_body", "200")
def _(t, p):
    return expect_case(t, p, BODY * 50)


@case("expect_100_wrong_secret", "403 SignatureDoesNotMatch")
def _(t, p):
    return expect_case(t, p, BODY * 50, sk="wrong-secret-key")


# ---------------------------------------------------------------- driver
def start_mock(binary, bucket, ak, sk):
    env = dict(os.environ, S3C_MOCK_SECRET_KEY=sk)
    proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--bucket", bucket,
                             "--access-key", ak, "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        sys.exit(f"conformance: the mock did not start: {line!r}")
    return proc, "http://" + line.split()[-1]


def read_env(path):
    """The KEY=VALUE lines of rgw.sh's env file (values quoted by printf %q)."""
    out = {}
    for line in open(path):
        m = re.match(r"^([A-Z0-9_]+)=(.*)$", line.strip())
        if m:
            words = shlex.split(m.group(2))
            out[m.group(1)] = words[0] if words else ""
    return out


def read_expected(path):
    exp = {}
    for n, line in enumerate(open(path), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [x.strip() for x in line.split("|")]
        if len(parts) != 5 or parts[3] not in ("rgw", "mock-deliberate", "mock-bug"):
            sys.exit(f"conformance: {path}:{n}: want 'case | mock | rgw | "
                     f"rgw|mock-deliberate|mock-bug | note'")
        exp[parts[0]] = parts
    return exp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mock", required=True, help="s3commit-mock binary")
    ap.add_argument("--rgw-env", required=True, help="the env file rgw.sh up wrote")
    ap.add_argument("--expected", default=os.path.join(os.path.dirname(__file__),
                                                       "differences.txt"))
    ap.add_argument("--write-expected", action="store_true",
                    help="print the differences in the expected file's format and exit 0")
    a = ap.parse_args()

    env = read_env(a.rgw_env)
    rgw = Target("rgw", env["S3C_RGW_ENDPOINT"], env["S3C_RGW_BUCKET"],
                 env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                 env.get("S3C_RGW_REGION", "us-east-1"))
    mock_ak, mock_sk = "AKIDCONFORMANCE00000", secrets.token_urlsafe(30)
    proc, mock_ep = start_mock(a.mock, "commits", mock_ak, mock_sk)
    try:
        mock = Target("mock", mock_ep, "commits", mock_ak, mock_sk)
        prefix = f"conformance-{int(time.time())}-{secrets.token_hex(3)}/"
        rows = []
        t0 = time.monotonic()
        for name, aws, fn in CASES:
            got = []
            for t in (mock, rgw):
                try:
                    got.append(fn(t, prefix))
                except Exception as e:  # a broken case is an outcome too
                    got.append(f"error {type(e).__name__}: {e}")
                    t.conn.close()
            rows.append((name, aws, got[0], got[1]))
        elapsed = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    w = max(len(r[0]) for r in rows)
    print(f"conformance: {len(rows)} cases against the mock ({mock_ep}) and RGW "
          f"({env['S3C_RGW_ENDPOINT']}) in {elapsed:.1f} s")
    print(f"{'case':<{w}}  {'AWS S3':<28}  {'mock':<40}  rgw")
    for name, aws, m, r in rows:
        mark = "  " if m == r else "!="
        print(f"{name:<{w}}  {aws:<28}  {m:<40}{mark}{r}")
    diffs = {name: (m, r) for name, _, m, r in rows if m != r}

    if a.write_expected:
        for name, (m, r) in diffs.items():
            print(f"{name} | {m} | {r} | rgw | TODO")
        return 0

    exp = read_expected(a.expected)
    bad = []
    for name, (m, r) in diffs.items():
        if name not in exp:
            bad.append(f"new difference: {name}: mock '{m}' rgw '{r}' (not in {a.expected})")
        elif (exp[name][1], exp[name][2]) != (m, r):
            bad.append(f"changed difference: {name}: now mock '{m}' rgw '{r}', listed as "
                       f"mock '{exp[name][1]}' rgw '{exp[name][2]}'")
    for name in exp:
        if name not in diffs:
            known = any(name == c[0] for c in CASES)
            bad.append(f"listed difference no longer happens: {name}" if known else
                       f"listed difference names no case: {name}")
    print(f"\nconformance: {len(diffs)} differences "
          f"({sum(1 for e in exp.values() if e[3] == 'rgw')} listed as RGW deviations, "
          f"{sum(1 for e in exp.values() if e[3] == 'mock-deliberate')} deliberate in the "
          f"mock, {sum(1 for e in exp.values() if e[3] == 'mock-bug')} mock bugs to fix)")
    if diffs:
        dw = max(len(n) for n in diffs)
        print(f"{'difference':<{dw}}  {'kind':<15}  mock / rgw")
        for name, (m, r) in diffs.items():
            kind = exp[name][3] if name in exp else "NOT LISTED"
            print(f"{name:<{dw}}  {kind:<15}  {m} / {r}")
    for b in bad:
        print("conformance: FAIL: " + b)
    if bad:
        return 1
    print("conformance: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
