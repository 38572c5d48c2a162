/* SigV4 against published vectors (tests/data/sigv4: the S3 documentation's examples and
 * the AWS test-suite cases that apply to S3), plus refusals, sigv4.h's allocation bounds and
 * its per-thread contexts. Never computes its own expected values: they come from a data
 * file or from OpenSSL's own one-shot HMAC(), an implementation independent of sigv4.c's. */
#include "alloc_count.h"
#include "s3commit.h"
#include "sigv4/sigv4.h"
#include "test.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXH 32

struct vec {
    char dir[512];
    char access_key[128], secret_key[128], region[64], service[64];
    char method[16], path[1024], query[1024];
    char names[MAXH][64], values[MAXH][1024];
    struct sigv4_header h[MAXH];
    size_t nh;
    char amz_date[32], payload_hash[80];
    char *body;
    size_t body_len;
};

static char *slurp(const char *dir, const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ASSERT(buf);
    ASSERT_EQ(fread(buf, 1, (size_t)n, f), n);
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

static const char *data_dir(void)
{
    const char *d = getenv("S3C_TEST_DATA");
    if (!d)
        TEST_FAIL_("S3C_TEST_DATA is not set (run through ctest)");
    return d;
}

static void load(struct vec *v, const char *name)
{
    memset(v, 0, sizeof(*v));
    snprintf(v->dir, sizeof(v->dir), "%s/sigv4/%s", data_dir(), name);
    char *ctx = slurp(v->dir, "context", NULL);
    if (!ctx)
        TEST_FAIL_("cannot read %s/context", v->dir);
    for (char *line = strtok(ctx, "\n"); line; line = strtok(NULL, "\n")) {
        char *eq = strchr(line, '=');
        if (line[0] == '#' || !eq)
            continue;
        *eq = '\0';
        if (!strcmp(line, "access_key"))
            snprintf(v->access_key, sizeof(v->access_key), "%s", eq + 1);
        else if (!strcmp(line, "secret_key"))
            snprintf(v->secret_key, sizeof(v->secret_key), "%s", eq + 1);
        else if (!strcmp(line, "region"))
            snprintf(v->region, sizeof(v->region), "%s", eq + 1);
        else if (!strcmp(line, "service"))
            snprintf(v->service, sizeof(v->service), "%s", eq + 1);
    }
    free(ctx);

    size_t rlen;
    char *req = slurp(v->dir, "request.txt", &rlen);
    if (!req)
        TEST_FAIL_("cannot read %s/request.txt", v->dir);
    char *body = strstr(req, "\n\n");
    ASSERT(body);
    *body = '\0';
    body += 2;
    v->body_len = rlen - (size_t)(body - req);
    v->body = malloc(v->body_len + 1);
    memcpy(v->body, body, v->body_len + 1);

    char *save = NULL;
    char *line = strtok_r(req, "\n", &save);
    /* request line: METHOD TARGET HTTP/1.1 (the target may hold a space) */
    char *sp1 = strchr(line, ' '), *sp2 = strrchr(line, ' ');
    ASSERT(sp1 && sp2 && sp2 > sp1);
    *sp1 = *sp2 = '\0';
    snprintf(v->method, sizeof(v->method), "%s", line);
    char *target = sp1 + 1, *q = strchr(target, '?');
    if (q)
        *q = '\0';
    snprintf(v->path, sizeof(v->path), "%s", target);
    snprintf(v->query, sizeof(v->query), "%s", q ? q + 1 : "");

    while ((line = strtok_r(NULL, "\n", &save))) {
        char *colon = strchr(line, ':');
        ASSERT(colon && v->nh < MAXH);
        *colon = '\0';
        snprintf(v->names[v->nh], sizeof(v->names[0]), "%s", line);
        snprintf(v->values[v->nh], sizeof(v->values[0]), "%s", colon + 1);
        v->h[v->nh].name = v->names[v->nh];
        v->h[v->nh].value = v->values[v->nh];
        if (!strcasecmp(line, "x-amz-date")) {
            const char *d = colon + 1;
            while (*d == ' ')
                d++;
            snprintf(v->amz_date, sizeof(v->amz_date), "%s", d);
        }
        if (!strcasecmp(line, "x-amz-content-sha256")) {
            const char *d = colon + 1;
            while (*d == ' ')
                d++;
            snprintf(v->payload_hash, sizeof(v->payload_hash), "%s", d);
        }
        v->nh++;
    }
    free(req);

    char body_hash[65];
    sigv4_sha256_hex(v->body, v->body_len, body_hash);
    if (v->payload_hash[0]) /* the header given must be the body's hash */
        ASSERT_STR_EQ(v->payload_hash, body_hash);
    else
        snprintf(v->payload_hash, sizeof(v->payload_hash), "%s", body_hash);
}

static struct sigv4_request req_of(const struct vec *v)
{
    struct sigv4_request r = {
        .method = v->method,
        .path = v->path,
        .query = v->query,
        .headers = v->h,
        .nheaders = v->nh,
        .payload_hash = v->payload_hash,
        .amz_date = v->amz_date,
        .region = v->region,
        .service = v->service,
        .access_key = v->access_key,
        .secret_key = v->secret_key,
    };
    return r;
}

/* "A, B" and "A,B" are the same header; published examples use either. */
static void strip_comma_space(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        *o++ = *p;
        if (*p == ',')
            while (p[1] == ' ')
                p++;
    }
    *o = '\0';
}

static void trim_end(char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
}

static void run_case(const char *name)
{
    struct vec v;
    char out[8192], sig[65];

    fprintf(stderr, "   case %s\n", name);
    load(&v, name);
    struct sigv4_request r = req_of(&v);

    char *want = slurp(v.dir, "canonical-request.txt", NULL);
    if (want) {
        ASSERT_GT(sigv4_canonical_request(&r, out, sizeof(out)), 0);
        ASSERT_STR_EQ(out, want);
        free(want);
    }
    want = slurp(v.dir, "string-to-sign.txt", NULL);
    if (want) {
        ASSERT_GT(sigv4_string_to_sign(&r, out, sizeof(out)), 0);
        ASSERT_STR_EQ(out, want);
        free(want);
    }
    want = slurp(v.dir, "authorization.txt", NULL);
    ASSERT(want);
    trim_end(want);
    int n = sigv4_authorization(&r, out, sizeof(out));
    ASSERT_EQ(n, (int64_t)strlen(out));
    strip_comma_space(want);
    strip_comma_space(out);
    ASSERT_STR_EQ(out, want);

    /* The signature alone, and the same through a cached signing key. */
    ASSERT_EQ(sigv4_signature(&r, sig), 0);
    ASSERT(strstr(want, sig) != NULL);
    unsigned char key[32];
    char sig2[65];
    ASSERT_EQ(sigv4_signing_key(v.secret_key, v.amz_date, v.region, v.service, key), 0);
    ASSERT_EQ(sigv4_signature_with_key(&r, key, sig2), 0);
    ASSERT_STR_EQ(sig, sig2);

    /* A verifier parses what a signer wrote. */
    struct sigv4_auth a;
    ASSERT_EQ(sigv4_parse_authorization(want, &a), 0);
    ASSERT_STR_EQ(a.access_key, v.access_key);
    ASSERT_STR_EQ(a.signature, sig);
    ASSERT_STR_EQ(a.region, v.region);
    ASSERT_STR_EQ(a.service, v.service);

    /* Any change to the secret, the body hash or a signed header changes the signature. */
    char other[65];
    r.secret_key = "wrong-secret";
    ASSERT_EQ(sigv4_signature(&r, other), 0);
    ASSERT(strcmp(other, sig) != 0);
    r.secret_key = v.secret_key;
    r.payload_hash = SIGV4_UNSIGNED_PAYLOAD;
    ASSERT_EQ(sigv4_signature(&r, other), 0);
    ASSERT(strcmp(other, sig) != 0);
    r.payload_hash = v.payload_hash;
    v.values[0][strlen(v.values[0]) - 1] ^= 1;
    ASSERT_EQ(sigv4_signature(&r, other), 0);
    ASSERT(strcmp(other, sig) != 0);

    free(v.body);
    free(want);
}

static void test_published_vectors(void)
{
    char *list = slurp(data_dir(), "sigv4/CASES", NULL);
    int count = 0;
    ASSERT(list);
    char *save = NULL;
    for (char *line = strtok_r(list, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || !line[0])
            continue;
        run_case(line);
        count++;
    }
    free(list);
    ASSERT_GE(count, 20);
}

static void test_uri_encode(void)
{
    char out[64];
    ASSERT_EQ(sigv4_uri_encode("a b/c$~", 7, 1, out, sizeof(out)), 11);
    ASSERT_STR_EQ(out, "a%20b/c%24~");
    ASSERT_EQ(sigv4_uri_encode("a/b", 3, 0, out, sizeof(out)), 5);
    ASSERT_STR_EQ(out, "a%2Fb");
    ASSERT_EQ(sigv4_uri_encode("\xe1\x88\xb4", 3, 1, out, sizeof(out)), 9);
    ASSERT_STR_EQ(out, "%E1%88%B4");
    ASSERT_EQ(sigv4_uri_encode("abcdef", 6, 1, out, 6), -1); /* no room for the NUL */
}

static void test_small_buffers_refused(void)
{
    struct vec v;
    char out[16];
    load(&v, "s3-put-object");
    struct sigv4_request r = req_of(&v);
    ASSERT_EQ(sigv4_canonical_request(&r, out, sizeof(out)), -1);
    ASSERT_EQ(sigv4_string_to_sign(&r, out, sizeof(out)), -1);
    ASSERT_EQ(sigv4_authorization(&r, out, sizeof(out)), -1);
    r.amz_date = "2013-05-24";
    char sig[65];
    ASSERT_EQ(sigv4_signature(&r, sig), S3C_EINVAL);
    free(v.body);
}

static void test_parse_refusals(void)
{
    struct sigv4_auth a;
    ASSERT_EQ(
        sigv4_parse_authorization("AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=", &a),
        S3C_EINVAL);
    ASSERT_EQ(sigv4_parse_authorization(
                  "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request, "
                  "SignedHeaders=host",
                  &a),
              S3C_EINVAL); /* no signature */
    ASSERT_EQ(sigv4_parse_authorization(
                  "AWS4-HMAC-SHA256 Credential=AK/2013/us-east-1/s3/aws4_request, "
                  "SignedHeaders=host, Signature=" /* bad date */
                  "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
                  &a),
              S3C_EINVAL);
    ASSERT_EQ(sigv4_parse_authorization(
                  "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,"
                  "SignedHeaders=host;x-amz-date,Signature="
                  "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
                  &a),
              0);
    ASSERT_STR_EQ(a.signed_headers, "host;x-amz-date");
    ASSERT_STR_EQ(a.date8, "20130524");
}

/* sigv4_signing_key() against a chain of OpenSSL HMAC() calls, for "AWS4"+secret keys
 * shorter than, as long as and longer than SHA-256's 64-byte block (a longer key is hashed
 * first, a path the published vectors' 44-byte keys never take). */
static void test_signing_key_matches_openssl_hmac(void)
{
    char secret[201], k0[256];
    unsigned char a[32], b[32], want[32], got[32];
    unsigned int len;
    const char *steps[3] = {"eu-west-3", "s3", "aws4_request"};

    for (size_t n = 0; n < sizeof(secret); n++) {
        for (size_t i = 0; i < n; i++)
            secret[i] = (char)('!' + (i * 7 + n) % 94);
        secret[n] = '\0';
        int kl = snprintf(k0, sizeof(k0), "AWS4%s", secret);
        ASSERT(HMAC(EVP_sha256(), k0, kl, (const unsigned char *)"20260102", 8, a, &len));
        ASSERT(
            HMAC(EVP_sha256(), a, 32, (const unsigned char *)steps[0], strlen(steps[0]), b, &len));
        ASSERT(HMAC(EVP_sha256(), b, 32, (const unsigned char *)steps[1], 2, a, &len));
        ASSERT(HMAC(EVP_sha256(), a, 32, (const unsigned char *)steps[2], 12, want, &len));
        ASSERT_EQ(sigv4_signing_key(secret, "20260102", steps[0], steps[1], got), 0);
        if (memcmp(got, want, 32) != 0)
            TEST_FAIL_("signing key differs from OpenSSL HMAC for a %zu-byte secret", n);
    }
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* sigv4.h's allocation figures (OpenSSL 3.0): 1 block per SHA-256 on the thread's reused
 * EVP_MD_CTX, 2 per HMAC re-initialised with its context's current key, 5 per HMAC keyed
 * afresh. A warm sigv4_signature_with_key (the transport's per-request path: same key as
 * the thread's last) is 1 + 2; a key derivation 4 * 5; a full signature or Authorization
 * 20 + 1 + 2. Bounds, not exact figures, so a leaner OpenSSL passes; one-shot HMAC() (13 per
 * MAC) or a context per call would not. */
enum {
    SHA_MAX = 1,
    SIGN_WARM_MAX = 3,
    SIGNING_KEY_MAX = 20,
    FULL_MAX = 23,
};

struct cost {
    long openssl, libc; /* the most one call took */
};

static void cost_add(struct cost *c, struct alloc_counts a0)
{
    struct alloc_counts a1 = alloc_counts_now();
    if (a1.openssl - a0.openssl > c->openssl)
        c->openssl = a1.openssl - a0.openssl;
    if (a1.libc - a0.libc > c->libc)
        c->libc = a1.libc - a0.libc;
}

/* Every call counted in c must have stayed within max, in both counters. */
#define ASSERT_COST(c, max)                                                                        \
    do {                                                                                           \
        if ((c).openssl > (max) || (c).libc > (max))                                               \
            TEST_FAIL_("%s: %ld OpenSSL / %ld libc allocations in one call, bound %d", #c,         \
                       (c).openssl, (c).libc, (int)(max));                                         \
    } while (0)

/* Each entry point, ROUNDS times after a warm-up call, counted call by call. The counters
 * are first shown to see an allocation, so this cannot pass by counting nothing. Also
 * prints the cost of the two signing paths. */
static void test_signing_allocations_bounded(void)
{
    enum { ROUNDS = 200, TIMED = 20000 };
    struct vec v;
    char out[2048], sig[65], want[65], hex[65];
    unsigned char key[32];
    struct sigv4_auth a;
    struct cost sign_warm = {0}, signing_key = {0}, signature = {0}, authorization = {0},
                string_to_sign = {0}, sha256_hex = {0}, canonical = {0}, parse = {0};
    struct alloc_counts c0;
    int bad = 0;

    load(&v, "s3-put-object");
    struct sigv4_request r = req_of(&v);

    /* the counters work: a libc malloc and an OpenSSL allocation are both seen */
    void *(*volatile do_malloc)(size_t) = malloc;
    c0 = alloc_counts_now();
    void *p = do_malloc(16);
    free(p);
    p = OPENSSL_malloc(16);
    OPENSSL_free(p);
    unsigned int len;
    ASSERT(HMAC(EVP_sha256(), "k", 1, (const unsigned char *)"m", 1, key, &len));
    struct alloc_counts c1 = alloc_counts_now();
    ASSERT_GE(c1.openssl - c0.openssl, 2); /* OPENSSL_malloc, and HMAC()'s own contexts */
    if (alloc_libc_counted())
        ASSERT_GE(c1.libc - c0.libc, 2);

    /* warm-up, one call of each: this thread's contexts are made here */
    ASSERT_EQ(sigv4_signature(&r, want), 0);
    ASSERT_EQ(sigv4_signing_key(v.secret_key, v.amz_date, v.region, v.service, key), 0);
    ASSERT_GT(sigv4_authorization(&r, out, sizeof(out)), 0);
    ASSERT_EQ(sigv4_parse_authorization(out, &a), 0);

    for (int i = 0; i < ROUNDS; i++) {
        c0 = alloc_counts_now();
        bad |= sigv4_signing_key(v.secret_key, v.amz_date, v.region, v.service, key) != 0;
        cost_add(&signing_key, c0);
        c0 = alloc_counts_now();
        bad |= sigv4_signature_with_key(&r, key, sig) != 0 || strcmp(sig, want) != 0;
        cost_add(&sign_warm, c0);
        c0 = alloc_counts_now();
        bad |= sigv4_signature(&r, sig) != 0 || strcmp(sig, want) != 0;
        cost_add(&signature, c0);
        c0 = alloc_counts_now();
        bad |= sigv4_canonical_request(&r, out, sizeof(out)) <= 0;
        cost_add(&canonical, c0);
        c0 = alloc_counts_now();
        bad |= sigv4_string_to_sign(&r, out, sizeof(out)) <= 0;
        cost_add(&string_to_sign, c0);
        c0 = alloc_counts_now();
        bad |= sigv4_authorization(&r, out, sizeof(out)) <= 0;
        cost_add(&authorization, c0);
        c0 = alloc_counts_now();
        bad |= sigv4_parse_authorization(out, &a) != 0 || strcmp(a.signature, want) != 0;
        cost_add(&parse, c0);
        c0 = alloc_counts_now();
        sigv4_sha256_hex(v.body, v.body_len, hex);
        cost_add(&sha256_hex, c0);
        bad |= strcmp(hex, v.payload_hash) != 0;
    }
    ASSERT_EQ(bad, 0);
    ASSERT_COST(sign_warm, SIGN_WARM_MAX);
    ASSERT_COST(signing_key, SIGNING_KEY_MAX);
    ASSERT_COST(signature, FULL_MAX);
    ASSERT_COST(authorization, FULL_MAX);
    ASSERT_COST(string_to_sign, SHA_MAX);
    ASSERT_COST(sha256_hex, SHA_MAX);
    ASSERT_COST(canonical, 0);
    ASSERT_COST(parse, 0);
    if (!alloc_libc_counted())
        fprintf(stderr, "   libc malloc not counted under a sanitizer (OpenSSL's hooks are)\n");

    /* the transport's per-request path, and a full signature with key derivation */
    c0 = alloc_counts_now();
    double t0 = now_ns();
    for (int i = 0; i < TIMED; i++)
        bad |= sigv4_signature_with_key(&r, key, sig);
    double t1 = now_ns();
    c1 = alloc_counts_now();
    for (int i = 0; i < TIMED; i++)
        bad |= sigv4_authorization(&r, out, sizeof(out)) <= 0;
    double t2 = now_ns();
    struct alloc_counts c2 = alloc_counts_now();
    ASSERT_EQ(bad, 0);
    ASSERT_LE(c1.openssl - c0.openssl, (long)SIGN_WARM_MAX * TIMED);
    ASSERT_LE(c2.openssl - c1.openssl, (long)FULL_MAX * TIMED);
    fprintf(stderr,
            "   {\"op\":\"signature_with_key\",\"ns_per_op\":%.0f,\"openssl_allocs_per_op\":%.2f}\n"
            "   {\"op\":\"authorization\",\"ns_per_op\":%.0f,\"openssl_allocs_per_op\":%.2f}\n",
            (t1 - t0) / TIMED, (double)(c1.openssl - c0.openssl) / TIMED, (t2 - t1) / TIMED,
            (double)(c2.openssl - c1.openssl) / TIMED);
    free(v.body);
}

/* The expected signature for key: OpenSSL's one-shot HMAC() over sigv4's string to sign. */
static void want_signature(const struct sigv4_request *r, const unsigned char key[32],
                           char hexsig[65])
{
    char sts[512];
    unsigned char mac[32];
    unsigned int len = 0;
    int n = sigv4_string_to_sign(r, sts, sizeof(sts));

    ASSERT_GT(n, 0);
    ASSERT(HMAC(EVP_sha256(), key, 32, (const unsigned char *)sts, (size_t)n, mac, &len));
    ASSERT_EQ(len, 32);
    for (int i = 0; i < 32; i++)
        snprintf(hexsig + 2 * i, 3, "%02x", mac[i]);
}

/* sigv4_signature_with_key keeps its context keyed with the last key it saw: a change of
 * key (a new day, another credential) must re-key, and a return to an earlier key too. */
static void test_signature_follows_key_changes(void)
{
    struct vec v;
    unsigned char k[3][32];
    char want[3][65], sig[65];
    static const int order[] = {0, 0, 1, 0, 1, 1, 2, 0, 2, 2, 1, 0};

    load(&v, "s3-put-object");
    struct sigv4_request r = req_of(&v);
    ASSERT_EQ(sigv4_signing_key(v.secret_key, v.amz_date, v.region, v.service, k[0]), 0);
    ASSERT_EQ(sigv4_signing_key(v.secret_key, "20991231", v.region, v.service, k[1]), 0);
    ASSERT_EQ(sigv4_signing_key("another-secret", v.amz_date, v.region, v.service, k[2]), 0);
    for (int i = 0; i < 3; i++)
        want_signature(&r, k[i], want[i]);
    ASSERT(strcmp(want[0], want[1]) != 0 && strcmp(want[0], want[2]) != 0);
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        ASSERT_EQ(sigv4_signature_with_key(&r, k[order[i]], sig), 0);
        ASSERT_STR_EQ(sig, want[order[i]]);
    }
    /* the published signature still comes out after all that */
    ASSERT_EQ(sigv4_signature(&r, sig), 0);
    ASSERT_STR_EQ(sig, want[0]);
    /* after the kept key is wiped, the same key is taken afresh, not the wiped one */
    ASSERT_EQ(sigv4_signature_with_key(&r, k[1], sig), 0);
    sigv4_forget_keys();
    ASSERT_EQ(sigv4_signature_with_key(&r, k[1], sig), 0);
    ASSERT_STR_EQ(sig, want[1]);
    sigv4_forget_keys();
    sigv4_forget_keys(); /* twice is harmless */
    free(v.body);
}

struct signer {
    const struct sigv4_request *r;
    const unsigned char *key;
    const char *want;
    int bad;
};

static void *sign_in_thread(void *arg)
{
    struct signer *s = arg;
    char sig[65];
    unsigned char key[32];

    for (int i = 0; i < 200; i++) {
        s->bad |= sigv4_signature_with_key(s->r, s->key, sig) != 0 || strcmp(sig, s->want) != 0;
        s->bad |= sigv4_signature(s->r, sig) != 0 || strcmp(sig, s->want) != 0;
        s->bad |= sigv4_signing_key(s->r->secret_key, s->r->amz_date, s->r->region, s->r->service,
                                    key) != 0 ||
                  memcmp(key, s->key, 32) != 0;
    }
    return NULL;
}

/* Threads sign at once, each on its own contexts, and each thread's contexts are freed when
 * it exits: after the joins every OpenSSL block the threads allocated has been freed. */
static void test_threads_sign_and_free_their_state(void)
{
    enum { NT = 4 };
    struct vec v;
    char want[65];
    unsigned char key[32];
    pthread_t t[NT];
    struct signer s[NT];

    load(&v, "s3-put-object");
    struct sigv4_request r = req_of(&v);
    ASSERT_EQ(sigv4_signing_key(v.secret_key, v.amz_date, v.region, v.service, key), 0);
    ASSERT_EQ(sigv4_signature(&r, want), 0); /* the algorithms are fetched by now */

    struct alloc_counts c0 = alloc_counts_now();
    for (int i = 0; i < NT; i++) {
        s[i] = (struct signer){.r = &r, .key = key, .want = want};
        ASSERT_EQ(pthread_create(&t[i], NULL, sign_in_thread, &s[i]), 0);
    }
    for (int i = 0; i < NT; i++) {
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
        ASSERT_EQ(s[i].bad, 0);
    }
    struct alloc_counts c1 = alloc_counts_now();
    ASSERT_GT(c1.openssl - c0.openssl, NT * 200); /* they did allocate ... */
    ASSERT_EQ(c1.openssl_live, c0.openssl_live);  /* ... and freed it all by their exit */
    free(v.body);
}

int main(void)
{
    /* before anything lets OpenSSL allocate */
    if (!alloc_count_init())
        TEST_FAIL_("CRYPTO_set_mem_functions refused: OpenSSL allocated before main");
    RUN(test_published_vectors);
    RUN(test_uri_encode);
    RUN(test_small_buffers_refused);
    RUN(test_parse_refusals);
    RUN(test_signing_key_matches_openssl_hmac);
    RUN(test_signing_allocations_bounded);
    RUN(test_signature_follows_key_changes);
    RUN(test_threads_sign_and_free_their_state);
    return 0;
}
