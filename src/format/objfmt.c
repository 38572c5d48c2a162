/* The object format and keys (objfmt.h). Decoding trusts nothing in the object: every
 * length is checked against what remains before it is used. */
#include "format/objfmt.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <stdlib.h>
#include <zstd.h>

#include "common/crc32c.h"
#include "s3commit.h"

static void obj_put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

/* Little-endian stores as one store each: obj_record_header_encode runs once per commit on
 * the producer's path, where the byte loops (not merged by the compiler at -O2) were 4% of
 * a 128-byte peak's samples. */
static void obj_put32(unsigned char *p, uint32_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    memcpy(p, &v, 4);
}

static void obj_put64(unsigned char *p, uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

static uint16_t obj_get16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t obj_get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t obj_get64(const unsigned char *p)
{
    return (uint64_t)obj_get32(p) | (uint64_t)obj_get32(p + 4) << 32;
}

void obj_header_encode(const struct obj_header *h, unsigned char out[OBJ_HEADER_BYTES])
{
    memcpy(out, OBJ_MAGIC, 8);
    obj_put16(out + 8, h->version);
    obj_put16(out + 10, h->flags);
    obj_put32(out + 12, h->count);
    obj_put64(out + 16, h->first_seq);
    obj_put64(out + 24, h->last_seq);
    obj_put64(out + 32, h->epoch);
}

void obj_record_header_encode(uint32_t payload_len, uint32_t payload_crc, uint64_t seq,
                              unsigned char out[OBJ_RECORD_HEADER_BYTES])
{
    obj_put32(out, payload_len);
    obj_put32(out + 4, payload_crc);
    obj_put64(out + 8, seq);
}

void obj_trailer_encode(uint32_t crc_before, unsigned char out[OBJ_TRAILER_BYTES])
{
    obj_put32(out, crc_before);
    memcpy(out + 4, OBJ_TRAILER_MAGIC, 4);
}

int obj_key(char *out, size_t outlen, const char *prefix, uint64_t first_seq)
{
    int n = snprintf(out, outlen, "%slog/%020" PRIu64 ".s3c", prefix, first_seq);
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

static bool obj_digits(const char *s, int n, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *v = x;
    return true;
}

bool obj_key_parse(const char *key, const char *prefix, uint64_t *first_seq)
{
    size_t pl = strlen(prefix);
    if (strncmp(key, prefix, pl) != 0)
        return false;
    const char *s = key + pl;
    /* "log/" 20 digits ".s3c" */
    if (strlen(s) != 4 + 20 + 4 || memcmp(s, "log/", 4) != 0 || strcmp(s + 24, ".s3c") != 0)
        return false;
    return obj_digits(s + 4, 20, first_seq) && *first_seq > 0;
}

bool obj_key_is_v1(const char *key, const char *prefix)
{
    size_t pl = strlen(prefix);
    uint64_t v;
    if (strncmp(key, prefix, pl) != 0)
        return false;
    const char *s = key + pl;
    return strlen(s) == 10 + 1 + 20 + 1 + 20 + 4 && s[10] == '/' && s[31] == '-' &&
           strcmp(s + 52, ".s3c") == 0 && obj_digits(s, 10, &v) && obj_digits(s + 11, 20, &v) &&
           obj_digits(s + 32, 20, &v);
}

static int obj_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return S3C_ECORRUPT;
}

int obj_header_decode(const void *buf, size_t len, struct obj_header *h, bool *v1, char *err,
                      size_t errlen)
{
    const unsigned char *p = buf;
    if (v1)
        *v1 = false;
    if (len < OBJ_HEADER_BYTES)
        return obj_fail(err, errlen, "object is %zu bytes, shorter than its header (%d)", len,
                        OBJ_HEADER_BYTES);
    if (memcmp(p, OBJ_MAGIC, 8) != 0)
        return obj_fail(err, errlen, "bad magic at offset 0 (want \"S3COMMIT\")");
    h->version = obj_get16(p + 8);
    h->flags = obj_get16(p + 10);
    h->count = obj_get32(p + 12);
    h->first_seq = obj_get64(p + 16);
    h->last_seq = obj_get64(p + 24);
    h->epoch = obj_get64(p + 32);
    if (h->version == 1 && v1)
        *v1 = true;
    if (h->version != OBJ_VERSION)
        return obj_fail(err, errlen, "version %u at offset 8 (want %d)", h->version, OBJ_VERSION);
    if (h->flags & ~OBJ_FLAGS_KNOWN)
        return obj_fail(err, errlen, "unknown flags 0x%x at offset 10 (known: 0x%x)", h->flags,
                        OBJ_FLAGS_KNOWN);
    if (h->count == 0 || h->first_seq == 0 || h->last_seq < h->first_seq ||
        h->last_seq - h->first_seq + 1 != h->count)
        return obj_fail(err, errlen,
                        "header says count %u for seqs %" PRIu64 "..%" PRIu64 ", which disagree",
                        h->count, h->first_seq, h->last_seq);
    if ((h->flags & OBJ_FLAG_EPOCH_START) && h->count != 1)
        return obj_fail(err, errlen, "control object (EPOCH_START) holds %u records (want 1)",
                        h->count);
    if (h->epoch == 0)
        return obj_fail(err, errlen, "epoch 0 at offset 32 (epochs start at 1)");
    return 0;
}

int obj_decode(const void *buf, size_t len, struct obj_header *h, obj_record_fn rec, void *ctx,
               char *err, size_t errlen)
{
    const unsigned char *p = buf;
    size_t off = OBJ_HEADER_BYTES;

    if (len < OBJ_HEADER_BYTES + OBJ_TRAILER_BYTES)
        return obj_fail(err, errlen, "object is %zu bytes, shorter than header and trailer (%d)",
                        len, OBJ_HEADER_BYTES + OBJ_TRAILER_BYTES);
    int rc = obj_header_decode(buf, len, h, NULL, err, errlen);
    if (rc < 0)
        return rc;
    if (h->flags & OBJ_FLAG_ZSTD)
        return obj_fail(err, errlen, "compressed object (flag 0x%x): inflate it first",
                        OBJ_FLAG_ZSTD);
    size_t body_end = len - OBJ_TRAILER_BYTES;
    uint64_t want = h->first_seq;
    /* One pass over the bytes: the object CRC runs over the headers, and over each payload
     * either directly (short ones, hot in cache) or by joining the payload's own CRC. */
    uint32_t whole = crc32c_update(0, p, OBJ_HEADER_BYTES);
    struct obj_join join = {0};
    for (uint32_t i = 0; i < h->count; i++) {
        if (body_end - off < OBJ_RECORD_HEADER_BYTES)
            return obj_fail(err, errlen, "record %u header truncated at offset %zu", i, off);
        uint32_t plen = obj_get32(p + off), pcrc = obj_get32(p + off + 4);
        uint64_t seq = obj_get64(p + off + 8);
        off += OBJ_RECORD_HEADER_BYTES;
        if (seq != want)
            return obj_fail(err, errlen,
                            "record %u at offset %zu has seq %" PRIu64 " (want %" PRIu64 ")", i,
                            off - OBJ_RECORD_HEADER_BYTES, seq, want);
        if (plen > body_end - off)
            return obj_fail(err, errlen,
                            "record seq %" PRIu64 " payload of %u bytes runs past the "
                            "trailer at offset %zu",
                            seq, plen, off);
        whole = crc32c_update(whole, p + off - OBJ_RECORD_HEADER_BYTES, OBJ_RECORD_HEADER_BYTES);
        uint32_t got = crc32c_update(0, p + off, plen);
        if (got != pcrc)
            return obj_fail(err, errlen,
                            "record seq %" PRIu64 " payload CRC mismatch at offset %zu", seq, off);
        whole = obj_crc_join(whole, p + off, plen, got, &join);
        if (rec && (rc = rec(ctx, seq, p + off, plen)) != 0)
            return rc;
        off += plen;
        want++;
    }
    if (off != body_end)
        return obj_fail(err, errlen, "%zu unexpected bytes after the last record at offset %zu",
                        body_end - off, off);
    if (memcmp(p + body_end + 4, OBJ_TRAILER_MAGIC, 4) != 0)
        return obj_fail(err, errlen, "bad trailer magic at offset %zu (want \"S3CE\")",
                        body_end + 4);
    if (whole != obj_get32(p + body_end))
        return obj_fail(err, errlen, "object CRC mismatch (trailer at offset %zu)", body_end);
    return 0;
}

int obj_check(const void *buf, size_t len, const struct obj_stream *st, struct obj_header *h,
              char *err, size_t errlen)
{
    if (st && obj_stream_verified(st, buf, len)) {
        int rc = obj_header_decode(buf, len, h, NULL, err, errlen);
        if (rc == 0 && (h->flags & OBJ_FLAG_ZSTD))
            rc = obj_decode(buf, len, h, NULL, NULL, err, errlen); /* says why */
        return rc;
    }
    return obj_decode(buf, len, h, NULL, NULL, err, errlen);
}

uint32_t obj_crc_join(uint32_t whole, const unsigned char *payload, uint32_t plen,
                      uint32_t pcrc, struct obj_join *j)
{
    if (plen < OBJ_COMBINE_MIN)
        return crc32c_update(whole, payload, plen);
    if (plen != j->len || !j->set) {
        j->op = crc32c_combine_op(plen);
        j->len = plen;
        j->set = true;
    }
    return crc32c_combine_with(whole, pcrc, j->op);
}

uint32_t obj_records_crc(uint32_t whole, const struct iovec *iov, int n)
{
    struct obj_join j = {0};
    uint64_t tail = 0;  /* bytes of a payload begun in an earlier span: run over */
    bool plain = false; /* a header split across spans: everything after it run over */
    for (int i = 0; i < n; i++) {
        const unsigned char *p = iov[i].iov_base;
        size_t len = iov[i].iov_len, off = 0, run = 0; /* [run, off) is still to run over */
        if (!plain && tail) {
            off = tail < len ? (size_t)tail : len;
            tail -= off;
        }
        while (!plain && off < len) {
            if (len - off < OBJ_RECORD_HEADER_BYTES) {
                plain = true;
                break;
            }
            uint32_t plen = obj_get32(p + off), pcrc = obj_get32(p + off + 4);
            size_t pay = off + OBJ_RECORD_HEADER_BYTES;
            if (plen > len - pay) {
                tail = plen - (len - pay);
                break;
            }
            off = pay + plen;
            if (plen < OBJ_COMBINE_MIN)
                continue; /* short records stay in the run: one pass over many of them */
            whole = crc32c_update(whole, p + run, pay - run);
            whole = obj_crc_join(whole, p + pay, plen, pcrc, &j);
            run = off;
        }
        whole = crc32c_update(whole, p + run, len - run);
    }
    return whole;
}

int obj_inflate(const void *buf, size_t len, unsigned char **out, size_t *outlen, char *err,
                size_t errlen)
{
    const unsigned char *p = buf;
    struct obj_header h;
    int rc = obj_header_decode(buf, len, &h, NULL, err, errlen);
    *out = NULL;
    *outlen = 0;
    if (rc < 0)
        return rc;
    if (len < OBJ_HEADER_BYTES + OBJ_TRAILER_BYTES)
        return obj_fail(err, errlen, "object is %zu bytes, shorter than header and trailer (%d)",
                        len, OBJ_HEADER_BYTES + OBJ_TRAILER_BYTES);
    size_t body_end = len - OBJ_TRAILER_BYTES;
    if (!(h.flags & OBJ_FLAG_ZSTD)) {
        *out = malloc(len ? len : 1);
        if (!*out)
            return S3C_ENOMEM;
        memcpy(*out, buf, len);
        *outlen = len;
        return 0;
    }
    if (memcmp(p + body_end + 4, OBJ_TRAILER_MAGIC, 4) != 0)
        return obj_fail(err, errlen, "bad trailer magic at offset %zu (want \"S3CE\")",
                        body_end + 4);
    if (crc32c_update(0, p, body_end) != obj_get32(p + body_end))
        return obj_fail(err, errlen, "object CRC mismatch (trailer at offset %zu)", body_end);
    const void *frame = p + OBJ_HEADER_BYTES;
    size_t flen = body_end - OBJ_HEADER_BYTES;
    unsigned long long raw = ZSTD_getFrameContentSize(frame, flen);
    if (raw == ZSTD_CONTENTSIZE_ERROR || raw == ZSTD_CONTENTSIZE_UNKNOWN || raw > OBJ_INFLATE_MAX)
        return obj_fail(err, errlen, "the zstd frame at offset %d has no valid content size",
                        OBJ_HEADER_BYTES);
    size_t total = OBJ_HEADER_BYTES + (size_t)raw + OBJ_TRAILER_BYTES;
    unsigned char *o = malloc(total);
    if (!o)
        return S3C_ENOMEM;
    size_t got = ZSTD_decompress(o + OBJ_HEADER_BYTES, (size_t)raw, frame, flen);
    if (ZSTD_isError(got) || got != raw) {
        free(o);
        return obj_fail(err, errlen, "the zstd frame at offset %d does not decompress: %s",
                        OBJ_HEADER_BYTES, ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short");
    }
    h.flags &= (uint16_t)~OBJ_FLAG_ZSTD;
    obj_header_encode(&h, o);
    obj_trailer_encode(crc32c_update(0, o, OBJ_HEADER_BYTES + (size_t)raw),
                       o + OBJ_HEADER_BYTES + raw);
    *out = o;
    *outlen = total;
    return 0;
}
