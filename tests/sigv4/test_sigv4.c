/* SigV4 against published vectors (tests/data/sigv4: the S3 documentation's examples and
 * the AWS test-suite cases that apply to S3), plus refusals and sigv4.h's promise of no
 * allocation. Never computes its own expected values: they come from a data file, or for
 * secrets longer than the vectors' from OpenSSL's own HMAC(), an independent implementation. */
#include "alloc_count.h"
#include "test.h"
#include "transport/sigv4.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
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
    ASSERT_EQ(sigv4_signature(&r, sig), -1);
    free(v.body);
}

static void test_parse_refusals(void)
{
    struct sigv4_auth a;
    ASSERT_EQ(
        sigv4_parse_authorization("AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=", &a), -1);
    ASSERT_EQ(sigv4_parse_authorization(
                  "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request, "
                  "SignedHeaders=host",
                  &a),
              -1); /* no signature */
    ASSERT_EQ(sigv4_parse_authorization(
                  "AWS4-HMAC-SHA256 Credential=AK/2013/us-east-1/s3/aws4_request, "
                  "SignedHeaders=host, Signature=" /* bad date */
                  "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
                  &a),
              -1);
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

/* sigv4.h promises no allocation: every entry point, many times over after one warm-up
 * call each, must leave both counters where they were. The counters are first shown to
 * see an allocation, so this cannot pass by counting nothing. Also prints the cost. */
static void test_signing_does_not_allocate(void)
{
    enum { ROUNDS = 200, TIMED = 20000 };
    struct vec v;
    char out[2048], sig[65], want[65], hex[65];
    unsigned char key[32];
    struct sigv4_auth a;
    int bad = 0;

    load(&v, "s3-put-object");
    struct sigv4_request r = req_of(&v);

    /* the counters work: a libc malloc and an OpenSSL allocation are both seen */
    void *(*volatile do_malloc)(size_t) = malloc;
    struct alloc_counts c0 = alloc_counts_now();
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

    /* warm-up, one call of each */
    ASSERT_EQ(sigv4_signature(&r, want), 0);
    ASSERT_EQ(sigv4_signing_key(v.secret_key, v.amz_date, v.region, v.service, key), 0);
    ASSERT_GT(sigv4_authorization(&r, out, sizeof(out)), 0);
    ASSERT_EQ(sigv4_parse_authorization(out, &a), 0);

    c0 = alloc_counts_now();
    for (int i = 0; i < ROUNDS; i++) {
        bad |= sigv4_signing_key(v.secret_key, v.amz_date, v.region, v.service, key) != 0;
        bad |= sigv4_signature_with_key(&r, key, sig) != 0 || strcmp(sig, want) != 0;
        bad |= sigv4_signature(&r, sig) != 0 || strcmp(sig, want) != 0;
        bad |= sigv4_canonical_request(&r, out, sizeof(out)) <= 0;
        bad |= sigv4_string_to_sign(&r, out, sizeof(out)) <= 0;
        bad |= sigv4_authorization(&r, out, sizeof(out)) <= 0;
        bad |= sigv4_parse_authorization(out, &a) != 0 || strcmp(a.signature, want) != 0;
        sigv4_sha256_hex(v.body, v.body_len, hex);
        bad |= strcmp(hex, v.payload_hash) != 0;
    }
    c1 = alloc_counts_now();
    ASSERT_EQ(bad, 0);
    ASSERT_EQ(c1.openssl - c0.openssl, 0);
    if (alloc_libc_counted())
        ASSERT_EQ(c1.libc - c0.libc, 0);
    else
        fprintf(stderr, "   libc malloc not counted under a sanitizer (OpenSSL's hooks are)\n");

    /* the transport's per-request path, and a full signature with key derivation */
    double t0 = now_ns();
    for (int i = 0; i < TIMED; i++)
        bad |= sigv4_signature_with_key(&r, key, sig);
    double t1 = now_ns();
    for (int i = 0; i < TIMED; i++)
        bad |= sigv4_authorization(&r, out, sizeof(out)) <= 0;
    double t2 = now_ns();
    struct alloc_counts c2 = alloc_counts_now();
    ASSERT_EQ(bad, 0);
    ASSERT_EQ(c2.openssl - c1.openssl, 0);
    ASSERT_EQ(c2.libc - c1.libc, 0);
    fprintf(stderr,
            "   {\"op\":\"signature_with_key\",\"ns_per_op\":%.0f,\"allocs\":0}\n"
            "   {\"op\":\"authorization\",\"ns_per_op\":%.0f,\"allocs\":0}\n",
            (t1 - t0) / TIMED, (t2 - t1) / TIMED);
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
    RUN(test_signing_does_not_allocate);
    return 0;
}
