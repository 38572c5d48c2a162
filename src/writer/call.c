/* Synchronous requests on the transport's loop (call.h). A retry re-sends the request
 * from its first byte; a fatal answer is returned at once with its words. */
#include "writer/call.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "loop/loop.h"
#include "s3commit.h"

struct call_wait {
    bool done;
    enum xport_class cls;
    enum xport_fail fail;
    struct call_res *res;
    bool nomem;
    char error[1024];
};

static char *call_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void call_on_done(void *ctx, const struct xport_result *r)
{
    struct call_wait *w = ctx;
    struct call_res *res = w->res;
    w->done = true;
    w->cls = r->cls;
    w->fail = r->fail;
    res->status = r->http_status;
    snprintf(w->error, sizeof(w->error), "%s", r->error ? r->error : "");
    snprintf(res->etag, sizeof(res->etag), "%s", r->etag ? r->etag : "");
    if (r->cls != XPORT_OK)
        return;
    if (r->body) {
        res->body = malloc(r->body_len + 1);
        if (!res->body) {
            w->nomem = true;
            return;
        }
        memcpy(res->body, r->body, r->body_len);
        res->body[r->body_len] = '\0';
        res->body_len = r->body_len;
        res->object_size = r->object_size;
    }
    if (r->nentries > 0) {
        res->keys = calloc(r->nentries, sizeof(*res->keys));
        if (!res->keys) {
            w->nomem = true;
            return;
        }
        for (size_t i = 0; i < r->nentries; i++) {
            res->keys[i] = call_strdup(r->entries[i].key);
            if (!res->keys[i]) {
                w->nomem = true;
                return;
            }
            res->nkeys++;
        }
    }
    res->truncated = r->truncated;
    if (r->next_token && r->next_token[0]) {
        res->next_token = call_strdup(r->next_token);
        if (!res->next_token)
            w->nomem = true;
    }
}

static int call_start(struct xport *x, const struct call_req *q, struct call_wait *w)
{
    switch (q->op) {
    case XPORT_OP_PUT: {
        struct xport_put p = {.key = q->key,
                              .iov = q->iov,
                              .iovcnt = q->iovcnt,
                              .if_none_match = q->if_none_match,
                              .if_match = q->if_match};
        return xport_put(x, &p, call_on_done, w);
    }
    case XPORT_OP_GET:
        return xport_get(x, q->key, q->first, q->last, call_on_done, w);
    case XPORT_OP_LIST:
        return xport_list(x, q->list_prefix, q->start_after, q->token, q->max_keys, call_on_done,
                          w);
    default:
        return S3C_EINVAL;
    }
}

int call_run(struct xport *x, const struct s3c_config *cfg, const struct call_req *req,
             struct call_res *res, char *err, size_t errlen)
{
    const struct cfg_persistence *p = &cfg->persistence;
    uint64_t rng = s3c__now_ns() | 1;
    memset(res, 0, sizeof(*res));
    for (int attempt = 1;; attempt++) {
        struct call_wait w = {.res = res};
        call_res_free(res);
        int rc = call_start(x, req, &w);
        if (rc < 0) {
            snprintf(err, errlen, "%s: cannot start the request: %s",
                     req->key ? req->key : cfg->s3.bucket, s3c_strerror(rc));
            return rc;
        }
        while (!w.done) {
            rc = loop_run_once(xport_loop(x), 1000);
            if (rc < 0) {
                snprintf(err, errlen, "the event loop failed: %s", s3c_strerror(rc));
                return rc;
            }
        }
        if (w.nomem) {
            call_res_free(res);
            snprintf(err, errlen, "out of memory reading an answer");
            return S3C_ENOMEM;
        }
        res->cls = w.cls;
        if (w.cls == XPORT_OK || w.cls == XPORT_EXISTS || w.cls == XPORT_NOT_FOUND)
            return 0;
        if (w.cls != XPORT_RETRYABLE || attempt > p->max_retry_attempts) {
            call_res_free(res);
            snprintf(err, errlen, "%s%s", w.error,
                     w.cls == XPORT_RETRYABLE ? " (retries exhausted)" : "");
            return w.fail == XPORT_FAIL_NONE || w.cls == XPORT_FATAL ? S3C_ES3 : S3C_ENETWORK;
        }
        uint64_t until = s3c__now_ms() + call_backoff_ms(p, attempt, &rng);
        for (uint64_t now; (now = s3c__now_ms()) < until;)
            loop_run_once(xport_loop(x), (int)(until - now)); /* the pool keeps working */
    }
}

uint64_t call_backoff_ms(const struct cfg_persistence *p, int attempt, uint64_t *rng)
{
    int k = attempt - 1 < 20 ? attempt - 1 : 20;
    uint64_t ceil_ms = (uint64_t)p->retry_base_delay_ms << k;
    if (ceil_ms > (uint64_t)p->max_retry_delay_ms)
        ceil_ms = (uint64_t)p->max_retry_delay_ms;
    *rng ^= *rng << 13, *rng ^= *rng >> 7, *rng ^= *rng << 17;
    return *rng % (ceil_ms + 1);
}

void call_res_free(struct call_res *res)
{
    free(res->body);
    for (size_t i = 0; i < res->nkeys; i++)
        free(res->keys[i]);
    free(res->keys);
    free(res->next_token);
    res->body = NULL;
    res->body_len = 0;
    res->keys = NULL;
    res->nkeys = 0;
    res->next_token = NULL;
    res->truncated = false;
}
