/* Synchronous requests for the open-time protocol: one S3 request run to completion on the
 * transport's loop, retried with the config's backoff when the answer is retryable. Only
 * for the caller's thread before the persistence thread starts; never on a hot path. */
#ifndef S3C_WRITER_CALL_H
#define S3C_WRITER_CALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "config/config.h"
#include "transport/transport.h"

struct call_req {
    enum xport_op op;        /* PUT, GET or LIST */
    const char *key;         /* PUT, GET */
    uint64_t first, last;    /* GET range (last < first: the whole object) */
    const struct iovec *iov; /* PUT body */
    int iovcnt;
    bool if_none_match;      /* PUT */
    const char *if_match;    /* PUT */
    const char *list_prefix; /* LIST */
    const char *start_after; /* LIST */
    const char *token;       /* LIST */
    int max_keys;            /* LIST */
};

struct call_res {
    enum xport_class cls; /* OK, EXISTS or NOT_FOUND (other classes are errors) */
    long status;
    char etag[256];
    unsigned char *body; /* GET: malloc'd, NUL-terminated; freed by call_res_free */
    size_t body_len;
    uint64_t object_size;
    char **keys; /* LIST: malloc'd copies */
    size_t nkeys;
    bool truncated;
    char *next_token;
};

/* Runs req until it gets an answer that is not retryable, retrying retryable ones up to
 * persistence.max_retry_attempts times with exponential backoff and full jitter. Returns 0
 * with res filled (res->cls is OK, EXISTS or NOT_FOUND), or S3C_ES3 / S3C_ENETWORK /
 * S3C_ENOMEM with the transport's error line in err. */
int call_run(struct xport *x, const struct s3c_config *cfg, const struct call_req *req,
             struct call_res *res, char *err, size_t errlen);
void call_res_free(struct call_res *res);
/* How long to wait before try attempt + 1 of a request whose attempt-th try (1-based)
 * failed retryably: full jitter (rng, an xorshift state) under retry_base_delay_ms doubled
 * per try, capped by max_retry_delay_ms. */
uint64_t call_backoff_ms(const struct cfg_persistence *p, int attempt, uint64_t *rng);

#endif
