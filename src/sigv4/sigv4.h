/* AWS Signature Version 4 for S3 header authentication, on OpenSSL 3's EVP digest and MAC.
 * Used by the client to sign and by s3commit-mock to verify, so both sides share one
 * canonicalisation. No I/O; thread-safe: each thread hashes on its own OpenSSL contexts,
 * made on its first call and freed when it exits (SHA-256 and HMAC are fetched once per
 * process). Allocation, all of it OpenSSL's small blocks, none of it ours past that first
 * call (measured on OpenSSL 3.0, bounds held by test_sigv4): sigv4_signature_with_key 3
 * when the thread's previous call used the same key (the transport's per-request path), 6
 * with a new key; sigv4_signing_key 20; sigv4_signature and sigv4_authorization 23;
 * sigv4_string_to_sign and sigv4_sha256_hex 1; everything else 0. */
#ifndef S3C_SIGV4_H
#define S3C_SIGV4_H

#include <stdbool.h>
#include <stddef.h>

#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

struct sigv4_header {
    const char *name;  /* any case; canonicalised to lower case */
    const char *value; /* trimmed and inner runs of spaces folded when canonicalised;
                          a name given twice is signed once, values joined by ',' */
};

struct sigv4_request {
    const char *method;       /* "PUT" */
    const char *path;         /* the request path as sent on the wire, already
                                 URI-encoded ("/bucket/a%20b"); S3 does not normalise it
                                 (no "." / ".." / "//" folding). %XX escapes are decoded
                                 and every byte re-encoded the S3 way, so "/a$b" and
                                 "/a%24b" both sign as "/a%24b" */
    const char *query;        /* raw query string without '?', "" when none; each name and
                                 value is canonicalised like path ('/' encoded), sorted */
    const struct sigv4_header *headers; /* the headers to sign (host and x-amz-* at least) */
    size_t nheaders;
    const char *payload_hash; /* hex SHA-256 of the body, or SIGV4_UNSIGNED_PAYLOAD */
    const char *amz_date;     /* "YYYYMMDDTHHMMSSZ" */
    const char *region;       /* "us-east-1" */
    const char *service;      /* "s3" */
    const char *access_key;
    const char *secret_key;
};

/* Writes the canonical request (for debugging and tests). Returns its length, or -1 if
 * out is too small or the request has over 128 headers or query params. */
int sigv4_canonical_request(const struct sigv4_request *r, char *out, size_t outlen);

/* Writes the string to sign. Returns its length, or -1 if out is too small or the request
 * cannot be signed (bad amz_date, too many headers, OpenSSL failed). */
int sigv4_string_to_sign(const struct sigv4_request *r, char *out, size_t outlen);

/* Computes the hex signature (64 chars + NUL into sig[65]). Returns 0, S3C_EINVAL (bad
 * amz_date, too many headers or params, a too long secret) or S3C_ENOMEM (OpenSSL failed). */
int sigv4_signature(const struct sigv4_request *r, char sig[65]);

/* Writes the whole Authorization header value:
 * "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,
 *  SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=..."
 * Returns its length, or -1 if out is too small or the request cannot be signed. */
int sigv4_authorization(const struct sigv4_request *r, char *out, size_t outlen);

/* Hex SHA-256 of a buffer (65 bytes with NUL); for x-amz-content-sha256. */
void sigv4_sha256_hex(const void *data, size_t len, char hex[65]);

/* URI-encodes s the way SigV4 wants (unreserved A-Z a-z 0-9 - _ . ~ kept; '/' kept when
 * keep_slash). Returns the length written, or -1 if out is too small. */
int sigv4_uri_encode(const char *s, size_t len, bool keep_slash, char *out, size_t outlen);

/* The derived key HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date8), region), service),
 * "aws4_request"), for callers that sign or verify many requests a day. Returns 0,
 * S3C_EINVAL (a missing part, a secret over 250 bytes) or S3C_ENOMEM (OpenSSL failed). */
int sigv4_signing_key(const char *secret_key, const char *date8, const char *region,
                      const char *service, unsigned char key[32]);

/* sigv4_signature() with a key from sigv4_signing_key() (r->secret_key is not used).
 * Returns 0, S3C_EINVAL or S3C_ENOMEM. */
int sigv4_signature_with_key(const struct sigv4_request *r, const unsigned char key[32],
                             char sig[65]);

/* Sets up what signing needs from OpenSSL, once per process (a failure is tried again on
 * the next call; every signing call does it too). Returns 0, or -1 when OpenSSL cannot
 * provide SHA-256 and HMAC now, so a caller can refuse to start what could never sign. */
int sigv4_init(void);

/* Wipes the signing key this thread's context keeps between calls (xport_free calls it; a
 * thread's contexts are otherwise freed only when the thread exits, and never for the main
 * thread, since exit() runs no thread-key destructors). */
void sigv4_forget_keys(void);

/* The parts of an "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..."
 * header, for verifiers (s3commit-mock). */
struct sigv4_auth {
    char access_key[128];
    char date8[9];   /* "20130524" */
    char region[64];
    char service[32];
    char signed_headers[1024]; /* "host;range;x-amz-content-sha256;x-amz-date" */
    char signature[65];
};

/* Parses an Authorization header value. Returns 0, or S3C_EINVAL when it is not a
 * well-formed AWS4-HMAC-SHA256 header (unknown algorithm, missing or oversized part). */
int sigv4_parse_authorization(const char *value, struct sigv4_auth *a);

#endif
