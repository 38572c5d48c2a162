/* Shared between the files of src/config: the key table (schema.c), value checks
 * (check.c), messages and suggestions (message.c) and the credential resolver
 * (credentials.c). Nothing here may put a secret (secret key, session token) into an
 * error message. */
#ifndef S3C_CFG_INTERNAL_H
#define S3C_CFG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "config/config.h"

/* ---- schema.c: every key the file may hold ---------------------------------------- */

enum cfg_key_kind {
    CFG_KEY_INT,    /* int, integral JSON number in [min, max] */
    CFG_KEY_I64,    /* int64_t, integral JSON number in [min, max] */
    CFG_KEY_BOOL,   /* bool */
    CFG_KEY_STR,    /* char[size], checked by check() */
    CFG_KEY_SECRET, /* char[size], never echoed, masked in the dump */
    CFG_KEY_ENUM,   /* enum stored as int, one of choices[] (index = value) */
};

/* A string key's extra check: 0, or S3C_ECONFIG with one message naming path in err. */
typedef int (*cfg_check_fn)(const char *path, const char *v, char *err, size_t errlen);

struct cfg_key {
    const char *section, *name; /* "s3", "bucket" */
    enum cfg_key_kind kind;
    size_t off, size;           /* the field in struct s3c_config */
    int64_t min, max;           /* CFG_KEY_INT / CFG_KEY_I64: the allowed range */
    const char *const *choices; /* CFG_KEY_ENUM: the names, NULL-terminated */
    cfg_check_fn check;         /* CFG_KEY_STR: NULL or the value's check */
};

extern const struct cfg_key cfg_keys[]; /* in section order, as the dump prints them */
extern const size_t cfg_nkeys;
extern const char *const cfg_sections[];
extern const size_t cfg_nsections;

/* The key section.name, or NULL. */
const struct cfg_key *cfg_find_key(const char *section, const char *name);
/* True when name is one of cfg_sections. */
bool cfg_is_section(const char *name);
/* True when s[0, n) is a section or key name (safe to echo in a message). */
bool cfg_is_known_name(const char *s, size_t n);

/* ---- check.c: values ---------------------------------------------------------------- */

/* The string checks the key table names; also used for the environment and the API. */
int cfg_check_endpoint(const char *path, const char *v, char *err, size_t errlen);
int cfg_check_bucket(const char *path, const char *v, char *err, size_t errlen);
int cfg_check_prefix(const char *path, const char *v, char *err, size_t errlen);
int cfg_check_region(const char *path, const char *v, char *err, size_t errlen);
int cfg_check_file(const char *path, const char *v, char *err, size_t errlen);
int cfg_check_listen(const char *path, const char *v, char *err, size_t errlen);

/* Checks v's type and range against k and stores it in cfg. 0 or S3C_ECONFIG. */
int cfg_set_value(struct s3c_config *cfg, const struct cfg_key *k, const cJSON *v, char *err,
                  size_t errlen);

/* The rules between keys, once every key is in. 0 or S3C_ECONFIG. */
int cfg_validate(const struct s3c_config *cfg, bool bucket_set, char *err, size_t errlen);

/* ---- message.c: what an error says ---------------------------------------------------- */

/* Writes "config: <message>" into err (if errlen > 0) and returns S3C_ECONFIG. */
int cfg_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A value quoted for a message: printable ASCII kept, the rest escaped, cut at 60 bytes. */
void cfg_quote(char *dst, size_t cap, const char *s);

/* What a JSON value is, for "(got ...)"; secret: never the value itself. */
void cfg_describe(char *dst, size_t cap, const cJSON *v, bool secret);

/* "; did you mean X?" for the known name closest to name, or "". section NULL: name
 * was a top-level key. */
void cfg_suggest(char *dst, size_t cap, const char *section, const char *name);

/* "a, b, c": the keys of section. */
void cfg_known_list(char *dst, size_t cap, const char *section);

/* The message for invalid JSON at byte pos: line, column and a redacted snippet.
 * Returns S3C_ECONFIG. file may be NULL. */
int cfg_syntax_error(const char *file, const char *json, size_t len, size_t pos, char *err,
                     size_t errlen);

/* ---- credentials.c ------------------------------------------------------------------ */

/* Fills cfg->s3 credentials and credentials_source from, in order: what the file set
 * (file_has_key / file_has_secret / file_has_token say which keys it named), the
 * AWS_* environment, the shared credentials file. No credentials at all is allowed
 * ("none"). Returns 0 or S3C_ECONFIG with one message in err. */
int cfg_resolve_credentials(struct s3c_config *cfg, int file_has_key, int file_has_secret,
                            int file_has_token, char *err, size_t errlen);

#endif
