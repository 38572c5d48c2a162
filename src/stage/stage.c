/* The persistence stage's face (include/s3commit.h): producers submit into the commit
 * ring, waiters and subscribers hear of the durable watermark, open and close start and
 * stop the persistence thread (persist.c). Producers never touch a socket. */
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "stage/stage_int.h"

void stage_set_error(struct s3c_stage *st, const char *fmt, ...)
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
        return atomic_load(&st->fail_code);
    if (atomic_load_explicit(&st->spool_failed, memory_order_relaxed))
        return S3C_EIO; /* the spool cannot make more commits locally durable */
    if (len > (uint64_t)st->cfg.pipeline.max_commit_bytes)
        return S3C_ETOOBIG;
    rc = try_only ? ring_try_claim_mp(st->ring, (uint32_t)len, &c)
                  : ring_claim_mp(st->ring, (uint32_t)len, timeout_ms, &c);
    if (rc != 0) {
        if (rc == S3C_ECLOSED && atomic_load(&st->failed))
            return atomic_load(&st->fail_code);
        if (rc == S3C_ECLOSED && atomic_load(&st->spool_failed))
            return S3C_EIO;
        return rc;
    }
    uint64_t log_seq = c.seq + st->base; /* after our fence */
    /* Commit-to-durable latency is sampled: the commits whose ring seq LAT_SAMPLE divides
     * read the clock (reading it for each was a tenth of a producer's time at 128 bytes). */
    if ((c.seq & (LAT_SAMPLE - 1)) == 0)
        st->lat_t[(c.seq / LAT_SAMPLE) & st->lat_mask] = s3c__now_ns();
    memcpy(c.data, data, len);
    obj_record_header_encode((uint32_t)len, crc32c_update(0, data, len), log_seq,
                             (unsigned char *)c.prefix + PFX_RECHDR);
    ring_publish_mp(st->ring, &c);
    if (seq)
        *seq = log_seq;
    return 0;
}

uint64_t stage_lat_sum(const struct s3c_stage *st, const struct ring_batch *rb, uint32_t *n)
{
    uint64_t sum = 0;
    *n = 0;
    /* the first multiple of LAT_SAMPLE at or after first_seq */
    for (uint64_t s = (rb->first_seq + LAT_SAMPLE - 1) & ~(uint64_t)(LAT_SAMPLE - 1);
         s <= rb->last_seq; s += LAT_SAMPLE) {
        sum += st->lat_t[(s / LAT_SAMPLE) & st->lat_mask];
        (*n)++;
    }
    return sum;
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

/* W, or with local L (the spool's watermark). */
static uint64_t stage_mark(s3c_stage *st, bool local)
{
    return local ? spool_local_seq(st->spool) : atomic_load(&st->durable);
}

int stage_wait(s3c_stage *st, uint64_t seq, int timeout_ms, bool local)
{
    struct timespec dl;
    int rc = 0;

    if (!st)
        return S3C_EINVAL;
    if (stage_mark(st, local) >= seq)
        return 0;
    if (timeout_ms >= 0)
        dl = s3c__deadline_ts(timeout_ms);
    pthread_mutex_lock(&st->wmu);
    atomic_fetch_add(&st->nwaiters, 1);
    for (;;) {
        if (stage_mark(st, local) >= seq) {
            rc = 0;
            break;
        }
        /* A failed spool makes nothing more locally durable. */
        if (local && atomic_load(&st->spool_failed)) {
            rc = S3C_EIO;
            break;
        }
        /* Once failed, seqs before the failed batch may still become durable. */
        if (atomic_load(&st->failed) && seq >= atomic_load(&st->fail_first)) {
            rc = atomic_load(&st->fail_code);
            break;
        }
        if (atomic_load(&st->stopped)) {
            rc = atomic_load(&st->failed) ? atomic_load(&st->fail_code) : S3C_ECLOSED;
            break;
        }
        if (timeout_ms < 0)
            pthread_cond_wait(&st->wcv, &st->wmu);
        else if (pthread_cond_timedwait(&st->wcv, &st->wmu, &dl) == ETIMEDOUT) {
            rc = stage_mark(st, local) >= seq ? 0 : S3C_ETIMEDOUT;
            break;
        }
    }
    atomic_fetch_sub(&st->nwaiters, 1);
    pthread_mutex_unlock(&st->wmu);
    return rc;
}

int s3c_wait_durable(s3c_stage *st, uint64_t seq, int timeout_ms)
{
    return stage_wait(st, seq, timeout_ms, false);
}

int stage_subscribe(s3c_stage *st, s3c_durable_fn fn, void *ctx, bool local)
{
    int rc = 0;
    if (!st || !fn)
        return S3C_EINVAL;
    pthread_mutex_lock(&st->submu);
    int n = atomic_load(&st->nsubs);
    if (n >= MAX_SUBS) {
        rc = S3C_ENOMEM;
    } else {
        st->subs[n] = (struct sub){fn, ctx, local};
        atomic_store(&st->nsubs, n + 1); /* publishes the entry to the threads */
    }
    pthread_mutex_unlock(&st->submu);
    return rc;
}

int s3c_subscribe(s3c_stage *st, s3c_durable_fn fn, void *ctx)
{
    return stage_subscribe(st, fn, ctx, false);
}

void s3c_stats_get(const s3c_stage *cst, struct s3c_stats *o)
{
    s3c_stage *st = (s3c_stage *)cst;
    memset(o, 0, sizeof(*o));
    if (!st)
        return;
    uint64_t last = ring_last_seq(st->ring) + st->base;
    o->commits_submitted = ring_last_seq(st->ring);
    o->commits_durable = CGET(commits_durable);
    o->bytes_durable = CGET(bytes_durable);
    o->bytes_submitted = CGET(bytes_seen);
    o->durable_seq = atomic_load(&st->durable);
    o->commits_pending = last > o->durable_seq ? last - o->durable_seq : 0;
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
    o->fenced = atomic_load(&st->fail_code) == S3C_EFENCED;
    o->epoch = st->ws.epoch;
    o->settled_ours = CGET(settled_ours);
    o->object_bytes = CGET(bytes_sent_objects);
    o->orphans_replaced = CGET(orphans_replaced);
    if (st->mw) {
        const struct mw_stats *m = mw_stats(st->mw);
#define MGET(f) atomic_load_explicit(&m->f, memory_order_relaxed)
        o->manifest_writes = MGET(manifest_writes);
        o->manifest_writes_saved = MGET(manifest_saved);
        o->manifest_failures = MGET(manifest_failures);
        o->heartbeat_writes = MGET(heartbeat_writes);
        o->heartbeat_failures = MGET(heartbeat_failures);
        o->manifest_durable_seq = MGET(manifest_seq);
        uint64_t hb = MGET(heartbeat_at_ms), now = writer_unix_ms();
        o->heartbeat_age_ms = hb && now > hb ? now - hb : 0;
#undef MGET
        o->manifest_unsaved =
            o->durable_seq > o->manifest_durable_seq ? o->durable_seq - o->manifest_durable_seq : 0;
        mw_last_errors(st->mw, o->manifest_last_error, o->heartbeat_last_error,
                       sizeof(o->manifest_last_error));
    }
    if (st->spool) {
        o->local_seq = spool_local_seq(st->spool);
        o->spool_bytes = spool_bytes(st->spool);
        o->spool_full = spool_full(st->spool);
        o->spool_skipped = spool_skipped(st->spool);
        o->spool_syncs = spool_syncs(st->spool);
    }
    o->degraded = (uint32_t)atomic_load(&st->degraded);
    o->spool_failed = (uint32_t)atomic_load(&st->spool_failed);
    o->spool_reads = CGET(spool_reads);
    o->replayed_batches = CGET(replayed_batches);
    pthread_mutex_lock(&st->errmu);
    memcpy(o->last_error, st->last_error, sizeof(o->last_error));
    pthread_mutex_unlock(&st->errmu);
}

int s3c_stage_info(const s3c_stage *st, struct s3c_stage_info *out)
{
    if (!st || !out)
        return S3C_EINVAL;
    memset(out, 0, sizeof(*out));
    out->epoch = st->ws.epoch;
    out->recovered_seq = st->ws.recovered_seq;
    out->control_seq = st->ws.control_seq;
    out->first_seq = st->ws.control_seq + 1;
    snprintf(out->writer, sizeof(out->writer), "%s", st->ws.writer);
    return 0;
}

int s3c_metrics_port(const s3c_stage *st)
{
    return st && st->metrics ? metrics_srv_port(st->metrics) : 0;
}

/* ---- open and close ---------------------------------------------------------------- */

/* Callbacks of the manifest writer, on the loop's thread. */
static void stage_mw_snapshot(void *ctx, struct mw_snapshot *out)
{
    struct s3c_stage *st = ctx;
    out->durable_seq = atomic_load(&st->durable);
    out->last_seq = ring_last_seq(st->ring) + st->base;
    pthread_mutex_lock(&st->errmu);
    snprintf(out->last_error, sizeof(out->last_error), "%s", st->last_error);
    pthread_mutex_unlock(&st->errmu);
}

static void stage_mw_fenced(void *ctx, const char *why)
{
    stage_fence(ctx, why);
}

static void stage_mw_error(void *ctx, const char *channel, const char *why)
{
    struct s3c_stage *st = ctx;
    /* Once the stage failed, its last error is the one that failed it: a manifest or
     * heartbeat failure (logged, and in its own stats fields) must not hide it. */
    if (!atomic_load(&st->failed))
        stage_set_error(st, "%s write failed: %s", channel, why);
}

static void stage_collect(void *ctx, struct s3c_stats *out)
{
    s3c_stats_get(ctx, out);
}

int s3c_stage_open(const s3c_config *cfg, s3c_stage **out, char *err, size_t errlen)
{
    struct s3c_stage *st;
    const struct cfg_persistence *p;
    char e[1024] = "";
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
    st->maxdone = st->nbatches * 4; /* as many as the ring holds for in-order release */
    st->done =
        calloc((size_t)st->maxdone + 1, sizeof(*st->done)); /* ndone + outstanding <= maxdone */
    if (!st->done)
        goto out_free_batches;
    /* s3.compression zstd: a compressor for the persistence thread (a spool reload; the
     * workers have their own) and, per batch, room for the frame of the largest batch (the
     * byte trigger may be passed by one commit). */
    size_t zcap = 0;
    if (cfg->s3.compression == CFG_COMP_ZSTD) {
        st->zc = stage_zstd_new(cfg);
        if (!st->zc)
            goto out_free_batches;
        zcap = ZSTD_compressBound((size_t)p->batch_bytes_threshold +
                                  (size_t)cfg->pipeline.max_commit_bytes +
                                  (size_t)p->batch_size_threshold * OBJ_RECORD_HEADER_BYTES);
    }
    for (int i = 0; i < st->nbatches; i++) {
        st->batches[i].st = st;
        st->batches[i].iov = calloc((size_t)p->batch_size_threshold + 2, sizeof(struct iovec));
        if (!st->batches[i].iov)
            goto out_free_batches;
        if (zcap) {
            st->batches[i].zbuf = malloc(zcap);
            st->batches[i].zcap = zcap;
            if (!st->batches[i].zbuf)
                goto out_free_batches;
        }
    }

    struct ring_opts ro = {.bytes = (uint64_t)cfg->pipeline.ring_bytes,
                           .prefix_bytes = PFX_BYTES,
                           .max_commit = (uint32_t)cfg->pipeline.max_commit_bytes,
                           /* in flight, plus succeeded ones held for in-order release;
                              with a spool, the chunks it holds */
                           .max_batches =
                               cfg->spool.dir[0] ? SPOOL_QUEUE : (uint32_t)st->nbatches * 4};
    rc = ring_new(&ro, &st->ring);
    if (rc != 0) {
        snprintf(e, sizeof(e), "stage: cannot create the commit ring of %" PRId64 " bytes: %s",
                 cfg->pipeline.ring_bytes, rc == S3C_EIO ? strerror(errno) : s3c_strerror(rc));
        goto out_free_batches;
    }
    st->lat_mask = ring_max_records(st->ring) / LAT_SAMPLE - 1;
    st->lat_t = calloc(st->lat_mask + 1, sizeof(*st->lat_t));
    if (!st->lat_t) {
        rc = S3C_ENOMEM;
        goto out_free_ring;
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
    /* Both say why in e only; out of memory is told apart by malloc's ENOMEM, so a
     * program is not told to fix a config that is fine. */
    errno = 0;
    st->x = xport_new(cfg, st->loop, e, sizeof(e));
    if (!st->x) {
        rc = errno == ENOMEM ? S3C_ENOMEM : S3C_EINVAL;
        goto out_free_loop;
    }
    /* The writer protocol before any commit is accepted: our epoch, the end of the log,
     * our fence. Run here, on the caller's thread, on the loop the persistence thread
     * takes over once it starts. First a look that writes nothing (writer_peek): a log
     * this version cannot continue (a damaged object on the chain, a newer format) or a
     * spool that does not fit the log is refused before anything is written, so the
     * log's writer goes on unfenced; writer_open then goes on from where the look ended. */
    uint64_t spooled = 0; /* the spool's last seq: our fence goes after it */
    struct writer_state peeked;
    st->spool_efd = -1;
    if (cfg->spool.dir[0]) {
        rc = stage_spool_open(st, &spooled, e, sizeof(e));
        if (rc < 0)
            goto out_free_spool;
    }
    rc = writer_peek(st->x, &st->cfg, &peeked, e, sizeof(e));
    if (rc == 0 && st->spool)
        rc = stage_spool_precheck(st, &peeked, e, sizeof(e));
    if (rc == 0 && spooled > peeked.recovered_seq) /* our fence's key, past the walk's end */
        rc = writer_peek_key(st->x, &st->cfg, spooled + 1, e, sizeof(e));
    if (rc < 0)
        goto out_free_spool;
    if (st->spool && stage_test_after_precheck)
        stage_test_after_precheck();
    rc = writer_open(st->x, &st->cfg, spooled, &peeked, &st->ws, e, sizeof(e));
    if (rc < 0)
        goto out_free_spool;
    st->base = st->ws.control_seq;
    atomic_store(&st->durable, st->ws.control_seq);
    if (st->spool) {
        rc = stage_spool_begin(st, e, sizeof(e));
        if (rc < 0)
            goto out_free_spool;
    }
    uint64_t w0 = atomic_load(&st->durable);
    struct mw_opts mo = {.x = st->x,
                         .cfg = &st->cfg,
                         .ws = &st->ws,
                         .snapshot = stage_mw_snapshot,
                         .fenced = stage_mw_fenced,
                         .error = stage_mw_error,
                         .ctx = st};
    st->mw = mw_new(&mo);
    if (!st->mw) {
        rc = S3C_ENOMEM;
        goto out_free_spool;
    }
    if (w0 == st->ws.control_seq)
        mw_note_durable(st->mw, w0, w0);
    else if (w0 > 0) /* replaying a spool: the manifest stays at the log's end for now */
        mw_note_durable(st->mw, w0, st->ws.recovered_first_seq);
    /* The manifest names our fence before the first commit is taken, and the first
     * heartbeat says who we are; a failure here is retried later, not fatal. */
    if (mw_flush(st->mw, cfg->s3.request_timeout_ms, false) < 0)
        S3C_LOG(S3C_LOG_WARN, "event=manifest_open_write_late msg=\"the manifest or heartbeat "
                              "is not written yet; retrying in the background\"");
    if (cfg->metrics_listen[0]) {
        errno = 0;
        st->metrics = metrics_srv_start(cfg->metrics_listen, stage_collect, st, e, sizeof(e));
        if (!st->metrics) {
            rc = errno == ENOMEM ? S3C_ENOMEM : S3C_EIO;
            goto out_free_mw;
        }
    }
    if (st->zc) {
        rc = stage_zq_start(st, e, sizeof(e));
        if (rc != 0)
            goto out_stop_metrics;
    }
    int terr = pthread_create(&st->thread, NULL, stage_persistence_main, st);
    if (terr != 0) { /* pthread_create returns its error; errno is not set */
        snprintf(e, sizeof(e), "stage: cannot start the persistence thread: %s", strerror(terr));
        rc = S3C_EIO;
        goto out_stop_compressors;
    }
    S3C_LOG(S3C_LOG_INFO,
            "event=stage_open bucket=%s prefix=%s epoch=%" PRIu64 " recovered_seq=%" PRIu64
            " first_seq=%" PRIu64 " in_flight=%d pool=%d batch_timeout_ms=%d "
            "batch_size=%d batch_bytes=%" PRId64,
            cfg->s3.bucket, cfg->s3.prefix, st->ws.epoch, st->ws.recovered_seq,
            st->ws.control_seq + 1, p->max_in_flight_requests, p->target_pool_size,
            p->batch_timeout_ms, p->batch_size_threshold, p->batch_bytes_threshold);
    *out = st;
    return 0;

out_stop_compressors:
    stage_zq_stop(st);
out_stop_metrics:
    metrics_srv_stop(st->metrics);
out_free_mw:
    mw_free(st->mw);
out_free_spool:
    spool_free(st->spool);
    if (st->spool_efd >= 0)
        close(st->spool_efd);
    xport_free(st->x);
out_free_loop:
    loop_free(st->loop);
out_free_ring:
    free(st->lat_t);
    ring_free(st->ring);
out_free_batches:
    for (int i = 0; i < st->nbatches; i++)
        free(st->batches[i].iov), free(st->batches[i].zbuf), free(st->batches[i].buf);
    free(st->batches);
    free(st->done);
    ZSTD_freeCCtx(st->zc);
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
        stage_zq_stop(st);     /* a batch still queued past the deadline is not compressed */
        spool_stop(st->spool); /* after it wrote (and fsync'd) every chunk handed to it */
        stage_wake_waiters(st);
        /* The bounded final flush: the manifest at the last W, a last heartbeat. The loop
         * is ours now that the thread is gone. */
        uint64_t now = s3c__now_ns(), dl = atomic_load(&st->close_deadline_ns);
        int flush_ms = dl > now ? (int)((dl - now) / 1000000u) : 0;
        flush_ms = flush_ms < 1000 ? 1000 : flush_ms > 10000 ? 10000 : flush_ms;
        if (mw_flush(st->mw, flush_ms, true) < 0)
            S3C_LOG(S3C_LOG_WARN, "event=manifest_flush_incomplete timeout_ms=%d", flush_ms);

        struct s3c_close_report *r = &st->report;
        r->durable_seq = atomic_load(&st->durable);
        r->last_seq = ring_last_seq(st->ring) + st->base;
        r->local_seq = st->spool ? spool_local_seq(st->spool) : r->durable_seq;
        if (r->last_seq > r->durable_seq) {
            r->lost_first_seq = r->durable_seq + 1;
            r->lost_last_seq = r->last_seq;
            r->error = atomic_load(&st->failed) ? atomic_load(&st->fail_code) : S3C_ETIMEDOUT;
            S3C_LOG(S3C_LOG_ERROR,
                    "event=close_incomplete durable_seq=%" PRIu64 " lost_first_seq=%" PRIu64
                    " lost_last_seq=%" PRIu64 " local_seq=%" PRIu64 " reason=\"%s\"",
                    r->durable_seq, r->lost_first_seq, r->lost_last_seq, r->local_seq,
                    s3c_strerror(r->error));
        } else if (atomic_load(&st->failed)) {
            r->error = atomic_load(&st->fail_code); /* though nothing accepted was lost */
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
    mw_free(st->mw);
    xport_free(st->x); /* aborts whatever is still on the wire, without callbacks */
    spool_free(st->spool);
    if (st->spool && st->spool_efd >= 0)
        close(st->spool_efd);
    for (int i = 0; i < st->nbatches; i++)
        free(st->batches[i].buf);
    loop_free(st->loop);
    free(st->lat_t);
    ring_free(st->ring);
    for (int i = 0; i < st->nbatches; i++)
        free(st->batches[i].iov), free(st->batches[i].zbuf);
    free(st->batches);
    free(st->done);
    ZSTD_freeCCtx(st->zc);
    pthread_cond_destroy(&st->wcv);
    pthread_mutex_destroy(&st->wmu);
    pthread_mutex_destroy(&st->submu);
    pthread_mutex_destroy(&st->errmu);
    OPENSSL_cleanse(&st->cfg, sizeof(st->cfg)); /* the credentials in our copy */
    free(st);
    return rc;
}
