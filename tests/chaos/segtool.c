/* chaos-segtool: real spool segments for the chaos suite's tear (checker.tear_tail), and
 * the real open to judge them, so test_tear_scan.py can check that every tear the driver
 * makes is one the spool's open cuts and says so, and that no acknowledged commit goes
 * with it.
 *
 *   chaos-segtool mk DIR SEG TAG TAIL FRAME...   writes DIR/<SEG, 20 digits>.seg
 *   chaos-segtool open DIR                       opens DIR as a spool; prints one JSON line
 *
 * The segment starts with a BEGIN naming SEG; every frame carries TAG, with its CRC, as the
 * writer writes them. FRAME: chunk:FIRST-LAST:RECORD_BYTES | seal:FIRST-LAST |
 * skip:FIRST-LAST | object:SEQ:BYTES | block:SEQ (a one-commit chunk sized so the frames
 * end on a 4 KiB boundary). TAIL, after the frames: none (the file ends there, as written
 * through the page cache) | zeros (to the block's end and one block more: O_DIRECT's
 * padding, a prepared file) | old (zeros to the block's end, then a frame of another tag:
 * a recycled file's old life) | oldnear (that frame right after the frames). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crc32c.h"
#include "spool/spool_int.h"

static unsigned char seg[1 << 20];
static size_t used;

static void put_frame(int type, uint64_t first, uint64_t last, const unsigned char *p, uint32_t len,
                      uint32_t tag)
{
    struct spool_frame f = {.type = (uint8_t)type,
                            .flags = SPOOL_CRC_PAYLOAD | SPOOL_CRC_TAG,
                            .len = len,
                            .first = first,
                            .last = last,
                            .epoch = 7,
                            .tag = tag};
    if (type == SPOOL_CHUNK || type == SPOOL_SKIP)
        f.count = (uint32_t)(last - first + 1);
    unsigned char h[SPOOL_FRAME_HEADER];
    spool_frame_encode(&f, h);
    spool_frame_seal(h, crc32c_update(spool_frame_head_crc(h), p, len));
    memcpy(seg + used, h, sizeof(h));
    used += sizeof(h);
    if (len)
        memcpy(seg + used, p, len);
    used += len;
    while (used % 8)
        seg[used++] = 0;
}

/* A chunk of commits first..last, each rec bytes, laid out as the object format's records. */
static void put_chunk(uint64_t first, uint64_t last, uint32_t rec, uint32_t tag)
{
    static unsigned char p[1 << 19];
    size_t at = 0;
    for (uint64_t s = first; s <= last; s++) {
        unsigned char *r = p + at + 16;
        for (uint32_t i = 0; i < rec; i++)
            r[i] = (unsigned char)((s * 131 + i * 7) | 1);
        uint32_t crc = crc32c_update(0, r, rec);
        memcpy(p + at, &rec, 4);
        memcpy(p + at + 4, &crc, 4);
        memcpy(p + at + 8, &s, 8);
        at += 16 + rec;
    }
    put_frame(SPOOL_CHUNK, first, last, p, (uint32_t)at, tag);
}

static int usage(void)
{
    fprintf(stderr, "usage: chaos-segtool mk DIR SEG TAG none|zeros|old|oldnear FRAME...\n"
                    "       chaos-segtool open DIR\n");
    return 2;
}

static int make(int argc, char **argv)
{
    uint64_t name = strtoull(argv[3], NULL, 10);
    uint32_t tag = (uint32_t)strtoul(argv[4], NULL, 0);
    const char *tail = argv[5];
    put_frame(SPOOL_BEGIN, name, name, NULL, 0, tag);
    for (int i = 6; i < argc; i++) {
        unsigned long long a, b;
        unsigned n;
        if (sscanf(argv[i], "chunk:%llu-%llu:%u", &a, &b, &n) == 3)
            put_chunk(a, b, n, tag);
        else if (sscanf(argv[i], "seal:%llu-%llu", &a, &b) == 2)
            put_frame(SPOOL_SEAL, a, b, NULL, 0, tag);
        else if (sscanf(argv[i], "skip:%llu-%llu", &a, &b) == 2)
            put_frame(SPOOL_SKIP, a, b, NULL, 0, tag);
        else if (sscanf(argv[i], "object:%llu:%u", &a, &n) == 2) {
            unsigned char p[4096];
            memset(p, 0x33, sizeof(p));
            put_frame(SPOOL_OBJECT, a, a, p, n < sizeof(p) ? n : (unsigned)sizeof(p), tag);
        } else if (sscanf(argv[i], "block:%llu", &a) == 1) {
            size_t room = 4096 - used % 4096;
            if (room < SPOOL_FRAME_HEADER + 16 + 8)
                room += 4096;
            put_chunk(a, a, (uint32_t)(room - SPOOL_FRAME_HEADER - 16), tag);
        } else {
            return usage();
        }
    }
    if (strcmp(tail, "zeros") == 0 || strcmp(tail, "old") == 0) {
        while (used % 4096)
            seg[used++] = 0;
        if (strcmp(tail, "zeros") == 0) {
            memset(seg + used, 0, 4096);
            used += 4096;
        }
    }
    if (strcmp(tail, "old") == 0 || strcmp(tail, "oldnear") == 0)
        put_chunk(1, 1, 200, tag ^ 0x5A5A5A5Au);
    char path[4096];
    snprintf(path, sizeof(path), "%s/%020" PRIu64 ".seg", argv[2], name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(seg, 1, used, f) != used || fclose(f) != 0) {
        perror(path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 6 && strcmp(argv[1], "mk") == 0)
        return make(argc, argv);
    if (argc != 3 || strcmp(argv[1], "open") != 0)
        return usage();
    static _Atomic uint64_t w;
    struct spool_opts o = {.w = &w,
                           .dir = argv[2],
                           .max_bytes = 64LL << 20,
                           .segment_bytes = 1 << 20,
                           .queue = 64,
                           .notify_fd = -1};
    struct spool *sp = NULL;
    struct spool_scan scan = {0};
    char err[512] = "";
    int rc = spool_open(&o, &sp, &scan, err, sizeof(err));
    printf("{\"rc\":%d,\"cut\":%d,\"last_seq\":%" PRIu64 ",\"last_commit_seq\":%" PRIu64 "}\n", rc,
           scan.cut ? 1 : 0, scan.last_seq, scan.last_commit_seq);
    spool_free(sp);
    return rc == 0 ? 0 : 1;
}
