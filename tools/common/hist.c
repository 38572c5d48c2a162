/* Log-linear histogram (see hist.h). Buckets 0..HIST_SUB-1 hold the values themselves;
 * above that each power of two [2^k, 2^(k+1)) is cut into HIST_SUB equal slices. */
#include "hist.h"

#include <string.h>

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

size_t hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (size_t)v;
    unsigned k = 63u - (unsigned)__builtin_clzll(v); /* k >= HIST_SUB_BITS */
    uint64_t sub = (v >> (k - HIST_SUB_BITS)) - HIST_SUB;
    return (size_t)(k - HIST_SUB_BITS + 1) * HIST_SUB + (size_t)sub;
}

void hist_bucket_range(size_t idx, uint64_t *low, uint64_t *high)
{
    if (idx < HIST_SUB) {
        *low = *high = idx;
        return;
    }
    unsigned k = (unsigned)(idx / HIST_SUB) + HIST_SUB_BITS - 1;
    uint64_t sub = idx % HIST_SUB;
    uint64_t width = (uint64_t)1 << (k - HIST_SUB_BITS);
    *low = (HIST_SUB + sub) << (k - HIST_SUB_BITS);
    *high = *low + (width - 1);
}

void hist_record(struct hist *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    h->n++;
    h->sum += v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void hist_merge(struct hist *into, const struct hist *from)
{
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->n += from->n;
    into->sum += from->sum;
    if (from->min < into->min)
        into->min = from->min;
    if (from->max > into->max)
        into->max = from->max;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->n == 0)
        return 0;
    if (q <= 0)
        return h->min;
    uint64_t rank = (uint64_t)(q * (double)h->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > h->n)
        rank = h->n;
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t lo, hi;
            hist_bucket_range(i, &lo, &hi);
            if (hi > h->max)
                hi = h->max;
            if (hi < h->min)
                hi = h->min;
            return hi;
        }
    }
    return h->max;
}
