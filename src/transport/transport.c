/* S3 requests on libcurl's multi_socket_action API, driven by evloop (one epoll fd, one
 * timerfd, one eventfd) on the caller's thread, with SigV4 signing and body checksums.
 * It must never print, exit, copy a PUT body into a staging buffer, or let a secret reach
 * a string it produces. Pool policy (how many connections, heartbeats) lives in src/pool. */
#include "transport/transport.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "pool/pool.h"
#include "transport/evloop.h"
#include "transport/s3xml.h"
#include "transport/sigv4.h"

#define XREQ_PATH_MAX 3328   /* "/" bucket "/" + a 1024-byte key encoded (x3) */
#define XREQ_QUERY_MAX 10240 /* list: prefix, start-after, token, each encoded */
#define XREQ_URL_MAX (300 + XREQ_PATH_MAX + XREQ_QUERY_MAX)
#define XREQ_HDR_MAX 12288 /* header lines and their signing copies (token <= 2 KiB) */
#define XREQ_NHDR 20
#define XREQ_ERRBODY_MAX (64 * 1024)  /* error XML kept from PUT/HEAD answers */
#define XREQ_LISTBODY_MAX (64u << 20) /* a ListObjectsV2 page */
#define XREQ_KEEP_BODY_CAP (4u << 20) /* larger response buffers are freed after use */
#define XPORT_KEY_MAX 1024            /* S3's limit on key length */
/* libcurl's upload buffer. libcurl copies the body into it (it has no zero-copy upload)
 * and the kernel copies it out again, so it is kept small enough to stay in L1/L2 between
 * the two copies: 48 KiB moved 1 MiB PUTs at ~0.24 CPU s/GB where 2 MiB (one send per
 * body) took ~0.39, and it stays under loopback's 65483-byte MSS, which a 64 KiB buffer
 * overshoots by a few bytes, sending a tiny extra segment per send (docs/transport.md). */
#define XPORT_UPLOAD_BUFFER (48 * 1024)

/* hex SHA-256 of zero bytes: the payload hash of a request without a body */
#define XPORT_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

enum xreq_kind { XREQ_USER, XREQ_REFILL, XREQ_HEARTBEAT };

struct xreq {
    struct xport *x;
    CURL *easy;
    struct xreq *next_free; /* free list link */
    struct xreq *next_all;  /* every request object, for xport_free */
    bool active;            /* added to the multi handle */
    enum xreq_kind kind;
    enum xport_op op;
    xport_done_fn done;
    void *ctx;
    uint64_t start_ns;
    bool opened;       /* a refill that opened its socket */
    int sends;         /* times libcurl started sending this request (> 1: it resent it) */
    unsigned hb_round; /* the heartbeat round this heartbeat belongs to */
    bool held;         /* a heartbeat holding its connection (receive paused) until its round
                          has a connection each */

    /* PUT body: a copy of the caller's span list (not of the bytes) and a cursor. */
    struct iovec *iov;
    int iovcnt, iovcap;
    uint64_t body_len;
    int vi;      /* current span */
    size_t voff; /* offset in it */

    /* request headers: "Name: value" lines for libcurl, name/value pairs for SigV4 */
    struct curl_slist lines[XREQ_NHDR];
    int nlines;
    struct sigv4_header sh[XREQ_NHDR];
    int nsh;
    char hdr[XREQ_HDR_MAX];
    size_t hlen;
    bool hdr_overflow;
    char path[XREQ_PATH_MAX];
    char query[XREQ_QUERY_MAX];
    char url[XREQ_URL_MAX];

    /* response */
    char *body;
    size_t blen, bcap, blimit;
    char etag[256];
    char reqid[128];
    char errbuf[CURL_ERROR_SIZE];
    char errline[2048];
    struct s3xml_error s3e;
    struct s3xml_list list;
    char key[XPORT_KEY_MAX + 1]; /* for error lines */
};

struct sockwatch {
    struct evloop_watch w;
    struct sockwatch *next_free;
};

struct fdwatch {
    struct evloop_watch w;
    void (*cb)(void *ctx);
    void *ctx;
    struct fdwatch *next;
};

struct xport {
    struct s3c_config cfg; /* a copy; secrets wiped at free */
    struct evloop *ev;
    CURLM *multi;
    struct evloop_timer curl_timer;
    struct evloop_timer hb_timer;
    struct evloop_timer refill_timer;
    struct evloop_timer hb_release_timer; /* ends a heartbeat round's hold at the latest */
    struct pool pool;
    bool closing;

    /* endpoint, parsed once */
    bool https;
    char host[256];        /* host as in the URL ("127.0.0.1", "[::1]") */
    char port[8];          /* "" or "9000" */
    char hosthdr[384];     /* the Host header value (bucket. prepended when virtual) */
    char origin[400];      /* "http://host:port" (bucket. when virtual) */
    char bucket_path[200]; /* "/bucket" (path style) or "" (virtual) */

    struct xreq *free_reqs;
    struct xreq *all_reqs;
    struct sockwatch *free_socks;
    struct fdwatch *fdwatches;
    int *socks; /* the pool's open sockets (for closing one after a failed heartbeat) */
    int nsocks, socks_cap;
    int user_in_flight;
    bool hb_refused_logged; /* a heartbeat refusal (4xx) was logged; reset by a success */
    int hb_unplaced;        /* heartbeats of this round not yet on a connection */
    unsigned hb_round;      /* the current heartbeat round */
    bool hb_release_due;    /* the last one got its connection: release the held ones */
    EVP_MD_CTX *md;
    unsigned char signing_key[32]; /* derived from the secret for sk_date; wiped at free */
    char sk_date[9];               /* "YYYYMMDD" the key is for, "" when none */

    uint64_t requests, bytes_sent, bytes_received, refills, rewinds, resends;
};

/* ---- small helpers ------------------------------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_global_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static const char *op_name(enum xport_op op)
{
    switch (op) {
    case XPORT_OP_PUT:
        return "PUT";
    case XPORT_OP_GET:
        return "GET";
    case XPORT_OP_HEAD:
        return "HEAD";
    case XPORT_OP_HEAD_BUCKET:
        return "HEAD-BUCKET";
    case XPORT_OP_LIST:
        return "LIST";
    }
    return "?";
}

static void b64(const unsigned char *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static void hex(const unsigned char *in, size_t n, char *out)
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
static void hdr_add(struct xreq *r, const char *name, const char *value, bool sign)
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

/* ---- URLs --------------------------------------------------------------------------- */

static int parse_endpoint(struct xport *x, char *err, size_t errlen)
{
    const struct cfg_s3 *s3 = &x->cfg.s3;
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    int rc = S3C_EINVAL;

    if (!u)
        return S3C_ENOMEM;
    if (curl_url_set(u, CURLUPART_URL, s3->endpoint, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf(err, errlen,
                 "transport: s3.endpoint is not a URL (got \"%s\"); use "
                 "http(s)://host[:port]",
                 s3->endpoint);
        goto out_free;
    }
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        snprintf(err, errlen,
                 "transport: s3.endpoint must start with http:// or https:// (got \"%s\")",
                 s3->endpoint);
        goto out_free;
    }
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && strcmp(path, "/") != 0) {
        snprintf(err, errlen,
                 "transport: s3.endpoint must not have a path (got \"%s\"); the bucket "
                 "goes in s3.bucket",
                 s3->endpoint);
        goto out_free;
    }
    x->https = strcmp(scheme, "https") == 0;
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        port = NULL;
    snprintf(x->host, sizeof(x->host), "%s", host);
    snprintf(x->port, sizeof(x->port), "%s", port ? port : "");
    bool virt = s3->addressing == CFG_ADDR_VIRTUAL;
    int n = snprintf(x->hosthdr, sizeof(x->hosthdr), "%s%s%s%s%s", virt ? s3->bucket : "",
                     virt ? "." : "", x->host, x->port[0] ? ":" : "", x->port);
    int m = snprintf(x->origin, sizeof(x->origin), "%s://%s", scheme, x->hosthdr);
    if (n < 0 || (size_t)n >= sizeof(x->hosthdr) || m < 0 || (size_t)m >= sizeof(x->origin)) {
        snprintf(err, errlen,
                 "transport: s3.endpoint host is too long (%zu bytes; at most %zu with the "
                 "bucket, when virtual-host addressing); use a shorter host name",
                 strlen(x->host), sizeof(x->hosthdr) - 8);
        goto out_free;
    }
    if (virt) {
        x->bucket_path[0] = '\0';
    } else {
        x->bucket_path[0] = '/';
        if (sigv4_uri_encode(s3->bucket, strlen(s3->bucket), 0, x->bucket_path + 1,
                             sizeof(x->bucket_path) - 1) < 0) {
            snprintf(err, errlen,
                     "transport: s3.bucket is too long once URI-encoded (at most %zu bytes); "
                     "S3 bucket names are 3-63 characters",
                     sizeof(x->bucket_path) - 2);
            goto out_free;
        }
    }
    rc = 0;
out_free:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
    return rc;
}

/* Writes the wire path for key (NULL: the bucket). Returns its length or -1. */
static int build_path(const struct xport *x, const char *key, char *out, size_t outlen)
{
    size_t bl = strlen(x->bucket_path);
    if (bl + 2 > outlen)
        return -1;
    memcpy(out, x->bucket_path, bl);
    if (!key) {
        if (bl == 0)
            out[bl++] = '/';
        out[bl] = '\0';
        return (int)bl;
    }
    out[bl++] = '/';
    int n = sigv4_uri_encode(key, strlen(key), 1, out + bl, outlen - bl);
    if (n < 0)
        return -1;
    return (int)bl + n;
}

int xport_url(const struct xport *x, const char *key, const char *query, char *out, size_t outlen)
{
    char path[XREQ_PATH_MAX];
    if (build_path(x, key, path, sizeof(path)) < 0)
        return -1;
    bool q = query && query[0];
    int n = snprintf(out, outlen, "%s%s%s%s", x->origin, path, q ? "?" : "", q ? query : "");
    return (n < 0 || (size_t)n >= outlen) ? -1 : n;
}

/* ---- libcurl callbacks -------------------------------------------------------------- */

static size_t on_read(char *buf, size_t size, size_t nitems, void *ud)
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
static int on_seek(void *ud, curl_off_t off, int origin)
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

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud)
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
    if (r->blen + n + 1 > r->bcap) {
        size_t cap = r->bcap ? r->bcap : 4096;
        while (cap < r->blen + n + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b)
            return CURL_WRITEFUNC_ERROR;
        r->body = b;
        r->bcap = cap;
    }
    memcpy(r->body + r->blen, data, n);
    r->blen += n;
    r->body[r->blen] = '\0';
    return size * nmemb;
}

static void header_value(const char *line, size_t len, size_t namelen, char *out, size_t cap)
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

static size_t on_header(char *line, size_t size, size_t nitems, void *ud)
{
    struct xreq *r = ud;
    size_t len = size * nitems;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        r->etag[0] = r->reqid[0] = '\0'; /* a new answer (after 100 or a resend) */
        r->blen = 0;
    } else if (len > 5 && strncasecmp(line, "etag:", 5) == 0) {
        header_value(line, len, 5, r->etag, sizeof(r->etag));
    } else if (len > 17 && strncasecmp(line, "x-amz-request-id:", 17) == 0) {
        header_value(line, len, 17, r->reqid, sizeof(r->reqid));
    }
    return len;
}

static curl_socket_t on_opensocket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct xreq *r = clientp;
    (void)purpose;
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    struct xport *x = r->x;
    if (x->nsocks < x->socks_cap)
        x->socks[x->nsocks++] = fd;
    pool_on_open(&r->x->pool);
    if (r->kind == XREQ_REFILL && !r->opened) {
        r->opened = true;
        pool_refill_opened(&r->x->pool);
    }
    return fd;
}

static void schedule_refill(struct xport *x, uint64_t at_ns)
{
    if (x->closing)
        return;
    if (!x->refill_timer.armed || x->refill_timer.deadline_ns > at_ns)
        evloop_timer_arm(x->ev, &x->refill_timer, at_ns);
}

static int on_closesocket(void *clientp, curl_socket_t fd)
{
    struct xport *x = clientp;
    for (int i = 0; i < x->nsocks; i++) {
        if (x->socks[i] == fd) {
            x->socks[i] = x->socks[--x->nsocks];
            break;
        }
    }
    pool_on_close(&x->pool);
    /* Replace it once libcurl is done with this call (never start transfers from inside
     * a libcurl callback). */
    schedule_refill(x, s3c__now_ns());
    return close(fd);
}

static void on_sock_event(void *ctx, int fd, unsigned events);

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct xport *x = userp;
    struct sockwatch *w = socketp;
    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (w) {
            evloop_watch_del(x->ev, &w->w);
            curl_multi_assign(x->multi, s, NULL);
            w->next_free = x->free_socks;
            x->free_socks = w;
        }
        return 0;
    }
    if (!w) {
        if (x->free_socks) {
            w = x->free_socks;
            x->free_socks = w->next_free;
        } else {
            w = calloc(1, sizeof(*w));
            if (!w)
                return -1;
        }
        memset(&w->w, 0, sizeof(w->w));
        w->w.fd = s;
        w->w.cb = on_sock_event;
        w->w.ctx = x;
        curl_multi_assign(x->multi, s, w);
    }
    unsigned ev =
        (what & CURL_POLL_IN ? EVLOOP_READ : 0u) | (what & CURL_POLL_OUT ? EVLOOP_WRITE : 0u);
    return evloop_watch_set(x->ev, &w->w, ev) < 0 ? -1 : 0;
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    struct xport *x = userp;
    (void)m;
    if (timeout_ms < 0)
        evloop_timer_disarm(x->ev, &x->curl_timer);
    else
        evloop_timer_arm(x->ev, &x->curl_timer, s3c__now_ns() + (uint64_t)timeout_ms * 1000000u);
    return 0;
}

/* ---- heartbeat rounds ----------------------------------------------------------------
 * libcurl always reuses the first idle connection it finds, and on a fast server a
 * heartbeat finishes before the next one is even looked at, so a round of n heartbeats
 * would check one connection n times and never the others. So each heartbeat, once it
 * has its connection, holds it (receive paused; the request still goes out) until the
 * round's last heartbeat has one too: n heartbeats, n different idle connections. */

static void hb_release(struct xport *x)
{
    x->hb_release_due = false;
    x->hb_unplaced = 0;
    evloop_timer_disarm(x->ev, &x->hb_release_timer);
    for (struct xreq *r = x->all_reqs; r; r = r->next_all) {
        if (r->held) {
            r->held = false;
            curl_easy_pause(r->easy, CURLPAUSE_CONT);
        }
    }
}

static void on_hb_release_timer(void *ctx)
{
    hb_release(ctx); /* a heartbeat could not get a connection in time: stop holding */
}

static int on_prereq(void *ctx, char *remote_ip, char *local_ip, int remote_port, int local_port)
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
    /* Only a first sending of this round's heartbeats counts: a resend or a late one from
     * the previous round must not release the round early. */
    if (r->kind != XREQ_HEARTBEAT || r->sends != 1 || r->hb_round != x->hb_round ||
        x->hb_unplaced <= 0)
        return CURL_PREREQFUNC_OK;
    if (--x->hb_unplaced > 0) {
        r->held = true;
        curl_easy_pause(r->easy, CURLPAUSE_RECV);
    } else {
        x->hb_release_due = true; /* done by the loop, outside libcurl's callbacks */
    }
    return CURL_PREREQFUNC_OK;
}

/* ---- completion --------------------------------------------------------------------- */

/* Ends the connection a failed heartbeat used. libcurl still owns the fd: shutdown()
 * only makes it dead, so libcurl's liveness check discards it (close callback, counted,
 * replaced) before anything else can use it. */
static void end_connection(struct xport *x, struct xreq *r)
{
    long lport = 0;
    if (curl_easy_getinfo(r->easy, CURLINFO_LOCAL_PORT, &lport) != CURLE_OK || lport <= 0)
        return;
    for (int i = 0; i < x->nsocks; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(x->socks[i], (struct sockaddr *)&ss, &sl) < 0)
            continue;
        uint16_t p = ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port;
        if (ntohs(p) == lport) {
            shutdown(x->socks[i], SHUT_RDWR);
            return;
        }
    }
}

static void req_release(struct xport *x, struct xreq *r)
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

/* Makes s fit on one log line inside double quotes: control bytes become spaces and '"'
 * becomes '\''. Server-supplied text (an S3 Message) can hold both. */
static void one_line(char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            *s = ' ';
        else if (c == '"')
            *s = '\'';
        else if (c == '\\')
            *s = '/'; /* a trailing backslash would escape the closing quote */
    }
}

/* What to do about a transfer error, for the ones a config change fixes. */
static const char *curl_hint(int code)
{
    switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
        return "; the endpoint's certificate was refused: if its CA is private, set s3.ca_file "
               "to that CA; if the name does not match, use the name in the certificate in "
               "s3.endpoint";
    case CURLE_SSL_CACERT_BADFILE:
        return "; s3.ca_file could not be read as PEM certificates";
    case CURLE_SSL_CONNECT_ERROR:
        return "; the TLS handshake failed: check that s3.endpoint speaks https on that port";
    case CURLE_COULDNT_RESOLVE_HOST:
        return "; check the host in s3.endpoint";
    case CURLE_COULDNT_CONNECT:
        return "; nothing accepts connections at s3.endpoint";
    default:
        return "";
    }
}

static bool code_eq(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

/* What to do about an error answer, for the ones a setting fixes (HEAD answers carry no
 * error document, so those go by status alone). Writes "" when there is nothing to say. */
static void answer_hint(const struct xreq *r, const struct xport_result *res, char *out,
                        size_t outlen)
{
    const struct cfg_s3 *s3 = &r->x->cfg.s3;
    const char *code = res->s3_code;
    long st = res->http_status;
    bool head = r->op == XPORT_OP_HEAD || r->op == XPORT_OP_HEAD_BUCKET;
    out[0] = '\0';
    if (code_eq(code, "SignatureDoesNotMatch"))
        snprintf(out, outlen, "; check s3.secret_access_key (credentials from %s)",
                 s3->credentials_source);
    else if (code_eq(code, "InvalidAccessKeyId"))
        snprintf(out, outlen, "; check s3.access_key_id (credentials from %s)",
                 s3->credentials_source);
    else if (code_eq(code, "ExpiredToken") || code_eq(code, "InvalidToken"))
        snprintf(out, outlen, "; s3.session_token is expired or wrong: refresh the credentials");
    else if (code_eq(code, "AuthorizationHeaderMalformed") || st == 301 || st == 307)
        snprintf(out, outlen,
                 "; the bucket is not in s3.region '%s': set s3.region (and s3.endpoint) "
                 "to the bucket's region",
                 s3->region);
    else if (code_eq(code, "NoSuchBucket") || (st == 404 && r->op != XPORT_OP_GET &&
                                               r->op != XPORT_OP_HEAD && r->op != XPORT_OP_PUT))
        snprintf(out, outlen, "; no bucket '%s' at s3.endpoint: check s3.bucket", s3->bucket);
    else if (st == 403 && s3->access_key_id[0] == '\0')
        snprintf(out, outlen,
                 "; the request was anonymous: set s3.access_key_id and "
                 "s3.secret_access_key (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)");
    else if (st == 403 && head)
        snprintf(out, outlen,
                 "; access denied (a HEAD answer has no reason): check the "
                 "credentials and that they may %s",
                 r->op == XPORT_OP_HEAD_BUCKET ? "s3:ListBucket" : "s3:GetObject");
    else if (st == 403 && code_eq(code, "AccessDenied"))
        snprintf(out, outlen, "; the credentials lack permission for this request on '%s'",
                 s3->bucket);
}

static void format_error(struct xreq *r, const struct xport_result *res)
{
    const char *what = r->key[0] ? r->key : r->x->cfg.s3.bucket;
    if (res->cls == XPORT_OK) {
        r->errline[0] = '\0';
    } else if (res->http_status == 0 || (res->curl_code != 0 && res->http_status < 300)) {
        snprintf(r->errline, sizeof(r->errline), "%s %s: %s (curl %d%s%s)%s", op_name(r->op), what,
                 curl_easy_strerror((CURLcode)res->curl_code), res->curl_code,
                 r->errbuf[0] ? ": " : "", r->errbuf, curl_hint(res->curl_code));
    } else {
        char hint[256];
        answer_hint(r, res, hint, sizeof(hint));
        snprintf(r->errline, sizeof(r->errline), "%s %s: HTTP %ld%s%s%s%s%s%s%s", op_name(r->op),
                 what, res->http_status, res->s3_code[0] ? " " : "", res->s3_code,
                 res->s3_message[0] ? ": " : "", res->s3_message,
                 res->request_id[0] ? " request_id=" : "", res->request_id, hint);
    }
    one_line(r->errline);
}

static void finish(struct xport *x, struct xreq *r, CURLcode cc)
{
    struct xport_result res;
    long status = 0, nconn = 0;
    curl_off_t up = 0, down = 0, clen = -1;

    curl_multi_remove_handle(x->multi, r->easy);
    r->active = false;
    r->held = false;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &nconn);
    curl_easy_getinfo(r->easy, CURLINFO_SIZE_UPLOAD_T, &up);
    curl_easy_getinfo(r->easy, CURLINFO_SIZE_DOWNLOAD_T, &down);
    curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
    x->requests++;
    x->bytes_sent += (uint64_t)(up > 0 ? up : 0);
    x->bytes_received += (uint64_t)(down > 0 ? down : 0);
    pool_on_done(&x->pool, status > 0 && nconn == 0);

    memset(&res, 0, sizeof(res));
    memset(&r->s3e, 0, sizeof(r->s3e));
    if (status >= 300 && r->blen > 0) {
        s3xml_parse_error(r->body, r->blen, &r->s3e);
        one_line(r->s3e.code);
        one_line(r->s3e.message);
        one_line(r->s3e.request_id);
    }
    res.http_status = status;
    res.curl_code = (int)cc;
    res.cls = xport_classify(r->op, (int)cc, status, r->s3e.code);
    res.s3_code = r->s3e.code;
    res.s3_message = r->s3e.message;
    res.request_id = r->reqid[0] ? r->reqid : r->s3e.request_id;
    res.etag = r->etag;
    res.duration_us = (s3c__now_ns() - r->start_ns) / 1000u;
    res.entries = NULL;
    res.next_token = "";
    if (res.cls == XPORT_OK && r->op == XPORT_OP_GET) {
        res.body = r->body ? r->body : "";
        res.body_len = r->blen;
    } else if (res.cls == XPORT_OK && r->op == XPORT_OP_HEAD) {
        res.body_len = clen > 0 ? (size_t)clen : 0;
    } else if (res.cls == XPORT_OK && r->op == XPORT_OP_LIST) {
        int prc = s3xml_parse_list(r->body, r->blen, &r->list);
        if (prc == 0) {
            res.entries = r->list.entries;
            res.nentries = r->list.nentries;
            res.truncated = r->list.truncated;
            res.next_token = r->list.next_token;
        } else {
            /* A 200 whose listing does not parse was cut short or garbled on the way. */
            res.cls = XPORT_RETRYABLE;
            snprintf(r->s3e.message, sizeof(r->s3e.message),
                     "ListObjectsV2 answer is not a ListBucketResult document");
        }
    }
    format_error(r, &res);
    if (res.cls == XPORT_RETRYABLE && res.http_status == 200 && r->op == XPORT_OP_LIST)
        snprintf(r->errline, sizeof(r->errline), "LIST %s: %s", x->cfg.s3.bucket, r->s3e.message);
    res.error = r->errline;

    switch (r->kind) {
    case XREQ_USER:
        x->user_in_flight--;
        r->done(r->ctx, &res);
        break;
    case XREQ_REFILL:
        pool_refill_done(&x->pool, r->opened, status > 0, s3c__now_ns());
        if (status == 0)
            S3C_LOG(S3C_LOG_WARN, "event=pool_connect_failed error=\"%s\"", r->errline);
        schedule_refill(x, s3c__now_ns());
        break;
    case XREQ_HEARTBEAT:
        pool_heartbeat_done(&x->pool, res.cls == XPORT_OK);
        if (res.cls == XPORT_OK) {
            x->hb_refused_logged = false;
        } else if (status == 0 || status >= 500) {
            /* No answer, or a server error: the connection is replaced. Transfer errors
             * already cost libcurl the connection; a 5xx did not, so end it here (a new
             * connection may reach a healthy server behind the same endpoint). */
            S3C_LOG(S3C_LOG_WARN, "event=pool_heartbeat_failed error=\"%s\"", r->errline);
            if (status > 0)
                end_connection(x, r);
        } else if (!x->hb_refused_logged) {
            /* A 4xx answer came over a working connection, so it is kept: closing it
             * would only churn the pool. Said once until a heartbeat succeeds again. */
            x->hb_refused_logged = true;
            S3C_LOG(S3C_LOG_WARN, "event=pool_heartbeat_refused connection=kept error=\"%s\"",
                    r->errline); /* the error names the fix (answer_hint) */
        }
        break;
    }
    req_release(x, r);
}

static void check_done(struct xport *x)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(x->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct xreq *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode cc = m->data.result;
        if (r)
            finish(x, r, cc);
    }
}

static void on_sock_event(void *ctx, int fd, unsigned events)
{
    struct xport *x = ctx;
    int running = 0;
    int flags = (events & EVLOOP_READ ? CURL_CSELECT_IN : 0) |
                (events & EVLOOP_WRITE ? CURL_CSELECT_OUT : 0) |
                (events & EVLOOP_ERROR ? CURL_CSELECT_ERR : 0);
    curl_multi_socket_action(x->multi, fd, flags, &running);
    check_done(x);
    if (x->hb_release_due)
        hb_release(x);
}

static void on_curl_timeout(void *ctx)
{
    struct xport *x = ctx;
    int running = 0;
    curl_multi_socket_action(x->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(x);
    if (x->hb_release_due)
        hb_release(x);
}

/* ---- request objects ---------------------------------------------------------------- */

static int easy_setup(struct xport *x, struct xreq *r)
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
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_WRITEDATA, r);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, r);
    SET(CURLOPT_READFUNCTION, on_read);
    SET(CURLOPT_READDATA, r);
    SET(CURLOPT_SEEKFUNCTION, on_seek);
    SET(CURLOPT_SEEKDATA, r);
    SET(CURLOPT_PREREQFUNCTION, on_prereq);
    SET(CURLOPT_PREREQDATA, r);
    SET(CURLOPT_OPENSOCKETFUNCTION, on_opensocket);
    SET(CURLOPT_OPENSOCKETDATA, r);
    SET(CURLOPT_CLOSESOCKETFUNCTION, on_closesocket);
    SET(CURLOPT_CLOSESOCKETDATA, x);
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

static struct xreq *req_alloc(struct xport *x)
{
    struct xreq *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->x = x;
    r->easy = curl_easy_init();
    if (!r->easy || easy_setup(x, r) < 0) {
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
static struct xreq *req_get(struct xport *x)
{
    struct xreq *r = x->free_reqs;
    if (r) {
        x->free_reqs = r->next_free;
        return r;
    }
    return req_alloc(x);
}

/* Resets the per-request state of r for op on key (NULL: the bucket). */
static int req_begin(struct xport *x, struct xreq *r, enum xreq_kind kind, enum xport_op op,
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
    r->etag[0] = r->reqid[0] = r->errbuf[0] = r->errline[0] = '\0';
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
    if (build_path(x, key, r->path, sizeof(r->path)) < 0)
        return S3C_EINVAL;
    return 0;
}

static void amz_date(char out[17])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* Adds the signed headers in SigV4's sorted order, then Authorization, then the unsigned
 * ones, and hands everything to libcurl. extra: headers that sort before "host"
 * (content-md5) are passed in pre; the ones between host and x-amz (if-*, range) in mid;
 * x-amz-checksum-* in amz. */
struct sign_extra {
    const char *content_md5;
    const char *if_match;
    bool if_none_match;
    const char *range;
    const char *checksum_name; /* "x-amz-checksum-crc32c" / "-sha256" or NULL */
    const char *checksum_value;
    const char *payload_hash;
};

static int req_sign_and_start(struct xport *x, struct xreq *r, const char *method,
                              const struct sign_extra *sx)
{
    const struct cfg_s3 *s3 = &x->cfg.s3;
    bool anon = s3->access_key_id[0] == '\0';
    char date[17], auth[1024];

    amz_date(date);
    if (sx->content_md5)
        hdr_add(r, "Content-MD5", sx->content_md5, true);
    hdr_add(r, "Host", x->hosthdr, true);
    if (sx->if_match)
        hdr_add(r, "If-Match", sx->if_match, true);
    if (sx->if_none_match)
        hdr_add(r, "If-None-Match", "*", true);
    if (sx->range)
        hdr_add(r, "Range", sx->range, true);
    if (sx->checksum_name)
        hdr_add(r, sx->checksum_name, sx->checksum_value, true);
    if (!anon) {
        hdr_add(r, "x-amz-content-sha256", sx->payload_hash, true);
        hdr_add(r, "x-amz-date", date, true);
        if (s3->session_token[0])
            hdr_add(r, "x-amz-security-token", s3->session_token, true);
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
                return S3C_EINVAL;
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
            return S3C_EINVAL;
        int an = snprintf(auth, sizeof(auth),
                          "AWS4-HMAC-SHA256 Credential=%s/%.8s/%s/s3/aws4_request, "
                          "SignedHeaders=%s, Signature=%s",
                          s3->access_key_id, date, s3->region, names, sig);
        if (an < 0 || (size_t)an >= sizeof(auth))
            return S3C_EINVAL;
        hdr_add(r, "Authorization", auth, false);
        OPENSSL_cleanse(auth, sizeof(auth));
    }
    hdr_add(r, "Expect", "", false); /* no 100-continue round trip */
    hdr_add(r, "Accept", "", false);
    if (r->hdr_overflow)
        return S3C_EINVAL;

    bool q = r->query[0] != '\0';
    int n =
        snprintf(r->url, sizeof(r->url), "%s%s%s%s", x->origin, r->path, q ? "?" : "", r->query);
    if (n < 0 || (size_t)n >= sizeof(r->url))
        return S3C_EINVAL;

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
    long timeout = s3->request_timeout_ms;
    if (r->kind == XREQ_HEARTBEAT) {
        long hb = x->cfg.persistence.heartbeat_interval_ms;
        if (hb < 1000)
            hb = 1000;
        if (hb < timeout)
            timeout = hb; /* a stuck heartbeat must not hold a connection for long */
    }
    if (c == CURLE_OK)
        c = curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout);
    if (c == CURLE_OK)
        c = curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, r->kind == XREQ_REFILL ? 1L : 0L);
    if (c != CURLE_OK)
        return S3C_EINVAL;

    r->start_ns = s3c__now_ns();
    if (curl_multi_add_handle(x->multi, e) != CURLM_OK)
        return S3C_EIO;
    r->active = true;
    pool_on_start(&x->pool);
    return 0;
}

/* Starts a request with no body (GET, HEAD, HeadBucket, LIST). */
static int start_simple(struct xport *x, struct xreq *r, const char *method, const char *range)
{
    struct sign_extra sx = {.range = range, .payload_hash = XPORT_EMPTY_SHA256};
    return req_sign_and_start(x, r, method, &sx);
}

/* ---- internal requests: warm-up / replacement and heartbeats ------------------------ */

/* Starts a HeadBucket of an internal kind; false when it could not be started. */
static bool start_internal(struct xport *x, enum xreq_kind kind)
{
    struct xreq *r = req_get(x);
    if (!r)
        return false;
    if (req_begin(x, r, kind, XPORT_OP_HEAD_BUCKET, NULL) < 0) {
        req_release(x, r);
        return false;
    }
    r->hb_round = x->hb_round;
    if (start_simple(x, r, "HEAD", NULL) < 0) {
        req_release(x, r);
        return false;
    }
    if (kind == XREQ_REFILL) {
        x->refills++;
        pool_refill_started(&x->pool);
    }
    return true;
}

static void on_refill_timer(void *ctx)
{
    struct xport *x = ctx;
    uint64_t now = s3c__now_ns();
    int n = pool_refill_count(&x->pool, now);
    for (int i = 0; i < n; i++)
        start_internal(x, XREQ_REFILL);
    uint64_t later = pool_refill_deadline(&x->pool, now);
    if (n == 0 && later)
        schedule_refill(x, later);
}

static void on_heartbeat_timer(void *ctx)
{
    struct xport *x = ctx;
    int n = pool_heartbeat_count(&x->pool);
    if (x->hb_unplaced > 0)
        hb_release(x); /* the last round never completed its placement */
    x->hb_round++;
    int started = 0;
    for (int i = 0; i < n; i++)
        started += start_internal(x, XREQ_HEARTBEAT);
    x->hb_unplaced = started; /* placed in socket_action, after this returns */
    if (started > 1)          /* placement takes well under a millisecond on a live pool */
        evloop_timer_arm(x->ev, &x->hb_release_timer, s3c__now_ns() + 100 * 1000000ull);
    schedule_refill(x, s3c__now_ns());
    evloop_timer_arm(x->ev, &x->hb_timer, s3c__now_ns() + x->pool.heartbeat_ns);
}

/* ---- public API --------------------------------------------------------------------- */

struct xport *xport_new(const struct s3c_config *cfg, char *err, size_t errlen)
{
    static char dummy[1];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (!cfg) {
        snprintf(err, errlen, "transport: no config");
        return NULL;
    }
    pthread_once(&curl_once, curl_global_once);
    if (curl_init_rc != CURLE_OK) {
        snprintf(err, errlen, "transport: libcurl failed to initialise (%s)",
                 curl_easy_strerror(curl_init_rc));
        return NULL;
    }
    const struct cfg_s3 *s3 = &cfg->s3;
    if (!s3->bucket[0]) {
        snprintf(err, errlen, "transport: s3.bucket is empty; set it to the bucket name");
        return NULL;
    }
    if (cfg->persistence.target_pool_size <= 0) {
        snprintf(err, errlen, "transport: persistence.target_pool_size must be > 0 (got %d)",
                 cfg->persistence.target_pool_size);
        return NULL;
    }
    if (cfg->persistence.heartbeat_interval_ms <= 0) {
        snprintf(err, errlen, "transport: persistence.heartbeat_interval_ms must be > 0 (got %d)",
                 cfg->persistence.heartbeat_interval_ms);
        return NULL;
    }
    if (s3->connect_timeout_ms <= 0 || s3->request_timeout_ms <= 0) {
        snprintf(err, errlen,
                 "transport: s3.connect_timeout_ms and s3.request_timeout_ms must be > 0 "
                 "(got %d and %d)",
                 s3->connect_timeout_ms, s3->request_timeout_ms);
        return NULL;
    }
    if (s3->access_key_id[0] && !s3->secret_access_key[0]) {
        snprintf(err, errlen,
                 "transport: s3.access_key_id is set but the secret access key is empty; "
                 "set s3.secret_access_key or AWS_SECRET_ACCESS_KEY");
        return NULL;
    }

    struct xport *x = calloc(1, sizeof(*x));
    if (!x) {
        snprintf(err, errlen, "transport: out of memory");
        return NULL;
    }
    x->cfg = *cfg;
    if (parse_endpoint(x, err, errlen) < 0)
        goto out_free_x;
    x->socks_cap = 4 * cfg->persistence.target_pool_size + 16;
    x->socks = calloc((size_t)x->socks_cap, sizeof(*x->socks));
    x->md = EVP_MD_CTX_new();
    if (!x->md || !x->socks) {
        snprintf(err, errlen, "transport: out of memory");
        goto out_free_md; /* frees either; NULL is fine for both */
    }
    x->ev = evloop_new();
    if (!x->ev) {
        snprintf(err, errlen, "transport: cannot create the event loop: %s", strerror(errno));
        goto out_free_md;
    }
    x->multi = curl_multi_init();
    if (!x->multi) {
        snprintf(err, errlen, "transport: curl_multi_init failed");
        goto out_free_ev;
    }
    long n = cfg->persistence.target_pool_size;
    curl_multi_setopt(x->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(x->multi, CURLMOPT_SOCKETDATA, x);
    curl_multi_setopt(x->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(x->multi, CURLMOPT_TIMERDATA, x);
    curl_multi_setopt(x->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, n);
    curl_multi_setopt(x->multi, CURLMOPT_MAX_HOST_CONNECTIONS, n);
    curl_multi_setopt(x->multi, CURLMOPT_MAXCONNECTS, n);
    curl_multi_setopt(x->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);

    x->curl_timer.cb = on_curl_timeout;
    x->curl_timer.ctx = x;
    x->hb_timer.cb = on_heartbeat_timer;
    x->hb_timer.ctx = x;
    x->refill_timer.cb = on_refill_timer;
    x->hb_release_timer.cb = on_hb_release_timer;
    x->hb_release_timer.ctx = x;
    x->refill_timer.ctx = x;
    pool_init(&x->pool, (int)n, cfg->persistence.heartbeat_interval_ms);

    /* Request objects for a full pool plus a queue of the same size, made now so the
     * persistence thread's steady state allocates nothing of ours. */
    for (long i = 0; i < 2 * n + 4; i++) {
        struct xreq *r = req_alloc(x);
        if (!r) {
            snprintf(err, errlen, "transport: out of memory");
            goto out_free_all;
        }
        r->next_free = x->free_reqs;
        x->free_reqs = r;
    }
    if (!s3->tls_verify)
        S3C_LOG(S3C_LOG_WARN,
                "event=tls_verify_off endpoint=%s msg=\"TLS peer verification is disabled "
                "(s3.tls_verify=false): the endpoint's identity is not checked\"",
                x->origin);
    S3C_LOG(S3C_LOG_INFO, "event=transport_open endpoint=%s bucket=%s addressing=%s pool=%ld",
            x->origin, s3->bucket, s3->addressing == CFG_ADDR_VIRTUAL ? "virtual" : "path", n);

    on_refill_timer(x); /* warm-up: open every connection now, answers not waited for */
    evloop_timer_arm(x->ev, &x->hb_timer, s3c__now_ns() + x->pool.heartbeat_ns);
    return x;

out_free_all:
    xport_free(x);
    return NULL;
out_free_ev:
    evloop_free(x->ev);
out_free_md:
    EVP_MD_CTX_free(x->md);
out_free_x:
    free(x->socks);
    OPENSSL_cleanse(&x->cfg, sizeof(x->cfg));
    free(x);
    return NULL;
}

void xport_free(struct xport *x)
{
    if (!x)
        return;
    x->closing = true;
    for (struct xreq *r = x->all_reqs; r; r = r->next_all) {
        if (r->active) {
            curl_multi_remove_handle(x->multi, r->easy);
            r->active = false;
        }
    }
    curl_multi_cleanup(x->multi); /* closes the pool's connections */
    for (struct xreq *r = x->all_reqs, *next; r; r = next) {
        next = r->next_all;
        curl_easy_cleanup(r->easy);
        free(r->iov);
        free(r->body);
        s3xml_list_free(&r->list);
        OPENSSL_cleanse(r->hdr, sizeof(r->hdr)); /* held the session token */
        free(r);
    }
    for (struct sockwatch *w = x->free_socks, *next; w; w = next) {
        next = w->next_free;
        free(w);
    }
    for (struct fdwatch *w = x->fdwatches, *next; w; w = next) {
        next = w->next;
        free(w);
    }
    evloop_free(x->ev);
    EVP_MD_CTX_free(x->md);
    free(x->socks);
    OPENSSL_cleanse(x->signing_key, sizeof(x->signing_key));
    sigv4_forget_keys(); /* the copy in this thread's HMAC context */
    OPENSSL_cleanse(&x->cfg, sizeof(x->cfg));
    free(x);
}

/* Digest over the body spans with the transport's reusable context. */
static int digest_spans(struct xport *x, const EVP_MD *md, const struct iovec *iov, int n,
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

int xport_put(struct xport *x, const struct xport_put *put, xport_done_fn done, void *ctx)
{
    const struct cfg_s3 *s3 = &x->cfg.s3;
    unsigned char sha[32], md5[16];
    char sha_hex[65], sha_b64[48], md5_b64[32], crc_b64[12];
    bool have_sha = false;
    struct sign_extra sx = {.payload_hash = SIGV4_UNSIGNED_PAYLOAD};
    int rc;

    if (!put || !put->key || !done || put->iovcnt < 0 || (put->iovcnt > 0 && !put->iov))
        return S3C_EINVAL;
    struct xreq *r = req_get(x);
    if (!r)
        return S3C_ENOMEM;
    rc = req_begin(x, r, XREQ_USER, XPORT_OP_PUT, put->key);
    if (rc < 0)
        goto out_release;
    if (put->iovcnt > r->iovcap) {
        struct iovec *v = realloc(r->iov, (size_t)put->iovcnt * sizeof(*v));
        if (!v) {
            rc = S3C_ENOMEM;
            goto out_release;
        }
        r->iov = v;
        r->iovcap = put->iovcnt;
    }
    for (int i = 0; i < put->iovcnt; i++) {
        r->iov[i] = put->iov[i];
        r->body_len += put->iov[i].iov_len;
    }
    r->iovcnt = put->iovcnt;

    bool anon = s3->access_key_id[0] == '\0';
    if ((!anon && s3->payload_signing == CFG_SIGN_SIGNED) || s3->checksum == CFG_SUM_SHA256) {
        rc = digest_spans(x, EVP_sha256(), r->iov, r->iovcnt, sha);
        if (rc < 0)
            goto out_release;
        have_sha = true;
        hex(sha, 32, sha_hex);
    }
    if (!anon && s3->payload_signing == CFG_SIGN_SIGNED)
        sx.payload_hash = sha_hex;
    switch (s3->checksum) {
    case CFG_SUM_CRC32C: {
        uint32_t crc = put->crc32c;
        if (!put->have_crc32c) {
            crc = 0;
            for (int i = 0; i < r->iovcnt; i++)
                crc = crc32c_update(crc, r->iov[i].iov_base, r->iov[i].iov_len);
        }
        unsigned char be[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16),
                               (unsigned char)(crc >> 8), (unsigned char)crc};
        b64(be, 4, crc_b64);
        sx.checksum_name = "x-amz-checksum-crc32c";
        sx.checksum_value = crc_b64;
        break;
    }
    case CFG_SUM_SHA256:
        if (have_sha) {
            b64(sha, 32, sha_b64);
            sx.checksum_name = "x-amz-checksum-sha256";
            sx.checksum_value = sha_b64;
        }
        break;
    case CFG_SUM_MD5:
        rc = digest_spans(x, EVP_md5(), r->iov, r->iovcnt, md5);
        if (rc < 0)
            goto out_release;
        b64(md5, 16, md5_b64);
        sx.content_md5 = md5_b64;
        break;
    case CFG_SUM_NONE:
        break;
    }
    sx.if_none_match = put->if_none_match;
    sx.if_match = put->if_match;
    r->done = done;
    r->ctx = ctx;
    rc = req_sign_and_start(x, r, "PUT", &sx);
    if (rc < 0)
        goto out_release;
    x->user_in_flight++;
    return 0;

out_release:
    req_release(x, r);
    return rc;
}

static int start_user(struct xport *x, enum xport_op op, const char *key, const char *method,
                      const char *range, const char *query, xport_done_fn done, void *ctx)
{
    if (!done)
        return S3C_EINVAL;
    struct xreq *r = req_get(x);
    if (!r)
        return S3C_ENOMEM;
    int rc = req_begin(x, r, XREQ_USER, op, key);
    if (rc == 0 && query) {
        size_t ql = strlen(query);
        if (ql >= sizeof(r->query))
            rc = S3C_EINVAL;
        else
            memcpy(r->query, query, ql + 1);
    }
    r->done = done;
    r->ctx = ctx;
    if (rc == 0)
        rc = start_simple(x, r, method, range);
    if (rc < 0) {
        req_release(x, r);
        return rc;
    }
    x->user_in_flight++;
    return 0;
}

int xport_get(struct xport *x, const char *key, uint64_t first, uint64_t last, xport_done_fn done,
              void *ctx)
{
    char range[64];
    if (!key)
        return S3C_EINVAL;
    if (last >= first)
        snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)first,
                 (unsigned long long)last);
    return start_user(x, XPORT_OP_GET, key, "GET", last >= first ? range : NULL, NULL, done, ctx);
}

int xport_head(struct xport *x, const char *key, xport_done_fn done, void *ctx)
{
    if (!key)
        return S3C_EINVAL;
    return start_user(x, XPORT_OP_HEAD, key, "HEAD", NULL, NULL, done, ctx);
}

int xport_head_bucket(struct xport *x, xport_done_fn done, void *ctx)
{
    return start_user(x, XPORT_OP_HEAD_BUCKET, NULL, "HEAD", NULL, NULL, done, ctx);
}

/* Appends "&name=ENC(value)" (or "name=..." first) to q. Returns 0 or -1. */
static int query_param(char *q, size_t cap, const char *name, const char *value)
{
    size_t ql = strlen(q);
    int n = snprintf(q + ql, cap - ql, "%s%s=", ql ? "&" : "", name);
    if (n < 0 || (size_t)n >= cap - ql)
        return -1;
    ql += (size_t)n;
    return sigv4_uri_encode(value, strlen(value), 0, q + ql, cap - ql) < 0 ? -1 : 0;
}

int xport_list(struct xport *x, const char *prefix, const char *start_after, const char *token,
               int max_keys, xport_done_fn done, void *ctx)
{
    char q[XREQ_QUERY_MAX] = "", mk[16];
    int bad = 0;
    /* In SigV4's sorted order, so the wire query is already canonical. */
    if (token && token[0])
        bad |= query_param(q, sizeof(q), "continuation-token", token);
    bad |= query_param(q, sizeof(q), "list-type", "2");
    if (max_keys > 0) {
        snprintf(mk, sizeof(mk), "%d", max_keys);
        bad |= query_param(q, sizeof(q), "max-keys", mk);
    }
    if (prefix && prefix[0])
        bad |= query_param(q, sizeof(q), "prefix", prefix);
    if (start_after && start_after[0])
        bad |= query_param(q, sizeof(q), "start-after", start_after);
    if (bad)
        return S3C_EINVAL;
    return start_user(x, XPORT_OP_LIST, NULL, "GET", NULL, q, done, ctx);
}

int xport_poll(struct xport *x, int timeout_ms)
{
    return evloop_run_once(x->ev, timeout_ms);
}

static void on_fdwatch(void *ctx, int fd, unsigned events)
{
    struct fdwatch *w = ctx;
    (void)fd;
    (void)events;
    w->cb(w->ctx);
}

int xport_watch_fd(struct xport *x, int fd, void (*cb)(void *ctx), void *ctx)
{
    if (fd < 0 || !cb)
        return S3C_EINVAL;
    struct fdwatch *w = calloc(1, sizeof(*w));
    if (!w)
        return S3C_ENOMEM;
    w->w.fd = fd;
    w->w.cb = on_fdwatch;
    w->w.ctx = w;
    w->cb = cb;
    w->ctx = ctx;
    int rc = evloop_watch_set(x->ev, &w->w, EVLOOP_READ);
    if (rc < 0) {
        free(w);
        return rc;
    }
    w->next = x->fdwatches;
    x->fdwatches = w;
    return 0;
}

int xport_unwatch_fd(struct xport *x, int fd)
{
    for (struct fdwatch **p = &x->fdwatches; *p; p = &(*p)->next) {
        if ((*p)->w.fd == fd) {
            struct fdwatch *w = *p;
            evloop_watch_del(x->ev, &w->w);
            *p = w->next;
            free(w);
            return 0;
        }
    }
    return S3C_EINVAL;
}

void xport_wake(struct xport *x)
{
    evloop_wake(x->ev);
}

int xport_in_flight(const struct xport *x)
{
    return x->user_in_flight;
}

void xport_stats_get(const struct xport *x, struct xport_stats *out)
{
    struct evloop_stats es;
    evloop_stats_get(x->ev, &es);
    memset(out, 0, sizeof(*out));
    out->opens = x->pool.opens;
    out->closes = x->pool.closes;
    out->reuses = x->pool.reuses;
    out->heartbeats = x->pool.heartbeats;
    out->heartbeat_failures = x->pool.heartbeat_failures;
    out->requests = x->requests;
    out->bytes_sent = x->bytes_sent;
    out->bytes_received = x->bytes_received;
    out->open_connections = x->pool.open;
    out->target_connections = x->pool.target;
    out->refills = x->refills;
    out->loop_waits = es.waits;
    out->loop_wakes = es.wakes;
    out->rewinds = x->rewinds;
    out->resends = x->resends;
    out->busy = x->pool.active;
}

int xport_drain(struct xport *x, int timeout_ms)
{
    uint64_t deadline = s3c__now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    while (x->user_in_flight > 0) {
        uint64_t now = s3c__now_ms();
        if (now >= deadline)
            return S3C_ETIMEDOUT;
        int rc = xport_poll(x, (int)(deadline - now));
        if (rc < 0)
            return rc;
    }
    return 0;
}
