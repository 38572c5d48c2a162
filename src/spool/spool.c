/* The local spool: segment files, the append thread with group commit, and reading back
 * (spool.h). Open-time checking and the directory lock are in scan.c. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "format/objfmt.h"
#include "s3commit.h"
#include "spool/spool_int.h"

const struct spool_io *spool_test_io;
bool spool_test_no_wmark;
bool spool_test_no_skip;

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
    h[5] = f->flags;
    spool_put32(h + 8, f->len);
    spool_put32(h + 12, f->count);
    spool_put64(h + 16, f->first);
    spool_put64(h + 24, f->last);
    spool_put64(h + 32, f->epoch);
    if (f->flags & SPOOL_CRC_TAG)
        spool_put32(h + 44, f->tag);
}

/* The header's part of a frame's CRC: bytes 0-39, then the tag (44-47) when it has one. */
uint32_t spool_frame_head_crc(const unsigned char h[SPOOL_FRAME_HEADER])
{
    uint32_t c = crc32c_update(0, h, 40);
    return (h[5] & SPOOL_CRC_TAG) ? crc32c_update(c, h + 44, 4) : c;
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
    if (f->type < SPOOL_CHUNK || f->type > SPOOL_SKIP)
        return -1;
    f->flags = h[5];
    if (f->flags & ~(SPOOL_CRC_PAYLOAD | SPOOL_CRC_TAG))
        return -1;
    f->tag = (f->flags & SPOOL_CRC_TAG) ? spool_get32(h + 44) : 0;
    f->len = spool_get32(h + 8);
    f->count = spool_get32(h + 12);
    f->first = spool_get64(h + 16);
    f->last = spool_get64(h + 24);
    f->epoch = spool_get64(h + 32);
    *crc = spool_get32(h + 40);
    if (f->last < f->first ||
        ((f->type == SPOOL_CHUNK || f->type == SPOOL_SKIP) && f->count != f->last - f->first + 1))
        return -1;
    if (f->type == SPOOL_SKIP && f->len != 0)
        return -1;
    if ((f->type == SPOOL_BEGIN || f->type == SPOOL_END) &&
        (f->len != 0 || !(f->flags & SPOOL_CRC_TAG)))
        return -1;
    return 0;
}

/* A frame's CRC covers its header's first 40 bytes (and its tag: SPOOL_CRC_TAG) and its
 * payload (SPOOL_CRC_PAYLOAD; the payload's part is the chunk CRC the persistence thread
 * computed when it took the chunk, joined from the producers' record CRCs for large
 * records, combined with the header's). A CHUNK of an older spool (flags 0) has the CRC of
 * its header and its records' 16-byte headers instead, which carry each payload's CRC.
 * Either way every record's bytes are checked against the CRC its producer computed, so a
 * check covers every byte. */
bool spool_frame_check(const unsigned char h[SPOOL_FRAME_HEADER], const struct spool_frame *f,
                       uint32_t crc, const unsigned char *p)
{
    uint32_t c = spool_frame_head_crc(h);
    bool whole = f->type != SPOOL_CHUNK || (f->flags & SPOOL_CRC_PAYLOAD);
    if (whole && crc32c_update(c, p, f->len) != crc)
        return false;
    if (f->type != SPOOL_CHUNK)
        return true;
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
        if (!whole)
            c = crc32c_update(c, p + off, OBJ_RECORD_HEADER_BYTES);
        if (crc32c_update(0, p + off + OBJ_RECORD_HEADER_BYTES, len) != pcrc)
            return false;
        off += OBJ_RECORD_HEADER_BYTES + len;
    }
    return off == f->len && (whole || c == crc);
}

void spool_seg_path(const struct spool *sp, uint64_t seg, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%020" PRIu64 ".seg", sp->dir, seg);
}

void spool_del_path(const struct spool *sp, uint64_t seg, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%020" PRIu64 SPOOL_DEL_EXT, sp->dir, seg);
}

void spool_rec_path(const struct spool *sp, uint64_t seg, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%020" PRIu64 SPOOL_REC_EXT, sp->dir, seg);
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

/* The preparer's delete of a segment W has passed. One unlink of a 64 MiB segment frees
 * all its blocks in one ext4 transaction, and the writer's O_DIRECT appends and the
 * flusher's fdatasync waited behind it for 20-37 ms at half load, once a segment: that
 * was the half-load p99 (docs/spool.md). So the segment is cut down SPOOL_DEL_STEP at a
 * time with a pause between (the writer's I/O goes in between), then unlinked. It is
 * renamed out of the scan's sight first: a segment cut short under its own name would read
 * at the next open as a torn tail, and the scan cuts everything after a torn tail. Once
 * renamed it is as good as unlinked (the open removes a <seg>.del a crash left). When the
 * preparer is stopping, no more pauses. */
static int spool_fsync_dir(struct spool *sp);

/* Cuts the file at path (out of the scan's sight) down step by step, then unlinks it. */
static void spool_cut_away(struct spool *sp, const char *del)
{
    int fd = sp->io.open(del, O_WRONLY | O_CLOEXEC, 0);
    struct stat sb;
    if (fd >= 0 && fstat(fd, &sb) == 0) {
        off_t size = sb.st_size;
        while (size > (off_t)SPOOL_DEL_STEP && !atomic_load(&sp->pstop)) {
            size -= (off_t)SPOOL_DEL_STEP;
            if (sp->io.ftruncate(fd, size) != 0)
                break; /* the unlink below frees the rest */
            struct timespec ts = {0, SPOOL_DEL_PAUSE_NS};
            nanosleep(&ts, NULL);
        }
    }
    if (fd >= 0)
        close(fd);
    if (unlink(del) != 0 && errno != ENOENT)
        S3C_LOG(S3C_LOG_WARN, "event=spool_unlink_failed path=%s error=\"%s\"", del,
                strerror(errno));
}

static void spool_delete_stepwise(struct spool *sp, uint64_t seg)
{
    char path[PATH_MAX], del[PATH_MAX];
    spool_seg_path(sp, seg, path, sizeof(path));
    spool_del_path(sp, seg, del, sizeof(del));
    if (sp->io.rename(path, del) != 0) {
        if (errno != ENOENT)
            S3C_LOG(S3C_LOG_WARN, "event=spool_unlink_failed path=%s error=\"%s\"", path,
                    strerror(errno));
        return;
    }
    /* The rename must be durable before the first cut: a filesystem that kept the cut and
     * not the rename would leave a segment cut short under its own name. */
    if (spool_fsync_dir(sp) != 0) {
        S3C_LOG(S3C_LOG_WARN,
                "event=spool_unlink_failed path=%s error=\"fsync of the "
                "directory: %s; unlinked in one go\"",
                del, strerror(errno));
        if (unlink(del) != 0 && errno != ENOENT) /* an unlink alone never leaves a cut one */
            S3C_LOG(S3C_LOG_WARN, "event=spool_unlink_failed path=%s error=\"%s\"", del,
                    strerror(errno));
        return;
    }
    spool_cut_away(sp, del);
}

/* Keeps a segment W has passed to be written over, as PostgreSQL recycles WAL segments:
 * renamed <seg>.rec (out of the scan's sight, as a .del), for the writer to rename into place
 * at a rollover. Its blocks stay allocated and written, so frames written over them change
 * no file metadata: their fdatasync commits no ext4 journal transaction, and nothing is
 * freed (the cuts of a step-by-step delete were most of the half-load p99 left). Only a
 * segment of this format (tagged: its old frames never read as the new life's) and only
 * with O_DIRECT (the writer's padding ends every write in zeros). At most
 * SPOOL_RECYCLE_MAX are kept; returns false when it was not kept (delete it). The preparer's. */
static bool spool_recycle(struct spool *sp, uint64_t seg)
{
    if (!spool_direct(sp) || atomic_load(&sp->nrecycled) >= SPOOL_RECYCLE_MAX)
        return false; /* only the preparer adds: the count cannot grow meanwhile */
    char path[PATH_MAX], rec[PATH_MAX];
    struct stat sb;
    spool_seg_path(sp, seg, path, sizeof(path));
    spool_rec_path(sp, seg, rec, sizeof(rec));
    /* Whole blocks only (one an open cut short is not): the writer's writes then leave old
     * bytes only on block boundaries, or after its zeros (scan.c, spool_tagged_end). */
    if (stat(path, &sb) != 0 || sb.st_size % SPOOL_BLOCK != 0)
        return false;
    if (sp->io.rename(path, rec) != 0)
        return errno == ENOENT; /* gone already: nothing to delete either */
    /* The rename must be durable before the file is written over: a power loss that kept
     * the new life's writes and not the rename would bring the segment back under its old
     * name with new frames inside it, and the scan would cut there and drop every later
     * segment. Without that, it is deleted (an unlink alone is safe). */
    if (spool_fsync_dir(sp) != 0) {
        S3C_LOG(S3C_LOG_WARN,
                "event=spool_recycle_failed path=%s error=\"fsync of the "
                "directory: %s; deleted\"",
                rec, strerror(errno));
        if (unlink(rec) != 0 && errno != ENOENT)
            S3C_LOG(S3C_LOG_WARN, "event=spool_unlink_failed path=%s error=\"%s\"", rec,
                    strerror(errno));
        return true;
    }
    pthread_mutex_lock(&sp->pmu);
    int n = atomic_load(&sp->nrecycled);
    sp->recycled[n] = seg;
    atomic_store(&sp->nrecycled, n + 1);
    pthread_mutex_unlock(&sp->pmu);
    S3C_LOG(S3C_LOG_DEBUG, "event=spool_segment_recycled seg=%" PRIu64, seg);
    return true;
}

/* Unlinks a segment W has passed: on the preparer's thread once the threads run (cut down
 * step by step there, above), here when they do not. A crash before the unlink leaves a
 * segment behind W, which the next open trims. Segments go strictly oldest first: a newer
 * one unlinked while an older one waits in the queue would leave a hole that a crash turns
 * into a seq gap, and the scan cuts everything after a gap, locally durable commits
 * included. So when the queue is full this returns false and the segment stays, for the
 * next W move. */
static bool spool_unlink_later(struct spool *sp, uint64_t seg, uint64_t bytes, bool tagged)
{
    if (!sp->started) {
        spool_unlink(sp, seg);
        atomic_fetch_sub(&sp->bytes, bytes);
        return true;
    }
    bool queued = false;
    pthread_mutex_lock(&sp->pmu);
    if (sp->nunlink < SPOOL_UNLINK_QUEUE) {
        sp->unlink_q[sp->nunlink++] = (struct spool_unlink){seg, bytes, tagged};
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
        /* (nor one named at or past next_seq: it holds no commit, and the next segment
         * takes that name) */
        bool open_one = (sp->fd >= 0 && s->seg == sp->cur_seg) || s->seg >= sp->next_seq;
        if (!stop && !open_one && s->last <= w) {
            if (spool_unlink_later(sp, s->seg, s->bytes, s->tagged)) {
                atomic_fetch_add(&sp->seg_gen, 1);
                S3C_LOG(S3C_LOG_DEBUG, "event=spool_segment_deleted seg=%" PRIu64 " last=%" PRIu64,
                        s->seg, s->last);
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

static ssize_t spool_real_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    return pwrite(fd, buf, len, off);
}

static int spool_real_fdatasync(int fd)
{
    return fdatasync(fd);
}

static int spool_real_open(const char *path, int flags, mode_t mode)
{
    return open(path, flags, mode);
}

static int spool_real_ftruncate(int fd, off_t len)
{
    return ftruncate(fd, len);
}

static int spool_real_fsync_dir(const char *dir)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    int rc = fsync(dfd);
    close(dfd);
    return rc;
}

void spool_io_defaults(struct spool_io *io)
{
    if (!io->pwrite)
        io->pwrite = spool_real_pwrite;
    if (!io->fdatasync)
        io->fdatasync = spool_real_fdatasync;
    if (!io->open)
        io->open = spool_real_open;
    if (!io->ftruncate)
        io->ftruncate = spool_real_ftruncate;
    if (!io->rename)
        io->rename = rename;
    if (!io->fsync_dir)
        io->fsync_dir = spool_real_fsync_dir;
    if (!io->pread)
        io->pread = pread;
}

/* The filesystem will not do O_DIRECT (EINVAL at open or at a write; tmpfs before Linux
 * 6.6, some FUSE mounts): the spool writes through the page cache from then on, and says
 * so once. The writer's buffer works the same way; only the rounding to blocks goes. */
static void spool_direct_off(struct spool *sp, const char *path, const char *at)
{
    atomic_store(&sp->direct, false);
    if (!atomic_flag_test_and_set(&sp->direct_said))
        S3C_LOG(S3C_LOG_WARN,
                "event=spool_direct_off path=%s at=%s error=\"%s\" what=\"the filesystem "
                "refuses O_DIRECT: the spool writes through the page cache\"",
                path, at, strerror(EINVAL));
}

/* Opens a segment file (or the prepared one) for writing, with O_DIRECT while the
 * filesystem takes it. Only the writer turns O_DIRECT off (writer = true): the flag says
 * how the writer's open segment was opened, which its writes rely on. The preparer
 * refused O_DIRECT just makes its file through the page cache. */
static int spool_open_file(struct spool *sp, const char *path, int flags, bool writer)
{
    if (atomic_load(&sp->direct)) {
        int fd = sp->io.open(path, flags | O_DIRECT, 0600);
        if (fd >= 0 || errno != EINVAL)
            return fd;
        if (writer)
            spool_direct_off(sp, path, "open");
    }
    return sp->io.open(path, flags, 0600);
}

bool spool_direct(const struct spool *sp)
{
    return atomic_load(&sp->direct);
}

static int spool_fsync_dir(struct spool *sp)
{
    return sp->io.fsync_dir(sp->dir);
}

/* Writes buf[0, len) at off of segment seg (open as fd) whole, resuming after short
 * writes. A filesystem that refuses an O_DIRECT write (EINVAL) gets it again through the
 * page cache. The writer's own writes, and the submitter's. */
static int spool_pwrite_at(struct spool *sp, int fd, uint64_t seg, const unsigned char *buf,
                           size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t w = sp->io.pwrite(fd, buf + done, len - done, (off_t)(off + done));
        if (w < 0 && errno == EINVAL && atomic_load(&sp->direct)) {
            int fl = fcntl(fd, F_GETFL);
            if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_DIRECT) != 0)
                return -1;
            char path[PATH_MAX];
            spool_seg_path(sp, seg, path, sizeof(path));
            spool_direct_off(sp, path, "write");
            continue;
        }
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)w;
    }
    return 0;
}

static int spool_pwrite_all(struct spool *sp, size_t len)
{
    return spool_pwrite_at(sp, sp->fd, sp->cur_seg, sp->wbuf, len, sp->wbase);
}

static void spool_mark_locked(struct spool *sp, const struct spool_mark *m);

/* Hands the writer's buffer to the submitter (it writes it, then posts m to the flusher
 * when m is not NULL) and goes on in the other buffer, once the submitter is done with
 * that one. With O_DIRECT the write is rounded up to a block with zeros and the partial
 * last block is copied to the other buffer, to be written again with the next frames
 * after it (spool_buf_flush says why that is safe); the submitter writes in order, so the
 * rewrite comes after this write. Returns 0, or -1 when the spool failed. */
static int spool_handoff(struct spool *sp, const struct spool_mark *m)
{
    size_t len = sp->wfill, keep = sp->wfill;
    if (atomic_load(&sp->direct)) {
        len = (sp->wfill + SPOOL_BLOCK - 1) & ~(size_t)(SPOOL_BLOCK - 1);
        memset(sp->wbuf + sp->wfill, 0, len - sp->wfill);
        keep = sp->wfill & ~(size_t)(SPOOL_BLOCK - 1);
    }
    struct spool_job j = {.buf = sp->wbuf, .len = len, .off = sp->wbase, .post = m != NULL};
    if (m)
        j.mark = *m;
    j.mark.fd = sp->fd; /* written to this segment, posted or not */
    j.mark.seg = sp->cur_seg;
    unsigned char *other = sp->wbufs[1 - sp->wcur];
    pthread_mutex_lock(&sp->fmu);
    bool busy = true;
    if (!atomic_load(&sp->failed)) {
        sp->jobs[sp->njobs++] = j; /* at most the other buffer's job is ahead of it */
        pthread_cond_signal(&sp->scv);
    }
    while (busy && !atomic_load(&sp->failed)) {
        busy = false;
        for (int i = 0; i < sp->njobs; i++)
            busy = busy || sp->jobs[i].buf == other;
        if (busy)
            pthread_cond_wait(&sp->fcv, &sp->fmu);
    }
    pthread_mutex_unlock(&sp->fmu);
    if (atomic_load(&sp->failed))
        return -1;
    memcpy(other, sp->wbuf + keep, sp->wfill - keep);
    sp->wcur = 1 - sp->wcur;
    sp->wbuf = other;
    sp->wbase += keep;
    sp->wfill -= keep;
    return 0;
}

/* Waits until the submitter has written every job (the writer, before it writes itself:
 * writes stay in order). Returns 0, or -1 when the spool failed. */
static int spool_wait_jobs(struct spool *sp)
{
    pthread_mutex_lock(&sp->fmu);
    while (sp->njobs > 0 && !atomic_load(&sp->failed))
        pthread_cond_wait(&sp->fcv, &sp->fmu);
    pthread_mutex_unlock(&sp->fmu);
    return atomic_load(&sp->failed) ? -1 : 0;
}

/* Copies len bytes into the writer's buffer; a full buffer is written (whole blocks: no
 * padding, nothing kept), by the submitter once the threads run. */
static int spool_buf_put(struct spool *sp, const void *src, size_t len)
{
    const unsigned char *p = src;
    while (len > 0) {
        size_t n = SPOOL_WBUF - sp->wfill < len ? SPOOL_WBUF - sp->wfill : len;
        memcpy(sp->wbuf + sp->wfill, p, n);
        sp->wfill += n, p += n, len -= n;
        if (sp->wfill == SPOOL_WBUF && sp->started) {
            if (spool_handoff(sp, NULL) != 0)
                return -1;
        } else if (sp->wfill == SPOOL_WBUF) {
            if (spool_pwrite_all(sp, SPOOL_WBUF) != 0)
                return -1;
            sp->wbase += SPOOL_WBUF;
            sp->wfill = 0;
        }
    }
    return 0;
}

/* Writes what the buffer holds. With O_DIRECT the write is rounded up to a block with
 * zeros, and the partial last block stays in the buffer: the next frames go after its
 * bytes and the block is written again with them. Rewriting it does not endanger what it
 * already holds: a crash during the rewrite leaves each sector old or new, and the bytes
 * before the old end are the same in both. */
static int spool_buf_flush(struct spool *sp)
{
    if (sp->wfill == 0)
        return 0;
    if (!atomic_load(&sp->direct)) {
        if (spool_pwrite_all(sp, sp->wfill) != 0)
            return -1;
        sp->wbase += sp->wfill;
        sp->wfill = 0;
        return 0;
    }
    size_t len = (sp->wfill + SPOOL_BLOCK - 1) & ~(size_t)(SPOOL_BLOCK - 1);
    memset(sp->wbuf + sp->wfill, 0, len - sp->wfill);
    if (spool_pwrite_all(sp, len) != 0)
        return -1;
    /* The write may have turned buffered (EINVAL): then the padding is in the file too,
     * which the scan reads as the end of the frames, as in a prepared segment. */
    size_t keep = sp->wfill & ~(size_t)(SPOOL_BLOCK - 1);
    if (keep < sp->wfill)
        memmove(sp->wbuf, sp->wbuf + keep, sp->wfill - keep);
    sp->wbase += keep;
    sp->wfill -= keep;
    return 0;
}

/* Waits until the flusher has made durable everything posted (the writer, before it
 * closes a segment). Returns 0, or -1 when the spool failed. */
static int spool_drain(struct spool *sp)
{
    pthread_mutex_lock(&sp->fmu);
    while ((sp->njobs > 0 || sp->mark_new || sp->fbusy) && !atomic_load(&sp->failed))
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
 * and a prepared or recycled one past its end (cur_prep_end). A recycled segment ready
 * does not end the open one early: then a segment that grows (a recycled file smaller than
 * segment_bytes, one prepared at a slow rate) grows to segment_bytes, and once recycled it
 * takes a whole segment's frames. Room is kept for the END frame. Decided once per frame. */
static bool spool_must_roll(struct spool *sp, uint64_t size)
{
    if (sp->fd < 0 || sp->next_seq == sp->cur_seg)
        return false;           /* no commit in it yet: a new one would take its name */
    size += SPOOL_FRAME_HEADER; /* the END frame */
    if (sp->cur_bytes + size > sp->segment_bytes)
        return true;
    bool grows = !sp->cur_prepared || sp->cur_bytes + size > sp->cur_prep_end;
    return grows && atomic_load(&sp->prep_ready);
}

/* Takes the newest recycled segment out of the list (the caller has pmu): its name, or 0.
 * (Which one does not matter to the writer; the newest is the one whose rename the preparer
 * made durable last, which keeps recycled_segments_never_read_old_frames sharp.) */
static uint64_t spool_pop_recycled(struct spool *sp)
{
    int n = atomic_load(&sp->nrecycled);
    if (n == 0)
        return 0;
    atomic_store(&sp->nrecycled, n - 1);
    return sp->recycled[n - 1];
}

/* Takes a recycled segment and renames it to path. Returns whether it did. Not
 * without O_DIRECT: unpadded writes would leave old bytes right after the frames, mid-block
 * (the preparer deletes the recycled ones then). */
static bool spool_take_recycled(struct spool *sp, const char *path)
{
    if (!spool_direct(sp))
        return false;
    pthread_mutex_lock(&sp->pmu);
    uint64_t old = spool_pop_recycled(sp);
    pthread_mutex_unlock(&sp->pmu);
    if (old == 0)
        return false;
    char rec[PATH_MAX];
    spool_rec_path(sp, old, rec, sizeof(rec));
    if (sp->io.rename(rec, path) == 0)
        return true;
    S3C_LOG(S3C_LOG_WARN, "event=spool_recycle_failed path=%s error=\"%s\"", rec, strerror(errno));
    unlink(rec);
    return false;
}

/* Opens the segment named next_seq: the prepared file renamed into place when one is
 * ready (an early roll is for it: spool_must_roll), else a recycled one, else a new, empty
 * one. Either way the directory is fsync'd before anything in it counts (dir_dirty). */
static int spool_open_segment(struct spool *sp, const char *path)
{
    sp->cur_prepared = false;
    if (!atomic_load(&sp->prep_ready) && spool_take_recycled(sp, path)) {
        /* Written over: its old frames carry another tag (the scan tells them apart). */
        sp->fd = spool_open_file(sp, path, O_WRONLY | O_CLOEXEC, true);
        struct stat sb;
        if (sp->fd >= 0 && fstat(sp->fd, &sb) == 0) {
            sp->cur_prepared = true;
            sp->cur_prep_end = (uint64_t)sb.st_size & ~(uint64_t)(SPOOL_BLOCK - 1);
        }
        return sp->fd;
    }
    if (atomic_load(&sp->prep_ready)) {
        char prep[PATH_MAX];
        snprintf(prep, sizeof(prep), "%s/" SPOOL_PREP_NAME, sp->dir);
        bool moved = sp->io.rename(prep, path) == 0;
        pthread_mutex_lock(&sp->pmu); /* taken: the preparer makes the next one */
        atomic_store(&sp->prep_ready, false);
        sp->prep_failed = false;
        pthread_cond_signal(&sp->pcv);
        pthread_mutex_unlock(&sp->pmu);
        if (moved) {
            sp->fd = spool_open_file(sp, path, O_WRONLY | O_CLOEXEC, true);
            sp->cur_prepared = sp->fd >= 0;
            sp->cur_prep_end = sp->prep_bytes;
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
    sp->fd = spool_open_file(sp, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, true);
    return sp->fd;
}

/* A new segment's tag: another for every segment, so a recycled file's old frames
 * (another life's tag) are never read as the new life's (splitmix64 of a random seed). */
static uint32_t spool_next_tag(struct spool *sp)
{
    uint64_t z = (sp->tag_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)(z ^ (z >> 31));
}

/* Puts a BEGIN or END frame for the open segment in the buffer and counts its bytes. */
static int spool_put_marker(struct spool *sp, enum spool_type type)
{
    struct spool_frame f = {.type = type,
                            .flags = SPOOL_CRC_PAYLOAD | SPOOL_CRC_TAG,
                            .first = sp->cur_seg,
                            .last = sp->cur_seg,
                            /* W, as it stands */
                            .epoch = sp->o.w && !spool_test_no_wmark ? atomic_load(sp->o.w) : 0,
                            .tag = sp->cur_tag};
    unsigned char h[SPOOL_FRAME_HEADER];
    spool_frame_encode(&f, h);
    spool_frame_seal(h, spool_frame_head_crc(h));
    if (spool_buf_put(sp, h, sizeof(h)) != 0)
        return -1;
    sp->cur_bytes += sizeof(h);
    atomic_fetch_add(&sp->bytes, sizeof(h));
    atomic_fetch_add_explicit(&sp->appended, sizeof(h), memory_order_relaxed);
    pthread_mutex_lock(&sp->segmu);
    struct spool_seg *s = spool_seg_find(sp, sp->cur_seg);
    s->bytes += sizeof(h);
    s->tagged = true;
    pthread_mutex_unlock(&sp->segmu);
    return 0;
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
    sp->wbase = 0;
    sp->wfill = 0;
    sp->dir_dirty = true;
    sp->cur_tag = spool_next_tag(sp);
    if (spool_seg_add(sp, sp->cur_seg) != 0) {
        errno = ENOMEM;
        *what = "open";
        return -1;
    }
    if (spool_put_marker(sp, SPOOL_BEGIN) != 0) {
        *what = "write";
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

/* Under fmu: m is written; the flusher is to sync it (the latest post is what it takes; a
 * directory fsync still owed by a post it has not taken stays owed). */
static void spool_mark_locked(struct spool *sp, const struct spool_mark *m)
{
    bool dir = (sp->mark.dir && sp->mark_new) || m->dir;
    sp->mark = *m;
    sp->mark.dir = dir;
    sp->mark_new = true;
    if (!sp->fbusy)
        pthread_cond_broadcast(&sp->fcv);
}

/* The writer's state as a mark: requests [0, written) are in the open segment up to
 * cur_bytes, the last data seq among them l. Takes the directory fsync it owes. */
static struct spool_mark spool_mark_now(struct spool *sp, uint64_t l, uint64_t written)
{
    struct spool_mark m = {.seg = sp->cur_seg,
                           .off = sp->cur_bytes,
                           .l = l,
                           .written = written,
                           .fd = sp->fd,
                           .dir = sp->dir_dirty};
    sp->dir_dirty = false;
    return m;
}

/* The writer wrote up to its mark itself. The flusher takes the latest post; but a small
 * group with nothing behind it (idle is the writer's last post for now) and an idle
 * flusher is synced here: at light load the hand-over to another thread was one more
 * wake-up per commit. */
static void spool_post(struct spool *sp, uint64_t l, uint64_t written, bool idle)
{
    pthread_mutex_lock(&sp->fmu);
    uint64_t prev = sp->mark.seg == sp->cur_seg ? sp->mark.off : 0;
    struct spool_mark m = spool_mark_now(sp, l, written);
    if (idle && !sp->fbusy && !sp->mark_new && sp->njobs == 0 &&
        m.off - prev <= SPOOL_INLINE_SYNC_BYTES) {
        sp->mark = m;
        sp->fbusy = true; /* the flusher keeps off */
        pthread_mutex_unlock(&sp->fmu);
        spool_sync_mark(sp, &m);
        pthread_mutex_lock(&sp->fmu);
        sp->fbusy = false;
        pthread_cond_broadcast(&sp->fcv);
    } else {
        spool_mark_locked(sp, &m);
    }
    pthread_mutex_unlock(&sp->fmu);
}

/* The submitter: writes the jobs the writer hands it, in order, and posts each to the
 * flusher. After a failure it drops them. */
static void *spool_submit_main(void *arg)
{
    struct spool *sp = arg;
    pthread_setname_np(pthread_self(), "s3c-spool-dio");
    pthread_mutex_lock(&sp->fmu);
    for (;;) {
        while (sp->njobs == 0 && !sp->sstop)
            pthread_cond_wait(&sp->scv, &sp->fmu);
        if (sp->njobs == 0)
            break;
        struct spool_job j = sp->jobs[0];
        sp->sbusy = true;
        pthread_mutex_unlock(&sp->fmu);
        int rc = -1;
        if (!atomic_load(&sp->failed)) {
            rc = spool_pwrite_at(sp, j.mark.fd, j.mark.seg, j.buf, j.len, j.off);
            if (rc != 0)
                spool_fail(sp, "write", j.mark.seg, errno);
        }
        pthread_mutex_lock(&sp->fmu);
        sp->sbusy = false;
        sp->njobs--;
        memmove(&sp->jobs[0], &sp->jobs[1], (size_t)sp->njobs * sizeof(sp->jobs[0]));
        if (rc == 0 && j.post)
            spool_mark_locked(sp, &j.mark);
        pthread_cond_broadcast(&sp->fcv); /* a writer waiting for its other buffer */
    }
    pthread_mutex_unlock(&sp->fmu);
    return NULL;
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
    struct spool_frame f = {.type = SPOOL_OBJECT,
                            .flags = SPOOL_CRC_PAYLOAD | SPOOL_CRC_TAG,
                            .len = (uint32_t)len,
                            .first = seq,
                            .last = seq,
                            .epoch = epoch};
    const char *what = "write";
    sp->next_seq = seq;
    uint64_t size = spool_frame_size(len);
    int rc = spool_ensure_segment(sp, false, &what);
    if (rc == 0) {
        f.tag = sp->cur_tag;
        spool_frame_encode(&f, h);
        spool_frame_seal(h, crc32c_update(spool_frame_head_crc(h), obj, len));
        what = "write";
        if (spool_buf_put(sp, h, sizeof(h)) != 0 || spool_buf_put(sp, obj, len) != 0 ||
            spool_buf_put(sp, zeros, size - SPOOL_FRAME_HEADER - len) != 0 ||
            spool_buf_flush(sp) != 0)
            rc = -1;
    }
    if (rc == 0 && sp->io.fdatasync(sp->fd) != 0)
        what = "fdatasync", rc = -1;
    if (rc == 0 && spool_fsync_dir(sp) != 0)
        what = "fsync of the directory", rc = -1;
    if (rc != 0) {
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

/* Writes the frames gathered in the buffer and posts them to the flusher: requests
 * [0, written) are then in the file, the last data seq among them l. SPOOL_HANDOFF_BYTES
 * and more go to the submitter (written while the writer fills its other buffer: with one
 * thread copying and writing in turn, 4 KiB commits at full speed spent a quarter of the
 * writer's time copying while the disk was idle); less the writer writes itself, once the
 * submitter is done (a hand-over per group put a thread wake-up on every small group). */
static int spool_write_out(struct spool *sp, uint64_t l, uint64_t written, bool last)
{
    sp->seal_due = 0;                       /* seals held in the buffer go with this */
    if (sp->wfill >= SPOOL_HANDOFF_BYTES) { /* the submitter writes it, we fill the other */
        struct spool_mark m = spool_mark_now(sp, l, written);
        return spool_handoff(sp, &m);
    }
    if (spool_wait_jobs(sp) != 0 || spool_buf_flush(sp) != 0)
        return -1;
    spool_post(sp, l, written, last && atomic_load(&sp->pushed) == written);
    return 0;
}

/* Ends the open segment with an END frame and writes out what is gathered (the writer,
 * before it closes a segment for good): a segment that is not the last is read to its END,
 * and whatever lies after it (a recycled file's old bytes) is not looked at. */
static int spool_end_segment(struct spool *sp, uint64_t l, uint64_t written)
{
    if (spool_put_marker(sp, SPOOL_END) != 0)
        return -1;
    return spool_write_out(sp, l, written, false);
}

/* A chunk's records as they lie in the ring: one or two runs, or (a short commit left a
 * gap) run by run, joined where they touch. Calls fn for each span in order. */
static int spool_chunk_spans(struct spool *sp, const struct spool_req *r,
                             int (*fn)(struct spool *sp, const unsigned char *p, size_t len,
                                       void *arg),
                             void *arg)
{
    struct iovec runs[2];
    int nruns = ring_batch_spans(sp->o.ring, &r->rb, runs);
    if (sp->o.rec_offset == 0 && nruns > 0) {
        for (int i = 0; i < nruns; i++)
            if (fn(sp, runs[i].iov_base, runs[i].iov_len, arg) != 0)
                return -1;
        return 0;
    }
    struct ring_iter it;
    struct ring_rec rec;
    const unsigned char *start = NULL;
    size_t len = 0;
    ring_iter_init(&r->rb, &it);
    while (ring_iter_next(sp->o.ring, &it, &rec)) {
        const unsigned char *p = (const unsigned char *)rec.prefix + sp->o.rec_offset;
        size_t n = OBJ_RECORD_HEADER_BYTES + rec.len;
        if (start && start + len == p) {
            len += n;
            continue;
        }
        if (start && fn(sp, start, len, arg) != 0)
            return -1;
        start = p, len = n;
    }
    return start ? fn(sp, start, len, arg) : 0;
}

static int spool_span_put(struct spool *sp, const unsigned char *p, size_t len, void *arg)
{
    (void)arg;
    return spool_buf_put(sp, p, len);
}

/* Writes the frames of requests [from, to) into the buffer, writing it out and posting to
 * the flusher whenever SPOOL_WBUF_POST bytes are gathered, so that it syncs what is written
 * while the rest is written. A frame is sealed (its CRC in its header) before any of it is
 * copied: a chunk's CRC is the one the persistence thread computed when it took the chunk
 * (the object's CRC is built from the same), joined to the header's. A chunk W has passed
 * already (S3 took it faster than this disk) goes as a SKIP frame: its seqs without its
 * records, so the disk's bandwidth does not cap the rate S3 takes commits at, and its ring
 * space goes back at once (taken). Returns how many requests were written (fewer when the
 * spool is full), or -1 on an I/O error (*what says which call). */
static int64_t spool_write_group(struct spool *sp, uint64_t from, uint64_t to, uint64_t *l,
                                 const char **what)
{
    static const unsigned char zeros[8];
    uint64_t done = from;
    bool data = false;          /* a frame other than a seal: the group is written and synced now */
    atomic_store(&sp->full, 0); /* until a frame finds no room */

    for (uint64_t i = from; i < to && !atomic_load(&sp->failed); i++) {
        struct spool_req *r = &sp->q[i % sp->qcap];
        struct spool_frame f = {.type = r->type,
                                .flags = SPOOL_CRC_PAYLOAD | SPOOL_CRC_TAG,
                                .first = r->first,
                                .last = r->last,
                                .epoch = r->epoch,
                                .count = r->count};
        /* Read W per chunk, not per group: a writer behind a busy disk catches up by the
         * chunks S3 took meanwhile. */
        bool skip = r->type == SPOOL_CHUNK && sp->o.w && !spool_test_no_skip &&
                    r->last <= atomic_load(sp->o.w);
        if (skip)
            f.type = SPOOL_SKIP;
        f.len = f.type == SPOOL_CHUNK ? (uint32_t)r->len : 0;
        uint64_t size = spool_frame_size(f.len);
        /* (with room for the END of this segment and the BEGIN of a next one) */
        if (atomic_load(&sp->bytes) + size + 2 * SPOOL_FRAME_HEADER > sp->max_bytes &&
            r->type != SPOOL_SEAL) {
            atomic_store(&sp->full, 1);
            break; /* until W lets segments go */
        }
        /* What is gathered belongs to the old segment when this frame goes to a new one. */
        bool roll = r->type != SPOOL_SEAL && spool_must_roll(sp, size);
        if (roll && spool_end_segment(sp, *l, i) != 0)
            return *what = "write", -1;
        if (spool_ensure_segment(sp, roll, what) != 0)
            return -1;
        unsigned char h[SPOOL_FRAME_HEADER];
        f.tag = sp->cur_tag;
        spool_frame_encode(&f, h);
        uint32_t crc = spool_frame_head_crc(h);
        if (f.type == SPOOL_CHUNK) /* the pusher's CRC of the records: not run again */
            crc = crc32c_combine(crc, r->crc, f.len);
        spool_frame_seal(h, crc);
        if (spool_buf_put(sp, h, sizeof(h)) != 0 ||
            (f.type == SPOOL_CHUNK && spool_chunk_spans(sp, r, spool_span_put, NULL) != 0) ||
            spool_buf_put(sp, zeros, size - SPOOL_FRAME_HEADER - f.len) != 0)
            return *what = "write", -1;
        r->pos = (struct spool_pos){sp->cur_seg, sp->cur_bytes};
        spool_account(sp, &f, size);
        if (r->type == SPOOL_CHUNK && r->last > *l)
            *l = r->last;
        if (skip)
            atomic_fetch_add_explicit(&sp->skipped, r->count, memory_order_relaxed);
        data = data || r->type != SPOOL_SEAL;
        done = i + 1;
        /* Its ring memory and its slot are no longer read (the records are in the buffer,
         * or were skipped): the persistence thread may give back what W passed. */
        atomic_store_explicit(&sp->taken, done, memory_order_release);
        if (sp->wfill >= SPOOL_WBUF_POST && done < to && spool_write_out(sp, *l, done, false) != 0)
            return *what = "write", -1;
    }
    /* Seals alone wait in the buffer for the next data group (SPOOL_SEAL_LAG_MS at most;
     * not written at all once the spool failed): nothing waits on a seal's sync (a lost one only
     * lets a replay form other objects, which the settle rules cover), and at a light load a seal
     * that came after its chunk was taken was a write and a sync of its own: a third of
     * the syncs at 10,000 commits/s. */
    if (done > from && !data) {
        if (!sp->seal_due)
            sp->seal_due = s3c__now_ns() + SPOOL_SEAL_LAG_MS * 1000000ull;
    } else if (done > from && spool_write_out(sp, *l, done, true) != 0) {
        return *what = "write", -1;
    }
    return (int64_t)(done - from);
}

/* The writer: appends what the persistence thread pushed, deletes what W passed. It never
 * waits on an fdatasync but at a segment's end; the flusher publishes L. Large writes go to
 * the submitter thread (spool_write_out). */
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
            bool seals_due = sp->seal_due && s3c__now_ns() >= sp->seal_due;
            if (work || sp->stop || sp->poked || seals_due)
                break;
            struct timespec ts = s3c__deadline_ts(atomic_load(&sp->full) ? 50 : 1000);
            if (sp->seal_due &&
                sp->seal_due < (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec)
                ts = (struct timespec){.tv_sec = (time_t)(sp->seal_due / 1000000000u),
                                       .tv_nsec = (long)(sp->seal_due % 1000000000u)};
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
                sp->next_seq != sp->cur_seg && !atomic_load(&sp->failed)) {
                if (spool_end_segment(sp, l, sp->wnext) != 0)
                    spool_fail(sp, "write", sp->cur_seg, errno);
                else if (spool_close_segment(sp) == 0)
                    spool_delete_behind(sp, w);
            }
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
        if (sp->seal_due && (stop || s3c__now_ns() >= sp->seal_due) && !atomic_load(&sp->failed) &&
            spool_write_out(sp, l, sp->wnext, true) != 0)
            spool_fail(sp, "write", sp->cur_seg, errno);
        if (atomic_load(&sp->failed))
            sp->seal_due = 0; /* nothing more is written: held seals stay unwritten, and the
                                 wait must not keep waking for them (a busy loop) */
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
    /* A clean stop closes the open segment with its END too: then even a recycled file whose
     * writes went unpadded (O_DIRECT refused midway) reads to its end without a cut. */
    if (sp->fd >= 0 && !atomic_load(&sp->failed) && sp->next_seq != sp->cur_seg) {
        if (spool_end_segment(sp, l, sp->wnext) != 0)
            spool_fail(sp, "write", sp->cur_seg, errno);
        else
            spool_close_segment(sp);
    }
    spool_drain(sp); /* what was written is synced (or the spool failed) before stop returns */
    return NULL;
}

/* Creates SPOOL_PREP_NAME, prep_bytes of zeros, fdatasync'd, so its blocks are allocated
 * and written before any frame goes there. With O_DIRECT when the writer uses it: the
 * writer then writes whole blocks around the cache, and zeros in the cache would only be
 * invalidated. (Through the page cache, frames that end mid-page would make the kernel
 * read a page that is not cached before writing it: that was measured, docs/spool.md.) */
static int spool_prepare(struct spool *sp)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/" SPOOL_PREP_NAME, sp->dir);
    int fd = spool_open_file(sp, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, false);
    if (fd < 0)
        return -1;
    uint64_t size = sp->prep_bytes;
    int rc = 0;
    uint64_t next = s3c__now_ns();
    for (uint64_t off = 0; off < size; off += SPOOL_PREP_WRITE) {
        size_t n = size - off < SPOOL_PREP_WRITE ? (size_t)(size - off) : SPOOL_PREP_WRITE;
        if (atomic_load(&sp->pstop) || pwrite(fd, sp->zeros, n, (off_t)off) != (ssize_t)n) {
            rc = -1;
            break;
        }
        /* Paced, write by write (a slow write is not made up for with a burst): a flush
         * waits for the writes queued before it, and the writer's syncs waited behind 1 MiB
         * of zeros at a time: at 10,000 commits/s, the 8 MiB made after a roll put 5-8 ms
         * on the commits of the next 20 ms (docs/spool.md). */
        next += (uint64_t)n * 1000000000u / SPOOL_PREP_PACE;
        uint64_t now = s3c__now_ns();
        if (next > now) {
            uint64_t d = next - now;
            nanosleep(&(struct timespec){(time_t)(d / 1000000000u), (long)(d % 1000000000u)}, NULL);
        } else {
            next = now;
        }
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
            struct spool_unlink q[SPOOL_UNLINK_QUEUE];
            int n = sp->nunlink;
            memcpy(q, sp->unlink_q, (size_t)n * sizeof(q[0]));
            sp->nunlink = 0;
            pthread_mutex_unlock(&sp->pmu);
            /* A segment's bytes count against max_bytes until it is gone from the disk
             * (a full spool's writer looks again every 50 ms). */
            for (int i = 0; i < n; i++) {
                if (!q[i].tagged || !spool_recycle(sp, q[i].seg))
                    spool_delete_stepwise(sp, q[i].seg);
                atomic_fetch_sub(&sp->bytes, q[i].bytes);
            }
            pthread_mutex_lock(&sp->pmu);
            continue;
        }
        if (atomic_load(&sp->pstop))
            break;
        if (!spool_direct(sp) && atomic_load(&sp->nrecycled) > 0) {
            /* The writer takes none without O_DIRECT: they go, step by step. */
            char rec[PATH_MAX];
            spool_rec_path(sp, spool_pop_recycled(sp), rec, sizeof(rec));
            pthread_mutex_unlock(&sp->pmu);
            spool_cut_away(sp, rec);
            pthread_mutex_lock(&sp->pmu);
            continue;
        }
        if (atomic_load(&sp->prep_ready) || sp->prep_failed || atomic_load(&sp->nrecycled) > 0 ||
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

/* Stops the submitter or the flusher (both wait under fmu): sets its flag, wakes it, joins. */
static void spool_stop_fmu_thread(struct spool *sp, bool *stop, pthread_cond_t *cv, pthread_t t)
{
    pthread_mutex_lock(&sp->fmu);
    *stop = true;
    pthread_cond_broadcast(cv);
    pthread_mutex_unlock(&sp->fmu);
    pthread_join(t, NULL);
}

static void spool_stop_submitter(struct spool *sp)
{
    spool_stop_fmu_thread(sp, &sp->sstop, &sp->scv, sp->submitter);
}

static void spool_stop_flusher(struct spool *sp)
{
    spool_stop_fmu_thread(sp, &sp->fstop, &sp->fcv, sp->flusher);
}

int spool_start(struct spool *sp)
{
    sp->wnext = atomic_load(&sp->written);
    atomic_store(&sp->taken, sp->wnext);
    if (pthread_create(&sp->preparer, NULL, spool_prep_main, sp) != 0)
        return S3C_EIO;
    if (pthread_create(&sp->flusher, NULL, spool_flush_main, sp) != 0) {
        spool_stop_preparer(sp);
        return S3C_EIO;
    }
    if (pthread_create(&sp->submitter, NULL, spool_submit_main, sp) != 0) {
        spool_stop_flusher(sp);
        spool_stop_preparer(sp);
        return S3C_EIO;
    }
    sp->started = true;
    if (pthread_create(&sp->thread, NULL, spool_main, sp) != 0) {
        spool_stop_submitter(sp);
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
    spool_stop_submitter(sp);
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

struct spool_req *spool_req_oldest(struct spool *sp, bool *written, bool *taken)
{
    uint64_t pushed = atomic_load_explicit(&sp->pushed, memory_order_relaxed);
    if (sp->freed == pushed)
        return NULL;
    *written = atomic_load_explicit(&sp->written, memory_order_acquire) > sp->freed;
    *taken = *written || atomic_load_explicit(&sp->taken, memory_order_acquire) > sp->freed;
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

uint64_t spool_skipped(const struct spool *sp)
{
    return atomic_load_explicit(&sp->skipped, memory_order_relaxed);
}

uint64_t spool_syncs(const struct spool *sp)
{
    return atomic_load_explicit(&sp->groups, memory_order_relaxed);
}

const char *spool_error(const struct spool *sp)
{
    return sp->error;
}

/* ---- reading back (the persistence thread) ---------------------------------------- */

static int spool_reader_fd(struct spool *sp, uint64_t seg, char *err, size_t errlen)
{
    uint64_t gen = atomic_load(&sp->seg_gen);
    if (sp->rfd >= 0 && sp->rseg == seg && sp->rgen == gen)
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
    sp->rgen = gen;
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
        pthread_mutex_lock(&sp->segmu);
        uint64_t end = 0, next = UINT64_MAX;
        bool listed = false; /* not: W passed it and it went (its frames are all <= W) */
        for (size_t i = 0; i < sp->nsegs; i++) {
            if (sp->segs[i].seg == pos->seg)
                end = sp->segs[i].bytes, listed = true;
            else if (sp->segs[i].seg > pos->seg && sp->segs[i].seg < next)
                next = sp->segs[i].seg;
        }
        pthread_mutex_unlock(&sp->segmu);
        if (listed && pos->seg == dseg)
            return doff;
        if (listed && pos->off < end)
            return end;
        if (next == UINT64_MAX)
            return 0;
        *pos = (struct spool_pos){next, 0};
    }
}

static int spool_read_once(struct spool *sp, struct spool_pos *pos, struct spool_frame *f,
                           void *buf, size_t cap, char *err, size_t errlen)
{
    unsigned char h[SPOOL_FRAME_HEADER];
    uint32_t crc;
    int fd;
    for (;;) { /* a segment's BEGIN and END frames are the spool's own: stepped over */
        uint64_t end = spool_readable(sp, pos);
        if (end == 0 || pos->off + SPOOL_FRAME_HEADER > end)
            return S3C_EEND;
        fd = spool_reader_fd(sp, pos->seg, err, errlen);
        if (fd < 0)
            return S3C_EIO;
        ssize_t got = sp->io.pread(fd, h, sizeof(h), (off_t)pos->off);
        if (got != (ssize_t)sizeof(h)) {
            snprintf(err, errlen,
                     "spool: segment %020" PRIu64 ".seg offset %" PRIu64
                     ": cannot read a frame header: %s",
                     pos->seg, pos->off, got < 0 ? strerror(errno) : "a short read");
            return S3C_EIO;
        }
        if (spool_frame_decode(h, f, &crc) != 0 || pos->off + spool_frame_size(f->len) > end) {
            snprintf(err, errlen,
                     "spool: segment %020" PRIu64 ".seg offset %" PRIu64
                     ": not a valid frame header",
                     pos->seg, pos->off);
            return S3C_ECORRUPT;
        }
        if (f->type != SPOOL_BEGIN && f->type != SPOOL_END)
            break;
        pos->off += SPOOL_FRAME_HEADER;
    }
    if (buf) {
        if (f->len > cap) {
            snprintf(err, errlen,
                     "spool: segment %020" PRIu64 ".seg offset %" PRIu64 ": a frame of %" PRIu32
                     " bytes does not fit %zu",
                     pos->seg, pos->off, f->len, cap);
            return S3C_ECORRUPT;
        }
        ssize_t got = sp->io.pread(fd, buf, f->len, (off_t)(pos->off + SPOOL_FRAME_HEADER));
        if (got != (ssize_t)f->len) {
            snprintf(err, errlen,
                     "spool: segment %020" PRIu64 ".seg offset %" PRIu64
                     ": cannot read a frame of %" PRIu32 " bytes: %s",
                     pos->seg, pos->off, f->len, got < 0 ? strerror(errno) : "a short read");
            return S3C_EIO;
        }
        if (!spool_frame_check(h, f, crc, buf)) {
            snprintf(err, errlen,
                     "spool: segment %020" PRIu64 ".seg offset %" PRIu64
                     ": the frame's CRC does not match (the disk lost or changed it)",
                     pos->seg, pos->off);
            return S3C_ECORRUPT;
        }
    }
    pos->off += spool_frame_size(f->len);
    return 0;
}

int spool_read(struct spool *sp, struct spool_pos *pos, struct spool_frame *f, void *buf,
               size_t cap, char *err, size_t errlen)
{
    struct spool_pos at = *pos;
    for (int tries = 0;; tries++) {
        uint64_t gen = atomic_load(&sp->seg_gen);
        int rc = spool_read_once(sp, pos, f, buf, cap, err, errlen);
        /* A segment left the list while we read (W passed it; it was recycled or deleted):
         * what we read may be another segment's bytes, or its file gone. Read again from
         * the same place: spool_readable steps over a segment that is no longer listed. */
        if (rc == S3C_EEND || atomic_load(&sp->seg_gen) == gen || tries == 3)
            return rc;
        *pos = at;
    }
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
