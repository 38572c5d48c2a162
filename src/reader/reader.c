/* Reading the log back (s3c_reader in include/s3commit.h): the public calls. The reader
 * follows the chain of objects from a seq with the writer protocol's rules (chain.c),
 * entered where seek.c finds it, with a window of GETs in flight ahead of the caller on
 * its own loop and transport (window.c), waiting and following in follow.c. It must never
 * return a record past the end of the chain, twice, out of order, or without its CRC
 * checked. */
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "reader/reader_int.h"

int rd_fail(struct s3c_reader *r, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof(r->error), fmt, ap);
    va_end(ap);
    r->err = code;
    return code;
}

uint64_t rd_backoff_ns(const struct s3c_reader *r, int attempt)
{
    const struct cfg_persistence *p = &r->cfg.persistence;
    uint64_t ms = (uint64_t)p->retry_base_delay_ms << (attempt - 1 < 20 ? attempt - 1 : 20);
    if (ms > (uint64_t)p->max_retry_delay_ms)
        ms = (uint64_t)p->max_retry_delay_ms;
    return ms * 1000000u;
}

int s3c_reader_next(s3c_reader *r, struct s3c_record *rec, int timeout_ms)
{
    if (!r || !rec)
        return S3C_EINVAL;
    uint64_t deadline = 0; /* set at the first wait: a record at hand costs no clock read */
    for (;;) {
        if (r->err)
            return r->err;
        if (rd_take_record(r, rec)) {
            if (r->to && rec->seq > r->to)
                return S3C_EEND;
            r->st.records++;
            r->st.bytes += rec->len;
            if (rec->control)
                r->st.control_records++;
            return 0;
        }
        if (r->to && r->last >= r->to)
            return S3C_EEND;
        rd_top_up(r);
        enum rd_step step = rd_next_object(r);
        if (step == RD_GOT) {
            r->at_end = false;
            continue;
        }
        if (step == RD_ERROR)
            return r->err;
        uint64_t now = s3c__now_ns();
        if (deadline == 0)
            deadline = timeout_ms < 0 ? UINT64_MAX : now + (uint64_t)timeout_ms * 1000000u;
        uint64_t wake = deadline;
        int rc = step == RD_END ? rd_at_end(r, now, &wake) : 0;
        if (rc == 0)
            rc = rd_wait(r, now, deadline, wake);
        if (rc < 0)
            return rc;
    }
}

int s3c_reader_open(const s3c_config *cfg, const struct s3c_reader_opts *opts, s3c_reader **out,
                    char *err, size_t errlen)
{
    struct s3c_reader *r;
    char e[1100] = "";
    int rc = S3C_ENOMEM;

    if (errlen)
        err[0] = '\0';
    if (!cfg || !out)
        return S3C_EINVAL;
    *out = NULL;
    r = calloc(1, sizeof(*r));
    if (!r)
        goto out_msg;
    r->cfg = *cfg;
    r->from = opts && opts->from_seq > 1 ? opts->from_seq : 1;
    r->to = opts ? opts->to_seq : 0;
    r->follow = opts && opts->follow;
    r->poll_ns =
        (uint64_t)(opts && opts->poll_interval_ms > 0 ? opts->poll_interval_ms : 500) * 1000000u;
    r->window = opts && opts->window > 0 ? opts->window : cfg->persistence.max_in_flight_requests;
    if (r->window > RD_MAX_WINDOW)
        r->window = RD_MAX_WINDOW;
    if (r->window < 1)
        r->window = 1;
    /* As many objects read ahead of a slow head as GETs in flight: without them, window 16
     * spent 0.3 s of a 1 GiB read waiting with finished connections idle (docs/programs.md,
     * "Reader throughput"). The price: up to twice the window's body buffers. */
    r->ahead = r->window;
    /* The pool: one warm connection (window + 1 of them were opened and heart-beaten for
     * nothing). With direct PUTs on (the default for http://) it is a direct connection,
     * and libcurl's manifest read and listings open theirs cold; over https it is
     * libcurl's. Object GETs and the seek's header reads go direct: a connection per GET
     * in flight, and a spare (xport_direct_connections below). */
    r->cfg.persistence.target_pool_size = 1;
    r->loop = loop_new();
    if (!r->loop) {
        snprintf(e, sizeof(e), "reader: cannot create the event loop");
        goto out_free;
    }
    r->x = xport_new(&r->cfg, r->loop, e, sizeof(e));
    if (!r->x) {
        rc = S3C_EINVAL;
        goto out_free;
    }
    /* Every body the reader can hold at once (window GETs, as many read ahead, the one
     * being returned, and one given back before the next is taken) is kept for reuse:
     * with the transport's default 16, window 16 freed and faulted in ~430 fresh 2 MiB
     * buffers per GiB read, zeroing them 8% of its CPU (docs/programs.md). */
    xport_keep_bodies(r->x, r->window + r->ahead + 2);
    xport_direct_connections(r->x, r->window + 1);
    rc = rd_position(r);
    if (rc < 0) {
        snprintf(e, sizeof(e), "%s", r->error);
        goto out_free;
    }
    rd_start_list(r, true);
    S3C_LOG(S3C_LOG_INFO,
            "event=reader_open prefix=%s from_seq=%" PRIu64 " enter_after=%" PRIu64
            " follow=%d window=%d",
            cfg->s3.prefix, r->from, r->last, r->follow, r->window);
    *out = r;
    return 0;

out_free:
    s3c_reader_close(r);
out_msg:
    if (errlen)
        snprintf(err, errlen, "%s", e[0] ? e : s3c_strerror(rc));
    return rc;
}

const char *s3c_reader_error(const s3c_reader *r)
{
    return r ? r->error : "";
}

void s3c_reader_stats_get(const s3c_reader *r, struct s3c_reader_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (r)
        *out = r->st;
}

void s3c_reader_close(s3c_reader *r)
{
    if (!r)
        return;
    rd_drop_all(r);
    xport_free(r->x); /* GETs on the wire are aborted without callbacks */
    r->x = NULL;      /* buffers from here on are freed, not given back */
    for (struct rslot *d = r->dropped, *nx; d; d = nx) {
        nx = d->next;
        rd_slot_free(d);
    }
    loop_free(r->loop);
    free(r->cur);
    OPENSSL_cleanse(&r->cfg, sizeof(r->cfg));
    free(r);
}
