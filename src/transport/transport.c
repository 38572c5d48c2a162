/* The transport's face and lifecycle: xport_new/xport_free, the operations (PUT, GET,
 * HEAD, LIST), stats, and the glue that puts libcurl's sockets and timer on the owner's
 * loop. It must never print, exit, copy a PUT body into a staging buffer, or let a secret
 * reach a string it produces. Requests and signing are in request.c, answers in answer.c,
 * URLs in url.c, the connection pool in src/pool. */
#include "transport/transport.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "s3commit.h"
#include "transport/xport_int.h"

static pthread_once_t xport_curl_once = PTHREAD_ONCE_INIT;
static CURLcode xport_curl_init_rc;

static void xport_curl_global_once(void)
{
    xport_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- libcurl's sockets and timer on the loop -------------------------------------- */

static void xport_on_sock_event(void *ctx, int fd, unsigned events);

static int xport_on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct xport *x = userp;
    struct sockwatch *w = socketp;
    (void)e;
    if (s == x->burst_fd) /* the socket a burst writes: go on only while libcurl would */
        x->burst_out = what == CURL_POLL_OUT || what == CURL_POLL_INOUT;
    if (what == CURL_POLL_REMOVE) {
        if (w) {
            loop_watch_del(x->loop, &w->w);
            curl_multi_assign(x->multi, s, NULL);
            w->next_free = x->free_socks;
            x->free_socks = w;
        }
        return 0;
    }
    if (!w) {
        if (x->free_socks) {
            w = x->free_socks;
            x->free_socks = w->next_free;
        } else {
            w = calloc(1, sizeof(*w));
            if (!w)
                return 0; /* see below */
            w->next_all = x->all_socks;
            x->all_socks = w;
        }
        memset(&w->w, 0, sizeof(w->w));
        w->w.fd = s;
        w->w.cb = xport_on_sock_event;
        w->w.ctx = x;
        curl_multi_assign(x->multi, s, w);
    }
    unsigned ev = (what & CURL_POLL_IN ? LOOP_READ : 0u) | (what & CURL_POLL_OUT ? LOOP_WRITE : 0u);
    /* Out of memory here leaves the socket unwatched: its transfer ends at its timeout and
     * is retried. Never -1: libcurl would then fail every transfer of the multi handle,
     * now and for good (and 7.88 can crash on the next call). */
    (void)loop_watch_set(x->loop, &w->w, ev);
    return 0;
}

static int xport_on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    struct xport *x = userp;
    (void)m;
    if (timeout_ms < 0)
        loop_timer_disarm(x->loop, &x->curl_timer);
    else
        loop_timer_arm(x->loop, &x->curl_timer, s3c__now_ns() + (uint64_t)timeout_ms * 1000000u);
    return 0;
}

/* An error (out of memory) ends libcurl's socket_action before it re-arms its timer, and
 * may leave a transfer's socket unwatched: with nothing to call libcurl again, that
 * transfer would hang past its own timeout. So call it again soon. */
static void xport_socket_action(struct xport *x, curl_socket_t s, int flags)
{
    int running = 0;
    if (curl_multi_socket_action(x->multi, s, flags, &running) != CURLM_OK) {
        uint64_t at = s3c__now_ns() + 10 * 1000000ull;
        if (!x->curl_timer.armed || x->curl_timer.deadline_ns > at)
            loop_timer_arm(x->loop, &x->curl_timer, at);
    }
}

/* Whether fd takes more bytes now (a poll with no wait). */
static bool xport_fd_writable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLOUT) && !(p.revents & (POLLERR | POLLHUP));
}

static void xport_on_sock_event(void *ctx, int fd, unsigned events)
{
    struct xport *x = ctx;
    int flags = (events & LOOP_READ ? CURL_CSELECT_IN : 0) |
                (events & LOOP_WRITE ? CURL_CSELECT_OUT : 0) |
                (events & LOOP_ERROR ? CURL_CSELECT_ERR : 0);
    x->burst_fd = fd;
    x->burst_out = (events & LOOP_WRITE) && !(events & LOOP_ERROR);
    xport_socket_action(x, fd, flags);
    /* libcurl 7.88 sends one upload buffer per call: a 1 MiB body took 8 turns of the
     * loop, each shared with every other ready socket, and ~2 ms to leave at 8 in flight.
     * While libcurl still wants to write and the socket takes more, go on (bounded, so
     * one body cannot hold the loop for long; docs/transport.md). */
    for (int i = 0; i < XPORT_SEND_BURST && x->burst_out && xport_fd_writable(fd); i++)
        xport_socket_action(x, fd, CURL_CSELECT_OUT);
    x->burst_fd = -1;
    xport__check_done(x);
    pool_after_io(&x->pool);
}

static void xport_on_curl_timeout(void *ctx)
{
    struct xport *x = ctx;
    xport_socket_action(x, CURL_SOCKET_TIMEOUT, 0);
    xport__check_done(x);
    pool_after_io(&x->pool);
}

/* ---- lifecycle and operations ------------------------------------------------------ */

struct xport *xport_new(const struct s3c_config *cfg, struct loop *loop, char *err, size_t errlen)
{
    static char dummy[1];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (!cfg || !loop) {
        snprintf(err, errlen, "transport: no config or no event loop");
        return NULL;
    }
    pthread_once(&xport_curl_once, xport_curl_global_once);
    if (xport_curl_init_rc != CURLE_OK) {
        snprintf(err, errlen, "transport: libcurl failed to initialise (%s)",
                 curl_easy_strerror(xport_curl_init_rc));
        return NULL;
    }
    const struct cfg_s3 *s3 = &cfg->s3;
    if (!s3->bucket[0]) {
        snprintf(err, errlen, "transport: s3.bucket is empty; set it to the bucket name");
        return NULL;
    }
    if (cfg->persistence.target_pool_size <= 0) {
        snprintf(err, errlen, "transport: persistence.target_pool_size must be > 0 (got %d)",
                 cfg->persistence.target_pool_size);
        return NULL;
    }
    if (cfg->persistence.heartbeat_interval_ms <= 0) {
        snprintf(err, errlen, "transport: persistence.heartbeat_interval_ms must be > 0 (got %d)",
                 cfg->persistence.heartbeat_interval_ms);
        return NULL;
    }
    if (s3->connect_timeout_ms <= 0 || s3->request_timeout_ms <= 0) {
        snprintf(err, errlen,
                 "transport: s3.connect_timeout_ms and s3.request_timeout_ms must be > 0 "
                 "(got %d and %d)",
                 s3->connect_timeout_ms, s3->request_timeout_ms);
        return NULL;
    }
    if (s3->access_key_id[0] && !s3->secret_access_key[0]) {
        snprintf(err, errlen,
                 "transport: s3.access_key_id is set but the secret access key is empty; "
                 "set s3.secret_access_key or AWS_SECRET_ACCESS_KEY");
        return NULL;
    }

    struct xport *x = calloc(1, sizeof(*x));
    if (!x) {
        snprintf(err, errlen, "transport: out of memory");
        return NULL;
    }
    x->cfg = *cfg;
    x->loop = loop;
    x->burst_fd = -1;
    x->spare_max = XPORT_SPARE_BODIES;
    x->curl_timer = (struct loop_timer){.cb = xport_on_curl_timeout, .ctx = x};
    if (xport__parse_endpoint(x, err, errlen) < 0)
        goto out_free_x;
    if (s3->access_key_id[0] && sigv4_init() < 0) { /* else open, but never able to sign */
        snprintf(err, errlen,
                 "transport: OpenSSL cannot provide SHA-256 and HMAC for signing "
                 "(out of memory?)");
        goto out_free_x;
    }
    long n = cfg->persistence.target_pool_size;
    x->md = EVP_MD_CTX_new();
    if (!x->md || pool_init(&x->pool, x, loop, (int)n, cfg->persistence.heartbeat_interval_ms)) {
        snprintf(err, errlen, "transport: out of memory");
        goto out_free_md; /* frees either; NULL is fine for both */
    }
    x->multi = curl_multi_init();
    if (!x->multi) {
        snprintf(err, errlen, "transport: curl_multi_init failed (out of memory)");
        goto out_free_md;
    }
    curl_multi_setopt(x->multi, CURLMOPT_SOCKETFUNCTION, xport_on_socket);
    curl_multi_setopt(x->multi, CURLMOPT_SOCKETDATA, x);
    curl_multi_setopt(x->multi, CURLMOPT_TIMERFUNCTION, xport_on_curl_timer);
    curl_multi_setopt(x->multi, CURLMOPT_TIMERDATA, x);
    curl_multi_setopt(x->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, n);
    curl_multi_setopt(x->multi, CURLMOPT_MAX_HOST_CONNECTIONS, n);
    curl_multi_setopt(x->multi, CURLMOPT_MAXCONNECTS, n);
    curl_multi_setopt(x->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);

    /* Request objects for a full pool plus a queue of the same size, made now so the
     * persistence thread's steady state allocates nothing of ours. */
    for (long i = 0; i < 2 * n + 4; i++) {
        struct xreq *r = xreq_alloc(x);
        if (!r) {
            snprintf(err, errlen, "transport: out of memory");
            goto out_free_all;
        }
        r->next_free = x->free_reqs;
        x->free_reqs = r;
    }
    if (!s3->tls_verify)
        S3C_LOG(S3C_LOG_WARN,
                "event=tls_verify_off endpoint=%s msg=\"TLS peer verification is disabled "
                "(s3.tls_verify=false): the endpoint's identity is not checked\"",
                x->origin);
    S3C_LOG(S3C_LOG_INFO, "event=transport_open endpoint=%s bucket=%s addressing=%s pool=%ld",
            x->origin, s3->bucket, s3->addressing == CFG_ADDR_VIRTUAL ? "virtual" : "path", n);

    /* With direct PUTs the pool's connections are direct ones (docs/transport.md, "The
     * pool"): warmed, refilled and heart-beaten there, where the PUTs go. */
    x->pool.direct = xport__direct_put_ok(x);
    pool_start(&x->pool); /* warm-up: open every connection now, answers not waited for */
    return x;

out_free_all:
    xport_free(x);
    return NULL;
out_free_md:
    EVP_MD_CTX_free(x->md);
    pool_fini(&x->pool);
out_free_x:
    OPENSSL_cleanse(&x->cfg, sizeof(x->cfg));
    free(x);
    return NULL;
}

void xport_free(struct xport *x)
{
    if (!x)
        return;
    x->closing = true;
    xport__direct_free(x);
    pool_stop(&x->pool);
    for (struct xreq *r = x->all_reqs; r; r = r->next_all) {
        if (r->active) {
            curl_multi_remove_handle(x->multi, r->easy);
            r->active = false;
        }
    }
    curl_multi_cleanup(x->multi); /* closes the pool's connections */
    for (struct xreq *r = x->all_reqs, *next; r; r = next) {
        next = r->next_all;
        xreq_destroy(r);
    }
    /* The loop outlives us: take every socket watch and timer of ours off it. */
    for (struct sockwatch *w = x->all_socks, *next; w; w = next) {
        next = w->next_all;
        loop_watch_del(x->loop, &w->w);
        free(w);
    }
    for (int i = 0; i < x->nspare; i++)
        free(x->spare_body[i]);
    loop_timer_disarm(x->loop, &x->curl_timer);
    pool_stop(&x->pool); /* closing sockets above may have scheduled a refill */
    pool_fini(&x->pool);
    EVP_MD_CTX_free(x->md);
    OPENSSL_cleanse(x->signing_key, sizeof(x->signing_key));
    sigv4_forget_keys(); /* the copy in this thread's HMAC context */
    OPENSSL_cleanse(&x->cfg, sizeof(x->cfg));
    free(x);
}

struct loop *xport_loop(const struct xport *x)
{
    return x ? x->loop : NULL;
}

int xport_put(struct xport *x, const struct xport_put *put, xport_done_fn done, void *ctx)
{
    const struct cfg_s3 *s3 = &x->cfg.s3;
    unsigned char sha[32], md5[16];
    char sha_hex[65], sha_b64[48], md5_b64[32], crc_b64[12];
    bool have_sha = false;
    struct xreq_sign_extra sx = {.payload_hash = SIGV4_UNSIGNED_PAYLOAD};
    int rc;

    if (!put || !put->key || !done || put->iovcnt < 0 || (put->iovcnt > 0 && !put->iov))
        return S3C_EINVAL;
    struct xreq *r = xreq_get(x);
    if (!r)
        return S3C_ENOMEM;
    rc = xreq_begin(x, r, XREQ_USER, XPORT_OP_PUT, put->key);
    if (rc < 0)
        goto out_release;
    if (put->iovcnt > r->iovcap) {
        struct iovec *v = realloc(r->iov, (size_t)put->iovcnt * sizeof(*v));
        if (!v) {
            rc = S3C_ENOMEM;
            goto out_release;
        }
        r->iov = v;
        r->iovcap = put->iovcnt;
    }
    for (int i = 0; i < put->iovcnt; i++) {
        r->iov[i] = put->iov[i];
        r->body_len += put->iov[i].iov_len;
    }
    r->iovcnt = put->iovcnt;

    bool anon = s3->access_key_id[0] == '\0';
    if ((!anon && s3->payload_signing == CFG_SIGN_SIGNED) || s3->checksum == CFG_SUM_SHA256) {
        rc = xreq_digest_spans(x, EVP_sha256(), r->iov, r->iovcnt, sha);
        if (rc < 0)
            goto out_release;
        have_sha = true;
        xport__hex(sha, 32, sha_hex);
    }
    if (!anon && s3->payload_signing == CFG_SIGN_SIGNED)
        sx.payload_hash = sha_hex;
    switch (s3->checksum) {
    case CFG_SUM_CRC32C: {
        uint32_t crc = put->crc32c;
        if (!put->have_crc32c) {
            crc = 0;
            for (int i = 0; i < r->iovcnt; i++)
                crc = crc32c_update(crc, r->iov[i].iov_base, r->iov[i].iov_len);
        }
        unsigned char be[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16),
                               (unsigned char)(crc >> 8), (unsigned char)crc};
        xport__b64(be, 4, crc_b64);
        sx.checksum_name = "x-amz-checksum-crc32c";
        sx.checksum_value = crc_b64;
        break;
    }
    case CFG_SUM_SHA256:
        if (have_sha) {
            xport__b64(sha, 32, sha_b64);
            sx.checksum_name = "x-amz-checksum-sha256";
            sx.checksum_value = sha_b64;
        }
        break;
    case CFG_SUM_MD5:
        rc = xreq_digest_spans(x, EVP_md5(), r->iov, r->iovcnt, md5);
        if (rc < 0)
            goto out_release;
        xport__b64(md5, 16, md5_b64);
        sx.content_md5 = md5_b64;
        break;
    case CFG_SUM_NONE:
        break;
    }
    sx.if_none_match = put->if_none_match ? "*" : NULL;
    sx.if_match = put->if_match;
    r->done = done;
    r->ctx = ctx;
    if (xport__direct_put_ok(x)) { /* counts itself in user_in_flight */
        rc = xport__put_direct(x, r, &sx);
        if (rc < 0)
            goto out_release;
        return 0;
    }
    rc = xreq_sign_and_start(x, r, "PUT", &sx);
    if (rc < 0)
        goto out_release;
    x->user_in_flight++;
    return 0;

out_release:
    xreq_release(x, r);
    return rc;
}

/* data (NULL: none) is called with a GET's body as it lands (xport_get_fed). */
static int xport_start_user(struct xport *x, enum xport_op op, const char *key, const char *method,
                            const uint64_t *range, const char *query, xport_data_fn data,
                            void *data_ctx, xport_done_fn done, void *ctx)
{
    if (!done)
        return S3C_EINVAL;
    struct xreq *r = xreq_get(x);
    if (!r)
        return S3C_ENOMEM;
    int rc = xreq_begin(x, r, XREQ_USER, op, key);
    if (rc == 0 && query) {
        size_t ql = strlen(query);
        if (ql >= sizeof(r->query))
            rc = S3C_EINVAL;
        else
            memcpy(r->query, query, ql + 1);
    }
    r->done = done;
    r->ctx = ctx;
    r->on_data = data;
    r->data_ctx = data_ctx;
    if (rc == 0)
        rc = xreq_start_simple(x, r, method, range ? xreq_range(r, range[0], range[1]) : NULL);
    if (rc < 0) {
        xreq_release(x, r);
        return rc;
    }
    x->user_in_flight++;
    return 0;
}

int xport_get(struct xport *x, const char *key, uint64_t first, uint64_t last, xport_done_fn done,
              void *ctx)
{
    const uint64_t range[2] = {first, last};
    if (!key)
        return S3C_EINVAL;
    return xport_start_user(x, XPORT_OP_GET, key, "GET", last >= first ? range : NULL, NULL, NULL,
                            NULL, done, ctx);
}

int xport_get_fed(struct xport *x, const char *key, xport_data_fn data, void *data_ctx,
                  xport_done_fn done, void *ctx)
{
    if (!key || !data)
        return S3C_EINVAL;
    return xport_start_user(x, XPORT_OP_GET, key, "GET", NULL, NULL, data, data_ctx, done, ctx);
}

int xport_head(struct xport *x, const char *key, xport_done_fn done, void *ctx)
{
    if (!key)
        return S3C_EINVAL;
    return xport_start_user(x, XPORT_OP_HEAD, key, "HEAD", NULL, NULL, NULL, NULL, done, ctx);
}

int xport_head_bucket(struct xport *x, xport_done_fn done, void *ctx)
{
    return xport_start_user(x, XPORT_OP_HEAD_BUCKET, NULL, "HEAD", NULL, NULL, NULL, NULL, done,
                            ctx);
}

/* Appends "&name=ENC(value)" (or "name=..." first) to q; false when it does not fit. */
static bool xport_query_param(char *q, size_t cap, const char *name, const char *value)
{
    size_t ql = strlen(q);
    int n = snprintf(q + ql, cap - ql, "%s%s=", ql ? "&" : "", name);
    if (n < 0 || (size_t)n >= cap - ql)
        return false;
    ql += (size_t)n;
    return sigv4_uri_encode(value, strlen(value), 0, q + ql, cap - ql) >= 0;
}

int xport_list(struct xport *x, const char *prefix, const char *start_after, const char *token,
               int max_keys, xport_done_fn done, void *ctx)
{
    char q[XREQ_QUERY_MAX] = "", mk[16];
    bool ok = true;
    /* In SigV4's sorted order, so the wire query is already canonical. */
    if (token && token[0])
        ok = ok && xport_query_param(q, sizeof(q), "continuation-token", token);
    ok = ok && xport_query_param(q, sizeof(q), "list-type", "2");
    if (max_keys > 0) {
        snprintf(mk, sizeof(mk), "%d", max_keys);
        ok = ok && xport_query_param(q, sizeof(q), "max-keys", mk);
    }
    if (prefix && prefix[0])
        ok = ok && xport_query_param(q, sizeof(q), "prefix", prefix);
    if (start_after && start_after[0])
        ok = ok && xport_query_param(q, sizeof(q), "start-after", start_after);
    if (!ok)
        return S3C_EINVAL;
    return xport_start_user(x, XPORT_OP_LIST, NULL, "GET", NULL, q, NULL, NULL, done, ctx);
}

int xport_in_flight(const struct xport *x)
{
    return x->user_in_flight;
}

void xport_stats_get(const struct xport *x, struct xport_stats *out)
{
    struct loop_stats es;
    loop_stats_get(x->loop, &es);
    memset(out, 0, sizeof(*out));
    out->opens = x->pool.pol.opens;
    out->closes = x->pool.pol.closes;
    out->reuses = x->pool.pol.reuses;
    out->heartbeats = x->pool.pol.heartbeats;
    out->heartbeat_failures = x->pool.pol.heartbeat_failures;
    out->requests = x->requests;
    out->bytes_sent = x->bytes_sent;
    out->bytes_received = x->bytes_received;
    out->open_connections = x->pool.pol.open;
    out->target_connections = x->pool.pol.target;
    out->refills = x->pool.refills;
    out->loop_waits = es.waits;
    out->loop_wakes = es.wakes;
    out->rewinds = x->rewinds;
    out->resends = x->resends;
    out->busy = x->pool.pol.active;
    out->body_allocs = x->body_allocs;
}

int xport_drain(struct xport *x, int timeout_ms)
{
    uint64_t deadline = s3c__now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    while (x->user_in_flight > 0) {
        uint64_t now = s3c__now_ms();
        if (now >= deadline)
            return S3C_ETIMEDOUT;
        int rc = loop_run_once(x->loop, (int)(deadline - now));
        if (rc < 0)
            return rc;
    }
    return 0;
}
