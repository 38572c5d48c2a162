/* The manifest document (manifest.h). Parsing trusts nothing: every member is checked for
 * its type and range, and a document of another format is refused by name. */
#include "format/manifest.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "s3commit.h"

int manifest_encode(const struct manifest *m, char *out, size_t cap)
{
    int n = snprintf(out, cap,
                     "{\"format\":%d,\"epoch\":%" PRIu64 ",\"durable_seq\":%" PRIu64
                     ",\"durable_first_seq\":%" PRIu64 ",\"start_epoch\":%" PRIu64
                     ",\"max_batch_commits\":%" PRIu64
                     ",\"writer\":{\"id\":\"%s\",\"started_at_ms\":%" PRIu64
                     "},\"updated_at_ms\":%" PRIu64 "}\n",
                     m->format, m->epoch, m->durable_seq, m->durable_first_seq, m->start_epoch,
                     m->max_batch_commits, m->writer, m->started_at_ms, m->updated_at_ms);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* A non-negative integer member below 2^53 (exact in a JSON number). */
static int manifest_u64(const cJSON *o, const char *name, bool required, uint64_t *out, char *err,
                        size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v) {
        if (!required) {
            *out = 0;
            return 0;
        }
        snprintf(err, errlen, "manifest: \"%s\" is missing", name);
        return -1;
    }
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d < 0 || d > 9007199254740991.0 || floor(d) != d) {
        snprintf(err, errlen, "manifest: \"%s\" is not a non-negative integer", name);
        return -1;
    }
    *out = (uint64_t)d;
    return 0;
}

int manifest_parse(const char *json, size_t len, struct manifest *m, char *err, size_t errlen)
{
    int rc = -1;
    uint64_t format = 0;
    memset(m, 0, sizeof(*m));
    errno = 0;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root && errno == ENOMEM) { /* not damage: cJSON says NULL for both */
        snprintf(err, errlen, "manifest: out of memory parsing it");
        return S3C_ENOMEM;
    }
    if (!root || !cJSON_IsObject(root)) {
        snprintf(err, errlen, "manifest: not a JSON object");
        goto out;
    }
    if (manifest_u64(root, "format", true, &format, err, errlen) < 0)
        goto out;
    if (format != MANIFEST_FORMAT) {
        snprintf(err, errlen,
                 "manifest: format %" PRIu64 " (this s3commit reads format %d); use the "
                 "s3commit version that wrote it, or a new prefix",
                 format, MANIFEST_FORMAT);
        rc = S3C_EFORMAT; /* not damage: another version's */
        goto out;
    }
    m->format = (int)format;
    if (manifest_u64(root, "epoch", true, &m->epoch, err, errlen) < 0 ||
        manifest_u64(root, "durable_seq", true, &m->durable_seq, err, errlen) < 0 ||
        manifest_u64(root, "durable_first_seq", false, &m->durable_first_seq, err, errlen) < 0 ||
        manifest_u64(root, "start_epoch", false, &m->start_epoch, err, errlen) < 0 ||
        manifest_u64(root, "max_batch_commits", false, &m->max_batch_commits, err, errlen) < 0 ||
        manifest_u64(root, "updated_at_ms", false, &m->updated_at_ms, err, errlen) < 0)
        goto out;
    if (m->durable_first_seq > m->durable_seq) {
        snprintf(err, errlen, "manifest: durable_first_seq is above durable_seq");
        goto out;
    }
    if (m->start_epoch > m->epoch) {
        snprintf(err, errlen, "manifest: start_epoch %" PRIu64 " is above epoch %" PRIu64,
                 m->start_epoch, m->epoch);
        goto out;
    }
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(root, "writer");
    if (cJSON_IsObject(w)) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(w, "id");
        if (cJSON_IsString(id))
            snprintf(m->writer, sizeof(m->writer), "%s", id->valuestring);
        if (manifest_u64(w, "started_at_ms", false, &m->started_at_ms, err, errlen) < 0)
            goto out;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}
