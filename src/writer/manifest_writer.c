/* The manifest and heartbeat writer (writer.h, docs/stage.md): W moves mark the
 * manifest dirty; at most every manifest_interval_ms the newest state is written (one
 * write for many moves), concurrently with the heartbeat object; each channel retries
 * alone with its own backoff and keeps its dirt on failure; a 412 on the manifest is read
 * back, never retried blindly. It runs on the stage's loop and must never block it. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "s3commit.h"
#include "writer/writer.h"

enum mw_kind { MW_MANIFEST, MW_HEARTBEAT };

struct mw_chan {
    struct mw *m;
    enum mw_kind kind;
    bool in_flight;
    bool reading;      /* a manifest read-back after a 412 is in flight */
    bool create;       /* the manifest is gone: create it (If-None-Match) next time */
    int failures;      /* in a row */
    uint64_t retry_at; /* monotonic ns: not before */
    uint64_t last_at;  /* monotonic ns of the last attempt that landed */
    uint64_t sent_w, sent_first;
    char sent_etag[256]; /* the If-Match of the write in flight */
    char key[OBJ_KEY_MAX];
    char body[MANIFEST_MAX_BYTES + 512];
    char im[300];
    struct iovec iov;
    char error[256]; /* this attempt's error, reported when the round ends */
    bool failed;     /* this attempt failed */
};

struct mw {
    struct mw_opts o;
    struct loop *loop;
    struct loop_timer timer;
    uint64_t w, w_first; /* the newest W and the first seq of the object holding it */
    uint64_t written_w;  /* the W the manifest holds */
    uint64_t moves;      /* W moves since the manifest last landed */
    uint64_t interval_ns, hb_interval_ns;
    bool stopped;    /* fenced: the manifest is not ours any more */
    bool closing;    /* the final flush: the heartbeat says "closed" */
    bool urgent;     /* a flush: write what is due now, whatever the intervals */
    bool hb_flushed; /* the flush's heartbeat landed */
    int round_open;  /* channels of the current round still in flight */
    struct mw_chan man, hb;
    pthread_mutex_t mu; /* guards the last-error strings */
    char man_last_error[256], hb_last_error[256];
    struct mw_stats st;
};

#define MW_INC(f) atomic_fetch_add_explicit(&m->st.f, 1, memory_order_relaxed)
#define MW_SET(f, v) atomic_store_explicit(&m->st.f, (v), memory_order_relaxed)

static void mw_arm(struct mw *m);
static void mw_start_manifest(struct mw *m);

static uint64_t mw_backoff_ns(const struct mw *m, int failures)
{
    const struct cfg_persistence *p = &m->o.cfg->persistence;
    uint64_t ms = (uint64_t)p->retry_base_delay_ms << (failures - 1 < 20 ? failures - 1 : 20);
    if (ms > (uint64_t)p->max_retry_delay_ms)
        ms = (uint64_t)p->max_retry_delay_ms;
    return ms * 1000000u;
}

static bool mw_manifest_dirty(const struct mw *m)
{
    return !m->stopped && m->w > m->written_w;
}

/* Reports a round's failures once both channels of it are done: the manifest's first
 * (and only it to the stage when both failed): the manifest is the one that matters. */
static void mw_round_done(struct mw *m)
{
    if (--m->round_open > 0)
        return;
    struct mw_chan *c[2] = {&m->man, &m->hb};
    bool told = false;
    for (int i = 0; i < 2; i++) {
        if (!c[i]->failed)
            continue;
        const char *name = c[i]->kind == MW_MANIFEST ? "manifest" : "heartbeat";
        S3C_LOG(S3C_LOG_WARN, "event=%s_write_failed failures=%d error=\"%s\"", name,
                c[i]->failures, c[i]->error);
        if (!told && m->o.error)
            m->o.error(m->o.ctx, name, c[i]->error);
        told = true;
        c[i]->failed = false;
    }
}

static void mw_chan_failed(struct mw *m, struct mw_chan *c, const char *why)
{
    c->failures++;
    c->retry_at = s3c__now_ns() + mw_backoff_ns(m, c->failures);
    c->failed = true;
    snprintf(c->error, sizeof(c->error), "%s", why);
    pthread_mutex_lock(&m->mu);
    snprintf(c->kind == MW_MANIFEST ? m->man_last_error : m->hb_last_error, 256, "%s", why);
    pthread_mutex_unlock(&m->mu);
    if (c->kind == MW_MANIFEST)
        MW_INC(manifest_failures);
    else
        MW_INC(heartbeat_failures);
}

/* ---- the manifest channel --------------------------------------------------------- */

static void mw_on_manifest_read(void *ctx, const struct xport_result *r)
{
    struct mw *m = ctx;
    struct mw_chan *c = &m->man;
    struct writer_state *ws = m->o.ws;
    char why[512];
    struct manifest found;

    c->reading = false;
    c->in_flight = false;
    if (r->cls == XPORT_NOT_FOUND) {
        c->create = true; /* deleted: create it again, now */
        c->retry_at = 0;
    } else if (r->cls != XPORT_OK) {
        snprintf(why, sizeof(why), "reading the manifest back after a 412: %s", r->error);
        mw_chan_failed(m, c, why);
    } else if (manifest_parse(r->body, r->body_len, &found, why, sizeof(why)) < 0) {
        mw_chan_failed(m, c, why);
    } else if (found.epoch > ws->epoch) {
        snprintf(why, sizeof(why),
                 "the manifest holds epoch %" PRIu64 " of writer %s (ours is %" PRIu64 ")",
                 found.epoch, found.writer, ws->epoch);
        m->stopped = true;
        S3C_LOG(S3C_LOG_ERROR, "event=manifest_fenced error=\"%s\"", why);
        if (m->o.fenced)
            m->o.fenced(m->o.ctx, why);
    } else {
        /* Our own epoch (an earlier write of ours landed behind an error), or an older
         * one put back by hand: take its ETag and go on. An unchanged ETag that was
         * refused means the store wants it unquoted (Ceph RGW 16). */
        if (strcmp(r->etag, ws->manifest_etag) == 0 && !ws->etag_unquoted) {
            ws->etag_unquoted = true;
            S3C_LOG(S3C_LOG_WARN,
                    "event=etag_unquoted key=%s msg=\"the store refused "
                    "If-Match with a matching quoted ETag; sending ETags "
                    "unquoted\"",
                    c->key);
        }
        snprintf(ws->manifest_etag, sizeof(ws->manifest_etag), "%s", r->etag);
        if (found.epoch == ws->epoch && found.durable_seq > m->written_w) {
            m->written_w = found.durable_seq;
            MW_SET(manifest_seq, m->written_w);
        }
        c->retry_at = 0;
    }
    mw_round_done(m);
    mw_arm(m);
}

static void mw_on_manifest_put(void *ctx, const struct xport_result *r)
{
    struct mw *m = ctx;
    struct mw_chan *c = &m->man;
    struct writer_state *ws = m->o.ws;

    if (r->cls == XPORT_OK) {
        c->in_flight = false;
        c->failures = 0;
        c->create = false;
        c->last_at = s3c__now_ns();
        snprintf(ws->manifest_etag, sizeof(ws->manifest_etag), "%s", r->etag);
        m->written_w = c->sent_w;
        MW_INC(manifest_writes);
        if (m->moves > 1)
            atomic_fetch_add_explicit(&m->st.manifest_saved, m->moves - 1, memory_order_relaxed);
        m->moves = 0;
        MW_SET(manifest_seq, m->written_w);
        pthread_mutex_lock(&m->mu);
        m->man_last_error[0] = '\0';
        pthread_mutex_unlock(&m->mu);
        mw_round_done(m);
        mw_arm(m);
        return;
    }
    if (r->cls == XPORT_EXISTS || r->cls == XPORT_NOT_FOUND) {
        /* 412 (or 404 for If-Match on a deleted manifest; Ceph answers 412 for that too):
         * read it back and decide. */
        c->reading = true;
        if (xport_get(m->o.x, c->key, 1, 0, mw_on_manifest_read, m) == 0)
            return;
        c->reading = false;
    }
    c->in_flight = false;
    mw_chan_failed(m, c, r->error);
    mw_round_done(m);
    mw_arm(m);
}

static void mw_start_manifest(struct mw *m)
{
    struct mw_chan *c = &m->man;
    struct writer_state *ws = m->o.ws;
    struct manifest doc = {.format = MANIFEST_FORMAT,
                           .epoch = ws->epoch,
                           .durable_seq = m->w,
                           .durable_first_seq = m->w_first,
                           /* W is at or past our fence, or (replaying a spool) before it */
                           .start_epoch =
                               m->w >= ws->control_seq ? ws->epoch : ws->chain_start_epoch,
                           .max_batch_commits = ws->max_batch_commits,
                           .started_at_ms = ws->started_at_ms,
                           .updated_at_ms = writer_unix_ms()};
    snprintf(doc.writer, sizeof(doc.writer), "%s", ws->writer);
    int n = manifest_encode(&doc, c->body, sizeof(c->body));
    struct xport_put p = {.key = c->key, .iov = &c->iov, .iovcnt = 1};
    c->iov = (struct iovec){c->body, (size_t)(n > 0 ? n : 0)};
    if (m->o.cfg->s3.conditional_writes) {
        if (c->create || !ws->manifest_etag[0]) {
            p.if_none_match = true;
        } else {
            writer_if_match(ws->manifest_etag, ws->etag_unquoted, c->im, sizeof(c->im));
            p.if_match = c->im;
        }
    }
    c->sent_w = m->w;
    c->in_flight = true;
    m->round_open++;
    if (xport_put(m->o.x, &p, mw_on_manifest_put, m) < 0) {
        c->in_flight = false;
        mw_chan_failed(m, c, "cannot start the manifest PUT");
        mw_round_done(m);
    }
}

/* ---- the heartbeat channel -------------------------------------------------------- */

static void mw_on_heartbeat_put(void *ctx, const struct xport_result *r)
{
    struct mw *m = ctx;
    struct mw_chan *c = &m->hb;
    c->in_flight = false;
    if (r->cls == XPORT_OK) {
        c->failures = 0;
        c->last_at = s3c__now_ns();
        MW_INC(heartbeat_writes);
        MW_SET(heartbeat_at_ms, writer_unix_ms());
        pthread_mutex_lock(&m->mu);
        m->hb_last_error[0] = '\0';
        pthread_mutex_unlock(&m->mu);
        if (m->urgent)
            m->hb_flushed = true;
    } else {
        mw_chan_failed(m, c, r->error);
    }
    mw_round_done(m);
    mw_arm(m);
}

/* JSON-safe copy of an error line (they are already one line without '"' or '\\'). */
static void mw_json_safe(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; *src && i + 1 < cap; src++)
        dst[i++] = (*src == '"' || *src == '\\' || (unsigned char)*src < 0x20) ? ' ' : *src;
    dst[i] = '\0';
}

static void mw_start_heartbeat(struct mw *m)
{
    struct mw_chan *c = &m->hb;
    struct writer_state *ws = m->o.ws;
    struct mw_snapshot snap = {0};
    char err[256];
    if (m->o.snapshot)
        m->o.snapshot(m->o.ctx, &snap);
    mw_json_safe(err, sizeof(err), snap.last_error);
    const char *state = m->stopped ? "fenced" : m->closing ? "closed" : "running";
    int n = snprintf(c->body, sizeof(c->body),
                     "{\"format\":2,\"epoch\":%" PRIu64 ",\"writer\":\"%s\",\"state\":\"%s\","
                     "\"started_at_ms\":%" PRIu64 ",\"updated_at_ms\":%" PRIu64
                     ",\"durable_seq\":%" PRIu64 ",\"last_seq\":%" PRIu64 ",\"pending\":%" PRIu64
                     ",\"manifest_seq\":%" PRIu64 ",\"last_error\":\"%s\"}\n",
                     ws->epoch, ws->writer, state, ws->started_at_ms, writer_unix_ms(),
                     snap.durable_seq, snap.last_seq,
                     snap.last_seq > snap.durable_seq ? snap.last_seq - snap.durable_seq : 0,
                     m->written_w, err);
    c->iov = (struct iovec){c->body, (size_t)(n > 0 && (size_t)n < sizeof(c->body) ? n : 0)};
    struct xport_put p = {.key = c->key, .iov = &c->iov, .iovcnt = 1};
    c->in_flight = true;
    m->round_open++;
    if (xport_put(m->o.x, &p, mw_on_heartbeat_put, m) < 0) {
        c->in_flight = false;
        mw_chan_failed(m, c, "cannot start the heartbeat PUT");
        mw_round_done(m);
    }
}

/* ---- scheduling ------------------------------------------------------------------- */

/* When each channel is next due (UINT64_MAX: not). */
static uint64_t mw_man_due(const struct mw *m)
{
    const struct mw_chan *c = &m->man;
    if (c->in_flight || !mw_manifest_dirty(m))
        return UINT64_MAX;
    uint64_t at = m->urgent ? 0 : c->last_at + m->interval_ns;
    return at > c->retry_at ? at : c->retry_at;
}

static uint64_t mw_hb_due(const struct mw *m)
{
    const struct mw_chan *c = &m->hb;
    if (c->in_flight || (m->urgent && m->hb_flushed))
        return UINT64_MAX;
    uint64_t at = m->urgent ? 0 : c->last_at + m->hb_interval_ns;
    return at > c->retry_at ? at : c->retry_at;
}

static void mw_on_timer(void *ctx)
{
    struct mw *m = ctx;
    uint64_t now = s3c__now_ns();
    bool man = mw_man_due(m) <= now, hb = mw_hb_due(m) <= now;
    /* Both due: started together, so a flush takes the longer of the two, not the sum. */
    if (man)
        mw_start_manifest(m);
    if (hb)
        mw_start_heartbeat(m);
    mw_arm(m);
}

static void mw_arm(struct mw *m)
{
    uint64_t a = mw_man_due(m), b = mw_hb_due(m), at = a < b ? a : b;
    if (at == UINT64_MAX) {
        loop_timer_disarm(m->loop, &m->timer);
        return;
    }
    if (!m->timer.armed || m->timer.deadline_ns != at)
        loop_timer_arm(m->loop, &m->timer, at);
}

/* ---- the face --------------------------------------------------------------------- */

struct mw *mw_new(const struct mw_opts *o)
{
    struct mw *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->o = *o;
    m->loop = xport_loop(o->x);
    pthread_mutex_init(&m->mu, NULL);
    m->interval_ns = (uint64_t)o->cfg->persistence.manifest_interval_ms * 1000000u;
    m->hb_interval_ns = (uint64_t)o->cfg->persistence.writer_heartbeat_interval_ms * 1000000u;
    m->man.m = m->hb.m = m;
    m->man.kind = MW_MANIFEST;
    m->hb.kind = MW_HEARTBEAT;
    snprintf(m->man.key, sizeof(m->man.key), "%smanifest.json", o->cfg->s3.prefix);
    snprintf(m->hb.key, sizeof(m->hb.key), "%swriters/%010" PRIu64 ".json", o->cfg->s3.prefix,
             o->ws->epoch);
    m->timer = (struct loop_timer){.cb = mw_on_timer, .ctx = m};
    m->w = m->written_w = o->ws->manifest_seq; /* what the open's compare-and-swap wrote */
    MW_SET(manifest_seq, m->written_w);
    return m;
}

void mw_free(struct mw *m)
{
    if (!m)
        return;
    loop_timer_disarm(m->loop, &m->timer);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void mw_note_durable(struct mw *m, uint64_t w, uint64_t w_first)
{
    if (w <= m->w)
        return;
    m->w = w;
    m->w_first = w_first;
    m->moves++;
    mw_arm(m);
}

void mw_stop(struct mw *m)
{
    m->stopped = true;
    mw_arm(m);
}

int mw_flush(struct mw *m, int timeout_ms, bool final)
{
    uint64_t deadline = s3c__now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
    int rc = 0;
    m->closing = final;
    m->urgent = true;
    m->hb_flushed = false;
    m->man.retry_at = m->hb.retry_at = 0;
    mw_arm(m);
    for (;;) {
        if (!m->man.in_flight && !m->hb.in_flight && !mw_manifest_dirty(m) && m->hb_flushed)
            break;
        uint64_t now = s3c__now_ns();
        if (now >= deadline) {
            rc = S3C_ETIMEDOUT;
            break;
        }
        loop_run_once(m->loop, (int)((deadline - now + 999999) / 1000000));
    }
    m->urgent = false;
    mw_arm(m);
    return rc;
}

const struct mw_stats *mw_stats(const struct mw *m)
{
    return &m->st;
}

void mw_last_errors(struct mw *m, char *manifest, char *heartbeat, size_t cap)
{
    pthread_mutex_lock(&m->mu);
    snprintf(manifest, cap, "%s", m->man_last_error);
    snprintf(heartbeat, cap, "%s", m->hb_last_error);
    pthread_mutex_unlock(&m->mu);
}
