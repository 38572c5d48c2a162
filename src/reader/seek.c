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

/* A key of the seek's window and its header. */
struct rd_cand {
    char *key;
    uint64_t first; /* from the key */
    struct obj_header h;
    bool ok; /* its header read and valid */
};

static int rd_cand_cmp(const void *a, const void *b)
{
    const struct rd_cand *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* Lists the keys whose first seq lies in (lo, hi] and reads their headers, appending them
 * to *cs; with more than limit keys there, none of them is kept and *over is set. */
static int rd_seek_window(struct s3c_reader *r, uint64_t lo, uint64_t hi, size_t limit,
                          struct rd_cand **cs, size_t *n, size_t *cap, bool *over)
{
    char lp[OBJ_KEY_MAX], after[OBJ_KEY_MAX];
    struct call_res res;
    char *token = NULL;
    size_t n0 = *n;
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
            if (f > hi) {
                more = false;
                goto page_done;
            }
            if (*n - n0 >= limit) {
                *over = true;
                more = false;
                goto page_done;
            }
            if (*n == *cap) {
                size_t c = *cap ? *cap * 2 : 64;
                struct rd_cand *nc = realloc(*cs, c * sizeof(**cs));
                if (!nc) {
                    rc = rd_fail(r, S3C_ENOMEM, "out of memory seeking");
                    goto page_done;
                }
                *cs = nc;
                *cap = c;
            }
            (*cs)[(*n)++] = (struct rd_cand){.key = res.keys[i], .first = f};
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
    if (*over) {
        for (size_t i = n0; i < *n; i++)
            free((*cs)[i].key);
        *n = n0;
        return rc;
    }
    size_t m = *n - n0;
    char **keys = calloc(m ? m : 1, sizeof(*keys));
    struct obj_header *hs = calloc(m ? m : 1, sizeof(*hs));
    bool *ok = calloc(m ? m : 1, sizeof(*ok));
    if (rc == 0 && (!keys || !hs || !ok))
        rc = rd_fail(r, S3C_ENOMEM, "out of memory seeking");
    for (size_t i = 0; rc == 0 && i < m; i++)
        keys[i] = (*cs)[n0 + i].key;
    if (rc == 0)
        rc = rd_read_headers(r, keys, m, hs, ok);
    for (size_t i = 0; rc == 0 && i < m; i++) {
        (*cs)[n0 + i].h = hs[i];
        /* a header that does not start at its key's seq is not trusted as one */
        (*cs)[n0 + i].ok = ok[i] && hs[i].first_seq == (*cs)[n0 + i].first;
    }
    free(keys);
    free(hs);
    free(ok);
    return rc;
}

/* The seqs an object may hold: its header's, or for one whose header could not be read,
 * every seq its key allows (max_batch of them). */
static uint64_t rd_cand_last(const struct rd_cand *c, uint64_t max_batch)
{
    if (c->ok)
        return c->h.last_seq;
    return max_batch > UINT64_MAX - c->first ? UINT64_MAX : c->first + max_batch - 1;
}

struct rd_event {
    uint64_t pos;
    int d;
};

static int rd_event_cmp(const void *a, const void *b)
{
    const struct rd_event *x = a, *y = b;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* The chain's object holding s, from the window cs[0..n) (sorted; it holds every key in
 * (lo, s]), in *out; n when the window cannot tell yet (look further down).
 *
 * Several objects can hold s: an orphan (a fenced writer's PUT that landed past the fence),
 * or, after a run put its fence past a gap, that run's objects standing beside the chain
 * of an older epoch's writer, off it. No rule on epochs tells them apart (docs/format.md,
 * "Seeking"), so the seek finds an object that is certainly on the chain and follows it:
 * a seq P at or below s (so at or below the manifest's W: the chain covers it) that exactly
 * one object holds, among all the objects that may hold it (every key in (P - max_batch, P]
 * is in the window), is held by the chain's object. From there the chain goes by keys,
 * last + 1, up to the object holding s; below W every object so reached is the chain's
 * (a writer replaces an orphan at its key before W passes it). */
static int rd_seek_pick(struct s3c_reader *r, const struct rd_cand *cs, size_t n, uint64_t lo,
                        uint64_t s, uint64_t max_batch, size_t *out)
{
    *out = n;
    uint64_t a = lo == 0 ? 1 : (max_batch > UINT64_MAX - lo ? UINT64_MAX : lo + max_batch);
    if (a > s)
        return 0;
    struct rd_event *ev = calloc(2 * (n ? n : 1), sizeof(*ev));
    if (!ev)
        return rd_fail(r, S3C_ENOMEM, "out of memory seeking");
    size_t ne = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t f = cs[i].first > a ? cs[i].first : a, l = rd_cand_last(&cs[i], max_batch);
        l = l < s ? l : s;
        if (f > l)
            continue;
        ev[ne++] = (struct rd_event){f, +1};
        ev[ne++] = (struct rd_event){l + 1, -1};
    }
    qsort(ev, ne, sizeof(*ev), rd_event_cmp);
    uint64_t p = 0; /* the highest seq in [a, s] that exactly one object may hold */
    int cov = 0;
    for (size_t k = 0; k < ne;) {
        uint64_t at = ev[k].pos;
        while (k < ne && ev[k].pos == at)
            cov += ev[k++].d;
        uint64_t until = k < ne ? ev[k].pos - 1 : s; /* cov holds on [at, until] */
        if (cov == 1 && at <= s)
            p = until < s ? until : s;
    }
    free(ev);
    if (p == 0)
        return 0;
    size_t u = n;
    for (size_t i = 0; i < n && u == n; i++)
        if (cs[i].first <= p && rd_cand_last(&cs[i], max_batch) >= p)
            u = i;
    for (;;) {
        if (!cs[u].ok)
            return rd_fail(r, S3C_ECORRUPT,
                           "%s: the log's object there has no readable header (seeking seq "
                           "%" PRIu64 ")",
                           cs[u].key, s);
        if (cs[u].h.last_seq >= s)
            break;
        uint64_t next = cs[u].h.last_seq + 1;
        struct rd_cand key = {.first = next};
        const struct rd_cand *c = bsearch(&key, cs, n, sizeof(*cs), rd_cand_cmp);
        if (!c)
            return rd_fail(r, S3C_ECORRUPT,
                           "no object of %slog/ starts at seq %" PRIu64 " after %s, though the "
                           "manifest says the log reaches %" PRIu64,
                           r->cfg.s3.prefix, next, cs[u].key, r->manifest_w);
        u = (size_t)(c - cs);
    }
    *out = u;
    return 0;
}

static void rd_cands_free(struct rd_cand *cs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(cs[i].key);
    free(cs);
}

/* Objects disagree about the seqs below from_seq for longer than a seek should read:
 * the chain is read from seq 1, where it starts (slow, never wrong). */
static void rd_seek_from_start(struct s3c_reader *r, uint64_t s, size_t headers)
{
    S3C_LOG(S3C_LOG_WARN,
            "event=reader_seek_from_start prefix=%s from_seq=%" PRIu64 " headers_read=%zu "
            "msg=\"several objects hold the seqs below from_seq; reading the chain from seq 1\"",
            r->cfg.s3.prefix, s, headers);
    r->last = 0;
    r->floor = 0;
}

/* Positions the reader before the object holding seq `from` (1 < from <= the manifest's
 * W): the keys whose first seq lies within max_batch_commits below it, their headers read,
 * and where that cannot tell which object holding it is the chain's, a window twice as far
 * down, and so on (rd_seek_pick), up to RD_SEEK_WIDEN_MAX max_batch_commits or
 * RD_SEEK_HEADERS_MAX headers; past that the log is read from seq 1. */
static int rd_seek(struct s3c_reader *r, uint64_t max_batch)
{
    uint64_t s = r->from, hi = s, lo = s > max_batch ? s - max_batch : 0;
    struct rd_cand *cs = NULL;
    size_t n = 0, cap = 0, best = 0;
    int rc = 0;
    for (bool first = true;; first = false) {
        /* (the first window as before: unbounded; the ones below it within the cap) */
        bool over = false;
        size_t limit = first ? SIZE_MAX : n < RD_SEEK_HEADERS_MAX ? RD_SEEK_HEADERS_MAX - n : 0;
        rc = rd_seek_window(r, lo, hi, limit, &cs, &n, &cap, &over);
        if (rc != 0)
            break;
        if (over) {
            rd_seek_from_start(r, s, n);
            rd_cands_free(cs, n);
            return 0;
        }
        if (n > 1)
            qsort(cs, n, sizeof(*cs), rd_cand_cmp);
        bool held = false;
        for (size_t i = 0; i < n && !held; i++)
            held = cs[i].first <= s && rd_cand_last(&cs[i], max_batch) >= s;
        if (first && !held && lo > 0) {
            /* The manifest's max_batch_commits is a hint written by the log's writers
             * (older ones left it stale): an object longer than it starts below lo. Look
             * from the start instead of failing. */
            S3C_LOG(S3C_LOG_WARN,
                    "event=reader_seek_widened prefix=%s from_seq=%" PRIu64
                    " max_batch_commits=%" PRIu64
                    " msg=\"no object within max_batch_commits below from_seq holds it\"",
                    r->cfg.s3.prefix, s, max_batch);
            rd_cands_free(cs, n);
            return rd_seek(r, UINT64_MAX);
        }
        if (!held) {
            rc = rd_fail(r, S3C_ECORRUPT,
                         "no object of %slog/ holds seq %" PRIu64 " though the manifest says "
                         "the log reaches %" PRIu64,
                         r->cfg.s3.prefix, s, r->manifest_w);
            break;
        }
        rc = rd_seek_pick(r, cs, n, lo, s, max_batch, &best);
        if (rc != 0 || best < n)
            break;
        uint64_t width = s - lo;
        if (lo == 0 || width / RD_SEEK_WIDEN_MAX >= max_batch || n >= RD_SEEK_HEADERS_MAX) {
            rd_seek_from_start(r, s, n);
            rd_cands_free(cs, n);
            return 0;
        }
        hi = lo;
        lo = lo > width ? lo - width : 0;
    }
    if (rc == 0) {
        r->last = cs[best].first - 1;
        r->floor = 0;
        r->floor_at_w = true;
    }
    rd_cands_free(cs, n);
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
    int prc =
        have ? manifest_parse((const char *)res.body, res.body_len, &m, perr, sizeof(perr)) : 0;
    if (prc < 0) { /* another version's (S3C_EFORMAT), out of memory, or damaged */
        call_res_free(&res);
        return rd_fail(r, prc == S3C_EFORMAT || prc == S3C_ENOMEM ? prc : S3C_ECORRUPT, "%s: %s",
                       key, perr);
    }
    call_res_free(&res);
    if (!have || r->from <= 1)
        goto from_start;
    r->manifest_w = m.durable_seq;
    r->manifest_start_epoch = m.start_epoch;
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
            /* The chain's floor there is the last EPOCH_START's epoch, which the manifest
             * names; the object's own epoch can be higher (a run's objects that joined
             * the chain without its fence), and an older writer's next object is still
             * the chain's. Manifests without it: the object's epoch. */
            r->floor = m.start_epoch ? m.start_epoch : h.epoch;
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
