/* The event loop of a thread: one epoll fd, one timerfd that carries every timer
 * (earliest deadline first), one eventfd for cross-thread wake-ups. It belongs to whoever
 * owns the thread (the stage's persistence thread, a tool's main thread); the transport,
 * the pool, the stage and the manifest writer register their fds and timers on it, as
 * Redis' networking, replication and cluster bus share aeCreateFileEvent. Nothing else
 * calls epoll, timerfd or eventfd. Single-threaded except loop_wake(), which is
 * async-signal-safe. Never prints, never exits. */
#ifndef S3C_LOOP_H
#define S3C_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#define LOOP_READ 1u
#define LOOP_WRITE 2u
#define LOOP_ERROR 4u /* EPOLLERR / EPOLLHUP, reported with whatever else fired */

struct loop;

/* A watched fd. The caller owns the memory; it must stay valid until loop_watch_del().
 * Deleting a watch from inside any callback is safe: pending events for it are dropped. */
struct loop_watch {
    int fd;
    void (*cb)(void *ctx, int fd, unsigned events); /* LOOP_* bits that fired */
    void *ctx;
    unsigned events; /* what is registered now (LOOP_READ|LOOP_WRITE) */
    bool added;      /* registered with epoll */
};

/* A one-shot timer at an absolute CLOCK_MONOTONIC deadline. The caller owns the memory.
 * A timer may re-arm or disarm itself (or any other timer) from its callback. */
struct loop_timer {
    uint64_t deadline_ns;
    void (*cb)(void *ctx);
    void *ctx;
    bool armed;
    struct loop_timer *next; /* armed list, owned by the loop */
};

/* Returns NULL (errno set) when epoll/timerfd/eventfd cannot be created. */
struct loop *loop_new(void);
void loop_free(struct loop *ev); /* NULL ok; does not touch watches the caller owns */

/* Registers (events != 0), changes, or (events == 0) unregisters the watch's interest.
 * Returns 0 or a negative S3C_E*. */
int loop_watch_set(struct loop *ev, struct loop_watch *w, unsigned events);
void loop_watch_del(struct loop *ev, struct loop_watch *w);

void loop_timer_arm(struct loop *ev, struct loop_timer *t, uint64_t deadline_ns);
void loop_timer_disarm(struct loop *ev, struct loop_timer *t);

/* Waits at most timeout_ms (-1 forever, 0 not at all) and runs everything ready: watch
 * callbacks, expired timers, and a pending wake. Returns 0 or a negative S3C_E*. */
int loop_run_once(struct loop *ev, int timeout_ms);

/* Makes a blocked loop_run_once() return. Any thread; async-signal-safe. */
void loop_wake(struct loop *ev);

/* Syscall counters for benchmarks and tests. */
struct loop_stats {
    uint64_t waits;      /* epoll_wait calls */
    uint64_t timer_arms; /* timerfd_settime calls */
    uint64_t wakes;      /* wake-ups consumed */
};
void loop_stats_get(const struct loop *ev, struct loop_stats *out);

#endif
