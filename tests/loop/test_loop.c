/* The event loop (src/loop): timers in deadline order (re-armed and disarmed from
 * callbacks), watched fds, a watch deleted by an earlier callback in the same batch, a wake
 * from another thread ending a blocked wait (so this test is labelled concurrency), and
 * the loop shared by the transport and its owner. */
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/clock.h"
#include "config/config.h"
#include "loop/loop.h"
#include "test.h"
#include "transport/transport.h"

static int order[8], norder;
static struct loop *gev;

static void timer_cb(void *ctx)
{
    order[norder++] = (int)(intptr_t)ctx;
}

static void timers(void)
{
    struct loop *ev = loop_new();
    ASSERT(ev != NULL);
    struct loop_timer t[3] = {0};
    uint64_t now = s3c__now_ns();
    for (int i = 0; i < 3; i++) {
        t[i].cb = timer_cb;
        t[i].ctx = (void *)(intptr_t)(i + 1);
    }
    loop_timer_arm(ev, &t[0], now + 30000000); /* 30 ms */
    loop_timer_arm(ev, &t[1], now + 10000000); /* 10 ms */
    loop_timer_arm(ev, &t[2], now + 20000000); /* 20 ms, then disarmed */
    loop_timer_disarm(ev, &t[2]);
    norder = 0;
    uint64_t start = s3c__now_ns();
    while (norder < 2 && s3c__now_ns() - start < 2000000000u)
        ASSERT_EQ(loop_run_once(ev, 100), 0);
    ASSERT_EQ(norder, 2);
    ASSERT_EQ(order[0], 2);
    ASSERT_EQ(order[1], 1);
    ASSERT(s3c__now_ns() - start >= 25000000u); /* not early */
    /* An already-due timer runs without waiting for the timeout. */
    loop_timer_arm(ev, &t[2], 0);
    start = s3c__now_ns();
    ASSERT_EQ(loop_run_once(ev, 5000), 0);
    ASSERT_EQ(norder, 3);
    ASSERT(s3c__now_ns() - start < 1000000000u);
    loop_free(ev);
}

struct two {
    struct loop_watch a, b;
    int fa, fb;
    int ran_a, ran_b;
};

static void cb_a(void *ctx, int fd, unsigned events)
{
    struct two *t = ctx;
    uint64_t v;
    ASSERT(events & LOOP_READ);
    ASSERT(read(fd, &v, sizeof(v)) == sizeof(v));
    t->ran_a++;
    loop_watch_del(gev, &t->b); /* b's pending event in this batch must be dropped */
}

static void cb_b(void *ctx, int fd, unsigned events)
{
    struct two *t = ctx;
    uint64_t v;
    (void)events;
    ASSERT(read(fd, &v, sizeof(v)) == sizeof(v));
    t->ran_b++;
    loop_watch_del(gev, &t->a);
}

static void watch_deleted_in_batch(void)
{
    struct two t = {0};
    uint64_t one = 1;
    gev = loop_new();
    t.fa = eventfd(0, EFD_NONBLOCK);
    t.fb = eventfd(0, EFD_NONBLOCK);
    t.a = (struct loop_watch){.fd = t.fa, .cb = cb_a, .ctx = &t};
    t.b = (struct loop_watch){.fd = t.fb, .cb = cb_b, .ctx = &t};
    ASSERT_EQ(loop_watch_set(gev, &t.a, LOOP_READ), 0);
    ASSERT_EQ(loop_watch_set(gev, &t.b, LOOP_READ), 0);
    ASSERT(write(t.fa, &one, 8) == 8);
    ASSERT(write(t.fb, &one, 8) == 8);
    ASSERT_EQ(loop_run_once(gev, 1000), 0);
    ASSERT_EQ(t.ran_a + t.ran_b, 1); /* whichever ran first removed the other */
    ASSERT_EQ(loop_run_once(gev, 0), 0);
    ASSERT_EQ(t.ran_a + t.ran_b, 1);
    close(t.fa);
    close(t.fb);
    loop_free(gev);
}

static void *waker(void *arg)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    loop_wake(arg);
    return NULL;
}

static void wake_from_thread(void)
{
    struct loop *ev = loop_new();
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, waker, ev), 0);
    uint64_t start = s3c__now_ns();
    ASSERT_EQ(loop_run_once(ev, 10000), 0);
    uint64_t took = s3c__now_ns() - start;
    ASSERT(took < 5000000000u);
    ASSERT(took >= 40000000u);
    pthread_join(th, NULL);
    struct loop_stats st;
    loop_stats_get(ev, &st);
    ASSERT_EQ(st.wakes, 1);
    loop_free(ev);
}

/* One loop, several users, as on the persistence thread: the transport's sockets and
 * timers beside an fd of the owner's; a wake from another thread ends the wait; freeing
 * the transport takes its fds and timers off the loop, which stays usable. */
static int fd_hits;
static void on_fd(void *ctx, int fd, unsigned events)
{
    uint64_t v;
    (void)ctx, (void)events;
    ASSERT(read(fd, &v, sizeof(v)) == sizeof(v));
    fd_hits++;
}

static void *xwaker(void *arg)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    loop_wake(arg);
    return NULL;
}

static void shared_loop(void)
{
    struct s3c_config c;
    char err[256];
    cfg_defaults(&c);
    snprintf(c.s3.endpoint, sizeof(c.s3.endpoint), "http://127.0.0.1:9");
    snprintf(c.s3.bucket, sizeof(c.s3.bucket), "commits");
    c.persistence.target_pool_size = 1;
    c.persistence.heartbeat_interval_ms = 60000;
    struct loop *l = loop_new();
    ASSERT(l != NULL);
    struct xport *x = xport_new(&c, l, err, sizeof(err));
    ASSERT(x != NULL);
    ASSERT(xport_loop(x) == l);
    for (int i = 0; i < 20; i++)
        loop_run_once(l, 5); /* let the failing warm-up settle */
    int efd = eventfd(0, EFD_NONBLOCK);
    struct loop_watch w = {.fd = efd, .cb = on_fd};
    ASSERT_EQ(loop_watch_set(l, &w, LOOP_READ), 0);
    uint64_t one = 1;
    ASSERT(write(efd, &one, 8) == 8);
    ASSERT_EQ(loop_run_once(l, 1000), 0);
    ASSERT_EQ(fd_hits, 1);

    /* The other thread's loop_wake() is what ends the wait (counted by the loop), not a
     * refill timer of the failing warm-up. */
    struct xport_stats st;
    xport_stats_get(x, &st);
    uint64_t wakes0 = st.loop_wakes;
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, xwaker, l), 0);
    uint64_t start = s3c__now_ns();
    do {
        ASSERT_EQ(loop_run_once(l, 1000), 0); /* returns early for refill timers too */
        xport_stats_get(x, &st);
    } while (st.loop_wakes == wakes0 && s3c__now_ns() - start < 5000000000u);
    ASSERT_UEQ(st.loop_wakes, wakes0 + 1);
    ASSERT(s3c__now_ns() - start >= 40000000u); /* not before the waker slept its 50 ms */
    pthread_join(th, NULL);

    /* The transport goes; the loop and the owner's watch stay. Nothing of the transport's
     * fires any more (ASan would see a freed watch or timer). */
    xport_free(x);
    ASSERT(write(efd, &one, 8) == 8);
    ASSERT_EQ(loop_run_once(l, 1000), 0);
    ASSERT_EQ(fd_hits, 2);
    for (int i = 0; i < 5; i++)
        ASSERT_EQ(loop_run_once(l, 2), 0);
    loop_watch_del(l, &w);
    ASSERT(write(efd, &one, 8) == 8);
    ASSERT_EQ(loop_run_once(l, 0), 0);
    ASSERT_EQ(fd_hits, 2);
    close(efd);
    loop_free(l);
}

int main(void)
{
    RUN(timers);
    RUN(watch_deleted_in_batch);
    RUN(wake_from_thread);
    RUN(shared_loop);
    return 0;
}
