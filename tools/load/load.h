/* s3commit-load: the transaction-processor simulator. Shared between the driver (load.c)
 * and the report writer (report.c). The report writer only formats what the driver
 * measured; it never measures or decides pass/fail. */
#ifndef S3C_LOAD_H
#define S3C_LOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "hist.h"

/* One throughput sample taken by the main thread from s3c_stats_get(). */
struct load_sample {
    double t_s;               /* since the first submit */
    uint64_t commits_durable; /* cumulative */
    uint64_t bytes_durable;   /* cumulative */
    uint32_t in_flight;
};

struct load_result {
    /* what was asked */
    int producers;
    uint64_t size_min, size_max;
    double rate;             /* commits/s over all producers; 0 = as fast as possible */
    uint64_t commits_target; /* --commits, 0 with --duration */
    double duration_target_s;
    const char *endpoint;
    bool mock;
    /* what happened */
    uint64_t commits_submitted, bytes_submitted;
    uint64_t commits_acked, bytes_acked;
    uint64_t durable_seq;
    uint64_t epoch, first_seq; /* the writer epoch and the first seq of this run */
    uint64_t out_of_order_acks;
    uint64_t unacked; /* submitted seqs never acknowledged */
    uint64_t submit_errors;
    double duration_s;
    uint64_t batches, retries, put_attempts, failures_retryable, failures_fatal;
    uint64_t pool_opens, pool_reuses;
    /* With a spool (spool.dir): L at the end, and the spool's counters. */
    bool spool;
    uint64_t local_seq, spool_bytes, spool_skipped, spool_reads;
    struct hist ack_us;         /* per commit: s3c_submit returned -> durable callback */
    struct hist submit_wait_us; /* time blocked inside s3c_submit (backpressure) */
    const struct load_sample *samples;
    size_t nsamples;
    char error[512]; /* why the run failed ("" when it did not) */
    bool ok;
};

/* Writes the JSON report to path ("-" = stdout). Returns 0 or -errno. */
int load_report_json(const struct load_result *r, const char *path, const char *svg_path);

/* Writes the SVG (throughput over time, ack-latency distribution). 0 or -errno. */
int load_report_svg(const struct load_result *r, const char *path);

#endif
