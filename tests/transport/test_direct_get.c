/* Direct GETs (xport_get_direct, src/transport/direct.c) on real sockets on 127.0.0.1:
 * against s3commit-mock verifying SigV4 (the request is the one libcurl would send), and
 * against a scripted server that writes each answer in the pieces a case asks for: a head
 * split across reads, a body split at every offset class, error answers (sized, chunked,
 * a redirect), a close in the middle of a body, keep-alive reuse and a stale connection,
 * Content-Length that does not match what was sent, a chunked 2xx. */
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

/* ---- what a GET showed ------------------------------------------------------------ */

struct got {
    int calls, pieces;
    uint64_t next;
    bool out_of_order, piece_differs;
    uint32_t crc; /* of the pieces, in order */
    enum xport_class cls;
    enum xport_fail fail;
    long status;
    bool range_unsatisfiable;
    char s3_code[64], etag[256], error[2048];
    uint64_t object_size;
    unsigned char *body;
    size_t len, cap;
};

static void got_data(void *ctx, const unsigned char *body, uint64_t off, const unsigned char *piece,
                     size_t n)
{
    struct got *g = ctx;
    g->pieces++;
    if (off != g->next)
        g->out_of_order = true;
    if (memcmp(body + off, piece, n) != 0)
        g->piece_differs = true;
    g->crc = crc32c_update(g->crc, piece, n);
    g->next = off + n;
}

static void got_done(void *ctx, const struct xport_result *r)
{
    struct got *g = ctx;
    g->calls++;
    g->cls = r->cls;
    g->fail = r->fail;
    g->status = r->http_status;
    g->range_unsatisfiable = r->range_unsatisfiable;
    snprintf(g->s3_code, sizeof(g->s3_code), "%s", r->s3_code);
    snprintf(g->etag, sizeof(g->etag), "%s", r->etag);
    snprintf(g->error, sizeof(g->error), "%s", r->error);
    g->len = r->body_len;
    g->object_size = r->object_size;
    g->body = xport_take_body(r, &g->cap);
}

static void got_free(struct xport *x, struct got *g)
{
    xport_give_body(x, g->body, g->cap);
    memset(g, 0, sizeof(*g));
}

static void get_one(struct xport *x, const char *key, struct got *g)
{
    memset(g, 0, sizeof(*g));
    ASSERT_EQ(xport_get_direct(x, key, got_data, g, got_done, g), 0);
    ASSERT_EQ(xport_drain(x, 15000), 0);
    ASSERT_EQ(g->calls, 1);
    ASSERT(!g->out_of_order);
    ASSERT(!g->piece_differs);
}

/* ---- the scripted server ------------------------------------------------------------ */

struct answer {
    char head[1024];  /* the head as written, "\r\n\r\n" included */
    const void *body; /* bytes after the head (chunk framing included when chunked) */
    size_t body_len;
    size_t splits[8];   /* offsets into head + body at which a write ends (0: none) */
    bool close_after;   /* close the connection once written */
    int close_delay_ms; /* ... this long after */
    int stall_ms;       /* a pause after the first piece */
};

struct srv {
    int lfd, port;
    pthread_t th;
    struct answer *answers;
    int nanswers;
    int accepts, requests; /* connections that carried GETs, GETs; read after the join */
    int low_speed_ms;      /* s3.low_speed_time_ms for the transport (0: the default) */
    char req[8192];        /* the request being read */
    char get_req[8192];    /* the last GET's head */
};

static int srv_read_request(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t k = recv(fd, buf + n, cap - 1 - n, 0);
        if (k <= 0)
            return -1;
        n += (size_t)k;
        buf[n] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            return 0;
    }
    return -1;
}

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

static void srv_answer(struct srv *s, int fd, const struct answer *a)
{
    size_t hl = strlen(a->head), total = hl + a->body_len, at = 0;
    char *all = malloc(total ? total : 1);
    memcpy(all, a->head, hl);
    if (a->body_len)
        memcpy(all + hl, a->body, a->body_len);
    for (int k = 0; k <= 8 && at < total; k++) {
        size_t end = k < 8 && a->splits[k] ? a->splits[k] : total;
        if (end > total)
            end = total;
        if (end > at) {
            srv_write(fd, all + at, end - at);
            at = end;
            if (at < total)
                usleep(3000); /* the client reads this piece before the next is sent */
            if (at < total && k == 0 && a->stall_ms)
                usleep((useconds_t)a->stall_ms * 1000);
        }
    }
    free(all);
    (void)s;
}

/* Serves every connection: HEAD requests (the pool's warm-up and heartbeats) get an empty
 * 200; each GET gets the next scripted answer. Ends when the script is done and the
 * client has closed everything (bounded: 30 s). */
static void *srv_main(void *arg)
{
    struct srv *s = arg;
    struct pollfd pf[17];
    bool got_get[17] = {false};
    int n = 1, next = 0;
    pf[0] = (struct pollfd){.fd = s->lfd, .events = POLLIN};
    uint64_t end = test_now_ms_() + 30000;
    while (test_now_ms_() < end && (next < s->nanswers || n > 1)) {
        if (poll(pf, (nfds_t)n, 100) <= 0)
            continue;
        if ((pf[0].revents & POLLIN) && n < 17) {
            int fd = accept(s->lfd, NULL, NULL);
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            got_get[n] = false;
            pf[n++] = (struct pollfd){.fd = fd, .events = POLLIN};
        }
        for (int i = 1; i < n; i++) {
            if (!pf[i].revents)
                continue;
            bool drop = srv_read_request(pf[i].fd, s->req, sizeof(s->req)) != 0;
            if (!drop && strncmp(s->req, "HEAD ", 5) == 0) {
                static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                srv_write(pf[i].fd, ok, sizeof(ok) - 1);
            } else if (!drop && next < s->nanswers) {
                if (!got_get[i])
                    s->accepts++;
                got_get[i] = true;
                s->requests++;
                memcpy(s->get_req, s->req, sizeof(s->req));
                srv_answer(s, pf[i].fd, &s->answers[next]);
                drop = s->answers[next].close_after;
                if (drop && s->answers[next].close_delay_ms)
                    usleep((useconds_t)s->answers[next].close_delay_ms * 1000);
                next++;
            } else {
                drop = true;
            }
            if (drop) {
                close(pf[i].fd);
                pf[i] = pf[n - 1];
                got_get[i] = got_get[n - 1];
                n--;
                i--;
            }
        }
    }
    for (int i = 1; i < n; i++)
        close(pf[i].fd);
    return NULL;
}

static void srv_start(struct srv *s, struct answer *answers, int n)
{
    int low_speed_ms = s->low_speed_ms;
    memset(s, 0, sizeof(*s));
    s->low_speed_ms = low_speed_ms;
    s->answers = answers;
    s->nanswers = n;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT(s->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_EQ(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    ASSERT_EQ(listen(s->lfd, 16), 0);
    socklen_t al = sizeof(a);
    ASSERT_EQ(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    ASSERT_EQ(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void srv_join(struct srv *s)
{
    pthread_join(s->th, NULL);
    close(s->lfd);
}

static struct xport *srv_xport(const struct srv *s)
{
    struct s3c_config c;
    char err[256];
    cfg_defaults(&c);
    snprintf(c.s3.endpoint, sizeof(c.s3.endpoint), "http://127.0.0.1:%d", s->port);
    snprintf(c.s3.bucket, sizeof(c.s3.bucket), "b");
    snprintf(c.s3.access_key_id, sizeof(c.s3.access_key_id), "AKIDDIRECTTEST000001");
    snprintf(c.s3.secret_access_key, sizeof(c.s3.secret_access_key), "direct-test-secret");
    c.persistence.target_pool_size = 1;
    c.s3.direct_put = false; /* the script answers GETs: the pool's warm-up stays libcurl's */
    c.s3.request_timeout_ms = 10000;
    if (s->low_speed_ms)
        c.s3.low_speed_time_ms = s->low_speed_ms;
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    return x;
}

static void answer_ok(struct answer *a, const void *body, size_t len, const char *etag)
{
    memset(a, 0, sizeof(*a));
    snprintf(a->head, sizeof(a->head),
             "HTTP/1.1 200 OK\r\nx-amz-request-id: REQ0000000000001\r\nETag: %s\r\n"
             "Content-Type: application/octet-stream\r\nContent-Length: %zu\r\n\r\n",
             etag, len);
    a->body = body;
    a->body_len = len;
}

/* The scripted server with the answers, and a transport pointed at it, warmed up. */
static struct xport *srv_open(struct srv *s, struct answer *an, int n)
{
    srv_start(s, an, n);
    struct xport *x = srv_xport(s);
    ASSERT_EQ(xport_drain(x, 5000), 0);
    return x;
}

/* The transport closed (its connections with it), then the server's thread joined. */
static void srv_close(struct srv *s, struct xport *x)
{
    test_xport_free(x);
    srv_join(s);
}

static unsigned char *test_body(size_t len, uint64_t seed)
{
    unsigned char *b = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        b[i] = (unsigned char)(test_xorshift64(&seed) >> 24);
    return b;
}

static void check_ok(const struct got *g, const unsigned char *body, size_t len)
{
    ASSERT_EQ(g->cls, XPORT_OK);
    ASSERT_EQ(g->status, 200);
    ASSERT_UEQ(g->len, len);
    ASSERT_UEQ(g->next, len);
    if (len) {
        ASSERT(g->body != NULL);
        ASSERT_MEM_EQ(g->body, body, len);
        ASSERT_EQ(g->crc, crc32c_update(0, body, len));
    }
}

/* ---- cases ---------------------------------------------------------------------------- */

/* The head in pieces of 7 bytes, the last one ending between the final CR and LF. */
static void head_split_across_reads(void)
{
    struct answer an[1];
    size_t len = 3000;
    unsigned char *body = test_body(len, 1);
    answer_ok(&an[0], body, len, "\"0123456789abcdef0123456789abcdef\"");
    size_t hl = strlen(an[0].head);
    for (int k = 0; k < 7; k++)
        an[0].splits[k] = (size_t)(k + 1) * 7;
    an[0].splits[7] = hl - 1;
    struct srv s;
    struct xport *x = srv_open(&s, an, 1);
    struct got g;
    get_one(x, "log/split-head", &g);
    check_ok(&g, body, len);
    ASSERT_STR_EQ(g.etag, "\"0123456789abcdef0123456789abcdef\"");
    /* The request on the wire is the signed GET libcurl would send. */
    ASSERT(strncmp(s.get_req, "GET /b/log/split-head HTTP/1.1\r\n", 32) == 0);
    ASSERT(strstr(s.get_req, "Authorization: AWS4-HMAC-SHA256 Credential=AKIDDIRECTTEST000001/"));
    ASSERT(strstr(s.get_req,
                  "x-amz-content-sha256: "
                  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\r\n"));
    ASSERT(strstr(s.get_req, "\r\nExpect") == NULL);
    got_free(x, &g);
    srv_close(&s, x);
    free(body);
}

/* Head and body written in two pieces, the first ending at each offset class of the body:
 * none of it, one byte, just under / at / just over what one head read takes, 16 KiB,
 * all but one byte, all of it. All on one kept-alive connection. */
static void body_split_every_offset_class(void)
{
    size_t len = 100000;
    unsigned char *body = test_body(len, 2);
    size_t hl;
    {
        struct answer probe;
        answer_ok(&probe, body, len, "\"e\"");
        hl = strlen(probe.head);
    }
    const size_t classes[] = {0, 1, 4095 - hl, 4096 - hl, 4097 - hl, 16384, len - 1, len};
    enum { N = sizeof(classes) / sizeof(classes[0]) };
    struct answer an[N];
    for (int i = 0; i < N; i++) {
        answer_ok(&an[i], body, len, "\"e\"");
        an[i].splits[0] = hl + classes[i];
        an[i].splits[1] = hl + classes[i] + 1; /* one lone byte after it */
    }
    struct srv s;
    struct xport *x = srv_open(&s, an, N);
    for (int i = 0; i < N; i++) {
        struct got g;
        get_one(x, "log/split-body", &g);
        check_ok(&g, body, len);
        got_free(x, &g);
    }
    srv_close(&s, x);
    ASSERT_EQ(s.accepts, 1); /* one connection for every GET: kept alive */
    ASSERT_EQ(s.requests, N);
    free(body);
}

/* Errors read through the parser and ended as libcurl's answers are: the S3 error document
 * (sized and chunked), a redirect; the connection stays usable after each. */
static void errors_with_xml(void)
{
    static const char slow[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown"
                               "</Code><Message>Please reduce your request rate.</Message>"
                               "<RequestId>RID1</RequestId></Error>";
    static const char denied[] = "<Error><Code>AccessDenied</Code><Message>Access Denied"
                                 "</Message></Error>";
    static const char nokey[] = "<Error><Code>NoSuchKey</Code><Message>The specified key does "
                                "not exist.</Message></Error>";
    static const char moved[] = "<Error><Code>PermanentRedirect</Code><Message>use the right "
                                "endpoint</Message></Error>";
    char chunked[512];
    snprintf(chunked, sizeof(chunked), "%zx\r\n%.*s\r\n%zx\r\n%s\r\n0\r\n\r\n", (size_t)10, 10,
             denied, strlen(denied) - 10, denied + 10);
    size_t ok_len = 777;
    unsigned char *ok = test_body(ok_len, 3);
    struct answer an[5];
    memset(&an[0], 0, sizeof(an[0]) * 5);
    snprintf(
        an[0].head, sizeof(an[0].head),
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: %zu\r\n\r\n",
        strlen(slow));
    an[0].body = slow;
    an[0].body_len = strlen(slow);
    an[0].splits[0] = strlen(an[0].head) + 20;
    snprintf(
        an[1].head, sizeof(an[1].head),
        "HTTP/1.1 403 Forbidden\r\nx-amz-request-id: RID2\r\nTransfer-Encoding: chunked\r\n\r\n");
    an[1].body = chunked;
    an[1].body_len = strlen(chunked);
    an[1].splits[0] = strlen(an[1].head) + 3;
    snprintf(an[2].head, sizeof(an[2].head),
             "HTTP/1.1 404 Not Found\r\nContent-Length: %zu\r\n\r\n", strlen(nokey));
    an[2].body = nokey;
    an[2].body_len = strlen(nokey);
    snprintf(an[3].head, sizeof(an[3].head),
             "HTTP/1.1 301 Moved Permanently\r\nContent-Length: %zu\r\n\r\n", strlen(moved));
    an[3].body = moved;
    an[3].body_len = strlen(moved);
    answer_ok(&an[4], ok, ok_len, "\"ok\"");
    struct srv s;
    struct xport *x = srv_open(&s, an, 5);
    struct got g;

    get_one(x, "log/slow", &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.status, 503);
    ASSERT_STR_EQ(g.s3_code, "SlowDown");
    ASSERT(strstr(g.error, "GET log/slow: HTTP 503 SlowDown: Please reduce your request rate."));
    ASSERT(strstr(g.error, "request_id=RID1"));
    ASSERT(g.body == NULL);
    ASSERT_EQ(g.pieces, 0); /* an error body is not data */

    get_one(x, "log/denied", &g);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_EQ(g.status, 403);
    ASSERT_STR_EQ(g.s3_code, "AccessDenied");
    ASSERT(strstr(g.error, "GET log/denied: HTTP 403 AccessDenied: Access Denied"));
    ASSERT(strstr(g.error, "request_id=RID2"));
    ASSERT(strstr(g.error, "lack permission"));

    get_one(x, "log/none", &g);
    ASSERT_EQ(g.cls, XPORT_NOT_FOUND);
    ASSERT_STR_EQ(g.s3_code, "NoSuchKey");

    get_one(x, "log/moved", &g);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_EQ(g.status, 301);
    ASSERT(strstr(g.error, "set s3.region"));

    get_one(x, "log/ok", &g);
    check_ok(&g, ok, ok_len);
    got_free(x, &g);
    srv_close(&s, x);
    ASSERT_EQ(s.accepts, 1); /* every answer was read to its end: one connection for all */
    free(ok);
}

/* The server closes 5000 bytes into a 100000-byte body: a retryable I/O failure whose
 * error names the key and the offset; the next GET opens a fresh connection. */
static void close_mid_body(void)
{
    size_t len = 100000;
    unsigned char *body = test_body(len, 4);
    struct answer an[2];
    answer_ok(&an[0], body, len, "\"e\"");
    an[0].body_len = 5000; /* Content-Length still says 100000 */
    an[0].close_after = true;
    answer_ok(&an[1], body, len, "\"e\"");
    struct srv s;
    struct xport *x = srv_open(&s, an, 2);
    struct got g;
    get_one(x, "log/cut", &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.fail, XPORT_FAIL_IO);
    ASSERT(g.body == NULL);
    ASSERT(strstr(g.error, "GET log/cut: "));
    ASSERT(strstr(g.error, "at body offset 5000 of 100000"));
    get_one(x, "log/whole", &g);
    check_ok(&g, body, len);
    got_free(x, &g);
    srv_close(&s, x);
    ASSERT_EQ(s.accepts, 2);
    free(body);
}

/* Keep-alive: answers on one connection while the server keeps it; when the server closes
 * an idle one (no Connection: close said), the next GET still succeeds, on a new one,
 * whether the client noticed the close before sending (an idle close) or only after (a
 * resend, as libcurl does). */
static void keep_alive_and_stale(void)
{
    size_t len = 5000;
    unsigned char *body = test_body(len, 5);
    struct answer an[5];
    for (int i = 0; i < 5; i++)
        answer_ok(&an[i], body, len, "\"k\"");
    an[1].close_after = true; /* after the second GET */
    an[3].close_after = true; /* after the fourth, once the client has gone idle */
    an[3].close_delay_ms = 50;
    struct srv s;
    struct xport *x = srv_open(&s, an, 5);
    struct xport_stats st0, st1;
    xport_stats_get(x, &st0);
    struct got g;
    get_one(x, "log/k1", &g);
    check_ok(&g, body, len);
    got_free(x, &g);
    get_one(x, "log/k2", &g);
    check_ok(&g, body, len);
    got_free(x, &g);
    usleep(20000);
    ASSERT_EQ(xport_drain(x, 0), 0);
    (void)test_xport_poll(x, 10); /* the client sees the close while idle */
    get_one(x, "log/k3", &g);
    check_ok(&g, body, len);
    got_free(x, &g);
    get_one(x, "log/k4", &g);
    check_ok(&g, body, len);
    got_free(x, &g);
    usleep(150000); /* closed by now, but not looked at: the next send finds out */
    get_one(x, "log/k5", &g);
    check_ok(&g, body, len);
    got_free(x, &g);
    xport_stats_get(x, &st1);
    ASSERT_UEQ(st1.reuses - st0.reuses, 3);   /* k2, k4 and k5's first sending */
    ASSERT_UEQ(st1.resends - st0.resends, 1); /* k5, on a fresh connection */
    srv_close(&s, x);
    ASSERT_EQ(s.accepts, 3);
    ASSERT_EQ(s.requests, 5);
    free(body);
}

/* Content-Length that does not match: more bytes than it says (the GET has what it said,
 * the connection is not reused: the surplus would be read as the next answer), and a
 * declared length the server never sends in full (a partial body, named). */
static void content_length_mismatch(void)
{
    size_t len = 1000;
    unsigned char *body = test_body(len + 10, 6);
    struct answer an[3];
    answer_ok(&an[0], body, len, "\"m\"");
    an[0].body_len = len + 10; /* 10 bytes nobody asked for */
    answer_ok(&an[1], body, len, "\"m\"");
    answer_ok(&an[2], body, len + 10, "\"m\"");
    an[2].body_len = len; /* says 1010, sends 1000, closes */
    an[2].close_after = true;
    struct srv s;
    struct xport *x = srv_open(&s, an, 3);
    struct got g;
    get_one(x, "log/long", &g);
    check_ok(&g, body, len);
    got_free(x, &g);
    get_one(x, "log/next", &g);
    check_ok(&g, body, len);
    got_free(x, &g);
    get_one(x, "log/short", &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT(strstr(g.error, "GET log/short: "));
    ASSERT(strstr(g.error, "at body offset 1000 of 1010"));
    srv_close(&s, x);
    ASSERT_EQ(s.accepts, 2); /* "long", then a fresh one for "next" and "short" */
    free(body);
}

/* A body that stops coming: under s3.low_speed_limit_bytes (1024/s) for
 * s3.low_speed_time_ms (1 s) ends the GET as a retryable timeout, naming the offset, well
 * before the request timeout (10 s). */
static void low_speed_limit(void)
{
    size_t len = 100000;
    unsigned char *body = test_body(len, 9);
    struct answer an[1];
    answer_ok(&an[0], body, len, "\"s\"");
    an[0].splits[0] = strlen(an[0].head) + 5000;
    an[0].stall_ms = 3000;
    struct srv s = {.low_speed_ms = 1000};
    struct xport *x = srv_open(&s, an, 1);
    struct got g;
    uint64_t t0 = test_now_ms_();
    get_one(x, "log/stall", &g);
    uint64_t took = test_now_ms_() - t0;
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.fail, XPORT_FAIL_TIMEOUT);
    ASSERT(strstr(g.error, "GET log/stall: "));
    ASSERT(strstr(g.error, "s3.low_speed_limit_bytes"));
    ASSERT(strstr(g.error, "5000 body bytes received"));
    ASSERT_GE(took, 1000);
    ASSERT_LT(took, 2900);
    srv_close(&s, x);
    free(body);
}

/* A 2xx without Content-Length (chunked) is read through the parser, fed as it lands. */
static void chunked_ok(void)
{
    size_t len = 20000;
    unsigned char *body = test_body(len, 7);
    size_t cap = len + 256, n = 0;
    char *framed = malloc(cap);
    size_t sizes[] = {1, 4096, 15903};
    size_t at = 0;
    for (size_t i = 0; i < 3; i++) {
        n += (size_t)snprintf(framed + n, cap - n, "%zx\r\n", sizes[i]);
        memcpy(framed + n, body + at, sizes[i]);
        n += sizes[i];
        at += sizes[i];
        memcpy(framed + n, "\r\n", 2);
        n += 2;
    }
    n += (size_t)snprintf(framed + n, cap - n, "0\r\n\r\n");
    struct answer an[1];
    memset(&an[0], 0, sizeof(an[0]));
    snprintf(an[0].head, sizeof(an[0].head),
             "HTTP/1.1 200 OK\r\nETag: \"c\"\r\nTransfer-Encoding: chunked\r\n\r\n");
    an[0].body = framed;
    an[0].body_len = n;
    an[0].splits[0] = strlen(an[0].head) + 2;
    an[0].splits[1] = strlen(an[0].head) + 3000;
    struct srv s;
    struct xport *x = srv_open(&s, an, 1);
    struct got g;
    get_one(x, "log/chunked", &g);
    check_ok(&g, body, len);
    ASSERT_STR_EQ(g.etag, "\"c\"");
    got_free(x, &g);
    srv_close(&s, x);
    free(framed);
    free(body);
}

/* Against the mock verifying SigV4: what xport_put stored comes back whole (a 1 MiB body,
 * an empty one), a missing key is NOT_FOUND, a wrong secret is refused with the hint. */
static void mock_signed(void)
{
    const char *args[] = {
        "--bucket",           "commits", "--access-key", "AKIDDIRECTMOCK000001", "--secret-key",
        "direct-mock-secret", NULL};
    struct mockproc m;
    ASSERT_EQ(test_mock_start(&m, args), 0);
    struct s3c_config c;
    char err[256];
    cfg_defaults(&c);
    snprintf(c.s3.endpoint, sizeof(c.s3.endpoint), "%s", m.endpoint);
    snprintf(c.s3.bucket, sizeof(c.s3.bucket), "commits");
    snprintf(c.s3.access_key_id, sizeof(c.s3.access_key_id), "AKIDDIRECTMOCK000001");
    snprintf(c.s3.secret_access_key, sizeof(c.s3.secret_access_key), "direct-mock-secret");
    c.persistence.target_pool_size = 2;
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    size_t len = 1 << 20;
    unsigned char *body = test_body(len, 8);
    struct iovec iov = {body, len};
    struct xport_put put = {.key = "log/one", .iov = &iov, .iovcnt = 1};
    struct got g;
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_put(x, &put, got_done, &g), 0);
    ASSERT_EQ(xport_drain(x, 15000), 0);
    ASSERT_EQ(g.cls, XPORT_OK);
    struct xport_put empty = {.key = "log/empty", .iov = &iov, .iovcnt = 0};
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_put(x, &empty, got_done, &g), 0);
    ASSERT_EQ(xport_drain(x, 15000), 0);
    ASSERT_EQ(g.cls, XPORT_OK);
    for (int i = 0; i < 3; i++) {
        get_one(x, "log/one", &g);
        check_ok(&g, body, len);
        got_free(x, &g);
    }
    /* A Range: the 206's part only (the reader's header reads), signed with the header. */
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_get_direct_range(x, "log/one", 100, 4195, NULL, NULL, got_done, &g), 0);
    ASSERT_EQ(xport_drain(x, 15000), 0);
    ASSERT_EQ(g.calls, 1);
    ASSERT_EQ(g.cls, XPORT_OK);
    ASSERT_EQ(g.status, 206);
    ASSERT_UEQ(g.len, 4096);
    ASSERT_MEM_EQ(g.body, body + 100, 4096);
    got_free(x, &g);
    get_one(x, "log/empty", &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    ASSERT_UEQ(g.len, 0);
    got_free(x, &g);
    get_one(x, "log/missing", &g);
    ASSERT_EQ(g.cls, XPORT_NOT_FOUND);
    test_xport_free(x);

    snprintf(c.s3.secret_access_key, sizeof(c.s3.secret_access_key), "not-the-secret");
    x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    get_one(x, "log/one", &g);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_STR_EQ(g.s3_code, "SignatureDoesNotMatch");
    ASSERT(strstr(g.error, "GET log/one: HTTP 403 SignatureDoesNotMatch"));
    ASSERT(strstr(g.error, "check s3.secret_access_key"));
    ASSERT(strstr(g.error, "not-the-secret") == NULL);
    test_xport_free(x);
    test_mock_stop(&m);
    free(body);
}

/* An answer to a ranged GET: its head is `status` with `crange` as its Content-Range
 * (NULL: none) and `len` bytes of `body` from `off`. */
static void answer_part(struct answer *a, int status, const char *crange, const void *body,
                        size_t off, size_t len)
{
    memset(a, 0, sizeof(*a));
    char cr[160] = "";
    if (crange)
        snprintf(cr, sizeof(cr), "Content-Range: %s\r\n", crange);
    snprintf(a->head, sizeof(a->head),
             "HTTP/1.1 %d %s\r\nx-amz-request-id: REQ0000000000002\r\nETag: \"r\"\r\n%s"
             "Content-Length: %zu\r\n\r\n",
             status, status == 206 ? "Partial Content" : "OK", cr, len);
    a->body = (const unsigned char *)body + off;
    a->body_len = len;
}

/* A ranged GET gets the bytes it asked for or an error, never other bytes as if they were
 * those: a 200 that ignored the Range is cut down to them; a 206 naming other bytes, holding
 * another count, or naming none is retryable with an error line that says what came. The
 * same answers over a direct connection and over libcurl's. */
static void ranged_answers(void)
{
    size_t olen = 1000;
    unsigned char *body = test_body(olen, 11);
    struct answer an[11];
    answer_part(&an[0], 206, "bytes 0-99/1000", body, 0, 100);
    answer_part(&an[1], 200, NULL, body, 0, olen);                  /* Range ignored */
    answer_part(&an[2], 200, NULL, body, 0, olen);                  /* ... past the end */
    answer_part(&an[3], 206, "bytes 100-199/1000", body, 100, 100); /* other bytes */
    answer_part(&an[4], 206, NULL, body, 0, 100);                   /* no Content-Range */
    answer_part(&an[5], 206, "bytes 0-99/1000", body, 0, 60);       /* fewer than it says */
    answer_part(&an[6], 206, "bytes 0-99/50", body, 0, 100);        /* not a range of its total */
    answer_part(&an[7], 206, "bytes 900-999/1000", body, 900, 100); /* cut by the end */
    answer_part(&an[8], 206, "bytes 0-99/*", body, 0, 100);         /* the size unknown */
    answer_part(&an[9], 200, NULL, body, 0, 0);         /* an empty object, Range ignored */
    answer_part(&an[10], 416, "bytes */0", body, 0, 0); /* S3's answer for one */
    uint64_t ask[11][2] = {{0, 99}, {900, 1099}, {1000, 1099}, {0, 99}, {0, 99}, {0, 99},
                           {0, 99}, {900, 1099}, {0, 99},      {0, 99}, {0, 99}};
    for (int path = 0; path < 2; path++) {
        struct srv s;
        struct xport *x = srv_open(&s, an, 11);
        struct got g[11];
        for (int i = 0; i < 11; i++) {
            memset(&g[i], 0, sizeof(g[i]));
            int rc = path == 0 ? xport_get_direct_range(x, "log/r", ask[i][0], ask[i][1], NULL,
                                                        NULL, got_done, &g[i])
                               : xport_get(x, "log/r", ask[i][0], ask[i][1], got_done, &g[i]);
            ASSERT_EQ(rc, 0);
            ASSERT_EQ(xport_drain(x, 15000), 0);
            ASSERT_EQ(g[i].calls, 1);
            char want[64];
            snprintf(want, sizeof(want), "Range: bytes=%llu-%llu\r\n",
                     (unsigned long long)ask[i][0], (unsigned long long)ask[i][1]);
            ASSERT(strcasestr(s.get_req, want) != NULL);
        }
        ASSERT_EQ(g[0].cls, XPORT_OK); /* the honest 206 */
        ASSERT_UEQ(g[0].len, 100);
        ASSERT_MEM_EQ(g[0].body, body, 100);
        ASSERT_UEQ(g[0].object_size, olen);
        ASSERT_EQ(g[1].cls, XPORT_OK); /* a 200: bytes 900..999 of it */
        ASSERT_EQ(g[1].status, 200);
        ASSERT_UEQ(g[1].len, 100);
        ASSERT_MEM_EQ(g[1].body, body + 900, 100);
        ASSERT_UEQ(g[1].object_size, olen);
        ASSERT_EQ(g[2].cls, XPORT_FATAL); /* as S3's 416: a retry changes nothing */
        ASSERT(strstr(g[2].error, "GET log/r: HTTP 200"));
        ASSERT(strstr(g[2].error, "asked for bytes 1000-1099, the answer is the whole object "
                                  "(200) of 1000 bytes"));
        ASSERT_EQ(g[3].cls, XPORT_RETRYABLE);
        ASSERT(strstr(g[3].error, "asked for bytes 0-99, the 206 answer says bytes 100-199 and "
                                  "holds 100"));
        ASSERT_EQ(g[4].cls, XPORT_RETRYABLE);
        ASSERT(strstr(g[4].error, "the 206 answer has no usable Content-Range"));
        ASSERT_EQ(g[5].cls, XPORT_RETRYABLE);
        ASSERT(strstr(g[5].error, "says bytes 0-99 and holds 60"));
        ASSERT_EQ(g[6].cls, XPORT_RETRYABLE);
        ASSERT(strstr(g[6].error, "no usable Content-Range"));
        ASSERT_EQ(g[7].cls, XPORT_OK);
        ASSERT_UEQ(g[7].len, 100);
        ASSERT_MEM_EQ(g[7].body, body + 900, 100);
        ASSERT_EQ(g[8].cls, XPORT_RETRYABLE);
        ASSERT(strstr(g[8].error, "no usable Content-Range"));
        /* Nothing at the first byte asked for: the store's 416, or the transport's for a
         * 200 that ends before it (an empty object from a store that ignored the Range):
         * the writer takes such an object for damage, not for a failed read. */
        ASSERT_EQ(g[9].cls, XPORT_FATAL);
        ASSERT_EQ(g[10].cls, XPORT_FATAL);
        for (int i = 0; i < 11; i++)
            ASSERT_EQ(g[i].range_unsatisfiable, i == 2 || i == 9 || i == 10);
        for (int i = 0; i < 11; i++)
            got_free(x, &g[i]);
        srv_close(&s, x);
    }
    free(body);
}

int main(void)
{
    RUN(head_split_across_reads);
    RUN(body_split_every_offset_class);
    RUN(errors_with_xml);
    RUN(close_mid_body);
    RUN(keep_alive_and_stale);
    RUN(content_length_mismatch);
    RUN(chunked_ok);
    RUN(low_speed_limit);
    RUN(ranged_answers);
    RUN(mock_signed);
    return 0;
}
