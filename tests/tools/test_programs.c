/* End-to-end tests of build/bin/s3commit and s3commit-load against s3commit-mock: run with
 * stdin framing then verify, configs good and bad, truncated and oversized frames, an
 * unreachable endpoint, wrong credentials, a Unix-socket input, a metrics scrape, a
 * load run, and cat (round trip, seeks, --control, a copy, --follow, damage, a closed pipe). Every
 * process started here is stopped by pid. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mockproc.h"
#include "proc.h"
#include "test.h"

static char tmpdir[256];
static char bin_s3commit[512], bin_load[512];

/* ---- helpers ------------------------------------------------------------------------- */

/* n frames of 1..max_len bytes, content derived from i. */
static void buf_frames(struct buf *b, int n, uint32_t max_len)
{
    static char payload[65536];
    for (int i = 0; i < n; i++) {
        uint32_t len = 1 + (uint32_t)(i * 7919) % max_len;
        for (uint32_t j = 0; j < len; j++)
            payload[j] = (char)('a' + (i + j) % 26);
        buf_frame(b, payload, len);
    }
}

/* A config file for the mock at endpoint with extra JSON members for "persistence" and
 * top level (each may be ""). Returns its path (static storage per name). */
static const char *config_for(const char *name, const char *endpoint, const char *prefix,
                              const char *s3_extra, const char *persistence_extra,
                              const char *top_extra)
{
    static char paths[16][512];
    static int next;
    char *path = paths[next++ % 16];
    char text[4096];
    snprintf(path, 512, "%s/%s.json", tmpdir, name);
    snprintf(text, sizeof(text),
             "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"%s\"%s},\n"
             " \"persistence\":{\"batch_timeout_ms\":2,\"retry_base_delay_ms\":20,"
             "\"shutdown_timeout_ms\":10000%s},\n"
             " \"log\":{\"level\":\"info\"}%s}\n",
             endpoint, prefix, s3_extra, persistence_extra, top_extra);
    write_file(path, text);
    return path;
}

/* The last {"durable_seq":N} on stdout (0 if none), checking that they only go up. */
static uint64_t last_durable(const char *out)
{
    uint64_t last = 0;
    const char *p = out;
    while ((p = strstr(p, "{\"durable_seq\":")) != NULL) {
        uint64_t v = strtoull(p + 15, NULL, 10);
        ASSERT(v > last);
        last = v;
        p += 15;
    }
    return last;
}

static cJSON *json_last_line(const char *out)
{
    const char *start = out, *nl;
    size_t len = strlen(out);
    while (len > 0 && out[len - 1] == '\n')
        len--;
    for (nl = out; (nl = memchr(nl, '\n', len - (size_t)(nl - out))) != NULL; nl++)
        start = nl + 1;
    cJSON *j = cJSON_ParseWithLength(start, len - (size_t)(start - out));
    if (!j)
        TEST_FAIL_("not JSON: %s", start);
    return j;
}

static double jnum(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(v))
        TEST_FAIL_("field %s missing or not a number", name);
    return v->valuedouble;
}

static int verify(const char *config, int expect, cJSON **summary)
{
    char n[32];
    struct proc p;
    snprintf(n, sizeof(n), "%d", expect);
    const char *argv[] = {bin_s3commit, "verify", "--config", config, "--expect-commits", n, NULL};
    int code = run(argv, NULL, &p, 60000);
    if (code != 0)
        fprintf(stderr, "verify stdout: %s\nstderr: %s\n", p.o.p, p.e.p);
    *summary = json_last_line(p.o.p);
    proc_free(&p);
    return code;
}

static void start_mock(struct mockproc *m, const char *const *args)
{
    ASSERT_EQ(mockproc_start(m, args), 0);
    track_child(m->pid);
}

static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ASSERT(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    ASSERT(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* ---- the cases ----------------------------------------------------------------------- */

static void test_check_config(void)
{
    struct proc p;
    const char *good = config_for("good", "http://127.0.0.1:9", "x/",
                                  ",\"access_key_id\":\"AKIDEXAMPLE\","
                                  "\"secret_access_key\":\"sEcReTvAlUe1234567890\"",
                                  "", "");
    const char *argv[] = {bin_s3commit, "check-config", good, NULL};
    ASSERT_EQ(run(argv, NULL, &p, 10000), 0);
    ASSERT(strstr(p.o.p, "commits") != NULL);
    ASSERT(strstr(p.o.p, "batch_size_threshold") != NULL); /* defaults filled in */
    ASSERT(strstr(p.o.p, "sEcReTvAlUe") == NULL);          /* the secret masked */
    ASSERT(strstr(p.e.p, "sEcReTvAlUe") == NULL);
    proc_free(&p);

    const char *bad =
        config_for("bad", "http://127.0.0.1:9", "x/", "", ",\"max_in_flight_requests\":0", "");
    const char *argv2[] = {bin_s3commit, "check-config", bad, NULL};
    ASSERT_EQ(run(argv2, NULL, &p, 10000), 2);
    ASSERT(strstr(p.e.p, "persistence.max_in_flight_requests") != NULL);
    ASSERT_EQ(p.o.len, 0);
    proc_free(&p);

    char missing[512];
    snprintf(missing, sizeof(missing), "%s/no-such-config.json", tmpdir);
    const char *argv3[] = {bin_s3commit, "check-config", missing, NULL};
    ASSERT_EQ(run(argv3, NULL, &p, 10000), 2);
    ASSERT(strstr(p.e.p, "no-such-config.json") != NULL);
    proc_free(&p);

    /* run and verify refuse a bad config the same way, before touching S3. */
    const char *argv4[] = {bin_s3commit, "run", "--config", bad, NULL};
    ASSERT_EQ(run(argv4, NULL, &p, 10000), 2);
    ASSERT(strstr(p.e.p, "persistence.max_in_flight_requests") != NULL);
    proc_free(&p);
    const char *argv5[] = {bin_s3commit, "frobnicate", NULL};
    ASSERT_EQ(run(argv5, NULL, &p, 10000), 2);
    proc_free(&p);
}

static void test_run_then_verify(void)
{
    struct mockproc m;
    struct proc p;
    struct buf in = {0};
    cJSON *sum;
    start_mock(&m, NULL);
    const char *cfg = config_for("run", m.endpoint, "run-1/", "", "", "");
    buf_frames(&in, 3000, 3000);
    const char *argv[] = {bin_s3commit, "run", "--config", cfg, NULL};
    ASSERT_EQ(run(argv, &in, &p, 60000), 0);
    ASSERT_UEQ(last_durable(p.o.p), 3001); /* seq 1 is the run's control record */
    ASSERT(strstr(p.o.p, "{\"epoch\":1,\"recovered_seq\":0,\"control_seq\":1,\"first_seq\":2}\n") ==
           p.o.p); /* where the log resumed: the first line */
    proc_free(&p);

    ASSERT_EQ(verify(cfg, 3000, &sum), 0);
    ASSERT_EQ(jnum(sum, "commits"), 3000);
    ASSERT_EQ(jnum(sum, "control_records"), 1);
    ASSERT_EQ(jnum(sum, "first_seq"), 1);
    ASSERT_EQ(jnum(sum, "last_seq"), 3001);
    ASSERT_EQ(jnum(sum, "beyond_end"), 0);
    ASSERT_EQ(jnum(sum, "orphans"), 0);
    ASSERT_EQ(jnum(sum, "bad_objects"), 0);
    ASSERT_GE(jnum(sum, "objects"), 2);
    cJSON_Delete(sum);

    /* verify catches a damaged object: overwrite one with bytes that are not the format. */
    char out[4096];
    int st = mockproc_http(&m, "GET", "/commits?list-type=2&prefix=run-1/&max-keys=1", NULL, out,
                           sizeof(out));
    ASSERT_EQ(st, 200);
    char *k = strstr(out, "<Key>"), *ke = k ? strstr(k, "</Key>") : NULL;
    ASSERT(k && ke);
    char path[700];
    snprintf(path, sizeof(path), "/commits/%.*s", (int)(ke - k - 5), k + 5);
    ASSERT_EQ(mockproc_http(&m, "PUT", path, "S3COMMIT but not really", out, sizeof(out)), 200);
    ASSERT_EQ(verify(cfg, 3000, &sum), 1);
    ASSERT_EQ(jnum(sum, "bad_objects"), 1);
    cJSON_Delete(sum);

    /* and a missing one: the chain does not start at seq 1. */
    ASSERT_EQ(mockproc_http(&m, "DELETE", path, NULL, out, sizeof(out)), 204);
    ASSERT_EQ(verify(cfg, 3000, &sum), 1);
    ASSERT_EQ(jnum(sum, "chain_objects"), 0);
    ASSERT_EQ(jnum(sum, "beyond_end"), jnum(sum, "objects"));
    cJSON_Delete(sum);
    buf_free(&in);
    mockproc_stop(&m);
}

/* One commit per object and more objects than one ListObjectsV2 page (1000 keys): verify
 * must follow the continuation token. */
static void test_verify_paginates(void)
{
    struct mockproc m;
    struct proc p;
    struct buf in = {0};
    cJSON *sum;
    start_mock(&m, NULL);
    const char *cfg =
        config_for("pages", m.endpoint, "pages/", "", ",\"batch_size_threshold\":1", "");
    buf_frames(&in, 1234, 50);
    const char *argv[] = {bin_s3commit, "run", "--config", cfg, NULL};
    ASSERT_EQ(run(argv, &in, &p, 60000), 0);
    proc_free(&p);
    ASSERT_EQ(verify(cfg, 1234, &sum), 0);
    ASSERT_EQ(jnum(sum, "objects"), 1235); /* and the control record's */
    ASSERT_EQ(jnum(sum, "last_seq"), 1235);
    cJSON_Delete(sum);
    buf_free(&in);
    mockproc_stop(&m);
}

/* Injected 503s, stored-then-500 answers and connection resets: the run retries, still
 * exits 0, and verify finds every commit exactly once. */
static void test_run_with_faults(void)
{
    struct mockproc m;
    struct proc p;
    struct buf in = {0};
    cJSON *sum;
    const char *margs[] = {"--error-rate",
                           "0.15",
                           "--error-status",
                           "503",
                           "--written-error-rate",
                           "0.1",
                           "--reset-rate",
                           "0.05",
                           "--seed",
                           "7",
                           NULL};
    start_mock(&m, margs);
    /* 20 commits per batch: ~100 PUTs, so the faults surely fire (P(none) < 1e-15). */
    const char *cfg = config_for("faults", m.endpoint, "faults/", "",
                                 ",\"batch_size_threshold\":20,\"max_retry_attempts\":20,"
                                 "\"max_retry_delay_ms\":50",
                                 "");
    buf_frames(&in, 2000, 2000);
    const char *argv[] = {bin_s3commit, "run", "--config", cfg, NULL};
    ASSERT_EQ(run(argv, &in, &p, 60000), 0);
    ASSERT_UEQ(last_durable(p.o.p), 2001);
    ASSERT(strstr(p.e.p, "event=put_retry") != NULL); /* the faults did fire */
    proc_free(&p);
    ASSERT_EQ(verify(cfg, 2000, &sum), 0);
    ASSERT_EQ(jnum(sum, "orphans"), 0);
    ASSERT_EQ(jnum(sum, "beyond_end"), 0);
    cJSON_Delete(sum);
    buf_free(&in);
    mockproc_stop(&m);
}

static void test_truncated_frame(void)
{
    struct mockproc m;
    struct proc p;
    struct buf in = {0};
    cJSON *sum;
    start_mock(&m, NULL);
    const char *cfg = config_for("trunc", m.endpoint, "trunc/", "", "", "");
    buf_frames(&in, 10, 100);
    size_t cut_at = in.len;
    buf_frame(&in, "0123456789", 10);
    in.len -= 4; /* the last frame loses 4 of its 10 bytes */
    const char *argv[] = {bin_s3commit, "run", "--config", cfg, NULL};
    ASSERT_NE(run(argv, &in, &p, 30000), 0);
    char want[128];
    snprintf(want, sizeof(want), "truncated frame at byte offset %zu", cut_at);
    if (!strstr(p.e.p, want))
        TEST_FAIL_("stderr lacks '%s': %s", want, p.e.p);
    ASSERT(strstr(p.e.p, "says 10 bytes but only 6 arrived") != NULL);
    ASSERT_UEQ(last_durable(p.o.p), 11);
    proc_free(&p);
    ASSERT_EQ(verify(cfg, 10, &sum), 0);
    cJSON_Delete(sum);
    buf_free(&in);
    mockproc_stop(&m);
}

static void test_oversized_frame(void)
{
    struct mockproc m;
    struct proc p;
    struct buf in = {0};
    cJSON *sum;
    static char big[5000];
    start_mock(&m, NULL);
    const char *cfg =
        config_for("big", m.endpoint, "big/", "", "", ",\"pipeline\":{\"max_commit_bytes\":4096}");
    buf_frames(&in, 5, 100);
    size_t at = in.len;
    buf_frame(&in, big, sizeof(big));
    buf_frames(&in, 3, 100); /* never read: the run stops at the bad frame */
    const char *argv[] = {bin_s3commit, "run", "--config", cfg, NULL};
    ASSERT_NE(run(argv, &in, &p, 30000), 0);
    char want[160];
    snprintf(want, sizeof(want),
             "frame at byte offset %zu is 5000 bytes, over pipeline.max_commit_bytes (4096)", at);
    if (!strstr(p.e.p, want))
        TEST_FAIL_("stderr lacks '%s': %s", want, p.e.p);
    ASSERT_UEQ(last_durable(p.o.p), 6);
    proc_free(&p);
    ASSERT_EQ(verify(cfg, 5, &sum), 0);
    cJSON_Delete(sum);
    buf_free(&in);
    mockproc_stop(&m);
}

static void test_unreachable_endpoint(void)
{
    struct proc p;
    struct buf in = {0};
    char ep[64];
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", free_port()); /* nobody listens */
    const char *cfg = config_for("unreach", ep, "u/", ",\"connect_timeout_ms\":500",
                                 ",\"max_retry_attempts\":2", "");
    buf_frames(&in, 3, 100);
    const char *argv[] = {bin_s3commit, "run", "--config", cfg, NULL};
    uint64_t t0 = now_ms();
    ASSERT_EQ(run(argv, &in, &p, 40000), 1); /* it may work later: restarted */
    ASSERT_LT(now_ms() - t0, 30000);
    ASSERT(strstr(p.e.p, "s3commit: ") != NULL);
    ASSERT(strstr(p.e.p, "cannot open the stage") != NULL); /* before reading a commit */
    ASSERT_UEQ(last_durable(p.o.p), 0);
    proc_free(&p);

    const char *argv2[] = {bin_s3commit, "verify", "--config", cfg, NULL};
    t0 = now_ms();
    ASSERT_NE(run(argv2, NULL, &p, 40000), 0);
    ASSERT_LT(now_ms() - t0, 30000);
    ASSERT(strstr(p.e.p, "cannot list") != NULL);
    proc_free(&p);
    buf_free(&in);
}

/* A start the log refuses until a person acts (here a damaged manifest: "delete it") exits
 * 4, which the packaged unit does not restart, and writes nothing; one that may succeed
 * later (S3 unreachable, wrong credentials: above and below) exits 1. */
static void test_refused_start_exits_4(void)
{
    struct mockproc m;
    struct proc p;
    struct buf in = {0};
    char out[4096];
    start_mock(&m, NULL);
    ASSERT_EQ(mockproc_http(&m, "PUT", "/commits/refused/manifest.json", "{\"format\":", out,
                            sizeof(out)),
              200);
    const char *cfg = config_for("refused", m.endpoint, "refused/", "", "", "");
    buf_frames(&in, 3, 100);
    const char *argv[] = {bin_s3commit, "run", "--config", cfg, NULL};
    ASSERT_EQ(run(argv, &in, &p, 30000), 4);
    ASSERT(strstr(p.e.p, "cannot open the stage") != NULL);
    ASSERT(strstr(p.e.p, "refused/manifest.json") != NULL);
    ASSERT(strstr(p.e.p, "delete it") != NULL);
    ASSERT_EQ(p.o.len, 0); /* before the first line: nothing was taken */
    proc_free(&p);
    int st =
        mockproc_http(&m, "GET", "/commits?list-type=2&prefix=refused/", NULL, out, sizeof(out));
    ASSERT_EQ(st, 200);
    ASSERT(strstr(out, "refused/log/") == NULL); /* no fence, no object */
    buf_free(&in);
    mockproc_stop(&m);
}

static void test_wrong_credentials(void)
{
    struct mockproc m;
    struct proc p;
    struct buf in = {0};
    const char *margs[] = {"--access-key", "AKIDTESTGOOD", "--secret-key", "right-secret-0123",
                           NULL};
    start_mock(&m, margs);
    const char *cfg = config_for("creds", m.endpoint, "c/",
                                 ",\"access_key_id\":\"AKIDTESTGOOD\","
                                 "\"secret_access_key\":\"wrong-secret-9876\"",
                                 "", "");
    buf_frames(&in, 3, 100);
    const char *argv[] = {bin_s3commit, "run", "--config", cfg, NULL};
    uint64_t t0 = now_ms();
    ASSERT_EQ(run(argv, &in, &p, 40000), 1);
    ASSERT_LT(now_ms() - t0, 30000);
    ASSERT(strstr(p.e.p, "cannot open the stage") != NULL);
    ASSERT(strstr(p.e.p, "SignatureDoesNotMatch") != NULL);
    ASSERT(strstr(p.e.p, "s3.secret_access_key") != NULL); /* names the fix */
    ASSERT(strstr(p.e.p, "wrong-secret") == NULL && strstr(p.o.p, "wrong-secret") == NULL);
    proc_free(&p);

    /* The right secret works against the same mock. */
    const char *good = config_for("creds-ok", m.endpoint, "c/",
                                  ",\"access_key_id\":\"AKIDTESTGOOD\","
                                  "\"secret_access_key\":\"right-secret-0123\"",
                                  "", "");
    ASSERT_EQ(run((const char *[]){bin_s3commit, "run", "--config", good, NULL}, &in, &p, 30000),
              0);
    ASSERT_UEQ(last_durable(p.o.p), 4);
    proc_free(&p);
    buf_free(&in);
    mockproc_stop(&m);
}

/* Connects to the run's metrics port and GETs /metrics. Returns the HTTP status. */
static int scrape(int port, struct buf *body)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -errno;
    }
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    ASSERT_EQ(write(fd, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
    char tmp[16384];
    ssize_t r;
    struct buf all = {0};
    while ((r = read(fd, tmp, sizeof(tmp))) > 0)
        buf_add(&all, tmp, (size_t)r);
    close(fd);
    int status = 0;
    if (!all.p || sscanf(all.p, "HTTP/1.%*d %d", &status) != 1) {
        buf_free(&all);
        return -EPROTO;
    }
    char *b = strstr(all.p, "\r\n\r\n");
    if (b)
        buf_add(body, b + 4, strlen(b + 4));
    buf_free(&all);
    return status;
}

static void test_metrics_scrape(void)
{
    struct mockproc m;
    struct proc p;
    struct buf in = {0}, body = {0};
    char top[128];
    int port = free_port();
    start_mock(&m, NULL);
    snprintf(top, sizeof(top), ",\"metrics\":{\"listen\":\"127.0.0.1:%d\"}", port);
    const char *cfg = config_for("metrics", m.endpoint, "m/", "", "", top);
    buf_frames(&in, 200, 500);
    proc_start(&p, (const char *[]){bin_s3commit, "run", "--config", cfg, NULL});
    proc_pump(&p, in.p, in.len, 10000);
    /* stdin stays open: the process is running while we scrape. */
    uint64_t end = now_ms() + 10000;
    int status = -1;
    while (now_ms() < end) {
        proc_pump(&p, NULL, 0, 100);
        if (last_durable(p.o.p ? p.o.p : "") < 201)
            continue;
        buf_free(&body);
        status = scrape(port, &body);
        if (status == 200 && body.p && strstr(body.p, "\ns3commit_durable_seq 201\n"))
            break; /* the counters may trail the printed watermark by a moment */
    }
    ASSERT_EQ(status, 200);
    ASSERT(strstr(body.p, "# TYPE") != NULL);
    ASSERT(strstr(body.p, "\ns3commit_durable_seq 201\n") != NULL);
    ASSERT(strstr(body.p, "\ns3commit_commits_durable_total 200\n") != NULL);
    ASSERT(strstr(body.p, "s3commit_ack_latency_seconds_bucket{le=") != NULL);
    if (system("command -v promtool >/dev/null 2>&1") == 0) {
        char path[512], cmd[700];
        snprintf(path, sizeof(path), "%s/metrics.txt", tmpdir);
        write_file(path, body.p);
        snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
        ASSERT_EQ(system(cmd), 0);
    } else {
        fprintf(stderr, "   promtool not installed: format not checked by it\n");
    }
    proc_close_stdin(&p);
    ASSERT_EQ(proc_wait(&p, 30000), 0);
    proc_free(&p);
    buf_free(&body);
    buf_free(&in);
    mockproc_stop(&m);
}

static void test_sigterm_drains(void)
{
    struct mockproc m;
    struct proc p;
    struct buf in = {0};
    cJSON *sum;
    start_mock(&m, NULL);
    const char *cfg = config_for("sigterm", m.endpoint, "sig/", "", "", "");
    buf_frames(&in, 500, 1000);
    proc_start(&p, (const char *[]){bin_s3commit, "run", "--config", cfg, NULL});
    ASSERT_EQ(proc_pump(&p, in.p, in.len, 10000), in.len);
    /* Wait until the run has read every byte from the pipe (FIONREAD counts what is still
     * in it), then stop it at once: what it read may not be durable yet, so this is the
     * drain on SIGTERM, with stdin still open. */
    int unread = 1;
    for (int i = 0; i < 2000 && unread > 0; i++) {
        ASSERT_EQ(ioctl(p.in, FIONREAD, &unread), 0);
        if (unread > 0)
            proc_pump(&p, NULL, 0, 5);
    }
    ASSERT_EQ(unread, 0);
    kill(p.pid, SIGTERM);
    ASSERT_EQ(proc_wait(&p, 30000), 0);
    ASSERT_UEQ(last_durable(p.o.p), 501);
    proc_free(&p);
    ASSERT_EQ(verify(cfg, 500, &sum), 0);
    cJSON_Delete(sum);
    buf_free(&in);
    mockproc_stop(&m);
}

/* A stop signal while the stage opens (every request to the store takes 2 s here, so the
 * open takes many): the process ends within a second, says so, takes no commit and prints
 * no watermark. It used to wait for the open to end first (a chaos run saw one still
 * opening 25 s after SIGTERM). */
static void test_sigterm_during_open(void)
{
    struct mockproc m;
    struct proc p;
    start_mock(&m, (const char *[]){"--latency-ms", "2000", NULL});
    const char *cfg = config_for("sigopen", m.endpoint, "sigopen/", "", "", "");
    proc_start(&p, (const char *[]){bin_s3commit, "run", "--config", cfg, NULL});
    proc_pump(&p, NULL, 0, 300); /* the open is under way */
    uint64_t t0 = test_now_ms_();
    kill(p.pid, SIGTERM);
    ASSERT_EQ(proc_wait(&p, 10000), 0);
    uint64_t took = test_now_ms_() - t0;
    fprintf(stderr, "   stopped %" PRIu64 " ms after SIGTERM\n", took);
    ASSERT_LT(took, 1500);
    ASSERT(strstr(p.e.p, "action=stop_during_open") != NULL);
    ASSERT(strstr(p.e.p, "ThreadSanitizer") == NULL); /* _exit skips its exit code */
    ASSERT_EQ(p.o.len, 0);                            /* no first line: the stage never opened */
    proc_free(&p);
    /* Listening on a Unix socket already: the socket file goes too. */
    char sock[600], input[620];
    snprintf(sock, sizeof(sock), "%s/sigopen.sock", tmpdir);
    snprintf(input, sizeof(input), "unix:%s", sock);
    proc_start(&p, (const char *[]){bin_s3commit, "run", "--config", cfg, "--input", input, NULL});
    for (int i = 0; i < 100 && access(sock, F_OK) != 0; i++)
        proc_pump(&p, NULL, 0, 10);
    ASSERT_EQ(access(sock, F_OK), 0);
    kill(p.pid, SIGTERM);
    ASSERT_EQ(proc_wait(&p, 10000), 0);
    ASSERT(strstr(p.e.p, "action=stop_during_open") != NULL);
    ASSERT_EQ(access(sock, F_OK), -1);
    proc_free(&p);
    mockproc_stop(&m);
}

static int unix_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    for (int i = 0; i < 500; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            return fd;
        close(fd);
        usleep(10000);
    }
    TEST_FAIL_("cannot connect to %s", path);
}

/* Reads lines from fd until it closes; returns the seqs in *seqs. */
static size_t read_seqs(int fd, uint64_t *seqs, size_t max)
{
    struct buf b = {0};
    char tmp[4096];
    ssize_t r;
    size_t n = 0;
    while ((r = read(fd, tmp, sizeof(tmp))) > 0)
        buf_add(&b, tmp, (size_t)r);
    for (const char *p = b.p; p && (p = strstr(p, "{\"durable_seq\":")) != NULL; p += 15) {
        ASSERT(n < max);
        seqs[n++] = strtoull(p + 15, NULL, 10);
    }
    buf_free(&b);
    return n;
}

static void test_unix_socket_clients(void)
{
    struct mockproc m;
    struct proc p;
    struct buf a = {0}, b = {0};
    static uint64_t sa[1000], sb[1000];
    char sock[300], input[320];
    cJSON *sum;
    start_mock(&m, NULL);
    const char *cfg = config_for("unix", m.endpoint, "unix/", "", "", "");
    snprintf(sock, sizeof(sock), "%s/in.sock", tmpdir);
    snprintf(input, sizeof(input), "unix:%s", sock);
    proc_start(&p, (const char *[]){bin_s3commit, "run", "--config", cfg, "--input", input, NULL});
    int fa = unix_connect(sock), fb = unix_connect(sock);
    buf_frames(&a, 300, 200);
    buf_frames(&b, 200, 2000);
    /* Interleave the two clients' writes. */
    size_t oa = 0, ob = 0;
    while (oa < a.len || ob < b.len) {
        size_t ca = a.len - oa < 1000 ? a.len - oa : 1000;
        size_t cb = b.len - ob < 3000 ? b.len - ob : 3000;
        if (ca)
            ASSERT_EQ(write(fa, a.p + oa, ca), (ssize_t)ca);
        if (cb)
            ASSERT_EQ(write(fb, b.p + ob, cb), (ssize_t)cb);
        oa += ca;
        ob += cb;
        proc_pump(&p, NULL, 0, 1);
    }
    shutdown(fa, SHUT_WR);
    shutdown(fb, SHUT_WR);
    size_t na = read_seqs(fa, sa, 1000), nb = read_seqs(fb, sb, 1000);
    ASSERT_EQ(na, 300);
    ASSERT_EQ(nb, 200);
    /* Each client's seqs rise, and together they are exactly 1..500. */
    static char seen[502];
    for (size_t i = 0; i < na; i++) {
        ASSERT(i == 0 || sa[i] > sa[i - 1]);
        ASSERT(sa[i] >= 2 && sa[i] <= 501 && !seen[sa[i]]);
        seen[sa[i]] = 1;
    }
    for (size_t i = 0; i < nb; i++) {
        ASSERT(i == 0 || sb[i] > sb[i - 1]);
        ASSERT(sb[i] >= 2 && sb[i] <= 501 && !seen[sb[i]]);
        seen[sb[i]] = 1;
    }
    close(fa);
    close(fb);
    kill(p.pid, SIGTERM);
    ASSERT_EQ(proc_wait(&p, 30000), 0);
    ASSERT_UEQ(last_durable(p.o.p), 501);
    ASSERT(access(sock, F_OK) != 0); /* the socket file is removed */
    proc_free(&p);
    ASSERT_EQ(verify(cfg, 500, &sum), 0);
    cJSON_Delete(sum);
    buf_free(&a);
    buf_free(&b);
    mockproc_stop(&m);
}

/* The text of the file at path (valid until the next call). */
static const char *slurp(const char *path)
{
    static char text[1 << 20];
    FILE *f = fopen(path, "r");
    ASSERT(f != NULL);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    return text;
}

/* The JSON report s3commit-load wrote to path. */
static cJSON *load_report(const char *path)
{
    cJSON *r = cJSON_Parse(slurp(path));
    ASSERT(r != NULL);
    return r;
}

static void test_load_mock(void)
{
    struct proc p;
    char report[512], svg[512];
    snprintf(report, sizeof(report), "%s/load.json", tmpdir);
    snprintf(svg, sizeof(svg), "%s/load.svg", tmpdir);
    const char *argv[] = {bin_load,      "--mock", "--commits", "3000", "--size", "64-2048",
                          "--producers", "3",      "--report",  report, NULL};
    ASSERT_EQ(run(argv, NULL, &p, 60000), 0);
    proc_free(&p);

    cJSON *r = load_report(report);
    static const char *fields[] = {
        "commits_submitted", "commits_acked", "bytes_acked", "duration_s",        "commits_per_s",
        "bytes_per_s",       "batches",       "retries",     "out_of_order_acks", "durable_seq"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        jnum(r, fields[i]);
    ASSERT_EQ(jnum(r, "commits_submitted"), 3000);
    ASSERT_EQ(jnum(r, "commits_acked"), 3000);
    ASSERT_EQ(jnum(r, "durable_seq"), 3001);
    ASSERT_EQ(jnum(r, "first_seq"), 2);
    ASSERT_EQ(jnum(r, "epoch"), 1);
    ASSERT_EQ(jnum(r, "out_of_order_acks"), 0);
    ASSERT_GE(jnum(r, "batches"), 1);
    ASSERT_GE(jnum(r, "bytes_acked"), 3000 * 64);
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(r, "ack_latency_us");
    ASSERT(lat != NULL);
    ASSERT_GT(jnum(lat, "max"), 0);
    ASSERT_LE(jnum(lat, "p50"), jnum(lat, "p99"));
    ASSERT_LE(jnum(lat, "p99"), jnum(lat, "p999"));
    ASSERT_LE(jnum(lat, "p999"), jnum(lat, "max"));
    jnum(lat, "p90");
    ASSERT(cJSON_GetObjectItemCaseSensitive(r, "spool") == NULL); /* no spool.dir */
    cJSON_Delete(r);

    const char *text = slurp(svg);
    ASSERT(strncmp(text, "<svg", 4) == 0);
    ASSERT(strstr(text, "</svg>") != NULL);
    ASSERT(strstr(text, "polyline") != NULL);

    /* With a spool the report says L and how many commits the mock took before the
     * spool's writer did (SKIP frames). */
    char scfg[512];
    snprintf(scfg, sizeof(scfg), "%s/load-spool.json", tmpdir);
    char sjson[1024];
    snprintf(sjson, sizeof(sjson),
             "{\"s3\":{\"bucket\":\"commits\",\"prefix\":\"spooled/\"},"
             "\"spool\":{\"dir\":\"%s/load-spool\"}}",
             tmpdir);
    write_file(scfg, sjson);
    const char *spooled[] = {bin_load,   "--mock", "--config", scfg,          "--commits",
                             "3000",     "--size", "64-2048",  "--producers", "2",
                             "--report", report,   NULL};
    ASSERT_EQ(run(spooled, NULL, &p, 60000), 0);
    proc_free(&p);
    r = load_report(report);
    ASSERT_EQ(jnum(r, "commits_acked"), 3000);
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(r, "spool");
    ASSERT(sp != NULL);
    ASSERT_EQ(jnum(sp, "local_seq"), 3001);
    ASSERT_GT(jnum(sp, "bytes"), 0);
    jnum(sp, "skipped_commits"); /* any number: how fast the disk was against the mock */
    ASSERT_EQ(jnum(sp, "reads"), 0);
    cJSON_Delete(r);

    /* With injected 503s the report counts retries and still every commit is acked. Ten
     * retries per batch at 20% errors: a batch fails for good with P ~ 2e-8. */
    char fcfg[512];
    snprintf(fcfg, sizeof(fcfg), "%s/load-faults.json", tmpdir);
    write_file(fcfg, "{\"s3\":{\"bucket\":\"commits\"},\"persistence\":{\"max_retry_attempts\":10,"
                     "\"retry_base_delay_ms\":5,\"max_retry_delay_ms\":50,"
                     "\"batch_size_threshold\":20}}");
    const char *faulty[] = {
        bin_load,       "--mock",      "--config",  fcfg,         "--mock-arg",
        "--error-rate", "--mock-arg",  "0.2",       "--mock-arg", "--error-status",
        "--mock-arg",   "503",         "--commits", "2000",       "--size",
        "100-200",      "--producers", "2",         "--rate",     "4000",
        "--report",     report,        NULL};
    ASSERT_EQ(run(faulty, NULL, &p, 60000), 0);
    proc_free(&p);
    r = load_report(report);
    ASSERT_EQ(jnum(r, "commits_acked"), 2000);
    ASSERT_GT(jnum(r, "retries"), 0);
    ASSERT_EQ(jnum(r, "out_of_order_acks"), 0);
    cJSON_Delete(r);

    /* Bad usage is refused before anything starts. */
    const char *bad[] = {bin_load, "--mock", "--commits", "10", "--producers", "1", NULL};
    ASSERT_EQ(run(bad, NULL, &p, 10000), 2);
    ASSERT(strstr(p.e.p, "--size") != NULL);
    proc_free(&p);
}

/* ---- s3commit cat ------------------------------------------------------------------ */

/* Byte offset of frame k (0-based) in a framed buffer. */
static size_t frame_offset(const struct buf *b, int k)
{
    size_t off = 0;
    for (int i = 0; i < k; i++) {
        ASSERT(off + 4 <= b->len);
        const unsigned char *p = (const unsigned char *)b->p + off;
        off += 4 +
               ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    }
    return off;
}

/* Runs `s3commit cat --config cfg [extra...]` to completion; returns its exit code. */
static int cat_run(const char *cfg, const char *const *extra, struct proc *p)
{
    const char *argv[16] = {bin_s3commit, "cat", "--config", cfg};
    int n = 4;
    for (int i = 0; extra && extra[i]; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    return run(argv, NULL, p, 60000);
}

static void assert_same(const struct proc *p, const char *want, size_t len)
{
    if (p->o.len == len && memcmp(p->o.p, want, len) == 0)
        return;
    size_t d = 0;
    while (d < len && d < p->o.len && p->o.p[d] == want[d])
        d++;
    TEST_FAIL_("cat gave %zu bytes, want %zu (first difference at %zu); stderr: %s", p->o.len, len,
               d, p->e.p);
}

static void test_cat(void)
{
    struct mockproc m;
    struct proc p;
    struct buf in = {0};
    start_mock(&m, NULL);
    const char *cfg = config_for("cat", m.endpoint, "cat/", "", ",\"batch_size_threshold\":50", "");
    buf_frame(&in, "", 0); /* an empty commit too */
    buf_frames(&in, 1999, 3000);
    ASSERT_EQ(run((const char *[]){bin_s3commit, "run", "--config", cfg, NULL}, &in, &p, 60000), 0);
    ASSERT_UEQ(last_durable(p.o.p), 2001);
    proc_free(&p);

    /* The whole log: the bytes run read, exactly. */
    ASSERT_EQ(cat_run(cfg, NULL, &p), 0);
    assert_same(&p, in.p, in.len);
    ASSERT_EQ(p.e.len, strlen(p.e.p));
    ASSERT(strstr(p.e.p, "control_seq") == NULL); /* control records only with --control */
    proc_free(&p);

    /* --from-seq / --to-seq: commit k (0-based) has seq k + 2. Seeks into the middle of
     * an object, onto an object's first seq (2 + 50j + 1 with the control object at 1). */
    const char *const seeks[][2] = {{"2", NULL}, {"777", NULL}, {"52", NULL}, {"2001", NULL}};
    for (size_t i = 0; i < sizeof(seeks) / sizeof(seeks[0]); i++) {
        int from = atoi(seeks[i][0]);
        ASSERT_EQ(cat_run(cfg, (const char *[]){"--from-seq", seeks[i][0], NULL}, &p), 0);
        size_t off = frame_offset(&in, from - 2);
        assert_same(&p, in.p + off, in.len - off);
        proc_free(&p);
    }
    ASSERT_EQ(cat_run(cfg, (const char *[]){"--from-seq", "100", "--to-seq", "1234", NULL}, &p), 0);
    size_t a = frame_offset(&in, 98), b = frame_offset(&in, 1233);
    assert_same(&p, in.p + a, b - a);
    proc_free(&p);
    ASSERT_EQ(cat_run(cfg, (const char *[]){"--to-seq", "1", NULL}, &p), 0); /* the control only */
    ASSERT_EQ(p.o.len, 0);
    proc_free(&p);

    /* --control: the control record as a JSON line on stderr, stdout unchanged. */
    ASSERT_EQ(cat_run(cfg, (const char *[]){"--control", "--to-seq", "5", NULL}, &p), 0);
    assert_same(&p, in.p, frame_offset(&in, 4));
    const char *cl = strstr(p.e.p, "{\"control_seq\":");
    ASSERT(cl != NULL);
    cJSON *j = cJSON_ParseWithLength(cl, strcspn(cl, "\n"));
    if (!j)
        TEST_FAIL_("--control line is not JSON: %s", p.e.p);
    ASSERT_EQ(jnum(j, "control_seq"), 1);
    ASSERT_EQ(jnum(j, "epoch"), 1);
    ASSERT_EQ(jnum(cJSON_GetObjectItem(j, "record"), "epoch"), 1);
    cJSON_Delete(j);
    ASSERT(strstr(cl + 1, "{\"control_seq\":") == NULL); /* one control record */
    proc_free(&p);

    /* cat A | run B copies the log: B verifies and reads back the same bytes. */
    const char *cfg_b = config_for("cat-b", m.endpoint, "cat-copy/", "", "", "");
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "'%s' cat --config '%s' | '%s' run --config '%s' >/dev/null",
             bin_s3commit, cfg, bin_s3commit, cfg_b);
    ASSERT_EQ(run((const char *[]){"/bin/sh", "-c", cmd, NULL}, NULL, &p, 60000), 0);
    proc_free(&p);
    cJSON *sum;
    ASSERT_EQ(verify(cfg_b, 2000, &sum), 0);
    ASSERT_EQ(jnum(sum, "last_seq"), 2001);
    cJSON_Delete(sum);
    ASSERT_EQ(cat_run(cfg_b, NULL, &p), 0);
    assert_same(&p, in.p, in.len);
    proc_free(&p);

    /* A closed stdout (the consumer read 100 bytes and left) ends cat quietly, exit 0. */
    snprintf(cmd, sizeof(cmd),
             "'%s' cat --config '%s' | head -c 100 >/dev/null; exit ${PIPESTATUS[0]}", bin_s3commit,
             cfg);
    ASSERT_EQ(run((const char *[]){"/bin/bash", "-c", cmd, NULL}, NULL, &p, 60000), 0);
    if (strstr(p.e.p, "s3commit:") || strstr(p.e.p, "level=error"))
        TEST_FAIL_("cat was not quiet on a closed stdout: %s", p.e.p);
    proc_free(&p);

    /* A corrupted object in the middle: cat exits 1 naming its key and the offset, after
     * writing every commit before it. */
    static char out[1 << 16];
    char path[700], key[600];
    ASSERT_EQ(
        mockproc_http(&m, "GET", "/commits?list-type=2&prefix=cat/log/", NULL, out, sizeof(out)),
        200);
    int nkeys = 0;
    for (const char *k = out; (k = strstr(k, "<Key>")) != NULL; k += 5)
        nkeys++;
    ASSERT_GE(nkeys, 10);
    const char *k = out;
    for (int i = 0; i <= nkeys / 2; i++)
        k = strstr(k, "<Key>") + 5;
    snprintf(key, sizeof(key), "%.*s", (int)(strstr(k, "</Key>") - k), k);
    int victim = atoi(key + strlen("cat/log/"));
    ASSERT_GT(victim, 2);
    snprintf(path, sizeof(path), "/commits/%s", key);
    ASSERT_EQ(mockproc_http(&m, "PUT", path,
                            "S3COMMITxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", out,
                            sizeof(out)),
              200);
    ASSERT_EQ(cat_run(cfg, NULL, &p), 1);
    if (!strstr(p.e.p, key) || !strstr(p.e.p, "at offset 8"))
        TEST_FAIL_("stderr names not both %s and an offset: %s", key, p.e.p);
    assert_same(&p, in.p, frame_offset(&in, victim - 2));
    proc_free(&p);

    buf_free(&in);
    mockproc_stop(&m);
}

/* cat --follow sees the commits of a concurrent run within its poll interval. */
static void test_cat_follow(void)
{
    enum { N = 30, POLL = 200 };
    struct mockproc m;
    struct proc w, c;
    start_mock(&m, NULL);
    const char *cfg = config_for("follow", m.endpoint, "follow/", "", "", "");
    proc_start(&w, (const char *[]){bin_s3commit, "run", "--config", cfg, NULL});
    /* Wait for the run's first line: its epoch is taken, the log exists. */
    uint64_t end = now_ms() + 20000;
    while (!(w.o.p && strstr(w.o.p, "first_seq")) && now_ms() < end)
        proc_pump(&w, NULL, 0, 20);
    ASSERT(w.o.p && strstr(w.o.p, "\"first_seq\":2"));
    proc_start(&c, (const char *[]){bin_s3commit, "cat", "--config", cfg, "--follow", "--poll-ms",
                                    "200", NULL});
    uint64_t durable_at[N + 2] = {0}, read_at[N + 2] = {0};
    uint64_t last_w = 1;
    size_t parsed = 0;
    int got = 0;
    uint64_t next_send = now_ms() + 300;
    int sent = 0;
    end = now_ms() + 60000;
    while (got < N && now_ms() < end) {
        if (sent < N && now_ms() >= next_send) {
            struct buf one = {0};
            char msg[32];
            int n = snprintf(msg, sizeof(msg), "follow-%d", sent);
            buf_frame(&one, msg, (uint32_t)n);
            ASSERT_EQ(proc_pump(&w, one.p, one.len, 1000), one.len);
            buf_free(&one);
            sent++;
            next_send = now_ms() + (uint64_t)(rand() % 150);
        }
        proc_pump(&w, NULL, 0, 2);
        proc_pump(&c, NULL, 0, 2);
        uint64_t t = now_ms();
        uint64_t wv = last_durable(w.o.p ? w.o.p : "");
        for (; last_w < wv; last_w++)
            if (last_w + 1 < N + 2)
                durable_at[last_w + 1] = t;
        while (c.o.len >= parsed + 4) { /* frames read by cat so far */
            const unsigned char *q = (const unsigned char *)c.o.p + parsed;
            uint32_t len = q[0] | q[1] << 8 | q[2] << 16 | (uint32_t)q[3] << 24;
            if (c.o.len < parsed + 4 + len)
                break;
            char want[32];
            int n = snprintf(want, sizeof(want), "follow-%d", got);
            ASSERT_EQ(len, n);
            ASSERT_MEM_EQ(q + 4, want, len);
            read_at[got + 2] = t;
            parsed += 4 + len;
            got++;
        }
    }
    ASSERT_EQ(got, N);
    uint64_t worst = 0;
    for (int s = 2; s < N + 2; s++) {
        ASSERT(durable_at[s] > 0);
        uint64_t lag = read_at[s] > durable_at[s] ? read_at[s] - durable_at[s] : 0;
        worst = lag > worst ? lag : worst;
    }
    fprintf(stderr, "   cat --follow: worst durable-to-read lag %" PRIu64 " ms (poll %d ms)\n",
            worst, POLL);
    ASSERT_LT(worst, POLL + 1000);
    proc_close_stdin(&w);
    ASSERT_EQ(proc_wait(&w, 30000), 0);
    kill(c.pid, SIGTERM);
    proc_wait(&c, 10000);
    proc_free(&w);
    proc_free(&c);
    mockproc_stop(&m);
}

int main(int argc, char **argv)
{
    const char *bindir = getenv("S3C_BIN_DIR");
    if (!bindir) {
        fprintf(stderr, "S3C_BIN_DIR is not set (run through ctest)\n");
        return 1;
    }
    snprintf(bin_s3commit, sizeof(bin_s3commit), "%s/s3commit", bindir);
    snprintf(bin_load, sizeof(bin_load), "%s/s3commit-load", bindir);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/s3c-test-programs-XXXXXX");
    ASSERT(mkdtemp(tmpdir) != NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGABRT, on_abort);

    /* One case by name (for debugging): test_programs <name>. */
    const char *only = argc > 1 ? argv[1] : NULL;
#define CASE(fn)                                                                                   \
    if (!only || strcmp(only, #fn) == 0)                                                           \
    RUN(fn)
    CASE(test_check_config);
    CASE(test_run_then_verify);
    CASE(test_verify_paginates);
    CASE(test_run_with_faults);
    CASE(test_truncated_frame);
    CASE(test_oversized_frame);
    CASE(test_unreachable_endpoint);
    CASE(test_refused_start_exits_4);
    CASE(test_wrong_credentials);
    CASE(test_sigterm_drains);
    CASE(test_sigterm_during_open);
    CASE(test_unix_socket_clients);
    CASE(test_metrics_scrape);
    CASE(test_load_mock);
    CASE(test_cat);
    CASE(test_cat_follow);

    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return 0;
}
