/* The writer protocol (docs/stage.md "The writer protocol"), after SlateDB's manifest and
 * WAL fencing: a stage takes the next epoch with a compare-and-swap on the manifest, finds
 * where the chain of objects ends, fences older writers with an EPOCH_START object at the
 * next seq, settles every 412 by reading the object back, and keeps the manifest and its
 * heartbeat object current. Everything runs on the event loop of the transport it is
 * given, on that loop's thread. Nothing here ever overwrites an object that continues the
 * chain: only orphans (objects of an older epoch past a newer fence) are replaced. */
#ifndef S3C_WRITER_H
#define S3C_WRITER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "format/manifest.h"
#include "format/objfmt.h"
#include "loop/loop.h"
#include "transport/transport.h"

/* ---- open: epoch, end of the chain, fence --------------------------------------- */

/* What the open found and took. Filled by writer_open(), then owned by the stage. */
struct writer_state {
    uint64_t epoch;               /* ours */
    uint64_t recovered_seq;       /* W: the end of the chain found at open */
    uint64_t recovered_first_seq; /* the first seq of the object holding W (0: none) */
    uint64_t chain_start_epoch;   /* the epoch of the last EPOCH_START at or before W */
    uint64_t control_seq;         /* our EPOCH_START record (the fence): W + 1, or past a
                                     local spool's last seq (writer_open's after_seq) */
    uint64_t max_batch_commits;   /* the most records an object of the log holds */
    uint64_t manifest_seq;        /* the durable_seq the manifest holds after our epoch CAS */
    char writer[WRITER_ID_MAX];   /* "host:pid:random" */
    uint64_t started_at_ms;       /* when the epoch was taken (Unix ms) */
    char manifest_etag[256];      /* of our last manifest write: the next If-Match */
    bool etag_unquoted;           /* the store wants If-Match without quotes (Ceph RGW 16) */
    bool listed;                  /* the end was found by listing (no current manifest) */
    uint64_t objects_read;        /* headers read to find the end */
    uint64_t found_epoch;         /* the manifest as found: the epoch of its writer, */
    uint64_t found_seq;           /* and its durable_seq once an object was seen ending
                                     there (0: none, or not confirmed) */
    uint64_t found_manifest_seq;  /* the manifest's durable_seq as read (0: none) */
    uint64_t chain_max_epoch;     /* the highest epoch the walk met on the chain */
};

/* Runs steps 1-3 of the protocol synchronously on x's loop: bounded retries with the
 * config's backoff, 412/409 on the manifest re-read and retried, a prefix of the version-1
 * layout refused. Returns 0, or S3C_ES3 / S3C_ENETWORK / S3C_ECORRUPT / S3C_EFORMAT /
 * S3C_ENOMEM with one line in err naming the key and the fix. */
int writer_open(struct xport *x, const struct s3c_config *cfg, uint64_t after_seq,
                const struct writer_state *peeked, struct writer_state *ws, char *err,
                size_t errlen);
/* after_seq: the fence goes no lower than after_seq + 1 (a local spool holds seqs up to it
 * that are still to be sent); 0 for none. peeked: what writer_peek found just before (NULL:
 * none). Step 1 then takes an epoch above the chain's highest, and step 2 goes on from the
 * end it found when the manifest is as it was (the chain up to there does not change: nothing
 * deletes an object on it; the one known exception is in docs/spool.md, "What is still
 * open"), so the walk is not made twice. */

/* Step 2 alone, reading only: the manifest and the chain's end, into ws (recovered_seq,
 * recovered_first_seq, chain_start_epoch, max_batch_commits, found_epoch, found_seq,
 * listed, objects_read; epoch and control_seq 0: none is taken). Nothing is written, so a
 * caller can refuse to open on what it finds without fencing the log's current writer.
 * Returns as writer_open. */
int writer_peek(struct xport *x, const struct s3c_config *cfg, struct writer_state *ws, char *err,
                size_t errlen);

/* Reads the header at log/<seq> and writes nothing: where a fence past the chain's end
 * goes (after a local spool's seqs), which the peek's walk does not reach. Returns 0 when
 * nothing is there or it holds a valid header of this version (the fence's settle decides
 * what it is); S3C_ECORRUPT when it holds an empty object or no valid header, S3C_EFORMAT
 * a version-1 or a newer format's header, or the read's error, each with its words in
 * err. */
int writer_peek_key(struct xport *x, const struct s3c_config *cfg, uint64_t seq, char *err,
                    size_t errlen);

/* The epoch of the chain's object holding seq, for a seq at or below the end writer_open
 * found: of the objects whose key lies within span at or below seq (span: the most records
 * an object holds) and that hold seq, the highest epoch. An object that holds seq but is
 * off the chain is an orphan, written past a newer epoch's fence: the chain's object there
 * has that newer epoch or a higher one. *epoch is 0 when no object within span holds seq.
 * Synchronous on x's loop. Returns 0, or S3C_ES3 / S3C_ENETWORK / S3C_ECORRUPT (an object
 * whose header cannot be read as one) / S3C_EFORMAT (a newer version's object) /
 * S3C_ENOMEM with one line in err. */
int writer_chain_epoch_at(struct xport *x, const struct s3c_config *cfg, uint64_t seq,
                          uint64_t span, uint64_t *epoch, char *err, size_t errlen);

/* Follows the chain from the object ending at from_end (0: from the start), the last
 * EPOCH_START at or before it of epoch start_epoch, as writer_open does: fn sees each
 * object on it in order (its header), until fn returns nonzero (*fn_rc gets it), an
 * object reaches upto, or the chain ends. *end gets the last seq of the last object taken
 * (from_end: none). Synchronous on x's loop. Returns 0, or an error of the requests or of
 * an object the chain cannot be followed past, with one line in err. */
int writer_chain_follow(struct xport *x, const struct s3c_config *cfg, uint64_t from_end,
                        uint64_t start_epoch, uint64_t upto,
                        int (*fn)(void *ctx, const struct obj_header *h), void *ctx, uint64_t *end,
                        int *fn_rc, char *err, size_t errlen);

/* The fence object writer_open placed, byte for byte (so a spool can keep it): writes up
 * to cap bytes into out and returns its size (0 when cap is too small). */
size_t writer_fence_bytes(const struct writer_state *ws, unsigned char *out, size_t cap);

/* ---- settling a 412 ------------------------------------------------------------- */

enum settle_result {
    SETTLE_OURS,       /* the same bytes: our own earlier attempt landed (success) */
    SETTLE_FENCED,     /* a newer epoch holds the key: we are fenced */
    SETTLE_ORPHAN,     /* an older epoch's orphan: replace it with If-Match on etag */
    SETTLE_CHAIN,      /* an older writer, not fenced at that point, continued the chain
                          there (only at our fence: go back and find the end) */
    SETTLE_GONE,       /* the key is empty now: send again */
    SETTLE_RETRY,      /* reading back failed for now: send again after a backoff */
    SETTLE_CORRUPT,    /* what is there is not a valid object: cannot go on */
    SETTLE_UNREADABLE, /* the read-back got an answer that is neither the object nor a
                          retryable failure (a 403, a 400, a TLS failure): nothing is known
                          about the object; the open fails as for any such answer */
};

typedef void (*settle_fn)(void *ctx, enum settle_result r, const char *etag, const char *why);

/* One read-back in progress. The caller owns the memory and keeps it (and what it points
 * to) unchanged until done runs. */
struct settle {
    struct xport *x;
    const char *key;
    const unsigned char *header;  /* the object we sent: its 40-byte header */
    const unsigned char *trailer; /* and its 8-byte trailer */
    uint64_t size;                /* and its size */
    uint64_t epoch;               /* our epoch */
    uint64_t floor_epoch;         /* below it an object is an orphan: the epoch of the last
                                     EPOCH_START before the key (ours, past our fence) */
    bool replay;                  /* re-sending a spooled object of epoch `epoch`, past the
                                     chain's end: another object of that epoch there is an
                                     unacknowledged attempt of that run, an orphan */
    settle_fn done;
    void *ctx;
    /* private */
    int step;
    char etag[256];
};

/* Reads back the object at s->key after a 412 on our If-None-Match PUT of the object
 * described by s, and calls s->done once with the verdict. Returns 0, or a negative
 * S3C_E* when it could not start (done is then never called). */
int settle_start(struct settle *s);
const char *settle_name(enum settle_result r);

/* ---- the manifest and heartbeat writer (docs/stage.md) --------------------------- */

/* Health telemetry, read from any thread (relaxed). */
struct mw_stats {
    _Atomic uint64_t manifest_writes, manifest_failures, manifest_saved;
    _Atomic uint64_t heartbeat_writes, heartbeat_failures;
    _Atomic uint64_t manifest_seq;    /* the W the manifest holds */
    _Atomic uint64_t heartbeat_at_ms; /* when the last heartbeat landed (Unix ms) */
};

/* What the heartbeat says about the stage, asked for at each heartbeat. */
struct mw_snapshot {
    uint64_t durable_seq, last_seq;
    char last_error[256];
};

struct mw;

struct mw_opts {
    struct xport *x;
    const struct s3c_config *cfg; /* must outlive the writer */
    struct writer_state *ws;      /* epoch, writer id, manifest ETag (updated here) */
    void (*snapshot)(void *ctx, struct mw_snapshot *out);
    void (*fenced)(void *ctx, const char *why); /* a newer writer took the manifest */
    void (*error)(void *ctx, const char *channel, const char *why); /* a failed write */
    void *ctx;
};

/* Creates the writer on the transport's loop; nothing is written until W moves or
 * mw_flush() runs. Returns NULL when out of memory. */
struct mw *mw_new(const struct mw_opts *o);
void mw_free(struct mw *m); /* takes its timers off the loop; aborts nothing (NULL ok) */

/* W moved (w_first: the first seq of the object holding w): the manifest is dirty, and is
 * written at most every manifest_interval_ms. */
void mw_note_durable(struct mw *m, uint64_t w, uint64_t w_first);

/* The stage is fenced: stop writing the manifest (the heartbeat says so once more). */
void mw_stop(struct mw *m);

/* Writes the manifest (when dirty) and a heartbeat now, whatever the intervals, running
 * the loop until both landed or timeout_ms passes (failures are retried meanwhile).
 * At open (the new fence in the manifest at once) and, final, at close (the heartbeat
 * then says "closed"). Returns 0 or S3C_ETIMEDOUT. */
int mw_flush(struct mw *m, int timeout_ms, bool final);

const struct mw_stats *mw_stats(const struct mw *m);
/* The last error of each channel ("" when none), copied under the writer's lock. */
void mw_last_errors(struct mw *m, char *manifest, char *heartbeat, size_t cap);

/* Shared by the files of src/writer: a writer id for this process, Unix ms. */
void writer_make_id(char *out, size_t cap);
uint64_t writer_unix_ms(void);
/* The If-Match value for etag, quoted or not as the store wants. */
void writer_if_match(const char *etag, bool unquoted, char *out, size_t cap);

#endif
