/* Helpers for tests against s3commit-mock (transport, pool, stage, mock): read its counters
 * from GET /_mock/stats, change its faults with PUT /_mock/faults, and wait on a transport. */
#ifndef S3C_TEST_MOCKSTATS_H
#define S3C_TEST_MOCKSTATS_H

#include <cjson/cJSON.h>
#include <signal.h>

#include "common/clock.h"
#include "mockproc.h"
#include "support/xport_loop.h"
#include "test.h"
#include "transport/transport.h"

/* Connections the mock has open now / at most since start / accepted in total, and the
 * count of one operation by status ("PutObject", 200; status 0 = every status). Each
 * call is one control request on its own connection (counted by the mock too). */
struct mock_counts {
    int open, peak, total;
};

static inline cJSON *mock_stats_json(const struct mockproc *m)
{
    static char buf[65536];
    int st = mockproc_http(m, "GET", "/_mock/stats", NULL, buf, sizeof(buf));
    if (st != 200)
        TEST_FAIL_("GET /_mock/stats answered %d", st);
    const char *body = strstr(buf, "\r\n\r\n");
    ASSERT(body != NULL);
    cJSON *j = cJSON_Parse(body + 4);
    if (!j)
        TEST_FAIL_("GET /_mock/stats: not JSON: %s", body + 4);
    return j;
}

/* One number of GET /_mock/stats by its dotted path ("faults.latency",
 * "ops.PutObject.status.200"); 0 when the mock has not counted it yet. */
static inline long mock_stat(const struct mockproc *m, const char *path)
{
    char key[256];
    cJSON *j = mock_stats_json(m), *it = j;
    snprintf(key, sizeof(key), "%s", path);
    for (char *save, *tok = strtok_r(key, ".", &save); tok && it; tok = strtok_r(NULL, ".", &save))
        it = cJSON_GetObjectItemCaseSensitive(it, tok);
    long v = cJSON_IsNumber(it) ? (long)it->valuedouble : 0;
    cJSON_Delete(j);
    return v;
}

static inline struct mock_counts mock_conns(const struct mockproc *m)
{
    cJSON *j = mock_stats_json(m);
    cJSON *c = cJSON_GetObjectItem(j, "connections");
    ASSERT(c != NULL);
    struct mock_counts r = {
        .open = cJSON_GetObjectItem(c, "open")->valueint,
        .peak = cJSON_GetObjectItem(c, "peak")->valueint,
        .total = cJSON_GetObjectItem(c, "total")->valueint,
    };
    cJSON_Delete(j);
    return r;
}

static inline int mock_op_count(const struct mockproc *m, const char *op, int status)
{
    cJSON *j = mock_stats_json(m);
    cJSON *o = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "ops"), op);
    int n = 0;
    if (o && status == 0) {
        n = cJSON_GetObjectItem(o, "count")->valueint;
    } else if (o) {
        char k[8];
        snprintf(k, sizeof(k), "%d", status);
        cJSON *s = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "status"), k);
        n = s ? s->valueint : 0;
    }
    cJSON_Delete(j);
    return n;
}

/* How many stored PutObject bodies carried each digest that the mock checked and found
 * right (GET /_mock/stats "digests"): x-amz-content-sha256 as a hex SHA-256, UNSIGNED-PAYLOAD,
 * Content-MD5, x-amz-checksum-crc32c / -crc32 / -sha256. A refused PUT counts in none. */
struct mock_digests {
    int content_sha256, unsigned_payload, md5, crc32c, crc32, sha256;
};

static inline int mock_digest_field_(const cJSON *d, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(d, name);
    if (!cJSON_IsNumber(v))
        TEST_FAIL_("GET /_mock/stats: digests.%s is missing or not a number", name);
    return v->valueint;
}

static inline struct mock_digests mock_digests(const struct mockproc *m)
{
    cJSON *j = mock_stats_json(m);
    cJSON *d = cJSON_GetObjectItem(j, "digests");
    if (!cJSON_IsObject(d))
        TEST_FAIL_("GET /_mock/stats has no \"digests\" object (rebuild s3commit-mock)");
    struct mock_digests r = {
        .content_sha256 = mock_digest_field_(d, "content_sha256"),
        .unsigned_payload = mock_digest_field_(d, "unsigned_payload"),
        .md5 = mock_digest_field_(d, "md5"),
        .crc32c = mock_digest_field_(d, "crc32c"),
        .crc32 = mock_digest_field_(d, "crc32"),
        .sha256 = mock_digest_field_(d, "sha256"),
    };
    cJSON_Delete(j);
    return r;
}

static inline void mock_faults(const struct mockproc *m, const char *json)
{
    static char buf[8192];
    int st = mockproc_http(m, "PUT", "/_mock/faults", json, buf, sizeof(buf));
    if (st != 200 && st != 204)
        TEST_FAIL_("PUT /_mock/faults %s answered %d: %s", json, st, buf);
}

/* mockproc_start/stop that also kill the mock if the test aborts on a failed ASSERT, so
 * no child outlives the test (and ctest does not wait for its open stdout). */
static pid_t test_mock_pids[16];

static void test_kill_mocks(int sig)
{
    for (int i = 0; i < 16; i++)
        if (test_mock_pids[i] > 0)
            kill(test_mock_pids[i], SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

static inline int test_mock_start(struct mockproc *m, const char *const *args)
{
    int rc = mockproc_start(m, args);
    if (rc != 0)
        return rc;
    signal(SIGABRT, test_kill_mocks);
    for (int i = 0; i < 16; i++) {
        if (test_mock_pids[i] == 0) {
            test_mock_pids[i] = m->pid;
            break;
        }
    }
    return 0;
}

static inline void test_mock_stop(struct mockproc *m)
{
    for (int i = 0; i < 16; i++)
        if (test_mock_pids[i] == m->pid)
            test_mock_pids[i] = 0;
    mockproc_stop(m);
}

/* Polls x for up to ms, until cond(x) holds; returns whether it did. */
static inline bool poll_until(struct xport *x, int ms, bool (*cond)(struct xport *x))
{
    uint64_t end = s3c__now_ms() + (uint64_t)ms;
    while (!cond(x)) {
        if (s3c__now_ms() >= end)
            return false;
        ASSERT_EQ(test_xport_poll(x, 20), 0);
    }
    return true;
}

/* Polls x until the mock's number at path (see mock_stat) reaches n; fails after ms. */
static inline void poll_until_mock(struct xport *x, const struct mockproc *m, int ms,
                                   const char *path, long n)
{
    uint64_t end = s3c__now_ms() + (uint64_t)ms;
    while (mock_stat(m, path) < n) {
        if (s3c__now_ms() >= end)
            TEST_FAIL_("the mock's %s did not reach %ld in %d ms", path, n, ms);
        ASSERT_EQ(test_xport_poll(x, 10), 0);
    }
}

/* Polls x for ms regardless (for a test whose subject is time passing). */
static inline void poll_for(struct xport *x, int ms)
{
    uint64_t end = s3c__now_ms() + (uint64_t)ms;
    while (s3c__now_ms() < end)
        ASSERT_EQ(test_xport_poll(x, 20), 0);
}

#endif
