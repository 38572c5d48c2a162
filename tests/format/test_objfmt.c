/* The log format (version 2): exact bytes, round trip, every corruption the decoder must
 * catch, the control-record flag, keys, version-1 keys told apart, and the manifest. */
#include <stdlib.h>
#include <zstd.h>

#include "common/crc32c.h"
#include "format/manifest.h"
#include "format/objfmt.h"
#include "s3commit.h"
#include "test.h"

static size_t build(unsigned char *out, uint64_t first, int n, const char **payloads)
{
    struct obj_header h = {.version = OBJ_VERSION,
                           .count = (uint32_t)n,
                           .first_seq = first,
                           .last_seq = first + (uint64_t)n - 1,
                           .epoch = 1};
    size_t off = OBJ_HEADER_BYTES;
    obj_header_encode(&h, out);
    for (int i = 0; i < n; i++) {
        uint32_t len = (uint32_t)strlen(payloads[i]);
        obj_record_header_encode(len, crc32c_update(0, payloads[i], len), first + (uint64_t)i,
                                 out + off);
        memcpy(out + off + OBJ_RECORD_HEADER_BYTES, payloads[i], len);
        off += OBJ_RECORD_HEADER_BYTES + len;
    }
    obj_trailer_encode(crc32c_update(0, out, off), out + off);
    return off + OBJ_TRAILER_BYTES;
}

static void exact_bytes(void)
{
    unsigned char buf[256];
    const char *p[] = {"ab"};
    size_t n = build(buf, 7, 1, p);
    ASSERT_EQ(n, 40 + 16 + 2 + 8);
    const unsigned char want_hdr[40] = {'S', '3', 'C', 'O', 'M', 'M', 'I', 'T', 2, 0, 0, 0, 1, 0,
                                        0,   0,   7,   0,   0,   0,   0,   0,   0, 0, 7, 0, 0, 0,
                                        0,   0,   0,   0,   1,   0,   0,   0,   0, 0, 0, 0};
    ASSERT_MEM_EQ(buf, want_hdr, 40);
    ASSERT_EQ(buf[40], 2); /* payload_len LE */
    ASSERT_EQ(buf[48], 7); /* seq LE */
    ASSERT_MEM_EQ(buf + 56, "ab", 2);
    ASSERT_MEM_EQ(buf + n - 4, "S3CE", 4);
    uint32_t crc = crc32c_update(0, buf, n - 8);
    ASSERT_EQ(buf[n - 8], crc & 0xff);
}

struct seen {
    uint64_t seqs[8];
    int n;
};

static int on_rec(void *ctx, uint64_t seq, const void *payload, uint32_t len)
{
    struct seen *s = ctx;
    (void)payload;
    (void)len;
    s->seqs[s->n++] = seq;
    return 0;
}

static void round_trip_and_corruption(void)
{
    unsigned char buf[512], bad[512];
    const char *p[] = {"first", "", "third commit"};
    size_t n = build(buf, 100, 3, p);
    struct obj_header h;
    struct seen s = {0};
    char err[256];
    ASSERT_EQ(obj_decode(buf, n, &h, on_rec, &s, err, sizeof(err)), 0);
    ASSERT_EQ(h.count, 3);
    ASSERT_UEQ(h.first_seq, 100);
    ASSERT_UEQ(h.last_seq, 102);
    ASSERT_EQ(s.n, 3);
    ASSERT_UEQ(s.seqs[2], 102);

    /* Every single flipped byte is caught. */
    for (size_t i = 0; i < n; i++) {
        memcpy(bad, buf, n);
        bad[i] ^= 0x01;
        err[0] = 0;
        if (obj_decode(bad, n, &h, NULL, NULL, err, sizeof(err)) == 0)
            TEST_FAIL_("flipping byte %zu went unnoticed", i);
        ASSERT(err[0] != 0);
    }
    /* Truncation anywhere and trailing bytes are caught. */
    for (size_t cut = 0; cut < n; cut++)
        ASSERT_EQ(obj_decode(buf, cut, &h, NULL, NULL, err, sizeof(err)), S3C_ECORRUPT);
    memcpy(bad, buf, n);
    bad[n] = 0;
    ASSERT_EQ(obj_decode(bad, n + 1, &h, NULL, NULL, err, sizeof(err)), S3C_ECORRUPT);
}

/* Records long enough that obj_decode joins their CRCs into the object CRC (and short
 * ones that it runs over directly), equal lengths reusing one operator: the object
 * decodes, and a payload changed together with its record CRC (every record CRC then
 * right) is still caught by the object CRC, in each record. */
/* An object with payloads of the given lengths (seqs from 50, epoch 3); *total its size,
 * pay[i] where payload i starts. malloc'd. */
static unsigned char *build_lens(const uint32_t *lens, int n, size_t *total, size_t *pay)
{
    size_t off = OBJ_HEADER_BYTES;
    *total = OBJ_HEADER_BYTES + OBJ_TRAILER_BYTES;
    for (int i = 0; i < n; i++)
        *total += OBJ_RECORD_HEADER_BYTES + lens[i];
    unsigned char *buf = malloc(*total);
    ASSERT(buf != NULL);
    struct obj_header h = {.version = OBJ_VERSION,
                           .count = (uint32_t)n,
                           .first_seq = 50,
                           .last_seq = 50 + (uint64_t)n - 1,
                           .epoch = 3};
    obj_header_encode(&h, buf);
    for (int i = 0; i < n; i++) {
        unsigned char *q = buf + off + OBJ_RECORD_HEADER_BYTES;
        for (uint32_t k = 0; k < lens[i]; k++)
            q[k] = (unsigned char)(k * 31 + (uint32_t)i * 7);
        obj_record_header_encode(lens[i], crc32c_update(0, q, lens[i]), 50 + (uint64_t)i,
                                 buf + off);
        pay[i] = off + OBJ_RECORD_HEADER_BYTES;
        off += OBJ_RECORD_HEADER_BYTES + lens[i];
    }
    obj_trailer_encode(crc32c_update(0, buf, off), buf + off);
    return buf;
}

static const uint32_t long_lens[] = {0, 1, 511, 512, 513, 4096, 4096, 4096, 70001, 3, 4096, 9000};
#define NLONG ((int)(sizeof(long_lens) / sizeof(long_lens[0])))

static void long_records_joined(void)
{
    const uint32_t *lens = long_lens;
    int n = NLONG;
    size_t total, pay[NLONG];
    unsigned char *buf = build_lens(lens, n, &total, pay), *bad = malloc(total);
    ASSERT(bad != NULL);
    struct obj_header got;
    char err[256];
    ASSERT_EQ(obj_decode(buf, total, &got, NULL, NULL, err, sizeof(err)), 0);
    ASSERT_UEQ(got.last_seq, 50 + (uint64_t)n - 1);
    for (int i = 0; i < n; i++) {
        if (lens[i] == 0)
            continue;
        memcpy(bad, buf, total);
        bad[pay[i] + lens[i] / 2] ^= 0x40;
        obj_record_header_encode(lens[i], crc32c_update(0, bad + pay[i], lens[i]), 50 + (uint64_t)i,
                                 bad + pay[i] - OBJ_RECORD_HEADER_BYTES);
        err[0] = 0;
        if (obj_decode(bad, total, &got, NULL, NULL, err, sizeof(err)) != S3C_ECORRUPT)
            TEST_FAIL_("record %d (%u bytes) changed with its CRC went unnoticed", i, lens[i]);
        ASSERT(strstr(err, "object CRC mismatch") != NULL);
    }
    /* the trailer alone wrong */
    memcpy(bad, buf, total);
    bad[total - OBJ_TRAILER_BYTES] ^= 1;
    ASSERT_EQ(obj_decode(bad, total, &got, NULL, NULL, err, sizeof(err)), S3C_ECORRUPT);
    free(buf);
    free(bad);
}

/* Feeds buf[0, upto) to a stream in pieces of 1..max bytes (piece: a copy elsewhere, as
 * libcurl's buffer is), skipping the piece at skip_at when that is not SIZE_MAX. */
static void feed(struct obj_stream *st, const unsigned char *buf, size_t upto, size_t max,
                 size_t skip_at)
{
    static unsigned char piece[70000];
    unsigned seed = 7;
    obj_stream_init(st);
    for (size_t off = 0, k; off < upto; off += k) {
        seed = seed * 1103515245u + 12345u;
        k = 1 + (seed >> 8) % max;
        k = k < upto - off ? k : upto - off;
        if (off <= skip_at && skip_at < off + k)
            continue;
        memcpy(piece, buf + off, k);
        obj_stream_feed(st, buf, off, piece, k);
    }
}

/* obj_stream and obj_check: an object fed in pieces of any size is verified and checks
 * without a second CRC pass; anything wrong or not followed leaves it unverified, and
 * obj_check then names the fault as obj_decode does. */
static void stream_checks(void)
{
    size_t total, pay[NLONG];
    unsigned char *buf = build_lens(long_lens, NLONG, &total, pay), *bad = malloc(total);
    struct obj_stream st;
    struct obj_header h;
    char err[256];
    ASSERT(bad != NULL);
    size_t maxes[] = {1, 3, 16, 17, 700, 5000, 70000};
    for (size_t i = 0; i < sizeof(maxes) / sizeof(maxes[0]); i++) {
        feed(&st, buf, total, maxes[i], SIZE_MAX);
        if (!obj_stream_verified(&st, buf, total))
            TEST_FAIL_("pieces of up to %zu bytes: not verified", maxes[i]);
        ASSERT_EQ(obj_check(buf, total, &st, &h, err, sizeof(err)), 0);
        ASSERT_UEQ(h.last_seq, 50 + NLONG - 1);
    }
    /* A payload changed with its record CRC: the trailer CRC disagrees. */
    memcpy(bad, buf, total);
    bad[pay[8] + 5] ^= 1;
    obj_record_header_encode(long_lens[8], crc32c_update(0, bad + pay[8], long_lens[8]), 58,
                             bad + pay[8] - OBJ_RECORD_HEADER_BYTES);
    feed(&st, bad, total, 5000, SIZE_MAX);
    ASSERT(!obj_stream_verified(&st, bad, total));
    ASSERT_EQ(obj_check(bad, total, &st, &h, err, sizeof(err)), S3C_ECORRUPT);
    ASSERT(strstr(err, "object CRC mismatch") != NULL);
    /* A payload changed alone: its record CRC disagrees, and obj_check names the record. */
    memcpy(bad, buf, total);
    bad[pay[5] + 100] ^= 1;
    feed(&st, bad, total, 700, SIZE_MAX);
    ASSERT(!obj_stream_verified(&st, bad, total));
    ASSERT_EQ(obj_check(bad, total, &st, &h, err, sizeof(err)), S3C_ECORRUPT);
    ASSERT(strstr(err, "record seq 55 payload CRC mismatch") != NULL);
    /* A payload changed with the trailer CRC made over the changed bytes: only its record
     * CRC disagrees. */
    memcpy(bad, buf, total);
    bad[pay[6] + 1] ^= 0x10;
    obj_trailer_encode(crc32c_update(0, bad, total - OBJ_TRAILER_BYTES),
                       bad + total - OBJ_TRAILER_BYTES);
    feed(&st, bad, total, 3, SIZE_MAX);
    ASSERT(!obj_stream_verified(&st, bad, total));
    ASSERT_EQ(obj_check(bad, total, &st, &h, err, sizeof(err)), S3C_ECORRUPT);
    ASSERT(strstr(err, "record seq 56 payload CRC mismatch") != NULL);
    /* Structure the stream follows (obj_check then only decodes the header): a seq out of
     * order, bytes between the last record and the trailer, a bad trailer magic, each with
     * a trailer CRC that matches, are never verified, and obj_check names them. */
    memcpy(bad, buf, total);
    bad[pay[3] - 8] ^= 2; /* record 3's seq */
    obj_trailer_encode(crc32c_update(0, bad, total - OBJ_TRAILER_BYTES),
                       bad + total - OBJ_TRAILER_BYTES);
    feed(&st, bad, total, 700, SIZE_MAX);
    ASSERT(!obj_stream_verified(&st, bad, total));
    ASSERT_EQ(obj_check(bad, total, &st, &h, err, sizeof(err)), S3C_ECORRUPT);
    ASSERT(strstr(err, "record 3 at offset") != NULL);
    unsigned char *longer = malloc(total + 4);
    ASSERT(longer != NULL);
    memcpy(longer, buf, total - OBJ_TRAILER_BYTES);
    memcpy(longer + total - OBJ_TRAILER_BYTES, "junk", 4);
    obj_trailer_encode(crc32c_update(0, longer, total - OBJ_TRAILER_BYTES), /* records only */
                       longer + total - OBJ_TRAILER_BYTES + 4);
    feed(&st, longer, total + 4, 700, SIZE_MAX);
    ASSERT(!obj_stream_verified(&st, longer, total + 4));
    ASSERT_EQ(obj_check(longer, total + 4, &st, &h, err, sizeof(err)), S3C_ECORRUPT);
    ASSERT(strstr(err, "unexpected bytes") != NULL);
    free(longer);
    memcpy(bad, buf, total);
    bad[total - 1] = 'X';
    feed(&st, bad, total, 700, SIZE_MAX);
    ASSERT(!obj_stream_verified(&st, bad, total));
    ASSERT_EQ(obj_check(bad, total, &st, &h, err, sizeof(err)), S3C_ECORRUPT);
    ASSERT(strstr(err, "trailer magic") != NULL);
    /* A piece missing, the last byte not fed, or bytes past the trailer: not verified (the
     * full check then passes the good bytes, or names the extra ones). */
    feed(&st, buf, total, 700, total / 2);
    ASSERT(!obj_stream_verified(&st, buf, total));
    ASSERT_EQ(obj_check(buf, total, &st, &h, err, sizeof(err)), 0);
    feed(&st, buf, total - 1, 700, SIZE_MAX);
    ASSERT(!obj_stream_verified(&st, buf, total));
    memcpy(bad, buf, total);
    feed(&st, bad, total, 700, SIZE_MAX);
    ASSERT(!obj_stream_verified(&st, bad, total - 1));
    /* Verified means the CRCs were taken as the bytes landed: a byte changed in the buffer
     * afterwards is the caller's business (obj_check trusts the stream; obj_decode sees it). */
    feed(&st, buf, total, 5000, SIZE_MAX);
    memcpy(bad, buf, total);
    bad[pay[8] + 9] ^= 1;
    ASSERT_EQ(obj_check(bad, total, &st, &h, err, sizeof(err)), 0);
    ASSERT_EQ(obj_decode(bad, total, &h, NULL, NULL, err, sizeof(err)), S3C_ECORRUPT);
    /* A compressed object is not followed. */
    memcpy(bad, buf, total);
    bad[10] |= OBJ_FLAG_ZSTD;
    feed(&st, bad, total, 5000, SIZE_MAX);
    ASSERT(st.off_track);
    free(buf);
    free(bad);
}

static void keys(void)
{
    char k[OBJ_KEY_MAX];
    uint64_t f;
    ASSERT_EQ(obj_key(k, sizeof(k), "stage-1/", 1001), 8 + 4 + 20 + 4);
    ASSERT_STR_EQ(k, "stage-1/log/00000000000000001001.s3c");
    ASSERT(obj_key_parse(k, "stage-1/", &f));
    ASSERT_UEQ(f, 1001);
    ASSERT(!obj_key_parse(k, "other/", &f));
    ASSERT(!obj_key_parse("stage-1/log/x.s3c", "stage-1/", &f));
    ASSERT(!obj_key_parse("stage-1/log/00000000000000000000.s3c", "stage-1/", &f)); /* seq 0 */
    ASSERT(!obj_key_is_v1(k, "stage-1/"));
    ASSERT(obj_key_is_v1("stage-1/0000000001/00000000000000000001-00000000000000001000.s3c",
                         "stage-1/"));
    ASSERT(!obj_key_is_v1("stage-1/manifest.json", "stage-1/"));
    /* Keys sort in seq order as strings. */
    char a[OBJ_KEY_MAX], b[OBJ_KEY_MAX];
    obj_key(a, sizeof(a), "", 9);
    obj_key(b, sizeof(b), "", 10);
    ASSERT_LT(strcmp(a, b), 0);
    ASSERT_EQ(obj_key(k, 10, "p/", 1), -1);
}

/* The header alone: a control object holds one record; unknown flags and version 1 are
 * refused, and version 1 is told apart. */
static void headers(void)
{
    unsigned char buf[256];
    const char *p[] = {"{\"type\":\"epoch_start\"}"};
    size_t n = build(buf, 5, 1, p);
    struct obj_header h;
    bool v1;
    char err[256];
    ASSERT_EQ(obj_header_decode(buf, n, &h, &v1, err, sizeof(err)), 0);
    ASSERT(!v1);
    buf[10] = OBJ_FLAG_EPOCH_START; /* flags: a control object of one record is fine */
    ASSERT_EQ(obj_header_decode(buf, 40, &h, &v1, err, sizeof(err)), 0);
    ASSERT_EQ(h.flags, OBJ_FLAG_EPOCH_START);
    buf[10] = 0x04; /* a reserved bit */
    ASSERT_EQ(obj_header_decode(buf, 40, &h, &v1, err, sizeof(err)), S3C_ECORRUPT);
    ASSERT(strstr(err, "flags") != NULL);
    buf[10] = 0;
    buf[8] = 1; /* version 1 */
    ASSERT_EQ(obj_header_decode(buf, 40, &h, &v1, err, sizeof(err)), S3C_ECORRUPT);
    ASSERT(v1);
    const char *three[] = {"a", "b", "c"};
    n = build(buf, 5, 3, three);
    buf[10] = OBJ_FLAG_EPOCH_START; /* a control object must hold exactly one record */
    ASSERT_EQ(obj_header_decode(buf, n, &h, &v1, err, sizeof(err)), S3C_ECORRUPT);
    ASSERT_EQ(obj_header_decode(buf, 39, &h, &v1, err, sizeof(err)), S3C_ECORRUPT);
}

/* A compressed object: the records as one zstd frame between the plain header and
 * trailer; inflated, it is the plain object with the flag cleared; a flipped byte in the
 * frame or a frame that lies about its size is caught. */
static void compressed(void)
{
    unsigned char plain[512], z[1024], bad[1024];
    const char *p[] = {"first commit first commit", "", "third third third third"};
    size_t n = build(plain, 7, 3, p);
    size_t raw = n - OBJ_HEADER_BYTES - OBJ_TRAILER_BYTES;
    memcpy(z, plain, OBJ_HEADER_BYTES);
    z[10] |= OBJ_FLAG_ZSTD;
    size_t zl =
        ZSTD_compress(z + OBJ_HEADER_BYTES, sizeof(z) - 48, plain + OBJ_HEADER_BYTES, raw, 3);
    ASSERT(!ZSTD_isError(zl));
    size_t zn = OBJ_HEADER_BYTES + zl;
    obj_trailer_encode(crc32c_update(0, z, zn), z + zn);
    zn += OBJ_TRAILER_BYTES;
    struct obj_header h;
    char err[256];
    ASSERT_EQ(obj_decode(z, zn, &h, NULL, NULL, err, sizeof(err)), S3C_ECORRUPT);
    ASSERT(strstr(err, "inflate") != NULL);
    unsigned char *out;
    size_t outlen;
    ASSERT_EQ(obj_inflate(z, zn, &out, &outlen, err, sizeof(err)), 0);
    ASSERT_EQ(outlen, n);
    ASSERT_MEM_EQ(out, plain, n); /* the plain object, byte for byte */
    free(out);
    for (size_t i = OBJ_HEADER_BYTES; i < zn; i++) {
        memcpy(bad, z, zn);
        bad[i] ^= 0x10;
        if (obj_inflate(bad, zn, &out, &outlen, err, sizeof(err)) == 0) {
            free(out);
            TEST_FAIL_("flipping byte %zu of the compressed object went unnoticed", i);
        }
    }
    ASSERT_EQ(obj_inflate(plain, n, &out, &outlen, err, sizeof(err)), 0); /* plain: a copy */
    ASSERT_MEM_EQ(out, plain, n);
    free(out);
}

static void manifest_doc(void)
{
    struct manifest m = {.format = MANIFEST_FORMAT,
                         .epoch = 7,
                         .durable_seq = 12345,
                         .durable_first_seq = 12001,
                         .start_epoch = 7,
                         .max_batch_commits = 1000,
                         .started_at_ms = 1,
                         .updated_at_ms = 2};
    snprintf(m.writer, sizeof(m.writer), "host:1:abcd");
    char buf[MANIFEST_MAX_BYTES], err[256];
    int n = manifest_encode(&m, buf, sizeof(buf));
    ASSERT(n > 0);
    struct manifest back;
    ASSERT_EQ(manifest_parse(buf, (size_t)n, &back, err, sizeof(err)), 0);
    ASSERT_UEQ(back.epoch, 7);
    ASSERT_UEQ(back.durable_seq, 12345);
    ASSERT_UEQ(back.durable_first_seq, 12001);
    ASSERT_UEQ(back.start_epoch, 7);
    ASSERT_UEQ(back.max_batch_commits, 1000);
    ASSERT_STR_EQ(back.writer, "host:1:abcd");
    const char *f3 = "{\"format\":3,\"epoch\":1,\"durable_seq\":0}";
    ASSERT_EQ(manifest_parse(f3, strlen(f3), &back, err, sizeof(err)), S3C_EFORMAT);
    ASSERT(strstr(err, "format 3") != NULL);
    const char *neg = "{\"format\":2,\"epoch\":-1,\"durable_seq\":0}";
    ASSERT_EQ(manifest_parse(neg, strlen(neg), &back, err, sizeof(err)), -1);
    ASSERT(strstr(err, "epoch") != NULL);
    ASSERT_EQ(manifest_parse("{", 1, &back, err, sizeof(err)), -1);
    ASSERT_EQ(manifest_encode(&m, buf, 10), -1);
}

/* obj_records_crc over any split of records into spans equals the CRC over the bytes; a
 * long payload's CRC comes from its header (a stale one shows), a short one's from bytes. */
static void records_crc_spans(void)
{
    enum { NREC = 12 };
    static unsigned char buf[NREC * (OBJ_RECORD_HEADER_BYTES + 5000)];
    const uint32_t lens[NREC] = {0, 1, 100, 511, 512, 4096, 4096, 4096, 3000, 77, 4999, 600};
    size_t off = 0, rec_at[NREC];
    uint64_t rng = 42;
    for (int i = 0; i < NREC; i++) {
        unsigned char *pay = buf + off + OBJ_RECORD_HEADER_BYTES;
        for (uint32_t k = 0; k < lens[i]; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            pay[k] = (unsigned char)(rng >> 56);
        }
        obj_record_header_encode(lens[i], crc32c_update(0, pay, lens[i]), (uint64_t)i, buf + off);
        rec_at[i] = off;
        off += OBJ_RECORD_HEADER_BYTES + lens[i];
    }
    const uint32_t seed = 0x1234abcd; /* the object CRC so far (its header) */
    uint32_t want = crc32c_update(seed, buf, off);
    struct iovec iov[NREC];
    /* one span per record, as the stage hands them */
    for (int i = 0; i < NREC; i++)
        iov[i] = (struct iovec){buf + rec_at[i], (i + 1 < NREC ? rec_at[i + 1] : off) - rec_at[i]};
    ASSERT_EQ(obj_records_crc(seed, iov, NREC), want);
    /* all in one span; and none at all */
    iov[0] = (struct iovec){buf, off};
    ASSERT_EQ(obj_records_crc(seed, iov, 1), want);
    ASSERT_EQ(obj_records_crc(seed, iov, 0), seed);
    /* cut every which way: inside headers, inside payloads, empty spans between */
    struct iovec *cut = calloc(2 * off + 2, sizeof(*cut));
    for (size_t step = 1; step < 9000; step = step * 3 + 7) {
        int n = 0;
        for (size_t at = 0; at < off; n++) {
            size_t len = n % 5 == 4 ? 0 : at + step < off ? step : off - at;
            cut[n] = (struct iovec){buf + at, len};
            at += len;
        }
        ASSERT_EQ(obj_records_crc(seed, cut, n), want);
    }
    free(cut);
    /* A long payload changed after its header was written: the header's CRC is what
     * counts (the result is the CRC of the bytes as the producer made them), so S3's
     * check against the bytes sent refuses them. A short one is read. */
    iov[0] = (struct iovec){buf, off};
    buf[rec_at[5] + OBJ_RECORD_HEADER_BYTES + 10] ^= 1;
    ASSERT_EQ(obj_records_crc(seed, iov, 1), want);
    ASSERT(crc32c_update(seed, buf, off) != want);
    buf[rec_at[5] + OBJ_RECORD_HEADER_BYTES + 10] ^= 1;
    buf[rec_at[2] + OBJ_RECORD_HEADER_BYTES + 10] ^= 1;
    ASSERT_EQ(obj_records_crc(seed, iov, 1), crc32c_update(seed, buf, off));
    ASSERT(obj_records_crc(seed, iov, 1) != want);
}

int main(void)
{
    RUN(exact_bytes);
    RUN(round_trip_and_corruption);
    RUN(long_records_joined);
    RUN(records_crc_spans);
    RUN(stream_checks);
    RUN(keys);
    RUN(headers);
    RUN(compressed);
    RUN(manifest_doc);
    return 0;
}
