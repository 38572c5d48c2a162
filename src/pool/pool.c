/* The pool's machinery (see pool.h): the sockets libcurl opens for the transport, warm-up
 * and replacement connections, heartbeat rounds, and ending a connection whose heartbeat
 * failed. It must never start a transfer from inside a libcurl callback (it schedules a
 * timer instead) and never hold more than target_pool_size connections. */
#include "pool/pool.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "s3commit.h"
#include "transport/xport_int.h"

static void pool_schedule_refill(struct pool *p, uint64_t at_ns)
{
    if (p->stopped)
        return;
    if (!p->refill_timer.armed || p->refill_timer.deadline_ns > at_ns)
        loop_timer_arm(p->loop, &p->refill_timer, at_ns);
}

/* One of the pool's connections opened, for r. */
static void pool_opened(struct pool *p, struct xreq *r)
{
    pool_on_open(&p->pol);
    if (r->kind == XREQ_REFILL && !r->opened) {
        r->opened = true;
        pool_refill_opened(&p->pol);
    }
}

curl_socket_t pool_opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct xreq *r = clientp;
    struct pool *p = &r->x->pool;
    (void)purpose;
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    if (p->nsocks < p->socks_cap)
        p->socks[p->nsocks++] = (struct pool_sock){fd, s3c__now_ns()};
    if (p->direct)
        p->pol.opens++; /* not one of the pool's connections (those are direct.c's) */
    else
        pool_opened(p, r);
    return fd;
}

int pool_closesocket_cb(void *clientp, curl_socket_t fd)
{
    struct pool *p = clientp;
    uint64_t now = s3c__now_ns(), opened = now; /* one not in the list: counted young */
    for (int i = 0; i < p->nsocks; i++) {
        if (p->socks[i].fd == fd) {
            opened = p->socks[i].opened_ns;
            p->socks[i] = p->socks[--p->nsocks];
            break;
        }
    }
    if (p->direct) {
        p->pol.closes++;
        return close(fd);
    }
    pool_on_close(&p->pol, now - opened, now);
    /* Replace it once libcurl is done with this call (never start transfers from inside
     * a libcurl callback). */
    pool_schedule_refill(p, s3c__now_ns());
    return close(fd);
}

void pool_direct_opened(struct pool *p, struct xreq *r)
{
    if (p->direct)
        pool_opened(p, r);
    else
        p->pol.opens++; /* direct GETs' own connections, beside libcurl's pool */
}

void pool_direct_closed(struct pool *p, uint64_t opened_ns)
{
    if (!p->direct) {
        p->pol.closes++;
        return;
    }
    uint64_t now = s3c__now_ns();
    pool_on_close(&p->pol, now - opened_ns, now);
    pool_schedule_refill(p, s3c__now_ns()); /* by the loop, outside direct.c's calls */
}

/* ---- heartbeat rounds ----------------------------------------------------------------
 * libcurl always reuses the first idle connection it finds, and on a fast server a
 * heartbeat finishes before the next one is even looked at, so a round of n heartbeats
 * would check one connection n times and never the others. So each heartbeat, once it
 * has its connection, holds it (receive paused; the request still goes out) until the
 * round's last heartbeat has one too: n heartbeats, n different idle connections. */

static void pool_hb_release(struct pool *p)
{
    p->hb_release_due = false;
    p->hb_unplaced = 0;
    loop_timer_disarm(p->loop, &p->hb_release_timer);
    for (struct xreq *r = p->x->all_reqs; r; r = r->next_all) {
        if (r->held) {
            r->held = false;
            curl_easy_pause(r->easy, CURLPAUSE_CONT);
        }
    }
}

static void pool_on_hb_release_timer(void *ctx)
{
    pool_hb_release(ctx); /* a heartbeat could not get a connection in time: stop holding */
}

void pool_on_prereq(struct pool *p, struct xreq *r)
{
    /* Only a first sending of this round's heartbeats counts: a resend or a late one from
     * the previous round must not release the round early. */
    if (r->kind != XREQ_HEARTBEAT || r->sends != 1 || r->hb_round != p->hb_round ||
        p->hb_unplaced <= 0)
        return;
    if (--p->hb_unplaced > 0) {
        r->held = true;
        curl_easy_pause(r->easy, CURLPAUSE_RECV);
    } else {
        p->hb_release_due = true; /* done by the loop, outside libcurl's callbacks */
    }
}

void pool_after_io(struct pool *p)
{
    if (p->hb_release_due)
        pool_hb_release(p);
}

/* Ends the connection a failed heartbeat used. libcurl still owns the fd: shutdown()
 * only makes it dead, so libcurl's liveness check discards it (close callback, counted,
 * replaced) before anything else can use it. */
static void pool_end_connection(struct pool *p, struct xreq *r)
{
    long lport = 0;
    if (curl_easy_getinfo(r->easy, CURLINFO_LOCAL_PORT, &lport) != CURLE_OK || lport <= 0)
        return;
    for (int i = 0; i < p->nsocks; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(p->socks[i].fd, (struct sockaddr *)&ss, &sl) < 0)
            continue;
        uint16_t port = ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port;
        if (ntohs(port) == lport) {
            shutdown(p->socks[i].fd, SHUT_RDWR);
            return;
        }
    }
}

/* ---- warm-up / replacement and heartbeat requests --------------------------------- */

/* Starts a HeadBucket of an internal kind; false when it could not be started. */
static bool pool_start_request(struct pool *p, enum xreq_kind kind)
{
    struct xport *x = p->x;
    struct xreq *r = xreq_get(x);
    if (!r)
        return false;
    if (xreq_begin(x, r, kind, XPORT_OP_HEAD_BUCKET, NULL) < 0) {
        xreq_release(x, r);
        return false;
    }
    r->hb_round = p->hb_round;
    if ((p->direct ? xport__direct_start_internal(x, r) : xreq_start_simple(x, r, "HEAD", NULL)) <
        0) {
        xreq_release(x, r);
        return false;
    }
    if (kind == XREQ_REFILL) {
        p->refills++;
        pool_refill_started(&p->pol);
    }
    return true;
}

static void pool_on_refill_timer(void *ctx)
{
    struct pool *p = ctx;
    uint64_t now = s3c__now_ns();
    int n = pool_refill_count(&p->pol, now);
    for (int i = 0; i < n; i++) {
        /* A direct refill finds no room while requests' own connects fill the pool: those
         * count once open, and the next heartbeat round looks again. */
        if (!pool_start_request(p, XREQ_REFILL) && p->direct)
            break;
    }
    uint64_t later = pool_refill_deadline(&p->pol, now);
    if (n == 0 && later)
        pool_schedule_refill(p, later);
}

static void pool_on_heartbeat_timer(void *ctx)
{
    struct pool *p = ctx;
    if (p->direct) {
        /* direct.c places each heartbeat on an idle connection itself: one per idle one */
        for (int i = xport__direct_idle(p->x); i > 0; i--)
            if (!pool_start_request(p, XREQ_HEARTBEAT))
                break;
        pool_schedule_refill(p, s3c__now_ns());
        loop_timer_arm(p->loop, &p->hb_timer, s3c__now_ns() + p->pol.heartbeat_ns);
        return;
    }
    int n = pool_heartbeat_count(&p->pol);
    if (p->hb_unplaced > 0)
        pool_hb_release(p); /* the last round never completed its placement */
    p->hb_round++;
    int started = 0;
    for (int i = 0; i < n; i++)
        started += pool_start_request(p, XREQ_HEARTBEAT);
    p->hb_unplaced = started; /* placed in socket_action, after this returns */
    if (started > 1)          /* placement takes well under a millisecond on a live pool */
        loop_timer_arm(p->loop, &p->hb_release_timer, s3c__now_ns() + 100 * 1000000ull);
    pool_schedule_refill(p, s3c__now_ns());
    loop_timer_arm(p->loop, &p->hb_timer, s3c__now_ns() + p->pol.heartbeat_ns);
}

void pool_internal_done(struct pool *p, struct xreq *r, long status, bool ok, const char *errline)
{
    if (r->kind == XREQ_REFILL) {
        pool_refill_done(&p->pol, r->opened, status > 0, s3c__now_ns());
        if (status == 0)
            S3C_LOG(S3C_LOG_WARN, "event=pool_connect_failed error=\"%s\"", errline);
        pool_schedule_refill(p, s3c__now_ns());
        return;
    }
    pool_heartbeat_done(&p->pol, ok);
    if (ok) {
        p->hb_refused_logged = false;
    } else if (status == 0 || status >= 500) {
        /* No answer, or a server error: the connection is replaced. Transfer errors
         * already cost libcurl the connection; a 5xx did not, so end it here (a new
         * connection may reach a healthy server behind the same endpoint). */
        S3C_LOG(S3C_LOG_WARN, "event=pool_heartbeat_failed error=\"%s\"", errline);
        if (status > 0 && !p->direct) /* direct.c closes its own after a 5xx */
            pool_end_connection(p, r);
    } else if (!p->hb_refused_logged) {
        /* A 4xx answer came over a working connection, so it is kept: closing it would
         * only churn the pool. Said once until a heartbeat succeeds again. */
        p->hb_refused_logged = true;
        S3C_LOG(S3C_LOG_WARN, "event=pool_heartbeat_refused connection=kept error=\"%s\"",
                errline); /* the error names the fix */
    }
}

/* ---- lifecycle -------------------------------------------------------------------- */

int pool_init(struct pool *p, struct xport *x, struct loop *loop, int target,
              int heartbeat_interval_ms)
{
    memset(p, 0, sizeof(*p));
    pool_policy_init(&p->pol, target, heartbeat_interval_ms);
    p->x = x;
    p->loop = loop;
    p->socks_cap = 4 * p->pol.target + 16;
    p->socks = calloc((size_t)p->socks_cap, sizeof(*p->socks));
    if (!p->socks)
        return S3C_ENOMEM;
    p->hb_timer = (struct loop_timer){.cb = pool_on_heartbeat_timer, .ctx = p};
    p->refill_timer = (struct loop_timer){.cb = pool_on_refill_timer, .ctx = p};
    p->hb_release_timer = (struct loop_timer){.cb = pool_on_hb_release_timer, .ctx = p};
    return 0;
}

void pool_start(struct pool *p)
{
    pool_on_refill_timer(p);
    loop_timer_arm(p->loop, &p->hb_timer, s3c__now_ns() + p->pol.heartbeat_ns);
}

void pool_stop(struct pool *p)
{
    p->stopped = true;
    if (!p->loop)
        return;
    loop_timer_disarm(p->loop, &p->hb_timer);
    loop_timer_disarm(p->loop, &p->refill_timer);
    loop_timer_disarm(p->loop, &p->hb_release_timer);
}

void pool_fini(struct pool *p)
{
    free(p->socks);
    p->socks = NULL;
    p->nsocks = p->socks_cap = 0;
}
