/* `s3commit verify`: lists the configured prefix, reads every object back and checks the
 * log of layout version 2 (docs/format.md): the object format and CRCs, each key against
 * its header, and the chain from seq 1 with the writer protocol's rules (epochs never go
 * back along it, every epoch starts with its EPOCH_START control record, orphans are
 * reported apart and are not errors). Read-only: it never writes or deletes an object. */
#include "s3commit_cli.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "config/config.h"
#include "format/objfmt.h"
#include "tool.h"
#include "transport/transport.h"

#define VERIFY_WINDOW 8 /* GETs in flight at once */
#define VERIFY_ATTEMPTS                                                                            \
    12                         /* tries per request on retryable failures: a verifier              \
                                  must see through a flaky store, not fail with it */
#define VERIFY_MAX_PROBLEMS 20 /* problems listed in the summary (all are counted) */

enum vstate { V_PENDING, V_IN_FLIGHT, V_DONE };

struct vobj {
    char *key;
    uint64_t size;
    bool key_ok;                 /* obj_key_parse accepted the key */
    uint64_t key_first;          /* from the key */
    uint64_t epoch, first, last; /* from the header */
    uint16_t flags;
    enum vstate state;
    int attempts;
    bool ok; /* read and decoded, header matches the key */
    uint32_t count;
    struct verify *v;
};

struct verify {
    struct loop *loop;
    struct xport *x;
    const struct s3c_config *cfg;
    struct vobj *objs;
    size_t n, cap;
    size_t others; /* keys under the prefix that are not log objects */
    size_t v1;     /* keys of the version-1 layout */
    /* listing */
    char *token;
    bool list_done, list_failed, list_retry;
    char list_error[512];
    /* reading */
    int in_flight;
    size_t done;
    bool fatal; /* a request failed so that going on is pointless */
    char fatal_error[512];
    /* findings */
    cJSON *problems;
    size_t nproblems;
};

static void verify_problem(struct verify *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void verify_problem(struct verify *v, const char *fmt, ...)
{
    char line[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    v->nproblems++;
    if (v->nproblems <= VERIFY_MAX_PROBLEMS) {
        fprintf(stderr, "s3commit verify: %s\n", line);
        cJSON_AddItemToArray(v->problems, cJSON_CreateString(line));
    } else if (v->nproblems == VERIFY_MAX_PROBLEMS + 1) {
        fprintf(stderr, "s3commit verify: (further problems are counted, not listed)\n");
    }
}

static bool verify_has_suffix(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void verify_on_list(void *ctx, const struct xport_result *res)
{
    struct verify *v = ctx;
    if (res->cls != XPORT_OK) {
        snprintf(v->list_error, sizeof(v->list_error), "%s", res->error);
        if (res->cls == XPORT_RETRYABLE)
            v->list_retry = true;
        else
            v->list_failed = true;
        return;
    }
    for (size_t i = 0; i < res->nentries; i++) {
        const char *key = res->entries[i].key;
        if (obj_key_is_v1(key, v->cfg->s3.prefix)) {
            if (v->v1++ == 0)
                verify_problem(v, "%s is an object of the version-1 layout; this log is version 2", key);
            continue;
        }
        if (!verify_has_suffix(key, ".s3c")) {
            v->others++;
            continue;
        }
        if (v->n == v->cap) {
            size_t cap = v->cap ? v->cap * 2 : 1024;
            struct vobj *nb = realloc(v->objs, cap * sizeof(*nb));
            if (!nb) {
                snprintf(v->list_error, sizeof(v->list_error), "out of memory listing keys");
                v->list_failed = true;
                return;
            }
            v->objs = nb;
            v->cap = cap;
        }
        struct vobj *o = &v->objs[v->n];
        memset(o, 0, sizeof(*o));
        o->key = strdup(key);
        if (!o->key) {
            snprintf(v->list_error, sizeof(v->list_error), "out of memory listing keys");
            v->list_failed = true;
            return;
        }
        o->size = res->entries[i].size;
        o->key_ok = obj_key_parse(key, v->cfg->s3.prefix, &o->key_first);
        v->n++;
    }
    free(v->token);
    v->token = NULL;
    if (res->truncated && res->next_token && res->next_token[0]) {
        v->token = strdup(res->next_token);
        if (!v->token) {
            snprintf(v->list_error, sizeof(v->list_error), "out of memory listing keys");
            v->list_failed = true;
        }
    } else {
        v->list_done = true;
    }
}

static void verify_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Lists every key under the prefix, page by page (1000 keys each). */
static int verify_list(struct verify *v)
{
    int wait_ms = v->cfg->s3.request_timeout_ms + 5000;
    int attempt = 0;
    while (!v->list_done) {
        v->list_retry = false;
        int rc = xport_list(v->x, v->cfg->s3.prefix, NULL, v->token, 1000, verify_on_list, v);
        if (rc != 0) {
            snprintf(v->list_error, sizeof(v->list_error), "%s", s3c_strerror(rc));
            return -1;
        }
        if (xport_drain(v->x, wait_ms) != 0) {
            snprintf(v->list_error, sizeof(v->list_error), "no answer within %d ms", wait_ms);
            return -1;
        }
        if (v->list_failed)
            return -1;
        if (v->list_retry) {
            if (++attempt >= VERIFY_ATTEMPTS)
                return -1;
            S3C_LOG(S3C_LOG_WARN, "event=list_retry attempt=%d error=\"%s\"", attempt,
                    v->list_error);
            verify_sleep_ms(attempt < 5 ? 100 << attempt : 2000); /* capped backoff */
            continue;
        }
        attempt = 0;
    }
    return 0;
}

static void verify_on_get(void *ctx, const struct xport_result *res)
{
    struct vobj *o = ctx;
    struct verify *v = o->v;
    char err[256] = "";
    struct obj_header h;

    v->in_flight--;
    if (res->cls == XPORT_RETRYABLE && ++o->attempts < VERIFY_ATTEMPTS) {
        o->state = V_PENDING;
        return;
    }
    o->state = V_DONE;
    v->done++;
    if (res->cls != XPORT_OK) {
        if (res->cls == XPORT_FATAL && (res->http_status == 403 || res->http_status == 0)) {
            v->fatal = true; /* every other read would fail the same way */
            snprintf(v->fatal_error, sizeof(v->fatal_error), "GET %s: %s", o->key, res->error);
        }
        verify_problem(v, "%s: cannot read it: %s", o->key, res->error);
        return;
    }
    if (obj_decode(res->body, res->body_len, &h, NULL, NULL, err, sizeof(err)) != 0) {
        verify_problem(v, "%s: %s", o->key, err);
        return;
    }
    if (!o->key_ok) {
        verify_problem(v, "%s: the key does not follow <prefix>log/<first_seq, 20 digits>.s3c", o->key);
        return;
    }
    if (h.first_seq != o->key_first) {
        verify_problem(v, "%s: the header says seqs %" PRIu64 "..%" PRIu64 " but the key says %" PRIu64,
                o->key, h.first_seq, h.last_seq, o->key_first);
        return;
    }
    o->ok = true;
    o->count = h.count;
    o->epoch = h.epoch;
    o->first = h.first_seq;
    o->last = h.last_seq;
    o->flags = h.flags;
}

/* Reads every listed object back, VERIFY_WINDOW at a time. */
static int verify_read_all(struct verify *v)
{
    uint64_t stall_ms = (uint64_t)v->cfg->s3.request_timeout_ms * VERIFY_ATTEMPTS + 10000;
    uint64_t last_progress = s3c__now_ms();
    size_t last_done = 0, next = 0;

    for (size_t i = 0; i < v->n; i++)
        v->objs[i].v = v;
    while (v->done < v->n && !v->fatal) {
        /* Pending objects are the unstarted ones plus any put back for a retry. */
        for (size_t i = next; i < v->n && v->in_flight < VERIFY_WINDOW; i++) {
            struct vobj *o = &v->objs[i];
            if (o->state != V_PENDING)
                continue;
            /* last < first asks for the whole object */
            if (xport_get(v->x, o->key, 1, 0, verify_on_get, o) != 0) {
                o->state = V_DONE;
                v->done++;
                verify_problem(v, "%s: cannot start the GET", o->key);
                continue;
            }
            o->state = V_IN_FLIGHT;
            v->in_flight++;
        }
        while (next < v->n && v->objs[next].state == V_DONE)
            next++;
        if (loop_run_once(v->loop, 200) != 0) {
            snprintf(v->fatal_error, sizeof(v->fatal_error), "the event loop failed");
            v->fatal = true;
        }
        if (v->done != last_done) {
            last_done = v->done;
            last_progress = s3c__now_ms();
        } else if (s3c__now_ms() - last_progress > stall_ms) {
            snprintf(v->fatal_error, sizeof(v->fatal_error),
                     "no object could be read for %" PRIu64 " ms", stall_ms);
            v->fatal = true;
        }
    }
    xport_drain(v->x, 1000);
    return v->fatal ? -1 : 0;
}

static int verify_cmp_vobj(const void *a, const void *b)
{
    return strcmp(((const struct vobj *)a)->key, ((const struct vobj *)b)->key);
}

int cmd_verify(const char *config_path, int64_t expect_commits)
{
    s3c_config *cfg = NULL;
    struct verify v = {0};
    char err[512] = "";
    int exit_code = TOOL_EXIT_FAIL;

    if (tool_config_load(config_path, &cfg) != 0)
        return TOOL_EXIT_USAGE;
    tool_log_setup(cfg->log_level);
    v.cfg = cfg;
    v.problems = cJSON_CreateArray();
    /* Verify keeps VERIFY_WINDOW requests in flight: warm only that many connections. */
    cfg->persistence.max_in_flight_requests = VERIFY_WINDOW;
    cfg->persistence.target_pool_size = VERIFY_WINDOW;
    v.loop = loop_new();
    v.x = v.loop ? xport_new(cfg, v.loop, err, sizeof(err)) : NULL;
    if (!v.x || !v.problems) {
        tool_error("cannot start the S3 client: %s", err[0] ? err : "out of memory");
        goto out_free;
    }
    if (verify_list(&v) != 0) {
        tool_error("cannot list s3://%s/%s at %s: %s", cfg->s3.bucket, cfg->s3.prefix,
                   cfg->s3.endpoint, v.list_error);
        goto out_free;
    }
    qsort(v.objs, v.n, sizeof(*v.objs), verify_cmp_vobj);
    if (verify_read_all(&v) != 0) {
        tool_error("cannot read the objects back from %s: %s", cfg->s3.endpoint, v.fatal_error);
        goto out_free;
    }

    /* The chain from seq 1 (keys sort in seq order): the next object is at log/<last + 1>;
     * one of an epoch below the last EPOCH_START before it is an orphan and ends the chain;
     * keys off the chain (inside an object's range, or past its end) are orphans of fenced
     * or crashed writers, never acknowledged, reported apart. */
    uint64_t next = 1, commits = 0, controls = 0, first_seq = 0, last_seq = 0;
    uint64_t start_epoch = 0, epoch = 0;
    size_t bad = 0, chain = 0, orphans = 0, beyond = 0, regressions = 0, unfenced = 0;
    bool ended = false;
    cJSON *epochs = cJSON_CreateArray();
    cJSON *cur_epoch = NULL;
    for (size_t i = 0; i < v.n; i++) {
        struct vobj *o = &v.objs[i];
        if (!o->key_ok) {
            bad++;
            continue;
        }
        if (ended || o->key_first > next) {
            if (!ended && o->ok && o->epoch >= start_epoch && o->key_first > next)
                ended = true; /* a gap: the chain ends at next - 1 */
            beyond++;
            continue;
        }
        if (o->key_first < next) {
            orphans++; /* inside the range of an object on the chain */
            continue;
        }
        if (!o->ok) { /* on the chain and unreadable: the chain cannot go on */
            bad++;
            verify_problem(&v, "the chain cannot be followed past seq %" PRIu64 ": %s is bad", next - 1,
                    o->key);
            ended = true;
            continue;
        }
        if (o->epoch < start_epoch) {
            orphans++; /* a fenced writer's PUT that landed past the fence: the end */
            ended = true;
            continue;
        }
        if (o->flags & OBJ_FLAG_EPOCH_START) {
            if (o->epoch <= start_epoch) {
                regressions++;
                verify_problem(&v, "%s: EPOCH_START of epoch %" PRIu64 " after one of epoch %" PRIu64,
                        o->key, o->epoch, start_epoch);
            }
            start_epoch = o->epoch;
            controls++;
            cur_epoch = cJSON_CreateObject();
            cJSON_AddNumberToObject(cur_epoch, "epoch", (double)o->epoch);
            cJSON_AddNumberToObject(cur_epoch, "control_seq", (double)o->first);
            cJSON_AddNumberToObject(cur_epoch, "commits", 0);
            cJSON_AddItemToArray(epochs, cur_epoch);
        } else {
            if (o->epoch != start_epoch) {
                unfenced++;
                verify_problem(&v,
                        "%s: epoch %" PRIu64 " without its EPOCH_START (the last was %" PRIu64 ")",
                        o->key, o->epoch, start_epoch);
            }
            commits += o->count;
            if (cur_epoch)
                cJSON_SetNumberValue(cJSON_GetObjectItem(cur_epoch, "commits"),
                                     cJSON_GetObjectItem(cur_epoch, "commits")->valuedouble +
                                         o->count);
        }
        if (o->epoch < epoch) {
            regressions++;
            verify_problem(&v, "%s: epoch %" PRIu64 " after epoch %" PRIu64 " on the chain", o->key,
                    o->epoch, epoch);
        }
        epoch = o->epoch;
        if (first_seq == 0)
            first_seq = o->first;
        last_seq = o->last;
        next = o->last + 1;
        chain++;
    }
    if (v.n > 0 && first_seq != 1 && !(v.n == bad))
        verify_problem(&v, "the chain does not start at seq 1 (no object at log/1)");
    bool expect_ok = true;
    if (expect_commits >= 0 && commits != (uint64_t)expect_commits) {
        expect_ok = false;
        verify_problem(&v, "expected %" PRId64 " commits on the chain, found %" PRIu64, expect_commits,
                commits);
    }
    bool ok = bad == 0 && regressions == 0 && unfenced == 0 && v.v1 == 0 && expect_ok &&
              (v.n == 0 || first_seq == 1);

    cJSON *sum = cJSON_CreateObject();
    cJSON_AddStringToObject(sum, "bucket", cfg->s3.bucket);
    cJSON_AddStringToObject(sum, "prefix", cfg->s3.prefix);
    cJSON_AddNumberToObject(sum, "format", 2);
    cJSON_AddNumberToObject(sum, "objects", (double)v.n);
    cJSON_AddNumberToObject(sum, "chain_objects", (double)chain);
    cJSON_AddNumberToObject(sum, "commits", (double)commits);
    cJSON_AddNumberToObject(sum, "control_records", (double)controls);
    cJSON_AddNumberToObject(sum, "first_seq", (double)first_seq);
    cJSON_AddNumberToObject(sum, "last_seq", (double)last_seq);
    cJSON_AddItemToObject(sum, "epochs", epochs);
    cJSON_AddNumberToObject(sum, "orphans", (double)orphans);
    cJSON_AddNumberToObject(sum, "beyond_end", (double)beyond);
    cJSON_AddNumberToObject(sum, "epoch_regressions", (double)regressions);
    cJSON_AddNumberToObject(sum, "unfenced_objects", (double)unfenced);
    cJSON_AddNumberToObject(sum, "v1_objects", (double)v.v1);
    cJSON_AddNumberToObject(sum, "bad_objects", (double)bad);
    cJSON_AddNumberToObject(sum, "other_keys", (double)v.others);
    if (expect_commits >= 0)
        cJSON_AddNumberToObject(sum, "expect_commits", (double)expect_commits);
    cJSON_AddBoolToObject(sum, "ok", ok);
    cJSON_AddItemToObject(sum, "problems", v.problems);
    v.problems = NULL;
    char *text = cJSON_PrintUnformatted(sum);
    if (text)
        printf("%s\n", text);
    cJSON_free(text);
    cJSON_Delete(sum);
    exit_code = ok ? TOOL_EXIT_OK : TOOL_EXIT_FAIL;

out_free:
    xport_free(v.x);
    loop_free(v.loop);
    for (size_t i = 0; i < v.n; i++)
        free(v.objs[i].key);
    free(v.objs);
    free(v.token);
    cJSON_Delete(v.problems);
    s3c_config_free(cfg);
    return exit_code;
}
