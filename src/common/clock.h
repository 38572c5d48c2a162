/* Monotonic time for deadlines and latencies (vDSO clock_gettime, no syscall). */
#ifndef S3C_CLOCK_H
#define S3C_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t s3c__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t s3c__now_ms(void)
{
    return s3c__now_ns() / 1000000u;
}

/* The CLOCK_MONOTONIC time timeout_ms from now, for pthread_cond_timedwait on a condvar
 * whose clock is CLOCK_MONOTONIC. */
static inline struct timespec s3c__deadline_ts(int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

#endif
