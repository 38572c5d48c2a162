/* bench-mock: how fast s3commit-mock takes PUTs, driven by wrk (16 connections) on
 * loopback, with its default in-memory store (ETags as MD5, and as under SSE-KMS with
 * --etag kms) and with --store none side by side in one run: PUT/s of 4 KiB bodies and MB/s
 * of 1 MiB bodies, one JSON line per case and store, then one line per case with the
 * memory/none ratios. Targets (memory store): >= 50,000 PUT/s and >= 2,000 MB/s. The load goes only to 127.0.0.1 for a bounded time; each mock
 * is started and stopped by pid. */
#include "mockproc.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

struct wrk_result {
    double requests, duration_us, errors, p50_us, p99_us, cpu_s;
};

/* Runs wrk with mock_put.lua; returns 0 with the parsed "WRK ..." line. */
static int run_wrk(const char *url, const char *script, size_t body, int threads, int conns,
                   int seconds, struct wrk_result *res)
{
    int pfd[2];
    char t[16], c[16], d[16], b[32];
    if (pipe(pfd) < 0)
        return -errno;
    snprintf(t, sizeof(t), "%d", threads);
    snprintf(c, sizeof(c), "%d", conns);
    snprintf(d, sizeof(d), "%ds", seconds);
    snprintf(b, sizeof(b), "%zu", body);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        dup2(pfd[1], STDOUT_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        setenv("BODY_BYTES", b, 1);
        setenv("BUCKET", "bench", 1);
        execlp("wrk", "wrk", "-t", t, "-c", c, "-d", d, "-s", script, url, (char *)NULL);
        fprintf(stderr, "bench-mock: exec wrk: %s (install it: scripts/deps.sh bench)\n",
                strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    char out[16384];
    size_t len = 0;
    ssize_t n;
    while ((n = read(pfd[0], out + len, sizeof(out) - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(pfd[0]);
    int status;
    struct rusage ru;
    wait4(pid, &status, 0, &ru);
    res->cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    const char *line = strstr(out, "WRK ");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !line ||
        sscanf(line, "WRK requests=%lf duration_us=%lf bytes=%*f errors=%lf p50_us=%lf p99_us=%lf",
               &res->requests, &res->duration_us, &res->errors, &res->p50_us, &res->p99_us) != 5) {
        fprintf(stderr, "bench-mock: wrk gave no result line:\n%s\n", out);
        return -EPROTO;
    }
    return 0;
}

/* CPU seconds (user + system) the mock used so far, from /proc. */
static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long mock_put_count(const struct mockproc *m)
{
    char out[16384];
    if (mockproc_http(m, "GET", "/_mock/stats", NULL, out, sizeof(out)) != 200)
        return -1;
    const char *json = strstr(out, "\r\n\r\n");
    cJSON *root = json ? cJSON_Parse(json + 4) : NULL;
    cJSON *v = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(root, "ops"), "PutObject"), "count");
    long n = cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
    cJSON_Delete(root);
    return n;
}

struct bench_case {
    const char *name;
    size_t body;
};

/* One wrk run of case c against mock m; prints its JSON line and returns the case's figure
 * (PUT/s for 4 KiB, MB/s for 1 MiB), or -1 when wrk failed. */
static double bench_one(const struct mockproc *m, const char *store, const char *script,
                        const struct bench_case *c, int seconds, long ncpu)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/", m->endpoint);
    struct wrk_result w;
    long before = mock_put_count(m);
    double cpu0 = proc_cpu_s(m->pid);
    if (run_wrk(url, script, c->body, 2, 16, seconds, &w) != 0)
        return -1;
    double mock_cpu = proc_cpu_s(m->pid) - cpu0;
    long counted = mock_put_count(m) - before;
    double secs = w.duration_us / 1e6;
    double per_s = secs > 0 ? w.requests / secs : 0;
    double mbps = per_s * (double)c->body / 1e6;
    bool small = c->body == 4096;
    double fig = small ? per_s : mbps;
    printf("{\"bench\":\"mock\",\"run\":\"%s\",\"store\":\"%s\",\"body_bytes\":%zu,"
           "\"connections\":16,\"wrk_threads\":2,\"cpus\":%ld,\"seconds\":%.2f,"
           "\"requests\":%.0f,\"mock_counted\":%ld,\"errors\":%.0f,\"put_per_s\":%.0f,"
           "\"mb_per_s\":%.1f,\"p50_us\":%.0f,\"p99_us\":%.0f,\"mock_cpu_s\":%.2f,"
           "\"wrk_cpu_s\":%.2f,\"target\":\"%s\",\"met\":%s}\n",
           c->name, store, c->body, ncpu, secs, w.requests, counted, w.errors, per_s, mbps,
           w.p50_us, w.p99_us, mock_cpu, w.cpu_s,
           small ? ">= 50000 put_per_s" : ">= 2000 mb_per_s",
           fig >= (small ? 50000 : 2000) ? "true" : "false");
    fflush(stdout);
    if (w.errors > 0 || counted < (long)w.requests)
        fprintf(stderr, "bench-mock: %s (%s): %.0f errors, mock counted %ld of %.0f\n", c->name,
                store, w.errors, counted, w.requests);
    return fig;
}

int main(int argc, char **argv)
{
    int seconds = 5;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--seconds"))
            seconds = atoi(argv[++i]);
    if (seconds < 1 || seconds > 60) {
        fprintf(stderr, "bench-mock: --seconds must be 1..60\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    char exe[PATH_MAX], bin[PATH_MAX + 32], src[] = __FILE__, script[PATH_MAX];
    if (!getenv("S3C_MOCK_BIN")) {
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0) {
            fprintf(stderr, "bench-mock: cannot find my own path; set S3C_MOCK_BIN\n");
            return 1;
        }
        exe[n] = '\0';
        snprintf(bin, sizeof(bin), "%s/s3commit-mock", dirname(exe));
        setenv("S3C_MOCK_BIN", bin, 1);
    }
    snprintf(script, sizeof(script), "%s/mock_put.lua", dirname(src));
    if (access(script, R_OK) != 0) {
        fprintf(stderr, "bench-mock: cannot read %s\n", script);
        return 1;
    }

    /* The three mocks run for the whole bench; only one is loaded at a time. */
    static const struct {
        const char *name;
        const char *args[7];
    } stores[] = {
        {"none", {"--store", "none", "--bucket", "bench", NULL}},
        {"memory_md5", {"--store", "memory", "--etag", "md5", "--bucket", "bench", NULL}},
        {"memory_kms", {"--store", "memory", "--etag", "kms", "--bucket", "bench", NULL}},
    };
    enum { NSTORES = sizeof(stores) / sizeof(stores[0]) };
    struct mockproc mocks[NSTORES];
    size_t started = 0;
    int rc = 0;
    for (; started < NSTORES; started++)
        if (mockproc_start(&mocks[started], stores[started].args) != 0) {
            rc = 1;
            break;
        }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    static const struct bench_case cases[] = {{"put_4KiB", 4096}, {"put_1MiB", 1048576}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]) && rc == 0; i++) {
        const struct bench_case *c = &cases[i];
        double fig[NSTORES];
        for (size_t k = 0; k < NSTORES && rc == 0; k++)
            if ((fig[k] = bench_one(&mocks[k], stores[k].name, script, c, seconds, ncpu)) < 0)
                rc = 1;
        if (rc)
            break;
        printf("{\"bench\":\"mock\",\"run\":\"%s_memory_vs_none\",\"unit\":\"%s\","
               "\"none\":%.1f,\"memory_md5\":%.1f,\"memory_kms\":%.1f,"
               "\"ratio_md5\":%.2f,\"ratio_kms\":%.2f}\n",
               c->name, c->body == 4096 ? "put_per_s" : "mb_per_s", fig[0], fig[1], fig[2],
               fig[0] > 0 ? fig[1] / fig[0] : 0, fig[0] > 0 ? fig[2] / fig[0] : 0);
        fflush(stdout);
    }
    while (started > 0)
        mockproc_stop(&mocks[--started]);
    return rc;
}
