/* Request objects and signing: a request object per transfer, reused from a free list;
 * its headers added in SigV4's sorted order and signed with the cached daily key; libcurl's
 * body, header and pre-request callbacks. It must never copy a PUT body into a staging
 * buffer or let a secret outlive the request that carried it. */
#include <ctype.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "common/clock.h"
#include "s3commit.h"
#include "transport/xport_int.h"

void xport__b64(const unsigned char *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

void xport__hex(const unsigned char *in, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Appends "Name: value" for libcurl and (sign) a name/value pair for SigV4. Header names
 * must be added in SigV4's sorted order when signed. */
static void xreq_hdr_add(struct xreq *r, const char *name, const char *value, bool sign)
{
    size_t nl = strlen(name), vl = strlen(value);
    size_t need = nl + 2 + vl + 1 + (sign ? nl + 1 + vl + 1 : 0);
    if (r->nlines >= XREQ_NHDR || r->hlen + need > sizeof(r->hdr)) {
        r->hdr_overflow = true;
        return;
    }
    char *line = r->hdr + r->hlen;
    memcpy(line, name, nl);
    line[nl] = ':';
    line[nl + 1] = ' ';
    memcpy(line + nl + 2, value, vl + 1);
    if (vl == 0)
        line[nl + 1] = '\0'; /* "Name:" removes a header libcurl would add */
    r->hlen += nl + 2 + vl + 1;
    r->lines[r->nlines].data = line;
    r->lines[r->nlines].next = NULL;
    if (r->nlines > 0)
        r->lines[r->nlines - 1].next = &r->lines[r->nlines];
    r->nlines++;
    if (sign) {
        char *n = r->hdr + r->hlen;
        memcpy(n, name, nl + 1);
        char *v = n + nl + 1;
        memcpy(v, value, vl + 1);
        r->hlen += nl + 1 + vl + 1;
        r->sh[r->nsh].name = n;
        r->sh[r->nsh].value = v;
        r->nsh++;
    }
}

static size_t xreq_on_read(char *buf, size_t size, size_t nitems, void *ud)
{
    struct xreq *r = ud;
    size_t cap = size * nitems, n = 0;
    while (n < cap && r->vi < r->iovcnt) {
        const struct iovec *v = &r->iov[r->vi];
        size_t left = v->iov_len - r->voff;
        if (left == 0) {
            r->vi++;
            r->voff = 0;
            continue;
        }
        size_t k = left < cap - n ? left : cap - n;
        memcpy(buf + n, (const char *)v->iov_base + r->voff, k);
        n += k;
        r->voff += k;
    }
    return n;
}

/* libcurl rewinds (offset 0) before a resend on a fresh connection; any offset works. */
static int xreq_on_seek(void *ud, curl_off_t off, int origin)
{
    struct xreq *r = ud;
    if (origin != SEEK_SET || off < 0 || (uint64_t)off > r->body_len)
        return CURL_SEEKFUNC_FAIL;
    uint64_t left = (uint64_t)off;
    r->vi = 0;
    r->voff = 0;
    while (r->vi < r->iovcnt && left >= r->iov[r->vi].iov_len) {
        left -= r->iov[r->vi].iov_len;
        r->vi++;
    }
    r->voff = (size_t)left;
    r->x->rewinds++;
    return CURL_SEEKFUNC_OK;
}

/* A buffer of at least need bytes: a spare one given back when one fits, else malloc'd. */
char *xreq_body_for(struct xport *x, size_t need, size_t *cap)
{
    for (int i = x->nspare - 1; i >= 0; i--) {
        if (x->spare_cap[i] >= need) {
            char *b = x->spare_body[i];
            *cap = x->spare_cap[i];
            x->nspare--;
            x->spare_body[i] = x->spare_body[x->nspare];
            x->spare_cap[i] = x->spare_cap[x->nspare];
            return b;
        }
    }
    x->body_allocs++;
    if (need >= XREQ_HUGE_BODY) {
        /* Whole huge pages: the kernel's copy out of the socket into a body (a reader's
         * largest cost) takes ~10% less CPU than into 4 KiB pages (docs/programs.md,
         * "Reader throughput"), for up to twice the memory of a body just over 1 MiB. */
        size_t sz = (need + XREQ_HUGE_PAGE - 1) & ~(size_t)(XREQ_HUGE_PAGE - 1);
        void *m = NULL;
        if (posix_memalign(&m, XREQ_HUGE_PAGE, sz) == 0) {
            (void)madvise(m, sz, MADV_HUGEPAGE); /* a hint: without it, plain pages */
            *cap = sz;
            return m;
        }
    }
    char *b = malloc(need);
    *cap = b ? need : 0;
    return b;
}

void xport_give_body(struct xport *x, void *buf, size_t cap)
{
    if (!buf)
        return;
    if (x->nspare < x->spare_max && cap <= XPORT_SPARE_BODY_MAX) {
        x->spare_body[x->nspare] = buf;
        x->spare_cap[x->nspare++] = cap;
        return;
    }
    /* Full: keep the larger buffer (a smaller one fits fewer bodies). */
    int small = 0;
    for (int i = 1; i < x->nspare; i++)
        if (x->spare_cap[i] < x->spare_cap[small])
            small = i;
    if (x->nspare > 0 && cap <= XPORT_SPARE_BODY_MAX && x->spare_cap[small] < cap) {
        free(x->spare_body[small]);
        x->spare_body[small] = buf;
        x->spare_cap[small] = cap;
        return;
    }
    free(buf);
}

void xport_keep_bodies(struct xport *x, int n)
{
    x->spare_max = n < 0 ? 0 : n > XPORT_SPARE_BODIES_MAX ? XPORT_SPARE_BODIES_MAX : n;
    while (x->nspare > x->spare_max)
        free(x->spare_body[--x->nspare]);
}

int xreq_body_room(struct xreq *r, size_t n)
{
    if (r->blen + n + 1 <= r->bcap)
        return 0;
    size_t cap = r->bcap ? r->bcap : 4096;
    while (cap < r->blen + n + 1)
        cap *= 2;
    char *b = realloc(r->body, cap);
    if (!b)
        return S3C_ENOMEM;
    r->body = b;
    r->bcap = cap;
    return 0;
}

static size_t xreq_on_write(char *data, size_t size, size_t nmemb, void *ud)
{
    struct xreq *r = ud;
    size_t n = size * nmemb;
    if (r->blen + n > r->blimit) {
        /* A too-big GET/LIST fails the transfer; of an error document keep what fits. */
        if (r->op == XPORT_OP_GET || r->op == XPORT_OP_LIST)
            return CURL_WRITEFUNC_ERROR;
        n = r->blimit - r->blen;
        if (n == 0)
            return size * nmemb;
    }
    if (r->blen == 0 && r->op == XPORT_OP_GET && !r->reserved) {
        /* Sized once from Content-Length: no growth by doubling, no copy on the way. */
        curl_off_t clen = -1;
        long status = 0;
        r->reserved = true;
        r->data_2xx = curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
                      status >= 200 && status < 300;
        if (curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen) == CURLE_OK &&
            clen > 0 && (uint64_t)clen < XREQ_RESERVE_MAX && (size_t)clen + 1 > r->bcap) {
            xport_give_body(r->x, r->body, r->bcap); /* empty: nothing to keep */
            r->body = xreq_body_for(r->x, (size_t)clen + 1, &r->bcap);
            if (!r->body)
                return CURL_WRITEFUNC_ERROR;
        }
    }
    if (xreq_body_room(r, n) < 0)
        return CURL_WRITEFUNC_ERROR;
    memcpy(r->body + r->blen, data, n);
    r->blen += n;
    r->body[r->blen] = '\0';
    if (r->on_data && r->data_2xx)
        r->on_data(r->data_ctx, (const unsigned char *)r->body, r->blen - n,
                   (const unsigned char *)data, n);
    return size * nmemb;
}

static void xreq_header_value(const char *line, size_t len, size_t namelen, char *out, size_t cap)
{
    const char *v = line + namelen, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t n = (size_t)(end - v);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, v, n);
    out[n] = '\0';
}

static size_t xreq_on_header(char *line, size_t size, size_t nitems, void *ud)
{
    struct xreq *r = ud;
    size_t len = size * nitems;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        r->etag[0] = r->reqid[0] = '\0'; /* a new answer (after 100 or a resend) */
        r->object_size = 0;
        r->cr_seen = false;
        r->blen = 0;
    } else if (len > 5 && strncasecmp(line, "etag:", 5) == 0) {
        xreq_header_value(line, len, 5, r->etag, sizeof(r->etag));
    } else if (len > 17 && strncasecmp(line, "x-amz-request-id:", 17) == 0) {
        xreq_header_value(line, len, 17, r->reqid, sizeof(r->reqid));
    } else if (len > 14 && strncasecmp(line, "content-range:", 14) == 0) {
        char v[128];
        xreq_header_value(line, len, 14, v, sizeof(v));
        xreq_content_range(r, v, strlen(v));
    }
    return len;
}

static int xreq_on_prereq(void *ctx, char *remote_ip, char *local_ip, int remote_port,
                          int local_port)
{
    struct xreq *r = ctx;
    struct xport *x = r->x;
    (void)remote_ip, (void)local_ip, (void)remote_port, (void)local_port;
    /* Called before each sending of the request, libcurl's own resends included (a reused
     * connection that died under it): every sending starts at byte 0 of the body, whether
     * or not libcurl thinks it must rewind (it does not when no body byte had left yet,
     * though its read callback may already have taken some). */
    if (r->sends++ > 0)
        x->resends++;
    r->vi = 0;
    r->voff = 0;
    pool_on_prereq(&x->pool, r);
    return CURL_PREREQFUNC_OK;
}

static int xreq_easy_setup(struct xport *x, struct xreq *r)
{
    const struct cfg_s3 *s3 = &x->cfg.s3;
    CURL *e = r->easy;
    long low_time = (s3->low_speed_time_ms + 999) / 1000;
    CURLcode c = CURLE_OK;

#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (c == CURLE_OK)                                                                         \
            c = curl_easy_setopt(e, opt, val);                                                     \
    } while (0)
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PRIVATE, r);
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1); /* one request per connection */
    SET(CURLOPT_WRITEFUNCTION, xreq_on_write);
    SET(CURLOPT_WRITEDATA, r);
    SET(CURLOPT_HEADERFUNCTION, xreq_on_header);
    SET(CURLOPT_HEADERDATA, r);
    SET(CURLOPT_READFUNCTION, xreq_on_read);
    SET(CURLOPT_READDATA, r);
    SET(CURLOPT_SEEKFUNCTION, xreq_on_seek);
    SET(CURLOPT_SEEKDATA, r);
    SET(CURLOPT_PREREQFUNCTION, xreq_on_prereq);
    SET(CURLOPT_PREREQDATA, r);
    SET(CURLOPT_OPENSOCKETFUNCTION, pool_opensocket_cb);
    SET(CURLOPT_OPENSOCKETDATA, r);
    SET(CURLOPT_CLOSESOCKETFUNCTION, pool_closesocket_cb);
    SET(CURLOPT_CLOSESOCKETDATA, &x->pool);
    SET(CURLOPT_ERRORBUFFER, r->errbuf);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)s3->connect_timeout_ms);
    if (s3->low_speed_limit_bytes > 0 && low_time > 0) {
        SET(CURLOPT_LOW_SPEED_LIMIT, (long)s3->low_speed_limit_bytes);
        SET(CURLOPT_LOW_SPEED_TIME, low_time);
    }
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_UPLOAD_BUFFERSIZE, (long)XPORT_UPLOAD_BUFFER);
    SET(CURLOPT_BUFFERSIZE, 256L * 1024);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    /* Keys are sent exactly as signed: without this libcurl removes "." and ".." segments
     * from the path, and "a/../b" would be refused (signed) or stored as "b" (anonymous). */
    SET(CURLOPT_PATH_AS_IS, 1L);
    SET(CURLOPT_SSL_VERIFYPEER, s3->tls_verify ? 1L : 0L);
    SET(CURLOPT_SSL_VERIFYHOST, s3->tls_verify ? 2L : 0L);
    if (s3->ca_file[0])
        SET(CURLOPT_CAINFO, s3->ca_file);
#undef SET
    return c == CURLE_OK ? 0 : S3C_EINVAL;
}

struct xreq *xreq_alloc(struct xport *x)
{
    struct xreq *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->x = x;
    r->easy = curl_easy_init();
    if (!r->easy || xreq_easy_setup(x, r) < 0) {
        if (r->easy)
            curl_easy_cleanup(r->easy);
        free(r);
        return NULL;
    }
    r->next_all = x->all_reqs;
    x->all_reqs = r;
    return r;
}

/* A request object from the free list (allocated only when the list is empty). */
struct xreq *xreq_get(struct xport *x)
{
    struct xreq *r = x->free_reqs;
    if (r) {
        x->free_reqs = r->next_free;
        return r;
    }
    return xreq_alloc(x);
}

/* Resets the per-request state of r for op on key (NULL: the bucket). */
int xreq_begin(struct xport *x, struct xreq *r, enum xreq_kind kind, enum xport_op op,
               const char *key)
{
    r->kind = kind;
    r->op = op;
    r->opened = false;
    r->nlines = r->nsh = 0;
    r->hlen = 0;
    r->hdr_overflow = false;
    r->iovcnt = 0;
    r->body_len = 0;
    r->vi = 0;
    r->voff = 0;
    r->sends = 0;
    r->blen = 0;
    r->reserved = false;
    r->data_2xx = false;
    r->on_data = NULL;
    r->data_ctx = NULL;
    r->etag[0] = r->reqid[0] = r->errbuf[0] = r->errline[0] = '\0';
    r->object_size = 0;
    r->ranged = r->cr_seen = false;
    r->query[0] = '\0';
    r->blimit = op == XPORT_OP_GET    ? SIZE_MAX - 1
                : op == XPORT_OP_LIST ? XREQ_LISTBODY_MAX
                                      : XREQ_ERRBODY_MAX;
    if (key) {
        size_t kl = strlen(key);
        if (kl == 0 || kl > XPORT_KEY_MAX)
            return S3C_EINVAL;
        memcpy(r->key, key, kl + 1);
    } else {
        r->key[0] = '\0';
    }
    if (xport__build_path(x, key, r->path, sizeof(r->path)) < 0)
        return S3C_EINVAL;
    return 0;
}

/* x-amz-date, formatted once per second (gmtime_r and strftime were ~0.5 us a request). */
static void xreq_amz_date(struct xport *x, char out[17])
{
    time_t now = time(NULL);
    if (now != x->amz_sec || !x->amz_date[0]) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(x->amz_date, sizeof(x->amz_date), "%Y%m%dT%H%M%SZ", &tm);
        x->amz_sec = now;
    }
    memcpy(out, x->amz_date, sizeof(x->amz_date));
}

/* Adds the signed headers in SigV4's sorted order (content-md5, host, if-*, range,
 * x-amz-*), then Authorization, then the unsigned ones, and writes r->url. */
int xreq_sign(struct xport *x, struct xreq *r, const char *method, const struct xreq_sign_extra *sx)
{
    const struct cfg_s3 *s3 = &x->cfg.s3;
    bool anon = s3->access_key_id[0] == '\0';
    char date[17], auth[1024];

    xreq_amz_date(x, date);
    if (sx->content_md5)
        xreq_hdr_add(r, "Content-MD5", sx->content_md5, true);
    xreq_hdr_add(r, "Host", x->hosthdr, true);
    if (sx->if_match)
        xreq_hdr_add(r, "If-Match", sx->if_match, true);
    if (sx->if_none_match)
        xreq_hdr_add(r, "If-None-Match", sx->if_none_match, true);
    if (sx->range)
        xreq_hdr_add(r, "Range", sx->range, true);
    if (sx->checksum_name)
        xreq_hdr_add(r, sx->checksum_name, sx->checksum_value, true);
    if (!anon) {
        xreq_hdr_add(r, "x-amz-content-sha256", sx->payload_hash, true);
        xreq_hdr_add(r, "x-amz-date", date, true);
        if (s3->session_token[0])
            xreq_hdr_add(r, "x-amz-security-token", s3->session_token, true);
        struct sigv4_request sr = {
            .method = method,
            .path = r->path,
            .query = r->query,
            .headers = r->sh,
            .nheaders = (size_t)r->nsh,
            .payload_hash = sx->payload_hash,
            .amz_date = date,
            .region = s3->region,
            .service = "s3",
            .access_key = s3->access_key_id,
            .secret_key = s3->secret_access_key,
        };
        /* The derived key changes once a day: four HMACs saved on every other request. */
        if (memcmp(x->sk_date, date, 8) != 0) {
            if (sigv4_signing_key(s3->secret_access_key, date, s3->region, "s3", x->signing_key) <
                0)
                return S3C_ENOMEM; /* OpenSSL could not hash: out of memory */
            memcpy(x->sk_date, date, 8);
            x->sk_date[8] = '\0';
        }
        char sig[65], names[512];
        size_t nl = 0;
        for (int i = 0; i < r->nsh; i++) { /* added sorted and unique: canonical already */
            for (const char *c = r->sh[i].name; *c && nl < sizeof(names) - 2; c++)
                names[nl++] = (char)tolower((unsigned char)*c);
            names[nl++] = i + 1 < r->nsh ? ';' : '\0';
        }
        if (sigv4_signature_with_key(&sr, x->signing_key, sig) < 0)
            return S3C_ENOMEM;
        int an = snprintf(auth, sizeof(auth),
                          "AWS4-HMAC-SHA256 Credential=%s/%.8s/%s/s3/aws4_request, "
                          "SignedHeaders=%s, Signature=%s",
                          s3->access_key_id, date, s3->region, names, sig);
        if (an < 0 || (size_t)an >= sizeof(auth))
            return S3C_EINVAL;
        xreq_hdr_add(r, "Authorization", auth, false);
        OPENSSL_cleanse(auth, sizeof(auth));
    }
    xreq_hdr_add(r, "Expect", "", false); /* no 100-continue round trip */
    xreq_hdr_add(r, "Accept", "", false);
    if (r->hdr_overflow)
        return S3C_EINVAL;

    bool q = r->query[0] != '\0';
    int n =
        snprintf(r->url, sizeof(r->url), "%s%s%s%s", x->origin, r->path, q ? "?" : "", r->query);
    if (n < 0 || (size_t)n >= sizeof(r->url))
        return S3C_EINVAL;
    return 0;
}

/* Signs r and hands it to libcurl. */
long xreq_timeout_ms(const struct xport *x, const struct xreq *r)
{
    long timeout = x->cfg.s3.request_timeout_ms;
    if (r->kind == XREQ_HEARTBEAT) {
        long hb = x->cfg.persistence.heartbeat_interval_ms;
        if (hb < 1000)
            hb = 1000;
        if (hb < timeout)
            timeout = hb; /* a stuck heartbeat must not hold a connection for long */
    }
    return timeout;
}

int xreq_sign_and_start(struct xport *x, struct xreq *r, const char *method,
                        const struct xreq_sign_extra *sx)
{
    int rc = xreq_sign(x, r, method, sx);
    if (rc < 0)
        return rc;
    CURL *e = r->easy;
    CURLcode c = curl_easy_setopt(e, CURLOPT_URL, r->url);
    if (c == CURLE_OK)
        c = curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->nlines ? &r->lines[0] : NULL);
    if (c == CURLE_OK)
        c = curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    if (c == CURLE_OK)
        c = curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    if (c == CURLE_OK && r->op == XPORT_OP_PUT) {
        c = curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        if (c == CURLE_OK)
            c = curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
    } else if (c == CURLE_OK && (r->op == XPORT_OP_HEAD || r->op == XPORT_OP_HEAD_BUCKET)) {
        c = curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    }
    if (c == CURLE_OK)
        c = curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, xreq_timeout_ms(x, r));
    if (c == CURLE_OK)
        c = curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, r->kind == XREQ_REFILL ? 1L : 0L);
    if (c != CURLE_OK) /* the URL is copied: out of memory is not a bad argument */
        return c == CURLE_OUT_OF_MEMORY ? S3C_ENOMEM : S3C_EINVAL;

    r->start_ns = s3c__now_ns();
    CURLMcode mc = curl_multi_add_handle(x->multi, e);
    if (mc != CURLM_OK)
        return mc == CURLM_OUT_OF_MEMORY ? S3C_ENOMEM : S3C_EIO;
    r->active = true;
    pool_on_start(&x->pool.pol);
    return 0;
}

/* Starts a request with no body (GET, HEAD, HeadBucket, LIST). */
int xreq_start_simple(struct xport *x, struct xreq *r, const char *method, const char *range)
{
    struct xreq_sign_extra sx = {.range = range, .payload_hash = XPORT_EMPTY_SHA256};
    return xreq_sign_and_start(x, r, method, &sx);
}

const char *xreq_range(struct xreq *r, uint64_t first, uint64_t last)
{
    r->ranged = true;
    r->range_first = first;
    r->range_last = last;
    snprintf(r->range_hdr, sizeof(r->range_hdr), "bytes=%llu-%llu", (unsigned long long)first,
             (unsigned long long)last);
    return r->range_hdr;
}

/* Digits at *p up to end, as a number; false when there are none or too many. */
static bool xreq_number(const char **p, const char *end, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    while (*p < end && **p >= '0' && **p <= '9') {
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(**p - '0');
        (*p)++;
    }
    *out = v;
    return *p > s;
}

void xreq_content_range(struct xreq *r, const char *v, size_t n)
{
    const char *p = v, *end = v + n;
    uint64_t a, b, total = 0;
    r->cr_seen = false;
    r->object_size = 0;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (end - p < 6 || strncasecmp(p, "bytes ", 6) != 0)
        return;
    p += 6;
    if (!xreq_number(&p, end, &a) || p == end || *p++ != '-' || !xreq_number(&p, end, &b) ||
        p == end || *p++ != '/' || b < a)
        return;
    /* A total of "*" (the size unknown) is not usable: callers need the object's size. */
    if (!xreq_number(&p, end, &total) || b >= total)
        return;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (p != end)
        return;
    r->cr_seen = true;
    r->cr_first = a;
    r->cr_last = b;
    r->object_size = total;
}

int xreq_range_answer(struct xreq *r, long status)
{
    char *m = r->s3e.message;
    size_t mcap = sizeof(r->s3e.message);
    unsigned long long first = r->range_first, last = r->range_last;
    if (status == 200) {
        /* The Range was not honoured (or not understood on the way): the whole object. */
        if (first >= r->blen) {
            snprintf(m, mcap,
                     "asked for bytes %llu-%llu, the answer is the whole object (200) of %zu bytes",
                     first, last, r->blen);
            return 416; /* what S3 answers for a range past the end: no retry changes it */
        }
        size_t n = (size_t)((last < r->blen - 1 ? last : r->blen - 1) - first + 1);
        r->object_size = r->blen;
        memmove(r->body, r->body + first, n);
        r->blen = n;
        r->body[n] = '\0';
        return 0;
    }
    if (status != 206)
        return 0; /* another 2xx: no body to check */
    if (!r->cr_seen) {
        snprintf(m, mcap, "asked for bytes %llu-%llu, the 206 answer has no usable Content-Range",
                 first, last);
        return 503;
    }
    uint64_t want_last = r->object_size && r->object_size - 1 < last ? r->object_size - 1 : last;
    if (r->cr_first != first || r->cr_last != want_last ||
        r->blen != r->cr_last - r->cr_first + 1) {
        snprintf(m, mcap,
                 "asked for bytes %llu-%llu, the 206 answer says bytes %llu-%llu and holds %zu",
                 first, last, (unsigned long long)r->cr_first, (unsigned long long)r->cr_last,
                 r->blen);
        return 503;
    }
    return 0;
}

void xreq_release(struct xport *x, struct xreq *r)
{
    if (r->bcap > XREQ_KEEP_BODY_CAP) {
        free(r->body);
        r->body = NULL;
        r->bcap = 0;
    }
    r->blen = 0;
    r->done = NULL;
    r->ctx = NULL;
    r->next_free = x->free_reqs;
    x->free_reqs = r;
}

/* Digest over the body spans with the transport's reusable context. */
int xreq_digest_spans(struct xport *x, const EVP_MD *md, const struct iovec *iov, int n,
                      unsigned char *out)
{
    unsigned int len = 0;
    if (EVP_DigestInit_ex(x->md, md, NULL) != 1)
        return S3C_EIO;
    for (int i = 0; i < n; i++)
        if (iov[i].iov_len && EVP_DigestUpdate(x->md, iov[i].iov_base, iov[i].iov_len) != 1)
            return S3C_EIO;
    return EVP_DigestFinal_ex(x->md, out, &len) == 1 ? 0 : S3C_EIO;
}

void xreq_destroy(struct xreq *r)
{
    curl_easy_cleanup(r->easy);
    free(r->iov);
    free(r->body);
    s3xml_list_free(&r->list);
    OPENSSL_cleanse(r->hdr, sizeof(r->hdr)); /* held the session token */
    free(r);
}
