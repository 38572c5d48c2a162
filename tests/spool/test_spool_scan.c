/* The spool's check at open against segment files written here byte by byte: the zeros a
 * prepared segment ends in are where its frames end (no cut, nothing lost, the next segment
 * still read); zeros followed by anything else are a torn write and are cut, and said so;
 * a prepared segment nothing was written to, and a prepared file never taken, hold nothing
 * and are removed; a recycled segment file's old frames are never read as its new life's. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "s3commit.h"
#include "spool/spool_int.h"
#include "test.h"

static char dir[64];

/* An OBJECT frame for seq with a payload of len bytes of seq's own pattern. */
static size_t sc_frame(uint64_t seq, size_t len, unsigned char *out)
{
    struct spool_frame f = {
        .type = SPOOL_OBJECT, .len = (uint32_t)len, .first = seq, .last = seq, .epoch = 1};
    size_t size = SPOOL_FRAME_HEADER + ((len + 7) & ~(size_t)7);
    memset(out, 0, size);
    spool_frame_encode(&f, out);
    for (size_t i = 0; i < len; i++)
        out[SPOOL_FRAME_HEADER + i] = (unsigned char)(seq + i * 13 + 1);
    uint32_t crc = crc32c_update(crc32c_update(0, out, 40), out + SPOOL_FRAME_HEADER, len);
    spool_frame_seal(out, crc);
    return size;
}

/* Segment seg: frames for seqs first..last (100-byte payloads), then zeros bytes of zeros,
 * then tail (NULL: none). Returns the frames' bytes. */
static uint64_t sc_segment(uint64_t seg, uint64_t first, uint64_t last, size_t zeros,
                           const char *tail)
{
    char path[256];
    unsigned char buf[256];
    snprintf(path, sizeof(path), "%s/%020" PRIu64 ".seg", dir, seg);
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    uint64_t bytes = 0;
    for (uint64_t s = first; s <= last && first; s++) {
        size_t n = sc_frame(s, 100, buf);
        ASSERT_EQ(fwrite(buf, 1, n, f), n);
        bytes += n;
    }
    for (size_t i = 0; i < zeros; i++)
        ASSERT_EQ(fputc(0, f), 0);
    if (tail)
        ASSERT_EQ(fwrite(tail, 1, strlen(tail), f), strlen(tail));
    ASSERT_EQ(fclose(f), 0);
    return bytes;
}

static off_t sc_size(uint64_t seg)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%020" PRIu64 ".seg", dir, seg);
    return stat(path, &st) == 0 ? st.st_size : -1;
}

static void sc_fresh(void);
static void sc_rm(void);

static _Atomic uint64_t sc_w; /* W for a spool whose threads run: nothing passes it */

static int sc_try_open(struct spool_scan *scan, const struct spool_io *io, struct spool **sp,
                       char *err, size_t errlen)
{
    struct spool_opts o = {.io = io,
                           .w = &sc_w,
                           .dir = dir,
                           .max_bytes = 64u << 20,
                           .segment_bytes = 1u << 20,
                           .queue = 16,
                           .notify_fd = -1};
    return spool_open(&o, sp, scan, err, errlen);
}

static struct spool *sc_open_io(struct spool_scan *scan, const struct spool_io *io)
{
    struct spool *sp;
    char err[512];
    if (sc_try_open(scan, io, &sp, err, sizeof(err)) != 0)
        TEST_FAIL_("spool_open: %s", err);
    return sp;
}

static struct spool *sc_open(struct spool_scan *scan)
{
    return sc_open_io(scan, NULL);
}

/* ---- the writer's own segments: O_DIRECT blocks, and the page-cache fallback ---------- */

/* seq's payload: 60 to 1,400 bytes of its own pattern, so frames end anywhere in a block. */
static size_t sc_payload(uint64_t seq, unsigned char *out)
{
    size_t len = 60 + (size_t)(seq * 331 % 1341);
    for (size_t i = 0; i < len; i++)
        out[i] = (unsigned char)(seq * 7 + i);
    return len;
}

/* The bytes of segment seg as they are now (what a crash would leave: the writer's
 * O_DIRECT writes are on the disk, its buffered ones in the page cache, which survives a
 * process crash). */
static unsigned char *sc_slurp(uint64_t seg, size_t *len)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%020" PRIu64 ".seg", dir, seg);
    FILE *f = fopen(path, "rb");
    ASSERT(f != NULL);
    unsigned char *b = malloc(1 << 20);
    *len = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

/* A directory holding one segment seg with these bytes, as a crash would leave it. */
static void sc_crashed(const char *d, uint64_t seg, const unsigned char *b, size_t len)
{
    char path[300];
    snprintf(path, sizeof(path), "rm -rf %s && mkdir -p %s", d, d);
    ASSERT_EQ(system(path), 0);
    snprintf(path, sizeof(path), "%s/%020" PRIu64 ".seg", d, seg);
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT_EQ(fwrite(b, 1, len, f), len);
    ASSERT_EQ(fclose(f), 0);
}

/* Opens the copy in d (its own spool), checks it holds seqs 1..last whole with their
 * payloads and whether the open cut something, and removes it. */
static void sc_check_copy(const char *d, uint64_t last, bool cut)
{
    char saved[64];
    snprintf(saved, sizeof(saved), "%s", dir);
    snprintf(dir, sizeof(dir), "%s", d);
    struct spool_scan scan;
    struct spool *sp = sc_open(&scan);
    ASSERT_EQ(scan.cut, cut);
    ASSERT_UEQ(scan.last_seq, last);
    ASSERT_UEQ(scan.frames, last);
    unsigned char want[2048], got[2048];
    for (uint64_t seq = 1; seq <= last; seq++) {
        struct spool_pos pos;
        struct spool_frame f;
        char err[256];
        ASSERT_EQ(spool_find(sp, seq, &pos, err, sizeof(err)), 0);
        ASSERT_EQ(spool_read(sp, &pos, &f, got, sizeof(got), err, sizeof(err)), 0);
        size_t n = sc_payload(seq, want);
        ASSERT_EQ(f.len, n);
        ASSERT(memcmp(got, want, n) == 0);
    }
    spool_free(sp);
    snprintf(dir, sizeof(dir), "%s", saved);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", d);
    ASSERT_EQ(system(cmd), 0);
}

/* Appends objects 1..n, one write group each (spool_append_object writes and syncs), and
 * after every one takes the segment as a crash would leave it: the copy holds every seq
 * so far, with nothing cut. With O_DIRECT each group rewrites the block the last one left
 * partly filled, so the copies check that a rewrite never loses what it held. Then a torn
 * rewrite: the next frame's header and part of its payload in the partial block, the rest
 * missing: the open cuts exactly that frame and keeps the rest. Returns whether O_DIRECT
 * stayed on. */
static bool sc_groups_and_crashes(const struct spool_io *io, bool exact_when_buffered)
{
    enum { N = 40 };
    sc_fresh();
    struct spool_scan scan;
    struct spool *sp = sc_open_io(&scan, io);
    char copy[80], err[512];
    snprintf(copy, sizeof(copy), "%s-copy", dir);
    unsigned char pay[2048];
    unsigned char *snap[N + 1] = {0};
    size_t snaplen[N + 1] = {0}, ends[N + 1] = {SPOOL_FRAME_HEADER}; /* after its BEGIN */
    for (uint64_t seq = 1; seq <= N; seq++) {
        size_t n = sc_payload(seq, pay);
        ASSERT_EQ(spool_append_object(sp, seq, 1, pay, n, err, sizeof(err)), 0);
        ends[seq] = ends[seq - 1] + SPOOL_FRAME_HEADER + ((n + 7) & ~(size_t)7);
        snap[seq] = sc_slurp(1, &snaplen[seq]);
        if (spool_direct(sp))
            ASSERT_EQ(snaplen[seq] % SPOOL_BLOCK, 0); /* whole blocks */
        else if (exact_when_buffered)
            ASSERT_EQ(snaplen[seq], ends[seq]); /* no rounding */
        ASSERT(snaplen[seq] >= ends[seq]);
        for (size_t i = ends[seq]; i < snaplen[seq]; i++)
            ASSERT_EQ(snap[seq][i], 0); /* zeros after the frames */
        sc_crashed(copy, 1, snap[seq], snaplen[seq]);
        sc_check_copy(copy, seq, false);
    }
    bool direct = spool_direct(sp);
    spool_free(sp);
    /* Torn: after group k, group k+1's frame only half there (its bytes from the next
     * snapshot, up to the middle of the frame; what follows is zeros or missing). */
    for (uint64_t k = 1; k < N; k += 3) {
        size_t len = snaplen[k + 1];
        unsigned char *b = calloc(1, len);
        memcpy(b, snap[k + 1], len);
        size_t mid = ends[k] + (ends[k + 1] - ends[k]) / 2;
        memset(b + mid, 0, len - mid);
        sc_crashed(copy, 1, b, len);
        sc_check_copy(copy, k, true);
        sc_crashed(copy, 1, b, mid); /* the file ends there: cut short */
        sc_check_copy(copy, k, true);
        free(b);
    }
    for (int i = 0; i <= N; i++)
        free(snap[i]);
    sc_rm();
    return direct;
}

static void groups_rewrite_the_partial_block(void)
{
    bool direct = sc_groups_and_crashes(NULL, true);
    fprintf(stderr, "   O_DIRECT %s on %s\n", direct ? "on" : "refused (page cache)", "/tmp");
}

/* A filesystem that refuses O_DIRECT at open (EINVAL, as tmpfs before Linux 6.6): the spool
 * goes on through the page cache, same frames, no rounding. */
static int sc_open_nodirect(const char *path, int flags, mode_t mode)
{
    if (flags & O_DIRECT) {
        errno = EINVAL;
        return -1;
    }
    return open(path, flags, mode);
}

static void refused_at_open_falls_back(void)
{
    static const struct spool_io io = {.open = sc_open_nodirect};
    ASSERT(!sc_groups_and_crashes(&io, true));
}

/* One that takes O_DIRECT at open and refuses the write (EINVAL; some FUSE filesystems):
 * the write is done again through the page cache. */
static _Atomic int sc_refused_writes;
static ssize_t sc_pwrite_nodirect(int fd, const void *buf, size_t len, off_t off)
{
    if (fcntl(fd, F_GETFL) & O_DIRECT) {
        atomic_fetch_add(&sc_refused_writes, 1);
        errno = EINVAL;
        return -1;
    }
    return pwrite(fd, buf, len, off);
}

static void refused_at_write_falls_back(void)
{
    static const struct spool_io io = {.pwrite = sc_pwrite_nodirect};
    /* the block refused was written whole, zeros after the frame: as a prepared segment */
    ASSERT(!sc_groups_and_crashes(&io, false));
    ASSERT_EQ(atomic_load(&sc_refused_writes), 1); /* once; then never asked again */
}

static void sc_fresh(void)
{
    snprintf(dir, sizeof(dir), "/tmp/s3c-spool-scan-XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
}

static void sc_rm(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ASSERT_EQ(system(cmd), 0);
}

/* Two prepared segments, each frames then zeros: all kept, nothing cut, both read. */
static void zeros_end_the_frames(void)
{
    sc_fresh();
    uint64_t b1 = sc_segment(1, 1, 5, 8192, NULL);
    uint64_t b2 = sc_segment(6, 6, 9, 65536 - 3 * 152, NULL);
    struct spool_scan scan;
    struct spool *sp = sc_open(&scan);
    ASSERT(!scan.cut);
    ASSERT_UEQ(scan.first_seq, 1);
    ASSERT_UEQ(scan.last_seq, 9); /* the second segment was read past the first's zeros */
    ASSERT_EQ(scan.segments, 2);
    ASSERT_UEQ(scan.bytes, b1 + b2);
    struct spool_pos pos;
    struct spool_frame f;
    unsigned char buf[256];
    char err[256];
    ASSERT_EQ(spool_find(sp, 7, &pos, err, sizeof(err)), 0);
    ASSERT_EQ(spool_read(sp, &pos, &f, buf, sizeof(buf), err, sizeof(err)), 0);
    ASSERT_UEQ(f.first, 7);
    ASSERT_EQ(buf[0], (unsigned char)(7 + 1));
    spool_free(sp);
    sc_rm();
}

/* Opens dir and checks the open cut the first segment's tail (the words said name why or
 * where) and the one segment after it, keeping seqs up to last. */
static struct spool *sc_open_cut(struct spool_scan *scan, const char *said, uint64_t last)
{
    struct spool *sp = sc_open(scan);
    ASSERT(scan->cut);
    ASSERT(strstr(scan->cut_what, said) != NULL);
    ASSERT(strstr(scan->cut_what, "1 later segment(s) dropped") != NULL);
    ASSERT_UEQ(scan->last_seq, last);
    return sp;
}

/* Zeros, then bytes that are not: a torn write, cut and said so; later segments dropped. */
static void zeros_then_bytes_are_cut(void)
{
    sc_fresh();
    uint64_t b1 = sc_segment(1, 1, 5, 4096, "torn");
    sc_segment(6, 6, 9, 0, NULL);
    struct spool_scan scan;
    struct spool *sp = sc_open_cut(&scan, "00000000000000000001.seg", 5);
    ASSERT_EQ(sc_size(1), (off_t)b1);
    ASSERT_EQ(sc_size(6), -1);
    spool_free(sp);
    sc_rm();
}

/* A prepared segment renamed into place before anything was written to it, and a prepared
 * file never taken: no data, no cut, both gone. */
static void unused_prepared_files_go(void)
{
    sc_fresh();
    sc_segment(1, 1, 3, 0, NULL);
    sc_segment(4, 0, 0, 65536, NULL);
    char prep[256];
    snprintf(prep, sizeof(prep), "%s/" SPOOL_PREP_NAME, dir);
    FILE *f = fopen(prep, "wb");
    ASSERT(f != NULL);
    ASSERT_EQ(fclose(f), 0);
    struct spool_scan scan;
    struct spool *sp = sc_open(&scan);
    ASSERT(!scan.cut);
    ASSERT_UEQ(scan.last_seq, 3);
    ASSERT_EQ(scan.segments, 1);
    ASSERT_EQ(sc_size(4), -1);
    ASSERT(access(prep, F_OK) != 0);
    spool_free(sp);
    sc_rm();
}

/* ---- the preparer's step-by-step delete -------------------------------------------------- */

static char sc_snap[4][64];
static _Atomic int sc_nsnap;
static struct spool *sc_live;       /* the spool being deleted from, for its byte count */
static uint64_t sc_bytes_at_cut[4]; /* spool_bytes() at each cut */

/* Every cut of a delete, then a copy of the directory: what a crash at that moment leaves. */
static int sc_ftruncate_snap(int fd, off_t len)
{
    int rc = ftruncate(fd, len);
    int i = atomic_fetch_add(&sc_nsnap, 1);
    if (i < 4 && sc_live)
        sc_bytes_at_cut[i] = spool_bytes(sc_live);
    if (i < 4) {
        char cmd[256];
        snprintf(sc_snap[i], sizeof(sc_snap[i]), "%.40s-crash%d", dir, i);
        snprintf(cmd, sizeof(cmd), "cp -a %s %s", dir, sc_snap[i]);
        if (system(cmd) != 0)
            sc_snap[i][0] = '\0';
    }
    return rc;
}

/* W passed a 9 MiB segment: the preparer cuts it down a step at a time before the unlink
 * (one unlink of a big segment held the writer's I/O up to 37 ms). A crash between two
 * cuts must leave a spool whose next open keeps every commit after W: the segment being
 * cut is out of the scan's sight (a segment cut short under its own name reads as a torn
 * tail, and everything after a torn tail is cut, locally durable commits included). */
static void deletes_never_cut_what_follows(void)
{
    sc_fresh();
    uint64_t n = (9u << 20) / 152 + 1; /* 152-byte frames: two cuts of SPOOL_DEL_STEP */
    sc_segment(1, 1, n, 0, NULL);
    sc_segment(n + 1, n + 1, n + 5, 0, NULL);
    struct spool_io io = {.ftruncate = sc_ftruncate_snap};
    struct spool_scan scan;
    struct spool *sp = sc_open_io(&scan, &io);
    ASSERT_UEQ(scan.last_seq, n + 5);
    atomic_store(&sc_nsnap, 0);
    ASSERT_EQ(spool_start(sp), 0);
    uint64_t before = spool_bytes(sp);
    sc_live = sp;
    spool_trim(sp, n); /* W passed segment 1 */
    char del[256];
    spool_del_path(sp, 1, del, sizeof(del));
    ASSERT_WITHIN(10000, sc_size(1) == -1 && access(del, F_OK) != 0);
    /* Until it is gone from the disk, the segment counts against spool.max_bytes. */
    ASSERT_WITHIN(10000, spool_bytes(sp) < before);
    ASSERT_UEQ(spool_bytes(sp), before - n * 152);
    spool_free(sp);
    sc_live = NULL;
    int snaps = atomic_load(&sc_nsnap);
    ASSERT_GE(snaps, 2);
    for (int i = 0; i < snaps && i < 4; i++)
        ASSERT_UEQ(sc_bytes_at_cut[i], before);
    char live[64];
    memcpy(live, dir, sizeof(live));
    for (int i = 0; i < snaps && i < 4; i++) {
        ASSERT(sc_snap[i][0] != '\0');
        memcpy(dir, sc_snap[i], sizeof(dir));
        sp = sc_open(&scan);
        ASSERT(!scan.cut);
        ASSERT_UEQ(scan.first_seq, n + 1);
        ASSERT_UEQ(scan.last_seq, n + 5);
        ASSERT_EQ(scan.segments, 1);
        spool_del_path(sp, 1, del, sizeof(del));
        ASSERT(access(del, F_OK) != 0); /* the open removed what the crash left */
        spool_free(sp);
        sc_rm();
    }
    memcpy(dir, live, sizeof(dir));
    sc_rm();
}

/* ---- recycled segment files: a new life's frames in front of an old life's ---------------- */

/* Appends to b at *n: a frame of this format (tagged) for seq with len bytes of seq's pattern
 * (BEGIN and END: no payload, seq is the segment's name). */
static void sc_tagged(unsigned char *b, size_t *n, enum spool_type type, uint64_t seq, size_t len,
                      uint32_t tag)
{
    struct spool_frame f = {.type = type,
                            .flags = SPOOL_CRC_PAYLOAD | SPOOL_CRC_TAG,
                            .len = (uint32_t)len,
                            .first = seq,
                            .last = seq,
                            .epoch = 1,
                            .tag = tag};
    unsigned char *h = b + *n;
    memset(h, 0, SPOOL_FRAME_HEADER + ((len + 7) & ~(size_t)7));
    spool_frame_encode(&f, h);
    for (size_t i = 0; i < len; i++)
        h[SPOOL_FRAME_HEADER + i] = (unsigned char)(seq + i * 13 + 1);
    spool_frame_seal(h, crc32c_update(spool_frame_head_crc(h), h + SPOOL_FRAME_HEADER, len));
    *n += SPOOL_FRAME_HEADER + ((len + 7) & ~(size_t)7);
}

/* A SKIP frame for seqs first..last (tag 0x5c1b, epoch 1), payload len (0 as the writer
 * writes it). */
static void sc_skip(unsigned char *b, size_t *n, uint64_t first, uint64_t last, size_t len)
{
    struct spool_frame f = {.type = SPOOL_SKIP,
                            .flags = SPOOL_CRC_PAYLOAD | SPOOL_CRC_TAG,
                            .len = (uint32_t)len,
                            .count = (uint32_t)(last - first + 1),
                            .first = first,
                            .last = last,
                            .epoch = 1,
                            .tag = 0x5c1b};
    unsigned char *h = b + *n;
    memset(h, 0, SPOOL_FRAME_HEADER + ((len + 7) & ~(size_t)7));
    spool_frame_encode(&f, h);
    spool_frame_seal(h, crc32c_update(spool_frame_head_crc(h), h + SPOOL_FRAME_HEADER, len));
    *n += SPOOL_FRAME_HEADER + ((len + 7) & ~(size_t)7);
}

/* Writes segment 5 (tag 0x5c1b): BEGIN, OBJECT 5, SKIP 6..9, OBJECT 10, SKIP 11..11,
 * OBJECT 12, then the frame bad (NULL: none) and OBJECT 13 after it. */
static void sc_write_skips(void (*bad)(unsigned char *, size_t *))
{
    sc_fresh();
    unsigned char b[2048];
    size_t n = 0;
    sc_tagged(b, &n, SPOOL_BEGIN, 5, 0, 0x5c1b);
    sc_tagged(b, &n, SPOOL_OBJECT, 5, 100, 0x5c1b);
    sc_skip(b, &n, 6, 9, 0);
    sc_tagged(b, &n, SPOOL_OBJECT, 10, 100, 0x5c1b);
    sc_skip(b, &n, 11, 11, 0);
    sc_tagged(b, &n, SPOOL_OBJECT, 12, 100, 0x5c1b);
    if (bad)
        bad(b, &n);
    sc_tagged(b, &n, SPOOL_OBJECT, 13, 100, 0x5c1b);
    char path[256];
    snprintf(path, sizeof(path), "%s/%020d.seg", dir, 5);
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT_EQ(fwrite(b, 1, n, f), n);
    ASSERT_EQ(fclose(f), 0);
}

/* The same, opened. */
static struct spool *sc_with_skips(struct spool_scan *scan, void (*bad)(unsigned char *, size_t *))
{
    sc_write_skips(bad);
    return sc_open(scan);
}

static void sc_skip_with_bytes(unsigned char *b, size_t *n)
{
    sc_skip(b, n, 13, 13, 8); /* a SKIP carries no records */
}

static void sc_skip_out_of_order(unsigned char *b, size_t *n)
{
    sc_skip(b, n, 14, 14, 0); /* seq 13 is missing */
}

/* SKIP frames (commits W passed before the writer got to them) keep the seqs in a row,
 * stand for commits (the last commit, an anchor for W: their run acknowledged them), are
 * found and read as frames without a payload; one with a payload, or one whose seqs do not
 * follow, is a torn write: cut with everything after it. */
static void skip_frames_hold_seqs_and_anchor_w(void)
{
    struct spool_scan scan;
    struct spool *sp = sc_with_skips(&scan, NULL);
    ASSERT(!scan.cut);
    ASSERT_UEQ(scan.first_seq, 5);
    ASSERT_UEQ(scan.last_seq, 13);
    ASSERT_UEQ(scan.w_mark, 11);          /* the highest SKIP's last */
    ASSERT_UEQ(scan.last_commit_seq, 11); /* OBJECT frames are control records, not commits */
    ASSERT_UEQ(scan.last_commit_epoch, 1);
    struct spool_pos pos;
    struct spool_frame f;
    char err[256];
    unsigned char got[256];
    ASSERT_EQ(spool_find(sp, 6, &pos, err, sizeof(err)), 0);
    ASSERT_EQ(spool_read(sp, &pos, &f, got, sizeof(got), err, sizeof(err)), 0);
    ASSERT_EQ(f.type, SPOOL_SKIP);
    ASSERT_UEQ(f.first, 6);
    ASSERT_UEQ(f.last, 9);
    ASSERT_EQ(f.len, 0);
    ASSERT_EQ(spool_read(sp, &pos, &f, got, sizeof(got), err, sizeof(err)), 0);
    ASSERT_UEQ(f.first, 10); /* the next frame follows */
    spool_free(sp);
    sc_rm();

    static const struct {
        void (*bad)(unsigned char *, size_t *);
        const char *why;
    } cuts[] = {{sc_skip_with_bytes, "not a valid frame header"},
                {sc_skip_out_of_order, "does not follow"}};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        sp = sc_with_skips(&scan, cuts[i].bad);
        ASSERT(scan.cut);
        ASSERT(strstr(scan.cut_what, cuts[i].why) != NULL);
        ASSERT_UEQ(scan.last_seq, 12);
        ASSERT_UEQ(scan.w_mark, 11); /* a cut SKIP is no anchor */
        spool_free(sp);
        sc_rm();
    }
}

/* A frame of type 9, which this version does not know, as a newer s3commit that added a
 * kind of frame would write it (seq 13, 40 bytes, this life's tag, its CRC right); torn
 * (a payload byte changed); and of another life (a recycled file's old frame). */
static void sc_newer(unsigned char *b, size_t *n)
{
    sc_tagged(b, n, (enum spool_type)9, 13, 40, 0x5c1b);
}

static void sc_newer_torn(unsigned char *b, size_t *n)
{
    size_t at = *n;
    sc_newer(b, n);
    b[at + SPOOL_FRAME_HEADER + 3] ^= 0x10;
}

static void sc_newer_old_life(unsigned char *b, size_t *n)
{
    sc_tagged(b, n, (enum spool_type)9, 13, 40, 0x01d1fe);
}

/* A newer s3commit's frame is not a torn write: cutting it (as every version before this
 * rule did with a type it did not know) would drop what the newer run acknowledged after
 * it. The open refuses, names the frame and the fix, and leaves the segment as it was. A
 * frame of that type whose CRC fails is a torn write (cut); one of another life in a
 * recycled file is where the new life ends (not a cut). */
static void newer_frames_refuse_the_open(void)
{
    struct spool_scan scan;
    struct spool *sp = NULL;
    char err[512];
    sc_write_skips(sc_newer);
    off_t next = sc_size(5);
    sc_segment(14, 14, 15, 0, NULL); /* a later segment: a cut would delete it */
    size_t was_len, now_len;
    unsigned char *was = sc_slurp(5, &was_len);
    ASSERT_EQ(sc_try_open(&scan, NULL, &sp, err, sizeof(err)), S3C_EFORMAT);
    ASSERT(sp == NULL);
    ASSERT(strstr(err, "00000000000000000005.seg") != NULL);
    ASSERT(strstr(err, "a frame of type 9") != NULL);
    ASSERT(strstr(err, "a newer s3commit wrote it") != NULL);
    ASSERT(strstr(err, "nothing was cut") != NULL);
    char at[64];
    /* the type 9 frame (48 + 40 bytes), then OBJECT 13 (48 + 104) end the segment */
    snprintf(at, sizeof(at), "at offset %lld ", (long long)next - 88 - 152);
    ASSERT(strstr(err, at) != NULL);
    unsigned char *now = sc_slurp(5, &now_len);
    ASSERT_UEQ(now_len, was_len);
    ASSERT_MEM_EQ(now, was, was_len);
    ASSERT(sc_size(14) > 0);
    free(was);
    free(now);
    sc_rm();

    sp = sc_with_skips(&scan, sc_newer_torn);
    ASSERT(scan.cut);
    ASSERT(strstr(scan.cut_what, "not a valid frame header") != NULL);
    ASSERT_UEQ(scan.last_seq, 12);
    spool_free(sp);
    sc_rm();

    sp = sc_with_skips(&scan, sc_newer_old_life);
    ASSERT(!scan.cut);
    ASSERT_UEQ(scan.last_seq, 12);
    spool_free(sp);
    sc_rm();
}

/* A read the scan cannot make (EIO, or short), or an fdatasync of what it keeps that
 * fails, says nothing about the frames: the open fails, naming the file, the read and the
 * cause, and cuts nothing (before, a failed read of a frame was taken for a torn write and
 * cut it with everything after; a failed read in the zeros check did the same; a failed
 * fdatasync was forgotten when a cut followed, and the open went on). */
static off_t sc_fail_off;  /* the read at this offset fails, */
static size_t sc_fail_len; /* of this length (0: any) */
static bool sc_fail_short; /* short (errno 0), else EIO */

static ssize_t sc_pread_fail(int fd, void *buf, size_t len, off_t off)
{
    if (off == sc_fail_off && (!sc_fail_len || len == sc_fail_len)) {
        if (sc_fail_short) {
            errno = 0;
            return pread(fd, buf, len - 1, off);
        }
        errno = EIO;
        return -1;
    }
    return pread(fd, buf, len, off);
}

static int sc_fdatasync_eio(int fd)
{
    (void)fd;
    errno = EIO;
    return -1;
}

/* Segment 1: frames 1..5 (152 bytes each, 100 of payload: the third starts at 304, frame 2's
 * payload at 200), then 8,192 zeros (from 760) and "torn" (a cut), and segment 6 after it. */
static void sc_failed_open(const struct spool_io *io, const char *said)
{
    sc_fresh();
    sc_segment(1, 1, 5, 8192, "torn");
    sc_segment(6, 6, 9, 0, NULL);
    off_t was1 = sc_size(1), was6 = sc_size(6);
    struct spool *sp = NULL;
    struct spool_scan scan;
    char err[512];
    int rc = sc_try_open(&scan, io, &sp, err, sizeof(err));
    if (rc != S3C_EIO || !strstr(err, said) || !strstr(err, "nothing was cut"))
        TEST_FAIL_("open: %d (%s), want S3C_EIO and \"%s\"", rc, err, said);
    ASSERT(sp == NULL);
    ASSERT(strstr(err, "00000000000000000001.seg") != NULL);
    ASSERT_EQ(sc_size(1), was1);
    ASSERT_EQ(sc_size(6), was6);
    sp = sc_open(&scan); /* the disk mended: the torn tail is cut, and said */
    ASSERT(scan.cut);
    ASSERT_UEQ(scan.last_seq, 5);
    spool_free(sp);
    sc_rm();
}

static void failed_reads_cut_nothing(void)
{
    static const struct {
        off_t off;
        size_t len;
        bool shrt;
        const char *said;
    } cases[] = {
        {304, 48, false,
         "at offset 304: a frame header: reading 48 bytes at offset 304: "
         "Input/output error"},
        {200, 100, false, "a frame: reading 100 bytes at offset 200: Input/output error"},
        {200, 100, true, "a frame: reading 100 bytes at offset 200: a short read (99 bytes)"},
        /* the zeros check: its first 8 bytes, then the rest */
        {760, 8, false, "the bytes after the frames: reading 8 bytes at offset 760"},
        {760, 8196, false, "the bytes after the frames: reading 8196 bytes at offset 760"},
    };
    struct spool_io io = {.pread = sc_pread_fail};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sc_fail_off = cases[i].off, sc_fail_len = cases[i].len, sc_fail_short = cases[i].shrt;
        sc_failed_open(&io, cases[i].said);
    }
    struct spool_io sync = {.fdatasync = sc_fdatasync_eio};
    sc_failed_open(&sync, "fdatasync of");
}

/* An old life of a segment file named old: BEGIN, OBJECT frames from seq old on (100-byte
 * payloads) up to size bytes, then (as a writer that closed it) no END: the rest of the
 * file. Its frames carry tag 0x01d1fe. */
static void sc_old_life(unsigned char *b, size_t size, uint64_t old)
{
    size_t n = 0;
    sc_tagged(b, &n, SPOOL_BEGIN, old, 0, 0x01d1fe);
    for (uint64_t seq = old; n + 152 <= size; seq++)
        sc_tagged(b, &n, SPOOL_OBJECT, seq, 100, 0x01d1fe);
    memset(b + n, 0x77, size - n);
}

/* A recycled file named seg: the old life of a file once named old, then, written over its
 * start, a new life (BEGIN, OBJECT frames seg..last, 100-byte payloads) with tag. Returns
 * where the new life's frames end. */
static size_t sc_relife(unsigned char *b, size_t size, uint64_t old, uint64_t seg, uint64_t last,
                        uint32_t tag)
{
    size_t n = 0;
    sc_old_life(b, size, old);
    sc_tagged(b, &n, SPOOL_BEGIN, seg, 0, tag);
    for (uint64_t seq = seg; seq <= last; seq++)
        sc_tagged(b, &n, SPOOL_OBJECT, seq, 100, tag);
    return n;
}

static void sc_write_seg(uint64_t seg, const unsigned char *b, size_t len)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%020" PRIu64 ".seg", dir, seg);
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT_EQ(fwrite(b, 1, len, f), len);
    ASSERT_EQ(fclose(f), 0);
}

/* Opens dir and checks: seqs 1..last kept (each read back whole), cut or not as said. */
static void sc_expect(uint64_t last, bool cut, int segments)
{
    struct spool_scan scan;
    struct spool *sp = sc_open(&scan);
    if (scan.cut != cut)
        TEST_FAIL_("cut %d, want %d: %s", scan.cut, cut, scan.cut_what);
    ASSERT_UEQ(scan.first_seq, 1);
    ASSERT_UEQ(scan.last_seq, last);
    ASSERT_EQ(scan.segments, segments);
    for (uint64_t seq = 1; seq <= last; seq++) {
        struct spool_pos pos;
        struct spool_frame f;
        unsigned char buf[4096];
        char err[256];
        ASSERT_EQ(spool_find(sp, seq, &pos, err, sizeof(err)), 0);
        ASSERT_EQ(spool_read(sp, &pos, &f, buf, sizeof(buf), err, sizeof(err)), 0);
        ASSERT_UEQ(f.first, seq);
        ASSERT_EQ(buf[0], (unsigned char)(seq + 1));
    }
    spool_free(sp);
}

/* A segment file W passed is renamed into place under a new name and written over (as
 * PostgreSQL recycles WAL files): after the new life's frames come the old life's bytes.
 * A crash at any point must keep exactly the new life's frames and read none of the old
 * ones, wherever the new life ends: in zeros up to a block (the writer's padding), on a
 * block boundary right before the middle of an old frame, or right before an old frame
 * whose seq would follow (only its tag tells it apart). A closed segment's END is where it
 * ends even with old bytes after it, and the next segment is read. A file renamed into
 * place before anything was written holds nothing. A new-life frame that fails its CRC is
 * a torn write: cut, and said so. */
static void recycled_files_end_where_the_new_life_ends(void)
{
    enum { SIZE = 16384 };
    static unsigned char b[SIZE];
    const uint32_t tag = 0x5eed;
    size_t n;

    /* (a) ends mid-block, zeros up to the block, then the old life */
    sc_fresh();
    n = sc_relife(b, SIZE, 900, 1, 10, tag);
    memset(b + n, 0, (n + SPOOL_BLOCK - 1) / SPOOL_BLOCK * SPOOL_BLOCK - n);
    sc_write_seg(1, b, SIZE);
    sc_expect(10, false, 1);
    ASSERT_EQ(sc_size(1), SIZE); /* not cut: the old bytes are just not read */
    sc_rm();

    /* (b) ends exactly on a block boundary, right before the middle of an old frame */
    sc_fresh();
    n = sc_relife(b, SIZE, 900, 1, 0, tag); /* the BEGIN alone */
    uint64_t seq = 1;
    while (n + 152 + 56 <= SPOOL_BLOCK)
        sc_tagged(b, &n, SPOOL_OBJECT, seq++, 100, tag);
    sc_tagged(b, &n, SPOOL_OBJECT, seq, SPOOL_BLOCK - n - SPOOL_FRAME_HEADER, tag);
    ASSERT_EQ(n, SPOOL_BLOCK);
    ASSERT(b[n] != 0 && memcmp(b + n, "S3SP", 4) != 0); /* mid old frame: neither */
    sc_write_seg(1, b, SIZE);
    sc_expect(seq, false, 1);
    sc_rm();

    /* (c) right before an old frame whose seq would follow: its tag is another life's */
    sc_fresh();
    n = sc_relife(b, SIZE, 900, 1, 10, tag);
    sc_tagged(b, &n, SPOOL_OBJECT, 11, 100, 0x01d1fe); /* valid, seq 11, old tag */
    sc_write_seg(1, b, SIZE);
    sc_expect(10, false, 1);
    sc_rm();

    /* (d) a closed segment (END, then old bytes: not zeros, not on a block boundary), the
     * next segment after it, and a recycled file renamed into place with nothing written */
    sc_fresh();
    n = sc_relife(b, SIZE, 900, 1, 10, tag);
    sc_tagged(b, &n, SPOOL_END, 1, 0, tag);
    ASSERT(n % SPOOL_BLOCK != 0 && b[n] != 0);
    sc_write_seg(1, b, SIZE);
    n = sc_relife(b, SIZE, 950, 11, 15, tag + 1);
    memset(b + n, 0, 8);
    sc_write_seg(11, b, SIZE);
    sc_old_life(b, SIZE, 990);
    sc_write_seg(16, b, SIZE); /* its BEGIN names 990: renamed, never written */
    sc_expect(15, false, 2);
    ASSERT_EQ(sc_size(16), -1); /* removed: it held nothing */
    sc_rm();

    /* (e) a new-life frame that fails its CRC: torn, cut, said */
    sc_fresh();
    n = sc_relife(b, SIZE, 900, 1, 10, tag);
    size_t torn = n;
    sc_tagged(b, &n, SPOOL_OBJECT, 11, 100, tag);
    b[torn + SPOOL_FRAME_HEADER + 50] ^= 0xff;
    sc_write_seg(1, b, SIZE);
    sc_expect(10, true, 1);
    ASSERT_EQ(sc_size(1), (off_t)torn);
    sc_rm();

    /* (f) a damaged BEGIN (its name changed, so its CRC fails) in front of good frames, then
     * a next segment: not taken for a recycled file never written (removed in silence), but
     * a cut at its start, said so, and the next segment with it */
    sc_fresh();
    n = sc_relife(b, SIZE, 900, 1, 10, tag);
    b[16] ^= 0x04, b[24] ^= 0x04; /* BEGIN's first and last seq: 1 becomes 5 */
    sc_write_seg(1, b, SIZE);
    n = sc_relife(b, SIZE, 950, 11, 15, tag + 1);
    sc_write_seg(11, b, SIZE);
    struct spool_scan scan;
    spool_free(sc_open_cut(&scan, "CRC mismatch", 0));
    sc_rm();
}

/* A cut the disk will not make (the truncate fails): the open fails and says which file,
 * and the segments after it are still there; a cut that did not hold would be made again
 * by the next open, after this run's own segments, and take them with it. */
static int sc_ftruncate_eio(int fd, off_t len)
{
    (void)fd, (void)len;
    errno = EIO;
    return -1;
}

static void failed_cut_fails_the_open(void)
{
    sc_fresh();
    sc_segment(1, 1, 5, 4096, "torn");
    sc_segment(6, 6, 9, 0, NULL);
    struct spool_io io = {.ftruncate = sc_ftruncate_eio};
    struct spool_opts o = {.io = &io,
                           .w = &sc_w,
                           .dir = dir,
                           .max_bytes = 64u << 20,
                           .segment_bytes = 1u << 20,
                           .queue = 16,
                           .notify_fd = -1};
    struct spool *sp;
    struct spool_scan scan;
    char err[512];
    ASSERT_EQ(spool_open(&o, &sp, &scan, err, sizeof(err)), S3C_EIO);
    ASSERT(strstr(err, "cannot cut the torn tail") != NULL);
    ASSERT(strstr(err, "00000000000000000001.seg") != NULL);
    ASSERT(strstr(err, "Input/output error") != NULL);
    ASSERT(sc_size(6) > 0); /* nothing after it went either */
    sp = sc_open(&scan);    /* the disk mended: the cut is made, and said */
    ASSERT(scan.cut);
    ASSERT_UEQ(scan.last_seq, 5);
    ASSERT_EQ(sc_size(6), -1);
    spool_free(sp);
    sc_rm();
}

/* W passes a segment while the persistence thread reads a frame from it: the segment
 * leaves the list and its file goes (or is recycled: another segment's bytes). What that
 * read got is not trusted; the read starts again from the same place, steps over the
 * segment that is no longer listed, and returns the next listed segment's first frame. */
static struct spool *sc_race_sp;
static _Atomic int sc_race_reads = -1; /* -1: not armed */
static ssize_t sc_pread_race(int fd, void *buf, size_t len, off_t off)
{
    if (atomic_load(&sc_race_reads) >= 0 && atomic_fetch_add(&sc_race_reads, 1) == 0) {
        spool_trim(sc_race_sp, 5); /* segment 1 (seqs 1..5) leaves the list and goes */
        memset(buf, 0xa5, len);    /* and this read saw its file's next life */
        return (ssize_t)len;
    }
    return pread(fd, buf, len, off);
}

static void read_started_again_when_its_segment_goes(void)
{
    sc_fresh();
    sc_segment(1, 1, 5, 0, NULL);
    sc_segment(6, 6, 9, 0, NULL);
    struct spool_io io = {.pread = sc_pread_race};
    struct spool_scan scan;
    struct spool *sp = sc_open_io(&scan, &io);
    sc_race_sp = sp;
    ASSERT_UEQ(scan.last_seq, 9);
    struct spool_pos pos;
    struct spool_frame f;
    unsigned char got[256], want[256];
    char err[256];
    ASSERT_EQ(spool_find(sp, 3, &pos, err, sizeof(err)), 0);
    ASSERT_UEQ(pos.seg, 1);
    atomic_store(&sc_race_reads, 0);
    ASSERT_EQ(spool_read(sp, &pos, &f, got, sizeof(got), err, sizeof(err)), 0);
    ASSERT_UEQ(f.first, 6); /* not 0xa5 garbage, not a CRC error */
    sc_frame(6, 100, want);
    ASSERT_EQ(f.len, 100);
    ASSERT(memcmp(got, want + SPOOL_FRAME_HEADER, 100) == 0);
    ASSERT(atomic_load(&sc_race_reads) >= 2); /* it did read again */
    ASSERT_EQ(sc_size(1), -1);
    spool_free(sp);
    sc_rm();
}

int main(void)
{
    RUN(zeros_end_the_frames);
    RUN(zeros_then_bytes_are_cut);
    RUN(unused_prepared_files_go);
    RUN(groups_rewrite_the_partial_block);
    RUN(refused_at_open_falls_back);
    RUN(refused_at_write_falls_back);
    RUN(deletes_never_cut_what_follows);
    RUN(recycled_files_end_where_the_new_life_ends);
    RUN(failed_cut_fails_the_open);
    RUN(read_started_again_when_its_segment_goes);
    RUN(skip_frames_hold_seqs_and_anchor_w);
    RUN(newer_frames_refuse_the_open);
    RUN(failed_reads_cut_nothing);
    return 0;
}
