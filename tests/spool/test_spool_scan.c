/* The spool's check at open against segment files written here byte by byte: the zeros a
 * prepared segment ends in are where its frames end (no cut, nothing lost, the next segment
 * still read); zeros followed by anything else are a torn write and are cut, and said so;
 * a prepared segment nothing was written to, and a prepared file never taken, hold nothing
 * and are removed. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "spool/spool_int.h"
#include "test.h"

static char dir[64];

/* An OBJECT frame for seq with a payload of len bytes of seq's own pattern. */
static size_t sc_frame(uint64_t seq, size_t len, unsigned char *out)
{
    struct spool_frame f = {.type = SPOOL_OBJECT, .len = (uint32_t)len, .first = seq,
                            .last = seq, .epoch = 1};
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

static struct spool *sc_open(struct spool_scan *scan)
{
    struct spool_opts o = {.dir = dir,
                           .max_bytes = 64u << 20,
                           .segment_bytes = 1u << 20,
                           .queue = 16,
                           .notify_fd = -1};
    struct spool *sp;
    char err[512];
    if (spool_open(&o, &sp, scan, err, sizeof(err)) != 0)
        TEST_FAIL_("spool_open: %s", err);
    return sp;
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

/* Zeros, then bytes that are not: a torn write, cut and said so; later segments dropped. */
static void zeros_then_bytes_are_cut(void)
{
    sc_fresh();
    uint64_t b1 = sc_segment(1, 1, 5, 4096, "torn");
    sc_segment(6, 6, 9, 0, NULL);
    struct spool_scan scan;
    struct spool *sp = sc_open(&scan);
    ASSERT(scan.cut);
    ASSERT(strstr(scan.cut_what, "00000000000000000001.seg") != NULL);
    ASSERT(strstr(scan.cut_what, "1 later segment(s) dropped") != NULL);
    ASSERT_UEQ(scan.last_seq, 5);
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

int main(void)
{
    RUN(zeros_end_the_frames);
    RUN(zeros_then_bytes_are_cut);
    RUN(unused_prepared_files_go);
    return 0;
}
