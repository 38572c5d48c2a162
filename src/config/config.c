/* The JSON config (docs/config.md): defaults, strict parsing with cJSON, validation and a
 * masked dump. Unknown keys, wrong types and out-of-range values are refused with one
 * line naming the key; a secret is never echoed into a message or the dump. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/log.h"
#include "config/cfg_internal.h"

/* ---- the schema: every key the file may hold ------------------------------------- */

enum key_kind {
    K_INT,    /* int, integral JSON number in [min, max] */
    K_I64,    /* int64_t, integral JSON number in [min, max] */
    K_BOOL,   /* bool */
    K_STR,    /* char[size], checked by check() */
    K_SECRET, /* char[size], never echoed, masked in the dump */
    K_ENUM,   /* enum stored as int, one of choices[] (index = value) */
};

struct key {
    const char *section, *name;
    enum key_kind kind;
    size_t off, size;
    int64_t min, max;
    const char *const *choices;
    int (*check)(const char *path, const char *v, char *err, size_t errlen);
};

#define F(field) offsetof(struct s3c_config, field), sizeof(((struct s3c_config *)0)->field)

static const char *const addressing_names[] = {"path", "virtual", NULL};
static const char *const signing_names[] = {"unsigned", "signed", NULL};
static const char *const checksum_names[] = {"crc32c", "sha256", "md5", "none", NULL};
static const char *const compression_names[] = {"none", "zstd", NULL};
static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};

static int check_endpoint(const char *path, const char *v, char *err, size_t errlen);
static int check_bucket(const char *path, const char *v, char *err, size_t errlen);
static int check_prefix(const char *path, const char *v, char *err, size_t errlen);
static int check_region(const char *path, const char *v, char *err, size_t errlen);
static int check_file(const char *path, const char *v, char *err, size_t errlen);
static int check_listen(const char *path, const char *v, char *err, size_t errlen);

#define MIB (1024 * 1024LL)
#define HOUR_MS 3600000

static const struct key keys[] = {
    {"s3", "endpoint", K_STR, F(s3.endpoint), 0, 0, NULL, check_endpoint},
    {"s3", "bucket", K_STR, F(s3.bucket), 0, 0, NULL, check_bucket},
    {"s3", "prefix", K_STR, F(s3.prefix), 0, 0, NULL, check_prefix},
    {"s3", "region", K_STR, F(s3.region), 0, 0, NULL, check_region},
    {"s3", "addressing", K_ENUM, F(s3.addressing), 0, 0, addressing_names, NULL},
    {"s3", "payload_signing", K_ENUM, F(s3.payload_signing), 0, 0, signing_names, NULL},
    {"s3", "checksum", K_ENUM, F(s3.checksum), 0, 0, checksum_names, NULL},
    {"s3", "tls_verify", K_BOOL, F(s3.tls_verify), 0, 0, NULL, NULL},
    {"s3", "conditional_writes", K_BOOL, F(s3.conditional_writes), 0, 0, NULL, NULL},
    {"s3", "compression", K_ENUM, F(s3.compression), 0, 0, compression_names, NULL},
    {"s3", "compression_level", K_INT, F(s3.compression_level), -7, 19, NULL, NULL},
    {"s3", "ca_file", K_STR, F(s3.ca_file), 0, 0, NULL, check_file},
    {"s3", "access_key_id", K_SECRET, F(s3.access_key_id), 0, 0, NULL, NULL},
    {"s3", "secret_access_key", K_SECRET, F(s3.secret_access_key), 0, 0, NULL, NULL},
    {"s3", "session_token", K_SECRET, F(s3.session_token), 0, 0, NULL, NULL},
    {"s3", "connect_timeout_ms", K_INT, F(s3.connect_timeout_ms), 1, 600000, NULL, NULL},
    {"s3", "request_timeout_ms", K_INT, F(s3.request_timeout_ms), 1, HOUR_MS, NULL, NULL},
    {"s3", "low_speed_limit_bytes", K_INT, F(s3.low_speed_limit_bytes), 0, 1 << 30, NULL, NULL},
    {"s3", "low_speed_time_ms", K_INT, F(s3.low_speed_time_ms), 1000, HOUR_MS, NULL, NULL},

    {"persistence", "batch_timeout_ms", K_INT, F(persistence.batch_timeout_ms), 1, 60000, NULL,
     NULL},
    {"persistence", "batch_size_threshold", K_INT, F(persistence.batch_size_threshold), 1, 1000000,
     NULL, NULL},
    {"persistence", "batch_bytes_threshold", K_I64, F(persistence.batch_bytes_threshold), 1,
     5LL * 1024 * MIB, NULL, NULL},
    {"persistence", "max_in_flight_requests", K_INT, F(persistence.max_in_flight_requests), 1, 1024,
     NULL, NULL},
    {"persistence", "target_pool_size", K_INT, F(persistence.target_pool_size), 1, 2048, NULL,
     NULL},
    {"persistence", "max_retry_attempts", K_INT, F(persistence.max_retry_attempts), 0, 100, NULL,
     NULL},
    {"persistence", "retry_base_delay_ms", K_INT, F(persistence.retry_base_delay_ms), 1, 600000,
     NULL, NULL},
    {"persistence", "max_retry_delay_ms", K_INT, F(persistence.max_retry_delay_ms), 1, HOUR_MS,
     NULL, NULL},
    {"persistence", "retry_budget", K_INT, F(persistence.retry_budget), 0, 1000000, NULL, NULL},
    {"persistence", "heartbeat_interval_ms", K_INT, F(persistence.heartbeat_interval_ms), 1,
     HOUR_MS, NULL, NULL},
    {"persistence", "manifest_interval_ms", K_INT, F(persistence.manifest_interval_ms), 1, HOUR_MS,
     NULL, NULL},
    {"persistence", "writer_heartbeat_interval_ms", K_INT,
     F(persistence.writer_heartbeat_interval_ms), 100, HOUR_MS, NULL, NULL},
    {"persistence", "shutdown_timeout_ms", K_INT, F(persistence.shutdown_timeout_ms), 0, HOUR_MS,
     NULL, NULL},

    {"pipeline", "ring_bytes", K_I64, F(pipeline.ring_bytes), 64 * 1024, 1024 * MIB, NULL, NULL},
    {"pipeline", "max_commit_bytes", K_I64, F(pipeline.max_commit_bytes), 1, 256 * MIB, NULL, NULL},

    {"log", "level", K_ENUM, F(log_level), 0, 0, level_names, NULL},

    {"metrics", "listen", K_STR, F(metrics_listen), 0, 0, NULL, check_listen},
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const char *const sections[] = {"s3", "persistence", "pipeline", "log", "metrics"};
#define NSECTIONS (sizeof(sections) / sizeof(sections[0]))

void cfg_defaults(struct s3c_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->s3.region, sizeof(cfg->s3.region), "us-east-1");
    cfg->s3.addressing = CFG_ADDR_PATH;
    cfg->s3.payload_signing = CFG_SIGN_UNSIGNED;
    cfg->s3.checksum = CFG_SUM_CRC32C;
    cfg->s3.tls_verify = true;
    cfg->s3.conditional_writes = true;
    cfg->s3.compression = CFG_COMP_NONE;
    cfg->s3.compression_level = 3;
    snprintf(cfg->s3.credentials_source, sizeof(cfg->s3.credentials_source), "none");
    cfg->s3.connect_timeout_ms = 3000;
    cfg->s3.request_timeout_ms = 30000;
    cfg->s3.low_speed_limit_bytes = 1024;
    cfg->s3.low_speed_time_ms = 5000;

    cfg->persistence.batch_timeout_ms = 5;
    cfg->persistence.batch_size_threshold = 1000;
    cfg->persistence.batch_bytes_threshold = MIB;
    cfg->persistence.max_in_flight_requests = 8;
    cfg->persistence.target_pool_size = 16;
    cfg->persistence.max_retry_attempts = 3;
    cfg->persistence.retry_base_delay_ms = 100;
    cfg->persistence.max_retry_delay_ms = 20000;
    cfg->persistence.retry_budget = 500;
    cfg->persistence.heartbeat_interval_ms = 5000;
    cfg->persistence.shutdown_timeout_ms = 30000;
    cfg->persistence.manifest_interval_ms = 1000;
    cfg->persistence.writer_heartbeat_interval_ms = 10000;

    cfg->pipeline.ring_bytes = 64 * MIB;
    cfg->pipeline.max_commit_bytes = MIB;

    cfg->log_level = S3C_LOG_INFO;
    cfg->metrics_listen[0] = '\0';
}

/* ---- messages ---------------------------------------------------------------------- */

int cfg_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (err && errlen > 0) {
        n = snprintf(err, errlen, "config: ");
        if (n >= 0 && (size_t)n < errlen) {
            va_start(ap, fmt);
            vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
        /* One line, always: a value with a newline in it must not start a second. */
        for (char *p = err; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
    }
    return S3C_ECONFIG;
}

/* A value quoted for a message: printable ASCII kept, the rest escaped, cut at 60 bytes. */
static void quote(char *dst, size_t cap, const char *s)
{
    size_t o = 0;

    dst[o++] = '"';
    for (; *s && o + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (o >= 62) {
            o += (size_t)snprintf(dst + o, cap - o, "...");
            break;
        }
        if (c == '"' || c == '\\')
            o += (size_t)snprintf(dst + o, cap - o, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", c);
        else
            dst[o++] = (char)c;
    }
    dst[o++] = '"';
    dst[o] = '\0';
}

/* What a JSON value is, for "(got ...)": the value itself for numbers, booleans and
 * short strings, the type for containers. */
static void describe(char *dst, size_t cap, const cJSON *v, bool secret)
{
    if (secret && cJSON_IsNumber(v)) {
        snprintf(dst, cap, "a number");
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && fabs(d) < 9.2e18)
            snprintf(dst, cap, "%lld", (long long)d);
        else
            snprintf(dst, cap, "%.17g", d);
    } else if (cJSON_IsString(v)) {
        if (secret)
            snprintf(dst, cap, "a string");
        else
            quote(dst, cap, v->valuestring);
    } else if (cJSON_IsBool(v)) {
        snprintf(dst, cap, "%s", cJSON_IsTrue(v) ? "true" : "false");
    } else if (cJSON_IsNull(v)) {
        snprintf(dst, cap, "null");
    } else if (cJSON_IsArray(v)) {
        snprintf(dst, cap, "an array");
    } else if (cJSON_IsObject(v)) {
        snprintf(dst, cap, "an object");
    } else {
        snprintf(dst, cap, "an invalid value");
    }
}

/* ---- "did you mean" ---------------------------------------------------------------- */

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), prev[128], cur[128];

    if (la >= 127 || lb >= 127)
        return 1000;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] +
                         (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof(size_t));
    }
    return prev[lb];
}

/* Writes "; did you mean X?" for the closest known name, or "" when nothing is close.
 * section NULL: name was a top-level key (candidates are the section names). */
static void suggest(char *dst, size_t cap, const char *section, const char *name)
{
    size_t best = (size_t)-1, limit = strlen(name) / 3 + 2;
    char cand[96] = "";

    if (!section) {
        for (size_t i = 0; i < NSECTIONS; i++) {
            size_t d = edit_distance(name, sections[i]);
            if (d < best) {
                best = d;
                snprintf(cand, sizeof(cand), "%s", sections[i]);
            }
        }
        /* a key written at the top level instead of inside its section */
        for (size_t i = 0; i < NKEYS; i++) {
            size_t d = edit_distance(name, keys[i].name);
            if (d < best) {
                best = d;
                snprintf(cand, sizeof(cand), "%s.%s", keys[i].section, keys[i].name);
            }
        }
    } else {
        for (int pass = 0; pass < 2; pass++) {
            for (size_t i = 0; i < NKEYS; i++) {
                bool same = strcmp(keys[i].section, section) == 0;
                size_t d;
                if (same != (pass == 0))
                    continue;
                d = edit_distance(name, keys[i].name);
                if (d < best && (pass == 0 || d == 0 || d + 1 < best)) {
                    best = d;
                    if (same)
                        snprintf(cand, sizeof(cand), "%s", keys[i].name);
                    else
                        snprintf(cand, sizeof(cand), "%s.%s (in section \"%s\")", keys[i].section,
                                 keys[i].name, keys[i].section);
                }
            }
        }
    }
    if (best <= limit && cand[0])
        snprintf(dst, cap, "; did you mean %s?", cand);
    else
        dst[0] = '\0';
}

static void known_list(char *dst, size_t cap, const char *section)
{
    size_t o = 0;

    dst[0] = '\0';
    for (size_t i = 0; i < NKEYS && o < cap; i++) {
        if (strcmp(keys[i].section, section) != 0)
            continue;
        o += (size_t)snprintf(dst + o, cap - o, "%s%s", o ? ", " : "", keys[i].name);
    }
}

/* ---- value checks ------------------------------------------------------------------ */

static int check_endpoint(const char *path, const char *v, char *err, size_t errlen)
{
    char q[128];
    const char *host, *end, *port;

    quote(q, sizeof(q), v);
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

static bool is_ipv4(const char *s)
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
static int check_bucket(const char *path, const char *v, char *err, size_t errlen)
{
    size_t n = strlen(v);
    char q[128];

    quote(q, sizeof(q), v);
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
    if (is_ipv4(v))
        return cfg_fail(err, errlen, "%s must not be an IP address (got %s)", path, q);
    if (strncmp(v, "xn--", 4) == 0 || strncmp(v, "sthree-", 7) == 0 ||
        (n > 8 && strcmp(v + n - 8, "-s3alias") == 0) ||
        (n > 7 && strcmp(v + n - 7, "--ol-s3") == 0))
        return cfg_fail(err, errlen, "%s uses a prefix or suffix S3 reserves (got %s)", path, q);
    return 0;
}

static int check_prefix(const char *path, const char *v, char *err, size_t errlen)
{
    char q[128];

    quote(q, sizeof(q), v);
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

static int check_region(const char *path, const char *v, char *err, size_t errlen)
{
    char q[128];

    quote(q, sizeof(q), v);
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

static int check_file(const char *path, const char *v, char *err, size_t errlen)
{
    if (v[0] && access(v, R_OK) != 0)
        return cfg_fail(err, errlen, "%s: cannot read %s: %s", path, v, strerror(errno));
    return 0;
}

static int check_listen(const char *path, const char *v, char *err, size_t errlen)
{
    char q[128];
    const char *colon, *p;
    long port = 0;

    if (!v[0])
        return 0;
    quote(q, sizeof(q), v);
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

/* ---- parsing ----------------------------------------------------------------------- */

static bool known_name(const char *s, size_t n)
{
    for (size_t i = 0; i < NSECTIONS; i++)
        if (strlen(sections[i]) == n && memcmp(sections[i], s, n) == 0)
            return true;
    for (size_t i = 0; i < NKEYS; i++)
        if (strlen(keys[i].name) == n && memcmp(keys[i].name, s, n) == 0)
            return true;
    return false;
}

static size_t string_end(const char *json, size_t len, size_t open_quote)
{
    size_t e = open_quote + 1;

    while (e < len && json[e] != '"')
        e += json[e] == '\\' ? 2 : 1;
    return e < len ? e : len;
}

static bool is_literal(const char *s, size_t n)
{
    if ((n == 4 && memcmp(s, "true", 4) == 0) || (n == 4 && memcmp(s, "null", 4) == 0) ||
        (n == 5 && memcmp(s, "false", 5) == 0))
        return true;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789+-.eE", s[i]))
            return false;
    return true;
}

/* The text of json[start, end) for a syntax-error message, with every string and bare
 * word shown as "..." unless it is a known key name or a plain literal. A damaged file
 * may hold a secret anywhere (its key name broken too), so nothing else is echoed. */
static void redact_snippet(const char *json, size_t len, size_t start, size_t end, char *out,
                           size_t cap)
{
    size_t i, o = 0, open = 0;
    bool in_str = false;

#define EMIT(p, n)                                                                                 \
    do {                                                                                           \
        size_t n_ = (n);                                                                           \
        if (o + n_ < cap) {                                                                        \
            memcpy(out + o, (p), n_);                                                              \
            o += n_;                                                                               \
        }                                                                                          \
    } while (0)

    for (i = 0; i < start; i++) {
        if (in_str && json[i] == '\\')
            i++;
        else if (json[i] == '"') {
            in_str = !in_str;
            open = i;
        }
    }
    i = start;
    if (in_str) { /* the snippet begins inside a string */
        size_t e = string_end(json, len, open);
        if (known_name(json + open + 1, e - open - 1))
            EMIT(json + start, (e < end ? e + 1 : end) - start);
        else
            EMIT(e < end ? "...\"" : "...", e < end ? 4 : 3);
        i = e + 1;
    }
    while (i < end) {
        char c = json[i];
        if (c == '"') {
            size_t e = string_end(json, len, i);
            if (known_name(json + i + 1, e - i - 1))
                EMIT(json + i, (e < end ? e + 1 : end) - i);
            else
                EMIT(e < end ? "\"...\"" : "\"...", e < end ? 5 : 4);
            i = e + 1;
        } else if (strchr("{}[],: \t\r", c)) {
            EMIT(&c, 1);
            i++;
        } else {
            size_t r = i;
            while (r < len && !strchr("{}[],: \t\r\n\"", json[r]))
                r++;
            if (is_literal(json + i, r - i))
                EMIT(json + i, (r < end ? r : end) - i);
            else
                EMIT("...", 3);
            i = r;
        }
    }
    out[o] = '\0';
#undef EMIT
}

static int syntax_error(const char *file, const char *json, size_t len, size_t pos, char *err,
                        size_t errlen)
{
    size_t line = 1, col = 1, end, start;
    char near[120], snip[64];

    if (pos > len)
        pos = len;
    for (size_t i = 0; i < pos; i++) {
        if (json[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    /* Show a little context from just before the error to the end of its line. */
    start = pos >= 10 ? pos - 10 : 0;
    for (size_t i = start; i < pos; i++)
        if (json[i] == '\n')
            start = i + 1;
    end = start;
    while (end < len && end < start + 30 && json[end] != '\n')
        end++;
    if (start == end) {
        snprintf(near, sizeof(near), "end of input");
    } else {
        redact_snippet(json, len, start, end, snip, sizeof(snip));
        quote(near, sizeof(near), snip);
    }
    if (file)
        return cfg_fail(err, errlen, "%s: line %zu: invalid JSON near %s (column %zu)", file, line,
                        near, col);
    return cfg_fail(err, errlen, "line %zu: invalid JSON near %s (column %zu)", line, near, col);
}

static int set_value(struct s3c_config *cfg, const struct key *k, const cJSON *v, char *err,
                     size_t errlen)
{
    char path[64], got[128];
    char *base = (char *)cfg + k->off;

    snprintf(path, sizeof(path), "%s.%s", k->section, k->name);
    describe(got, sizeof(got), v, k->kind == K_SECRET);
    switch (k->kind) {
    case K_INT:
    case K_I64: {
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
        if (k->kind == K_INT)
            *(int *)base = (int)d;
        else
            *(int64_t *)base = (int64_t)d;
        return 0;
    }
    case K_BOOL:
        if (!cJSON_IsBool(v))
            return cfg_fail(err, errlen, "%s must be true or false (got %s)", path, got);
        *(bool *)base = cJSON_IsTrue(v);
        return 0;
    case K_ENUM: {
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
    case K_STR:
    case K_SECRET: {
        size_t n;
        if (!cJSON_IsString(v))
            return cfg_fail(err, errlen, "%s must be a string (got %s)", path, got);
        n = strlen(v->valuestring);
        if (n >= k->size)
            return cfg_fail(err, errlen, "%s must be at most %zu bytes (got %zu bytes)", path,
                            k->size - 1, n);
        if (k->kind == K_SECRET) {
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

static const struct key *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static bool is_section(const char *name)
{
    for (size_t i = 0; i < NSECTIONS; i++)
        if (strcmp(sections[i], name) == 0)
            return true;
    return false;
}

/* True when an earlier sibling has the same name: cJSON keeps both, so one would be
 * silently ignored. Only known names get here, so the scan stays short. */
static bool seen_before(const cJSON *obj, const cJSON *item)
{
    for (const cJSON *a = obj->child; a && a != item; a = a->next)
        if (strcmp(a->string, item->string) == 0)
            return true;
    return false;
}

/* Cross-key rules, applied once every key is in: seed 002's validation and the sizes that
 * depend on each other. */
static int validate(const struct s3c_config *cfg, bool bucket_set, char *err, size_t errlen)
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
    return 0;
}

/* Blanks credential strings in the tree before it is freed. */
static void wipe_tree_secrets(cJSON *root)
{
    cJSON *s3 = cJSON_GetObjectItemCaseSensitive(root, "s3");

    if (!cJSON_IsObject(s3))
        return;
    for (cJSON *c = s3->child; c; c = c->next)
        if (cJSON_IsString(c) && c->valuestring)
            explicit_bzero(c->valuestring, strlen(c->valuestring));
}

static int parse_doc(const char *file, const char *json, size_t len, struct s3c_config *cfg,
                     char *err, size_t errlen)
{
    const char *end = NULL;
    const struct key *k;
    cJSON *root;
    char hint[160], got[128];
    bool bucket_set = false, region_set = false, endpoint_set = false;
    int has_key = 0, has_secret = 0, has_token = 0, rc = S3C_ECONFIG;

    cfg_defaults(cfg);
    if (memchr(json, '\0', len))
        return syntax_error(file, json, len, (size_t)((const char *)memchr(json, '\0', len) - json),
                            err, errlen);
    root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root)
        return syntax_error(file, json, len, end ? (size_t)(end - json) : 0, err, errlen);
    for (const char *p = end; p < json + len; p++) {
        if (!isspace((unsigned char)*p)) {
            rc = syntax_error(file, json, len, (size_t)(p - json), err, errlen);
            goto out_free_tree;
        }
    }
    if (!cJSON_IsObject(root)) {
        describe(got, sizeof(got), root, true);
        rc = cfg_fail(err, errlen, "the top level must be an object {...} (got %s)", got);
        goto out_free_tree;
    }
    for (const cJSON *sec = root->child; sec; sec = sec->next) {
        if (!is_section(sec->string)) {
            suggest(hint, sizeof(hint), NULL, sec->string);
            rc = cfg_fail(err, errlen,
                          "unknown section \"%.64s\"%s (known: s3, persistence, pipeline, log, "
                          "metrics)",
                          sec->string, hint);
            goto out_free_tree;
        }
        if (!cJSON_IsObject(sec)) {
            describe(got, sizeof(got), sec, true);
            rc = cfg_fail(err, errlen, "%s must be an object {...} (got %s)", sec->string, got);
            goto out_free_tree;
        }
        if (seen_before(root, sec)) {
            rc = cfg_fail(err, errlen, "section \"%s\" appears twice; merge them", sec->string);
            goto out_free_tree;
        }
        for (const cJSON *item = sec->child; item; item = item->next) {
            k = find_key(sec->string, item->string);
            if (!k) {
                char known[512];
                suggest(hint, sizeof(hint), sec->string, item->string);
                known_list(known, sizeof(known), sec->string);
                if (hint[0])
                    rc = cfg_fail(err, errlen, "unknown key %s.%.64s%s", sec->string, item->string,
                                  hint);
                else
                    rc = cfg_fail(err, errlen, "unknown key %s.%.64s (known in %s: %s)",
                                  sec->string, item->string, sec->string, known);
                goto out_free_tree;
            }
            if (seen_before(sec, item)) {
                rc = cfg_fail(err, errlen, "%s.%s appears twice; keep one", sec->string,
                              item->string);
                goto out_free_tree;
            }
            if (set_value(cfg, k, item, err, errlen))
                goto out_free_tree;
            if (k->off == offsetof(struct s3c_config, s3.bucket))
                bucket_set = true;
            else if (k->off == offsetof(struct s3c_config, s3.region))
                region_set = true;
            else if (k->off == offsetof(struct s3c_config, s3.endpoint))
                endpoint_set = true;
            else if (k->off == offsetof(struct s3c_config, s3.access_key_id))
                has_key = cfg->s3.access_key_id[0] != '\0';
            else if (k->off == offsetof(struct s3c_config, s3.secret_access_key))
                has_secret = cfg->s3.secret_access_key[0] != '\0';
            else if (k->off == offsetof(struct s3c_config, s3.session_token))
                has_token = cfg->s3.session_token[0] != '\0';
        }
    }

    if (!region_set) {
        const char *names[] = {"AWS_REGION", "AWS_DEFAULT_REGION"};
        for (size_t i = 0; i < 2; i++) {
            const char *r = getenv(names[i]);
            if (!r || !*r)
                continue;
            if (strlen(r) >= sizeof(cfg->s3.region)) {
                rc = cfg_fail(err, errlen, "%s must be at most %zu bytes (got %zu bytes)", names[i],
                              sizeof(cfg->s3.region) - 1, strlen(r));
                goto out_free_tree;
            }
            if (check_region(names[i], r, err, errlen))
                goto out_free_tree;
            snprintf(cfg->s3.region, sizeof(cfg->s3.region), "%s", r);
            break;
        }
    }
    if (!endpoint_set)
        snprintf(cfg->s3.endpoint, sizeof(cfg->s3.endpoint), "https://s3.%s.amazonaws.com",
                 cfg->s3.region);
    if (validate(cfg, bucket_set, err, errlen))
        goto out_free_tree;
    if (cfg_resolve_credentials(cfg, has_key, has_secret, has_token, err, errlen))
        goto out_free_tree;
    rc = 0;
out_free_tree:
    wipe_tree_secrets(root);
    cJSON_Delete(root);
    if (rc)
        explicit_bzero(&cfg->s3, sizeof(cfg->s3));
    return rc;
}

/* ---- the public calls -------------------------------------------------------------- */

static int parse_into_new(const char *file, const char *json, size_t len, s3c_config **out,
                          char *err, size_t errlen)
{
    s3c_config *cfg;
    int rc;

    if (!out || (!json && len))
        return cfg_fail(err, errlen, "internal error: NULL argument");
    *out = NULL;
    cfg = malloc(sizeof(*cfg));
    if (!cfg) {
        cfg_fail(err, errlen, "out of memory");
        return S3C_ENOMEM;
    }
    rc = parse_doc(file, json ? json : "", len, cfg, err, errlen);
    if (rc) {
        s3c_config_free(cfg);
        return rc;
    }
    if (err && errlen)
        err[0] = '\0';
    *out = cfg;
    return 0;
}

int s3c_config_parse(const char *json, size_t len, s3c_config **out, char *err, size_t errlen)
{
    return parse_into_new(NULL, json, len, out, err, errlen);
}

int s3c_config_load(const char *path, s3c_config **out, char *err, size_t errlen)
{
    FILE *f;
    char *buf = NULL;
    size_t cap = 0, len = 0, n;
    int rc;

    if (out)
        *out = NULL;
    if (!path || !*path)
        return cfg_fail(err, errlen, "no config file given; pass --config FILE");
    f = fopen(path, "rb");
    if (!f)
        return cfg_fail(err, errlen, "cannot read %s: %s", path, strerror(errno));
    for (;;) {
        if (len == cap) {
            char *nb;
            if (cap >= (16u << 20)) {
                rc = cfg_fail(err, errlen, "%s: larger than 16 MiB; not a config file", path);
                goto out_free_buf;
            }
            cap = cap ? cap * 2 : 8192;
            nb = malloc(cap);
            if (!nb) {
                rc = cfg_fail(err, errlen, "out of memory reading %s", path);
                rc = S3C_ENOMEM;
                goto out_free_buf;
            }
            if (buf) {
                memcpy(nb, buf, len);
                explicit_bzero(buf, len);
                free(buf);
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                rc = cfg_fail(err, errlen, "cannot read %s: %s", path, strerror(errno));
                goto out_free_buf;
            }
            break;
        }
    }
    rc = parse_into_new(path, buf, len, out, err, errlen);
out_free_buf:
    if (buf) {
        explicit_bzero(buf, cap);
        free(buf);
    }
    fclose(f);
    return rc;
}

void s3c_config_free(s3c_config *cfg)
{
    if (!cfg)
        return;
    explicit_bzero(cfg, sizeof(*cfg));
    free(cfg);
}

int s3c_config_set_endpoint(s3c_config *cfg, const char *endpoint)
{
    if (!cfg || !endpoint || strlen(endpoint) >= sizeof(cfg->s3.endpoint))
        return S3C_EINVAL;
    if (check_endpoint("s3.endpoint", endpoint, NULL, 0))
        return S3C_EINVAL;
    snprintf(cfg->s3.endpoint, sizeof(cfg->s3.endpoint), "%s", endpoint);
    return 0;
}

/* ---- the dump ---------------------------------------------------------------------- */

static cJSON *masked(const struct key *k, const char *v)
{
    char m[16];

    if (!v[0])
        return cJSON_CreateString("");
    if (strcmp(k->name, "access_key_id") == 0) {
        snprintf(m, sizeof(m), "%.4s****", v);
        return cJSON_CreateString(m);
    }
    return cJSON_CreateString("****");
}

/* cJSON indents with tabs; two spaces read better in a terminal. Tabs inside strings are
 * escaped by cJSON, so every raw tab is layout. Takes s; returns it or its replacement. */
static char *detab(char *s)
{
    size_t tabs = 0, o = 0;
    char *out;

    for (const char *r = s; *r; r++)
        tabs += *r == '\t';
    out = malloc(strlen(s) + tabs + 1);
    if (!out)
        return s;
    for (const char *r = s; *r; r++) {
        if (*r != '\t') {
            out[o++] = *r;
        } else if (r > s && r[-1] == ':') {
            out[o++] = ' ';
        } else {
            out[o++] = ' ';
            out[o++] = ' ';
        }
    }
    out[o] = '\0';
    free(s);
    return out;
}

char *s3c_config_dump(const s3c_config *cfg)
{
    cJSON *root, *sec = NULL, *v;
    const char *cur = NULL;
    char *out = NULL;

    if (!cfg)
        return NULL;
    root = cJSON_CreateObject();
    if (!root)
        return NULL;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        const char *base = (const char *)cfg + k->off;

        if (!cur || strcmp(cur, k->section) != 0) {
            cur = k->section;
            sec = cJSON_AddObjectToObject(root, cur);
            if (!sec)
                goto out_free_tree;
        }
        switch (k->kind) {
        case K_INT:
            v = cJSON_CreateNumber(*(const int *)base);
            break;
        case K_I64:
            v = cJSON_CreateNumber((double)*(const int64_t *)base);
            break;
        case K_BOOL:
            v = cJSON_CreateBool(*(const bool *)base);
            break;
        case K_ENUM: {
            int e = *(const int *)base, n = 0;
            while (k->choices[n])
                n++;
            v = cJSON_CreateString(e >= 0 && e < n ? k->choices[e] : "?");
            break;
        }
        case K_SECRET:
            v = masked(k, base);
            break;
        case K_STR:
        default:
            v = cJSON_CreateString(base);
            break;
        }
        if (!v || !cJSON_AddItemToObject(sec, k->name, v)) {
            cJSON_Delete(v);
            goto out_free_tree;
        }
        if (strcmp(k->name, "session_token") == 0 &&
            !cJSON_AddStringToObject(sec, "credentials_source", cfg->s3.credentials_source))
            goto out_free_tree;
    }
    out = cJSON_Print(root);
    if (out)
        out = detab(out);
out_free_tree:
    cJSON_Delete(root);
    return out;
}
