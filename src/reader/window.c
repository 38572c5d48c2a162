/* The reader's prefetch window: keys from ListObjectsV2 pages become slots, each a GET
 * kept in flight ahead of the caller on the reader's loop, retried with the stage's
 * backoff. It never decides what is on the chain (chain.c does). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "reader/reader_int.h"

static void rd_page_free(struct rpage *pg)
{
    for (size_t i = 0; i < pg->n; i++)
        free(pg->keys[i]);
    free(pg->keys);
    free(pg->first);
    memset(pg, 0, sizeof(*pg));
}

void rd_buf_done(struct s3c_reader *r, unsigned char *buf, size_t cap)
{
    if (r->x)
        xport_give_body(r->x, buf, cap);
    else
        free(buf);
}

void rd_slot_free(struct rslot *s)
{
    if (!s)
        return;
    rd_buf_done(s->rd, s->body, s->cap);
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
        s->body = xport_take_body(res, &s->cap); /* no copy: the buffer received into */
        s->len = s->body ? res->body_len : 0;
        s->state = RS_DONE;
    } else if (res->cls == XPORT_NOT_FOUND) {
        s->state = RS_MISSING;
    } else if (res->cls == XPORT_RETRYABLE &&
               s->attempts <= r->cfg.persistence.max_retry_attempts) {
        s->state = RS_IDLE;
        s->retry_at_ns = s3c__now_ns() + rd_backoff_ns(r, s->attempts);
        S3C_LOG(S3C_LOG_WARN, "event=read_retry key=%s attempt=%d error=\"%s\"", s->key,
                s->attempts, res->error);
    } else if (res->range_unsatisfiable) {
        /* a header read of an empty object: read, and holding no header (not a failed
         * read, which stops the reader with an S3 error) */
        s->body = NULL;
        s->len = 0;
        s->state = RS_DONE;
    } else {
        s->state = RS_FAILED;
        snprintf(s->error, sizeof(s->error), "%s", res->error);
    }
}

/* Each piece of an object's body as it lands: its CRCs computed while it is in cache. */
static void rd_on_data(void *ctx, const unsigned char *body, uint64_t off,
                       const unsigned char *piece, size_t n)
{
    struct rslot *s = ctx;
    obj_stream_feed(&s->st, body, off, piece, n);
}

int rd_start_get(struct s3c_reader *r, struct rslot *s)
{
    s->attempts++;
    s->state = RS_WIRE;
    r->st.gets++;
    obj_stream_init(&s->st); /* every attempt from byte 0 */
    /* Whole objects are received straight into their buffers (docs/programs.md, "Reader
     * throughput": libcurl's own receive path copies every byte once more). */
    int rc = s->header_only ? xport_get_direct_range(r->x, s->key, 0, OBJ_HEADER_BYTES - 1, NULL,
                                                     NULL, rd_on_get, s)
                            : xport_get_direct(r->x, s->key, rd_on_data, s, rd_on_get, s);
    if (rc < 0) {
        s->state = RS_FAILED;
        snprintf(s->error, sizeof(s->error), "%s: cannot start the GET: %s", s->key,
                 s3c_strerror(rc));
    }
    return rc;
}

/* Drops the lowest slot (a GET still on the wire frees its slot when it lands). */
void rd_drop_head(struct s3c_reader *r)
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

void rd_drop_all(struct s3c_reader *r)
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
void rd_start_list(struct s3c_reader *r, bool fresh)
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

/* GETs the window counts as in flight: on the wire or waiting for a retry. */
static int rd_in_flight(const struct s3c_reader *r)
{
    int n = 0;
    for (int i = 0; i < r->nslots; i++)
        n += r->slots[i]->state == RS_WIRE || r->slots[i]->state == RS_IDLE;
    return n;
}

/* Keeps the window full: keys from the page into slots, their GETs started. The window
 * counts GETs in flight, not slots: an object read ahead of a slow head gives its
 * connection to the next key while it waits (up to r->ahead of them), so one slow
 * answer does not idle the other connections (docs/programs.md, "Reader throughput"). */
void rd_top_up(struct s3c_reader *r)
{
    uint64_t now = s3c__now_ns();
    int busy = rd_in_flight(r);
    while (busy < r->window && r->nslots < r->window + r->ahead && r->page.pos < r->page.n) {
        struct rslot *s = calloc(1, sizeof(*s));
        if (!s) {
            rd_fail(r, S3C_ENOMEM, "out of memory reading %slog/", r->cfg.s3.prefix);
            return;
        }
        s->rd = r;
        snprintf(s->key, sizeof(s->key), "%s", r->page.keys[r->page.pos]);
        s->first = r->page.first[r->page.pos++];
        s->state = RS_IDLE; /* started below */
        r->slots[r->nslots++] = s;
        busy++;
    }
    for (int i = 0; i < r->nslots; i++) {
        struct rslot *s = r->slots[i];
        if (s->state == RS_IDLE && s->retry_at_ns <= now)
            rd_start_get(r, s);
    }
    if (r->page.pos == r->page.n && r->list_more && !r->list_wire && busy < r->window &&
        r->nslots < r->window + r->ahead)
        rd_start_list(r, false);
}
