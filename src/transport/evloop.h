/* The transport's only seam to the OS event machinery: one epoll fd, one timerfd that
 * carries every timer (earliest deadline first), one eventfd for cross-thread wake-ups.
 * Nothing else in the transport calls epoll, timerfd or eventfd. Single-threaded except
 * evloop_wake(), which is async-signal-safe. Never prints, never exits. */
#ifndef S3C_EVLOOP_H
#define S3C_EVLOOP_H

#include <stdbool.h>
#include <stdint.h>

#define EVLOOP_READ 1u
#define EVLOOP_WRITE 2u
#define EVLOOP_ERROR 4u /* EPOLLERR / EPOLLHUP, reported with whatever else fired */

struct evloop;

/* A watched fd. The caller owns the memory; it must stay valid until evloop_watch_del().
 * Deleting a watch from inside any callback is safe: pending events for it are dropped. */
struct evloop_watch {
    int fd;
    void (*cb)(void *ctx, int fd, unsigned events); /* EVLOOP_* bits that fired */
    void *ctx;
    unsigned events; /* what is registered now (EVLOOP_READ|EVLOOP_WRITE) */
    bool added;      /* registered with epoll */
};

/* A one-shot timer at an absolute CLOCK_MONOTONIC deadline. The caller owns the memory.
 * A timer may re-arm or disarm itself (or any other timer) from its callback. */
struct evloop_timer {
    uint64_t deadline_ns;
    void (*cb)(void *ctx);
    void *ctx;
    bool armed;
    struct evloop_timer *next; /* armed list, owned by the loop */
};

/* Returns NULL (errno set) when epoll/timerfd/eventfd cannot be created. */
struct evloop *evloop_new(void);
void evloop_free(struct evloop *ev); /* NULL ok; does not touch watches the caller owns */

/* Registers (events != 0), changes, or (events == 0) unregisters the watch's interest.
 * Returns 0 or a negative S3C_E*. */
int evloop_watch_set(struct evloop *ev, struct evloop_watch *w, unsigned events);
void evloop_watch_del(struct evloop *ev, struct evloop_watch *w);

void evloop_timer_arm(struct evloop *ev, struct evloop_timer *t, uint64_t deadline_ns);
void evloop_timer_disarm(struct evloop *ev, struct evloop_timer *t);

/* Waits at most timeout_ms (-1 forever, 0 not at all) and runs everything ready: watch
 * callbacks, expired timers, and a pending wake. Returns 0 or a negative S3C_E*. */
int evloop_run_once(struct evloop *ev, int timeout_ms);

/* Makes a blocked evloop_run_once() return. Any thread; async-signal-safe. */
void evloop_wake(struct evloop *ev);

/* Syscall counters for benchmarks and tests. */
struct evloop_stats {
    uint64_t waits;      /* epoll_wait calls */
    uint64_t timer_arms; /* timerfd_settime calls */
    uint64_t wakes;      /* wake-ups consumed */
};
void evloop_stats_get(const struct evloop *ev, struct evloop_stats *out);

#endif
