/* S3 requests over libcurl's multi_socket_action API, registered on the event loop of the
 * thread that owns it (src/loop), with SigV4 signing, body checksums, timeouts and a warm
 * connection pool (src/pool). Single-threaded: every call must come from the thread that
 * runs the loop. Completion callbacks run inside loop_run_once() on that thread; they may
 * start requests but must not call xport_drain() or xport_free(). */
#ifndef S3C_TRANSPORT_H
#define S3C_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "config/config.h"
#include "loop/loop.h"

struct xport;
struct xreq;

enum xport_class {
    XPORT_OK = 0,    /* 2xx */
    XPORT_RETRYABLE, /* 500/502/503/504, SlowDown, InternalError, RequestTimeout,
                        connect/reset/timeout/low-speed errors */
    XPORT_FATAL,     /* 403s, 404 NoSuchBucket, other 4xx, bad config */
    XPORT_EXISTS,    /* 412 PreconditionFailed after If-None-Match / If-Match */
    XPORT_NOT_FOUND, /* 404 NoSuchKey on GET/HEAD (a fact, not a failure) */
};

struct xport_list_entry {
    const char *key;
    uint64_t size;
    const char *etag;
};

/* How a transfer failed before a complete answer arrived. */
enum xport_fail {
    XPORT_FAIL_NONE = 0, /* the transfer completed (the answer may still be an error) */
    XPORT_FAIL_TIMEOUT,  /* request_timeout_ms or the low-speed limit ran out */
    XPORT_FAIL_CONNECT,  /* no connection: name not resolved, refused, unreachable */
    XPORT_FAIL_TLS,      /* the TLS handshake or the peer's certificate was refused */
    XPORT_FAIL_IO,       /* the connection broke: reset, closed early, send/receive error */
    XPORT_FAIL_OTHER,    /* anything else (a bad option, an aborted transfer) */
};

/* What a finished request produced. Pointers are valid only during the callback. */
struct xport_result {
    enum xport_class cls;
    long http_status;       /* 0 when no HTTP answer arrived */
    enum xport_fail fail;   /* why no complete answer arrived (XPORT_FAIL_NONE: it did) */
    const char *s3_code;    /* S3 error Code ("" when none) */
    const char *s3_message; /* S3 error Message ("" when none) */
    const char *request_id; /* x-amz-request-id or the XML RequestId ("" when none) */
    const char *etag;       /* ETag answered by PUT/HEAD/GET ("" when none) */
    const char *error;      /* one line for logs: status, code, message or curl error */
    uint64_t duration_us;   /* from start to completion */
    /* GET: the body. HEAD: body_len is Content-Length. */
    const void *body;
    size_t body_len;
    uint64_t object_size; /* GET: the whole object's size (Content-Range total if ranged) */
    /* A ranged GET found nothing at its first byte: S3's 416, or a store that ignored the
     * Range and answered an object that ends before it (classified as a 416: FATAL). For
     * a range from byte 0: the object is empty. */
    bool range_unsatisfiable;
    struct xreq *owner; /* private to the transport (xport_take_body) */
    /* ListObjectsV2 */
    const struct xport_list_entry *entries;
    size_t nentries;
    bool truncated;
    const char *next_token; /* NextContinuationToken ("" when none) */
};

typedef void (*xport_done_fn)(void *ctx, const struct xport_result *res);

/* From a successful GET's callback: takes its body buffer instead of copying it (the body
 * was received into one buffer sized from Content-Length). The caller owns the malloc'd
 * buffer (body_len bytes and a NUL, *cap bytes in all; res->body is it) and either frees
 * it or gives it back with xport_give_body. NULL (*cap 0) for an empty body or any other
 * answer. */
void *xport_take_body(const struct xport_result *res, size_t *cap);
/* Gives a taken buffer back for later GETs to receive into (a few are kept, the rest
 * freed): a reader of many large objects then reuses memory instead of faulting in fresh
 * pages for each. NULL ok. */
void xport_give_body(struct xport *x, void *buf, size_t cap);
/* Keeps up to n buffers given back (default 16; n is capped at 160), for a caller that
 * holds more bodies at once than that: with fewer, the buffers past the limit are freed
 * and the next GETs fault in fresh ones (a reader with window 16 holds up to 33 bodies of
 * 2 MiB: zeroing fresh huge pages was 8% of its CPU, docs/programs.md). The buffers kept
 * are never more than the caller once held at the same time. */
void xport_keep_bodies(struct xport *x, int n);

/* Creates the transport from cfg->s3 and the pool knobs of cfg->persistence (copied) on
 * loop (borrowed: it must outlive the transport), opens cfg->persistence.target_pool_size
 * connections (warm-up HeadBucket requests, not waited for) and arms the heartbeat.
 * Returns NULL with a message in err on failure. */
struct xport *xport_new(const struct s3c_config *cfg, struct loop *loop, char *err, size_t errlen);
/* Aborts transfers in flight without callbacks and takes every fd and timer it put on the
 * loop off it again; the loop stays usable. NULL ok. */
void xport_free(struct xport *x);
struct loop *xport_loop(const struct xport *x); /* the loop it was given */

struct xport_put {
    const char *key;         /* object key, not encoded (the prefix included) */
    const struct iovec *iov; /* body spans; must stay valid and unchanged until done */
    int iovcnt;
    bool have_crc32c;     /* crc32c below is the CRC-32C of the whole body */
    uint32_t crc32c;      /* saves a pass over the body when checksum is crc32c */
    bool if_none_match;   /* send If-None-Match: * */
    const char *if_match; /* send If-Match: <etag> when not NULL */
};

/* Starts a PutObject. The body is streamed from iov without a staging copy; every call
 * re-sends from the first byte. Returns 0 (done will be called exactly once) or a
 * negative S3C_E* (done will never be called). */
int xport_put(struct xport *x, const struct xport_put *put, xport_done_fn done, void *ctx);

/* GetObject (first..last inclusive when last >= first, else the whole object). A ranged
 * answer's body is always the bytes asked for (cut short only by the object's end): a 200
 * that ignored the Range is cut down to them (FATAL, as S3's 416, when the object ends
 * before them), and a 206 naming or holding other bytes, or without a Content-Range with a
 * numeric total, is RETRYABLE; the error line says what came. object_size is the whole
 * object's size. */
int xport_get(struct xport *x, const char *key, uint64_t first, uint64_t last, xport_done_fn done,
              void *ctx);
/* Called as each piece of a 2xx GET's body lands in its body buffer: the buffer so far
 * (it may move between calls; it holds every byte up to off + n), where the piece is, and
 * piece: the same n bytes in libcurl's receive buffer, just written by the kernel. For
 * checking bytes while they are in cache; it must not start or stop requests. */
typedef void (*xport_data_fn)(void *ctx, const unsigned char *body, uint64_t off,
                              const unsigned char *piece, size_t n);
/* GetObject of the whole object, data called with each piece as it lands (on a retry the
 * caller's next GET starts again from byte 0). Returns as xport_get. */
int xport_get_fed(struct xport *x, const char *key, xport_data_fn data, void *data_ctx,
                  xport_done_fn done, void *ctx);
/* xport_get_fed with the body received by recv() straight into the buffer it is handed
 * over in (libcurl copies it out of its own receive buffer first): the same signed
 * request, sent on a connection libcurl opened (CURLOPT_CONNECT_ONLY) and the transport
 * reads itself, kept alive between GETs; the same results, error lines and classes.
 * Connections are opened on first use, on the loop (the GET waits for its connect;
 * docs/transport.md, "Direct GETs"); at most target_pool_size (or xport_direct_connections),
 * further GETs wait for one. */
int xport_get_direct(struct xport *x, const char *key, xport_data_fn data, void *data_ctx,
                     xport_done_fn done, void *ctx);
/* xport_get_direct of bytes first..last: a Range request whose answer is checked as
 * xport_get's is. data may be NULL; when given, it sees the bytes as they came (a 200's
 * whole object). */
int xport_get_direct_range(struct xport *x, const char *key, uint64_t first, uint64_t last,
                           xport_data_fn data, void *data_ctx, xport_done_fn done, void *ctx);
/* The most direct connections (open or opening), n >= 1; target_pool_size until set. For an
 * owner whose libcurl pool is smaller than its direct GETs in flight (the reader's). */
void xport_direct_connections(struct xport *x, int n);
int xport_head(struct xport *x, const char *key, xport_done_fn done, void *ctx);
int xport_head_bucket(struct xport *x, xport_done_fn done, void *ctx);
/* ListObjectsV2 of the bucket: prefix, start_after, continuation token (each NULL or ""
 * to leave out), max_keys (<= 0: S3's default 1000). */
int xport_list(struct xport *x, const char *prefix, const char *start_after, const char *token,
               int max_keys, xport_done_fn done, void *ctx);

/* Requests started and not yet completed. (The caller's requests: the pool's own warm-up
 * and heartbeat requests are not counted; xport_stats.busy counts everything.) */
int xport_in_flight(const struct xport *x);

struct xport_stats {
    uint64_t opens;              /* sockets opened */
    uint64_t closes;             /* sockets closed */
    uint64_t reuses;             /* requests that went over an existing connection */
    uint64_t heartbeats;         /* heartbeat requests completed */
    uint64_t heartbeat_failures; /* of those, not 2xx (no answer or 5xx: connection replaced;
                                    4xx: kept, see docs/transport.md) */
    uint64_t requests;           /* requests completed */
    uint64_t bytes_sent, bytes_received;
    int open_connections;   /* sockets open now */
    int target_connections; /* target_pool_size */
    uint64_t refills;       /* fresh connections opened to replace or warm the pool */
    uint64_t loop_waits;    /* epoll_wait calls (syscall cost per request) */
    uint64_t loop_wakes;    /* loop_wake() wake-ups the loop consumed */
    uint64_t rewinds;       /* bodies libcurl asked to re-read from the start (a resend
                               after some of the body had left) */
    uint64_t resends;       /* requests libcurl sent again on a fresh connection after a
                               reused one died under them (always from byte 0) */
    int busy;               /* requests in flight now (libcurl's; direct.c's too when the
                               pool is direct: s3.direct_put), warm-ups and heartbeats too */
    uint64_t body_allocs;   /* GET body buffers sized from Content-Length that were made
                               fresh, not taken from those given back (xport_give_body) */
};
void xport_stats_get(const struct xport *x, struct xport_stats *out);

/* Convenience for tools and tests: runs the loop until no request is in flight or
 * timeout_ms passes. Returns 0 or S3C_ETIMEDOUT. */
int xport_drain(struct xport *x, int timeout_ms);

/* ---- helpers shared with the stage, tools and tests ------------------------------- */

enum xport_op { XPORT_OP_PUT, XPORT_OP_GET, XPORT_OP_HEAD, XPORT_OP_HEAD_BUCKET, XPORT_OP_LIST };

const char *xport_class_name(enum xport_class cls); /* "ok", "retryable", ... */

/* The URL a request for key (NULL: the bucket itself) with query ("" or NULL: none) is
 * sent to, keys URI-encoded as S3 signs them. Returns the length or -1 if out is small. */
int xport_url(const struct xport *x, const char *key, const char *query, char *out, size_t outlen);

#endif
