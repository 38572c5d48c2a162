/* `s3commit run` with s3.compression zstd against s3commit-mock, then `s3commit cat` and
 * `s3commit verify`: cat gives back exactly the framed bytes run read (JSON-like and random
 * commits, 0 bytes and max_commit_bytes among them), verify passes with every commit, and the
 * objects in the bucket carry OBJ_FLAG_ZSTD and take less than half the payload's bytes.
 * Every process started here is stopped by pid. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/objfmt.h"
#include "mockproc.h"
#include "proc.h"
#include "test.h"

#define PZ_MAX_COMMIT 65536
#define PZ_COMMITS 3000

static char tmpdir[256];
static char bin_s3commit[512];
static struct mockproc mock;

static uint64_t pz_rng_state = 0x853c49e6748fea9bull;

static uint64_t pz_rng(void)
{
    return test_xorshift64(&pz_rng_state);
}

/* PZ_COMMITS frames: the first 0 bytes, then max_commit_bytes of JSON lines, then
 * max_commit_bytes of random bytes; every 100th random (1-2000 bytes), the rest an order
 * event of 150-400 bytes whose values vary. Returns the payload bytes. */
static uint64_t pz_input(struct buf *in)
{
    static unsigned char p[PZ_MAX_COMMIT];
    uint64_t payload = 0;
    for (int i = 0; i < PZ_COMMITS; i++) {
        bool random = i == 2 || (i > 2 && i % 100 == 0);
        size_t len = i == 0             ? 0
                     : i == 1 || i == 2 ? PZ_MAX_COMMIT
                     : random           ? 1 + (size_t)(pz_rng() % 2000)
                                        : 150 + (size_t)(pz_rng() % 251);
        for (size_t off = 0; off < len && random; off++)
            p[off] = (unsigned char)pz_rng();
        for (size_t off = 0; off < len && !random;) {
            char ev[400];
            int n =
                snprintf(ev, sizeof(ev),
                         "{\"event\":\"order.%s\",\"order_id\":\"ord_%09u\",\"qty\":%u,"
                         "\"price_cents\":%u,\"customer\":\"cus_%06u\",\"status\":\"%s\"}\n",
                         pz_rng() % 2 ? "created" : "paid", (unsigned)(pz_rng() % 1000000000u),
                         (unsigned)(1 + pz_rng() % 9), (unsigned)(pz_rng() % 100000u),
                         (unsigned)(pz_rng() % 1000000u), pz_rng() % 3 ? "pending" : "confirmed");
            size_t take = (size_t)n < len - off ? (size_t)n : len - off;
            memcpy(p + off, ev, take);
            off += take;
        }
        buf_frame(in, p, (uint32_t)len);
        payload += len;
    }
    return payload;
}

/* Lists zp/log/ and GETs every object: data objects must be flagged OBJ_FLAG_ZSTD, the
 * control object (log/1) plain. Returns the bytes of the data objects. */
static uint64_t pz_stored_bytes(int *objects)
{
    static char list[1 << 16], obj[4 << 20];
    uint64_t total = 0;
    *objects = 0;
    ASSERT_EQ(mockproc_http(&mock, "GET", "/commits?list-type=2&prefix=zp/log/&max-keys=1000", NULL,
                            list, sizeof(list)),
              200);
    for (const char *k = list; (k = strstr(k, "<Key>")) != NULL; k += 5) {
        char key[OBJ_KEY_MAX], path[OBJ_KEY_MAX + 16];
        const char *e = strstr(k, "</Key>");
        ASSERT(e != NULL);
        snprintf(key, sizeof(key), "%.*s", (int)(e - k - 5), k + 5);
        snprintf(path, sizeof(path), "/commits/%s", key);
        ASSERT_EQ(mockproc_http(&mock, "GET", path, NULL, obj, sizeof(obj)), 200);
        const char *cl = strstr(obj, "Content-Length: "), *body = strstr(obj, "\r\n\r\n");
        ASSERT(cl != NULL && body != NULL);
        size_t len = strtoul(cl + 16, NULL, 10);
        struct obj_header h;
        char err[256];
        ASSERT_EQ(obj_header_decode(body + 4, len, &h, NULL, err, sizeof(err)), 0);
        uint64_t first;
        ASSERT(obj_key_parse(key, "zp/", &first));
        if (first == 1) { /* the run's EPOCH_START control record */
            ASSERT_EQ(h.flags, OBJ_FLAG_EPOCH_START);
            continue;
        }
        if (!(h.flags & OBJ_FLAG_ZSTD))
            TEST_FAIL_("%s: flags 0x%x, not compressed", key, h.flags);
        total += len;
        (*objects)++;
    }
    return total;
}

static void test_run_cat_verify_zstd(void)
{
    struct proc p;
    struct buf in = {0};
    char cfg[512], text[1024];
    snprintf(cfg, sizeof(cfg), "%s/zstd.json", tmpdir);
    snprintf(text, sizeof(text),
             "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"zp/\","
             "\"compression\":\"zstd\"},\n"
             " \"persistence\":{\"batch_timeout_ms\":2,\"batch_size_threshold\":200},\n"
             " \"pipeline\":{\"max_commit_bytes\":%d}}\n",
             mock.endpoint, PZ_MAX_COMMIT);
    write_file(cfg, text);
    uint64_t payload = pz_input(&in);

    const char *argv_run[] = {bin_s3commit, "run", "--config", cfg, NULL};
    ASSERT_EQ(run(argv_run, &in, &p, 60000), 0);
    char want[64];
    snprintf(want, sizeof(want), "{\"durable_seq\":%d}\n", PZ_COMMITS + 1);
    if (!strstr(p.o.p, want))
        TEST_FAIL_("run did not print %s: %s", want, p.o.p);
    proc_free(&p);

    /* cat: the same framed bytes run read, exactly. */
    const char *argv_cat[] = {bin_s3commit, "cat", "--config", cfg, NULL};
    ASSERT_EQ(run(argv_cat, NULL, &p, 60000), 0);
    if (p.o.len != in.len || memcmp(p.o.p, in.p, in.len) != 0) {
        size_t d = 0;
        while (d < in.len && d < p.o.len && p.o.p[d] == in.p[d])
            d++;
        TEST_FAIL_("cat gave %zu bytes, want %zu (first difference at %zu); stderr: %s", p.o.len,
                   in.len, d, p.e.p);
    }
    proc_free(&p);

    /* verify: every commit on the chain, nothing bad. */
    char n[16];
    snprintf(n, sizeof(n), "%d", PZ_COMMITS);
    const char *argv_verify[] = {bin_s3commit,       "verify", "--config", cfg,
                                 "--expect-commits", n,        NULL};
    int code = run(argv_verify, NULL, &p, 60000);
    if (code != 0)
        TEST_FAIL_("verify exited %d: %s %s", code, p.o.p, p.e.p);
    cJSON *sum = cJSON_Parse(p.o.p);
    ASSERT(sum != NULL);
    ASSERT(cJSON_IsTrue(cJSON_GetObjectItem(sum, "ok")));
    ASSERT_EQ(cJSON_GetObjectItem(sum, "commits")->valuedouble, PZ_COMMITS);
    ASSERT_EQ(cJSON_GetObjectItem(sum, "bad_objects")->valuedouble, 0);
    cJSON_Delete(sum);
    proc_free(&p);

    /* The bucket holds compressed objects, well under half the payload. */
    int objects;
    uint64_t stored = pz_stored_bytes(&objects);
    fprintf(stderr, "   %d data objects, %" PRIu64 " bytes for %" PRIu64 " payload bytes\n",
            objects, stored, payload);
    ASSERT_GE(objects, PZ_COMMITS / 200);
    ASSERT_LT(stored * 2, payload);
    buf_free(&in);
}

int main(void)
{
    proc_test_init("zstd", bin_s3commit, sizeof(bin_s3commit), tmpdir, sizeof(tmpdir));
    ASSERT_EQ(mockproc_start(&mock, NULL), 0);
    track_child(mock.pid);
    RUN(test_run_cat_verify_zstd);
    untrack_child(mock.pid);
    mockproc_stop(&mock);
    proc_test_done(tmpdir);
    return 0;
}
