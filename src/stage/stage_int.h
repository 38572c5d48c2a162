/* The stage's insides, shared by stage.c (the API producers and waiters call, open and
 * close) and persist.c (the persistence thread). Only the ring and the atomics below cross
 * threads; everything under "Persistence-thread state" is that thread's alone. */
#ifndef S3C_STAGE_INT_H
#define S3C_STAGE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include <zstd.h>

#include "config/config.h"
#include "format/objfmt.h"
#include "loop/loop.h"
#include "metrics/metrics.h"
#include "pipeline/ring.h"
#include "s3commit.h"
#include "transport/transport.h"
#include "writer/writer.h"

/* Each ring record's prefix: the submit time (for commit-to-durable latency), then the
 * object format's record header, so header + payload go to S3 as one span. */
#define PFX_TIME 0
#define PFX_RECHDR 8
#define PFX_BYTES (8 + OBJ_RECORD_HEADER_BYTES)

#define MAX_SUBS 16
#define RETRY_COST 5          /* retry budget tokens per retry (AWS SDK standard mode) */
#define RETRY_COST_TIMEOUT 10 /* ... per retry after a timeout */

enum batch_state { B_FREE, B_WIRE, B_BACKOFF, B_SETTLE };

struct batch {
    enum batch_state state;
    struct ring_batch rb;
    uint64_t first, last; /* log seqs: the ring's seqs + the stage's base */
    int attempts;         /* PUTs started */
    int retry_cost;       /* tokens the last retry took (refunded on success) */
    uint64_t retry_at_ns; /* B_BACKOFF: when to send again */
    unsigned char header[OBJ_HEADER_BYTES];
    unsigned char trailer[OBJ_TRAILER_BYTES];
    uint32_t crc32c; /* of the whole object */
    char key[OBJ_KEY_MAX];
    struct iovec *iov; /* count + 2 spans: header, records, trailer */
    int iovcnt;
    uint64_t size;       /* of the whole object */
    char if_match[300];  /* replacing an orphan: If-Match on its ETag ("" otherwise) */
    unsigned char *zbuf; /* s3.compression zstd: the frame of the records (zcap bytes) */
    size_t zcap;
    struct settle settle; /* B_SETTLE: reading the key back after a 412 */
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
    struct writer_state ws; /* epoch and where the log resumed (writer_open) */
    struct mw *mw;          /* the manifest and heartbeat writer, on the loop */
    uint64_t base;          /* log seq = ring seq + base (base = the fence's seq) */
    ZSTD_CCtx *zc;          /* s3.compression zstd: the persistence thread's compressor */
    pthread_t thread;
    struct metrics_srv *metrics;

    /* Shared with producers and waiters. */
    _Atomic uint64_t durable; /* the watermark W */
    _Atomic int failed;       /* set once, by the persistence thread */
    _Atomic int fail_code;    /* S3C_EFAILED, or S3C_EFENCED: a newer writer took over */
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
    bool fenced;                 /* a newer writer fenced us: nothing more is acknowledged */
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
        _Atomic uint64_t settles, settled_ours, orphans_replaced;
        _Atomic uint64_t bytes_compressed, bytes_sent_objects;
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

/* stage.c */
void stage_set_error(struct s3c_stage *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* persist.c: the persistence thread's body, the ring's release hook (the ordered ack) and
 * the ring's wake-up on the loop. */
void *stage_persistence_main(void *arg);
void stage_on_release(void *ctx, const struct ring_batch *b);
void stage_on_ring_wake(void *ctx, int fd, unsigned events);
void stage_wake_waiters(struct s3c_stage *st);
/* A newer writer owns the log: acknowledge nothing more (loop thread). */
void stage_fence(struct s3c_stage *st, const char *why);

#endif
