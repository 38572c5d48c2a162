/* The commit ring (see ring.h). Producers claim with one CAS on a packed 64-bit word
 * (position, seq, closed), fill, and publish through a per-seq availability array; the
 * consumer never reads a record before its seq is published there, so stale bytes of an
 * earlier lap can never look like a record. Producers sleep on a condition variable only
 * when the ring is full; the consumer sleeps on an eventfd only when armed. */
#include "pipeline/ring.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "s3commit.h"

/* head = closed:1 | seq:29 | pos:34. The packed fields are the low bits of the full
 * values; the full ones are rebuilt from the consumer's released position and seq, which
 * are never more than a ring (resp. a ring's worth of records) behind. */
#define POS_BITS 34
#define SEQ_BITS 29
#define POS_MASK ((UINT64_C(1) << POS_BITS) - 1)
#define SEQ_MASK ((UINT64_C(1) << SEQ_BITS) - 1)
#define CLOSED_BIT (UINT64_C(1) << 63)
#define HEAD_POS(h) ((h)&POS_MASK)
#define HEAD_SEQ(h) (((h) >> POS_BITS) & SEQ_MASK)

/* A record's payload area is at least this, so the ring holds at most size / (prefix +
 * MIN_PAYLOAD) records and avail stays that small; a shorter payload leaves a gap after
 * it (the only gaps between records besides the end of a lap). */
#define MIN_PAYLOAD 24
#define RING_MIN_BYTES (4u << 10)
#define RING_MAX_BYTES (UINT64_C(1) << 30)

struct slot {
    struct ring_batch b;
    bool released;
};

struct ring {
    /* Written by producers. */
    _Alignas(64) _Atomic uint64_t head;

    /* Written by the consumer on release, read by producers. */
    _Alignas(64) _Atomic uint64_t tail_pos; /* every byte before it is free */
    _Atomic uint64_t tail_seq;              /* every seq <= it is released */
    _Atomic uint32_t waiters;               /* producers sleeping on cv */
    /* Raised (under mu) each time a producer is about to sleep for room: a sleeper the
     * consumer has not answered with a release since makes ring_arm_sc refuse. */
    _Atomic uint64_t sleeps;

    /* Set by the consumer before it sleeps, cleared by the producer that wakes it. */
    _Alignas(64) _Atomic uint64_t armed; /* 0, or the seq whose publish wakes */

    /* Consumer-private. */
    _Alignas(64) uint64_t scan_pos, scan_seq; /* next record to examine */
    uint64_t read_pos, read_seq;              /* next record to acquire */
    struct ring_ready ready;
    bool ready_gap;      /* a record of the ready ones leaves a gap after it (short payload) */
    uint64_t ready_skip; /* where the ready ones skipped the end of a lap (0: they did not) */
    struct slot *slots;
    uint32_t slot_head, slot_tail; /* FIFO of held batches: [tail, head) */
    uint64_t answered;             /* sleeps at the last broadcast of room */

    /* Read-only after ring_new. */
    _Alignas(64) unsigned char *buf;
    uint64_t size, mask;
    /* avail[seq & avail_mask] == AVAIL(seq, len) once published: the consumer learns a
     * record's length here, from a dense array it reads in order, instead of chasing the
     * length words through the buffer (one cache miss after another, each waiting for the
     * last: most of the consumer's time at 128-byte commits). */
    _Atomic uint64_t *avail;
    uint64_t avail_mask;
    unsigned avail_shift; /* log2(slots) - 3 */
    uint32_t prefix, max_commit, max_batches;
    ring_release_fn on_release;
    void *release_ctx;
    int efd;
    pthread_mutex_t mu; /* only for sleeping producers */
    pthread_cond_t cv;
};

/* Consecutive seqs land on different cache lines (8 slots a line; seq s in line group
 * s & 7), so two producers publishing neighbouring seqs do not pass one line back and
 * forth; the consumer reading in order walks 8 sequential streams. */
static inline uint64_t ring_avail_idx(const struct ring *r, uint64_t seq)
{
    return (seq & 7) << r->avail_shift | ((seq >> 3) & (r->avail_mask >> 3));
}

#define AVAIL(seq, len) ((uint64_t)(uint32_t)(seq) << 32 | (uint32_t)(len))

static inline uint64_t ring_rec_bytes(const struct ring *r, uint32_t len)
{
    return r->prefix + (len < MIN_PAYLOAD ? MIN_PAYLOAD : (uint64_t)len);
}

uint64_t ring_record_bytes(const struct ring *r, uint32_t len)
{
    return ring_rec_bytes(r, len);
}

uint64_t ring_max_records(const struct ring *r)
{
    return r->avail_mask + 1;
}

/* The full value whose low `mask` bits are `low`, given a full value `base` known to be
 * at most the answer and less than a modulus behind it. */
static inline uint64_t ring_unpack(uint64_t base, uint64_t low, uint64_t mask)
{
    return base + ((low - base) & mask);
}

static bool ring_is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

int ring_new(const struct ring_opts *o, struct ring **out)
{
    struct ring *r;
    uint64_t min_rec, nav = 1;
    pthread_condattr_t ca;
    int rc = S3C_ENOMEM, e;

    *out = NULL;
    if (!ring_is_pow2(o->bytes) || o->bytes < RING_MIN_BYTES || o->bytes > RING_MAX_BYTES ||
        o->prefix_bytes % 8 || o->prefix_bytes > 64 || o->max_batches < 1 || o->max_batches > 65536)
        return S3C_EINVAL;

    r = aligned_alloc(64, sizeof(*r));
    if (!r)
        return S3C_ENOMEM;
    memset(r, 0, sizeof(*r));
    r->size = o->bytes;
    r->mask = o->bytes - 1;
    r->prefix = o->prefix_bytes;
    r->max_commit = o->max_commit;
    r->max_batches = o->max_batches;
    r->on_release = o->on_release;
    r->release_ctx = o->release_ctx;
    if (ring_rec_bytes(r, o->max_commit) > r->size / 2)
        goto out_free_ring;

    /* Enough availability slots for every record the ring can hold at once. */
    min_rec = r->prefix + MIN_PAYLOAD;
    while (nav < r->size / min_rec + 1)
        nav <<= 1;
    r->avail_mask = nav - 1;
    r->avail_shift = (unsigned)__builtin_ctzll(nav) - 3;

    r->buf = aligned_alloc(4096, r->size);
    r->avail = calloc(nav, sizeof(*r->avail));
    r->slots = calloc(r->max_batches, sizeof(*r->slots));
    if (!r->buf || !r->avail || !r->slots)
        goto out_free_parts;
    memset(r->buf, 0, r->size); /* fault the pages in now, not on the producers' path */
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->efd < 0) {
        rc = S3C_EIO; /* out of descriptors, not memory: errno says which */
        goto out_free_parts;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);

    atomic_init(&r->head, 0);
    atomic_init(&r->tail_pos, 0);
    atomic_init(&r->tail_seq, 0);
    r->scan_seq = r->read_seq = 1;
    *out = r;
    return 0;

out_free_parts:
    e = errno;
    free(r->slots);
    free(r->avail);
    free(r->buf);
    free(r);
    errno = e;
    return rc;
out_free_ring:
    free(r);
    return S3C_EINVAL;
}

void ring_free(struct ring *r)
{
    if (!r)
        return;
    close(r->efd);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->slots);
    free(r->avail);
    free(r->buf);
    free(r);
}

/* One claim attempt loop without sleeping: 0, S3C_EAGAIN (full), S3C_ECLOSED. The tail
 * is read before the head so the head's position is never behind the tail we compare it
 * with; a full ring is only reported when a fresh look at the tail agrees. */
static int ring_claim_now(struct ring *r, uint32_t len, struct ring_claim *c)
{
    uint64_t rec = ring_rec_bytes(r, len);
    uint64_t tail = atomic_load(&r->tail_pos);
    uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);

    for (;;) {
        if (h & CLOSED_BIT)
            return S3C_ECLOSED;
        uint64_t pos = ring_unpack(tail, HEAD_POS(h), POS_MASK);
        uint64_t off = pos & r->mask, pad = 0;
        if (off + rec > r->size)
            pad = r->size - off; /* the record starts the next lap */
        if (pos + pad + rec - tail > r->size) {
            uint64_t t2 = atomic_load(&r->tail_pos);
            if (t2 == tail)
                return S3C_EAGAIN;
            tail = t2;
            h = atomic_load_explicit(&r->head, memory_order_relaxed);
            continue;
        }
        /* A producer descheduled between reading the tail and the head while the ring
         * moved on by 2^34 bytes would rebuild a wrong position: check the tail again. */
        uint64_t t3 = atomic_load(&r->tail_pos);
        if (t3 - tail > POS_MASK - r->size) {
            tail = t3;
            h = atomic_load_explicit(&r->head, memory_order_relaxed);
            continue;
        }
        uint64_t seq_low = (HEAD_SEQ(h) + 1) & SEQ_MASK;
        uint64_t nh = (seq_low << POS_BITS) | ((pos + pad + rec) & POS_MASK);
        /* seq_cst: this CAS is the producer's half of the wake-up handshake (see
         * ring_arm_sc), so it must order before the later look at `armed`. */
        if (!atomic_compare_exchange_weak_explicit(&r->head, &h, nh, memory_order_seq_cst,
                                                   memory_order_relaxed)) {
            /* Lost the race: look at the tail again, then the head, so the position we
             * rebuild is never measured against a tail older than its lap. */
            tail = atomic_load(&r->tail_pos);
            h = atomic_load_explicit(&r->head, memory_order_relaxed);
            continue;
        }
        uint64_t base = atomic_load(&r->tail_seq);
        c->seq = ring_unpack(base, seq_low, SEQ_MASK);
        c->len = len;
        c->prefix = r->buf + ((pos + pad) & r->mask);
        c->data = (unsigned char *)c->prefix + r->prefix;
        return 0;
    }
}

int ring_try_claim_mp(struct ring *r, uint32_t len, struct ring_claim *c)
{
    if (len > r->max_commit)
        return S3C_ETOOBIG;
    return ring_claim_now(r, len, c);
}

int ring_claim_mp(struct ring *r, uint32_t len, int timeout_ms, struct ring_claim *c)
{
    struct timespec deadline;
    int rc;

    if (len > r->max_commit)
        return S3C_ETOOBIG;
    rc = ring_claim_now(r, len, c);
    if (rc != S3C_EAGAIN)
        return rc;
    if (timeout_ms == 0)
        return S3C_ETIMEDOUT;

    if (timeout_ms > 0)
        deadline = s3c__deadline_ts(timeout_ms);
    /* Sleep until a release (or close) broadcasts. Each time, before the re-check: raise
     * waiters and sleeps, then poke the consumer if it is armed (it may be waiting for a
     * fuller batch, and room comes only when it sends one). Both are seq_cst, as are the
     * consumer's tail store and its loads of them after, so either we see the room or it
     * sees us (and broadcasts, or refuses to arm: the poke cannot be lost). */
    pthread_mutex_lock(&r->mu);
    atomic_fetch_add(&r->waiters, 1);
    for (;;) {
        atomic_fetch_add(&r->sleeps, 1);
        if (atomic_load(&r->armed) && atomic_exchange(&r->armed, 0)) {
            uint64_t one = 1;
            ssize_t n = write(r->efd, &one, sizeof(one));
            (void)n;
        }
        rc = ring_claim_now(r, len, c);
        if (rc != S3C_EAGAIN)
            break;
        if (timeout_ms < 0) {
            pthread_cond_wait(&r->cv, &r->mu);
        } else if (pthread_cond_timedwait(&r->cv, &r->mu, &deadline) == ETIMEDOUT) {
            rc = ring_claim_now(r, len, c);
            if (rc == S3C_EAGAIN)
                rc = S3C_ETIMEDOUT;
            break;
        }
    }
    atomic_fetch_sub(&r->waiters, 1);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void ring_publish_mp(struct ring *r, const struct ring_claim *c)
{
    atomic_store_explicit(&r->avail[ring_avail_idx(r, c->seq)], AVAIL(c->seq, c->len),
                          memory_order_release);
    /* The claim's CAS on head was a full barrier; ring_arm_sc looks at head after arming,
     * so a consumer that missed this claim is seen armed here (see ring_arm_sc). */
    uint64_t wake_at = atomic_load(&r->armed);
    if (wake_at && c->seq >= wake_at && atomic_exchange(&r->armed, 0)) {
        uint64_t one = 1;
        ssize_t n = write(r->efd, &one, sizeof(one));
        (void)n; /* EAGAIN means the counter is already non-zero: still readable */
    }
}

/* Whether seq is published; if so, *len is its length. */
static inline bool ring_published(const struct ring *r, uint64_t seq, uint32_t *len)
{
    uint64_t e = atomic_load_explicit(&r->avail[ring_avail_idx(r, seq)], memory_order_acquire);
    *len = (uint32_t)e;
    return e >> 32 == (uint32_t)seq;
}

/* Where the record of len bytes claimed at pos starts: at pos, or at the start of the next
 * lap when it would cross the end of the buffer (the producer's claim decided the same way;
 * the rest of the lap is left unused). */
static inline uint64_t ring_rec_start(const struct ring *r, uint64_t pos, uint32_t len)
{
    uint64_t off = pos & r->mask;
    return off + ring_rec_bytes(r, len) > r->size ? pos + r->size - off : pos;
}

struct ring_ready ring_poll_sc(struct ring *r, uint32_t max_count, uint64_t max_bytes)
{
    struct ring_ready *rd = &r->ready;
    uint32_t len;

    while (!rd->full) {
        if (rd->count >= max_count) {
            rd->full = true;
            break;
        }
        if (!ring_published(r, r->scan_seq, &len))
            break;
        if (rd->count > 0 && rd->bytes + len > max_bytes) {
            rd->full = true;
            break;
        }
        uint64_t start = ring_rec_start(r, r->scan_pos, len);
        if (start != r->scan_pos)
            r->ready_skip = r->scan_pos;
        r->ready_gap |= len < MIN_PAYLOAD;
        r->scan_pos = start + ring_rec_bytes(r, len);
        r->scan_seq++;
        rd->count++;
        rd->bytes += len;
        if (rd->bytes >= max_bytes)
            rd->full = true;
    }
    return *rd;
}

bool ring_acquire_sc(struct ring *r, struct ring_batch *b)
{
    if (r->ready.count == 0 || r->slot_head - r->slot_tail >= r->max_batches)
        return false;
    uint32_t idx = r->slot_head % r->max_batches;
    struct slot *s = &r->slots[idx];

    s->b.first_seq = r->read_seq;
    s->b.last_seq = r->scan_seq - 1;
    s->b.count = r->ready.count;
    s->b.bytes = r->ready.bytes;
    s->b.start_ = r->read_pos;
    s->b.end_ = r->scan_pos;
    s->b.slot_ = idx;
    s->released = false;
    r->slot_head++;
    r->read_pos = r->scan_pos;
    r->read_seq = r->scan_seq;
    s->b.gap_ = r->ready_gap;
    s->b.skip_ = r->ready_skip;
    memset(&r->ready, 0, sizeof(r->ready));
    r->ready_gap = false;
    r->ready_skip = 0;
    *b = s->b;
    return true;
}

int ring_batch_spans(const struct ring *r, const struct ring_batch *b, struct iovec iov[2])
{
    if (b->gap_)
        return 0;
    /* Positions are contiguous but the buffer is not: split at the lap boundary, leaving
     * out the end of the lap a record skipped. */
    uint64_t lap_end = (b->start_ | r->mask) + 1, n = 0;
    if (b->end_ <= lap_end) {
        iov[0] = (struct iovec){r->buf + (b->start_ & r->mask), b->end_ - b->start_};
        return 1;
    }
    uint64_t cut = b->skip_ ? b->skip_ : lap_end;
    if (cut > b->start_)
        iov[n++] = (struct iovec){r->buf + (b->start_ & r->mask), cut - b->start_};
    iov[n++] = (struct iovec){r->buf, b->end_ - lap_end};
    return (int)n;
}

void ring_iter_init(const struct ring_batch *b, struct ring_iter *it)
{
    it->pos = b->start_;
    it->end = b->end_;
    it->seq = b->first_seq;
}

bool ring_iter_next(const struct ring *r, struct ring_iter *it, struct ring_rec *rec)
{
    if (it->pos >= it->end)
        return false;
    /* Held records are published, and their avail slots are not reused before release. */
    uint32_t len = (uint32_t)atomic_load_explicit(&r->avail[ring_avail_idx(r, it->seq)],
                                                  memory_order_relaxed);
    uint64_t pos = ring_rec_start(r, it->pos, len);
    rec->seq = it->seq++;
    rec->len = len;
    rec->prefix = r->buf + (pos & r->mask);
    rec->data = (unsigned char *)rec->prefix + r->prefix;
    it->pos = pos + ring_rec_bytes(r, len);
    return true;
}

void ring_release_sc(struct ring *r, const struct ring_batch *b)
{
    bool moved = false;

    r->slots[b->slot_].released = true;
    while (r->slot_tail != r->slot_head) {
        struct slot *s = &r->slots[r->slot_tail % r->max_batches];
        if (!s->released)
            break;
        if (r->on_release)
            r->on_release(r->release_ctx, &s->b);
        atomic_store(&r->tail_seq, s->b.last_seq);
        atomic_store(&r->tail_pos, s->b.end_);
        r->slot_tail++;
        moved = true;
    }
    /* Wake the producers sleeping for room, unless every one of them was already woken
     * by an earlier release (they will find this room too): a consumer that releases
     * small batches quickly does not broadcast for each. */
    if (moved && atomic_load(&r->waiters) > 0 && atomic_load(&r->sleeps) != r->answered) {
        pthread_mutex_lock(&r->mu);
        r->answered = atomic_load(&r->sleeps);
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
}

int ring_wait_fd(const struct ring *r)
{
    return r->efd;
}

bool ring_arm_sc(struct ring *r, uint32_t want)
{
    uint64_t wake_at = r->scan_seq + (want ? want - 1 : 0);

    /* Dekker with the producers: arm, then look at head (both seq_cst). A claim of a seq
     * >= wake_at that is not in head yet is ordered after our arming, so its producer,
     * looking at `armed` after publishing, sees us and wakes us. One already in head may
     * have looked before we armed: then do not sleep; its publish is moments away. */
    atomic_store(&r->armed, wake_at);
    uint64_t h = atomic_load(&r->head);
    uint64_t claimed = ring_unpack(r->scan_seq - 1, HEAD_SEQ(h), SEQ_MASK);
    /* A producer sleeping for room that no release has answered needs the consumer to
     * send what it holds; one already woken by a release needs nothing more from it, and
     * the commits it is about to publish fill the batch the consumer sleeps for. */
    bool unanswered = atomic_load(&r->waiters) > 0 && atomic_load(&r->sleeps) != r->answered;
    if ((h & CLOSED_BIT) || claimed >= wake_at || unanswered) {
        atomic_store(&r->armed, 0);
        return false;
    }
    return true;
}

void ring_close(struct ring *r)
{
    uint64_t one = 1;
    atomic_fetch_or(&r->head, CLOSED_BIT);
    pthread_mutex_lock(&r->mu);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    ssize_t n = write(r->efd, &one, sizeof(one));
    (void)n;
}

bool ring_is_closed(const struct ring *r)
{
    return atomic_load(&((struct ring *)r)->head) & CLOSED_BIT;
}

bool ring_producers_waiting(const struct ring *r)
{
    return ring_waiting_count(r) > 0;
}

uint32_t ring_waiting_count(const struct ring *r)
{
    return atomic_load_explicit(&((struct ring *)r)->waiters, memory_order_relaxed);
}

uint64_t ring_armed_seq(const struct ring *r)
{
    return atomic_load(&((struct ring *)r)->armed);
}

uint64_t ring_last_seq(const struct ring *r)
{
    struct ring *m = (struct ring *)r;
    uint64_t base = atomic_load(&m->tail_seq);
    uint64_t h = atomic_load(&m->head);
    return ring_unpack(base, HEAD_SEQ(h), SEQ_MASK);
}

bool ring_drained_sc(const struct ring *r)
{
    struct ring *m = (struct ring *)r;
    uint64_t h = atomic_load(&m->head);
    if (!(h & CLOSED_BIT))
        return false;
    return ring_unpack(r->read_seq - 1, HEAD_SEQ(h), SEQ_MASK) == r->read_seq - 1;
}

uint64_t ring_used_bytes(const struct ring *r)
{
    struct ring *m = (struct ring *)r;
    uint64_t tail = atomic_load(&m->tail_pos);
    uint64_t h = atomic_load(&m->head);
    return ring_unpack(tail, HEAD_POS(h), POS_MASK) - tail;
}
