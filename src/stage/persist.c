/* The persistence thread (seed 002): turns ring batches into S3 objects when a trigger
 * fires, retries each failed batch with its own backoff, and moves the durable watermark
 * only over a contiguous run of succeeded batches (the ring releases in seq order). It
 * never acknowledges past a batch that is not durable and never drops one: a batch that
 * cannot be made durable fails the stage. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "stage/stage_int.h"

/* ---- the persistence thread: acknowledgement --------------------------------------- */

static inline int stage_log2_bucket(uint64_t v, int max)
{
    int b = v ? 64 - __builtin_clzll(v) : 0; /* 0 -> 0, 1 -> 1, 2-3 -> 2, ... */
    return b < max ? b : max - 1;
}

/* The ring hands batches back strictly in seq order: this is the ordered ack. */
void stage_on_release(void *ctx, const struct ring_batch *b)
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

void stage_wake_waiters(struct s3c_stage *st)
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

void stage_on_ring_wake(void *ctx, int fd, unsigned events)
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

void *stage_persistence_main(void *arg)
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
