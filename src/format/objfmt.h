/* The object format and key scheme of the log (version 2, docs/format.md): encoding for
 * the persistence thread and the writer protocol, decoding and checking for the open-time
 * recovery, `s3commit verify` and tests. Integers are little-endian; CRCs are CRC-32C.
 * Pure functions, thread-safe. */
#ifndef S3C_OBJFMT_H
#define S3C_OBJFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define OBJ_MAGIC "S3COMMIT"     /* 8 bytes, no NUL */
#define OBJ_TRAILER_MAGIC "S3CE" /* 4 bytes, no NUL */
#define OBJ_VERSION 2
#define OBJ_FLAG_EPOCH_START 0x0001u /* one control record: a writer's fence */
#define OBJ_FLAG_ZSTD 0x0002u        /* the records are one zstd frame (header, trailer plain) */
#define OBJ_FLAGS_KNOWN (OBJ_FLAG_EPOCH_START | OBJ_FLAG_ZSTD)
#define OBJ_INFLATE_MAX (1ull << 30) /* the most a compressed object may expand to */
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

/* "<prefix>log/<first_seq, 20 digits>.s3c": only the first seq, so two writers continuing
 * from the same point collide on the same key. Returns the length, or -1 if out is small. */
int obj_key(char *out, size_t outlen, const char *prefix, uint64_t first_seq);

/* Parses a key made by obj_key() with the given prefix into *first_seq. */
bool obj_key_parse(const char *key, const char *prefix, uint64_t *first_seq);

/* True for a key of the version-1 layout ("<prefix><10 digits>/<20>-<20>.s3c"). */
bool obj_key_is_v1(const char *key, const char *prefix);

/* Decodes and checks the 40-byte header alone (magic, version, flags, count against the
 * seqs, a control object holding exactly one record). Returns 0, or S3C_ECORRUPT with one
 * line in err naming what is wrong; *v1 (when not NULL) tells a version-1 header apart. */
int obj_header_decode(const void *buf, size_t len, struct obj_header *h, bool *v1, char *err,
                      size_t errlen);

/* A compressed object (OBJ_FLAG_ZSTD) as the plain object it stands for: its trailer CRC
 * checked, the frame decompressed, the flag cleared and a new trailer computed, into a
 * malloc'd buffer the caller frees. A plain object is copied as it is. Returns 0, or
 * S3C_ECORRUPT (with one line in err) or S3C_ENOMEM. */
int obj_inflate(const void *buf, size_t len, unsigned char **out, size_t *outlen, char *err,
                size_t errlen);

/* Called once per record, in order; a negative S3C_E* return stops decoding and is
 * returned. */
typedef int (*obj_record_fn)(void *ctx, uint64_t seq, const void *payload, uint32_t len);

/* Checks a whole plain object (a compressed one: obj_inflate first, or S3C_ECORRUPT
 * saying so): the header as obj_header_decode, every record CRC, seqs dense from
 * first_seq to last_seq and matching count, the trailer CRC and magic, no trailing bytes,
 * in one pass over the bytes (record CRCs joined into the object CRC).
 * Returns 0 and fills *h, or S3C_ECORRUPT with one line naming what is wrong (and its
 * offset) in err. rec may be NULL. */
int obj_decode(const void *buf, size_t len, struct obj_header *h, obj_record_fn rec, void *ctx,
               char *err, size_t errlen);

/* ---- checking while the bytes arrive (objstream.c) ---------------------------------- */

/* Payloads this long join the object CRC by crc32c_combine_with (one 32-step multiply)
 * rather than a second CRC over them: below it the second CRC is the cheaper. */
#define OBJ_COMBINE_MIN 512

struct obj_join { /* the "append n bytes" operator of the last payload length joined */
    uint32_t op, len;
    bool set;
};
/* The object CRC `whole` continued over a payload whose own CRC is pcrc: by combining
 * (long payloads) or by running over the bytes (short ones). */
uint32_t obj_crc_join(uint32_t whole, const unsigned char *payload, uint32_t plen,
                      uint32_t pcrc, struct obj_join *j);

/* The object CRC `whole` continued over records back to back in iov[0 .. n-1] (any split
 * into spans), taking each long payload's CRC from its record header instead of reading
 * the payload: for a writer whose records were just made by producers that computed those
 * CRCs from their own bytes (S3 then checks the object CRC against the bytes it got, so a
 * payload that changed on the way is refused, not hidden). Short payloads (under
 * OBJ_COMBINE_MIN) are run over together with their neighbours in one pass, as is a
 * record or header split across spans. Equal to crc32c_update over the bytes whenever
 * every header's CRC is its payload's. */
uint32_t obj_records_crc(uint32_t whole, const struct iovec *iov, int n);

/* Follows a plain object's bytes as they land in a buffer, computing every record's CRC
 * and the object CRC while the bytes are still in cache (a reader's GET: the CRCs then
 * cost next to nothing, where a pass over a whole object read it back from memory). It
 * decides nothing alone: obj_check does, with the full check when anything disagreed. */
struct obj_stream {
    uint64_t fed;     /* bytes fed: the next feed starts here */
    uint64_t at;      /* the next record header (after the last record: the trailer) */
    uint64_t covered; /* whole is the CRC of [0, covered) */
    uint64_t pay_end; /* the open payload ends here (pay_open) */
    uint64_t next_seq; /* the seq the next record must have */
    uint32_t whole, pay, pay_want, left;
    struct obj_join join;
    bool started;   /* the header was read */
    bool pay_open;  /* inside a payload */
    bool off_track; /* not followed (a compressed object, a feed out of order, ...) */
    bool crc_bad;   /* a record CRC disagreed */
};
void obj_stream_init(struct obj_stream *s);
/* The bytes [off, off + n) of the object have landed at base + off (base holds every byte
 * before them too; it may move between calls); piece holds the same n bytes, wherever they
 * are hottest in cache (it may be base + off). */
void obj_stream_feed(struct obj_stream *s, const unsigned char *base, uint64_t off,
                     const unsigned char *piece, size_t n);
/* True when the stream followed the whole of buf (len bytes): as many records as the
 * header counts, seqs dense from its first_seq, each payload within the object and its CRC
 * right, nothing between the last record and the trailer, the trailer's magic and CRC
 * right. (The header's own fields are obj_header_decode's to check.) */
bool obj_stream_verified(const struct obj_stream *s, const void *buf, size_t len);

/* obj_decode without a record callback: when st verified the object, only its header is
 * decoded (the stream checked the rest as the bytes landed); else the full obj_decode. */
int obj_check(const void *buf, size_t len, const struct obj_stream *st, struct obj_header *h,
              char *err, size_t errlen);

#endif
