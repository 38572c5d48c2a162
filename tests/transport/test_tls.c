/* TLS against a real HTTPS endpoint on 127.0.0.1 (tests/data/transport/tls_server.py with a
 * certificate made here by the openssl CLI): verification is on by default and refuses a
 * self-signed peer as fatal, s3.ca_file makes it trusted, another CA is refused, and
 * tls_verify=false connects with one warning. Needs python3 and openssl. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "config/config.h"
#include "support/xport_loop.h"
#include "test.h"
#include "transport/transport.h"

static char dir[] = "/tmp/s3c-tls-XXXXXX";
static pid_t server_pid;

static void kill_server(int sig)
{
    if (server_pid > 0)
        kill(server_pid, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int run(const char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", 0);
        dup2(devnull, STDOUT_FILENO);
        dup2(devnull, STDERR_FILENO);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void make_cert(const char *name)
{
    char key[256], crt[256];
    snprintf(key, sizeof(key), "%s/%s.key", dir, name);
    snprintf(crt, sizeof(crt), "%s/%s.pem", dir, name);
    const char *argv[] = {"openssl",
                          "req",
                          "-x509",
                          "-newkey",
                          "ec",
                          "-pkeyopt",
                          "ec_paramgen_curve:prime256v1",
                          "-nodes",
                          "-keyout",
                          key,
                          "-out",
                          crt,
                          "-subj",
                          "/CN=127.0.0.1",
                          "-addext",
                          "subjectAltName=IP:127.0.0.1",
                          "-days",
                          "1",
                          NULL};
    ASSERT_EQ(run(argv), 0);
}

static int start_server(void)
{
    const char *data = getenv("S3C_TEST_DATA");
    char script[512], crt[256], key[256];
    snprintf(script, sizeof(script), "%s/transport/tls_server.py", data ? data : "tests/data");
    snprintf(crt, sizeof(crt), "%s/server.pem", dir);
    snprintf(key, sizeof(key), "%s/server.key", dir);
    int pfd[2];
    ASSERT_EQ(pipe(pfd), 0);
    server_pid = fork();
    if (server_pid == 0) {
        dup2(pfd[1], STDOUT_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        execlp("python3", "python3", script, crt, key, (char *)NULL);
        _exit(127);
    }
    signal(SIGABRT, kill_server);
    close(pfd[1]);
    char line[128];
    size_t n = 0;
    while (n < sizeof(line) - 1 && read(pfd[0], line + n, 1) == 1 && line[n] != '\n')
        n++;
    line[n] = '\0';
    close(pfd[0]);
    const char *colon = strrchr(line, ':');
    if (strncmp(line, "listening on ", 13) != 0 || !colon)
        TEST_FAIL_("tls_server.py did not start: '%s'", line);
    return atoi(colon + 1);
}

struct got {
    int calls;
    enum xport_class cls;
    enum xport_fail fail;
    long status;
    char error[2048];
    char body[64];
};

static void on_done(void *ctx, const struct xport_result *r)
{
    struct got *g = ctx;
    g->calls++;
    g->cls = r->cls;
    g->fail = r->fail;
    g->status = r->http_status;
    snprintf(g->error, sizeof(g->error), "%s", r->error);
    snprintf(g->body, sizeof(g->body), "%.*s", (int)r->body_len,
             r->body ? (const char *)r->body : "");
}

static char logbuf[16384];
static void sink(void *ctx, enum s3c_log_level level, const char *msg)
{
    (void)ctx;
    (void)level;
    size_t l = strlen(logbuf);
    snprintf(logbuf + l, sizeof(logbuf) - l, "%s\n", msg);
}

static void on_data(void *ctx, const unsigned char *body, uint64_t off, const unsigned char *piece,
                    size_t n)
{
    (void)ctx, (void)body, (void)off, (void)piece, (void)n;
}

/* One GET over a fresh transport with the given TLS settings (direct: xport_get_direct,
 * whose connection libcurl opens and whose bytes curl_easy_recv decrypts). */
static struct got get_via(int port, bool verify, const char *ca, bool direct)
{
    struct s3c_config c;
    char err[256];
    cfg_defaults(&c);
    snprintf(c.s3.endpoint, sizeof(c.s3.endpoint), "https://127.0.0.1:%d", port);
    snprintf(c.s3.bucket, sizeof(c.s3.bucket), "commits");
    snprintf(c.s3.ca_file, sizeof(c.s3.ca_file), "%s", ca ? ca : "");
    c.s3.tls_verify = verify;
    c.persistence.target_pool_size = 1;
    c.persistence.max_in_flight_requests = 1;
    c.s3.request_timeout_ms = 5000;
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    if (!x)
        TEST_FAIL_("xport_new: %s", err);
    struct got g = {0};
    if (direct)
        ASSERT_EQ(xport_get_direct(x, "k", on_data, NULL, on_done, &g), 0);
    else
        ASSERT_EQ(xport_get(x, "k", 1, 0, on_done, &g), 0);
    ASSERT_EQ(xport_drain(x, 10000), 0);
    ASSERT_EQ(g.calls, 1);
    test_xport_free(x);
    return g;
}

static struct got get_with(int port, bool verify, const char *ca)
{
    return get_via(port, verify, ca, false);
}

int main(void)
{
    const char *probe_py[] = {"python3", "-c", "import ssl, http.server", NULL};
    const char *probe_ssl[] = {"openssl", "version", NULL};
    if (run(probe_py) != 0 || run(probe_ssl) != 0) {
        /* make test installs both (scripts/deps.sh test); missing means a broken set-up,
         * which must not pass as green. */
        fprintf(stderr, "test_tls needs python3 and the openssl CLI: run scripts/deps.sh test "
                        "(Debian packages python3 and openssl)\n");
        return 1;
    }
    ASSERT(mkdtemp(dir) != NULL);
    make_cert("server");
    make_cert("other");
    int port = start_server();
    char ca[256], other[256];
    snprintf(ca, sizeof(ca), "%s/server.pem", dir);
    snprintf(other, sizeof(other), "%s/other.pem", dir);

    fprintf(stderr, "-- verification on by default: a self-signed peer is refused, fatal\n");
    struct got g = get_with(port, true, NULL);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_EQ(g.fail, XPORT_FAIL_TLS);
    ASSERT(strstr(g.error, "set s3.ca_file") != NULL); /* the error names the fix */
    ASSERT_EQ(g.status, 0);

    fprintf(stderr, "-- s3.ca_file trusts it\n");
    g = get_with(port, true, ca);
    if (g.cls != XPORT_OK)
        TEST_FAIL_("GET with ca_file: %s", g.error);
    ASSERT_STR_EQ(g.body, "over tls");

    fprintf(stderr, "-- direct GETs: the same checks, the same answers\n");
    g = get_via(port, true, NULL, true);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_EQ(g.fail, XPORT_FAIL_TLS);
    ASSERT(strstr(g.error, "GET k: ") != NULL);
    ASSERT(strstr(g.error, "set s3.ca_file") != NULL);
    g = get_via(port, true, ca, true);
    if (g.cls != XPORT_OK)
        TEST_FAIL_("direct GET with ca_file: %s", g.error);
    ASSERT_STR_EQ(g.body, "over tls");
    g = get_via(port, true, other, true);
    ASSERT_EQ(g.cls, XPORT_FATAL);

    fprintf(stderr, "-- another CA is refused\n");
    g = get_with(port, true, other);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_EQ(g.fail, XPORT_FAIL_TLS);

    fprintf(stderr, "-- tls_verify=false connects, with one warning\n");
    s3c_set_log(sink, NULL, S3C_LOG_WARN);
    g = get_with(port, false, NULL);
    s3c_set_log(NULL, NULL, S3C_LOG_ERROR);
    ASSERT_EQ(g.cls, XPORT_OK);
    char *w = strstr(logbuf, "event=tls_verify_off");
    ASSERT(w != NULL);
    ASSERT(strstr(w + 1, "event=tls_verify_off") == NULL);

    kill(server_pid, SIGTERM);
    waitpid(server_pid, NULL, 0);
    server_pid = 0;
    const char *rm[] = {"rm", "-rf", dir, NULL};
    run(rm);
    return 0;
}
