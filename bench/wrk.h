/* wrk as the yardstick of the benchmarks that compare our client with it (bench-transport,
 * bench-stage's large-object case): runs wrk with bench_transport_put.lua against a mock
 * on 127.0.0.1, bounded in time, and returns what it measured, its CPU time included.
 * Never used by the library or the tests. */
#ifndef S3C_BENCH_WRK_H
#define S3C_BENCH_WRK_H

#include <stdbool.h>
#include <stddef.h>

/* What one wrk run measured; errors < 0 when it gave no result (not run, no JSON line). */
struct wrk_result {
    double requests, seconds; /* requests that completed, over wrk's own duration */
    double bytes_read;        /* what wrk received, headers included */
    double puts_per_s, mbps;  /* wrk_put: requests/s, 10^6 body bytes per second */
    double cpu_s, cpu_per_gb; /* wrk's user + system CPU (wait4), and per 10^9 body bytes */
    double user_cpu_s, user_cpu_per_gb; /* the user-space part of it */
    double p50_ms, p99_ms;    /* wrk's latency percentiles */
    long errors;              /* non-2xx answers + socket errors; < 0: no result */
};

/* Any wrk run whose Lua script's done() prints the JSON line bench_transport_put.lua
 * prints ({"wrk_requests":...}): env is "NAME=value" strings for the child (NULL-ended,
 * or NULL). Fills requests, seconds, bytes_read, cpu_s, p50/p99 and errors. */
struct wrk_result wrk_run(const char *script, const char *url, int threads, int conns, int seconds,
                          const char *const *env);

/* One PUT run: bodies of body bytes ('x', as the Lua script builds them) to url. */
struct wrk_args {
    const char *url;    /* e.g. "http://127.0.0.1:PORT/commits/wrk/object" */
    int threads, conns; /* wrk -t and -c */
    int seconds;        /* wrk -d */
    size_t body;        /* bytes per PUT */
    bool crc32c;        /* send x-amz-checksum-crc32c of the body, as the transport does */
    bool if_none_match; /* send If-None-Match: * (the stage's conditional writes) */
};

/* wrk_run with bench_transport_put.lua, and the per-body figures filled in. */
struct wrk_result wrk_put(const struct wrk_args *a);

/* The path of the PUT script beside this file (bench/bench_transport_put.lua). */
const char *wrk_put_script(void);

/* Figures over rounds (n >= 1, at most BENCH_MAX_ROUNDS): the median, the least, the most.
 * The benchmarks alternate their clients round by round so a noisy neighbour hits all. */
#define BENCH_MAX_ROUNDS 9
double bench_median(const double *v, int n);
double bench_min(const double *v, int n);
double bench_max(const double *v, int n);

#endif
