/* epoll + timerfd + eventfd behind loop.h: the process's one OS event seam, in the manner
 * of Redis' ae_epoll.c. It must never print, exit, or block anywhere except in
 * epoll_wait with the caller's timeout. */
#include "loop/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "common/clock.h"
#include "s3commit.h"

#define LOOP_MAX_EVENTS 64

struct loop {
    int epfd;
    struct loop_watch timer_w; /* the timerfd */
    struct loop_watch wake_w;  /* the eventfd */
    struct loop_timer *timers; /* armed timers, sorted by deadline */
    uint64_t timerfd_deadline; /* when the timerfd fires (0 = disarmed or fired) */
    /* The batch being dispatched, so loop_watch_del() can drop stale entries. */
    struct epoll_event evs[LOOP_MAX_EVENTS];
    int cur_i, cur_n;
    struct loop_stats st;
};

static uint32_t loop_to_epoll(unsigned events)
{
    return (events & LOOP_READ ? EPOLLIN : 0u) | (events & LOOP_WRITE ? EPOLLOUT : 0u);
}

static void loop_on_timerfd(void *ctx, int fd, unsigned events);
static void loop_on_wakefd(void *ctx, int fd, unsigned events);

struct loop *loop_new(void)
{
    struct loop *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return NULL;
    ev->timer_w.fd = ev->wake_w.fd = -1;
    ev->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ev->epfd < 0)
        goto out_free;
    ev->timer_w.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ev->timer_w.fd < 0)
        goto out_close;
    ev->wake_w.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ev->wake_w.fd < 0)
        goto out_close;
    ev->timer_w.cb = loop_on_timerfd;
    ev->timer_w.ctx = ev;
    ev->wake_w.cb = loop_on_wakefd;
    ev->wake_w.ctx = ev;
    if (loop_watch_set(ev, &ev->timer_w, LOOP_READ) < 0 ||
        loop_watch_set(ev, &ev->wake_w, LOOP_READ) < 0)
        goto out_close;
    return ev;

out_close : {
    int e = errno;
    if (ev->wake_w.fd >= 0)
        close(ev->wake_w.fd);
    if (ev->timer_w.fd >= 0)
        close(ev->timer_w.fd);
    if (ev->epfd >= 0)
        close(ev->epfd);
    errno = e;
}
out_free:
    free(ev);
    return NULL;
}

void loop_free(struct loop *ev)
{
    if (!ev)
        return;
    close(ev->wake_w.fd);
    close(ev->timer_w.fd);
    close(ev->epfd);
    free(ev);
}

int loop_watch_set(struct loop *ev, struct loop_watch *w, unsigned events)
{
    struct epoll_event e = {.events = loop_to_epoll(events), .data.ptr = w};

    if (events == 0) {
        loop_watch_del(ev, w);
        return 0;
    }
    if (w->added && w->events == events)
        return 0;
    if (epoll_ctl(ev->epfd, w->added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, w->fd, &e) < 0) {
        /* A reused fd number that epoll still knows (closed without DEL): re-add. */
        if (errno == EEXIST && epoll_ctl(ev->epfd, EPOLL_CTL_MOD, w->fd, &e) == 0)
            goto ok;
        if (errno == ENOENT && epoll_ctl(ev->epfd, EPOLL_CTL_ADD, w->fd, &e) == 0)
            goto ok;
        return S3C_EIO;
    }
ok:
    w->added = true;
    w->events = events;
    return 0;
}

void loop_watch_del(struct loop *ev, struct loop_watch *w)
{
    if (w->added) {
        /* The fd may already be closed (EBADF) or gone from the set: nothing to undo. */
        (void)epoll_ctl(ev->epfd, EPOLL_CTL_DEL, w->fd, NULL);
        w->added = false;
        w->events = 0;
    }
    for (int i = ev->cur_i + 1; i < ev->cur_n; i++)
        if (ev->evs[i].data.ptr == w)
            ev->evs[i].data.ptr = NULL;
}

/* Keeps the timerfd due no later than the earliest armed deadline. timerfd_settime is
 * costly under virtualisation and libcurl moves its timer several times per request, so
 * the timerfd is only moved earlier, never later: firing early costs one spurious wake,
 * after which loop_run_timers() re-syncs. A deadline already due needs no timerfd at all:
 * loop_run_once() polls without waiting when the first timer is due. */
static void loop_timerfd_sync(struct loop *ev)
{
    uint64_t want = ev->timers ? ev->timers->deadline_ns : 0;
    if (want == 0 || (ev->timerfd_deadline && want >= ev->timerfd_deadline))
        return;
    if (want <= s3c__now_ns())
        return;
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(want / 1000000000u);
    its.it_value.tv_nsec = (long)(want % 1000000000u);
    ev->st.timer_arms++;
    /* Cannot fail with valid arguments; loop_run_once also checks deadlines itself. */
    (void)timerfd_settime(ev->timer_w.fd, TFD_TIMER_ABSTIME, &its, NULL);
    ev->timerfd_deadline = want;
}

static void loop_timer_unlink(struct loop *ev, struct loop_timer *t)
{
    for (struct loop_timer **p = &ev->timers; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            break;
        }
    }
    t->next = NULL;
    t->armed = false;
}

void loop_timer_arm(struct loop *ev, struct loop_timer *t, uint64_t deadline_ns)
{
    if (t->armed)
        loop_timer_unlink(ev, t);
    if (deadline_ns == 0)
        deadline_ns = 1; /* 0 disarms a timerfd; 1 ns is "already due" */
    t->deadline_ns = deadline_ns;
    t->armed = true;
    struct loop_timer **p = &ev->timers;
    while (*p && (*p)->deadline_ns <= deadline_ns)
        p = &(*p)->next;
    t->next = *p;
    *p = t;
    loop_timerfd_sync(ev);
}

void loop_timer_disarm(struct loop *ev, struct loop_timer *t)
{
    if (!t->armed)
        return;
    loop_timer_unlink(ev, t);
    loop_timerfd_sync(ev);
}

/* Runs every timer due by now; a callback may arm timers, which run on a later pass
 * when they are due (so a 0 ms re-arm cannot spin here forever). */
static void loop_run_timers(struct loop *ev)
{
    uint64_t now = s3c__now_ns();
    int budget = 64;
    while (ev->timers && ev->timers->deadline_ns <= now && budget-- > 0) {
        struct loop_timer *t = ev->timers;
        loop_timer_unlink(ev, t);
        t->cb(t->ctx);
    }
    loop_timerfd_sync(ev);
}

static void loop_on_timerfd(void *ctx, int fd, unsigned events)
{
    struct loop *ev = ctx;
    uint64_t n;
    (void)events;
    while (read(fd, &n, sizeof(n)) > 0) {
    }
    ev->timerfd_deadline = 0; /* it fired: one-shot, disarmed now */
}

static void loop_on_wakefd(void *ctx, int fd, unsigned events)
{
    struct loop *ev = ctx;
    uint64_t n;
    (void)events;
    if (read(fd, &n, sizeof(n)) > 0)
        ev->st.wakes++;
}

int loop_run_once(struct loop *ev, int timeout_ms)
{
    /* A timer already due must not wait for the timerfd round trip. */
    if (ev->timers && timeout_ms != 0 && ev->timers->deadline_ns <= s3c__now_ns())
        timeout_ms = 0;
    int n = epoll_wait(ev->epfd, ev->evs, LOOP_MAX_EVENTS, timeout_ms);
    ev->st.waits++;
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        return S3C_EIO;
    }
    ev->cur_n = n;
    for (ev->cur_i = 0; ev->cur_i < n; ev->cur_i++) {
        struct epoll_event *e = &ev->evs[ev->cur_i];
        struct loop_watch *w = e->data.ptr;
        if (!w)
            continue; /* deleted by an earlier callback in this batch */
        unsigned bits = (e->events & EPOLLIN ? LOOP_READ : 0u) |
                        (e->events & EPOLLOUT ? LOOP_WRITE : 0u) |
                        (e->events & (EPOLLERR | EPOLLHUP) ? LOOP_ERROR : 0u);
        w->cb(w->ctx, w->fd, bits);
    }
    ev->cur_i = ev->cur_n = 0;
    loop_run_timers(ev);
    return 0;
}

void loop_wake(struct loop *ev)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: a wake is pending anyway. */
    ssize_t r = write(ev->wake_w.fd, &one, sizeof(one));
    (void)r;
}

void loop_stats_get(const struct loop *ev, struct loop_stats *out)
{
    *out = ev->st;
}
