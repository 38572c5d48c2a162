/* CRC-32C against published check values, streaming, and combine. */
#include "common/crc32c.h"
#include "test.h"

static void check_values(void)
{
    /* The standard check value of CRC-32C over "123456789". */
    ASSERT_UEQ(crc32c_update(0, "123456789", 9), 0xE3069283u);
    /* RFC 3720 B.4: 32 bytes of zeros, of 0xff. */
    unsigned char buf[32];
    memset(buf, 0, sizeof(buf));
    ASSERT_UEQ(crc32c_update(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xff, sizeof(buf));
    ASSERT_UEQ(crc32c_update(0, buf, 32), 0x62A8AB43u);
    ASSERT_UEQ(crc32c_update(0, "", 0), 0);
}

static void streaming_and_combine(void)
{
    unsigned char data[4099];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 131 + 7);
    uint32_t whole = crc32c_update(0, data, sizeof(data));
    for (size_t cut = 0; cut <= sizeof(data); cut += 97) {
        uint32_t a = crc32c_update(0, data, cut);
        ASSERT_UEQ(crc32c_update(a, data + cut, sizeof(data) - cut), whole);
        uint32_t b = crc32c_update(0, data + cut, sizeof(data) - cut);
        ASSERT_UEQ(crc32c_combine(a, b, sizeof(data) - cut), whole);
    }
    /* Unaligned starts take the byte-wise head path. */
    ASSERT_UEQ(crc32c_update(crc32c_update(0, data, 3), data + 3, 100),
               crc32c_update(0, data, 103));
}

/* A bit-at-a-time reference, independent of every table and instruction. */
static uint32_t crc_ref(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return ~c;
}

/* Lengths around the three-stream block sizes (3 x 256, 3 x 8192) and odd alignments. */
static void large_and_unaligned(void)
{
    size_t max = 3 * 8192 * 2 + 777;
    unsigned char *buf = malloc(max + 8);
    for (size_t i = 0; i < max + 8; i++)
        buf[i] = (unsigned char)(i * 2654435761u >> 13);
    size_t lens[] = {0, 1, 7, 8, 767, 768, 769, 3 * 256 + 8, 24575, 24576, 24577, 24576 + 768,
                     max};
    for (size_t a = 0; a < 8; a += 3)
        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
            uint32_t want = crc_ref(buf + a, lens[i]);
            if (crc32c_update(0, buf + a, lens[i]) != want)
                TEST_FAIL_("length %zu at offset %zu: CRC differs from the reference", lens[i],
                           a);
        }
    /* Streaming in uneven pieces across the block boundaries. */
    uint32_t c = 0;
    size_t off = 0, step = 1;
    while (off < max) {
        size_t n = step < max - off ? step : max - off;
        c = crc32c_update(c, buf + off, n);
        off += n;
        step = step * 3 + 1;
    }
    ASSERT_UEQ(c, crc_ref(buf, max));
    free(buf);
}

int main(void)
{
    RUN(check_values);
    RUN(streaming_and_combine);
    RUN(large_and_unaligned);
    return 0;
}
