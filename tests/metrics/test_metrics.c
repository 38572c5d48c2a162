/* Tests for src/metrics: the rendered page parsed back line by line (types, names,
 * cumulative buckets, +Inf == _count), hostile last_error text, promtool's verdict when
 * promtool is installed, and the HTTP server scraped over a real socket on 127.0.0.1:0. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "metrics/metrics.h"
#include "test.h"

#define MAXS 256

struct sample {
    char name[96];
    char labels[512]; /* unescaped, as "k=v,k=v" */
    double value;
};

struct family {
    char name[96], type[16];
    int has_help;
};

struct page {
    struct sample s[MAXS];
    int ns;
    struct family f[64];
    int nf;
};

/* A strict reader of the text format, enough to catch anything we could emit wrong. */
static void parse_page(const char *text, struct page *pg)
{
    const char *p = text;

    memset(pg, 0, sizeof(*pg));
    ASSERT(text[0] != '\0');
    ASSERT(text[strlen(text) - 1] == '\n');
    while (*p) {
        const char *eol = strchr(p, '\n');
        char line[2048];
        size_t n;

        ASSERT(eol != NULL);
        n = (size_t)(eol - p);
        ASSERT(n < sizeof(line));
        memcpy(line, p, n);
        line[n] = '\0';
        p = eol + 1;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] >= 0x7f)
                TEST_FAIL_("non-printable byte in line: %s", line);

        if (strncmp(line, "# HELP ", 7) == 0) {
            char name[96];
            ASSERT(sscanf(line + 7, "%95s", name) == 1);
            ASSERT(pg->nf < 64);
            snprintf(pg->f[pg->nf].name, sizeof(pg->f[0].name), "%s", name);
            pg->f[pg->nf].has_help = 1;
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[96], type[16];
            ASSERT(sscanf(line + 7, "%95s %15s", name, type) == 2);
            ASSERT(pg->nf < 64);
            ASSERT_STR_EQ(pg->f[pg->nf].name, name); /* HELP came first, same name */
            snprintf(pg->f[pg->nf].type, sizeof(pg->f[0].type), "%s", type);
            pg->nf++;
            continue;
        }
        ASSERT(line[0] != '#');
        {
            struct sample *s = &pg->s[pg->ns++];
            char *q = line, *end;
            size_t o = 0;
            ASSERT(pg->ns <= MAXS);
            while (*q && *q != '{' && *q != ' ')
                q++;
            ASSERT((size_t)(q - line) < sizeof(s->name));
            memcpy(s->name, line, (size_t)(q - line));
            for (char *c = s->name; *c; c++)
                ASSERT((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_');
            if (*q == '{') {
                q++;
                while (*q != '}') {
                    while (*q && *q != '=')
                        s->labels[o++] = *q++;
                    ASSERT(q[0] == '=' && q[1] == '"');
                    s->labels[o++] = '=';
                    q += 2;
                    while (*q != '"') {
                        ASSERT(*q != '\0');
                        if (*q == '\\') {
                            ASSERT(q[1] == '\\' || q[1] == '"' || q[1] == 'n');
                            s->labels[o++] = q[1] == 'n' ? '\n' : q[1];
                            q += 2;
                        } else {
                            s->labels[o++] = *q++;
                        }
                        ASSERT(o < sizeof(s->labels) - 8);
                    }
                    q++;
                    if (*q == ',') {
                        s->labels[o++] = ',';
                        q++;
                    } else {
                        ASSERT(*q == '}');
                    }
                }
                q++;
            }
            ASSERT(*q == ' ');
            s->value = strtod(q + 1, &end);
            ASSERT(end != q + 1 && *end == '\0');
        }
    }
}

static const struct family *family_of(const struct page *pg, const char *sample)
{
    const struct family *best = NULL;
    for (int i = 0; i < pg->nf; i++) {
        size_t n = strlen(pg->f[i].name);
        if (strncmp(sample, pg->f[i].name, n) == 0 &&
            (sample[n] == '\0' || strcmp(sample + n, "_bucket") == 0 ||
             strcmp(sample + n, "_sum") == 0 || strcmp(sample + n, "_count") == 0))
            if (!best || strlen(best->name) < n)
                best = &pg->f[i];
    }
    return best;
}

static double value_of(const struct page *pg, const char *name, const char *labels)
{
    for (int i = 0; i < pg->ns; i++)
        if (strcmp(pg->s[i].name, name) == 0 && strcmp(pg->s[i].labels, labels) == 0)
            return pg->s[i].value;
    TEST_FAIL_("no sample %s{%s}", name, labels);
    return 0;
}

/* Buckets in order, le increasing, counts cumulative, +Inf last and == _count. */
static void check_histogram(const struct page *pg, const char *fam, int want_buckets)
{
    char bname[128], cname[128];
    double last_le = -1, last_count = -1;
    int nb = 0, saw_inf = 0;

    snprintf(bname, sizeof(bname), "%s_bucket", fam);
    snprintf(cname, sizeof(cname), "%s_count", fam);
    for (int i = 0; i < pg->ns; i++) {
        const struct sample *s = &pg->s[i];
        double le;
        if (strcmp(s->name, bname) != 0)
            continue;
        ASSERT(strncmp(s->labels, "le=", 3) == 0);
        ASSERT(!saw_inf);
        if (strcmp(s->labels + 3, "+Inf") == 0) {
            saw_inf = 1;
            ASSERT(s->value == value_of(pg, cname, ""));
        } else {
            le = strtod(s->labels + 3, NULL);
            ASSERT(le > last_le);
            last_le = le;
        }
        ASSERT(s->value >= last_count);
        last_count = s->value;
        nb++;
    }
    ASSERT(saw_inf);
    ASSERT_EQ(nb, want_buckets);
}

static void fill_stats(struct s3c_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->commits_submitted = 1000;
    st->bytes_submitted = 123456;
    st->commits_durable = 990;
    st->bytes_durable = 120000;
    st->durable_seq = 990;
    st->commits_pending = 10;
    st->bytes_pending = 3456;
    st->batches_sent = 40;
    st->put_attempts = 45;
    st->retries = 5;
    st->failures_retryable = 4;
    st->failures_fatal = 1;
    st->retry_budget_exhausted = 2;
    st->in_flight = 3;
    st->pool_opens = 17;
    st->pool_closes = 1;
    st->pool_reuses = 28;
    st->pool_heartbeat_failures = 1;
    for (int i = 0; i < S3C_BATCH_HIST_BUCKETS; i++)
        st->batch_hist[i] = (uint64_t)(i % 3);
    for (int i = 0; i < 24; i++) {
        st->ack_latency_hist[i] = (uint64_t)(i * 7 % 5);
        st->ack_latency_count += st->ack_latency_hist[i];
    }
    st->ack_latency_us_sum = 12345678;
}

static void test_render_parses(void)
{
    static char buf[65536];
    static struct page pg;
    struct s3c_stats st;
    int n;

    fill_stats(&st);
    n = metrics_render(&st, buf, sizeof(buf));
    ASSERT_GT(n, 0);
    ASSERT_EQ((size_t)n, strlen(buf));
    parse_page(buf, &pg);

    for (int i = 0; i < pg.ns; i++) {
        const struct family *f = family_of(&pg, pg.s[i].name);
        if (!f)
            TEST_FAIL_("sample %s has no # TYPE", pg.s[i].name);
        ASSERT(f->has_help);
        if (strcmp(f->type, "counter") == 0) {
            size_t l = strlen(f->name);
            ASSERT(l > 6 && strcmp(f->name + l - 6, "_total") == 0);
        } else {
            ASSERT(strcmp(f->type, "gauge") == 0 || strcmp(f->type, "histogram") == 0);
        }
    }
    for (int i = 0; i < pg.nf; i++)
        for (int j = i + 1; j < pg.nf; j++)
            ASSERT(strcmp(pg.f[i].name, pg.f[j].name) != 0);

    ASSERT(value_of(&pg, "s3commit_commits_submitted_total", "") == 1000);
    ASSERT(value_of(&pg, "s3commit_commits_durable_total", "") == 990);
    ASSERT(value_of(&pg, "s3commit_batches_durable_total", "") == 40);
    ASSERT(value_of(&pg, "s3commit_put_failures_total", "class=retryable") == 4);
    ASSERT(value_of(&pg, "s3commit_put_failures_total", "class=fatal") == 1);
    ASSERT(value_of(&pg, "s3commit_durable_seq", "") == 990);
    ASSERT(value_of(&pg, "s3commit_in_flight_requests", "") == 3);
    ASSERT(value_of(&pg, "s3commit_last_error_info", "message=") == 0);

    check_histogram(&pg, "s3commit_ack_latency_seconds", 24);
    ASSERT(value_of(&pg, "s3commit_ack_latency_seconds_count", "") == (double)st.ack_latency_count);
    ASSERT(value_of(&pg, "s3commit_ack_latency_seconds_sum", "") == 12.345678);
    /* bucket i (< 2^i us) lands under le = 2^i us: the first is 1 us, le=0.004194304 is
     * the cumulative count of buckets 0..22 */
    ASSERT(value_of(&pg, "s3commit_ack_latency_seconds_bucket", "le=1e-06") ==
           (double)st.ack_latency_hist[0]);
    {
        double cum = 0;
        for (int i = 0; i < 23; i++)
            cum += (double)st.ack_latency_hist[i];
        ASSERT(value_of(&pg, "s3commit_ack_latency_seconds_bucket", "le=4.194304") == cum);
    }
    check_histogram(&pg, "s3commit_batch_commits", S3C_BATCH_HIST_BUCKETS);
    ASSERT(value_of(&pg, "s3commit_batch_commits_bucket", "le=1") == (double)st.batch_hist[0]);
    ASSERT(value_of(&pg, "s3commit_batch_commits_bucket", "le=3") ==
           (double)(st.batch_hist[0] + st.batch_hist[1]));

    /* too small a buffer: -1, never a truncated page */
    ASSERT_EQ(metrics_render(&st, buf, 100), -1);
    ASSERT_EQ(metrics_render(&st, buf, (size_t)n), -1);
    ASSERT_EQ(metrics_render(&st, buf, (size_t)n + 1), n);
}

static void test_hostile_last_error(void)
{
    static char buf[65536];
    static struct page pg;
    struct s3c_stats st;
    const char *evil = "PUT 503 \"SlowDown\"\n# TYPE fake counter\nfake_total 1 \\ \xc3\x28 \x01";

    fill_stats(&st);
    snprintf(st.last_error, sizeof(st.last_error), "%s", evil);
    ASSERT_GT(metrics_render(&st, buf, sizeof(buf)), 0);
    parse_page(buf, &pg);
    ASSERT(strstr(buf, "\nfake_total") == NULL);
    ASSERT(strstr(buf, "\n# TYPE fake") == NULL);
    ASSERT(value_of(&pg, "s3commit_last_error_info",
                    "message=PUT 503 \"SlowDown\"?# TYPE fake counter?fake_total 1 \\ ?( ?") == 1);

    /* not NUL-terminated: rendering stops at the end of the field */
    memset(st.last_error, 'x', sizeof(st.last_error));
    ASSERT_GT(metrics_render(&st, buf, sizeof(buf)), 0);
    parse_page(buf, &pg);
}

/* promtool check metrics, when promtool is installed: it must accept both pages. */
static void test_promtool(void)
{
    static char buf[65536];
    struct s3c_stats st;
    char path[] = "/tmp/s3c-metrics-XXXXXX", cmd[512];
    int fd, rc;

    if (access("/usr/bin/promtool", X_OK) != 0) {
        fprintf(stderr, "   promtool not installed: SKIPPED (scripts/deps.sh test installs it)\n");
        return;
    }
    for (int round = 0; round < 3; round++) {
        fill_stats(&st);
        if (round == 1)
            snprintf(st.last_error, sizeof(st.last_error), "x\"\n\\y \xff");
        if (round == 2)
            memset(&st, 0, sizeof(st));
        ASSERT_GT(metrics_render(&st, buf, sizeof(buf)), 0);
        fd = mkstemp(path);
        ASSERT(fd >= 0);
        ASSERT_EQ(write(fd, buf, strlen(buf)), (int64_t)strlen(buf));
        close(fd);
        snprintf(cmd, sizeof(cmd), "/usr/bin/promtool check metrics < %s", path);
        rc = system(cmd);
        unlink(path);
        snprintf(path, sizeof(path), "/tmp/s3c-metrics-XXXXXX");
        if (rc != 0)
            TEST_FAIL_("promtool check metrics rejected the page (round %d, status %d):\n%s", round,
                       rc, buf);
    }
}

/* ---- the server ---------------------------------------------------------------------- */

static atomic_int collects;

static void collect(void *ctx, struct s3c_stats *out)
{
    (void)ctx;
    atomic_fetch_add(&collects, 1);
    fill_stats(out);
}

static int connect_to(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ASSERT(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Reads until the server closes (5 s at most). Returns bytes read. */
static size_t read_all(int fd, char *out, size_t cap)
{
    size_t got = 0;
    struct pollfd p = {fd, POLLIN, 0};

    while (got + 1 < cap) {
        ssize_t r;
        ASSERT(poll(&p, 1, 5000) == 1);
        r = recv(fd, out + got, cap - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    out[got] = '\0';
    return got;
}

static void request(int port, const char *req, char *out, size_t cap)
{
    int fd = connect_to(port);
    ASSERT_EQ(send(fd, req, strlen(req), MSG_NOSIGNAL), (int64_t)strlen(req));
    read_all(fd, out, cap);
    close(fd);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_server(void)
{
    static char resp[131072], want[65536];
    char err[256];
    struct metrics_srv *m;
    struct s3c_stats st;
    int port, n, idle;
    const char *body;
    double t0;

    m = metrics_srv_start("127.0.0.1:0", collect, NULL, err, sizeof(err));
    if (!m)
        TEST_FAIL_("start: %s", err);
    port = metrics_srv_port(m);
    ASSERT_GT(port, 0);

    fill_stats(&st);
    n = metrics_render(&st, want, sizeof(want));
    ASSERT_GT(n, 0);

    request(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", resp, sizeof(resp));
    ASSERT(strncmp(resp, "HTTP/1.1 200 OK\r\n", 17) == 0);
    ASSERT(strstr(resp, "Content-Type: text/plain; version=0.0.4") != NULL);
    body = strstr(resp, "\r\n\r\n");
    ASSERT(body != NULL);
    ASSERT_STR_EQ(body + 4, want);
    {
        char cl[64];
        snprintf(cl, sizeof(cl), "Content-Length: %d\r\n", n);
        ASSERT(strstr(resp, cl) != NULL);
    }
    ASSERT_EQ(atomic_load(&collects), 1);

    request(port, "GET /metrics?x=1 HTTP/1.0\r\n\r\n", resp, sizeof(resp));
    ASSERT(strncmp(resp, "HTTP/1.1 200 OK\r\n", 17) == 0);
    request(port, "GET / HTTP/1.1\r\n\r\n", resp, sizeof(resp));
    ASSERT(strncmp(resp, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
    request(port, "GET /metricsx HTTP/1.1\r\n\r\n", resp, sizeof(resp));
    ASSERT(strncmp(resp, "HTTP/1.1 404 ", 13) == 0);
    request(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", resp, sizeof(resp));
    ASSERT(strncmp(resp, "HTTP/1.1 405 ", 13) == 0);
    request(port, "garbage\r\n\r\n", resp, sizeof(resp));
    ASSERT(strncmp(resp, "HTTP/1.1 400 ", 13) == 0);
    request(port, "HEAD /metrics HTTP/1.1\r\n\r\n", resp, sizeof(resp));
    ASSERT(strncmp(resp, "HTTP/1.1 200 OK\r\n", 17) == 0);
    ASSERT(strstr(resp, "\r\n\r\n")[4] == '\0');
    ASSERT_EQ(atomic_load(&collects), 3);

    /* an oversized request head is refused, not buffered without bound */
    {
        static char big[20000];
        int fd = connect_to(port);
        memset(big, 'a', sizeof(big));
        memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 26);
        send(fd, big, sizeof(big), MSG_NOSIGNAL);
        read_all(fd, resp, sizeof(resp));
        close(fd);
        ASSERT(strncmp(resp, "HTTP/1.1 431 ", 13) == 0);
    }

    /* an idle client is dropped after the client timeout and the next one is served */
    idle = connect_to(port);
    t0 = now_s();
    request(port, "GET /metrics HTTP/1.1\r\n\r\n", resp, sizeof(resp));
    ASSERT(strncmp(resp, "HTTP/1.1 200 OK\r\n", 17) == 0);
    ASSERT(now_s() - t0 < 4.0);
    ASSERT_EQ(read_all(idle, resp, sizeof(resp)), 0); /* EOF: closed by the server */
    close(idle);

    /* stop while a client is connected and silent: prompt, no hang */
    idle = connect_to(port);
    usleep(50 * 1000);
    t0 = now_s();
    metrics_srv_stop(m);
    ASSERT(now_s() - t0 < 1.0);
    close(idle);
    metrics_srv_stop(NULL);
}

static void test_server_errors(void)
{
    char err[256];
    struct metrics_srv *a, *b;

    ASSERT(metrics_srv_start("nonsense", collect, NULL, err, sizeof(err)) == NULL);
    ASSERT(strstr(err, "metrics: listen address must be \"HOST:PORT\"") != NULL);
    ASSERT(metrics_srv_start("256.1.1.1:0", collect, NULL, err, sizeof(err)) == NULL);
    ASSERT(strstr(err, "metrics: cannot resolve 256.1.1.1:0") != NULL);

    a = metrics_srv_start("127.0.0.1:0", collect, NULL, err, sizeof(err));
    ASSERT(a != NULL);
    {
        char spec[64];
        snprintf(spec, sizeof(spec), "127.0.0.1:%d", metrics_srv_port(a));
        b = metrics_srv_start(spec, collect, NULL, err, sizeof(err));
        ASSERT(b == NULL);
        ASSERT(strstr(err, "Address already in use") != NULL);
    }
    metrics_srv_stop(a);

    /* IPv6 loopback when the host has it */
    a = metrics_srv_start("[::1]:0", collect, NULL, err, sizeof(err));
    if (a) {
        ASSERT_GT(metrics_srv_port(a), 0);
        metrics_srv_stop(a);
    } else {
        fprintf(stderr, "   no IPv6 loopback here: %s\n", err);
    }
}

int main(void)
{
    RUN(test_render_parses);
    RUN(test_hostile_last_error);
    RUN(test_promtool);
    RUN(test_server);
    RUN(test_server_errors);
    fprintf(stderr, "ok\n");
    return 0;
}
