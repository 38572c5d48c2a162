/* The local spool around the stage (docs/spool.md): opening it before the writer protocol
 * (its last seq decides where our fence goes), the replay of what an earlier run left in
 * it, and L for producers and subscribers. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#include <cjson/cJSON.h>

#include "common/clock.h"
#include "common/log.h"
#include "stage/stage_int.h"
#include "writer/call.h"

/* L moved (the spool's thread). */
static void stage_on_local(void *ctx, uint64_t l)
{
    struct s3c_stage *st = ctx;
    int n = atomic_load(&st->nsubs);
    for (int i = 0; i < n; i++)
        if (st->subs[i].local)
            st->subs[i].fn(st->subs[i].ctx, l, 0);
    stage_wake_waiters(st);
}

/* A write or fsync failed (the spool's thread, once): accept nothing more. What is in the
 * ring still goes to S3; L stays where the last good fsync left it. */
static void stage_on_spool_error(void *ctx, const char *why)
{
    struct s3c_stage *st = ctx;
    atomic_store(&st->spool_failed, 1);
    stage_set_error(st, "%s", why);
    ring_close(st->ring);
    int n = atomic_load(&st->nsubs);
    for (int i = 0; i < n; i++)
        if (st->subs[i].local)
            st->subs[i].fn(st->subs[i].ctx, spool_local_seq(st->spool), S3C_EIO);
    stage_wake_waiters(st);
    loop_wake(st->loop);
}

int stage_spool_open(struct s3c_stage *st, uint64_t *last, char *err, size_t errlen)
{
    const struct cfg_spool *c = &st->cfg.spool;
    struct spool_scan scan;
    *last = 0;
    st->spool_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (st->spool_efd < 0) {
        snprintf(err, errlen, "stage: cannot create the spool's eventfd: %s", strerror(errno));
        return S3C_EIO;
    }
    struct spool_opts so = {.dir = c->dir,
                            .max_bytes = (uint64_t)c->max_bytes,
                            .segment_bytes = (uint64_t)c->segment_bytes,
                            .queue = SPOOL_QUEUE,
                            .rec_offset = PFX_RECHDR,
                            .ring = st->ring,
                            .w = &st->durable,
                            .notify_fd = st->spool_efd,
                            .on_durable = stage_on_local,
                            .on_error = stage_on_spool_error,
                            .ctx = st};
    int rc = spool_open(&so, &st->spool, &scan, err, errlen);
    if (rc != 0)
        return rc;
    S3C_LOG(scan.cut ? S3C_LOG_WARN : S3C_LOG_INFO,
            "event=spool_open dir=%s segments=%d bytes=%" PRIu64 " first_seq=%" PRIu64
            " last_seq=%" PRIu64 " cut=%d%s%s%s",
            c->dir, scan.segments, scan.bytes, scan.first_seq, scan.last_seq, scan.cut,
            scan.cut ? " what=\"" : "", scan.cut ? scan.cut_what : "", scan.cut ? "\"" : "");
    st->spool_w = (struct loop_watch){.fd = st->spool_efd, .cb = stage_on_spool_wake};
    rc = loop_watch_set(st->loop, &st->spool_w, LOOP_READ);
    if (rc != 0) {
        snprintf(err, errlen, "stage: cannot watch the spool: %s", s3c_strerror(rc));
        return rc;
    }
    *last = scan.last_seq;
    st->spool_first = scan.first_seq;
    st->spool_wmark = scan.w_mark;
    st->spool_commit = scan.last_commit_seq;
    st->spool_epoch = scan.last_commit_epoch;
    return 0;
}

/* ---- is what the spool holds below W the log's? ------------------------------------- */

/* A run's control record, as the spool keeps it (the whole fence object): its seq, and
 * the chain it found: W, and the epoch of the last EPOCH_START at or before W. */
struct spool_ctl {
    uint64_t seq, found, start_epoch;
};

/* Reads the control record at *pos (an OBJECT frame, f its header). Returns 0 and fills c,
 * or S3C_ECORRUPT / an error of the read with err set. */
static int stage_spool_ctl_read(struct s3c_stage *st, struct spool_pos pos,
                                const struct spool_frame *f, struct spool_ctl *c, char *err,
                                size_t errlen)
{
    unsigned char obj[1024];
    struct spool_frame g;
    int rc = spool_read(st->spool, &pos, &g, obj, sizeof(obj), err, errlen);
    if (rc != 0)
        return rc;
    size_t head = OBJ_HEADER_BYTES + OBJ_RECORD_HEADER_BYTES;
    cJSON *j =
        g.len > head + OBJ_TRAILER_BYTES
            ? cJSON_ParseWithLength((const char *)obj + head, g.len - head - OBJ_TRAILER_BYTES)
            : NULL;
    const cJSON *found = cJSON_GetObjectItemCaseSensitive(j, "found_durable_seq");
    const cJSON *start = cJSON_GetObjectItemCaseSensitive(j, "found_start_epoch");
    if (!cJSON_IsNumber(found)) {
        cJSON_Delete(j);
        snprintf(err, errlen,
                 "spool.dir %s: the control record at seq %" PRIu64 " does not name the W "
                 "its run found; move spool.dir aside (keep it: it holds commits) and open "
                 "again",
                 st->cfg.spool.dir, f->first);
        return S3C_ECORRUPT;
    }
    /* (a control record written before found_start_epoch: no orphan is told from the
     * chain while following it) */
    *c =
        (struct spool_ctl){.seq = f->first,
                           .found = (uint64_t)found->valuedouble,
                           .start_epoch = cJSON_IsNumber(start) ? (uint64_t)start->valuedouble : 0};
    cJSON_Delete(j);
    return 0;
}

/* The oldest run in the spool that put its fence past a gap: the spool held seqs past the
 * log's end when it opened, so its control record went after them, not at the log's end.
 * Such a fence does not fence the gap: a writer that took its epoch earlier can still win
 * the gap's first key and continue the chain past that fence without ever meeting it, and
 * then objects of the run's epoch stand off the chain beside another writer's. Returns 1
 * (*c), 0 (none: every fence in the spool went at the log's end) or an error. */
static int stage_spool_gap_run(struct s3c_stage *st, struct spool_ctl *c, char *err, size_t errlen)
{
    struct spool_pos pos;
    int rc = st->spool_first ? spool_find(st->spool, st->spool_first, &pos, err, errlen) : S3C_EEND;
    for (; rc == 0;) {
        struct spool_pos at = pos;
        struct spool_frame f;
        rc = spool_read(st->spool, &pos, &f, NULL, 0, err, errlen);
        if (rc != 0 || f.type != SPOOL_OBJECT)
            continue;
        rc = stage_spool_ctl_read(st, at, &f, c, err, errlen);
        if (rc == 0 && c->seq != c->found + 1)
            return 1;
    }
    return rc == S3C_EEND ? 0 : rc;
}

/* Following the chain beside the spool's frames: each object on the chain must be of the
 * epoch of the spool's frames it holds (the run that accepted them, which wrote it). */
struct spool_vs_chain {
    struct s3c_stage *st;
    struct spool_pos pos;
    struct spool_frame f;
    bool have;
    int rc;           /* a read of the spool failed (err) */
    uint64_t bad_seq; /* 0, or the first seq the chain holds of another epoch */
    uint64_t chain_epoch, spool_epoch;
    char err[512];
};

static int stage_spool_vs_obj(void *ctx, const struct obj_header *h)
{
    struct spool_vs_chain *v = ctx;
    for (;;) {
        if (!v->have) {
            int rc = spool_read(v->st->spool, &v->pos, &v->f, NULL, 0, v->err, sizeof(v->err));
            if (rc == S3C_EEND)
                return 1; /* the spool's frames are all compared */
            if (rc != 0) {
                v->rc = rc;
                return 1;
            }
            v->have = v->f.type != SPOOL_SEAL;
            continue;
        }
        if (v->f.last < h->first_seq) { /* before the object (the walk starts below) */
            v->have = false;
            continue;
        }
        if (v->f.first > h->last_seq)
            return 0; /* the next object's */
        if (v->f.epoch != h->epoch) {
            v->bad_seq = v->f.first > h->first_seq ? v->f.first : h->first_seq;
            v->chain_epoch = h->epoch;
            v->spool_epoch = v->f.epoch;
            return 1;
        }
        if (v->f.last > h->last_seq)
            return 0; /* it goes on into the next object */
        v->have = false;
    }
}

/* The spool's seqs up to upto are about to be taken as in S3 (trimmed, not sent again).
 * Those at or below a W a run of this spool acknowledged are on the chain with these
 * bytes. Two such W are known: the highest a BEGIN or END frame recorded, and the
 * manifest's durable_seq when the manifest writer_open found was written by the spool's
 * last run (its epoch; the manifest is written every manifest_interval_ms, so after a
 * crash it is the nearer). Past the higher, follow the chain from it and check every
 * object up to upto against the spool's frames (each must be of the epoch of the frames
 * it holds: the run that accepted them wrote it). A spool written before frames recorded W
 * and without that manifest: from the W its oldest gap run found; with none, *checked stays
 * false (the non-replay caller falls back to the highest-epoch rule). Returns 0 (they are
 * the log's), S3C_ECORRUPT (not: err says so) or an error of the requests. */
static int stage_spool_check(struct s3c_stage *st, uint64_t upto, bool *checked, char *err,
                             size_t errlen)
{
    uint64_t from = st->spool_wmark, start_epoch = 0;
    if (st->ws.found_seq > from && st->ws.found_epoch == st->spool_epoch && st->spool_commit)
        from = st->ws.found_seq;
    *checked = from > 0;
    if (from > st->ws.recovered_seq) {
        snprintf(err, errlen,
                 "spool.dir %s says seqs up to %" PRIu64 " were durable in S3, but the log "
                 "at s3://%s/%slog/ ends at %" PRIu64 ": acknowledged commits are missing "
                 "from it (a wrong bucket or prefix, or a log rewritten); check s3.bucket "
                 "and s3.prefix, else move spool.dir aside (keep it: it holds commits)",
                 st->cfg.spool.dir, from, st->cfg.s3.bucket, st->cfg.s3.prefix,
                 st->ws.recovered_seq);
        return S3C_ECORRUPT;
    }
    if (from >= upto)
        return 0;
    if (from == 0) {
        struct spool_ctl c = {0};
        int rc = stage_spool_gap_run(st, &c, err, errlen);
        if (rc <= 0 || c.found >= upto)
            return rc < 0 ? rc : 0;
        from = c.found, start_epoch = c.start_epoch;
        *checked = true;
    }
    struct spool_vs_chain v = {.st = st};
    int rc = spool_find(st->spool, st->spool_first, &v.pos, err, errlen);
    if (rc != 0)
        return rc;
    uint64_t end = 0;
    int fn_rc = 0;
    rc = writer_chain_follow(st->x, &st->cfg, from, start_epoch, upto, stage_spool_vs_obj, &v, &end,
                             &fn_rc, err, errlen);
    S3C_LOG(S3C_LOG_INFO,
            "event=spool_chain_check from_seq=%" PRIu64 " to_seq=%" PRIu64 " reached=%" PRIu64
            " bad_seq=%" PRIu64,
            from + 1, upto, end, v.bad_seq);
    if (rc < 0)
        return rc;
    if (v.rc != 0) {
        snprintf(err, errlen, "%s", v.err);
        return v.rc;
    }
    if (v.bad_seq) {
        snprintf(err, errlen,
                 "spool.dir %s holds seq %" PRIu64 " of epoch %" PRIu64 ", but the log in S3 "
                 "holds it in an object of epoch %" PRIu64 ": another writer took the log "
                 "over at or before that seq (the spool knew seqs up to %" PRIu64 " "
                 "durable), and the spool's commits that were not in S3 then cannot be "
                 "placed after it; move spool.dir aside (keep it: it holds commits) and "
                 "open again",
                 st->cfg.spool.dir, v.bad_seq, v.spool_epoch, v.chain_epoch, from);
        return S3C_ECORRUPT;
    }
    if (fn_rc == 0 && end < upto) {
        snprintf(err, errlen,
                 "spool.dir %s holds seqs up to %" PRIu64 ", but the chain of objects from "
                 "seq %" PRIu64 " (the last the spool knew durable) stops at %" PRIu64 ": the "
                 "spool and the log disagree; move spool.dir aside (keep it: it holds "
                 "commits) and open again",
                 st->cfg.spool.dir, upto, from, end);
        return S3C_ECORRUPT;
    }
    return 0;
}

/* The log in S3 already covers the spool's last commit X: is it our commit there, or did
 * another writer take the log over and write its own at X? The chain's object holding X
 * must be of the epoch that accepted X. X is the last commit, not the spool's last seq:
 * that may be a run's control record, which writer_open PUT before anything else, so a
 * run fenced during its replay leaves it in S3 past the chain's end, of its own epoch,
 * while the takeover writer's objects cover the spooled commits before it (chaos seed
 * 1284684526: 432 locally acknowledged commits trimmed away as "in S3 already"). And it is
 * the chain's object, not just any object holding X: a fenced run's PUTs that were in
 * flight can land past the takeover's fence as orphans of the spool's own epoch, holding X
 * beside the chain's object (writer_chain_epoch_at takes the highest epoch, which is the
 * chain's). Returns 0 (ours), S3C_ECORRUPT (another writer's: err says so) or an error of
 * the requests. */
static int stage_spool_in_log(struct s3c_stage *st, uint64_t x, char *err, size_t errlen)
{
    const struct s3c_config *cfg = &st->cfg;
    uint64_t span = st->ws.max_batch_commits, epoch = 0;
    if (span < (uint64_t)cfg->persistence.batch_size_threshold)
        span = (uint64_t)cfg->persistence.batch_size_threshold;
    int rc = writer_chain_epoch_at(st->x, cfg, x, span, &epoch, err, errlen);
    if (rc < 0)
        return rc;
    if (epoch == st->spool_epoch)
        return 0;
    snprintf(err, errlen,
             "spool.dir %s holds seqs up to %" PRIu64 " of epoch %" PRIu64 ", but the log in "
             "S3 holds %s at seq %" PRIu64 ": another writer took the log over, and the "
             "spool's commits that were not in S3 then cannot be placed after it; move "
             "spool.dir aside (keep it: it holds commits) and open again",
             cfg->spool.dir, x, st->spool_epoch, epoch ? "an object of another epoch" : "no object",
             x);
    return S3C_ECORRUPT;
}

/* Whether the spool's commits can go on the log as st->ws found it: the refusals
 * (docs/spool.md, "Crash recovery"). Reads the spool and S3, changes nothing. */
static int stage_spool_verdict(struct s3c_stage *st, char *err, size_t errlen)
{
    struct writer_state *ws = &st->ws;
    uint64_t w = ws->recovered_seq, last = spool_local_seq(st->spool);
    bool checked;
    if (last <= w) {
        if (st->spool_commit == 0)
            return 0;
        /* in S3 already: ours, or a takeover's? */
        int rc = stage_spool_check(st, st->spool_commit, &checked, err, errlen);
        if (rc == 0 && !checked)
            rc = stage_spool_in_log(st, st->spool_commit, err, errlen);
        return rc;
    }
    struct spool_pos pos;
    struct spool_frame f;
    /* A W the spool recorded past the log's end (a SKIP there, or a BEGIN or END):
     * commits acknowledged in S3 are not in this log, and a SKIP's cannot be sent
     * again. Said before looking for the frame at w + 1, which may lie inside one. */
    int rc = st->spool_wmark > w ? stage_spool_check(st, w, &checked, err, errlen) : 0;
    if (rc != 0)
        return rc;
    rc = spool_find(st->spool, w + 1, &pos, err, errlen);
    if (rc == 0)
        rc = spool_read(st->spool, &pos, &f, NULL, 0, err, errlen);
    if (rc == S3C_EEND) {
        snprintf(err, errlen,
                 "spool.dir %s holds seqs up to %" PRIu64 ", but no commit at seq %" PRIu64
                 " where the log in S3 ends (seq %" PRIu64 "): the spool and the log "
                 "disagree, most likely because another writer took the log over and "
                 "ended its objects elsewhere; move spool.dir aside (keep it: it holds "
                 "commits) and open again",
                 st->cfg.spool.dir, last, w + 1, w);
        return S3C_ECORRUPT;
    }
    if (rc != 0)
        return rc;
    if (f.epoch < ws->chain_start_epoch) {
        snprintf(err, errlen,
                 "spool.dir %s holds seqs %" PRIu64 "..%" PRIu64 " of epoch %" PRIu64
                 ", but a writer of epoch %" PRIu64 " took the log over at or before seq "
                 "%" PRIu64 ": those commits were never durable in S3 and cannot be placed "
                 "after it; move spool.dir aside (keep it: it holds commits) and open again",
                 st->cfg.spool.dir, w + 1, last, f.epoch, ws->chain_start_epoch, w);
        return S3C_ECORRUPT;
    }
    /* what is trimmed as in S3 already must be the log's */
    return w >= st->spool_first ? stage_spool_check(st, w, &checked, err, errlen) : 0;
}

/* What a verdict was given on: the log as found (writer_open's or writer_peek's). */
static struct stage_seen stage_seen_now(const struct writer_state *ws)
{
    return (struct stage_seen){.valid = true,
                               .recovered_seq = ws->recovered_seq,
                               .chain_start_epoch = ws->chain_start_epoch,
                               .max_batch_commits = ws->max_batch_commits,
                               .found_epoch = ws->found_epoch,
                               .found_seq = ws->found_seq};
}

void (*stage_test_after_precheck)(void);

static bool stage_seen_same(const struct stage_seen *a, const struct stage_seen *b)
{
    return a->valid == b->valid && a->recovered_seq == b->recovered_seq &&
           a->chain_start_epoch == b->chain_start_epoch &&
           a->max_batch_commits == b->max_batch_commits && a->found_epoch == b->found_epoch &&
           a->found_seq == b->found_seq;
}

int stage_spool_precheck(struct s3c_stage *st, const struct writer_state *peeked, char *err,
                         size_t errlen)
{
    if (spool_local_seq(st->spool) == 0)
        return 0;     /* an empty spool: nothing to refuse */
    st->ws = *peeked; /* the verdict reads st->ws */
    int rc = stage_spool_verdict(st, err, errlen);
    if (rc == 0)
        st->seen = stage_seen_now(&st->ws);
    memset(&st->ws, 0, sizeof(st->ws)); /* writer_open fills it */
    return rc;
}

/* After writer_open: what of the spool is still to go to S3 (the replay), our control
 * record into the spool, and the thread. The verdict was given before writer_open on
 * what a peek found; it is given again only when the log moved since (another writer
 * wrote meanwhile). */
int stage_spool_begin(struct s3c_stage *st, char *err, size_t errlen)
{
    struct writer_state *ws = &st->ws;
    uint64_t w = ws->recovered_seq, last = spool_local_seq(st->spool);
    struct stage_seen now = stage_seen_now(ws);
    if (last > 0 && !stage_seen_same(&now, &st->seen)) {
        S3C_LOG(S3C_LOG_INFO,
                "event=spool_recheck recovered_seq=%" PRIu64 " peeked_seq=%" PRIu64
                " chain_start_epoch=%" PRIu64 " peeked_start_epoch=%" PRIu64 " found_epoch=%" PRIu64
                " peeked_found_epoch=%" PRIu64 " found_seq=%" PRIu64 " peeked_found_seq=%" PRIu64
                " max_batch=%" PRIu64 " peeked_max_batch=%" PRIu64
                " msg=\"the log or its manifest changed since the spool was checked: "
                "checking again\"",
                w, st->seen.recovered_seq, now.chain_start_epoch, st->seen.chain_start_epoch,
                now.found_epoch, st->seen.found_epoch, now.found_seq, st->seen.found_seq,
                now.max_batch_commits, st->seen.max_batch_commits);
        int rc = stage_spool_verdict(st, err, errlen);
        if (rc != 0)
            return rc;
    }
    st->next_batch = st->base + 1;
    st->acquired_last = st->base;
    atomic_store(&st->durable, st->base);
    if (last > w) {
        struct spool_pos pos, at;
        struct spool_frame f;
        int rc = spool_find(st->spool, w + 1, &pos, err, errlen);
        at = pos;
        if (rc == 0)
            rc = spool_read(st->spool, &at, &f, NULL, 0, err, errlen);
        if (rc == S3C_EEND) /* the verdict on this very W found it: a bug if not */
            snprintf(err, errlen,
                     "spool.dir %s: internal error: the commit at seq %" PRIu64 " was found "
                     "by the check and not by the replay; please report it (our fence is "
                     "placed; nothing of the spool was sent)",
                     st->cfg.spool.dir, w + 1);
        if (rc != 0)
            return rc;
        spool_trim(st->spool, w);
        st->next_batch = w + 1;
        st->replay_end = last;
        st->cur = pos;
        st->cur_valid = true;
        st->seals = spool_seals(st->spool, &st->nseals);
        atomic_store(&st->durable, w);
        S3C_LOG(S3C_LOG_INFO,
                "event=spool_replay first_seq=%" PRIu64 " last_seq=%" PRIu64 " epoch=%" PRIu64
                " seals=%zu control_seq=%" PRIu64,
                w + 1, last, f.epoch, st->nseals, st->base);
    } else {
        spool_trim(st->spool, UINT64_MAX); /* all of it is in S3 already */
    }
    unsigned char obj[1024];
    size_t n = writer_fence_bytes(ws, obj, sizeof(obj));
    int rc = spool_append_object(st->spool, st->base, ws->epoch, obj, n, err, errlen);
    if (rc != 0)
        return rc;
    if (spool_start(st->spool) != 0) {
        snprintf(err, errlen, "stage: cannot start the spool's thread: %s", strerror(errno));
        return S3C_EIO;
    }
    return 0;
}

/* ---- L for producers and subscribers ------------------------------------------------ */

uint64_t s3c_local_seq(const s3c_stage *st)
{
    if (!st)
        return 0;
    return st->spool ? spool_local_seq(st->spool) : atomic_load(&((s3c_stage *)st)->durable);
}

int s3c_wait_local(s3c_stage *st, uint64_t seq, int timeout_ms)
{
    return stage_wait(st, seq, timeout_ms, st && st->spool);
}

int s3c_subscribe_local(s3c_stage *st, s3c_durable_fn fn, void *ctx)
{
    if (!st || !st->spool)
        return S3C_EINVAL;
    return stage_subscribe(st, fn, ctx, true);
}
