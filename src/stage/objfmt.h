/* The object format and key scheme of docs/format.md (../shared/DESIGN.md): encoding for
 * the persistence thread, decoding and checking for `s3commit verify` and tests.
 * Integers are little-endian; CRCs are CRC-32C. Pure functions, thread-safe. */
#ifndef S3C_OBJFMT_H
#define S3C_OBJFMT_H

#include <stddef.h>
#include <stdint.h>

#define OBJ_MAGIC "S3COMMIT"     /* 8 bytes, no NUL */
#define OBJ_TRAILER_MAGIC "S3CE" /* 4 bytes, no NUL */
#define OBJ_VERSION 1
#define OBJ_HEADER_BYTES 40
#define OBJ_RECORD_HEADER_BYTES 16 /* u32 payload_len, u32 crc32c(payload), u64 seq */
#define OBJ_TRAILER_BYTES 8        /* u32 crc32c(every byte before), "S3CE" */
#define OBJ_KEY_MAX 600

struct obj_header {
    uint16_t version, flags;
    uint32_t count;
    uint64_t first_seq, last_seq, epoch;
};

void obj_header_encode(const struct obj_header *h, unsigned char out[OBJ_HEADER_BYTES]);
void obj_record_header_encode(uint32_t payload_len, uint32_t payload_crc, uint64_t seq,
                              unsigned char out[OBJ_RECORD_HEADER_BYTES]);
void obj_trailer_encode(uint32_t crc_before, unsigned char out[OBJ_TRAILER_BYTES]);

/* "<prefix><epoch, 10 digits>/<first_seq, 20 digits>-<last_seq, 20 digits>.s3c".
 * Returns the length, or -1 if out is too small. */
int obj_key(char *out, size_t outlen, const char *prefix, uint64_t epoch, uint64_t first_seq,
            uint64_t last_seq);

/* Parses a key made by obj_key() with the given prefix. Returns 0 or -1. */
int obj_key_parse(const char *key, const char *prefix, uint64_t *epoch, uint64_t *first_seq,
                  uint64_t *last_seq);

/* Called once per record, in order; a non-zero return stops decoding and is returned. */
typedef int (*obj_record_fn)(void *ctx, uint64_t seq, const void *payload, uint32_t len);

/* Checks a whole object: magic, version, flags, sizes, every record CRC, seqs dense from
 * first_seq to last_seq and matching count, the trailer CRC and magic, no trailing bytes.
 * Returns 0 and fills *h, or -1 with one line naming what is wrong (and its offset) in
 * err. rec may be NULL. */
int obj_decode(const void *buf, size_t len, struct obj_header *h, obj_record_fn rec, void *ctx,
               char *err, size_t errlen);

#endif
