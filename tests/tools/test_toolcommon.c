/* Unit tests of the pieces the programs share: the length-prefixed frame reader (whole,
 * split, oversized and truncated frames) and the latency histogram's quantiles. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "hist.h"
#include "test.h"
#include "tool.h"

static void put_frame(unsigned char *buf, size_t *off, const char *s)
{
    uint32_t n = (uint32_t)strlen(s);
    unsigned char h[4] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                          (unsigned char)(n >> 24)};
    memcpy(buf + *off, h, 4);
    memcpy(buf + *off + 4, s, n);
    *off += 4 + n;
}

static void test_frames_whole_and_split(void)
{
    unsigned char buf[256];
    size_t len = 0;
    struct frame_reader r;
    struct frame f;
    put_frame(buf, &len, "hello");
    put_frame(buf, &len, "");
    put_frame(buf, &len, "world!");
    ASSERT_EQ(frame_reader_init(&r, 100), 0);
    /* Feed one byte at a time: frames come out only when whole. */
    int got = 0;
    for (size_t i = 0; i < len; i++) {
        ASSERT_EQ(frame_reader_push(&r, buf + i, 1), 0);
        while (frame_next(&r, &f) == FRAME_OK) {
            if (got == 0) {
                ASSERT_EQ(f.len, 5);
                ASSERT_MEM_EQ(f.data, "hello", 5);
                ASSERT_EQ(f.offset, 0);
            } else if (got == 1) {
                ASSERT_EQ(f.len, 0);
                ASSERT_EQ(f.offset, 9);
            } else {
                ASSERT_EQ(f.len, 6);
                ASSERT_MEM_EQ(f.data, "world!", 6);
                ASSERT_EQ(f.offset, 13);
            }
            got++;
        }
    }
    ASSERT_EQ(got, 3);
    char msg[256];
    r.eof = true;
    ASSERT(!frame_reader_truncated(&r, msg, sizeof(msg)));
    frame_reader_free(&r);
}

static void test_frame_too_big(void)
{
    struct frame_reader r;
    struct frame f;
    unsigned char buf[64];
    size_t len = 0;
    put_frame(buf, &len, "ok");
    put_frame(buf, &len, "0123456789A"); /* 11 bytes, limit 10 */
    ASSERT_EQ(frame_reader_init(&r, 10), 0);
    ASSERT_EQ(frame_reader_push(&r, buf, len), 0);
    ASSERT_EQ(frame_next(&r, &f), FRAME_OK);
    ASSERT_EQ(frame_next(&r, &f), FRAME_TOO_BIG);
    ASSERT_EQ(f.len, 11);
    ASSERT_EQ(f.offset, 6);
    frame_reader_free(&r);
}

static void test_frame_truncated_from_fd(void)
{
    int p[2];
    struct frame_reader r;
    struct frame f;
    unsigned char buf[64];
    size_t len = 0;
    char msg[256];
    put_frame(buf, &len, "abc");
    put_frame(buf, &len, "defgh");
    ASSERT_EQ(pipe(p), 0);
    ASSERT_EQ(write(p[1], buf, len - 2), (ssize_t)(len - 2)); /* the last 2 bytes never come */
    close(p[1]);
    ASSERT_EQ(frame_reader_init(&r, 100), 0);
    ssize_t n;
    int frames = 0;
    while ((n = frame_reader_fill(&r, p[0])) > 0)
        while (frame_next(&r, &f) == FRAME_OK)
            frames++;
    ASSERT_EQ(n, 0);
    ASSERT_EQ(frames, 1);
    ASSERT(frame_reader_truncated(&r, msg, sizeof(msg)));
    ASSERT(strstr(msg, "byte offset 7") != NULL);
    ASSERT(strstr(msg, "says 5 bytes but only 3 arrived") != NULL);
    close(p[0]);
    frame_reader_free(&r);

    /* A stream that ends inside the length prefix. */
    ASSERT_EQ(frame_reader_init(&r, 100), 0);
    ASSERT_EQ(frame_reader_push(&r, "\x02\x00", 2), 0);
    r.eof = true;
    ASSERT_EQ(frame_next(&r, &f), FRAME_NEED_MORE);
    ASSERT(frame_reader_truncated(&r, msg, sizeof(msg)));
    ASSERT(strstr(msg, "after 2 of the 4 length bytes") != NULL);
    frame_reader_free(&r);
}

static void test_hist_quantiles(void)
{
    static struct hist h, h2;
    hist_init(&h);
    ASSERT_EQ(hist_quantile(&h, 0.5), 0);
    for (uint64_t v = 1; v <= 100000; v++)
        hist_record(&h, v);
    ASSERT_EQ(h.n, 100000);
    ASSERT_EQ(h.max, 100000);
    ASSERT_EQ(h.min, 1);
    /* Each quantile within the bucket width (1/32 relative) above the true value. */
    uint64_t p50 = hist_quantile(&h, 0.5), p99 = hist_quantile(&h, 0.99);
    ASSERT_GE(p50, 50000);
    ASSERT_LE(p50, 50000 + 50000 / 32 + 1);
    ASSERT_GE(p99, 99000);
    ASSERT_LE(p99, 100000);
    ASSERT_EQ(hist_quantile(&h, 1.0), 100000);
    /* Small values are exact. */
    hist_init(&h2);
    for (int i = 0; i < 10; i++)
        hist_record(&h2, 7);
    hist_record(&h2, 3);
    ASSERT_EQ(hist_quantile(&h2, 0.5), 7);
    ASSERT_EQ(hist_quantile(&h2, 0.01), 3);
    hist_merge(&h, &h2);
    ASSERT_EQ(h.n, 100011);
    ASSERT_EQ(h.min, 1);
    /* Every bucket's range contains the values that map to it. */
    for (uint64_t v = 0; v < 5000000; v += 997) {
        uint64_t lo, hi;
        hist_bucket_range(hist_index(v), &lo, &hi);
        ASSERT(lo <= v && v <= hi);
    }
    uint64_t lo, hi;
    hist_bucket_range(hist_index(UINT64_MAX), &lo, &hi);
    ASSERT_UEQ(hi, UINT64_MAX);
}

static void test_parse_sizes(void)
{
    uint64_t a, b;
    ASSERT(tool_parse_size("4096", &a) && a == 4096);
    ASSERT(tool_parse_size("4k", &a) && a == 4096);
    ASSERT(tool_parse_size("1MiB", &a) && a == 1048576);
    ASSERT(!tool_parse_size("-1", &a));
    ASSERT(!tool_parse_size("12x", &a));
    ASSERT(!tool_parse_size("", &a));
    ASSERT(tool_parse_size_range("64-4096", &a, &b) && a == 64 && b == 4096);
    ASSERT(tool_parse_size_range("100", &a, &b) && a == 100 && b == 100);
    ASSERT(!tool_parse_size_range("4096-64", &a, &b));
    ASSERT(!tool_parse_size_range("-64", &a, &b));
}

int main(void)
{
    RUN(test_frames_whole_and_split);
    RUN(test_frame_too_big);
    RUN(test_frame_truncated_from_fd);
    RUN(test_hist_quantiles);
    RUN(test_parse_sizes);
    return 0;
}
