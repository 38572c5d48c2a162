/* The persistence stage (seed 002): producers submit into the commit ring; one
 * persistence thread turns ring batches into S3 objects, retries each failed batch with
 * its own backoff, and moves the durable watermark only over a contiguous run of
 * succeeded batches. It never acknowledges past a batch that is not durable, and never
 * drops one: a batch that cannot be made durable fails the stage. */
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "config/config.h"
#include "loop/loop.h"
#include "metrics/metrics.h"
#include "pipeline/ring.h"
#include "s3commit.h"
#include "stage/objfmt.h"
#include "transport/transport.h"

/* Each ring record's prefix: the submit time (for commit-to-durable latency), then the
 * object format's record header, so header + payload go to S3 as one span. */
#define PFX_TIME 0
#define PFX_RECHDR 8
#define PFX_BYTES (8 + OBJ_RECORD_HEADER_BYTES)

#define MAX_SUBS 16
#define RETRY_COST 5          /* retry budget tokens per retry (AWS SDK standard mode) */
#define RETRY_COST_TIMEOUT 10 /* ... per retry after a timeout */

enum batch_state { B_FREE, B_WIRE, B_BACKOFF };

struct batch {
    enum batch_state state;
    struct ring_batch rb;
    int attempts;         /* PUTs started */
    int retry_cost;       /* tokens the last retry took (refunded on success) */
    uint64_t retry_at_ns; /* B_BACKOFF: when to send again */
    unsigned char header[OBJ_HEADER_BYTES];
    unsigned char trailer[OBJ_TRAILER_BYTES];
    uint32_t crc32c; /* of the whole object */
    char key[OBJ_KEY_MAX];
    struct iovec *iov; /* count + 2 spans: header, records, trailer */
    int iovcnt;
    struct s3c_stage *st;
};

struct sub {
    s3c_durable_fn fn;
    void *ctx;
};

struct s3c_stage {
    struct s3c_config cfg;
    struct ring *ring;
    struct loop *loop;        /* the persistence thread's event loop (ours) */
    struct loop_watch ring_w; /* the ring's wake-up eventfd on it */
    struct xport *x;
    pthread_t thread;
    struct metrics_srv *metrics;

    /* Shared with producers and waiters. */
    _Atomic uint64_t durable; /* the watermark W */
    _Atomic int failed;       /* set once, by the persistence thread */
    _Atomic int closing;      /* set once, by s3c_stage_close */
    _Atomic int stopped;      /* the persistence thread has finished */
    _Atomic uint64_t close_deadline_ns;
    pthread_mutex_t wmu; /* waiters sleep on wcv; the thread broadcasts */
    pthread_cond_t wcv;
    _Atomic int nwaiters;
    struct sub subs[MAX_SUBS];
    _Atomic int nsubs;
    pthread_mutex_t submu; /* serialises s3c_subscribe */

    /* Persistence-thread state. */
    struct batch *batches;     /* max_in_flight_requests slots */
    int nbatches, outstanding; /* slots; batches acquired and not yet durable */
    uint64_t last_send_ns;
    double retry_tokens;
    uint64_t rng;
    bool moved;                  /* W moved during this loop turn */
    _Atomic uint64_t fail_first; /* the earliest failed batch: nothing from it on is acked */
    uint64_t fail_last;
    int idle_spins; /* loop turns in a row that could neither sleep nor work */

    /* Counters: written by the persistence thread only, read by anyone (relaxed). */
    struct {
        _Atomic uint64_t commits_seen, bytes_seen, commits_durable, bytes_durable;
        _Atomic uint64_t batches_sent, batch_commits, put_attempts, retries, fail_retryable,
            fail_fatal;
        _Atomic uint64_t budget_exhausted, lat_sum, lat_count;
        _Atomic uint64_t batch_hist[S3C_BATCH_HIST_BUCKETS], lat_hist[24];
        _Atomic uint64_t pool_opens, pool_closes, pool_reuses, pool_hb_failures;
        _Atomic uint32_t in_flight;
    } c;
    pthread_mutex_t errmu;
    char last_error[256];
    bool drained; /* s3c_stage_drain has run (under submu) */
    struct s3c_close_report report;
};

#define CINC(f, v) atomic_fetch_add_explicit(&st->c.f, (v), memory_order_relaxed)
#define CSET(f, v) atomic_store_explicit(&st->c.f, (v), memory_order_relaxed)
#define CGET(f) atomic_load_explicit(&st->c.f, memory_order_relaxed)

static void stage_set_error(struct s3c_stage *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void stage_set_error(struct s3c_stage *st, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&st->errmu);
    va_start(ap, fmt);
    vsnprintf(st->last_error, sizeof(st->last_error), fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&st->errmu);
}

/* ---- producers --------------------------------------------------------------------- */

static int stage_submit(s3c_stage *st, const void *data, size_t len, int timeout_ms, bool try_only,
                        uint64_t *seq)
{
    struct ring_claim c;
    int rc;

    if (!st || (!data && len))
        return S3C_EINVAL;
    if (atomic_load_explicit(&st->failed, memory_order_relaxed))
        return S3C_EFAILED;
    if (len > (uint64_t)st->cfg.pipeline.max_commit_bytes)
        return S3C_ETOOBIG;
    rc = try_only ? ring_try_claim_mp(st->ring, (uint32_t)len, &c)
                  : ring_claim_mp(st->ring, (uint32_t)len, timeout_ms, &c);
    if (rc != 0) {
        if (rc == S3C_ECLOSED && atomic_load(&st->failed))
            return S3C_EFAILED;
        return rc;
    }
    unsigned char *pfx = c.prefix;
    uint64_t now = s3c__now_ns();
    memcpy(pfx + PFX_TIME, &now, 8);
    memcpy(c.data, data, len);
    obj_record_header_encode((uint32_t)len, crc32c_update(0, data, len), c.seq, pfx + PFX_RECHDR);
    ring_publish_mp(st->ring, &c);
    if (seq)
        *seq = c.seq;
    return 0;
}

int s3c_submit(s3c_stage *st, const void *data, size_t len, int timeout_ms, uint64_t *seq)
{
    return stage_submit(st, data, len, timeout_ms, false, seq);
}

int s3c_try_submit(s3c_stage *st, const void *data, size_t len, uint64_t *seq)
{
    return stage_submit(st, data, len, 0, true, seq);
}

uint64_t s3c_durable_seq(const s3c_stage *st)
{
    return st ? atomic_load(&((s3c_stage *)st)->durable) : 0;
}

int s3c_wait_durable(s3c_stage *st, uint64_t seq, int timeout_ms)
{
    struct timespec dl;
    int rc = 0;

    if (!st)
        return S3C_EINVAL;
    if (atomic_load(&st->durable) >= seq)
        return 0;
    if (timeout_ms >= 0)
        dl = s3c__deadline_ts(timeout_ms);
    pthread_mutex_lock(&st->wmu);
    atomic_fetch_add(&st->nwaiters, 1);
    for (;;) {
        if (atomic_load(&st->durable) >= seq) {
            rc = 0;
            break;
        }
        /* Once failed, seqs before the failed batch may still become durable. */
        if (atomic_load(&st->failed) && seq >= atomic_load(&st->fail_first)) {
            rc = S3C_EFAILED;
            break;
        }
        if (atomic_load(&st->stopped)) {
            rc = atomic_load(&st->failed) ? S3C_EFAILED : S3C_ECLOSED;
            break;
        }
        if (timeout_ms < 0)
            pthread_cond_wait(&st->wcv, &st->wmu);
        else if (pthread_cond_timedwait(&st->wcv, &st->wmu, &dl) == ETIMEDOUT) {
            rc = atomic_load(&st->durable) >= seq ? 0 : S3C_ETIMEDOUT;
            break;
        }
    }
    atomic_fetch_sub(&st->nwaiters, 1);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int s3c_subscribe(s3c_stage *st, s3c_durable_fn fn, void *ctx)
{
    int rc = 0;
    if (!st || !fn)
        return S3C_EINVAL;
    pthread_mutex_lock(&st->submu);
    int n = atomic_load(&st->nsubs);
    if (n >= MAX_SUBS) {
        rc = S3C_ENOMEM;
    } else {
        st->subs[n] = (struct sub){fn, ctx};
        atomic_store(&st->nsubs, n + 1); /* publishes the entry to the thread */
    }
    pthread_mutex_unlock(&st->submu);
    return rc;
}

void s3c_stats_get(const s3c_stage *cst, struct s3c_stats *o)
{
    s3c_stage *st = (s3c_stage *)cst;
    memset(o, 0, sizeof(*o));
    if (!st)
        return;
    o->commits_submitted = ring_last_seq(st->ring);
    o->commits_durable = CGET(commits_durable);
    o->bytes_durable = CGET(bytes_durable);
    o->bytes_submitted = CGET(bytes_seen);
    o->durable_seq = atomic_load(&st->durable);
    o->commits_pending = o->commits_submitted - o->durable_seq;
    o->bytes_pending =
        o->bytes_submitted > o->bytes_durable ? o->bytes_submitted - o->bytes_durable : 0;
    o->batches_sent = CGET(batches_sent);
    o->batch_commits_sum = CGET(batch_commits);
    o->writes_saved = o->batch_commits_sum - o->batches_sent;
    o->put_attempts = CGET(put_attempts);
    o->retries = CGET(retries);
    o->failures_retryable = CGET(fail_retryable);
    o->failures_fatal = CGET(fail_fatal);
    o->retry_budget_exhausted = CGET(budget_exhausted);
    o->in_flight = CGET(in_flight);
    o->failed = (uint32_t)atomic_load(&st->failed);
    for (int i = 0; i < S3C_BATCH_HIST_BUCKETS; i++)
        o->batch_hist[i] = CGET(batch_hist[i]);
    for (int i = 0; i < 24; i++)
        o->ack_latency_hist[i] = CGET(lat_hist[i]);
    o->ack_latency_us_sum = CGET(lat_sum);
    o->ack_latency_count = CGET(lat_count);
    o->pool_opens = CGET(pool_opens);
    o->pool_closes = CGET(pool_closes);
    o->pool_reuses = CGET(pool_reuses);
    o->pool_heartbeat_failures = CGET(pool_hb_failures);
    pthread_mutex_lock(&st->errmu);
    memcpy(o->last_error, st->last_error, sizeof(o->last_error));
    pthread_mutex_unlock(&st->errmu);
}

/* ---- the persistence thread: acknowledgement --------------------------------------- */

static inline int stage_log2_bucket(uint64_t v, int max)
{
    int b = v ? 64 - __builtin_clzll(v) : 0; /* 0 -> 0, 1 -> 1, 2-3 -> 2, ... */
    return b < max ? b : max - 1;
}

/* The ring hands batches back strictly in seq order: this is the ordered ack. */
static void stage_on_release(void *ctx, const struct ring_batch *b)
{
    struct s3c_stage *st = ctx;
    uint64_t now = s3c__now_ns(), sum = 0;
    struct ring_iter it;
    struct ring_rec rec;

    ring_iter_init(b, &it);
    while (ring_iter_next(st->ring, &it, &rec)) {
        uint64_t t0;
        memcpy(&t0, (unsigned char *)rec.prefix + PFX_TIME, 8);
        uint64_t us = now > t0 ? (now - t0) / 1000 : 0;
        sum += us;
        CINC(lat_hist[stage_log2_bucket(us, 24)], 1);
    }
    CINC(lat_sum, sum);
    CINC(lat_count, b->count);
    CINC(commits_durable, b->count);
    CINC(bytes_durable, b->bytes);
    atomic_store(&st->durable, b->last_seq);
    st->moved = true;
}

static void stage_wake_waiters(struct s3c_stage *st)
{
    if (atomic_load(&st->nwaiters) > 0) {
        pthread_mutex_lock(&st->wmu);
        pthread_cond_broadcast(&st->wcv);
        pthread_mutex_unlock(&st->wmu);
    }
}

static void stage_notify(struct s3c_stage *st, int err)
{
    uint64_t w = atomic_load(&st->durable);
    int n = atomic_load(&st->nsubs);
    for (int i = 0; i < n; i++)
        st->subs[i].fn(st->subs[i].ctx, w, err);
    stage_wake_waiters(st);
}

static void stage_fail(struct s3c_stage *st, struct batch *b, const char *why)
{
    bool first_failure = !atomic_load(&st->failed);
    if (!first_failure && b->rb.first_seq > atomic_load(&st->fail_first))
        return; /* a later batch: the earlier failure already bounds the watermark */
    st->fail_last = b->rb.last_seq;
    atomic_store(&st->fail_first, b->rb.first_seq);
    stage_set_error(st, "batch seqs %" PRIu64 "..%" PRIu64 " not durable after %d attempts: %s",
                    b->rb.first_seq, b->rb.last_seq, b->attempts, why);
    S3C_LOG(S3C_LOG_ERROR,
            "event=stage_failed first_seq=%" PRIu64 " last_seq=%" PRIu64
            " attempts=%d durable_seq=%" PRIu64 " error=\"%s\"",
            b->rb.first_seq, b->rb.last_seq, b->attempts, atomic_load(&st->durable), why);
    if (!first_failure)
        return;
    if (st->moved) { /* report the last moves before the failure, in order */
        st->moved = false;
        stage_notify(st, 0);
    }
    atomic_store(&st->failed, 1);
    ring_close(st->ring); /* producers stop: s3c_submit answers S3C_EFAILED */
    stage_notify(st, S3C_EFAILED);
}

/* ---- the persistence thread: sending and retrying ----------------------------------- */

static void stage_put_done(void *ctx, const struct xport_result *res);

static uint64_t stage_rand64(struct s3c_stage *st)
{
    st->rng ^= st->rng << 13; /* xorshift64: jitter needs spread, not secrecy */
    st->rng ^= st->rng >> 7;
    st->rng ^= st->rng << 17;
    return st->rng;
}

static void stage_send_batch(struct s3c_stage *st, struct batch *b)
{
    struct xport_put put = {.key = b->key,
                            .iov = b->iov,
                            .iovcnt = b->iovcnt,
                            .have_crc32c = true,
                            .crc32c = b->crc32c};
    b->attempts++;
    CINC(put_attempts, 1);
    int rc = xport_put(st->x, &put, stage_put_done, b);
    if (rc != 0) {
        /* Could not even start: treat as a failed attempt, retried like any other. */
        struct xport_result r = {.cls = XPORT_RETRYABLE,
                                 .error = s3c_strerror(rc),
                                 .s3_code = "",
                                 .s3_message = "",
                                 .request_id = "",
                                 .etag = ""};
        b->state = B_WIRE;
        CINC(in_flight, 1);
        stage_put_done(b, &r);
        return;
    }
    b->state = B_WIRE;
    CINC(in_flight, 1);
}

/* Builds the object for a freshly acquired batch: header, one span per record (its
 * record header and payload are contiguous in the ring), trailer, and the CRC-32C of
 * the whole, without copying a payload. */
static void stage_build_batch(struct s3c_stage *st, struct batch *b)
{
    struct obj_header h = {.version = OBJ_VERSION,
                           .count = b->rb.count,
                           .first_seq = b->rb.first_seq,
                           .last_seq = b->rb.last_seq,
                           .epoch = 1};
    struct ring_iter it;
    struct ring_rec rec;
    int n = 0;

    obj_header_encode(&h, b->header);
    b->iov[n++] = (struct iovec){b->header, OBJ_HEADER_BYTES};
    uint32_t crc = crc32c_update(0, b->header, OBJ_HEADER_BYTES);
    ring_iter_init(&b->rb, &it);
    while (ring_iter_next(st->ring, &it, &rec)) {
        void *span = (unsigned char *)rec.prefix + PFX_RECHDR;
        size_t len = OBJ_RECORD_HEADER_BYTES + rec.len;
        b->iov[n++] = (struct iovec){span, len};
        crc = crc32c_update(crc, span, len);
    }
    obj_trailer_encode(crc, b->trailer);
    b->iov[n++] = (struct iovec){b->trailer, OBJ_TRAILER_BYTES};
    b->iovcnt = n;
    b->crc32c = crc32c_update(crc, b->trailer, OBJ_TRAILER_BYTES);
    obj_key(b->key, sizeof(b->key), st->cfg.s3.prefix, 1, b->rb.first_seq, b->rb.last_seq);
    b->attempts = 0;
    b->retry_cost = 0;
}

static void stage_put_done(void *ctx, const struct xport_result *res)
{
    struct batch *b = ctx;
    struct s3c_stage *st = b->st;

    CINC(in_flight, -1);
    if (res->cls == XPORT_OK) {
        /* Success refunds the retry budget: what the last retry cost, or 1. */
        st->retry_tokens += b->retry_cost ? b->retry_cost : 1;
        if (st->retry_tokens > st->cfg.persistence.retry_budget)
            st->retry_tokens = st->cfg.persistence.retry_budget;
        CINC(batches_sent, 1);
        CINC(batch_commits, b->rb.count);
        CINC(batch_hist[stage_log2_bucket(b->rb.count, S3C_BATCH_HIST_BUCKETS + 1) - 1], 1);
        struct ring_batch rb = b->rb;
        b->state = B_FREE;
        st->outstanding--;
        ring_release_sc(st->ring, &rb); /* on_release moves W if this was the oldest */
        return;
    }

    char why[384];
    snprintf(why, sizeof(why), "%s", res->error && *res->error ? res->error : "unknown error");
    stage_set_error(st, "PUT %s attempt %d: %s", b->key, b->attempts, why);
    if (res->cls != XPORT_RETRYABLE) {
        CINC(fail_fatal, 1);
        b->state = B_BACKOFF; /* parked: never sent again */
        b->retry_at_ns = UINT64_MAX;
        stage_fail(st, b, why);
        return;
    }
    CINC(fail_retryable, 1);
    if (b->attempts > st->cfg.persistence.max_retry_attempts) {
        b->state = B_BACKOFF;
        b->retry_at_ns = UINT64_MAX;
        stage_fail(st, b, why);
        return;
    }
    /* Exponential backoff with full jitter, capped; the shared budget backs everyone off
     * to the cap when a wide outage has used it up. */
    uint64_t base = (uint64_t)st->cfg.persistence.retry_base_delay_ms;
    uint64_t cap = (uint64_t)st->cfg.persistence.max_retry_delay_ms;
    uint64_t ceil_ms = base << (b->attempts - 1 < 20 ? b->attempts - 1 : 20);
    if (ceil_ms > cap)
        ceil_ms = cap;
    uint64_t delay_ms = stage_rand64(st) % (ceil_ms + 1);
    int cost = res->fail == XPORT_FAIL_TIMEOUT ? RETRY_COST_TIMEOUT : RETRY_COST;
    if (st->cfg.persistence.retry_budget > 0) {
        if (st->retry_tokens >= cost) {
            st->retry_tokens -= cost;
            b->retry_cost = cost;
        } else {
            CINC(budget_exhausted, 1);
            delay_ms = cap;
            b->retry_cost = 0;
        }
    }
    b->state = B_BACKOFF;
    b->retry_at_ns = s3c__now_ns() + delay_ms * 1000000u;
    S3C_LOG(S3C_LOG_WARN, "event=put_retry key=%s attempt=%d delay_ms=%" PRIu64 " error=\"%s\"",
            b->key, b->attempts, delay_ms, why);
}

static struct batch *stage_free_slot(struct s3c_stage *st)
{
    for (int i = 0; i < st->nbatches; i++)
        if (st->batches[i].state == B_FREE)
            return &st->batches[i];
    return NULL;
}

static void stage_on_ring_wake(void *ctx, int fd, unsigned events)
{
    uint64_t v;
    (void)ctx, (void)events;
    while (read(fd, &v, sizeof(v)) == sizeof(v))
        ;
}

static void stage_mirror_pool_stats(struct s3c_stage *st)
{
    struct xport_stats xs;
    xport_stats_get(st->x, &xs);
    CSET(pool_opens, xs.opens);
    CSET(pool_closes, xs.closes);
    CSET(pool_reuses, xs.reuses);
    CSET(pool_hb_failures, xs.heartbeat_failures);
}

static int stage_ms_until(uint64_t now, uint64_t at)
{
    if (at <= now)
        return 0;
    uint64_t ms = (at - now + 999999) / 1000000;
    return ms > 60000 ? 60000 : (int)ms;
}

static void *stage_persistence_main(void *arg)
{
    struct s3c_stage *st = arg;
    const struct cfg_persistence *p = &st->cfg.persistence;
    const uint64_t batch_timeout_ns = (uint64_t)p->batch_timeout_ms * 1000000u;

    for (;;) {
        uint64_t now = s3c__now_ns();
        bool closing = atomic_load(&st->closing);
        bool failed = atomic_load(&st->failed);
        bool worked = false;
        int timeout = -1;

        /* 1. Retries whose backoff has run out go first: they hold the watermark back.
         * Once failed, batches before the failed one may still become durable. */
        for (int i = 0; i < st->nbatches; i++) {
            struct batch *b = &st->batches[i];
            if (b->state != B_BACKOFF || b->retry_at_ns > now)
                continue; /* parked batches have retry_at_ns == UINT64_MAX */
            if (failed && b->rb.first_seq >= atomic_load(&st->fail_first))
                continue;
            CINC(retries, 1);
            stage_send_batch(st, b);
            worked = true;
        }
        failed = atomic_load(&st->failed);

        /* 2. New batches: acquire when a trigger fires and a slot is free. The ring may
         * still hold batches that succeeded behind a slow one (in-order release); when it
         * can hold no more, only a reply helps, as at the in-flight limit. */
        struct ring_ready rd = {0};
        bool ring_held = false;
        while (!failed && st->outstanding < st->nbatches) {
            rd = ring_poll_sc(st->ring, (uint32_t)p->batch_size_threshold,
                              (uint64_t)p->batch_bytes_threshold);
            if (rd.count == 0)
                break;
            bool fire = rd.full || st->outstanding == 0 || closing ||
                        now - st->last_send_ns >= batch_timeout_ns ||
                        ring_producers_waiting(st->ring);
            if (!fire) {
                int t = stage_ms_until(now, st->last_send_ns + batch_timeout_ns);
                timeout = timeout < 0 || t < timeout ? t : timeout;
                break;
            }
            struct batch *b = stage_free_slot(st);
            if (!b || !ring_acquire_sc(st->ring, &b->rb)) {
                ring_held = true;
                break;
            }
            CINC(commits_seen, b->rb.count);
            CINC(bytes_seen, b->rb.bytes);
            st->outstanding++;
            st->last_send_ns = now;
            stage_build_batch(st, b);
            S3C_LOG(S3C_LOG_DEBUG,
                    "event=batch_send first_seq=%" PRIu64 " last_seq=%" PRIu64 " bytes=%" PRIu64
                    " outstanding=%d trigger=%s",
                    b->rb.first_seq, b->rb.last_seq, b->rb.bytes, st->outstanding,
                    rd.full                            ? "size"
                    : st->outstanding == 1             ? "idle"
                    : closing                          ? "close"
                    : ring_producers_waiting(st->ring) ? "ring_full"
                                                       : "time");
            stage_send_batch(st, b);
            worked = true;
            failed = atomic_load(&st->failed);
            rd = (struct ring_ready){0};
        }

        if (st->moved) {
            st->moved = false;
            stage_notify(st, 0);
        }
        stage_mirror_pool_stats(st);

        /* 3. Timers of batches in backoff, counted after the sends above so a send that
         * failed at once is not forgotten. */
        bool pending_before_fail = false;
        now = s3c__now_ns();
        for (int i = 0; i < st->nbatches; i++) {
            struct batch *b = &st->batches[i];
            bool parked = b->state == B_BACKOFF && b->retry_at_ns == UINT64_MAX;
            if (b->state == B_FREE || parked)
                continue;
            if (failed && b->rb.first_seq >= atomic_load(&st->fail_first))
                continue;
            pending_before_fail = true;
            if (b->state == B_BACKOFF) {
                int t = stage_ms_until(now, b->retry_at_ns);
                timeout = timeout < 0 || t < timeout ? t : timeout;
            }
        }

        /* Done? Closing and everything claimed has been made durable; or failed and
         * nothing before the failed batch is still pending; or the drain ran out of time. */
        if (closing) {
            uint64_t deadline = atomic_load(&st->close_deadline_ns);
            bool done =
                failed ? !pending_before_fail : ring_drained_sc(st->ring) && st->outstanding == 0;
            if (done || now >= deadline)
                break;
            int t = stage_ms_until(now, deadline);
            /* A commit claimed before the close may still be mid-copy: its publish will
             * not wake a closed ring's consumer, so look again shortly. */
            if (!failed && rd.count == 0 && !ring_held && st->outstanding < st->nbatches &&
                !ring_drained_sc(st->ring))
                t = t < 1 ? t : 1;
            timeout = timeout < 0 || t < timeout ? t : timeout;
        }

        /* 4. Sleep until a reply, a timer, or commits worth waking for: the first one (it
         * may be sent at once, or starts the batch timer), then the rest of a full batch.
         * At the in-flight limit, or when the ring holds all it can, only a reply helps,
         * so producers need not wake us. When arming fails, commits are claimed and about
         * to be published: look again at once, then every millisecond, never spinning. */
        if (!failed && !closing && !ring_held && st->outstanding < st->nbatches) {
            uint32_t want = 1;
            if (rd.count > 0) {
                /* The rest of a batch: by count, or by bytes at the average commit size
                 * seen so far, whichever comes first. */
                uint32_t by_count = (uint32_t)p->batch_size_threshold - rd.count;
                uint64_t avg = rd.bytes / rd.count;
                uint64_t room = (uint64_t)p->batch_bytes_threshold - rd.bytes;
                uint64_t by_bytes = avg ? (room + avg - 1) / avg : by_count;
                want = by_bytes < by_count ? (uint32_t)(by_bytes ? by_bytes : 1) : by_count;
            }
            if (!ring_arm_sc(st->ring, want)) {
                timeout = worked || st->idle_spins < 2 ? 0 : 1;
                st->idle_spins = worked ? 0 : st->idle_spins + 1;
            } else {
                st->idle_spins = 0;
            }
        }
        int rc = loop_run_once(st->loop, timeout);
        if (rc != 0) {
            stage_set_error(st, "event loop failed: %s", s3c_strerror(rc));
            S3C_LOG(S3C_LOG_ERROR, "event=loop_failed error=\"%s\"", s3c_strerror(rc));
            struct timespec ts = {0, 1000000}; /* do not spin on a broken loop */
            nanosleep(&ts, NULL);
        }
    }
    atomic_store(&st->stopped, 1);
    stage_wake_waiters(st);
    return NULL;
}

int s3c_metrics_port(const s3c_stage *st)
{
    return st && st->metrics ? metrics_srv_port(st->metrics) : 0;
}

/* ---- open and close ---------------------------------------------------------------- */

static void stage_collect(void *ctx, struct s3c_stats *out)
{
    s3c_stats_get(ctx, out);
}

int s3c_stage_open(const s3c_config *cfg, s3c_stage **out, char *err, size_t errlen)
{
    struct s3c_stage *st;
    const struct cfg_persistence *p;
    char e[256] = "";
    int rc = S3C_ENOMEM;

    if (errlen)
        err[0] = '\0';
    if (!cfg || !out)
        return S3C_EINVAL;
    *out = NULL;
    st = calloc(1, sizeof(*st));
    if (!st)
        goto out_msg;
    p = &cfg->persistence;
    st->cfg = *cfg;
    st->nbatches = p->max_in_flight_requests;
    st->retry_tokens = p->retry_budget;
    st->rng = (uint64_t)s3c__now_ns() | 1;
    pthread_mutex_init(&st->wmu, NULL);
    pthread_mutex_init(&st->submu, NULL);
    pthread_mutex_init(&st->errmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->wcv, &ca);
    pthread_condattr_destroy(&ca);

    st->batches = calloc((size_t)st->nbatches, sizeof(*st->batches));
    if (!st->batches)
        goto out_free_stage;
    for (int i = 0; i < st->nbatches; i++) {
        st->batches[i].st = st;
        st->batches[i].iov = calloc((size_t)p->batch_size_threshold + 2, sizeof(struct iovec));
        if (!st->batches[i].iov)
            goto out_free_batches;
    }

    struct ring_opts ro = {.bytes = (uint64_t)cfg->pipeline.ring_bytes,
                           .prefix_bytes = PFX_BYTES,
                           .max_commit = (uint32_t)cfg->pipeline.max_commit_bytes,
                           /* in flight, plus succeeded ones held for in-order release */
                           .max_batches = (uint32_t)st->nbatches * 4,
                           .on_release = stage_on_release,
                           .release_ctx = st};
    rc = ring_new(&ro, &st->ring);
    if (rc != 0) {
        snprintf(e, sizeof(e), "stage: cannot create the commit ring of %" PRId64 " bytes: %s",
                 cfg->pipeline.ring_bytes, s3c_strerror(rc));
        goto out_free_batches;
    }
    st->loop = loop_new();
    if (!st->loop) {
        rc = errno == ENOMEM ? S3C_ENOMEM : S3C_EIO;
        snprintf(e, sizeof(e), "stage: cannot create the event loop: %s", strerror(errno));
        goto out_free_ring;
    }
    st->ring_w = (struct loop_watch){.fd = ring_wait_fd(st->ring), .cb = stage_on_ring_wake};
    rc = loop_watch_set(st->loop, &st->ring_w, LOOP_READ);
    if (rc != 0) {
        snprintf(e, sizeof(e), "stage: cannot watch the ring: %s", s3c_strerror(rc));
        goto out_free_loop;
    }
    st->x = xport_new(cfg, st->loop, e, sizeof(e));
    if (!st->x) {
        rc = S3C_EINVAL;
        goto out_free_loop;
    }
    if (cfg->metrics_listen[0]) {
        st->metrics = metrics_srv_start(cfg->metrics_listen, stage_collect, st, e, sizeof(e));
        if (!st->metrics) {
            rc = S3C_EIO;
            goto out_free_xport;
        }
    }
    if (pthread_create(&st->thread, NULL, stage_persistence_main, st) != 0) {
        snprintf(e, sizeof(e), "stage: cannot start the persistence thread: %s", strerror(errno));
        rc = S3C_EIO;
        goto out_stop_metrics;
    }
    S3C_LOG(S3C_LOG_INFO,
            "event=stage_open bucket=%s prefix=%s in_flight=%d pool=%d batch_timeout_ms=%d "
            "batch_size=%d batch_bytes=%" PRId64,
            cfg->s3.bucket, cfg->s3.prefix, p->max_in_flight_requests, p->target_pool_size,
            p->batch_timeout_ms, p->batch_size_threshold, p->batch_bytes_threshold);
    *out = st;
    return 0;

out_stop_metrics:
    metrics_srv_stop(st->metrics);
out_free_xport:
    xport_free(st->x);
out_free_loop:
    loop_free(st->loop);
out_free_ring:
    ring_free(st->ring);
out_free_batches:
    for (int i = 0; i < st->nbatches; i++)
        free(st->batches[i].iov);
    free(st->batches);
out_free_stage:
    pthread_cond_destroy(&st->wcv);
    pthread_mutex_destroy(&st->wmu);
    pthread_mutex_destroy(&st->submu);
    pthread_mutex_destroy(&st->errmu);
    OPENSSL_cleanse(&st->cfg, sizeof(st->cfg));
    free(st);
out_msg:
    if (errlen)
        snprintf(err, errlen, "%s", e[0] ? e : s3c_strerror(rc));
    return rc;
}

int s3c_stage_drain(s3c_stage *st, struct s3c_close_report *report)
{
    if (!st)
        return S3C_EINVAL;
    pthread_mutex_lock(&st->submu);
    if (!st->drained) {
        uint64_t timeout_ns = (uint64_t)st->cfg.persistence.shutdown_timeout_ms * 1000000u;
        atomic_store(&st->close_deadline_ns, s3c__now_ns() + timeout_ns);
        atomic_store(&st->closing, 1);
        ring_close(st->ring); /* stops producers and wakes the thread */
        loop_wake(st->loop);
        pthread_join(st->thread, NULL);
        stage_wake_waiters(st);

        struct s3c_close_report *r = &st->report;
        r->durable_seq = atomic_load(&st->durable);
        r->last_seq = ring_last_seq(st->ring);
        if (r->last_seq > r->durable_seq) {
            r->lost_first_seq = r->durable_seq + 1;
            r->lost_last_seq = r->last_seq;
            r->error = atomic_load(&st->failed) ? S3C_EFAILED : S3C_ETIMEDOUT;
            S3C_LOG(S3C_LOG_ERROR,
                    "event=close_incomplete durable_seq=%" PRIu64 " lost_first_seq=%" PRIu64
                    " lost_last_seq=%" PRIu64 " reason=\"%s\"",
                    r->durable_seq, r->lost_first_seq, r->lost_last_seq, s3c_strerror(r->error));
        } else if (atomic_load(&st->failed)) {
            r->error = S3C_EFAILED; /* failed, though nothing accepted was lost */
        }
        S3C_LOG(S3C_LOG_INFO, "event=stage_closed durable_seq=%" PRIu64 " last_seq=%" PRIu64,
                r->durable_seq, r->last_seq);
        st->drained = true;
    }
    pthread_mutex_unlock(&st->submu);
    if (report)
        *report = st->report;
    return st->report.error;
}

int s3c_stage_close(s3c_stage *st, struct s3c_close_report *report)
{
    if (!st)
        return 0;
    int rc = s3c_stage_drain(st, report);
    metrics_srv_stop(st->metrics);
    xport_free(st->x); /* aborts whatever is still on the wire, without callbacks */
    loop_free(st->loop);
    ring_free(st->ring);
    for (int i = 0; i < st->nbatches; i++)
        free(st->batches[i].iov);
    free(st->batches);
    pthread_cond_destroy(&st->wcv);
    pthread_mutex_destroy(&st->wmu);
    pthread_mutex_destroy(&st->submu);
    pthread_mutex_destroy(&st->errmu);
    OPENSSL_cleanse(&st->cfg, sizeof(st->cfg)); /* the credentials in our copy */
    free(st);
    return rc;
}
