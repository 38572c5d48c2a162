/* Direct connections (src/transport/direct.c) are opened on the loop, not by a blocking
 * connect: on real sockets on 127.0.0.1, a direct GET and a direct PUT to a listening
 * socket whose accept queue is full (its SYNs are dropped, so the connect never
 * completes) return at once and leave the loop running (a timer on it fires on time; a
 * libcurl GET on the same transport completes meanwhile)
 * until s3.connect_timeout_ms ends them, retryable; a refused connect ends them with the
 * connect error naming the endpoint; closing the transport with a connect pending frees
 * everything (ASan) and calls nobody back. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config.h"
#include "support/mockstats.h"
#include "support/xport_loop.h"

#define SECRET "direct-connect-secret"

/* A listening socket with backlog 0 and its accept queue filled by connections nobody
 * accepts: a further SYN to it is dropped, so a connect to it stays pending. */
struct jam {
    int lfd, port;
    int fill[8];
    int nfill;
};

static bool connected_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLOUT);
}

/* The listening socket, backlog 0, not yet full. */
static void jam_listen(struct jam *j)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    memset(j, 0, sizeof(*j));
    j->lfd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT(j->lfd >= 0);
    ASSERT_EQ(bind(j->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    ASSERT_EQ(listen(j->lfd, 0), 0);
    ASSERT_EQ(fcntl(j->lfd, F_SETFL, O_NONBLOCK), 0); /* accept4 in other_transfer_goes_on */
    ASSERT_EQ(getsockname(j->lfd, (struct sockaddr *)&a, &al), 0);
    j->port = ntohs(a.sin_port);
}

/* Connects until one does not complete: the accept queue is full from then on. */
static void jam_fill(struct jam *j)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)j->port)};
    for (;;) {
        ASSERT(j->nfill < (int)(sizeof(j->fill) / sizeof(j->fill[0])));
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        ASSERT(fd >= 0);
        j->fill[j->nfill++] = fd;
        int rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
        ASSERT(rc == 0 || errno == EINPROGRESS);
        if (rc != 0 && !connected_within(fd, 300))
            break;
    }
}

static void jam_open(struct jam *j)
{
    jam_listen(j);
    jam_fill(j);
}

static void jam_close(struct jam *j)
{
    for (int i = 0; i < j->nfill; i++)
        close(j->fill[i]);
    close(j->lfd);
}

/* A port on 127.0.0.1 with nothing listening: connects to it are refused. */
static int closed_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT(fd >= 0);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static struct xport *xport_to(int port, bool direct_put, int connect_timeout_ms)
{
    struct s3c_config c;
    char err[256];
    cfg_defaults(&c);
    snprintf(c.s3.endpoint, sizeof(c.s3.endpoint), "http://127.0.0.1:%d", port);
    snprintf(c.s3.bucket, sizeof(c.s3.bucket), "b");
    snprintf(c.s3.access_key_id, sizeof(c.s3.access_key_id), "AKIDDIRECTCONN000001");
    snprintf(c.s3.secret_access_key, sizeof(c.s3.secret_access_key), SECRET);
    c.persistence.target_pool_size = 1;
    c.s3.connect_timeout_ms = connect_timeout_ms;
    c.s3.request_timeout_ms = 20000;
    c.s3.direct_put = direct_put;
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    return x;
}

struct got {
    int calls;
    enum xport_class cls;
    enum xport_fail fail;
    char error[2048];
    uint64_t at_ms;
};

static void got_data(void *ctx, const unsigned char *body, uint64_t off, const unsigned char *piece,
                     size_t n)
{
    (void)ctx, (void)body, (void)off, (void)piece, (void)n;
}

static void got_done(void *ctx, const struct xport_result *r)
{
    struct got *g = ctx;
    g->calls++;
    g->cls = r->cls;
    g->fail = r->fail;
    g->at_ms = s3c__now_ms();
    snprintf(g->error, sizeof(g->error), "%s", r->error);
}

static void start(struct xport *x, bool put, struct got *g)
{
    static unsigned char body[4096];
    struct iovec iov = {body, sizeof(body)};
    struct xport_put p = {.key = "log/k", .iov = &iov, .iovcnt = 1};
    memset(g, 0, sizeof(*g));
    if (put)
        ASSERT_EQ(xport_put(x, &p, got_done, g), 0);
    else
        ASSERT_EQ(xport_get_direct(x, "log/k", got_data, NULL, got_done, g), 0);
}

struct tick {
    bool fired;
    uint64_t at_ms;
};

static void on_tick(void *ctx)
{
    struct tick *t = ctx;
    t->fired = true;
    t->at_ms = s3c__now_ms();
}

/* The connect never completes: the call returns at once, the loop goes on (a timer due
 * 50 ms later fires then, with the request still waiting), and connect_timeout_ms ends it. */
static void pending_connect(bool put)
{
    struct jam j;
    jam_open(&j);
    struct xport *x = xport_to(j.port, put, 1500);
    struct got g;
    struct tick t = {0};
    struct loop_timer lt = {.cb = on_tick, .ctx = &t};
    uint64_t t0 = s3c__now_ms();
    loop_timer_arm(xport_loop(x), &lt, s3c__now_ns() + 50 * 1000000ull);
    start(x, put, &g);
    uint64_t call_ms = s3c__now_ms() - t0;
    fprintf(stderr, "  %s: the call took %llu ms\n", put ? "PUT" : "GET",
            (unsigned long long)call_ms);
    ASSERT(call_ms < 300); /* a blocking connect took connect_timeout_ms (1500) here */
    while (!t.fired)
        ASSERT(test_xport_poll(x, 1000) >= 0);
    ASSERT(t.at_ms - t0 < 500);
    ASSERT_EQ(g.calls, 0);
    ASSERT_EQ(xport_in_flight(x), 1);
    ASSERT_EQ(xport_drain(x, 10000), 0);
    ASSERT_EQ(g.calls, 1);
    fprintf(stderr, "  %s: ended after %llu ms: %s\n", put ? "PUT" : "GET",
            (unsigned long long)(g.at_ms - t0), g.error);
    ASSERT(g.at_ms - t0 >= 1400);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.fail, XPORT_FAIL_TIMEOUT);
    ASSERT(strstr(g.error, put ? "PUT log/k" : "GET log/k"));
    ASSERT(strstr(g.error, SECRET) == NULL);
    test_xport_free(x);
    jam_close(&j);
}

static void pending_get(void)
{
    pending_connect(false);
}

static void pending_put(void)
{
    pending_connect(true);
}

/* Reads one request head from fd (blocking on the test's side, polling x's loop meanwhile
 * so that the transport sends it) and writes answer. */
static void serve_one(struct xport *x, int fd, const char *answer)
{
    char buf[8192];
    size_t n = 0;
    uint64_t end = s3c__now_ms() + 5000;
    while (!memmem(buf, n, "\r\n\r\n", 4)) {
        ASSERT(s3c__now_ms() < end);
        ASSERT(test_xport_poll(x, 5) >= 0);
        ssize_t k = recv(fd, buf + n, sizeof(buf) - n, MSG_DONTWAIT);
        if (k > 0)
            n += (size_t)k;
        else
            ASSERT(k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    }
    ASSERT(send(fd, answer, strlen(answer), MSG_NOSIGNAL) == (ssize_t)strlen(answer));
}

/* Another transfer on the same transport goes on while a direct connect is pending: the
 * pool's libcurl connection is accepted and answered before the accept queue is jammed;
 * then a direct GET waits for its connect while a libcurl GET on the warm connection is
 * answered and completes; the direct GET ends later at connect_timeout_ms. */
static void other_transfer_goes_on(void)
{
    struct jam j;
    jam_listen(&j);
    struct xport *x = xport_to(j.port, false, 2000);
    int a = -1;
    uint64_t end = s3c__now_ms() + 5000;
    while ((a = accept4(j.lfd, NULL, NULL, SOCK_NONBLOCK)) < 0) { /* the pool's warm-up one */
        ASSERT(errno == EAGAIN || errno == EWOULDBLOCK);
        ASSERT(s3c__now_ms() < end);
        ASSERT(test_xport_poll(x, 5) >= 0);
    }
    serve_one(x, a, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"); /* its HeadBucket */
    for (int i = 0; i < 20; i++)
        ASSERT(test_xport_poll(x, 5) >= 0);
    jam_fill(&j);

    struct got d, l;
    uint64_t t0 = s3c__now_ms();
    start(x, false, &d); /* direct: its connect stays pending */
    memset(&l, 0, sizeof(l));
    ASSERT_EQ(xport_get(x, "log/other", 1, 0, got_done, &l), 0); /* libcurl, warm connection */
    serve_one(x, a, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    while (l.calls == 0) {
        ASSERT(s3c__now_ms() - t0 < 1500);
        ASSERT(test_xport_poll(x, 5) >= 0);
    }
    fprintf(stderr, "  the libcurl GET ended after %llu ms, the direct GET still waiting\n",
            (unsigned long long)(l.at_ms - t0));
    ASSERT_EQ(l.cls, XPORT_OK);
    ASSERT_EQ(d.calls, 0);
    ASSERT_EQ(xport_drain(x, 10000), 0);
    ASSERT_EQ(d.calls, 1);
    ASSERT(d.at_ms - t0 >= 1900);
    ASSERT_EQ(d.cls, XPORT_RETRYABLE);
    ASSERT_EQ(d.fail, XPORT_FAIL_TIMEOUT);
    test_xport_free(x);
    close(a);
    jam_close(&j);
}

/* A refused connect ends the request with the connect error, naming the endpoint. */
static void refused(bool put)
{
    int port = closed_port();
    struct xport *x = xport_to(port, put, 1500);
    struct got g;
    start(x, put, &g);
    ASSERT_EQ(xport_drain(x, 10000), 0);
    ASSERT_EQ(g.calls, 1);
    fprintf(stderr, "  %s: %s\n", put ? "PUT" : "GET", g.error);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.fail, XPORT_FAIL_CONNECT);
    char where[64];
    snprintf(where, sizeof(where), "127.0.0.1 port %d", port);
    ASSERT(strstr(g.error, where));
    ASSERT(strstr(g.error, SECRET) == NULL);
    /* The next request opens again (nothing of the failed one is left in the way). */
    start(x, put, &g);
    ASSERT_EQ(xport_drain(x, 10000), 0);
    ASSERT_EQ(g.calls, 1);
    ASSERT_EQ(g.fail, XPORT_FAIL_CONNECT);
    test_xport_free(x);
}

static void refused_get(void)
{
    refused(false);
}

static void refused_put(void)
{
    refused(true);
}

/* The transport closed while connects are pending (more requests queued behind them than
 * the pool's size): everything is freed (ASan), nobody is called back. */
static void close_while_pending(void)
{
    struct jam j;
    jam_open(&j);
    struct xport *x = xport_to(j.port, true, 5000);
    struct got g[3];
    start(x, false, &g[0]);
    start(x, true, &g[1]);
    start(x, false, &g[2]);
    for (int i = 0; i < 5; i++)
        ASSERT(test_xport_poll(x, 10) >= 0);
    ASSERT_EQ(xport_in_flight(x), 3);
    test_xport_free(x);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(g[i].calls, 0);
    jam_close(&j);
}

int main(void)
{
    RUN(pending_get);
    RUN(pending_put);
    RUN(other_transfer_goes_on);
    RUN(refused_get);
    RUN(refused_put);
    RUN(close_while_pending);
    return 0;
}
