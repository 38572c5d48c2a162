/* s3commit: a persistence stage that makes a transaction processor's commits durable in
 * Amazon S3 (or any S3-compatible store) and acknowledges them strictly in order.
 *
 * Producers call s3c_submit() from any thread; one persistence thread owned by the stage
 * batches commits into S3 objects and moves the durable watermark W (every seq <= W is
 * durable). The library never prints and never exits: it logs through s3c_set_log().
 *
 * Errors: commands return 0 or a negative S3C_E* code; s3c_strerror() names it. */
#ifndef S3COMMIT_H
#define S3COMMIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version ----------------------------------------------------------------------- */

/* The version of this header. CMake refuses to configure when these disagree with
 * project(VERSION) in CMakeLists.txt. Before 1.0 a minor release may change the ABI, so
 * the shared library's SONAME carries MAJOR.MINOR (libs3commit.so.0.1). */
#define S3C_VERSION_MAJOR 0
#define S3C_VERSION_MINOR 1
#define S3C_VERSION_PATCH 0
#define S3C_VERSION_STRING "0.1.0"
/* MAJOR * 10000 + MINOR * 100 + PATCH, for #if comparisons: 0.1.0 is 100. */
#define S3C_VERSION_NUMBER (S3C_VERSION_MAJOR * 10000 + S3C_VERSION_MINOR * 100 + S3C_VERSION_PATCH)

/* The version of the library actually linked, as "MAJOR.MINOR.PATCH" (static storage,
 * never NULL) and as a number in the form of S3C_VERSION_NUMBER. A program built against
 * one header and run with another shared library can compare the two. */
const char *s3c_version(void);
int s3c_version_number(void);

/* ---- errors ------------------------------------------------------------------------ */

enum {
    S3C_OK = 0,
    S3C_EINVAL = -1,    /* an argument or config value is wrong */
    S3C_ENOMEM = -2,    /* out of memory */
    S3C_ETOOBIG = -3,   /* commit larger than pipeline.max_commit_bytes */
    S3C_ETIMEDOUT = -4, /* the wait ran out before the condition held */
    S3C_EAGAIN = -5,    /* try-variant: no room right now */
    S3C_ECLOSED = -6,   /* the stage (or ring) is closed or closing */
    S3C_EFAILED = -7,   /* the stage is failed: a batch could not be made durable */
    S3C_EIO = -8,       /* an I/O or system call failed */
    S3C_ECONFIG = -9,   /* the config file is missing, unreadable or invalid */
    S3C_ES3 = -10,      /* S3 answered with a fatal error */
    S3C_ENETWORK = -11, /* the endpoint could not be reached */
    S3C_EEXISTS = -12,  /* a conditional write found the key already there */
    S3C_ECORRUPT = -13, /* data read back failed a format or CRC check */
    S3C_EFENCED = -14,  /* a newer writer took over the log: this stage acknowledges no more */
    S3C_EFORMAT = -15,  /* a log (the prefix) or a spool of another format version */
    S3C_EEND = -16,     /* a reader reached the end of the log (or its to_seq) */
};

/* Words for an error code; never NULL. */
const char *s3c_strerror(int err);

/* ---- logging ----------------------------------------------------------------------- */

enum s3c_log_level { S3C_LOG_ERROR = 0, S3C_LOG_WARN, S3C_LOG_INFO, S3C_LOG_DEBUG };

/* msg is one logfmt line without a trailing newline ("event=... key=value ..."); it never
 * contains a secret. The sink may be called from any library thread at once. */
typedef void (*s3c_log_fn)(void *ctx, enum s3c_log_level level, const char *msg);

/* Sets the process-wide sink and the most verbose level passed to it. NULL fn (the
 * default) drops everything. Call before opening stages. */
void s3c_set_log(s3c_log_fn fn, void *ctx, enum s3c_log_level max_level);

/* A ready-made sink: writes "ts=... level=... <msg>\n" to stderr. */
void s3c_log_stderr(void *ctx, enum s3c_log_level level, const char *msg);

/* ---- configuration ----------------------------------------------------------------- */

typedef struct s3c_config s3c_config;

/* Parses and validates a JSON config (the format of docs/config.md). On error returns
 * S3C_ECONFIG and writes one message naming the key path, what was expected and what was
 * found into err (if errlen > 0). Credentials missing from the file are taken from the
 * AWS environment and shared credentials file at load time. Caller frees with
 * s3c_config_free(). */
int s3c_config_load(const char *path, s3c_config **out, char *err, size_t errlen);
int s3c_config_parse(const char *json, size_t len, s3c_config **out, char *err, size_t errlen);
void s3c_config_free(s3c_config *cfg); /* NULL is a no-op */

/* The effective config as pretty JSON, defaults filled in and secrets masked. Returns a
 * malloc'd string the caller frees, or NULL on allocation failure. */
char *s3c_config_dump(const s3c_config *cfg);

/* Overrides s3.endpoint (for tools that start a mock on a port they learn late).
 * Returns 0 or S3C_EINVAL. */
int s3c_config_set_endpoint(s3c_config *cfg, const char *endpoint);

/* ---- the stage --------------------------------------------------------------------- */

typedef struct s3c_stage s3c_stage;

/* Opens a stage: copies what it needs from cfg (cfg may be freed after), warms the
 * connection pool and starts the persistence thread. Returns 0 and *out, or an error
 * with a message in err. */
int s3c_stage_open(const s3c_config *cfg, s3c_stage **out, char *err, size_t errlen);
/* Opening runs the writer protocol before it returns: it takes the next writer epoch,
 * finds where the log under s3.prefix ends, and fences older writers with a control
 * record at the next seq. A stage that a newer writer fences later fails with
 * S3C_EFENCED and acknowledges nothing more. */

/* Submits one commit (copied before return). On success *seq is its sequence number in
 * the log: dense, in the order commits enter the pipeline, continuing the log this stage
 * opened (the first is s3c_stage_info's first_seq). Blocks while the ring is
 * full for at most timeout_ms (-1 = forever): S3C_ETIMEDOUT. S3C_ETOOBIG when len exceeds
 * pipeline.max_commit_bytes; S3C_ECLOSED after close began; S3C_EFAILED once failed
 * (S3C_EFENCED once a newer writer took the log over).
 * Thread-safe: any number of producer threads. */
int s3c_submit(s3c_stage *st, const void *data, size_t len, int timeout_ms, uint64_t *seq);

/* As s3c_submit, but never blocks: S3C_EAGAIN when the ring has no room now. */
int s3c_try_submit(s3c_stage *st, const void *data, size_t len, uint64_t *seq);

/* Waits until seq is durable (0), the stage failed at or before seq's batch (S3C_EFAILED, or
 * S3C_EFENCED: nothing more is acknowledged once fenced), the stage closed without making it
 * durable (S3C_ECLOSED), or timeout_ms passed (S3C_ETIMEDOUT; -1 = forever). Thread-safe. */
int s3c_wait_durable(s3c_stage *st, uint64_t seq, int timeout_ms);

/* The durable watermark: every seq <= the value is durable. Thread-safe, lock-free. */
uint64_t s3c_durable_seq(const s3c_stage *st);

/* Durability events. Called on the persistence thread, in order, each time the
 * watermark moves (durable_seq is the new W, always larger than the last), and once with
 * err = S3C_EFAILED when the stage fails, or S3C_EFENCED when a newer writer takes the log
 * over (a stage already failed is told again with S3C_EFENCED) (durable_seq is then W at that
 * moment). After a failure W may still move over batches before the failed one; those moves are
 * reported as usual. Must not block and must not call s3c_stage_drain or s3c_stage_close. */
typedef void (*s3c_durable_fn)(void *ctx, uint64_t durable_seq, int err);

/* Adds a subscriber (at most 16). Call before the first submit to see every event.
 * Thread-safe. Returns 0, S3C_EINVAL (NULL fn) or S3C_ENOMEM (too many). */
int s3c_subscribe(s3c_stage *st, s3c_durable_fn fn, void *ctx);

/* ---- the local spool (spool.dir; docs/spool.md) ---------------------------------- */
/* With a spool, every accepted commit is also appended to local disk and fsync'd (group
 * commit) by a thread of its own, unless S3 already has it when the writer gets to it (then
 * its seq alone is written: a SKIP frame): L, the locally durable watermark, is the highest
 * seq with every seq <= L fsync'd in the spool or durable in S3 before it got there. What
 * is locally durable survives a crash or kill -9: the next open sends what S3 lacks. An S3 outage
 * does not fail a stage with a spool: it is `degraded` (stats) and keeps accepting until the spool
 * is full. */
/* L (every seq <= L is in the spool, fsync'd, or was in S3 first); without a spool, W.
 * Thread-safe, lock-free. */
uint64_t s3c_local_seq(const s3c_stage *st);
/* Waits until seq is locally durable (0); S3C_EIO when the spool failed before it (no more
 * commits are made locally durable); otherwise as s3c_wait_durable. Without a spool it is
 * s3c_wait_durable. Thread-safe. */
int s3c_wait_local(s3c_stage *st, uint64_t seq, int timeout_ms);
/* Adds a subscriber to L: called on the spool's thread, in order, each time L moves, and once
 * with err = S3C_EIO when the spool fails. Same rules and limit as s3c_subscribe (they share
 * the 16). S3C_EINVAL without a spool. */
int s3c_subscribe_local(s3c_stage *st, s3c_durable_fn fn, void *ctx);

#define S3C_BATCH_HIST_BUCKETS 12 /* commits per batch: 1, 2-3, 4-7, ..., >= 2048 */

struct s3c_stats {
    uint64_t commits_submitted;                     /* accepted by s3c_submit */
    uint64_t bytes_submitted;                       /* of them, taken by the persistence thread */
    uint64_t commits_durable, bytes_durable;        /* acknowledged */
    uint64_t durable_seq;                           /* the watermark W */
    uint64_t commits_pending, bytes_pending;        /* submitted, not yet durable */
    uint64_t batches_sent;                          /* objects made durable */
    uint64_t batch_commits_sum;                     /* commits in those objects */
    uint64_t writes_saved;                          /* PUTs batching avoided: commits - objects */
    uint64_t put_attempts;                          /* PUTs started, retries included */
    uint64_t retries;                               /* PUTs re-sent after a failure */
    uint64_t failures_retryable, failures_fatal;    /* failed attempts by class */
    uint64_t retry_budget_exhausted;                /* retries delayed by the shared budget */
    uint32_t in_flight;                             /* PUTs on the wire now */
    uint32_t failed;                                /* 1 once the stage is failed */
    uint64_t batch_hist[S3C_BATCH_HIST_BUCKETS];    /* batches by commit count (log2) */
    uint64_t ack_latency_us_sum, ack_latency_count; /* commit-to-durable latency, sampled:
                                                       one commit in 16 of each producer
                                                       thread is timed */
    uint64_t ack_latency_hist[24];                  /* bucket i: < 2^i us (last: rest) */
    uint64_t pool_opens, pool_closes, pool_reuses, pool_heartbeat_failures;
    uint64_t object_bytes; /* bytes of the objects built (compressed, with s3.compression) */
    char last_error[256];  /* the last failure, as words ("" when none) */

    /* The writer protocol (docs/stage.md): epoch, fencing, the manifest and heartbeat. */
    uint64_t epoch;                 /* this stage's writer epoch */
    uint32_t fenced;                /* 1 once a newer writer took the log over */
    uint64_t settled_ours;          /* 412s read back as our own earlier attempt */
    uint64_t orphans_replaced;      /* older writers' orphans replaced on our chain */
    uint64_t manifest_writes;       /* manifest writes that landed */
    uint64_t manifest_writes_saved; /* W moves folded into a later manifest write */
    uint64_t manifest_failures;     /* failed manifest writes (retried alone) */
    uint64_t heartbeat_writes, heartbeat_failures; /* the writer's heartbeat object */
    uint64_t manifest_durable_seq;                 /* the W the manifest holds */
    uint64_t manifest_unsaved;                     /* durable_seq - manifest_durable_seq */
    uint64_t heartbeat_age_ms;      /* since the last heartbeat landed (0: none yet) */
    char manifest_last_error[256];  /* "" when the last manifest write landed */
    char heartbeat_last_error[256]; /* "" when the last heartbeat landed */
    /* The local spool (all 0 without one). */
    uint64_t local_seq;        /* L */
    uint64_t spool_bytes;      /* in segment files */
    uint32_t degraded;         /* 1 while S3 does not take objects and the spool holds them */
    uint32_t spool_failed;     /* 1 once a spool write or fsync failed: nothing more accepted */
    uint32_t spool_full;       /* 1 while the spool is full: producers feel backpressure */
    uint64_t spool_reads;      /* frames read back to build objects (outage, replay) */
    uint64_t replayed_batches; /* objects re-sent from an earlier run's spool */
    uint64_t spool_skipped;    /* commits S3 took before the spool wrote them: written as
                                * SKIP frames, their bytes not (docs/spool.md) */
    uint64_t spool_syncs;      /* the spool's fdatasyncs that made something durable: its
                                * write groups (a cloud disk's IOPS budget) */
};

/* Where this stage's run sits in the log, fixed at open by the writer protocol. */
struct s3c_stage_info {
    uint64_t epoch;         /* the writer epoch this stage took */
    uint64_t recovered_seq; /* the end of the log found at open (0: a new log) */
    uint64_t control_seq;   /* our EPOCH_START control record: recovered_seq + 1 */
    uint64_t first_seq;     /* the seq the first commit of this run gets: control_seq + 1 */
    char writer[96];        /* "host:pid:random", as in the manifest and heartbeat */
};

/* Fills *out. Returns 0 or S3C_EINVAL. Thread-safe. */
int s3c_stage_info(const s3c_stage *st, struct s3c_stage_info *out);

/* A snapshot of the counters. Thread-safe; values are individually, not jointly, exact. */
void s3c_stats_get(const s3c_stage *st, struct s3c_stats *out);

/* The port the Prometheus exporter listens on (useful with metrics.listen "HOST:0"), or
 * 0 when metrics are off. Thread-safe. */
int s3c_metrics_port(const s3c_stage *st);

struct s3c_close_report {
    uint64_t durable_seq;    /* W when the stage stopped */
    uint64_t last_seq;       /* the highest seq ever accepted */
    uint64_t lost_first_seq; /* first seq not made durable (0 when none) */
    uint64_t lost_last_seq;  /* last seq not made durable (0 when none) */
    int error;               /* 0, S3C_ETIMEDOUT (drain ran out), S3C_EFAILED or S3C_EFENCED */
    uint64_t local_seq;      /* with a spool: every seq <= it is in the spool (and is sent by
                                the next open) or in S3; seqs lost_first..min(lost_last,
                                local_seq) are therefore not lost, only not in S3 yet */
};

/* Stops accepting commits, sends everything pending, drains what is in flight for at
 * most persistence.shutdown_timeout_ms and stops the persistence thread. Blocked
 * producers and waiters return S3C_ECLOSED (S3C_EFAILED / S3C_EFENCED once failed), and so does
 * every later call; the stage stays allocated. Returns 0 when every accepted commit is durable,
 * else the report's error; report (may be NULL) says exactly which seqs were not made
 * durable. Thread-safe and idempotent (later calls return the same report); must not be
 * called from a subscriber. */
int s3c_stage_drain(s3c_stage *st, struct s3c_close_report *report);

/* s3c_stage_drain (if not done yet), then frees the stage. No other thread may be inside,
 * or later enter, an s3c_* call on it: a program with producer threads drains, joins
 * them, then closes. NULL is a no-op. */
int s3c_stage_close(s3c_stage *st, struct s3c_close_report *report);

/* ---- reading the log back ------------------------------------------------------- */

typedef struct s3c_reader s3c_reader;

struct s3c_reader_opts {
    uint64_t from_seq;    /* the first seq wanted (0 or 1: from the start) */
    uint64_t to_seq;      /* the last seq wanted (0: to the end) */
    int follow;           /* at the end of the log, wait for more instead of S3C_EEND */
    int poll_interval_ms; /* follow: how often to look for more (0: 500) */
    int window;           /* GETs kept in flight ahead of the caller (0: max_in_flight_requests);
                           * up to as many finished objects more may wait behind a slow one,
                           * so memory is up to twice window objects */
};

/* One record of the log. data points into the reader's buffers: valid until the next
 * s3c_reader_next() or s3c_reader_close(). */
struct s3c_record {
    uint64_t seq;
    const void *data;
    size_t len;
    int control;    /* 1: a control record (a writer's EPOCH_START; data is its JSON) */
    uint64_t epoch; /* the writer epoch of the object holding it */
};

/* Opens a reader of the log under cfg's s3.prefix (cfg may be freed after). It follows the
 * chain of objects with the writer protocol's rules (docs/format.md): seqs in order, each
 * once, CRC-checked; orphans skipped; nothing past the end of the chain. Starting at
 * from_seq finds the object holding it from a listing, without reading the log before it.
 * Returns 0, or an error with a message in err. The reader is single-threaded: its calls
 * must come from one thread at a time. */
int s3c_reader_open(const s3c_config *cfg, const struct s3c_reader_opts *opts, s3c_reader **out,
                    char *err, size_t errlen);

/* The next record: 0 and *rec; S3C_EEND at the end of the log (or past to_seq); with
 * follow, S3C_ETIMEDOUT when nothing new came within timeout_ms (-1: wait forever); or an
 * error (S3C_ECORRUPT, S3C_ES3, S3C_ENETWORK, ...) whose words, naming the key and the
 * offset, s3c_reader_error() gives. An error is final. */
int s3c_reader_next(s3c_reader *r, struct s3c_record *rec, int timeout_ms);

/* The last error's words ("" when none). */
const char *s3c_reader_error(const s3c_reader *r);

struct s3c_reader_stats {
    uint64_t objects;         /* objects on the chain read */
    uint64_t records;         /* records returned, control ones included */
    uint64_t control_records; /* of them, control records */
    uint64_t bytes;           /* payload bytes returned */
    uint64_t orphans_skipped; /* keys off the chain (inside an object's range) or orphans */
    uint64_t beyond_end;      /* keys listed past the end of the chain (at the last end) */
    uint64_t gets, lists;     /* requests made */
    uint64_t last_seq;        /* the last seq of the chain read so far */
};
void s3c_reader_stats_get(const s3c_reader *r, struct s3c_reader_stats *out);

void s3c_reader_close(s3c_reader *r); /* NULL ok */

#ifdef __cplusplus
}
#endif

#endif /* S3COMMIT_H */
