/* The persistence stage against s3commit-mock (SigV4 checked): each batching trigger
 * alone, out-of-order completions acknowledged in order, a batch failing twice then
 * succeeding acknowledged once in place, exhausted retries failing the stage without
 * acknowledging past the batch, written-but-500 re-sent to the same key, close draining,
 * and close against a stalled server returning within its bound naming the lost seqs.
 * Every object written is read back and decoded. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "format/objfmt.h"
#include "mockproc.h"
#include "s3commit.h"
#include "stage/stage_int.h"
#include "support/mockstats.h"
#include "support/xport_loop.h"
#include "test.h"
#include "transport/transport.h"

#define AK "AKIDSTAGETEST0000001"
#define SK "stage-test-secret-key-0123456789abcdef"

static struct mockproc mock;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void start_mock(void)
{
    const char *args[] = {"--access-key", AK, "--secret-key", SK, NULL};
    ASSERT_EQ(test_mock_start(&mock, args), 0);
}

/* PutObject answers with this status since the stage opened (counted when the answer
 * starts, before any latency fault delays it): the open's own PUTs (manifest, fence,
 * heartbeat) are not the test's, and the manifest then waits an hour (see mkcfg). */
static int put_base[600];
static int put_count(int status)
{
    return mock_op_count(&mock, "PutObject", status) - put_base[status];
}

/* Waits until the mock has taken `pool` warm-up HeadBuckets (target_pool_size), then sets
 * faults, so they hit PUTs only. */
static void warm_then_faults(int pool, const char *json)
{
    ASSERT_WITHIN(5000, mock_op_count(&mock, "HeadBucket", 0) >= pool);
    mock_faults(&mock, json);
}

/* Waits until n requests have reached the mock under the latency fault (or the stall
 * fault), so lifting the fault now leaves those requests slow. */
static void wait_delayed(const char *fault, long n)
{
    char path[64];
    snprintf(path, sizeof(path), "faults.%s", fault);
    ASSERT_WITHIN(5000, mock_stat(&mock, path) >= n);
}

/* S3C_TEST_DIRECT_PUT=0 (ctest's test_stage_libcurl_put): the same cases with PUT bodies
 * sent by libcurl instead of direct.c (s3.direct_put = false; the default is true). */
static const char *direct_put(void)
{
    const char *e = getenv("S3C_TEST_DIRECT_PUT");
    return e && e[0] == '0' ? ",\"direct_put\":false" : "";
}

static s3c_config *mkcfg(const char *persistence)
{
    char json[2048], err[512];
    s3c_config *cfg = NULL;
    snprintf(json, sizeof(json),
             "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"t/\","
             "\"region\":\"us-east-1\",\"access_key_id\":\"" AK "\","
             "\"secret_access_key\":\"" SK "\"%s},"
             "\"persistence\":{%s%s\"manifest_interval_ms\":3600000,"
             "\"writer_heartbeat_interval_ms\":3600000},"
             "\"pipeline\":{\"ring_bytes\":1048576,\"max_commit_bytes\":65536}}",
             mock.endpoint, direct_put(), persistence, persistence[0] ? "," : "");
    if (s3c_config_parse(json, strlen(json), &cfg, err, sizeof(err)) != 0)
        TEST_FAIL_("config: %s", err);
    return cfg;
}

static s3c_stage *open_stage(const char *persistence)
{
    s3c_config *cfg = mkcfg(persistence);
    s3c_stage *st;
    char err[512];
    if (s3c_stage_open(cfg, &st, err, sizeof(err)) != 0)
        TEST_FAIL_("open: %s", err);
    s3c_config_free(cfg);
    const int statuses[] = {200, 412, 500, 503};
    for (int i = 0; i < 4; i++)
        put_base[statuses[i]] = mock_op_count(&mock, "PutObject", statuses[i]);
    return st;
}

/* Waits until the stage has started n PUTs (so a commit submitted next cannot join them). */
static uint64_t put_attempts(s3c_stage *st)
{
    struct s3c_stats s;
    s3c_stats_get(st, &s);
    return s.put_attempts;
}

static void wait_sent(s3c_stage *st, uint64_t n)
{
    ASSERT_WITHIN(5000, put_attempts(st) >= n);
}

static uint64_t submit_n(s3c_stage *st, int n, size_t len)
{
    char buf[65536];
    uint64_t seq = 0;
    for (int i = 0; i < n; i++) {
        memset(buf, 'a' + (i % 26), len);
        ASSERT_EQ(s3c_submit(st, buf, len, 5000, &seq), 0);
    }
    return seq;
}

/* ---- reading the bucket back ------------------------------------------------------- */

struct listing {
    char keys[256][OBJ_KEY_MAX];
    uint64_t first[256], last[256];
    int n;
    bool done;
    const void *body;
    size_t len;
    char *copy;
};

static void on_list(void *ctx, const struct xport_result *r)
{
    struct listing *l = ctx;
    ASSERT_EQ(r->cls, XPORT_OK);
    for (size_t i = 0; i < r->nentries && l->n < 256; i++)
        snprintf(l->keys[l->n++], OBJ_KEY_MAX, "%s", r->entries[i].key);
    l->done = true;
}

static void on_get(void *ctx, const struct xport_result *r)
{
    struct listing *l = ctx;
    ASSERT_EQ(r->cls, XPORT_OK);
    l->copy = malloc(r->body_len + 1);
    memcpy(l->copy, r->body, r->body_len);
    l->len = r->body_len;
    l->done = true;
}

/* Lists t/log/ and decodes every object: the chain holds seqs 1..last, each once, in key
 * order, seq 1 being the stage's EPOCH_START control record (a fresh prefix). Returns the
 * number of data objects; their keys and ranges land in l. */
static int read_back(struct listing *l, uint64_t last)
{
    s3c_config *cfg = mkcfg("");
    char err[256];
    struct xport *x = test_xport_new((const struct s3c_config *)cfg, err, sizeof(err));
    ASSERT(x);
    memset(l, 0, sizeof(*l));
    ASSERT_EQ(xport_list(x, "t/log/", NULL, NULL, 1000, on_list, l), 0);
    ASSERT_EQ(xport_drain(x, 5000), 0);
    ASSERT(l->done);
    uint64_t want = 1;
    int data = 0;
    for (int i = 0; i < l->n; i++) {
        struct listing g = {0};
        ASSERT_EQ(xport_get(x, l->keys[i], 1, 0, on_get, &g), 0);
        ASSERT_EQ(xport_drain(x, 5000), 0);
        ASSERT(g.done);
        struct obj_header h;
        uint64_t f;
        if (obj_decode(g.copy, g.len, &h, NULL, NULL, err, sizeof(err)) != 0)
            TEST_FAIL_("%s: %s", l->keys[i], err);
        ASSERT(obj_key_parse(l->keys[i], "t/", &f));
        ASSERT_UEQ(h.first_seq, f);
        ASSERT_UEQ(h.first_seq, want);
        ASSERT_EQ(h.flags & OBJ_FLAG_EPOCH_START, i == 0 ? OBJ_FLAG_EPOCH_START : 0);
        want = h.last_seq + 1;
        free(g.copy);
        if (i == 0)
            continue;
        memmove(l->keys[data], l->keys[i], sizeof(l->keys[i]));
        l->first[data] = h.first_seq;
        l->last[data] = h.last_seq;
        data++;
    }
    l->n = data;
    ASSERT_UEQ(want - 1, last);
    test_xport_free(x);
    s3c_config_free(cfg);
    return l->n;
}

/* The seq range of the i-th data object (index 0 is the first after the control record;
 * index 1 in the tests below is the second data object). */
static void key_range(const struct listing *l, int i, uint64_t *first, uint64_t *last)
{
    ASSERT(i < l->n);
    *first = l->first[i];
    *last = l->last[i];
}

/* ---- subscribers ------------------------------------------------------------------- */

struct events {
    _Atomic uint64_t last;
    _Atomic int calls, errors, backwards;
};

static void on_durable(void *ctx, uint64_t w, int err)
{
    struct events *ev = ctx;
    if (err) {
        atomic_fetch_add(&ev->errors, 1);
        return;
    }
    if (w <= atomic_load(&ev->last))
        atomic_fetch_add(&ev->backwards, 1); /* moved back or stood still: a double ack */
    atomic_store(&ev->last, w);
    atomic_fetch_add(&ev->calls, 1);
}

/* ---- the triggers --------------------------------------------------------------------- */

/* Time: with a batch in flight (300 ms server latency), a trickle is sent as one batch
 * batch_timeout_ms after the last send, not held until the reply. */
static void trigger_time_with_trickle(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":200,\"batch_size_threshold\":1000,"
                               "\"max_in_flight_requests\":4,\"target_pool_size\":4");
    warm_then_faults(4, "{\"latency_ms\":600}");
    uint64_t t0 = s3c__now_ms();
    submit_n(st, 1, 10); /* nothing in flight: sent at once */
    wait_sent(st, 1);
    submit_n(st, 1, 10);
    sleep_ms(10);
    uint64_t last = submit_n(st, 1, 10);
    ASSERT_EQ(s3c_wait_durable(st, last, 5000), 0);
    uint64_t took = s3c__now_ms() - t0;
    ASSERT_LT(took, 1100); /* ~200 + 600; holding for the first reply would be 1200+ */
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    struct listing l;
    ASSERT_EQ(read_back(&l, 4), 2);
    uint64_t f, la;
    key_range(&l, 1, &f, &la);
    ASSERT_UEQ(f, 3);
    ASSERT_UEQ(la, 4);
    test_mock_stop(&mock);
}

/* Count: batch_size_threshold commits make a batch at once, whatever the timer says. */
static void trigger_count(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":10000,\"batch_size_threshold\":10,"
                               "\"max_in_flight_requests\":4,\"target_pool_size\":4");
    warm_then_faults(4, "{\"latency_ms\":200}");
    submit_n(st, 1, 10); /* sent alone: nothing was in flight */
    wait_sent(st, 1);
    uint64_t last = submit_n(st, 20, 10);
    uint64_t t0 = s3c__now_ms();
    ASSERT_EQ(s3c_wait_durable(st, last, 5000), 0);
    ASSERT_LT(s3c__now_ms() - t0, 2000); /* far sooner than the 10 s timer */
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    struct listing l;
    ASSERT_EQ(read_back(&l, 22), 3);
    uint64_t f, la;
    key_range(&l, 1, &f, &la);
    ASSERT_UEQ(f, 3);
    ASSERT_UEQ(la, 12);
    key_range(&l, 2, &f, &la);
    ASSERT_UEQ(f, 13);
    ASSERT_UEQ(la, 22);
    test_mock_stop(&mock);
}

/* Bytes: batch_bytes_threshold bytes make a batch; a commit that would pass it starts the
 * next one. */
static void trigger_bytes(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":10000,\"batch_size_threshold\":1000,"
                               "\"batch_bytes_threshold\":1000,"
                               "\"max_in_flight_requests\":4,\"target_pool_size\":4");
    warm_then_faults(4, "{\"latency_ms\":200}");
    submit_n(st, 1, 300); /* sent alone: nothing was in flight */
    wait_sent(st, 1);
    uint64_t last = submit_n(st, 6, 300);
    ASSERT_EQ(s3c_wait_durable(st, last, 5000), 0);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    struct listing l;
    ASSERT_EQ(read_back(&l, 8), 3); /* 2, then 3-5 and 6-8: three 300s fit in 1000 */
    uint64_t f, la;
    key_range(&l, 1, &f, &la);
    ASSERT_UEQ(f, 3);
    ASSERT_UEQ(la, 5);
    test_mock_stop(&mock);
}

/* Bytes, with nothing to rescue it: the first reply is 2 s away and the timer 10 s, so
 * the byte-full batch must go out on its own trigger, at once. */
static void trigger_bytes_alone(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":10000,\"batch_size_threshold\":1000,"
                               "\"batch_bytes_threshold\":100000,"
                               "\"max_in_flight_requests\":4,\"target_pool_size\":4");
    warm_then_faults(4, "{\"latency_ms\":2000}");
    submit_n(st, 1, 10); /* sent alone: nothing was in flight */
    wait_sent(st, 1);
    submit_n(st, 1, 30000); /* the thread wakes for it, then waits for more: */
    /* ... not for 999 more (the count), but for seq 5: three of 30000 fit in 100000
     * bytes, the fourth does not. Without the byte-aware wake it would sleep until some
     * other event (a libcurl timer, the first reply in 2 s). */
    ASSERT_WITHIN(5000, ring_armed_seq(st->ring) == 5);
    uint64_t t0 = s3c__now_ms();
    submit_n(st, 3, 30000); /* publishing seq 5 wakes it: the batch goes at once */
    wait_sent(st, 2);
    ASSERT_LT(s3c__now_ms() - t0, 1000); /* long before the first reply could wake it */
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    struct listing l;
    ASSERT_EQ(read_back(&l, 6), 3);
    uint64_t f, la;
    key_range(&l, 1, &f, &la);
    ASSERT_UEQ(f, 3);
    ASSERT_UEQ(la, 5);
    test_mock_stop(&mock);
}

/* Flow control: at max_in_flight_requests the thread waits for a reply, whatever the
 * timer says, so everything submitted meanwhile goes out as one batch. */
static void trigger_flow_control(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":1,\"batch_size_threshold\":1000,"
                               "\"max_in_flight_requests\":1,\"target_pool_size\":1");
    warm_then_faults(1, "{\"latency_ms\":250}");
    submit_n(st, 1, 10);
    for (int i = 0; i < 5; i++) {
        sleep_ms(20); /* each 1 ms timer would fire between these */
        submit_n(st, 1, 10);
    }
    struct s3c_stats s;
    s3c_stats_get(st, &s);
    ASSERT_LE(s.in_flight, 1);
    ASSERT_EQ(s3c_wait_durable(st, 7, 5000), 0);
    ASSERT_LE(put_count(200), 2); /* before close: its final flush adds the manifest's */
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    struct listing l;
    ASSERT_EQ(read_back(&l, 7), 2);
    uint64_t f, la;
    key_range(&l, 1, &f, &la);
    ASSERT_UEQ(f, 3);
    ASSERT_UEQ(la, 7);
    test_mock_stop(&mock);
}

/* ---- ordered acknowledgement ------------------------------------------------------------ */

/* The first batch is slow (800 ms), the next ones fast: they land first, yet the
 * watermark stays at 0 until the first is durable, then jumps over all of them. */
static void out_of_order_acked_in_order(void)
{
    start_mock();
    struct events ev = {0};
    s3c_stage *st = open_stage("\"batch_timeout_ms\":1,\"batch_size_threshold\":5,"
                               "\"max_in_flight_requests\":8,\"target_pool_size\":8");
    /* only log PUTs: a heartbeat or writer object taking the slow answer instead would
     * leave the batch fast once the fault is lifted */
    warm_then_faults(8, "{\"latency_ms\":800,\"key_prefix\":\"t/log/\"}");
    ASSERT_EQ(s3c_subscribe(st, on_durable, &ev), 0);
    submit_n(st, 5, 10); /* batch 1..5, slow */
    wait_delayed("latency", 1);
    mock_faults(&mock, "{\"latency_ms\":0}");
    uint64_t last = submit_n(st, 20, 10);     /* four fast batches */
    ASSERT_WITHIN(5000, put_count(200) >= 5); /* the later batches are stored ... */
    ASSERT_UEQ(s3c_durable_seq(st),
               1); /* ... but nothing past the control record is acknowledged */
    ASSERT_EQ(atomic_load(&ev.calls), 0);
    ASSERT_EQ(s3c_wait_durable(st, last, 5000), 0);
    ASSERT_UEQ(s3c_durable_seq(st), last);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    ASSERT_EQ(atomic_load(&ev.backwards), 0);
    ASSERT_UEQ(atomic_load(&ev.last), last);
    ASSERT_EQ(atomic_load(&ev.errors), 0);
    struct listing l;
    ASSERT_GE(read_back(&l, last), 5); /* a slow machine may split a batch on its timer */
    test_mock_stop(&mock);
}

/* Random latency on many batches in flight: acknowledgements never go backwards or
 * repeat, and everything arrives. */
static void jittered_many_in_flight(void)
{
    start_mock();
    struct events ev = {0};
    s3c_stage *st = open_stage("\"batch_timeout_ms\":1,\"batch_size_threshold\":50,"
                               "\"max_in_flight_requests\":8,\"target_pool_size\":16");
    warm_then_faults(16, "{\"latency_ms\":1,\"latency_jitter_ms\":40}");
    ASSERT_EQ(s3c_subscribe(st, on_durable, &ev), 0);
    uint64_t last = submit_n(st, 5000, 100);
    ASSERT_EQ(s3c_wait_durable(st, last, 20000), 0);
    struct s3c_stats s;
    s3c_stats_get(st, &s);
    uint64_t n = last - 1; /* seq 1 is the stage's control record */
    ASSERT_UEQ(s.commits_durable, n);
    ASSERT_UEQ(s.bytes_durable, n * 100);
    /* one commit in 16 of this thread is timed: n, give or take the thread's earlier ones */
    ASSERT_GE(s.ack_latency_count, n / 16 - 1);
    ASSERT_LE(s.ack_latency_count, n / 16 + 1);
    ASSERT_UEQ(s.batch_commits_sum, n); /* every batch succeeded exactly once */
    ASSERT_UEQ(s.writes_saved, n - s.batches_sent);
    ASSERT_GT(s.writes_saved, n / 2); /* 5000 commits went out in far fewer PUTs */
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    ASSERT_EQ(atomic_load(&ev.backwards), 0);
    ASSERT_UEQ(atomic_load(&ev.last), last);
    struct listing l;
    read_back(&l, last);
    test_mock_stop(&mock);
}

/* A slow first batch holds later, succeeded ones in the ring (in-order release). When the
 * ring holds all it can, the thread must sleep until a reply, not spin. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void held_batches_do_not_spin(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":1,\"batch_size_threshold\":10,"
                               "\"max_in_flight_requests\":2,\"target_pool_size\":2");
    warm_then_faults(2, "{\"latency_ms\":9000,\"key_prefix\":\"t/log/\"}");
    /* one commit, one batch, slow: only log PUTs are delayed, so a pool heartbeat cannot
     * take the delay and let the batch through fast; 9 s, so a loaded sanitized run still
     * sees the others pile up behind it (up to 5 s below) before it lands. One commit, not
     * ten: on a loaded machine ten could split into two batches at the 1 ms timeout, both
     * slow, holding both request slots so that nothing piled up (a flake seen at load 8). */
    submit_n(st, 1, 10);
    wait_delayed("latency", 1);
    mock_faults(&mock, "{\"latency_ms\":0}");
    uint64_t last = submit_n(st, 200, 10); /* fast batches pile up behind it ... */
    /* ... until the ring holds all it can: its 8 batches (4 per request in flight), the
     * slow one and 7 stored ones. */
    ASSERT_WITHIN(5000, put_count(200) >= 8);
    ASSERT_UEQ(s3c_durable_seq(st), 1);
    double c0 = cpu_s();
    sleep_ms(500);
    double used = cpu_s() - c0;
    ASSERT_LT(used * 1000, 150); /* a spinning thread would burn ~500 ms here */
    ASSERT_EQ(s3c_wait_durable(st, last, 20000), 0);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    struct listing l;
    read_back(&l, last);
    test_mock_stop(&mock);
}

/* ---- retries ------------------------------------------------------------------------------ */

/* Fails twice (503), then succeeds: acknowledged once, in place, one object. */
static void fails_twice_then_succeeds(void)
{
    start_mock();
    struct events ev = {0};
    s3c_stage *st = open_stage("\"batch_timeout_ms\":5,\"max_retry_attempts\":3,"
                               "\"retry_base_delay_ms\":150,\"max_in_flight_requests\":2,"
                               "\"target_pool_size\":2");
    warm_then_faults(2, "{\"error_rate\":1,\"error_status\":503}");
    ASSERT_EQ(s3c_subscribe(st, on_durable, &ev), 0);
    uint64_t last = submit_n(st, 1, 10); /* one batch: attempts are countable */
    ASSERT_WITHIN(5000, put_count(503) >= 2);
    mock_faults(&mock, "{\"error_rate\":0}");
    ASSERT_EQ(s3c_wait_durable(st, last, 5000), 0);
    struct s3c_stats s;
    s3c_stats_get(st, &s);
    /* Jitter may squeeze in one more 503 before the fault is lifted. */
    ASSERT_GE(put_count(503), 2);
    ASSERT_UEQ(s.retries, (uint64_t)put_count(503));
    ASSERT_UEQ(s.failures_retryable, (uint64_t)put_count(503));
    ASSERT_UEQ(s.batches_sent, 1);
    ASSERT_EQ(put_count(200), 1);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    ASSERT_EQ(atomic_load(&ev.calls), 1);
    ASSERT_UEQ(atomic_load(&ev.last), last);
    struct listing l;
    ASSERT_EQ(read_back(&l, last), 1);
    test_mock_stop(&mock);
}

/* Retries run out: the stage fails, never acknowledges past the batch, refuses new
 * commits, tells waiters and subscribers, and close names the lost seqs. */
static void exhausted_retries_fail_stage(void)
{
    start_mock();
    struct events ev = {0};
    s3c_stage *st = open_stage("\"batch_timeout_ms\":5,\"max_retry_attempts\":2,"
                               "\"retry_base_delay_ms\":10,\"max_in_flight_requests\":2,"
                               "\"target_pool_size\":2");
    ASSERT_EQ(s3c_subscribe(st, on_durable, &ev), 0);
    uint64_t good = submit_n(st, 4, 10);
    ASSERT_EQ(s3c_wait_durable(st, good, 5000), 0);
    struct s3c_stats s0; /* the good commits took one PUT, or more when slow (TSan) */
    s3c_stats_get(st, &s0);
    mock_faults(&mock, "{\"error_rate\":1,\"error_status\":500}");
    uint64_t last = submit_n(st, 1, 10); /* one batch, so attempts are countable */
    ASSERT_EQ(s3c_wait_durable(st, last, 5000), S3C_EFAILED);
    ASSERT_UEQ(s3c_durable_seq(st), good);
    uint64_t seq;
    ASSERT_EQ(s3c_submit(st, "x", 1, 100, &seq), S3C_EFAILED);
    ASSERT_EQ(atomic_load(&ev.errors), 1);
    struct s3c_stats s;
    s3c_stats_get(st, &s);
    ASSERT_EQ(s.failed, 1);
    ASSERT_UEQ(s.put_attempts - s0.put_attempts, 3); /* the failing batch: 1 + 2 retries */
    ASSERT_UEQ(s.retries, 2);
    ASSERT(strstr(s.last_error, "InternalError") || strstr(s.last_error, "500"));
    struct s3c_close_report rep;
    ASSERT_EQ(s3c_stage_close(st, &rep), S3C_EFAILED);
    ASSERT_UEQ(rep.durable_seq, good);
    ASSERT_UEQ(rep.lost_first_seq, good + 1);
    ASSERT_UEQ(rep.lost_last_seq, last);
    test_mock_stop(&mock);
}

/* A 403 is not retried: one attempt, then failed. */
static void wrong_secret_is_fatal(void)
{
    const char *args[] = {"--access-key", AK, "--secret-key", "another-secret", NULL};
    ASSERT_EQ(test_mock_start(&mock, args), 0);
    s3c_config *cfg = mkcfg("\"max_retry_attempts\":3,\"retry_base_delay_ms\":10");
    s3c_stage *st = NULL;
    char err[512];
    /* The writer protocol's first request (the manifest) meets the refusal: open fails at
     * once (no retries for a 403), naming the fix and never the secret. */
    ASSERT_EQ(s3c_stage_open(cfg, &st, err, sizeof(err)), S3C_ES3);
    ASSERT(st == NULL);
    ASSERT(strstr(err, "SignatureDoesNotMatch"));
    ASSERT(strstr(err, "s3.secret_access_key"));
    ASSERT(!strstr(err, SK));
    ASSERT_EQ(mock_op_count(&mock, "GetObject", 403), 1);
    s3c_config_free(cfg);
    test_mock_stop(&mock);
}

/* Stored, then answered 500 (the ambiguous case): re-sent to the same key, the 412 read
 * back as our own attempt, one object, no failure. */
static void written_error_resent_same_key(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":5,\"retry_base_delay_ms\":100,"
                               "\"max_in_flight_requests\":1,\"target_pool_size\":1");
    warm_then_faults(1, "{\"written_error_rate\":1}");
    uint64_t last = submit_n(st, 1, 10); /* one batch: PUTs are countable */
    ASSERT_WITHIN(5000, put_count(500) >= 1);
    mock_faults(&mock, "{\"written_error_rate\":0}");
    ASSERT_EQ(s3c_wait_durable(st, last, 5000), 0);
    struct s3c_stats s;
    s3c_stats_get(st, &s);
    /* The first PUT was stored and answered 500; the retry's If-None-Match found the key
     * taken (412), read it back, found our own bytes: success, with no second copy. */
    ASSERT_EQ(put_count(500), 1);
    ASSERT_UEQ(s.retries, 1);
    ASSERT_EQ(put_count(200), 0);
    ASSERT_EQ(put_count(412), 1);
    ASSERT_UEQ(s.settled_ours, 1);
    ASSERT_UEQ(s.batches_sent, 1);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    struct listing l;
    ASSERT_EQ(read_back(&l, last), 1); /* one key, written twice */
    test_mock_stop(&mock);
}

/* ---- close ------------------------------------------------------------------------------- */

static void close_drains(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":50,\"batch_size_threshold\":200,"
                               "\"max_in_flight_requests\":4,\"target_pool_size\":4");
    warm_then_faults(4, "{\"latency_ms\":30}");
    uint64_t last = submit_n(st, 3000, 64);
    struct s3c_close_report rep;
    ASSERT_EQ(s3c_stage_close(st, &rep), 0); /* close right away: it must send it all */
    ASSERT_UEQ(rep.durable_seq, last);
    ASSERT_UEQ(rep.last_seq, last);
    ASSERT_UEQ(rep.lost_first_seq, 0);
    struct listing l;
    read_back(&l, last);
    test_mock_stop(&mock);
}

static void close_against_stall_is_bounded(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":5,\"shutdown_timeout_ms\":700,"
                               "\"max_in_flight_requests\":2,\"target_pool_size\":2");
    uint64_t good = submit_n(st, 2, 10);
    ASSERT_EQ(s3c_wait_durable(st, good, 5000), 0);
    mock_faults(&mock, "{\"stall_rate\":1}");
    uint64_t last = submit_n(st, 10, 10);
    wait_delayed("stall", 1); /* close finds a PUT stalled on the wire */
    uint64_t t0 = s3c__now_ms();
    struct s3c_close_report rep;
    ASSERT_EQ(s3c_stage_close(st, &rep), S3C_ETIMEDOUT);
    uint64_t took = s3c__now_ms() - t0;
    ASSERT_GE(took, 650);
    ASSERT_LT(took, 2000);
    ASSERT_UEQ(rep.durable_seq, good);
    ASSERT_UEQ(rep.lost_first_seq, good + 1);
    ASSERT_UEQ(rep.lost_last_seq, last);
    test_mock_stop(&mock);
}

/* ---- API edges -------------------------------------------------------------------------- */

static void api_edges(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":5");
    char big[65537];
    uint64_t seq;
    memset(big, 1, sizeof(big));
    ASSERT_EQ(s3c_submit(st, big, sizeof(big), 100, &seq), S3C_ETOOBIG);
    ASSERT_EQ(s3c_submit(st, big, 0, 100, &seq), 0); /* an empty commit is a commit */
    ASSERT_UEQ(seq, 2);
    ASSERT_EQ(s3c_try_submit(st, big, 100, &seq), 0);
    ASSERT_UEQ(seq, 3);
    ASSERT_EQ(s3c_wait_durable(st, 3, 5000), 0);
    ASSERT_EQ(s3c_wait_durable(st, 4, 50), S3C_ETIMEDOUT);
    ASSERT_EQ(s3c_subscribe(st, NULL, NULL), S3C_EINVAL);
    ASSERT_EQ(s3c_stage_drain(st, NULL), 0);
    ASSERT_EQ(s3c_submit(st, big, 10, 100, &seq), S3C_ECLOSED);
    ASSERT_EQ(s3c_wait_durable(st, 4, 1000), S3C_ECLOSED);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    s3c_stage_close(NULL, NULL);
    struct listing l;
    read_back(&l, 3);
    test_mock_stop(&mock);
}

/* Several producer threads and a waiter per commit batch, closed with drain-then-close. */
struct prod {
    s3c_stage *st;
    int n;
    uint64_t max_seq;
};

static void *producer(void *p)
{
    struct prod *a = p;
    char buf[200];
    for (int i = 0; i < a->n; i++) {
        uint64_t seq;
        memset(buf, i, sizeof(buf));
        ASSERT_EQ(s3c_submit(a->st, buf, 50 + (size_t)(i % 150), -1, &seq), 0);
        if (seq > a->max_seq)
            a->max_seq = seq;
        if (i % 500 == 0)
            ASSERT_EQ(s3c_wait_durable(a->st, seq, 10000), 0);
    }
    return NULL;
}

static void producers_threads(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":2,\"batch_size_threshold\":300");
    struct prod a[3] = {{st, 4000, 0}, {st, 4000, 0}, {st, 4000, 0}};
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, producer, &a[i]);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    struct s3c_close_report rep;
    ASSERT_EQ(s3c_stage_drain(st, &rep), 0);
    ASSERT_UEQ(rep.durable_seq, 12001);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    struct listing l;
    read_back(&l, 12001);
    test_mock_stop(&mock);
}

int main(void)
{
    unsetenv("AWS_PROFILE");
    if (getenv("S3C_TEST_LOG")) /* S3C_TEST_LOG=1 shows the stage's debug log */
        s3c_set_log(s3c_log_stderr, NULL, S3C_LOG_DEBUG);
    RUN(api_edges);
    RUN(trigger_time_with_trickle);
    RUN(trigger_count);
    RUN(trigger_bytes);
    RUN(trigger_bytes_alone);
    RUN(trigger_flow_control);
    RUN(out_of_order_acked_in_order);
    RUN(jittered_many_in_flight);
    RUN(held_batches_do_not_spin);
    RUN(fails_twice_then_succeeds);
    RUN(exhausted_retries_fail_stage);
    RUN(wrong_secret_is_fatal);
    RUN(written_error_resent_same_key);
    RUN(close_drains);
    RUN(close_against_stall_is_bounded);
    RUN(producers_threads);
    return 0;
}
