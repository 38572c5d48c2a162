/* The persistence thread's side of the local spool (docs/spool.md). Every commit taken from
 * the ring goes to the spool at once, as a chunk (so L follows within a write group); batches
 * are still formed by the stage's triggers, from chunks that are still in the ring (no
 * copy), or else from the spool: a chunk's ring space goes back once it is written and no
 * PUT is reading it, at the latest when W passes it, and earlier when the ring or the queue
 * runs short (an outage). Memory therefore stays bounded by the ring, however long S3 is
 * away. A replay of an earlier run's spool is read from the spool the same way, keeping
 * that run's object bounds (its seals) and epochs, so a re-sent object is byte-identical. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "stage/stage_int.h"

void stage_on_spool_wake(void *ctx, int fd, unsigned events)
{
    uint64_t v;
    (void)ctx, (void)events;
    while (read(fd, &v, sizeof(v)) == sizeof(v))
        ;
}

/* W has not moved for SPOOL_W_STALL_MS while commits wait for it: S3 is not keeping up
 * (an outage, or retries), as opposed to a ring that is full because producers outrun
 * a healthy pipeline, where W moves every few milliseconds. */
static bool stage_w_stalled(struct s3c_stage *st)
{
    uint64_t w = atomic_load(&st->durable), now = s3c__now_ns();
    if (w != st->w_seen || st->w_seen_ns == 0) {
        st->w_seen = w;
        st->w_seen_ns = now;
        return false;
    }
    return now - st->w_seen_ns > (uint64_t)SPOOL_W_STALL_MS * 1000000u;
}

/* The ring or the queue runs out: give back ring space as soon as the spool holds it.
 * Not earlier: a batch built from the spool costs a read and a CRC check of its bytes, so
 * at full speed with S3 keeping up (a busy ring, W moving) the ring keeps them: there the
 * read-back only spends the CPU the pipeline is short of (measured: L ran to 4.6 M/s while
 * W fell behind, 7,000 frames read back in 3 s; see docs/spool.md). */
static bool stage_spool_pressure(struct s3c_stage *st)
{
    uint64_t queued = spool_req_pushed(st->spool) - spool_req_freed(st->spool);
    if (queued > SPOOL_QUEUE * 3 / 4)
        return true;
    bool ring_short = ring_producers_waiting(st->ring) ||
                      ring_used_bytes(st->ring) > (uint64_t)st->cfg.pipeline.ring_bytes / 8 * 7;
    return ring_short && stage_w_stalled(st);
}

/* The CRC-32C of a chunk's records, computed once, here: the spool's frame and the object
 * holding the chunk are both built from it (crc32c_combine). Records of 512 bytes and up are
 * joined from the CRC their producer computed (obj_records_crc), not read again. Before,
 * the spool writer ran a CRC over every byte and the object's was run again: 40 ns a
 * 128-byte commit. */
static uint32_t stage_chunk_crc(struct s3c_stage *st, const struct ring_batch *rb)
{
    struct iovec runs[2];
    int n = ring_batch_spans(st->ring, rb, runs);
    if (n > 0)
        return obj_records_crc(0, runs, n);
    uint32_t crc = 0; /* a short commit left a gap: record by record */
    struct ring_iter it;
    struct ring_rec rec;
    ring_iter_init(rb, &it);
    while (ring_iter_next(st->ring, &it, &rec)) {
        struct iovec one = {(unsigned char *)rec.prefix + PFX_RECHDR,
                            OBJ_RECORD_HEADER_BYTES + rec.len};
        crc = obj_records_crc(crc, &one, 1);
    }
    return crc;
}

void stage_spool_take(struct s3c_stage *st)
{
    const struct cfg_persistence *p = &st->cfg.persistence;
    uint64_t now = 0;
    for (;;) {
        struct spool_req *r = spool_req_next(st->spool);
        if (!r)
            return;
        struct ring_ready rd = ring_poll_sc(st->ring, (uint32_t)p->batch_size_threshold,
                                            (uint64_t)p->batch_bytes_threshold);
        if (rd.count == 0 || !ring_acquire_sc(st->ring, &r->rb))
            return;
        if (!now)
            now = s3c__now_ns();
        r->type = SPOOL_CHUNK;
        r->first = r->rb.first_seq + st->base;
        r->last = r->rb.last_seq + st->base;
        r->epoch = st->ws.epoch;
        r->count = r->rb.count;
        r->len = r->rb.bytes + (uint64_t)r->rb.count * OBJ_RECORD_HEADER_BYTES;
        r->crc = stage_chunk_crc(st, &r->rb);
        r->user[1] = now; /* taken at: the batch timer runs from the oldest */
        st->acquired_last = r->last;
        CINC(commits_seen, r->rb.count);
        CINC(bytes_seen, r->rb.bytes);
        spool_push(st->spool);
    }
}

/* The batch a chunk went into, while that batch is not acknowledged yet. */
static struct batch *stage_chunk_batch(struct s3c_stage *st, const struct spool_req *r)
{
    if (!r->user[0])
        return NULL;
    struct batch *b = &st->batches[r->user[0] - 1];
    if (b->state == B_FREE || b->first > r->first || b->last < r->last)
        return NULL; /* acknowledged, and the slot taken by a later batch */
    return b;
}

void stage_spool_release(struct s3c_stage *st)
{
    /* After a failure the spool takes nothing more, but its writer may still be reading
     * the requests it held: their ring space waits until it is out (it notifies). */
    bool failed = atomic_load(&st->spool_failed) && spool_writer_quiet(st->spool);
    bool pressure = stage_spool_pressure(st);
    for (;;) {
        bool written, taken;
        uint64_t idx = spool_req_freed(st->spool);
        struct spool_req *r = spool_req_oldest(st->spool, &written, &taken);
        if (!r)
            break;
        if (r->type == SPOOL_SEAL) {
            if (!taken && !failed)
                break;
            spool_req_free(st->spool);
            continue;
        }
        struct batch *b = stage_chunk_batch(st, r);
        bool acked = r->last <= atomic_load(&st->durable);
        /* on the wire, or with a compression worker: its spans point into the ring */
        bool reading = b && (b->state == B_WIRE || b->state == B_COMPRESS) && b->from_ring;
        if (acked && (taken || failed)) {
            /* done with: S3 has it, and the spool's writer has copied it (durable or not
             * yet: S3 has it), written it as a SKIP, or cannot take it */
        } else if (written && !reading && pressure && !acked) {
            /* Early: from now on these commits are read from the spool. */
            if (b) {
                b->need_reload = b->from_ring;
                if (r->first == b->first) {
                    b->spos = r->pos;
                    b->spos_valid = true;
                }
            } else if (!r->user[0] && !st->cur_valid) {
                st->cur = r->pos; /* the first chunk not in a batch: the cursor starts here */
                st->cur_valid = true;
            }
        } else {
            break;
        }
        if (st->qnext == idx)
            st->qnext = idx + 1;
        ring_release_sc(st->ring, &r->rb);
        spool_req_free(st->spool);
    }
}

bool stage_spool_idle(const struct s3c_stage *st)
{
    return st->next_batch > st->acquired_last && st->next_batch > st->replay_end;
}

static void stage_push_seal(struct s3c_stage *st, const struct batch *b)
{
    struct spool_req *r = spool_req_next(st->spool);
    if (!r)
        return; /* a seal only keeps a replay byte-identical; the settle rules cover the rest */
    r->type = SPOOL_SEAL;
    r->first = b->first;
    r->last = b->last;
    r->epoch = b->epoch;
    spool_push(st->spool);
}

static int stage_buf_room(struct batch *b, size_t need)
{
    if (b->buflen + need <= b->bufcap)
        return 0;
    size_t cap = b->bufcap ? b->bufcap : 65536;
    while (cap < b->buflen + need)
        cap *= 2;
    unsigned char *n = realloc(b->buf, cap);
    if (!n)
        return S3C_ENOMEM;
    b->buf = n;
    b->bufcap = cap;
    return 0;
}

/* Reads the records of seqs from..to (or, with to == 0, as many chunk frames as the
 * batch limits allow, up to limit) from *pos into b->buf. Fills b's seqs and epoch.
 * Returns 0, S3C_EEND (nothing durable to read yet) or an error (said in b's stage). */
static int stage_read_records(struct s3c_stage *st, struct batch *b, struct spool_pos *pos,
                              uint64_t from, uint64_t to, uint64_t limit)
{
    const struct cfg_persistence *p = &st->cfg.persistence;
    char err[512];
    uint32_t count = 0;
    uint64_t bytes = 0;
    int rc;
    b->buflen = 0;
    b->whole = false;
    for (;;) {
        struct spool_pos at = *pos;
        struct spool_frame f;
        rc = spool_read(st->spool, &at, &f, NULL, 0, err, sizeof(err));
        if (rc == S3C_EEND && count > 0)
            break;
        if (rc != 0)
            goto fail_rc;
        if (f.type == SPOOL_SEAL || f.last < from) {
            *pos = at; /* not ours: a seal, or what is in a batch already */
            continue;
        }
        if (count == 0 && f.first != from) {
            snprintf(err, sizeof(err),
                     "spool: segment %020" PRIu64 ".seg offset %" PRIu64 ": a frame of seqs "
                     "%" PRIu64 "..%" PRIu64 " where seq %" PRIu64 " should start",
                     pos->seg, pos->off, f.first, f.last, from);
            rc = S3C_ECORRUPT;
            goto fail_rc;
        }
        if (f.first > (to ? to : limit))
            break;
        if (f.type == SPOOL_SKIP) { /* only seqs W passed are skipped, and none is read */
            snprintf(err, sizeof(err),
                     "spool: segment %020" PRIu64 ".seg offset %" PRIu64 ": seqs %" PRIu64
                     "..%" PRIu64 " were skipped as durable in S3, but seq %" PRIu64
                     " is to be sent",
                     pos->seg, pos->off, f.first, f.last, from);
            rc = S3C_ECORRUPT;
            goto fail_rc;
        }
        if (f.type == SPOOL_OBJECT) {
            if (count > 0)
                break;
            b->whole = true; /* a control record, sent as it was */
        } else if (count > 0) {
            if (f.epoch != b->epoch || (to && f.last > to))
                break;
            if (!to && (count + f.count > (uint64_t)p->batch_size_threshold ||
                        bytes + f.len > (uint64_t)p->batch_bytes_threshold))
                break;
        }
        if (stage_buf_room(b, f.len) != 0) {
            rc = S3C_ENOMEM;
            snprintf(err, sizeof(err), "out of memory reading the spool");
            goto fail_rc;
        }
        rc = spool_read(st->spool, pos, &f, b->buf + b->buflen, b->bufcap - b->buflen, err,
                        sizeof(err));
        if (rc != 0)
            goto fail_rc;
        CINC(spool_reads, 1);
        CINC(spool_read_bytes, f.len);
        if (count == 0)
            b->epoch = f.epoch;
        b->buflen += f.len;
        bytes += f.len - (uint64_t)f.count * OBJ_RECORD_HEADER_BYTES;
        count += f.type == SPOOL_OBJECT ? 1 : f.count;
        b->last = f.last;
        if (b->whole || (to && f.last >= to))
            break;
    }
    b->first = from;
    b->count = count;
    b->bytes = bytes;
    return 0;
fail_rc:
    if (rc != S3C_EEND) {
        stage_set_error(st, "%s", err);
        S3C_LOG(S3C_LOG_ERROR, "event=spool_read_failed error=\"%s\"", err);
    }
    return rc;
}

/* The object around what stage_read_records left in b->buf; compressed by a worker when
 * may_defer (a new batch), else here (a reload, inside a send). */
static void stage_spool_object(struct s3c_stage *st, struct batch *b, bool may_defer)
{
    b->from_ring = false;
    b->need_reload = false;
    b->t_n = 0;
    b->t_sum = 0;
    if (!b->whole) {
        b->iov[1] = (struct iovec){b->buf, b->buflen};
        stage_finish_object(st, b, 1, may_defer);
        return;
    }
    /* A spooled control record: its own bytes, header and trailer included. */
    memcpy(b->header, b->buf, OBJ_HEADER_BYTES);
    memcpy(b->trailer, b->buf + b->buflen - OBJ_TRAILER_BYTES, OBJ_TRAILER_BYTES);
    b->iov[0] = (struct iovec){b->buf, b->buflen};
    b->iovcnt = 1;
    b->size = b->buflen;
    b->crc32c = crc32c_update(0, b->buf, b->buflen);
    obj_key(b->key, sizeof(b->key), st->cfg.s3.prefix, b->first);
    b->if_match[0] = '\0';
    b->attempts = 0;
    b->retry_cost = 0;
}

int stage_spool_reload(struct s3c_stage *st, struct batch *b)
{
    if (!b->need_reload)
        return 0;
    if (!b->spos_valid)
        return S3C_EEND;
    struct spool_pos pos = b->spos;
    uint64_t last = b->last, epoch = b->epoch;
    char key[sizeof(b->key)], im[sizeof(b->if_match)];
    int attempts = b->attempts, cost = b->retry_cost;
    memcpy(key, b->key, sizeof(key));
    memcpy(im, b->if_match, sizeof(im));
    int rc = stage_read_records(st, b, &pos, b->first, last, last);
    if (rc != 0)
        return rc;
    if (b->last != last || b->epoch != epoch) {
        stage_set_error(st, "spool: seqs %" PRIu64 "..%" PRIu64 " could not be read back whole",
                        b->first, last);
        return S3C_ECORRUPT;
    }
    stage_spool_object(st, b, false);
    /* The same object again: same key, same bytes; the attempt count and an If-Match
     * carry over. */
    memcpy(b->if_match, im, sizeof(im));
    b->attempts = attempts;
    b->retry_cost = cost;
    (void)key;
    return 0;
}

/* Appends a chunk's records to iov[n..] as spans: records that lie back to back in the ring
 * are one span, across chunks too (consecutive chunks are consecutive in the ring), so a
 * batch is one or two spans as without a spool. Returns the new n. One iovec per record, as
 * a first version had, cost the persistence thread a record walk, a CRC call per record
 * and the transport's per-iovec copy: 60 ns a 128-byte commit (docs/spool.md). */
static int stage_chunk_spans(struct s3c_stage *st, const struct ring_batch *rb, struct iovec *iov,
                             int n)
{
    _Static_assert(PFX_RECHDR == 0, "a ring record must be exactly the object's record");
    struct iovec runs[2];
    int nruns = ring_batch_spans(st->ring, rb, runs);
    for (int i = 0; i < nruns; i++) {
        struct iovec *prev = &iov[n - 1];
        if (n > 1 && (unsigned char *)prev->iov_base + prev->iov_len == runs[i].iov_base)
            prev->iov_len += runs[i].iov_len;
        else
            iov[n++] = runs[i];
    }
    if (nruns > 0)
        return n;
    struct ring_iter it; /* a short commit left a gap: join the records around it */
    struct ring_rec rec;
    ring_iter_init(rb, &it);
    while (ring_iter_next(st->ring, &it, &rec)) {
        unsigned char *p = (unsigned char *)rec.prefix + PFX_RECHDR;
        size_t len = OBJ_RECORD_HEADER_BYTES + rec.len;
        struct iovec *prev = &iov[n - 1];
        if (n > 1 && (unsigned char *)prev->iov_base + prev->iov_len == p)
            prev->iov_len += len;
        else
            iov[n++] = (struct iovec){p, len};
    }
    return n;
}

/* A batch of chunks still in the ring, from qnext: no copy. */
static void stage_form_from_ring(struct s3c_stage *st, struct batch *b)
{
    const struct cfg_persistence *p = &st->cfg.persistence;
    uint64_t pushed = spool_req_pushed(st->spool);
    uint32_t count = 0;
    uint64_t bytes = 0;
    int n = 1;
    b->t_sum = 0;
    b->t_n = 0;
    for (; st->qnext < pushed; st->qnext++) {
        struct spool_req *r = spool_req_at(st->spool, st->qnext);
        if (r->type == SPOOL_SEAL)
            continue;
        if (count > 0 && (count + r->count > (uint64_t)p->batch_size_threshold ||
                          bytes + r->rb.bytes > (uint64_t)p->batch_bytes_threshold))
            break;
        if (count == 0)
            b->first = r->first;
        b->rec_crc = count == 0 ? r->crc : crc32c_combine(b->rec_crc, r->crc, (size_t)r->len);
        b->last = r->last;
        count += r->count;
        bytes += r->rb.bytes;
        r->user[0] = (uint64_t)(b - st->batches) + 1;
        uint32_t tn;
        b->t_sum += stage_lat_sum(st, &r->rb, &tn); /* sampled ones */
        b->t_n += tn;
        n = stage_chunk_spans(st, &r->rb, b->iov, n);
    }
    b->count = count;
    b->bytes = bytes;
    b->epoch = st->ws.epoch;
    b->from_ring = true;
    b->rec_crc_valid = true;
    b->need_reload = false;
    b->spos_valid = false;
    b->whole = false;
    stage_finish_object(st, b, n - 1, true);
    st->cur_valid = false;
}

/* The first chunk not in a batch that is still in the ring, or NULL. */
static struct spool_req *stage_first_unbatched(struct s3c_stage *st)
{
    uint64_t pushed = spool_req_pushed(st->spool);
    if (st->qnext < spool_req_freed(st->spool))
        st->qnext = spool_req_freed(st->spool);
    for (; st->qnext < pushed; st->qnext++) {
        struct spool_req *r = spool_req_at(st->spool, st->qnext);
        if (r->type == SPOOL_CHUNK)
            return r;
    }
    return NULL;
}

int stage_spool_form(struct s3c_stage *st, struct batch *b, uint64_t now, bool closing,
                     int *timeout)
{
    const struct cfg_persistence *p = &st->cfg.persistence;
    bool replay = st->next_batch <= st->replay_end;
    struct spool_req *c = replay ? NULL : stage_first_unbatched(st);
    b->replayed = replay;

    if (c && c->first == st->next_batch) {
        /* In the ring: the stage's triggers, as without a spool. */
        uint32_t count = 0;
        uint64_t bytes = 0;
        bool full = false;
        for (uint64_t i = st->qnext; i < spool_req_pushed(st->spool) && !full; i++) {
            struct spool_req *r = spool_req_at(st->spool, i);
            if (r->type != SPOOL_CHUNK)
                continue;
            count += r->count;
            bytes += r->rb.bytes;
            full = count >= (uint64_t)p->batch_size_threshold ||
                   bytes >= (uint64_t)p->batch_bytes_threshold;
        }
        uint64_t due = c->user[1] + (uint64_t)p->batch_timeout_ms * 1000000u;
        bool fire = full || st->outstanding == 0 || closing || now >= due ||
                    ring_producers_waiting(st->ring) || stage_spool_pressure(st);
        if (!fire) {
            int t = (int)((due - now + 999999) / 1000000);
            *timeout = *timeout < 0 || t < *timeout ? t : *timeout;
            return 0;
        }
        stage_form_from_ring(st, b);
    } else {
        if (!replay && st->next_batch > st->acquired_last)
            return 0; /* nothing new */
        if (!st->cur_valid) {
            stage_set_error(st, "spool: lost track of seq %" PRIu64 " in the spool",
                            st->next_batch);
            return S3C_ECORRUPT;
        }
        uint64_t to = 0, limit = replay ? st->replay_end : c ? c->first - 1 : st->acquired_last;
        while (replay && st->seal_i < st->nseals && st->seals[st->seal_i].last < st->next_batch)
            st->seal_i++;
        if (replay && st->seal_i < st->nseals && st->seals[st->seal_i].first == st->next_batch &&
            st->seals[st->seal_i].last <= limit)
            to = st->seals[st->seal_i].last; /* the earlier run's object bounds */
        struct spool_pos start = st->cur;
        int rc = stage_read_records(st, b, &st->cur, st->next_batch, to, limit);
        if (rc == S3C_EEND)
            return 0;
        if (rc != 0)
            return rc;
        while (start.seg != st->cur.seg || start.off != st->cur.off) {
            /* the frame of the batch's first seq, for a reload (skipping seals) */
            struct spool_pos at = start;
            struct spool_frame f;
            char err[256];
            if (spool_read(st->spool, &at, &f, NULL, 0, err, sizeof(err)) != 0 ||
                (f.type != SPOOL_SEAL && f.last >= b->first))
                break;
            start = at;
        }
        b->spos = start;
        b->spos_valid = true;
        stage_spool_object(st, b, true);
        if (replay)
            CINC(replayed_batches, 1);
    }
    if (!b->whole)
        stage_push_seal(st, b);
    st->next_batch = b->last + 1;
    if (st->next_batch == st->base)
        st->next_batch = st->base + 1; /* our control record: durable since the open */
    return 1;
}
