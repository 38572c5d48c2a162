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

#endif
