/* s3.compression zstd end to end against s3commit-mock: a stage writes phases of
 * compressible (JSON-like) and incompressible (random) commits, 0 bytes and
 * max_commit_bytes among them. Every data object it PUT carries OBJ_FLAG_ZSTD with a plain
 * header and trailer, inflates to records holding the bytes submitted, is a fraction of its
 * payload when compressible and no more than payload plus framing when not; s3c_reader gives
 * every commit back byte for byte, also after a restart without compression appended plain
 * objects to the same log, and with two compression threads under a 503/written-error
 * fault mix. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/objfmt.h"
#include "mockproc.h"
#include "s3commit.h"
#include "support/mockstats.h"
#include "support/stage_open.h"
#include "test.h"

#define ZT_MAX_COMMIT 65536 /* pipeline.max_commit_bytes */
#define ZT_PHASE 120        /* commits per phase */
#define ZT_PHASES 4         /* JSON, random, JSON, random */
#define ZT_MAX_SEQ 16384

static struct mockproc mock; /* unsigned requests accepted: objects are read back raw */

/* Every commit submitted to the log, by seq. */
static unsigned char *zt_data[ZT_MAX_SEQ];
static size_t zt_len[ZT_MAX_SEQ];
static bool zt_json[ZT_MAX_SEQ]; /* compressible */
static uint64_t zt_last_seq;     /* the highest seq submitted */

static uint64_t zt_rng_state = 0x2545f4914f6cdd1dull;

static uint64_t zt_rng(void)
{
    return test_xorshift64(&zt_rng_state);
}

/* compression: s3.compression; s3_more, persistence_more: further members of "s3" and of
 * "persistence" (each starting with a comma, or ""); top_more: further sections. */
static s3c_config *zt_cfg_more(const char *compression, const char *s3_more, int batch_size,
                               const char *persistence_more, long ring_bytes,
                               const char *top_more)
{
    char json[2048], err[512];
    s3c_config *cfg = NULL;
    snprintf(json, sizeof(json),
             "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"z/\","
             "\"region\":\"us-east-1\",\"access_key_id\":\"AKIDZSTDTEST00000001\","
             "\"secret_access_key\":\"zstd-test-secret-0123456789\",\"compression\":\"%s\"%s},"
             "\"persistence\":{\"batch_timeout_ms\":2,\"batch_size_threshold\":%d,"
             "\"batch_bytes_threshold\":262144%s},"
             "\"pipeline\":{\"ring_bytes\":%ld,\"max_commit_bytes\":%d}%s}",
             mock.endpoint, compression, s3_more, batch_size, persistence_more, ring_bytes,
             ZT_MAX_COMMIT, top_more);
    if (s3c_config_parse(json, strlen(json), &cfg, err, sizeof(err)) != 0)
        TEST_FAIL_("config: %s", err);
    return cfg;
}

static s3c_config *zt_cfg(const char *compression)
{
    return zt_cfg_more(compression, "", 50, "", 4194304, "");
}

/* An order event of 200-500 bytes whose ids, amounts and items vary with the RNG; a long
 * commit repeats such events up to len bytes. Writes exactly len bytes. */
static void zt_json_bytes(unsigned char *out, size_t len)
{
    static const char *const events[] = {"order.created", "order.paid", "order.shipped"};
    char ev[600];
    size_t off = 0;
    while (off < len) {
        int n = snprintf(ev, sizeof(ev),
                         "{\"event\":\"%s\",\"order_id\":\"ord_%09u\",\"customer\":\"cus_%06u\","
                         "\"currency\":\"EUR\",\"items\":[{\"sku\":\"SKU-%05u\",\"qty\":%u,"
                         "\"price_cents\":%u}],\"total_cents\":%u,\"status\":\"pending\","
                         "\"request_id\":\"%08x\"}\n",
                         events[zt_rng() % 3], (unsigned)(zt_rng() % 1000000000u),
                         (unsigned)(zt_rng() % 1000000u), (unsigned)(zt_rng() % 100000u),
                         (unsigned)(1 + zt_rng() % 9), (unsigned)(99 + zt_rng() % 50000u),
                         (unsigned)(zt_rng() % 500000u), (unsigned)zt_rng());
        size_t take = (size_t)n < len - off ? (size_t)n : len - off;
        memcpy(out + off, ev, take);
        off += take;
    }
}

/* One phase: n commits of one kind, the first 0 bytes and the second max_commit_bytes, the
 * rest 200-500 bytes (JSON) or 1-4096 bytes (random); then waits until they are durable,
 * so the next phase starts a new object. */
static uint64_t zt_submit(s3c_stage *st, bool json, int n)
{
    uint64_t seq = 0;
    for (int i = 0; i < n; i++) {
        size_t len = i == 0   ? 0
                     : i == 1 ? ZT_MAX_COMMIT
                     : json   ? 200 + (size_t)(zt_rng() % 301)
                              : 1 + (size_t)(zt_rng() % 4096);
        unsigned char *p = malloc(len ? len : 1);
        ASSERT(p != NULL);
        if (json)
            zt_json_bytes(p, len);
        else
            for (size_t j = 0; j < len; j++)
                p[j] = (unsigned char)zt_rng();
        ASSERT_EQ(s3c_submit(st, p, len, 5000, &seq), 0);
        ASSERT(seq < ZT_MAX_SEQ && zt_data[seq] == NULL);
        ASSERT(i == 0 || seq == zt_last_seq + 1);
        zt_data[seq] = p;
        zt_len[seq] = len;
        zt_json[seq] = json;
        zt_last_seq = seq;
    }
    return seq;
}

static void zt_phase(s3c_stage *st, bool json, int n)
{
    ASSERT_EQ(s3c_wait_durable(st, zt_submit(st, json, n), 30000), 0);
}

/* ---- the objects as stored ------------------------------------------------------------ */

/* GET path into a static buffer; returns the body and its length (Content-Length). */
static const unsigned char *zt_get(const char *path, size_t *len)
{
    static char out[4 << 20];
    ASSERT_EQ(mockproc_http(&mock, "GET", path, NULL, out, sizeof(out)), 200);
    const char *cl = strstr(out, "Content-Length: ");
    const char *body = strstr(out, "\r\n\r\n");
    ASSERT(cl != NULL && body != NULL && cl < body);
    *len = strtoul(cl + 16, NULL, 10);
    ASSERT(*len < sizeof(out) - (size_t)(body + 4 - out));
    return (const unsigned char *)body + 4;
}

static int zt_check_record(void *ctx, uint64_t seq, const void *payload, uint32_t len)
{
    (void)ctx;
    ASSERT(seq <= zt_last_seq && zt_data[seq] != NULL);
    ASSERT_UEQ(len, zt_len[seq]);
    ASSERT_MEM_EQ(payload, zt_data[seq], len);
    return 0;
}

struct zt_totals {
    int data_objects, zstd_objects, plain_objects, controls;
    uint64_t json_sent, json_payload, random_sent, random_plain;
};

/* Lists z/log/ and reads every object raw: control objects plain; data objects flagged
 * OBJ_FLAG_ZSTD when written by a stage with compression, refused by obj_decode as they
 * are, inflated to records that hold the bytes submitted. Sums sent and payload bytes by
 * kind (an object holds one kind: phases are separate batches). */
static struct zt_totals zt_objects(void)
{
    static char list[1 << 16];
    struct zt_totals t = {0};
    char err[256];
    ASSERT_EQ(mockproc_http(&mock, "GET", "/commits?list-type=2&prefix=z/log/&max-keys=1000", NULL,
                            list, sizeof(list)),
              200);
    for (const char *k = list; (k = strstr(k, "<Key>")) != NULL; k += 5) {
        char path[600];
        const char *e = strstr(k, "</Key>");
        ASSERT(e != NULL);
        snprintf(path, sizeof(path), "/commits/%.*s", (int)(e - k - 5), k + 5);
        size_t len;
        const unsigned char *o = zt_get(path, &len);
        struct obj_header h;
        ASSERT_EQ(obj_header_decode(o, len, &h, NULL, err, sizeof(err)), 0);
        ASSERT_MEM_EQ(o + len - 4, "S3CE", 4); /* the trailer stays plain */
        if (h.flags & OBJ_FLAG_EPOCH_START) {
            ASSERT_EQ(h.flags & OBJ_FLAG_ZSTD, 0);
            t.controls++;
            continue;
        }
        t.data_objects++;
        unsigned char *plain;
        size_t plen;
        if (h.flags & OBJ_FLAG_ZSTD) {
            t.zstd_objects++;
            ASSERT_NE(obj_decode(o, len, &h, NULL, NULL, err, sizeof(err)), 0);
        } else {
            t.plain_objects++;
        }
        if (obj_inflate(o, len, &plain, &plen, err, sizeof(err)) != 0)
            TEST_FAIL_("%s: %s", path, err);
        struct obj_header ph;
        if (obj_decode(plain, plen, &ph, zt_check_record, NULL, err, sizeof(err)) != 0)
            TEST_FAIL_("%s inflated: %s", path, err);
        ASSERT_UEQ(ph.first_seq, h.first_seq);
        ASSERT_UEQ(ph.last_seq, h.last_seq);
        ASSERT_EQ(ph.flags & OBJ_FLAG_ZSTD, 0);
        uint64_t payload = 0;
        for (uint64_t s = h.first_seq; s <= h.last_seq; s++) {
            ASSERT_EQ(zt_json[s], zt_json[h.first_seq]);
            payload += zt_len[s];
        }
        if (zt_json[h.first_seq]) {
            t.json_sent += len;
            t.json_payload += payload;
        } else {
            t.random_sent += len;
            t.random_plain += plen;
        }
        free(plain);
    }
    return t;
}

/* Reads the whole log with s3c_reader: seqs 1..zt_last_seq densely, each commit's bytes as
 * submitted, `controls` control records. */
static void zt_read_back(int controls)
{
    s3c_config *cfg = zt_cfg("none"); /* a reader needs no compression setting */
    s3c_reader *r;
    char err[1100];
    struct s3c_reader_opts o = {0};
    if (s3c_reader_open(cfg, &o, &r, err, sizeof(err)) != 0)
        TEST_FAIL_("reader open: %s", err);
    s3c_config_free(cfg);
    struct s3c_record rec;
    uint64_t want = 1;
    int rc, seen_controls = 0;
    while ((rc = s3c_reader_next(r, &rec, 10000)) == 0) {
        ASSERT_UEQ(rec.seq, want);
        want++;
        if (rec.control) {
            seen_controls++;
            ASSERT(zt_data[rec.seq] == NULL);
            continue;
        }
        ASSERT(zt_data[rec.seq] != NULL);
        ASSERT_UEQ(rec.len, zt_len[rec.seq]);
        ASSERT_MEM_EQ(rec.data, zt_data[rec.seq], rec.len);
    }
    if (rc != S3C_EEND)
        TEST_FAIL_("reader: %s", s3c_reader_error(r));
    ASSERT_UEQ(want - 1, zt_last_seq);
    ASSERT_EQ(seen_controls, controls);
    s3c_reader_close(r);
}

/* ---- the cases ------------------------------------------------------------------------ */

/* Phases of JSON and random commits through a stage with s3.compression zstd (level 3). */
static void test_zstd_objects(void)
{
    s3c_stage *st = test_stage_open(zt_cfg("zstd"));
    for (int p = 0; p < ZT_PHASES; p++)
        zt_phase(st, p % 2 == 0, ZT_PHASE);
    struct s3c_stats s;
    s3c_stats_get(st, &s);
    test_stage_close(st);

    struct zt_totals t = zt_objects();
    fprintf(stderr,
            "   %d data objects; JSON: %" PRIu64 " bytes sent for %" PRIu64
            " payload; random: %" PRIu64 " sent for %" PRIu64 " plain\n",
            t.data_objects, t.json_sent, t.json_payload, t.random_sent, t.random_plain);
    ASSERT_EQ(t.controls, 1);
    ASSERT_GE(t.data_objects, 3 * ZT_PHASES); /* batch_size_threshold 50: 3 objects a phase */
    ASSERT_EQ(t.zstd_objects, t.data_objects);
    /* JSON compresses: at least threefold (zstd 3 gives about fivefold here). */
    ASSERT_LT(t.json_sent * 3, t.json_payload);
    /* Random bytes do not (only the record headers shrink), and zstd's stored blocks add a
     * few bytes per 128 KiB, not more. */
    ASSERT_GE(t.random_sent * 100, t.random_plain * 97);
    ASSERT_LE(t.random_sent, t.random_plain + 64 * (uint64_t)t.data_objects);
    /* The stage's own count of object bytes is what was stored. */
    ASSERT_UEQ(s.object_bytes, t.json_sent + t.random_sent);
    zt_read_back(1);
}

/* A restart without compression appends plain objects after the compressed ones: both kinds
 * read back in one pass. */
static void test_restart_without_compression(void)
{
    s3c_stage *st = test_stage_open(zt_cfg("none"));
    zt_phase(st, true, ZT_PHASE);
    zt_phase(st, false, ZT_PHASE);
    test_stage_close(st);
    struct zt_totals t = zt_objects();
    ASSERT_EQ(t.controls, 2);
    ASSERT_GE(t.plain_objects, 4);
    ASSERT_GE(t.zstd_objects, 3 * ZT_PHASES);
    ASSERT_EQ(t.plain_objects + t.zstd_objects, t.data_objects);
    zt_read_back(2);
}

/* Two compression workers and many small batches in flight while the store answers 503
 * (not stored) or stores and answers 500 (stored: the retry meets a 412 and reads the key
 * back, which only settles as ours when the re-sent object is the same bytes): every
 * object is compressed, and every commit reads back byte for byte, in seq order. */
static void test_compression_threads_under_faults(void)
{
    s3c_stage *st = test_stage_open(
        zt_cfg_more("zstd", ",\"compression_threads\":2", 10,
                    ",\"max_in_flight_requests\":16,\"max_retry_attempts\":30,"
                    "\"retry_base_delay_ms\":1,\"max_retry_delay_ms\":20",
                    4194304, ""));
    mock_faults(&mock, "{\"error_rate\":0.2,\"error_status\":503,\"written_error_rate\":0.2,"
                       "\"key_prefix\":\"z/log/\"}");
    for (int p = 0; p < ZT_PHASES; p++)
        zt_phase(st, p % 2 == 0, ZT_PHASE);
    struct s3c_stats s;
    s3c_stats_get(st, &s);
    mock_faults(&mock, "{\"error_rate\":0,\"written_error_rate\":0,\"key_prefix\":\"\"}");
    test_stage_close(st);
    fprintf(stderr,
            "   %" PRIu64 " batches, %" PRIu64 " PUTs, %" PRIu64 " retries, %" PRIu64
            " settled as ours\n",
            s.batches_sent, s.put_attempts, s.retries, s.settled_ours);
    ASSERT_GE(s.batches_sent, (uint64_t)(ZT_PHASES * ZT_PHASE / 10));
    ASSERT_GT(s.retries, 0);      /* the faults were met */
    ASSERT_GT(s.settled_ours, 0); /* a re-sent object matched the stored one */
    struct zt_totals t = zt_objects();
    ASSERT_EQ(t.controls, 3);
    ASSERT_GE(t.zstd_objects, 3 * ZT_PHASES + ZT_PHASES * ZT_PHASE / 10);
    zt_read_back(3);
}

/* With a spool, 3 MiB of JSON commits through a 1 MiB ring while every PUT fails: ring
 * space goes back early (never under a batch in compression), batches are formed from the
 * spool and reloaded from it, the stage parks instead of failing; once S3 heals, every
 * commit lands compressed and reads back byte for byte. */
static void test_compression_threads_over_a_spool(void)
{
    char dir[64], top[256], cmd[128];
    snprintf(dir, sizeof(dir), "/tmp/s3c-zstd-test-XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(top, sizeof(top),
             ",\"spool\":{\"dir\":\"%s/spool\",\"segment_bytes\":1048576,"
             "\"max_bytes\":67108864}",
             dir);
    s3c_stage *st = test_stage_open(zt_cfg_more(
        "zstd", ",\"compression_threads\":2", 50,
        ",\"max_retry_attempts\":1,\"retry_base_delay_ms\":10,\"max_retry_delay_ms\":200,"
        "\"shutdown_timeout_ms\":5000,\"max_in_flight_requests\":4,\"target_pool_size\":4",
        1048576, top));
    mock_faults(&mock, "{\"error_rate\":1.0,\"error_status\":503,\"key_prefix\":\"z/log/\"}");
    uint64_t last = 0;
    for (int i = 0; i < 9000 / ZT_PHASE; i++)
        last = zt_submit(st, true, ZT_PHASE);
    ASSERT_EQ(s3c_wait_local(st, last, 10000), 0);
    struct s3c_stats s;
    ASSERT_WITHIN(5000, (s3c_stats_get(st, &s), s.degraded == 1));
    ASSERT_EQ(s.failed, 0);
    mock_faults(&mock, "{\"error_rate\":0,\"key_prefix\":\"\"}");
    ASSERT_EQ(s3c_wait_durable(st, last, 30000), 0);
    s3c_stats_get(st, &s);
    fprintf(stderr, "   %" PRIu64 " batches, %" PRIu64 " spool reads\n", s.batches_sent,
            s.spool_reads);
    ASSERT_GT(s.spool_reads, 0); /* the ring was reused: objects came from the spool */
    struct s3c_close_report rep;
    ASSERT_EQ(s3c_stage_close(st, &rep), 0);
    ASSERT_UEQ(rep.lost_first_seq, 0);
    zt_read_back(4);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ASSERT_EQ(system(cmd), 0);
}

/* Every PUT fails and retries are off: a stage with two compression threads and batches in
 * compression fails, and closes promptly, reporting the loss (the last case: it leaves seqs
 * the log does not hold). */
static void test_compression_threads_fail_cleanly(void)
{
    s3c_stage *st = test_stage_open(zt_cfg_more(
        "zstd", ",\"compression_threads\":2", 10,
        ",\"max_retry_attempts\":0,\"max_in_flight_requests\":16,\"shutdown_timeout_ms\":3000",
        4194304, ""));
    mock_faults(&mock, "{\"error_rate\":1.0,\"error_status\":503,\"key_prefix\":\"z/log/\"}");
    unsigned char p[400];
    uint64_t seq = 0;
    int rc = 0;
    for (int i = 0; i < 2000 && rc == 0; i++) {
        zt_json_bytes(p, sizeof(p));
        rc = s3c_submit(st, p, sizeof(p), 5000, &seq);
    }
    ASSERT_EQ(s3c_wait_durable(st, seq, 10000), S3C_EFAILED);
    struct s3c_stats s;
    s3c_stats_get(st, &s);
    ASSERT_EQ(s.failed, 1);
    uint64_t t0 = test_now_ms_();
    struct s3c_close_report rep;
    ASSERT_EQ(s3c_stage_close(st, &rep), S3C_EFAILED);
    ASSERT_LT(test_now_ms_() - t0, 3000); /* nothing before the failure was left to wait for */
    ASSERT_GT(rep.lost_first_seq, 0);
    mock_faults(&mock, "{\"error_rate\":0,\"key_prefix\":\"\"}");
}

int main(void)
{
    ASSERT_EQ(test_mock_start(&mock, NULL), 0);
    RUN(test_zstd_objects);
    RUN(test_restart_without_compression);
    RUN(test_compression_threads_under_faults);
    RUN(test_compression_threads_over_a_spool);
    RUN(test_compression_threads_fail_cleanly);
    test_mock_stop(&mock);
    for (uint64_t s = 0; s < ZT_MAX_SEQ; s++)
        free(zt_data[s]);
    return 0;
}
