/* Transport against s3commit-mock on 127.0.0.1: PUT from spans (signed and unsigned
 * payloads, every checksum), GET with Range, HEAD, HeadBucket, ListObjectsV2 pages, keys
 * that need encoding, conditional writes, and every answer class: 5xx/SlowDown, stall ->
 * timeout, reset, refused, wrong secret, missing bucket. */
#include <openssl/evp.h>

#include "common/crc32c.h"
#include "config/config.h"
#include "support/mockstats.h"
#include "support/xport_loop.h"

#define AK "AKIDTRANSPORTTEST"
#define SK "wJalrXUtnFEMI/K7MDENG/bPxRfiCYTRANSPORT"

/* A copy of what a completion delivered (its pointers die with the callback). */
struct got {
    int calls;
    enum xport_class cls;
    long status;
    enum xport_fail fail;
    char s3_code[64], etag[128], error[2048], request_id[128];
    char body[1 << 16];
    size_t body_len;
    uint64_t duration_us;
    int nentries;
    char keys[8][256];
    uint64_t sizes[8];
    bool truncated;
    char token[512];
};

static void on_done(void *ctx, const struct xport_result *r)
{
    struct got *g = ctx;
    g->calls++;
    g->cls = r->cls;
    g->status = r->http_status;
    g->fail = r->fail;
    snprintf(g->s3_code, sizeof(g->s3_code), "%s", r->s3_code);
    snprintf(g->etag, sizeof(g->etag), "%s", r->etag);
    snprintf(g->error, sizeof(g->error), "%s", r->error);
    snprintf(g->request_id, sizeof(g->request_id), "%s", r->request_id);
    g->body_len = r->body_len;
    if (r->body)
        memcpy(g->body, r->body, r->body_len < sizeof(g->body) ? r->body_len : sizeof(g->body));
    g->duration_us = r->duration_us;
    g->nentries = (int)r->nentries;
    for (size_t i = 0; i < r->nentries && i < 8; i++) {
        snprintf(g->keys[i], sizeof(g->keys[i]), "%s", r->entries[i].key);
        g->sizes[i] = r->entries[i].size;
    }
    g->truncated = r->truncated;
    snprintf(g->token, sizeof(g->token), "%s", r->next_token);
}

static void cfg_for(struct s3c_config *c, const struct mockproc *m, bool creds)
{
    cfg_defaults(c);
    snprintf(c->s3.endpoint, sizeof(c->s3.endpoint), "%s", m->endpoint);
    snprintf(c->s3.bucket, sizeof(c->s3.bucket), "commits");
    if (creds) {
        snprintf(c->s3.access_key_id, sizeof(c->s3.access_key_id), AK);
        snprintf(c->s3.secret_access_key, sizeof(c->s3.secret_access_key), SK);
    }
    c->persistence.target_pool_size = 2;
    c->persistence.max_in_flight_requests = 2;
    c->s3.direct_put = false; /* libcurl's PUT path (its resends, rewinds); test_direct_put
                                 and test_pool run direct.c's */
    c->s3.connect_timeout_ms = 2000;
    c->s3.request_timeout_ms = 5000;
}

static struct xport *open_x(const struct s3c_config *c)
{
    char err[512];
    struct xport *x = test_xport_new(c, err, sizeof(err));
    if (!x)
        TEST_FAIL_("xport_new: %s", err);
    return x;
}

/* Runs one request to completion and checks the callback ran exactly once. */
#define WAIT(x, g)                                                                                 \
    do {                                                                                           \
        ASSERT_EQ(xport_drain((x), 15000), 0);                                                     \
        ASSERT_EQ((g)->calls, 1);                                                                  \
    } while (0)

static void put_spans(struct xport *x, const char *key, const struct iovec *iov, int n,
                      struct got *g)
{
    struct xport_put p = {.key = key, .iov = iov, .iovcnt = n};
    memset(g, 0, sizeof(*g));
    ASSERT_EQ(xport_put(x, &p, on_done, g), 0);
    WAIT(x, g);
}

static void md5_hex(const struct iovec *iov, int n, char out[33])
{
    unsigned char md[16];
    unsigned int len;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_md5(), NULL);
    for (int i = 0; i < n; i++)
        EVP_DigestUpdate(c, iov[i].iov_base, iov[i].iov_len);
    EVP_DigestFinal_ex(c, md, &len);
    EVP_MD_CTX_free(c);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static struct mockproc start_mock(const char *const *args)
{
    struct mockproc m;
    int rc = test_mock_start(&m, args);
    if (rc != 0)
        TEST_FAIL_("mockproc_start: %d", rc);
    return m;
}

static const char *const signed_args[] = {"--access-key", AK, "--secret-key", SK, NULL};

/* PUT from many spans (signed payload), read back whole and by range, HEAD, list. */
static void roundtrip_signed(void)
{
    struct mockproc m = start_mock(signed_args);
    struct s3c_config c;
    cfg_for(&c, &m, true);
    c.s3.payload_signing = CFG_SIGN_SIGNED;
    struct xport *x = open_x(&c);
    static struct got g;

    /* 3 MiB + a few bytes in 7 uneven spans: crosses libcurl's upload buffer edges. */
    static unsigned char big[3 * 1024 * 1024 + 13];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(i * 2654435761u >> 13);
    size_t cuts[] = {0, 1, 4096, 65537, 1048576, 2097150, 3000000, sizeof(big)};
    struct iovec iov[7];
    for (int i = 0; i < 7; i++)
        iov[i] = (struct iovec){big + cuts[i], cuts[i + 1] - cuts[i]};
    char want_md5[33], want_etag[40];
    md5_hex(iov, 7, want_md5);
    snprintf(want_etag, sizeof(want_etag), "\"%s\"", want_md5);

    put_spans(x, "stage-1/0000000001/big.s3c", iov, 7, &g);
    if (g.cls != XPORT_OK)
        TEST_FAIL_("PUT: %s", g.error);
    ASSERT_EQ(g.status, 200);
    ASSERT_STR_EQ(g.etag, want_etag); /* the mock's ETag is the MD5 of what arrived */
    ASSERT_STR_EQ(g.error, "");

    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_get(x, "stage-1/0000000001/big.s3c", 65530, 65545, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    ASSERT_EQ(g.status, 206);
    ASSERT_EQ(g.body_len, 16);
    ASSERT_MEM_EQ(g.body, big + 65530, 16);

    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_head(x, "stage-1/0000000001/big.s3c", on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    ASSERT_EQ(g.body_len, sizeof(big));
    ASSERT_STR_EQ(g.etag, want_etag);

    /* Whole small object, and an empty body (zero spans). */
    struct iovec small = {"hello, world", 12};
    put_spans(x, "stage-1/0000000001/small.s3c", &small, 1, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    put_spans(x, "stage-1/0000000001/empty.s3c", NULL, 0, &g);
    if (g.cls != XPORT_OK)
        TEST_FAIL_("empty PUT: %s", g.error);
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_get(x, "stage-1/0000000001/small.s3c", 1, 0, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.status, 200);
    ASSERT_EQ(g.body_len, 12);
    ASSERT_MEM_EQ(g.body, "hello, world", 12);

    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_head_bucket(x, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_OK);

    /* Two pages of two, then the rest. */
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_list(x, "stage-1/", NULL, NULL, 2, on_done, &g), 0);
    WAIT(x, &g);
    if (g.cls != XPORT_OK)
        TEST_FAIL_("LIST: %s", g.error);
    ASSERT_EQ(g.nentries, 2);
    ASSERT(g.truncated);
    ASSERT_STR_EQ(g.keys[0], "stage-1/0000000001/big.s3c");
    ASSERT_UEQ(g.sizes[0], sizeof(big));
    ASSERT_STR_EQ(g.keys[1], "stage-1/0000000001/empty.s3c");
    ASSERT(g.token[0] != '\0');
    char token[512];
    snprintf(token, sizeof(token), "%s", g.token);
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_list(x, "stage-1/", NULL, token, 2, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    ASSERT_EQ(g.nentries, 1);
    ASSERT(!g.truncated);
    ASSERT_STR_EQ(g.keys[0], "stage-1/0000000001/small.s3c");
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_list(x, "stage-1/", "stage-1/0000000001/big.s3c", NULL, 0, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.nentries, 2);
    ASSERT_STR_EQ(g.keys[0], "stage-1/0000000001/empty.s3c");

    /* Not found is a fact, with S3's code kept. */
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_get(x, "stage-1/nope", 1, 0, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_NOT_FOUND);
    ASSERT_STR_EQ(g.s3_code, "NoSuchKey");
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_head(x, "stage-1/nope", on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_NOT_FOUND);
    ASSERT_EQ(xport_in_flight(x), 0);

    test_xport_free(x);
    test_mock_stop(&m);
}

/* Keys that need encoding, signed both ways; the mock checks each signature. */
static void encoded_keys(void)
{
    struct mockproc m = start_mock(signed_args);
    struct s3c_config c;
    cfg_for(&c, &m, true);
    struct xport *x = open_x(&c);
    static struct got g;
    const char *keys[] = {"p/a b", "p/c$d+e=f&g", "p/h%20i", "p/\xc3\xa9t\xc3\xa9~_.-",
                          "p/(x)*!'@:,;"};
    struct iovec v = {"k", 1};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        put_spans(x, keys[i], &v, 1, &g);
        if (g.cls != XPORT_OK)
            TEST_FAIL_("PUT %s: %s", keys[i], g.error);
        memset(&g, 0, sizeof(g));
        ASSERT_EQ(xport_head(x, keys[i], on_done, &g), 0);
        WAIT(x, &g);
        ASSERT_EQ(g.cls, XPORT_OK);
    }
    /* The listing gives back the raw keys, in byte order. */
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_list(x, "p/", NULL, NULL, 0, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    ASSERT_EQ(g.nentries, 5);
    ASSERT_STR_EQ(g.keys[0], "p/(x)*!'@:,;");
    ASSERT_STR_EQ(g.keys[1], "p/a b");
    ASSERT_STR_EQ(g.keys[2], "p/c$d+e=f&g");
    ASSERT_STR_EQ(g.keys[3], "p/h%20i");
    /* A prefix with characters that need encoding in the query. */
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_list(x, "p/c$d+", NULL, NULL, 0, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    ASSERT_EQ(g.nentries, 1);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* Every checksum header is sent right (the mock verifies each) and a wrong one is
 * refused as fatal; unsigned and signed payloads both pass the SigV4 check. */
static void checksums_and_signing(void)
{
    struct mockproc m = start_mock(signed_args);
    static struct got g;
    static unsigned char body[200000];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (unsigned char)(i % 251);
    struct iovec iov[2] = {{body, 70001}, {body + 70001, sizeof(body) - 70001}};
    enum cfg_checksum sums[] = {CFG_SUM_CRC32C, CFG_SUM_SHA256, CFG_SUM_MD5, CFG_SUM_NONE};
    for (int s = 0; s < 4; s++) {
        for (int signd = 0; signd < 2; signd++) {
            struct s3c_config c;
            cfg_for(&c, &m, true);
            c.s3.checksum = sums[s];
            c.s3.payload_signing = signd ? CFG_SIGN_SIGNED : CFG_SIGN_UNSIGNED;
            struct xport *x = open_x(&c);
            char key[64];
            snprintf(key, sizeof(key), "sum/%d/%d", s, signd);
            struct mock_digests d0 = mock_digests(&m);
            put_spans(x, key, iov, 2, &g);
            if (g.cls != XPORT_OK)
                TEST_FAIL_("checksum %d signed %d: %s", s, signd, g.error);
            /* The mock verified exactly the digests this configuration must send (a mode
             * that silently sent none would still be accepted, so count them). */
            struct mock_digests d1 = mock_digests(&m);
            ASSERT_EQ(d1.content_sha256 - d0.content_sha256, signd ? 1 : 0);
            ASSERT_EQ(d1.unsigned_payload - d0.unsigned_payload, signd ? 0 : 1);
            ASSERT_EQ(d1.crc32c - d0.crc32c, sums[s] == CFG_SUM_CRC32C ? 1 : 0);
            ASSERT_EQ(d1.sha256 - d0.sha256, sums[s] == CFG_SUM_SHA256 ? 1 : 0);
            ASSERT_EQ(d1.md5 - d0.md5, sums[s] == CFG_SUM_MD5 ? 1 : 0);
            ASSERT_EQ(d1.crc32 - d0.crc32, 0);
            test_xport_free(x);
        }
    }
    /* The caller's precomputed CRC is used as given: right passes, wrong is BadDigest. */
    struct s3c_config c;
    cfg_for(&c, &m, true);
    struct xport *x = open_x(&c);
    uint32_t crc = crc32c_update(crc32c_update(0, iov[0].iov_base, iov[0].iov_len), iov[1].iov_base,
                                 iov[1].iov_len);
    struct xport_put p = {
        .key = "sum/pre", .iov = iov, .iovcnt = 2, .have_crc32c = true, .crc32c = crc};
    struct mock_digests d0 = mock_digests(&m);
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_put(x, &p, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    ASSERT_EQ(mock_digests(&m).crc32c - d0.crc32c, 1);
    p.crc32c = crc ^ 1;
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_put(x, &p, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_EQ(g.status, 400);
    ASSERT_STR_EQ(g.s3_code, "BadDigest");
    ASSERT(strstr(g.error, "BadDigest") != NULL);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* Refused credentials are fatal and never show up in the error line. */
static void refused_credentials(void)
{
    struct mockproc m = start_mock(signed_args);
    static struct got g;
    struct iovec v = {"x", 1};
    struct s3c_config c;

    cfg_for(&c, &m, true);
    snprintf(c.s3.secret_access_key, sizeof(c.s3.secret_access_key), "WRONGsecretWRONGsecret");
    struct xport *x = open_x(&c);
    put_spans(x, "k", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_EQ(g.status, 403);
    ASSERT_STR_EQ(g.s3_code, "SignatureDoesNotMatch");
    ASSERT(strstr(g.error, "WRONGsecret") == NULL);
    ASSERT(strstr(g.error, "403") != NULL);
    /* The server's message spans lines (it quotes the string to sign); the error is one
     * line that fits inside a log field's quotes. */
    ASSERT(strpbrk(g.error, "\r\n\"") == NULL);
    test_xport_free(x);

    cfg_for(&c, &m, true);
    snprintf(c.s3.access_key_id, sizeof(c.s3.access_key_id), "AKIDUNKNOWN");
    x = open_x(&c);
    put_spans(x, "k", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_EQ(g.status, 403);
    ASSERT_STR_EQ(g.s3_code, "InvalidAccessKeyId");
    test_xport_free(x);

    /* Anonymous (no access key) against a mock that wants signatures. */
    cfg_for(&c, &m, false);
    x = open_x(&c);
    put_spans(x, "k", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_EQ(g.status, 403);
    test_xport_free(x);
    test_mock_stop(&m);

    /* ... and anonymous is accepted by a mock without credentials. */
    m = start_mock(NULL);
    cfg_for(&c, &m, false);
    x = open_x(&c);
    put_spans(x, "k", &v, 1, &g);
    if (g.cls != XPORT_OK)
        TEST_FAIL_("anonymous PUT: %s", g.error);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* Keys with "." and ".." segments are stored under exactly those bytes: the path goes out
 * as signed, not normalised (S3 does not resolve dot segments in keys). */
static void dot_segment_keys(void)
{
    static struct got g;
    const char *keys[] = {"d/../e", "d/./f", "d/g/..", "d/h/."};
    for (int anon = 0; anon < 2; anon++) {
        struct mockproc m = start_mock(anon ? NULL : signed_args);
        struct s3c_config c;
        cfg_for(&c, &m, !anon);
        struct xport *x = open_x(&c);
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            struct iovec v = {(void *)keys[i], strlen(keys[i])};
            put_spans(x, keys[i], &v, 1, &g);
            if (g.cls != XPORT_OK)
                TEST_FAIL_("%s PUT %s: %s", anon ? "anonymous" : "signed", keys[i], g.error);
            memset(&g, 0, sizeof(g));
            ASSERT_EQ(xport_get(x, keys[i], 1, 0, on_done, &g), 0); /* whole */
            WAIT(x, &g);
            ASSERT_EQ(g.cls, XPORT_OK);
            ASSERT_EQ(g.body_len, strlen(keys[i]));
            ASSERT(memcmp(g.body, keys[i], g.body_len) == 0);
        }
        memset(&g, 0, sizeof(g));
        ASSERT_EQ(xport_list(x, "", NULL, NULL, 0, on_done, &g), 0);
        WAIT(x, &g);
        ASSERT_EQ(g.cls, XPORT_OK);
        ASSERT_EQ(g.nentries, 4);
        ASSERT_STR_EQ(g.keys[0], "d/../e");
        ASSERT_STR_EQ(g.keys[1], "d/./f");
        ASSERT_STR_EQ(g.keys[2], "d/g/..");
        ASSERT_STR_EQ(g.keys[3], "d/h/.");
        test_xport_free(x);
        test_mock_stop(&m);
    }
}

/* The region is part of the signature's scope: the configured one is used, and a client
 * signing for another region is refused with a message that names both. */
static void region_scope(void)
{
    const char *args[] = {"--access-key", AK, "--secret-key", SK, "--region", "eu-west-3", NULL};
    struct mockproc m = start_mock(args);
    static struct got g;
    struct iovec v = {"r", 1};
    struct s3c_config c;
    cfg_for(&c, &m, true);
    snprintf(c.s3.region, sizeof(c.s3.region), "eu-west-3");
    struct xport *x = open_x(&c);
    put_spans(x, "k", &v, 1, &g);
    if (g.cls != XPORT_OK)
        TEST_FAIL_("PUT signed for eu-west-3: %s", g.error);
    test_xport_free(x);

    cfg_for(&c, &m, true); /* us-east-1, the default */
    x = open_x(&c);
    put_spans(x, "k", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_EQ(g.status, 400);
    ASSERT(strstr(g.error, "us-east-1") != NULL);
    ASSERT(strstr(g.error, "eu-west-3") != NULL);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* A session token travels in x-amz-security-token, signed; a missing or wrong one is
 * refused, and the token never shows in an error line. */
static void session_token(void)
{
    const char *tok = "IQoJb3JpZ2luX2VjEXAMPLEsessionTOKEN/+=";
    const char *const args[] = {
        "--access-key", AK, "--secret-key", SK, "--session-token", tok, NULL};
    struct mockproc m = start_mock(args);
    static struct got g;
    struct iovec v = {"tok", 3};
    struct s3c_config c;

    cfg_for(&c, &m, true);
    snprintf(c.s3.session_token, sizeof(c.s3.session_token), "%s", tok);
    struct xport *x = open_x(&c);
    put_spans(x, "t", &v, 1, &g);
    if (g.cls != XPORT_OK)
        TEST_FAIL_("PUT with session token: %s", g.error);
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_list(x, NULL, NULL, NULL, 0, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    test_xport_free(x);

    cfg_for(&c, &m, true); /* no token */
    x = open_x(&c);
    put_spans(x, "t", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_EQ(g.status, 403);
    test_xport_free(x);

    cfg_for(&c, &m, true);
    snprintf(c.s3.session_token, sizeof(c.s3.session_token), "WRONGtokenWRONGtoken");
    x = open_x(&c);
    put_spans(x, "t", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_EQ(g.status, 403);
    ASSERT(strstr(g.error, "WRONGtoken") == NULL);
    ASSERT(strstr(g.error, SK) == NULL);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* If-None-Match / If-Match answers: exists (412) and not found. */
static void conditional_writes(void)
{
    struct mockproc m = start_mock(signed_args);
    struct s3c_config c;
    cfg_for(&c, &m, true);
    struct xport *x = open_x(&c);
    static struct got g;
    struct iovec v1 = {"one", 3}, v2 = {"two", 3};
    struct xport_put p = {.key = "cond/k", .iov = &v1, .iovcnt = 1, .if_none_match = true};

    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_put(x, &p, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    char etag[128];
    snprintf(etag, sizeof(etag), "%s", g.etag);
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_put(x, &p, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_EXISTS);
    ASSERT_EQ(g.status, 412);

    p = (struct xport_put){.key = "cond/k", .iov = &v2, .iovcnt = 1, .if_match = etag};
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_put(x, &p, on_done, &g), 0);
    WAIT(x, &g);
    if (g.cls != XPORT_OK)
        TEST_FAIL_("If-Match right etag: %s", g.error);
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_put(x, &p, on_done, &g), 0); /* etag is now the old one */
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_EXISTS);
    p.key = "cond/missing";
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_put(x, &p, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_NOT_FOUND);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* Retryable answers: 503 SlowDown, 500 InternalError, a stall cut by the timeout, a
 * reset, a refused connection; fatal: a missing bucket. */
static void answer_classes(void)
{
    static struct got g;
    struct iovec v = {"payload", 7};
    struct s3c_config c;

    const char *const a503[] = {"--error-rate", "1", "--error-status", "503", NULL};
    struct mockproc m = start_mock(a503);
    cfg_for(&c, &m, false);
    struct xport *x = open_x(&c);
    put_spans(x, "k", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.status, 503);
    ASSERT_STR_EQ(g.s3_code, "SlowDown");
    ASSERT(strstr(g.error, "503 SlowDown") != NULL);
    mock_faults(&m, "{\"error_rate\":1,\"error_status\":500}");
    put_spans(x, "k", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.status, 500);
    ASSERT_STR_EQ(g.s3_code, "InternalError");

    /* A stalled answer is cut by the low-speed limit (1 s here), well before the 5 s
     * request timeout, and is retryable. */
    mock_faults(&m, "{\"error_rate\":0,\"stall_rate\":1}");
    test_xport_free(x);
    cfg_for(&c, &m, false);
    c.s3.low_speed_limit_bytes = 1024;
    c.s3.low_speed_time_ms = 1000;
    x = open_x(&c);
    put_spans(x, "k", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.fail, XPORT_FAIL_TIMEOUT);
    ASSERT_EQ(g.status, 0);
    ASSERT(g.duration_us >= 900000 && g.duration_us < 4500000);
    test_xport_free(x);
    /* ... and by request_timeout_ms when the speed limit is off. */
    cfg_for(&c, &m, false);
    c.s3.low_speed_limit_bytes = 0;
    c.s3.request_timeout_ms = 700;
    x = open_x(&c);
    put_spans(x, "k", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.fail, XPORT_FAIL_TIMEOUT);
    ASSERT(g.duration_us >= 600000 && g.duration_us < 3000000);

    /* The ambiguous case: stored, then 500. Retryable, and the re-send (same key, same
     * bytes) succeeds and leaves the same object. */
    mock_faults(&m, "{\"stall_rate\":0,\"written_error_rate\":1}");
    put_spans(x, "written", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.status, 500);
    mock_faults(&m, "{\"written_error_rate\":0}");
    put_spans(x, "written", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_get(x, "written", 1, 0, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.body_len, 7);
    ASSERT_MEM_EQ(g.body, "payload", 7);

    mock_faults(&m, "{\"reset_rate\":1}");
    put_spans(x, "k", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.status, 0);
    ASSERT(g.fail != XPORT_FAIL_NONE);
    mock_faults(&m, "{\"reset_rate\":0}");
    put_spans(x, "k", &v, 1, &g); /* and the next one goes through */
    if (g.cls != XPORT_OK)
        TEST_FAIL_("PUT after reset: %s", g.error);

    /* A reused connection dies under a PUT (reset once its headers arrived): when the
     * reset shows on receiving, libcurl resends the request on a fresh connection, and that
     * sending must start at byte 0 again (when it shows while sending, libcurl gives up
     * and the answer is retryable). The mock's MD5 ETag proves every byte of the second
     * sending, spans in order. Before each try the pool refills what the last reset cost,
     * so the one-shot reset hits the PUT. */
    static unsigned char big[100000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(i * 2654435761u >> 24);
    struct iovec bv[3] = {{big, 30001}, {big + 30001, 7}, {big + 30008, sizeof(big) - 30008}};
    char want[33];
    md5_hex(bv, 3, want);
    int resent_ok = 0;
    for (int attempt = 0; attempt < 40 && resent_ok < 2; attempt++) {
        struct xport_stats st0, st1;
        for (int i = 0; i < 300; i++) {
            xport_stats_get(x, &st0);
            if (st0.busy == 0 && st0.open_connections == st0.target_connections)
                break;
            test_xport_poll(x, 10);
        }
        ASSERT_EQ(st0.busy, 0);
        /* Connections a second old: one reset young backs the pool's refills off (a
         * server that kills every new connection is not hammered, docs/transport.md), and
         * then the PUT would find no warm connection to reuse. */
        test_xport_poll(x, 1100);
        mock_faults(&m, "{\"reset_next\":1}");
        put_spans(x, "rewound", bv, 3, &g);
        xport_stats_get(x, &st1);
        if (g.cls != XPORT_OK) {
            ASSERT_EQ(g.cls, XPORT_RETRYABLE); /* the reset seen while sending */
            ASSERT_UEQ(st1.resends, st0.resends);
            continue;
        }
        ASSERT_UEQ(st1.resends - st0.resends, 1);
        ASSERT(st1.rewinds - st0.rewinds <= 1); /* libcurl asks only if body bytes had left */
        if (strstr(g.etag, want) == NULL)
            TEST_FAIL_("resent PUT stored other bytes: ETag %s, want %s", g.etag, want);
        resent_ok++;
    }
    ASSERT_EQ(resent_ok, 2);
    test_xport_free(x);

    /* A trickle (50 bytes/s) below the low-speed limit (1 KiB/s for 1 s) is cut long
     * before the 10 s request timeout. (libcurl averages speed over up to 5 s, so the
     * body that went into the socket buffer at once must be small for this to be quick.) */
    cfg_for(&c, &m, false);
    c.s3.low_speed_limit_bytes = 1024;
    c.s3.low_speed_time_ms = 1000;
    c.s3.request_timeout_ms = 10000;
    x = open_x(&c);
    mock_faults(&m, "{\"bandwidth_bytes_per_s\":50}");
    static unsigned char slow[1024];
    struct iovec sv = {slow, sizeof(slow)};
    put_spans(x, "slow", &sv, 1, &g);
    mock_faults(&m, "{\"bandwidth_bytes_per_s\":0}");
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.fail, XPORT_FAIL_TIMEOUT);
    if (g.duration_us < 900000 || g.duration_us > 7000000)
        TEST_FAIL_("low-speed cut after %llu us: %s", (unsigned long long)g.duration_us, g.error);
    test_xport_free(x);

    cfg_for(&c, &m, false);
    snprintf(c.s3.bucket, sizeof(c.s3.bucket), "no-such-bucket");
    x = open_x(&c);
    put_spans(x, "k", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_FATAL);
    ASSERT_EQ(g.status, 404);
    ASSERT_STR_EQ(g.s3_code, "NoSuchBucket");
    test_xport_free(x);

    /* Nothing listens any more: connection refused is retryable. */
    cfg_for(&c, &m, false);
    test_mock_stop(&m);
    x = open_x(&c);
    put_spans(x, "k", &v, 1, &g);
    ASSERT_EQ(g.cls, XPORT_RETRYABLE);
    ASSERT_EQ(g.fail, XPORT_FAIL_CONNECT);
    ASSERT(strstr(g.error, "PUT k:") != NULL);
    test_xport_free(x);
}

/* Virtual-host addressing: Host "commits.localhost:PORT" (libcurl resolves *.localhost
 * to loopback; the mock takes the bucket from the Host header), signed. */
static void virtual_host(void)
{
    struct mockproc m = start_mock(signed_args);
    struct s3c_config c;
    cfg_for(&c, &m, true);
    snprintf(c.s3.endpoint, sizeof(c.s3.endpoint), "http://localhost:%d", m.port);
    c.s3.addressing = CFG_ADDR_VIRTUAL;
    c.s3.payload_signing = CFG_SIGN_SIGNED;
    struct xport *x = open_x(&c);
    char url[256];
    ASSERT(xport_url(x, "v/k 1", NULL, url, sizeof(url)) > 0);
    char want[256];
    snprintf(want, sizeof(want), "http://commits.localhost:%d/v/k%%201", m.port);
    ASSERT_STR_EQ(url, want);
    static struct got g;
    struct iovec v = {"virtual", 7};
    put_spans(x, "v/k 1", &v, 1, &g);
    if (g.cls != XPORT_OK)
        TEST_FAIL_("virtual-host PUT: %s", g.error);
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_get(x, "v/k 1", 1, 0, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    ASSERT_MEM_EQ(g.body, "virtual", 7);
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_list(x, "v/", NULL, NULL, 0, on_done, &g), 0);
    WAIT(x, &g);
    if (g.cls != XPORT_OK)
        TEST_FAIL_("virtual-host LIST: %s", g.error);
    ASSERT_EQ(g.nentries, 1);
    ASSERT_STR_EQ(g.keys[0], "v/k 1");
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_head_bucket(x, on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    test_xport_free(x);
    /* The same object is there path-style too: one bucket, two addressings. */
    cfg_for(&c, &m, true);
    x = open_x(&c);
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_head(x, "v/k 1", on_done, &g), 0);
    WAIT(x, &g);
    ASSERT_EQ(g.cls, XPORT_OK);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* Bad arguments fail at the call and the callback never runs. */
static void bad_arguments(void)
{
    struct mockproc m = start_mock(NULL);
    struct s3c_config c;
    cfg_for(&c, &m, false);
    struct xport *x = open_x(&c);
    static struct got g;
    static char longkey[1100];
    memset(longkey, 'k', sizeof(longkey) - 1);
    struct iovec v = {"x", 1};
    struct xport_put p = {.key = longkey, .iov = &v, .iovcnt = 1};
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_put(x, &p, on_done, &g), S3C_EINVAL);
    p.key = "";
    ASSERT_EQ(xport_put(x, &p, on_done, &g), S3C_EINVAL);
    p.key = "ok";
    ASSERT_EQ(xport_put(x, &p, NULL, &g), S3C_EINVAL);
    p.iovcnt = -1;
    ASSERT_EQ(xport_put(x, &p, on_done, &g), S3C_EINVAL);
    ASSERT_EQ(xport_get(x, NULL, 0, 0, on_done, &g), S3C_EINVAL);
    ASSERT_EQ(xport_in_flight(x), 0);
    poll_for(x, 100);
    ASSERT_EQ(g.calls, 0);
    test_xport_free(x);
    test_mock_stop(&m);
}

/* xport_free with requests in flight: no callback, no leak (ASan checks the latter). */
static void free_in_flight(void)
{
    const char *const slow[] = {"--latency-ms", "2000", NULL};
    struct mockproc m = start_mock(slow);
    struct s3c_config c;
    cfg_for(&c, &m, false);
    struct xport *x = open_x(&c);
    static struct got g;
    struct iovec v = {"x", 1};
    struct xport_put p = {.key = "k", .iov = &v, .iovcnt = 1};
    memset(&g, 0, sizeof(g));
    ASSERT_EQ(xport_put(x, &p, on_done, &g), 0);
    ASSERT_EQ(xport_put(x, &p, on_done, &g), 0);
    poll_until_mock(x, &m, 5000, "ops.PutObject.count", 2); /* both held by the mock */
    ASSERT_EQ(xport_in_flight(x), 2);
    test_xport_free(x);
    ASSERT_EQ(g.calls, 0);
    test_mock_stop(&m);
}

int main(void)
{
    RUN(roundtrip_signed);
    RUN(encoded_keys);
    RUN(checksums_and_signing);
    RUN(refused_credentials);
    RUN(dot_segment_keys);
    RUN(region_scope);
    RUN(session_token);
    RUN(conditional_writes);
    RUN(answer_classes);
    RUN(virtual_host);
    RUN(bad_arguments);
    RUN(free_in_flight);
    return 0;
}
