/* Value checks: each string key's own rules (endpoint, bucket, prefix, region, files,
 * listen address), a JSON value's type and range against its key, and the rules between
 * keys. Every refusal is one cfg_fail() line naming the key and the fix. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config/cfg_internal.h"

/* ---- value checks ------------------------------------------------------------------ */

int cfg_check_endpoint(const char *path, const char *v, char *err, size_t errlen)
{
    char q[128];
    const char *host, *end, *port;

    cfg_quote(q, sizeof(q), v);
    if (strncmp(v, "http://", 7) == 0)
        host = v + 7;
    else if (strncmp(v, "https://", 8) == 0)
        host = v + 8;
    else
        return cfg_fail(err, errlen, "%s must start with http:// or https:// (got %s)", path, q);
    end = host + strcspn(host, "/?#");
    if (*end && strcmp(end, "/") != 0)
        return cfg_fail(err, errlen,
                        "%s must be scheme://host[:port] with no path or query; the key "
                        "prefix goes in s3.prefix (got %s)",
                        path, q);
    if (memchr(host, '@', (size_t)(end - host)))
        return cfg_fail(err, errlen,
                        "%s must not hold user:password@; credentials go in "
                        "s3.access_key_id / s3.secret_access_key (got a URL with userinfo)",
                        path);
    for (const char *p = host; p < end; p++)
        if (*p <= ' ' || *p >= 0x7f)
            return cfg_fail(err, errlen, "%s must not contain spaces or control bytes (got %s)",
                            path, q);
    if (*host == '[') {
        const char *rb = memchr(host, ']', (size_t)(end - host));
        if (!rb || rb == host + 1)
            return cfg_fail(err, errlen, "%s has an unterminated [IPv6] host (got %s)", path, q);
        port = rb + 1 < end && rb[1] == ':' ? rb + 2 : NULL;
        if (rb + 1 < end && rb[1] != ':')
            return cfg_fail(err, errlen, "%s has text after the [IPv6] host (got %s)", path, q);
    } else {
        const char *colon = memchr(host, ':', (size_t)(end - host));
        if ((colon ? colon : end) == host)
            return cfg_fail(err, errlen, "%s has no host (got %s)", path, q);
        port = colon ? colon + 1 : NULL;
    }
    if (port) {
        long n = 0;
        const char *p = port;
        for (; p < end && isdigit((unsigned char)*p) && n <= 65535; p++)
            n = n * 10 + (*p - '0');
        if (p == port || p != end || n < 1 || n > 65535)
            return cfg_fail(err, errlen, "%s has a port that is not in [1, 65535] (got %s)", path,
                            q);
    }
    return 0;
}

static bool cfg_is_ipv4(const char *s)
{
    int parts = 0, digits = 0;

    for (; *s; s++) {
        if (isdigit((unsigned char)*s)) {
            digits++;
        } else if (*s == '.' && digits) {
            parts++;
            digits = 0;
        } else {
            return false;
        }
    }
    return digits && parts == 3;
}

/* The general-purpose bucket naming rules of S3. */
int cfg_check_bucket(const char *path, const char *v, char *err, size_t errlen)
{
    size_t n = strlen(v);
    char q[128];

    cfg_quote(q, sizeof(q), v);
    if (n < 3 || n > 63)
        return cfg_fail(err, errlen, "%s must be 3 to 63 characters long (got %s, %zu)", path, q,
                        n);
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (!(islower((unsigned char)c) || isdigit((unsigned char)c) || c == '-' || c == '.'))
            return cfg_fail(err, errlen,
                            "%s must hold only lowercase letters, digits, '-' and '.' (got %s)",
                            path, q);
    }
    if (!isalnum((unsigned char)v[0]) || !isalnum((unsigned char)v[n - 1]))
        return cfg_fail(err, errlen, "%s must begin and end with a letter or digit (got %s)", path,
                        q);
    if (strstr(v, "..") || strstr(v, ".-") || strstr(v, "-."))
        return cfg_fail(err, errlen, "%s must not hold \"..\", \".-\" or \"-.\" (got %s)", path, q);
    if (cfg_is_ipv4(v))
        return cfg_fail(err, errlen, "%s must not be an IP address (got %s)", path, q);
    if (strncmp(v, "xn--", 4) == 0 || strncmp(v, "sthree-", 7) == 0 ||
        (n > 8 && strcmp(v + n - 8, "-s3alias") == 0) ||
        (n > 7 && strcmp(v + n - 7, "--ol-s3") == 0))
        return cfg_fail(err, errlen, "%s uses a prefix or suffix S3 reserves (got %s)", path, q);
    return 0;
}

int cfg_check_prefix(const char *path, const char *v, char *err, size_t errlen)
{
    char q[128];

    cfg_quote(q, sizeof(q), v);
    if (v[0] == '/')
        return cfg_fail(err, errlen,
                        "%s must not start with '/' (S3 keys are relative to the bucket; got %s)",
                        path, q);
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return cfg_fail(err, errlen, "%s must not contain control characters (got %s)", path,
                            q);
    return 0;
}

int cfg_check_region(const char *path, const char *v, char *err, size_t errlen)
{
    char q[128];

    cfg_quote(q, sizeof(q), v);
    if (!v[0])
        return cfg_fail(err, errlen, "%s must not be empty (got \"\")", path);
    for (const char *p = v; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-'))
            return cfg_fail(err, errlen,
                            "%s must hold only lowercase letters, digits and '-', like "
                            "\"us-east-1\" (got %s)",
                            path, q);
    return 0;
}

int cfg_check_file(const char *path, const char *v, char *err, size_t errlen)
{
    if (v[0] && access(v, R_OK) != 0)
        return cfg_fail(err, errlen, "%s: cannot read %s: %s", path, v, strerror(errno));
    return 0;
}

int cfg_check_listen(const char *path, const char *v, char *err, size_t errlen)
{
    char q[128];
    const char *colon, *p;
    long port = 0;

    if (!v[0])
        return 0;
    cfg_quote(q, sizeof(q), v);
    colon = strrchr(v, ':');
    if (!colon || colon == v)
        return cfg_fail(err, errlen,
                        "%s must be \"HOST:PORT\" (like \"127.0.0.1:9464\") or \"\" (got %s)", path,
                        q);
    if (v[0] == '[' ? colon[-1] != ']' : memchr(v, ':', (size_t)(colon - v)) != NULL)
        return cfg_fail(err, errlen,
                        "%s: an IPv6 host must be in brackets, \"[::1]:9464\" (got %s)", path, q);
    for (p = v; p < colon; p++)
        if (*p <= ' ' || *p >= 0x7f)
            return cfg_fail(err, errlen, "%s must not contain spaces or control bytes (got %s)",
                            path, q);
    for (p = colon + 1; isdigit((unsigned char)*p) && port <= 65535; p++)
        port = port * 10 + (*p - '0');
    if (p == colon + 1 || *p || port > 65535)
        return cfg_fail(err, errlen, "%s has a port that is not in [0, 65535] (got %s)", path, q);
    return 0;
}

/* ---- a value against its key ------------------------------------------------------- */

int cfg_set_value(struct s3c_config *cfg, const struct cfg_key *k, const cJSON *v, char *err,
                  size_t errlen)
{
    char path[64], got[128];
    char *base = (char *)cfg + k->off;

    snprintf(path, sizeof(path), "%s.%s", k->section, k->name);
    cfg_describe(got, sizeof(got), v, k->kind == CFG_KEY_SECRET);
    switch (k->kind) {
    case CFG_KEY_INT:
    case CFG_KEY_I64: {
        double d;
        if (!cJSON_IsNumber(v))
            return cfg_fail(err, errlen, "%s must be an integer (got %s)", path, got);
        d = v->valuedouble;
        if (!isfinite(d) || d != floor(d))
            return cfg_fail(err, errlen, "%s must be an integer (got %s)", path, got);
        if (d < (double)k->min) {
            if (k->min == 1)
                return cfg_fail(err, errlen, "%s must be > 0 (got %s)", path, got);
            return cfg_fail(err, errlen, "%s must be >= %lld (got %s)", path, (long long)k->min,
                            got);
        }
        if (d > (double)k->max)
            return cfg_fail(err, errlen, "%s must be <= %lld (got %s)", path, (long long)k->max,
                            got);
        if (k->kind == CFG_KEY_INT)
            *(int *)base = (int)d;
        else
            *(int64_t *)base = (int64_t)d;
        return 0;
    }
    case CFG_KEY_BOOL:
        if (!cJSON_IsBool(v))
            return cfg_fail(err, errlen, "%s must be true or false (got %s)", path, got);
        *(bool *)base = cJSON_IsTrue(v);
        return 0;
    case CFG_KEY_ENUM: {
        char opts[96];
        size_t o = 0;
        for (size_t i = 0; k->choices[i]; i++)
            o += (size_t)snprintf(opts + o, sizeof(opts) - o, "%s\"%s\"", i ? ", " : "",
                                  k->choices[i]);
        if (!cJSON_IsString(v))
            return cfg_fail(err, errlen, "%s must be one of %s (got %s)", path, opts, got);
        for (size_t i = 0; k->choices[i]; i++) {
            if (strcmp(v->valuestring, k->choices[i]) == 0) {
                *(int *)base = (int)i;
                return 0;
            }
        }
        return cfg_fail(err, errlen, "%s must be one of %s (got %s)", path, opts, got);
    }
    case CFG_KEY_STR:
    case CFG_KEY_SECRET: {
        size_t n;
        if (!cJSON_IsString(v))
            return cfg_fail(err, errlen, "%s must be a string (got %s)", path, got);
        n = strlen(v->valuestring);
        if (n >= k->size)
            return cfg_fail(err, errlen, "%s must be at most %zu bytes (got %zu bytes)", path,
                            k->size - 1, n);
        if (k->kind == CFG_KEY_SECRET) {
            for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)v->valuestring[i];
                if (c <= 0x20 || c >= 0x7f)
                    return cfg_fail(err, errlen,
                                    "%s must be printable ASCII without spaces (byte %zu is "
                                    "not)",
                                    path, i);
            }
        }
        if (k->check && k->check(path, v->valuestring, err, errlen))
            return S3C_ECONFIG;
        memcpy(base, v->valuestring, n + 1);
        return 0;
    }
    }
    return cfg_fail(err, errlen, "%s: internal error (unknown key kind)", path);
}

/* ---- rules between keys ------------------------------------------------------------ */

/* Cross-key rules, applied once every key is in: seed 002's validation and the sizes that
 * depend on each other. */
int cfg_validate(const struct s3c_config *cfg, bool bucket_set, char *err, size_t errlen)
{
    const struct cfg_persistence *p = &cfg->persistence;
    const struct cfg_pipeline *pl = &cfg->pipeline;

    if (!bucket_set)
        return cfg_fail(err, errlen,
                        "s3.bucket is required (got nothing); add \"bucket\": \"<name>\" to "
                        "the \"s3\" section");
    if (p->target_pool_size < p->max_in_flight_requests)
        return cfg_fail(err, errlen,
                        "persistence.target_pool_size must be >= "
                        "persistence.max_in_flight_requests (%d) so every request has a "
                        "connection (got %d)",
                        p->max_in_flight_requests, p->target_pool_size);
    if ((int64_t)p->target_pool_size > 2 * (int64_t)p->max_in_flight_requests)
        return cfg_fail(err, errlen,
                        "persistence.target_pool_size must be <= 2 x "
                        "persistence.max_in_flight_requests (%d) (got %d)",
                        2 * p->max_in_flight_requests, p->target_pool_size);
    if (p->max_retry_delay_ms < p->retry_base_delay_ms)
        return cfg_fail(err, errlen,
                        "persistence.max_retry_delay_ms must be >= "
                        "persistence.retry_base_delay_ms (%d) (got %d)",
                        p->retry_base_delay_ms, p->max_retry_delay_ms);
    if (pl->ring_bytes & (pl->ring_bytes - 1))
        return cfg_fail(err, errlen,
                        "pipeline.ring_bytes must be a power of two in [65536, 1073741824] "
                        "(got %lld)",
                        (long long)pl->ring_bytes);
    if (pl->max_commit_bytes > pl->ring_bytes / 4)
        return cfg_fail(err, errlen,
                        "pipeline.max_commit_bytes must be <= pipeline.ring_bytes / 4 (%lld) "
                        "(got %lld); raise ring_bytes or lower max_commit_bytes",
                        (long long)(pl->ring_bytes / 4), (long long)pl->max_commit_bytes);
    const struct cfg_spool *sp = &cfg->spool;
    if (sp->dir[0] && sp->segment_bytes < 2 * (p->batch_bytes_threshold + pl->max_commit_bytes))
        return cfg_fail(err, errlen,
                        "spool.segment_bytes must be >= 2 x (persistence.batch_bytes_threshold + "
                        "pipeline.max_commit_bytes) (%lld) so a batch fits a segment (got %lld)",
                        (long long)(2 * (p->batch_bytes_threshold + pl->max_commit_bytes)),
                        (long long)sp->segment_bytes);
    if (sp->dir[0] && sp->max_bytes < 2 * sp->segment_bytes)
        return cfg_fail(err, errlen,
                        "spool.max_bytes must be >= 2 x spool.segment_bytes (%lld) (got %lld)",
                        (long long)(2 * sp->segment_bytes), (long long)sp->max_bytes);
    return 0;
}
