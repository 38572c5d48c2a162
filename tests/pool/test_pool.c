/* The pool: its policy as pure bookkeeping (refill counts, backoff, heartbeat counts),
 * then through the transport against s3commit-mock: warm at start, never more than
 * target_pool_size connections under load (the mock counts them), a reset connection
 * replaced, heartbeats over idle connections and their failures counted (a failure
 * without an answer or with a 5xx replaces the connection; a 4xx refusal keeps it), a
 * connection that stops answering found by its heartbeat and replaced, a refused endpoint
 * backed off. Every case through the transport runs twice: with libcurl's connections
 * (s3.direct_put = false) and with direct.c's (s3.direct_put, the default for http://),
 * where the pool's warm-up, refills and heartbeats are direct connections. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config.h"
#include "pool/pool.h"
#include "support/mockstats.h"
#include "support/xport_loop.h"

#define MS 1000000ull

static void policy(void)
{
    struct pool_policy p;
    pool_policy_init(&p, 4, 1000);
    ASSERT_EQ(pool_refill_count(&p, 0), 4); /* warm-up: all of them */
    for (int i = 0; i < 4; i++)
        pool_refill_started(&p);
    ASSERT_EQ(pool_refill_count(&p, 0), 0); /* on their way: nothing more */
    for (int i = 0; i < 4; i++) {
        pool_on_start(&p);
        pool_on_open(&p);
        pool_refill_opened(&p);
    }
    ASSERT_EQ(pool_refill_count(&p, 0), 0);
    ASSERT_EQ(pool_heartbeat_count(&p), 0); /* all busy */
    for (int i = 0; i < 4; i++) {
        pool_on_done(&p, false);
        pool_refill_done(&p, true, true, 0);
    }
    ASSERT_EQ(p.open, 4);
    ASSERT_EQ(pool_heartbeat_count(&p), 4); /* all idle */
    pool_on_start(&p);
    ASSERT_EQ(pool_heartbeat_count(&p), 3);
    pool_on_done(&p, true);
    ASSERT_UEQ(p.reuses, 1);

    /* One dies (after 10 s): one refill. It fails to connect: back off, one probe at a
     * time. */
    pool_on_close(&p, 10000 * MS, 900 * MS);
    ASSERT_EQ(pool_refill_count(&p, 0), 1);
    pool_refill_started(&p);
    pool_on_start(&p);
    pool_on_done(&p, false);
    pool_refill_done(&p, false, false, 1000 * MS);
    ASSERT_EQ(pool_refill_count(&p, 1000 * MS), 0);
    ASSERT_UEQ(pool_refill_deadline(&p, 1000 * MS), 1100 * MS);
    ASSERT_EQ(pool_refill_count(&p, 1100 * MS), 1);
    pool_refill_started(&p);
    pool_refill_done(&p, false, false, 1100 * MS);
    ASSERT_UEQ(pool_refill_deadline(&p, 1100 * MS), 1300 * MS); /* doubled */
    /* Many failures: the delay is capped at the heartbeat interval. */
    for (int i = 0; i < 40; i++) {
        pool_refill_started(&p);
        pool_refill_done(&p, false, false, 5000 * MS);
    }
    ASSERT_UEQ(pool_refill_deadline(&p, 5000 * MS), 6000 * MS);
    /* Three die while backing off: still one probe at a time. */
    pool_on_close(&p, 9000 * MS, 6000 * MS);
    pool_on_close(&p, 9000 * MS, 6000 * MS);
    ASSERT_EQ(pool_refill_count(&p, 6000 * MS), 1);
    pool_refill_started(&p);
    ASSERT_EQ(pool_refill_count(&p, 6000 * MS), 0);
    pool_on_open(&p);
    pool_refill_opened(&p);
    pool_refill_done(&p, true, true, 6001 * MS); /* success ends the backoff */
    ASSERT_EQ(pool_refill_count(&p, 6001 * MS), 2);
    ASSERT_UEQ(pool_refill_deadline(&p, 6001 * MS), 0);

    pool_heartbeat_done(&p, true);
    pool_heartbeat_done(&p, false);
    ASSERT_UEQ(p.heartbeats, 2);
    ASSERT_UEQ(p.heartbeat_failures, 1);

    /* A server that closes each connection after one answer: every refill's HeadBucket is
     * answered (ok), and its connection dies young. The answer alone must not end the
     * backoff, or each replacement is replaced at once: 100 ms, doubling, one at a time. */
    struct pool_policy q;
    pool_policy_init(&q, 2, 1000);
    uint64_t t = 0;
    for (int i = 0; i < 2; i++) {
        pool_refill_started(&q);
        pool_on_open(&q);
        pool_refill_opened(&q);
        pool_refill_done(&q, true, true, t);
    }
    uint64_t want_delay = 100 * MS;
    for (int i = 0; i < 5; i++) {
        t += 1 * MS;
        pool_on_close(&q, 1 * MS, t); /* before or after the answer: both orders */
        ASSERT_EQ(pool_refill_count(&q, t), 0);
        ASSERT_UEQ(pool_refill_deadline(&q, t), t + want_delay);
        t += want_delay;
        ASSERT_EQ(pool_refill_count(&q, t), 1); /* one probe */
        pool_refill_started(&q);
        pool_on_open(&q);
        pool_refill_opened(&q);
        pool_refill_done(&q, true, true, t);         /* answered ... */
        ASSERT_EQ(pool_refill_count(&q, t), 0);      /* ... and not a reason to hurry */
        want_delay = want_delay * 2 > 1000 * MS ? 1000 * MS : want_delay * 2;
    }
    /* A connection that lives ends it. */
    pool_on_close(&q, 5000 * MS, t + 5000 * MS);
    ASSERT_EQ(q.churn, 0);
    ASSERT_EQ(pool_refill_count(&q, t + 5000 * MS), 1);
    /* So does a heartbeat answered. */
    pool_on_close(&q, 1 * MS, t + 5001 * MS);
    ASSERT_EQ(q.churn, 1);
    pool_heartbeat_done(&q, true);
    ASSERT_EQ(q.churn, 0);
    /* After failed connects, the first answer ends the backoff, young closes included
     * (libcurl closes the socket of a failed connect young). */
    pool_on_close(&q, 1 * MS, t + 6000 * MS);
    pool_refill_started(&q);
    pool_refill_done(&q, false, false, t + 6000 * MS);
    pool_refill_started(&q);
    pool_on_open(&q);
    pool_refill_opened(&q);
    pool_refill_done(&q, true, true, t + 6200 * MS);
    ASSERT_EQ(q.churn, 0);
    ASSERT_UEQ(pool_refill_deadline(&q, t + 6200 * MS), 0);
}

static bool direct_put; /* the round: libcurl's connections, then direct.c's */

static struct s3c_config mkcfg_at(const char *endpoint, int pool, int hb_ms)
{
    struct s3c_config c;
    cfg_defaults(&c);
    c.s3.direct_put = direct_put;
    snprintf(c.s3.endpoint, sizeof(c.s3.endpoint), "%s", endpoint);
    snprintf(c.s3.bucket, sizeof(c.s3.bucket), "commits");
    c.persistence.max_in_flight_requests = pool;
    c.persistence.target_pool_size = pool;
    c.persistence.heartbeat_interval_ms = hb_ms;
    c.s3.request_timeout_ms = 5000;
    return c;
}

static struct s3c_config mkcfg(const struct mockproc *m, int pool, int hb_ms)
{
    return mkcfg_at(m->endpoint, pool, hb_ms);
}

static int target_open;
static bool pool_full(struct xport *x)
{
    struct xport_stats st;
    xport_stats_get(x, &st);
    return st.open_connections == target_open && st.busy == 0;
}

/* At least want_heartbeats heartbeats (want_hb_failures failed ones) have completed. */
static uint64_t want_heartbeats, want_hb_failures;
static bool heartbeats_done(struct xport *x)
{
    struct xport_stats st;
    xport_stats_get(x, &st);
    return st.heartbeats >= want_heartbeats && st.heartbeat_failures >= want_hb_failures;
}

/* The pool is full again after at least want_closes connections were closed. */
static uint64_t want_closes;
static bool replaced_full(struct xport *x)
{
    struct xport_stats st;
    xport_stats_get(x, &st);
    return st.closes >= want_closes && pool_full(x);
}

static int done_ok, done_other;
static void count_done(void *ctx, const struct xport_result *r)
{
    (void)ctx;
    if (r->cls == XPORT_OK)
        done_ok++;
    else
        done_other++;
}

/* Warm at start; 64 PUTs at once over 4 connections; the mock sees at most 4. */
static void never_more_than_target(void)
{
    struct mockproc m;
    ASSERT_EQ(test_mock_start(&m, NULL), 0);
    struct s3c_config c = mkcfg(&m, 4, 60000);
    char err[256];
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    target_open = 4;
    ASSERT(poll_until(x, 3000, pool_full)); /* warm without any request of ours */
    struct mock_counts mc = mock_conns(&m);
    ASSERT_EQ(mc.open, 4 + 1); /* + this control connection */
    ASSERT_EQ(mc.total, 4 + 1);
    struct xport_stats st;
    xport_stats_get(x, &st);
    ASSERT_UEQ(st.opens, 4); /* before the first PUT: the PUTs' own connections */
    ASSERT_UEQ(st.refills, 4);

    static unsigned char body[64][16384];
    struct iovec iov[64];
    char keys[64][32];
    done_ok = done_other = 0;
    for (int i = 0; i < 64; i++) {
        memset(body[i], i, sizeof(body[i]));
        iov[i] = (struct iovec){body[i], sizeof(body[i])};
        snprintf(keys[i], sizeof(keys[i]), "load/%02d", i);
        struct xport_put p = {.key = keys[i], .iov = &iov[i], .iovcnt = 1};
        ASSERT_EQ(xport_put(x, &p, count_done, NULL), 0);
    }
    ASSERT_EQ(xport_in_flight(x), 64);
    ASSERT_EQ(xport_drain(x, 20000), 0);
    ASSERT_EQ(done_ok, 64);
    ASSERT_EQ(done_other, 0);

    xport_stats_get(x, &st);
    ASSERT_UEQ(st.opens, 4);
    ASSERT_UEQ(st.closes, 0);
    ASSERT_EQ(st.open_connections, 4);
    ASSERT(st.reuses >= 64); /* every PUT went over a warm connection */
    if (direct_put)          /* direct.c counts the request heads too */
        ASSERT(st.bytes_sent > 64 * 16384 && st.bytes_sent < 64 * 17408);
    else
        ASSERT_UEQ(st.bytes_sent, 64 * 16384);
    mc = mock_conns(&m);
    ASSERT_EQ(mc.open, 4 + 1);
    ASSERT_EQ(mc.total, 4 + 2); /* ours + the two control connections */
    ASSERT(mc.peak <= 4 + 1);   /* never more than the pool (+ one control) */
    ASSERT_EQ(mock_op_count(&m, "HeadBucket", 200), 4); /* the warm-up's, on the pool's */
    ASSERT_EQ(mock_op_count(&m, "PutObject", 200), 64);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* A mock, and a transport on it whose pool of `pool` is warm (all open, idle). */
static struct xport *warm_pool(struct mockproc *m, int pool, int hb_ms)
{
    ASSERT_EQ(test_mock_start(m, NULL), 0);
    struct s3c_config c = mkcfg(m, pool, hb_ms);
    char err[256];
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    target_open = pool;
    ASSERT(poll_until(x, 3000, pool_full));
    return x;
}

/* A connection reset by the server is closed and replaced, back to exactly target. */
static void reset_connection_replaced(void)
{
    struct mockproc m;
    struct xport *x = warm_pool(&m, 4, 60000);

    mock_faults(&m, "{\"reset_rate\":1}");
    struct iovec v = {"reset me", 8};
    struct xport_put p = {.key = "r", .iov = &v, .iovcnt = 1};
    done_ok = done_other = 0;
    ASSERT_EQ(xport_put(x, &p, count_done, NULL), 0);
    ASSERT_EQ(xport_drain(x, 5000), 0);
    ASSERT_EQ(done_other, 1);
    mock_faults(&m, "{\"reset_rate\":0}");

    struct xport_stats st;
    xport_stats_get(x, &st);
    ASSERT(st.closes >= 1);
    ASSERT(poll_until(x, 3000, pool_full)); /* replaced */
    xport_stats_get(x, &st);
    ASSERT_EQ(st.open_connections, 4);
    ASSERT_UEQ(st.opens, 4 + st.closes);
    ASSERT(st.refills >= 5);
    struct mock_counts mc = mock_conns(&m);
    ASSERT_EQ(mc.open, 4 + 1);

    /* And the replaced pool works. */
    ASSERT_EQ(xport_put(x, &p, count_done, NULL), 0);
    ASSERT_EQ(xport_drain(x, 5000), 0);
    ASSERT_EQ(done_ok, 1);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* Waits (polling the transport) until both sides agree: the pool is full and idle after
 * at least want_closes closes, and the mock has exactly `pool` connections open plus the
 * control connection that asks. Fails with both sides' view if that takes over 5 s. */
static void settled(struct xport *x, const struct mockproc *m, int pool)
{
    struct mock_counts mc = {0};
    for (int i = 0; i < 100; i++) {
        if (replaced_full(x) && (mc = mock_conns(m)).open == pool + 1)
            return;
        poll_for(x, 50);
    }
    struct xport_stats st;
    xport_stats_get(x, &st);
    mc = mock_conns(m);
    TEST_FAIL_("pool not settled: transport open=%d busy=%d closes=%llu (want >= %llu); mock "
               "open=%d (want %d)",
               st.open_connections, st.busy, (unsigned long long)st.closes,
               (unsigned long long)want_closes, mc.open, pool + 1);
}

/* Heartbeats go over idle connections every interval; failing ones are counted and the
 * pool stays at target. */
static void heartbeats(void)
{
    struct mockproc m;
    ASSERT_EQ(test_mock_start(&m, NULL), 0);
    struct s3c_config c = mkcfg(&m, 3, 200);
    char err[256];
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    target_open = 3;
    ASSERT(poll_until(x, 3000, pool_full));
    int heads0 = mock_op_count(&m, "HeadBucket", 200);
    ASSERT_EQ(heads0, 3); /* the warm-up */
    uint64_t t0 = s3c__now_ms();
    want_heartbeats = 3 * 4, want_hb_failures = 0;
    ASSERT(poll_until(x, 5000, heartbeats_done)); /* four rounds, 200 ms apart: ... */
    ASSERT_GE(s3c__now_ms() - t0, 2 * 200);       /* ... (the first may have begun before t0) */
    struct xport_stats st;
    xport_stats_get(x, &st);
    ASSERT(st.heartbeats <= 3 * 5); /* a round at most in flight past the fourth */
    ASSERT_UEQ(st.heartbeat_failures, 0);
    ASSERT_UEQ(st.opens, 3); /* heartbeats reuse the idle connections */
    ASSERT_EQ(mock_op_count(&m, "HeadBucket", 200), heads0 + (int)st.heartbeats);

    /* The server starts failing: heartbeats fail and are counted, the connections that
     * failed are closed and replaced, and the pool stays at target. */
    mock_faults(&m, "{\"error_rate\":1,\"error_status\":503}");
    want_hb_failures = 3;
    ASSERT(poll_until(x, 5000, heartbeats_done)); /* one round */
    mock_faults(&m, "{\"error_rate\":0}");
    xport_stats_get(x, &st);
    ASSERT(st.heartbeat_failures >= 3);
    /* The next rounds find them ended (lazily: when libcurl next looks at them). */
    want_closes = 3;
    settled(x, &m, 3);
    xport_stats_get(x, &st);
    ASSERT(st.closes >= 3);
    ASSERT_UEQ(st.opens, 3 + st.closes);

    /* The server resets every connection: the heartbeats find them dead, they are
     * closed and replaced. */
    uint64_t closes0 = st.closes;
    mock_faults(&m, "{\"reset_rate\":1}");
    poll_until_mock(x, &m, 5000, "faults.reset", 1); /* a heartbeat was reset */
    mock_faults(&m, "{\"reset_rate\":0}");
    want_closes = closes0 + 1;
    settled(x, &m, 3);
    xport_stats_get(x, &st);
    ASSERT(st.closes > closes0);
    ASSERT_EQ(st.open_connections, 3);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* A server that closes connections idle for 600 ms (as S3 closes idle ones) and
 * heartbeats every 100 ms: every round checks every idle connection, not the same one
 * n times, so none is ever idle long enough to be closed (a connection skipped for five
 * rounds in a row would be). */
static void heartbeats_cover_every_connection(void)
{
    const char *args[] = {"--idle-timeout-ms", "600", NULL};
    struct mockproc m;
    ASSERT_EQ(test_mock_start(&m, args), 0);
    struct s3c_config c = mkcfg(&m, 3, 100);
    char err[256];
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    target_open = 3;
    ASSERT(poll_until(x, 3000, pool_full));
    poll_for(x, 2000); /* 4 idle timeouts */
    struct xport_stats st;
    xport_stats_get(x, &st);
    ASSERT(st.heartbeats >= 3 * 8); /* ~20 rounds when not starved */
    ASSERT_UEQ(st.heartbeat_failures, 0);
    ASSERT_UEQ(st.closes, 0);
    ASSERT_UEQ(st.opens, 3);
    struct mock_counts mc = mock_conns(&m);
    ASSERT_EQ(mc.open, 3 + 1);
    test_xport_free(x);
    test_mock_stop(&m);
}

static char logbuf[16384];
static void sink(void *ctx, enum s3c_log_level level, const char *msg)
{
    (void)ctx;
    (void)level;
    size_t l = strlen(logbuf);
    snprintf(logbuf + l, sizeof(logbuf) - l, "%s\n", msg);
}

static int count_in(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* Heartbeats refused with a 4xx (here a wrong secret; in life often credentials without
 * s3:ListBucket) came over working connections: the failures are counted, the
 * connections kept (no churn), and the refusal is logged once, with the fix, not per
 * heartbeat. */
static void heartbeat_refused(void)
{
    const char *args[] = {"--access-key", "AKIDPOOL", "--secret-key", "poolSECRETpoolSECRET", NULL};
    struct mockproc m;
    ASSERT_EQ(test_mock_start(&m, args), 0);
    struct s3c_config c = mkcfg(&m, 2, 150);
    snprintf(c.s3.access_key_id, sizeof(c.s3.access_key_id), "AKIDPOOL");
    snprintf(c.s3.secret_access_key, sizeof(c.s3.secret_access_key), "WRONGpoolWRONGpool");
    logbuf[0] = '\0';
    s3c_set_log(sink, NULL, S3C_LOG_WARN);
    char err[256];
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    target_open = 2;
    ASSERT(poll_until(x, 3000, pool_full));
    want_heartbeats = 2 * 2, want_hb_failures = 0;
    ASSERT(poll_until(x, 5000, heartbeats_done)); /* two rounds */
    struct xport_stats st;
    for (int i = 0; i < 100; i++) { /* let the round in flight finish, so counts agree */
        xport_stats_get(x, &st);
        if (st.busy == 0)
            break;
        test_xport_poll(x, 10);
    }
    s3c_set_log(NULL, NULL, S3C_LOG_ERROR);
    ASSERT_EQ(st.busy, 0);
    ASSERT(st.heartbeats >= 2 * 2);
    ASSERT_UEQ(st.heartbeat_failures, st.heartbeats);
    ASSERT_UEQ(st.opens, 2);
    ASSERT_UEQ(st.closes, 0);
    ASSERT_EQ(mock_conns(&m).open, 2 + 1);
    ASSERT_EQ(mock_op_count(&m, "HeadBucket", 403), 2 + (int)st.heartbeats);
    ASSERT_EQ(count_in(logbuf, "event=pool_heartbeat_refused"), 1);
    ASSERT(strstr(logbuf, "s3:ListBucket") != NULL);
    ASSERT(strstr(logbuf, "WRONGpool") == NULL);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* The server dies (every connection with it) and comes back on the same port: the dead
 * connections are found (by the next request or heartbeat), closed and replaced, and a PUT
 * started after the restart succeeds. */
static void server_restart(void)
{
    struct mockproc m;
    ASSERT_EQ(test_mock_start(&m, NULL), 0);
    int port = m.port;
    struct s3c_config c = mkcfg(&m, 4, 300);
    char err[256];
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    target_open = 4;
    ASSERT(poll_until(x, 3000, pool_full));

    test_mock_stop(&m);
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    const char *args[] = {"--listen", listen, NULL};
    ASSERT_EQ(test_mock_start(&m, args), 0);
    ASSERT_EQ(m.port, port);

    struct iovec v = {"after restart", 13};
    struct xport_put p = {.key = "restart", .iov = &v, .iovcnt = 1};
    done_ok = done_other = 0;
    ASSERT_EQ(xport_put(x, &p, count_done, NULL), 0);
    ASSERT_EQ(xport_drain(x, 5000), 0);
    ASSERT_EQ(done_ok, 1); /* libcurl found its connection dead and used a new one */
    /* The body went out whole from byte 0 (the mock also checked its CRC-32C). */
    char resp[4096];
    ASSERT_EQ(mockproc_http(&m, "GET", "/commits/restart", NULL, resp, sizeof(resp)), 200);
    const char *b = strstr(resp, "\r\n\r\n");
    ASSERT(b != NULL);
    ASSERT_STR_EQ(b + 4, "after restart");

    want_closes = 4; /* the heartbeats find the other dead ones: all four replaced */
    ASSERT(poll_until(x, 5000, replaced_full));
    struct xport_stats st;
    xport_stats_get(x, &st);
    ASSERT(st.closes >= 4);
    ASSERT_UEQ(st.opens, 4 + st.closes);
    /* Every pool connection is to the new server (+ the stats request itself). The mock
     * may not have seen the last close yet (one more open, once, in a loaded CI run): look
     * again until it has. */
    struct mock_counts mc;
    int looks = 0;
    uint64_t until = test_now_ms_() + 3000;
    do {
        if (looks)
            usleep(10000);
        mc = mock_conns(&m);
        looks++;
    } while (mc.open != 4 + 1 && test_now_ms_() < until);
    ASSERT_EQ(mc.open, 4 + 1);
    /* ... and the new server saw exactly the connections the pool opened to it (one per
     * dead one closed), the GET above and the stats requests: none unaccounted for. */
    ASSERT_EQ((uint64_t)mc.total, st.closes + 1 + (uint64_t)looks);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* The server stops answering (the connections stay open, requests are read and never
 * answered, as behind a dead middlebox): each heartbeat runs into its time limit (the
 * interval, at least 1 s), is counted failed and logged, and its connection is closed and
 * replaced; once the server answers again the pool is full of working connections. */
static void heartbeat_finds_stalled(void)
{
    struct mockproc m;
    ASSERT_EQ(test_mock_start(&m, NULL), 0);
    struct s3c_config c = mkcfg(&m, 3, 200);
    c.s3.request_timeout_ms = 1500; /* the refills' HeadBuckets while it stalls */
    logbuf[0] = '\0';
    s3c_set_log(sink, NULL, S3C_LOG_WARN);
    char err[256];
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    target_open = 3;
    ASSERT(poll_until(x, 3000, pool_full));
    mock_faults(&m, "{\"stall_rate\":1}");
    want_heartbeats = 3, want_hb_failures = 3;
    ASSERT(poll_until(x, 5000, heartbeats_done));
    mock_faults(&m, "{\"stall_rate\":0}");
    struct xport_stats st;
    xport_stats_get(x, &st);
    ASSERT(st.closes >= 3);
    want_closes = 3;
    settled(x, &m, 3);
    s3c_set_log(NULL, NULL, S3C_LOG_ERROR);
    xport_stats_get(x, &st);
    ASSERT_UEQ(st.opens, 3 + st.closes);
    ASSERT(count_in(logbuf, "event=pool_heartbeat_failed") >= 3);
    ASSERT(strstr(logbuf, "Timeout") != NULL || strstr(logbuf, "time limit") != NULL);
    /* and the replaced connections work */
    struct iovec v = {"after the stall", 15};
    struct xport_put p = {.key = "stall", .iov = &v, .iovcnt = 1};
    done_ok = done_other = 0;
    ASSERT_EQ(xport_put(x, &p, count_done, NULL), 0);
    ASSERT_EQ(xport_drain(x, 5000), 0);
    ASSERT_EQ(done_ok, 1);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* Nothing listens at the endpoint: the warm-up's connects fail, and the refills back off
 * (100 ms doubling per failure, one probe at a time) instead of hammering it: in 1.5 s, the
 * warm-up's 4 and one or two probes. Each failure is logged. */
static void refused_backs_off(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    ASSERT(s >= 0);
    ASSERT_EQ(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    ASSERT_EQ(getsockname(s, (struct sockaddr *)&a, &al), 0);
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", ntohs(a.sin_port));
    struct s3c_config c = mkcfg_at(endpoint, 4, 60000); /* bound, never listening: refused */
    logbuf[0] = '\0';
    s3c_set_log(sink, NULL, S3C_LOG_WARN);
    char err[256];
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    poll_for(x, 1500);
    s3c_set_log(NULL, NULL, S3C_LOG_ERROR);
    struct xport_stats st;
    xport_stats_get(x, &st);
    ASSERT(st.refills >= 5); /* it keeps probing ... */
    ASSERT(st.refills <= 7); /* ... but backs off */
    /* libcurl counts the sockets it made for the failed connects, direct.c connections */
    ASSERT_UEQ(st.opens, direct_put ? 0 : st.refills - (uint64_t)st.busy);
    ASSERT_UEQ(st.closes, st.opens);
    ASSERT_EQ(st.open_connections, 0);
    ASSERT_EQ(count_in(logbuf, "event=pool_connect_failed"), (int)st.refills - st.busy);
    test_xport_free(x);
    close(s);
}

/* A server that closes every connection after answering (Connection: close: a proxy with
 * keep-alive off, an overloaded endpoint): each refill's HeadBucket is answered and its
 * connection dies at once. The refills back off (100 ms doubling, one at a time) instead of
 * replacing each at once: before, ~7,600 connects a second on both paths. */
static void closing_server_backs_off(void)
{
    struct mockproc m;
    struct xport *x = warm_pool(&m, 4, 60000);
    struct xport_stats st0, st;
    mock_faults(&m, "{\"slow_close\":1,\"slow_close_ms\":0}");
    /* A PUT over a warm connection: it is closed after the answer, so churn starts. */
    struct iovec v = {"close after", 11};
    struct xport_put p = {.key = "cl", .iov = &v, .iovcnt = 1};
    done_ok = done_other = 0;
    ASSERT_EQ(xport_put(x, &p, count_done, NULL), 0);
    ASSERT_EQ(xport_drain(x, 5000), 0);
    ASSERT_EQ(done_ok, 1);
    xport_stats_get(x, &st0);
    poll_for(x, 1500);
    xport_stats_get(x, &st);
    mock_faults(&m, "{\"slow_close\":0}");
    uint64_t refills = st.refills - st0.refills;
    fprintf(stderr, "   %llu refills in 1.5 s against a server closing after each answer\n",
            (unsigned long long)refills);
    ASSERT(refills >= 2);  /* it keeps trying ... */
    ASSERT(refills <= 12); /* ... but backs off */
    /* And once the server keeps connections again, the pool fills. */
    ASSERT(poll_until(x, 5000, pool_full));
    done_ok = 0;
    ASSERT_EQ(xport_put(x, &p, count_done, NULL), 0);
    ASSERT_EQ(xport_drain(x, 5000), 0);
    ASSERT_EQ(done_ok, 1);
    test_xport_free(x);
    test_mock_stop(&m);
}

int main(void)
{
    RUN(policy);
    for (int round = 0; round < 2; round++) {
        direct_put = round == 1;
        fprintf(stderr, "== s3.direct_put = %s\n", direct_put ? "true" : "false");
        RUN(never_more_than_target);
        RUN(reset_connection_replaced);
        RUN(heartbeats);
        RUN(heartbeat_refused);
        RUN(heartbeats_cover_every_connection);
        RUN(heartbeat_finds_stalled);
        RUN(refused_backs_off);
        RUN(closing_server_backs_off);
        RUN(server_restart);
    }
    return 0;
}
