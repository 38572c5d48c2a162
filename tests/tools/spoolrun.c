/* Helpers for the program-level spool tests (see spoolrun.h). */
#include "spoolrun.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

uint32_t sr_commit(int r, uint32_t i, char out[SR_COMMIT_MAX])
{
    int n = snprintf(out, 64, "run %02d commit %07" PRIu32 "|", r, i);
    uint32_t extra = 150u + ((uint32_t)r * 7919u + i * 104729u) % 100u;
    for (uint32_t j = 0; j < extra; j++)
        out[(uint32_t)n + j] = (char)('a' + ((uint32_t)r * 3u + i + j) % 26u);
    return (uint32_t)n + extra;
}

/* One watermark line: the value after the key, above the one before. */
static void sr_mark(const char *line, const char *key, uint64_t *max, uint64_t *count)
{
    size_t k = strlen(key);
    if (strncmp(line, key, k) != 0)
        return;
    uint64_t v = strtoull(line + k, NULL, 10);
    if (v <= *max)
        TEST_FAIL_("%s%" PRIu64 " after %" PRIu64 ": a watermark went back", key, v, *max);
    *max = v;
    (*count)++;
}

void sr_parse(struct sr_out *s, const struct buf *o)
{
    while (o->p && s->parsed < o->len) {
        const char *line = o->p + s->parsed, *nl = memchr(line, '\n', o->len - s->parsed);
        if (!nl)
            return; /* the rest of the line has not arrived */
        s->parsed += (size_t)(nl - line) + 1;
        if (strncmp(line, "{\"epoch\":", 9) == 0) {
            ASSERT(!s->header);
            ASSERT_EQ(sscanf(line,
                             "{\"epoch\":%" SCNu64 ",\"recovered_seq\":%" SCNu64
                             ",\"control_seq\":%" SCNu64 ",\"first_seq\":%" SCNu64 "}",
                             &s->epoch, &s->recovered_seq, &s->control_seq, &s->first_seq),
                      4);
            ASSERT_UEQ(s->first_seq, s->control_seq + 1);
            s->header = true;
            continue;
        }
        ASSERT(s->header); /* no watermark before the first line */
        sr_mark(line, "{\"local_seq\":", &s->max_local, &s->nlocal);
        sr_mark(line, "{\"durable_seq\":", &s->max_durable, &s->ndurable);
    }
}

void sr_config(const char *path, const char *endpoint, const char *spool_dir, uint64_t ring_bytes,
               uint64_t segment_bytes, const char *persistence)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"" SR_PREFIX "\"},\n"
             " \"persistence\":{\"batch_timeout_ms\":2,\"batch_bytes_threshold\":262144,"
             "\"max_in_flight_requests\":8,\"retry_base_delay_ms\":20,\"max_retry_attempts\":3,"
             "\"max_retry_delay_ms\":200%s},\n"
             " \"pipeline\":{\"ring_bytes\":%" PRIu64 ",\"max_commit_bytes\":4096},\n"
             " \"spool\":{\"dir\":\"%s\",\"segment_bytes\":%" PRIu64 ",\"max_bytes\":%" PRIu64
             "},\n"
             " \"log\":{\"level\":\"info\"}}\n",
             endpoint, persistence, ring_bytes, spool_dir, segment_bytes, 64 * segment_bytes);
    write_file(path, text);
}

void sr_mock_start(struct mockproc *m, const char *data_dir)
{
    ASSERT_EQ(mockproc_start(m, (const char *[]){"--data-dir", data_dir, NULL}), 0);
    track_child(m->pid);
}

static char sr_http_what[512];
static pid_t sr_http_mock;

/* The mock did not answer in time: say what was asked and where its threads wait, then
 * fail (the abort handler stops the children). */
static void sr_on_alarm(int sig)
{
    (void)sig;
    char path[64], buf[512];
    ssize_t n;
    (void)!write(2, sr_http_what, strlen(sr_http_what));
    snprintf(path, sizeof(path), "/proc/%d/wchan", (int)sr_http_mock);
    int fd = open(path, O_RDONLY);
    if (fd >= 0 && (n = read(fd, buf, sizeof(buf) - 1)) > 0) {
        (void)!write(2, " (the mock's main thread waits in ", 34);
        (void)!write(2, buf, (size_t)n);
        (void)!write(2, ")", 1);
    }
    if (fd >= 0)
        close(fd);
    (void)!write(2, "\n", 1);
    abort();
}

int sr_http(const struct mockproc *m, const char *method, const char *path, const char *body,
            char *out, size_t outlen)
{
    snprintf(sr_http_what, sizeof(sr_http_what),
             "the mock (pid %d) did not answer %s %s within 20 s", (int)m->pid, method, path);
    sr_http_mock = m->pid;
    signal(SIGALRM, sr_on_alarm);
    alarm(20);
    int rc = mockproc_http(m, method, path, body, out, outlen);
    alarm(0);
    return rc;
}

void sr_outage(const struct mockproc *m, bool on)
{
    char out[4096];
    const char *body = on ? "{\"error_rate\":1.0,\"error_status\":503,\"key_prefix\":\"" SR_PREFIX
                            "log/\"}"
                          : "{\"error_rate\":0}";
    ASSERT_EQ(sr_http(m, "PUT", "/_mock/faults", body, out, sizeof(out)), 200);
}

void sr_feed_init(struct sr_feed *f, int run, uint32_t n, double rate_per_ms)
{
    char payload[SR_COMMIT_MAX];
    memset(f, 0, sizeof(*f));
    f->run = run;
    f->n = n;
    f->rate_per_ms = rate_per_ms;
    f->ends = malloc(n * sizeof(*f->ends));
    ASSERT(f->ends != NULL);
    for (uint32_t i = 0; i < n; i++) {
        buf_frame(&f->in, payload, sr_commit(run, i, payload));
        f->ends[i] = f->in.len;
    }
}

void sr_feed_go(struct sr_feed *f)
{
    f->t0 = now_ms();
}

void sr_feed_pump(struct sr_feed *f, struct proc *p, int ms)
{
    size_t due = 0;
    if (f->t0 && f->n) {
        double k = (double)(now_ms() - f->t0 + 1) * f->rate_per_ms;
        due = f->ends[k < (double)f->n ? (uint32_t)k : f->n - 1];
    }
    if (due > f->sent && p->in >= 0)
        f->sent += proc_pump(p, f->in.p + f->sent, due - f->sent, ms);
    else
        proc_pump(p, NULL, 0, ms);
}

uint32_t sr_feed_whole(const struct sr_feed *f)
{
    uint32_t lo = 0, hi = f->n; /* the first frame not wholly written */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (f->ends[mid] <= f->sent)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void sr_feed_free(struct sr_feed *f)
{
    free(f->ends);
    buf_free(&f->in);
}

int sr_run_drain(const char *bin, const char *cfg, struct proc *p, struct sr_out *out, int ms)
{
    memset(out, 0, sizeof(*out));
    uint64_t t0 = now_ms();
    int code = run((const char *[]){bin, "run", "--config", cfg, NULL}, NULL, p, ms);
    fprintf(stderr, "   (the run took %" PRIu64 " ms)\n", now_ms() - t0);
    sr_parse(out, &p->o);
    if (code != 0)
        fprintf(stderr, "run stderr:\n%s\n", p->e.p);
    return code;
}

/* The control seqs cat --control printed on stderr, in order. */
static size_t sr_controls(const char *err, uint64_t *seqs, size_t cap)
{
    size_t n = 0;
    for (const char *p = err; (p = strstr(p, "{\"control_seq\":")) != NULL; p += 15) {
        ASSERT(n < cap);
        seqs[n] = strtoull(p + 15, NULL, 10);
        ASSERT(n == 0 || seqs[n] > seqs[n - 1]);
        n++;
    }
    return n;
}

size_t sr_read_back(const char *bin, const char *cfg, struct sr_rec **recs, uint64_t *last_seq)
{
    struct proc p;
    uint64_t t0 = now_ms();
    int code =
        run((const char *[]){bin, "cat", "--config", cfg, "--control", NULL}, NULL, &p, 120000);
    if (code != 0)
        TEST_FAIL_("cat exited %d: %s", code, p.e.p);
    uint64_t ctl[256];
    size_t nctl = sr_controls(p.e.p, ctl, 256), c = 0;
    size_t cap = 1024, n = 0, off = 0;
    struct sr_rec *v = malloc(cap * sizeof(*v));
    ASSERT(v != NULL);
    uint64_t seq = 1;
    char want[SR_COMMIT_MAX];
    while (off < p.o.len) {
        uint32_t len;
        ASSERT(p.o.len - off >= 4);
        memcpy(&len, p.o.p + off, 4); /* little-endian, as the machine */
        ASSERT(p.o.len - off - 4 >= len);
        const char *b = p.o.p + off + 4;
        off += 4 + (size_t)len;
        while (c < nctl && ctl[c] == seq)
            c++, seq++;
        int r;
        uint32_t i;
        if (sscanf(b, "run %2d commit %7" SCNu32 "|", &r, &i) != 2 || r < 0 || r > 99)
            TEST_FAIL_("seq %" PRIu64 ": bytes no run sent: %.*s", seq, (int)(len < 40 ? len : 40),
                       b);
        if (len != sr_commit(r, i, want) || memcmp(b, want, len) != 0)
            TEST_FAIL_("seq %" PRIu64 ": the bytes of run %d commit %" PRIu32 " differ", seq, r, i);
        if (n == cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof(*v));
            ASSERT(v != NULL);
        }
        v[n++] = (struct sr_rec){.seq = seq++, .run = r, .index = i};
    }
    while (c < nctl && ctl[c] == seq)
        c++, seq++;
    ASSERT_EQ(c, nctl); /* every control record fell on a seq of the chain */
    *last_seq = seq - 1;
    *recs = v;
    fprintf(stderr,
            "   read back: %zu commits and %zu control records, seqs 1..%" PRIu64 " (%" PRIu64
            " ms)\n",
            n, nctl, seq - 1, now_ms() - t0);
    proc_free(&p);
    return n;
}

void sr_verify(const char *bin, const char *cfg, uint64_t commits, uint64_t last_seq)
{
    struct proc p;
    int code = run((const char *[]){bin, "verify", "--config", cfg, NULL}, NULL, &p, 60000);
    if (code != 0)
        fprintf(stderr, "verify stdout: %s\nstderr: %s\n", p.o.p, p.e.p);
    ASSERT_EQ(code, 0);
    cJSON *sum = cJSON_Parse(p.o.p);
    ASSERT(sum != NULL);
    ASSERT(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sum, "ok")));
    ASSERT_EQ(cJSON_GetObjectItemCaseSensitive(sum, "commits")->valuedouble, (double)commits);
    ASSERT_EQ(cJSON_GetObjectItemCaseSensitive(sum, "last_seq")->valuedouble, (double)last_seq);
    cJSON_Delete(sum);
    proc_free(&p);
}

void sr_check_run0(const char *bin, const char *cfg, uint64_t first_seq, uint64_t n,
                   uint64_t last_seq)
{
    struct sr_rec *recs;
    uint64_t last;
    size_t got = sr_read_back(bin, cfg, &recs, &last);
    ASSERT_UEQ(got, n);
    for (size_t i = 0; i < got; i++)
        if (recs[i].run != 0 || recs[i].index != i || recs[i].seq != first_seq + i)
            TEST_FAIL_("commit %zu of the log is run %d commit %" PRIu32 " at seq %" PRIu64, i,
                       recs[i].run, recs[i].index, recs[i].seq);
    ASSERT_UEQ(last, last_seq);
    sr_verify(bin, cfg, n, last_seq);
    free(recs);
}

uint64_t sr_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    ASSERT(f != NULL);
    uint64_t kb = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %" SCNu64, &kb) == 1)
            break;
    fclose(f);
    ASSERT(kb > 0);
    return kb;
}

uint64_t sr_dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    ASSERT(d != NULL);
    uint64_t total = 0;
    char path[1024];
    struct dirent *e;
    struct stat st;
    while ((e = readdir(d)) != NULL) {
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            total += (uint64_t)st.st_size;
    }
    closedir(d);
    return total;
}
