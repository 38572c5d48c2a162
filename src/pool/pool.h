/* The warm connection pool: target_pool_size keep-alive connections, opened at start,
 * replaced when one dies (with backoff against a dead endpoint), and checked with
 * heartbeats (HeadBucket over each idle connection every heartbeat_interval_ms; one that
 * gets no answer or a 5xx is ended and replaced). Two layers:
 *   - the policy (struct pool_policy): pure bookkeeping, no I/O, no allocation;
 *   - the machinery (struct pool): the sockets libcurl opened, the refill and heartbeat
 *     timers on the owner's loop, heartbeat rounds, ending a connection found by its
 *     local port. It starts its requests through the transport's internals.
 * Touched only from the loop's thread; no locks. */
#ifndef S3C_POOL_H
#define S3C_POOL_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

#include "loop/loop.h"

struct xport;
struct xreq;

/* ---- policy ---------------------------------------------------------------------- */

struct pool_policy {
    int target;                 /* target_pool_size: never more connections than this */
    uint64_t heartbeat_ns;      /* heartbeat_interval_ms */
    int open;                   /* sockets open now */
    int warming;                /* fresh-connect requests that have not opened a socket */
    int active;                 /* requests in libcurl now (user + internal) */
    int refill_failures;        /* consecutive failed refills (drives the backoff) */
    int churn;                  /* connections in a row that died young (drives it too) */
    uint64_t refill_not_before; /* no refill before this monotonic ns (backoff) */
    /* counters (xport_stats) */
    uint64_t opens, closes, reuses, heartbeats, heartbeat_failures;
};

void pool_policy_init(struct pool_policy *p, int target, int heartbeat_interval_ms);

void pool_on_open(struct pool_policy *p); /* a socket was opened */
/* A socket was closed, age_ns after it was opened. One that dies young
 * (POOL_YOUNG_NS: a server that closes every connection after one answer, an overloaded
 * one answering 503 and closing) raises `churn`, which backs refills off as failed connects
 * do, and only a connection that lived longer (or a heartbeat answered on one) ends that
 * backoff: a refill's answer alone must not, or each replacement would be replaced at once,
 * thousands a second against the server least able to take it. */
#define POOL_YOUNG_NS (1000 * 1000000ull)
void pool_on_close(struct pool_policy *p, uint64_t age_ns, uint64_t now_ns);

/* A request entered / left libcurl. reused: it went over an existing connection. */
void pool_on_start(struct pool_policy *p);
void pool_on_done(struct pool_policy *p, bool reused);

/* A fresh-connect (refill) request started / opened its socket / finished. ok: it got
 * an HTTP answer (the connection works), which resets the refill backoff. */
void pool_refill_started(struct pool_policy *p);
void pool_refill_opened(struct pool_policy *p);
void pool_refill_done(struct pool_policy *p, bool opened, bool ok, uint64_t now_ns);

/* How many fresh connections to open now to get back to target (0 while backing off
 * after failures, or when enough are open or on their way). */
int pool_refill_count(const struct pool_policy *p, uint64_t now_ns);

/* When the next refill may run, 0 when it may run now. */
uint64_t pool_refill_deadline(const struct pool_policy *p, uint64_t now_ns);

/* How many heartbeats to send now: one per idle connection. */
int pool_heartbeat_count(const struct pool_policy *p);
void pool_heartbeat_done(struct pool_policy *p, bool ok);

/* ---- machinery ------------------------------------------------------------------- */

struct pool {
    struct pool_policy pol;
    struct xport *x;   /* the transport whose connections these are */
    struct loop *loop; /* its owner's loop */
    struct loop_timer hb_timer;
    struct loop_timer refill_timer;
    struct loop_timer hb_release_timer; /* ends a heartbeat round's hold at the latest */
    struct pool_sock {
        int fd;
        uint64_t opened_ns; /* for its age when it closes (pool_on_close) */
    } *socks;               /* the open sockets (for ending one after a failed heartbeat) */
    int nsocks, socks_cap;
    bool stopped;           /* closing: no refills */
    bool hb_refused_logged; /* a heartbeat refusal (4xx) was logged; reset by a success */
    int hb_unplaced;        /* heartbeats of this round not yet on a connection */
    unsigned hb_round;      /* the current heartbeat round */
    bool hb_release_due;    /* the last one got its connection: release the held ones */
    uint64_t refills;       /* fresh connections opened to replace or warm the pool */
    bool direct; /* the pool's connections are direct.c's (s3.direct_put in use): warm-up,
                    refills and heartbeats are HeadBuckets on them; libcurl's sockets
                    (GET, HEAD, LIST) are only counted in opens/closes */
};

/* Sets the pool up for x (no I/O yet). Returns 0 or S3C_ENOMEM. */
int pool_init(struct pool *p, struct xport *x, struct loop *loop, int target,
              int heartbeat_interval_ms);
/* Warm-up: opens every connection now (answers not waited for) and arms the heartbeat. */
void pool_start(struct pool *p);
/* Stops refills and heartbeats (before the transport tears libcurl down). */
void pool_stop(struct pool *p);
void pool_fini(struct pool *p); /* frees what pool_init allocated */

/* libcurl's open/close-socket callbacks, installed on every request of the transport:
 * clientp of the first is the request, of the second the pool. */
curl_socket_t pool_opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *a);
int pool_closesocket_cb(void *clientp, curl_socket_t fd);

/* A request got its connection and is about to be sent (libcurl's pre-request hook):
 * places a heartbeat of the current round on its own connection. */
void pool_on_prereq(struct pool *p, struct xreq *r);
/* After libcurl ran: releases a heartbeat round's held connections when it is placed. */
void pool_after_io(struct pool *p);
/* A direct connection opened (for r, the request that waits on it) / closed: counted, and
 * when the pool's connections are direct ones (p->direct) a closed one is replaced. */
void pool_direct_opened(struct pool *p, struct xreq *r);
void pool_direct_closed(struct pool *p, uint64_t opened_ns);
/* A warm-up or heartbeat request finished. status: HTTP status (0 when no answer). */
void pool_internal_done(struct pool *p, struct xreq *r, long status, bool ok, const char *errline);

#endif
