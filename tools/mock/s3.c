/* The S3 side of the mock: routing (path-style and virtual-host), SigV4 verification,
 * body digests (Content-MD5, x-amz-checksum-*, x-amz-content-sha256), conditional writes,
 * the operations and S3's XML answers and errors. Never trusts a length or a header from
 * the client without a bound, and never puts a secret into an answer. */
#include "mock.h"

#include "common/crc32c.h"
#include "sigv4/sigv4.h"

#include <ctype.h>
#include <errno.h>
#include <expat.h>
#include <http_parser.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define S3_NS "http://s3.amazonaws.com/doc/2006-03-01/"
#define XML_DECL "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
#define CONTROL_BODY_MAX (64 * 1024)

/* ---- small helpers ---- */

static const char *mock_hdr(const struct req *r, const char *name)
{
    for (int i = 0; i < r->nh; i++)
        if (strcasecmp(r->hname[i], name) == 0)
            return r->hvalue[i];
    return NULL;
}

static int mock_hexv(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* Percent-decodes n bytes of s into out (NUL-terminated); '+' becomes ' ' when plus.
 * Returns the decoded length. out must hold n + 1 bytes. */
static size_t mock_pct_decode(const char *s, size_t n, char *out, bool plus)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && mock_hexv((unsigned char)s[i + 1]) >= 0 &&
            mock_hexv((unsigned char)s[i + 2]) >= 0) {
            out[o++] = (char)(mock_hexv((unsigned char)s[i + 1]) << 4 |
                              mock_hexv((unsigned char)s[i + 2]));
            i += 2;
        } else if (plus && s[i] == '+') {
            out[o++] = ' ';
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return o;
}

static void mock_sb_urlenc(struct sbuf *b, const char *s, size_t n)
{
    static const char hx[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
            sb_put(b, &s[i], 1);
        } else {
            char e[3] = {'%', hx[c >> 4], hx[c & 15]};
            sb_put(b, e, 3);
        }
    }
}

/* Writes a value into list XML, URL-encoded when encoding-type=url. */
static void mock_sb_field(struct sbuf *b, const char *s, size_t n, bool url)
{
    if (url) {
        struct sbuf t = {0};
        mock_sb_urlenc(&t, s, n);
        sb_xml(b, t.p ? t.p : "", t.len);
        sb_free(&t);
    } else {
        sb_xml(b, s, n);
    }
}

static void mock_http_date(int64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static void mock_iso_date(int64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03dZ", (int)(ms % 1000));
}

static int64_t mock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Decodes base64 of exactly want bytes. */
static bool mock_b64_exact(const char *s, unsigned char *out, size_t want)
{
    size_t enc = 4 * ((want + 2) / 3);
    unsigned char tmp[64];
    if (!s || strlen(s) != enc || enc > 88)
        return false;
    int n = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)enc);
    if (n < (int)want)
        return false;
    memcpy(out, tmp, want);
    return true;
}

static void mock_b64(const unsigned char *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static uint32_t crc32_table[256];

static void mock_crc32_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
        crc32_table[i] = c;
    }
}

/* CRC-32 (IEEE, as zlib and x-amz-checksum-crc32); only used when a client sends one. */
static uint32_t mock_crc32_ieee(uint32_t crc, const unsigned char *p, size_t n)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    const uint32_t *t = crc32_table;
    pthread_once(&once, mock_crc32_init);
    crc = ~crc;
    while (n--)
        crc = t[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- errors and answers ---- */

void resp_reset(struct resp *o)
{
    sb_free(&o->head);
    sb_free(&o->body);
    blob_unref(o->blob);
    memset(o, 0, sizeof(*o));
}

/* condition: S3's PreconditionFailed names the header that failed in <Condition> instead
 * of the bucket and key. */
static void mock_s3_error_body(struct resp *out, int status, const char *code, const char *message,
                               const struct req *r, const char *condition)
{
    sb_free(&out->body);
    blob_unref(out->blob);
    out->blob = NULL;
    out->status = status;
    sb_puts(&out->body, XML_DECL "<Error><Code>");
    sb_xml(&out->body, code, strlen(code));
    sb_puts(&out->body, "</Code><Message>");
    sb_xml(&out->body, message, strlen(message));
    sb_puts(&out->body, "</Message>");
    if (condition)
        sb_printf(&out->body, "<Condition>%s</Condition>", condition);
    if (r && r->bucket[0] && !condition) {
        sb_puts(&out->body, "<BucketName>");
        sb_xml(&out->body, r->bucket, strlen(r->bucket));
        sb_puts(&out->body, "</BucketName>");
    }
    if (r && r->key && !condition) {
        sb_puts(&out->body, "<Key>");
        sb_xml(&out->body, r->key, r->klen);
        sb_puts(&out->body, "</Key>");
    }
    sb_printf(&out->body, "<RequestId>%s</RequestId><HostId>s3commit-mock</HostId></Error>",
              r ? r->request_id : "");
    sb_puts(&out->head, "Content-Type: application/xml\r\n");
    out->no_body = r && r->method == HTTP_HEAD;
    out->announced_len = out->body.len;
}

void s3_error(struct resp *out, int status, const char *code, const char *message,
              const struct req *r)
{
    mock_s3_error_body(out, status, code, message, r, NULL);
}

/* 412 as S3 words it; condition: "If-Match" or "If-None-Match". */
static void mock_precondition_failed(struct resp *out, const struct req *r, const char *condition)
{
    mock_s3_error_body(out, 412, "PreconditionFailed",
                       "At least one of the pre-conditions you specified did not hold", r,
                       condition);
}

static void mock_answer_xml(struct resp *out, struct sbuf *xml)
{
    out->status = 200;
    out->body = *xml;
    memset(xml, 0, sizeof(*xml));
    sb_puts(&out->head, "Content-Type: application/xml\r\n");
}

/* ---- body digests ---- */

struct body_check {
    EVP_MD_CTX *md5, *sha256;
    uint32_t crc32c, crc32;
    bool want_crc32;
    bool has_md5, has_crc32c, has_crc32, has_sha256, has_content_sha256;
    bool unsigned_payload; /* x-amz-content-sha256: UNSIGNED-PAYLOAD */
    unsigned char exp_md5[16], exp_sha256[32], exp_content_sha256[32];
    uint32_t exp_crc32c, exp_crc32;
    bool too_big;
    /* aws-chunked decoding (STREAMING-UNSIGNED-PAYLOAD-TRAILER) */
    int cstate;
    uint64_t cremain;
    char line[512];
    size_t llen;
    char trailer[64]; /* the x-amz-trailer header's name */
    bool bad_chunk, trailer_seen;
    bool undeclared_trailer; /* a trailer checksum x-amz-trailer did not name */
};

enum { CH_SIZE, CH_DATA, CH_DATA_CRLF, CH_TRAILER, CH_DONE };

static void mock_check_free(struct body_check *c)
{
    if (!c)
        return;
    EVP_MD_CTX_free(c->md5);
    EVP_MD_CTX_free(c->sha256);
    free(c);
}

void s3_req_reset(struct req *r)
{
    mock_check_free(r->check);
    blob_unref(r->body);
    free(r->key);
    free(r->path);
    r->check = NULL;
    r->body = NULL;
    r->key = NULL;
    r->path = r->query = NULL;
}

static void mock_feed(struct req *r, const char *p, size_t n)
{
    struct body_check *c = r->check;
    if (c->md5)
        EVP_DigestUpdate(c->md5, p, n);
    if (c->sha256)
        EVP_DigestUpdate(c->sha256, p, n);
    c->crc32c = crc32c_update(c->crc32c, p, n);
    if (c->want_crc32)
        c->crc32 = mock_crc32_ieee(c->crc32, (const unsigned char *)p, n);
    if (r->keep_body && !c->too_big) {
        size_t have = r->body ? r->body->len : 0;
        if (r->body && p == r->body->data + have && have + n <= r->body_cap) {
            r->body->len = have + n; /* read in place (s3_body_room) */
            return;
        }
        if (have + n > g_mock.cfg.max_object_bytes) {
            c->too_big = true;
            return;
        }
        if (!r->body || have + n > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 65536;
            while (cap < have + n)
                cap *= 2;
            struct blob *nb = blob_new(cap);
            if (!nb) {
                c->too_big = true;
                return;
            }
            if (r->body)
                memcpy(nb->data, r->body->data, have);
            blob_unref(r->body);
            r->body = nb;
            r->body_cap = cap;
        }
        memcpy(r->body->data + have, p, n);
        r->body->len = have + n;
    }
}

/* A trailer line "x-amz-checksum-crc32:base64". */
static void mock_chunk_trailer(struct req *r, const char *line)
{
    struct body_check *c = r->check;
    const char *colon = strchr(line, ':');
    if (!colon) {
        c->bad_chunk = true;
        return;
    }
    size_t nl = (size_t)(colon - line);
    const char *v = colon + 1;
    while (*v == ' ')
        v++;
#define IS(name) (nl == sizeof(name) - 1 && strncasecmp(line, name, nl) == 0)
    if (IS("x-amz-checksum-crc32c"))
        c->has_crc32c = mock_b64_exact(v, (unsigned char *)&c->exp_crc32c, 4);
    else if (IS("x-amz-checksum-crc32"))
        c->has_crc32 = mock_b64_exact(v, (unsigned char *)&c->exp_crc32, 4);
    else if (IS("x-amz-checksum-sha256"))
        c->has_sha256 = mock_b64_exact(v, c->exp_sha256, 32);
    else
        return;
#undef IS
    /* only the checksum x-amz-trailer named is being computed over the body */
    if (c->trailer[0] && strlen(c->trailer) == nl && strncasecmp(line, c->trailer, nl) == 0)
        c->trailer_seen = true;
    else
        c->undeclared_trailer = true;
}

/* Decodes aws-chunked framing: "hex[;ext]\r\n" data "\r\n" ... "0\r\n" trailers "\r\n". */
static void mock_chunked_feed(struct req *r, const char *p, size_t n)
{
    struct body_check *c = r->check;
    while (n && !c->bad_chunk && c->cstate != CH_DONE) {
        if (c->cstate == CH_DATA) {
            size_t k = n < c->cremain ? n : (size_t)c->cremain;
            mock_feed(r, p, k);
            p += k;
            n -= k;
            c->cremain -= k;
            if (!c->cremain)
                c->cstate = CH_DATA_CRLF;
            continue;
        }
        char ch = *p++;
        n--;
        if (ch != '\n') {
            if (c->llen + 1 >= sizeof(c->line)) {
                c->bad_chunk = true;
                return;
            }
            c->line[c->llen++] = ch;
            continue;
        }
        if (c->llen && c->line[c->llen - 1] == '\r')
            c->llen--;
        c->line[c->llen] = '\0';
        c->llen = 0;
        switch (c->cstate) {
        case CH_SIZE: {
            char *end;
            errno = 0;
            unsigned long long sz = strtoull(c->line, &end, 16);
            if (end == c->line || errno || (*end && *end != ';')) {
                c->bad_chunk = true;
                return;
            }
            c->cremain = sz;
            c->cstate = sz ? CH_DATA : CH_TRAILER;
            break;
        }
        case CH_DATA_CRLF:
            if (c->line[0]) {
                c->bad_chunk = true;
                return;
            }
            c->cstate = CH_SIZE;
            break;
        case CH_TRAILER:
            if (!c->line[0])
                c->cstate = CH_DONE;
            else
                mock_chunk_trailer(r, c->line);
            break;
        }
    }
}

char *s3_body_room(struct req *r, size_t *room)
{
    if (r->early || !r->check || r->aws_chunked || !r->keep_body || !r->body || r->check->too_big ||
        r->body_cap != r->content_length || r->body->len >= r->body_cap)
        return NULL;
    *room = r->body_cap - r->body->len;
    return r->body->data + r->body->len;
}

void s3_body(struct req *r, const char *p, size_t n)
{
    if (!r->check)
        return;
    if (r->aws_chunked)
        mock_chunked_feed(r, p, n);
    else
        mock_feed(r, p, n);
}

/* ---- SigV4 verification ---- */

static bool mock_amz_date_ms(const char *d, int64_t *ms)
{
    struct tm tm = {0};
    if (!d || strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z')
        return false;
    if (sscanf(d, "%4d%2d%2dT%2d%2d%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec) != 6)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *ms = (int64_t)timegm(&tm) * 1000;
    return true;
}

static bool mock_in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ';');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncasecmp(p, name, n) == 0)
            return true;
        if (!e)
            break;
        p = e + 1;
    }
    return false;
}

/* 0 when the request is signed right; else fills out with S3's error and returns -1. */
static int mock_auth_check(struct mock *m, struct req *r, struct resp *out, const char *raw_path,
                           const char *raw_query)
{
    const struct mock_cfg *cfg = &m->cfg;
    const char *authz = mock_hdr(r, "authorization");
    struct sigv4_auth a;
    char msg[512];

    if (!authz) {
        if (raw_query && strstr(raw_query, "X-Amz-Signature="))
            s3_error(out, 403, "AccessDenied",
                     "Query-string (presigned) authentication is not supported by "
                     "s3commit-mock; sign with the Authorization header",
                     r);
        else
            s3_error(out, 403, "AccessDenied",
                     "Anonymous access is denied: sign the request with SigV4", r);
        return -1;
    }
    if (sigv4_parse_authorization(authz, &a) < 0) {
        s3_error(out, 400, "AuthorizationHeaderMalformed",
                 "The authorization header is malformed; expected AWS4-HMAC-SHA256 "
                 "Credential=..., SignedHeaders=..., Signature=<64 hex>",
                 r);
        return -1;
    }
    if (strcmp(a.access_key, cfg->access_key) != 0) {
        s3_error(out, 403, "InvalidAccessKeyId",
                 "The AWS Access Key Id you provided does not exist in our records.", r);
        return -1;
    }
    if (strcmp(a.service, "s3") != 0 || strcmp(a.region, cfg->region) != 0) {
        snprintf(msg, sizeof(msg),
                 "The authorization header is malformed; the credential scope names "
                 "region '%.64s' and service '%.32s'; expecting '%.64s' and 's3'",
                 a.region, a.service, cfg->region);
        s3_error(out, 400, "AuthorizationHeaderMalformed", msg, r);
        return -1;
    }
    const char *date = mock_hdr(r, "x-amz-date");
    int64_t ms;
    if (!date || !mock_amz_date_ms(date, &ms)) {
        s3_error(out, 403, "AccessDenied",
                 "AWS authentication requires a valid x-amz-date header (YYYYMMDDTHHMMSSZ)", r);
        return -1;
    }
    if (strncmp(date, a.date8, 8) != 0) {
        s3_error(out, 400, "AuthorizationHeaderMalformed",
                 "The credential scope date does not match the x-amz-date header", r);
        return -1;
    }
    if (cfg->max_skew_s > 0) {
        int64_t skew = ms - mock_wall_ms();
        if (skew < 0)
            skew = -skew;
        if (skew > (int64_t)cfg->max_skew_s * 1000) {
            s3_error(out, 403, "RequestTimeTooSkewed",
                     "The difference between the request time and the current time is too "
                     "large.",
                     r);
            return -1;
        }
    }
    const char *csha = mock_hdr(r, "x-amz-content-sha256");
    if (!csha) {
        s3_error(out, 400, "InvalidRequest",
                 "Missing required header for this request: x-amz-content-sha256", r);
        return -1;
    }
    if (!mock_in_list(a.signed_headers, "host")) {
        s3_error(out, 403, "AccessDenied", "The host header must be signed", r);
        return -1;
    }
    for (int i = 0; i < r->nh; i++) {
        if (strncasecmp(r->hname[i], "x-amz-", 6) == 0 &&
            !mock_in_list(a.signed_headers, r->hname[i])) {
            snprintf(msg, sizeof(msg),
                     "There were headers present in the request which were not signed: %.100s",
                     r->hname[i]);
            s3_error(out, 403, "AccessDenied", msg, r);
            return -1;
        }
    }
    const char *tok = mock_hdr(r, "x-amz-security-token");
    if (cfg->session_token && (!tok || strcmp(tok, cfg->session_token) != 0)) {
        s3_error(out, 403, "InvalidToken", "The provided token is malformed or otherwise invalid.",
                 r);
        return -1;
    }

    /* The signed headers, in the order received (sigv4 sorts and joins repeats). */
    struct sigv4_header hs[REQ_MAX_HEADERS];
    size_t nhs = 0;
    for (int i = 0; i < r->nh; i++)
        if (mock_in_list(a.signed_headers, r->hname[i])) {
            hs[nhs].name = r->hname[i];
            hs[nhs].value = r->hvalue[i];
            nhs++;
        }
    struct sigv4_request sr = {
        .method = http_method_str(r->method),
        .path = raw_path,
        .query = raw_query ? raw_query : "",
        .headers = hs,
        .nheaders = nhs,
        .payload_hash = csha,
        .amz_date = date,
        .region = a.region,
        .service = a.service,
        .access_key = a.access_key,
    };
    unsigned char key[32];
    char sig[65];
    pthread_mutex_lock(&m->key_mu);
    if (strcmp(m->signing_date, a.date8) != 0) {
        if (sigv4_signing_key(cfg->secret_key, a.date8, cfg->region, "s3", m->signing_key) < 0)
            m->signing_date[0] = '\0';
        else
            snprintf(m->signing_date, sizeof(m->signing_date), "%s", a.date8);
    }
    memcpy(key, m->signing_key, sizeof(key));
    pthread_mutex_unlock(&m->key_mu);
    int rc = sigv4_signature_with_key(&sr, key, sig);
    OPENSSL_cleanse(key, sizeof(key));
    if (rc < 0 || CRYPTO_memcmp(sig, a.signature, 64) != 0) {
        char sts[1024];
        if (sigv4_string_to_sign(&sr, sts, sizeof(sts)) < 0)
            sts[0] = '\0';
        snprintf(msg, sizeof(msg),
                 "The request signature we calculated does not match the signature you "
                 "provided. Check your key and signing method. StringToSign: %.*s",
                 (int)strlen(sts), sts);
        s3_error(out, 403, "SignatureDoesNotMatch", msg, r);
        return -1;
    }
    return 0;
}

/* ---- routing ---- */

static bool mock_is_ipv4(const char *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)h[i]) && h[i] != '.')
            return false;
    return n > 0;
}

/* Virtual-host bucket from Host, or "" for path-style. */
static void mock_vhost_bucket(struct mock *m, const struct req *r, char *bucket, size_t cap)
{
    const char *host = mock_hdr(r, "host");
    bucket[0] = '\0';
    if (!host)
        return;
    size_t n = strcspn(host, ":");
    if (n == 0 || host[0] == '[' || mock_is_ipv4(host, n))
        return;
    const char *dot = memchr(host, '.', n);
    if (!dot)
        return;
    size_t bl = (size_t)(dot - host);
    const char *rest = dot + 1;
    size_t rl = n - bl - 1;
    bool vh = false;
    if (m->cfg.vhost_domain && strlen(m->cfg.vhost_domain) == rl &&
        strncasecmp(rest, m->cfg.vhost_domain, rl) == 0)
        vh = true;
    else if (rl == 9 && strncasecmp(rest, "localhost", 9) == 0)
        vh = true;
    else if (rl >= 16 && strncasecmp(rest, "s3.", 3) == 0 &&
             strncasecmp(rest + rl - 13, "amazonaws.com", 13) == 0)
        vh = true;
    if (bl >= cap)
        return;
    char cand[64];
    memcpy(cand, host, bl);
    cand[bl] = '\0';
    for (size_t i = 0; i < bl; i++)
        cand[i] = (char)tolower((unsigned char)cand[i]);
    if (vh || store_bucket_exists(m->store, cand))
        snprintf(bucket, cap, "%s", cand);
}

/* A query parameter, decoded into out (NULL when absent). */
static const char *mock_qparam(const struct req *r, const char *name, char *out, size_t cap)
{
    const char *q = r->query;
    size_t nl = strlen(name);
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        size_t kl = eq ? (size_t)(eq - q) : len;
        if (kl == nl && strncmp(q, name, nl) == 0) {
            const char *v = eq ? eq + 1 : q + len;
            size_t vl = eq ? len - kl - 1 : 0;
            if (vl >= cap)
                vl = cap - 1;
            mock_pct_decode(v, vl, out, true);
            return out;
        }
        q = amp ? amp + 1 : NULL;
    }
    return NULL;
}

static bool mock_has_qparam(const struct req *r, const char *name)
{
    char tmp[8];
    return mock_qparam(r, name, tmp, sizeof(tmp)) != NULL;
}

static enum op mock_route(struct req *r)
{
    bool bucket = r->bucket[0] != '\0', key = r->key != NULL;
    switch (r->method) {
    case HTTP_GET:
        if (!bucket)
            return OP_LIST_BUCKETS;
        if (key)
            return OP_GET_OBJECT;
        if (mock_has_qparam(r, "location"))
            return OP_GET_BUCKET_LOCATION;
        if (mock_has_qparam(r, "list-type"))
            return OP_LIST_OBJECTS_V2;
        return OP_LIST_OBJECTS;
    case HTTP_HEAD:
        return !bucket ? OP_BAD_REQUEST : key ? OP_HEAD_OBJECT : OP_HEAD_BUCKET;
    case HTTP_PUT:
        return !bucket ? OP_BAD_REQUEST : key ? OP_PUT_OBJECT : OP_CREATE_BUCKET;
    case HTTP_DELETE:
        return !bucket ? OP_BAD_REQUEST : key ? OP_DELETE_OBJECT : OP_DELETE_BUCKET;
    case HTTP_POST:
        return (bucket && !key && mock_has_qparam(r, "delete")) ? OP_DELETE_OBJECTS
                                                                : OP_BAD_REQUEST;
    default:
        return OP_BAD_REQUEST;
    }
}

/* Sub-resources the mock does not implement ("?acl", "?uploads", ...). */
static const char *mock_unsupported_subresource(const struct req *r, char *name, size_t cap)
{
    static const char *const known[] = {"list-type",
                                        "prefix",
                                        "delimiter",
                                        "max-keys",
                                        "continuation-token",
                                        "start-after",
                                        "encoding-type",
                                        "fetch-owner",
                                        "marker",
                                        "location",
                                        "x-id",
                                        "delete",
                                        "X-Amz-Algorithm",
                                        "X-Amz-Credential",
                                        "X-Amz-Date",
                                        "X-Amz-Expires",
                                        "X-Amz-SignedHeaders",
                                        "X-Amz-Signature",
                                        "X-Amz-Security-Token",
                                        "versionId",
                                        "partNumber",
                                        "response-content-type",
                                        "optional-object-attributes",
                                        NULL};
    const char *q = r->query;
    while (q && *q) {
        size_t kl = strcspn(q, "=&");
        bool ok = false;
        for (int i = 0; known[i]; i++)
            if (strlen(known[i]) == kl && strncmp(q, known[i], kl) == 0)
                ok = true;
        if (!ok && kl) {
            snprintf(name, cap, "%.*s", (int)(kl < 60 ? kl : 60), q);
            return name;
        }
        q = strchr(q, '&');
        if (q)
            q++;
    }
    return NULL;
}

/* ---- s3_begin: headers complete ---- */

static void mock_early(struct req *r, struct resp *out, int status, const char *code,
                       const char *message)
{
    s3_error(out, status, code, message, r);
    r->early = true;
}

static bool mock_is_hex64(const char *s)
{
    if (!s || strlen(s) != 64)
        return false;
    for (int i = 0; i < 64; i++)
        if (mock_hexv((unsigned char)s[i]) < 0)
            return false;
    return true;
}

static void mock_hex_to_bin(const char *s, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)(mock_hexv((unsigned char)s[2 * i]) << 4 |
                                 mock_hexv((unsigned char)s[2 * i + 1]));
}

/* Sets up the digests for a body. Returns false (and answers) on a malformed header. */
static bool mock_setup_checks(struct mock *m, struct req *r, struct resp *out)
{
    struct body_check *c = calloc(1, sizeof(*c));
    if (!c) {
        mock_early(r, out, 500, "InternalError", "out of memory");
        return false;
    }
    r->check = c;
    const char *v;
    if ((v = mock_hdr(r, "content-md5"))) {
        if (!mock_b64_exact(v, c->exp_md5, 16)) {
            mock_early(r, out, 400, "InvalidDigest", "The Content-MD5 you specified was invalid.");
            return false;
        }
        c->has_md5 = true;
    }
    if ((v = mock_hdr(r, "x-amz-checksum-crc32c"))) {
        if (!mock_b64_exact(v, (unsigned char *)&c->exp_crc32c, 4)) {
            mock_early(
                r, out, 400, "InvalidRequest",
                "Value for x-amz-checksum-crc32c header is invalid (want base64 of 4 bytes).");
            return false;
        }
        c->has_crc32c = true;
    }
    if ((v = mock_hdr(r, "x-amz-checksum-crc32"))) {
        if (!mock_b64_exact(v, (unsigned char *)&c->exp_crc32, 4)) {
            mock_early(
                r, out, 400, "InvalidRequest",
                "Value for x-amz-checksum-crc32 header is invalid (want base64 of 4 bytes).");
            return false;
        }
        c->has_crc32 = true;
    }
    if ((v = mock_hdr(r, "x-amz-checksum-sha256"))) {
        if (!mock_b64_exact(v, c->exp_sha256, 32)) {
            mock_early(
                r, out, 400, "InvalidRequest",
                "Value for x-amz-checksum-sha256 header is invalid (want base64 of 32 bytes).");
            return false;
        }
        c->has_sha256 = true;
    }
    const char *csha = mock_hdr(r, "x-amz-content-sha256");
    if (csha && strncmp(csha, "STREAMING-", 10) == 0) {
        if (strcmp(csha, "STREAMING-UNSIGNED-PAYLOAD-TRAILER") != 0) {
            mock_early(r, out, 501, "NotImplemented",
                       "s3commit-mock supports aws-chunked bodies only as "
                       "STREAMING-UNSIGNED-PAYLOAD-TRAILER (signed chunks are not implemented)");
            return false;
        }
        r->aws_chunked = true;
        if ((v = mock_hdr(r, "x-amz-trailer")))
            snprintf(c->trailer, sizeof(c->trailer), "%s", v);
    } else if (csha && strcmp(csha, SIGV4_UNSIGNED_PAYLOAD) == 0) {
        c->unsigned_payload = true;
    } else if (csha) {
        if (!mock_is_hex64(csha)) {
            mock_early(
                r, out, 400, "InvalidArgument",
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or the hex SHA-256 of the body");
            return false;
        }
        mock_hex_to_bin(csha, c->exp_content_sha256, 32);
        c->has_content_sha256 = true;
    }
    bool need_md5 = c->has_md5 || (r->op == OP_PUT_OBJECT && m->cfg.etag == ETAG_MD5 &&
                                   store_mode(m->store) != STORE_NONE);
    if (need_md5 && (!(c->md5 = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(c->md5, EVP_md5(), NULL)))
        goto out_nomem;
    if ((c->has_sha256 || c->has_content_sha256 || c->trailer[0]) &&
        (!(c->sha256 = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(c->sha256, EVP_sha256(), NULL)))
        goto out_nomem;
    c->want_crc32 = c->has_crc32 || strcasecmp(c->trailer, "x-amz-checksum-crc32") == 0;
    return true;
out_nomem:
    mock_early(r, out, 500, "InternalError", "digest setup failed");
    return false;
}

void s3_begin(struct mock *m, struct req *r, struct resp *out)
{
    /* Split the target into path and query (absolute-form "http://h/p" allowed). */
    const char *u = r->url;
    if (strncasecmp(u, "http://", 7) == 0) {
        const char *sl = strchr(u + 7, '/');
        u = sl ? sl : "/";
    }
    r->path = strdup(u);
    if (!r->path) {
        mock_early(r, out, 500, "InternalError", "out of memory");
        return;
    }
    char *qm = strchr(r->path, '?');
    if (qm) {
        *qm = '\0';
        r->query = qm + 1;
    }
    if (r->path[0] != '/') {
        r->op = OP_BAD_REQUEST;
        mock_early(r, out, 400, "InvalidURI", "Couldn't parse the specified URI.");
        return;
    }

    if (strncmp(r->path, "/_mock/", 7) == 0) {
        r->op = OP_CONTROL;
        r->keep_body = true;
        r->check = calloc(1, sizeof(*r->check));
        if (r->has_cl && r->content_length > CONTROL_BODY_MAX)
            mock_early(r, out, 413, "EntityTooLarge", "control bodies are limited to 64 KiB");
        return;
    }

    /* bucket and key */
    mock_vhost_bucket(m, r, r->bucket, sizeof(r->bucket));
    const char *p = r->path + 1;
    if (!r->bucket[0] && *p) {
        size_t bl = strcspn(p, "/");
        if (bl >= sizeof(r->bucket)) {
            mock_early(r, out, 400, "InvalidBucketName", "The specified bucket is not valid.");
            return;
        }
        memcpy(r->bucket, p, bl);
        r->bucket[bl] = '\0';
        p += bl;
        if (*p == '/')
            p++;
    }
    if (*p) {
        size_t n = strlen(p);
        r->key = malloc(n + 1);
        if (!r->key) {
            mock_early(r, out, 500, "InternalError", "out of memory");
            return;
        }
        r->klen = mock_pct_decode(p, n, r->key, false);
        if (r->klen > 1024) {
            mock_early(r, out, 400, "KeyTooLongError", "Your key is too long (at most 1024 bytes)");
            return;
        }
    }
    r->op = mock_route(r);
    if (r->op == OP_BAD_REQUEST) {
        if (r->method == HTTP_POST)
            mock_early(r, out, 501, "NotImplemented",
                       "POST operations (multipart uploads, form uploads) are not implemented by "
                       "s3commit-mock");
        else if (r->method == HTTP_GET || r->method == HTTP_HEAD || r->method == HTTP_PUT ||
                 r->method == HTTP_DELETE)
            mock_early(r, out, 405, "MethodNotAllowed",
                       "The specified method is not allowed against this resource.");
        else
            mock_early(r, out, 501, "NotImplemented",
                       "A header or method you provided implies functionality that is not "
                       "implemented.");
        return;
    }
    char subname[64];
    const char *sub = mock_unsupported_subresource(r, subname, sizeof(subname));
    if (sub && r->op != OP_GET_OBJECT && r->op != OP_HEAD_OBJECT) {
        char msg[160];
        snprintf(msg, sizeof(msg), "The sub-resource '%s' is not implemented by s3commit-mock",
                 sub);
        mock_early(r, out, 501, "NotImplemented", msg);
        return;
    }
    if (r->op == OP_PUT_OBJECT && mock_hdr(r, "x-amz-copy-source")) {
        mock_early(r, out, 501, "NotImplemented", "CopyObject is not implemented by s3commit-mock");
        return;
    }

    faults_plan(m, &r->plan, r->key, r->key ? r->klen : 0,
                r->op == OP_GET_OBJECT || r->op == OP_HEAD_OBJECT);
    if (r->plan.reset)
        return; /* the server resets the connection; nothing else matters */

    if (m->cfg.access_key && mock_auth_check(m, r, out, r->path, r->query) < 0) {
        r->early = true;
        return;
    }
    if (r->op != OP_LIST_BUCKETS && r->op != OP_CREATE_BUCKET &&
        !store_bucket_exists(m->store, r->bucket)) {
        mock_early(r, out, 404, "NoSuchBucket", "The specified bucket does not exist");
        return;
    }
    if (r->op == OP_PUT_OBJECT || r->op == OP_CREATE_BUCKET) {
        if (r->has_cl && r->content_length > m->cfg.max_object_bytes) {
            mock_early(
                r, out, 400, "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size (--max-object-bytes)");
            return;
        }
        if (r->op == OP_PUT_OBJECT && !r->has_cl && !mock_hdr(r, "transfer-encoding")) {
            mock_early(r, out, 411, "MissingContentLength",
                       "You must provide the Content-Length HTTP header.");
            return;
        }
        const char *inm = mock_hdr(r, "if-none-match");
        if (r->op == OP_PUT_OBJECT && inm) {
            struct objmeta meta;
            if (strcmp(inm, "*") != 0) {
                mock_early(r, out, 501, "NotImplemented", "If-None-Match on PUT supports only '*'");
                return;
            }
            if (store_get(m->store, r->bucket, r->key, r->klen, &meta, NULL) == 0) {
                mock_precondition_failed(out, r, "If-None-Match");
                r->early = true;
                return;
            }
        }
        if (!mock_setup_checks(m, r, out))
            return;
        r->keep_body = r->op == OP_PUT_OBJECT && store_mode(m->store) != STORE_NONE;
        if (r->keep_body && r->has_cl && !r->aws_chunked && r->content_length > 0) {
            r->body = blob_new(r->content_length);
            if (!r->body) {
                mock_early(r, out, 500, "InternalError", "out of memory");
                return;
            }
            r->body->len = 0;
            r->body_cap = r->content_length;
        }
    } else if (r->has_body) {
        /* bodies of other operations are read and checked; DeleteObjects keeps its XML */
        if (!mock_setup_checks(m, r, out))
            return;
        r->keep_body = r->op == OP_DELETE_OBJECTS;
    }
}

/* ---- operations ---- */

static void mock_list_buckets_cb(void *ctx, const char *name, int64_t ms)
{
    struct sbuf *x = ctx;
    char d[40];
    mock_iso_date(ms, d, sizeof(d));
    sb_puts(x, "<Bucket><Name>");
    sb_xml(x, name, strlen(name));
    sb_printf(x, "</Name><CreationDate>%s</CreationDate></Bucket>", d);
}

struct list_ctx {
    struct sbuf *x;
    bool url;
};

static void mock_list_key_cb(void *ctx, const char *key, size_t klen, const struct objmeta *m)
{
    struct list_ctx *l = ctx;
    char d[40];
    mock_iso_date(m->mtime_ms, d, sizeof(d));
    sb_puts(l->x, "<Contents><Key>");
    mock_sb_field(l->x, key, klen, l->url);
    sb_printf(l->x,
              "</Key><LastModified>%s</LastModified><ETag>&quot;%s&quot;</ETag>"
              "<Size>%" PRIu64 "</Size><StorageClass>STANDARD</StorageClass></Contents>",
              d, m->etag, m->size);
}

static void mock_list_prefix_cb(void *ctx, const char *p, size_t n)
{
    struct list_ctx *l = ctx;
    sb_puts(l->x, "<CommonPrefixes><Prefix>");
    mock_sb_field(l->x, p, n, l->url);
    sb_puts(l->x, "</Prefix></CommonPrefixes>");
}

static void mock_do_list(struct mock *m, struct req *r, struct resp *out, bool v2)
{
    char prefix[1100], delim[64], token[2048], after[1100], maxk[32], enc[16];
    bool has_prefix = mock_qparam(r, "prefix", prefix, sizeof(prefix)) != NULL;
    bool has_delim = mock_qparam(r, "delimiter", delim, sizeof(delim)) != NULL;
    bool has_token = v2 && mock_qparam(r, "continuation-token", token, sizeof(token)) != NULL;
    bool has_after = mock_qparam(r, v2 ? "start-after" : "marker", after, sizeof(after)) != NULL;
    bool url = false;
    int max_keys = 1000;

    if (!has_prefix)
        prefix[0] = '\0';
    if (!has_delim)
        delim[0] = '\0';
    if (!has_after)
        after[0] = '\0';
    if (mock_qparam(r, "max-keys", maxk, sizeof(maxk))) {
        char *end;
        long v = strtol(maxk, &end, 10);
        if (!maxk[0] || *end || v < 0) {
            s3_error(out, 400, "InvalidArgument",
                     "Provided max-keys not an integer or within integer range", r);
            return;
        }
        max_keys = v > 1000 ? 1000 : (int)v;
    }
    if (mock_qparam(r, "encoding-type", enc, sizeof(enc))) {
        if (strcmp(enc, "url") != 0) {
            s3_error(out, 400, "InvalidArgument", "Invalid Encoding Method specified in Request",
                     r);
            return;
        }
        url = true;
    }
    struct list_args a = {
        .prefix = prefix,
        .prefix_len = strlen(prefix),
        .delimiter = delim,
        .delimiter_len = strlen(delim),
        .after = after,
        .after_len = strlen(after),
        .max_keys = max_keys,
    };
    unsigned char tok_raw[1600];
    if (has_token) {
        /* the token is base64 of the last key or prefix returned */
        size_t tl = strlen(token);
        int n = (tl && tl % 4 == 0 && tl < 2000)
                    ? EVP_DecodeBlock(tok_raw, (const unsigned char *)token, (int)tl)
                    : -1;
        if (n < 0) {
            s3_error(out, 400, "InvalidArgument", "The continuation token provided is incorrect",
                     r);
            return;
        }
        while (tl && token[tl - 1] == '=') {
            tl--;
            n--;
        }
        a.after = (const char *)tok_raw;
        a.after_len = (size_t)n;
    }
    struct sbuf x = {0};
    struct list_ctx lc = {.x = &x, .url = url};
    struct list_sink sink = {.ctx = &lc, .key = mock_list_key_cb, .prefix = mock_list_prefix_cb};
    struct list_result res;
    sb_puts(&x, XML_DECL "<ListBucketResult xmlns=\"" S3_NS "\"><Name>");
    sb_xml(&x, r->bucket, strlen(r->bucket));
    sb_puts(&x, "</Name><Prefix>");
    mock_sb_field(&x, prefix, strlen(prefix), url);
    sb_puts(&x, "</Prefix>");
    if (!v2) {
        sb_puts(&x, "<Marker>");
        mock_sb_field(&x, after, strlen(after), url);
        sb_puts(&x, "</Marker>");
    }
    sb_printf(&x, "<MaxKeys>%d</MaxKeys>", max_keys);
    if (has_delim) {
        sb_puts(&x, "<Delimiter>");
        mock_sb_field(&x, delim, strlen(delim), url);
        sb_puts(&x, "</Delimiter>");
    }
    if (url)
        sb_puts(&x, "<EncodingType>url</EncodingType>");
    /* the entries go to a second buffer: KeyCount and IsTruncated come first */
    struct sbuf entries = {0};
    lc.x = &entries;
    if (store_list(m->store, r->bucket, &a, &sink, &res) < 0) {
        sb_free(&x);
        sb_free(&entries);
        s3_error(out, 404, "NoSuchBucket", "The specified bucket does not exist", r);
        return;
    }
    /* max-keys=0 asks for nothing and is answered complete, as S3 does: IsTruncated false
     * and no NextContinuationToken, whatever the bucket holds. */
    if (max_keys == 0)
        res.truncated = false;
    sb_printf(&x, "<IsTruncated>%s</IsTruncated>", res.truncated ? "true" : "false");
    if (v2) {
        sb_printf(&x, "<KeyCount>%d</KeyCount>", res.count);
        if (has_token)
            sb_printf(&x, "<ContinuationToken>%s</ContinuationToken>", token);
        if (has_after) {
            sb_puts(&x, "<StartAfter>");
            mock_sb_field(&x, after, strlen(after), url);
            sb_puts(&x, "</StartAfter>");
        }
        if (res.truncated && res.last) {
            char *t = malloc(4 * ((res.last_len + 2) / 3) + 1);
            if (t) {
                mock_b64((const unsigned char *)res.last, res.last_len, t);
                sb_printf(&x, "<NextContinuationToken>%s</NextContinuationToken>", t);
                free(t);
            }
        }
    } else if (res.truncated && res.last && has_delim) {
        sb_puts(&x, "<NextMarker>");
        mock_sb_field(&x, res.last, res.last_len, url);
        sb_puts(&x, "</NextMarker>");
    }
    if (entries.len)
        sb_put(&x, entries.p, entries.len);
    sb_puts(&x, "</ListBucketResult>");
    sb_free(&entries);
    free(res.last);
    mock_answer_xml(out, &x);
}

/* "bytes=a-b" | "bytes=a-" | "bytes=-n". Returns 1 (range set), 0 (ignore: whole object)
 * or -1 (unsatisfiable). */
static int mock_parse_range(const char *v, uint64_t size, uint64_t *first, uint64_t *last)
{
    if (strncmp(v, "bytes=", 6) != 0 || strchr(v, ','))
        return 0;
    v += 6;
    char *end;
    if (*v == '-') {
        unsigned long long n = strtoull(v + 1, &end, 10);
        if (end == v + 1 || *end)
            return 0;
        if (n == 0 || size == 0)
            return -1;
        *first = n >= size ? 0 : size - n;
        *last = size - 1;
        return 1;
    }
    if (!isdigit((unsigned char)*v))
        return 0;
    unsigned long long a = strtoull(v, &end, 10), b;
    if (*end != '-')
        return 0;
    const char *bs = end + 1;
    if (!*bs) {
        b = size ? size - 1 : 0;
    } else {
        b = strtoull(bs, &end, 10);
        if (*end || b < a)
            return 0;
    }
    if (a >= size)
        return -1;
    *first = a;
    *last = b >= size ? size - 1 : b;
    return 1;
}

static void mock_strip_quotes(const char *in, char *out, size_t cap)
{
    size_t n = strlen(in);
    if (n >= 2 && in[0] == '"' && in[n - 1] == '"') {
        in++;
        n -= 2;
    }
    if (n >= cap)
        n = cap - 1;
    memcpy(out, in, n);
    out[n] = '\0';
}

/* An HTTP-date (RFC 9110 5.6.7) in any of its three forms, to seconds since the epoch.
 * False for anything else: such a condition is ignored, as S3 and RFC 9110 do. */
static bool mock_http_date_parse(const char *v, int64_t *secs)
{
    static const char *const forms[] = {
        "%a, %d %b %Y %H:%M:%S GMT", /* IMF-fixdate */
        "%A, %d-%b-%y %H:%M:%S GMT", /* RFC 850 */
        "%a %b %e %H:%M:%S %Y",      /* asctime */
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        struct tm tm = {0};
        const char *end = strptime(v, forms[i], &tm);
        if (end && !*end) {
            *secs = (int64_t)timegm(&tm);
            return true;
        }
    }
    return false;
}

/* With --etag kms, the headers S3 puts on PUT, GET and HEAD answers of an SSE-KMS object
 * (s3cmd, for one, skips its MD5-versus-ETag check on seeing them). */
static void mock_sse_headers(struct resp *out)
{
    if (g_mock.cfg.etag != ETAG_KMS)
        return;
    sb_printf(&out->head,
              "x-amz-server-side-encryption: aws:kms\r\n"
              "x-amz-server-side-encryption-aws-kms-key-id: "
              "arn:aws:kms:%s:000000000000:key/s3commit-mock\r\n",
              g_mock.cfg.region);
}

static void mock_do_get(struct mock *m, struct req *r, struct resp *out, bool head)
{
    struct objmeta meta;
    struct blob *body = NULL;
    bool want_body = !head && store_mode(m->store) != STORE_NONE;
    int rc = store_get(m->store, r->bucket, r->key, r->klen, &meta, want_body ? &body : NULL);
    if (rc == -ENODEV) {
        s3_error(out, 404, "NoSuchBucket", "The specified bucket does not exist", r);
        return;
    }
    if (rc == -ENOENT) {
        s3_error(out, 404, "NoSuchKey", "The specified key does not exist.", r);
        return;
    }
    if (rc < 0) {
        s3_error(out, 500, "InternalError", "reading the object failed", r);
        return;
    }
    char tag[80], lm[64];
    mock_http_date(meta.mtime_ms, lm, sizeof(lm));
    const char *im = mock_hdr(r, "if-match"), *inm = mock_hdr(r, "if-none-match");
    const char *ims = mock_hdr(r, "if-modified-since"), *ius = mock_hdr(r, "if-unmodified-since");
    int64_t since, mtime_s = meta.mtime_ms / 1000; /* Last-Modified has whole seconds */
    /* RFC 9110 13.2.2's order, which S3 documents too: If-Match, else If-Unmodified-Since
     * (412); then If-None-Match, else If-Modified-Since (304). */
    if (im) {
        mock_strip_quotes(im, tag, sizeof(tag));
        if (strcmp(tag, "*") != 0 && strcmp(tag, meta.etag) != 0) {
            blob_unref(body);
            mock_precondition_failed(out, r, "If-Match");
            return;
        }
    } else if (ius && mock_http_date_parse(ius, &since) && mtime_s > since) {
        blob_unref(body);
        mock_precondition_failed(out, r, "If-Unmodified-Since");
        return;
    }
    sb_printf(&out->head, "ETag: \"%s\"\r\nLast-Modified: %s\r\nAccept-Ranges: bytes\r\n",
              meta.etag, lm);
    mock_sse_headers(out);
    bool not_modified = false;
    if (inm) {
        mock_strip_quotes(inm, tag, sizeof(tag));
        not_modified = strcmp(tag, "*") == 0 || strcmp(tag, meta.etag) == 0;
    } else if (ims && mock_http_date_parse(ims, &since)) {
        not_modified = mtime_s <= since;
    }
    if (not_modified) {
        blob_unref(body);
        out->status = 304;
        out->no_body = true;
        out->announced_len = 0;
        return;
    }
    sb_puts(&out->head, "Content-Type: application/octet-stream\r\n");
    uint64_t first = 0, last = meta.size ? meta.size - 1 : 0;
    const char *range = mock_hdr(r, "range");
    int rr = range && !r->plan.ignore_range ? mock_parse_range(range, meta.size, &first, &last) : 0;
    if (rr < 0) {
        blob_unref(body);
        sb_free(&out->head);
        sb_printf(&out->head, "Content-Range: bytes */%" PRIu64 "\r\n", meta.size);
        s3_error(out, 416, "InvalidRange", "The requested range is not satisfiable", r);
        return;
    }
    out->status = rr ? 206 : 200;
    uint64_t len = meta.size ? last - first + 1 : 0;
    if (rr)
        sb_printf(&out->head, "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64 "\r\n", first,
                  last, meta.size);
    if (head || !body) {
        out->no_body = true;
        out->announced_len = head ? len : 0;
        if (!head) /* --store none keeps no body: say so rather than send zeros */
            s3_error(out, 404, "NoSuchKey", "The mock runs with --store none and keeps no bodies",
                     r);
        blob_unref(body);
        return;
    }
    out->blob = body;
    out->blob_off = (size_t)first;
    out->blob_len = (size_t)len;
}

/* A 64-bit mix (splitmix64's finaliser): KMS ETags of successive PUTs look unrelated. */
static uint64_t mock_mix64(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The ETag of a PUT (see enum etag_mode). md5_out gets the body's MD5 when one was
 * computed (Content-MD5 sent, or --etag md5 with a store). Returns whether it was. */
static bool mock_etag_of(struct body_check *c, uint64_t size, char etag[33],
                         unsigned char md5_out[16])
{
    static atomic_uint_fast64_t kms_seq;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    bool have_md5 = c->md5 && EVP_DigestFinal_ex(c->md5, md, &n) == 1 && n == 16;
    if (have_md5)
        memcpy(md5_out, md, 16);
    if (g_mock.cfg.etag == ETAG_KMS) {
        /* opaque and new for every PUT, as S3's under SSE-KMS; carries the CRC-32C and
         * size so two ETags of different bodies never collide */
        uint64_t u = mock_mix64(atomic_fetch_add(&kms_seq, 1) ^ (uint64_t)mock_wall_ms() << 20);
        snprintf(etag, 33, "%08x%08x%016llx", c->crc32c, (uint32_t)size, (unsigned long long)u);
    } else if (have_md5) {
        for (int i = 0; i < 16; i++)
            snprintf(etag + 2 * i, 3, "%02x", md[i]);
    } else {
        /* --store none without Content-MD5: no MD5 is computed; the ETag carries the CRC-32C */
        snprintf(etag, 33, "000000000000000000000000%08x", c->crc32c);
    }
    return have_md5;
}

/* Checks every digest the client sent. Returns false after answering. */
static bool mock_verify_body(struct req *r, struct resp *out, char etag[33])
{
    struct body_check *c = r->check;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (c->too_big) {
        s3_error(out, 400, "EntityTooLarge",
                 "Your proposed upload exceeds the maximum allowed size (--max-object-bytes)", r);
        return false;
    }
    if (r->aws_chunked && (c->bad_chunk || c->cstate != CH_DONE)) {
        s3_error(out, 400, "IncompleteBody",
                 "The aws-chunked body is malformed or ends before its final chunk", r);
        return false;
    }
    if (r->aws_chunked && c->undeclared_trailer) {
        s3_error(out, 400, "MalformedTrailerError",
                 "The body's trailer carries a checksum the x-amz-trailer header does not name", r);
        return false;
    }
    if (r->aws_chunked && c->trailer[0] && !c->trailer_seen) {
        s3_error(out, 400, "MalformedTrailerError",
                 "The x-amz-trailer header names a checksum the body's trailer does not carry", r);
        return false;
    }
    if (r->aws_chunked) {
        const char *dl = mock_hdr(r, "x-amz-decoded-content-length");
        uint64_t got = r->body ? r->body->len : 0;
        if (dl && r->keep_body && strtoull(dl, NULL, 10) != got) {
            s3_error(out, 400, "IncompleteBody",
                     "You did not provide the number of bytes in x-amz-decoded-content-length", r);
            return false;
        }
    }
    unsigned char md5[16];
    bool have_md5 = mock_etag_of(c, r->body ? r->body->len : r->body_bytes, etag, md5);
    if (c->has_md5) {
        if (!have_md5 || memcmp(md5, c->exp_md5, 16) != 0) {
            s3_error(out, 400, "BadDigest",
                     "The Content-MD5 you specified did not match what we received.", r);
            return false;
        }
    }
    if (c->sha256) {
        if (EVP_DigestFinal_ex(c->sha256, md, &n) != 1)
            n = 0;
        if (c->has_content_sha256 && (n != 32 || memcmp(md, c->exp_content_sha256, 32) != 0)) {
            s3_error(out, 400, "XAmzContentSHA256Mismatch",
                     "The provided 'x-amz-content-sha256' header does not match what was "
                     "computed.",
                     r);
            return false;
        }
        if (c->has_sha256 && (n != 32 || memcmp(md, c->exp_sha256, 32) != 0)) {
            s3_error(out, 400, "BadDigest",
                     "The SHA256 you specified did not match the calculated checksum.", r);
            return false;
        }
    }
    uint32_t be = __builtin_bswap32(c->crc32c);
    if (c->has_crc32c && memcmp(&be, &c->exp_crc32c, 4) != 0) {
        s3_error(out, 400, "BadDigest",
                 "The CRC32C you specified did not match the calculated checksum.", r);
        return false;
    }
    be = __builtin_bswap32(c->crc32);
    if (c->has_crc32 && memcmp(&be, &c->exp_crc32, 4) != 0) {
        s3_error(out, 400, "BadDigest",
                 "The CRC32 you specified did not match the calculated checksum.", r);
        return false;
    }
    return true;
}

/* Counts the digests of a PUT body that mock_verify_body found right and store_put kept: one
 * relaxed add per kind present, so tests can tell a digest was sent, not just accepted. */
static void mock_count_digests(struct mock *m, const struct body_check *c)
{
    atomic_uint_fast64_t *d = m->stats.digests;
    if (c->has_content_sha256)
        stat_add(&d[D_CONTENT_SHA256], 1);
    if (c->unsigned_payload)
        stat_add(&d[D_UNSIGNED_PAYLOAD], 1);
    if (c->has_md5)
        stat_add(&d[D_MD5], 1);
    if (c->has_crc32c)
        stat_add(&d[D_CRC32C], 1);
    if (c->has_crc32)
        stat_add(&d[D_CRC32], 1);
    if (c->has_sha256)
        stat_add(&d[D_SHA256], 1);
}

static void mock_do_put(struct mock *m, struct req *r, struct resp *out)
{
    char etag[33];
    if (!mock_verify_body(r, out, etag))
        return;
    struct objmeta meta = {.size = r->body ? r->body->len : r->body_bytes,
                           .mtime_ms = mock_wall_ms()};
    if (r->aws_chunked && !r->body) {
        const char *dl = mock_hdr(r, "x-amz-decoded-content-length");
        meta.size = dl ? strtoull(dl, NULL, 10) : 0;
    }
    memcpy(meta.etag, etag, 33);
    struct put_cond cond = {0};
    char im[80];
    const char *inm = mock_hdr(r, "if-none-match"), *ifm = mock_hdr(r, "if-match");
    cond.if_none_match_star = inm && strcmp(inm, "*") == 0;
    if (ifm) {
        mock_strip_quotes(ifm, im, sizeof(im));
        cond.if_match = im;
    }
    struct blob *body = r->body;
    struct blob *empty = NULL;
    if (!body && store_mode(m->store) != STORE_NONE) {
        empty = blob_new(0);
        body = empty;
    }
    int rc = store_put(m->store, r->bucket, r->key, r->klen, body, &meta, &cond);
    blob_unref(empty);
    switch (rc) {
    case 0:
        break;
    case -ENODEV:
        s3_error(out, 404, "NoSuchBucket", "The specified bucket does not exist", r);
        return;
    case -EEXIST: /* If-None-Match: * lost the race to another PUT of the key */
        mock_precondition_failed(out, r, "If-None-Match");
        return;
    case -EPERM:
        mock_precondition_failed(out, r, "If-Match");
        return;
    case -ESRCH:
        s3_error(out, 404, "NoSuchKey", "The specified key does not exist.", r);
        return;
    default:
        s3_error(out, 500, "InternalError", "storing the object failed", r);
        return;
    }
    mock_count_digests(m, r->check);
    out->status = 200;
    sb_printf(&out->head, "ETag: \"%s\"\r\n", etag);
    mock_sse_headers(out);
    static const char *const echo[] = {"x-amz-checksum-crc32c", "x-amz-checksum-crc32",
                                       "x-amz-checksum-sha256", NULL};
    for (int i = 0; echo[i]; i++) {
        const char *v = mock_hdr(r, echo[i]);
        if (v)
            sb_printf(&out->head, "%s: %s\r\n", echo[i], v);
    }
}

/* DeleteObjects: <Delete><Object><Key>k</Key></Object>...<Quiet>true</Quiet></Delete>,
 * read with expat. */
struct del_parse {
    int depth;
    bool in_key, in_quiet, in_object, quiet;
    struct sbuf key, quiet_text;
    char **keys;
    size_t *lens;
    size_t n;
    bool too_many;
};

static void XMLCALL mock_del_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    struct del_parse *d = ud;
    (void)attrs;
    d->depth++;
    if (d->depth == 2 && strcmp(name, "Object") == 0) {
        d->in_object = true;
    } else if (d->depth == 3 && d->in_object && strcmp(name, "Key") == 0) {
        d->in_key = true;
        d->key.len = 0;
        sb_put(&d->key, "", 0);
    } else if (d->depth == 2 && strcmp(name, "Quiet") == 0) {
        d->in_quiet = true;
    }
}

static void XMLCALL mock_del_end(void *ud, const XML_Char *name)
{
    struct del_parse *d = ud;
    (void)name;
    if (d->in_key && d->depth == 3) {
        d->in_key = false;
        if (d->n == 1000) {
            d->too_many = true;
        } else {
            d->keys[d->n] = malloc(d->key.len + 1);
            if (d->keys[d->n]) {
                memcpy(d->keys[d->n], d->key.p, d->key.len + 1);
                d->lens[d->n++] = d->key.len;
            }
        }
    } else if (d->in_object && d->depth == 2) {
        d->in_object = false;
    } else if (d->in_quiet && d->depth == 2) {
        d->in_quiet = false;
        d->quiet = d->quiet_text.p && strcmp(d->quiet_text.p, "true") == 0;
    }
    d->depth--;
}

static void XMLCALL mock_del_text(void *ud, const XML_Char *s, int len)
{
    struct del_parse *d = ud;
    if (d->in_key)
        sb_put(&d->key, s, (size_t)len);
    else if (d->in_quiet)
        sb_put(&d->quiet_text, s, (size_t)len);
}

static void mock_do_delete_objects(struct mock *m, struct req *r, struct resp *out)
{
    char etag[33];
    if (r->check && !mock_verify_body(r, out, etag))
        return;
    struct del_parse d = {0};
    d.keys = calloc(1000, sizeof(*d.keys));
    d.lens = calloc(1000, sizeof(*d.lens));
    XML_Parser xp = XML_ParserCreate("UTF-8");
    if (!d.keys || !d.lens || !xp) {
        s3_error(out, 500, "InternalError", "out of memory", r);
        goto out_free;
    }
    XML_SetUserData(xp, &d);
    XML_SetElementHandler(xp, mock_del_start, mock_del_end);
    XML_SetCharacterDataHandler(xp, mock_del_text);
    if (!r->body || XML_Parse(xp, r->body->data, (int)r->body->len, 1) != XML_STATUS_OK) {
        s3_error(out, 400, "MalformedXML",
                 "The XML you provided was not well-formed or did not validate against our "
                 "published schema",
                 r);
        goto out_free;
    }
    if (d.too_many) {
        s3_error(out, 400, "MalformedXML", "DeleteObjects takes at most 1000 keys", r);
        goto out_free;
    }
    struct sbuf x = {0};
    sb_puts(&x, XML_DECL "<DeleteResult xmlns=\"" S3_NS "\">");
    for (size_t i = 0; i < d.n; i++) {
        int rc = store_delete(m->store, r->bucket, d.keys[i], d.lens[i]);
        if (rc < 0) {
            sb_puts(&x, "<Error><Key>");
            sb_xml(&x, d.keys[i], d.lens[i]);
            sb_puts(&x, "</Key><Code>InternalError</Code><Message>deleting failed</Message>"
                        "</Error>");
        } else if (!d.quiet) {
            sb_puts(&x, "<Deleted><Key>");
            sb_xml(&x, d.keys[i], d.lens[i]);
            sb_puts(&x, "</Key></Deleted>");
        }
    }
    sb_puts(&x, "</DeleteResult>");
    mock_answer_xml(out, &x);
out_free:
    if (xp)
        XML_ParserFree(xp);
    for (size_t i = 0; d.keys && i < d.n; i++)
        free(d.keys[i]);
    free(d.keys);
    free(d.lens);
    sb_free(&d.key);
    sb_free(&d.quiet_text);
}

static void mock_do_control(struct mock *m, struct req *r, struct resp *out)
{
    char *json = NULL;
    if (strcmp(r->path, "/_mock/stats") == 0 && r->method == HTTP_GET) {
        json = stats_json(m);
    } else if (strcmp(r->path, "/_mock/stats") == 0 && r->method == HTTP_DELETE) {
        stats_reset(m);
        out->status = 204;
        return;
    } else if (strcmp(r->path, "/_mock/faults") == 0 && r->method == HTTP_GET) {
        json = faults_json(m);
    } else if (strcmp(r->path, "/_mock/faults") == 0 && r->method == HTTP_PUT) {
        char err[512];
        if (r->check && r->check->too_big) {
            s3_error(out, 413, "EntityTooLarge", "control bodies are limited to 64 KiB", r);
            return;
        }
        if (faults_apply_json(m, r->body ? r->body->data : "", r->body ? r->body->len : 0, err,
                              sizeof(err)) < 0) {
            out->status = 400;
            sb_puts(&out->head, "Content-Type: application/json\r\n");
            sb_puts(&out->body, "{\"error\":\"");
            sb_puts(&out->body, err); /* err holds no quotes or secrets */
            sb_puts(&out->body, "\"}");
            return;
        }
        json = faults_json(m);
    } else if (strcmp(r->path, "/_mock/health") == 0) {
        out->status = 200;
        sb_puts(&out->body, "ok\n");
        return;
    } else {
        s3_error(out, 404, "NoSuchControl",
                 "Control endpoints: GET|DELETE /_mock/stats, GET|PUT /_mock/faults, GET "
                 "/_mock/health",
                 r);
        return;
    }
    out->status = 200;
    sb_puts(&out->head, "Content-Type: application/json\r\n");
    sb_puts(&out->body, json ? json : "{}");
    free(json);
}

void s3_end(struct mock *m, struct req *r, struct resp *out)
{
    if (r->op == OP_CONTROL) {
        mock_do_control(m, r, out);
        return;
    }
    if (r->plan.error) {
        if (r->plan.error_status == 503)
            s3_error(out, 503, "SlowDown", "Please reduce your request rate.", r);
        else if (r->plan.error_status == 403)
            s3_error(out, 403, "AccessDenied", "Access Denied", r);
        else
            s3_error(out, 500, "InternalError",
                     "We encountered an internal error. Please try again.", r);
        return;
    }
    /* S3 answers this to a conditional write racing another one on the same key; the
     * write is not done. Unconditional PUTs never get it. */
    if (r->plan.conflict && r->op == OP_PUT_OBJECT &&
        (mock_hdr(r, "if-match") || mock_hdr(r, "if-none-match"))) {
        s3_error(out, 409, "ConditionalRequestConflict",
                 "A conflicting conditional operation is currently in progress against this "
                 "resource. Please try again.",
                 r);
        stat_add(&m->stats.faults[F_CONFLICT], 1);
        return;
    }
    char etag[33];
    switch (r->op) {
    case OP_LIST_BUCKETS: {
        struct sbuf x = {0};
        sb_puts(&x, XML_DECL "<ListAllMyBucketsResult xmlns=\"" S3_NS "\"><Owner><ID>"
                             "s3commit-mock</ID><DisplayName>s3commit-mock</DisplayName>"
                             "</Owner><Buckets>");
        store_list_buckets(m->store, mock_list_buckets_cb, &x);
        sb_puts(&x, "</Buckets></ListAllMyBucketsResult>");
        mock_answer_xml(out, &x);
        break;
    }
    case OP_CREATE_BUCKET: {
        if (r->check && !mock_verify_body(r, out, etag))
            return;
        int rc = store_create_bucket(m->store, r->bucket);
        if (rc == -EEXIST)
            s3_error(out, 409, "BucketAlreadyOwnedByYou",
                     "Your previous request to create the named bucket succeeded and you "
                     "already own it.",
                     r);
        else if (rc == -EINVAL)
            s3_error(out, 400, "InvalidBucketName", "The specified bucket is not valid.", r);
        else if (rc < 0)
            s3_error(out, 500, "InternalError", "creating the bucket failed", r);
        else {
            out->status = 200;
            sb_printf(&out->head, "Location: /%s\r\n", r->bucket);
        }
        break;
    }
    case OP_DELETE_BUCKET: {
        int rc = store_delete_bucket(m->store, r->bucket);
        if (rc == -ENOENT)
            s3_error(out, 404, "NoSuchBucket", "The specified bucket does not exist", r);
        else if (rc == -ENOTEMPTY)
            s3_error(out, 409, "BucketNotEmpty", "The bucket you tried to delete is not empty", r);
        else if (rc < 0)
            s3_error(out, 500, "InternalError", "deleting the bucket failed", r);
        else
            out->status = 204;
        break;
    }
    case OP_HEAD_BUCKET:
        out->status = 200;
        sb_printf(&out->head, "x-amz-bucket-region: %s\r\n", m->cfg.region);
        break;
    case OP_GET_BUCKET_LOCATION: {
        struct sbuf x = {0};
        sb_puts(&x, XML_DECL "<LocationConstraint xmlns=\"" S3_NS "\">");
        if (strcmp(m->cfg.region, "us-east-1") != 0)
            sb_xml(&x, m->cfg.region, strlen(m->cfg.region));
        sb_puts(&x, "</LocationConstraint>");
        mock_answer_xml(out, &x);
        break;
    }
    case OP_LIST_OBJECTS_V2:
    case OP_LIST_OBJECTS:
        mock_do_list(m, r, out, r->op == OP_LIST_OBJECTS_V2);
        break;
    case OP_PUT_OBJECT:
        mock_do_put(m, r, out);
        break;
    case OP_GET_OBJECT:
    case OP_HEAD_OBJECT:
        mock_do_get(m, r, out, r->op == OP_HEAD_OBJECT);
        break;
    case OP_DELETE_OBJECTS:
        mock_do_delete_objects(m, r, out);
        break;
    case OP_DELETE_OBJECT: {
        int rc = store_delete(m->store, r->bucket, r->key, r->klen);
        if (rc == -ENODEV)
            s3_error(out, 404, "NoSuchBucket", "The specified bucket does not exist", r);
        else if (rc < 0)
            s3_error(out, 500, "InternalError", "deleting the object failed", r);
        else
            out->status = 204;
        break;
    }
    default:
        s3_error(out, 501, "NotImplemented", "not implemented", r);
        break;
    }
    if (r->plan.written_error && out->status < 300 &&
        (r->op == OP_PUT_OBJECT || r->op == OP_DELETE_OBJECT)) {
        sb_free(&out->head);
        s3_error(out, 500, "InternalError", "We encountered an internal error. Please try again.",
                 r);
        stat_add(&m->stats.faults[F_WRITTEN_ERROR], 1);
    }
}
