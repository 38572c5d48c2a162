/* The commit ring: a bounded ring of variable-length commits from many producer threads
 * (_mp) to one consumer thread (_sc), Disruptor style: claim, fill, publish; acquire as a
 * batch without copying; release strictly in order, handing each released batch to the
 * next stage before its space is reused. The hot paths never allocate, log or make a
 * system call, except one eventfd write when the consumer is asleep.
 *
 * Layout: every commit is contiguous in the buffer (never two spans). A record is the
 * prefix_bytes the caller owns, then the payload, unpadded and unaligned, so records of a
 * batch lie back to back: a consumer can hand on a run of them as one span (only a payload
 * shorter than 24 bytes, or the end of a lap, leaves a gap). The lengths travel beside the
 * records, in the array that publishes them. A record that would cross the end of the
 * buffer starts the next lap instead, leaving the rest of the lap unused, so a commit may
 * take up to twice its size transiently; hence a record may be at most half the ring.
 * Positions and seqs are 64-bit and never wrap in practice; offsets in the buffer are
 * position & (bytes - 1). */
#ifndef S3C_RING_H
#define S3C_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct ring;

struct ring_batch;

/* Called on the consumer thread by ring_release_sc(), once per batch, in seq order,
 * before the batch's space is given back to producers. */
typedef void (*ring_release_fn)(void *ctx, const struct ring_batch *b);

struct ring_opts {
    uint64_t bytes;             /* buffer size: a power of two in [4 KiB, 1 GiB] */
    uint32_t prefix_bytes;      /* caller-owned bytes before each payload: multiple of 8, <= 64 */
    uint32_t max_commit;        /* largest payload accepted; its record must fit half the ring */
    uint32_t max_batches;       /* batches acquired and not yet released, at most; >= 1 */
    ring_release_fn on_release; /* may be NULL */
    void *release_ctx;
};

/* Creates a ring. Returns 0, S3C_EINVAL (options out of range), S3C_ENOMEM or S3C_EIO (no
 * eventfd; errno says why). */
int ring_new(const struct ring_opts *o, struct ring **out);

/* Frees the ring. No thread may be using it. NULL is a no-op. */
void ring_free(struct ring *r);

/* ---- producers (any number of threads) ------------------------------------------- */

struct ring_claim {
    uint64_t seq; /* dense, from 1, in claim order; the consumer sees commits in this order */
    void *prefix; /* prefix_bytes the caller may fill */
    void *data;   /* len bytes the caller must fill */
    uint32_t len;
};

/* Claims room for one commit of len bytes. Blocks (sleeping, not spinning) while the ring
 * is full, for at most timeout_ms (-1 = forever). Returns 0, S3C_ETOOBIG (len above
 * max_commit), S3C_ETIMEDOUT or S3C_ECLOSED. A successful claim must be published. */
int ring_claim_mp(struct ring *r, uint32_t len, int timeout_ms, struct ring_claim *c);

/* As ring_claim_mp, but fails at once with S3C_EAGAIN when the ring has no room. */
int ring_try_claim_mp(struct ring *r, uint32_t len, struct ring_claim *c);

/* Makes a filled claim visible to the consumer (wakes it if it sleeps). */
void ring_publish_mp(struct ring *r, const struct ring_claim *c);

/* ---- the consumer (one thread) ---------------------------------------------------- */

/* What is published and not yet acquired, as seen by the last ring_poll_sc(). */
struct ring_ready {
    uint32_t count; /* commits */
    uint64_t bytes; /* payload bytes */
    bool full;      /* a limit of ring_poll_sc was reached: acquiring now makes a full batch */
};

/* Looks at newly published commits, up to max_count commits and max_bytes payload bytes
 * (a single commit larger than max_bytes still counts as one full batch). Cheap: each
 * commit's avail slot is read once, in order; the records themselves are not touched.
 * Returns what is ready. */
struct ring_ready ring_poll_sc(struct ring *r, uint32_t max_count, uint64_t max_bytes);

struct ring_batch {
    uint64_t first_seq, last_seq; /* inclusive; count = last - first + 1 */
    uint32_t count;
    uint64_t bytes;        /* payload bytes */
    uint64_t start_, end_; /* private: positions */
    uint64_t skip_;        /* private: where it skipped the end of a lap (0: it did not) */
    uint32_t slot_;        /* private */
    bool gap_;             /* private: a short payload left a gap after its record */
};

/* Takes what the last ring_poll_sc() found ready as one batch, without copying. Returns
 * false when nothing is ready or max_batches are already held. */
bool ring_acquire_sc(struct ring *r, struct ring_batch *b);

/* A held batch's records as the buffer holds them, back to back: into iov, one span, or
 * two when the batch crosses the end of the buffer; each span is records only, whole, in
 * seq order. Returns the count, or 0 when a payload shorter than 24 bytes left a gap in
 * between (walk the records with ring_iter then). */
int ring_batch_spans(const struct ring *r, const struct ring_batch *b, struct iovec iov[2]);

struct ring_rec {
    uint64_t seq;
    uint32_t len;
    void *prefix;     /* prefix_bytes, as the producer left them (no alignment) */
    const void *data; /* len bytes, right after the prefix */
};

struct ring_iter {
    uint64_t pos, end, seq; /* private */
};

/* Iterates a held batch's records in seq order: init, then next until it returns false. */
void ring_iter_init(const struct ring_batch *b, struct ring_iter *it);
bool ring_iter_next(const struct ring *r, struct ring_iter *it, struct ring_rec *rec);

/* Releases a held batch. Batches are released in acquisition order: releasing a later
 * one first only marks it; it is handed on (on_release) and its space freed when every
 * earlier batch has been released. */
void ring_release_sc(struct ring *r, const struct ring_batch *b);

/* An eventfd that becomes readable when a producer publishes while the consumer is
 * armed, or on close. The consumer reads it (8 bytes) to reset it. */
int ring_wait_fd(const struct ring *r);

/* Arms the wake-up before the consumer sleeps on ring_wait_fd(): the producer that
 * publishes the want-th commit beyond the last poll (want >= 1), or any producer that
 * finds the ring full (each time it goes to sleep for room), makes the fd readable, as does
 * close. Returns false (not armed) when that many are already claimed, the ring is closed,
 * or a producer sleeps for room that no release has woken since (it needs the consumer to
 * send and release): then poll again instead of sleeping. A consumer with nothing in flight arms with want = 1 (a blocking acquire);
 * one collecting a batch arms with the commits it still wants, so producers make no
 * system call per commit. */
bool ring_arm_sc(struct ring *r, uint32_t want);

/* ---- any thread -------------------------------------------------------------------- */

/* Stops new claims: blocked and later claimants get S3C_ECLOSED; claims already made
 * may still be published and are seen by the consumer. Wakes everyone. Idempotent. */
void ring_close(struct ring *r);

bool ring_is_closed(const struct ring *r);

/* Consumer: true when the ring is closed and every claimed commit has been polled. */
bool ring_drained_sc(const struct ring *r);

/* True while some producer sleeps waiting for room: the consumer should send what it
 * holds rather than wait for a fuller batch. */
bool ring_producers_waiting(const struct ring *r);

/* How many producers are in a blocking claim waiting for room now (a test waits on it). */
uint32_t ring_waiting_count(const struct ring *r);

/* The seq whose publish wakes the consumer, 0 when it is not armed (see ring_arm_sc): what
 * the consumer sleeps for, as a test sees it. */
uint64_t ring_armed_seq(const struct ring *r);

/* The highest seq claimed so far (0 when none). */
uint64_t ring_last_seq(const struct ring *r);

/* Bytes in use (claimed and not yet released). Approximate while producers run. */
uint64_t ring_used_bytes(const struct ring *r);

/* The record size a payload of len bytes takes (for sizing checks). */
uint64_t ring_record_bytes(const struct ring *r, uint32_t len);

/* The most records the ring can hold at once: a caller's per-seq side table of this many
 * slots (indexed by seq modulo it) is never overwritten before the seq is released. */
uint64_t ring_max_records(const struct ring *r);

#endif
