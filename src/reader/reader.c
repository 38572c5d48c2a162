/* Reading the log back (s3c_reader in include/s3commit.h): follows the chain of objects
 * from a seq with the writer protocol's rules, keeping a window of GETs in flight ahead of
 * the caller on its own loop and transport. It must never return a record past the end of
 * the chain, twice, out of order, or without its CRC checked. */
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "config/config.h"
#include "format/manifest.h"
#include "format/objfmt.h"
#include "loop/loop.h"
#include "s3commit.h"
#include "transport/transport.h"
#include "writer/call.h"

#define RD_MAX_WINDOW 64
#define RD_SEEK_WINDOW 16 /* header GETs in flight while seeking */

enum rslot_state { RS_IDLE, RS_WIRE, RS_DONE, RS_MISSING, RS_FAILED };

struct rslot {
    struct s3c_reader *rd;
    char key[OBJ_KEY_MAX];
    uint64_t first; /* from the key */
    enum rslot_state state;
    int attempts;
    uint64_t retry_at_ns; /* RS_IDLE after a failure: not before */
    bool header_only;     /* a seek's header read */
    bool dropped;         /* dropped while its GET was on the wire: freed when it lands */
    struct rslot *next;   /* the reader's list of dropped slots */
    unsigned char *body;
    size_t len, cap;
    char error[1024];
};

struct rpage { /* one ListObjectsV2 page: keys not yet taken into slots */
    char **keys;
    uint64_t *first;
    size_t n, pos;
};

struct s3c_reader {
    struct s3c_config cfg; /* a copy; secrets wiped at close */
    struct loop *loop;
    struct xport *x;
    uint64_t from, to;
    bool follow;
    uint64_t poll_ns;
    int window;

    uint64_t last;       /* the last seq of the chain taken so far: the next object is at +1 */
    uint64_t floor;      /* epoch of the last EPOCH_START on the chain so far */
    uint64_t manifest_w; /* the manifest's durable_seq at open: the chain reaches it */

    /* the object being returned */
    unsigned char *cur;
    size_t cur_len, cur_off, cur_cap;
    /* object buffers kept for reuse: a fresh 1 MiB malloc per object costs page faults */
    unsigned char *spare[RD_MAX_WINDOW + 2];
    size_t spare_cap[RD_MAX_WINDOW + 2];
    int nspare;
    uint32_t cur_left;
    struct obj_header cur_h;

    /* keys ahead, in key order: the page, then GETs in the window */
    struct rpage page;
    struct rslot *slots[RD_MAX_WINDOW];
    int nslots; /* slots[0] is the lowest key */
    char *token;
    bool list_wire, list_more, list_need;
    int list_attempts;
    uint64_t list_retry_at;
    uint64_t poll_at; /* follow: when to look for more */
    bool at_end;      /* the last look found the end of the chain */

    struct rslot *dropped; /* slots whose GET is still on the wire */
    int err;
    char error[1024];
    struct s3c_reader_stats st;
};

static int rd_fail(struct s3c_reader *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int rd_fail(struct s3c_reader *r, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof(r->error), fmt, ap);
    va_end(ap);
    r->err = code;
    return code;
}

static uint64_t rd_backoff_ns(const struct s3c_reader *r, int attempt)
{
    const struct cfg_persistence *p = &r->cfg.persistence;
    uint64_t ms = (uint64_t)p->retry_base_delay_ms << (attempt - 1 < 20 ? attempt - 1 : 20);
    if (ms > (uint64_t)p->max_retry_delay_ms)
        ms = (uint64_t)p->max_retry_delay_ms;
    return ms * 1000000u;
}

/* ---- the page and the window ------------------------------------------------------ */

static void rd_page_free(struct rpage *pg)
{
    for (size_t i = 0; i < pg->n; i++)
        free(pg->keys[i]);
    free(pg->keys);
    free(pg->first);
    memset(pg, 0, sizeof(*pg));
}

/* A buffer of at least len bytes, from the spares when one is there. */
static unsigned char *rd_buf_get(struct s3c_reader *r, size_t len, size_t *cap)
{
    if (len == 0)
        len = 1;
    if (r->nspare > 0) {
        int i = --r->nspare;
        if (r->spare_cap[i] >= len) {
            *cap = r->spare_cap[i];
            return r->spare[i];
        }
        free(r->spare[i]);
    }
    unsigned char *p = malloc(len);
    *cap = p ? len : 0;
    return p;
}

static void rd_buf_put(struct s3c_reader *r, unsigned char *p, size_t cap)
{
    if (!p)
        return;
    if (r->nspare < (int)(sizeof(r->spare) / sizeof(r->spare[0]))) {
        r->spare[r->nspare] = p;
        r->spare_cap[r->nspare++] = cap;
    } else {
        free(p);
    }
}

static void rd_slot_free(struct rslot *s)
{
    if (!s)
        return;
    rd_buf_put(s->rd, s->body, s->cap);
    free(s);
}

static void rd_on_get(void *ctx, const struct xport_result *res)
{
    struct rslot *s = ctx;
    struct s3c_reader *r = s->rd;
    if (s->dropped) { /* dropped while the GET was on the wire */
        for (struct rslot **p = &r->dropped; *p; p = &(*p)->next) {
            if (*p == s) {
                *p = s->next;
                break;
            }
        }
        rd_slot_free(s);
        return;
    }
    if (res->cls == XPORT_OK) {
        s->body = rd_buf_get(r, res->body_len, &s->cap);
        if (!s->body) {
            s->state = RS_FAILED;
            snprintf(s->error, sizeof(s->error), "%s: out of memory for %zu bytes", s->key,
                     res->body_len);
            return;
        }
        memcpy(s->body, res->body, res->body_len);
        s->len = res->body_len;
        s->state = RS_DONE;
    } else if (res->cls == XPORT_NOT_FOUND) {
        s->state = RS_MISSING;
    } else if (res->cls == XPORT_RETRYABLE &&
               s->attempts <= r->cfg.persistence.max_retry_attempts) {
        s->state = RS_IDLE;
        s->retry_at_ns = s3c__now_ns() + rd_backoff_ns(r, s->attempts);
        S3C_LOG(S3C_LOG_WARN, "event=read_retry key=%s attempt=%d error=\"%s\"", s->key,
                s->attempts, res->error);
    } else {
        s->state = RS_FAILED;
        snprintf(s->error, sizeof(s->error), "%s", res->error);
    }
}

static int rd_start_get(struct s3c_reader *r, struct rslot *s)
{
    s->attempts++;
    s->state = RS_WIRE;
    r->st.gets++;
    int rc = s->header_only ? xport_get(r->x, s->key, 0, OBJ_HEADER_BYTES - 1, rd_on_get, s)
                            : xport_get(r->x, s->key, 1, 0, rd_on_get, s);
    if (rc < 0) {
        s->state = RS_FAILED;
        snprintf(s->error, sizeof(s->error), "%s: cannot start the GET: %s", s->key,
                 s3c_strerror(rc));
    }
    return rc;
}

/* Drops the lowest slot (a GET still on the wire frees its slot when it lands). */
static void rd_drop_head(struct s3c_reader *r)
{
    struct rslot *s = r->slots[0];
    memmove(r->slots, r->slots + 1, (size_t)(r->nslots - 1) * sizeof(r->slots[0]));
    r->nslots--;
    if (s->state == RS_WIRE) {
        s->dropped = true;
        s->next = r->dropped;
        r->dropped = s;
    } else {
        rd_slot_free(s);
    }
}

static void rd_drop_all(struct s3c_reader *r)
{
    while (r->nslots > 0)
        rd_drop_head(r);
    rd_page_free(&r->page);
    free(r->token);
    r->token = NULL;
    r->list_more = false;
}

static void rd_on_list(void *ctx, const struct xport_result *res)
{
    struct s3c_reader *r = ctx;
    r->list_wire = false;
    if (res->cls != XPORT_OK) {
        if (res->cls == XPORT_RETRYABLE &&
            ++r->list_attempts <= r->cfg.persistence.max_retry_attempts) {
            r->list_need = true;
            r->list_retry_at = s3c__now_ns() + rd_backoff_ns(r, r->list_attempts);
            return;
        }
        rd_fail(r, res->cls == XPORT_RETRYABLE ? S3C_ENETWORK : S3C_ES3, "listing %slog/: %s",
                r->cfg.s3.prefix, res->error);
        return;
    }
    r->list_attempts = 0;
    rd_page_free(&r->page);
    r->page.keys = calloc(res->nentries ? res->nentries : 1, sizeof(char *));
    r->page.first = calloc(res->nentries ? res->nentries : 1, sizeof(uint64_t));
    if (!r->page.keys || !r->page.first) {
        rd_fail(r, S3C_ENOMEM, "out of memory listing %slog/", r->cfg.s3.prefix);
        return;
    }
    for (size_t i = 0; i < res->nentries; i++) {
        uint64_t f;
        if (!obj_key_parse(res->entries[i].key, r->cfg.s3.prefix, &f))
            continue; /* not a log object: left alone */
        size_t kl = strlen(res->entries[i].key) + 1;
        char *k = malloc(kl);
        if (!k) {
            rd_fail(r, S3C_ENOMEM, "out of memory listing %slog/", r->cfg.s3.prefix);
            return;
        }
        memcpy(k, res->entries[i].key, kl);
        r->page.keys[r->page.n] = k;
        r->page.first[r->page.n++] = f;
    }
    free(r->token);
    r->token = NULL;
    r->list_more = res->truncated && res->next_token && res->next_token[0];
    if (r->list_more) {
        size_t tl = strlen(res->next_token) + 1;
        r->token = malloc(tl);
        if (!r->token)
            rd_fail(r, S3C_ENOMEM, "out of memory listing %slog/", r->cfg.s3.prefix);
        else
            memcpy(r->token, res->next_token, tl);
    }
}

/* Lists from the chain's end (a fresh listing) or the next page. */
static void rd_start_list(struct s3c_reader *r, bool fresh)
{
    char lp[OBJ_KEY_MAX], after[OBJ_KEY_MAX];
    snprintf(lp, sizeof(lp), "%slog/", r->cfg.s3.prefix);
    obj_key(after, sizeof(after), r->cfg.s3.prefix, r->last);
    if (fresh) {
        rd_drop_all(r);
        r->list_attempts = 0;
    }
    r->list_need = false;
    r->list_wire = true;
    r->st.lists++;
    int rc = xport_list(r->x, lp, r->token ? NULL : after, r->token, 1000, rd_on_list, r);
    if (rc < 0) {
        r->list_wire = false;
        rd_fail(r, rc, "listing %slog/: cannot start the request: %s", r->cfg.s3.prefix,
                s3c_strerror(rc));
    }
}

/* Keeps the window full: keys from the page into slots, their GETs started. */
static void rd_top_up(struct s3c_reader *r)
{
    uint64_t now = s3c__now_ns();
    while (r->nslots < r->window && r->page.pos < r->page.n) {
        struct rslot *s = calloc(1, sizeof(*s));
        if (!s) {
            rd_fail(r, S3C_ENOMEM, "out of memory reading %slog/", r->cfg.s3.prefix);
            return;
        }
        s->rd = r;
        snprintf(s->key, sizeof(s->key), "%s", r->page.keys[r->page.pos]);
        s->first = r->page.first[r->page.pos++];
        r->slots[r->nslots++] = s;
    }
    for (int i = 0; i < r->nslots; i++) {
        struct rslot *s = r->slots[i];
        if (s->state == RS_IDLE && s->retry_at_ns <= now)
            rd_start_get(r, s);
    }
    if (r->page.pos == r->page.n && r->list_more && !r->list_wire && r->nslots < r->window)
        rd_start_list(r, false);
}

/* ---- taking the next object on the chain ------------------------------------------ */

enum rd_step { RD_GOT, RD_WAIT, RD_END, RD_ERROR };

/* Looks at the lowest key: off the chain (skipped), the next object (taken when read),
 * or a gap / an orphan (the end of the chain). */
static enum rd_step rd_next_object(struct s3c_reader *r)
{
    char why[256];
    for (;;) {
        if (r->err)
            return RD_ERROR;
        if (r->nslots == 0) {
            if (r->list_wire || r->list_need || (r->list_more && r->page.pos == r->page.n))
                return RD_WAIT;
            if (r->page.pos < r->page.n)
                return RD_WAIT; /* top-up will make slots */
            return RD_END;
        }
        struct rslot *s = r->slots[0];
        if (s->first <= r->last) { /* inside the range of an object on the chain */
            r->st.orphans_skipped++;
            rd_drop_head(r);
            continue;
        }
        if (s->first != r->last + 1)
            return RD_END; /* a gap: nothing at last + 1 */
        if (s->state == RS_WIRE || s->state == RS_IDLE)
            return RD_WAIT;
        if (s->state == RS_MISSING) {
            rd_drop_head(r); /* deleted since the listing */
            return RD_END;
        }
        if (s->state == RS_FAILED) {
            rd_fail(r, S3C_ES3, "%s: %s", s->key, s->error);
            return RD_ERROR;
        }
        struct obj_header h;
        if (s->len >= OBJ_HEADER_BYTES && (s->body[10] | s->body[11] << 8) & OBJ_FLAG_ZSTD) {
            unsigned char *plain;
            size_t plen;
            int zrc = obj_inflate(s->body, s->len, &plain, &plen, why, sizeof(why));
            if (zrc < 0) {
                rd_fail(r, zrc, "%s: %s", s->key, why);
                return RD_ERROR;
            }
            rd_buf_put(r, s->body, s->cap);
            s->body = plain;
            s->len = plen;
            s->cap = plen; /* plain's own size: a spare keeps the capacity it really has */
        }
        if (obj_decode(s->body, s->len, &h, NULL, NULL, why, sizeof(why)) != 0) {
            rd_fail(r, S3C_ECORRUPT, "%s: %s", s->key, why);
            return RD_ERROR;
        }
        if (h.first_seq != s->first) {
            rd_fail(r, S3C_ECORRUPT, "%s: the header starts at seq %" PRIu64, s->key, h.first_seq);
            return RD_ERROR;
        }
        if (h.epoch < r->floor)
            return RD_END; /* an orphan ends the chain (its writer was fenced) */
        if (h.flags & OBJ_FLAG_EPOCH_START)
            r->floor = h.epoch;
        rd_buf_put(r, r->cur, r->cur_cap);
        r->cur = s->body;
        r->cur_len = s->len;
        r->cur_cap = s->cap;
        s->body = NULL;
        r->cur_off = OBJ_HEADER_BYTES;
        r->cur_left = h.count;
        r->cur_h = h;
        r->last = h.last_seq;
        r->st.objects++;
        r->st.last_seq = r->last;
        rd_drop_head(r);
        return RD_GOT;
    }
}

static uint32_t rd_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The next record of the current object (checked whole by obj_decode already). */
static bool rd_take_record(struct s3c_reader *r, struct s3c_record *rec)
{
    while (r->cur_left > 0) {
        const unsigned char *p = r->cur + r->cur_off;
        uint32_t len = rd_le32(p);
        uint64_t seq = (uint64_t)rd_le32(p + 8) | (uint64_t)rd_le32(p + 12) << 32;
        r->cur_off += OBJ_RECORD_HEADER_BYTES + len;
        r->cur_left--;
        if (seq < r->from)
            continue;
        rec->seq = seq;
        rec->data = p + OBJ_RECORD_HEADER_BYTES;
        rec->len = len;
        rec->control = (r->cur_h.flags & OBJ_FLAG_EPOCH_START) != 0;
        rec->epoch = r->cur_h.epoch;
        return true;
    }
    return false;
}

int s3c_reader_next(s3c_reader *r, struct s3c_record *rec, int timeout_ms)
{
    if (!r || !rec)
        return S3C_EINVAL;
    uint64_t deadline =
        timeout_ms < 0 ? UINT64_MAX : s3c__now_ns() + (uint64_t)timeout_ms * 1000000u;
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
        uint64_t now = s3c__now_ns(), wake = deadline;
        if (step == RD_END) {
            if (!r->at_end) {
                r->at_end = true;
                r->st.beyond_end = (uint64_t)r->nslots + (r->page.n - r->page.pos);
                r->poll_at = now + r->poll_ns;
            }
            if (!r->follow) {
                if (r->last < r->manifest_w)
                    return rd_fail(r, S3C_ECORRUPT,
                                   "%slog/%020" PRIu64 ".s3c is missing: the chain ends at seq "
                                   "%" PRIu64 " but the manifest says the log reaches %" PRIu64,
                                   r->cfg.s3.prefix, r->last + 1, r->last, r->manifest_w);
                return S3C_EEND;
            }
            if (now >= r->poll_at) { /* look for more: list again from the end */
                r->poll_at = now + r->poll_ns;
                r->at_end = false;
                rd_start_list(r, true);
                continue;
            }
            if (r->poll_at < wake)
                wake = r->poll_at;
        }
        if (r->list_need && !r->list_wire) {
            if (r->list_retry_at <= now) {
                rd_start_list(r, false);
                continue;
            }
            if (r->list_retry_at < wake)
                wake = r->list_retry_at;
        }
        for (int i = 0; i < r->nslots; i++)
            if (r->slots[i]->state == RS_IDLE && r->slots[i]->retry_at_ns < wake)
                wake = r->slots[i]->retry_at_ns;
        if (now >= deadline)
            return S3C_ETIMEDOUT;
        uint64_t ms =
            wake == UINT64_MAX ? 1000 : (wake > now ? (wake - now + 999999) / 1000000 : 0);
        int rc = loop_run_once(r->loop, (int)(ms > 1000 ? 1000 : ms));
        if (rc < 0)
            return rd_fail(r, rc, "the event loop failed: %s", s3c_strerror(rc));
    }
}

/* ---- open: where to start ----------------------------------------------------------- */

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
static int rd_position(struct s3c_reader *r)
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
    /* A connection per GET in flight, and a spare. */
    r->cfg.persistence.target_pool_size = r->window + 1;
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
    for (struct rslot *d = r->dropped, *nx; d; d = nx) {
        nx = d->next;
        rd_slot_free(d);
    }
    loop_free(r->loop);
    free(r->cur);
    for (int i = 0; i < r->nspare; i++)
        free(r->spare[i]);
    OPENSSL_cleanse(&r->cfg, sizeof(r->cfg));
    free(r);
}
