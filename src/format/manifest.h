/* The manifest document (`<prefix>manifest.json`, docs/format.md): the log's small mutable
 * record, changed only by compare-and-swap. Encoding and strict parsing with cJSON; pure,
 * thread-safe. */
#ifndef S3C_MANIFEST_H
#define S3C_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MANIFEST_FORMAT 2
#define MANIFEST_MAX_BYTES 4096 /* an encoded manifest always fits */
#define WRITER_ID_MAX 96

struct manifest {
    int format;                 /* MANIFEST_FORMAT */
    uint64_t epoch;             /* the newest writer's epoch */
    uint64_t durable_seq;       /* W: every seq <= W is on the chain (a hint: never ahead) */
    uint64_t durable_first_seq; /* first seq of the object holding W (checks the hint) */
    uint64_t start_epoch;       /* epoch of the last EPOCH_START at or before durable_seq */
    uint64_t max_batch_commits; /* the most records any object of the log holds (seeking) */
    char writer[WRITER_ID_MAX]; /* "host:pid:random" of the epoch's writer */
    uint64_t started_at_ms;     /* when that writer took the epoch (Unix ms) */
    uint64_t updated_at_ms;     /* when this document was written (Unix ms) */
};

/* Writes the JSON document into out. Returns its length, or -1 when out is too small. */
int manifest_encode(const struct manifest *m, char *out, size_t cap);

/* Parses a manifest. Returns 0, or -1 with one line in err naming what is wrong, or
 * S3C_EFORMAT (a format other than 2: another version wrote it, not damage) or S3C_ENOMEM
 * (not damage: out of memory). Unknown members are
 * ignored (later versions may add some). */
int manifest_parse(const char *json, size_t len, struct manifest *m, char *err, size_t errlen);

#endif
