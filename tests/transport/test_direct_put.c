/* Direct PUTs (s3.direct_put, src/transport/direct.c) on real sockets on 127.0.0.1:
 * against s3commit-mock verifying SigV4 and the CRC-32C checksum (the bytes read back are
 * the bytes put, from many spans), conditional writes answered 412 as on libcurl's path;
 * and against a raw server that reads slowly through a tiny receive buffer (partial
 * writes, EAGAIN), splits its answer's head, answers 412/503/403 with XML, closes in the
 * middle of the body or of the answer (a retryable error, never a resend), keeps a
 * connection alive, and sends bytes beyond an answer or never ends one (no reuse). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "config/config.h"
#include "support/mockstats.h"
#include "support/xport_loop.h"

struct res {
    int calls;
    enum xport_class cls;
    long status;
    char s3_code[64], etag[256], error[2048];
    const unsigned char *want; /* a GET's expected body */
    size_t want_len;
    bool same;
};

static void res_done(void *ctx, const struct xport_result *r)
{
    struct res *g = ctx;
    g->calls++;
    g->cls = r->cls;
    g->status = r->http_status;
    snprintf(g->s3_code, sizeof(g->s3_code), "%s", r->s3_code);
    snprintf(g->etag, sizeof(g->etag), "%s", r->etag);
    snprintf(g->error, sizeof(g->error), "%s", r->error);
    g->same = g->want && r->body_len == g->want_len && memcmp(r->body, g->want, g->want_len) == 0;
}

static unsigned char *test_body(size_t len, uint64_t seed)
{
    unsigned char *b = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        b[i] = (unsigned char)(test_xorshift64(&seed) >> 24);
    return b;
}

/* body cut into n spans of uneven sizes (some empty) */
static int spans(unsigned char *body, size_t len, struct iovec *v, int n)
{
    size_t at = 0;
    int k = 0;
    for (int i = 0; i < n - 1 && at < len; i++) {
        size_t s = (size_t)(i % 5 == 3 ? 0 : (len / (size_t)n) + (size_t)(i * 7 % 13));
        if (s > len - at)
            s = len - at;
        v[k++] = (struct iovec){body + at, s};
        at += s;
    }
    v[k++] = (struct iovec){body + at, len - at};
    return k;
}

static void put_one(struct xport *x, const struct xport_put *p, struct res *g)
{
    memset(g, 0, sizeof(*g));
    ASSERT_EQ(xport_put(x, p, res_done, g), 0);
    ASSERT_EQ(xport_drain(x, 15000), 0);
    ASSERT_EQ(g->calls, 1);
}

/* ---- the raw server ----------------------------------------------------------------- */

enum cut { CUT_NONE, CUT_MID_BODY, CUT_MID_ANSWER, CUT_EXTRA, CUT_NEVER_END };

struct answer {
    char head[1024];
    const char *body;
    size_t split; /* the head written in two pieces at this offset (0: one piece) */
    enum cut cut;
    size_t cut_at; /* CUT_MID_BODY: body bytes read before the close */
};

struct srv {
    int lfd, port;
    pthread_t th;
    struct answer *answers;
    int nanswers;
    int rcvbuf;            /* SO_RCVBUF of accepted sockets (0: the default) */
    int slow_us;           /* a pause between body reads */
    int accepts, requests; /* connections that carried PUTs, PUTs */
    uint64_t body_len[8];  /* per request: the Content-Length, body bytes read, their CRC */
    uint64_t body_got[8];
    uint32_t body_crc[8];
    char head[8][2048];
};

static void srv_write(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k <= 0)
            return;
        c += k;
        n -= (size_t)k;
    }
}

/* One request on fd, answered. Returns false when the connection is to be closed. */
static bool srv_one(struct srv *s, int fd, bool *carried)
{
    char buf[65536];
    size_t n = 0;
    char *end = NULL;
    while (!end) {
        if (n + 1 >= sizeof(buf))
            return false;
        ssize_t k = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);
        if (k <= 0)
            return false;
        n += (size_t)k;
        buf[n] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (strncmp(buf, "HEAD ", 5) == 0) { /* the pool's warm-up and heartbeats (libcurl's) */
        static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        srv_write(fd, ok, sizeof(ok) - 1);
        return true;
    }
    if (s->requests >= s->nanswers)
        return false;
    if (!*carried) {
        *carried = true;
        s->accepts++;
    }
    int i = s->requests++;
    struct answer *a = &s->answers[i];
    size_t hl = (size_t)(end + 4 - buf);
    snprintf(s->head[i], sizeof(s->head[i]), "%.*s", (int)hl, buf);
    const char *cl = strcasestr(s->head[i], "\r\nContent-Length: ");
    uint64_t want = cl ? strtoull(cl + 18, NULL, 10) : 0;
    s->body_len[i] = want;
    uint64_t got = n - hl;
    uint32_t crc = crc32c_update(0, buf + hl, n - hl);
    while (got < want) {
        if (a->cut == CUT_MID_BODY && got >= a->cut_at)
            return false;
        if (s->slow_us)
            usleep((useconds_t)s->slow_us);
        ssize_t k = recv(fd, buf, sizeof(buf) < want - got ? sizeof(buf) : want - got, 0);
        if (k <= 0)
            return false;
        crc = crc32c_update(crc, buf, (size_t)k);
        got += (uint64_t)k;
    }
    s->body_got[i] = got;
    s->body_crc[i] = crc;
    size_t ahl = strlen(a->head);
    if (a->cut == CUT_MID_ANSWER) {
        srv_write(fd, a->head, ahl / 2);
        usleep(20000);
        return false;
    }
    if (a->cut == CUT_EXTRA) {
        /* The answer and the bytes beyond it in one write, so they reach the client
         * together: written after it, they could come after the client had taken the
         * connection for its next PUT (a server out of step then garbles that PUT's
         * answer, which fails it, retryably; the check here is the one at the answer). */
        char all[1200];
        int m = snprintf(all, sizeof(all), "%s%sHTTP/1.1 200 OK\r\n", a->head,
                         a->body ? a->body : "");
        srv_write(fd, all, (size_t)m);
        return true;
    }
    if (a->split) {
        srv_write(fd, a->head, a->split);
        usleep(20000);
        srv_write(fd, a->head + a->split, ahl - a->split);
    } else {
        srv_write(fd, a->head, ahl);
    }
    if (a->body)
        srv_write(fd, a->body, strlen(a->body));
    return a->cut != CUT_NEVER_END;
}

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    struct pollfd pf[9];
    bool carried[9] = {false}; /* the connection carried a PUT */
    int n = 1;
    pf[0] = (struct pollfd){.fd = s->lfd, .events = POLLIN};
    uint64_t stop = test_now_ms_() + 30000;
    while (test_now_ms_() < stop && (s->requests < s->nanswers || n > 1)) {
        if (poll(pf, (nfds_t)n, 100) <= 0)
            continue;
        if ((pf[0].revents & POLLIN) && n < 9) {
            int fd = accept(s->lfd, NULL, NULL);
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            carried[n] = false;
            pf[n++] = (struct pollfd){.fd = fd, .events = POLLIN};
        }
        for (int i = 1; i < n; i++) {
            if (!pf[i].revents)
                continue;
            if (!srv_one(s, pf[i].fd, &carried[i])) {
                /* a never-ended answer: the client gives up first, then it is closed */
                if (s->requests > 0 && s->answers[s->requests - 1].cut == CUT_NEVER_END &&
                    (pf[i].revents & POLLIN)) {
                    char b;
                    if (recv(pf[i].fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) != 0 &&
                        s->requests < s->nanswers)
                        continue;
                }
                close(pf[i].fd);
                pf[i] = pf[n - 1];
                carried[i] = carried[n - 1];
                n--;
                i--;
            }
        }
    }
    for (int i = 1; i < n; i++)
        close(pf[i].fd);
    return NULL;
}

static int low_speed_ms; /* s3.low_speed_time_ms for the next srv_open (0: the default) */

static struct xport *srv_open(struct srv *s, struct answer *an, int n, int rcvbuf, int slow_us)
{
    memset(s, 0, sizeof(*s));
    s->answers = an;
    s->nanswers = n;
    s->rcvbuf = rcvbuf;
    s->slow_us = slow_us;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT(s->lfd >= 0);
    if (rcvbuf) /* inherited by accepted sockets: the client meets a full window */
        ASSERT_EQ(setsockopt(s->lfd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    ASSERT_EQ(listen(s->lfd, 16), 0);
    socklen_t al = sizeof(a);
    ASSERT_EQ(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    ASSERT_EQ(pthread_create(&s->th, NULL, srv_main, s), 0);
    struct s3c_config c;
    char err[256];
    cfg_defaults(&c);
    snprintf(c.s3.endpoint, sizeof(c.s3.endpoint), "http://127.0.0.1:%d", s->port);
    snprintf(c.s3.bucket, sizeof(c.s3.bucket), "b");
    snprintf(c.s3.access_key_id, sizeof(c.s3.access_key_id), "AKIDDIRECTTEST000001");
    snprintf(c.s3.secret_access_key, sizeof(c.s3.secret_access_key), "direct-test-secret");
    c.s3.direct_put = true;
    c.persistence.target_pool_size = 1;
    c.s3.request_timeout_ms = 1500;
    if (low_speed_ms)
        c.s3.low_speed_time_ms = low_speed_ms;
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    return x;
}

static void srv_close(struct srv *s, struct xport *x)
{
    test_xport_free(x);
    pthread_join(s->th, NULL);
    close(s->lfd);
}

static void answer(struct answer *a, const char *status, const char *body)
{
    memset(a, 0, sizeof(*a));
    snprintf(a->head, sizeof(a->head),
             "HTTP/1.1 %s\r\nx-amz-request-id: REQ0000000000001\r\n"
             "ETag: \"00112233445566778899aabbccddeeff\"\r\nContent-Length: %zu\r\n\r\n",
             status, body ? strlen(body) : 0);
    a->body = body;
}

#define XML_ERR(code)                                                                              \
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>" code "</Code><Message>m</Message>" \
    "<RequestId>REQ0000000000001</RequestId></Error>"

/* ---- cases ---------------------------------------------------------------------------- */

/* 4 MiB from 40 spans into a server reading slowly through a 4 KiB window: the socket
 * takes partial writes and EAGAINs; the server's bytes are the spans', in order; the
 * answer's head arrives in two pieces; the request carries Content-Length and the
 * checksum header. */
static void partial_writes_and_split_head(void)
{
    struct answer an[1];
    answer(&an[0], "200 OK", NULL);
    an[0].split = 20;
    struct srv s;
    struct xport *x = srv_open(&s, an, 1, 4096, 200);
    size_t len = 4u << 20;
    unsigned char *body = test_body(len, 3);
    struct iovec v[40];
    int nv = spans(body, len, v, 40);
    struct xport_put p = {.key = "log/big", .iov = v, .iovcnt = nv};
    struct res g;
    put_one(x, &p, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    ASSERT_STR_EQ(g.etag, "\"00112233445566778899aabbccddeeff\"");
    srv_close(&s, x);
    ASSERT_EQ(s.requests, 1);
    ASSERT_UEQ(s.body_len[0], len);
    ASSERT_UEQ(s.body_got[0], len);
    ASSERT_EQ(s.body_crc[0], crc32c_update(0, body, len));
    ASSERT(strncmp(s.head[0], "PUT /b/log/big HTTP/1.1\r\n", 25) == 0);
    ASSERT(strstr(s.head[0], "\r\nx-amz-checksum-crc32c: "));
    ASSERT(strstr(s.head[0], "\r\nExpect") == NULL);
    free(body);
}

/* A body that takes several s3.low_speed_time_ms periods to send, at far more than
 * s3.low_speed_limit_bytes per second: bytes sent count for the limit, as libcurl's do. */
static void slow_send_is_not_low_speed(void)
{
    struct answer an[1];
    answer(&an[0], "200 OK", NULL);
    struct srv s;
    low_speed_ms = 100;
    struct xport *x = srv_open(&s, an, 1, 4096, 1000);
    low_speed_ms = 0;
    size_t len = 2u << 20;
    unsigned char *body = test_body(len, 6);
    struct iovec v = {body, len};
    struct xport_put p = {.key = "log/slow", .iov = &v, .iovcnt = 1};
    struct res g;
    uint64_t t0 = test_now_ms_();
    put_one(x, &p, &g);
    if (g.cls != XPORT_OK)
        fprintf(stderr, "slow: %s\n", g.error);
    ASSERT_EQ(g.cls, XPORT_OK);
    ASSERT(test_now_ms_() - t0 > 200); /* it did span more than one look */
    srv_close(&s, x);
    ASSERT_EQ(s.body_crc[0], crc32c_update(0, body, len));
    free(body);
}

/* 2xx, 412, 503, 403 on one kept-alive connection: classes and codes as libcurl's path
 * gives them; one connection carried all four. */
static void statuses_and_keep_alive(void)
{
    struct answer an[4];
    answer(&an[0], "200 OK", NULL);
    answer(&an[1], "412 Precondition Failed", XML_ERR("PreconditionFailed"));
    answer(&an[2], "503 Slow Down", XML_ERR("SlowDown"));
    answer(&an[3], "403 Forbidden", XML_ERR("AccessDenied"));
    struct srv s;
    struct xport *x = srv_open(&s, an, 4, 0, 0);
    unsigned char *body = test_body(1000, 4);
    struct iovec v = {body, 1000};
    struct xport_put p = {.key = "log/k", .iov = &v, .iovcnt = 1, .if_none_match = true};
    struct res g;
    put_one(x, &p, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    put_one(x, &p, &g);
    ASSERT_EQ(g.cls, XPORT_EXISTS);
    ASSERT_EQ(g.status, 412);
    ASSERT_STR_EQ(g.s3_code, "PreconditionFailed");
    put_one(x, &p, &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_STR_EQ(g.s3_code, "SlowDown");
    put_one(x, &p, &g);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_STR_EQ(g.s3_code, "AccessDenied");
    ASSERT(strstr(g.error, "PUT log/k: HTTP 403 AccessDenied"));
    srv_close(&s, x);
    ASSERT_EQ(s.requests, 4);
    ASSERT_EQ(s.accepts, 1);
    ASSERT(strstr(s.head[1], "\r\nIf-None-Match: *\r\n"));
    free(body);
}

/* The server closes after 100 KiB of a 1 MiB body, then after half an answer's head:
 * each is a retryable error, and the transport never sent the PUT again by itself. */
static void close_mid_body_and_mid_answer(void)
{
    struct answer an[3];
    answer(&an[0], "200 OK", NULL);
    an[0].cut = CUT_MID_BODY;
    an[0].cut_at = 100 * 1024;
    answer(&an[1], "200 OK", NULL);
    an[1].cut = CUT_MID_ANSWER;
    answer(&an[2], "200 OK", NULL);
    struct srv s;
    struct xport *x = srv_open(&s, an, 3, 0, 0);
    size_t len = 1u << 20;
    unsigned char *body = test_body(len, 5);
    struct iovec v = {body, len};
    struct xport_put p = {.key = "log/cut", .iov = &v, .iovcnt = 1};
    struct res g;
    put_one(x, &p, &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.status, 0);
    ASSERT_EQ(s.requests, 1);
    put_one(x, &p, &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(s.requests, 2);
    put_one(x, &p, &g); /* a fresh connection works */
    ASSERT_EQ(g.cls, XPORT_OK);
    srv_close(&s, x);
    ASSERT_EQ(s.requests, 3);
    ASSERT_EQ(s.accepts, 3);
    ASSERT_EQ(s.body_crc[2], crc32c_update(0, body, len));
    free(body);
}

/* Bytes beyond an answer, and an answer never ended (the request times out): neither
 * connection carries another request. */
static void no_reuse_after_extra_or_unread(void)
{
    struct answer an[3];
    answer(&an[0], "200 OK", NULL);
    an[0].cut = CUT_EXTRA;
    answer(&an[1], "200 OK", "0123456789"); /* Content-Length 10 ... */
    an[1].cut = CUT_NEVER_END;
    snprintf(an[1].head, sizeof(an[1].head),
             "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"); /* ... but 100 announced */
    answer(&an[2], "200 OK", NULL);
    struct srv s;
    struct xport *x = srv_open(&s, an, 3, 0, 0);
    unsigned char body[64] = {1, 2, 3};
    struct iovec v = {body, sizeof(body)};
    struct xport_put p = {.key = "log/x", .iov = &v, .iovcnt = 1};
    struct res g;
    put_one(x, &p, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    put_one(x, &p, &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE); /* s3.request_timeout_ms */
    put_one(x, &p, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    srv_close(&s, x);
    ASSERT_EQ(s.requests, 3);
    ASSERT_EQ(s.accepts, 3);
}

/* Against the mock verifying SigV4 and CRC-32C: the bytes read back are the bytes put;
 * If-None-Match on an existing key and If-Match with a wrong ETag give 412 on both paths. */
static void mock_signed(void)
{
    const char *args[] = {
        "--bucket",           "commits", "--access-key", "AKIDDIRECTMOCK000001", "--secret-key",
        "direct-mock-secret", NULL};
    struct mockproc m;
    ASSERT_EQ(test_mock_start(&m, args), 0);
    size_t len = (1u << 20) + 333;
    unsigned char *body = test_body(len, 9);
    struct iovec v[70];
    int nv = spans(body, len, v, 70);
    for (int direct = 1; direct >= 0; direct--) {
        struct s3c_config c;
        char err[256];
        cfg_defaults(&c);
        snprintf(c.s3.endpoint, sizeof(c.s3.endpoint), "%s", m.endpoint);
        snprintf(c.s3.bucket, sizeof(c.s3.bucket), "commits");
        snprintf(c.s3.access_key_id, sizeof(c.s3.access_key_id), "AKIDDIRECTMOCK000001");
        snprintf(c.s3.secret_access_key, sizeof(c.s3.secret_access_key), "direct-mock-secret");
        c.s3.direct_put = direct;
        c.persistence.target_pool_size = 2;
        struct xport *x = test_xport_new(&c, err, sizeof(err));
        ASSERT(x != NULL);
        char key[64];
        snprintf(key, sizeof(key), "log/obj-%d", direct);
        struct xport_put p = {.key = key, .iov = v, .iovcnt = nv, .if_none_match = true};
        struct res g;
        put_one(x, &p, &g);
        ASSERT_EQ(g.cls, XPORT_OK);
        char etag[256];
        snprintf(etag, sizeof(etag), "%s", g.etag);
        ASSERT(etag[0] == '"');
        /* The refusals with a body the mock reads before answering: one over 1 MiB is
         * answered unread and the connection closed, and the reset can beat the 412 to the
         * client (libcurl then reports a send error: retryable, which the stage settles by
         * reading back; it failed this check once under ASan in a loaded CI run). The early
         * answer itself is tested against the raw server above. */
        struct iovec sv = {body, 65536 + 333};
        struct xport_put pn = {.key = key, .iov = &sv, .iovcnt = 1, .if_none_match = true};
        put_one(x, &pn, &g);
        ASSERT_EQ(g.cls, XPORT_EXISTS);
        struct xport_put q = {.key = key, .iov = &sv, .iovcnt = 1, .if_match = "\"nope\""};
        put_one(x, &q, &g);
        ASSERT_EQ(g.cls, XPORT_EXISTS);
        q = (struct xport_put){.key = key, .iov = v, .iovcnt = nv, .if_match = etag};
        put_one(x, &q, &g);
        ASSERT_EQ(g.cls, XPORT_OK);
        ASSERT_STR_EQ(g.etag, etag);
        struct xport_put e = {.key = "log/empty", .iov = v, .iovcnt = 0};
        put_one(x, &e, &g);
        ASSERT_EQ(g.cls, XPORT_OK);
        struct xport_stats st;
        xport_stats_get(x, &st);
        if (direct)
            ASSERT(st.reuses >= 2);
        memset(&g, 0, sizeof(g));
        g.want = body;
        g.want_len = len;
        ASSERT_EQ(xport_get(x, key, 0, UINT64_MAX, res_done, &g), 0);
        ASSERT_EQ(xport_drain(x, 15000), 0);
        ASSERT_EQ(g.cls, XPORT_OK);
        ASSERT(g.same);
        test_xport_free(x);
    }
    ASSERT_EQ(mock_op_count(&m, "PutObject", 412), 4);
    test_mock_stop(&m);
    free(body);
}

int main(void)
{
    RUN(partial_writes_and_split_head);
    RUN(slow_send_is_not_low_speed);
    RUN(statuses_and_keep_alive);
    RUN(close_mid_body_and_mid_answer);
    RUN(no_reuse_after_extra_or_unread);
    RUN(mock_signed);
    return 0;
}
