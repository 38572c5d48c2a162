/* Fault injection and statistics of the mock: one seeded RNG (the same seed and the same
 * request order give the same choices), settings changed at run time through
 * PUT /_mock/faults, counters read through GET /_mock/stats. Never blocks a loop for long:
 * the lock is held only to draw numbers. */
#include "mock.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[OP_COUNT] = {
    [OP_LIST_BUCKETS] = "ListBuckets",
    [OP_CREATE_BUCKET] = "CreateBucket",
    [OP_DELETE_BUCKET] = "DeleteBucket",
    [OP_HEAD_BUCKET] = "HeadBucket",
    [OP_GET_BUCKET_LOCATION] = "GetBucketLocation",
    [OP_LIST_OBJECTS_V2] = "ListObjectsV2",
    [OP_LIST_OBJECTS] = "ListObjects",
    [OP_PUT_OBJECT] = "PutObject",
    [OP_GET_OBJECT] = "GetObject",
    [OP_HEAD_OBJECT] = "HeadObject",
    [OP_DELETE_OBJECT] = "DeleteObject",
    [OP_DELETE_OBJECTS] = "DeleteObjects",
    [OP_CONTROL] = "Control",
    [OP_BAD_REQUEST] = "BadRequest",
};

static const char *const fault_names[F_COUNT] = {
    [F_LATENCY] = "latency",     [F_ERROR] = "error",       [F_WRITTEN_ERROR] = "written_error",
    [F_RESET] = "reset",         [F_STALL] = "stall",       [F_SLOW_CLOSE] = "slow_close",
    [F_BANDWIDTH] = "bandwidth", [F_CONFLICT] = "conflict",
};

const char *op_name(enum op op)
{
    return op < OP_COUNT ? op_names[op] : "Unknown";
}

/* xoshiro256** seeded through splitmix64 */
static uint64_t mock_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t mock_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t mock_rng_next(uint64_t *s)
{
    uint64_t r = mock_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = mock_rotl(s[3], 45);
    return r;
}

static double mock_rng_unit(uint64_t *s)
{
    return (double)(mock_rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static bool faults_any(const struct faults *f)
{
    return f->latency_ms > 0 || f->latency_jitter_ms > 0 || f->error_rate > 0 ||
           f->written_error_rate > 0 || f->reset_rate > 0 || f->reset_next >= 1 ||
           f->stall_rate > 0 || f->slow_close > 0 || f->bandwidth_bytes_per_s > 0 ||
           f->conflict_rate > 0 || f->ignore_range;
}

void faults_init(struct mock *m, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        m->rng[i] = mock_splitmix(&x);
    for (int i = 0; i < 4; i++)
        m->rng_new[i] = mock_splitmix(&x);
    pthread_mutex_init(&m->fault_mu, NULL);
    atomic_store(&m->any_fault, faults_any(&m->faults));
}

void faults_plan(struct mock *m, struct fault_plan *p, const char *key, size_t klen, bool read)
{
    memset(p, 0, sizeof(*p));
    if (!atomic_load_explicit(&m->any_fault, memory_order_relaxed))
        return;
    pthread_mutex_lock(&m->fault_mu);
    struct faults *f = &m->faults;
    /* Always the same draws, in this order, so one rate never shifts another's choices.
     * The six original ones come from rng; kinds added later draw after them from rng_new,
     * so a seed gives the same original choices as before those kinds existed. */
    double d_stall = mock_rng_unit(m->rng), d_reset = mock_rng_unit(m->rng),
           d_err = mock_rng_unit(m->rng), d_werr = mock_rng_unit(m->rng),
           d_slow = mock_rng_unit(m->rng), d_jit = mock_rng_unit(m->rng);
    double d_conf = mock_rng_unit(m->rng_new);
    /* Outside key_prefix (or bucket-level): no fault, and reset_next is not counted down. */
    if ((f->key_prefix_len &&
         (!key || klen < f->key_prefix_len || memcmp(key, f->key_prefix, f->key_prefix_len))) ||
        (f->reads_only && !read)) {
        pthread_mutex_unlock(&m->fault_mu);
        return;
    }
    p->stall = d_stall < f->stall_rate;
    p->reset = !p->stall && d_reset < f->reset_rate;
    if (!p->stall && f->reset_next >= 1) { /* a one-shot reset, counted down */
        p->reset = true;
        f->reset_next -= 1;
        atomic_store(&m->any_fault, faults_any(f));
    }
    p->error = d_err < f->error_rate;
    p->written_error = !p->error && d_werr < f->written_error_rate;
    p->conflict = !p->error && d_conf < f->conflict_rate;
    p->slow_close = d_slow < f->slow_close;
    p->error_status = f->error_status;
    p->slow_close_ms = (uint32_t)f->slow_close_ms;
    double delay = f->latency_ms + d_jit * f->latency_jitter_ms;
    p->delay_ms = delay > 0 ? (uint32_t)llround(delay) : 0;
    p->bandwidth = f->bandwidth_bytes_per_s;
    p->ignore_range = f->ignore_range;
    pthread_mutex_unlock(&m->fault_mu);
}

struct knob {
    const char *name;
    size_t off;
    double min, max;
};

#define KNOB(n, lo, hi)                                                                            \
    {                                                                                              \
#n, offsetof(struct faults, n), lo, hi                                                     \
    }
/* clang-format off */
static const struct knob knobs[] = {
    KNOB(latency_ms, 0, 3600000),
    KNOB(latency_jitter_ms, 0, 3600000),
    KNOB(error_rate, 0, 1),
    KNOB(written_error_rate, 0, 1),
    KNOB(reset_rate, 0, 1),
    KNOB(reset_next, 0, 1000000),
    KNOB(stall_rate, 0, 1),
    KNOB(slow_close, 0, 1),
    KNOB(slow_close_ms, 0, 3600000),
    KNOB(bandwidth_bytes_per_s, 0, 1e12),
    KNOB(conflict_rate, 0, 1),
};
/* clang-format on */

int faults_apply_json(struct mock *m, const char *json, size_t len, char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    struct faults f;
    int rc = -1;
    bool locked = false;

    if (!root || !cJSON_IsObject(root)) {
        snprintf(err, errlen,
                 "faults: the body must be a JSON object such as "
                 "{\"error_rate\":0.1,\"error_status\":503}");
        goto out_free;
    }
    /* Held from the copy to the write-back, so a reset_next counted down meanwhile by a
     * request is not written back over. */
    pthread_mutex_lock(&m->fault_mu);
    locked = true;
    f = m->faults;
    for (cJSON *it = root->child; it; it = it->next) {
        const struct knob *k = NULL;
        for (size_t i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++)
            if (strcmp(it->string, knobs[i].name) == 0)
                k = &knobs[i];
        if (k) {
            if (!cJSON_IsNumber(it) || it->valuedouble < k->min || it->valuedouble > k->max) {
                snprintf(err, errlen, "faults: %s must be a number in [%g, %g]", k->name, k->min,
                         k->max);
                goto out_free;
            }
            *(double *)((char *)&f + k->off) = it->valuedouble;
        } else if (strcmp(it->string, "error_status") == 0) {
            if (!cJSON_IsNumber(it) ||
                (it->valueint != 500 && it->valueint != 503 && it->valueint != 403)) {
                snprintf(err, errlen, "faults: error_status must be 500, 503 or 403");
                goto out_free;
            }
            f.error_status = it->valueint;
        } else if (strcmp(it->string, "key_prefix") == 0) {
            /* a string of at most 1024 bytes (an S3 key's limit); "" or null: every key */
            const char *v = cJSON_IsNull(it) ? "" : cJSON_GetStringValue(it);
            if (!v || strlen(v) >= sizeof(f.key_prefix)) {
                snprintf(err, errlen,
                         "faults: key_prefix must be a string of at most 1024 bytes "
                         "(empty or null: every key)");
                goto out_free;
            }
            f.key_prefix_len = strlen(v);
            memcpy(f.key_prefix, v, f.key_prefix_len + 1);
        } else if (strcmp(it->string, "reads_only") == 0) {
            if (!cJSON_IsBool(it)) {
                snprintf(err, errlen, "faults: reads_only must be true or false");
                goto out_free;
            }
            f.reads_only = cJSON_IsTrue(it);
        } else if (strcmp(it->string, "ignore_range") == 0) {
            if (!cJSON_IsBool(it)) {
                snprintf(err, errlen, "faults: ignore_range must be true or false");
                goto out_free;
            }
            f.ignore_range = cJSON_IsTrue(it);
        } else {
            snprintf(
                err, errlen,
                "faults: unknown setting \"%s\" (known: latency_ms, latency_jitter_ms, "
                "error_rate, error_status, written_error_rate, reset_rate, reset_next, stall_rate, "
                "slow_close, slow_close_ms, bandwidth_bytes_per_s, conflict_rate, key_prefix, "
                "reads_only, ignore_range)",
                it->string);
            goto out_free;
        }
    }
    m->faults = f;
    atomic_store(&m->any_fault, faults_any(&f));
    rc = 0;
out_free:
    if (locked)
        pthread_mutex_unlock(&m->fault_mu);
    cJSON_Delete(root);
    return rc;
}

char *faults_json(struct mock *m)
{
    cJSON *o = cJSON_CreateObject();
    pthread_mutex_lock(&m->fault_mu);
    struct faults f = m->faults;
    pthread_mutex_unlock(&m->fault_mu);
    for (size_t i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++)
        cJSON_AddNumberToObject(o, knobs[i].name, *(double *)((char *)&f + knobs[i].off));
    cJSON_AddNumberToObject(o, "error_status", f.error_status);
    cJSON_AddStringToObject(o, "key_prefix", f.key_prefix);
    cJSON_AddBoolToObject(o, "reads_only", f.reads_only);
    cJSON_AddBoolToObject(o, "ignore_range", f.ignore_range);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static uint64_t mock_ld(atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

char *stats_json(struct mock *m)
{
    struct stats *st = &m->stats;
    cJSON *o = cJSON_CreateObject(), *ops = cJSON_AddObjectToObject(o, "ops");
    for (int op = 0; op < OP_COUNT; op++) {
        cJSON *byst = NULL;
        uint64_t total = 0;
        for (int s = 0; s < 600; s++) {
            uint64_t n = mock_ld(&st->status[op][s]);
            if (!n)
                continue;
            if (!byst) {
                cJSON *e = cJSON_AddObjectToObject(ops, op_name(op));
                byst = cJSON_AddObjectToObject(e, "status");
            }
            char k[8];
            snprintf(k, sizeof(k), "%d", s);
            cJSON_AddNumberToObject(byst, k, (double)n);
            total += n;
        }
        if (byst)
            cJSON_AddNumberToObject(cJSON_GetObjectItem(ops, op_name(op)), "count", (double)total);
    }
    cJSON_AddNumberToObject(o, "requests", (double)mock_ld(&st->requests));
    cJSON_AddNumberToObject(o, "bytes_in", (double)mock_ld(&st->bytes_in));
    cJSON_AddNumberToObject(o, "bytes_out", (double)mock_ld(&st->bytes_out));
    cJSON *fo = cJSON_AddObjectToObject(o, "faults");
    for (int i = 0; i < F_COUNT; i++)
        cJSON_AddNumberToObject(fo, fault_names[i], (double)mock_ld(&st->faults[i]));
    static const char *const digest_names[D_COUNT] = {[D_CONTENT_SHA256] = "content_sha256",
                                                      [D_UNSIGNED_PAYLOAD] = "unsigned_payload",
                                                      [D_MD5] = "md5",
                                                      [D_CRC32C] = "crc32c",
                                                      [D_CRC32] = "crc32",
                                                      [D_SHA256] = "sha256"};
    cJSON *dg = cJSON_AddObjectToObject(o, "digests");
    for (int i = 0; i < D_COUNT; i++)
        cJSON_AddNumberToObject(dg, digest_names[i], (double)mock_ld(&st->digests[i]));
    cJSON *co = cJSON_AddObjectToObject(o, "connections");
    cJSON_AddNumberToObject(co, "open", (double)atomic_load(&st->conns_open));
    cJSON_AddNumberToObject(co, "peak", (double)atomic_load(&st->conns_peak));
    cJSON_AddNumberToObject(co, "total", (double)mock_ld(&st->conns_total));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

void stats_reset(struct mock *m)
{
    struct stats *st = &m->stats;
    for (int op = 0; op < OP_COUNT; op++)
        for (int s = 0; s < 600; s++)
            atomic_store(&st->status[op][s], 0);
    atomic_store(&st->bytes_in, 0);
    atomic_store(&st->bytes_out, 0);
    atomic_store(&st->requests, 0);
    for (int i = 0; i < F_COUNT; i++)
        atomic_store(&st->faults[i], 0);
    for (int i = 0; i < D_COUNT; i++)
        atomic_store(&st->digests[i], 0);
    /* the peak restarts from what is open now */
    atomic_store(&st->conns_peak, atomic_load(&st->conns_open));
    atomic_store(&st->conns_total, 0);
}
