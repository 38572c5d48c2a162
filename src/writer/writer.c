/* The open-time writer protocol (writer.h): take the next epoch with a compare-and-swap on
 * the manifest, find the end of the chain from the manifest's hint, and fence it with our
 * EPOCH_START object. It must never overwrite an object that continues the chain, never
 * trust a 412 without reading back, and never start from a hint it has not followed. */
#include "writer/writer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "s3commit.h"
#include "writer/call.h"

#define WRITER_CAS_TRIES 20     /* manifest compare-and-swap rounds before giving up */
#define WRITER_FENCE_TRIES 50   /* chain ends found and fences tried before giving up */
#define WRITER_HEADER_WINDOW 16 /* header GETs in flight while following a listing */

uint64_t writer_unix_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

void writer_make_id(char *out, size_t cap)
{
    char host[64] = "";
    if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
        snprintf(host, sizeof(host), "unknown");
    for (char *c = host; *c; c++)
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
            *c = '_';
    uint64_t r = s3c__now_ns() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() << 32;
    snprintf(out, cap, "%s:%d:%08x", host, (int)getpid(), (unsigned)(r >> 32));
}

void writer_if_match(const char *etag, bool unquoted, char *out, size_t cap)
{
    size_t n = strlen(etag);
    bool quoted = n >= 2 && etag[0] == '"' && etag[n - 1] == '"';
    if (unquoted && quoted)
        snprintf(out, cap, "%.*s", (int)(n - 2), etag + 1);
    else if (!unquoted && !quoted)
        snprintf(out, cap, "\"%s\"", etag);
    else
        snprintf(out, cap, "%s", etag);
}

/* ---- step 1: the epoch ---------------------------------------------------------- */

struct wopen {
    struct xport *x;
    const struct s3c_config *cfg;
    struct writer_state *ws;
    char *err;
    size_t errlen;
    char key[OBJ_KEY_MAX];
    struct manifest found; /* the manifest as read (format 0: there was none) */
};

static int wopen_manifest_key(const struct s3c_config *cfg, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%smanifest.json", cfg->s3.prefix);
    return n < 0 || (size_t)n >= cap ? S3C_EINVAL : 0;
}

/* A prefix without a manifest may hold a log of the version-1 layout: refuse it. */
static int wopen_refuse_v1(struct wopen *o)
{
    char pfx[OBJ_KEY_MAX];
    struct call_res res;
    snprintf(pfx, sizeof(pfx), "%s0", o->cfg->s3.prefix); /* v1 keys start with the epoch */
    struct call_req q = {.op = XPORT_OP_LIST, .list_prefix = pfx, .max_keys = 10};
    int rc = call_run(o->x, o->cfg, &q, &res, o->err, o->errlen);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < res.nkeys; i++) {
        if (obj_key_is_v1(res.keys[i], o->cfg->s3.prefix)) {
            snprintf(o->err, o->errlen,
                     "s3://%s/%s holds objects of the version-1 log layout (e.g. %s); this "
                     "s3commit writes layout version 2 (log/<seq>.s3c with a manifest) and "
                     "will not mix them: set s3.prefix to a new prefix, or move the old "
                     "objects away",
                     o->cfg->s3.bucket, o->cfg->s3.prefix, res.keys[i]);
            call_res_free(&res);
            return S3C_EFORMAT;
        }
    }
    call_res_free(&res);
    return 0;
}

/* Writes the manifest m: created (If-None-Match) when etag is NULL, else replaced under
 * If-Match. *landed: 2xx. A 412 or 409 leaves *landed false (the caller re-reads). */
static int wopen_put_manifest(struct wopen *o, const struct manifest *m, const char *etag,
                              bool *landed)
{
    char body[MANIFEST_MAX_BYTES], im[300];
    int n = manifest_encode(m, body, sizeof(body));
    struct iovec v = {body, (size_t)(n > 0 ? n : 0)};
    struct call_res res;
    bool cond = o->cfg->s3.conditional_writes;
    struct call_req q = {.op = XPORT_OP_PUT, .key = o->key, .iov = &v, .iovcnt = 1};
    *landed = false;
    if (n < 0)
        return S3C_EINVAL;
    if (cond && !etag)
        q.if_none_match = true;
    if (cond && etag) {
        writer_if_match(etag, o->ws->etag_unquoted, im, sizeof(im));
        q.if_match = im;
    }
    int rc = call_run(o->x, o->cfg, &q, &res, o->err, o->errlen);
    if (rc < 0)
        return rc;
    if (res.cls == XPORT_OK) {
        *landed = true;
        snprintf(o->ws->manifest_etag, sizeof(o->ws->manifest_etag), "%s", res.etag);
    }
    call_res_free(&res);
    return 0;
}

/* Reads the manifest into o->found (format 0 when there is none) and its ETag. */
static int wopen_get_manifest(struct wopen *o, char *etag, size_t cap)
{
    struct call_res res;
    struct call_req q = {.op = XPORT_OP_GET, .key = o->key, .first = 1, .last = 0};
    char perr[256];
    memset(&o->found, 0, sizeof(o->found));
    etag[0] = '\0';
    int rc = call_run(o->x, o->cfg, &q, &res, o->err, o->errlen);
    if (rc < 0)
        return rc;
    if (res.cls == XPORT_OK) {
        snprintf(etag, cap, "%s", res.etag);
        int prc =
            manifest_parse((const char *)res.body, res.body_len, &o->found, perr, sizeof(perr));
        if (prc == S3C_ENOMEM) {
            snprintf(o->err, o->errlen, "%s: %s", o->key, perr);
            call_res_free(&res);
            return S3C_ENOMEM;
        }
        if (prc == S3C_EFORMAT) { /* another version's: deleting it is not the fix */
            snprintf(o->err, o->errlen, "%s: %s", o->key, perr);
            call_res_free(&res);
            return S3C_EFORMAT;
        }
        if (prc < 0) {
            snprintf(o->err, o->errlen,
                     "%s: %s; if it was damaged, delete it (the next open lists the log to "
                     "find its end)",
                     o->key, perr);
            call_res_free(&res);
            return S3C_ECORRUPT;
        }
    }
    call_res_free(&res);
    return 0;
}

/* Step 1: epoch = max(manifest epoch, floor) + 1, by compare-and-swap. */
static int wopen_take_epoch(struct wopen *o, uint64_t floor)
{
    struct writer_state *ws = o->ws;
    char etag[256], sent[256] = "";
    for (int round = 0; round < WRITER_CAS_TRIES; round++) {
        int rc = wopen_get_manifest(o, etag, sizeof(etag));
        if (rc < 0)
            return rc;
        if (sent[0] && etag[0] && strcmp(etag, sent) == 0 && !ws->etag_unquoted) {
            /* The store refused If-Match with the very ETag it holds: it wants the ETag
             * unquoted (Ceph RGW 16 compares the raw value). Ask it that way from now on. */
            ws->etag_unquoted = true;
            S3C_LOG(S3C_LOG_WARN,
                    "event=etag_unquoted key=%s msg=\"the store refused If-Match with a "
                    "matching quoted ETag; sending ETags unquoted\"",
                    o->key);
        }
        if (o->found.format == 0 && round == 0 && floor == 0) {
            rc = wopen_refuse_v1(o);
            if (rc < 0)
                return rc;
        }
        uint64_t cur = o->found.format ? o->found.epoch : 0;
        struct manifest m = o->found;
        m.format = MANIFEST_FORMAT;
        m.epoch = (cur > floor ? cur : floor) + 1;
        snprintf(m.writer, sizeof(m.writer), "%s", ws->writer);
        m.started_at_ms = m.updated_at_ms = writer_unix_ms();
        bool landed;
        rc = wopen_put_manifest(o, &m, o->found.format ? etag : NULL, &landed);
        if (rc < 0)
            return rc;
        if (landed) {
            ws->epoch = m.epoch;
            ws->manifest_seq = m.durable_seq;
            ws->started_at_ms = m.started_at_ms;
            return 0;
        }
        snprintf(sent, sizeof(sent), "%s", etag); /* someone else won: read again */
    }
    snprintf(o->err, o->errlen,
             "%s: could not take the next epoch after %d tries (another writer keeps "
             "changing it, or the store refuses conditional writes: see "
             "s3.conditional_writes)",
             o->key, WRITER_CAS_TRIES);
    return S3C_ES3;
}

/* ---- step 2: the end of the chain ---------------------------------------------- */

struct wfetch;

struct wheader {
    struct wfetch *f; /* the fetch it belongs to */
    char *key;
    uint64_t first;
    bool done, ok, missing;
    bool newer;  /* not ok: an object of a later format version (h.version), not damage */
    int read_rc; /* the GET failed (S3C_ES3/S3C_ENETWORK): the read, not the object */
    struct obj_header h;
    char error[384];
    int attempts;
    bool waiting;         /* a retry after its backoff */
    uint64_t retry_at_ms; /* when */
};

struct wfetch {
    struct wopen *o;
    struct wheader *hs;
    size_t n, next, in_flight, done, waiting;
    uint64_t rng; /* the backoff's jitter */
    int rc;
};

static void wopen_on_header(void *ctx, const struct xport_result *r);

static int wopen_fetch_one(struct wfetch *f, size_t i)
{
    f->hs[i].attempts++;
    int rc = xport_get(f->o->x, f->hs[i].key, 0, OBJ_HEADER_BYTES - 1, wopen_on_header, &f->hs[i]);
    if (rc == 0)
        f->in_flight++;
    return rc;
}

static void wopen_on_header(void *ctx, const struct xport_result *r)
{
    struct wheader *h = ctx;
    struct wfetch *f = h->f;
    bool v1 = false;
    f->in_flight--;
    const struct cfg_persistence *p = &f->o->cfg->persistence;
    if (r->cls == XPORT_RETRYABLE && h->attempts <= p->max_retry_attempts) {
        /* Again after the stage's backoff (full jitter under the doubling ceiling), as
         * call_run does: read at once, a 503 storm of a fraction of a second used up every
         * try in a few milliseconds. */
        h->retry_at_ms = s3c__now_ms() + call_backoff_ms(p, h->attempts, &f->rng);
        h->waiting = true;
        f->waiting++;
        return;
    }
    h->done = true;
    f->done++;
    if (r->cls == XPORT_NOT_FOUND) {
        h->missing = true; /* deleted between the listing and the read */
    } else if (r->range_unsatisfiable) {
        /* Nothing at byte 0: an empty object (S3's answer to a range of one), which no
         * writer writes. Damage, not a failed read: every later open would read the same. */
        snprintf(h->error, sizeof(h->error), "it is empty (0 bytes)");
    } else if (r->cls != XPORT_OK) {
        snprintf(h->error, sizeof(h->error), "%s%s", r->error,
                 r->cls == XPORT_RETRYABLE ? " (retries exhausted)" : "");
        h->read_rc = r->fail == XPORT_FAIL_NONE || r->cls == XPORT_FATAL ? S3C_ES3 : S3C_ENETWORK;
    } else if (obj_header_decode(r->body, r->body_len, &h->h, &v1, h->error, sizeof(h->error)) ==
               0) {
        h->ok = true;
    } else if (v1) {
        snprintf(h->error, sizeof(h->error), "v1");
    } else if (h->h.version > OBJ_VERSION) {
        h->newer = true;
    }
}

/* The open's words for an object of a later format version: upgrading is the fix, not
 * repairing it. */
static int wopen_newer_object(const struct wheader *h, char *err, size_t errlen)
{
    snprintf(err, errlen,
             "%s is an object of format version %u, which a newer s3commit wrote (this one "
             "reads version %d): continue this log with that version or a later one (or, "
             "if no newer version ever wrote here, it is damaged: s3commit verify)",
             h->key, h->h.version, OBJ_VERSION);
    return S3C_EFORMAT;
}

/* Reads the headers of hs[0..n) with a window of GETs in flight. */
static int wopen_fetch_headers(struct wopen *o, struct wheader *hs, size_t n)
{
    struct wfetch f = {.o = o, .hs = hs, .n = n, .rng = s3c__now_ns() | 1};
    for (size_t i = 0; i < n; i++)
        hs[i].f = &f;
    while (f.done < n) {
        int timeout = 1000;
        uint64_t now = s3c__now_ms();
        for (size_t i = 0; f.waiting > 0 && i < f.next; i++) { /* retries due */
            if (!hs[i].waiting)
                continue;
            if (hs[i].retry_at_ms > now) {
                uint64_t t = hs[i].retry_at_ms - now;
                timeout = t < (uint64_t)timeout ? (int)t : timeout;
                continue;
            }
            hs[i].waiting = false;
            f.waiting--;
            int rc = wopen_fetch_one(&f, i);
            if (rc < 0) {
                hs[i].done = true;
                f.done++;
                snprintf(hs[i].error, sizeof(hs[i].error), "cannot start a GET: %s",
                         s3c_strerror(rc));
                hs[i].read_rc = rc;
            }
        }
        while (f.next < n && f.in_flight < WRITER_HEADER_WINDOW) {
            int rc = wopen_fetch_one(&f, f.next);
            if (rc < 0) {
                snprintf(o->err, o->errlen, "%s: cannot start a GET: %s", hs[f.next].key,
                         s3c_strerror(rc));
                while (f.in_flight > 0)
                    loop_run_once(xport_loop(o->x), 1000);
                return rc;
            }
            f.next++;
        }
        if (f.done == n)
            break;
        int rc = loop_run_once(xport_loop(o->x), timeout);
        if (rc < 0) {
            snprintf(o->err, o->errlen, "the event loop failed: %s", s3c_strerror(rc));
            return rc;
        }
    }
    o->ws->objects_read += n;
    return 0;
}

struct wchain {
    uint64_t end;         /* W: the last seq of the chain */
    uint64_t end_first;   /* the first seq of the object holding end */
    uint64_t start_epoch; /* epoch of the last EPOCH_START on it */
    uint64_t max_epoch;   /* the highest epoch met on it */
    uint64_t max_count;   /* the most records one object holds */
    /* writer_chain_follow: each object taken is shown to fn (nonzero: stop there), and the
     * walk stops once end reaches upto (0: the chain's end). */
    int (*fn)(void *ctx, const struct obj_header *h);
    void *ctx;
    uint64_t upto;
    int fn_rc;
};

/* Follows the chain from c->end (the last seq of an object, or 0) to its end: the next
 * object must be at log/<end + 1>, of an epoch no lower than the last EPOCH_START before
 * it. Returns 0, or an error with its words in o->err. */
static int wopen_follow(struct wopen *o, struct wchain *c)
{
    const char *prefix = o->cfg->s3.prefix;
    char lp[OBJ_KEY_MAX], after[OBJ_KEY_MAX];
    char *token = NULL;
    int rc = 0;
    snprintf(lp, sizeof(lp), "%slog/", prefix);
    for (;;) {
        struct call_res res;
        obj_key(after, sizeof(after), prefix, c->end); /* keys after the end's successor-1 */
        struct call_req q = {.op = XPORT_OP_LIST,
                             .list_prefix = lp,
                             .start_after = token ? NULL : after,
                             .token = token,
                             .max_keys = 1000};
        rc = call_run(o->x, o->cfg, &q, &res, o->err, o->errlen);
        if (rc < 0)
            break;
        /* Only the keys that can continue the chain from here are worth a read. */
        struct wheader *hs = calloc(res.nkeys ? res.nkeys : 1, sizeof(*hs));
        size_t n = 0;
        if (!hs) {
            call_res_free(&res);
            rc = S3C_ENOMEM;
            break;
        }
        bool past = false; /* a key past upto: no object there can hold a seq up to it */
        for (size_t i = 0; i < res.nkeys && !past; i++) {
            uint64_t f;
            past = c->upto && obj_key_parse(res.keys[i], prefix, &f) && f > c->upto;
            if (!past && obj_key_parse(res.keys[i], prefix, &f) && f > c->end)
                hs[n++] = (struct wheader){.key = res.keys[i], .first = f};
        }
        bool ended = n == 0 || hs[0].first != c->end + 1;
        if (!ended) {
            rc = wopen_fetch_headers(o, hs, n);
            for (size_t i = 0; rc == 0 && i < n && !ended; i++) {
                struct wheader *h = &hs[i];
                if (h->first <= c->end)
                    continue; /* inside the chain's last object: off the chain, skipped */
                if (h->first != c->end + 1) {
                    ended = true; /* a gap: what follows is off the chain */
                } else if (h->missing) {
                    /* Listed where the chain goes on, then 404: nothing in the protocol
                     * deletes a log object, so a store that answered 404 for a while (a
                     * restart behind a proxy), or something deleting the log. Taken for the
                     * chain's end, it would move the fence over it; try again later. */
                    snprintf(o->err, o->errlen,
                             "%s was listed and then gone: objects of the log are being "
                             "deleted, or the store answered 404 for a while; stop whatever "
                             "deletes them and open again",
                             h->key);
                    rc = S3C_ES3;
                } else if (h->read_rc) {
                    /* the GET failed (an error answer, or none): the read, not the object */
                    snprintf(o->err, o->errlen, "%s: cannot read its header: %s", h->key, h->error);
                    rc = h->read_rc;
                } else if (h->newer) {
                    rc = wopen_newer_object(h, o->err, o->errlen);
                } else if (!h->ok) {
                    bool v1 = strcmp(h->error, "v1") == 0;
                    snprintf(o->err, o->errlen,
                             v1 ? "%s is a version-1 object inside a version-2 log; move it "
                                  "away"
                                : "%s: the chain cannot be followed: %s; the object must be "
                                  "repaired or removed by hand (s3commit verify shows the "
                                  "chain)",
                             h->key, h->error);
                    rc = v1 ? S3C_EFORMAT : S3C_ECORRUPT;
                } else if (h->h.first_seq != h->first) {
                    snprintf(o->err, o->errlen,
                             "%s: its header starts at seq %" PRIu64 ", not at the seq its "
                             "key names; the object must be repaired or removed by hand",
                             h->key, h->h.first_seq);
                    rc = S3C_ECORRUPT;
                } else if (h->h.epoch < c->start_epoch) {
                    ended = true; /* an orphan: it ends the chain and will be replaced */
                } else {
                    if (h->h.flags & OBJ_FLAG_EPOCH_START)
                        c->start_epoch = h->h.epoch;
                    if (h->h.epoch > c->max_epoch)
                        c->max_epoch = h->h.epoch;
                    if (h->h.count > c->max_count)
                        c->max_count = h->h.count;
                    c->end = h->h.last_seq;
                    c->end_first = h->h.first_seq;
                    if (c->fn && (c->fn_rc = c->fn(c->ctx, &h->h)) != 0)
                        ended = true;
                    if (c->upto && c->end >= c->upto)
                        ended = true;
                }
            }
        }
        free(hs);
        ended = ended || past;
        bool more = res.truncated && res.next_token;
        free(token);
        token = more && !ended ? res.next_token : NULL;
        if (token)
            res.next_token = NULL; /* kept for the next page */
        call_res_free(&res);
        if (rc < 0 || ended || !more)
            break;
    }
    free(token);
    return rc;
}

/* Of the objects whose key lies within span at or below seq and whose records hold it, the
 * highest epoch (writer.h). Their headers are read with the open's window of GETs. */
int writer_chain_epoch_at(struct xport *x, const struct s3c_config *cfg, uint64_t seq,
                          uint64_t span, uint64_t *epoch, char *err, size_t errlen)
{
    struct wopen o = {
        .x = x, .cfg = cfg, .ws = &(struct writer_state){0}, .err = err, .errlen = errlen};
    const char *prefix = cfg->s3.prefix;
    char lp[OBJ_KEY_MAX], after[OBJ_KEY_MAX];
    char **keys = NULL, *token = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    *epoch = 0;
    snprintf(lp, sizeof(lp), "%slog/", prefix);
    obj_key(after, sizeof(after), prefix, seq > span ? seq - span : 0);
    for (bool more = true; more && rc == 0;) {
        struct call_res res;
        struct call_req q = {.op = XPORT_OP_LIST,
                             .list_prefix = lp,
                             .start_after = token ? NULL : after,
                             .token = token,
                             .max_keys = 1000};
        rc = call_run(x, cfg, &q, &res, err, errlen);
        free(token);
        token = NULL;
        if (rc < 0)
            break;
        bool past = false;
        for (size_t i = 0; i < res.nkeys && !past && rc == 0; i++) {
            uint64_t f;
            if (!obj_key_parse(res.keys[i], prefix, &f))
                continue;
            past = f > seq;
            if (past)
                break;
            if (n == cap) {
                char **nk = realloc(keys, (cap = cap ? cap * 2 : 16) * sizeof(*keys));
                if (!nk) {
                    rc = S3C_ENOMEM;
                    snprintf(err, errlen, "out of memory listing %s", lp);
                    break;
                }
                keys = nk;
            }
            keys[n++] = res.keys[i];
            res.keys[i] = NULL;
        }
        more = rc == 0 && !past && res.truncated && res.next_token;
        if (more) {
            token = res.next_token;
            res.next_token = NULL;
        }
        call_res_free(&res);
    }
    free(token);
    struct wheader *hs = rc == 0 ? calloc(n ? n : 1, sizeof(*hs)) : NULL;
    if (rc == 0 && !hs) {
        rc = S3C_ENOMEM;
        snprintf(err, errlen, "out of memory reading the headers under %s", lp);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        hs[i] = (struct wheader){.key = keys[i]};
        obj_key_parse(keys[i], prefix, &hs[i].first);
    }
    if (rc == 0 && n > 0)
        rc = wopen_fetch_headers(&o, hs, n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct wheader *h = &hs[i];
        if (h->missing) {
            /* Nothing in the protocol deletes a log object (an orphan is replaced, never
             * removed): it may have been the chain's, and without it nothing can be said. */
            snprintf(err, errlen,
                     "%s was listed and then gone: objects of the log are being deleted, or the "
                     "store answered 404 for a while; "
                     "stop whatever deletes them and open again",
                     h->key);
            rc = S3C_ES3; /* a store answering 404 for a while (a restart behind a proxy) too */
        } else if (h->read_rc) {
            snprintf(err, errlen, "%s: cannot read its header: %s", h->key, h->error);
            rc = h->read_rc;
        } else if (h->newer) {
            rc = wopen_newer_object(h, err, errlen);
        } else if (!h->ok) {
            /* It might be the chain's object at seq: without its epoch nothing can be said. */
            snprintf(err, errlen,
                     "%s: not a readable object (%s); the log must be repaired by hand "
                     "(s3commit verify shows the chain)",
                     h->key, h->error);
            rc = S3C_ECORRUPT;
        } else if (h->h.first_seq != h->first) {
            snprintf(err, errlen,
                     "%s: its header starts at seq %" PRIu64 ", not at the seq its key names; "
                     "the object must be repaired or removed by hand",
                     h->key, h->h.first_seq);
            rc = S3C_ECORRUPT;
        } else if (h->h.first_seq <= seq && seq <= h->h.last_seq && h->h.epoch > *epoch) {
            *epoch = h->h.epoch;
        }
    }
    free(hs);
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
    return rc;
}

int writer_chain_follow(struct xport *x, const struct s3c_config *cfg, uint64_t from_end,
                        uint64_t start_epoch, uint64_t upto,
                        int (*fn)(void *ctx, const struct obj_header *h), void *ctx, uint64_t *end,
                        int *fn_rc, char *err, size_t errlen)
{
    struct wopen o = {
        .x = x, .cfg = cfg, .ws = &(struct writer_state){0}, .err = err, .errlen = errlen};
    struct wchain c = {
        .end = from_end, .start_epoch = start_epoch, .fn = fn, .ctx = ctx, .upto = upto};
    int rc = wopen_follow(&o, &c);
    *end = c.end;
    *fn_rc = c.fn_rc;
    return rc;
}

/* The hint is followed only from an object that really ends there: the manifest names
 * the first seq of the object holding durable_seq, whose header must agree. Otherwise
 * the whole chain is followed from seq 1. */
static int wopen_check_hint(struct wopen *o, struct wchain *c)
{
    uint64_t first = o->found.durable_first_seq;
    if (c->end == 0)
        return 0;
    if (first > 0 && first <= c->end) {
        struct wheader h = {.first = first};
        char key[OBJ_KEY_MAX];
        obj_key(key, sizeof(key), o->cfg->s3.prefix, first);
        h.key = key;
        int rc = wopen_fetch_headers(o, &h, 1);
        if (rc < 0)
            return rc;
        if (h.ok && h.h.first_seq == first && h.h.last_seq == c->end && h.h.epoch >= c->start_epoch)
            return 0;
        if (h.read_rc) {
            /* The read failed, which says nothing against the hint: following the chain
             * from seq 1 instead would read every header of the log from a store that is
             * failing (a chaos run saw one such open still walking 27 s later). */
            snprintf(o->err, o->errlen, "%s: cannot read the manifest's last object: %s", key,
                     h.error);
            return h.read_rc;
        }
        if (h.newer)
            return wopen_newer_object(&h, o->err, o->errlen);
    }
    S3C_LOG(S3C_LOG_WARN,
            "event=manifest_hint_unconfirmed durable_seq=%" PRIu64 " durable_first_seq=%" PRIu64
            " msg=\"no object ends at the manifest's durable_seq: following the chain from seq 1\"",
            c->end, first);
    *c = (struct wchain){0};
    return 0;
}

/* ---- step 3: the fence ---------------------------------------------------------- */

struct wfence {
    unsigned char header[OBJ_HEADER_BYTES], rec[OBJ_RECORD_HEADER_BYTES];
    unsigned char trailer[OBJ_TRAILER_BYTES];
    char payload[512];
    struct iovec iov[4];
    uint64_t size;
};

static void wopen_build_fence(const struct writer_state *ws, uint64_t seq, uint64_t found,
                              uint64_t start_epoch, struct wfence *f)
{
    struct obj_header h = {.version = OBJ_VERSION,
                           .flags = OBJ_FLAG_EPOCH_START,
                           .count = 1,
                           .first_seq = seq,
                           .last_seq = seq,
                           .epoch = ws->epoch};
    int n = snprintf(f->payload, sizeof(f->payload),
                     "{\"type\":\"epoch_start\",\"epoch\":%" PRIu64 ",\"writer\":\"%s\","
                     "\"found_durable_seq\":%" PRIu64 ",\"found_start_epoch\":%" PRIu64
                     ",\"started_at_ms\":%" PRIu64 "}",
                     ws->epoch, ws->writer, found, start_epoch, ws->started_at_ms);
    uint32_t len = (uint32_t)(n > 0 && (size_t)n < sizeof(f->payload) ? n : 0);
    obj_header_encode(&h, f->header);
    obj_record_header_encode(len, crc32c_update(0, f->payload, len), seq, f->rec);
    uint32_t crc = crc32c_update(0, f->header, sizeof(f->header));
    crc = crc32c_update(crc, f->rec, sizeof(f->rec));
    crc = crc32c_update(crc, f->payload, len);
    obj_trailer_encode(crc, f->trailer);
    f->iov[0] = (struct iovec){f->header, sizeof(f->header)};
    f->iov[1] = (struct iovec){f->rec, sizeof(f->rec)};
    f->iov[2] = (struct iovec){f->payload, len};
    f->iov[3] = (struct iovec){f->trailer, sizeof(f->trailer)};
    f->size = sizeof(f->header) + sizeof(f->rec) + len + sizeof(f->trailer);
}

struct wsettle_wait {
    bool done;
    enum settle_result r;
    char etag[256];
    char why[512];
};

static void wopen_on_settle(void *ctx, enum settle_result r, const char *etag, const char *why)
{
    struct wsettle_wait *w = ctx;
    w->done = true;
    w->r = r;
    snprintf(w->etag, sizeof(w->etag), "%s", etag ? etag : "");
    snprintf(w->why, sizeof(w->why), "%s", why ? why : "");
}

enum wfence_outcome { WFENCE_STANDS, WFENCE_CHAIN, WFENCE_NEWER };

/* Puts our EPOCH_START at log/<c->end + 1>. *out: it stands, the chain moved on (follow
 * it again), or a newer epoch is there (take an epoch above it). */
static int wopen_fence(struct wopen *o, const struct wchain *c, uint64_t after_seq,
                       enum wfence_outcome *out, uint64_t *newer)
{
    struct writer_state *ws = o->ws;
    uint64_t seq = (c->end > after_seq ? c->end : after_seq) + 1;
    struct wfence f;
    char key[OBJ_KEY_MAX], im[300], if_match[256] = "";
    obj_key(key, sizeof(key), o->cfg->s3.prefix, seq);
    wopen_build_fence(ws, seq, c->end, c->start_epoch, &f);
    for (int tries = 0; tries < WRITER_CAS_TRIES; tries++) {
        struct call_res res;
        struct call_req q = {.op = XPORT_OP_PUT, .key = key, .iov = f.iov, .iovcnt = 4};
        if (o->cfg->s3.conditional_writes) {
            if (if_match[0]) {
                writer_if_match(if_match, ws->etag_unquoted, im, sizeof(im));
                q.if_match = im;
            } else {
                q.if_none_match = true;
            }
        }
        int rc = call_run(o->x, o->cfg, &q, &res, o->err, o->errlen);
        if (rc < 0)
            return rc;
        enum xport_class cls = res.cls;
        call_res_free(&res);
        if (cls == XPORT_OK) {
            *out = WFENCE_STANDS;
            return 0;
        }
        /* 412 (or 404 for If-Match on a key emptied meanwhile): read back what is there. */
        struct wsettle_wait w = {0};
        struct settle s = {.x = o->x,
                           .key = key,
                           .header = f.header,
                           .trailer = f.trailer,
                           .size = f.size,
                           .epoch = ws->epoch,
                           /* Past a gap (after a spool's seqs) nothing is on the chain,
                            * nobody acknowledged it: an older epoch's object there (a
                            * crashed run's fence) is an orphan. */
                           .floor_epoch = seq > c->end + 1 ? ws->epoch : c->start_epoch,
                           .done = wopen_on_settle,
                           .ctx = &w};
        rc = settle_start(&s);
        if (rc < 0) {
            snprintf(o->err, o->errlen, "%s: cannot read it back: %s", key, s3c_strerror(rc));
            return rc;
        }
        while (!w.done)
            loop_run_once(xport_loop(o->x), 1000);
        S3C_LOG(S3C_LOG_INFO, "event=fence_settle key=%s verdict=%s why=\"%s\"", key,
                settle_name(w.r), w.why);
        switch (w.r) {
        case SETTLE_OURS:
            *out = WFENCE_STANDS;
            return 0;
        case SETTLE_CHAIN:
            *out = WFENCE_CHAIN;
            return 0;
        case SETTLE_FENCED: {
            /* A writer with a newer epoch than ours fenced here first. */
            *out = WFENCE_NEWER;
            *newer = ws->epoch + 1;
            return 0;
        }
        case SETTLE_ORPHAN:
            if (if_match[0] && strcmp(if_match, w.etag) == 0 && !ws->etag_unquoted) {
                ws->etag_unquoted = true; /* refused with its own ETag: send it unquoted */
                S3C_LOG(S3C_LOG_WARN,
                        "event=etag_unquoted key=%s msg=\"the store refused "
                        "If-Match with a matching quoted ETag; sending ETags "
                        "unquoted\"",
                        key);
            }
            snprintf(if_match, sizeof(if_match), "%s", w.etag); /* replace it */
            break;
        case SETTLE_GONE:
            if_match[0] = '\0';
            break;
        case SETTLE_RETRY:
            break;
        case SETTLE_CORRUPT:
            snprintf(o->err, o->errlen, "%s; it must be repaired or removed by hand", w.why);
            return S3C_ECORRUPT;
        case SETTLE_UNREADABLE: /* the answer, not the object: may pass at the next open */
            snprintf(o->err, o->errlen, "%s", w.why);
            return S3C_ES3;
        }
    }
    snprintf(o->err, o->errlen, "%s: could not place the fence after %d tries", key,
             WRITER_CAS_TRIES);
    return S3C_ES3;
}

/* ---- the whole open ------------------------------------------------------------- */

size_t writer_fence_bytes(const struct writer_state *ws, unsigned char *out, size_t cap)
{
    struct wfence f;
    size_t n = 0;
    wopen_build_fence(ws, ws->control_seq, ws->recovered_seq, ws->chain_start_epoch, &f);
    if (f.size > cap)
        return 0;
    for (int i = 0; i < 4; i++) {
        memcpy(out + n, f.iov[i].iov_base, f.iov[i].iov_len);
        n += f.iov[i].iov_len;
    }
    return n;
}

/* Step 2's start: the manifest's hint (the last seq of an object, never ahead of the
 * chain) once an object is seen ending there, else the start; and the manifest as found
 * into ws: its writer's epoch and that W (0: not confirmed). */
static int wopen_start_chain(struct wopen *o, struct wchain *c)
{
    struct writer_state *ws = o->ws;
    *c = (struct wchain){.end = o->found.durable_seq,
                         .end_first = o->found.durable_first_seq,
                         .start_epoch = o->found.start_epoch,
                         .max_count = o->found.max_batch_commits};
    int rc = wopen_check_hint(o, c);
    if (rc < 0)
        return rc;
    ws->listed = c->end == 0;
    ws->found_epoch = o->found.format ? o->found.epoch : 0;
    ws->found_manifest_seq = o->found.durable_seq;
    ws->found_seq = c->end;
    return 0;
}

static void wopen_found_end(struct writer_state *ws, const struct wchain *c)
{
    ws->recovered_seq = c->end;
    ws->recovered_first_seq = c->end_first;
    ws->chain_start_epoch = c->start_epoch;
    ws->max_batch_commits = c->max_count;
    ws->chain_max_epoch = c->max_epoch;
}

/* Step 2's start in writer_open: where writer_peek's walk ended, when the manifest read in
 * step 1 is the one the peek read (same epoch, same durable_seq; none both times); else
 * from the manifest, as writer_peek starts. */
static int wopen_resume_chain(struct wopen *o, const struct writer_state *peeked, struct wchain *c)
{
    uint64_t epoch = o->found.format ? o->found.epoch : 0;
    if (!peeked || peeked->found_epoch != epoch ||
        peeked->found_manifest_seq != o->found.durable_seq)
        return wopen_start_chain(o, c);
    *c = (struct wchain){.end = peeked->recovered_seq,
                         .end_first = peeked->recovered_first_seq,
                         .start_epoch = peeked->chain_start_epoch,
                         .max_epoch = peeked->chain_max_epoch,
                         .max_count = peeked->max_batch_commits};
    o->ws->listed = peeked->listed;
    o->ws->found_epoch = peeked->found_epoch;
    o->ws->found_seq = peeked->found_seq;
    o->ws->found_manifest_seq = peeked->found_manifest_seq;
    return 0;
}

int writer_peek(struct xport *x, const struct s3c_config *cfg, struct writer_state *ws, char *err,
                size_t errlen)
{
    struct wopen o = {.x = x, .cfg = cfg, .ws = ws, .err = err, .errlen = errlen};
    char etag[256];
    struct wchain c;
    memset(ws, 0, sizeof(*ws));
    err[0] = '\0';
    if (wopen_manifest_key(cfg, o.key, sizeof(o.key)) < 0) {
        snprintf(err, errlen, "s3.prefix is too long for the manifest key");
        return S3C_EINVAL;
    }
    int rc = wopen_get_manifest(&o, etag, sizeof(etag));
    if (rc == 0 && o.found.format == 0)
        rc = wopen_refuse_v1(&o);
    if (rc == 0)
        rc = wopen_start_chain(&o, &c);
    if (rc == 0)
        rc = wopen_follow(&o, &c);
    if (rc < 0)
        return rc;
    wopen_found_end(ws, &c);
    S3C_LOG(S3C_LOG_INFO,
            "event=writer_peek recovered_seq=%" PRIu64 " chain_start_epoch=%" PRIu64
            " headers_read=%" PRIu64,
            ws->recovered_seq, ws->chain_start_epoch, ws->objects_read);
    return 0;
}

int writer_peek_key(struct xport *x, const struct s3c_config *cfg, uint64_t seq, char *err,
                    size_t errlen)
{
    struct wopen o = {
        .x = x, .cfg = cfg, .ws = &(struct writer_state){0}, .err = err, .errlen = errlen};
    char key[OBJ_KEY_MAX];
    obj_key(key, sizeof(key), cfg->s3.prefix, seq);
    struct wheader h = {.key = key, .first = seq};
    err[0] = '\0';
    int rc = wopen_fetch_headers(&o, &h, 1);
    if (rc < 0 || h.missing)
        return rc;
    if (h.read_rc) {
        snprintf(err, errlen, "%s: cannot read its header: %s", key, h.error);
        return h.read_rc;
    }
    if (h.newer)
        return wopen_newer_object(&h, err, errlen);
    if (!h.ok && strcmp(h.error, "v1") == 0) { /* as the chain walk says of one */
        snprintf(err, errlen, "%s is a version-1 object inside a version-2 log; move it away", key);
        return S3C_EFORMAT;
    }
    if (!h.ok) { /* as the fence's read-back would say, after it took an epoch */
        if (strcmp(h.error, "it is empty (0 bytes)") == 0)
            snprintf(err, errlen,
                     "%s, where our fence goes, holds an empty object (0 bytes); it must be "
                     "repaired or removed by hand",
                     key);
        else
            snprintf(err, errlen,
                     "%s, where our fence goes, holds no valid object header: %s; it must be "
                     "repaired or removed by hand",
                     key, h.error);
        return S3C_ECORRUPT;
    }
    return 0;
}

int writer_open(struct xport *x, const struct s3c_config *cfg, uint64_t after_seq,
                const struct writer_state *peeked, struct writer_state *ws, char *err,
                size_t errlen)
{
    struct wopen o = {.x = x, .cfg = cfg, .ws = ws, .err = err, .errlen = errlen};
    /* above every epoch the peek met on the chain (a lost manifest costs no extra round) */
    uint64_t floor = peeked ? peeked->chain_max_epoch : 0;
    int rc;

    memset(ws, 0, sizeof(*ws));
    err[0] = '\0';
    writer_make_id(ws->writer, sizeof(ws->writer));
    if (wopen_manifest_key(cfg, o.key, sizeof(o.key)) < 0) {
        snprintf(err, errlen, "s3.prefix is too long for the manifest key");
        return S3C_EINVAL;
    }
    if (!cfg->s3.conditional_writes)
        S3C_LOG(S3C_LOG_WARN,
                "event=fencing_off msg=\"s3.conditional_writes is false: a second writer on "
                "s3://%s/%s is not fenced and would overwrite this one's objects; run one "
                "writer only\"",
                cfg->s3.bucket, cfg->s3.prefix);
    int fences = 0; /* fences tried, over every round: an older writer that keeps
                       extending the chain must not keep us here forever */
    for (int round = 0; round < WRITER_FENCE_TRIES; round++) {
        rc = wopen_take_epoch(&o, floor); /* step 1 */
        if (rc < 0)
            return rc;
        struct wchain c; /* step 2 */
        rc = round == 0 ? wopen_resume_chain(&o, peeked, &c) : wopen_start_chain(&o, &c);
        if (rc < 0)
            return rc;
        for (;;) {
            rc = wopen_follow(&o, &c);
            if (rc < 0)
                return rc;
            if (c.max_epoch >= ws->epoch)
                break; /* the manifest was lost or rewritten: an epoch above the chain's */
            enum wfence_outcome fo;
            uint64_t newer = 0;
            if (fences++ >= WRITER_FENCE_TRIES) {
                snprintf(err, errlen,
                         "%slog/: could not place our fence after %d tries: another writer "
                         "keeps extending the chain (at seq %" PRIu64 ") and has not seen our "
                         "epoch in %smanifest.json; stop it, or fix its manifest writes, and "
                         "open again",
                         cfg->s3.prefix, WRITER_FENCE_TRIES, c.end, cfg->s3.prefix);
                return S3C_ES3;
            }
            rc = wopen_fence(&o, &c, after_seq, &fo, &newer); /* step 3 */
            if (rc < 0)
                return rc;
            if (fo == WFENCE_CHAIN)
                continue; /* an older writer moved on meanwhile: follow it again */
            if (fo == WFENCE_NEWER) {
                c.max_epoch = newer;
                break;
            }
            wopen_found_end(ws, &c);
            ws->control_seq = (c.end > after_seq ? c.end : after_seq) + 1;
            S3C_LOG(S3C_LOG_INFO,
                    "event=writer_open epoch=%" PRIu64 " recovered_seq=%" PRIu64
                    " control_seq=%" PRIu64 " listed=%d headers_read=%" PRIu64 " writer=%s",
                    ws->epoch, ws->recovered_seq, ws->control_seq, ws->listed, ws->objects_read,
                    ws->writer);
            return 0;
        }
        floor = c.max_epoch;
        S3C_LOG(S3C_LOG_WARN,
                "event=epoch_behind_chain epoch=%" PRIu64 " chain_epoch=%" PRIu64
                " msg=\"the chain holds a newer epoch than the manifest: taking one above it\"",
                ws->epoch, floor);
    }
    snprintf(err, errlen,
             "could not fence the log after %d rounds (other writers keep "
             "taking it over)",
             WRITER_FENCE_TRIES);
    return S3C_ES3;
}
