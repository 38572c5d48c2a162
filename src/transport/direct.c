/* Direct GETs (xport_get_direct): a whole-object GET whose body is received by recv()
 * straight into the buffer it is handed over in. libcurl 7.88 cannot receive into caller
 * memory: every byte goes through its receive buffer and a memcpy in the write callback,
 * 21% of the reader's CPU (docs/programs.md, "Reader throughput"). Here libcurl still
 * opens the connection (CURLOPT_CONNECT_ONLY: resolve, connect, TLS with the same checks)
 * and moves the bytes (curl_easy_send/curl_easy_recv; for plain HTTP recv() itself, into
 * the buffer given); the request is the one request.c signs for libcurl; the answer's head
 * is parsed by http_parser; answers other than a 2xx with a Content-Length (errors,
 * redirects, chunked) are read through http_parser too; every answer ends in answer.c as
 * a libcurl transfer's does (error documents, classes, error lines). Single-threaded, on
 * the transport's loop. It must never read past an answer's end into the next one, nor
 * put a connection whose answer was not read to its end back to use.
 *
 * Direct PUTs (s3.direct_put, plain HTTP only): the same connections carry PUTs whose
 * signed head and body spans go out together by sendmsg() straight from the caller's
 * memory. libcurl 7.88 has no zero-copy upload: its read callback copies every body byte
 * into its upload buffer before the kernel copies it again, 16.9% of the transport's
 * samples at 1 MiB PUTs (docs/transport.md, "Direct PUTs"). A PUT is never sent again by
 * the transport once any byte of it may have reached the server (the stage retries by its
 * own rules); an answer that comes before the body's end is read and ends the PUT, and
 * that connection is then closed.
 *
 * When direct PUTs are in use (s3.direct_put, the default for http://) these connections
 * are the pool's (src/pool, pool.direct): its warm-up and refills open them carrying a
 * HeadBucket, its heartbeats put a HeadBucket on each idle one (xport__direct_start_internal),
 * and every open and close is counted and replaced by the pool's policy. */
#include <errno.h>
#include <http_parser.h>
#include <linux/sockios.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "common/clock.h"
#include "s3commit.h"
#include "transport/xport_int.h"

#define XD_HEAD_MAX (16 * 1024) /* an answer's head (S3's are under 2 KiB) */
/* Bytes asked for per read while the head is incomplete: body bytes that come with it are
 * copied into the body buffer, so this bounds that copy per answer. */
#define XD_HEAD_READ 4096
#define XD_REQ_MAX (XREQ_URL_MAX + XREQ_HDR_MAX + 64)
#define XD_SEND_IOV 64 /* spans per sendmsg() (the head and up to 63 of the body) */

enum xd_state {
    XD_CONNECTING, /* libcurl is connecting it (c->r waits for it) */
    XD_IDLE,       /* no request: watched only to notice the server closing it */
    XD_SEND,       /* the request is being written */
    XD_HEAD,       /* the answer's head is being read */
    XD_BODY,       /* a 2xx body of known length, received straight into r->body */
    XD_SLOW,       /* any other body, read through http_parser */
};

#define XD_CONNECT_FDS 4 /* sockets libcurl watches while connecting (happy eyeballs, resolver) */

struct xdconn {
    struct xport *x;
    struct xdconn *next_all, *next_idle;
    CURL *easy;   /* CONNECT_ONLY: owns the socket and the TLS session */
    CURLM *multi; /* this connection's own, holding easy from the connect to the close */
    struct loop_watch cw[XD_CONNECT_FDS]; /* libcurl's sockets while connecting */
    struct loop_timer ctimer;             /* libcurl's timer while connecting */
    char cerr[CURL_ERROR_SIZE];           /* libcurl's words for a failed connect */
    int fd;
    uint64_t opened_ns; /* when it connected (its age at the close: pool_on_close) */
    struct loop_watch w;
    struct loop_timer timer; /* the request's request_timeout_ms */
    struct loop_timer speed; /* every low_speed_time_ms: enough bytes since the last look? */
    uint64_t rx, rx_mark;    /* bytes moved (a PUT's sent too) for the request; at the last look */
    enum xd_state st;
    struct xreq *r; /* the GET on this connection, NULL when idle */
    int answers;    /* answers read to their end on it (> 0: it is being reused) */
    bool no_reuse;  /* bytes beyond the answer, or Connection: close */
    char *req;      /* the request's wire text */
    size_t req_len, req_off;
    uint64_t body_off; /* a PUT's body bytes written */
    http_parser p;
    long status;
    bool complete; /* http_parser saw the end of a slow answer */
    char head[XD_HEAD_MAX];
    size_t hlen;
    size_t f_off, f_len, v_off, v_len; /* the header being parsed, as offsets into head */
    bool in_value;
    uint64_t clen, got; /* XD_BODY: Content-Length and bytes received */
};

struct xdirect {
    struct xdconn *all, *idle;
    int nconn;
    int max;                         /* connections at most (open or opening) */
    struct xreq *queue, *queue_tail; /* requests waiting for a connection (next_free links) */
    bool proxied; /* a proxy is set in the environment: requests stay with libcurl */
};

static void xd_start(struct xdconn *c, struct xreq *r);
static void xd_on_event(void *ctx, int fd, unsigned events);

/* ---- connections -------------------------------------------------------------------- */

static void xd_on_timeout(void *ctx);
static void xd_on_speed(void *ctx);

/* Opening a connection. curl_easy_perform with CONNECT_ONLY blocked the loop for the
 * connect and TLS handshake (up to s3.connect_timeout_ms for an endpoint that does not
 * answer). Instead the CONNECT_ONLY handle is added to a multi handle driven by the loop;
 * its CURLMSG_DONE says the connection is up (or why not), CURLINFO_ACTIVESOCKET then
 * gives the socket. Each connection has its own multi handle, for its whole life:
 * - libcurl closes a CONNECT_ONLY connection when its handle leaves the multi (7.85+), so
 *   the handle stays in it until the connection is closed;
 * - on the transport's multi, the connection would sit in the same connection cache as the
 *   pool's: it would count against CURLMOPT_MAX_TOTAL_CONNECTIONS (= the pool's size, so a
 *   connect would wait behind, or evict, the pool's idle connections), and libcurl's
 *   pruning of dead cache entries (on any new connection of that multi) does not skip
 *   CONNECT_ONLY ones in 7.88: a busy direct connection with answer bytes waiting looks
 *   "dead" to it. Alone in its own multi, nothing else ever makes a connection there. */

static void xd_connected(struct xdconn *c, CURLcode e);

static void xd_connect_drive(struct xdconn *c, curl_socket_t s, int flags)
{
    int running = 0;
    CURLMcode mc = curl_multi_socket_action(c->multi, s, flags, &running);
    if (mc != CURLM_OK) {
        snprintf(c->cerr, sizeof(c->cerr), "%s", curl_multi_strerror(mc));
        xd_connected(c, mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_COULDNT_CONNECT);
        return;
    }
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg == CURLMSG_DONE) {
            xd_connected(c, m->data.result); /* c may be gone */
            return;
        }
    }
}

static void xd_on_connect_event(void *ctx, int fd, unsigned events)
{
    xd_connect_drive(ctx, fd,
                     (events & LOOP_READ ? CURL_CSELECT_IN : 0) |
                         (events & LOOP_WRITE ? CURL_CSELECT_OUT : 0) |
                         (events & LOOP_ERROR ? CURL_CSELECT_ERR : 0));
}

static void xd_on_connect_timer(void *ctx)
{
    xd_connect_drive(ctx, CURL_SOCKET_TIMEOUT, 0);
}

static int xd_connect_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct xdconn *c = userp;
    (void)e;
    (void)socketp;
    struct loop_watch *w = NULL, *free_w = NULL;
    for (int i = 0; i < XD_CONNECT_FDS; i++) {
        if (c->cw[i].added && c->cw[i].fd == s)
            w = &c->cw[i];
        else if (!c->cw[i].added && !free_w)
            free_w = &c->cw[i];
    }
    if (what == CURL_POLL_REMOVE || c->st != XD_CONNECTING) {
        if (w)
            loop_watch_del(c->x->loop, w);
        return 0;
    }
    if (!w) {
        if (!free_w)
            return 0; /* more sockets than ever seen: the connect timer still ends it */
        w = free_w;
        *w = (struct loop_watch){.fd = s, .cb = xd_on_connect_event, .ctx = c};
    }
    unsigned ev = (what & CURL_POLL_IN ? LOOP_READ : 0u) | (what & CURL_POLL_OUT ? LOOP_WRITE : 0u);
    (void)loop_watch_set(c->x->loop, w, ev);
    return 0;
}

static int xd_connect_timer(CURLM *m, long timeout_ms, void *userp)
{
    struct xdconn *c = userp;
    (void)m;
    if (timeout_ms < 0 || c->st != XD_CONNECTING)
        loop_timer_disarm(c->x->loop, &c->ctimer);
    else
        loop_timer_arm(c->x->loop, &c->ctimer, s3c__now_ns() + (uint64_t)timeout_ms * 1000000u);
    return 0;
}

/* Takes libcurl's connect watches and timer off the loop. */
static void xd_connect_unwatch(struct xdconn *c)
{
    for (int i = 0; i < XD_CONNECT_FDS; i++)
        loop_watch_del(c->x->loop, &c->cw[i]);
    loop_timer_disarm(c->x->loop, &c->ctimer);
}

/* Frees what c holds (its request, if any, is not ended here). */
static void xd_conn_destroy(struct xdconn *c)
{
    loop_watch_del(c->x->loop, &c->w);
    loop_timer_disarm(c->x->loop, &c->timer);
    loop_timer_disarm(c->x->loop, &c->speed);
    xd_connect_unwatch(c);
    if (c->multi && c->easy)
        curl_multi_remove_handle(c->multi, c->easy); /* closes the connection */
    if (c->multi)
        curl_multi_cleanup(c->multi); /* and whatever its cache still held */
    xd_connect_unwatch(c);            /* watches the calls above may have set */
    if (c->easy)
        curl_easy_cleanup(c->easy);
    free(c->req);
    free(c);
}

/* Starts opening a connection for r (which waits on it, c->r): libcurl connects on the
 * loop, xd_connected goes on. NULL with *cc and errbuf set when it cannot even start. */
static struct xdconn *xd_conn_open(struct xport *x, struct xreq *r, int *cc, char *errbuf)
{
    const struct cfg_s3 *s3 = &x->cfg.s3;
    struct xdconn *c = calloc(1, sizeof(*c));
    char url[XREQ_URL_MAX];
    *cc = CURLE_OUT_OF_MEMORY;
    errbuf[0] = '\0';
    if (!c)
        return NULL;
    c->x = x;
    c->fd = -1;
    c->st = XD_CONNECTING;
    c->ctimer = (struct loop_timer){.cb = xd_on_connect_timer, .ctx = c};
    c->w = (struct loop_watch){.fd = -1, .cb = xd_on_event, .ctx = c};
    c->timer = (struct loop_timer){.cb = xd_on_timeout, .ctx = c};
    c->speed = (struct loop_timer){.cb = xd_on_speed, .ctx = c};
    if (!(c->req = malloc(XD_REQ_MAX)) || !(c->easy = curl_easy_init()) ||
        !(c->multi = curl_multi_init()))
        goto fail;
    snprintf(url, sizeof(url), "%s/", x->origin);
    CURLcode e = CURLE_OK;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (e == CURLE_OK)                                                                         \
            e = curl_easy_setopt(c->easy, opt, val);                                               \
    } while (0)
    SET(CURLOPT_URL, url);
    SET(CURLOPT_CONNECT_ONLY, 1L);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_ERRORBUFFER, c->cerr);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)s3->connect_timeout_ms);
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_SSL_VERIFYPEER, s3->tls_verify ? 1L : 0L);
    SET(CURLOPT_SSL_VERIFYHOST, s3->tls_verify ? 2L : 0L);
    if (s3->ca_file[0])
        SET(CURLOPT_CAINFO, s3->ca_file);
#undef SET
    if (e != CURLE_OK) {
        *cc = (int)e;
        goto fail;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, xd_connect_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, xd_connect_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    if (curl_multi_add_handle(c->multi, c->easy) != CURLM_OK)
        goto fail; /* out of memory: libcurl's only failure here */
    /* Counted now so that dispatching never opens more than the pool's size. */
    c->r = r;
    c->next_all = x->direct->all;
    x->direct->all = c;
    x->direct->nconn++;
    return c;
fail:
    xd_conn_destroy(c);
    return NULL;
}

static void xd_conn_unlink(struct xdconn *c)
{
    struct xdirect *d = c->x->direct;
    for (struct xdconn **p = &d->all; *p; p = &(*p)->next_all) {
        if (*p == c) {
            *p = c->next_all;
            break;
        }
    }
    for (struct xdconn **p = &d->idle; *p; p = &(*p)->next_idle) {
        if (*p == c) {
            *p = c->next_idle;
            break;
        }
    }
    d->nconn--;
}

static void xd_conn_close(struct xdconn *c)
{
    xd_conn_unlink(c);
    if (c->st != XD_CONNECTING) /* a connect that never finished was never counted open */
        pool_direct_closed(&c->x->pool, c->opened_ns);
    xd_conn_destroy(c);
}

static void xd_dispatch(struct xport *x);

/* The pool's connections are direct ones (s3.direct_put in use): direct requests count in
 * its policy (busy) and its refills and heartbeats run here. */
static bool xd_pooled(const struct xport *x)
{
    return x->pool.direct;
}

/* A direct request entered (queued or started) / leaves for its owner. */
static void xd_began(struct xport *x)
{
    if (xd_pooled(x))
        pool_on_start(&x->pool.pol);
}

static void xd_answer(struct xport *x, struct xreq *r, int cc, long status, int64_t clen)
{
    x->requests++;
    if (xd_pooled(x))
        pool_on_done(&x->pool.pol, false); /* reuses are counted when sent (xd_start) */
    xport__answer(x, r, cc, status, clen);
}

/* libcurl finished connecting c (e: CURLE_OK or why not): the waiting request is sent, or
 * ended with libcurl's code and words, as a transfer's failed connect is. */
static void xd_connected(struct xdconn *c, CURLcode e)
{
    struct xport *x = c->x;
    struct xreq *r = c->r;
    curl_socket_t fd = CURL_SOCKET_BAD;
    c->st = XD_IDLE; /* libcurl's callbacks from here on only take their watches off */
    xd_connect_unwatch(c);
    if (e == CURLE_OK)
        e = curl_easy_getinfo(c->easy, CURLINFO_ACTIVESOCKET, &fd);
    if (e == CURLE_OK && fd == CURL_SOCKET_BAD)
        e = CURLE_COULDNT_CONNECT;
    if (e != CURLE_OK) {
        c->r = NULL;
        snprintf(r->errbuf, sizeof(r->errbuf), "%s", c->cerr);
        c->st = XD_CONNECTING; /* not counted as opened, so not as closed */
        xd_conn_close(c);
        xd_answer(x, r, (int)e, 0, -1);
        xd_dispatch(x);
        return;
    }
    c->fd = fd;
    c->w.fd = fd;
    c->opened_ns = s3c__now_ns();
    pool_direct_opened(&x->pool, r);
    c->r = NULL;
    xd_start(c, r);
}

/* ---- the answer's head -------------------------------------------------------------- */

static void xd_header_done(struct xdconn *c)
{
    struct xreq *r = c->r;
    const char *n = c->head + c->f_off, *v = c->head + c->v_off;
    size_t vl = c->v_len;
    while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
    char *out = NULL;
    size_t cap = 0;
    if (c->f_len == 4 && strncasecmp(n, "etag", 4) == 0) {
        out = r->etag;
        cap = sizeof(r->etag);
    } else if (c->f_len == 16 && strncasecmp(n, "x-amz-request-id", 16) == 0) {
        out = r->reqid;
        cap = sizeof(r->reqid);
    } else if (c->f_len == 13 && strncasecmp(n, "content-range", 13) == 0) {
        xreq_content_range(r, v, vl);
    }
    if (out) {
        if (vl >= cap)
            vl = cap - 1;
        memcpy(out, v, vl);
        out[vl] = '\0';
    }
    c->f_len = c->v_len = 0;
    c->in_value = false;
}

static int xd_on_field(http_parser *p, const char *at, size_t len)
{
    struct xdconn *c = p->data;
    size_t off = (size_t)(at - c->head);
    if (c->in_value)
        xd_header_done(c);
    else if (c->f_len > 0 && off != c->f_off + c->f_len)
        c->f_len = 0; /* the previous header had an empty value */
    if (c->f_len == 0)
        c->f_off = off;
    c->f_len += len; /* a name split across reads arrives in pieces, contiguous in head */
    return 0;
}

static int xd_on_value(http_parser *p, const char *at, size_t len)
{
    struct xdconn *c = p->data;
    if (!c->in_value) {
        c->in_value = true;
        c->v_off = (size_t)(at - c->head);
        c->v_len = 0;
    }
    c->v_len += len;
    return 0;
}

static int xd_on_headers_complete(http_parser *p)
{
    struct xdconn *c = p->data;
    if (c->in_value)
        xd_header_done(c);
    c->status = p->status_code;
    http_parser_pause(p, 1); /* the caller decides how the body is read */
    /* 1: the answer to a HEAD has no body, whatever its Content-Length says */
    return c->r->op == XPORT_OP_HEAD || c->r->op == XPORT_OP_HEAD_BUCKET;
}

/* A slow body's bytes: a 2xx's kept whole (and fed), an error document's up to 64 KiB. */
static int xd_on_body(http_parser *p, const char *at, size_t len)
{
    struct xdconn *c = p->data;
    struct xreq *r = c->r;
    bool ok = c->status >= 200 && c->status < 300;
    if (!ok && r->blen + len > XREQ_ERRBODY_MAX) /* of an error document, what fits */
        len = XREQ_ERRBODY_MAX - r->blen;
    if (xreq_body_room(r, len) < 0)
        return 1; /* an error: the answer ends as out of memory */
    memcpy(r->body + r->blen, at, len);
    r->blen += len;
    r->body[r->blen] = '\0';
    if (ok && r->on_data && len)
        r->on_data(r->data_ctx, (const unsigned char *)r->body, r->blen - len,
                   (const unsigned char *)r->body + r->blen - len, len);
    return 0;
}

static int xd_on_complete(http_parser *p)
{
    struct xdconn *c = p->data;
    c->complete = true;
    http_parser_pause(p, 1); /* never into a next answer */
    return 0;
}

static const http_parser_settings xd_settings = {
    .on_header_field = xd_on_field,
    .on_header_value = xd_on_value,
    .on_headers_complete = xd_on_headers_complete,
    .on_body = xd_on_body,
    .on_message_complete = xd_on_complete,
};

/* ---- ending a request --------------------------------------------------------------- */

/* Ends c's request: cc 0 when the answer was read to its end (then the connection is kept
 * unless told otherwise), else a CURLE_* code with errbuf already written. */
static void xd_finish(struct xdconn *c, int cc)
{
    struct xport *x = c->x;
    struct xreq *r = c->r;
    long status = c->status;
    int64_t clen = c->st == XD_BODY ? (int64_t)c->clen : -1;
    c->r = NULL;
    loop_timer_disarm(x->loop, &c->timer);
    loop_timer_disarm(x->loop, &c->speed);
    /* A heartbeat's 5xx: a new connection may reach a healthy server behind the name. */
    if (r->kind == XREQ_HEARTBEAT && status >= 500)
        c->no_reuse = true;
    x->bytes_sent += c->req_off + c->body_off;
    x->bytes_received += c->hlen + r->blen;
    if (cc == 0 && !c->no_reuse && http_should_keep_alive(&c->p)) {
        c->answers++;
        c->st = XD_IDLE;
        c->next_idle = x->direct->idle;
        x->direct->idle = c;
        (void)loop_watch_set(x->loop, &c->w, LOOP_READ);
    } else {
        xd_conn_close(c);
    }
    xd_answer(x, r, cc, status, clen);
    xd_dispatch(x);
}

static void xd_fail(struct xdconn *c, int cc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void xd_fail(struct xdconn *c, int cc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->r->errbuf, sizeof(c->r->errbuf), fmt, ap);
    va_end(ap);
    c->no_reuse = true;
    xd_finish(c, cc);
}

static void xd_on_timeout(void *ctx)
{
    struct xdconn *c = ctx;
    if (!c->r)
        return;
    xd_fail(c, CURLE_OPERATION_TIMEDOUT,
            "no complete answer within %s (%ld ms); %llu body bytes received",
            c->r->kind == XREQ_HEARTBEAT ? "the heartbeat's time limit" : "s3.request_timeout_ms",
            xreq_timeout_ms(c->x, c->r),
            (unsigned long long)(c->st == XD_BODY ? c->got : c->r->blen));
}

/* libcurl's low-speed limit: fewer than s3.low_speed_limit_bytes per second over a whole
 * s3.low_speed_time_ms ends the request as a timeout (retryable), at whatever offset. */
static void xd_on_speed(void *ctx)
{
    struct xdconn *c = ctx;
    const struct cfg_s3 *s3 = &c->x->cfg.s3;
    if (!c->r)
        return;
    uint64_t want = (uint64_t)s3->low_speed_limit_bytes * (uint64_t)s3->low_speed_time_ms / 1000;
    /* A PUT's bytes count when they leave the socket's send queue, not when they enter it:
     * a large queue fills at once and then drains for longer than a look's period. */
    uint64_t moved = c->rx;
    int queued = 0;
    if (c->r->op == XPORT_OP_PUT && ioctl(c->fd, SIOCOUTQ, &queued) == 0 && queued > 0 &&
        (uint64_t)queued <= moved)
        moved -= (uint64_t)queued;
    if (moved < c->rx_mark || moved - c->rx_mark < want) {
        if (c->r->op == XPORT_OP_PUT)
            xd_fail(c, CURLE_OPERATION_TIMEDOUT,
                    "under s3.low_speed_limit_bytes (%d bytes/s) for s3.low_speed_time_ms (%d "
                    "ms); %llu of %llu body bytes sent, %d of them still queued",
                    s3->low_speed_limit_bytes, s3->low_speed_time_ms,
                    (unsigned long long)c->body_off, (unsigned long long)c->r->body_len, queued);
        else
            xd_fail(c, CURLE_OPERATION_TIMEDOUT,
                    "under s3.low_speed_limit_bytes (%d bytes/s) for s3.low_speed_time_ms (%d "
                    "ms); %llu body bytes received",
                    s3->low_speed_limit_bytes, s3->low_speed_time_ms,
                    (unsigned long long)(c->st == XD_BODY ? c->got : c->r->blen));
        return;
    }
    c->rx_mark = moved;
    loop_timer_arm(c->x->loop, &c->speed,
                   s3c__now_ns() + (uint64_t)s3->low_speed_time_ms * 1000000u);
}

/* A reused connection that the server had closed before this request reached it: the
 * request is sent again on a fresh one, once, as libcurl does. */
static bool xd_resend(struct xdconn *c)
{
    struct xport *x = c->x;
    struct xreq *r = c->r;
    if (c->answers == 0 || c->hlen > 0 || r->sends > 1)
        return false;
    if (r->op == XPORT_OP_PUT)
        return false; /* body bytes may have reached the server: the stage decides */
    c->r = NULL;
    xd_conn_close(c); /* its timers too */
    x->resends++;
    int cc;
    if (!xd_conn_open(x, r, &cc, r->errbuf)) /* else r is sent once it is connected */
        xd_answer(x, r, cc, 0, -1);
    return true;
}

/* ---- reading and writing ------------------------------------------------------------ */

/* The head is complete (the parser paused at its end; p is where it stopped): the body is
 * received straight into a buffer sized from Content-Length when the answer is a 2xx that
 * has one, else read through the parser. Returns false when the request ended. */
static bool xd_head_done(struct xdconn *c, size_t stop)
{
    struct xreq *r = c->r;
    http_parser *p = &c->p;
    bool has_len = p->content_length != ULLONG_MAX && !(p->flags & F_CHUNKED);
    if (!http_should_keep_alive(p))
        c->no_reuse = true;
    if (r->op == XPORT_OP_GET && c->status >= 200 && c->status < 300 && has_len &&
        p->content_length < XREQ_RESERVE_MAX) {
        /* The parser stopped on the head's last byte (its final LF). */
        size_t start = stop + 1, extra = c->hlen > start ? c->hlen - start : 0;
        c->clen = p->content_length;
        c->got = 0;
        c->st = XD_BODY;
        if (r->bcap < c->clen + 1) {
            xport_give_body(c->x, r->body, r->bcap);
            r->body = xreq_body_for(c->x, (size_t)c->clen + 1, &r->bcap);
            if (!r->body) {
                r->bcap = 0;
                xd_fail(c, CURLE_OUT_OF_MEMORY, "no memory for a %llu-byte body",
                        (unsigned long long)c->clen);
                return false;
            }
        }
        if (extra > c->clen) {
            extra = (size_t)c->clen;
            c->no_reuse = true; /* bytes past the answer: the connection is out of step */
        }
        memcpy(r->body, c->head + start, extra);
        c->got = extra;
        if (extra && r->on_data)
            r->on_data(r->data_ctx, (unsigned char *)r->body, 0, (unsigned char *)r->body, extra);
        return true;
    }
    /* Errors, redirects, chunked or unsized bodies: the parser reads them. */
    c->st = XD_SLOW;
    r->blen = 0;
    http_parser_pause(p, 0);
    size_t fed = http_parser_execute(p, &xd_settings, c->head + stop, c->hlen - stop);
    if (HTTP_PARSER_ERRNO(p) != HPE_OK && HTTP_PARSER_ERRNO(p) != HPE_PAUSED) {
        xd_fail(c, CURLE_WEIRD_SERVER_REPLY, "the answer's body is not valid HTTP: %s",
                http_errno_description(HTTP_PARSER_ERRNO(p)));
        return false;
    }
    if (c->complete) {
        if (stop + fed < c->hlen)
            c->no_reuse = true;
        xd_finish(c, 0);
        return false;
    }
    return true;
}

/* curl_easy_recv, or for plain HTTP the recv() it would make, without libcurl's layers:
 * ~1% of the samples of a direct 1 MiB PUT, one call per answer (docs/transport.md). */
static CURLcode xd_recv(struct xdconn *c, char *dst, size_t want, size_t *n)
{
    if (c->x->https)
        return curl_easy_recv(c->easy, dst, want, n);
    for (;;) {
        ssize_t k = recv(c->fd, dst, want, 0);
        if (k >= 0) {
            *n = (size_t)k;
            return CURLE_OK;
        }
        if (errno == EINTR)
            continue;
        *n = 0;
        return errno == EAGAIN || errno == EWOULDBLOCK ? CURLE_AGAIN : CURLE_RECV_ERROR;
    }
}

/* Reads what the socket has. Returns false when the request ended (c may be gone). */
static bool xd_read(struct xdconn *c)
{
    struct xreq *r = c->r;
    for (;;) {
        char *dst;
        size_t want;
        if (c->st == XD_HEAD) {
            if (c->hlen == sizeof(c->head)) {
                xd_fail(c, CURLE_WEIRD_SERVER_REPLY, "the answer's head is over %d bytes",
                        XD_HEAD_MAX);
                return false;
            }
            dst = c->head + c->hlen;
            want = sizeof(c->head) - c->hlen;
            if (want > XD_HEAD_READ)
                want = XD_HEAD_READ;
        } else if (c->st == XD_BODY) {
            dst = r->body + c->got;
            want = (size_t)(c->clen - c->got);
        } else {
            dst = c->head; /* the head is done with: its room holds the slow body's reads */
            want = sizeof(c->head);
        }
        size_t n = 0;
        CURLcode e = xd_recv(c, dst, want, &n);
        if (e == CURLE_AGAIN)
            return true;
        if (e == CURLE_OK && n == 0 && c->st == XD_SLOW) {
            /* The end of an answer that ends with the connection. */
            http_parser_execute(&c->p, &xd_settings, NULL, 0);
            c->no_reuse = true;
            if (c->complete) {
                xd_finish(c, 0);
                return false;
            }
        }
        if (e != CURLE_OK || n == 0) {
            if (c->st == XD_HEAD && c->hlen == 0 && xd_resend(c))
                return false;
            const char *why =
                e == CURLE_OK ? "the server closed the connection" : curl_easy_strerror(e);
            if (c->st == XD_BODY)
                xd_fail(c, CURLE_PARTIAL_FILE, "%s at body offset %llu of %llu", why,
                        (unsigned long long)c->got, (unsigned long long)c->clen);
            else if (c->st == XD_HEAD)
                xd_fail(c, e == CURLE_OK ? CURLE_GOT_NOTHING : (int)e,
                        "%s after %zu bytes of the answer's head", why, c->hlen);
            else
                xd_fail(c, CURLE_PARTIAL_FILE, "%s at body offset %zu", why, r->blen);
            return false;
        }
        c->rx += n;
        if (c->st == XD_HEAD) {
            size_t at = c->hlen;
            c->hlen += n;
            size_t used = http_parser_execute(&c->p, &xd_settings, dst, n);
            enum http_errno he = HTTP_PARSER_ERRNO(&c->p);
            if (he == HPE_PAUSED) {
                if (!xd_head_done(c, at + used))
                    return false;
            } else if (he != HPE_OK) {
                xd_fail(c, CURLE_WEIRD_SERVER_REPLY, "the answer is not valid HTTP: %s",
                        http_errno_description(he));
                return false;
            }
        } else if (c->st == XD_BODY) {
            if (r->on_data)
                r->on_data(r->data_ctx, (unsigned char *)r->body, c->got, (unsigned char *)dst, n);
            c->got += n;
        } else {
            size_t used = http_parser_execute(&c->p, &xd_settings, dst, n);
            enum http_errno he = HTTP_PARSER_ERRNO(&c->p);
            if (he != HPE_OK && !(he == HPE_PAUSED && c->complete)) {
                xd_fail(c, CURLE_WEIRD_SERVER_REPLY, "the answer's body is not valid HTTP: %s",
                        http_errno_description(he));
                return false;
            }
            if (c->complete && used < n)
                c->no_reuse = true;
        }
        if (c->st == XD_BODY && c->got == c->clen) {
            r->blen = (size_t)c->clen;
            r->body[r->blen] = '\0';
            /* More bytes already behind the body: the connection is out of step. (With TLS
             * they would be in the TLS layer; the next answer's head then fails to parse.) */
            char b;
            if (!c->x->https && recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) >= 0)
                c->no_reuse = true;
            xd_finish(c, 0);
            return false;
        }
        if (c->st == XD_SLOW && c->complete) {
            xd_finish(c, 0);
            return false;
        }
    }
}

/* The server answered a PUT before taking its whole body: the answer is read (and is what
 * the PUT's owner sees), the connection is not used again (it is out of step). */
static void xd_early_answer(struct xdconn *c)
{
    c->no_reuse = true;
    c->st = XD_HEAD;
    (void)loop_watch_set(c->x->loop, &c->w, LOOP_READ);
    xd_read(c);
}

/* A PUT: the head's rest and the body's spans in one sendmsg() per pass, straight from the
 * caller's memory (r->vi/voff: the first span not fully written and the offset in it). */
static void xd_send_put(struct xdconn *c)
{
    struct xreq *r = c->r;
    for (;;) {
        struct iovec v[XD_SEND_IOV];
        int n = 0;
        if (c->req_off < c->req_len)
            v[n++] = (struct iovec){c->req + c->req_off, c->req_len - c->req_off};
        for (int i = r->vi; i < r->iovcnt && n < XD_SEND_IOV; i++) {
            size_t off = i == r->vi ? r->voff : 0;
            if (r->iov[i].iov_len > off)
                v[n++] = (struct iovec){(char *)r->iov[i].iov_base + off, r->iov[i].iov_len - off};
        }
        if (n == 0)
            break;
        struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)n};
        ssize_t k = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* READ too: a server refusing early (412, 403) answers before the body's end */
            (void)loop_watch_set(c->x->loop, &c->w, LOOP_READ | LOOP_WRITE);
            return;
        }
        char b;
        if (k < 0 && recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
            xd_early_answer(c); /* it answered, then closed: its answer is what counts */
            return;
        }
        if (k < 0) {
            xd_fail(c, CURLE_SEND_ERROR,
                    "%s after %zu of %zu bytes of the head and %llu of %llu "
                    "body bytes",
                    strerror(errno), c->req_off, c->req_len, (unsigned long long)c->body_off,
                    (unsigned long long)r->body_len);
            return;
        }
        c->rx += (uint64_t)k; /* the low-speed limit counts bytes either way, as libcurl's */
        size_t left = (size_t)k;
        size_t h = c->req_len - c->req_off < left ? c->req_len - c->req_off : left;
        c->req_off += h;
        left -= h;
        c->body_off += left;
        while (left > 0 && r->vi < r->iovcnt) {
            size_t room = r->iov[r->vi].iov_len - r->voff;
            if (left < room) {
                r->voff += left;
                break;
            }
            left -= room;
            r->vi++;
            r->voff = 0;
        }
        while (r->vi < r->iovcnt && r->iov[r->vi].iov_len == r->voff) { /* empty spans */
            r->vi++;
            r->voff = 0;
        }
    }
    c->st = XD_HEAD;
    (void)loop_watch_set(c->x->loop, &c->w, LOOP_READ);
}

static void xd_send(struct xdconn *c)
{
    if (c->r->op == XPORT_OP_PUT) {
        xd_send_put(c);
        return;
    }
    while (c->req_off < c->req_len) {
        size_t n = 0;
        CURLcode e = curl_easy_send(c->easy, c->req + c->req_off, c->req_len - c->req_off, &n);
        if (e == CURLE_AGAIN) {
            (void)loop_watch_set(c->x->loop, &c->w, LOOP_READ | LOOP_WRITE);
            return;
        }
        if (e != CURLE_OK) {
            if (c->req_off == 0 && xd_resend(c))
                return;
            xd_fail(c, CURLE_SEND_ERROR, "%s after %zu of %zu bytes of the request",
                    curl_easy_strerror(e), c->req_off, c->req_len);
            return;
        }
        c->req_off += n;
    }
    c->st = XD_HEAD;
    (void)loop_watch_set(c->x->loop, &c->w, LOOP_READ);
}

static void xd_on_event(void *ctx, int fd, unsigned events)
{
    struct xdconn *c = ctx;
    (void)fd;
    if (c->st == XD_IDLE) { /* the server closed it, or sent what nobody asked for */
        xd_conn_close(c);
        return;
    }
    if (c->st == XD_SEND && c->r->op == XPORT_OP_PUT && (events & LOOP_READ)) {
        xd_early_answer(c);
        return;
    }
    if (c->st == XD_SEND && (events & (LOOP_WRITE | LOOP_ERROR))) {
        xd_send(c);
        return;
    }
    if (events & (LOOP_READ | LOOP_ERROR))
        xd_read(c);
}

/* ---- starting requests -------------------------------------------------------------- */

/* Writes the request's wire text: request.c's header lines, less the ones that only tell
 * libcurl to leave a header out ("Name:"). */
static int xd_format(struct xdconn *c, struct xreq *r)
{
    bool q = r->query[0] != '\0';
    int n;
    if (r->op == XPORT_OP_PUT)
        n = snprintf(c->req, XD_REQ_MAX, "PUT %s%s%s HTTP/1.1\r\nContent-Length: %llu\r\n", r->path,
                     q ? "?" : "", r->query, (unsigned long long)r->body_len);
    else
        n = snprintf(c->req, XD_REQ_MAX, "%s %s%s%s HTTP/1.1\r\n",
                     r->op == XPORT_OP_GET ? "GET" : "HEAD", r->path, q ? "?" : "", r->query);
    if (n < 0 || n >= XD_REQ_MAX)
        return -1;
    size_t len = (size_t)n;
    for (int i = 0; i < r->nlines; i++) {
        const char *l = r->lines[i].data;
        size_t ll = strlen(l);
        if (ll > 0 && l[ll - 1] == ':')
            continue;
        if (len + ll + 4 > XD_REQ_MAX)
            return -1;
        memcpy(c->req + len, l, ll);
        memcpy(c->req + len + ll, "\r\n", 2);
        len += ll + 2;
    }
    memcpy(c->req + len, "\r\n", 2);
    c->req_len = len + 2;
    return 0;
}

static void xd_start(struct xdconn *c, struct xreq *r)
{
    struct xport *x = c->x;
    c->r = r;
    c->hlen = 0;
    c->f_len = c->v_len = 0;
    c->in_value = false;
    c->status = 0;
    c->complete = false;
    c->no_reuse = false;
    c->req_off = 0;
    c->body_off = 0;
    r->vi = 0;
    r->voff = 0;
    c->st = XD_SEND;
    r->blen = 0;
    r->sends++;
    if (c->answers > 0)
        x->pool.pol.reuses++;
    http_parser_init(&c->p, HTTP_RESPONSE);
    c->p.data = c;
    loop_timer_arm(x->loop, &c->timer, r->start_ns + (uint64_t)xreq_timeout_ms(x, r) * 1000000u);
    c->rx = c->rx_mark = 0;
    if (x->cfg.s3.low_speed_limit_bytes > 0 && x->cfg.s3.low_speed_time_ms > 0)
        loop_timer_arm(x->loop, &c->speed,
                       s3c__now_ns() + (uint64_t)x->cfg.s3.low_speed_time_ms * 1000000u);
    if (xd_format(c, r) < 0) {
        xd_fail(c, CURLE_URL_MALFORMAT, "the request does not fit in %d bytes", XD_REQ_MAX);
        return;
    }
    xd_send(c);
}

/* An idle connection about to carry a PUT or a heartbeat: the server may have closed it (or
 * sent what nobody asked for) since the loop last looked, as after a restart with PUTs
 * queued before the loop ran. A PUT is never sent again (GETs are, once, on a fresh
 * connection: xd_resend), so it must not be the one that finds out; libcurl looks too
 * before it reuses a connection. One recv() per PUT, not per commit. Plain HTTP only: a
 * TLS connection may hold a session ticket libcurl has not read yet. */
static bool xd_idle_alive(const struct xdconn *c)
{
    char b;
    if (c->x->https)
        return true;
    ssize_t k = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

/* Starts queued requests on idle connections, or opens new ones for them while below the
 * pool's size (a request waits on the connection opened for it; connects run on the loop). */
static void xd_dispatch(struct xport *x)
{
    struct xdirect *d = x->direct;
    while (d->queue && !x->closing) {
        struct xdconn *c = d->idle;
        struct xreq *r = d->queue;
        if (c && r->op == XPORT_OP_PUT && !xd_idle_alive(c)) {
            xd_conn_close(c); /* counted, and replaced by the pool when it is direct */
            continue;
        }
        if (!c && d->nconn >= d->max)
            return;
        d->queue = r->next_free;
        if (!d->queue)
            d->queue_tail = NULL;
        r->next_free = NULL;
        if (c) {
            d->idle = c->next_idle;
            xd_start(c, r);
            continue;
        }
        int cc;
        if (!xd_conn_open(x, r, &cc, r->errbuf)) /* else r is sent once it is connected */
            xd_answer(x, r, cc, 0, -1);
    }
}

/* An HTTP proxy would need the request in its absolute form: such GETs stay with libcurl. */
static bool xd_proxied(const struct xport *x)
{
    const char *names[] = {x->https ? "https_proxy" : "http_proxy",
                           x->https ? "HTTPS_PROXY" : "HTTP_PROXY", "all_proxy", "ALL_PROXY"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *v = getenv(names[i]);
        if (v && v[0])
            return true;
    }
    return false;
}

/* The direct state, made at first use; the proxy variables are read then, once (a getenv
 * per request was a measurable part of libcurl's cost per small PUT). NULL: no memory. */
static struct xdirect *xd_state(struct xport *x)
{
    if (!x->direct && (x->direct = calloc(1, sizeof(*x->direct))) != NULL) {
        x->direct->proxied = xd_proxied(x);
        x->direct->max = x->cfg.persistence.target_pool_size;
    }
    return x->direct;
}

void xport_direct_connections(struct xport *x, int n)
{
    if (xd_state(x))
        x->direct->max = n < 1 ? 1 : n;
}

/* Queues r (signed, start_ns set) for a connection and starts what can start. */
static void xd_enqueue(struct xport *x, struct xreq *r)
{
    r->next_free = NULL;
    if (x->direct->queue_tail)
        x->direct->queue_tail->next_free = r;
    else
        x->direct->queue = r;
    x->direct->queue_tail = r;
    x->user_in_flight++;
    xd_began(x);
    xd_dispatch(x);
}

/* The pool's HeadBuckets (pool.c, pool.direct): the same signed request libcurl would send,
 * on direct.c's connections. A refill opens a fresh connection (never more than the
 * direct connections' limit), a heartbeat takes the first idle one: a round of n
 * heartbeats is n different connections, each off the idle list while it carries one. */
int xport__direct_start_internal(struct xport *x, struct xreq *r)
{
    struct xdirect *d = xd_state(x);
    if (!d || x->closing)
        return S3C_ENOMEM;
    struct xdconn *c = NULL;
    if (r->kind == XREQ_HEARTBEAT) {
        while ((c = d->idle) && !xd_idle_alive(c))
            xd_conn_close(c); /* dead before its heartbeat: replaced by the refill */
        if (!c)
            return S3C_EAGAIN;
    } else if (d->nconn >= d->max) {
        return S3C_EAGAIN;
    }
    struct xreq_sign_extra sx = {.payload_hash = XPORT_EMPTY_SHA256};
    int rc = xreq_sign(x, r, "HEAD", &sx);
    if (rc < 0)
        return rc;
    r->start_ns = s3c__now_ns();
    if (c) {
        d->idle = c->next_idle;
        xd_began(x);
        xd_start(c, r);
        return 0;
    }
    int cc;
    if (!xd_conn_open(x, r, &cc, r->errbuf))
        return S3C_ENOMEM;
    xd_began(x);
    return 0;
}

int xport__direct_idle(const struct xport *x)
{
    int n = 0;
    for (const struct xdconn *c = x->direct ? x->direct->idle : NULL; c; c = c->next_idle)
        n++;
    return n;
}

bool xport__direct_put_ok(struct xport *x)
{
    if (!x->cfg.s3.direct_put || x->https)
        return false;
    struct xdirect *d = xd_state(x);
    return d && !d->proxied;
}

int xport__put_direct(struct xport *x, struct xreq *r, const struct xreq_sign_extra *sx)
{
    int rc = xreq_sign(x, r, "PUT", sx);
    if (rc < 0)
        return rc;
    r->start_ns = s3c__now_ns();
    xd_enqueue(x, r);
    return 0;
}

/* A direct GET of the whole object (range NULL) or of a Range. */
static int xd_get(struct xport *x, const char *key, const uint64_t *range, xport_data_fn data,
                  void *data_ctx, xport_done_fn done, void *ctx)
{
    if (!xd_state(x))
        return S3C_ENOMEM;
    struct xreq *r = xreq_get(x);
    if (!r)
        return S3C_ENOMEM;
    int rc = xreq_begin(x, r, XREQ_USER, XPORT_OP_GET, key);
    struct xreq_sign_extra sx = {.payload_hash = XPORT_EMPTY_SHA256,
                                 .range = range ? xreq_range(r, range[0], range[1]) : NULL};
    if (rc == 0)
        rc = xreq_sign(x, r, "GET", &sx);
    if (rc < 0) {
        xreq_release(x, r);
        return rc;
    }
    r->done = done;
    r->ctx = ctx;
    r->on_data = data;
    r->data_ctx = data_ctx;
    r->data_2xx = true;
    r->start_ns = s3c__now_ns();
    xd_enqueue(x, r);
    return 0;
}

int xport_get_direct(struct xport *x, const char *key, xport_data_fn data, void *data_ctx,
                     xport_done_fn done, void *ctx)
{
    if (!key || !data || !done)
        return S3C_EINVAL;
    if (!xd_state(x))
        return S3C_ENOMEM;
    if (x->direct->proxied)
        return xport_get_fed(x, key, data, data_ctx, done, ctx);
    return xd_get(x, key, NULL, data, data_ctx, done, ctx);
}

int xport_get_direct_range(struct xport *x, const char *key, uint64_t first, uint64_t last,
                           xport_data_fn data, void *data_ctx, xport_done_fn done, void *ctx)
{
    const uint64_t range[2] = {first, last};
    if (!key || !done || last < first)
        return S3C_EINVAL;
    if (!xd_state(x))
        return S3C_ENOMEM;
    if (x->direct->proxied) /* libcurl's ranged GET does not feed data: none is needed */
        return xport_get(x, key, first, last, done, ctx);
    return xd_get(x, key, range, data, data_ctx, done, ctx);
}

void xport__direct_free(struct xport *x)
{
    struct xdirect *d = x->direct;
    if (!d)
        return;
    while (d->all)
        xd_conn_close(d->all); /* their requests are in x->all_reqs: freed there */
    free(d);
    x->direct = NULL;
}
