/* The mock's HTTP/1.1 engine: one epoll loop per thread over a shared listening socket,
 * libhttp-parser for requests, keep-alive and pipelining, 100-continue, per-connection
 * timers for latency, bandwidth, slow close and request timeouts. It never blocks on one
 * client (all sockets are non-blocking) and bounds each connection's memory: a fixed input
 * buffer, bounded url and headers, and a body no larger than --max-object-bytes. */
#include "mock.h"

#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define IN_CAP_SMALL (16 * 1024) /* input buffer of a new connection */
#define IN_CAP (256 * 1024)      /* ... grown to this once a request has a body */
#define OUT_HDR_CAP 8192
#define MAX_EVENTS 256

enum cstate {
    C_READ,   /* reading (and parsing) requests */
    C_WAIT,   /* an answer is ready, held back by latency */
    C_WRITE,  /* writing an answer */
    C_STALL,  /* a stalled request: reading and dropping, never answering */
    C_LINGER, /* answered with Connection: close, closing later (slow_close) */
};

struct worker;

struct conn {
    int fd;
    struct worker *w;
    enum cstate state;
    http_parser p;
    char *in;
    size_t in_len, in_off, in_cap;
    struct req *req;
    struct resp resp;
    int hmode;         /* 0 none, 1 in a header name, 2 in a value */
    int cur;           /* header being built */
    bool in_message;   /* a request has started and not yet been answered */
    bool message_done; /* the parser paused after a complete request */
    bool early_close;  /* answer now, before the body, then close */
    bool reset_now;    /* the reset fault fired */
    bool bad_431, bad_414;
    bool close_after; /* close once the answer is written */
    bool peer_closed;
    char out_hdr[OUT_HDR_CAP];
    size_t hlen, hoff;
    const char *bptr;
    size_t blen, boff;
    uint32_t events; /* current epoll interest */
    int64_t wake_at; /* monotonic ms; 0 = no timer */
    int64_t last_io;
    double bw, tokens; /* bandwidth limit and its token bucket */
    int64_t tok_at;
    struct conn *next, *prev;   /* all connections of the worker */
    struct conn *tnext, *tprev; /* connections with a timer */
    bool timed;
};

struct worker {
    struct mock *m;
    int id, epfd, lfd, evfd;
    pthread_t th;
    uint64_t seq;
    struct conn *conns, *timed;
    char date[64];
    time_t date_t;
    int64_t last_sweep;
    int64_t relisten_at; /* accept failed (out of fds): listen again at this time */
};

static char listen_marker, stop_marker;

static int64_t mock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void mock_set_events(struct conn *c, uint32_t ev)
{
    if (c->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &e);
    c->events = ev;
}

static void mock_timer_set(struct conn *c, int64_t at)
{
    struct worker *w = c->w;
    c->wake_at = at;
    if (!c->timed) {
        c->tnext = w->timed;
        c->tprev = NULL;
        if (w->timed)
            w->timed->tprev = c;
        w->timed = c;
        c->timed = true;
    }
}

static void mock_timer_clear(struct conn *c)
{
    struct worker *w = c->w;
    c->wake_at = 0;
    if (!c->timed)
        return;
    if (c->tprev)
        c->tprev->tnext = c->tnext;
    else
        w->timed = c->tnext;
    if (c->tnext)
        c->tnext->tprev = c->tprev;
    c->timed = false;
}

static void mock_stat_status(struct mock *m, enum op op, int status)
{
    if (op >= OP_COUNT)
        op = OP_BAD_REQUEST;
    if (status < 0 || status >= 600)
        status = 0;
    stat_add(&m->stats.status[op][status], 1);
}

static void mock_conn_close(struct conn *c, bool rst)
{
    struct worker *w = c->w;
    if (rst) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    mock_timer_clear(c);
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    /* Counted closed before the peer can see the close, so a client that saw its
     * connection end and then asks /_mock/stats never finds it still open. */
    atomic_fetch_sub(&w->m->stats.conns_open, 1);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s3_req_reset(c->req);
    resp_reset(&c->resp);
    free(c->req);
    free(c->in);
    free(c);
}

/* ---- bandwidth ---- */

/* How many bytes may move now (SIZE_MAX when unlimited); arms a timer when none. */
static size_t mock_bw_allow(struct conn *c, size_t want)
{
    if (c->bw <= 0)
        return want;
    int64_t now = mock_mono_ms();
    c->tokens += c->bw * (double)(now - c->tok_at) / 1000.0;
    c->tok_at = now;
    double burst = c->bw / 10 > 1024 ? c->bw / 10 : 1024; /* 100 ms worth */
    if (c->tokens > burst)
        c->tokens = burst;
    if (c->tokens < 1) {
        int64_t wait = (int64_t)((1 - c->tokens) * 1000.0 / c->bw) + 1;
        mock_timer_set(c, now + wait);
        stat_add(&c->w->m->stats.faults[F_BANDWIDTH], 1);
        return 0;
    }
    return want < (size_t)c->tokens ? want : (size_t)c->tokens;
}

static void mock_bw_used(struct conn *c, size_t n)
{
    if (c->bw > 0)
        c->tokens -= (double)n;
}

/* ---- parser callbacks ---- */

static struct conn *mock_conn_of(http_parser *p)
{
    return p->data;
}

static void mock_hput(struct conn *c, const char *p, size_t n)
{
    struct req *r = c->req;
    if (r->hlen + n + 1 > sizeof(r->hbuf)) {
        c->bad_431 = true;
        return;
    }
    memcpy(r->hbuf + r->hlen, p, n);
    r->hlen += n;
}

static int mock_on_message_begin(http_parser *p)
{
    struct conn *c = mock_conn_of(p);
    struct req *r = c->req;
    s3_req_reset(r);
    r->url_len = r->hlen = 0;
    r->url[0] = '\0';
    r->nh = 0;
    r->has_cl = r->has_body = r->too_big = false;
    r->content_length = r->body_bytes = 0;
    r->op = OP_BAD_REQUEST;
    r->keep_body = r->early = r->aws_chunked = r->expect_continue = false;
    r->body_cap = 0;
    r->bucket[0] = '\0';
    r->klen = 0;
    memset(&r->plan, 0, sizeof(r->plan));
    c->hmode = 0;
    c->cur = 0;
    c->in_message = true;
    c->bad_431 = c->bad_414 = false;
    struct worker *w = c->w;
    snprintf(r->request_id, sizeof(r->request_id), "%02X%014" PRIX64, (unsigned)w->id & 0xff,
             (uint64_t)(++w->seq & 0xFFFFFFFFFFFFFFULL));
    return 0;
}

static int mock_on_url(http_parser *p, const char *at, size_t n)
{
    struct conn *c = mock_conn_of(p);
    struct req *r = c->req;
    if (r->url_len + n + 1 > sizeof(r->url)) {
        c->bad_414 = true;
        return 0;
    }
    memcpy(r->url + r->url_len, at, n);
    r->url_len += n;
    r->url[r->url_len] = '\0';
    return 0;
}

static int mock_on_header_field(http_parser *p, const char *at, size_t n)
{
    struct conn *c = mock_conn_of(p);
    struct req *r = c->req;
    if (c->hmode != 1) {
        if (c->hmode == 2)
            mock_hput(c, "", 1);
        if (r->nh >= REQ_MAX_HEADERS) {
            c->bad_431 = true;
            return 0;
        }
        c->cur = r->nh;
        r->hname[c->cur] = r->hbuf + r->hlen;
        r->hvalue[c->cur] = "";
        c->hmode = 1;
    }
    mock_hput(c, at, n);
    return 0;
}

static int mock_on_header_value(http_parser *p, const char *at, size_t n)
{
    struct conn *c = mock_conn_of(p);
    struct req *r = c->req;
    if (c->bad_431)
        return 0;
    if (c->hmode != 2) {
        mock_hput(c, "", 1);
        r->hvalue[c->cur] = r->hbuf + r->hlen;
        r->nh = c->cur + 1;
        c->hmode = 2;
    }
    mock_hput(c, at, n);
    return 0;
}

static const char *mock_find_hdr(const struct req *r, const char *name)
{
    for (int i = 0; i < r->nh; i++)
        if (strcasecmp(r->hname[i], name) == 0)
            return r->hvalue[i];
    return NULL;
}

static int mock_on_headers_complete(http_parser *p)
{
    struct conn *c = mock_conn_of(p);
    struct req *r = c->req;
    struct mock *m = c->w->m;
    if (c->hmode == 2)
        mock_hput(c, "", 1);
    if (c->bad_431 || c->bad_414)
        return -1; /* answered by the error path */
    r->method = p->method;
    r->keep_alive = http_should_keep_alive(p);
    r->has_cl = mock_find_hdr(r, "content-length") != NULL;
    r->content_length = r->has_cl ? p->content_length : 0;
    r->has_body = (p->flags & F_CHUNKED) || (r->has_cl && r->content_length > 0);
    /* Every Expect: 100-continue gets its 100 (or a refusal and a close), also with
     * Content-Length: 0, as S3 does: botocore, answered at once without a 100, keeps the
     * final answer's status line for the connection's next 100-continue request and then
     * misreads that request's answer, waiting for its body until the read timeout. */
    const char *ex = mock_find_hdr(r, "expect");
    r->expect_continue = ex && strcasecmp(ex, "100-continue") == 0;

    s3_begin(m, r, &c->resp);
    if (r->plan.reset) {
        c->reset_now = true;
        stat_add(&m->stats.faults[F_RESET], 1);
        return -1;
    }
    if (r->plan.bandwidth > 0) {
        if (c->bw <= 0)
            c->tok_at = mock_mono_ms();
        c->bw = r->plan.bandwidth;
    } else {
        c->bw = 0;
    }
    if (r->early) {
        /* A refusal before the body: if the client waits for 100-continue (even with no
         * body: the close clears botocore's state, see above) or the body is large, answer
         * now and close (the body is never read); else read and drop it. */
        if (r->expect_continue || (p->flags & F_CHUNKED) || r->content_length > 1048576) {
            c->early_close = true;
            http_parser_pause(p, 1);
        }
        return 0;
    }
    if (r->expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        ssize_t w = send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL);
        if (w != (ssize_t)(sizeof(cont) - 1)) {
            c->reset_now = true; /* cannot happen with an empty send buffer; give up */
            return -1;
        }
    }
    return 0;
}

static int mock_on_body(http_parser *p, const char *at, size_t n)
{
    struct conn *c = mock_conn_of(p);
    c->req->body_bytes += n;
    if (!c->req->early)
        s3_body(c->req, at, n);
    return 0;
}

static int mock_on_message_complete(http_parser *p)
{
    struct conn *c = mock_conn_of(p);
    c->message_done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = mock_on_message_begin,
    .on_url = mock_on_url,
    .on_header_field = mock_on_header_field,
    .on_header_value = mock_on_header_value,
    .on_headers_complete = mock_on_headers_complete,
    .on_body = mock_on_body,
    .on_message_complete = mock_on_message_complete,
};

/* ---- answers ---- */

static const char *mock_reason(int status)
{
    switch (status) {
    case 431:
        return "Request Header Fields Too Large";
    case 414:
        return "URI Too Long";
    default:
        return http_status_str((enum http_status)status);
    }
}

static void mock_refresh_date(struct worker *w)
{
    time_t now = time(NULL);
    if (now == w->date_t)
        return;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(w->date, sizeof(w->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    w->date_t = now;
}

static bool mock_conn_write(struct conn *c);

/* Turns c->resp into bytes and starts sending (after the latency fault, if any).
 * Returns false when the connection is gone. */
static bool mock_start_answer(struct conn *c)
{
    struct worker *w = c->w;
    struct mock *m = w->m;
    struct req *r = c->req;
    struct resp *o = &c->resp;
    uint64_t clen;

    if (!r->keep_alive || c->early_close)
        o->close = true;
    if (r->plan.slow_close) {
        o->close = true;
        stat_add(&m->stats.faults[F_SLOW_CLOSE], 1);
    }
    if (o->blob) {
        c->bptr = o->blob->data + o->blob_off;
        c->blen = o->blob_len;
    } else {
        c->bptr = o->body.p;
        c->blen = o->body.len;
    }
    clen = o->no_body ? o->announced_len : c->blen;
    if (o->no_body)
        c->blen = 0;
    c->boff = 0;
    mock_refresh_date(w);
    int n = snprintf(c->out_hdr, sizeof(c->out_hdr),
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: s3commit-mock\r\n"
                     "x-amz-request-id: %s\r\nx-amz-id-2: %s\r\n%s",
                     o->status, mock_reason(o->status), w->date, r->request_id, r->request_id,
                     o->head.p ? o->head.p : "");
    if (n > 0 && (size_t)n < sizeof(c->out_hdr) && o->status != 204 && o->status != 304)
        n += snprintf(c->out_hdr + n, sizeof(c->out_hdr) - (size_t)n,
                      "Content-Length: %" PRIu64 "\r\n", clen);
    if (n > 0 && (size_t)n < sizeof(c->out_hdr))
        n += snprintf(c->out_hdr + n, sizeof(c->out_hdr) - (size_t)n, "%s\r\n",
                      o->close ? "Connection: close\r\n" : "");
    if (n <= 0 || (size_t)n >= sizeof(c->out_hdr)) {
        n = snprintf(c->out_hdr, sizeof(c->out_hdr),
                     "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n");
        c->blen = 0;
        o->close = true;
    }
    c->hlen = (size_t)n;
    c->hoff = 0;
    mock_stat_status(m, r->op, o->status);
    stat_add(&m->stats.requests, 1);
    if (r->plan.delay_ms) {
        stat_add(&m->stats.faults[F_LATENCY], 1);
        c->state = C_WAIT;
        mock_set_events(c, 0);
        mock_timer_set(c, mock_mono_ms() + r->plan.delay_ms);
        return true;
    }
    c->state = C_WRITE;
    return mock_conn_write(c);
}

/* A request line that starts "TOKEN " names a method we do not know (501); anything
 * else that fails there is a malformed request line (400). */
static bool mock_unknown_method(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && p[i] >= 'A' && p[i] <= 'Z')
        i++;
    return i > 0 && i < n && p[i] == ' ';
}

/* The parser stopped on an error: answer 400/414/431/501 and close. */
static bool mock_bad_request(struct conn *c, enum http_errno e, const char *at, size_t n)
{
    struct req *r = c->req;
    struct resp *o = &c->resp;
    resp_reset(o);
    r->keep_alive = false;
    r->op = OP_BAD_REQUEST;
    memset(&r->plan, 0, sizeof(r->plan));
    if (c->bad_431)
        s3_error(o, 431, "RequestHeaderFieldsTooLarge",
                 "Your request's headers exceed 16 KiB or 100 fields", NULL);
    else if (c->bad_414)
        s3_error(o, 414, "RequestURITooLong", "Your request URI exceeds 8 KiB", NULL);
    else if (e == HPE_INVALID_METHOD && mock_unknown_method(at, n))
        s3_error(o, 501, "NotImplemented", "The request method is not implemented", NULL);
    else if (e == HPE_HEADER_OVERFLOW)
        s3_error(o, 431, "RequestHeaderFieldsTooLarge", "Your request's headers are too large",
                 NULL);
    else
        s3_error(o, 400, "BadRequest", http_errno_description(e), NULL);
    o->no_body = false;
    snprintf(r->request_id, sizeof(r->request_id), "%016" PRIX64, ++c->w->seq);
    return mock_start_answer(c);
}

/* A whole request arrived (or an early refusal is ready). */
static bool mock_handle_message(struct conn *c)
{
    struct mock *m = c->w->m;
    struct req *r = c->req;
    if (!r->early)
        s3_end(m, r, &c->resp);
    if (r->plan.stall) {
        stat_add(&m->stats.faults[F_STALL], 1);
        mock_stat_status(m, r->op, 0);
        c->state = C_STALL;
        return true;
    }
    if (r->plan.error)
        stat_add(&m->stats.faults[F_ERROR], 1);
    return mock_start_answer(c);
}

/* Parses what is buffered up to the end of one request. Returns false when the
 * connection is gone. */
static bool mock_process_input(struct conn *c)
{
    while (c->state == C_READ && c->in_off < c->in_len) {
        size_t start = c->in_off;
        size_t n = http_parser_execute(&c->p, &settings, c->in + c->in_off, c->in_len - c->in_off);
        c->in_off += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
        if (c->reset_now) {
            mock_stat_status(c->w->m, c->req->op, 0);
            mock_conn_close(c, true);
            return false;
        }
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->p, 0);
            c->message_done = false;
            return mock_handle_message(c);
        }
        if (e != HPE_OK)
            return mock_bad_request(c, e, c->in + start, c->in_len - start);
    }
    return true;
}

/* Answers buffered (pipelined) requests one after another, without recursion. */
static bool mock_drive(struct conn *c)
{
    while (c->state == C_READ && c->in_off < c->in_len)
        if (!mock_process_input(c))
            return false;
    if (c->state == C_READ && c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
    return true;
}

static bool mock_answer_done(struct conn *c)
{
    struct req *r = c->req;
    if (c->resp.close) {
        if (r->plan.slow_close) {
            c->state = C_LINGER;
            mock_set_events(c, EPOLLIN);
            mock_timer_set(c,
                           mock_mono_ms() + (r->plan.slow_close_ms ? r->plan.slow_close_ms : 1000));
            return true;
        }
        shutdown(c->fd, SHUT_WR);
        mock_conn_close(c, false);
        return false;
    }
    resp_reset(&c->resp);
    s3_req_reset(r);
    c->in_message = false;
    c->early_close = false;
    c->state = C_READ;
    mock_set_events(c, EPOLLIN);
    return true;
}

static bool mock_conn_write(struct conn *c)
{
    struct mock *m = c->w->m;
    for (;;) {
        size_t left = (c->hlen - c->hoff) + (c->blen - c->boff);
        if (left == 0)
            return mock_answer_done(c);
        size_t allow = mock_bw_allow(c, left);
        if (allow == 0) {
            mock_set_events(c, 0);
            return true;
        }
        struct iovec iov[2];
        int cnt = 0;
        size_t h = c->hlen - c->hoff;
        if (h) {
            iov[cnt].iov_base = c->out_hdr + c->hoff;
            iov[cnt].iov_len = h < allow ? h : allow;
            allow -= iov[cnt].iov_len;
            cnt++;
        }
        if (c->blen - c->boff && allow) {
            size_t b = c->blen - c->boff;
            iov[cnt].iov_base = (char *)c->bptr + c->boff;
            iov[cnt].iov_len = b < allow ? b : allow;
            cnt++;
        }
        ssize_t w = writev(c->fd, iov, cnt);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                mock_set_events(c, EPOLLOUT);
                return true;
            }
            if (errno == EINTR)
                continue;
            mock_conn_close(c, false);
            return false;
        }
        c->last_io = mock_mono_ms();
        mock_bw_used(c, (size_t)w);
        stat_add(&m->stats.bytes_out, (uint64_t)w);
        size_t k = (size_t)w;
        size_t hk = k < h ? k : h;
        c->hoff += hk;
        c->boff += k - hk;
    }
}

/* A kept body with a known length, nothing buffered: read straight into the body, at
 * most what is left of it (never a byte of the next request), and parse it there.
 * Returns 1 when it read all it asked for, 2 when the caller should stop reading (a short
 * read, or the request is complete), 0 when the caller should read normally, -1 when the
 * connection is gone. */
static int mock_conn_read_body(struct conn *c)
{
    struct mock *m = c->w->m;
    size_t room;
    char *dst;
    if (c->state != C_READ || !c->in_message || c->in_off != c->in_len || c->message_done ||
        !(dst = s3_body_room(c->req, &room)))
        return 0;
    size_t allow = mock_bw_allow(c, room);
    if (allow == 0)
        return 0; /* the bandwidth fault pauses the socket there */
    ssize_t n = read(c->fd, dst, allow);
    if (n <= 0)
        return 0; /* EAGAIN, EOF and errors: the normal read sees them too */
    c->last_io = mock_mono_ms();
    mock_bw_used(c, (size_t)n);
    stat_add(&m->stats.bytes_in, (uint64_t)n);
    size_t k = http_parser_execute(&c->p, &settings, dst, (size_t)n);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    if (c->reset_now || (e != HPE_OK && e != HPE_PAUSED) || k != (size_t)n) {
        mock_stat_status(m, c->req->op, 0);
        mock_conn_close(c, true);
        return -1;
    }
    if (e == HPE_PAUSED) {
        http_parser_pause(&c->p, 0);
        c->message_done = false;
        if (!mock_handle_message(c))
            return -1;
        return 2;
    }
    return (size_t)n < allow ? 2 : 1;
}

/* Reads what the socket has. Returns false when the connection was closed. */
static bool mock_conn_read(struct conn *c)
{
    struct mock *m = c->w->m;
    if (c->state == C_WRITE || c->state == C_WAIT)
        return true; /* pipelined bytes wait in the kernel until the answer is out */
    for (int rounds = 0; rounds < 16; rounds++) {
        int direct = mock_conn_read_body(c);
        if (direct < 0)
            return false;
        if (direct == 2)
            return true;
        if (direct == 1)
            continue;
        if (c->state == C_READ && c->in_cap < IN_CAP && c->in_message && c->req->has_body) {
            char *bigger = realloc(c->in, IN_CAP); /* bodies read in large chunks */
            if (bigger) {
                c->in = bigger;
                c->in_cap = IN_CAP;
            }
        }
        if (c->state == C_READ && c->in_len == c->in_cap) {
            if (c->in_off == 0)
                return true; /* full and unparsed: cannot happen (parser consumes all) */
            memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
            c->in_len -= c->in_off;
            c->in_off = 0;
        }
        char *dst = c->in + c->in_len;
        size_t room = c->in_cap - c->in_len;
        if (c->state != C_READ) { /* stalled or lingering: read and drop */
            dst = c->in;
            room = c->in_cap;
        }
        size_t allow = mock_bw_allow(c, room);
        if (allow == 0) {
            mock_set_events(c, 0);
            return true;
        }
        ssize_t n = read(c->fd, dst, allow);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return true;
            mock_conn_close(c, false);
            return false;
        }
        if (n == 0) {
            /* the peer is gone: a half-sent request is dropped, never stored */
            if (c->state == C_READ && c->in_message)
                mock_stat_status(m, c->req->op, 0);
            mock_conn_close(c, false);
            return false;
        }
        c->last_io = mock_mono_ms();
        mock_bw_used(c, (size_t)n);
        stat_add(&m->stats.bytes_in, (uint64_t)n);
        if (c->state != C_READ)
            continue;
        c->in_len += (size_t)n;
        if (!mock_drive(c))
            return false;
        if (c->state != C_READ)
            return true;
        if ((size_t)n < allow)
            return true;
    }
    return true;
}

static void mock_conn_event(struct conn *c, uint32_t ev)
{
    if (ev & (EPOLLERR | EPOLLHUP)) {
        if (c->state == C_READ && c->in_message)
            mock_stat_status(c->w->m, c->req->op, 0);
        mock_conn_close(c, false);
        return;
    }
    if (c->state == C_WRITE && (ev & EPOLLOUT)) {
        if (mock_conn_write(c))
            mock_drive(c);
        return;
    }
    if (ev & EPOLLIN)
        mock_conn_read(c);
}

static void mock_conn_timer(struct conn *c)
{
    mock_timer_clear(c);
    switch (c->state) {
    case C_WAIT:
        c->state = C_WRITE;
        if (mock_conn_write(c))
            mock_drive(c);
        break;
    case C_WRITE:
        if (mock_conn_write(c))
            mock_drive(c);
        break;
    case C_LINGER:
        mock_conn_close(c, false);
        break;
    case C_READ:
    case C_STALL:
        mock_set_events(c, EPOLLIN);
        mock_conn_read(c);
        break;
    }
}

static void mock_accept_some(struct worker *w)
{
    struct mock *m = w->m;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of descriptors: stop listening for 100 ms rather than spin */
                epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->lfd, NULL);
                w->relisten_at = mock_mono_ms() + 100;
                fprintf(stderr, "s3commit-mock: accept: %s (pausing 100 ms)\n", strerror(errno));
            }
            return;
        }
        struct conn *c = calloc(1, sizeof(*c));
        char *in = malloc(IN_CAP_SMALL);
        struct req *r = calloc(1, sizeof(*r));
        if (!c || !in || !r) {
            free(c);
            free(in);
            free(r);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->fd = fd;
        c->w = w;
        c->in = in;
        c->in_cap = IN_CAP_SMALL;
        c->req = r;
        c->state = C_READ;
        c->last_io = mock_mono_ms();
        http_parser_init(&c->p, HTTP_REQUEST);
        c->p.data = c;
        c->events = EPOLLIN;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
            free(c);
            free(in);
            free(r);
            close(fd);
            continue;
        }
        c->next = w->conns;
        if (w->conns)
            w->conns->prev = c;
        w->conns = c;
        int64_t open = atomic_fetch_add(&m->stats.conns_open, 1) + 1;
        int64_t peak = atomic_load(&m->stats.conns_peak);
        while (open > peak && !atomic_compare_exchange_weak(&m->stats.conns_peak, &peak, open))
            ;
        stat_add(&m->stats.conns_total, 1);
    }
}

/* Started requests idle longer than --request-timeout-ms answer 400 RequestTimeout;
 * connections idle between requests longer than --idle-timeout-ms are closed. */
static void mock_sweep(struct worker *w, int64_t now)
{
    int limit = w->m->cfg.request_timeout_ms;
    int idle = w->m->cfg.idle_timeout_ms;
    for (struct conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (idle > 0 && c->state == C_READ && !c->in_message && c->in_len == c->in_off &&
            now - c->last_io >= idle) {
            mock_conn_close(c, false);
            continue;
        }
        if (limit <= 0 || c->state != C_READ || !c->in_message || now - c->last_io < limit)
            continue;
        struct req *r = c->req;
        resp_reset(&c->resp);
        r->keep_alive = false;
        r->early = true;
        memset(&r->plan, 0, sizeof(r->plan));
        s3_error(&c->resp, 400, "RequestTimeout",
                 "Your socket connection to the server was not read from or written to within "
                 "the timeout period.",
                 r);
        c->resp.no_body = false;
        c->early_close = true;
        mock_start_answer(c);
    }
}

static void *mock_worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[MAX_EVENTS];
    while (!atomic_load(&w->m->stopping)) {
        int64_t now = mock_mono_ms();
        int timeout = w->relisten_at ? 100 : 1000;
        if (w->m->cfg.idle_timeout_ms > 0 && w->m->cfg.idle_timeout_ms / 4 < timeout)
            timeout = w->m->cfg.idle_timeout_ms / 4 + 1;
        for (struct conn *c = w->timed; c; c = c->tnext) {
            int64_t d = c->wake_at - now;
            if (d < timeout)
                timeout = d < 0 ? 0 : (int)d;
        }
        int n = epoll_wait(w->epfd, evs, MAX_EVENTS, timeout);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &listen_marker)
                mock_accept_some(w);
            else if (p == &stop_marker)
                break;
            else
                mock_conn_event(p, evs[i].events);
        }
        now = mock_mono_ms();
        if (w->relisten_at && now >= w->relisten_at) {
            struct epoll_event le = {.events = EPOLLIN | EPOLLEXCLUSIVE,
                                     .data.ptr = &listen_marker};
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &le);
            w->relisten_at = 0;
        }
        for (struct conn *c = w->timed, *next; c; c = next) {
            next = c->tnext;
            if (c->wake_at <= now)
                mock_conn_timer(c); /* may close c; next was taken before */
        }
        int period = w->m->cfg.idle_timeout_ms > 0 && w->m->cfg.idle_timeout_ms < 4000
                         ? w->m->cfg.idle_timeout_ms / 4
                         : 1000;
        if (now - w->last_sweep >= period) {
            w->last_sweep = now;
            mock_sweep(w, now);
        }
    }
    while (w->conns)
        mock_conn_close(w->conns, false);
    return NULL;
}

int server_run(struct mock *m, int listen_fd)
{
    int nt = m->cfg.threads > 0 ? m->cfg.threads : 1;
    struct worker *ws = calloc((size_t)nt, sizeof(*ws));
    int rc = 0;
    if (!ws)
        return -ENOMEM;
    for (int i = 0; i < nt; i++) {
        struct worker *w = &ws[i];
        w->m = m;
        w->id = i;
        w->lfd = listen_fd;
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event le = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &listen_marker};
        struct epoll_event se = {.events = EPOLLIN, .data.ptr = &stop_marker};
        if (w->epfd < 0 || w->evfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, listen_fd, &le) < 0 ||
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &se) < 0 ||
            pthread_create(&w->th, NULL, mock_worker_main, w) != 0) {
            fprintf(stderr, "s3commit-mock: cannot start worker %d: %s\n", i, strerror(errno));
            nt = i;
            rc = -EIO;
            atomic_store(&m->stopping, true);
            break;
        }
    }
    /* main thread: wait for SIGTERM/SIGINT (blocked in every thread) */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (rc == 0) {
        int sig;
        sigwait(&set, &sig);
    }
    atomic_store(&m->stopping, true);
    for (int i = 0; i < nt; i++) {
        uint64_t one = 1;
        if (write(ws[i].evfd, &one, sizeof(one)) < 0)
            perror("s3commit-mock: waking a worker");
    }
    for (int i = 0; i < nt; i++)
        pthread_join(ws[i].th, NULL);
    for (int i = 0; i < (int)(m->cfg.threads > 0 ? m->cfg.threads : 1); i++) {
        if (ws[i].epfd > 0)
            close(ws[i].epfd);
        if (ws[i].evfd > 0)
            close(ws[i].evfd);
    }
    free(ws);
    return rc;
}
