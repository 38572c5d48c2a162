/* GET bodies against s3commit-mock on 127.0.0.1: xport_get_fed shows each piece of a body
 * in order and in place, the body buffer is sized from Content-Length and can be taken
 * without a copy, and a buffer given back is the one the next GET receives into (as many
 * as the caller asks the transport to keep). */
#include "config/config.h"
#include "support/mockstats.h"
#include "support/xport_loop.h"

/* What xport_get_fed showed, and the buffer taken from its answer. */
struct fed {
    int calls, pieces;
    uint64_t next; /* the offset the next piece must start at */
    bool out_of_order, piece_differs;
    enum xport_class cls;
    size_t body_len;
    unsigned char *taken;
    size_t cap;
};

static void fed_data(void *ctx, const unsigned char *body, uint64_t off, const unsigned char *piece,
                     size_t n)
{
    struct fed *f = ctx;
    f->pieces++;
    if (off != f->next)
        f->out_of_order = true;
    if (memcmp(body + off, piece, n) != 0)
        f->piece_differs = true;
    f->next = off + n;
}

static void fed_done(void *ctx, const struct xport_result *r)
{
    struct fed *f = ctx;
    f->calls++;
    f->cls = r->cls;
    f->body_len = r->body_len;
    f->taken = xport_take_body(r, &f->cap);
}

/* Runs requests until none is in flight; done must have run exactly once. */
#define DRAIN_ONE(x, calls)                                                                        \
    do {                                                                                           \
        ASSERT_EQ(xport_drain((x), 15000), 0);                                                     \
        ASSERT_EQ((calls), 1);                                                                     \
    } while (0)

static void put_done(void *ctx, const struct xport_result *r)
{
    *(enum xport_class *)ctx = r->cls;
}

/* A mock and a transport of two connections on it, bucket "commits". */
static struct xport *mock_xport(struct mockproc *m)
{
    ASSERT_EQ(test_mock_start(m, NULL), 0);
    struct s3c_config c;
    cfg_defaults(&c);
    snprintf(c.s3.endpoint, sizeof(c.s3.endpoint), "%s", m->endpoint);
    snprintf(c.s3.bucket, sizeof(c.s3.bucket), "commits");
    c.persistence.target_pool_size = 2;
    char err[512];
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    if (!x)
        TEST_FAIL_("xport_new: %s", err);
    return x;
}

static void fed_get_and_buffers(void)
{
    struct mockproc m;
    struct xport *x = mock_xport(&m);

    static unsigned char big[1536 * 1024 + 7];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(i * 2654435761u >> 11);
    struct iovec iov = {big, sizeof(big)};
    const char *keys[] = {"fed/a", "fed/b"};
    for (int i = 0; i < 2; i++) {
        enum xport_class cls = XPORT_FATAL;
        struct xport_put p = {.key = keys[i], .iov = &iov, .iovcnt = 1};
        ASSERT_EQ(xport_put(x, &p, put_done, &cls), 0);
        ASSERT_EQ(xport_drain(x, 15000), 0);
        ASSERT_EQ(cls, XPORT_OK);
    }

    struct fed f = {0};
    ASSERT_EQ(xport_get_fed(x, "fed/a", fed_data, &f, fed_done, &f), 0);
    DRAIN_ONE(x, f.calls);
    ASSERT_EQ(f.cls, XPORT_OK);
    ASSERT(f.pieces > 1);
    ASSERT(!f.out_of_order);
    ASSERT(!f.piece_differs);
    ASSERT_UEQ(f.next, sizeof(big));
    ASSERT_EQ(f.body_len, sizeof(big));
    ASSERT(f.taken != NULL);
    /* Sized from Content-Length (and the NUL) once; a body of 1 MiB or more in whole
     * 2 MiB huge pages, aligned to one. */
    ASSERT_EQ(f.cap, (sizeof(big) + 1 + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1));
    ASSERT_EQ((uintptr_t)f.taken % (2u << 20), 0);
    ASSERT_MEM_EQ(f.taken, big, sizeof(big));
    unsigned char *first = f.taken;
    xport_give_body(x, first, f.cap);

    memset(&f, 0, sizeof(f));
    ASSERT_EQ(xport_get_fed(x, "fed/b", fed_data, &f, fed_done, &f), 0);
    DRAIN_ONE(x, f.calls);
    ASSERT_EQ(f.cls, XPORT_OK);
    ASSERT(f.taken == first); /* received into the buffer given back */
    ASSERT_MEM_EQ(f.taken, big, sizeof(big));
    free(f.taken);

    /* An error answer feeds nothing and has no body to take. */
    memset(&f, 0, sizeof(f));
    ASSERT_EQ(xport_get_fed(x, "fed/nope", fed_data, &f, fed_done, &f), 0);
    DRAIN_ONE(x, f.calls);
    ASSERT_EQ(f.cls, XPORT_NOT_FOUND);
    ASSERT_EQ(f.pieces, 0);
    ASSERT(f.taken == NULL);
    ASSERT_EQ(xport_get_fed(x, "fed/a", NULL, &f, fed_done, &f), S3C_EINVAL);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* GETs of fed/a (1.5 MiB) taking their bodies, none given back: how many were received
 * into one of the n buffers given back before, and the transport's fresh allocations. */
static void take_after_giving(struct xport *x, int n, int *reused, uint64_t *allocs)
{
    void *given[40], *taken[40];
    struct xport_stats s0, s1;
    for (int i = 0; i < n; i++) {
        given[i] = malloc(2u << 20);
        ASSERT(given[i] != NULL);
        xport_give_body(x, given[i], 2u << 20);
    }
    xport_stats_get(x, &s0);
    *reused = 0;
    for (int i = 0; i < n; i++) {
        struct fed f = {0};
        ASSERT_EQ(xport_get_fed(x, "fed/a", fed_data, &f, fed_done, &f), 0);
        DRAIN_ONE(x, f.calls);
        ASSERT_EQ(f.cls, XPORT_OK);
        taken[i] = f.taken;
        for (int j = 0; j < n; j++)
            *reused += taken[i] == given[j];
    }
    xport_stats_get(x, &s1);
    *allocs = s1.body_allocs - s0.body_allocs;
    for (int i = 0; i < n; i++)
        free(taken[i]);
}

/* A caller holding more bodies at once than the transport's default 16 (a reader with
 * window 16 holds up to 33) asks it to keep them all: none is freed when given back, and
 * the next GETs receive into them instead of faulting in fresh memory. */
static void keeps_what_it_is_asked_to(void)
{
    struct mockproc m;
    struct xport *x = mock_xport(&m);
    static unsigned char big[1536 * 1024];
    memset(big, 'k', sizeof(big));
    struct iovec iov = {big, sizeof(big)};
    enum xport_class cls = XPORT_FATAL;
    struct xport_put p = {.key = "fed/a", .iov = &iov, .iovcnt = 1};
    ASSERT_EQ(xport_put(x, &p, put_done, &cls), 0);
    ASSERT_EQ(xport_drain(x, 15000), 0);
    ASSERT_EQ(cls, XPORT_OK);

    int reused;
    uint64_t allocs;
    take_after_giving(x, 20, &reused, &allocs); /* the default: 16 kept, 4 freed */
    ASSERT_EQ(reused, 16);
    ASSERT_UEQ(allocs, 4);
    xport_keep_bodies(x, 20);
    take_after_giving(x, 20, &reused, &allocs);
    ASSERT_EQ(reused, 20);
    ASSERT_UEQ(allocs, 0);
    xport_keep_bodies(x, 40);
    take_after_giving(x, 40, &reused, &allocs);
    ASSERT_EQ(reused, 40);
    ASSERT_UEQ(allocs, 0);
    /* Asking for fewer frees what is over. */
    for (int i = 0; i < 5; i++)
        xport_give_body(x, malloc(2u << 20), 2u << 20);
    xport_keep_bodies(x, 2);
    struct fed f = {0};
    struct xport_stats s0, s1;
    xport_stats_get(x, &s0);
    void *t[3];
    for (int i = 0; i < 3; i++) {
        memset(&f, 0, sizeof(f));
        ASSERT_EQ(xport_get_fed(x, "fed/a", fed_data, &f, fed_done, &f), 0);
        DRAIN_ONE(x, f.calls);
        t[i] = f.taken;
    }
    xport_stats_get(x, &s1);
    ASSERT_UEQ(s1.body_allocs - s0.body_allocs, 1);
    for (int i = 0; i < 3; i++)
        free(t[i]);
    test_xport_free(x);
    test_mock_stop(&m);
}

int main(void)
{
    RUN(fed_get_and_buffers);
    RUN(keeps_what_it_is_asked_to);
    return 0;
}
