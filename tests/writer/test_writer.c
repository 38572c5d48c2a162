/* The writer protocol (src/writer) through the stage, against s3commit-mock: a restart
 * continues the log without touching what the last run wrote, a second writer fences the
 * first, an ambiguous retry settles as our own bytes, orphans past a fence are replaced,
 * the manifest is coalesced and its channel and the heartbeat's fail alone, a manifest
 * of a newer epoch fences, a large prefix opens from the manifest's hint, a version-1
 * prefix is refused, and conditional_writes=false still continues the log. Every chain
 * is read back object by object and checked commit by commit. */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "format/manifest.h"
#include "format/objfmt.h"
#include "mockproc.h"
#include "s3commit.h"
#include "support/mockstats.h"
#include "support/xport_loop.h"
#include "test.h"
#include "transport/transport.h"

#define AK "AKIDWRITERTEST000001"
#define SK "writer-test-secret-key-0123456789abcdef"
#define PREFIX "p/"
/* The manifest and heartbeat wait an hour unless a test is about them. */
#define QUIET_MW "\"manifest_interval_ms\":3600000,\"writer_heartbeat_interval_ms\":3600000"

static struct mockproc mock;
static long cfg_ring_bytes = 1048576, cfg_max_commit = 65536; /* the orphans test raises them */
#define MAX_PAYLOAD (512 * 1024)

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The mock checks no signature here, so raw requests (mockproc_http) can change objects
 * behind the stage's back; the stage signs anyway. */
static void start_mock(void)
{
    const char *args[] = {NULL};
    ASSERT_EQ(test_mock_start(&mock, args), 0);
}

static void reset_mock_stats(void)
{
    char out[512];
    ASSERT_EQ(mockproc_http(&mock, "DELETE", "/_mock/stats", NULL, out, sizeof(out)), 204);
}

/* A config on PREFIX: persistence holds the members of "persistence", s3 extra members of
 * "s3" (each "" or starting without a comma). */
static s3c_config *mkcfg(const char *persistence, const char *s3)
{
    char json[4096], err[512];
    s3c_config *cfg = NULL;
    snprintf(json, sizeof(json),
             "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"" PREFIX "\","
             "\"region\":\"us-east-1\",\"access_key_id\":\"" AK "\","
             "\"secret_access_key\":\"" SK "\"%s%s},"
             "\"persistence\":{%s},"
             "\"pipeline\":{\"ring_bytes\":%ld,\"max_commit_bytes\":%ld}}",
             mock.endpoint, s3[0] ? "," : "", s3, persistence, cfg_ring_bytes, cfg_max_commit);
    if (s3c_config_parse(json, strlen(json), &cfg, err, sizeof(err)) != 0)
        TEST_FAIL_("config: %s", err);
    return cfg;
}

static s3c_stage *open_stage2(const char *persistence, const char *s3)
{
    s3c_config *cfg = mkcfg(persistence, s3);
    s3c_stage *st;
    char err[1024];
    if (s3c_stage_open(cfg, &st, err, sizeof(err)) != 0)
        TEST_FAIL_("open: %s", err);
    s3c_config_free(cfg);
    return st;
}

static s3c_stage *open_stage(const char *persistence)
{
    return open_stage2(persistence, "");
}

static struct s3c_stage_info info_of(s3c_stage *st)
{
    struct s3c_stage_info in;
    ASSERT_EQ(s3c_stage_info(st, &in), 0);
    return in;
}

static struct s3c_stats stats_of(s3c_stage *st)
{
    struct s3c_stats s;
    s3c_stats_get(st, &s);
    return s;
}

/* ---- commits that say who wrote them ------------------------------------------------- */

/* Commit k of writer tag: "<tag>:<k>;" then a filler that depends on k, len bytes in all
 * (at least the prefix). Read back, a record is checked against this. */
static size_t mkpayload(char tag, uint64_t k, size_t len, char *out)
{
    int n = snprintf(out, len + 1, "%c:%llu;", tag, (unsigned long long)k);
    ASSERT(n > 0);
    for (size_t i = (size_t)n; i < len; i++)
        out[i] = (char)('a' + (k + i) % 26);
    return len > (size_t)n ? len : (size_t)n;
}

/* Submits commits k0 .. k0+n-1 of tag (len bytes each) and checks each seq: the k-th
 * commit of a run is at first_seq + k. Returns the last seq. */
static uint64_t submit_tagged(s3c_stage *st, char tag, uint64_t k0, int n, size_t len)
{
    static char buf[MAX_PAYLOAD];
    uint64_t first = info_of(st).first_seq, seq = 0;
    for (int i = 0; i < n; i++) {
        size_t l = mkpayload(tag, k0 + (uint64_t)i, len, buf);
        ASSERT_EQ(s3c_submit(st, buf, l, 5000, &seq), 0);
        ASSERT_UEQ(seq, first + k0 + (uint64_t)i);
    }
    return seq;
}

/* ---- the bucket, read by the test's own client --------------------------------------- */

struct op {
    bool done;
    enum xport_class cls;
    long status;
    char etag[128];
    unsigned char *body;
    size_t len;
    char **keys, **etags;
    size_t n;
    bool truncated;
    char token[1024];
};

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    ASSERT(d);
    return d;
}

static void op_done(void *ctx, const struct xport_result *r)
{
    struct op *o = ctx;
    o->done = true;
    o->cls = r->cls;
    o->status = r->http_status;
    snprintf(o->etag, sizeof(o->etag), "%s", r->etag ? r->etag : "");
    if (r->cls != XPORT_OK)
        return;
    if (r->body && r->body_len) {
        o->body = malloc(r->body_len + 1);
        ASSERT(o->body);
        memcpy(o->body, r->body, r->body_len);
        o->body[r->body_len] = 0;
        o->len = r->body_len;
    }
    if (r->nentries) {
        o->keys = calloc(r->nentries, sizeof(char *));
        o->etags = calloc(r->nentries, sizeof(char *));
        ASSERT(o->keys && o->etags);
        for (size_t i = 0; i < r->nentries; i++) {
            o->keys[i] = xstrdup(r->entries[i].key);
            o->etags[i] = xstrdup(r->entries[i].etag);
        }
        o->n = r->nentries;
    }
    o->truncated = r->truncated;
    snprintf(o->token, sizeof(o->token), "%s", r->next_token ? r->next_token : "");
}

static void op_wait(struct xport *x, struct op *o)
{
    uint64_t end = s3c__now_ms() + 15000;
    while (!o->done) {
        if (s3c__now_ms() > end)
            TEST_FAIL_("the test's own request did not finish in 15 s");
        ASSERT_EQ(test_xport_poll(x, 50) < 0, 0);
    }
}

static struct xport *tx_new(void)
{
    s3c_config *cfg = mkcfg("\"max_in_flight_requests\":16,\"target_pool_size\":16", "");
    char err[256];
    struct xport *x = test_xport_new(cfg, err, sizeof(err));
    if (!x)
        TEST_FAIL_("test client: %s", err);
    s3c_config_free(cfg);
    return x;
}

/* GETs key whole: the body (malloc'd, NUL-terminated; NULL when missing), its ETag. */
static unsigned char *tx_get(struct xport *x, const char *key, size_t *len, char *etag, size_t cap)
{
    struct op o = {0};
    ASSERT_EQ(xport_get(x, key, 1, 0, op_done, &o), 0);
    op_wait(x, &o);
    if (o.cls == XPORT_NOT_FOUND)
        return NULL;
    if (o.cls != XPORT_OK)
        TEST_FAIL_("GET %s: class %s status %ld", key, xport_class_name(o.cls), o.status);
    if (etag)
        snprintf(etag, cap, "%s", o.etag);
    *len = o.len;
    if (!o.body)
        o.body = calloc(1, 1);
    return o.body;
}

static enum xport_class tx_put(struct xport *x, const char *key, const void *body, size_t len)
{
    struct op o = {0};
    struct iovec v = {(void *)body, len};
    struct xport_put p = {.key = key, .iov = &v, .iovcnt = 1};
    ASSERT_EQ(xport_put(x, &p, op_done, &o), 0);
    op_wait(x, &o);
    return o.cls;
}

struct keylist {
    char **keys, **etags;
    size_t n, cap;
    int pages;
};

static void keylist_free(struct keylist *kl)
{
    for (size_t i = 0; i < kl->n; i++) {
        free(kl->keys[i]);
        free(kl->etags[i]);
    }
    free(kl->keys);
    free(kl->etags);
    memset(kl, 0, sizeof(*kl));
}

/* Every key under prefix, in order, with its ETag, page by page. */
static void tx_list_all(struct xport *x, const char *prefix, struct keylist *kl)
{
    char token[1024] = "";
    memset(kl, 0, sizeof(*kl));
    for (;;) {
        struct op o = {0};
        ASSERT_EQ(xport_list(x, prefix, NULL, token[0] ? token : NULL, 1000, op_done, &o), 0);
        op_wait(x, &o);
        ASSERT_EQ(o.cls, XPORT_OK);
        kl->pages++;
        if (kl->n + o.n > kl->cap) {
            kl->cap = (kl->n + o.n) * 2;
            kl->keys = realloc(kl->keys, kl->cap * sizeof(char *));
            kl->etags = realloc(kl->etags, kl->cap * sizeof(char *));
            ASSERT(kl->keys && kl->etags);
        }
        memcpy(kl->keys + kl->n, o.keys, o.n * sizeof(char *));
        memcpy(kl->etags + kl->n, o.etags, o.n * sizeof(char *));
        kl->n += o.n;
        free(o.keys);
        free(o.etags);
        if (!o.truncated || !o.token[0])
            break;
        snprintf(token, sizeof(token), "%s", o.token);
    }
}

/* ---- the chain, read back ------------------------------------------------------------ */

struct robj {
    char *key, *etag;
    struct obj_header h;
    unsigned char *body;
    size_t len;
    bool on_chain;
};

struct chain {
    struct robj *o;
    size_t n;
    uint64_t end;         /* the last seq on the chain */
    size_t on, off;       /* objects on and off the chain */
    size_t orphans_ended; /* 1 when an orphan (older epoch past a fence) ended it */
    /* By seq, for seqs on the chain (index 0 unused). */
    uint64_t cap;
    const unsigned char **payload;
    uint32_t *plen;
    uint64_t *epoch;
    bool *control;
};

struct chain_rec_ctx {
    struct chain *c;
    struct robj *o;
};

static int chain_on_record(void *ctx, uint64_t seq, const void *payload, uint32_t len)
{
    struct chain_rec_ctx *rc = ctx;
    struct chain *c = rc->c;
    ASSERT(seq < c->cap);
    ASSERT(c->payload[seq] == NULL); /* each seq once on the chain */
    c->payload[seq] = payload;
    c->plen[seq] = len;
    c->epoch[seq] = rc->o->h.epoch;
    c->control[seq] = (rc->o->h.flags & OBJ_FLAG_EPOCH_START) != 0;
    return 0;
}

/* Lists PREFIX log/, reads and decodes every object (each must be a valid v2 object at
 * the key its first seq names), and follows the chain from seq 1 as a reader does: the
 * next object is at log/<last + 1>; one of an epoch below the last EPOCH_START ends it. */
static void read_chain(struct chain *c)
{
    struct xport *x = tx_new();
    struct keylist kl;
    char err[256];
    memset(c, 0, sizeof(*c));
    tx_list_all(x, PREFIX "log/", &kl);
    c->o = calloc(kl.n ? kl.n : 1, sizeof(*c->o));
    c->n = kl.n;
    uint64_t maxseq = 0;
    for (size_t i = 0; i < kl.n; i++) {
        struct robj *o = &c->o[i];
        uint64_t f;
        o->key = kl.keys[i];
        o->etag = kl.etags[i];
        o->body = tx_get(x, o->key, &o->len, NULL, 0);
        ASSERT(o->body);
        if (obj_decode(o->body, o->len, &o->h, NULL, NULL, err, sizeof(err)) != 0)
            TEST_FAIL_("%s: %s", o->key, err);
        ASSERT(obj_key_parse(o->key, PREFIX, &f));
        ASSERT_UEQ(o->h.first_seq, f);
        if (o->h.last_seq > maxseq)
            maxseq = o->h.last_seq;
    }
    free(kl.keys);
    free(kl.etags);
    c->cap = maxseq + 2;
    c->payload = calloc(c->cap, sizeof(*c->payload));
    c->plen = calloc(c->cap, sizeof(*c->plen));
    c->epoch = calloc(c->cap, sizeof(*c->epoch));
    c->control = calloc(c->cap, sizeof(*c->control));
    uint64_t next = 1, start_epoch = 0;
    bool ended = false;
    for (size_t i = 0; i < c->n; i++) {
        struct robj *o = &c->o[i];
        if (ended || o->h.first_seq != next) {
            c->off++;
            continue;
        }
        if (o->h.epoch < start_epoch) { /* an orphan on the chain ends it */
            c->orphans_ended = 1;
            c->off++;
            ended = true;
            continue;
        }
        if (o->h.flags & OBJ_FLAG_EPOCH_START) {
            ASSERT_GT(o->h.epoch, start_epoch);
            start_epoch = o->h.epoch;
        }
        ASSERT_UEQ(o->h.epoch, start_epoch); /* data of the epoch that fenced last */
        struct chain_rec_ctx rc = {c, o};
        ASSERT_EQ(obj_decode(o->body, o->len, &o->h, chain_on_record, &rc, err, sizeof(err)), 0);
        o->on_chain = true;
        c->on++;
        next = o->h.last_seq + 1;
    }
    c->end = next - 1;
    test_xport_free(x);
}

static void chain_free(struct chain *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->o[i].key);
        free(c->o[i].etag);
        free(c->o[i].body);
    }
    free(c->o);
    free(c->payload);
    free(c->plen);
    free(c->epoch);
    free(c->control);
    memset(c, 0, sizeof(*c));
}

/* Seq holds commit k of tag (as mkpayload made it), a data record of epoch. */
static void check_commit(const struct chain *c, uint64_t seq, char tag, uint64_t k, uint64_t epoch)
{
    static char want[MAX_PAYLOAD];
    if (seq >= c->cap || !c->payload[seq])
        TEST_FAIL_("seq %llu is not on the chain (it ends at %llu)", (unsigned long long)seq,
                   (unsigned long long)c->end);
    ASSERT(!c->control[seq]);
    ASSERT_UEQ(c->epoch[seq], epoch);
    size_t n = mkpayload(tag, k, c->plen[seq], want);
    if (n != c->plen[seq] || memcmp(want, c->payload[seq], n) != 0)
        TEST_FAIL_("seq %llu: expected commit %c:%llu, found \"%.*s\"", (unsigned long long)seq,
                   tag, (unsigned long long)k, (int)(c->plen[seq] < 40 ? c->plen[seq] : 40),
                   (const char *)c->payload[seq]);
}

/* Seq holds an EPOCH_START control record of epoch, naming found as the W it found. */
static void check_control(const struct chain *c, uint64_t seq, uint64_t epoch, uint64_t found)
{
    char want[128], text[600];
    ASSERT(seq < c->cap && c->payload[seq]);
    ASSERT(c->control[seq]);
    ASSERT_UEQ(c->epoch[seq], epoch);
    snprintf(text, sizeof(text), "%.*s", (int)c->plen[seq], (const char *)c->payload[seq]);
    snprintf(want, sizeof(want), "\"epoch\":%llu,", (unsigned long long)epoch);
    if (!strstr(text, want))
        TEST_FAIL_("control record at %llu: %s lacks %s", (unsigned long long)seq, text, want);
    snprintf(want, sizeof(want), "\"found_durable_seq\":%llu,", (unsigned long long)found);
    if (!strstr(text, want))
        TEST_FAIL_("control record at %llu: %s lacks %s", (unsigned long long)seq, text, want);
}

static struct manifest read_manifest(void)
{
    struct xport *x = tx_new();
    size_t len;
    char err[256];
    struct manifest m;
    unsigned char *b = tx_get(x, PREFIX "manifest.json", &len, NULL, 0);
    ASSERT(b);
    if (manifest_parse((const char *)b, len, &m, err, sizeof(err)) != 0)
        TEST_FAIL_("manifest: %s", err);
    free(b);
    test_xport_free(x);
    return m;
}

/* ---- subscribers ---------------------------------------------------------------------- */

struct events {
    _Atomic uint64_t last;
    _Atomic int calls, errors, backwards, err_code;
};

static void on_durable(void *ctx, uint64_t w, int err)
{
    struct events *ev = ctx;
    if (err) {
        atomic_store(&ev->err_code, err);
        atomic_fetch_add(&ev->errors, 1);
        return;
    }
    if (w <= atomic_load(&ev->last))
        atomic_fetch_add(&ev->backwards, 1);
    atomic_store(&ev->last, w);
    atomic_fetch_add(&ev->calls, 1);
}

/* ---- 1. restart ----------------------------------------------------------------------- */

/* A writes and closes; B opens on the same prefix: epoch 2, the log continues after A's
 * last seq with B's control record, and not one of A's objects is written again. */
static void restart_continues_log(void)
{
    start_mock();
    const char *cfg = "\"batch_timeout_ms\":2,\"batch_size_threshold\":7," QUIET_MW;
    s3c_stage *a = open_stage(cfg);
    struct s3c_stage_info ia = info_of(a);
    ASSERT_UEQ(ia.epoch, 1);
    ASSERT_UEQ(ia.recovered_seq, 0);
    ASSERT_UEQ(ia.control_seq, 1);
    ASSERT_UEQ(ia.first_seq, 2);
    const int N = 60, M = 45;
    uint64_t a_last = submit_tagged(a, 'A', 0, N, 50);
    ASSERT_UEQ(a_last, 1 + (uint64_t)N);
    ASSERT_EQ(s3c_wait_durable(a, a_last, 5000), 0);
    ASSERT_EQ(s3c_stage_close(a, NULL), 0);

    struct xport *x = tx_new();
    struct keylist before;
    tx_list_all(x, PREFIX "log/", &before);
    ASSERT_GE(before.n, (size_t)(1 + N / 7));

    s3c_stage *b = open_stage(cfg);
    struct s3c_stage_info ib = info_of(b);
    ASSERT_UEQ(ib.epoch, 2);
    ASSERT_UEQ(ib.recovered_seq, a_last);
    ASSERT_UEQ(ib.control_seq, a_last + 1);
    ASSERT_UEQ(ib.first_seq, a_last + 2);
    uint64_t b_last = submit_tagged(b, 'B', 0, M, 70);
    ASSERT_UEQ(b_last, a_last + 1 + (uint64_t)M);
    ASSERT_EQ(s3c_wait_durable(b, b_last, 5000), 0);
    ASSERT_EQ(s3c_stage_close(b, NULL), 0);

    struct chain c;
    read_chain(&c);
    ASSERT_UEQ(c.end, b_last);
    ASSERT_EQ(c.off, 0);
    check_control(&c, 1, 1, 0);
    for (uint64_t s = 2; s <= a_last; s++)
        check_commit(&c, s, 'A', s - 2, 1);
    check_control(&c, a_last + 1, 2, a_last);
    for (uint64_t s = a_last + 2; s <= b_last; s++)
        check_commit(&c, s, 'B', s - ib.first_seq, 2);
    /* Every object of A is still there, unchanged (the same ETag). */
    struct keylist after;
    tx_list_all(x, PREFIX "log/", &after);
    size_t j = 0;
    for (size_t i = 0; i < before.n; i++) {
        while (j < after.n && strcmp(after.keys[j], before.keys[i]) < 0)
            j++;
        if (j == after.n || strcmp(after.keys[j], before.keys[i]) != 0)
            TEST_FAIL_("%s is gone after the restart", before.keys[i]);
        ASSERT_STR_EQ(after.etags[j], before.etags[i]);
    }
    struct manifest m = read_manifest();
    ASSERT_UEQ(m.epoch, 2);
    ASSERT_UEQ(m.durable_seq, b_last);
    keylist_free(&before);
    keylist_free(&after);
    chain_free(&c);
    test_xport_free(x);
    test_mock_stop(&mock);
}

/* ---- 3. ambiguous retry ---------------------------------------------------------------- */

/* The data PUT is stored, then answered 500: the retry's If-None-Match finds the key taken,
 * reads it back, finds our bytes: one object, holding our commits, no failure. */
static void ambiguous_retry_settles_ours(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":5,\"retry_base_delay_ms\":50,"
                               "\"max_in_flight_requests\":1,\"target_pool_size\":1," QUIET_MW);
    reset_mock_stats();
    mock_faults(&mock, "{\"written_error_rate\":1,\"key_prefix\":\"" PREFIX "log/\"}");
    uint64_t last = submit_tagged(st, 'S', 0, 1, 333); /* one batch: PUTs are countable */
    ASSERT_WITHIN(5000, mock_op_count(&mock, "PutObject", 500) >= 1);
    mock_faults(&mock, "{\"written_error_rate\":0,\"key_prefix\":\"\"}");
    ASSERT_EQ(s3c_wait_durable(st, last, 5000), 0);
    struct s3c_stats s = stats_of(st);
    ASSERT_EQ(mock_op_count(&mock, "PutObject", 500), 1);
    ASSERT_EQ(mock_op_count(&mock, "PutObject", 412), 1);
    ASSERT_EQ(mock_op_count(&mock, "PutObject", 200), 0);
    ASSERT_UEQ(s.settled_ours, 1);
    ASSERT_UEQ(s.batches_sent, 1);
    ASSERT_EQ(s.failed, 0);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    struct chain c;
    read_chain(&c);
    ASSERT_EQ(c.n, 2); /* the control record and one data object */
    ASSERT_UEQ(c.end, last);
    ASSERT_UEQ(c.o[1].h.first_seq, 2);
    ASSERT_UEQ(c.o[1].h.last_seq, 2);
    for (uint64_t q = 2; q <= last; q++)
        check_commit(&c, q, 'S', q - 2, 1);
    chain_free(&c);
    test_mock_stop(&mock);
}

/* ---- 9. a version-1 prefix ------------------------------------------------------------ */

static void v1_prefix_refused(void)
{
    start_mock();
    const char *key = PREFIX "0000000001/00000000000000000001-00000000000000000010.s3c";
    char path[256], out[2048], err[1024];
    snprintf(path, sizeof(path), "/commits/%s", key);
    ASSERT_EQ(mockproc_http(&mock, "PUT", path, "old v1 bytes", out, sizeof(out)), 200);
    s3c_config *cfg = mkcfg(QUIET_MW, "");
    s3c_stage *st = NULL;
    ASSERT_EQ(s3c_stage_open(cfg, &st, err, sizeof(err)), S3C_EFORMAT);
    ASSERT(st == NULL);
    if (!strstr(err, key) || !strstr(err, "s3.prefix"))
        TEST_FAIL_("the message names neither the key nor the fix: %s", err);
    s3c_config_free(cfg);
    /* Nothing was written: no manifest, no log. */
    ASSERT_EQ(mock_op_count(&mock, "PutObject", 0), 1);
    test_mock_stop(&mock);
}

/* ---- 10. conditional_writes=false ------------------------------------------------------- */

static struct {
    pthread_mutex_t mu;
    int warnings, fencing_off;
} logsink = {PTHREAD_MUTEX_INITIALIZER, 0, 0};

static void sink(void *ctx, enum s3c_log_level level, const char *msg)
{
    (void)ctx;
    pthread_mutex_lock(&logsink.mu);
    if (level <= S3C_LOG_WARN) {
        logsink.warnings++;
        if (strstr(msg, "conditional_writes"))
            logsink.fencing_off++;
    }
    pthread_mutex_unlock(&logsink.mu);
    if (getenv("S3C_TEST_LOG"))
        s3c_log_stderr(NULL, level, msg);
}

static void restore_log(void)
{
    if (getenv("S3C_TEST_LOG"))
        s3c_set_log(s3c_log_stderr, NULL, S3C_LOG_DEBUG);
    else
        s3c_set_log(NULL, NULL, S3C_LOG_ERROR);
}

static void unconditional_store_continues(void)
{
    start_mock();
    const char *cfg = "\"batch_timeout_ms\":2,\"batch_size_threshold\":4," QUIET_MW;
    const char *s3 = "\"conditional_writes\":false";
    uint64_t last = 0;
    for (int run = 0; run < 2; run++) {
        s3c_set_log(sink, NULL, S3C_LOG_DEBUG);
        logsink.warnings = logsink.fencing_off = 0;
        s3c_stage *st = open_stage2(cfg, s3);
        pthread_mutex_lock(&logsink.mu);
        ASSERT_EQ(logsink.fencing_off, 1);
        ASSERT_EQ(logsink.warnings, 1);
        pthread_mutex_unlock(&logsink.mu);
        struct s3c_stage_info in = info_of(st);
        ASSERT_UEQ(in.epoch, (uint64_t)run + 1);
        ASSERT_UEQ(in.recovered_seq, last);
        uint64_t l = submit_tagged(st, run ? 'D' : 'C', 0, 20, 40);
        ASSERT_EQ(s3c_wait_durable(st, l, 5000), 0);
        ASSERT_EQ(s3c_stage_close(st, NULL), 0);
        pthread_mutex_lock(&logsink.mu);
        ASSERT_EQ(logsink.warnings, 1); /* one warning, at the start */
        pthread_mutex_unlock(&logsink.mu);
        restore_log();
        last = l;
    }
    struct chain c;
    read_chain(&c);
    ASSERT_UEQ(c.end, last);
    ASSERT_EQ(c.off, 0);
    check_control(&c, 1, 1, 0);
    for (uint64_t s = 2; s <= 21; s++)
        check_commit(&c, s, 'C', s - 2, 1);
    check_control(&c, 22, 2, 21);
    for (uint64_t s = 23; s <= last; s++)
        check_commit(&c, s, 'D', s - 23, 2);
    chain_free(&c);
    test_mock_stop(&mock);
}

/* ---- 2. two writers ----------------------------------------------------------------- */

struct producer {
    s3c_stage *st;
    uint64_t first;
    _Atomic uint64_t k;  /* commits submitted */
    int burst, pause_ms; /* a pause after each burst commits (0: none) */
    int rc;
};

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    char buf[256];
    for (;;) { /* until a submit fails: the fence */
        uint64_t k = atomic_load(&p->k), seq;
        size_t n = mkpayload('A', k, 120, buf);
        int rc = s3c_submit(p->st, buf, n, 1000, &seq);
        if (rc == S3C_ETIMEDOUT)
            continue;
        if (rc != 0) {
            p->rc = rc;
            break;
        }
        ASSERT_UEQ(seq, p->first + k);
        atomic_store(&p->k, k + 1);
        sleep_ms(p->burst && (k + 1) % (uint64_t)p->burst == 0 ? p->pause_ms : 1);
    }
    return NULL;
}

/* A writes continuously (20-50 ms per data PUT, so several overlap); B opens on the same
 * prefix. A fails with S3C_EFENCED within seconds; everything A acknowledged is on the
 * chain with A's bytes, and nothing past B's fence was acknowledged; B goes on.
 * by_data: A never writes its manifest (so B's epoch cannot reach it that way) and pauses
 * between bursts (so B's fence can stand): A must learn from the 412 its data PUT meets at
 * B's fence. Otherwise A writes its manifest every 200 ms, which B's epoch fails first. */
static void two_writers(bool by_data)
{
    start_mock();
    const char *cfg = by_data ? "\"batch_timeout_ms\":2,\"batch_size_threshold\":20,"
                                "\"max_in_flight_requests\":4,\"target_pool_size\":4," QUIET_MW
                              : "\"batch_timeout_ms\":2,\"batch_size_threshold\":20,"
                                "\"max_in_flight_requests\":4,\"target_pool_size\":4,"
                                "\"manifest_interval_ms\":200,"
                                "\"writer_heartbeat_interval_ms\":1000";
    s3c_stage *a = open_stage(cfg);
    struct events ev = {0};
    ASSERT_EQ(s3c_subscribe(a, on_durable, &ev), 0);
    mock_faults(&mock, "{\"latency_ms\":20,\"latency_jitter_ms\":30,"
                       "\"key_prefix\":\"" PREFIX "log/\"}");
    struct producer p = {
        .st = a, .first = info_of(a).first_seq, .burst = by_data ? 30 : 0, .pause_ms = 300};
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, producer_main, &p), 0);
    ASSERT_WITHIN(10000, atomic_load(&ev.last) >= 100);

    s3c_stage *b = open_stage(cfg);
    uint64_t t_open = s3c__now_ms();
    struct s3c_stage_info ib = info_of(b);
    ASSERT_UEQ(ib.epoch, 2);
    ASSERT_UEQ(ib.control_seq, ib.recovered_seq + 1);
    /* A hears of it within a bounded time, by its next data PUT or manifest write. */
    ASSERT_WITHIN(5000, atomic_load(&ev.errors) > 0);
    uint64_t took = s3c__now_ms() - t_open;
    ASSERT_EQ(atomic_load(&ev.err_code), S3C_EFENCED);
    pthread_join(t, NULL); /* its next submit answers the failure */
    ASSERT_EQ(p.rc, S3C_EFENCED);
    uint64_t a_w = s3c_durable_seq(a);
    ASSERT_UEQ(atomic_load(&ev.last), a_w);
    ASSERT_EQ(atomic_load(&ev.backwards), 0);
    struct s3c_stats sa = stats_of(a);
    ASSERT_EQ(sa.fenced, 1);
    ASSERT_EQ(sa.failed, 1);
    ASSERT_EQ(s3c_wait_durable(a, p.first + atomic_load(&p.k), 5000), S3C_EFENCED);
    ASSERT_LT(a_w, ib.control_seq); /* nothing past B's fence was acknowledged */
    uint64_t sub;
    ASSERT_EQ(s3c_submit(a, "x", 1, 100, &sub), S3C_EFENCED);
    if (by_data && !strstr(sa.last_error, "written by epoch 2"))
        TEST_FAIL_("A was not fenced by its data PUT: %s", sa.last_error);
    fprintf(stderr,
            "   A: %llu commits submitted, W %llu, fenced %llu ms after B opened at "
            "%llu\n",
            (unsigned long long)atomic_load(&p.k), (unsigned long long)a_w,
            (unsigned long long)took, (unsigned long long)ib.control_seq);

    /* B keeps working, over whatever A left in flight. */
    uint64_t b_last = submit_tagged(b, 'B', 0, 150, 90);
    ASSERT_EQ(s3c_wait_durable(b, b_last, 10000), 0);
    b_last = submit_tagged(b, 'B', 150, 50, 90);
    ASSERT_EQ(s3c_wait_durable(b, b_last, 10000), 0);
    ASSERT_EQ(stats_of(b).failed, 0);
    mock_faults(&mock, "{\"latency_ms\":0,\"latency_jitter_ms\":0,\"key_prefix\":\"\"}");
    ASSERT_EQ(s3c_stage_close(a, NULL), S3C_EFENCED);
    ASSERT_EQ(s3c_stage_close(b, NULL), 0);

    struct chain c;
    read_chain(&c);
    ASSERT_UEQ(c.end, b_last);
    check_control(&c, 1, 1, 0);
    /* A's commits up to B's fence (acknowledged up to a_w, the rest landed unacknowledged)
     * are A's bytes, in A's order. */
    for (uint64_t s = 2; s <= ib.recovered_seq; s++)
        check_commit(&c, s, 'A', s - p.first, 1);
    check_control(&c, ib.control_seq, 2, ib.recovered_seq);
    for (uint64_t s = ib.first_seq; s <= b_last; s++)
        check_commit(&c, s, 'B', s - ib.first_seq, 2);
    struct manifest m = read_manifest();
    ASSERT_UEQ(m.epoch, 2);
    ASSERT_UEQ(m.durable_seq, b_last);
    chain_free(&c);
    test_mock_stop(&mock);
}

static void second_writer_fences_first(void)
{
    two_writers(false);
}

static void second_writer_fences_by_data(void)
{
    two_writers(true);
}

/* ---- 4. orphans ------------------------------------------------------------------------- */

/* Runs `s3commit verify` on PREFIX: its exit status, and its summary's numbers. */
static int run_verify(long *orphans, long *beyond, long *commits, bool *ok)
{
    const char *bin = getenv("S3C_BIN_DIR");
    if (!bin)
        TEST_FAIL_("S3C_BIN_DIR is not set (run through ctest)");
    char path[] = "/tmp/s3c-writer-verify-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    char json[1024], cmd[2048], out[65536];
    int n = snprintf(json, sizeof(json),
                     "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"" PREFIX
                     "\",\"region\":\"us-east-1\",\"access_key_id\":\"" AK "\","
                     "\"secret_access_key\":\"" SK "\"}}",
                     mock.endpoint);
    ASSERT_EQ(write(fd, json, (size_t)n), n);
    close(fd);
    snprintf(cmd, sizeof(cmd), "'%s/s3commit' verify --config '%s' 2>/dev/null", bin, path);
    FILE *f = popen(cmd, "r");
    ASSERT(f);
    size_t got = fread(out, 1, sizeof(out) - 1, f);
    out[got] = 0;
    int st = pclose(f);
    unlink(path);
    cJSON *j = cJSON_Parse(out);
    if (!j)
        TEST_FAIL_("verify printed no JSON: %s", out);
    *orphans = (long)cJSON_GetObjectItem(j, "orphans")->valuedouble;
    *beyond = (long)cJSON_GetObjectItem(j, "beyond_end")->valuedouble;
    *commits = (long)cJSON_GetObjectItem(j, "commits")->valuedouble;
    *ok = cJSON_IsTrue(cJSON_GetObjectItem(j, "ok"));
    cJSON_Delete(j);
    fprintf(stderr, "   verify: %s", out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static enum xport_class head_class(struct xport *x, const char *key)
{
    struct op o = {0};
    ASSERT_EQ(xport_head(x, key, op_done, &o), 0);
    op_wait(x, &o);
    return o.cls;
}

/* A (epoch 1, one commit per object) has three large PUTs on the wire, their bodies
 * trickling in at 100 KB/s, when B opens and fences at A's end: A's first one meets B's
 * fence (412, read back: fenced), the two after it land late beyond the fence as orphans
 * of epoch 1. verify reports them; B's chain reaches their keys and replaces them. (The
 * mock reads what a socket already holds in one go, up to 256 KiB, before it knows the
 * request is throttled: the commits are larger than that. A's client, its body in the
 * socket buffers, waits for the answer longer than the default low-speed limit allows.) */
static void orphans_replaced(void)
{
    start_mock();
    cfg_ring_bytes = 4 << 20;
    cfg_max_commit = 1 << 20;
    const char *cfg = "\"batch_timeout_ms\":1,\"batch_size_threshold\":1,"
                      "\"max_in_flight_requests\":4,\"target_pool_size\":4," QUIET_MW;
    s3c_stage *a = open_stage2(cfg, "\"low_speed_time_ms\":30000");
    uint64_t a_w = submit_tagged(a, 'A', 0, 3, 30); /* seqs 2..4 */
    ASSERT_EQ(s3c_wait_durable(a, a_w, 5000), 0);
    mock_faults(&mock, "{\"bandwidth_bytes_per_s\":100000,\"key_prefix\":\"" PREFIX "log/\"}");
    uint64_t sent = stats_of(a).put_attempts;
    uint64_t a_last = submit_tagged(a, 'A', 3, 3, 400000); /* seqs 5..7, 1.5-4 s each */
    ASSERT_WITHIN(5000, stats_of(a).put_attempts >= sent + 3);

    s3c_stage *b = open_stage(cfg);
    struct s3c_stage_info ib = info_of(b);
    ASSERT_UEQ(ib.epoch, 2);
    ASSERT_UEQ(ib.recovered_seq, a_w); /* A's large objects were not there yet */
    ASSERT_EQ(s3c_wait_durable(a, a_last, 10000), S3C_EFENCED);
    ASSERT_EQ(stats_of(a).fenced, 1);
    ASSERT_UEQ(s3c_durable_seq(a), a_w);
    struct xport *x = tx_new();
    char key[OBJ_KEY_MAX];
    for (uint64_t s = ib.control_seq + 1; s <= a_last; s++) {
        obj_key(key, sizeof(key), PREFIX, s);
        ASSERT_WITHIN(10000, head_class(x, key) == XPORT_OK); /* landed late */
    }
    ASSERT_EQ(s3c_stage_close(a, NULL), S3C_EFENCED);
    mock_faults(&mock, "{\"bandwidth_bytes_per_s\":0,\"key_prefix\":\"\"}");

    /* The state with orphans beyond the chain's end: verify tells them apart, exit 0. */
    long orphans, beyond, commits;
    bool ok;
    ASSERT_EQ(run_verify(&orphans, &beyond, &commits, &ok), 0);
    ASSERT(ok);
    /* Each in one of the two (verify counts the one at the chain's next key as an orphan
     * that ends the chain, or as past the end: both are right). */
    ASSERT_EQ(orphans + beyond, (long)(a_last - ib.control_seq));
    ASSERT_EQ(commits, 3);
    struct chain c;
    read_chain(&c);
    ASSERT_UEQ(c.end, ib.control_seq);
    ASSERT_EQ(c.orphans_ended, 1);
    ASSERT_EQ(c.off, (size_t)(a_last - ib.control_seq));
    chain_free(&c);

    /* B's chain reaches the orphans' keys (one commit per object): it replaces them. */
    uint64_t b_last = submit_tagged(b, 'B', 0, 4, 50);
    ASSERT_EQ(s3c_wait_durable(b, b_last, 5000), 0);
    struct s3c_stats sb = stats_of(b);
    ASSERT_UEQ(sb.orphans_replaced, a_last - ib.control_seq);
    ASSERT_EQ(sb.failed, 0);
    ASSERT_EQ(s3c_stage_close(b, NULL), 0);
    read_chain(&c);
    ASSERT_UEQ(c.end, b_last);
    ASSERT_EQ(c.off, 0);
    check_control(&c, 1, 1, 0);
    for (uint64_t s = 2; s <= a_w; s++)
        check_commit(&c, s, 'A', s - 2, 1);
    check_control(&c, ib.control_seq, 2, a_w);
    for (uint64_t s = ib.first_seq; s <= b_last; s++)
        check_commit(&c, s, 'B', s - ib.first_seq, 2);
    chain_free(&c);
    ASSERT_EQ(run_verify(&orphans, &beyond, &commits, &ok), 0);
    ASSERT(ok);
    ASSERT_EQ(orphans + beyond, 0);
    ASSERT_EQ(commits, (long)(a_w - 1 + b_last - ib.control_seq));
    test_xport_free(x);
    test_mock_stop(&mock);
    cfg_ring_bytes = 1048576;
    cfg_max_commit = 65536;
}

/* ---- 5. manifest coalescing -------------------------------------------------------------- */

/* W moves every few ms for ~2 s with manifest_interval_ms=200: at most one manifest write
 * per interval (counted by the stage, and by the mock through a 1 ms latency fault on the
 * manifest's key alone), the rest folded in (manifest_writes_saved). */
static void manifest_coalesced(void)
{
    start_mock();
    const int interval = 200;
    s3c_stage *st = open_stage("\"batch_timeout_ms\":1,\"max_in_flight_requests\":2,"
                               "\"target_pool_size\":2,\"manifest_interval_ms\":200,"
                               "\"writer_heartbeat_interval_ms\":3600000");
    struct s3c_stats s0 = stats_of(st);
    ASSERT_UEQ(s0.manifest_writes, 1); /* the open's: it names our fence */
    mock_faults(&mock, "{\"latency_ms\":1,\"key_prefix\":\"" PREFIX "manifest.json\"}");
    reset_mock_stats();
    uint64_t t0 = s3c__now_ms(), moves = 0, k = 0, last = 0;
    while (s3c__now_ms() - t0 < 2000) {
        last = submit_tagged(st, 'M', k++, 1, 20);
        ASSERT_EQ(s3c_wait_durable(st, last, 2000), 0);
        moves++;
        sleep_ms(2);
    }
    sleep_ms(interval + 100); /* the last move's write, then quiet */
    uint64_t took = s3c__now_ms() - t0;
    struct s3c_stats s1 = stats_of(st);
    long man_requests = mock_stat(&mock, "faults.latency");
    long puts = mock_op_count(&mock, "PutObject", 0);
    uint64_t writes = s1.manifest_writes - s0.manifest_writes;
    fprintf(stderr, "   %llu W moves in %llu ms: %llu manifest writes, %llu saved\n",
            (unsigned long long)moves, (unsigned long long)took, (unsigned long long)writes,
            (unsigned long long)s1.manifest_writes_saved);
    ASSERT_GT(moves, 100);
    ASSERT_LE(writes, took / interval + 1);
    ASSERT_GE(writes, 3); /* coalesced, not starved */
    ASSERT_UEQ(s1.manifest_failures, 0);
    ASSERT_EQ(man_requests, (long)writes);                               /* the mock agrees */
    ASSERT_EQ(puts, (long)(writes + s1.put_attempts - s0.put_attempts)); /* and no heartbeat */
    ASSERT_GT(s1.manifest_writes_saved, 0);
    ASSERT_GE(s1.manifest_writes_saved + writes, moves); /* every move written or folded */
    ASSERT_UEQ(s1.manifest_durable_seq, last);
    ASSERT_UEQ(s1.manifest_unsaved, 0);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    ASSERT_UEQ(read_manifest().durable_seq, last);
    test_mock_stop(&mock);
}

/* ---- 6. each channel fails alone --------------------------------------------------------- */

/* Commits for ms milliseconds, each waited for: data must keep becoming durable. */
static void commit_for(s3c_stage *st, int ms, uint64_t *k)
{
    uint64_t t0 = s3c__now_ms();
    while (s3c__now_ms() - t0 < (uint64_t)ms) {
        uint64_t seq = submit_tagged(st, 'F', (*k)++, 1, 20);
        ASSERT_EQ(s3c_wait_durable(st, seq, 2000), 0);
        sleep_ms(5);
    }
}

static bool manifest_caught_up(s3c_stage *st)
{
    struct s3c_stats s = stats_of(st);
    return s.manifest_unsaved == 0 && s.manifest_last_error[0] == '\0';
}

static bool heartbeat_recovered(s3c_stage *st)
{
    return stats_of(st).heartbeat_last_error[0] == '\0';
}

static void channels_fail_alone(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":1,\"max_in_flight_requests\":2,"
                               "\"target_pool_size\":2,\"manifest_interval_ms\":50,"
                               "\"writer_heartbeat_interval_ms\":100,"
                               "\"retry_base_delay_ms\":20,\"max_retry_delay_ms\":100");
    uint64_t k = 0;
    /* The manifest fails: data goes on, the heartbeat goes on, the manifest falls behind. */
    mock_faults(&mock, "{\"error_rate\":1,\"error_status\":503,"
                       "\"key_prefix\":\"" PREFIX "manifest.json\"}");
    struct s3c_stats s0 = stats_of(st);
    commit_for(st, 800, &k);
    struct s3c_stats s1 = stats_of(st);
    ASSERT_EQ(s1.failed, 0);
    ASSERT_EQ(s1.fenced, 0);
    ASSERT_GE(s1.manifest_failures, s0.manifest_failures + 2);
    ASSERT_UEQ(s1.manifest_writes, s0.manifest_writes);
    ASSERT_GT(s1.manifest_unsaved, 0);
    if (!strstr(s1.manifest_last_error, "503") && !strstr(s1.manifest_last_error, "SlowDown"))
        TEST_FAIL_("manifest_last_error: \"%s\"", s1.manifest_last_error);
    ASSERT_GE(s1.heartbeat_writes, s0.heartbeat_writes + 3);
    ASSERT_UEQ(s1.heartbeat_failures, s0.heartbeat_failures);
    ASSERT_EQ(s1.heartbeat_last_error[0], '\0');
    mock_faults(&mock, "{\"error_rate\":0,\"key_prefix\":\"\"}");
    ASSERT_WITHIN(3000, manifest_caught_up(st));

    /* The heartbeat fails: data goes on, the manifest goes on, the heartbeat is retried. */
    mock_faults(&mock, "{\"error_rate\":1,\"error_status\":503,"
                       "\"key_prefix\":\"" PREFIX "writers/\"}");
    struct s3c_stats s2 = stats_of(st);
    commit_for(st, 800, &k);
    struct s3c_stats s3 = stats_of(st);
    ASSERT_EQ(s3.failed, 0);
    ASSERT_GE(s3.heartbeat_failures, s2.heartbeat_failures + 2);
    ASSERT_UEQ(s3.heartbeat_writes, s2.heartbeat_writes);
    ASSERT(s3.heartbeat_last_error[0] != '\0');
    ASSERT_GE(s3.manifest_writes, s2.manifest_writes + 3);
    ASSERT_UEQ(s3.manifest_failures, s2.manifest_failures);
    ASSERT_EQ(s3.manifest_last_error[0], '\0');
    ASSERT_GT(s3.heartbeat_age_ms, 300);
    mock_faults(&mock, "{\"error_rate\":0,\"key_prefix\":\"\"}");
    ASSERT_WITHIN(3000, heartbeat_recovered(st));
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    test_mock_stop(&mock);
}

/* ---- 7. a 412 on the manifest ------------------------------------------------------------ */

static bool manifest_at(s3c_stage *st, uint64_t w)
{
    return stats_of(st).manifest_durable_seq == w;
}

/* Someone writes the manifest with a newer epoch: our next manifest write meets a 412, reads
 * it back and finds the newer epoch: fenced, and the manifest is left as they wrote it. */
static void manifest_newer_epoch_fences(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":1,\"manifest_interval_ms\":50,"
                               "\"writer_heartbeat_interval_ms\":3600000");
    struct events ev = {0};
    ASSERT_EQ(s3c_subscribe(st, on_durable, &ev), 0);
    uint64_t w = submit_tagged(st, 'N', 0, 1, 10);
    ASSERT_EQ(s3c_wait_durable(st, w, 5000), 0);
    ASSERT_WITHIN(3000, manifest_at(st, w));
    struct manifest m = read_manifest();
    ASSERT_UEQ(m.epoch, 1);
    m.epoch = 7;
    snprintf(m.writer, sizeof(m.writer), "someone-else:1:0");
    char body[MANIFEST_MAX_BYTES], out[2048];
    ASSERT_GT(manifest_encode(&m, body, sizeof(body)), 0);
    ASSERT_EQ(
        mockproc_http(&mock, "PUT", "/commits/" PREFIX "manifest.json", body, out, sizeof(out)),
        200);
    submit_tagged(st, 'N', 1, 1, 10); /* W moves: the manifest is due */
    ASSERT_WITHIN(3000, stats_of(st).fenced == 1);
    ASSERT_WITHIN(1000, atomic_load(&ev.errors) > 0);
    ASSERT_EQ(atomic_load(&ev.err_code), S3C_EFENCED);
    uint64_t seq;
    ASSERT_EQ(s3c_submit(st, "x", 1, 100, &seq), S3C_EFENCED);
    ASSERT(strstr(stats_of(st).last_error, "fenced"));
    ASSERT_EQ(s3c_stage_close(st, NULL), S3C_EFENCED);
    struct manifest after = read_manifest();
    ASSERT_UEQ(after.epoch, 7); /* a fenced writer never writes it again */
    ASSERT_STR_EQ(after.writer, "someone-else:1:0");
    test_mock_stop(&mock);
}

/* Our own manifest write is stored, then answered 500: the retry's If-Match names the old
 * ETag (412), the read-back finds our own epoch: no fence, and the manifest catches up. */
static void manifest_own_412_continues(void)
{
    start_mock();
    s3c_stage *st = open_stage("\"batch_timeout_ms\":1,\"manifest_interval_ms\":50,"
                               "\"writer_heartbeat_interval_ms\":3600000,"
                               "\"retry_base_delay_ms\":20,\"max_retry_delay_ms\":100");
    mock_faults(&mock, "{\"written_error_rate\":1,\"key_prefix\":\"" PREFIX "manifest.json\"}");
    reset_mock_stats();
    uint64_t w = submit_tagged(st, 'O', 0, 5, 10);
    ASSERT_EQ(s3c_wait_durable(st, w, 5000), 0);
    ASSERT_WITHIN(3000, manifest_at(st, w));
    ASSERT_GE(mock_stat(&mock, "faults.written_error"), 1);
    ASSERT_GE(mock_op_count(&mock, "PutObject", 412), 1);
    struct s3c_stats s = stats_of(st);
    ASSERT_EQ(s.fenced, 0);
    ASSERT_EQ(s.failed, 0);
    ASSERT_GE(s.manifest_failures, 1);
    struct manifest m = read_manifest();
    ASSERT_UEQ(m.epoch, 1);
    ASSERT_UEQ(m.durable_seq, w);
    /* Lifted: more moves, written normally. */
    mock_faults(&mock, "{\"written_error_rate\":0,\"key_prefix\":\"\"}");
    w = submit_tagged(st, 'O', 5, 5, 10);
    ASSERT_EQ(s3c_wait_durable(st, w, 5000), 0);
    ASSERT_WITHIN(3000, manifest_caught_up(st) && manifest_at(st, w));
    ASSERT_EQ(stats_of(st).fenced, 0);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    ASSERT_UEQ(read_manifest().durable_seq, w);
    test_mock_stop(&mock);
}

/* ---- 8. a large prefix opens from the manifest's hint -------------------------------------- */

struct bulk {
    struct xport *x;
    int in_flight;
    long failed;
};

struct bulk_put {
    struct bulk *b;
    unsigned char buf[OBJ_HEADER_BYTES + OBJ_RECORD_HEADER_BYTES + 128 + OBJ_TRAILER_BYTES];
    struct iovec v;
    char key[OBJ_KEY_MAX];
};

static void bulk_done(void *ctx, const struct xport_result *r)
{
    struct bulk_put *p = ctx;
    p->b->in_flight--;
    if (r->cls != XPORT_OK)
        p->b->failed++;
    free(p);
}

/* One valid v2 object holding the single record seq (a control record when control). */
static size_t encode_one(unsigned char *out, uint64_t seq, uint64_t epoch, bool control)
{
    char payload[128];
    int n = control ? snprintf(payload, sizeof(payload),
                               "{\"type\":\"epoch_start\",\"epoch\":%llu,\"writer\":\"test\","
                               "\"found_durable_seq\":%llu}",
                               (unsigned long long)epoch, (unsigned long long)seq - 1)
                    : snprintf(payload, sizeof(payload), "commit %llu", (unsigned long long)seq);
    struct obj_header h = {.version = OBJ_VERSION,
                           .flags = control ? OBJ_FLAG_EPOCH_START : 0,
                           .count = 1,
                           .first_seq = seq,
                           .last_seq = seq,
                           .epoch = epoch};
    size_t off = 0;
    obj_header_encode(&h, out);
    off += OBJ_HEADER_BYTES;
    obj_record_header_encode((uint32_t)n, crc32c_update(0, payload, (size_t)n), seq, out + off);
    off += OBJ_RECORD_HEADER_BYTES;
    memcpy(out + off, payload, (size_t)n);
    off += (size_t)n;
    obj_trailer_encode(crc32c_update(0, out, off), out + off);
    return off + OBJ_TRAILER_BYTES;
}

static void *calm_after_300ms(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    mock_faults(&mock, "{\"error_rate\":0,\"key_prefix\":\"\"}");
    return NULL;
}

static void large_prefix_opens_from_hint(void)
{
    start_mock();
    const uint64_t N = 10000;
    struct xport *x = tx_new();
    struct bulk b = {.x = x};
    uint64_t t0 = s3c__now_ms();
    for (uint64_t s = 1; s <= N; s++) {
        while (b.in_flight >= 16)
            ASSERT_EQ(test_xport_poll(x, 100) < 0, 0);
        struct bulk_put *p = calloc(1, sizeof(*p));
        ASSERT(p);
        p->b = &b;
        p->v = (struct iovec){p->buf, encode_one(p->buf, s, 1, s == 1)};
        obj_key(p->key, sizeof(p->key), PREFIX, s);
        struct xport_put put = {.key = p->key, .iov = &p->v, .iovcnt = 1};
        ASSERT_EQ(xport_put(x, &put, bulk_done, p), 0);
        b.in_flight++;
    }
    ASSERT_EQ(xport_drain(x, 30000), 0);
    ASSERT_EQ(b.failed, 0);
    struct manifest m = {.format = MANIFEST_FORMAT,
                         .epoch = 1,
                         .durable_seq = N,
                         .durable_first_seq = N,
                         .start_epoch = 1,
                         .max_batch_commits = 1,
                         .started_at_ms = 1,
                         .updated_at_ms = 1};
    snprintf(m.writer, sizeof(m.writer), "test:1:0");
    char body[MANIFEST_MAX_BYTES];
    int n = manifest_encode(&m, body, sizeof(body));
    ASSERT_GT(n, 0);
    ASSERT_EQ(tx_put(x, PREFIX "manifest.json", body, (size_t)n), XPORT_OK);
    test_xport_free(x);
    uint64_t t_fill = s3c__now_ms() - t0;

    /* With a current manifest: a handful of requests, not ~10,000. */
    reset_mock_stats();
    t0 = s3c__now_ms();
    s3c_stage *st = open_stage(QUIET_MW);
    uint64_t t_hint = s3c__now_ms() - t0;
    struct s3c_stage_info in = info_of(st);
    ASSERT_UEQ(in.epoch, 2);
    ASSERT_UEQ(in.recovered_seq, N);
    long lists = mock_op_count(&mock, "ListObjectsV2", 0);
    long gets = mock_op_count(&mock, "GetObject", 0);
    ASSERT_LE(lists, 2);
    ASSERT_LE(gets, 4);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    uint64_t end = in.control_seq; /* the chain now ends at our fence */

    /* Without it: found by listing the whole log, to the same end. */
    char out[1024];
    ASSERT_EQ(
        mockproc_http(&mock, "DELETE", "/commits/" PREFIX "manifest.json", NULL, out, sizeof(out)),
        204);
    reset_mock_stats();
    t0 = s3c__now_ms();
    st = open_stage(QUIET_MW);
    uint64_t t_list = s3c__now_ms() - t0;
    in = info_of(st);
    ASSERT_UEQ(in.recovered_seq, end);
    ASSERT_UEQ(in.epoch, 3); /* above the chain's, though the manifest was gone */
    long lists2 = mock_op_count(&mock, "ListObjectsV2", 0);
    long gets2 = mock_op_count(&mock, "GetObject", 0);
    ASSERT_GE(lists2, 10);
    ASSERT_GE(gets2, (long)N);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    fprintf(stderr,
            "   filled in %llu ms; open with the hint %llu ms (%ld lists, %ld gets), "
            "by listing %llu ms (%ld lists, %ld gets)\n",
            (unsigned long long)t_fill, (unsigned long long)t_hint, lists, gets,
            (unsigned long long)t_list, lists2, gets2);

    /* The hint's object cannot be read (the store fails every GET of it): the open fails
     * and says why, at once. It used to take the failed read for a wrong hint and read
     * every header of the log from seq 1, from a store that was failing. */
    end = in.control_seq;
    m.epoch = 3;
    m.durable_seq = m.durable_first_seq = end;
    m.start_epoch = 3;
    n = manifest_encode(&m, body, sizeof(body));
    ASSERT_GT(n, 0);
    x = tx_new();
    ASSERT_EQ(tx_put(x, PREFIX "manifest.json", body, (size_t)n), XPORT_OK);
    test_xport_free(x);
    char key[OBJ_KEY_MAX], faults[OBJ_KEY_MAX + 128];
    obj_key(key, sizeof(key), PREFIX, end);
    snprintf(faults, sizeof(faults),
             "{\"error_rate\":1,\"error_status\":503,\"key_prefix\":\"%s\"}", key);
    mock_faults(&mock, faults);
    reset_mock_stats();
    s3c_config *cfg = mkcfg(QUIET_MW ",\"max_retry_attempts\":2,\"retry_base_delay_ms\":10", "");
    char err[1024];
    ASSERT_NE(s3c_stage_open(cfg, &st, err, sizeof(err)), 0);
    s3c_config_free(cfg);
    mock_faults(&mock, "{\"error_rate\":0,\"key_prefix\":\"\"}");
    long gets3 = mock_op_count(&mock, "GetObject", 0);
    fprintf(stderr, "   the hint's object unreadable: %ld gets, \"%s\"\n", gets3, err);
    ASSERT(strstr(err, "cannot read the manifest's last object") != NULL);
    ASSERT(strstr(err, key) != NULL);
    ASSERT_LE(gets3, 10);

    /* A storm of 300 ms on that object is ridden out: its reads back off as every other
     * request's do (at first they were sent again at once, and the open failed in a few
     * milliseconds). */
    mock_faults(&mock, faults);
    pthread_t calm;
    ASSERT_EQ(pthread_create(&calm, NULL, calm_after_300ms, NULL), 0);
    t0 = s3c__now_ms();
    st = open_stage(QUIET_MW ",\"max_retry_attempts\":10,\"retry_base_delay_ms\":100,"
                             "\"max_retry_delay_ms\":500");
    uint64_t t_storm = s3c__now_ms() - t0;
    pthread_join(calm, NULL);
    in = info_of(st);
    ASSERT_UEQ(in.recovered_seq, end);
    ASSERT_EQ(s3c_stage_close(st, NULL), 0);
    fprintf(stderr, "   the hint's object unreadable for 300 ms: opened in %llu ms\n",
            (unsigned long long)t_storm);
    ASSERT_GE(t_storm, 250);
    test_mock_stop(&mock);
}

/* S3C_TEST_ONLY=name runs one case (for debugging). */
#define RUN_CASE(fn)                                                                               \
    do {                                                                                           \
        const char *only_ = getenv("S3C_TEST_ONLY");                                               \
        if (!only_ || strcmp(only_, #fn) == 0) {                                                   \
            uint64_t t_ = s3c__now_ms();                                                           \
            RUN(fn);                                                                               \
            fprintf(stderr, "   %llu ms\n", (unsigned long long)(s3c__now_ms() - t_));             \
        }                                                                                          \
    } while (0)

int main(void)
{
    unsetenv("AWS_PROFILE");
    restore_log();
    uint64_t t0 = s3c__now_ms();
    RUN_CASE(restart_continues_log);
    RUN_CASE(ambiguous_retry_settles_ours);
    RUN_CASE(second_writer_fences_first);
    RUN_CASE(second_writer_fences_by_data);
    RUN_CASE(orphans_replaced);
    RUN_CASE(manifest_coalesced);
    RUN_CASE(channels_fail_alone);
    RUN_CASE(manifest_newer_epoch_fences);
    RUN_CASE(manifest_own_412_continues);
    RUN_CASE(large_prefix_opens_from_hint);
    RUN_CASE(v1_prefix_refused);
    RUN_CASE(unconditional_store_continues);
    fprintf(stderr, "-- all in %llu ms\n", (unsigned long long)(s3c__now_ms() - t0));
    return 0;
}
