/* AWS Signature Version 4 (header authentication) for S3, on OpenSSL 3's EVP digest and MAC.
 * The canonical request is streamed into SHA-256 so no size limit applies when signing;
 * it must never print or log a secret, nor allocate beyond what sigv4.h admits. */
#include "sigv4/sigv4.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3commit.h"

#define SIGV4_MAX_HEADERS 128
#define SIGV4_MAX_PARAMS 128

static const char hexdig[] = "0123456789abcdef";
static const char HEXDIG[] = "0123456789ABCDEF";

/* ---- output sink: a bounded buffer and/or a running SHA-256 ---- */

struct sink {
    char *buf;       /* NULL when only hashing */
    size_t cap, len; /* len counts every byte even past cap (overflow check) */
    EVP_MD_CTX *md;  /* NULL when only writing */
    bool md_failed;  /* an EVP_DigestUpdate failed: the hash is worthless */
    size_t mdn;      /* bytes waiting in mdbuf: most puts are 1 byte, an update is not free */
    char mdbuf[256];
};

static void sigv4_md_update(struct sink *s, const void *p, size_t n)
{
    if (EVP_DigestUpdate(s->md, p, n) != 1)
        s->md_failed = true;
}

static void sigv4_sink_flush_md(struct sink *s)
{
    sigv4_md_update(s, s->mdbuf, s->mdn);
    s->mdn = 0;
}

static void sigv4_sink_put(struct sink *s, const char *p, size_t n)
{
    if (s->buf && s->len < s->cap) {
        size_t room = s->cap - s->len;
        memcpy(s->buf + s->len, p, n < room ? n : room);
    }
    if (s->md) {
        if (s->mdn + n > sizeof(s->mdbuf))
            sigv4_sink_flush_md(s);
        if (n > sizeof(s->mdbuf)) {
            sigv4_md_update(s, p, n);
        } else {
            memcpy(s->mdbuf + s->mdn, p, n);
            s->mdn += n;
        }
    }
    s->len += n;
}

static void sigv4_sink_putc(struct sink *s, char c)
{
    sigv4_sink_put(s, &c, 1);
}

static void sigv4_sink_puts(struct sink *s, const char *str)
{
    sigv4_sink_put(s, str, strlen(str));
}

static bool sigv4_is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

static int sigv4_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ---- a byte iterator that yields the canonical (decoded then re-encoded) form of a span:
 * "%xx" escapes are decoded first so that "a%20b", "a b" and "a%2a" canonicalise the same
 * way S3 does (S3 signs the key it decoded, encoded with its own rules). ---- */

struct enc_it {
    const char *p, *end;
    bool keep_slash;
    char pend[3];
    int npend, ipend;
};

static void sigv4_enc_init(struct enc_it *it, const char *p, size_t n, bool keep_slash)
{
    it->p = p;
    it->end = p + n;
    it->keep_slash = keep_slash;
    it->npend = it->ipend = 0;
}

/* Next canonical byte, or -1 at the end. */
static int sigv4_enc_next(struct enc_it *it)
{
    if (it->ipend < it->npend)
        return (unsigned char)it->pend[it->ipend++];
    if (it->p >= it->end)
        return -1;
    unsigned char c = (unsigned char)*it->p;
    if (c == '%' && it->end - it->p >= 3 && sigv4_hexval(it->p[1]) >= 0 &&
        sigv4_hexval(it->p[2]) >= 0) {
        c = (unsigned char)(sigv4_hexval(it->p[1]) << 4 | sigv4_hexval(it->p[2]));
        it->p += 3;
    } else {
        it->p++;
    }
    if (sigv4_is_unreserved(c) || (c == '/' && it->keep_slash))
        return c;
    it->pend[0] = HEXDIG[c >> 4];
    it->pend[1] = HEXDIG[c & 15];
    it->npend = 2;
    it->ipend = 0;
    return '%';
}

static void sigv4_sink_canon(struct sink *s, const char *p, size_t n, bool keep_slash)
{
    struct enc_it it;
    int c;
    char chunk[256];
    size_t k = 0;

    sigv4_enc_init(&it, p, n, keep_slash);
    while ((c = sigv4_enc_next(&it)) >= 0) {
        chunk[k++] = (char)c;
        if (k == sizeof(chunk)) {
            sigv4_sink_put(s, chunk, k);
            k = 0;
        }
    }
    sigv4_sink_put(s, chunk, k);
}

/* Compares the canonical forms of two spans. */
static int sigv4_canon_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    struct enc_it ia, ib;
    sigv4_enc_init(&ia, a, an, false);
    sigv4_enc_init(&ib, b, bn, false);
    for (;;) {
        int ca = sigv4_enc_next(&ia), cb = sigv4_enc_next(&ib);
        if (ca != cb)
            return ca < cb ? -1 : 1; /* -1 (end) sorts first */
        if (ca < 0)
            return 0;
    }
}

/* ---- query string ---- */

struct qparam {
    const char *name, *value;
    size_t nlen, vlen;
};

static int sigv4_qparam_cmp(const struct qparam *a, const struct qparam *b)
{
    int c = sigv4_canon_cmp(a->name, a->nlen, b->name, b->nlen);
    return c ? c : sigv4_canon_cmp(a->value, a->vlen, b->value, b->vlen);
}

static int sigv4_sink_query(struct sink *s, const char *q)
{
    struct qparam ps[SIGV4_MAX_PARAMS];
    size_t n = 0;
    const char *p = q ? q : "";

    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > 0) {
            const char *eq = memchr(p, '=', len);
            if (n == SIGV4_MAX_PARAMS)
                return S3C_EINVAL;
            ps[n].name = p;
            ps[n].nlen = eq ? (size_t)(eq - p) : len;
            ps[n].value = eq ? eq + 1 : p + len;
            ps[n].vlen = eq ? len - ps[n].nlen - 1 : 0;
            n++;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    /* insertion sort: stable, and n is small */
    for (size_t i = 1; i < n; i++) {
        struct qparam t = ps[i];
        size_t j = i;
        while (j > 0 && sigv4_qparam_cmp(&ps[j - 1], &t) > 0) {
            ps[j] = ps[j - 1];
            j--;
        }
        ps[j] = t;
    }
    for (size_t i = 0; i < n; i++) {
        if (i)
            sigv4_sink_putc(s, '&');
        sigv4_sink_canon(s, ps[i].name, ps[i].nlen, false);
        sigv4_sink_putc(s, '=');
        sigv4_sink_canon(s, ps[i].value, ps[i].vlen, false);
    }
    return 0;
}

/* ---- headers ---- */

static int sigv4_name_cmp(const char *a, const char *b)
{
    for (;; a++, b++) {
        int ca = (unsigned char)*a, cb = (unsigned char)*b;
        if (ca >= 'A' && ca <= 'Z')
            ca += 32;
        if (cb >= 'A' && cb <= 'Z')
            cb += 32;
        if (ca != cb || ca == 0)
            return ca - cb;
    }
}

/* Sorted header order (stable, so duplicate names keep their order). Returns the count
 * or S3C_EINVAL when there are too many. */
static int sigv4_sorted_headers(const struct sigv4_request *r, size_t idx[SIGV4_MAX_HEADERS])
{
    size_t n = r->nheaders;
    if (n > SIGV4_MAX_HEADERS)
        return S3C_EINVAL;
    for (size_t i = 0; i < n; i++) {
        size_t j = i;
        while (j > 0 && sigv4_name_cmp(r->headers[idx[j - 1]].name, r->headers[i].name) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
    return (int)n;
}

static void sigv4_sink_lower(struct sink *s, const char *name)
{
    for (; *name; name++) {
        char c = *name;
        sigv4_sink_putc(s, (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c);
    }
}

/* Trimmed value with inner runs of blanks folded to one space. */
static void sigv4_sink_value(struct sink *s, const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    bool pending_space = false;
    for (; *v; v++) {
        if (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n') {
            pending_space = true;
            continue;
        }
        if (pending_space)
            sigv4_sink_putc(s, ' ');
        pending_space = false;
        sigv4_sink_putc(s, *v);
    }
}

static void sigv4_sink_signed_headers(struct sink *s, const struct sigv4_request *r,
                                      const size_t *idx, int n)
{
    for (int i = 0; i < n; i++) {
        if (i > 0 && sigv4_name_cmp(r->headers[idx[i - 1]].name, r->headers[idx[i]].name) == 0)
            continue;
        if (i)
            sigv4_sink_putc(s, ';');
        sigv4_sink_lower(s, r->headers[idx[i]].name);
    }
}

/* Returns 0, or S3C_EINVAL when the request has too many headers or query params. */
static int sigv4_build_canonical(const struct sigv4_request *r, struct sink *s)
{
    size_t idx[SIGV4_MAX_HEADERS];
    int n = sigv4_sorted_headers(r, idx);
    if (n < 0)
        return n;

    sigv4_sink_puts(s, r->method);
    sigv4_sink_putc(s, '\n');
    const char *path = r->path && r->path[0] ? r->path : "/";
    sigv4_sink_canon(s, path, strlen(path), true);
    sigv4_sink_putc(s, '\n');
    int rc = sigv4_sink_query(s, r->query);
    if (rc < 0)
        return rc;
    sigv4_sink_putc(s, '\n');
    for (int i = 0; i < n; i++) {
        const struct sigv4_header *h = &r->headers[idx[i]];
        if (i > 0 && sigv4_name_cmp(r->headers[idx[i - 1]].name, h->name) == 0) {
            sigv4_sink_putc(s, ','); /* a repeated header: values joined in the order sent */
        } else {
            if (i)
                sigv4_sink_putc(s, '\n');
            sigv4_sink_lower(s, h->name);
            sigv4_sink_putc(s, ':');
        }
        sigv4_sink_value(s, h->value ? h->value : "");
    }
    sigv4_sink_puts(s, "\n\n");
    sigv4_sink_signed_headers(s, r, idx, n);
    sigv4_sink_putc(s, '\n');
    sigv4_sink_puts(s, r->payload_hash ? r->payload_hash : SIGV4_UNSIGNED_PAYLOAD);
    return 0;
}

static void sigv4_to_hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[in[i] >> 4];
        out[2 * i + 1] = hexdig[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int sigv4_sink_finish(struct sink *s, char *out, size_t outlen)
{
    if (s->len >= outlen)
        return -1;
    out[s->len] = '\0';
    return (int)s->len;
}

int sigv4_canonical_request(const struct sigv4_request *r, char *out, size_t outlen)
{
    struct sink s = {.buf = out, .cap = outlen};
    if (!out || sigv4_build_canonical(r, &s) < 0)
        return -1;
    return sigv4_sink_finish(&s, out, outlen);
}

/* ---- OpenSSL state: the algorithms are fetched once per process (kept until exit, so
 * nothing re-resolves them per call), the contexts made once per thread (freed by
 * sigv4_state_free when the thread exits) and reused, which is what keeps a warm signature to a
 * few small OpenSSL allocations (see sigv4.h). ---- */

struct hash_state {
    EVP_MD_CTX *md;             /* canonical request, sigv4_sha256_hex */
    EVP_MAC_CTX *derive;        /* sigv4_signing_key: keyed afresh for every HMAC step */
    EVP_MAC_CTX *sign;          /* the string to sign, keyed with sign_key */
    unsigned char sign_key[32]; /* sign's key: a repeat of it re-inits without re-keying */
    bool sign_keyed;
};

/* Set up by sigv4_init until once complete (not pthread_once: a fetch that failed for want
 * of memory must be tried again, or the process could never sign again). */
static pthread_mutex_t algs_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool algs_ok; /* release: the three below are set */
static EVP_MD *sha256_md;
static EVP_MAC *hmac_mac;
static pthread_key_t state_key; /* only for its destructor, which frees a thread's state */
static bool state_key_ok;
/* OpenSSL 3.0.0-3.0.2 accept EVP_MAC_init(ctx, NULL, ...) on a keyed HMAC context but do
 * not restart it (https://github.com/openssl/openssl/issues/17811, fixed in 3.0.3), which
 * would sign every request after the first wrongly; there the key is always passed again. */
static bool mac_reinit_ok;
static _Thread_local struct hash_state *state_tls;

/* pthread key destructor: runs in the exiting thread. The contexts may hold derived keys
 * (never the secret itself: derivation re-keys past it at once); EVP_MAC_CTX_free wipes
 * them, and sign_key is wiped here. */
static void sigv4_state_free(void *p)
{
    struct hash_state *st = p;

    if (!st)
        return;
    EVP_MD_CTX_free(st->md);
    EVP_MAC_CTX_free(st->derive);
    EVP_MAC_CTX_free(st->sign);
    OPENSSL_cleanse(st, sizeof(*st));
    free(st);
    if (state_tls == st)
        state_tls = NULL;
}

int sigv4_init(void)
{
    if (atomic_load_explicit(&algs_ok, memory_order_acquire))
        return 0;
    pthread_mutex_lock(&algs_mu);
    if (!sha256_md)
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!hmac_mac)
        hmac_mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!state_key_ok)
        state_key_ok = pthread_key_create(&state_key, sigv4_state_free) == 0;
    mac_reinit_ok = OpenSSL_version_num() >= 0x30000030L;
    bool ok = sha256_md && hmac_mac && state_key_ok;
    atomic_store_explicit(&algs_ok, ok, memory_order_release);
    pthread_mutex_unlock(&algs_mu);
    return ok ? 0 : -1;
}

static EVP_MAC_CTX *sigv4_new_hmac_sha256(void)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    EVP_MAC_CTX *c = EVP_MAC_CTX_new(hmac_mac);

    if (c && EVP_MAC_CTX_set_params(c, params) != 1) {
        EVP_MAC_CTX_free(c);
        return NULL;
    }
    return c;
}

/* This thread's contexts, made on first use. NULL when OpenSSL cannot provide them. */
static struct hash_state *sigv4_thread_state(void)
{
    struct hash_state *st = state_tls;

    if (st)
        return st;
    if (sigv4_init() < 0)
        return NULL;
    st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->md = EVP_MD_CTX_new();
    st->derive = sigv4_new_hmac_sha256();
    st->sign = sigv4_new_hmac_sha256();
    if (!st->md || !st->derive || !st->sign || pthread_setspecific(state_key, st) != 0)
        goto out_free_state;
    state_tls = st;
    return st;
out_free_state:
    sigv4_state_free(st);
    return NULL;
}

/* Hex SHA-256 of the canonical request, streamed. Returns 0, S3C_EINVAL (see
 * sigv4_build_canonical) or S3C_ENOMEM (OpenSSL could not make or run its contexts). */
static int sigv4_canonical_hash(const struct sigv4_request *r, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    struct hash_state *st = sigv4_thread_state();
    int rc;

    if (!st || EVP_DigestInit_ex2(st->md, sha256_md, NULL) != 1)
        return S3C_ENOMEM;
    struct sink s = {.md = st->md};
    rc = sigv4_build_canonical(r, &s);
    if (rc < 0)
        return rc;
    sigv4_sink_flush_md(&s);
    if (s.md_failed || EVP_DigestFinal_ex(st->md, md, &mdlen) != 1 || mdlen != 32)
        return S3C_ENOMEM;
    sigv4_to_hex(md, 32, hex);
    return 0;
}

/* HMAC-SHA256 on a kept context. key NULL re-uses the context's current key (OpenSSL
 * re-inits from the saved pad states instead of re-keying: 2 allocations instead of 5).
 * Returns 0 or S3C_ENOMEM (OpenSSL failed). */
static int sigv4_hmac_sha256(EVP_MAC_CTX *c, const void *key, size_t klen, const void *msg,
                             size_t mlen, unsigned char out[32])
{
    size_t outlen = 0;

    if (EVP_MAC_init(c, key, key ? klen : 0, NULL) != 1 || EVP_MAC_update(c, msg, mlen) != 1 ||
        EVP_MAC_final(c, out, &outlen, 32) != 1 || outlen != 32)
        return S3C_ENOMEM;
    return 0;
}

static bool sigv4_valid_date(const char *d)
{
    return d && strlen(d) == 16 && d[8] == 'T' && d[15] == 'Z';
}

int sigv4_string_to_sign(const struct sigv4_request *r, char *out, size_t outlen)
{
    char hex[65];
    if (!sigv4_valid_date(r->amz_date) || sigv4_canonical_hash(r, hex) < 0)
        return -1;
    int n = snprintf(out, outlen, "AWS4-HMAC-SHA256\n%s\n%.8s/%s/%s/aws4_request\n%s", r->amz_date,
                     r->amz_date, r->region, r->service, hex);
    return (n < 0 || (size_t)n >= outlen) ? -1 : n;
}

int sigv4_signing_key(const char *secret_key, const char *date8, const char *region,
                      const char *service, unsigned char key[32])
{
    char k0[256];
    unsigned char a[32], b[32];
    int n = snprintf(k0, sizeof(k0), "AWS4%s", secret_key ? secret_key : "");
    int rc = S3C_EINVAL;
    struct hash_state *st;

    if (n < 0 || (size_t)n >= sizeof(k0) || !date8 || strlen(date8) < 8 || !region || !service)
        goto out_wipe;
    st = sigv4_thread_state();
    rc = S3C_ENOMEM;
    if (!st)
        goto out_wipe;
    if (sigv4_hmac_sha256(st->derive, k0, (size_t)n, date8, 8, a) < 0 ||
        sigv4_hmac_sha256(st->derive, a, 32, region, strlen(region), b) < 0 ||
        sigv4_hmac_sha256(st->derive, b, 32, service, strlen(service), a) < 0 ||
        sigv4_hmac_sha256(st->derive, a, 32, "aws4_request", 12, key) < 0)
        goto out_wipe;
    rc = 0;
out_wipe:
    OPENSSL_cleanse(k0, sizeof(k0));
    OPENSSL_cleanse(a, sizeof(a));
    OPENSSL_cleanse(b, sizeof(b));
    return rc;
}

int sigv4_signature_with_key(const struct sigv4_request *r, const unsigned char key[32],
                             char sig[65])
{
    char sts[512];
    unsigned char mac[32];
    int n = sigv4_string_to_sign(r, sts, sizeof(sts));
    struct hash_state *st = sigv4_thread_state();

    if (n < 0)
        return S3C_EINVAL;
    if (!st)
        return S3C_ENOMEM;
    /* the transport signs every request of a day with one key: keep it in the context */
    bool same = mac_reinit_ok && st->sign_keyed && CRYPTO_memcmp(st->sign_key, key, 32) == 0;
    st->sign_keyed = false;
    if (sigv4_hmac_sha256(st->sign, same ? NULL : key, 32, sts, (size_t)n, mac) < 0)
        return S3C_ENOMEM;
    if (!same)
        memcpy(st->sign_key, key, 32);
    st->sign_keyed = true;
    sigv4_to_hex(mac, 32, sig);
    return 0;
}

void sigv4_forget_keys(void)
{
    struct hash_state *st = state_tls;

    if (!st || !st->sign_keyed)
        return;
    /* Re-keying with zeros overwrites the key material inside the HMAC context. */
    unsigned char zero[32] = {0};
    unsigned char mac[32];
    sigv4_hmac_sha256(st->sign, zero, sizeof(zero), "", 0, mac);
    OPENSSL_cleanse(mac, sizeof(mac));
    OPENSSL_cleanse(st->sign_key, sizeof(st->sign_key));
    st->sign_keyed = false;
}

int sigv4_signature(const struct sigv4_request *r, char sig[65])
{
    unsigned char key[32];
    int rc;
    if (!sigv4_valid_date(r->amz_date))
        return S3C_EINVAL;
    rc = sigv4_signing_key(r->secret_key, r->amz_date, r->region, r->service, key);
    if (rc < 0)
        return rc;
    rc = sigv4_signature_with_key(r, key, sig);
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

int sigv4_authorization(const struct sigv4_request *r, char *out, size_t outlen)
{
    char sig[65];
    size_t idx[SIGV4_MAX_HEADERS];
    int n = sigv4_sorted_headers(r, idx);
    if (n < 0 || sigv4_signature(r, sig) < 0)
        return -1;

    struct sink s = {.buf = out, .cap = outlen};
    sigv4_sink_puts(&s, "AWS4-HMAC-SHA256 Credential=");
    sigv4_sink_puts(&s, r->access_key);
    sigv4_sink_putc(&s, '/');
    sigv4_sink_put(&s, r->amz_date, 8);
    sigv4_sink_putc(&s, '/');
    sigv4_sink_puts(&s, r->region);
    sigv4_sink_putc(&s, '/');
    sigv4_sink_puts(&s, r->service);
    sigv4_sink_puts(&s, "/aws4_request, SignedHeaders=");
    sigv4_sink_signed_headers(&s, r, idx, n);
    sigv4_sink_puts(&s, ", Signature=");
    sigv4_sink_puts(&s, sig);
    return sigv4_sink_finish(&s, out, outlen);
}

void sigv4_sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    struct hash_state *st = sigv4_thread_state();

    if (!st || EVP_DigestInit_ex2(st->md, sha256_md, NULL) != 1 ||
        EVP_DigestUpdate(st->md, data, len) != 1 || EVP_DigestFinal_ex(st->md, md, &mdlen) != 1 ||
        mdlen != 32) {
        hex[0] = '\0';
        return;
    }
    sigv4_to_hex(md, 32, hex);
}

int sigv4_uri_encode(const char *s, size_t len, bool keep_slash, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (sigv4_is_unreserved(c) || (c == '/' && keep_slash)) {
            if (o + 1 >= outlen)
                return -1;
            out[o++] = (char)c;
        } else {
            if (o + 3 >= outlen)
                return -1;
            out[o++] = '%';
            out[o++] = HEXDIG[c >> 4];
            out[o++] = HEXDIG[c & 15];
        }
    }
    if (o >= outlen)
        return -1;
    out[o] = '\0';
    return (int)o;
}

/* ---- parsing an Authorization header (for verifiers) ---- */

static const char *sigv4_skip_sp(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Copies a non-empty field that fits cap with its NUL; false when it does not. */
static bool sigv4_copy_field(const char *p, size_t n, char *out, size_t cap)
{
    if (n == 0 || n >= cap)
        return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

int sigv4_parse_authorization(const char *value, struct sigv4_auth *a)
{
    static const char alg[] = "AWS4-HMAC-SHA256";
    bool have_cred = false, have_sh = false, have_sig = false;

    memset(a, 0, sizeof(*a));
    if (!value)
        return S3C_EINVAL;
    const char *p = sigv4_skip_sp(value);
    if (strncmp(p, alg, sizeof(alg) - 1) != 0 || (p[sizeof(alg) - 1] != ' '))
        return S3C_EINVAL;
    p += sizeof(alg) - 1;
    while (*p) {
        p = sigv4_skip_sp(p);
        if (*p == ',') {
            p++;
            continue;
        }
        const char *eq = strchr(p, '=');
        if (!eq)
            return S3C_EINVAL;
        const char *v = eq + 1;
        size_t vlen = strcspn(v, ", \t");
        size_t klen = (size_t)(eq - p);
        if (klen == 10 && strncmp(p, "Credential", 10) == 0) {
            /* AK/YYYYMMDD/region/service/aws4_request */
            const char *f[5];
            size_t fl[5];
            const char *q = v, *end = v + vlen;
            for (int i = 0; i < 5; i++) {
                const char *sl = i < 4 ? memchr(q, '/', (size_t)(end - q)) : end;
                if (!sl)
                    return S3C_EINVAL;
                f[i] = q;
                fl[i] = (size_t)(sl - q);
                q = sl + 1;
            }
            if (!sigv4_copy_field(f[0], fl[0], a->access_key, sizeof(a->access_key)) ||
                fl[1] != 8 || !sigv4_copy_field(f[1], fl[1], a->date8, sizeof(a->date8)) ||
                !sigv4_copy_field(f[2], fl[2], a->region, sizeof(a->region)) ||
                !sigv4_copy_field(f[3], fl[3], a->service, sizeof(a->service)) || fl[4] != 12 ||
                strncmp(f[4], "aws4_request", 12) != 0)
                return S3C_EINVAL;
            have_cred = true;
        } else if (klen == 13 && strncmp(p, "SignedHeaders", 13) == 0) {
            if (!sigv4_copy_field(v, vlen, a->signed_headers, sizeof(a->signed_headers)))
                return S3C_EINVAL;
            have_sh = true;
        } else if (klen == 9 && strncmp(p, "Signature", 9) == 0) {
            if (vlen != 64 || !sigv4_copy_field(v, vlen, a->signature, sizeof(a->signature)))
                return S3C_EINVAL;
            have_sig = true;
        } else {
            return S3C_EINVAL;
        }
        p = v + vlen;
    }
    return (have_cred && have_sh && have_sig) ? 0 : S3C_EINVAL;
}
