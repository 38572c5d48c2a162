/* The pool's policy (see pool.h): counts connections and decides refills and heartbeats.
 * It must never touch a socket or libcurl itself; the machinery (pool.c) acts on its
 * answers. */
#include "pool/pool.h"

#include <string.h>

/* Refills after failures back off 100 ms, 200 ms, ... capped at the heartbeat interval,
 * so a dead endpoint is not hammered with connects while the pool is empty. */
#define POOL_REFILL_BACKOFF_NS 100000000ull

void pool_policy_init(struct pool_policy *p, int target, int heartbeat_interval_ms)
{
    memset(p, 0, sizeof(*p));
    p->target = target > 0 ? target : 1;
    p->heartbeat_ns =
        (uint64_t)(heartbeat_interval_ms > 0 ? heartbeat_interval_ms : 1) * 1000000ull;
}

void pool_on_open(struct pool_policy *p)
{
    p->opens++;
    p->open++;
}

void pool_on_close(struct pool_policy *p)
{
    p->closes++;
    if (p->open > 0)
        p->open--;
}

void pool_on_start(struct pool_policy *p)
{
    p->active++;
}

void pool_on_done(struct pool_policy *p, bool reused)
{
    if (p->active > 0)
        p->active--;
    if (reused)
        p->reuses++;
}

void pool_refill_started(struct pool_policy *p)
{
    p->warming++;
}

void pool_refill_opened(struct pool_policy *p)
{
    if (p->warming > 0)
        p->warming--;
}

void pool_refill_done(struct pool_policy *p, bool opened, bool ok, uint64_t now_ns)
{
    if (!opened && p->warming > 0)
        p->warming--;
    if (ok) {
        p->refill_failures = 0;
        p->refill_not_before = 0;
        return;
    }
    if (p->refill_failures < 30)
        p->refill_failures++;
    uint64_t delay = POOL_REFILL_BACKOFF_NS << (p->refill_failures - 1);
    if (delay > p->heartbeat_ns || p->refill_failures >= 20)
        delay = p->heartbeat_ns;
    p->refill_not_before = now_ns + delay;
}

int pool_refill_count(const struct pool_policy *p, uint64_t now_ns)
{
    if (now_ns < p->refill_not_before)
        return 0;
    int n = p->target - p->open - p->warming;
    /* While backing off, probe with one connection at a time. */
    if (p->refill_failures > 0 && n > 1 - p->warming)
        n = 1 - p->warming;
    return n > 0 ? n : 0;
}

uint64_t pool_refill_deadline(const struct pool_policy *p, uint64_t now_ns)
{
    return now_ns < p->refill_not_before ? p->refill_not_before : 0;
}

int pool_heartbeat_count(const struct pool_policy *p)
{
    int idle = p->open - p->active;
    return idle > 0 ? idle : 0;
}

void pool_heartbeat_done(struct pool_policy *p, bool ok)
{
    p->heartbeats++;
    if (!ok)
        p->heartbeat_failures++;
}
