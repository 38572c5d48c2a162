/* kill -9 of `s3commit run` under load, ten times on one prefix, then the log read back
 * object by object: every seq a run printed durable is on the chain once, with the bytes
 * that run sent for it, and the epochs along the chain only grow. The moments of the
 * kills come from a seeded RNG (S3C_KILL_SEED to replay one); two of the ten may fall
 * inside the open (the epoch, the fence). The mock answers in 5-20 ms and refuses one
 * request in ten with 503, so a kill leaves gaps and orphans for the next run to pass.
 * Every process started here is stopped by pid. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "format/objfmt.h"
#include "mockproc.h"
#include "proc.h"
#include "support/xport_loop.h"
#include "test.h"

#define KR_RUNS 10
#define KR_MAX_COMMITS 8000 /* per run: more than KR_RATE_PER_MS feeds in the longest run */
#define KR_RATE_PER_MS 4    /* commits fed per millisecond once the run is up: 4000/s */
#define KR_KILL_MIN_MS 50   /* kill -9 this long after the first line (or start), earliest */
#define KR_KILL_SPAN_MS 451 /* ... and at the latest KR_KILL_MIN_MS + KR_KILL_SPAN_MS - 1 */
#define KR_OPEN_MS 10000    /* a run that is not open by then has failed */
#define KR_PREFIX "kill/"
#define KR_MAX_SEQ (KR_RUNS * (KR_MAX_COMMITS + 1) + 2)

static char tmpdir[256];
static char bin_s3commit[512];

/* What one run told us on stdout before it died. */
struct kr_run {
    bool header; /* the first line arrived: the stage was open */
    uint64_t epoch, recovered_seq, control_seq, first_seq;
    uint64_t max_durable;  /* the highest {"durable_seq":N} printed (0: none) */
    uint32_t fed;          /* whole frames written to its stdin */
    uint64_t killed_at_ms; /* after the start */
};

static struct kr_run runs[KR_RUNS];

/* What the chain holds at each seq: the run and the commit index the bytes name. */
static int16_t at_run[KR_MAX_SEQ + 1]; /* -1: a control record; -2: nothing */
static uint32_t at_index[KR_MAX_SEQ + 1];
static uint8_t seen[KR_RUNS][KR_MAX_COMMITS];

static uint64_t kr_rng;

static uint64_t kr_rand(void) /* splitmix64 */
{
    uint64_t z = (kr_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The bytes of commit i of run r: a readable name of both, then 0..299 filler bytes that
 * depend on both too. Returns the length; out holds at least 400 bytes. */
static uint32_t kr_commit(int r, uint32_t i, char *out)
{
    int n = snprintf(out, 64, "run %02d commit %07" PRIu32 "|", r, i);
    uint32_t extra = ((uint32_t)r * 7919u + i * 104729u) % 300u;
    for (uint32_t j = 0; j < extra; j++)
        out[(uint32_t)n + j] = (char)('a' + ((uint32_t)r + i + j) % 26);
    return (uint32_t)n + extra;
}

/* Parses what run r printed: the first line, then watermarks that only go up. */
static void kr_parse_stdout(struct kr_run *k, const char *out)
{
    if (strncmp(out, "{\"epoch\":", 9) == 0) {
        ASSERT_EQ(sscanf(out,
                         "{\"epoch\":%" SCNu64 ",\"recovered_seq\":%" SCNu64
                         ",\"control_seq\":%" SCNu64 ",\"first_seq\":%" SCNu64 "}",
                         &k->epoch, &k->recovered_seq, &k->control_seq, &k->first_seq),
                  4);
        k->header = true;
    }
    for (const char *p = out; (p = strstr(p, "{\"durable_seq\":")) != NULL; p += 15) {
        uint64_t v = strtoull(p + 15, NULL, 10);
        ASSERT(k->header); /* no watermark before the first line */
        ASSERT(v > k->max_durable);
        k->max_durable = v;
    }
    if (k->header) {
        ASSERT_UEQ(k->control_seq, k->recovered_seq + 1);
        ASSERT_UEQ(k->first_seq, k->recovered_seq + 2);
        /* a watermark covers only seqs this run gave out: its control record and the
         * commits it was fed */
        if (k->max_durable)
            ASSERT(k->max_durable >= k->control_seq && k->max_durable < k->first_seq + k->fed);
    }
}

/* One run: start, feed commits at KR_RATE_PER_MS from its first line on, kill -9
 * kill_after_ms after its first line (from_open) or after its start (it may die inside the
 * writer protocol of the open), collect what it printed. */
static void kr_one_run(int r, const char *cfg, uint64_t kill_after_ms, bool from_open)
{
    static char payload[512];
    static size_t ends[KR_MAX_COMMITS]; /* byte offset after frame i */
    struct buf in = {0};
    struct proc p;
    struct kr_run *k = &runs[r];

    for (uint32_t i = 0; i < KR_MAX_COMMITS; i++) {
        buf_frame(&in, payload, kr_commit(r, i, payload));
        ends[i] = in.len;
    }
    proc_start(&p, (const char *[]){bin_s3commit, "run", "--config", cfg, NULL});
    uint64_t t0 = now_ms(), kill_at = from_open ? UINT64_MAX : t0 + kill_after_ms, fed_from = 0;
    size_t sent = 0;
    while (now_ms() < kill_at) {
        if (!fed_from && p.o.p && strchr(p.o.p, '\n')) {
            fed_from = now_ms(); /* the stage is open: the steady feed starts */
            if (from_open)
                kill_at = fed_from + kill_after_ms;
        }
        if (!fed_from && now_ms() - t0 > KR_OPEN_MS)
            TEST_FAIL_("run %d did not open within %d ms; stderr: %s", r, KR_OPEN_MS,
                       p.e.p ? p.e.p : "");
        size_t due = 0;
        if (fed_from) {
            uint64_t n = (now_ms() - fed_from + 1) * KR_RATE_PER_MS;
            due = ends[n < KR_MAX_COMMITS ? n - 1 : KR_MAX_COMMITS - 1];
        }
        uint64_t left = kill_at - now_ms();
        int slice = left < 1 ? 1 : left > 2 ? 2 : (int)left;
        if (due > sent)
            sent += proc_pump(&p, in.p + sent, due - sent, slice);
        else
            proc_pump(&p, NULL, 0, slice);
        ASSERT(p.in >= 0); /* the run is alive and reading until we kill it */
    }
    ASSERT_EQ(kill(p.pid, SIGKILL), 0);
    k->killed_at_ms = now_ms() - t0;
    ASSERT_EQ(proc_wait(&p, 10000), 128 + SIGKILL);
    while (k->fed < KR_MAX_COMMITS && ends[k->fed] <= sent)
        k->fed++;
    kr_parse_stdout(k, p.o.p);
    fprintf(stderr,
            "   run %d: killed %" PRIu64 " ms after its start, %s epoch %" PRIu64
            " recovered %" PRIu64 " first_seq %" PRIu64 ", fed %" PRIu32 ", durable_seq %" PRIu64
            "\n",
            r, k->killed_at_ms, k->header ? "open:" : "NOT open (killed during the open)", k->epoch,
            k->recovered_seq, k->first_seq, k->fed, k->max_durable);
    if (!k->header && p.e.len)
        fprintf(stderr, "   its stderr: %s\n", p.e.p);
    proc_free(&p);
    buf_free(&in);
}

/* ---- reading the log back ----------------------------------------------------------- */

struct kr_list {
    char (*keys)[OBJ_KEY_MAX];
    size_t n, cap;
    bool done, truncated;
};

static void kr_on_list(void *ctx, const struct xport_result *res)
{
    struct kr_list *l = ctx;
    if (res->cls != XPORT_OK)
        TEST_FAIL_("list: %s", res->error);
    for (size_t i = 0; i < res->nentries; i++) {
        if (l->n == l->cap) {
            l->cap = l->cap ? l->cap * 2 : 1024;
            l->keys = realloc(l->keys, l->cap * sizeof(*l->keys));
            ASSERT(l->keys != NULL);
        }
        snprintf(l->keys[l->n++], OBJ_KEY_MAX, "%s", res->entries[i].key);
    }
    l->truncated = res->truncated;
    l->done = true;
}

struct kr_get {
    char *body;
    size_t len;
    bool done;
};

static void kr_on_get(void *ctx, const struct xport_result *res)
{
    struct kr_get *g = ctx;
    if (res->cls != XPORT_OK)
        TEST_FAIL_("get: %s", res->error);
    g->body = malloc(res->body_len + 1);
    ASSERT(g->body != NULL);
    memcpy(g->body, res->body, res->body_len);
    g->body[res->body_len] = '\0';
    g->len = res->body_len;
    g->done = true;
}

/* Each data record: its bytes name a run and an index; they must be that commit's bytes
 * exactly, the seq the one that run gave it, and the commit on the chain only once. */
static int kr_on_record(void *ctx, uint64_t seq, const void *payload, uint32_t len)
{
    (void)ctx;
    static char want[512];
    int r;
    uint32_t i;
    ASSERT(seq <= KR_MAX_SEQ);
    if (sscanf(payload, "run %2d commit %7" SCNu32 "|", &r, &i) != 2 || r < 0 || r >= KR_RUNS ||
        i >= KR_MAX_COMMITS)
        TEST_FAIL_("seq %" PRIu64 ": bytes that no run sent: %.*s", seq, (int)(len < 40 ? len : 40),
                   (const char *)payload);
    uint32_t n = kr_commit(r, i, want);
    if (len != n || memcmp(payload, want, n) != 0)
        TEST_FAIL_("seq %" PRIu64 ": the bytes of run %d commit %" PRIu32 " differ", seq, r, i);
    if (!runs[r].header)
        TEST_FAIL_("seq %" PRIu64 ": a commit of run %d, which never printed its first line", seq,
                   r);
    if (seq != runs[r].first_seq + i)
        TEST_FAIL_("seq %" PRIu64 " holds run %d commit %" PRIu32 ", which should be at %" PRIu64,
                   seq, r, i, runs[r].first_seq + i);
    if (seen[r][i]++)
        TEST_FAIL_("run %d commit %" PRIu32 " is on the chain twice", r, i);
    at_run[seq] = (int16_t)r;
    at_index[seq] = i;
    return 0;
}

struct kr_chain {
    uint64_t last_seq, commits, controls, objects, off_chain;
    uint64_t epochs[64];
    size_t nepochs;
};

/* Lists the log, follows the chain from seq 1 (the object after one ending at L is at
 * log/<L+1>; one of an epoch below the last EPOCH_START ends it) and decodes every object
 * on it. Keys off the chain are counted, not read. */
static void kr_read_back(const char *cfg_path, struct kr_chain *c)
{
    s3c_config *cfg = NULL;
    char err[512];
    if (s3c_config_load(cfg_path, &cfg, err, sizeof(err)) != 0)
        TEST_FAIL_("config: %s", err);
    struct xport *x = test_xport_new(cfg, err, sizeof(err));
    if (!x)
        TEST_FAIL_("xport: %s", err);
    struct kr_list l = {0};
    do { /* page by page, each starting after the last key of the one before */
        l.done = false;
        ASSERT_EQ(xport_list(x, KR_PREFIX "log/", l.n ? l.keys[l.n - 1] : NULL, NULL, 1000,
                             kr_on_list, &l),
                  0);
        ASSERT_EQ(xport_drain(x, 10000), 0);
        ASSERT(l.done);
    } while (l.truncated);

    for (size_t s = 0; s <= KR_MAX_SEQ; s++)
        at_run[s] = -2;
    memset(c, 0, sizeof(*c));
    uint64_t next = 1, start_epoch = 0;
    bool ended = false;
    for (size_t i = 0; i < l.n; i++) {
        uint64_t first;
        ASSERT(obj_key_parse(l.keys[i], KR_PREFIX, &first));
        if (ended || first != next) {
            c->off_chain++; /* an orphan inside a range, or past the end */
            if (first > next)
                ended = true;
            continue;
        }
        struct kr_get g = {0};
        struct obj_header h;
        ASSERT_EQ(xport_get(x, l.keys[i], 1, 0, kr_on_get, &g), 0);
        ASSERT_EQ(xport_drain(x, 10000), 0);
        ASSERT(g.done);
        if (obj_header_decode(g.body, g.len, &h, NULL, err, sizeof(err)) != 0)
            TEST_FAIL_("%s: %s", l.keys[i], err);
        if (h.epoch < start_epoch) { /* a fenced writer's object on the chain: its end */
            c->off_chain++;
            ended = true;
            free(g.body);
            continue;
        }
        bool control = h.flags & OBJ_FLAG_EPOCH_START;
        if (obj_decode(g.body, g.len, &h, control ? NULL : kr_on_record, NULL, err, sizeof(err)) !=
            0)
            TEST_FAIL_("%s: %s", l.keys[i], err);
        free(g.body);
        ASSERT_UEQ(h.first_seq, first);
        if (control) {
            if (h.epoch <= start_epoch)
                TEST_FAIL_("%s: EPOCH_START of epoch %" PRIu64 " after epoch %" PRIu64, l.keys[i],
                           h.epoch, start_epoch);
            start_epoch = h.epoch;
            ASSERT(c->nepochs < 64);
            c->epochs[c->nepochs++] = h.epoch;
            at_run[h.first_seq] = -1;
            c->controls++;
        } else {
            if (h.epoch != start_epoch)
                TEST_FAIL_("%s: epoch %" PRIu64 " without its EPOCH_START (the last: %" PRIu64 ")",
                           l.keys[i], h.epoch, start_epoch);
            c->commits += h.count;
        }
        c->objects++;
        c->last_seq = h.last_seq;
        next = h.last_seq + 1;
    }
    fprintf(stderr,
            "   read back: %zu keys, %" PRIu64 " on the chain (seqs 1..%" PRIu64 ", %" PRIu64
            " commits, %" PRIu64 " control records), %" PRIu64 " off it\n",
            l.n, c->objects, c->last_seq, c->commits, c->controls, c->off_chain);
    free(l.keys);
    test_xport_free(x);
    s3c_config_free(cfg);
}

static void test_kill_restart(void)
{
    uint64_t t_start = now_ms();
    const char *env = getenv("S3C_KILL_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
    kr_rng = seed;
    fprintf(stderr, "   seed %" PRIu64 " (S3C_KILL_SEED=%" PRIu64 " replays these kills)\n", seed,
            seed);

    char mseed[32];
    snprintf(mseed, sizeof(mseed), "%" PRIu64, seed % 1000000007u);
    /* 5-20 ms a request, and one in ten refused with 503 (not stored): PUTs retried at the
     * kill leave gaps, so later runs meet objects off the chain (orphans, beyond the end). */
    const char *margs[] = {"--latency-ms",
                           "5",
                           "--latency-jitter-ms",
                           "15",
                           "--error-rate",
                           "0.1",
                           "--error-status",
                           "503",
                           "--seed",
                           mseed,
                           NULL};
    struct mockproc m;
    ASSERT_EQ(mockproc_start(&m, margs), 0);
    track_child(m.pid);

    char cfg[512], text[2048];
    snprintf(cfg, sizeof(cfg), "%s/kill.json", tmpdir);
    snprintf(text, sizeof(text),
             "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"" KR_PREFIX "\"},\n"
             " \"persistence\":{\"batch_timeout_ms\":2,\"max_in_flight_requests\":8,"
             "\"retry_base_delay_ms\":20,\"max_retry_attempts\":10},\n"
             " \"log\":{\"level\":\"warn\"}}\n",
             m.endpoint);
    write_file(cfg, text);

    for (int r = 0; r < KR_RUNS; r++) {
        /* Most runs die under load; every fifth (4 and 9) may die inside its open. */
        bool from_open = r % 5 != 4;
        kr_one_run(r, cfg, KR_KILL_MIN_MS + kr_rand() % KR_KILL_SPAN_MS, from_open);
        struct kr_run *k = &runs[r];
        if (!k->header)
            continue;
        /* the run found the end of the log at or past everything acknowledged before */
        for (int q = 0; q < r; q++) {
            if (!runs[q].header)
                continue;
            ASSERT(k->epoch > runs[q].epoch);
            ASSERT(k->recovered_seq >= runs[q].max_durable);
        }
    }

    /* Read back at full speed and without errors: the faults were for the runs. */
    char out[4096];
    ASSERT_EQ(mockproc_http(&m, "PUT", "/_mock/faults",
                            "{\"latency_ms\":0,\"latency_jitter_ms\":0,\"error_rate\":0}", out,
                            sizeof(out)),
              200);
    struct kr_chain c;
    kr_read_back(cfg, &c);

    /* Every seq a run printed durable is on the chain, holding that run's commit. */
    int opened = 0;
    uint64_t acked = 0;
    for (int r = 0; r < KR_RUNS; r++) {
        struct kr_run *k = &runs[r];
        if (!k->header)
            continue;
        opened++;
        bool found = false;
        for (size_t e = 0; e < c.nepochs; e++)
            found |= c.epochs[e] == k->epoch;
        if (!found)
            TEST_FAIL_("run %d's epoch %" PRIu64 " is not on the chain", r, k->epoch);
        ASSERT(k->control_seq <= c.last_seq);
        ASSERT_EQ(at_run[k->control_seq], -1);
        for (uint64_t s = k->first_seq; s <= k->max_durable; s++) {
            if (s > c.last_seq || at_run[s] != r || at_index[s] != s - k->first_seq)
                TEST_FAIL_("run %d printed durable_seq %" PRIu64 " but seq %" PRIu64
                           " is not its commit %" PRIu64 " on the chain",
                           r, k->max_durable, s, s - k->first_seq);
            acked++;
        }
    }
    /* The chain's epochs only grow (checked while reading); with every run open they are
     * exactly the runs' epochs, 1..KR_RUNS. */
    if (opened == KR_RUNS) {
        ASSERT_EQ(c.nepochs, KR_RUNS);
        for (int r = 0; r < KR_RUNS; r++) {
            ASSERT_UEQ(c.epochs[r], (uint64_t)r + 1);
            ASSERT_UEQ(runs[r].epoch, (uint64_t)r + 1);
        }
    }
    fprintf(stderr, "   %d of %d runs opened; %" PRIu64 " acknowledged commits all on the chain\n",
            opened, KR_RUNS, acked);
    ASSERT_GT(opened, 0);

    /* s3commit verify agrees: a sound chain, the same commits, control records, epochs. */
    struct proc p;
    const char *argv[] = {bin_s3commit, "verify", "--config", cfg, NULL};
    int code = run(argv, NULL, &p, 30000);
    if (code != 0)
        fprintf(stderr, "verify stdout: %s\nstderr: %s\n", p.o.p, p.e.p);
    ASSERT_EQ(code, 0);
    cJSON *sum = cJSON_Parse(p.o.p);
    ASSERT(sum != NULL);
    ASSERT(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sum, "ok")));
    ASSERT_EQ(cJSON_GetObjectItemCaseSensitive(sum, "orphans")->valuedouble +
                  cJSON_GetObjectItemCaseSensitive(sum, "beyond_end")->valuedouble,
              (double)c.off_chain);
    ASSERT_EQ(cJSON_GetObjectItemCaseSensitive(sum, "commits")->valuedouble, (double)c.commits);
    ASSERT_EQ(cJSON_GetObjectItemCaseSensitive(sum, "control_records")->valuedouble,
              (double)c.controls);
    ASSERT_EQ(cJSON_GetObjectItemCaseSensitive(sum, "last_seq")->valuedouble, (double)c.last_seq);
    const cJSON *epochs = cJSON_GetObjectItemCaseSensitive(sum, "epochs");
    ASSERT_EQ(cJSON_GetArraySize(epochs), (int)c.nepochs);
    for (size_t e = 0; e < c.nepochs; e++)
        ASSERT_EQ(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(epochs, (int)e), "epoch")
                      ->valuedouble,
                  (double)c.epochs[e]);
    cJSON_Delete(sum);
    proc_free(&p);
    untrack_child(m.pid);
    mockproc_stop(&m);
    fprintf(stderr, "   the whole test took %" PRIu64 " ms\n", now_ms() - t_start);
}

int main(void)
{
    proc_test_init("kill", bin_s3commit, sizeof(bin_s3commit), tmpdir, sizeof(tmpdir));
    RUN(test_kill_restart);
    proc_test_done(tmpdir);
    return 0;
}
