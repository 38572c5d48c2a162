/* s3.compression zstd off the persistence thread (docs/stage.md): s3.compression_threads
 * workers, each with its own compressor, take formed batches (B_COMPRESS) from a queue,
 * compress their records into the batch's zbuf and finish the object (CRC, trailer, size),
 * and hand them back through an eventfd on the persistence thread's loop, which sends them.
 * A worker touches only the batch it holds and the two queues: it never sends, acknowledges,
 * logs or frees, and it reads the ring memory under the batch, which stays held meanwhile. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "stage/stage_int.h"

ZSTD_CCtx *stage_zstd_new(const struct s3c_config *cfg)
{
    ZSTD_CCtx *zc = ZSTD_createCCtx();
    if (!zc ||
        ZSTD_isError(ZSTD_CCtx_setParameter(zc, ZSTD_c_compressionLevel,
                                            cfg->s3.compression_level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(zc, ZSTD_c_contentSizeFlag, 1))) {
        ZSTD_freeCCtx(zc);
        return NULL;
    }
    return zc;
}

void stage_object_body(struct batch *b, ZSTD_CCtx *zc)
{
    int nspans = b->nspans, n = 1 + nspans;
    uint32_t crc = crc32c_update(0, b->header, OBJ_HEADER_BYTES);
    if (zc) {
        /* The records as one zstd frame, streamed from their spans without a staging copy:
         * the header and trailer stay plain, the trailer's CRC covers the bytes sent. */
        ZSTD_outBuffer out = {b->zbuf, b->zcap, 0};
        size_t zr = 0;
        uint64_t raw = 0;
        ZSTD_CCtx_reset(zc, ZSTD_reset_session_only);
        for (int i = 1; i <= nspans; i++)
            raw += b->iov[i].iov_len;
        ZSTD_CCtx_setPledgedSrcSize(zc, raw);
        for (int i = 1; i <= nspans; i++) {
            ZSTD_inBuffer in = {b->iov[i].iov_base, b->iov[i].iov_len, 0};
            while (in.pos < in.size && !ZSTD_isError(zr))
                zr = ZSTD_compressStream2(zc, &out, &in, ZSTD_e_continue);
        }
        ZSTD_inBuffer none = {NULL, 0, 0};
        do
            zr = ZSTD_compressStream2(zc, &out, &none, ZSTD_e_end);
        while (zr > 0 && !ZSTD_isError(zr) && out.pos < out.size);
        /* zcap is ZSTD_compressBound of the largest batch, so the frame always fits. */
        b->iov[1] = (struct iovec){b->zbuf, out.pos};
        n = 2;
        crc = crc32c_update(crc, b->zbuf, out.pos);
    } else if (b->from_ring && b->rec_crc_valid) {
        /* Chunks of a spool: their CRCs were computed when they were taken, and joined. */
        uint64_t len = 0;
        for (int i = 1; i <= nspans; i++)
            len += b->iov[i].iov_len;
        crc = crc32c_combine(crc, b->rec_crc, len);
    } else if (b->from_ring) {
        /* Records the producers just wrote, each payload's CRC (computed from the
         * producer's own bytes) in its header: joined, not read again. At 1 MiB objects
         * that second pass was ~15% of the persistence thread (docs/stage.md). */
        crc = obj_records_crc(crc, &b->iov[1], nspans);
    } else {
        for (int i = 1; i <= nspans; i++)
            crc = crc32c_update(crc, b->iov[i].iov_base, b->iov[i].iov_len);
    }
    obj_trailer_encode(crc, b->trailer);
    b->iov[n++] = (struct iovec){b->trailer, OBJ_TRAILER_BYTES};
    b->iovcnt = n;
    b->crc32c = crc32c_update(crc, b->trailer, OBJ_TRAILER_BYTES);
    b->size = 0;
    for (int i = 0; i < n; i++)
        b->size += b->iov[i].iov_len;
}

/* A worker: one batch at a time, until told to stop (what is still queued then is left:
 * the stage is closing past its drain). */
static void *stage_zq_main(void *arg)
{
    struct stage_zworker *w = arg;
    struct stage_zq *q = w->q;
    pthread_setname_np(pthread_self(), "s3c-zstd"); /* told apart in top, perf, bench-stage */
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->stop && q->ntodo == 0)
            pthread_cond_wait(&q->cv, &q->mu);
        if (q->stop) {
            pthread_mutex_unlock(&q->mu);
            return NULL;
        }
        struct batch *b = q->todo[q->todo_head];
        q->todo_head = (q->todo_head + 1) % q->cap;
        q->ntodo--;
        pthread_mutex_unlock(&q->mu);

        stage_object_body(b, w->zc);

        pthread_mutex_lock(&q->mu);
        q->done[(q->done_head + q->ndone) % q->cap] = b;
        q->ndone++;
        pthread_mutex_unlock(&q->mu);
        uint64_t one = 1;
        /* A full counter (never, at one per batch) still leaves the fd readable. */
        while (write(q->efd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
    }
}

int stage_zq_start(struct s3c_stage *st, char *err, size_t errlen)
{
    struct stage_zq *q = &st->zq;
    int n = st->cfg.s3.compression_threads;
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->efd < 0) {
        snprintf(err, errlen, "stage: cannot create the compressors' eventfd: %s",
                 strerror(errno));
        return S3C_EIO;
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->started = true; /* from here on, stage_zq_stop undoes it */
    q->cap = st->nbatches; /* a batch is in at most one queue, once */
    q->todo = calloc((size_t)q->cap, sizeof(*q->todo));
    q->done = calloc((size_t)q->cap, sizeof(*q->done));
    q->workers = calloc((size_t)n, sizeof(*q->workers));
    if (!q->todo || !q->done || !q->workers) {
        snprintf(err, errlen, "stage: out of memory for the compressors");
        stage_zq_stop(st);
        return S3C_ENOMEM;
    }
    q->w = (struct loop_watch){.fd = q->efd, .cb = stage_on_ring_wake}; /* drains an eventfd */
    int rc = loop_watch_set(st->loop, &q->w, LOOP_READ);
    if (rc != 0) {
        snprintf(err, errlen, "stage: cannot watch the compressors: %s", s3c_strerror(rc));
        stage_zq_stop(st);
        return rc;
    }
    q->watched = true;
    for (; q->nworkers < n; q->nworkers++) {
        struct stage_zworker *w = &q->workers[q->nworkers];
        w->q = q;
        w->zc = stage_zstd_new(&st->cfg);
        if (!w->zc) {
            snprintf(err, errlen, "stage: cannot create a zstd compressor (level %d)",
                     st->cfg.s3.compression_level);
            stage_zq_stop(st);
            return S3C_ENOMEM;
        }
        int terr = pthread_create(&w->thread, NULL, stage_zq_main, w);
        if (terr != 0) {
            ZSTD_freeCCtx(w->zc);
            snprintf(err, errlen, "stage: cannot start a compression thread: %s",
                     strerror(terr));
            stage_zq_stop(st);
            return S3C_EIO;
        }
    }
    return 0;
}

void stage_zq_stop(struct s3c_stage *st)
{
    struct stage_zq *q = &st->zq;
    if (!q->started)
        return; /* without zstd, or its eventfd failed */
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->nworkers; i++) {
        pthread_join(q->workers[i].thread, NULL);
        ZSTD_freeCCtx(q->workers[i].zc);
    }
    if (q->watched)
        loop_watch_del(st->loop, &q->w);
    close(q->efd);
    free(q->todo), free(q->done), free(q->workers);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    memset(q, 0, sizeof(*q));
}

void stage_zq_push(struct s3c_stage *st, struct batch *b)
{
    struct stage_zq *q = &st->zq;
    b->state = B_COMPRESS;
    q->busy++;
    pthread_mutex_lock(&q->mu);
    q->todo[(q->todo_head + q->ntodo) % q->cap] = b;
    q->ntodo++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

struct batch *stage_zq_pop_done(struct s3c_stage *st)
{
    struct stage_zq *q = &st->zq;
    struct batch *b = NULL;
    if (q->busy == 0)
        return NULL; /* no lock taken when nothing is out */
    pthread_mutex_lock(&q->mu);
    if (q->ndone > 0) {
        b = q->done[q->done_head];
        q->done_head = (q->done_head + 1) % q->cap;
        q->ndone--;
        q->busy--;
    }
    pthread_mutex_unlock(&q->mu);
    return b;
}
