/* The stage's insides, shared by stage.c (the API producers and waiters call, open and
 * close), persist.c (the persistence thread) and compress.c (its compression workers). Only
 * the ring, the atomics below and the compression queue (a batch in B_COMPRESS belongs to
 * its worker) cross threads; everything under "Persistence-thread state" is that thread's
 * alone. */
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
#include "spool/spool.h"
#include "transport/transport.h"
#include "writer/writer.h"

/* Each ring record's prefix is the object format's record header, so a ring record is
 * exactly the object's record and a batch's records, back to back in the ring, go to S3
 * as one span (two when the batch crosses the end of the ring). */
#define PFX_RECHDR 0
#define PFX_BYTES OBJ_RECORD_HEADER_BYTES

#define MAX_SUBS 16
#define LAT_SAMPLE 16         /* a power of two: the commits whose ring seq it divides are timed */
#define RETRY_COST 5          /* retry budget tokens per retry (AWS SDK standard mode) */
#define RETRY_COST_TIMEOUT 10 /* ... per retry after a timeout */

/* B_COMPRESS: formed, its records with a compression worker (compress.c); nothing but
 * the worker touches its object fields until it comes back. */
enum batch_state { B_FREE, B_COMPRESS, B_WIRE, B_BACKOFF, B_SETTLE };

#define SPOOL_QUEUE 4096     /* chunks and seals handed to the spool and not yet freed */
#define SPOOL_W_STALL_MS 200 /* W still this long with a full ring: S3 is not keeping up */

struct batch {
    enum batch_state state;
    struct ring_batch rb;
    uint64_t first, last; /* log seqs: the ring's seqs + the stage's base */
    uint32_t count;       /* commits */
    uint64_t bytes;       /* payload bytes */
    int attempts;         /* PUTs started */
    int retry_cost;       /* tokens the last retry took (refunded on success) */
    uint64_t retry_at_ns; /* B_BACKOFF: when to send again */
    unsigned char header[OBJ_HEADER_BYTES];
    unsigned char trailer[OBJ_TRAILER_BYTES];
    uint32_t crc32c; /* of the whole object */
    char key[OBJ_KEY_MAX];
    struct iovec *iov; /* count + 2 spans: header, records, trailer */
    int iovcnt;
    int nspans;          /* records' spans at iov[1..nspans], before the object is finished */
    uint64_t size;       /* of the whole object */
    char if_match[300];  /* replacing an orphan: If-Match on its ETag ("" otherwise) */
    unsigned char *zbuf; /* s3.compression zstd: the frame of the records (zcap bytes) */
    size_t zcap;
    struct settle settle; /* B_SETTLE: reading the key back after a 412 */
    struct s3c_stage *st;
    /* With a spool (spooled.c). */
    uint64_t epoch;     /* the object's: a replayed one keeps its run's */
    bool replayed;      /* from a spool left by an earlier run: settle as a replay */
    bool from_ring;     /* its spans point into the ring */
    bool rec_crc_valid; /* rec_crc is the CRC-32C of its records (joined from chunks') */
    uint32_t rec_crc;
    bool need_reload;      /* ring space under it was given back: read it from the spool */
    bool whole;            /* buf holds the whole object (a spooled control record) */
    struct spool_pos spos; /* the frame of its first commit, once known */
    bool spos_valid;
    unsigned char *buf; /* records (or the whole object) read from the spool */
    size_t bufcap, buflen;
    uint64_t t_sum; /* submit times of its commits still in the ring, for latency */
    uint32_t t_n;
};

/* A durable batch waiting for the ones before it (the ordered ack). */
struct done {
    uint64_t first, last, bytes, t_sum;
    uint32_t count, t_n;
    struct ring_batch rb; /* without a spool: its ring space, released at the ack */
};

/* s3.compression zstd: the compression workers (compress.c). The persistence thread pushes
 * formed batches to todo and pops finished ones from done, one hand-off each way per batch;
 * a worker writes the eventfd, watched on the loop, after each one it finishes. */
struct stage_zworker {
    struct stage_zq *q;
    ZSTD_CCtx *zc; /* its own */
    pthread_t thread;
};

struct stage_zq {
    pthread_mutex_t mu;          /* guards the queues and stop */
    pthread_cond_t cv;           /* workers wait for todo or stop */
    struct batch **todo, **done; /* FIFOs of cap slots (a batch is in one at most) */
    int cap, todo_head, ntodo, done_head, ndone;
    bool stop;
    int efd; /* written by a worker after each batch it finishes */
    struct loop_watch w;
    struct stage_zworker *workers;
    int nworkers;
    bool started, watched;
    int busy; /* persistence thread only: its batches in B_COMPRESS */
};

struct sub {
    s3c_durable_fn fn;
    void *ctx;
    bool local; /* told of L (spool thread), not W */
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
    struct spool *spool;    /* spool.dir: the local spool, or NULL */
    uint64_t spool_first;   /* the spool's first seq at open, 0: none */
    uint64_t spool_wmark;   /* the highest W its BEGIN/END frames recorded, 0: none */
    uint64_t spool_commit;  /* the spool's last commit (CHUNK) at open, 0: none */
    uint64_t spool_epoch;   /* the epoch of the run that accepted it */
    /* The log as the spool's verdict saw it (before writer_open, read only): the verdict
     * is given again after writer_open only if the log it finds differs. */
    struct stage_seen {
        bool valid;
        uint64_t recovered_seq, chain_start_epoch, max_batch_commits, found_epoch, found_seq;
    } seen;
    int spool_efd; /* written by the spool thread after each write group */
    struct loop_watch spool_w;
    /* Commit-to-durable latency: the submit time of every LAT_SAMPLE-th ring seq, at
     * lat_t[(seq / LAT_SAMPLE) & lat_mask]; written by its producer before it publishes,
     * read by the persistence thread before the seq's ring space is released. */
    uint64_t *lat_t;
    uint64_t lat_mask;
    ZSTD_CCtx *zc;      /* s3.compression zstd: the persistence thread's (a spool reload's) */
    struct stage_zq zq; /* ... and the workers that compress every batch formed */
    pthread_t thread;
    struct metrics_srv *metrics;

    /* Shared with producers and waiters. */
    _Atomic uint64_t durable; /* the watermark W */
    _Atomic int failed;       /* set once, by the persistence thread */
    _Atomic int fail_code;    /* S3C_EFAILED, or S3C_EFENCED: a newer writer took over */
    _Atomic int closing;      /* set once, by s3c_stage_close */
    _Atomic int stopped;      /* the persistence thread has finished */
    _Atomic int degraded;     /* a spool holds what S3 does not take now (retries spent) */
    _Atomic int spool_failed; /* the spool could not write: no more commits are accepted */
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
    struct done *done;         /* durable, not yet acknowledged, in seq order */
    int ndone, maxdone;
    uint64_t last_send_ns;
    double retry_tokens;
    uint64_t rng;
    bool moved;                  /* W moved during this loop turn */
    bool fenced;                 /* a newer writer fenced us: nothing more is acknowledged */
    _Atomic uint64_t fail_first; /* the earliest failed batch: nothing from it on is acked */
    uint64_t fail_last;
    int idle_spins; /* loop turns in a row that could neither sleep nor work */

    /* With a spool: what is not yet in a batch (spooled.c). */
    uint64_t next_batch;    /* the first log seq not yet in a batch */
    uint64_t acquired_last; /* the last log seq taken from the ring */
    uint64_t qnext;         /* the spool queue index of the first chunk not in a batch */
    uint64_t replay_end;    /* a replay from an earlier run's spool ends here (0: none) */
    struct spool_pos cur;   /* the spool frame of next_batch, when it is no longer in the ring */
    bool cur_valid;
    const struct spool_seal *seals; /* an earlier run's object bounds (replay) */
    size_t nseals, seal_i;
    uint64_t chunk_since_ns;    /* when the oldest chunk not in a batch was taken */
    uint64_t w_seen, w_seen_ns; /* W as the spool's side last saw it move, and when */

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
        _Atomic uint64_t spool_reads, spool_read_bytes, replayed_batches, degraded_events;
    } c;
    pthread_mutex_t errmu;
    char last_error[256];
    bool drained; /* s3c_stage_drain has run (under submu) */
    struct s3c_close_report report;
};

#define CINC(f, v) atomic_fetch_add_explicit(&st->c.f, (v), memory_order_relaxed)
#define CSET(f, v) atomic_store_explicit(&st->c.f, (v), memory_order_relaxed)
#define CGET(f) atomic_load_explicit(&st->c.f, memory_order_relaxed)

/* stage.c: waiting on W (or, local, on L) and subscribing to either. */
int stage_wait(struct s3c_stage *st, uint64_t seq, int timeout_ms, bool local);
int stage_subscribe(struct s3c_stage *st, s3c_durable_fn fn, void *ctx, bool local);
/* stage.c: the sampled submit times of a held ring batch's commits: their sum, *n of them. */
uint64_t stage_lat_sum(const struct s3c_stage *st, const struct ring_batch *rb, uint32_t *n);
/* stage.c */
void stage_set_error(struct s3c_stage *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* persist.c: the persistence thread's body and the ring's wake-up on the loop. */
void *stage_persistence_main(void *arg);
void stage_on_ring_wake(void *ctx, int fd, unsigned events);
void stage_wake_waiters(struct s3c_stage *st);
/* A newer writer owns the log: acknowledge nothing more (loop thread). */
void stage_fence(struct s3c_stage *st, const char *why);
/* Fills the object around b->iov[1 .. nspans] (the records' spans, set by the caller):
 * header, key, then compression, trailer and CRC: with zstd and may_defer, by a worker
 * (b goes to B_COMPRESS and comes back through stage_zq_pop_done), else at once. */
void stage_finish_object(struct s3c_stage *st, struct batch *b, int nspans, bool may_defer);
/* A finished object's byte counters (persistence thread). */
void stage_object_counted(struct s3c_stage *st, const struct batch *b);

/* compress.c: compression off the persistence thread. */
ZSTD_CCtx *stage_zstd_new(const struct s3c_config *cfg); /* at s3.compression_level */
/* The object's body from b->header and b->iov[1 .. b->nspans]: the records (compressed
 * into b->zbuf when zc), trailer, CRC, size. Any thread; touches b and zc only. */
void stage_object_body(struct batch *b, ZSTD_CCtx *zc);
int stage_zq_start(struct s3c_stage *st, char *err, size_t errlen); /* before the thread */
void stage_zq_stop(struct s3c_stage *st); /* after it: joins workers, drops what is queued */
void stage_zq_push(struct s3c_stage *st, struct batch *b); /* -> B_COMPRESS */
struct batch *stage_zq_pop_done(struct s3c_stage *st);     /* a finished one, or NULL */

/* local.c: opening the spool around the writer protocol, L for producers. */
int stage_spool_open(struct s3c_stage *st, uint64_t *last, char *err, size_t errlen);
/* Before writer_open, on a spool that holds anything: reads the log (writer_peek) and
 * refuses an open whose spool cannot go on it, before anything is written to S3. */
int stage_spool_precheck(struct s3c_stage *st, const struct writer_state *peeked, char *err,
                         size_t errlen);
/* Tests only: called between the precheck and writer_open (the log may move there). */
extern void (*stage_test_after_precheck)(void);
int stage_spool_begin(struct s3c_stage *st, char *err, size_t errlen);

/* spooled.c: the persistence thread's side of the spool. */
void stage_spool_take(struct s3c_stage *st);    /* ring chunks to the spool */
void stage_spool_release(struct s3c_stage *st); /* ring space back, in order */
/* Forms the next batch into b when one is due: 1, 0 (not now; *timeout may shrink), or a
 * negative error (stage failed: said). */
int stage_spool_form(struct s3c_stage *st, struct batch *b, uint64_t now, bool closing,
                     int *timeout);
/* 0, S3C_EEND (not yet), error; compresses on the persistence thread (a rare outage path) */
int stage_spool_reload(struct s3c_stage *st, struct batch *b);
bool stage_spool_idle(const struct s3c_stage *st); /* nothing left to put in a batch */
void stage_on_spool_wake(void *ctx, int fd, unsigned events);

#endif
