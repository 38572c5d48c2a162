/* The JSON config (docs/config.md): strict parsing with cJSON and the public calls. The
 * keys are in schema.c, value checks in check.c, messages in message.c, the dump in
 * dump.c. Unknown keys, wrong types and out-of-range values are refused with one line
 * naming the key; a secret is never echoed into a message, and is wiped when freed. */
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config/cfg_internal.h"

/* ---- parsing ----------------------------------------------------------------------- */

/* True when an earlier sibling has the same name: cJSON keeps both, so one would be
 * silently ignored. Only known names get here, so the scan stays short. */
static bool cfg_seen_before(const cJSON *obj, const cJSON *item)
{
    for (const cJSON *a = obj->child; a && a != item; a = a->next)
        if (strcmp(a->string, item->string) == 0)
            return true;
    return false;
}

/* Blanks credential strings in the tree before it is freed. */
static void cfg_wipe_tree_secrets(cJSON *root)
{
    cJSON *s3 = cJSON_GetObjectItemCaseSensitive(root, "s3");

    if (!cJSON_IsObject(s3))
        return;
    for (cJSON *c = s3->child; c; c = c->next)
        if (cJSON_IsString(c) && c->valuestring)
            explicit_bzero(c->valuestring, strlen(c->valuestring));
}

static int cfg_parse_doc(const char *file, const char *json, size_t len, struct s3c_config *cfg,
                         char *err, size_t errlen)
{
    const char *end = NULL;
    const struct cfg_key *k;
    cJSON *root;
    char hint[160], got[128];
    bool bucket_set = false, region_set = false, endpoint_set = false;
    int has_key = 0, has_secret = 0, has_token = 0, rc = S3C_ECONFIG;

    cfg_defaults(cfg);
    if (memchr(json, '\0', len))
        return cfg_syntax_error(
            file, json, len, (size_t)((const char *)memchr(json, '\0', len) - json), err, errlen);
    errno = 0;
    root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root && errno == ENOMEM) {
        /* cJSON answers NULL for bad JSON and for a failed allocation alike; only the
         * allocator says which (malloc sets ENOMEM, parsing never does). */
        cfg_fail(err, errlen, "out of memory parsing the JSON");
        return S3C_ENOMEM;
    }
    if (!root)
        return cfg_syntax_error(file, json, len, end ? (size_t)(end - json) : 0, err, errlen);
    for (const char *p = end; p < json + len; p++) {
        if (!isspace((unsigned char)*p)) {
            rc = cfg_syntax_error(file, json, len, (size_t)(p - json), err, errlen);
            goto out_free_tree;
        }
    }
    if (!cJSON_IsObject(root)) {
        cfg_describe(got, sizeof(got), root, true);
        rc = cfg_fail(err, errlen, "the top level must be an object {...} (got %s)", got);
        goto out_free_tree;
    }
    for (const cJSON *sec = root->child; sec; sec = sec->next) {
        if (!cfg_is_section(sec->string)) {
            cfg_suggest(hint, sizeof(hint), NULL, sec->string);
            rc = cfg_fail(err, errlen,
                          "unknown section \"%.64s\"%s (known: s3, persistence, pipeline, log, "
                          "metrics)",
                          sec->string, hint);
            goto out_free_tree;
        }
        if (!cJSON_IsObject(sec)) {
            cfg_describe(got, sizeof(got), sec, true);
            rc = cfg_fail(err, errlen, "%s must be an object {...} (got %s)", sec->string, got);
            goto out_free_tree;
        }
        if (cfg_seen_before(root, sec)) {
            rc = cfg_fail(err, errlen, "section \"%s\" appears twice; merge them", sec->string);
            goto out_free_tree;
        }
        for (const cJSON *item = sec->child; item; item = item->next) {
            k = cfg_find_key(sec->string, item->string);
            if (!k) {
                char known[512];
                cfg_suggest(hint, sizeof(hint), sec->string, item->string);
                cfg_known_list(known, sizeof(known), sec->string);
                if (hint[0])
                    rc = cfg_fail(err, errlen, "unknown key %s.%.64s%s", sec->string, item->string,
                                  hint);
                else
                    rc = cfg_fail(err, errlen, "unknown key %s.%.64s (known in %s: %s)",
                                  sec->string, item->string, sec->string, known);
                goto out_free_tree;
            }
            if (cfg_seen_before(sec, item)) {
                rc = cfg_fail(err, errlen, "%s.%s appears twice; keep one", sec->string,
                              item->string);
                goto out_free_tree;
            }
            if (cfg_set_value(cfg, k, item, err, errlen))
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
            if (cfg_check_region(names[i], r, err, errlen))
                goto out_free_tree;
            snprintf(cfg->s3.region, sizeof(cfg->s3.region), "%s", r);
            break;
        }
    }
    if (!endpoint_set)
        snprintf(cfg->s3.endpoint, sizeof(cfg->s3.endpoint), "https://s3.%s.amazonaws.com",
                 cfg->s3.region);
    if (cfg_validate(cfg, bucket_set, err, errlen))
        goto out_free_tree;
    if (cfg_resolve_credentials(cfg, has_key, has_secret, has_token, err, errlen))
        goto out_free_tree;
    rc = 0;
out_free_tree:
    cfg_wipe_tree_secrets(root);
    cJSON_Delete(root);
    if (rc)
        explicit_bzero(&cfg->s3, sizeof(cfg->s3));
    return rc;
}

/* ---- the public calls -------------------------------------------------------------- */

static int cfg_parse_into_new(const char *file, const char *json, size_t len, s3c_config **out,
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
    rc = cfg_parse_doc(file, json ? json : "", len, cfg, err, errlen);
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
    return cfg_parse_into_new(NULL, json, len, out, err, errlen);
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
    rc = cfg_parse_into_new(path, buf, len, out, err, errlen);
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
    if (cfg_check_endpoint("s3.endpoint", endpoint, NULL, 0))
        return S3C_EINVAL;
    snprintf(cfg->s3.endpoint, sizeof(cfg->s3.endpoint), "%s", endpoint);
    return 0;
}
