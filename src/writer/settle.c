/* Settling a 412 on an If-None-Match PUT by reading the object back (writer.h): its
 * header, then (when the header is ours) its trailer and size. A 412 is never answered by
 * a blind retry and never taken as success without the bytes to prove it. */
#include <stdio.h>
#include <string.h>

#include "s3commit.h"
#include "writer/writer.h"

static void settle_on_trailer(void *ctx, const struct xport_result *r);

static void settle_finish(struct settle *s, enum settle_result v, const char *why)
{
    s->done(s->ctx, v, s->etag, why);
}

static void settle_on_header(void *ctx, const struct xport_result *r)
{
    struct settle *s = ctx;
    char why[512], err[256];
    struct obj_header h = {0};

    if (r->cls == XPORT_NOT_FOUND)
        return settle_finish(s, SETTLE_GONE, "the key is empty now");
    if (r->cls == XPORT_RETRYABLE)
        return settle_finish(s, SETTLE_RETRY, r->error);
    if (r->range_unsatisfiable) {
        /* Nothing at byte 0: the key holds an empty object (S3 answers a range of one so).
         * Not a failed read: no later open reads anything else there. */
        snprintf(why, sizeof(why), "%s holds an empty object (0 bytes)", s->key);
        return settle_finish(s, SETTLE_CORRUPT, why);
    }
    if (r->cls != XPORT_OK) {
        snprintf(why, sizeof(why), "cannot read %s back after a 412: %s", s->key, r->error);
        return settle_finish(s, SETTLE_UNREADABLE, why);
    }
    snprintf(s->etag, sizeof(s->etag), "%s", r->etag);
    if (obj_header_decode(r->body, r->body_len, &h, NULL, err, sizeof(err)) < 0) {
        if (h.version > OBJ_VERSION) { /* a newer s3commit wrote there: not ours to go on */
            snprintf(why, sizeof(why),
                     "%s holds an object of format version %u, which a newer s3commit wrote",
                     s->key, h.version);
            return settle_finish(s, SETTLE_FENCED, why);
        }
        snprintf(why, sizeof(why), "%s holds no valid object header: %s", s->key, err);
        return settle_finish(s, SETTLE_CORRUPT, why);
    }
    if (h.epoch > s->epoch) {
        snprintf(why, sizeof(why), "%s was written by epoch %llu (ours is %llu)", s->key,
                 (unsigned long long)h.epoch, (unsigned long long)s->epoch);
        return settle_finish(s, SETTLE_FENCED, why);
    }
    if (h.epoch < s->floor_epoch) {
        snprintf(why, sizeof(why), "%s is an orphan of epoch %llu", s->key,
                 (unsigned long long)h.epoch);
        return settle_finish(s, SETTLE_ORPHAN, why);
    }
    if (h.epoch < s->epoch) {
        snprintf(why, sizeof(why), "%s continues the chain (epoch %llu, seqs %llu..%llu)", s->key,
                 (unsigned long long)h.epoch, (unsigned long long)h.first_seq,
                 (unsigned long long)h.last_seq);
        return settle_finish(s, SETTLE_CHAIN, why);
    }
    if (s->replay &&
        (memcmp(r->body, s->header, OBJ_HEADER_BYTES) != 0 || r->object_size != s->size)) {
        snprintf(why, sizeof(why), "%s holds another attempt of epoch %llu (seqs %llu..%llu)",
                 s->key, (unsigned long long)h.epoch, (unsigned long long)h.first_seq,
                 (unsigned long long)h.last_seq);
        return settle_finish(s, SETTLE_ORPHAN, why);
    }
    if (memcmp(r->body, s->header, OBJ_HEADER_BYTES) != 0) {
        snprintf(why, sizeof(why),
                 "%s holds another object of our own epoch %llu (seqs %llu..%llu)", s->key,
                 (unsigned long long)h.epoch, (unsigned long long)h.first_seq,
                 (unsigned long long)h.last_seq);
        return settle_finish(s, SETTLE_CORRUPT, why);
    }
    if (r->object_size != s->size)
        goto differs;
    /* Our header: the trailer's CRC-32C of every byte before it says whether the rest is
     * ours too. */
    s->step = 1;
    int rc =
        xport_get(s->x, s->key, s->size - OBJ_TRAILER_BYTES, s->size - 1, settle_on_trailer, s);
    if (rc < 0)
        return settle_finish(s, SETTLE_RETRY, s3c_strerror(rc));
    return;
differs:
    snprintf(why, sizeof(why), "%s has our header but %llu bytes (ours: %llu)", s->key,
             (unsigned long long)r->object_size, (unsigned long long)s->size);
    settle_finish(s, SETTLE_CORRUPT, why);
}

static void settle_on_trailer(void *ctx, const struct xport_result *r)
{
    struct settle *s = ctx;
    char why[512];
    if (r->cls == XPORT_NOT_FOUND)
        return settle_finish(s, SETTLE_GONE, "the key is empty now");
    if (r->cls == XPORT_RETRYABLE)
        return settle_finish(s, SETTLE_RETRY, r->error);
    if (r->cls != XPORT_OK) {
        snprintf(why, sizeof(why), "cannot read %s back after a 412: %s", s->key, r->error);
        return settle_finish(s, SETTLE_UNREADABLE, why);
    }
    if (r->body_len == OBJ_TRAILER_BYTES && memcmp(r->body, s->trailer, OBJ_TRAILER_BYTES) == 0)
        return settle_finish(s, SETTLE_OURS, "our earlier attempt landed");
    if (s->replay) {
        snprintf(why, sizeof(why), "%s holds another attempt with our header", s->key);
        return settle_finish(s, SETTLE_ORPHAN, why);
    }
    snprintf(why, sizeof(why), "%s has our header but another trailer CRC", s->key);
    settle_finish(s, SETTLE_CORRUPT, why);
}

int settle_start(struct settle *s)
{
    s->step = 0;
    s->etag[0] = '\0';
    return xport_get(s->x, s->key, 0, OBJ_HEADER_BYTES - 1, settle_on_header, s);
}

const char *settle_name(enum settle_result r)
{
    switch (r) {
    case SETTLE_OURS:
        return "ours";
    case SETTLE_FENCED:
        return "fenced";
    case SETTLE_ORPHAN:
        return "orphan";
    case SETTLE_CHAIN:
        return "chain";
    case SETTLE_GONE:
        return "gone";
    case SETTLE_RETRY:
        return "retry";
    case SETTLE_CORRUPT:
        return "corrupt";
    case SETTLE_UNREADABLE:
        return "unreadable";
    }
    return "?";
}
