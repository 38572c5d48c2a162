/* Opening a spool: the directory lock, checking every segment frame by frame, cutting a
 * torn tail (spool.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/log.h"
#include "format/objfmt.h"
#include "s3commit.h"
#include "spool/spool_int.h"

static int spool_mkdirs(const char *dir)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return mkdir(p, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

/* One process per spool: an flock on <dir>/LOCK, which holds the holder's pid. */
static int spool_lock(struct spool *sp, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/LOCK", sp->dir);
    sp->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (sp->lock_fd < 0) {
        snprintf(err, errlen, "spool.dir %s: cannot open %s: %s", sp->dir, path, strerror(errno));
        return S3C_EIO;
    }
    if (flock(sp->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        char holder[64] = "";
        ssize_t n = pread(sp->lock_fd, holder, sizeof(holder) - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        snprintf(err, errlen,
                 "spool.dir %s is in use by another process (pid %s): one process per spool; "
                 "stop it, or give this one a spool.dir of its own",
                 sp->dir, holder[0] ? holder : "unknown");
        close(sp->lock_fd);
        sp->lock_fd = -1;
        return S3C_EIO;
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(sp->lock_fd, 0) != 0 || pwrite(sp->lock_fd, pid, (size_t)n, 0) != n) {
        snprintf(err, errlen, "spool.dir %s: cannot write %s: %s", sp->dir, path, strerror(errno));
        return S3C_EIO;
    }
    return 0;
}

static int spool_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The segment names in dir, sorted. */
static int spool_list(struct spool *sp, uint64_t **out, size_t *n, char *err, size_t errlen)
{
    DIR *d = opendir(sp->dir);
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    if (!d) {
        snprintf(err, errlen, "spool.dir %s: cannot list it: %s", sp->dir, strerror(errno));
        return S3C_EIO;
    }
    struct dirent *e;
    int eno;
    for (;;) {
        errno = 0; /* readdir's end leaves it alone; an error sets it */
        e = readdir(d);
        if (!e) {
            eno = errno;
            break;
        }
        char *end;
        if (strlen(e->d_name) != 24)
            continue;
        uint64_t v = strtoull(e->d_name, &end, 10);
        if (end != e->d_name + 20)
            continue;
        if (strcmp(e->d_name + 20, SPOOL_DEL_EXT) == 0 ||
            strcmp(e->d_name + 20, SPOOL_REC_EXT) == 0) {
            /* a segment W had passed, whose delete a crash interrupted, or one kept to be
             * written over: it holds nothing */
            char path[PATH_MAX];
            snprintf(path, sizeof(path), "%s/%s", sp->dir, e->d_name);
            unlink(path);
            continue;
        }
        if (strcmp(e->d_name + 20, ".seg") != 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *m = realloc(*out, cap * sizeof(*m));
            if (!m) {
                closedir(d);
                free(*out);
                *out = NULL;
                snprintf(err, errlen, "spool.dir %s: out of memory listing it", sp->dir);
                return S3C_ENOMEM;
            }
            *out = m;
        }
        (*out)[(*n)++] = v;
    }
    if (eno != 0) { /* a listing cut short would leave segments unread */
        snprintf(err, errlen, "spool.dir %s: cannot list it: %s", sp->dir, strerror(eno));
        closedir(d);
        free(*out);
        *out = NULL;
        return S3C_EIO;
    }
    closedir(d);
    if (*n > 1)
        qsort(*out, *n, sizeof(**out), spool_cmp_u64);
    return 0;
}

struct spool_scanner {
    unsigned char *buf;
    size_t cap;
    uint64_t last;  /* the last data seq so far (0: none) */
    bool zero_end;  /* the segment just checked ends in zeros (a prepared one): not a cut */
    bool clean;     /* its frames end where the writer left them: an END frame, its padding,
                     * or a recycled file's old bytes (a tagged segment); not a cut */
    unsigned newer; /* the type of a frame a newer s3commit wrote, found here (0: none) */
    const struct spool_io *io; /* its reads */
    int err; /* S3C_EIO or S3C_ENOMEM: the scan itself failed here (a read, memory), which
              * says nothing about the frames: the open fails, nothing is cut */
    struct {
        uint64_t off;
        size_t len;
        ssize_t got;
        int eno;
    } rd; /* the read that failed (err S3C_EIO) */
};

/* Reads len bytes at off, all of them; a read that fails or comes short is the scan's
 * failure (sc->err), told apart from the bytes it would have read. */
static bool spool_scan_read(struct spool_scanner *sc, int fd, void *buf, size_t len, uint64_t off)
{
    ssize_t got = sc->io->pread(fd, buf, len, (off_t)off);
    if (got == (ssize_t)len)
        return true;
    sc->err = S3C_EIO;
    sc->rd.off = off, sc->rd.len = len, sc->rd.got = got, sc->rd.eno = got < 0 ? errno : 0;
    return false;
}

/* The scan cannot go on here for a reason of its own (sc->err), not of the bytes: says
 * what it was doing and what failed. */
static void spool_scan_fail(struct spool_scanner *sc, char *why, size_t whylen, const char *what)
{
    if (sc->err == S3C_ENOMEM)
        snprintf(why, whylen, "%s: out of memory", what);
    else if (sc->rd.got < 0)
        snprintf(why, whylen, "%s: reading %zu bytes at offset %" PRIu64 ": %s", what, sc->rd.len,
                 sc->rd.off, strerror(sc->rd.eno));
    else
        snprintf(why, whylen,
                 "%s: reading %zu bytes at offset %" PRIu64 ": a short read (%zd bytes)", what,
                 sc->rd.len, sc->rd.off, sc->rd.got);
}

/* A header spool_frame_decode refused (h: a whole one, at off): a frame of a type added
 * after this version, whose CRC holds by the rule every version keeps (header bytes 0-39,
 * the tag, the payload: a new kind of frame comes as a new type, with SPOOL_CRC_PAYLOAD);
 * or, in a tagged segment, a frame of another life (a recycled file's old bytes); or
 * neither (a torn or damaged write). */
enum spool_unknown { UNKNOWN_TORN, UNKNOWN_NEWER, UNKNOWN_OLD_LIFE };

static enum spool_unknown spool_unknown_frame(int fd, const unsigned char *h, uint64_t off,
                                              uint64_t size, bool tagged, uint32_t tag,
                                              struct spool_scanner *sc)
{
    uint32_t magic, len, crc, ftag;
    memcpy(&magic, h, 4);
    memcpy(&len, h + 8, 4);
    memcpy(&crc, h + 40, 4);
    memcpy(&ftag, h + 44, 4);
    unsigned type = h[4], flags = h[5];
    if (magic != SPOOL_MAGIC || type <= SPOOL_SKIP || !(flags & SPOOL_CRC_PAYLOAD) ||
        (flags & ~(SPOOL_CRC_PAYLOAD | SPOOL_CRC_TAG)))
        return UNKNOWN_TORN;
    if (tagged && (!(flags & SPOOL_CRC_TAG) || ftag != tag))
        return UNKNOWN_OLD_LIFE; /* as spool_tagged_end takes a known frame of another tag */
    if (len > size - off - SPOOL_FRAME_HEADER)
        return UNKNOWN_TORN;
    if (len > sc->cap) {
        unsigned char *b = realloc(sc->buf, len);
        if (!b) {
            sc->err = S3C_ENOMEM;
            return UNKNOWN_TORN;
        }
        sc->buf = b, sc->cap = len;
    }
    if (!spool_scan_read(sc, fd, sc->buf, len, off + SPOOL_FRAME_HEADER))
        return UNKNOWN_TORN;
    return crc32c_update(spool_frame_head_crc(h), sc->buf, len) == crc ? UNKNOWN_NEWER
                                                                       : UNKNOWN_TORN;
}

/* Whether the bytes at off of a tagged segment (h: the n there, up to a header) are where
 * the writer left off rather than a frame (good or torn, which the caller checks). The
 * writer's writes end in zeros up to a block (O_DIRECT); a write that ended on a block
 * boundary leaves a recycled file's old bytes right after it (a recycled file is whole
 * blocks); an old frame carries another life's tag. Anything that starts with the magic
 * and is not a whole frame header of another life is taken for a frame of this one: a torn
 * write is said so, and a payload's bytes that happen to hold the magic cost at most a
 * needless cut of the last segment's unsynced end. */
static bool spool_tagged_end(const unsigned char *h, size_t n, uint64_t off, uint32_t tag)
{
    static const unsigned char zeros[8];
    struct spool_frame f;
    uint32_t crc, magic = SPOOL_MAGIC;
    if (n >= 8 && memcmp(h, zeros, 8) == 0)
        return true;
    if (n == SPOOL_FRAME_HEADER && spool_frame_decode(h, &f, &crc) == 0)
        return !(f.flags & SPOOL_CRC_TAG) || f.tag != tag;
    if (n < SPOOL_FRAME_HEADER || memcmp(h, &magic, 4) == 0)
        return false;
    return off % SPOOL_BLOCK == 0;
}

/* Whether [off, size) of the file is all zero bytes: the unwritten rest of a prepared
 * segment, where the frames end. */
static bool spool_zero_from(int fd, uint64_t off, uint64_t size, struct spool_scanner *sc)
{
    if (sc->cap < SPOOL_PREP_CHUNK) {
        unsigned char *b = realloc(sc->buf, SPOOL_PREP_CHUNK);
        if (!b) {
            sc->err = S3C_ENOMEM;
            return false;
        }
        sc->buf = b, sc->cap = SPOOL_PREP_CHUNK;
    }
    while (off < size) {
        size_t n = size - off < SPOOL_PREP_CHUNK ? (size_t)(size - off) : SPOOL_PREP_CHUNK;
        if (!spool_scan_read(sc, fd, sc->buf, n, off))
            return false;
        for (size_t i = 0; i < n; i++)
            if (sc->buf[i])
                return false;
        off += n;
    }
    return true;
}

/* Checks one segment; returns the offset of the first frame not to be trusted (its size
 * when all are good) and says why in why. */
static uint64_t spool_scan_seg(struct spool *sp, int fd, uint64_t size, struct spool_seg *sg,
                               struct spool_scanner *sc, struct spool_scan *scan, char *why,
                               size_t whylen)
{
    uint64_t off = 0;
    bool tagged = false;
    uint32_t tag = 0;
    sc->zero_end = sc->clean = false;
    sc->err = 0;
    while (off < size) {
        unsigned char h[SPOOL_FRAME_HEADER];
        struct spool_frame f;
        uint32_t crc;
        size_t n = size - off < sizeof(h) ? (size_t)(size - off) : sizeof(h);
        if (!spool_scan_read(sc, fd, h, n, off)) {
            spool_scan_fail(sc, why, whylen, "a frame header");
            return off;
        }
        if (off == 0 && n == sizeof(h) && spool_frame_decode(h, &f, &crc) == 0 &&
            f.type == SPOOL_BEGIN) {
            /* This format: frames up to the END (or the writer's end) carry this tag. A
             * BEGIN of another name is a recycled file's old one: nothing was written to
             * its new life. */
            if (!spool_frame_check(h, &f, crc, h)) {
                snprintf(why, whylen, "CRC mismatch (a torn or damaged write)");
                return 0;
            }
            if (f.first != sg->seg) {
                sc->clean = true;
                return 0;
            }
            tagged = true, tag = f.tag;
            sg->tagged = true;
            if (f.epoch > scan->w_mark)
                scan->w_mark = f.epoch;
            off += sizeof(h);
            continue;
        }
        if (tagged && spool_tagged_end(h, n, off, tag)) {
            sc->clean = true;
            return off;
        }
        /* A prepared segment: its frames end where its zeros begin. Zeros followed by
         * anything else are a torn write like any other. */
        if (!tagged && spool_zero_from(fd, off, off + (size - off < 8 ? size - off : 8), sc) &&
            spool_zero_from(fd, off, size, sc)) {
            sc->zero_end = true;
            return off;
        }
        if (sc->err) {
            spool_scan_fail(sc, why, whylen, "the bytes after the frames");
            return off;
        }
        if (size - off < SPOOL_FRAME_HEADER) {
            snprintf(why, whylen, "a frame header cut short (%" PRIu64 " bytes)", size - off);
            return off;
        }
        if (spool_frame_decode(h, &f, &crc) != 0 || f.type == SPOOL_BEGIN ||
            (f.type == SPOOL_END && !tagged)) {
            enum spool_unknown u = spool_unknown_frame(fd, h, off, size, tagged, tag, sc);
            if (sc->err) {
                spool_scan_fail(sc, why, whylen, "a frame");
                return off;
            }
            if (u == UNKNOWN_OLD_LIFE) {
                sc->clean = true;
                return off;
            }
            if (u == UNKNOWN_NEWER)
                sc->newer = h[4];
            snprintf(why, whylen, "not a valid frame header");
            return off;
        }
        if (f.type == SPOOL_END) {
            if (!spool_frame_check(h, &f, crc, h) || f.first != sg->seg) {
                snprintf(why, whylen, "CRC mismatch (a torn or damaged write)");
                return off;
            }
            if (f.epoch > scan->w_mark)
                scan->w_mark = f.epoch;
            sc->clean = true; /* a closed segment: what lies after its END is not looked at */
            return off + sizeof(h);
        }
        uint64_t fsize = SPOOL_FRAME_HEADER + (((uint64_t)f.len + 7) & ~(uint64_t)7);
        if (fsize > size - off) {
            snprintf(why, whylen, "a frame of %" PRIu32 " bytes cut short", f.len);
            return off;
        }
        if (f.len > sc->cap) {
            unsigned char *b = realloc(sc->buf, f.len);
            if (!b) {
                sc->err = S3C_ENOMEM;
                spool_scan_fail(sc, why, whylen, "a frame");
                return off;
            }
            sc->buf = b, sc->cap = f.len;
        }
        if (!spool_scan_read(sc, fd, sc->buf, f.len, off + SPOOL_FRAME_HEADER)) {
            spool_scan_fail(sc, why, whylen, "a frame");
            return off;
        }
        if (!spool_frame_check(h, &f, crc, sc->buf)) {
            snprintf(why, whylen, "CRC mismatch (a torn or damaged write)");
            return off;
        }
        if (f.type != SPOOL_SEAL) {
            if (sc->last && f.first != sc->last + 1) {
                snprintf(why, whylen, "seq %" PRIu64 " does not follow seq %" PRIu64, f.first,
                         sc->last);
                return off;
            }
            if (!scan->first_seq)
                scan->first_seq = f.first;
            sc->last = f.last;
            scan->last_epoch = f.epoch;
            if (f.type == SPOOL_CHUNK || f.type == SPOOL_SKIP)
                scan->last_commit_seq = f.last, scan->last_commit_epoch = f.epoch;
            /* A SKIP is written only once W has passed it: its run acknowledged at least
             * that much, an anchor as a BEGIN's or an END's W is. */
            if (f.type == SPOOL_SKIP && f.last > scan->w_mark)
                scan->w_mark = f.last;
            sg->last = f.last;
        } else {
            if (sp->nseals % 256 == 0) {
                struct spool_seal *s = realloc(sp->seals, (sp->nseals + 256) * sizeof(*s));
                if (!s) {
                    sc->err = S3C_ENOMEM;
                    spool_scan_fail(sc, why, whylen, "keeping a seal");
                    return off;
                }
                sp->seals = s;
            }
            sp->seals[sp->nseals++] = (struct spool_seal){f.first, f.last};
        }
        scan->frames++;
        off += fsize;
    }
    return off;
}

/* Cuts segment names[i] at off (deleting it when nothing is left) and every later one. */
/* Cuts segment names[i] at off (deleting it when nothing is left) and every later one.
 * A cut that does not hold would be made again by the next open, after this run had
 * written segments of its own behind it, and those would go with it: so a cut that fails
 * fails the open (err says which file and why). The new run's first segment fsyncs the
 * directory before anything in it counts, which makes the unlinks durable too. */
static int spool_cut(struct spool *sp, const uint64_t *names, size_t n, size_t i, uint64_t off,
                     char *err, size_t errlen)
{
    char path[PATH_MAX];
    spool_seg_path(sp, names[i], path, sizeof(path));
    bool ok = true;
    if (off == 0) {
        ok = unlink(path) == 0 || errno == ENOENT;
    } else {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        ok = fd >= 0 && sp->io.ftruncate(fd, (off_t)off) == 0 && fsync(fd) == 0;
        if (fd >= 0)
            close(fd);
    }
    for (size_t j = i + 1; j < n && ok; j++) {
        spool_seg_path(sp, names[j], path, sizeof(path));
        ok = unlink(path) == 0 || errno == ENOENT;
    }
    if (ok)
        return 0;
    snprintf(err, errlen,
             "spool: cannot cut the torn tail at %s: %s; fix the disk or the directory's "
             "permissions and start again (nothing was sent)",
             path, strerror(errno));
    S3C_LOG(S3C_LOG_ERROR, "event=spool_cut_failed path=%s error=\"%s\"", path, strerror(errno));
    return S3C_EIO;
}

static int spool_scan_all(struct spool *sp, struct spool_scan *scan, char *err, size_t errlen)
{
    uint64_t *names;
    size_t n;
    int rc = spool_list(sp, &names, &n, err, errlen);
    if (rc != 0)
        return rc;
    struct spool_scanner sc = {.io = &sp->io};
    for (size_t i = 0; i < n && rc == 0; i++) {
        char path[600], why[200] = "";
        struct stat stt;
        spool_seg_path(sp, names[i], path, sizeof(path));
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &stt) != 0) {
            snprintf(err, errlen, "spool: cannot open %s: %s", path, strerror(errno));
            rc = S3C_EIO;
            if (fd >= 0)
                close(fd);
            break;
        }
        struct spool_seg sg = {.seg = names[i], .last = names[i] - 1};
        uint64_t size = (uint64_t)stt.st_size;
        size_t nseals = sp->nseals;
        uint64_t good = spool_scan_seg(sp, fd, size, &sg, &sc, scan, why, sizeof(why));
        if (sc.err) {
            snprintf(err, errlen,
                     "spool.dir %s: cannot check %s at offset %" PRIu64 ": %s; nothing was cut "
                     "(fix the cause and open again)",
                     sp->dir, path, good, why);
            close(fd);
            rc = sc.err;
            break;
        }
        if (sc.newer) {
            /* Not a torn write: cutting it would drop what a newer run wrote after it. */
            snprintf(err, errlen,
                     "spool.dir %s: %s holds at offset %" PRIu64 " a frame of type %u, which "
                     "this s3commit (%s) does not know: a newer s3commit wrote it; open the "
                     "spool with that version, or move spool.dir aside (keep it: it may hold "
                     "commits S3 does not have); nothing was cut",
                     sp->dir, path, good, sc.newer, s3c_version());
            S3C_LOG(S3C_LOG_ERROR, "event=spool_newer_frame path=%s offset=%" PRIu64 " type=%u",
                    path, good, sc.newer);
            close(fd);
            rc = S3C_EFORMAT;
            break;
        }
        /* What survived a crash of the process may not have reached the disk yet. A failed
         * fdatasync stops the open before any cut: the next one must not find it fine. */
        if (good > 0 && sp->io.fdatasync(fd) != 0) {
            snprintf(err, errlen,
                     "spool.dir %s: fdatasync of %s failed: %s; nothing was cut (fix the disk "
                     "and open again)",
                     sp->dir, path, strerror(errno));
            close(fd);
            rc = S3C_EIO;
            break;
        }
        close(fd);
        if (good < size && (sc.zero_end || sc.clean)) {
            /* the unwritten rest of a prepared segment, an END, or a recycled file's old
             * bytes after what the writer wrote: the frames end here */
        } else if (good < size) {
            scan->cut = true;
            snprintf(scan->cut_what, sizeof(scan->cut_what),
                     "segment %s cut at offset %" PRIu64 " (%" PRIu64 " bytes dropped): %s; "
                     "%zu later segment(s) dropped",
                     path, good, size - good, why, n - i - 1);
            S3C_LOG(S3C_LOG_WARN,
                    "event=spool_tail_cut path=%s offset=%" PRIu64 " dropped_bytes=%" PRIu64
                    " later_segments=%zu reason=\"%s\"",
                    path, good, size - good, n - i - 1, why);
            rc = spool_cut(sp, names, n, i, good, err, errlen);
            n = i + 1;
            if (rc != 0)
                break;
        }
        if (good == 0) {
            if (good == size || sc.zero_end || sc.clean)
                unlink(path); /* an empty (or prepared or recycled, unused) one holds nothing */
            continue;
        }
        if (sg.tagged && sg.last == sg.seg - 1) {
            /* A BEGIN and no commit (a torn first write, or seals only): nothing in it
             * counts, and the writer's next segment may take its name. */
            sp->nseals = nseals;
            unlink(path);
            continue;
        }
        sg.bytes = good;
        if (spool_seg_add(sp, sg.seg) != 0) {
            snprintf(err, errlen, "spool.dir %s: out of memory listing its segments", sp->dir);
            rc = S3C_ENOMEM;
            break;
        }
        sp->segs[sp->nsegs - 1] = sg;
        scan->bytes += good;
        scan->segments++;
    }
    scan->last_seq = sc.last;
    free(sc.buf);
    free(names);
    return rc;
}

int spool_open(const struct spool_opts *o, struct spool **out, struct spool_scan *scan, char *err,
               size_t errlen)
{
    struct spool *sp = calloc(1, sizeof(*sp));
    *out = NULL;
    memset(scan, 0, sizeof(*scan));
    if (!sp)
        return S3C_ENOMEM;
    sp->o = *o;
    snprintf(sp->dir, sizeof(sp->dir), "%s", o->dir);
    sp->max_bytes = o->max_bytes;
    sp->segment_bytes = o->segment_bytes;
    sp->prep_bytes =
        (o->segment_bytes < SPOOL_PREP_MAX ? o->segment_bytes : SPOOL_PREP_MAX) & ~(uint64_t)4095;
    const struct spool_io *io = o->io ? o->io : spool_test_io;
    if (io)
        sp->io = *io;
    spool_io_defaults(&sp->io);
    atomic_store(&sp->direct, true); /* until the filesystem refuses it */
    if (getrandom(&sp->tag_state, sizeof(sp->tag_state), 0) != sizeof(sp->tag_state))
        sp->tag_state = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    atomic_flag_clear(&sp->direct_said);
    sp->fd = sp->rfd = sp->lock_fd = -1;
    sp->qcap = o->queue;
    pthread_mutex_init(&sp->mu, NULL);
    pthread_mutex_init(&sp->pubmu, NULL);
    pthread_mutex_init(&sp->segmu, NULL);
    pthread_mutex_init(&sp->fmu, NULL);
    pthread_cond_init(&sp->fcv, NULL);
    pthread_cond_init(&sp->scv, NULL);
    pthread_mutex_init(&sp->pmu, NULL);
    atomic_flag_clear(&sp->fail_once);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sp->cv, &ca);
    pthread_cond_init(&sp->pcv, &ca); /* timed waits: s3c__deadline_ts is monotonic */
    pthread_condattr_destroy(&ca);
    int rc = S3C_ENOMEM;
    sp->q = calloc(sp->qcap, sizeof(*sp->q));
    sp->zeros = aligned_alloc(SPOOL_BLOCK, SPOOL_PREP_CHUNK); /* O_DIRECT: aligned */
    sp->wbufs[0] = aligned_alloc(SPOOL_BLOCK, SPOOL_WBUF);
    sp->wbufs[1] = aligned_alloc(SPOOL_BLOCK, SPOOL_WBUF);
    sp->wbuf = sp->wbufs[0];
    if (!sp->q || !sp->zeros || !sp->wbufs[0] || !sp->wbufs[1])
        goto fail;
    memset(sp->zeros, 0, SPOOL_PREP_CHUNK);
    if (spool_mkdirs(sp->dir) != 0) {
        snprintf(err, errlen, "spool.dir %s: cannot create it: %s", sp->dir, strerror(errno));
        rc = S3C_EIO;
        goto fail;
    }
    rc = spool_lock(sp, err, errlen);
    if (rc != 0)
        goto fail;
    char prep[PATH_MAX];
    snprintf(prep, sizeof(prep), "%s/" SPOOL_PREP_NAME, sp->dir);
    unlink(prep); /* a prepared segment the last run did not take: it holds nothing */
    rc = spool_scan_all(sp, scan, err, errlen);
    if (rc != 0)
        goto fail;
    atomic_store(&sp->l, scan->last_seq);
    atomic_store(&sp->bytes, scan->bytes);
    sp->next_seq = scan->last_seq + 1;
    if (sp->nsegs) {
        sp->dseg = sp->cur_seg = sp->segs[sp->nsegs - 1].seg;
        sp->doff = sp->segs[sp->nsegs - 1].bytes;
    }
    *out = sp;
    return 0;
fail:
    spool_free(sp);
    return rc;
}

const struct spool_seal *spool_seals(const struct spool *sp, size_t *n)
{
    *n = sp->nseals;
    return sp->seals;
}

void spool_free(struct spool *sp)
{
    if (!sp)
        return;
    spool_stop(sp);
    if (sp->fd >= 0)
        close(sp->fd);
    if (sp->rfd >= 0)
        close(sp->rfd);
    if (sp->lock_fd >= 0)
        close(sp->lock_fd); /* and with it the lock */
    pthread_cond_destroy(&sp->cv);
    pthread_mutex_destroy(&sp->mu);
    pthread_mutex_destroy(&sp->pubmu);
    pthread_mutex_destroy(&sp->segmu);
    pthread_cond_destroy(&sp->fcv);
    pthread_cond_destroy(&sp->scv);
    pthread_mutex_destroy(&sp->fmu);
    pthread_cond_destroy(&sp->pcv);
    pthread_mutex_destroy(&sp->pmu);
    free(sp->zeros);
    free(sp->wbufs[0]);
    free(sp->wbufs[1]);
    free(sp->q);
    free(sp->segs);
    free(sp->seals);
    free(sp);
}
