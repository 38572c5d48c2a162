/* CRC-32C against published check values, a bit-at-a-time reference over random buffers
 * of many lengths and alignments, streaming, and combine. Also the driver that
 * scripts/cross-aarch64.sh cross-compiles and runs under qemu: it needs only libc, and
 * `--expect NAME` fails unless crc32c_hw_name() is NAME. S3C_CRC32C_PATH runs a slower
 * path than the CPU's best: ctest runs the whole file once per x86-64 path. */
#include "common/crc32c.h"
#include "test.h"

#if defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif

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
    /* RFC 3720 B.4: 0, 1, ..., 31 and 31, 30, ..., 0. */
    for (int i = 0; i < 32; i++)
        buf[i] = (unsigned char)i;
    ASSERT_UEQ(crc32c_update(0, buf, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (unsigned char)(31 - i);
    ASSERT_UEQ(crc32c_update(0, buf, 32), 0x113FDB5Cu);
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

/* A bit-at-a-time reference, independent of every table and instruction; continues from
 * crc as crc32c_update does. */
static uint32_t crc_ref_from(uint32_t crc, const unsigned char *p, size_t n)
{
    uint32_t c = ~crc;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return ~c;
}

static uint32_t crc_ref(const unsigned char *p, size_t n)
{
    return crc_ref_from(0, p, n);
}

/* Lengths around the three-stream block sizes (3 x 256, 3 x 8192) and odd alignments. */
static void large_and_unaligned(void)
{
    size_t max = 3 * 8192 * 2 + 777;
    unsigned char *buf = malloc(max + 8);
    for (size_t i = 0; i < max + 8; i++)
        buf[i] = (unsigned char)(i * 2654435761u >> 13);
    size_t lens[] = {0, 1, 7, 8, 767, 768, 769, 3 * 256 + 8, 24575, 24576, 24577, 24576 + 768, max};
    for (size_t a = 0; a < 8; a += 3)
        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
            uint32_t want = crc_ref(buf + a, lens[i]);
            if (crc32c_update(0, buf + a, lens[i]) != want)
                TEST_FAIL_("length %zu at offset %zu: CRC differs from the reference", lens[i], a);
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

/* Fixed-seed xorshift64*, so every path and every machine sees the same buffers. */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Du;
}

/* FNV-1a over every CRC random_buffers computes: equal digests from two builds mean they
 * gave the same answer for every case (scripts/cross-aarch64.sh compares hw and software). */
static uint64_t digest = 0xCBF29CE484222325u;

static void check_at(const unsigned char *base, size_t align, size_t len)
{
    uint32_t start = (uint32_t)rng();
    uint32_t got = crc32c_update(0, base + align, len);
    uint32_t got_from = crc32c_update(start, base + align, len);
    if (got != crc_ref(base + align, len))
        TEST_FAIL_("%s path: length %zu at alignment %zu: 0x%08x, reference 0x%08x",
                   crc32c_hw_name(), len, align, got, crc_ref(base + align, len));
    if (got_from != crc_ref_from(start, base + align, len))
        TEST_FAIL_("%s path: length %zu at alignment %zu continuing from 0x%08x: 0x%08x, "
                   "reference 0x%08x",
                   crc32c_hw_name(), len, align, start, got_from,
                   crc_ref_from(start, base + align, len));
    digest = (digest ^ got) * 0x100000001B3u;
    digest = (digest ^ got_from) * 0x100000001B3u;
}

static void random_buffers(void)
{
    size_t max = 2 * 3 * 8192 + 3 * 256 + 64;
    unsigned char *mem = malloc(max + 16);
    ASSERT(mem != NULL);
    for (size_t i = 0; i < max + 16; i++)
        mem[i] = (unsigned char)(rng() >> 56);
    /* Every length through four short rounds, each at two alignments that together cover
     * every (length mod 8, alignment mod 16) pair. */
    for (size_t len = 0; len <= 4 * 3 * 256 + 17; len++) {
        check_at(mem, len % 16, len);
        check_at(mem, (len * 7 + 3) % 16, len);
    }
    /* Around the short and long round sizes, at every alignment. */
    size_t lens[] = {3 * 256 - 1,     3 * 256,          3 * 256 + 1, 3 * 256 + 7,
                     2 * 3 * 256 + 5, 3 * 8192 - 9,     3 * 8192,    3 * 8192 + 1,
                     3 * 8192 + 777,  2 * 3 * 8192 + 3, max};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
        for (size_t align = 0; align < 16; align++)
            check_at(mem, align, lens[i]);
    /* Random lengths and alignments. */
    for (int i = 0; i < 40; i++) {
        size_t align = rng() % 16; /* two statements: argument order is unspecified */
        check_at(mem, align, rng() % (max + 1));
    }
    /* Streaming in random pieces equals one pass; combine of a random cut equals one pass. */
    uint32_t whole = crc32c_update(0, mem, max);
    for (int round = 0; round < 20; round++) {
        uint32_t c = 0;
        for (size_t off = 0, n; off < max; off += n) {
            n = rng() % (round < 10 ? 40 : 9000);
            n = n < max - off ? n : max - off;
            c = crc32c_update(c, mem + off, n);
        }
        ASSERT_UEQ(c, whole);
        size_t cut = rng() % (max + 1);
        ASSERT_UEQ(crc32c_combine(crc32c_update(0, mem, cut),
                                  crc32c_update(0, mem + cut, max - cut), max - cut),
                   whole);
    }
    free(mem);
}

/* combine against one pass over the whole, for random splits: either side empty or one
 * byte, and a buffer cut into many pieces joined one by one with crc32c_combine_with, as
 * obj_decode joins records (an operator reused for equal lengths). */
static void combine_random_splits(void)
{
    size_t max = 70000;
    unsigned char *mem = malloc(max);
    ASSERT(mem != NULL);
    for (size_t i = 0; i < max; i++)
        mem[i] = (unsigned char)(rng() >> 56);
    size_t fixed[][2] = {{0, 0},   {0, 1},     {1, 0},     {1, 1}, {0, 777},
                         {777, 0}, {1, 65536}, {65536, 1}, {3, 8}, {8191, 8193}};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        size_t a = fixed[i][0], b = fixed[i][1];
        uint32_t ca = crc32c_update(0, mem, a), cb = crc32c_update(0, mem + a, b);
        ASSERT_UEQ(crc32c_combine(ca, cb, b), crc_ref(mem, a + b));
        ASSERT_UEQ(crc32c_combine_with(ca, cb, crc32c_combine_op(b)), crc_ref(mem, a + b));
    }
    for (int round = 0; round < 200; round++) {
        size_t total = rng() % (max + 1);
        size_t cut = round % 3 == 0 ? rng() % 2 : rng() % (total + 1);
        if (round % 3 == 1 && total > 0)
            cut = total - rng() % 2; /* the second part 0 or 1 byte */
        uint32_t ca = crc32c_update(0, mem, cut), cb = crc32c_update(0, mem + cut, total - cut);
        uint32_t want = crc_ref(mem, total);
        if (crc32c_combine(ca, cb, total - cut) != want)
            TEST_FAIL_("combine of %zu + %zu bytes: 0x%08x, one pass 0x%08x", cut, total - cut,
                       crc32c_combine(ca, cb, total - cut), want);
    }
    for (int round = 0; round < 20; round++) {
        uint32_t c = 0, op = crc32c_combine_op(0);
        size_t oplen = 0, piece = 1 + rng() % 5000;
        for (size_t off = 0, n; off < max; off += n) {
            n = round % 2 ? piece : rng() % 5000; /* equal pieces reuse the operator */
            n = n < max - off ? n : max - off;
            if (n != oplen) {
                op = crc32c_combine_op(n);
                oplen = n;
            }
            c = crc32c_combine_with(c, crc32c_update(0, mem + off, n), op);
        }
        ASSERT_UEQ(c, crc_ref(mem, max));
    }
    free(mem);
}

/* Where the CPU has the instruction, the hardware path must be the one in use. */
static void hardware_used_where_present(void)
{
    const char *name = crc32c_hw_name();
    fprintf(stderr, "-- crc32c path: %s\n", name);
    ASSERT_EQ(crc32c_hw(), strcmp(name, "software") != 0);
#if defined(S3C_CRC32C_NO_HW)
    ASSERT_STR_EQ(name, "software");
#elif defined(__x86_64__)
    /* The CPU's best path, or the one S3C_CRC32C_PATH asks for instead. */
    __builtin_cpu_init();
    const char *best = "software", *asked = getenv("S3C_CRC32C_PATH");
    if (__builtin_cpu_supports("sse4.2")) {
        best = "sse4.2";
        if (__builtin_cpu_supports("pclmul"))
            best = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("vpclmulqdq")
                       ? "vpclmulqdq"
                       : "pclmul";
    }
    static const char *const order[] = {"software", "sse4.2", "pclmul", "vpclmulqdq"};
    int b = 0, a = 4;
    for (int i = 0; i < 4; i++) {
        if (strcmp(order[i], best) == 0)
            b = i;
        if (asked && strcmp(order[i], asked) == 0)
            a = i;
    }
    ASSERT_STR_EQ(name, order[a < b ? a : b]);
#elif defined(__aarch64__)
    if (getauxval(AT_HWCAP) & HWCAP_CRC32)
        ASSERT_STR_EQ(name, "armv8-crc");
#endif
}

int main(int argc, char **argv)
{
    const char *expect = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--expect") == 0 && i + 1 < argc) {
            expect = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--expect vpclmulqdq|pclmul|sse4.2|armv8-crc|software]\n",
                    argv[0]);
            return 2;
        }
    }
    RUN(hardware_used_where_present);
    if (expect)
        ASSERT_STR_EQ(crc32c_hw_name(), expect);
    RUN(check_values);
    RUN(streaming_and_combine);
    RUN(large_and_unaligned);
    RUN(random_buffers);
    RUN(combine_random_splits);
    fprintf(stderr, "-- digest of random_buffers: %016" PRIx64 "\n", digest);
    return 0;
}
