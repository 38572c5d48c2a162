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

/* Backs refills off for the larger of the two failure runs: 100 ms, doubling, capped at
 * the heartbeat interval. */
static void pool_back_off(struct pool_policy *p, uint64_t now_ns)
{
    int n = p->refill_failures > p->churn ? p->refill_failures : p->churn;
    uint64_t delay = POOL_REFILL_BACKOFF_NS << (n - 1);
    if (delay > p->heartbeat_ns || n >= 20)
        delay = p->heartbeat_ns;
    p->refill_not_before = now_ns + delay;
}

void pool_on_close(struct pool_policy *p, uint64_t age_ns, uint64_t now_ns)
{
    p->closes++;
    if (p->open > 0)
        p->open--;
    if (age_ns >= POOL_YOUNG_NS) {
        p->churn = 0;
        return;
    }
    if (p->churn < 30)
        p->churn++;
    pool_back_off(p, now_ns);
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
        /* After failed connects, an answer ends the backoff, young closes included (a
         * socket whose connect failed is closed young too, libcurl's at least). Without
         * them, only a connection that lives does. */
        if (p->refill_failures > 0)
            p->churn = 0;
        p->refill_failures = 0;
        if (p->churn == 0)
            p->refill_not_before = 0;
        return;
    }
    if (p->refill_failures < 30)
        p->refill_failures++;
    pool_back_off(p, now_ns);
}

int pool_refill_count(const struct pool_policy *p, uint64_t now_ns)
{
    if (now_ns < p->refill_not_before)
        return 0;
    int n = p->target - p->open - p->warming;
    /* While backing off, probe with one connection at a time. */
    if ((p->refill_failures > 0 || p->churn > 0) && n > 1 - p->warming)
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
    else
        p->churn = 0; /* a connection lived a heartbeat interval */
}
