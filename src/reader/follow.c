/* Waiting: at the end of the chain, either the end of reading or, in follow mode, a new
 * listing from the chain's end every poll interval; and the one place the reader blocks
 * on its loop, bounded by the caller's timeout and the retries due. */
#include <inttypes.h>

#include "reader/reader_int.h"

int rd_at_end(struct s3c_reader *r, uint64_t now, uint64_t *wake)
{
    if (!r->at_end) {
        r->at_end = true;
        r->st.beyond_end = (uint64_t)r->nslots + (r->page.n - r->page.pos);
        r->poll_at = now + r->poll_ns;
    }
    if (!r->follow) {
        if (r->last < r->manifest_w)
            return rd_fail(r, S3C_ECORRUPT,
                           "%slog/%020" PRIu64 ".s3c is missing: the chain ends at seq %" PRIu64
                           " but the manifest says the log reaches %" PRIu64,
                           r->cfg.s3.prefix, r->last + 1, r->last, r->manifest_w);
        return S3C_EEND;
    }
    if (now >= r->poll_at) { /* look for more: list again from the end */
        r->poll_at = now + r->poll_ns;
        r->at_end = false;
        rd_start_list(r, true);
        return 1;
    }
    if (r->poll_at < *wake)
        *wake = r->poll_at;
    return 0;
}

int rd_wait(struct s3c_reader *r, uint64_t now, uint64_t deadline, uint64_t wake)
{
    if (r->list_need && !r->list_wire) {
        if (r->list_retry_at <= now) {
            rd_start_list(r, false);
            return 1;
        }
        if (r->list_retry_at < wake)
            wake = r->list_retry_at;
    }
    for (int i = 0; i < r->nslots; i++)
        if (r->slots[i]->state == RS_IDLE && r->slots[i]->retry_at_ns < wake)
            wake = r->slots[i]->retry_at_ns;
    if (now >= deadline)
        return S3C_ETIMEDOUT;
    uint64_t ms = wake == UINT64_MAX ? 1000 : (wake > now ? (wake - now + 999999) / 1000000 : 0);
    int rc = loop_run_once(r->loop, (int)(ms > 1000 ? 1000 : ms));
    if (rc < 0)
        return rd_fail(r, rc, "the event loop failed: %s", s3c_strerror(rc));
    return 0;
}
