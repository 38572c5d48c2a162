/* bench-stage: the persistence stage end to end against s3commit-mock --store none on
 * 127.0.0.1 (started and stopped by pid). Prints JSON lines: peak commits/s and MB/s
 * acknowledged and p50/p99/p999 commit-to-durable latency at half of peak load beside the
 * target (batch_timeout_ms + the server's p99 + 1 ms), each with conditional writes on
 * (If-None-Match on every PUT, the writer protocol) and off, and their ratio; with 20 ms of
 * injected server latency, throughput at max_in_flight_requests 1, 4, 16, 64 beside
 * Little's law (k x batch / 20 ms); and the open time of a log of 100,000 objects (a
 * memory-store mock) with a current manifest and without one; and s3.compression (none,
 * zstd level 1 and 3) on JSON-like and on random commits: bytes sent per commit byte,
 * commits/s, the persistence thread's CPU share and payload per CPU-second of it.
 * And 1 MiB objects at 8 and 16 in flight on a mock with 10 ms of latency, PUT/s beside
 * wrk's on the same mock (large_objects). And small: 128-byte commits from two producers
 * through the stage beside the ring alone (issue 16 target 3: the stage at >= 0.5 of it),
 * with CPU per commit of each.
 * `bench-stage [seconds] [case]` runs one case (peak, latency_20ms, open, compression,
 * large_objects, small; small_ring / small_stage one side of it, for perf) when named.
 * Every run is bounded in time. Never run by make test. */
#include <dirent.h>
#include <poll.h>
#include <unistd.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common/clock.h"
#include "mockproc.h"
#include "s3commit.h"
#include "support/mockstats.h"
#include "support/xport_loop.h"
#include "transport/transport.h"
#include "wrk.h"

static struct mockproc mock;

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    nanosleep(&ts, NULL);
}

static void faults(const char *json)
{
    char out[4096];
    if (mockproc_http(&mock, "PUT", "/_mock/faults", json, out, sizeof(out)) != 200) {
        fprintf(stderr, "bench-stage: cannot set faults: %s\n", out);
        exit(1);
    }
}

/* ---- the stage's own thread: found as the one s3c_stage_open started, its CPU time read
 * from /proc/self/task/<tid>/schedstat (nanoseconds on a CPU) ---- */

static pid_t stage_tids[24]; /* the threads the last open_stage started */
static bool stage_tid_zstd[24]; /* ... a compression worker ("s3c-zstd") */
static int stage_ntids;

static int tasks_list(pid_t *out, int max)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;
    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL && n < max)
        if (e->d_name[0] != '.')
            out[n++] = (pid_t)atoi(e->d_name);
    closedir(d);
    return n;
}

/* Whether a thread of ours is a compression worker, by its name. */
static bool task_is_zstd(pid_t tid)
{
    char path[64], name[32] = "";
    snprintf(path, sizeof(path), "/proc/self/task/%d/comm", (int)tid);
    FILE *f = fopen(path, "r");
    if (f && !fgets(name, sizeof(name), f))
        name[0] = '\0';
    if (f)
        fclose(f);
    return strncmp(name, "s3c-zstd", 8) == 0;
}

/* The CPU of the stage's threads: all (-1), the persistence thread (0), the workers (1). */
static uint64_t stage_cpu_ns_of(int which)
{
    uint64_t sum = 0;
    for (int i = 0; i < stage_ntids; i++) {
        if (which >= 0 && stage_tid_zstd[i] != (which == 1))
            continue;
        char path[64];
        unsigned long long ns = 0;
        snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", (int)stage_tids[i]);
        FILE *f = fopen(path, "r");
        if (f && fscanf(f, "%llu", &ns) == 1)
            sum += ns;
        if (f)
            fclose(f);
    }
    return sum;
}

static uint64_t stage_cpu_ns(void)
{
    return stage_cpu_ns_of(-1);
}

static bool conditional = true;   /* s3.conditional_writes of the stages opened */
static const char *s3_extra = ""; /* more members of "s3" for the stages opened */

static s3c_stage *open_stage(const char *persistence, long ring_bytes)
{
    char json[2048], err[512];
    s3c_config *cfg;
    s3c_stage *st;
    snprintf(json, sizeof(json),
             "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"bench/\","
             "\"conditional_writes\":%s%s},"
             "\"persistence\":{%s},\"pipeline\":{\"ring_bytes\":%ld}}",
             mock.endpoint, conditional ? "true" : "false", s3_extra, persistence, ring_bytes);
    pid_t before[64];
    int nbefore = tasks_list(before, 64);
    if (s3c_config_parse(json, strlen(json), &cfg, err, sizeof(err)) != 0 ||
        s3c_stage_open(cfg, &st, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench-stage: %s\n", err);
        exit(1);
    }
    s3c_config_free(cfg);
    sleep_ns(200000000); /* let the pool warm up */
    /* The threads the open started (the persistence thread; metrics are off) */
    pid_t after[64];
    int nafter = tasks_list(after, 64);
    stage_ntids = 0;
    for (int i = 0; i < nafter && stage_ntids < 24; i++) {
        bool old = false;
        for (int j = 0; j < nbefore; j++)
            old = old || after[i] == before[j];
        if (!old) {
            stage_tid_zstd[stage_ntids] = task_is_zstd(after[i]);
            stage_tids[stage_ntids++] = after[i];
        }
    }
    return st;
}

/* ---- per-commit latency: submit time by the producer, durable time by the callback ---- */

struct lat {
    uint64_t *submit_ns, *durable_ns; /* indexed by seq */
    uint64_t cap;
    uint64_t last_w; /* persistence thread only */
};

static void on_durable(void *ctx, uint64_t w, int err)
{
    struct lat *l = ctx;
    uint64_t now = s3c__now_ns();
    if (err)
        return;
    for (uint64_t s = l->last_w + 1; s <= w && s < l->cap; s++)
        l->durable_ns[s] = now;
    l->last_w = w;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Commits to cycle through instead of one repeated fill byte (the compression case). */
struct workload {
    unsigned char *data; /* every commit back to back */
    size_t *off, *len;   /* commit i: data + off[i], len[i] bytes */
    size_t n, bytes;
};

struct prod {
    s3c_stage *st;
    size_t size;
    uint64_t deadline_ns;
    double rate;     /* commits/s; 0 = as fast as the ring takes them */
    struct lat *lat; /* NULL: no latency record */
    uint64_t commits;
    const struct workload *w; /* NULL: size bytes of 0x42 */
    size_t next_w;            /* w: the next commit of the cycle */
};

static void *producer(void *p)
{
    struct prod *a = p;
    char buf[65536];
    memset(buf, 0x42, sizeof(buf));
    const void *data = buf;
    size_t len = a->size;
    uint64_t start = s3c__now_ns(), next = start;
    while (s3c__now_ns() < a->deadline_ns) {
        int burst = 1000;
        if (a->rate > 0) { /* paced in 1 ms slices */
            burst = (int)(a->rate / 1000.0);
            if (burst < 1)
                burst = 1;
            next += 1000000;
            uint64_t now = s3c__now_ns();
            if (next > now)
                sleep_ns(next - now);
        }
        for (int i = 0; i < burst; i++) {
            /* the clock only when latency is recorded: it cost as much as a commit */
            uint64_t t0 = a->lat ? s3c__now_ns() : 0, seq;
            if (a->w) {
                data = a->w->data + a->w->off[a->next_w];
                len = a->w->len[a->next_w];
                a->next_w = (a->next_w + 1) % a->w->n;
            }
            if (s3c_submit(a->st, data, len, 10000, &seq) != 0) {
                fprintf(stderr, "bench-stage: submit failed\n");
                exit(1);
            }
            if (a->lat && seq < a->lat->cap)
                a->lat->submit_ns[seq] = t0;
            a->commits++;
        }
    }
    return NULL;
}

struct run {
    double commits_per_s, mb_per_s, commits_per_put;
    uint64_t commits, batches;
    double wall_s, stage_cpu_s; /* until the deadline: wall time, the stage threads' CPU */
    double persist_cpu_s;       /* ... the persistence thread's alone */
    double sent_per_byte;       /* after the drain: object bytes built / payload bytes */
};

static const struct workload *drive_workload; /* the producers' commits (NULL: fill bytes) */

static struct run drive(s3c_stage *st, int producers, size_t size, double seconds, double rate,
                        struct lat *lat)
{
    pthread_t t[8];
    struct prod a[8];
    uint64_t cpu0 = stage_cpu_ns(), pcpu0 = stage_cpu_ns_of(0), t0 = s3c__now_ns();
    uint64_t deadline = t0 + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < producers; i++) {
        a[i] = (struct prod){st, size, deadline, rate / producers, lat, 0, drive_workload, 0};
        if (drive_workload) /* far apart in the cycle: no commit repeats inside a batch */
            a[i].next_w = drive_workload->n * (size_t)i / (size_t)producers;
        pthread_create(&t[i], NULL, producer, &a[i]);
    }
    uint64_t total = 0;
    for (int i = 0; i < producers; i++) {
        pthread_join(t[i], NULL);
        total += a[i].commits;
    }
    /* Throughput is what was durable by the deadline; then everything must drain. */
    struct s3c_stats s;
    s3c_stats_get(st, &s);
    double dt = (double)(s3c__now_ns() - t0) / 1e9;
    struct run r = {.commits = s.commits_durable, .batches = s.batches_sent, .wall_s = dt};
    r.stage_cpu_s = (double)(stage_cpu_ns() - cpu0) / 1e9;
    r.persist_cpu_s = (double)(stage_cpu_ns_of(0) - pcpu0) / 1e9;
    r.commits_per_s = (double)s.commits_durable / dt;
    r.mb_per_s = (double)s.bytes_durable / dt / 1e6;
    r.commits_per_put = s.batches_sent ? (double)s.commits_durable / (double)s.batches_sent : 0;
    struct s3c_close_report rep;
    struct s3c_stage_info info;
    s3c_stage_info(st, &info);
    if (s3c_stage_drain(st, &rep) != 0 || rep.durable_seq != info.control_seq + total) {
        fprintf(stderr, "bench-stage: drain lost seqs %" PRIu64 "..%" PRIu64 "\n",
                rep.lost_first_seq, rep.lost_last_seq);
        exit(1);
    }
    s3c_stats_get(st, &s);
    r.sent_per_byte = s.bytes_durable ? (double)s.object_bytes / (double)s.bytes_durable : 0;
    return r;
}

/* The server's own latency for objects of a given size: sequential PUTs through the
 * transport, the percentile of their durations. */
struct putlat {
    uint64_t *us;
    int n;
};

static void on_put(void *ctx, const struct xport_result *r)
{
    struct putlat *p = ctx;
    if (r->cls != XPORT_OK) {
        fprintf(stderr, "bench-stage: PUT failed: %s\n", r->error);
        exit(1);
    }
    p->us[p->n++] = r->duration_us;
}

static uint64_t server_p99_us(size_t body, int count)
{
    char json[1024], err[256];
    s3c_config *cfg;
    snprintf(json, sizeof(json),
             "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\"},"
             "\"persistence\":{\"max_in_flight_requests\":1,\"target_pool_size\":1}}",
             mock.endpoint);
    if (s3c_config_parse(json, strlen(json), &cfg, err, sizeof(err)) != 0)
        exit(1);
    struct xport *x = test_xport_new(cfg, err, sizeof(err));
    if (!x)
        exit(1);
    char *buf = calloc(1, body);
    struct iovec iov = {buf, body};
    struct putlat p = {calloc((size_t)count, sizeof(uint64_t)), 0};
    for (int i = 0; i < count; i++) {
        struct xport_put put = {.key = "server-latency-probe", .iov = &iov, .iovcnt = 1};
        if (xport_put(x, &put, on_put, &p) != 0 || xport_drain(x, 10000) != 0)
            exit(1);
    }
    qsort(p.us, (size_t)p.n, sizeof(uint64_t), cmp_u64);
    uint64_t v = p.us[(size_t)p.n * 99 / 100];
    free(p.us);
    free(buf);
    test_xport_free(x);
    s3c_config_free(cfg);
    return v;
}

/* 1-2. Peak (two producers as fast as the ring takes them, default knobs) and latency at
 * half of peak (128-byte commits), with conditional writes on and then off. */
static void bench_peak(double secs)
{
    double peak_on = 0, peak_off = 0, p99_on = 0, p99_off = 0;
    for (int c = 0; c < 2; c++) {
        conditional = c == 0;
        double peak_cps = 0;
        size_t sizes[] = {128, 4096};
        for (int i = 0; i < 2; i++) {
            s3c_stage *st = open_stage("\"batch_timeout_ms\":5", 64L << 20);
            struct run r = drive(st, 2, sizes[i], secs, 0, NULL);
            s3c_stage_close(st, NULL);
            if (i == 0)
                peak_cps = r.commits_per_s;
            printf("{\"bench\":\"stage\",\"case\":\"peak\",\"conditional_writes\":%s,"
                   "\"commit_bytes\":%zu,\"producers\":2,\"commits_per_s\":%.0f,"
                   "\"mb_per_s\":%.1f,\"batches\":%" PRIu64 ",\"commits_per_put\":%.1f}\n",
                   conditional ? "true" : "false", sizes[i], r.commits_per_s, r.mb_per_s, r.batches,
                   r.commits_per_put);
            fflush(stdout);
        }
        double rate = peak_cps / 2;
        struct lat l = {0};
        l.cap = (uint64_t)(rate * secs * 1.2) + 1000;
        l.submit_ns = calloc(l.cap, sizeof(uint64_t));
        l.durable_ns = calloc(l.cap, sizeof(uint64_t));
        s3c_stage *st = open_stage("\"batch_timeout_ms\":5", 64L << 20);
        s3c_subscribe(st, on_durable, &l);
        struct run r = drive(st, 1, 128, secs, rate, &l);
        s3c_stage_close(st, NULL);
        uint64_t n = 0, *us = calloc(l.cap, sizeof(uint64_t));
        for (uint64_t s = 1; s < l.cap; s++)
            if (l.submit_ns[s] && l.durable_ns[s])
                us[n++] = (l.durable_ns[s] - l.submit_ns[s]) / 1000;
        qsort(us, n, sizeof(uint64_t), cmp_u64);
        size_t avg_batch = (size_t)(r.commits_per_put * (128 + 16)) + 48;
        uint64_t sp99 = server_p99_us(avg_batch, 2000);
        uint64_t p99 = us[n * 99 / 100], target = 5000 + sp99 + 1000;
        printf("{\"bench\":\"stage\",\"case\":\"half_load\",\"conditional_writes\":%s,"
               "\"commit_bytes\":128,"
               "\"rate_commits_per_s\":%.0f,\"achieved_commits_per_s\":%.0f,"
               "\"commits_per_put\":%.1f,\"p50_us\":%" PRIu64 ",\"p99_us\":%" PRIu64
               ",\"p999_us\":%" PRIu64 ",\"max_us\":%" PRIu64 ",\"batch_timeout_ms\":5,"
               "\"server_p99_us\":%" PRIu64 ",\"target_p99_us\":%" PRIu64 ",\"met\":%s}\n",
               conditional ? "true" : "false", rate, r.commits_per_s, r.commits_per_put, us[n / 2],
               p99, us[n * 999 / 1000], us[n - 1], sp99, target, p99 <= target ? "true" : "false");
        fflush(stdout);
        free(us);
        free(l.submit_ns);
        free(l.durable_ns);
        *(c == 0 ? &peak_on : &peak_off) = peak_cps;
        *(c == 0 ? &p99_on : &p99_off) = (double)p99;
    }
    conditional = true;
    printf("{\"bench\":\"stage\",\"case\":\"conditional_writes_cost\",\"commit_bytes\":128,"
           "\"peak_on_over_off\":%.3f,\"p99_on_over_off\":%.3f,\"target\":\"peak >= 0.95, "
           "p99 <= 1.05\",\"met\":%s}\n",
           peak_on / peak_off, p99_on / p99_off,
           peak_on / peak_off >= 0.95 && p99_on / p99_off <= 1.05 ? "true" : "false");
    fflush(stdout);
}

/* 3. 20 ms of server latency: throughput against Little's law, batches of 100. */
static void bench_latency(double secs)
{
    faults("{\"latency_ms\":20}");
    int ks[] = {1, 4, 16, 64};
    for (int i = 0; i < 4; i++) {
        char p[512];
        snprintf(p, sizeof(p),
                 "\"batch_timeout_ms\":5,\"batch_size_threshold\":100,"
                 "\"max_in_flight_requests\":%d,\"target_pool_size\":%d",
                 ks[i], ks[i]);
        s3c_stage *st = open_stage(p, 4L << 20); /* bounds the backlog left to drain */
        struct run r = drive(st, 2, 128, secs, 0, NULL);
        s3c_stage_close(st, NULL);
        double ideal = ks[i] * 100 / 0.020;
        printf("{\"bench\":\"stage\",\"case\":\"latency_20ms\",\"max_in_flight\":%d,"
               "\"batch_commits\":100,\"commit_bytes\":128,\"commits_per_s\":%.0f,"
               "\"ideal_commits_per_s\":%.0f,\"ratio\":%.2f,\"commits_per_put\":%.1f}\n",
               ks[i], r.commits_per_s, ideal, r.commits_per_s / ideal, r.commits_per_put);
        fflush(stdout);
    }
}

/* 4. Open time of a log of 100,000 objects (one commit each) on a memory-store mock: with the
 * manifest current, then with it deleted (the open lists the whole log). */
static void bench_open(void)
{
    const char *margs[] = {"--store", "memory", NULL};
    if (mockproc_start(&mock, margs) != 0)
        exit(1);
    {
        s3c_stage *st = open_stage("\"batch_timeout_ms\":1,\"batch_size_threshold\":1,"
                                   "\"max_in_flight_requests\":64,\"target_pool_size\":64",
                                   64L << 20);
        char one[16] = "commit";
        uint64_t seq = 0, t0 = s3c__now_ns();
        for (int i = 0; i < 100000; i++)
            if (s3c_submit(st, one, sizeof(one), 10000, &seq) != 0)
                exit(1);
        if (s3c_wait_durable(st, seq, 600000) != 0)
            exit(1);
        double fill_s = (double)(s3c__now_ns() - t0) / 1e9;
        s3c_stage_close(st, NULL);
        char out[256];
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 1 && mockproc_http(&mock, "DELETE", "/commits/bench/manifest.json", NULL,
                                           out, sizeof(out)) != 204)
                exit(1);
            mockproc_http(&mock, "DELETE", "/_mock/stats", NULL, out, sizeof(out));
            char json[1024], err[512];
            s3c_config *cfg;
            snprintf(json, sizeof(json),
                     "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"bench/\"}}",
                     mock.endpoint);
            if (s3c_config_parse(json, strlen(json), &cfg, err, sizeof(err)) != 0)
                exit(1);
            uint64_t o0 = s3c__now_ns();
            if (s3c_stage_open(cfg, &st, err, sizeof(err)) != 0) {
                fprintf(stderr, "bench-stage: reopen: %s\n", err);
                exit(1);
            }
            double open_ms = (double)(s3c__now_ns() - o0) / 1e6;
            struct s3c_stage_info info;
            s3c_stage_info(st, &info);
            s3c_stage_close(st, NULL);
            s3c_config_free(cfg);
            printf("{\"bench\":\"stage\",\"case\":\"open\",\"data_objects\":100000"
                   ",\"manifest\":%s,\"open_ms\":%.1f,\"recovered_seq\":%" PRIu64
                   ",\"list_requests\":%d,\"get_requests\":%d,\"fill_s\":%.1f}\n",
                   pass == 0 ? "true" : "false", open_ms, info.recovered_seq,
                   mock_op_count(&mock, "ListObjectsV2", 200),
                   mock_op_count(&mock, "GetObject", 206) + mock_op_count(&mock, "GetObject", 200),
                   fill_s);
            fflush(stdout);
            seq = info.control_seq;
        }
    }
    mockproc_stop(&mock);
}

/* ---- 5. s3.compression: JSON-like commits and random bytes ---- */

static uint64_t wl_rng = 0x5eed;

static uint64_t wl_rand(void) /* splitmix64 */
{
    uint64_t z = (wl_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#define WL_COMMITS 16384 /* more than a batch holds (1000): a batch never repeats a commit */

/* Order and payment events as a transaction processor might commit them: fixed field names,
 * values that vary (ids, amounts, times, 1-4 line items, a random request id): 230-520 bytes. */
static void wl_json(struct workload *w)
{
    static const char *const events[] = {"order.created", "order.paid", "order.shipped",
                                         "payment.captured", "order.cancelled"};
    static const char *const tiers[] = {"bronze", "silver", "gold", "platinum"};
    static const char *const countries[] = {"DE", "FR", "US", "GB", "NL", "JP", "BR", "IN"};
    static const char *const channels[] = {"web", "ios", "android", "pos"};
    static const char *const currencies[] = {"EUR", "USD", "GBP", "JPY"};
    w->data = malloc((size_t)WL_COMMITS * 1024);
    w->off = calloc(WL_COMMITS, sizeof(size_t));
    w->len = calloc(WL_COMMITS, sizeof(size_t));
    w->n = WL_COMMITS;
    w->bytes = 0;
    for (size_t i = 0; i < w->n; i++) {
        char *o = (char *)w->data + w->bytes;
        int n = snprintf(o, 1024,
                         "{\"event\":\"%s\",\"event_id\":\"evt_%016" PRIx64
                         "\",\"ts\":\"2026-12-01T%02d:%02d:"
                         "%02d.%03dZ\",\"order\":{\"id\":\"ord_%09" PRIu64
                         "\",\"customer\":{\"id\":\"cus_%06" PRIu64
                         "\",\"tier\":\"%s\",\"country\":\"%s\"},\"channel\":\"%s\",\"currency\":"
                         "\"%s\",\"items\":[",
                         events[wl_rand() % 5], wl_rand(), (int)(i / 3600 % 24), (int)(i / 60 % 60),
                         (int)(i % 60), (int)(wl_rand() % 1000), 100000000 + i * 7 + wl_rand() % 7,
                         wl_rand() % 1000000, tiers[wl_rand() % 4], countries[wl_rand() % 8],
                         channels[wl_rand() % 4], currencies[wl_rand() % 4]);
        uint64_t total = 0, items = 1 + wl_rand() % 4;
        for (uint64_t k = 0; k < items; k++) {
            uint64_t qty = 1 + wl_rand() % 5, price = 99 + wl_rand() % 50000;
            total += qty * price;
            n += snprintf(o + n, (size_t)(1024 - n),
                          "%s{\"sku\":\"SKU-%05" PRIu64 "\",\"qty\":%" PRIu64
                          ",\"unit_price_cents\":%" PRIu64 "}",
                          k ? "," : "", wl_rand() % 100000, qty, price);
        }
        n += snprintf(o + n, (size_t)(1024 - n),
                      "],\"total_cents\":%" PRIu64 ",\"status\":\"%s\"},\"trace\":{\"request_id\":"
                      "\"%016" PRIx64 "\",\"ip\":\"10.%d.%d.%d\"}}",
                      total, wl_rand() % 3 ? "pending" : "confirmed", wl_rand(),
                      (int)(wl_rand() % 256), (int)(wl_rand() % 256), (int)(wl_rand() % 256));
        w->off[i] = w->bytes;
        w->len[i] = (size_t)n;
        w->bytes += (size_t)n;
    }
}

/* Random bytes, commit for commit as long as the JSON ones. */
static void wl_random(struct workload *w, const struct workload *like)
{
    w->n = like->n;
    w->bytes = like->bytes;
    w->data = malloc(w->bytes);
    w->off = calloc(w->n, sizeof(size_t));
    w->len = calloc(w->n, sizeof(size_t));
    memcpy(w->off, like->off, w->n * sizeof(size_t));
    memcpy(w->len, like->len, w->n * sizeof(size_t));
    for (size_t i = 0; i + 8 <= w->bytes; i += 8) {
        uint64_t v = wl_rand();
        memcpy(w->data + i, &v, 8);
    }
}

static void wl_free(struct workload *w)
{
    free(w->data);
    free(w->off);
    free(w->len);
}

/* Each workload with compression none, zstd 1 and zstd 3 (the default level) on one
 * compression thread (the default), and zstd 3 on two; default persistence knobs, two
 * producers as fast as the ring takes them: bytes sent per commit byte (object bytes built
 * over payload bytes, headers and trailers included), commits/s, how busy the stage's
 * threads were (their CPU time over the wall time: all of them, and the persistence thread
 * alone), and the payload moved per second of their CPU: the most a stage can carry with a
 * core per thread, a figure that holds still when other processes take the CPU and
 * commits/s do not. stage_threads is 1 + the compression workers. */
static void bench_compression(double secs)
{
    struct workload wl[2];
    wl_json(&wl[0]);
    wl_random(&wl[1], &wl[0]);
    static const char *const wnames[] = {"json", "random"};
    static const struct {
        const char *name, *s3;
        int level, threads;
    } modes[] = {
        {"none", "", 0, 0},
        {"zstd", ",\"compression\":\"zstd\",\"compression_level\":1", 1, 1},
        {"zstd", ",\"compression\":\"zstd\",\"compression_level\":3", 3, 1},
        {"zstd", ",\"compression\":\"zstd\",\"compression_level\":3,\"compression_threads\":2", 3,
         2},
    };
    enum { NMODES = sizeof(modes) / sizeof(modes[0]) };
    for (int w = 0; w < 2; w++) {
        double cps[NMODES], ceiling[NMODES];
        for (int m = 0; m < NMODES; m++) {
            s3_extra = modes[m].s3;
            drive_workload = &wl[w];
            s3c_stage *st = open_stage("\"batch_timeout_ms\":5", 64L << 20);
            struct run r = drive(st, 2, 0, secs, 0, NULL);
            s3c_stage_close(st, NULL);
            cps[m] = r.commits_per_s;
            ceiling[m] = r.mb_per_s * r.wall_s / r.stage_cpu_s;
            printf("{\"bench\":\"stage\",\"case\":\"compression\",\"workload\":\"%s\","
                   "\"compression\":\"%s\",\"level\":%d,\"compression_threads\":%d,"
                   "\"avg_commit_bytes\":%.0f,\"producers\":2,"
                   "\"commits_per_s\":%.0f,\"payload_mb_per_s\":%.1f,"
                   "\"sent_bytes_per_commit_byte\":%.3f,\"commits_per_put\":%.1f,"
                   "\"stage_thread_cpu_s\":%.2f,\"wall_s\":%.2f,\"stage_thread_busy\":%.2f,"
                   "\"payload_mb_per_stage_cpu_s\":%.0f,\"persist_thread_busy\":%.2f,"
                   "\"payload_mb_per_persist_cpu_s\":%.0f,\"stage_threads\":%d}\n",
                   wnames[w], modes[m].name, modes[m].level, modes[m].threads,
                   (double)wl[w].bytes / (double)wl[w].n, r.commits_per_s, r.mb_per_s,
                   r.sent_per_byte, r.commits_per_put, r.stage_cpu_s, r.wall_s,
                   r.stage_cpu_s / r.wall_s, ceiling[m], r.persist_cpu_s / r.wall_s,
                   r.mb_per_s * r.wall_s / r.persist_cpu_s, stage_ntids);
            fflush(stdout);
        }
        printf("{\"bench\":\"stage\",\"case\":\"compression_cost\",\"workload\":\"%s\","
               "\"zstd1_over_none_commits_per_s\":%.3f,\"zstd3_over_none_commits_per_s\":%.3f,"
               "\"zstd3_2threads_over_none_commits_per_s\":%.3f,"
               "\"zstd1_over_none_stage_ceiling\":%.3f,\"zstd3_over_none_stage_ceiling\":%.3f}\n",
               wnames[w], cps[1] / cps[0], cps[2] / cps[0], cps[3] / cps[0],
               ceiling[1] / ceiling[0], ceiling[2] / ceiling[0]);
        fflush(stdout);
    }
    s3_extra = "";
    drive_workload = NULL;
    wl_free(&wl[0]);
    wl_free(&wl[1]);
}

/* ---- 6. Large objects against wrk (issue 16, target 2) ---- */

#define LARGE_COMMIT 65536 /* 16 commits fill a 1 MiB batch (batch_bytes_threshold) */
#define LARGE_ROUNDS 3

/* What one round of the stage measured. */
struct large_round {
    double puts_per_s, object_bytes, commits_per_put;
    double persist_busy;   /* the persistence thread's CPU over the wall time */
    double cpu_ms_per_put; /* the whole process (producers included) per PUT */
};

/* The process's user + system CPU seconds so far (producers and stage threads). */
static double large_process_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* One round of the stage: k PUTs of ~1 MiB in flight for secs, then the drain. */
static struct large_round large_stage_round(int k, double secs)
{
    char p[512];
    snprintf(p, sizeof(p),
             "\"batch_timeout_ms\":5,\"batch_size_threshold\":1000,"
             "\"batch_bytes_threshold\":1048576,\"max_in_flight_requests\":%d,"
             "\"target_pool_size\":%d",
             k, k);
    s3c_stage *st = open_stage(p, 64L << 20);
    double cpu0 = large_process_cpu_s();
    struct run r = drive(st, 2, LARGE_COMMIT, secs, 0, NULL);
    double cpu = large_process_cpu_s() - cpu0; /* to the drain's end: over every PUT */
    struct s3c_stats s;
    s3c_stats_get(st, &s);
    s3c_stage_close(st, NULL);
    double payload = r.mb_per_s * 1e6 * r.wall_s; /* durable by the deadline */
    return (struct large_round){
        .puts_per_s = (double)r.batches / r.wall_s,
        .object_bytes = r.batches ? r.sent_per_byte * payload / (double)r.batches : 0,
        .commits_per_put = r.commits_per_put,
        .persist_busy = r.persist_cpu_s / r.wall_s,
        .cpu_ms_per_put = s.batches_sent ? cpu * 1e3 / (double)s.batches_sent : 0};
}

/* 1 MiB objects at 8 and 16 in flight on a mock with 10 ms of latency (--store none):
 * the stage's PUT/s against wrk's (two threads, wrk's default) with as many connections
 * and a body of the stage's mean object size, on the same mock, rounds alternating.
 * With 10 ms per PUT both are bound by Little's law (k / 10 ms); what the stage loses
 * beyond wrk is time spent per MiB on its side. cpu_ms_per_put is the whole process's CPU
 * per PUT (the producers' copies into the ring included), wrk_cpu_ms_per_put wrk's. */
static void bench_large(double secs)
{
    const char *margs[] = {"--store", "none", "--latency-ms", "10", NULL};
    if (mockproc_start(&mock, margs) != 0)
        exit(1);
    char url[128];
    snprintf(url, sizeof(url), "%s/commits/wrk/object", mock.endpoint);
    int ks[] = {8, 16};
    for (int i = 0; i < 2; i++) {
        double pps[LARGE_ROUNDS], wpps[LARGE_ROUNDS], pair[LARGE_ROUNDS], busy[LARGE_ROUNDS];
        double cpu[LARGE_ROUNDS], wcpu[LARGE_ROUNDS];
        /* the same round with s3.direct_put (PUT bodies by sendmsg from the ring) */
        double dpps[LARGE_ROUNDS], dpair[LARGE_ROUNDS], dbusy[LARGE_ROUNDS], dcpu[LARGE_ROUNDS];
        double obj = 0, cpp = 0, wp50 = 0;
        long wrk_bad = 0;
        for (int n = 0; n < LARGE_ROUNDS; n++) {
            s3_extra = ",\"direct_put\":false"; /* libcurl's PUTs (the default: direct) */
            struct large_round lr = large_stage_round(ks[i], secs);
            pps[n] = lr.puts_per_s;
            busy[n] = lr.persist_busy;
            cpu[n] = lr.cpu_ms_per_put;
            obj = lr.object_bytes;
            cpp = lr.commits_per_put;
            s3_extra = ",\"direct_put\":true";
            struct large_round dr = large_stage_round(ks[i], secs);
            s3_extra = "";
            dpps[n] = dr.puts_per_s;
            dbusy[n] = dr.persist_busy;
            dcpu[n] = dr.cpu_ms_per_put;
            struct wrk_args wa = {.url = url,
                                  .threads = 2,
                                  .conns = ks[i],
                                  .seconds = secs < 1 ? 1 : (int)(secs + 0.5),
                                  .body = (size_t)(obj + 0.5),
                                  .crc32c = true,
                                  .if_none_match = conditional};
            struct wrk_result w = wrk_put(&wa);
            wrk_bad += w.errors < 0 ? 1 : w.errors;
            wpps[n] = w.puts_per_s;
            wcpu[n] = w.requests > 0 ? w.cpu_s * 1e3 / w.requests : 0;
            wp50 = w.p50_ms;
            pair[n] = wpps[n] > 0 ? pps[n] / wpps[n] : 0;
            dpair[n] = wpps[n] > 0 ? dpps[n] / wpps[n] : 0;
        }
        double sm = bench_median(pps, LARGE_ROUNDS), wm = bench_median(wpps, LARGE_ROUNDS);
        double ratio = wm > 0 ? sm / wm : 0;
        double dm = bench_median(dpps, LARGE_ROUNDS), dratio = wm > 0 ? dm / wm : 0;
        printf("{\"bench\":\"stage\",\"case\":\"large_objects\",\"in_flight\":%d,"
               "\"server_latency_ms\":10,\"commit_bytes\":%d,\"commits_per_put\":%.1f,"
               "\"object_bytes\":%.0f,\"rounds\":%d,\"puts_per_s\":%.1f,\"put_ms\":%.2f,"
               "\"wrk_threads\":2,\"wrk_connections\":%d,\"wrk_puts_per_s\":%.1f,"
               "\"wrk_put_ms\":%.2f,\"wrk_p50_ms\":%.2f,\"ratio\":%.3f,\"ratio_min\":%.3f,"
               "\"ratio_max\":%.3f,\"persist_thread_busy\":%.2f,\"cpu_ms_per_put\":%.3f,"
               "\"wrk_cpu_ms_per_put\":%.3f,\"target\":\"ratio >= 0.95\",\"met\":%s,"
               "\"wrk_errors\":%ld,\"direct_put_puts_per_s\":%.1f,\"direct_put_ratio\":%.3f,"
               "\"direct_put_ratio_min\":%.3f,\"direct_put_ratio_max\":%.3f,"
               "\"direct_put_persist_thread_busy\":%.2f,\"direct_put_cpu_ms_per_put\":%.3f,"
               "\"direct_put_met\":%s}\n",
               ks[i], LARGE_COMMIT, cpp, obj, LARGE_ROUNDS, sm, sm > 0 ? ks[i] / sm * 1e3 : 0,
               ks[i], wm, wm > 0 ? ks[i] / wm * 1e3 : 0, wp50, ratio, bench_min(pair, LARGE_ROUNDS),
               bench_max(pair, LARGE_ROUNDS), bench_median(busy, LARGE_ROUNDS),
               bench_median(cpu, LARGE_ROUNDS), bench_median(wcpu, LARGE_ROUNDS),
               ratio >= 0.95 ? "true" : "false", wrk_bad, dm, dratio, bench_min(dpair, LARGE_ROUNDS),
               bench_max(dpair, LARGE_ROUNDS), bench_median(dbusy, LARGE_ROUNDS),
               bench_median(dcpu, LARGE_ROUNDS), dratio >= 0.95 ? "true" : "false");
        fflush(stdout);
    }
    mockproc_stop(&mock);
}

/* ---- 6. small commits: the stage's peak beside the ring alone (issue 16, target 3) ----
 * The same two producers, 128-byte commits, as fast as they go: once into a bare commit
 * ring (the stage's size, prefix and batch limits; one consumer thread polling, acquiring
 * and releasing batches the way the persistence thread does, no S3), once into a stage.
 * Rounds alternate ring, stage so both see the same machine; each round prints its pair
 * and the last line the medians and their ratio. */

#include "pipeline/ring.h"

#define SMALL_BYTES 128
#define SMALL_ROUNDS 3

/* CPU seconds used so far by this process (every thread) and by the mock. */
static double small_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    double s = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    char path[64];
    unsigned long ut = 0, stt = 0;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)mock.pid);
    FILE *f = fopen(path, "r");
    if (f && fscanf(f, "%*d %*s %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) ==
                 2)
        s += (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
    if (f)
        fclose(f);
    return s;
}

struct small_job {
    struct ring *r;
    uint64_t deadline_ns;
    uint64_t commits;
    _Atomic bool done; /* commits is final */
};

static void *small_ring_producer(void *p)
{
    struct small_job *j = p;
    unsigned char payload[SMALL_BYTES];
    memset(payload, 0x42, sizeof(payload));
    while (s3c__now_ns() < j->deadline_ns) {
        for (int i = 0; i < 1000; i++) { /* the clock once per 1000, as the stage's producer */
            struct ring_claim c;
            if (ring_claim_mp(j->r, SMALL_BYTES, 10000, &c) != 0) {
                fprintf(stderr, "bench-stage: ring claim failed\n");
                exit(1);
            }
            memcpy(c.data, payload, SMALL_BYTES);
            ring_publish_mp(j->r, &c);
            j->commits++;
        }
    }
    atomic_store(&j->done, true);
    return NULL;
}

/* Commits/s through the ring alone: what the consumer took by the producers' deadline;
 * *cpu_ns = CPU nanoseconds per commit, every thread. */
static double small_ring_run(double secs, double *cpu_ns)
{
    double cpu0 = small_cpu_s();
    struct ring_opts o = {.bytes = 64u << 20, .prefix_bytes = 16, .max_commit = 1 << 20,
                          .max_batches = 32};
    struct ring *r;
    if (ring_new(&o, &r) != 0)
        exit(1);
    pthread_t t[2];
    struct small_job j[2];
    uint64_t t0 = s3c__now_ns(), deadline = t0 + (uint64_t)(secs * 1e9), got = 0;
    for (int i = 0; i < 2; i++) {
        j[i] = (struct small_job){r, deadline, 0, false};
        pthread_create(&t[i], NULL, small_ring_producer, &j[i]);
    }
    double cps = 0;
    for (;;) {
        /* The persistence thread's pattern: a full batch at once, else sleep until the rest
         * of one is published or 5 ms (batch_timeout_ms) pass, then take what is there. */
        struct ring_ready rd = ring_poll_sc(r, 1000, 1 << 20);
        if (!rd.full && ring_arm_sc(r, 1000 - rd.count)) {
            struct pollfd pfd = {.fd = ring_wait_fd(r), .events = POLLIN};
            uint64_t v;
            if (poll(&pfd, 1, 5) > 0 && read(pfd.fd, &v, 8) < 0)
                exit(1);
            rd = ring_poll_sc(r, 1000, 1 << 20);
        }
        struct ring_batch b;
        if (ring_acquire_sc(r, &b)) {
            got += b.count;
            ring_release_sc(r, &b);
        }
        uint64_t now = s3c__now_ns();
        if (now >= deadline && cps == 0)
            cps = (double)got / ((double)(now - t0) / 1e9);
        /* Past the deadline the producers finish their burst; take the rest, then stop. */
        if (cps > 0 && atomic_load(&j[0].done) && atomic_load(&j[1].done) &&
            got == j[0].commits + j[1].commits)
            break;
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    *cpu_ns = (small_cpu_s() - cpu0) * 1e9 / (double)got;
    ring_free(r);
    return cps;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The stage's commits/s with the two producers; *busy = its persistence thread's CPU share,
 * *per_put = commits per object, *cpu_ns = CPU nanoseconds per commit of every thread and
 * the mock, the drain included. */
static double small_stage_run(double secs, double *busy, double *per_put, double *cpu_ns)
{
    s3c_stage *st = open_stage("\"batch_timeout_ms\":5", 64L << 20);
    double cpu0 = small_cpu_s();
    struct run r = drive(st, 2, SMALL_BYTES, secs, 0, NULL);
    struct s3c_stats s;
    s3c_stats_get(st, &s);
    *cpu_ns = (small_cpu_s() - cpu0) * 1e9 / (double)s.commits_durable;
    s3c_stage_close(st, NULL);
    *busy = r.persist_cpu_s / r.wall_s;
    *per_put = r.commits_per_put;
    return r.commits_per_s;
}

/* sides: 1 the ring alone, 2 the stage, 3 both (the target); one side alone is for perf. */
static void bench_small(double secs, int sides)
{
    double ring[SMALL_ROUNDS] = {0}, stage[SMALL_ROUNDS] = {0};
    double ring_cpu[SMALL_ROUNDS] = {0}, stage_cpu[SMALL_ROUNDS] = {0};
    double dstage[SMALL_ROUNDS] = {0}, dstage_cpu[SMALL_ROUNDS] = {0}; /* s3.direct_put */
    for (int i = 0; i < SMALL_ROUNDS; i++) {
        double busy = 0, per_put = 0, ring_ns = 0, stage_ns = 0;
        if (sides & 1)
            ring[i] = small_ring_run(secs, &ring_ns);
        double dbusy = 0, dper_put = 0, dstage_ns = 0;
        if (sides & 2) {
            s3_extra = ",\"direct_put\":false"; /* libcurl's PUTs (the default: direct) */
            stage[i] = small_stage_run(secs, &busy, &per_put, &stage_ns);
            s3_extra = "";
        }
        if (sides & 2) {
            s3_extra = ",\"direct_put\":true";
            dstage[i] = small_stage_run(secs, &dbusy, &dper_put, &dstage_ns);
            s3_extra = "";
        }
        ring_cpu[i] = ring_ns;
        stage_cpu[i] = stage_ns;
        dstage_cpu[i] = dstage_ns;
        printf("{\"bench\":\"stage\",\"case\":\"small_round\",\"round\":%d,\"commit_bytes\":%d,"
               "\"producers\":2,\"ring_alone_commits_per_s\":%.0f,\"stage_commits_per_s\":%.0f,"
               "\"ratio\":%.3f,\"ring_cpu_ns_per_commit\":%.0f,\"stage_cpu_ns_per_commit\":%.0f,"
               "\"commits_per_put\":%.1f,\"persist_thread_busy\":%.2f,"
               "\"direct_put_stage_commits_per_s\":%.0f,\"direct_put_ratio\":%.3f,"
               "\"direct_put_stage_cpu_ns_per_commit\":%.0f,\"direct_put_commits_per_put\":%.1f,"
               "\"direct_put_persist_thread_busy\":%.2f}\n",
               i + 1, SMALL_BYTES, ring[i], stage[i], ring[i] > 0 ? stage[i] / ring[i] : 0,
               ring_ns, stage_ns, per_put, busy, dstage[i],
               ring[i] > 0 ? dstage[i] / ring[i] : 0, dstage_ns, dper_put, dbusy);
        fflush(stdout);
    }
    if (sides != 3)
        return;
    double *all[] = {ring, stage, ring_cpu, stage_cpu, dstage, dstage_cpu};
    for (int k = 0; k < 6; k++)
        qsort(all[k], SMALL_ROUNDS, sizeof(double), cmp_double);
    int m = SMALL_ROUNDS / 2;
    double ratio = stage[m] / ring[m];
    /* CPU per commit holds stiller than commits/s on a shared machine: it says how much
     * of the gap is work the stage does and the ring alone does not. */
    printf("{\"bench\":\"stage\",\"case\":\"small\",\"commit_bytes\":%d,\"producers\":2,"
           "\"rounds\":%d,\"ring_alone_commits_per_s\":%.0f,\"stage_commits_per_s\":%.0f,"
           "\"ratio\":%.3f,\"ring_cpu_ns_per_commit\":%.0f,\"stage_cpu_ns_per_commit\":%.0f,"
           "\"target\":\"stage >= 0.5 x ring alone (medians)\",\"met\":%s,"
           "\"direct_put_stage_commits_per_s\":%.0f,\"direct_put_ratio\":%.3f,"
           "\"direct_put_stage_cpu_ns_per_commit\":%.0f,\"direct_put_met\":%s}\n",
           SMALL_BYTES, SMALL_ROUNDS, ring[m], stage[m], ratio, ring_cpu[m], stage_cpu[m],
           ratio >= 0.5 ? "true" : "false", dstage[m], dstage[m] / ring[m], dstage_cpu[m],
           dstage[m] / ring[m] >= 0.5 ? "true" : "false");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 3.0;
    const char *only = argc > 2 ? argv[2] : NULL; /* one case by name */
    const char *args[] = {"--store", "none", NULL};
    if (mockproc_start(&mock, args) != 0)
        return 1;
    if (!only || strcmp(only, "peak") == 0)
        bench_peak(secs);
    if (!only || strcmp(only, "small") == 0)
        bench_small(secs, 3);
    if (only && strcmp(only, "small_ring") == 0)
        bench_small(secs, 1);
    if (only && strcmp(only, "small_stage") == 0)
        bench_small(secs, 2);
    if (!only || strcmp(only, "compression") == 0)
        bench_compression(secs);
    if (!only || strcmp(only, "latency_20ms") == 0)
        bench_latency(secs);
    mockproc_stop(&mock);
    if (!only || strcmp(only, "open") == 0)
        bench_open();
    if (!only || strcmp(only, "large_objects") == 0)
        bench_large(secs);
    return 0;
}
