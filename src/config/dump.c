/* The masked dump (s3c_config_dump, `s3commit check-config`): every key with its
 * effective value, in the key table's order. Secrets show as "****", the access key id
 * as its first four characters; nothing else may print a credential. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config/cfg_internal.h"

static cJSON *cfg_dump_masked(const struct cfg_key *k, const char *v)
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
 * escaped by cJSON, so every raw tab is layout. Takes s (cJSON's, freed with cJSON_free:
 * a program may have given cJSON its own allocator) and returns a malloc'd copy, or NULL
 * when out of memory. */
static char *cfg_dump_detab(char *s)
{
    size_t tabs = 0, o = 0;
    char *out;

    for (const char *r = s; *r; r++)
        tabs += *r == '\t';
    out = malloc(strlen(s) + tabs + 1);
    if (!out) {
        cJSON_free(s);
        return NULL;
    }
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
    cJSON_free(s);
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
    for (size_t i = 0; i < cfg_nkeys; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        const char *base = (const char *)cfg + k->off;

        if (!cur || strcmp(cur, k->section) != 0) {
            cur = k->section;
            sec = cJSON_AddObjectToObject(root, cur);
            if (!sec)
                goto out_free_tree;
        }
        switch (k->kind) {
        case CFG_KEY_INT:
            v = cJSON_CreateNumber(*(const int *)base);
            break;
        case CFG_KEY_I64:
            v = cJSON_CreateNumber((double)*(const int64_t *)base);
            break;
        case CFG_KEY_BOOL:
            v = cJSON_CreateBool(*(const bool *)base);
            break;
        case CFG_KEY_ENUM: {
            int e = *(const int *)base, n = 0;
            while (k->choices[n])
                n++;
            v = cJSON_CreateString(e >= 0 && e < n ? k->choices[e] : "?");
            break;
        }
        case CFG_KEY_SECRET:
            v = cfg_dump_masked(k, base);
            break;
        case CFG_KEY_STR:
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
        out = cfg_dump_detab(out);
out_free_tree:
    cJSON_Delete(root);
    return out;
}
