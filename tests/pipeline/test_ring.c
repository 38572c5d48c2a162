/* The commit ring's rules, each with a test that fails when the rule breaks: publish order
 * and seq density under 4 producers, full-ring blocking and wake-up, out-of-order release
 * held back, wrap-around with random sizes (and a batch's records as spans), oversize
 * refusal, close while blocked, and a stress run checking every byte (also run under TSan). */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "pipeline/ring.h"
#include "s3commit.h"
#include "test.h"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct ring *mk(uint64_t bytes, uint32_t prefix, uint32_t max_commit, ring_release_fn fn,
                       void *ctx)
{
    struct ring_opts o = {.bytes = bytes,
                          .prefix_bytes = prefix,
                          .max_commit = max_commit,
                          .max_batches = 8,
                          .on_release = fn,
                          .release_ctx = ctx};
    struct ring *r;
    ASSERT_EQ(ring_new(&o, &r), 0);
    return r;
}

/* Fill pattern: byte i of the commit with seq s. */
static inline unsigned char pat(uint64_t s, uint32_t i)
{
    return (unsigned char)(s * 7 + i * 13 + (s >> 8));
}

static uint64_t put(struct ring *r, const void *data, uint32_t len)
{
    struct ring_claim c;
    ASSERT_EQ(ring_claim_mp(r, len, 1000, &c), 0);
    memcpy(c.data, data, len);
    ring_publish_mp(r, &c);
    return c.seq;
}

/* Acquires everything ready as one batch; returns false when nothing was. */
static bool take(struct ring *r, struct ring_batch *b)
{
    ring_poll_sc(r, UINT32_MAX, UINT64_MAX);
    return ring_acquire_sc(r, b);
}

/* ---- publish order and seq density under 4 producers ------------------------------- */

#define NPROD 4

struct prod_arg {
    struct ring *r;
    uint32_t id;
    uint32_t n;
    uint32_t max_len;
};

/* A producer's commit: u32 producer id, u32 its own counter, u64 the seq it was given,
 * then a pattern derived from the seq. */
static void *producer(void *p)
{
    struct prod_arg *a = p;
    uint64_t rnd = a->id * 2654435761u + 1;
    for (uint32_t i = 0; i < a->n; i++) {
        rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t len = 16 + (uint32_t)((rnd >> 33) % (a->max_len - 15));
        struct ring_claim c;
        ASSERT_EQ(ring_claim_mp(a->r, len, -1, &c), 0);
        unsigned char *d = c.data;
        memcpy(d, &a->id, 4);
        memcpy(d + 4, &i, 4);
        memcpy(d + 8, &c.seq, 8);
        for (uint32_t k = 16; k < len; k++)
            d[k] = pat(c.seq, k);
        ring_publish_mp(a->r, &c);
    }
    return NULL;
}

struct cons_result {
    uint64_t commits, bytes, batches;
};

/* Consumes until total commits arrive, checking seq density, each producer's own order,
 * the seq each producer was told, and every byte. Sleeps on the ring's eventfd. */
static struct cons_result consume(struct ring *r, uint64_t total, uint32_t max_count,
                                  uint64_t max_bytes, int hold)
{
    struct cons_result res = {0};
    uint32_t next_i[NPROD] = {0};
    uint64_t expect = 1;
    struct ring_batch held[4];
    int nheld = 0;

    while (res.commits < total) {
        ring_poll_sc(r, max_count, max_bytes);
        struct ring_batch b;
        if (!ring_acquire_sc(r, &b)) {
            if (nheld > 0) { /* nothing new: give back what we hold */
                for (int k = 0; k < nheld; k++)
                    ring_release_sc(r, &held[k]);
                nheld = 0;
                continue;
            }
            if (ring_arm_sc(r, 1)) {
                struct pollfd pfd = {.fd = ring_wait_fd(r), .events = POLLIN};
                ASSERT_GT(poll(&pfd, 1, 10000), 0); /* a publish must wake us */
                uint64_t v;
                ASSERT_EQ(read(pfd.fd, &v, 8), 8);
            }
            continue;
        }
        ASSERT_UEQ(b.first_seq, expect);
        ASSERT_UEQ(b.last_seq - b.first_seq + 1, b.count);
        ASSERT_LE(b.count, max_count);
        struct ring_iter it;
        struct ring_rec rec;
        uint64_t bytes = 0;
        ring_iter_init(&b, &it);
        while (ring_iter_next(r, &it, &rec)) {
            uint32_t id, i;
            uint64_t seq;
            const unsigned char *d = rec.data;
            ASSERT_UEQ(rec.seq, expect);
            memcpy(&id, d, 4);
            memcpy(&i, d + 4, 4);
            memcpy(&seq, d + 8, 8);
            ASSERT_LT(id, NPROD);
            ASSERT_EQ(i, next_i[id]); /* each producer's commits in its own order */
            next_i[id]++;
            ASSERT_UEQ(seq, rec.seq); /* the seq the producer was told */
            for (uint32_t k = 16; k < rec.len; k++)
                if (d[k] != pat(rec.seq, k))
                    TEST_FAIL_("seq %llu byte %u corrupt", (unsigned long long)rec.seq, k);
            bytes += rec.len;
            expect++;
        }
        ASSERT_UEQ(expect, b.last_seq + 1);
        ASSERT_UEQ(bytes, b.bytes);
        if (b.count > 1)
            ASSERT_LE(b.bytes, max_bytes);
        res.commits += b.count;
        res.bytes += b.bytes;
        res.batches++;
        /* Hold up to `hold` batches, then release them in a scrambled order. */
        held[nheld++] = b;
        if (nheld > hold) {
            for (int k = nheld - 1; k >= 0; k--)
                ring_release_sc(r, &held[k]);
            nheld = 0;
        }
    }
    for (int k = 0; k < nheld; k++)
        ring_release_sc(r, &held[k]);
    return res;
}

static void run_producers(struct ring *r, uint32_t per, uint32_t max_len, uint32_t max_count,
                          uint64_t max_bytes, int hold)
{
    pthread_t t[NPROD];
    struct prod_arg a[NPROD];
    for (uint32_t i = 0; i < NPROD; i++) {
        a[i] = (struct prod_arg){r, i, per, max_len};
        pthread_create(&t[i], NULL, producer, &a[i]);
    }
    struct cons_result res = consume(r, (uint64_t)per * NPROD, max_count, max_bytes, hold);
    for (int i = 0; i < NPROD; i++)
        pthread_join(t[i], NULL);
    ASSERT_UEQ(res.commits, (uint64_t)per * NPROD);
    ASSERT_UEQ(ring_last_seq(r), (uint64_t)per * NPROD);
    ASSERT_UEQ(ring_used_bytes(r), 0);
}

static void four_producers_order_and_density(void)
{
    struct ring *r = mk(64 << 10, 0, 512, NULL, NULL);
    run_producers(r, 20000, 300, 64, 8192, 3);
    ring_free(r);
}

/* ---- stress: millions of commits, every byte checked --------------------------------- */

static void stress_millions(void)
{
    const char *env = getenv("S3C_STRESS_COMMITS");
    uint32_t total = env ? (uint32_t)atoi(env) : 2000000;
    struct ring *r = mk(1 << 20, 16, 1024, NULL, NULL);
    uint64_t t0 = now_ms();
    run_producers(r, total / NPROD, 200, 1000, 1 << 20, 2);
    fprintf(stderr, "   %u commits in %llu ms\n", total, (unsigned long long)(now_ms() - t0));
    ring_free(r);
}

/* ---- full ring blocks, release wakes ----------------------------------------------- */

struct blocked_arg {
    struct ring *r;
    uint32_t len;
    int timeout_ms;
    _Atomic int done;
    int rc;
    uint64_t seq;
};

static void *blocked_claimer(void *p)
{
    struct blocked_arg *a = p;
    struct ring_claim c;
    a->rc = ring_claim_mp(a->r, a->len, a->timeout_ms, &c);
    if (a->rc == 0) {
        memset(c.data, 0xAB, a->len);
        ring_publish_mp(a->r, &c);
        a->seq = c.seq;
    }
    atomic_store(&a->done, 1);
    return NULL;
}

static void full_ring_blocks_until_release(void)
{
    struct ring *r = mk(4096, 0, 1000, NULL, NULL);
    unsigned char buf[1000];
    struct ring_claim c;
    memset(buf, 1, sizeof(buf));
    uint32_t n = 0;
    while (ring_try_claim_mp(r, 500, &c) == 0) {
        memcpy(c.data, buf, 500);
        ring_publish_mp(r, &c);
        n++;
    }
    ASSERT_EQ(n, 4096 / 512); /* 8 + 504 bytes per record */
    ASSERT_EQ(ring_try_claim_mp(r, 500, &c), S3C_EAGAIN);

    /* A timed claim gives up after its timeout, not before. */
    uint64_t t0 = now_ms();
    ASSERT_EQ(ring_claim_mp(r, 500, 150, &c), S3C_ETIMEDOUT);
    ASSERT_GE(now_ms() - t0, 140);

    /* An untimed claim sleeps until a release frees room. */
    struct blocked_arg a = {.r = r, .len = 500, .timeout_ms = -1};
    pthread_t t;
    pthread_create(&t, NULL, blocked_claimer, &a);
    ASSERT_WITHIN(5000, ring_waiting_count(r) == 1);
    ASSERT_EQ(atomic_load(&a.done), 0);
    struct ring_batch b;
    ASSERT(take(r, &b));
    ASSERT_EQ(b.count, n);
    ASSERT_EQ(atomic_load(&a.done), 0); /* acquiring alone frees nothing */
    ring_release_sc(r, &b);
    pthread_join(t, NULL);
    ASSERT_EQ(a.rc, 0);
    ASSERT_UEQ(a.seq, n + 1);
    ring_free(r);
}

/* ---- out-of-order release is held back ------------------------------------------- */

struct release_log {
    uint64_t first[8];
    int n;
};

static void log_release(void *ctx, const struct ring_batch *b)
{
    struct release_log *l = ctx;
    l->first[l->n++] = b->first_seq;
}

static void out_of_order_release_held(void)
{
    struct release_log log = {0};
    struct ring *r = mk(4096, 0, 1200, log_release, &log);
    unsigned char buf[1200] = {0};
    struct ring_batch a, b, c;
    struct ring_claim cl;

    put(r, buf, 1200);
    ASSERT(take(r, &a));
    put(r, buf, 1200);
    ASSERT(take(r, &b));
    put(r, buf, 1200);
    ASSERT(take(r, &c));
    uint64_t used = ring_used_bytes(r);
    ASSERT_EQ(ring_try_claim_mp(r, 1200, &cl), S3C_EAGAIN);

    ring_release_sc(r, &c); /* later batches first: nothing moves */
    ring_release_sc(r, &b);
    ASSERT_EQ(log.n, 0);
    ASSERT_UEQ(ring_used_bytes(r), used);
    ASSERT_EQ(ring_try_claim_mp(r, 1200, &cl), S3C_EAGAIN);

    ring_release_sc(r, &a); /* the earliest: all three go, in order */
    ASSERT_EQ(log.n, 3);
    ASSERT_UEQ(log.first[0], 1);
    ASSERT_UEQ(log.first[1], 2);
    ASSERT_UEQ(log.first[2], 3);
    ASSERT_UEQ(ring_used_bytes(r), 0);
    ring_free(r);
}

/* ---- wrap-around with random sizes ------------------------------------------------ */

/* ring_batch_spans: the records of a held batch (prefix 16) lie back to back in its spans,
 * whole and in order, and there are no spans exactly when a short payload left a gap.
 * Counts the batches by their number of spans in seen[0..2]. */
static void check_spans(struct ring *r, const struct ring_batch *b, int seen[3])
{
    struct iovec iov[2];
    int n = ring_batch_spans(r, b, iov), vi = 0;
    size_t off = 0;
    bool short_one = false;
    struct ring_iter it;
    struct ring_rec rec;
    ASSERT(n >= 0 && n <= 2);
    ring_iter_init(b, &it);
    while (ring_iter_next(r, &it, &rec)) {
        short_one |= rec.len < 24;
        if (n == 0)
            continue;
        if (off == iov[vi].iov_len) { /* the next span starts with this record */
            vi++;
            off = 0;
        }
        ASSERT(vi < n);
        ASSERT((unsigned char *)iov[vi].iov_base + off == (unsigned char *)rec.prefix);
        off += 16 + rec.len;
        ASSERT(off <= iov[vi].iov_len);
    }
    if (n > 0) {
        ASSERT_EQ(vi, n - 1);
        ASSERT_UEQ(off, iov[vi].iov_len);
    }
    ASSERT_EQ(n == 0, short_one);
    seen[n]++;
}

static void wraparound_random_sizes(void)
{
    struct ring *r = mk(8192, 16, 2000, NULL, NULL);
    uint64_t rnd = 42, seq = 0, next_check = 1, laps_bytes = 0;
    unsigned char buf[2000];
    int seen[3] = {0, 0, 0};

    for (int round = 0; round < 20000; round++) {
        rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t len = (uint32_t)((rnd >> 33) % 2001);
        struct ring_claim c;
        int rc = ring_try_claim_mp(r, len, &c);
        if (rc == S3C_EAGAIN) {
            struct ring_batch b;
            ASSERT(take(r, &b));
            check_spans(r, &b, seen);
            struct ring_iter it;
            struct ring_rec rec;
            ring_iter_init(&b, &it);
            while (ring_iter_next(r, &it, &rec)) {
                ASSERT_UEQ(rec.seq, next_check);
                uint32_t plen;
                memcpy(&plen, rec.prefix, 4);
                ASSERT_EQ(plen, rec.len); /* the prefix survives */
                for (uint32_t k = 0; k < rec.len; k++)
                    ASSERT_EQ(((const unsigned char *)rec.data)[k], pat(rec.seq, k));
                next_check++;
            }
            ring_release_sc(r, &b);
            continue;
        }
        ASSERT_EQ(rc, 0);
        ASSERT_UEQ(c.seq, ++seq);
        /* Contiguous: the whole payload lies inside the buffer, one span. */
        for (uint32_t k = 0; k < len; k++)
            buf[k] = pat(c.seq, k);
        memcpy(c.data, buf, len);
        memcpy(c.prefix, &len, 4);
        ring_publish_mp(r, &c);
        laps_bytes += ring_record_bytes(r, len);
    }
    ASSERT_GT(laps_bytes, 8192 * 100); /* it really wrapped, many times */
    ASSERT_GT(next_check, 1000);
    for (int i = 0; i < 3; i++) /* gaps, one span, split at the end of the buffer: all met */
        ASSERT_GT(seen[i], 10);
    ring_free(r);
}

/* ---- oversize refusal ---------------------------------------------------------------- */

static void oversize_refused(void)
{
    struct ring *r = mk(4096, 0, 1000, NULL, NULL);
    struct ring_claim c;
    ASSERT_EQ(ring_try_claim_mp(r, 1001, &c), S3C_ETOOBIG);
    ASSERT_EQ(ring_claim_mp(r, 5000, -1, &c), S3C_ETOOBIG);
    ASSERT_EQ(ring_try_claim_mp(r, 1000, &c), 0);
    ring_publish_mp(r, &c);
    ring_free(r);

    /* A max commit whose record cannot fit half the ring is refused at creation. */
    struct ring_opts o = {.bytes = 4096, .max_commit = 2100, .max_batches = 1};
    struct ring *bad = NULL;
    ASSERT_EQ(ring_new(&o, &bad), S3C_EINVAL);
    ASSERT(bad == NULL);
    o.max_commit = 100;
    o.bytes = 5000; /* not a power of two */
    ASSERT_EQ(ring_new(&o, &bad), S3C_EINVAL);
}

/* ---- close wakes everyone; nothing published is lost ------------------------------- */

static void close_while_blocked(void)
{
    struct ring *r = mk(4096, 0, 1000, NULL, NULL);
    unsigned char buf[500] = {7};
    uint32_t n = 0;
    struct ring_claim c;
    while (ring_try_claim_mp(r, 500, &c) == 0) {
        memcpy(c.data, buf, 500);
        ring_publish_mp(r, &c);
        n++;
    }
    struct blocked_arg a[2] = {{.r = r, .len = 500, .timeout_ms = -1},
                               {.r = r, .len = 500, .timeout_ms = 60000}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, blocked_claimer, &a[i]);
    ASSERT_WITHIN(5000, ring_waiting_count(r) == 2);
    ASSERT_EQ(atomic_load(&a[0].done) + atomic_load(&a[1].done), 0);

    /* While producers wait for room the consumer must not sleep: it should send. */
    ring_poll_sc(r, UINT32_MAX, UINT64_MAX);
    ASSERT(ring_producers_waiting(r));
    ASSERT(!ring_arm_sc(r, 1));
    ring_close(r);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        ASSERT_EQ(a[i].rc, S3C_ECLOSED);
    }
    ASSERT(!ring_producers_waiting(r));
    struct pollfd pfd = {.fd = ring_wait_fd(r), .events = POLLIN};
    ASSERT_EQ(poll(&pfd, 1, 0), 1); /* close makes the fd readable */
    ASSERT(!ring_arm_sc(r, 1));     /* closed: never sleep again */
    ASSERT_EQ(ring_try_claim_mp(r, 10, &c), S3C_ECLOSED);
    ASSERT(ring_is_closed(r));

    /* Everything published before the close is still delivered. */
    ASSERT(!ring_drained_sc(r));
    struct ring_batch b;
    ASSERT(take(r, &b));
    ASSERT_EQ(b.count, n);
    ASSERT(ring_drained_sc(r));
    ring_release_sc(r, &b);
    ring_free(r);
}

/* An armed, sleeping consumer is woken by close, and by the want-th publish only. */
static void arm_wakes(void)
{
    struct ring *r = mk(4096, 0, 100, NULL, NULL);
    struct pollfd pfd = {.fd = ring_wait_fd(r), .events = POLLIN};
    unsigned char buf[10] = {0};
    uint64_t v;
    ASSERT(ring_arm_sc(r, 3));
    put(r, buf, 10);
    put(r, buf, 10);
    ASSERT_EQ(poll(&pfd, 1, 0), 0); /* two of the three wanted: no system call yet */
    put(r, buf, 10);
    ASSERT_EQ(poll(&pfd, 1, 0), 1);
    ASSERT_EQ(read(pfd.fd, &v, 8), 8);
    ASSERT(!ring_arm_sc(r, 1)); /* published beyond the last poll: do not sleep */
    ring_poll_sc(r, UINT32_MAX, UINT64_MAX);
    ASSERT(ring_arm_sc(r, 1));
    ASSERT_EQ(poll(&pfd, 1, 0), 0);
    ring_close(r);
    ASSERT_EQ(poll(&pfd, 1, 0), 1);
    ring_free(r);
}

/* A producer sleeping for room keeps the consumer awake until a release answers it; a
 * release too small for it wakes it, and when it goes back to sleep it pokes the consumer
 * (or stops it from arming) again: the consumer never sleeps on a producer it must free. */
static void resleeping_producer_wakes_consumer(void)
{
    struct ring *r = mk(4096, 0, 1000, NULL, NULL);
    struct pollfd pfd = {.fd = ring_wait_fd(r), .events = POLLIN};
    unsigned char buf[24] = {3};
    struct ring_claim c;
    uint64_t v;
    while (ring_try_claim_mp(r, 24, &c) == 0) { /* full of 24-byte records */
        memcpy(c.data, buf, 24);
        ring_publish_mp(r, &c);
    }
    struct blocked_arg a = {.r = r, .len = 1000, .timeout_ms = -1};
    pthread_t t;
    pthread_create(&t, NULL, blocked_claimer, &a);
    ASSERT_WITHIN(5000, ring_waiting_count(r) == 1);

    struct ring_batch one, rest;
    ring_poll_sc(r, 1, UINT64_MAX);
    ASSERT(ring_acquire_sc(r, &one));
    ASSERT(take(r, &rest));
    ASSERT(!ring_arm_sc(r, 1)); /* a sleeper no release has answered: send, do not sleep */

    /* 24 bytes back: not enough for 1000. The producer wakes, finds no room, sleeps again. */
    ring_release_sc(r, &one);
    for (int i = 0; i < 50; i++) {
        if (ring_arm_sc(r, 1)) {
            /* Armed while it was still on its way back to sleep: it must poke us. */
            ASSERT_EQ(poll(&pfd, 1, 5000), 1);
            ASSERT_EQ(read(pfd.fd, &v, 8), 8);
        }
        ASSERT_EQ(atomic_load(&a.done), 0);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    ASSERT(!ring_arm_sc(r, 1)); /* back asleep, unanswered again */
    ring_release_sc(r, &rest);
    ASSERT_WITHIN(5000, atomic_load(&a.done) == 1);
    pthread_join(t, NULL);
    ASSERT_EQ(a.rc, 0);
    ring_close(r);
    ring_free(r);
}

/* A claim made before close and published after it is still seen: drained waits for it. */
static void close_waits_for_claimed(void)
{
    struct ring *r = mk(4096, 0, 1000, NULL, NULL);
    struct ring_claim c;
    ASSERT_EQ(ring_try_claim_mp(r, 10, &c), 0);
    ring_close(r);
    struct ring_batch b;
    ASSERT(!take(r, &b));
    ASSERT(!ring_drained_sc(r)); /* seq 1 is claimed, not yet published */
    memset(c.data, 1, 10);
    ring_publish_mp(r, &c);
    ASSERT(take(r, &b));
    ASSERT_UEQ(b.first_seq, 1);
    ASSERT(ring_drained_sc(r));
    ring_release_sc(r, &b);
    ring_free(r);
}

/* ---- batch limits: count and bytes ------------------------------------------------- */

static void poll_limits(void)
{
    struct ring *r = mk(1 << 16, 0, 4000, NULL, NULL);
    unsigned char buf[4000] = {0};
    for (int i = 0; i < 10; i++)
        put(r, buf, 100);
    struct ring_ready rd = ring_poll_sc(r, 4, UINT64_MAX);
    ASSERT_EQ(rd.count, 4);
    ASSERT(rd.full);
    struct ring_batch b;
    ASSERT(ring_acquire_sc(r, &b));
    ASSERT_EQ(b.count, 4);
    rd = ring_poll_sc(r, 100, 250); /* bytes: two of 100 fit in 250, a third does not */
    ASSERT_EQ(rd.count, 2);
    ASSERT_EQ(rd.bytes, 200);
    ASSERT(rd.full);
    ASSERT(ring_acquire_sc(r, &b));
    rd = ring_poll_sc(r, 100, 100000); /* the rest, not full: a trickle waits for time */
    ASSERT_EQ(rd.count, 4);
    ASSERT(!rd.full);
    ASSERT(ring_acquire_sc(r, &b));
    put(r, buf, 4000); /* one commit above the byte limit is a batch on its own */
    rd = ring_poll_sc(r, 100, 1000);
    ASSERT_EQ(rd.count, 1);
    ASSERT(rd.full);
    ring_free(r);
}

int main(void)
{
    RUN(oversize_refused);
    RUN(poll_limits);
    RUN(out_of_order_release_held);
    RUN(wraparound_random_sizes);
    RUN(full_ring_blocks_until_release);
    RUN(close_while_blocked);
    RUN(close_waits_for_claimed);
    RUN(arm_wakes);
    RUN(resleeping_producer_wakes_consumer);
    RUN(four_producers_order_and_density);
    RUN(stress_millions);
    return 0;
}
