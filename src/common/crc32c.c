/* CRC-32C: the CPU's crc32c instruction in three interleaved streams (x86-64 SSE4.2,
 * aarch64 ARMv8 CRC extension), picked at run time, with a slicing-by-8 fallback. The
 * hardware functions are compiled for their extension by attribute only, so the file builds
 * with the default -march and never runs an instruction the CPU lacks. Building with
 * -DS3C_CRC32C_NO_HW forces the software path (scripts/cross-aarch64.sh tests it so). */
#include "common/crc32c.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__)
#define CRC_HW_NAME "sse4.2"
#elif defined(__aarch64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* The 8-byte loads below feed __crc32cd in memory order only on little-endian. */
#include <arm_acle.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7) /* <asm/hwcap.h>; older libcs lack it in <sys/auxv.h> */
#endif
#define CRC_HW_NAME "armv8-crc"
#endif

#define POLY 0x82F63B78u /* reflected Castagnoli polynomial */

static uint32_t table[8][256];
static int hw_state = -1; /* -1 unknown, 0 no, 1 yes */

static void crc32c_table_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (POLY & (0u - (c & 1u)));
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

static uint32_t crc32c_sw(uint32_t c, const unsigned char *p, size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        c = table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c;
        c = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
            table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^
            table[2][(w >> 40) & 0xff] ^ table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

/* Three independent crc32 streams hide the instruction's 3-cycle latency; their CRCs are
 * joined by shifting with precomputed "append n zero bytes" operators (the method of
 * Mark Adler's crc32c.c): raw_crc(A || B) = shift_|B|(raw_crc(A)) ^ raw_crc_0(B). */
#define LONG_BLOCK 8192
#define SHORT_BLOCK 256
static uint32_t zeros_long[4][256], zeros_short[4][256];

static inline uint32_t crc32c_shift_by(uint32_t zeros[][256], uint32_t crc)
{
    return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^ zeros[2][(crc >> 16) & 0xff] ^
           zeros[3][crc >> 24];
}

#if defined(__x86_64__)
/* One round of three streams over 3 x block bytes at p; returns the joined raw CRC. */
__attribute__((target("sse4.2"))) static inline uint64_t
crc32c_hw3(uint64_t c0, const unsigned char *p, size_t block, uint32_t zeros[][256])
{
    uint64_t c1 = 0, c2 = 0, w0, w1, w2;
    for (const unsigned char *end = p + block; p < end; p += 8) {
        memcpy(&w0, p, 8);
        memcpy(&w1, p + block, 8);
        memcpy(&w2, p + 2 * block, 8);
        c0 = __builtin_ia32_crc32di(c0, w0);
        c1 = __builtin_ia32_crc32di(c1, w1);
        c2 = __builtin_ia32_crc32di(c2, w2);
    }
    c0 = crc32c_shift_by(zeros, (uint32_t)c0) ^ (uint32_t)c1;
    return crc32c_shift_by(zeros, (uint32_t)c0) ^ (uint32_t)c2;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw_run(uint32_t c, const unsigned char *p,
                                                                size_t n)
{
    uint64_t c0 = c;
    while (n && ((uintptr_t)p & 7)) {
        c0 = __builtin_ia32_crc32qi((uint32_t)c0, *p++);
        n--;
    }
    for (; n >= 3 * LONG_BLOCK; p += 3 * LONG_BLOCK, n -= 3 * LONG_BLOCK)
        c0 = crc32c_hw3(c0, p, LONG_BLOCK, zeros_long);
    for (; n >= 3 * SHORT_BLOCK; p += 3 * SHORT_BLOCK, n -= 3 * SHORT_BLOCK)
        c0 = crc32c_hw3(c0, p, SHORT_BLOCK, zeros_short);
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c0 = __builtin_ia32_crc32di(c0, w);
    }
    while (n--)
        c0 = __builtin_ia32_crc32qi((uint32_t)c0, *p++);
    return (uint32_t)c0;
}
#elif defined(CRC_HW_NAME) /* aarch64: the same shape as the x86-64 path above */
__attribute__((target("+crc"))) static inline uint32_t
crc32c_hw3(uint32_t c0, const unsigned char *p, size_t block, uint32_t zeros[][256])
{
    uint32_t c1 = 0, c2 = 0;
    uint64_t w0, w1, w2;
    for (const unsigned char *end = p + block; p < end; p += 8) {
        memcpy(&w0, p, 8);
        memcpy(&w1, p + block, 8);
        memcpy(&w2, p + 2 * block, 8);
        c0 = __crc32cd(c0, w0);
        c1 = __crc32cd(c1, w1);
        c2 = __crc32cd(c2, w2);
    }
    c0 = crc32c_shift_by(zeros, c0) ^ c1;
    return crc32c_shift_by(zeros, c0) ^ c2;
}

__attribute__((target("+crc"))) static uint32_t crc32c_hw_run(uint32_t c, const unsigned char *p,
                                                              size_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        c = __crc32cb(c, *p++);
        n--;
    }
    for (; n >= 3 * LONG_BLOCK; p += 3 * LONG_BLOCK, n -= 3 * LONG_BLOCK)
        c = crc32c_hw3(c, p, LONG_BLOCK, zeros_long);
    for (; n >= 3 * SHORT_BLOCK; p += 3 * SHORT_BLOCK, n -= 3 * SHORT_BLOCK)
        c = crc32c_hw3(c, p, SHORT_BLOCK, zeros_short);
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __crc32cd(c, w);
    }
    while (n--)
        c = __crc32cb(c, *p++);
    return c;
}
#endif

static uint32_t crc32c_multmodp(uint32_t a, uint32_t b);

/* The operator that appends len zero bytes to a raw CRC state, as four byte tables. */
static void crc32c_zeros_table(uint32_t zeros[][256], size_t len)
{
    uint32_t op = crc32c_combine_op(len);
    for (uint32_t i = 0; i < 256; i++)
        for (int k = 0; k < 4; k++)
            zeros[k][i] = crc32c_multmodp(op, i << (8 * k));
}

static void crc32c_detect(void)
{
    crc32c_table_init();
    crc32c_zeros_table(zeros_long, LONG_BLOCK);
    crc32c_zeros_table(zeros_short, SHORT_BLOCK);
#if defined(S3C_CRC32C_NO_HW) || !defined(CRC_HW_NAME)
    __atomic_store_n(&hw_state, 0, __ATOMIC_RELEASE);
#elif defined(__x86_64__)
    __builtin_cpu_init();
    __atomic_store_n(&hw_state, __builtin_cpu_supports("sse4.2") ? 1 : 0, __ATOMIC_RELEASE);
#else
    __atomic_store_n(&hw_state, (getauxval(AT_HWCAP) & HWCAP_CRC32) ? 1 : 0, __ATOMIC_RELEASE);
#endif
}

static pthread_once_t detect_once = PTHREAD_ONCE_INIT;

static inline bool crc32c_hw_on(void)
{
    int s = __atomic_load_n(&hw_state, __ATOMIC_ACQUIRE);
    if (__builtin_expect(s < 0, 0)) {
        pthread_once(&detect_once, crc32c_detect);
        s = __atomic_load_n(&hw_state, __ATOMIC_ACQUIRE);
    }
    return s > 0;
}

uint32_t crc32c_update(uint32_t crc, const void *buf, size_t len)
{
    uint32_t c = ~crc;
#if defined(CRC_HW_NAME)
    if (crc32c_hw_on())
        return ~crc32c_hw_run(c, buf, len);
#else
    crc32c_hw_on();
#endif
    return ~crc32c_sw(c, buf, len);
}

bool crc32c_hw(void)
{
    return crc32c_hw_on();
}

const char *crc32c_hw_name(void)
{
#if defined(CRC_HW_NAME)
    return crc32c_hw_on() ? CRC_HW_NAME : "software";
#else
    return "software";
#endif
}

/* Combining (the method of zlib 1.2.12's crc32_combine): appending n bytes multiplies the
 * raw CRC state by x^(8n) modulo P, and x^(8n) is a product of the x^(2^k) mod P held in
 * x2n[], so an operator costs popcount(n) multiplications and applying it one. */
static uint32_t x2n[64]; /* x^(2^k) mod P, reflected */
static pthread_once_t x2n_once = PTHREAD_ONCE_INIT;

/* a * b mod P, both reflected (bit 31 is x^0); branch-free, 32 steps. */
static uint32_t crc32c_multmodp(uint32_t a, uint32_t b)
{
    uint32_t p = 0;
    for (int i = 0; i < 32; i++) {
        p ^= b & (0u - (a >> 31));
        a <<= 1;
        b = (b >> 1) ^ (POLY & (0u - (b & 1u)));
    }
    return p;
}

static void crc32c_x2n_init(void)
{
    uint32_t p = UINT32_C(1) << 30; /* x^1 */
    x2n[0] = p;
    for (int k = 1; k < 64; k++)
        x2n[k] = p = crc32c_multmodp(p, p);
}

uint32_t crc32c_combine_op(uint64_t len_b)
{
    pthread_once(&x2n_once, crc32c_x2n_init);
    uint32_t p = UINT32_C(1) << 31; /* x^0 */
    /* x^(8 len) = x^(len << 3): bit j of len is x^(2^(j + 3)) */
    for (int k = 3; len_b && k < 64; len_b >>= 1, k++)
        if (len_b & 1)
            p = crc32c_multmodp(x2n[k], p);
    return p;
}

uint32_t crc32c_combine_with(uint32_t crc_a, uint32_t crc_b, uint32_t op)
{
    return crc32c_multmodp(op, crc_a) ^ crc_b;
}

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b)
{
    return crc32c_combine_with(crc_a, crc_b, crc32c_combine_op(len_b));
}
