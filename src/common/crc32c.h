/* CRC-32C (Castagnoli), as in S3's x-amz-checksum-crc32c and the object format. Uses the
 * CPU's CRC32 instruction (SSE4.2) when it has one, a slicing table otherwise. */
#ifndef S3C_CRC32C_H
#define S3C_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a CRC: crc32c_update(0, buf, n) is the CRC of buf; feeding the pieces of a
 * buffer in order gives the CRC of the whole. Thread-safe. */
uint32_t crc32c_update(uint32_t crc, const void *buf, size_t len);

/* The CRC of A||B from crc(A), crc(B) and len(B), without touching the bytes. */
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b);

/* True when the hardware path is in use (for benchmarks and logs). */
int crc32c_hw(void);

#endif
