/* CRC-32C: the CPU's crc32c instruction in three interleaved streams (x86-64 SSE4.2,
 * aarch64 ARMv8 CRC extension), and on x86-64 carry-less multiplication folding for runs
 * of 128 bytes and more (PCLMULQDQ on 128-bit lanes, or VPCLMULQDQ on 256-bit ones: 2.2x
 * the three streams on 4 KiB runs, docs/programs.md "Reader throughput"), picked at run
 * time, with a slicing-by-8 fallback. The hardware functions are compiled for their
 * extension by attribute only, so the file builds with the default -march and never runs
 * an instruction the CPU lacks. Building with -DS3C_CRC32C_NO_HW forces the software path
 * (scripts/cross-aarch64.sh tests it so); S3C_CRC32C_PATH=software|sse4.2|pclmul names a
 * slower path to use than the CPU's best (tests run each one). */
#include "common/crc32c.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
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
#ifdef CRC_HW_NAME
#define CRC_HW_NAME_OR_SW CRC_HW_NAME
#else
#define CRC_HW_NAME_OR_SW "software"
#endif

static uint32_t table[8][256];
/* The path in use: -1 unknown, then one of these. */
enum { CRC_SW = 0, CRC_HW3, CRC_PCLMUL, CRC_VPCLMUL };
static int hw_state = -1;

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
            table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
            table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
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

/* Folding: the run is cut into lanes of 16 (or 32) bytes, four of them 64 (128) bytes
 * apart; each round multiplies every lane by x^(distance) mod P, carry-less, in two 64-bit
 * halves, and adds the next 64 (128) bytes. What is left is one 128-bit value with the same
 * CRC contribution as everything folded so far, so the crc32 instruction finishes it as 16
 * message bytes (no Barrett reduction). The constants are x^(8n +- 32) mod P, reflected,
 * shifted left one bit (reflected products come out one bit short), made at detect time. */
static uint64_t fold_k512[2], fold_k128[2], fold_k1024[2], fold_k256[2];

static void crc32c_fold_consts(uint64_t k[2], unsigned bytes)
{
    k[0] = (uint64_t)crc32c_combine_op(bytes + 4) << 1; /* x^(8 bytes + 32) */
    k[1] = (uint64_t)crc32c_combine_op(bytes - 4) << 1; /* x^(8 bytes - 32) */
}

/* x * x^(d + 64) + x * x^d for the lane's two halves, plus y. */
__attribute__((target("sse4.2,pclmul"))) static inline __m128i crc32c_fold16(__m128i x, __m128i k,
                                                                             __m128i y)
{
    return _mm_xor_si128(
        _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), y);
}

__attribute__((target("sse4.2,pclmul"))) static inline uint64_t crc32c_fold_finish(__m128i x)
{
    uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(x));
    return _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(x, 1));
}

/* n a multiple of 64, at least 64: the raw CRC after the run from raw state c. */
__attribute__((target("sse4.2,pclmul"))) static uint32_t
crc32c_pclmul(uint32_t c, const unsigned char *p, size_t n)
{
    const __m128i *v = (const __m128i *)(const void *)p;
    __m128i x0 = _mm_xor_si128(_mm_loadu_si128(v), _mm_cvtsi32_si128((int)c));
    __m128i x1 = _mm_loadu_si128(v + 1), x2 = _mm_loadu_si128(v + 2), x3 = _mm_loadu_si128(v + 3);
    __m128i k = _mm_set_epi64x((long long)fold_k512[1], (long long)fold_k512[0]);
    for (v += 4, n -= 64; n >= 64; v += 4, n -= 64) {
        x0 = crc32c_fold16(x0, k, _mm_loadu_si128(v));
        x1 = crc32c_fold16(x1, k, _mm_loadu_si128(v + 1));
        x2 = crc32c_fold16(x2, k, _mm_loadu_si128(v + 2));
        x3 = crc32c_fold16(x3, k, _mm_loadu_si128(v + 3));
    }
    k = _mm_set_epi64x((long long)fold_k128[1], (long long)fold_k128[0]);
    x1 = crc32c_fold16(x0, k, x1);
    x2 = crc32c_fold16(x1, k, x2);
    x3 = crc32c_fold16(x2, k, x3);
    return (uint32_t)crc32c_fold_finish(x3);
}

__attribute__((target("sse4.2,pclmul,avx2,vpclmulqdq"))) static inline __m256i
crc32c_fold32(__m256i x, __m256i k, __m256i y)
{
    return _mm256_xor_si256(_mm256_xor_si256(_mm256_clmulepi64_epi128(x, k, 0x00),
                                             _mm256_clmulepi64_epi128(x, k, 0x11)),
                            y);
}

/* The same on 256-bit lanes: n a multiple of 128, at least 128. */
__attribute__((target("sse4.2,pclmul,avx2,vpclmulqdq"))) static uint32_t
crc32c_vpclmul(uint32_t c, const unsigned char *p, size_t n)
{
    const __m256i *v = (const __m256i *)(const void *)p;
    __m256i x0 =
        _mm256_xor_si256(_mm256_loadu_si256(v), _mm256_zextsi128_si256(_mm_cvtsi32_si128((int)c)));
    __m256i x1 = _mm256_loadu_si256(v + 1), x2 = _mm256_loadu_si256(v + 2);
    __m256i x3 = _mm256_loadu_si256(v + 3);
    __m256i k = _mm256_set_epi64x((long long)fold_k1024[1], (long long)fold_k1024[0],
                                  (long long)fold_k1024[1], (long long)fold_k1024[0]);
    for (v += 4, n -= 128; n >= 128; v += 4, n -= 128) {
        x0 = crc32c_fold32(x0, k, _mm256_loadu_si256(v));
        x1 = crc32c_fold32(x1, k, _mm256_loadu_si256(v + 1));
        x2 = crc32c_fold32(x2, k, _mm256_loadu_si256(v + 2));
        x3 = crc32c_fold32(x3, k, _mm256_loadu_si256(v + 3));
    }
    k = _mm256_set_epi64x((long long)fold_k256[1], (long long)fold_k256[0], (long long)fold_k256[1],
                          (long long)fold_k256[0]);
    x1 = crc32c_fold32(x0, k, x1);
    x2 = crc32c_fold32(x1, k, x2);
    x3 = crc32c_fold32(x2, k, x3);
    __m128i k128 = _mm_set_epi64x((long long)fold_k128[1], (long long)fold_k128[0]);
    __m128i lo = _mm256_castsi256_si128(x3), hi = _mm256_extracti128_si256(x3, 1);
    return (uint32_t)crc32c_fold_finish(crc32c_fold16(lo, k128, hi));
}

/* The folding path for the whole blocks of a run, the three streams for the rest. */
static uint32_t crc32c_fold_run(int path, uint32_t c, const unsigned char *p, size_t n)
{
    size_t m = n & ~(size_t)127;
    if (m) {
        c = path == CRC_VPCLMUL ? crc32c_vpclmul(c, p, m) : crc32c_pclmul(c, p, m);
        p += m;
        n -= m;
    }
    return n ? crc32c_hw_run(c, p, n) : c;
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

/* S3C_CRC32C_PATH: a path slower than the CPU's best, for tests (never a faster one). */
static int crc32c_path_cap(void)
{
    static const char *const names[] = {"software", CRC_HW_NAME_OR_SW, "pclmul", "vpclmulqdq"};
    const char *e = getenv("S3C_CRC32C_PATH");
    for (int i = 0; e && i < 4; i++)
        if (strcmp(e, names[i]) == 0)
            return i;
    return CRC_VPCLMUL;
}

static void crc32c_detect(void)
{
    int state = CRC_SW;
    crc32c_table_init();
    crc32c_zeros_table(zeros_long, LONG_BLOCK);
    crc32c_zeros_table(zeros_short, SHORT_BLOCK);
#if defined(S3C_CRC32C_NO_HW) || !defined(CRC_HW_NAME)
    state = CRC_SW;
#elif defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2"))
        state = CRC_HW3;
    if (state == CRC_HW3 && __builtin_cpu_supports("pclmul")) {
        crc32c_fold_consts(fold_k512, 64);
        crc32c_fold_consts(fold_k128, 16);
        crc32c_fold_consts(fold_k1024, 128);
        crc32c_fold_consts(fold_k256, 32);
        state = CRC_PCLMUL;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("vpclmulqdq"))
            state = CRC_VPCLMUL;
    }
#else
    state = (getauxval(AT_HWCAP) & HWCAP_CRC32) ? CRC_HW3 : CRC_SW;
#endif
    int cap = crc32c_path_cap();
    __atomic_store_n(&hw_state, state < cap ? state : cap, __ATOMIC_RELEASE);
}

static pthread_once_t detect_once = PTHREAD_ONCE_INIT;

static inline int crc32c_path(void)
{
    int s = __atomic_load_n(&hw_state, __ATOMIC_ACQUIRE);
    if (__builtin_expect(s < 0, 0)) {
        pthread_once(&detect_once, crc32c_detect);
        s = __atomic_load_n(&hw_state, __ATOMIC_ACQUIRE);
    }
    return s;
}

static inline bool crc32c_hw_on(void)
{
    return crc32c_path() > CRC_SW;
}

uint32_t crc32c_update(uint32_t crc, const void *buf, size_t len)
{
    uint32_t c = ~crc;
    int path = crc32c_path();
#if defined(__x86_64__)
    if (path >= CRC_PCLMUL && len >= 256)
        return ~crc32c_fold_run(path, c, buf, len);
#endif
#if defined(CRC_HW_NAME)
    if (path > CRC_SW)
        return ~crc32c_hw_run(c, buf, len);
#else
    (void)path;
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
    switch (crc32c_path()) {
    case CRC_VPCLMUL:
        return "vpclmulqdq";
    case CRC_PCLMUL:
        return "pclmul";
    case CRC_HW3:
        return CRC_HW_NAME;
    default:
        return "software";
    }
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

#if defined(__x86_64__)
/* a * b mod P with one carry-less multiply: the 63-bit reflected product, shifted to 64
 * bits, is L * x^32 + H for its low and high words, and the crc32 instruction gives
 * L * x^32 mod P. (The loop above takes ~32 dependent steps; a reader joins every
 * record's CRC into its object's with this.) */
__attribute__((target("sse4.2,pclmul"))) static uint32_t crc32c_multmodp_clmul(uint32_t a,
                                                                               uint32_t b)
{
    __m128i p = _mm_clmulepi64_si128(_mm_cvtsi32_si128((int)a), _mm_cvtsi32_si128((int)b), 0);
    uint64_t v = (uint64_t)_mm_cvtsi128_si64(p) << 1;
    return _mm_crc32_u32(0, (uint32_t)v) ^ (uint32_t)(v >> 32);
}
#endif

uint32_t crc32c_combine_with(uint32_t crc_a, uint32_t crc_b, uint32_t op)
{
#if defined(__x86_64__)
    if (crc32c_path() >= CRC_PCLMUL)
        return crc32c_multmodp_clmul(op, crc_a) ^ crc_b;
#endif
    return crc32c_multmodp(op, crc_a) ^ crc_b;
}

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b)
{
    return crc32c_combine_with(crc_a, crc_b, crc32c_combine_op(len_b));
}
