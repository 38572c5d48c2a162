/* CRC-32C (Castagnoli), as in S3's x-amz-checksum-crc32c and the object format. Uses the
 * CPU's CRC32C instruction when it has one (x86-64 SSE4.2, aarch64 ARMv8 CRC extension),
 * chosen at run time, a slicing table otherwise. Never assumes the instruction exists. */
#ifndef S3C_CRC32C_H
#define S3C_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Continues a CRC: crc32c_update(0, buf, n) is the CRC of buf; feeding the pieces of a
 * buffer in order gives the CRC of the whole. Thread-safe. */
uint32_t crc32c_update(uint32_t crc, const void *buf, size_t len);

/* The CRC of A||B from crc(A), crc(B) and len(B), without touching the bytes: O(log len)
 * multiplications in GF(2)[x] mod P, no table larger than 64 words. Thread-safe. */
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b);

/* The same in two steps, for many combines with one length (a log object's records often
 * share theirs): crc32c_combine_op(len_b) is the operator "append len_b bytes"; applying
 * it costs one multiplication. crc32c_combine_with(a, b, crc32c_combine_op(n)) equals
 * crc32c_combine(a, b, n). */
uint32_t crc32c_combine_op(uint64_t len_b);
uint32_t crc32c_combine_with(uint32_t crc_a, uint32_t crc_b, uint32_t op);

/* True when the hardware path is in use (for benchmarks and logs). */
bool crc32c_hw(void);

/* The path in use, for benchmarks, logs and tests: "sse4.2", "armv8-crc" or "software".
 * A static string; never NULL. */
const char *crc32c_hw_name(void);

#endif
