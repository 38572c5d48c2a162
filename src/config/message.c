/* What a config error says: the "config: " line, values quoted or described, the "did you
 * mean" suggestion and the invalid-JSON message with its redacted snippet. A secret, or
 * any text a damaged file may hold where a secret was, must never reach a message. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config/cfg_internal.h"

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
void cfg_quote(char *dst, size_t cap, const char *s)
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
void cfg_describe(char *dst, size_t cap, const cJSON *v, bool secret)
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
            cfg_quote(dst, cap, v->valuestring);
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

static size_t cfg_edit_distance(const char *a, const char *b)
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
void cfg_suggest(char *dst, size_t cap, const char *section, const char *name)
{
    size_t best = (size_t)-1, limit = strlen(name) / 3 + 2;
    char cand[96] = "";

    if (!section) {
        for (size_t i = 0; i < cfg_nsections; i++) {
            size_t d = cfg_edit_distance(name, cfg_sections[i]);
            if (d < best) {
                best = d;
                snprintf(cand, sizeof(cand), "%s", cfg_sections[i]);
            }
        }
        /* a key written at the top level instead of inside its section */
        for (size_t i = 0; i < cfg_nkeys; i++) {
            size_t d = cfg_edit_distance(name, cfg_keys[i].name);
            if (d < best) {
                best = d;
                snprintf(cand, sizeof(cand), "%s.%s", cfg_keys[i].section, cfg_keys[i].name);
            }
        }
    } else {
        for (int pass = 0; pass < 2; pass++) {
            for (size_t i = 0; i < cfg_nkeys; i++) {
                bool same = strcmp(cfg_keys[i].section, section) == 0;
                size_t d;
                if (same != (pass == 0))
                    continue;
                d = cfg_edit_distance(name, cfg_keys[i].name);
                if (d < best && (pass == 0 || d == 0 || d + 1 < best)) {
                    best = d;
                    if (same)
                        snprintf(cand, sizeof(cand), "%s", cfg_keys[i].name);
                    else
                        snprintf(cand, sizeof(cand), "%s.%s (in section \"%s\")",
                                 cfg_keys[i].section, cfg_keys[i].name, cfg_keys[i].section);
                }
            }
        }
    }
    if (best <= limit && cand[0])
        snprintf(dst, cap, "; did you mean %s?", cand);
    else
        dst[0] = '\0';
}

void cfg_known_list(char *dst, size_t cap, const char *section)
{
    size_t o = 0;

    dst[0] = '\0';
    for (size_t i = 0; i < cfg_nkeys && o < cap; i++) {
        if (strcmp(cfg_keys[i].section, section) != 0)
            continue;
        o += (size_t)snprintf(dst + o, cap - o, "%s%s", o ? ", " : "", cfg_keys[i].name);
    }
}

/* ---- invalid JSON ------------------------------------------------------------------ */

static size_t cfg_string_end(const char *json, size_t len, size_t open_quote)
{
    size_t e = open_quote + 1;

    while (e < len && json[e] != '"')
        e += json[e] == '\\' ? 2 : 1;
    return e < len ? e : len;
}

static bool cfg_is_literal(const char *s, size_t n)
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
static void cfg_redact_snippet(const char *json, size_t len, size_t start, size_t end, char *out,
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
        size_t e = cfg_string_end(json, len, open);
        if (cfg_is_known_name(json + open + 1, e - open - 1))
            EMIT(json + start, (e < end ? e + 1 : end) - start);
        else
            EMIT(e < end ? "...\"" : "...", e < end ? 4 : 3);
        i = e + 1;
    }
    while (i < end) {
        char c = json[i];
        if (c == '"') {
            size_t e = cfg_string_end(json, len, i);
            if (cfg_is_known_name(json + i + 1, e - i - 1))
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
            if (cfg_is_literal(json + i, r - i))
                EMIT(json + i, (r < end ? r : end) - i);
            else
                EMIT("...", 3);
            i = r;
        }
    }
    out[o] = '\0';
#undef EMIT
}

int cfg_syntax_error(const char *file, const char *json, size_t len, size_t pos, char *err,
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
        cfg_redact_snippet(json, len, start, end, snip, sizeof(snip));
        cfg_quote(near, sizeof(near), snip);
    }
    if (file)
        return cfg_fail(err, errlen, "%s: line %zu: invalid JSON near %s (column %zu)", file, line,
                        near, col);
    return cfg_fail(err, errlen, "line %zu: invalid JSON near %s (column %zu)", line, near, col);
}
