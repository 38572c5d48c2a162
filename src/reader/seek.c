/* Where a reader enters the chain: the manifest read, then for a from_seq inside the log
 * the object holding it found from a listing of the keys just below it and their
 * headers, never by reading the log from its start. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "format/manifest.h"
#include "reader/reader_int.h"
#include "writer/call.h"

/* Reads the headers of keys (first in firsts) with a window of GETs; fills hs (ok[i] when
 * read and valid). */
static int rd_read_headers(struct s3c_reader *r, char **keys, size_t n, struct obj_header *hs,
                           bool *ok)
{
    struct rslot *s = calloc(n ? n : 1, sizeof(*s));
    size_t next = 0, done = 0;
    int rc = 0;
    if (!s)
        return rd_fail(r, S3C_ENOMEM, "out of memory seeking");
    for (size_t i = 0; i < n; i++) {
        s[i].rd = r;
        s[i].header_only = true;
        snprintf(s[i].key, sizeof(s[i].key), "%s", keys[i]);
    }
    for (;;) {
        int wire = 0;
        uint64_t now = s3c__now_ns();
        for (size_t i = 0; i < next; i++) /* retries after their backoff */
            if (s[i].state == RS_IDLE && s[i].retry_at_ns <= now && wire < RD_SEEK_WINDOW &&
                rd_start_get(r, &s[i]) == 0)
                wire++;
        done = 0;
        for (size_t i = 0; i < next; i++) {
            if (s[i].state == RS_WIRE)
                wire++;
            else if (s[i].state != RS_IDLE)
                done++;
        }
        while (next < n && wire < RD_SEEK_WINDOW)
            if (rd_start_get(r, &s[next++]) == 0)
                wire++;
            else
                done++;
        if (done == n)
            break;
        loop_run_once(r->loop, 100);
    }
    for (size_t i = 0; i < n; i++) {
        ok[i] = s[i].state == RS_DONE &&
                obj_header_decode(s[i].body, s[i].len, &hs[i], NULL, NULL, 0) == 0;
        if (s[i].state == RS_FAILED && rc == 0)
            rc = rd_fail(r, S3C_ES3, "%s: %s", s[i].key, s[i].error);
        free(s[i].body);
    }
    free(s);
    return rc;
}

/* Positions the reader before the object holding seq `from` (1 < from <= the manifest's
 * W): the keys whose first seq lies within max_batch_commits below it, their headers
 * read; of the objects covering `from`, the one on the chain has the highest epoch (an
 * orphan's writer was fenced by an epoch that comes before it on the chain). */
static int rd_seek(struct s3c_reader *r, uint64_t max_batch)
{
    char lp[OBJ_KEY_MAX], after[OBJ_KEY_MAX];
    uint64_t lo = r->from > max_batch ? r->from - max_batch : 0;
    struct call_res res;
    char **keys = NULL;
    size_t n = 0, cap = 0;
    char *token = NULL;
    int rc = 0;
    snprintf(lp, sizeof(lp), "%slog/", r->cfg.s3.prefix);
    obj_key(after, sizeof(after), r->cfg.s3.prefix, lo);
    for (bool more = true; more && rc == 0;) {
        struct call_req q = {.op = XPORT_OP_LIST,
                             .list_prefix = lp,
                             .start_after = token ? NULL : after,
                             .token = token,
                             .max_keys = 1000};
        r->st.lists++;
        rc = call_run(r->x, &r->cfg, &q, &res, r->error, sizeof(r->error));
        if (rc < 0)
            break;
        more = false;
        for (size_t i = 0; i < res.nkeys; i++) {
            uint64_t f;
            if (!obj_key_parse(res.keys[i], r->cfg.s3.prefix, &f))
                continue;
            if (f > r->from) {
                more = false;
                goto page_done;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                char **nk = realloc(keys, cap * sizeof(*keys));
                if (!nk) {
                    rc = rd_fail(r, S3C_ENOMEM, "out of memory seeking");
                    goto page_done;
                }
                keys = nk;
            }
            keys[n++] = res.keys[i];
            res.keys[i] = NULL;
        }
        more = res.truncated && res.next_token;
    page_done:
        free(token);
        token = more ? res.next_token : NULL;
        if (more)
            res.next_token = NULL;
        for (size_t i = 0; i < res.nkeys; i++)
            free(res.keys[i]);
        res.nkeys = 0;
        call_res_free(&res);
    }
    free(token);
    struct obj_header *hs = calloc(n ? n : 1, sizeof(*hs));
    bool *ok = calloc(n ? n : 1, sizeof(*ok));
    if (rc == 0 && (!hs || !ok))
        rc = rd_fail(r, S3C_ENOMEM, "out of memory seeking");
    if (rc == 0)
        rc = rd_read_headers(r, keys, n, hs, ok);
    size_t best = n;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (ok[i] && hs[i].first_seq <= r->from && hs[i].last_seq >= r->from &&
            (best == n || hs[i].epoch > hs[best].epoch))
            best = i;
    if (rc == 0 && best == n && lo > 0) {
        /* The manifest's max_batch_commits is a hint written by the log's writers (older
         * ones left it stale): an object longer than it starts below lo. Look from the
         * start instead of failing. */
        S3C_LOG(S3C_LOG_WARN,
                "event=reader_seek_widened prefix=%s from_seq=%" PRIu64
                " max_batch_commits=%" PRIu64
                " msg=\"no object within max_batch_commits below from_seq holds it\"",
                r->cfg.s3.prefix, r->from, max_batch);
        for (size_t i = 0; i < n; i++)
            free(keys[i]);
        free(keys);
        free(hs);
        free(ok);
        return rd_seek(r, UINT64_MAX);
    }
    if (rc == 0 && best == n)
        rc = rd_fail(r, S3C_ECORRUPT,
                     "no object of %slog/ holds seq %" PRIu64 " though the manifest says the log "
                     "reaches %" PRIu64,
                     r->cfg.s3.prefix, r->from, r->manifest_w);
    if (rc == 0) {
        r->last = hs[best].first_seq - 1;
        r->floor = hs[best].epoch; /* an object on the chain has its last fence's epoch */
    }
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
    free(hs);
    free(ok);
    return rc;
}

/* Reads the manifest and decides where the chain is entered. */
int rd_position(struct s3c_reader *r)
{
    char key[OBJ_KEY_MAX], perr[256];
    struct call_res res;
    struct manifest m = {0};
    snprintf(key, sizeof(key), "%smanifest.json", r->cfg.s3.prefix);
    struct call_req q = {.op = XPORT_OP_GET, .key = key, .first = 1, .last = 0};
    r->st.gets++;
    int rc = call_run(r->x, &r->cfg, &q, &res, r->error, sizeof(r->error));
    if (rc < 0)
        return r->err = rc;
    bool have = res.cls == XPORT_OK;
    if (have && manifest_parse((const char *)res.body, res.body_len, &m, perr, sizeof(perr)) < 0) {
        call_res_free(&res);
        return rd_fail(r, S3C_ECORRUPT, "%s: %s", key, perr);
    }
    call_res_free(&res);
    if (!have || r->from <= 1)
        goto from_start;
    r->manifest_w = m.durable_seq;
    if (r->from <= m.durable_seq)
        return rd_seek(r, m.max_batch_commits ? m.max_batch_commits : UINT64_MAX);
    /* Past the manifest's W: enter at the object ending there, if it really does. */
    if (m.durable_first_seq > 0) {
        char k[OBJ_KEY_MAX];
        char *keys[1] = {k};
        struct obj_header h;
        bool ok = false;
        obj_key(k, sizeof(k), r->cfg.s3.prefix, m.durable_first_seq);
        rc = rd_read_headers(r, keys, 1, &h, &ok);
        if (rc < 0)
            return rc;
        if (ok && h.last_seq == m.durable_seq) {
            r->last = m.durable_seq;
            r->floor = h.epoch;
            return 0;
        }
    }
from_start:
    if (have)
        r->manifest_w = m.durable_seq;
    r->last = 0;
    r->floor = 0;
    return 0;
}
