/* Runs wrk for the benchmarks that measure our clients against it (wrk.h). The child is
 * stopped by pid if it outlives its time; its output is one JSON line from the Lua
 * script's done(). */
#include "wrk.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crc32c.h"

const char *wrk_put_script(void)
{
    static char path[4200];
    char src[] = __FILE__;
    snprintf(path, sizeof(path), "%s/bench_transport_put.lua", dirname(src));
    return path;
}

/* The base64 of the big-endian CRC-32C of body bytes of 'x' (x-amz-checksum-crc32c). */
static void wrk_crc32c_b64(size_t body, char out[16])
{
    unsigned char chunk[65536];
    memset(chunk, 'x', sizeof(chunk));
    uint32_t crc = 0;
    for (size_t done = 0; done < body;) {
        size_t n = body - done < sizeof(chunk) ? body - done : sizeof(chunk);
        crc = crc32c_update(crc, chunk, n);
        done += n;
    }
    unsigned char be[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16),
                           (unsigned char)(crc >> 8), (unsigned char)crc};
    EVP_EncodeBlock((unsigned char *)out, be, 4);
}

/* Forks wrk with its output on a pipe; returns the pid, or -1. */
static pid_t wrk_spawn(const char *script, const char *url, int threads, int conns, int seconds,
                       const char *const *env, int *out_fd)
{
    int pfd[2];
    char t_arg[16], c_arg[16], d_arg[16];
    if (pipe(pfd) < 0)
        return -1;
    snprintf(t_arg, sizeof(t_arg), "%d", threads);
    snprintf(c_arg, sizeof(c_arg), "%d", conns);
    snprintf(d_arg, sizeof(d_arg), "%ds", seconds);
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(pfd[1], STDOUT_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execlp("wrk", "wrk", "-t", t_arg, "-c", c_arg, "-d", d_arg, "-s", script, url,
               (char *)NULL);
        fprintf(stderr, "wrk: exec wrk: %s (scripts/deps.sh bench installs it)\n", strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    *out_fd = pfd[0];
    return pid;
}

/* A number of the result line; 0 when a script does not print it. */
static double wrk_num(const cJSON *w, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(w, name);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

struct wrk_result wrk_run(const char *script, const char *url, int threads, int conns, int seconds,
                          const char *const *env)
{
    struct wrk_result out = {.errors = -1};
    int fd;
    pid_t pid = wrk_spawn(script, url, threads, conns, seconds, env, &fd);
    if (pid < 0)
        return out;
    static char text[65536];
    size_t got = 0;
    uint64_t deadline = s3c__now_ms() + (uint64_t)(seconds + 10) * 1000;
    for (;;) {
        ssize_t n = read(fd, text + got, sizeof(text) - 1 - got);
        if (n <= 0 || got + (size_t)n >= sizeof(text) - 1)
            break;
        got += (size_t)n;
        if (s3c__now_ms() > deadline)
            break;
    }
    text[got] = '\0';
    close(fd);
    int status = 0;
    struct rusage ru = {0};
    while (wait4(pid, &status, WNOHANG, &ru) == 0) {
        if (s3c__now_ms() > deadline) {
            kill(pid, SIGKILL);
            wait4(pid, &status, 0, &ru);
            break;
        }
        usleep(10000);
    }
    out.user_cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    out.cpu_s = out.user_cpu_s + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    const char *line = strstr(text, "{\"wrk_requests\"");
    cJSON *w = line ? cJSON_Parse(line) : NULL;
    if (!w) {
        fprintf(stderr, "wrk: no result line from wrk:\n%s\n", text);
        return out;
    }
    out.requests = wrk_num(w, "wrk_requests");
    out.seconds = wrk_num(w, "wrk_duration_us") / 1e6;
    out.bytes_read = wrk_num(w, "wrk_bytes_read");
    out.errors = (long)(wrk_num(w, "wrk_non2xx") + wrk_num(w, "wrk_socket_errors"));
    out.p50_ms = wrk_num(w, "wrk_p50_us") / 1e3;
    out.p99_ms = wrk_num(w, "wrk_p99_us") / 1e3;
    cJSON_Delete(w);
    return out;
}

struct wrk_result wrk_put(const struct wrk_args *a)
{
    char body[48], crc[16] = "", crc_env[48], inm[32];
    snprintf(body, sizeof(body), "S3C_BODY_BYTES=%zu", a->body);
    if (a->crc32c)
        wrk_crc32c_b64(a->body, crc);
    snprintf(crc_env, sizeof(crc_env), "S3C_CRC32C_B64=%s", crc);
    snprintf(inm, sizeof(inm), "S3C_IF_NONE_MATCH=%s", a->if_none_match ? "*" : "");
    const char *env[] = {body, crc_env, inm, NULL};
    struct wrk_result out =
        wrk_run(wrk_put_script(), a->url, a->threads, a->conns, a->seconds, env);
    double bytes = out.requests * (double)a->body;
    out.puts_per_s = out.seconds > 0 ? out.requests / out.seconds : 0;
    out.mbps = out.seconds > 0 ? bytes / out.seconds / 1e6 : 0;
    out.cpu_per_gb = bytes > 0 ? out.cpu_s / (bytes / 1e9) : 0;
    out.user_cpu_per_gb = bytes > 0 ? out.user_cpu_s / (bytes / 1e9) : 0;
    return out;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(const double *v, int n)
{
    double t[BENCH_MAX_ROUNDS];
    memcpy(t, v, sizeof(double) * (size_t)n);
    qsort(t, (size_t)n, sizeof(double), bench_cmp_double);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

double bench_min(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++)
        m = v[i] < m ? v[i] : m;
    return m;
}

double bench_max(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}
