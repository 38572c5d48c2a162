/* The persistence thread (docs/stage.md): turns ring batches into S3 objects when a trigger
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

/* Each sampled commit of a held ring batch into the latency histogram: one in LAT_SAMPLE,
 * found by its seq, so the ack never walks the batch's records. */
static void stage_lat_count(struct s3c_stage *st, const struct ring_batch *rb, uint64_t now)
{
    uint64_t hist[24] = {0}, sum = 0, n = 0;
    for (uint64_t s = (rb->first_seq + LAT_SAMPLE - 1) & ~(uint64_t)(LAT_SAMPLE - 1);
         s <= rb->last_seq; s += LAT_SAMPLE) {
        uint64_t t0 = st->lat_t[(s / LAT_SAMPLE) & st->lat_mask];
        uint64_t us = now > t0 ? (now - t0) / 1000 : 0;
        hist[stage_log2_bucket(us, 24)]++;
        sum += us;
        n++;
    }
    for (int i = 0; i < 24; i++)
        if (hist[i])
            CINC(lat_hist[i], hist[i]);
    CINC(lat_sum, sum);
    CINC(lat_count, n);
}

/* The ordered ack: W moves over the durable batches that continue it, in seq order. */
static void stage_ack(struct s3c_stage *st)
{
    uint64_t w = atomic_load(&st->durable);
    while (st->ndone > 0 && (st->done[0].first == w + 1 ||
                             (w + 1 == st->base && st->done[0].first == st->base + 1))) {
        struct done *d = &st->done[0];
        uint64_t now = s3c__now_ns();
        if (!st->spool) {
            stage_lat_count(st, &d->rb, now); /* before the release: the times are kept */
            ring_release_sc(st->ring, &d->rb);
        } else if (d->t_n) {
            /* The commits' submit times: their sum (a bucket by their mean) */
            uint64_t us = (now * d->t_n - d->t_sum) / 1000;
            CINC(lat_hist[stage_log2_bucket(us / d->t_n, 24)], d->t_n);
            CINC(lat_sum, us);
            CINC(lat_count, d->t_n);
        }
        CINC(commits_durable, d->count);
        CINC(bytes_durable, d->bytes);
        w = d->last;
        atomic_store(&st->durable, w);
        mw_note_durable(st->mw, w, d->first);
        st->moved = true;
        st->ndone--;
        memmove(&st->done[0], &st->done[1], (size_t)st->ndone * sizeof(st->done[0]));
    }
    if (w + 1 == st->base) { /* a replay just reached our control record, durable since open */
        atomic_store(&st->durable, st->base);
        mw_note_durable(st->mw, st->base, st->base);
        st->moved = true;
        if (st->ndone > 0)
            stage_ack(st);
    }
}

/* A batch is durable: it waits (off its slot) for the ones before it. */
static void stage_done(struct s3c_stage *st, struct batch *b)
{
    int i = st->ndone;
    while (i > 0 && st->done[i - 1].first > b->first)
        i--;
    memmove(&st->done[i + 1], &st->done[i], (size_t)(st->ndone - i) * sizeof(st->done[0]));
    st->done[i] = (struct done){.first = b->first,
                                .last = b->last,
                                .bytes = b->bytes,
                                .count = b->count,
                                .t_sum = b->t_sum,
                                .t_n = b->t_n,
                                .rb = b->rb};
    st->ndone++;
    b->state = B_FREE;
    st->outstanding--;
    stage_ack(st);
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
        if (!st->subs[i].local)
            st->subs[i].fn(st->subs[i].ctx, w, err);
    stage_wake_waiters(st);
}

/* Marks the stage failed from seq first on (every seq before it may still be acked) with
 * code: S3C_EFAILED, or S3C_EFENCED, which acknowledges nothing more at all. */
static void stage_fail_from(struct s3c_stage *st, uint64_t first, int code)
{
    bool first_failure = !atomic_load(&st->failed);
    bool newly_fenced = code == S3C_EFENCED && atomic_load(&st->fail_code) != S3C_EFENCED;
    if (code == S3C_EFENCED)
        st->fenced = true;
    if (first_failure || first < atomic_load(&st->fail_first))
        atomic_store(&st->fail_first, first);
    if (first_failure || newly_fenced)
        atomic_store(&st->fail_code, code);
    if (!first_failure) {
        if (newly_fenced)
            stage_notify(st, code);
        return;
    }
    if (st->moved) { /* report the last moves before the failure, in order */
        st->moved = false;
        stage_notify(st, 0);
    }
    atomic_store(&st->failed, 1);
    ring_close(st->ring); /* producers stop: s3c_submit answers the failure */
    stage_notify(st, code);
}

static void stage_fail(struct s3c_stage *st, struct batch *b, const char *why)
{
    if (atomic_load(&st->failed) && b->first > atomic_load(&st->fail_first))
        return;
    st->fail_last = b->last;
    stage_set_error(st, "batch seqs %" PRIu64 "..%" PRIu64 " not durable after %d attempts: %s",
                    b->first, b->last, b->attempts, why);
    S3C_LOG(S3C_LOG_ERROR,
            "event=stage_failed first_seq=%" PRIu64 " last_seq=%" PRIu64
            " attempts=%d durable_seq=%" PRIu64 " error=\"%s\"",
            b->first, b->last, b->attempts, atomic_load(&st->durable), why);
    stage_fail_from(st, b->first, S3C_EFAILED);
}

/* A newer writer owns the log: acknowledge nothing more, tell everyone. */
void stage_fence(struct s3c_stage *st, const char *why)
{
    if (st->fenced)
        return;
    stage_set_error(st, "fenced: %s", why);
    S3C_LOG(S3C_LOG_ERROR,
            "event=stage_fenced epoch=%" PRIu64 " durable_seq=%" PRIu64 " error=\"%s\"",
            st->ws.epoch, atomic_load(&st->durable), why);
    mw_stop(st->mw);
    stage_fail_from(st, atomic_load(&st->durable) + 1, S3C_EFENCED);
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
    if (b->need_reload) {
        /* Its ring space went back during a backoff: the same object, from the spool. */
        int rc = stage_spool_reload(st, b);
        if (rc == S3C_EEND) { /* not all of it is written yet: shortly */
            b->state = B_BACKOFF;
            b->retry_at_ns = s3c__now_ns() + 1000000u;
            return;
        }
        if (rc != 0) {
            b->state = B_BACKOFF;
            b->retry_at_ns = UINT64_MAX;
            stage_fail(st, b, "cannot read it back from the spool");
            return;
        }
    }
    struct xport_put put = {.key = b->key,
                            .iov = b->iov,
                            .iovcnt = b->iovcnt,
                            .have_crc32c = true,
                            .crc32c = b->crc32c,
                            .if_none_match = st->cfg.s3.conditional_writes && !b->if_match[0],
                            .if_match = b->if_match[0] ? b->if_match : NULL};
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

/* Builds the object for a freshly acquired batch: header, the records as they lie in the
 * ring (each is its object record, so a run of them is one span), trailer, and the CRC-32C
 * of the whole, without copying a payload. */
static void stage_build_batch(struct s3c_stage *st, struct batch *b)
{
    struct ring_iter it;
    struct ring_rec rec;
    int n = 1;
    b->first = b->rb.first_seq + st->base;
    b->last = b->rb.last_seq + st->base;
    b->count = b->rb.count;
    b->bytes = b->rb.bytes;
    b->epoch = st->ws.epoch;
    b->from_ring = true;
    b->rec_crc_valid = false;
    b->t_sum = 0; /* latency is counted at the ack, from the ring (stage_lat_count) */
    b->t_n = 0;
    int nruns = ring_batch_spans(st->ring, &b->rb, &b->iov[1]);
    _Static_assert(PFX_RECHDR == 0, "a ring record must be exactly the object's record");
    if (nruns > 0) {
        stage_finish_object(st, b, nruns, true);
        return;
    }
    ring_iter_init(&b->rb, &it); /* a short commit left a gap: join the runs around it */
    while (ring_iter_next(st->ring, &it, &rec)) {
        unsigned char *p = (unsigned char *)rec.prefix + PFX_RECHDR;
        size_t len = OBJ_RECORD_HEADER_BYTES + rec.len;
        struct iovec *last = &b->iov[n - 1];
        if (n > 1 && (unsigned char *)last->iov_base + last->iov_len == p)
            last->iov_len += len; /* back to back in the ring: one span */
        else
            b->iov[n++] = (struct iovec){p, len};
    }
    stage_finish_object(st, b, n - 1, true);
}

void stage_finish_object(struct s3c_stage *st, struct batch *b, int nspans, bool may_defer)
{
    struct obj_header h = {.version = OBJ_VERSION,
                           .flags = st->zc ? OBJ_FLAG_ZSTD : 0,
                           .count = b->count,
                           .first_seq = b->first,
                           .last_seq = b->last,
                           .epoch = b->epoch};

    /* The bound the manifest gives readers for seeking, raised before the object lands. */
    if (b->count > st->ws.max_batch_commits)
        st->ws.max_batch_commits = b->count;
    obj_header_encode(&h, b->header);
    b->iov[0] = (struct iovec){b->header, OBJ_HEADER_BYTES};
    b->nspans = nspans;
    obj_key(b->key, sizeof(b->key), st->cfg.s3.prefix, b->first);
    b->if_match[0] = '\0';
    b->attempts = 0;
    b->retry_cost = 0;
    if (st->zc && may_defer && st->zq.nworkers > 0) {
        stage_zq_push(st, b); /* sent when it comes back (stage_persistence_main) */
        return;
    }
    stage_object_body(b, st->zc);
    stage_object_counted(st, b);
}

void stage_object_counted(struct s3c_stage *st, const struct batch *b)
{
    if (st->zc)
        CINC(bytes_compressed, b->iov[1].iov_len);
    CINC(bytes_sent_objects, b->size);
}

/* The batch's object is durable (2xx, or a 412 read back as our own bytes). */
static void stage_batch_durable(struct s3c_stage *st, struct batch *b)
{
    if (st->fenced) { /* acknowledge nothing more: park it */
        b->state = B_BACKOFF;
        b->retry_at_ns = UINT64_MAX;
        return;
    }
    /* Success refunds the retry budget: what the last retry cost, or 1. */
    st->retry_tokens += b->retry_cost ? b->retry_cost : 1;
    if (st->retry_tokens > st->cfg.persistence.retry_budget)
        st->retry_tokens = st->cfg.persistence.retry_budget;
    CINC(batches_sent, 1);
    CINC(batch_commits, b->count);
    CINC(batch_hist[stage_log2_bucket(b->count, S3C_BATCH_HIST_BUCKETS + 1) - 1], 1);
    if (atomic_load(&st->degraded)) {
        atomic_store(&st->degraded, 0);
        S3C_LOG(S3C_LOG_INFO,
                "event=stage_recovered key=%s msg=\"S3 takes objects again: the spool drains\"",
                b->key);
    }
    stage_done(st, b); /* W moves if this was the oldest */
}

static void stage_retry_later(struct s3c_stage *st, struct batch *b, bool fatal,
                              enum xport_fail fail, const char *error);

/* The verdict on a 412: the key read back (writer protocol step 4). */
static void stage_on_settle(void *ctx, enum settle_result r, const char *etag, const char *why)
{
    struct batch *b = ctx;
    struct s3c_stage *st = b->st;
    S3C_LOG(r == SETTLE_OURS ? S3C_LOG_INFO : S3C_LOG_WARN,
            "event=put_settled key=%s verdict=%s why=\"%s\"", b->key, settle_name(r), why);
    switch (r) {
    case SETTLE_OURS:
        CINC(settled_ours, 1);
        stage_batch_durable(st, b);
        return;
    case SETTLE_FENCED:
        stage_fence(st, why);
        b->state = B_BACKOFF; /* parked */
        b->retry_at_ns = UINT64_MAX;
        return;
    case SETTLE_ORPHAN: { /* an older writer's PUT that landed past our fence: replace it */
        char im[sizeof(b->if_match)];
        writer_if_match(etag, st->ws.etag_unquoted, im, sizeof(im));
        if (strcmp(im, b->if_match) == 0) {
            /* Refused with the very ETag the object has: the store wants it unquoted (Ceph
             * RGW 16) - or, unquoted already, it cannot replace it at all. */
            if (st->ws.etag_unquoted) {
                CINC(fail_fatal, 1);
                b->state = B_BACKOFF;
                b->retry_at_ns = UINT64_MAX;
                stage_fail(st, b, "the store refuses If-Match with the orphan's own ETag");
                return;
            }
            st->ws.etag_unquoted = true;
            S3C_LOG(S3C_LOG_WARN,
                    "event=etag_unquoted key=%s msg=\"the store refused If-Match "
                    "with a matching quoted ETag; sending ETags unquoted\"",
                    b->key);
            writer_if_match(etag, true, im, sizeof(im));
        } else {
            CINC(orphans_replaced, 1);
        }
        snprintf(b->if_match, sizeof(b->if_match), "%s", im);
        b->state = B_BACKOFF;
        b->retry_at_ns = 0; /* at once */
        return;
    }
    case SETTLE_GONE:
        b->if_match[0] = '\0';
        b->state = B_BACKOFF;
        b->retry_at_ns = 0;
        return;
    case SETTLE_RETRY:
        stage_retry_later(st, b, false, XPORT_FAIL_NONE, why);
        return;
    case SETTLE_CHAIN: /* a replay met another writer's continuation of the log */
        if (b->replayed) {
            char w2[600];
            snprintf(w2, sizeof(w2),
                     "%s; the spool's seqs %" PRIu64 ".. cannot be placed (move spool.dir "
                     "aside, keep it: it holds commits)",
                     why, b->first);
            CINC(fail_fatal, 1);
            b->state = B_BACKOFF;
            b->retry_at_ns = UINT64_MAX;
            stage_fail(st, b, w2);
            return;
        }
        /* cannot happen past our own fence, where the floor is our epoch */
        __attribute__((fallthrough));
    case SETTLE_UNREADABLE: /* fatal here, as when it was counted CORRUPT */
    case SETTLE_CORRUPT:
        CINC(fail_fatal, 1);
        stage_set_error(st, "PUT %s: %s", b->key, why);
        b->state = B_BACKOFF;
        b->retry_at_ns = UINT64_MAX;
        stage_fail(st, b, why);
        return;
    }
}

static void stage_put_done(void *ctx, const struct xport_result *res)
{
    struct batch *b = ctx;
    struct s3c_stage *st = b->st;

    CINC(in_flight, -1);
    if (res->cls == XPORT_OK) {
        stage_batch_durable(st, b);
        return;
    }
    if (res->cls == XPORT_EXISTS || (res->cls == XPORT_NOT_FOUND && b->if_match[0])) {
        /* 412: the key is taken (or the orphan we replace changed): never a blind retry,
         * read it back. A 404 on If-Match: the orphan is gone (Ceph answers 412). */
        CINC(settles, 1);
        b->state = B_SETTLE;
        b->settle =
            (struct settle){.x = st->x,
                            .key = b->key,
                            .header = b->header,
                            .trailer = b->trailer,
                            .size = b->size,
                            .epoch = b->replayed ? b->epoch : st->ws.epoch,
                            /* a replay: older than the chain's last fence is an
                             * orphan; between it and the spool's run, another
                             * writer continued the log (SETTLE_CHAIN: we stop) */
                            .floor_epoch = b->replayed ? st->ws.chain_start_epoch : st->ws.epoch,
                            .replay = b->replayed,
                            .done = stage_on_settle,
                            .ctx = b};
        if (settle_start(&b->settle) == 0)
            return;
        stage_retry_later(st, b, false, XPORT_FAIL_NONE, "cannot start reading the key back");
        return;
    }
    stage_retry_later(st, b, res->cls != XPORT_RETRYABLE, res->fail,
                      res->error && *res->error ? res->error : "unknown error");
}

/* A failed attempt: back off and send again; fail the stage once retries are spent, or at
 * once for a fatal answer. */
static void stage_retry_later(struct s3c_stage *st, struct batch *b, bool fatal,
                              enum xport_fail fail, const char *error)
{
    char why[384];
    snprintf(why, sizeof(why), "%s", error);
    stage_set_error(st, "PUT %s attempt %d: %s", b->key, b->attempts, why);
    if (fatal) {
        CINC(fail_fatal, 1);
        b->state = B_BACKOFF; /* parked: never sent again */
        b->retry_at_ns = UINT64_MAX;
        stage_fail(st, b, why);
        return;
    }
    CINC(fail_retryable, 1);
    bool spent = b->attempts > st->cfg.persistence.max_retry_attempts;
    if (spent && st->spool && !atomic_load(&st->spool_failed)) {
        /* The spool holds it: no failure. Park at the capped backoff; W waits. */
        if (!atomic_load(&st->degraded)) {
            atomic_store(&st->degraded, 1);
            CINC(degraded_events, 1);
            S3C_LOG(S3C_LOG_WARN,
                    "event=stage_degraded key=%s attempts=%d durable_seq=%" PRIu64
                    " local_seq=%" PRIu64 " error=\"%s\" msg=\"retries spent; the spool keeps "
                    "every commit, retrying every %d ms\"",
                    b->key, b->attempts, atomic_load(&st->durable), spool_local_seq(st->spool), why,
                    st->cfg.persistence.max_retry_delay_ms);
        }
        uint64_t cap = (uint64_t)st->cfg.persistence.max_retry_delay_ms;
        uint64_t delay_ms = cap / 2 + stage_rand64(st) % (cap / 2 + 1);
        b->state = B_BACKOFF;
        b->retry_at_ns = s3c__now_ns() + delay_ms * 1000000u;
        return;
    }
    if (spent) {
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
    int cost = fail == XPORT_FAIL_TIMEOUT ? RETRY_COST_TIMEOUT : RETRY_COST;
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

    pthread_setname_np(pthread_self(), "s3c-persist"); /* told apart in top and perf */
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
            if (failed && b->first >= atomic_load(&st->fail_first))
                continue;
            CINC(retries, 1);
            stage_send_batch(st, b);
            worked = true;
        }
        failed = atomic_load(&st->failed);

        /* Batches the compression workers finished: sent now (none past a failure). */
        for (struct batch *b; (b = stage_zq_pop_done(st)) != NULL; worked = true) {
            stage_object_counted(st, b);
            if (failed && b->first >= atomic_load(&st->fail_first)) {
                b->state = B_BACKOFF; /* parked, like the batches after the failed one */
                b->retry_at_ns = UINT64_MAX;
                continue;
            }
            stage_send_batch(st, b);
            failed = atomic_load(&st->failed);
        }

        /* 2. New batches: acquire when a trigger fires and a slot is free. The ring may
         * still hold batches that succeeded behind a slow one (in-order release); when it
         * can hold no more, only a reply helps, as at the in-flight limit. */
        struct ring_ready rd = {0};
        bool ring_held = false;
        if (st->spool) {
            /* Every commit to the spool at once; batches by the same triggers. */
            stage_spool_take(st);
            stage_spool_release(st);
            while (!failed && st->outstanding < st->nbatches &&
                   st->ndone + st->outstanding < st->maxdone) {
                struct batch *b = stage_free_slot(st);
                int rc = stage_spool_form(st, b, now, closing, &timeout);
                if (rc < 0) { /* the spool cannot give them back: nothing from here is acked */
                    S3C_LOG(S3C_LOG_ERROR,
                            "event=stage_failed first_seq=%" PRIu64 " durable_seq=%" PRIu64
                            " error=\"the spool cannot give these "
                            "commits back\"",
                            st->next_batch, atomic_load(&st->durable));
                    stage_fail_from(st, st->next_batch, S3C_EFAILED);
                }
                if (rc <= 0)
                    break;
                st->outstanding++;
                st->last_send_ns = now;
                if (b->state != B_COMPRESS)
                    stage_send_batch(st, b);
                worked = true;
                failed = atomic_load(&st->failed);
            }
            ring_held = spool_req_next(st->spool) == NULL;
        }
        while (!st->spool && !failed && st->outstanding < st->nbatches &&
               st->ndone + st->outstanding < st->maxdone) {
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
                    b->first, b->last, b->rb.bytes, st->outstanding,
                    rd.full                            ? "size"
                    : st->outstanding == 1             ? "idle"
                    : closing                          ? "close"
                    : ring_producers_waiting(st->ring) ? "ring_full"
                                                       : "time");
            if (b->state != B_COMPRESS)
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
            if (failed && b->first >= atomic_load(&st->fail_first))
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
            bool done = failed ? !pending_before_fail
                               : ring_drained_sc(st->ring) && st->outstanding == 0 &&
                                     (!st->spool || stage_spool_idle(st));
            if (done || now >= deadline)
                break;
            int t = stage_ms_until(now, deadline);
            /* A commit claimed before the close may still be mid-copy: its publish will
             * not wake a closed ring's consumer, so look again shortly. */
            if (!failed && rd.count == 0 && !ring_held &&
                (st->spool || st->outstanding < st->nbatches) && !ring_drained_sc(st->ring))
                t = t < 1 ? t : 1;
            timeout = timeout < 0 || t < timeout ? t : timeout;
        }

        /* 4. Sleep until a reply, a timer, or commits worth waking for: the first one (it
         * may be sent at once, or starts the batch timer), then the rest of a full batch.
         * At the in-flight limit, or when the ring holds all it can, only a reply helps,
         * so producers need not wake us. When arming fails, commits are claimed and about
         * to be published: look again at once, then every millisecond, never spinning. */
        if (!failed && !closing && !ring_held && (st->spool || st->outstanding < st->nbatches)) {
            uint32_t want = 1; /* with a spool: every commit at once, for L */
            if (rd.count > 0 && !st->spool) {
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
            static _Thread_local uint64_t stage_loop_logged_ns; /* at most one line a second */
            uint64_t t = s3c__now_ns();
            stage_set_error(st, "event loop failed: %s", s3c_strerror(rc));
            if (t - stage_loop_logged_ns >= 1000000000u) {
                stage_loop_logged_ns = t;
                S3C_LOG(S3C_LOG_ERROR, "event=loop_failed error=\"%s\"", s3c_strerror(rc));
            }
            struct timespec ts = {0, 1000000}; /* do not spin on a broken loop */
            nanosleep(&ts, NULL);
        }
    }
    atomic_store(&st->stopped, 1);
    stage_wake_waiters(st);
    return NULL;
}
