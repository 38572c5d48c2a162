/* The connection-pool policy: how many warm connections to open, when to replace one,
 * when to send heartbeats, and the pool's counters. Pure bookkeeping driven by the
 * transport (which owns the sockets and libcurl); no I/O, no allocation, no locks: it is
 * touched only from the transport's loop thread. */
#ifndef S3C_POOL_H
#define S3C_POOL_H

#include <stdbool.h>
#include <stdint.h>

struct pool {
    int target;                 /* target_pool_size: never more connections than this */
    uint64_t heartbeat_ns;      /* heartbeat_interval_ms */
    int open;                   /* sockets open now */
    int warming;                /* fresh-connect requests that have not opened a socket */
    int active;                 /* requests in libcurl now (user + internal) */
    int refill_failures;        /* consecutive failed refills (drives the backoff) */
    uint64_t refill_not_before; /* no refill before this monotonic ns (backoff) */
    /* counters (xport_stats) */
    uint64_t opens, closes, reuses, heartbeats, heartbeat_failures;
};

void pool_init(struct pool *p, int target, int heartbeat_interval_ms);

void pool_on_open(struct pool *p);  /* a socket was opened */
void pool_on_close(struct pool *p); /* a socket was closed */

/* A request entered / left libcurl. reused: it went over an existing connection. */
void pool_on_start(struct pool *p);
void pool_on_done(struct pool *p, bool reused);

/* A fresh-connect (refill) request started / opened its socket / finished. ok: it got
 * an HTTP answer (the connection works), which resets the refill backoff. */
void pool_refill_started(struct pool *p);
void pool_refill_opened(struct pool *p);
void pool_refill_done(struct pool *p, bool opened, bool ok, uint64_t now_ns);

/* How many fresh connections to open now to get back to target (0 while backing off
 * after failures, or when enough are open or on their way). */
int pool_refill_count(const struct pool *p, uint64_t now_ns);

/* When the next refill may run, 0 when it may run now. */
uint64_t pool_refill_deadline(const struct pool *p, uint64_t now_ns);

/* How many heartbeats to send now: one per idle connection. */
int pool_heartbeat_count(const struct pool *p);
void pool_heartbeat_done(struct pool *p, bool ok);

#endif
