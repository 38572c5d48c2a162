/* bench-reader: how fast s3c_reader reads a log back, against what wrk GETs from the same
 * s3commit-mock (memory store) with as many connections, and how long a seek near the end
 * of a long log takes.
 *
 * 1. A stage writes --gb GiB (default 1) of 4 KiB commits into 1 MiB objects.
 * 2. The reader reads it all with window 8 and 16, --rounds times (3) each, alternating
 *    with wrk, and a median line per window: MB/s of payload and of objects,
 *    commits/s; wrk (one thread, as many connections as the window) GETs the same objects
 *    for as long, cycling over their keys: its MB/s and the ratio (reader / wrk, on object
 *    bytes; target >= 0.9), and CPU seconds per GB of the reader, of wrk and of the mock
 *    under each (the two share the machine's cores with the mock). A round's seconds are
 *    split into the reader's CPU, its wait for a CPU (runq_s) and the rest (idle_s: waiting
 *    for bytes). --window N reads with that window only.
 * 3. A stage writes a log of 100,000 objects of one commit (batch_size_threshold 1); a
 *    reader opens at a seq near its end: s3c_reader_open and the first s3c_reader_next,
 *    timed, with the GETs and lists it made.
 * One JSON line per measurement. Load only on 127.0.0.1; every phase bounded in time;
 * children stopped by pid. Exits 1 when a phase fails or runs out of time. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "mockproc.h"
#include "s3commit.h"
#include "wrk.h"

#define COMMIT_BYTES 4096
#define PHASE_S 180 /* the bound of each phase */

static struct mockproc mock;

static s3c_config *bench_cfg(const char *prefix, const char *persistence)
{
    char json[2048], err[512];
    s3c_config *cfg = NULL;
    snprintf(json, sizeof(json),
             "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"%s\","
             "\"region\":\"us-east-1\",\"access_key_id\":\"AKIDBENCHREADER00001\","
             "\"secret_access_key\":\"bench-reader-secret-0123456789\"},"
             "\"persistence\":{%s},"
             "\"pipeline\":{\"ring_bytes\":268435456,\"max_commit_bytes\":65536}}",
             mock.endpoint, prefix, persistence);
    if (s3c_config_parse(json, strlen(json), &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench-reader: config: %s\n", err);
        exit(1);
    }
    return cfg;
}

/* Writes n commits of len bytes with a stage; returns the last seq (0 on failure). */
static uint64_t bench_write(const char *prefix, const char *persistence, uint64_t n, size_t len,
                            double *seconds)
{
    s3c_config *cfg = bench_cfg(prefix, persistence);
    s3c_stage *st;
    char err[512];
    if (s3c_stage_open(cfg, &st, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench-reader: stage open: %s\n", err);
        s3c_config_free(cfg);
        return 0;
    }
    s3c_config_free(cfg);
    unsigned char *buf = malloc(len);
    uint64_t seq = 0, t0 = s3c__now_ms(), end = t0 + PHASE_S * 1000ull;
    for (uint64_t i = 0; i < n; i++) {
        memset(buf, 'a' + (int)(i % 26), len < 64 ? len : 64);
        if (s3c_submit(st, buf, len, 10000, &seq) != 0 || s3c__now_ms() > end) {
            fprintf(stderr, "bench-reader: submit %" PRIu64 " failed or out of time\n", i);
            seq = 0;
            break;
        }
    }
    if (seq && s3c_wait_durable(st, seq, (int)(end > s3c__now_ms() ? end - s3c__now_ms() : 1)) != 0)
        seq = 0;
    *seconds = (double)(s3c__now_ms() - t0) / 1e3;
    struct s3c_close_report rep;
    if (s3c_stage_close(st, &rep) != 0)
        seq = 0;
    free(buf);
    return seq;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* The mock's CPU seconds so far (user + system), from /proc; -1 when unreadable. */
static double mock_cpu_s(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)mock.pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the name may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

struct read_result {
    uint64_t commits, bytes, objects, gets;
    double seconds, cpu, mock_cpu;
    double runq, mock_runq; /* seconds runnable but not running (runq_wait_s) */
    int rc;
};

/* Seconds pid's threads (the first 64 ids from pid) have waited for a CPU while runnable
 * (/proc schedstat): on a shared 2-core machine this, not the reader's own work, is most
 * of a round's time, and it differs between the reader's run and wrk's. */
static double runq_wait_s(int pid)
{
    char path[128];
    double sum = 0;
    for (int t = pid; t < pid + 64; t++) {
        snprintf(path, sizeof(path), "/proc/%d/task/%d/schedstat", pid, t);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        unsigned long long run_ns, wait_ns;
        if (fscanf(f, "%llu %llu", &run_ns, &wait_ns) == 2)
            sum += (double)wait_ns / 1e9;
        fclose(f);
    }
    return sum;
}

static struct read_result bench_read(const char *prefix, int window)
{
    double q0 = runq_wait_s((int)getpid()), mq0 = runq_wait_s((int)mock.pid);
    struct read_result out = {0};
    s3c_config *cfg = bench_cfg(prefix, "");
    s3c_reader *r;
    char err[1100];
    struct s3c_reader_opts o = {.window = window};
    uint64_t t0 = s3c__now_ns(), end_ms = s3c__now_ms() + PHASE_S * 1000ull;
    double c0 = cpu_s(), m0 = mock_cpu_s();
    out.rc = s3c_reader_open(cfg, &o, &r, err, sizeof(err));
    s3c_config_free(cfg);
    if (out.rc != 0) {
        fprintf(stderr, "bench-reader: reader open: %s\n", err);
        return out;
    }
    struct s3c_record rec;
    int rc;
    while ((rc = s3c_reader_next(r, &rec, 10000)) == 0) {
        if (!rec.control) {
            out.commits++;
            out.bytes += rec.len;
        }
        if ((out.commits & 4095) == 0 && s3c__now_ms() > end_ms) {
            rc = S3C_ETIMEDOUT;
            break;
        }
    }
    out.seconds = (double)(s3c__now_ns() - t0) / 1e9;
    out.runq = runq_wait_s((int)getpid()) - q0;
    out.mock_runq = runq_wait_s((int)mock.pid) - mq0;
    out.cpu = cpu_s() - c0;
    out.mock_cpu = mock_cpu_s() - m0;
    out.rc = rc == S3C_EEND ? 0 : rc;
    if (out.rc)
        fprintf(stderr, "bench-reader: read: %s %s\n", s3c_strerror(rc), s3c_reader_error(r));
    struct s3c_reader_stats s;
    s3c_reader_stats_get(r, &s);
    out.objects = s.objects;
    out.gets = s.gets;
    s3c_reader_close(r);
    return out;
}

/* Lists <prefix>log/ through the mock: writes "/commits/<key>" lines to path, returns the
 * number of keys and their total size. */
static long bench_list(const char *prefix, const char *path, uint64_t *total)
{
    static char out[1 << 20];
    char url[1024], after[600] = "";
    long n = 0;
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    *total = 0;
    for (;;) {
        snprintf(url, sizeof(url), "/commits?list-type=2&prefix=%slog/&max-keys=1000%s%s", prefix,
                 after[0] ? "&start-after=" : "", after);
        if (mockproc_http(&mock, "GET", url, NULL, out, sizeof(out)) != 200) {
            fclose(f);
            return -1;
        }
        long page = 0;
        for (const char *k = out; (k = strstr(k, "<Key>")) != NULL; k += 5) {
            const char *e = strstr(k, "</Key>"), *sz = strstr(k, "<Size>");
            snprintf(after, sizeof(after), "%.*s", (int)(e - k - 5), k + 5);
            fprintf(f, "/commits/%s\n", after);
            if (sz)
                *total += strtoull(sz + 6, NULL, 10);
            page++;
        }
        n += page;
        if (page < 1000)
            break;
    }
    fclose(f);
    return n;
}

/* Runs wrk (one thread, conns connections) for seconds over the keys in keys_file; returns
 * its MB/s (bytes read, headers included) or -1. */
static double wrk_cpu_s, wrk_bytes; /* of the last wrk run (wait4) */

static double bench_wrk(const char *script, const char *keys_file, int conns, int seconds,
                        long *errors)
{
    char keys_env[4200];
    snprintf(keys_env, sizeof(keys_env), "S3C_KEYS_FILE=%s", keys_file);
    const char *env[] = {keys_env, NULL};
    struct wrk_result w = wrk_run(script, mock.endpoint, 1, conns, seconds, env);
    wrk_cpu_s = w.cpu_s;
    wrk_bytes = w.bytes_read;
    *errors = w.errors;
    if (w.errors < 0)
        return -1;
    double bytes = w.bytes_read, us = w.seconds * 1e6;
    return us > 0 ? bytes / (us / 1e6) / 1e6 : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* v sorted into out (n <= 16): the median, least and most of a run's rounds. */
static void sorted(const double *v, int n, double *out)
{
    memcpy(out, v, (size_t)n * sizeof(double));
    qsort(out, (size_t)n, sizeof(double), cmp_double);
}

static long mock_get_count(void)
{
    static char out[65536];
    if (mockproc_http(&mock, "GET", "/_mock/stats", NULL, out, sizeof(out)) != 200)
        return -1;
    cJSON *j = cJSON_Parse(strstr(out, "\r\n\r\n") + 4);
    cJSON *g = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "ops"), "GetObject"),
                                   "count");
    long v = cJSON_IsNumber(g) ? (long)g->valuedouble : 0;
    cJSON_Delete(j);
    return v;
}

int main(int argc, char **argv)
{
    double gb = 1.0;
    long seek_objects = 100000;
    int rounds = 3, only_window = 0;
    bool bad = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--gb") == 0 && i + 1 < argc)
            gb = atof(argv[++i]);
        else if (strcmp(argv[i], "--seek-objects") == 0 && i + 1 < argc)
            seek_objects = atol(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--window") == 0 && i + 1 < argc)
            only_window = atoi(argv[++i]);
        else
            bad = true;
    }
    if (bad || gb < 0.01 || gb > 8 || seek_objects < 1000 || seek_objects > 1000000 || rounds < 1 ||
        rounds > 16 || only_window < 0 || only_window > 64) {
        fprintf(stderr, "usage: bench-reader [--gb 0.01..8] [--seek-objects 1000..1000000] "
                        "[--rounds 1..16] [--window 1..64]\n");
        return 2;
    }
    char exe[4096], mockbin[4200], script[4200], keys[256];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return 1;
    exe[n] = '\0';
    snprintf(mockbin, sizeof(mockbin), "%s/s3commit-mock", dirname(exe));
    if (!getenv("S3C_MOCK_BIN"))
        setenv("S3C_MOCK_BIN", mockbin, 1);
    char src[] = __FILE__;
    snprintf(script, sizeof(script), "%s/bench_reader_get.lua", dirname(src));
    snprintf(keys, sizeof(keys), "/tmp/bench-reader-keys-%d.txt", (int)getpid());
    signal(SIGPIPE, SIG_IGN);
    const char *margs[] = {"--max-object-bytes", "4194304", NULL};
    if (mockproc_start(&mock, margs) != 0)
        return 1;
    int fail = 0;

    /* 1. The log: 4 KiB commits in 1 MiB objects, written as fast as the stage goes. */
    uint64_t commits = (uint64_t)(gb * (double)(1ull << 30) / COMMIT_BYTES);
    double wsec = 0;
    uint64_t last = bench_write("big/",
                                "\"batch_bytes_threshold\":1048576,\"batch_size_threshold\":100000,"
                                "\"batch_timeout_ms\":5,\"max_in_flight_requests\":16,"
                                "\"target_pool_size\":16,\"manifest_interval_ms\":1000",
                                commits, COMMIT_BYTES, &wsec);
    uint64_t obj_bytes = 0;
    long nobj = last ? bench_list("big/", keys, &obj_bytes) : -1;
    if (!last || nobj <= 0) {
        fprintf(stderr, "bench-reader: writing the log failed\n");
        mockproc_stop(&mock);
        return 1;
    }
    printf("{\"bench\":\"reader\",\"phase\":\"write\",\"commits\":%" PRIu64
           ",\"commit_bytes\":%d,\"objects\":%ld,\"object_bytes\":%" PRIu64
           ",\"seconds\":%.2f,\"mb_per_s\":%.1f}\n",
           commits, COMMIT_BYTES, nobj, obj_bytes, wsec,
           (double)commits * COMMIT_BYTES / wsec / 1e6);
    fflush(stdout);

    /* 2. Read it all, window 8 and 16; wrk with as many connections, for as long. */
    const int windows[] = {only_window ? only_window : 8, 16}; /* --window: that one only */
    for (int w = 0; w < (only_window ? 1 : 2); w++) {
        double ratios[16], cpus[16], wcpus[16];
        int nr = 0;
        for (int round = 0; round < rounds; round++) {
            struct read_result rr = bench_read("big/", windows[w]);
            if (rr.rc || rr.commits != commits) {
                fprintf(stderr, "bench-reader: read %" PRIu64 " of %" PRIu64 " commits\n",
                        rr.commits, commits);
                fail = 1;
                continue;
            }
            int secs = (int)(rr.seconds + 0.999);
            secs = secs < 3 ? 3 : secs > 60 ? 60 : secs;
            long wrk_err = 0;
            double wm0 = mock_cpu_s();
            double wmb = bench_wrk(script, keys, windows[w], secs, &wrk_err);
            double wmock = mock_cpu_s() - wm0;
            double omb = (double)obj_bytes / rr.seconds / 1e6;
            printf("{\"bench\":\"reader\",\"window\":%d,\"round\":%d,\"commits\":%" PRIu64
                   ",\"objects\":%" PRIu64 ",\"gets\":%" PRIu64
                   ",\"seconds\":%.2f,\"cpu_s\":%.2f,\"mb_per_s\":%.1f,\"object_mb_per_s\":%.1f,"
                   "\"commits_per_s\":%.0f,\"wrk_threads\":1,\"wrk_connections\":%d,"
                   "\"wrk_seconds\":%d,\"wrk_mb_per_s\":%.1f,\"ratio\":%.3f,\"wrk_errors\":%ld,"
                   "\"cpu_s_per_gb\":%.3f,\"wrk_cpu_s_per_gb\":%.3f,\"mock_cpu_s_per_gb\":%.3f,"
                   "\"wrk_mock_cpu_s_per_gb\":%.3f,\"idle_s\":%.3f,\"runq_s\":%.3f,"
                   "\"mock_runq_s\":%.3f}\n",
                   windows[w], round + 1, rr.commits, rr.objects, rr.gets, rr.seconds, rr.cpu,
                   (double)rr.bytes / rr.seconds / 1e6, omb, (double)rr.commits / rr.seconds,
                   windows[w], secs, wmb, wmb > 0 ? omb / wmb : 0, wrk_err,
                   rr.cpu / ((double)obj_bytes / 1e9),
                   wrk_bytes > 0 ? wrk_cpu_s / (wrk_bytes / 1e9) : 0,
                   rr.mock_cpu / ((double)obj_bytes / 1e9),
                   wrk_bytes > 0 ? wmock / (wrk_bytes / 1e9) : 0,
                   rr.seconds - rr.cpu - rr.runq, rr.runq, rr.mock_runq);
            fflush(stdout);
            if (wmb <= 0 || wrk_err)
                fail = 1;
            ratios[nr] = wmb > 0 ? omb / wmb : 0;
            cpus[nr] = rr.cpu / ((double)obj_bytes / 1e9);
            wcpus[nr++] = wrk_bytes > 0 ? wrk_cpu_s / (wrk_bytes / 1e9) : 0;
        }
        double sr[16], sc[16], sw[16];
        sorted(ratios, nr, sr);
        sorted(cpus, nr, sc);
        sorted(wcpus, nr, sw);
        if (nr > 1) /* each round's two clients run seconds apart, under whatever else runs */
            printf("{\"bench\":\"reader\",\"window\":%d,\"rounds\":%d,\"ratio_median\":%.3f,"
                   "\"ratio_min\":%.3f,\"ratio_max\":%.3f,\"cpu_s_per_gb_median\":%.3f,"
                   "\"wrk_cpu_s_per_gb_median\":%.3f}\n",
                   windows[w], nr, sr[nr / 2], sr[0], sr[nr - 1], sc[nr / 2], sw[nr / 2]);
        fflush(stdout);
    }
    unlink(keys);

    /* 3. Seek near the end of a long log of one-commit objects. */
    double ssec = 0;
    char pers[256];
    snprintf(pers, sizeof(pers),
             "\"batch_size_threshold\":1,\"max_in_flight_requests\":64,\"target_pool_size\":64,"
             "\"manifest_interval_ms\":1000");
    uint64_t slast = bench_write("seek/", pers, (uint64_t)seek_objects, 32, &ssec);
    if (!slast) {
        fprintf(stderr, "bench-reader: writing the seek log failed\n");
        mockproc_stop(&mock);
        return 1;
    }
    s3c_config *cfg = bench_cfg("seek/", "");
    long gets0 = mock_get_count();
    s3c_reader *r = NULL;
    char err[1100];
    struct s3c_reader_opts o = {.from_seq = slast - 10};
    uint64_t t0 = s3c__now_ns();
    int rc = s3c_reader_open(cfg, &o, &r, err, sizeof(err));
    uint64_t t1 = s3c__now_ns();
    struct s3c_record rec = {0};
    if (rc == 0)
        rc = s3c_reader_next(r, &rec, 30000);
    uint64_t t2 = s3c__now_ns();
    s3c_config_free(cfg);
    if (rc != 0 || rec.seq != slast - 10) {
        fprintf(stderr, "bench-reader: seek: %s %s\n", s3c_strerror(rc),
                rc == 0 ? "" : (r ? s3c_reader_error(r) : err));
        fail = 1;
    } else {
        struct s3c_reader_stats s;
        s3c_reader_stats_get(r, &s);
        printf("{\"bench\":\"reader_seek\",\"objects\":%" PRIu64 ",\"write_seconds\":%.2f,"
               "\"from_seq\":%" PRIu64 ",\"open_ms\":%.2f,\"first_next_ms\":%.2f,"
               "\"total_ms\":%.2f,\"reader_gets\":%" PRIu64 ",\"reader_lists\":%" PRIu64
               ",\"mock_gets\":%ld}\n",
               slast, ssec, slast - 10, (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6,
               (double)(t2 - t0) / 1e6, s.gets, s.lists, mock_get_count() - gets0);
    }
    s3c_reader_close(r);
    mockproc_stop(&mock);
    return fail;
}
