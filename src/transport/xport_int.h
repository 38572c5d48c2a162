/* The transport's insides, shared by its files (transport.c: the face and lifecycle,
 * request.c: request objects and signing, answer.c: completion and error words, url.c:
 * endpoints and paths) and by the pool's machinery (src/pool), which drives its own
 * warm-up and heartbeat requests through them. Not for anyone else. */
#ifndef S3C_XPORT_INT_H
#define S3C_XPORT_INT_H

#include <curl/curl.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>

#include "loop/loop.h"
#include "pool/pool.h"
#include "sigv4/sigv4.h"
#include "transport/s3xml.h"
#include "transport/transport.h"

#define XREQ_PATH_MAX 3328   /* "/" bucket "/" + a 1024-byte key encoded (x3) */
#define XREQ_QUERY_MAX 10240 /* list: prefix, start-after, token, each encoded */
#define XREQ_URL_MAX (300 + XREQ_PATH_MAX + XREQ_QUERY_MAX)
#define XREQ_HDR_MAX 12288 /* header lines and their signing copies (token <= 2 KiB) */
#define XREQ_NHDR 20
#define XREQ_ERRBODY_MAX (64 * 1024)     /* error XML kept from PUT/HEAD answers */
#define XREQ_LISTBODY_MAX (64u << 20)    /* a ListObjectsV2 page */
#define XREQ_KEEP_BODY_CAP (4u << 20)    /* larger response buffers are freed after use */
#define XREQ_RESERVE_MAX (1ull << 30)    /* a larger Content-Length is not believed up front */
#define XPORT_SPARE_BODIES 16            /* GET body buffers kept for reuse (xport_give_body) */
#define XPORT_SPARE_BODIES_MAX 160       /* the most xport_keep_bodies may ask for */
#define XPORT_SPARE_BODY_MAX (64u << 20) /* larger ones are freed when given back */
#define XREQ_HUGE_BODY (1u << 20)        /* GET bodies this large go in huge pages */
#define XREQ_HUGE_PAGE (2u << 20)
#define XPORT_KEY_MAX 1024 /* S3's limit on key length */
/* libcurl's upload buffer. libcurl copies the body into it (it has no zero-copy upload)
 * and the kernel copies it out again, so it is kept small enough to stay in L2 between
 * the two copies (2 MiB, one send per body, took ~0.39 CPU s/GB), and each send is a whole
 * number of loopback's 65483-byte segments (64 KiB overshoots by 53 bytes and sends a tiny
 * extra segment each time). Two segments per send cost 10-15% less CPU per GB than the
 * 48 KiB (one partial segment) it replaced: fewer sends, fewer softirq passes and wake-ups
 * of the receiver per byte (docs/transport.md). */
#define XPORT_UPLOAD_BUFFER (2 * 65483)

/* Upload buffers written back to back on one socket per loop event while it takes them
 * (transport.c): up to 16 x ~128 KiB, 2 MiB. */
#define XPORT_SEND_BURST 16

/* hex SHA-256 of zero bytes: the payload hash of a request without a body */
#define XPORT_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

enum xreq_kind { XREQ_USER, XREQ_REFILL, XREQ_HEARTBEAT };

struct xreq {
    struct xport *x;
    CURL *easy;
    struct xreq *next_free; /* free list link */
    struct xreq *next_all;  /* every request object, for xport_free */
    bool active;            /* added to the multi handle */
    enum xreq_kind kind;
    enum xport_op op;
    xport_done_fn done;
    void *ctx;
    uint64_t start_ns;
    bool opened;       /* a refill that opened its socket */
    int sends;         /* times libcurl started sending this request (> 1: it resent it) */
    unsigned hb_round; /* the heartbeat round this heartbeat belongs to */
    bool held;         /* a heartbeat holding its connection (receive paused) until its round
                          has a connection each */

    /* PUT body: a copy of the caller's span list (not of the bytes) and a cursor. */
    struct iovec *iov;
    int iovcnt, iovcap;
    uint64_t body_len;
    int vi;      /* current span */
    size_t voff; /* offset in it */

    /* request headers: "Name: value" lines for libcurl, name/value pairs for SigV4 */
    struct curl_slist lines[XREQ_NHDR];
    int nlines;
    struct sigv4_header sh[XREQ_NHDR];
    int nsh;
    char hdr[XREQ_HDR_MAX];
    size_t hlen;
    bool hdr_overflow;
    char path[XREQ_PATH_MAX];
    char query[XREQ_QUERY_MAX];
    char url[XREQ_URL_MAX];

    /* response */
    char *body;
    size_t blen, bcap, blimit;
    bool reserved;         /* a GET's body buffer was sized from Content-Length */
    bool data_2xx;         /* the answer is 2xx: on_data sees its body */
    xport_data_fn on_data; /* xport_get_fed's hook, or NULL */
    void *data_ctx;
    char etag[256];
    char reqid[128];
    uint64_t object_size; /* the total of a Content-Range answer (0 when none) */
    /* A ranged GET's bytes first..last as asked (xreq_range), and the Content-Range the
     * answer named (cr_seen: one of the form "bytes a-b/total", the total a number). */
    bool ranged, cr_seen;
    uint64_t range_first, range_last, cr_first, cr_last;
    char range_hdr[64]; /* the signed Range header's value */
    char errbuf[CURL_ERROR_SIZE];
    char errline[2048];
    struct s3xml_error s3e;
    struct s3xml_list list;
    char key[XPORT_KEY_MAX + 1]; /* for error lines */
};

/* A libcurl socket registered on the loop. */
struct sockwatch {
    struct loop_watch w;
    struct sockwatch *next_free; /* free list link */
    struct sockwatch *next_all;  /* every watch, taken off the loop at xport_free */
};

struct xport {
    struct s3c_config cfg; /* a copy; secrets wiped at free */
    struct loop *loop;     /* the owner's loop (borrowed) */
    CURLM *multi;
    struct loop_timer curl_timer;
    struct pool pool; /* connections, refills and heartbeats (src/pool) */
    bool closing;
    bool store_checked; /* the store's kind was looked at (answer.c, once) */

    /* endpoint, parsed once (url.c) */
    bool https;
    char host[256];        /* host as in the URL ("127.0.0.1", "[::1]") */
    char port[8];          /* "" or "9000" */
    char hosthdr[384];     /* the Host header value (bucket. prepended when virtual) */
    char origin[400];      /* "http://host:port" (bucket. when virtual) */
    char bucket_path[200]; /* "/bucket" (path style) or "" (virtual) */

    struct xreq *free_reqs;
    struct xreq *all_reqs;
    struct sockwatch *free_socks;
    struct sockwatch *all_socks;
    int burst_fd;   /* the socket a burst of sends writes (-1: none) */
    bool burst_out; /* ... and libcurl still wants to write to it */
    int user_in_flight;
    EVP_MD_CTX *md;
    unsigned char signing_key[32]; /* derived from the secret for sk_date; wiped at free */
    char sk_date[9];               /* "YYYYMMDD" the key is for, "" when none */
    time_t amz_sec;                /* the second amz_date was formatted for */
    char amz_date[17];             /* "YYYYMMDDTHHMMSSZ" of amz_sec, "" until first used */

    uint64_t requests, bytes_sent, bytes_received, rewinds, resends;

    /* GET body buffers given back for later GETs to receive into: reused memory, where a
     * fresh malloc of a large buffer costs page faults on every byte's first write. */
    struct xdirect *direct; /* direct.c's connections (xport_get_direct), NULL until used */
    void *spare_body[XPORT_SPARE_BODIES_MAX];
    size_t spare_cap[XPORT_SPARE_BODIES_MAX];
    int nspare, spare_max; /* spare_max: XPORT_SPARE_BODIES unless xport_keep_bodies */
    uint64_t body_allocs;  /* bodies not found among the spares (xport_stats) */
};

/* direct.c: closes its connections and drops queued GETs without callbacks. */
void xport__direct_free(struct xport *x);
/* s3.direct_put is set, the endpoint is plain HTTP and no proxy is configured. */
bool xport__direct_put_ok(struct xport *x);
/* Signs the PUT r and sends it on direct.c's connections, its body written from r->iov. */
struct xreq_sign_extra;
int xport__put_direct(struct xport *x, struct xreq *r, const struct xreq_sign_extra *sx);

/* The pool's warm-up, refill and heartbeat HeadBuckets when its connections are direct ones
 * (pool.direct): r (begun as XREQ_REFILL or XREQ_HEARTBEAT) is signed and sent, a refill on
 * a fresh connection, a heartbeat on an idle one. Returns 0, or < 0 when it could not start
 * (no room, no idle connection, no memory): r is then the caller's to release. */
int xport__direct_start_internal(struct xport *x, struct xreq *r);
/* Idle direct connections now (one heartbeat each). */
int xport__direct_idle(const struct xport *x);
/* The time limit of r in ms: s3.request_timeout_ms, for a heartbeat at most the heartbeat
 * interval (at least 1 s). */
long xreq_timeout_ms(const struct xport *x, const struct xreq *r);

/* url.c */
int xport__parse_endpoint(struct xport *x, char *err, size_t errlen);
/* Writes the wire path for key (NULL: the bucket). Returns its length or -1. */
int xport__build_path(const struct xport *x, const char *key, char *out, size_t outlen);

/* request.c: request objects come from a free list (allocated only when it is empty). */
struct xreq *xreq_alloc(struct xport *x);
struct xreq *xreq_get(struct xport *x);
void xreq_release(struct xport *x, struct xreq *r);
void xreq_destroy(struct xreq *r); /* curl handle, buffers; secrets wiped */
/* Resets the per-request state of r for op on key (NULL: the bucket). */
int xreq_begin(struct xport *x, struct xreq *r, enum xreq_kind kind, enum xport_op op,
               const char *key);

/* Headers that join the signature besides Host and x-amz-date/-content-sha256/-token. */
struct xreq_sign_extra {
    const char *content_md5;
    const char *if_match;
    const char *if_none_match; /* "*" (PUT) or an ETag (GET) */
    const char *range;
    const char *checksum_name; /* "x-amz-checksum-crc32c" / "-sha256" or NULL */
    const char *checksum_value;
    const char *payload_hash;
};
/* Signs r (unless anonymous), hands it to libcurl and counts it with the pool. */
int xreq_sign_and_start(struct xport *x, struct xreq *r, const char *method,
                        const struct xreq_sign_extra *sx);
/* Signs r (unless anonymous): its header lines and r->url, ready to send. */
int xreq_sign(struct xport *x, struct xreq *r, const char *method,
              const struct xreq_sign_extra *sx);
/* Room in r->body for n more bytes and a NUL (grown by doubling): 0 or S3C_ENOMEM. */
int xreq_body_room(struct xreq *r, size_t n);
/* A GET body buffer of at least need bytes: a spare one given back when one fits. */
char *xreq_body_for(struct xport *x, size_t need, size_t *cap);
/* Starts a request with no body (GET, HEAD, HeadBucket, LIST). */
int xreq_start_simple(struct xport *x, struct xreq *r, const char *method, const char *range);
/* Records that r asks for bytes first..last and returns the Range value to sign. */
const char *xreq_range(struct xreq *r, uint64_t first, uint64_t last);
/* An answer's Content-Range value (v, n bytes, not NUL-terminated) into r. */
void xreq_content_range(struct xreq *r, const char *v, size_t n);
/* After a ranged GET's 2xx: 0 when the body is the bytes asked for (a 200's whole object
 * is cut down to them); else r->s3e.message says how the answer differs and the result is
 * the status to classify it as: 416 (the object ends before the first byte asked for: as
 * S3 would answer, no retry changes it) or 503 (a 206 naming or holding other bytes). */
int xreq_range_answer(struct xreq *r, long status);
int xreq_digest_spans(struct xport *x, const EVP_MD *md, const struct iovec *iov, int n,
                      unsigned char *out);
void xport__b64(const unsigned char *in, size_t n, char *out);
void xport__hex(const unsigned char *in, size_t n, char *out);

/* The class of an answer (docs/transport.md, "Answer classes"): curl_code is the CURLE_* of
 * the transfer, http_status 0 when no answer arrived, s3_code the XML Code ("" or NULL
 * when none). Pure; any thread. (classify.c) */
enum xport_class xport_classify(enum xport_op op, int curl_code, long http_status,
                                const char *s3_code);
/* The transfer-failure kind of a CURLE_* code (classify.c). */
enum xport_fail xport_fail_of(int curl_code);

/* answer.c: completed transfers, their results and error lines. */
void xport__check_done(struct xport *x);
/* A finished request's result for its owner (curl code cc, status 0 when no answer,
 * Content-Length clen or -1; r->body, blen, etag, reqid, errbuf filled), then r released. */
void xport__answer(struct xport *x, struct xreq *r, int cc, long status, int64_t clen);
/* Makes s fit on one log line inside double quotes (server text can hold anything). */
void xport__one_line(char *s);
/* An x-amz-request-id of Ceph RGW's form, "tx<hex>-<hex>-<hex>-<zonegroup>" (AWS S3 sends
 * 16 uppercase alphanumerics, the mock 16 hex digits). */
bool xport__request_id_is_rgw(const char *id);

#endif
