/* s3commit-mock: an S3-compatible HTTP/1.1 server for tests, demos and load tests, with
 * SigV4 checks, body checksums, conditional writes and fault injection. Shared types of
 * its files. It must never crash on bad input, block its loop on one client, or log a
 * secret. */
#ifndef S3C_MOCK_H
#define S3C_MOCK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- configuration (flags) ---- */

enum store_mode { STORE_MEMORY, STORE_DISK, STORE_NONE };

/* What a PUT's ETag is. MD5: the hex MD5 of the body, as S3 answers for objects stored
 * plain or under SSE-S3. KMS: as S3 answers for objects under SSE-KMS: an opaque tag that
 * is not the body's MD5 (new for every PUT), with x-amz-server-side-encryption: aws:kms on
 * PUT, GET and HEAD answers; no MD5 is computed unless the client sent Content-MD5. */
enum etag_mode { ETAG_MD5, ETAG_KMS };

struct faults {
    double latency_ms;         /* added before every S3 answer */
    double latency_jitter_ms;  /* plus uniform [0, jitter) */
    double error_rate;         /* answer error_status without doing the operation */
    int error_status;          /* 500 (InternalError), 503 (SlowDown) or 403 (AccessDenied) */
    double written_error_rate; /* PUT/DELETE: do it, then answer 500 InternalError */
    double reset_rate;         /* reset the connection (RST) once the headers arrived */
    double reset_next;         /* reset the next N requests so, whatever the rate */
    double stall_rate;         /* take the request, never answer */
    double slow_close;         /* answer with Connection: close, close slow_close_ms later */
    double slow_close_ms;
    double bandwidth_bytes_per_s; /* per connection, both directions; 0 = unlimited */
    double conflict_rate;         /* conditional PUT: 409 ConditionalRequestConflict, not done */
    char key_prefix[1025];        /* faults only for object keys starting so ("" = all) */
    size_t key_prefix_len;
    bool reads_only;   /* faults only for GET and HEAD of an object */
    bool ignore_range; /* GETs answered whole (200), their Range ignored, as some proxies do */
};

struct mock_cfg {
    char listen_host[256];
    int listen_port;
    const char *access_key, *secret_key, *session_token; /* NULL: no SigV4 check */
    const char *region;
    const char *data_dir;
    enum store_mode store;
    enum etag_mode etag;
    uint64_t max_object_bytes;
    int threads;
    uint64_t seed;
    int request_timeout_ms;   /* a started request idle this long answers 400 RequestTimeout */
    int idle_timeout_ms;      /* a keep-alive connection idle this long between requests is
                                 closed, as S3 does (0 = never) */
    int max_skew_s;           /* x-amz-date further than this from now: 403 */
    const char *vhost_domain; /* "localhost": Host "b.localhost" addresses bucket b */
};

/* ---- statistics: every counter is a relaxed atomic, read by GET /_mock/stats ---- */

enum op {
    OP_LIST_BUCKETS,
    OP_CREATE_BUCKET,
    OP_DELETE_BUCKET,
    OP_HEAD_BUCKET,
    OP_GET_BUCKET_LOCATION,
    OP_LIST_OBJECTS_V2,
    OP_LIST_OBJECTS,
    OP_PUT_OBJECT,
    OP_GET_OBJECT,
    OP_HEAD_OBJECT,
    OP_DELETE_OBJECT,
    OP_DELETE_OBJECTS,
    OP_CONTROL,
    OP_BAD_REQUEST, /* did not parse or has no operation */
    OP_COUNT
};

enum fault_kind {
    F_LATENCY,
    F_ERROR,
    F_WRITTEN_ERROR,
    F_RESET,
    F_STALL,
    F_SLOW_CLOSE,
    F_BANDWIDTH,
    F_CONFLICT,
    F_COUNT
};

/* Body digests a stored PutObject carried and the mock checked and found right. */
enum digest_kind {
    D_CONTENT_SHA256,   /* x-amz-content-sha256 as the hex SHA-256 of the body */
    D_UNSIGNED_PAYLOAD, /* x-amz-content-sha256: UNSIGNED-PAYLOAD (nothing to check) */
    D_MD5,              /* Content-MD5 */
    D_CRC32C,           /* x-amz-checksum-crc32c (header or aws-chunked trailer) */
    D_CRC32,            /* x-amz-checksum-crc32 (header or trailer) */
    D_SHA256,           /* x-amz-checksum-sha256 (header or trailer) */
    D_COUNT
};

struct stats {
    atomic_uint_fast64_t status[OP_COUNT][600];
    atomic_uint_fast64_t bytes_in, bytes_out, requests;
    atomic_uint_fast64_t faults[F_COUNT];
    atomic_uint_fast64_t digests[D_COUNT]; /* per stored PUT, each kind at most once */
    atomic_int_fast64_t conns_open, conns_peak;
    atomic_uint_fast64_t conns_total;
};

/* ---- the store ---- */

struct blob {
    atomic_int refs;
    size_t len;
    char data[];
};

struct blob *blob_new(size_t len);
struct blob *blob_ref(struct blob *b);
void blob_unref(struct blob *b); /* NULL ok */

struct objmeta {
    char etag[33]; /* 32 hex digits, no quotes (see enum etag_mode) */
    uint64_t size;
    int64_t mtime_ms;
};

struct store;

struct store *store_open(enum store_mode mode, const char *data_dir, char *err, size_t errlen);
void store_close(struct store *s);
enum store_mode store_mode(const struct store *s);

/* 0, -EEXIST (exists), -EINVAL (bad name), -EIO (disk) */
int store_create_bucket(struct store *s, const char *name);
/* 0, -ENOENT, -ENOTEMPTY, -EIO */
int store_delete_bucket(struct store *s, const char *name);
bool store_bucket_exists(struct store *s, const char *name);
/* Calls fn for each bucket in name order. */
void store_list_buckets(struct store *s, void (*fn)(void *ctx, const char *name, int64_t ms),
                        void *ctx);

struct put_cond {
    bool if_none_match_star; /* fail with -EEXIST when the key exists */
    const char *if_match;    /* etag (no quotes); -ENOENT... see store_put */
};

/* Stores body (a reference is taken; NULL with size 0 in STORE_NONE). Returns 0,
 * -ENODEV (no bucket), -EEXIST (If-None-Match: * and the key exists), -ESRCH (If-Match
 * and no such key), -EPERM (If-Match etag differs), -EIO. */
int store_put(struct store *s, const char *bucket, const char *key, size_t klen, struct blob *body,
              const struct objmeta *meta, const struct put_cond *cond);
/* Fills meta and, when body is not NULL, a new reference to the body. Returns 0,
 * -ENODEV (no bucket), -ENOENT (no key), -EIO. */
int store_get(struct store *s, const char *bucket, const char *key, size_t klen,
              struct objmeta *meta, struct blob **body);
/* 0 (also when the key did not exist), -ENODEV, -EIO */
int store_delete(struct store *s, const char *bucket, const char *key, size_t klen);

struct list_sink {
    void *ctx;
    void (*key)(void *ctx, const char *key, size_t klen, const struct objmeta *m);
    void (*prefix)(void *ctx, const char *p, size_t plen);
};

struct list_args {
    const char *prefix;
    size_t prefix_len;
    const char *delimiter; /* "" when none */
    size_t delimiter_len;
    const char *after; /* resume strictly after this key or common prefix */
    size_t after_len;
    int max_keys;
};

struct list_result {
    bool truncated;
    int count;  /* keys + common prefixes emitted */
    char *last; /* malloc'd: the last key or prefix emitted (for the next token) */
    size_t last_len;
};

/* Lists keys in byte order. Returns 0 or -ENODEV. res->last must be freed. */
int store_list(struct store *s, const char *bucket, const struct list_args *a,
               const struct list_sink *sink, struct list_result *res);

/* ---- the whole server ---- */

struct mock {
    struct mock_cfg cfg;
    struct store *store;
    struct stats stats;
    pthread_mutex_t fault_mu; /* guards faults, rng and rng_new */
    struct faults faults;
    uint64_t rng[4];       /* the six original draws of each request */
    uint64_t rng_new[4];   /* draws added later (conflict), so old seeds keep their choices */
    atomic_bool any_fault; /* fast path: no lock when no fault is set */
    atomic_bool stopping;
    unsigned char signing_key[32]; /* cached for signing_date */
    char signing_date[9];
    pthread_mutex_t key_mu;
};

extern struct mock g_mock;

/* What the fault dice decided for one request. */
struct fault_plan {
    bool error, written_error, reset, stall, slow_close;
    bool conflict;     /* answer a conditional PUT 409 ConditionalRequestConflict */
    bool ignore_range; /* answer a GET with the whole object (200), as if without Range */
    uint32_t delay_ms;
    int error_status;
    uint32_t slow_close_ms;
    double bandwidth;
};

void faults_init(struct mock *m, uint64_t seed);
/* Draws the faults of one request on key (NULL, 0 for a bucket-level request; read: a GET
 * or HEAD of an object); with a key_prefix set, a request outside it gets an empty plan
 * (the draws still happen), and so does a write with reads_only set. */
void faults_plan(struct mock *m, struct fault_plan *p, const char *key, size_t klen, bool read);
/* Applies a JSON object of fault settings. Returns 0, or -1 with a message in err. */
int faults_apply_json(struct mock *m, const char *json, size_t len, char *err, size_t errlen);
/* JSON text of the current faults / statistics (malloc'd). */
char *faults_json(struct mock *m);
char *stats_json(struct mock *m);
void stats_reset(struct mock *m);
const char *op_name(enum op op);

static inline void stat_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* ---- one HTTP request as the S3 layer sees it (server.c fills it, s3.c answers) ---- */

#define REQ_URL_MAX 8192
#define REQ_HDR_BYTES 16384 /* names + values; more answers 431 */
#define REQ_MAX_HEADERS 100

struct sbuf {
    char *p;
    size_t len, cap;
};

void sb_free(struct sbuf *b);
void sb_put(struct sbuf *b, const void *p, size_t n);
void sb_puts(struct sbuf *b, const char *s);
void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_xml(struct sbuf *b, const char *s, size_t n); /* XML-escaped */

struct body_check; /* s3.c: digests over the body */

struct req {
    /* filled by server.c */
    int method; /* enum http_method */
    char url[REQ_URL_MAX];
    size_t url_len;
    char hbuf[REQ_HDR_BYTES];
    size_t hlen;
    const char *hname[REQ_MAX_HEADERS], *hvalue[REQ_MAX_HEADERS];
    int nh;
    bool keep_alive, has_body;
    uint64_t content_length; /* when has_cl */
    bool has_cl;
    bool too_big;        /* url or headers over the limits */
    uint64_t body_bytes; /* received so far */
    /* set by s3_begin */
    enum op op;
    bool keep_body;    /* buffer the body in body */
    struct blob *body; /* the body when kept */
    size_t body_cap;
    struct body_check *check;
    struct fault_plan plan;
    char bucket[64];
    char *key; /* decoded key (malloc'd), NULL when none */
    size_t klen;
    char *path, *query;   /* split copy of url, NUL-terminated, decoded path untouched */
    bool expect_continue; /* Expect: 100-continue, body or not */
    bool early;           /* the answer is ready before the body (error) */
    bool aws_chunked;     /* body uses Content-Encoding: aws-chunked */
    char request_id[17];
};

struct resp {
    int status;
    struct sbuf head;  /* extra header lines, each ending in \r\n */
    struct sbuf body;  /* owned body, or */
    struct blob *blob; /* a stored body (reference) */
    size_t blob_off, blob_len;
    bool no_body;           /* HEAD or 304: Content-Length announced, nothing sent */
    uint64_t announced_len; /* Content-Length when no_body */
    bool close;             /* Connection: close after this answer */
};

/* s3.c. Called by the server for each request; never block on the network. */
void s3_begin(struct mock *m, struct req *r, struct resp *out); /* headers complete */
void s3_body(struct req *r, const char *p, size_t n);           /* when !r->early */
/* Where the next body bytes may be read to in place (the kept body's tail, when its
 * Content-Length is known), and how many; NULL otherwise. Bytes read there are then
 * given to the parser at that address, and s3_body counts them without a copy. */
char *s3_body_room(struct req *r, size_t *room);
void s3_end(struct mock *m, struct req *r, struct resp *out); /* message complete */
void s3_req_reset(struct req *r);                             /* frees per-request state */
void s3_error(struct resp *out, int status, const char *code, const char *message,
              const struct req *r);
void resp_reset(struct resp *o);

/* server.c */
int server_run(struct mock *m, int listen_fd);

#endif
