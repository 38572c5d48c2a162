/* The local spool: segment files, the append thread with group commit, and reading back
 * (spool.h). Open-time checking and the directory lock are in scan.c. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "format/objfmt.h"
#include "s3commit.h"
#include "spool/spool_int.h"

const struct spool_io *spool_test_io;

/* ---- frames ----------------------------------------------------------------------- */

static void spool_put32(unsigned char *p, uint32_t v)
{
    memcpy(p, &v, 4); /* little-endian hosts only (x86-64, arm64), as the object format */
}

static void spool_put64(unsigned char *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static uint32_t spool_get32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t spool_get64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

void spool_frame_encode(const struct spool_frame *f, unsigned char h[SPOOL_FRAME_HEADER])
{
    memset(h, 0, SPOOL_FRAME_HEADER);
    spool_put32(h, SPOOL_MAGIC);
    h[4] = (unsigned char)f->type;
    spool_put32(h + 8, f->len);
    spool_put32(h + 12, f->count);
    spool_put64(h + 16, f->first);
    spool_put64(h + 24, f->last);
    spool_put64(h + 32, f->epoch);
}

void spool_frame_seal(unsigned char h[SPOOL_FRAME_HEADER], uint32_t crc)
{
    spool_put32(h + 40, crc);
}

int spool_frame_decode(const unsigned char h[SPOOL_FRAME_HEADER], struct spool_frame *f,
                       uint32_t *crc)
{
    if (spool_get32(h) != SPOOL_MAGIC)
        return -1;
    f->type = (enum spool_type)h[4];
    if (f->type != SPOOL_CHUNK && f->type != SPOOL_SEAL && f->type != SPOOL_OBJECT)
        return -1;
    f->len = spool_get32(h + 8);
    f->count = spool_get32(h + 12);
    f->first = spool_get64(h + 16);
    f->last = spool_get64(h + 24);
    f->epoch = spool_get64(h + 32);
    *crc = spool_get32(h + 40);
    if (f->last < f->first || (f->type == SPOOL_CHUNK && f->count != f->last - f->first + 1))
        return -1;
    return 0;
}

/* A CHUNK's CRC covers its header and its records' headers, which carry each payload's
 * CRC-32C (the producer's): so the spool thread reads 16 bytes per record, not all of it,
 * and a check of a read-back frame still covers every byte. */
bool spool_frame_check(const unsigned char h[SPOOL_FRAME_HEADER], const struct spool_frame *f,
                       uint32_t crc, const unsigned char *p)
{
    uint32_t c = crc32c_update(0, h, 40);
    if (f->type != SPOOL_CHUNK)
        return crc32c_update(c, p, f->len) == crc;
    uint64_t off = 0;
    for (uint64_t seq = f->first; seq <= f->last; seq++) {
        uint32_t len, pcrc;
        uint64_t rseq;
        if (off + OBJ_RECORD_HEADER_BYTES > f->len)
            return false;
        memcpy(&len, p + off, 4);
        memcpy(&pcrc, p + off + 4, 4);
        memcpy(&rseq, p + off + 8, 8);
        if (rseq != seq || len > f->len - off - OBJ_RECORD_HEADER_BYTES)
            return false;
        c = crc32c_update(c, p + off, OBJ_RECORD_HEADER_BYTES);
        if (crc32c_update(0, p + off + OBJ_RECORD_HEADER_BYTES, len) != pcrc)
            return false;
        off += OBJ_RECORD_HEADER_BYTES + len;
    }
    return off == f->len && c == crc;
}

void spool_seg_path(const struct spool *sp, uint64_t seg, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%020" PRIu64 ".seg", sp->dir, seg);
}

/* ---- the segment list (shared: the thread changes it, readers look it up) ------------ */

struct spool_seg *spool_seg_find(struct spool *sp, uint64_t seg)
{
    for (size_t i = 0; i < sp->nsegs; i++)
        if (sp->segs[i].seg == seg)
            return &sp->segs[i];
    return NULL;
}

int spool_seg_add(struct spool *sp, uint64_t seg)
{
    pthread_mutex_lock(&sp->segmu);
    if (sp->nsegs == sp->segcap) {
        size_t cap = sp->segcap ? sp->segcap * 2 : 16;
        struct spool_seg *n = realloc(sp->segs, cap * sizeof(*n));
        if (!n) {
            pthread_mutex_unlock(&sp->segmu);
            return S3C_ENOMEM;
        }
        sp->segs = n;
        sp->segcap = cap;
    }
    sp->segs[sp->nsegs++] = (struct spool_seg){.seg = seg, .last = seg - 1, .bytes = 0};
    pthread_mutex_unlock(&sp->segmu);
    return 0;
}

static void spool_unlink(struct spool *sp, uint64_t seg)
{
    char path[PATH_MAX];
    spool_seg_path(sp, seg, path, sizeof(path));
    if (unlink(path) != 0 && errno != ENOENT)
        S3C_LOG(S3C_LOG_WARN, "event=spool_unlink_failed path=%s error=\"%s\"", path,
                strerror(errno));
}

/* Unlinks a segment W has passed: on the preparer's thread once the threads run (the
 * unlink of a 64 MiB segment held the writer up to 33 ms at half load, every segment),
 * here when they do not. A crash before the unlink leaves a segment behind W, which the
 * next open trims. Segments go strictly oldest first: a newer one unlinked while an older
 * one waits in the queue would leave a hole that a crash turns into a seq gap, and the
 * scan cuts everything after a gap, locally durable commits included. So when the queue
 * is full this returns false and the segment stays, for the next W move. */
static bool spool_unlink_later(struct spool *sp, uint64_t seg)
{
    if (!sp->started) {
        spool_unlink(sp, seg);
        return true;
    }
    bool queued = false;
    pthread_mutex_lock(&sp->pmu);
    if (sp->nunlink < SPOOL_UNLINK_QUEUE) {
        sp->unlink_q[sp->nunlink++] = seg;
        pthread_cond_signal(&sp->pcv);
        queued = true;
    }
    pthread_mutex_unlock(&sp->pmu);
    return queued;
}

/* Deletes every segment but the open one whose data all lies at or below w. */
static void spool_delete_behind(struct spool *sp, uint64_t w)
{
    size_t keep = 0;
    bool stop = false; /* the unlink queue is full: this one and every later one stay */
    pthread_mutex_lock(&sp->segmu);
    for (size_t i = 0; i < sp->nsegs; i++) {
        struct spool_seg *s = &sp->segs[i];
        bool open_one = sp->fd >= 0 && s->seg == sp->cur_seg;
        if (!stop && !open_one && s->last <= w) {
            if (spool_unlink_later(sp, s->seg)) {
                atomic_fetch_sub(&sp->bytes, s->bytes);
                S3C_LOG(S3C_LOG_DEBUG,
                        "event=spool_segment_deleted seg=%" PRIu64 " last=%" PRIu64, s->seg,
                        s->last);
                continue;
            }
            stop = true;
        }
        sp->segs[keep++] = *s;
    }
    sp->nsegs = keep;
    pthread_mutex_unlock(&sp->segmu);
}

void spool_trim(struct spool *sp, uint64_t seq)
{
    spool_delete_behind(sp, seq);
}

/* ---- appending (the spool thread; before it starts, the opener) ---------------------- */

static ssize_t spool_real_writev(int fd, const struct iovec *iov, int n)
{
    return writev(fd, iov, n);
}

static int spool_real_fdatasync(int fd)
{
    return fdatasync(fd);
}

void spool_io_defaults(struct spool_io *io)
{
    if (!io->writev)
        io->writev = spool_real_writev;
    if (!io->fdatasync)
        io->fdatasync = spool_real_fdatasync;
}

static int spool_fsync_dir(struct spool *sp)
{
    int dfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    int rc = fsync(dfd);
    close(dfd);
    return rc;
}

/* Writes iov[0..n) whole, resuming after short writes. */
static int spool_writev_all(struct spool *sp, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = sp->io.writev(sp->fd, iov, n > IOV_MAX ? IOV_MAX : n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++, n--;
        }
        if (n > 0 && w > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Waits until the flusher has made durable everything posted (the writer, before it
 * closes a segment). Returns 0, or -1 when the spool failed. */
static int spool_drain(struct spool *sp)
{
    pthread_mutex_lock(&sp->fmu);
    while ((sp->mark_new || sp->fbusy) && !atomic_load(&sp->failed))
        pthread_cond_wait(&sp->fcv, &sp->fmu);
    pthread_mutex_unlock(&sp->fmu);
    return atomic_load(&sp->failed) ? -1 : 0;
}

/* Closes the open segment once everything written to it is durable. */
static int spool_close_segment(struct spool *sp)
{
    /* Before the threads start (the control record) nobody else syncs it. */
    int rc = sp->started ? spool_drain(sp) : sp->io.fdatasync(sp->fd);
    if (rc != 0)
        return -1;
    close(sp->fd);
    sp->fd = -1;
    return 0;
}

/* Whether a data frame of size bytes goes to a new segment: past segment_bytes; or when
 * a prepared segment is ready, as soon as the open one grows (an append: a file that
 * grows commits ext4's journal on every fdatasync), which an unprepared one always does
 * and a prepared one past its zeros (prep_bytes). Decided once per frame. */
static bool spool_must_roll(struct spool *sp, uint64_t size)
{
    if (sp->fd < 0 || sp->cur_bytes == 0)
        return false;
    if (sp->cur_bytes + size > sp->segment_bytes)
        return true;
    bool grows = !sp->cur_prepared || sp->cur_bytes + size > sp->prep_bytes;
    return grows && atomic_load(&sp->prep_ready);
}

/* Opens the segment named next_seq: the prepared file renamed into place when one is
 * ready, else a new, empty one. Either way the directory is fsync'd before anything in it
 * counts (dir_dirty). */
static int spool_open_segment(struct spool *sp, const char *path)
{
    sp->cur_prepared = false;
    if (atomic_load(&sp->prep_ready)) {
        char prep[PATH_MAX];
        snprintf(prep, sizeof(prep), "%s/" SPOOL_PREP_NAME, sp->dir);
        bool moved = rename(prep, path) == 0;
        pthread_mutex_lock(&sp->pmu); /* taken: the preparer makes the next one */
        atomic_store(&sp->prep_ready, false);
        sp->prep_failed = false;
        pthread_cond_signal(&sp->pcv);
        pthread_mutex_unlock(&sp->pmu);
        if (moved) {
            sp->fd = open(path, O_WRONLY | O_CLOEXEC);
            sp->cur_prepared = sp->fd >= 0;
            return sp->fd;
        }
    } else {
        pthread_mutex_lock(&sp->pmu); /* a rollover: the preparer may try again */
        if (sp->prep_failed) {
            sp->prep_failed = false;
            pthread_cond_signal(&sp->pcv);
        }
        pthread_mutex_unlock(&sp->pmu);
    }
    sp->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    return sp->fd;
}

/* Makes sure a segment is open for the next frame (starting at data seq next_seq),
 * closing the open one first when roll says so (what it holds was posted to the
 * flusher). */
static int spool_ensure_segment(struct spool *sp, bool roll, const char **what)
{
    if (roll && spool_close_segment(sp) != 0) {
        *what = "fdatasync";
        return -1;
    }
    if (sp->fd >= 0)
        return 0;
    char path[PATH_MAX];
    spool_seg_path(sp, sp->next_seq, path, sizeof(path));
    if (spool_open_segment(sp, path) < 0) {
        *what = "open";
        return -1;
    }
    sp->cur_seg = sp->next_seq;
    sp->cur_bytes = 0;
    sp->dir_dirty = true;
    if (spool_seg_add(sp, sp->cur_seg) != 0) {
        errno = ENOMEM;
        *what = "open";
        return -1;
    }
    return 0;
}

/* Called once a frame is written: the segment list learns its size and last seq. */
static void spool_account(struct spool *sp, const struct spool_frame *f, uint64_t size)
{
    sp->cur_bytes += size;
    atomic_fetch_add(&sp->bytes, size);
    atomic_fetch_add_explicit(&sp->appended, size, memory_order_relaxed);
    pthread_mutex_lock(&sp->segmu);
    struct spool_seg *s = spool_seg_find(sp, sp->cur_seg);
    s->bytes += size;
    if (f->type != SPOOL_SEAL && f->last > s->last)
        s->last = f->last;
    pthread_mutex_unlock(&sp->segmu);
    if (f->type != SPOOL_SEAL)
        sp->next_seq = f->last + 1;
}

static uint64_t spool_frame_size(uint64_t len)
{
    return SPOOL_FRAME_HEADER + ((len + 7) & ~(uint64_t)7);
}

/* The writer or the flusher: the first failure is the one reported. */
static void spool_fail(struct spool *sp, const char *what, uint64_t seg, int err)
{
    if (atomic_flag_test_and_set(&sp->fail_once))
        return;
    char why[1024];
    /* Under pubmu, as spool_publish: once failed is set L no longer moves, so the L this
     * message names is the last one anybody sees (a sync that was under way when the
     * other thread failed is not published, though it may have succeeded). */
    pthread_mutex_lock(&sp->pubmu);
    atomic_store(&sp->failed, 1);
    snprintf(why, sizeof(why),
             "spool %s: %s failed on segment %020" PRIu64 ".seg: %s; seqs above %" PRIu64
             " are not locally durable and no more commits are accepted",
             sp->dir, what, seg, strerror(err), atomic_load(&sp->l));
    snprintf(sp->error, sizeof(sp->error), "%s", why);
    pthread_mutex_unlock(&sp->pubmu);
    pthread_mutex_lock(&sp->fmu); /* a writer waiting for the flusher stops waiting */
    pthread_cond_broadcast(&sp->fcv);
    pthread_mutex_unlock(&sp->fmu);
    spool_poke(sp); /* a sleeping writer wakes to go quiet (spool_main) */
    S3C_LOG(S3C_LOG_ERROR,
            "event=spool_failed op=%s seg=%" PRIu64 " local_seq=%" PRIu64 " error=\"%s\"", what,
            seg, atomic_load(&sp->l), strerror(err));
    if (sp->o.on_error)
        sp->o.on_error(sp->o.ctx, why);
}

/* Publishes what a group made durable: L, the durable end, the request count. */
static void spool_publish(struct spool *sp, const struct spool_mark *m)
{
    pthread_mutex_lock(&sp->pubmu);
    if (atomic_load(&sp->failed)) { /* the failure's message named L: it stays */
        pthread_mutex_unlock(&sp->pubmu);
        return;
    }
    sp->dseg = m->seg;
    sp->doff = m->off;
    if (m->l > atomic_load(&sp->l))
        atomic_store(&sp->l, m->l);
    pthread_mutex_unlock(&sp->pubmu);
    atomic_store_explicit(&sp->written, m->written, memory_order_release);
    if (sp->o.notify_fd >= 0) {
        uint64_t one = 1;
        ssize_t n = write(sp->o.notify_fd, &one, sizeof(one));
        (void)n; /* an eventfd: cannot fail short of a full counter */
    }
    if (sp->o.on_durable)
        sp->o.on_durable(sp->o.ctx, atomic_load(&sp->l));
}

/* Makes what m names durable and publishes it (the flusher, or the writer inline). */
static void spool_sync_mark(struct spool *sp, const struct spool_mark *m)
{
    /* The fd stays open: the writer closes a segment only after spool_drain. */
    if (atomic_load(&sp->failed)) {
        /* nothing more is published after a failure */
    } else if (sp->io.fdatasync(m->fd) != 0) {
        spool_fail(sp, "fdatasync", m->seg, errno);
    } else if (m->dir && spool_fsync_dir(sp) != 0) {
        spool_fail(sp, "fsync of the directory", m->seg, errno);
    } else {
        atomic_fetch_add(&sp->groups, 1);
        spool_publish(sp, m);
    }
}

/* The writer: requests [0, written) are in the open segment up to cur_bytes, the last data
 * seq among them l. The flusher takes the latest post; but a small group with nothing
 * behind it (idle is the writer's last post for now) and an idle flusher is synced here:
 * at light load the hand-over to another thread was one more wake-up per commit. */
static void spool_post(struct spool *sp, uint64_t l, uint64_t written, bool idle)
{
    pthread_mutex_lock(&sp->fmu);
    bool dir = sp->mark.dir && sp->mark_new; /* not taken yet: still owed */
    uint64_t prev = sp->mark.seg == sp->cur_seg ? sp->mark.off : 0;
    sp->mark = (struct spool_mark){.seg = sp->cur_seg,
                                   .off = sp->cur_bytes,
                                   .l = l,
                                   .written = written,
                                   .fd = sp->fd,
                                   .dir = dir || sp->dir_dirty};
    sp->dir_dirty = false;
    if (idle && !sp->fbusy && !sp->mark_new && sp->cur_bytes - prev <= SPOOL_INLINE_SYNC_BYTES) {
        struct spool_mark m = sp->mark;
        sp->fbusy = true; /* the flusher keeps off */
        pthread_mutex_unlock(&sp->fmu);
        spool_sync_mark(sp, &m);
        pthread_mutex_lock(&sp->fmu);
        sp->fbusy = false;
        pthread_cond_broadcast(&sp->fcv);
    } else {
        sp->mark_new = true;
        if (!sp->fbusy)
            pthread_cond_broadcast(&sp->fcv);
    }
    pthread_mutex_unlock(&sp->fmu);
}

static void *spool_flush_main(void *arg)
{
    struct spool *sp = arg;
    pthread_setname_np(pthread_self(), "s3c-spool-sync"); /* told apart in top and perf */
    pthread_mutex_lock(&sp->fmu);
    for (;;) {
        while ((!sp->mark_new || sp->fbusy) && !sp->fstop)
            pthread_cond_wait(&sp->fcv, &sp->fmu);
        if (!sp->mark_new || sp->fbusy)
            break; /* stopping, and nothing is owed */
        struct spool_mark m = sp->mark;
        sp->mark_new = false;
        sp->fbusy = true;
        pthread_mutex_unlock(&sp->fmu);
        spool_sync_mark(sp, &m);
        pthread_mutex_lock(&sp->fmu);
        sp->fbusy = false;
        pthread_cond_broadcast(&sp->fcv); /* a writer in spool_drain */
    }
    pthread_mutex_unlock(&sp->fmu);
    return NULL;
}

int spool_append_object(struct spool *sp, uint64_t seq, uint64_t epoch, const void *obj, size_t len,
                        char *err, size_t errlen)
{
    unsigned char h[SPOOL_FRAME_HEADER];
    static const unsigned char zeros[8];
    struct spool_frame f = {
        .type = SPOOL_OBJECT, .len = (uint32_t)len, .first = seq, .last = seq, .epoch = epoch};
    const char *what = "write";
    sp->next_seq = seq;
    uint64_t size = spool_frame_size(len);
    spool_frame_encode(&f, h);
    uint32_t crc = crc32c_update(crc32c_update(0, h, 40), obj, len);
    spool_frame_seal(h, crc);
    struct iovec iov[3] = {
        {h, sizeof(h)}, {(void *)obj, len}, {(void *)zeros, size - SPOOL_FRAME_HEADER - len}};
    if (spool_ensure_segment(sp, false, &what) != 0 ||
        (what = "write", spool_writev_all(sp, iov, 3)) != 0 ||
        (what = "fdatasync", sp->io.fdatasync(sp->fd)) != 0 ||
        (what = "fsync of the directory", spool_fsync_dir(sp)) != 0) {
        snprintf(err, errlen, "spool %s: %s of segment %020" PRIu64 ".seg failed: %s", sp->dir,
                 what, sp->cur_seg, strerror(errno));
        return S3C_EIO;
    }
    sp->dir_dirty = false;
    spool_account(sp, &f, size);
    spool_publish(sp, &(struct spool_mark){.seg = sp->cur_seg,
                                           .off = sp->cur_bytes,
                                           .l = seq,
                                           .written = atomic_load(&sp->written)});
    return 0;
}

/* Writes the frames gathered in sp->iov and posts them to the flusher: requests
 * [0, written) are then in the file, the last data seq among them l. */
static int spool_write_out(struct spool *sp, int *n, int *nh, uint64_t l, uint64_t written,
                           bool last)
{
    if (*n > 0 && spool_writev_all(sp, sp->iov, *n) != 0)
        return -1;
    *n = *nh = 0;
    spool_post(sp, l, written, last && atomic_load(&sp->pushed) == written);
    return 0;
}

/* The CRC a chunk frame's header carries: its first 40 bytes (crc, given) and every
 * record's header, which holds the payload's own CRC (spool_frame_check). */
static uint32_t spool_chunk_crc(struct spool *sp, const struct spool_req *r, uint32_t crc)
{
    struct ring_iter it;
    struct ring_rec rec;
    ring_iter_init(&r->rb, &it);
    while (ring_iter_next(sp->o.ring, &it, &rec))
        crc = crc32c_update(crc, (unsigned char *)rec.prefix + sp->o.rec_offset,
                            OBJ_RECORD_HEADER_BYTES);
    return crc;
}

/* Gathers a chunk's records (header and payload) after its frame header: records that lie
 * back to back in the ring are one iovec, so a chunk is one or two unless short payloads
 * left gaps between its records. When the iovecs run out inside the frame, what is
 * gathered is written without a post: the flusher is told of whole frames only, and the
 * frame's header is already sealed. A chunk of any record count fits this way (a batch
 * may hold up to batch_size_threshold records, far more than IOV_MAX). */
static int spool_chunk_iov(struct spool *sp, const struct spool_req *r, int *n, int *nh)
{
    struct iovec *iov = sp->iov;
    struct ring_iter it;
    struct ring_rec rec;
    ring_iter_init(&r->rb, &it);
    while (ring_iter_next(sp->o.ring, &it, &rec)) {
        unsigned char *span = (unsigned char *)rec.prefix + sp->o.rec_offset;
        size_t len = OBJ_RECORD_HEADER_BYTES + rec.len;
        struct iovec *prev = *n > 0 ? &iov[*n - 1] : NULL;
        if (prev && (unsigned char *)prev->iov_base + prev->iov_len == span) {
            prev->iov_len += len; /* the next record in the ring (never a frame header) */
            continue;
        }
        if (*n >= SPOOL_GROUP_IOV - 1) { /* one left for the padding */
            if (spool_writev_all(sp, iov, *n) != 0)
                return -1;
            *n = *nh = 0; /* every header gathered so far is written */
        }
        iov[(*n)++] = (struct iovec){span, len};
    }
    return 0;
}

/* Writes the frames of requests [from, to), posting to the flusher after every writev so
 * that it syncs what is written while the rest is written. Returns how many were written
 * (fewer when the spool is full), or -1 on an I/O error (*what says which call). */
static int64_t spool_write_group(struct spool *sp, uint64_t from, uint64_t to, uint64_t *l,
                                 const char **what)
{
    static const unsigned char zeros[8];
    struct iovec *iov = sp->iov;
    int n = 0, nh = 0;
    uint64_t done = from;
    atomic_store(&sp->full, 0); /* until a frame finds no room */

    for (uint64_t i = from; i < to && !atomic_load(&sp->failed); i++) {
        struct spool_req *r = &sp->q[i % sp->qcap];
        struct spool_frame f = {.type = r->type,
                                .first = r->first,
                                .last = r->last,
                                .epoch = r->epoch,
                                .count = r->count};
        f.len = r->type == SPOOL_CHUNK ? (uint32_t)r->len : 0;
        uint64_t size = spool_frame_size(f.len);
        if (atomic_load(&sp->bytes) + size > sp->max_bytes && r->type != SPOOL_SEAL) {
            atomic_store(&sp->full, 1);
            break; /* until W lets segments go */
        }
        /* A frame needs its header slot and, as a rule, up to 4 iovecs (header, the
         * records in one or two runs, padding): write first if the buffers cannot take
         * that (a chunk with gaps that needs more writes part of itself, spool_chunk_iov),
         * or if the frame goes to a new segment (what is gathered belongs to the old one). */
        bool roll = r->type != SPOOL_SEAL && spool_must_roll(sp, size);
        if ((roll || nh == SPOOL_GROUP_HEADERS || n + 4 > SPOOL_GROUP_IOV) &&
            spool_write_out(sp, &n, &nh, *l, i, false) != 0)
            return *what = "write", -1;
        if (spool_ensure_segment(sp, roll, what) != 0)
            return -1;
        unsigned char *h = sp->hdrs[nh++];
        spool_frame_encode(&f, h);
        uint32_t crc = crc32c_update(0, h, 40);
        if (r->type == SPOOL_CHUNK)
            crc = spool_chunk_crc(sp, r, crc);
        spool_frame_seal(h, crc); /* sealed before any of the frame may be written */
        iov[n++] = (struct iovec){h, SPOOL_FRAME_HEADER};
        if (r->type == SPOOL_CHUNK) {
            if (spool_chunk_iov(sp, r, &n, &nh) != 0)
                return *what = "write", -1;
            if (size - SPOOL_FRAME_HEADER > f.len)
                iov[n++] = (struct iovec){(void *)zeros, size - SPOOL_FRAME_HEADER - f.len};
        }
        r->pos = (struct spool_pos){sp->cur_seg, sp->cur_bytes};
        spool_account(sp, &f, size);
        if (r->type == SPOOL_CHUNK && r->last > *l)
            *l = r->last;
        done = i + 1;
    }
    if (done > from && spool_write_out(sp, &n, &nh, *l, done, true) != 0)
        return *what = "write", -1;
    return (int64_t)(done - from);
}

/* The writer: appends what the persistence thread pushed, deletes what W passed. It never
 * waits on an fdatasync but at a segment's end; the flusher publishes L. */
static void *spool_main(void *arg)
{
    struct spool *sp = arg;
    pthread_setname_np(pthread_self(), "s3c-spool-write");
    uint64_t l = atomic_load(&sp->l); /* the last data seq written */
    for (;;) {
        uint64_t from = sp->wnext;
        pthread_mutex_lock(&sp->mu);
        for (;;) {
            /* Say we may sleep before looking (seq_cst, as spool_push): either we see its
             * push, or it sees us asleep and signals under the mutex we hold. */
            atomic_store(&sp->sleeping, true);
            uint64_t pushed = atomic_load(&sp->pushed);
            bool work = pushed > from && !atomic_load(&sp->full) && !atomic_load(&sp->failed);
            if (work || sp->stop || sp->poked)
                break;
            struct timespec ts = s3c__deadline_ts(atomic_load(&sp->full) ? 50 : 1000);
            pthread_cond_timedwait(&sp->cv, &sp->mu, &ts);
            if (atomic_load(&sp->full))
                break; /* look at W again */
        }
        atomic_store(&sp->sleeping, false);
        bool stop = sp->stop;
        sp->poked = false;
        pthread_mutex_unlock(&sp->mu);

        uint64_t w = atomic_load(sp->o.w);
        if (w > sp->deleted_w) {
            sp->deleted_w = w;
            spool_delete_behind(sp, w);
            /* A full spool whose open segment is all behind W: close it so it can go. */
            if (atomic_load(&sp->full) && sp->fd >= 0 && sp->next_seq - 1 <= w &&
                spool_close_segment(sp) == 0)
                spool_delete_behind(sp, w);
            atomic_store(&sp->full, 0); /* try again: the group says whether it fits */
        }
        uint64_t to = atomic_load_explicit(&sp->pushed, memory_order_acquire);
        if (!atomic_load(&sp->failed) && to > from) {
            const char *what = "write";
            int64_t n = spool_write_group(sp, from, to, &l, &what);
            if (n < 0)
                spool_fail(sp, what, sp->cur_seg, errno);
            else
                sp->wnext = from + (uint64_t)n;
        }
        if (atomic_load(&sp->failed) && !atomic_load(&sp->wquiet)) {
            /* Out of spool_write_group for good: the ring space of what it held may go. */
            atomic_store(&sp->wquiet, 1);
            if (sp->o.notify_fd >= 0) {
                uint64_t one = 1;
                ssize_t nw = write(sp->o.notify_fd, &one, sizeof(one));
                (void)nw; /* an eventfd */
            }
        }
        if (stop && (sp->wnext >= to || atomic_load(&sp->failed) || atomic_load(&sp->full)))
            break;
    }
    spool_drain(sp); /* what was written is synced (or the spool failed) before stop returns */
    return NULL;
}

/* Creates SPOOL_PREP_NAME, prep_bytes of zeros, fdatasync'd, so
 * its blocks are allocated and written before any frame goes there. Written through the
 * page cache on purpose: the frames written over it later end mid-page, and a page that
 * is not in the cache would be read from the disk first (written around the cache with
 * O_DIRECT, every group paid a read: measured, see docs/spool.md). */
static int spool_prepare(struct spool *sp)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/" SPOOL_PREP_NAME, sp->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    uint64_t size = sp->prep_bytes;
    int rc = 0;
    for (uint64_t off = 0; off < size && rc == 0; off += SPOOL_PREP_CHUNK) {
        size_t n = size - off < SPOOL_PREP_CHUNK ? (size_t)(size - off) : SPOOL_PREP_CHUNK;
        if (atomic_load(&sp->pstop) || pwrite(fd, sp->zeros, n, (off_t)off) != (ssize_t)n)
            rc = -1;
    }
    if (rc == 0 && fdatasync(fd) != 0)
        rc = -1;
    close(fd);
    if (rc != 0) {
        S3C_LOG(S3C_LOG_DEBUG, "event=spool_prepare_failed path=%s error=\"%s\"", path,
                strerror(errno));
        unlink(path);
    }
    return rc;
}

/* Whether the spool is written slowly enough for a prepared segment to pay: under
 * SPOOL_PREP_RATE, where groups are small and the journal commit of an append is most of
 * an fdatasync. Faster, groups are large (the journal commit is a small part of one) and
 * zero-filling would add as many bytes written and copied as the frames themselves.
 * Measured over the last SPOOL_PREP_WINDOW_MS; true at the start. */
static bool spool_prep_pays(struct spool *sp, uint64_t *t_ref, uint64_t *a_ref, bool *slow)
{
    uint64_t now = s3c__now_ns(), a = atomic_load(&sp->appended);
    if (now - *t_ref >= (uint64_t)SPOOL_PREP_WINDOW_MS * 1000000u) {
        double rate = (double)(a - *a_ref) * 1e9 / (double)(now - *t_ref);
        *slow = rate < (double)SPOOL_PREP_RATE;
        *t_ref = now;
        *a_ref = a;
    }
    return *slow;
}

/* The preparer: unlinks the segments W passed, and keeps one prepared segment ready while
 * the spool is written slowly. A
 * failure (a full disk) is not the spool's failure: the writer goes on with segments that
 * grow, and the preparer tries again at the next rollover. */
static void *spool_prep_main(void *arg)
{
    struct spool *sp = arg;
    pthread_setname_np(pthread_self(), "s3c-spool-prep");
    uint64_t t_ref = s3c__now_ns(), a_ref = atomic_load(&sp->appended);
    bool slow = true;
    pthread_mutex_lock(&sp->pmu);
    for (;;) {
        if (sp->nunlink > 0) {
            uint64_t q[SPOOL_UNLINK_QUEUE];
            int n = sp->nunlink;
            memcpy(q, sp->unlink_q, (size_t)n * sizeof(q[0]));
            sp->nunlink = 0;
            pthread_mutex_unlock(&sp->pmu);
            for (int i = 0; i < n; i++)
                spool_unlink(sp, q[i]);
            pthread_mutex_lock(&sp->pmu);
            continue;
        }
        if (atomic_load(&sp->pstop))
            break;
        if (atomic_load(&sp->prep_ready) || sp->prep_failed ||
            !spool_prep_pays(sp, &t_ref, &a_ref, &slow)) {
            struct timespec ts = s3c__deadline_ts(SPOOL_PREP_WINDOW_MS / 4);
            pthread_cond_timedwait(&sp->pcv, &sp->pmu, &ts);
            continue;
        }
        pthread_mutex_unlock(&sp->pmu);
        int rc = spool_prepare(sp);
        pthread_mutex_lock(&sp->pmu);
        if (rc == 0)
            atomic_store(&sp->prep_ready, true);
        else
            sp->prep_failed = true;
    }
    pthread_mutex_unlock(&sp->pmu);
    return NULL;
}

static void spool_stop_preparer(struct spool *sp)
{
    pthread_mutex_lock(&sp->pmu);
    atomic_store(&sp->pstop, true);
    pthread_cond_signal(&sp->pcv);
    pthread_mutex_unlock(&sp->pmu);
    pthread_join(sp->preparer, NULL);
}

static void spool_stop_flusher(struct spool *sp)
{
    pthread_mutex_lock(&sp->fmu);
    sp->fstop = true;
    pthread_cond_broadcast(&sp->fcv);
    pthread_mutex_unlock(&sp->fmu);
    pthread_join(sp->flusher, NULL);
}

int spool_start(struct spool *sp)
{
    sp->wnext = atomic_load(&sp->written);
    if (pthread_create(&sp->preparer, NULL, spool_prep_main, sp) != 0)
        return S3C_EIO;
    if (pthread_create(&sp->flusher, NULL, spool_flush_main, sp) != 0) {
        spool_stop_preparer(sp);
        return S3C_EIO;
    }
    sp->started = true;
    if (pthread_create(&sp->thread, NULL, spool_main, sp) != 0) {
        spool_stop_flusher(sp);
        spool_stop_preparer(sp);
        sp->started = false;
        return S3C_EIO;
    }
    return 0;
}

void spool_stop(struct spool *sp)
{
    if (!sp || !sp->started)
        return;
    pthread_mutex_lock(&sp->mu);
    sp->stop = true;
    pthread_cond_signal(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
    pthread_join(sp->thread, NULL);
    spool_stop_flusher(sp);
    spool_stop_preparer(sp);
    sp->started = false;
}

/* ---- the persistence thread's side ------------------------------------------------ */

struct spool_req *spool_req_next(struct spool *sp)
{
    uint64_t pushed = atomic_load_explicit(&sp->pushed, memory_order_relaxed);
    if (pushed - sp->freed >= sp->qcap)
        return NULL;
    struct spool_req *r = &sp->q[pushed % sp->qcap];
    memset(r, 0, sizeof(*r));
    return r;
}

void spool_push(struct spool *sp)
{
    atomic_fetch_add(&sp->pushed, 1);
    if (atomic_load(&sp->sleeping)) {
        pthread_mutex_lock(&sp->mu);
        pthread_cond_signal(&sp->cv);
        pthread_mutex_unlock(&sp->mu);
    }
}

struct spool_req *spool_req_oldest(struct spool *sp, bool *written)
{
    uint64_t pushed = atomic_load_explicit(&sp->pushed, memory_order_relaxed);
    if (sp->freed == pushed)
        return NULL;
    *written = atomic_load_explicit(&sp->written, memory_order_acquire) > sp->freed;
    return &sp->q[sp->freed % sp->qcap];
}

void spool_req_free(struct spool *sp)
{
    sp->freed++;
}

uint64_t spool_req_pushed(const struct spool *sp)
{
    return atomic_load_explicit(&sp->pushed, memory_order_relaxed);
}

uint64_t spool_req_freed(const struct spool *sp)
{
    return sp->freed;
}

struct spool_req *spool_req_at(struct spool *sp, uint64_t idx)
{
    return &sp->q[idx % sp->qcap];
}

bool spool_req_written(const struct spool *sp, uint64_t idx)
{
    return atomic_load_explicit(&sp->written, memory_order_acquire) > idx;
}

void spool_poke(struct spool *sp)
{
    pthread_mutex_lock(&sp->mu);
    sp->poked = true;
    pthread_cond_signal(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
}

uint64_t spool_local_seq(const struct spool *sp)
{
    return atomic_load(&sp->l);
}

bool spool_failed(const struct spool *sp)
{
    return atomic_load(&sp->failed);
}

bool spool_writer_quiet(const struct spool *sp)
{
    return atomic_load(&sp->wquiet);
}

bool spool_full(const struct spool *sp)
{
    return atomic_load(&sp->full);
}

uint64_t spool_bytes(const struct spool *sp)
{
    return atomic_load(&sp->bytes);
}

const char *spool_error(const struct spool *sp)
{
    return sp->error;
}

/* ---- reading back (the persistence thread) ---------------------------------------- */

static int spool_reader_fd(struct spool *sp, uint64_t seg, char *err, size_t errlen)
{
    if (sp->rfd >= 0 && sp->rseg == seg)
        return sp->rfd;
    if (sp->rfd >= 0)
        close(sp->rfd);
    char path[PATH_MAX];
    spool_seg_path(sp, seg, path, sizeof(path));
    sp->rfd = open(path, O_RDONLY | O_CLOEXEC);
    if (sp->rfd < 0) {
        snprintf(err, errlen, "spool: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    sp->rseg = seg;
    return sp->rfd;
}

/* How far *pos's segment may be read: its durable end, or 0 when it is past the durable
 * end altogether. Moves *pos to the next segment at the end of a finished one. */
static uint64_t spool_readable(struct spool *sp, struct spool_pos *pos)
{
    for (;;) {
        uint64_t dseg, doff;
        pthread_mutex_lock(&sp->pubmu);
        dseg = sp->dseg, doff = sp->doff;
        pthread_mutex_unlock(&sp->pubmu);
        if (pos->seg > dseg)
            return 0;
        if (pos->seg == dseg)
            return doff;
        pthread_mutex_lock(&sp->segmu);
        uint64_t end = 0, next = UINT64_MAX;
        for (size_t i = 0; i < sp->nsegs; i++) {
            if (sp->segs[i].seg == pos->seg)
                end = sp->segs[i].bytes;
            else if (sp->segs[i].seg > pos->seg && sp->segs[i].seg < next)
                next = sp->segs[i].seg;
        }
        pthread_mutex_unlock(&sp->segmu);
        if (pos->off < end)
            return end;
        if (next == UINT64_MAX)
            return 0;
        *pos = (struct spool_pos){next, 0};
    }
}

int spool_read(struct spool *sp, struct spool_pos *pos, struct spool_frame *f, void *buf,
               size_t cap, char *err, size_t errlen)
{
    unsigned char h[SPOOL_FRAME_HEADER];
    uint32_t crc;
    uint64_t end = spool_readable(sp, pos);
    if (end == 0 || pos->off + SPOOL_FRAME_HEADER > end)
        return S3C_EEND;
    int fd = spool_reader_fd(sp, pos->seg, err, errlen);
    if (fd < 0)
        return S3C_EIO;
    if (pread(fd, h, sizeof(h), (off_t)pos->off) != (ssize_t)sizeof(h) ||
        spool_frame_decode(h, f, &crc) != 0 || pos->off + spool_frame_size(f->len) > end) {
        snprintf(err, errlen,
                 "spool: segment %020" PRIu64 ".seg offset %" PRIu64 ": not a valid frame header",
                 pos->seg, pos->off);
        return S3C_ECORRUPT;
    }
    if (buf) {
        if (f->len > cap) {
            snprintf(err, errlen,
                     "spool: segment %020" PRIu64 ".seg offset %" PRIu64 ": a frame of %" PRIu32
                     " bytes does not fit %zu",
                     pos->seg, pos->off, f->len, cap);
            return S3C_ECORRUPT;
        }
        ssize_t got = pread(fd, buf, f->len, (off_t)(pos->off + SPOOL_FRAME_HEADER));
        if (got != (ssize_t)f->len || !spool_frame_check(h, f, crc, buf)) {
            snprintf(err, errlen,
                     "spool: segment %020" PRIu64 ".seg offset %" PRIu64
                     ": the frame's CRC does not match (the disk lost or changed it)",
                     pos->seg, pos->off);
            return got < 0 ? S3C_EIO : S3C_ECORRUPT;
        }
    }
    pos->off += spool_frame_size(f->len);
    return 0;
}

int spool_find(struct spool *sp, uint64_t seq, struct spool_pos *pos, char *err, size_t errlen)
{
    uint64_t seg = 0;
    bool any = false;
    pthread_mutex_lock(&sp->segmu);
    for (size_t i = 0; i < sp->nsegs; i++)
        if (sp->segs[i].seg <= seq && (!any || sp->segs[i].seg > seg))
            seg = sp->segs[i].seg, any = true;
    pthread_mutex_unlock(&sp->segmu);
    if (!any)
        return S3C_EEND;
    *pos = (struct spool_pos){seg, 0};
    for (;;) {
        struct spool_pos at = *pos;
        struct spool_frame f;
        int rc = spool_read(sp, pos, &f, NULL, 0, err, errlen);
        if (rc != 0)
            return rc;
        if (f.type == SPOOL_SEAL)
            continue;
        if (f.first == seq) {
            *pos = at;
            return 0;
        }
        if (f.first > seq)
            return S3C_EEND;
    }
}
