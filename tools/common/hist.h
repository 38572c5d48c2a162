/* A log-linear latency histogram (HDR style): 32 linear sub-buckets per power of two, so
 * a percentile is within ~3% of the true value with fixed memory and O(1) recording.
 * Not thread-safe: one writer, or merge per-thread histograms. */
#ifndef S3C_TOOL_HIST_H
#define S3C_TOOL_HIST_H

#include <stddef.h>
#include <stdint.h>

#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t n, sum, min, max;
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t v);
void hist_merge(struct hist *into, const struct hist *from);

/* The value at quantile q in [0, 1]: the upper edge of the bucket holding the rank
 * ceil(q * n), clipped to the exact max. 0 when empty. */
uint64_t hist_quantile(const struct hist *h, double q);

/* Bucket index of v, and the [low, high] values a bucket holds. */
size_t hist_index(uint64_t v);
void hist_bucket_range(size_t idx, uint64_t *low, uint64_t *high);

#endif
