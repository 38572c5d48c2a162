/* Allocation counters for tests/sigv4 (see alloc_count.h). The libc part interposes malloc
 * & co in this test executable and forwards to glibc's __libc_* entry points; it is left
 * out under ASan/TSan, whose runtimes own malloc, and must never alter an allocation. */
#include "alloc_count.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ALLOC_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ALLOC_SANITIZED 1
#endif
#endif

static long n_openssl, n_libc, n_live;

static void count(long *n)
{
    __atomic_fetch_add(n, 1, __ATOMIC_RELAXED);
}

static void *ossl_malloc(size_t n, const char *file, int line)
{
    (void)file, (void)line;
    count(&n_openssl);
    void *q = malloc(n);
    if (q)
        count(&n_live);
    return q;
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file, (void)line;
    count(&n_openssl);
    void *q = realloc(p, n);
    if (!p && q)
        count(&n_live);
    else if (p && n == 0)
        __atomic_fetch_sub(&n_live, 1, __ATOMIC_RELAXED); /* realloc(p, 0) freed p */
    return q;
}

static void ossl_free(void *p, const char *file, int line)
{
    (void)file, (void)line;
    if (p)
        __atomic_fetch_sub(&n_live, 1, __ATOMIC_RELAXED);
    free(p);
}

bool alloc_count_init(void)
{
    return CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free) == 1;
}

struct alloc_counts alloc_counts_now(void)
{
    struct alloc_counts c = {
        .openssl = __atomic_load_n(&n_openssl, __ATOMIC_RELAXED),
        .libc = __atomic_load_n(&n_libc, __ATOMIC_RELAXED),
        .openssl_live = __atomic_load_n(&n_live, __ATOMIC_RELAXED),
    };
    return c;
}

#ifdef ALLOC_SANITIZED

bool alloc_libc_counted(void)
{
    return false;
}

#else

bool alloc_libc_counted(void)
{
    return true;
}

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t k, size_t n);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);
extern void __libc_free(void *p);

void *malloc(size_t n)
{
    count(&n_libc);
    return __libc_malloc(n);
}

void *calloc(size_t k, size_t n)
{
    count(&n_libc);
    return __libc_calloc(k, n);
}

void *realloc(void *p, size_t n)
{
    count(&n_libc);
    return __libc_realloc(p, n);
}

void free(void *p)
{
    __libc_free(p);
}

void *aligned_alloc(size_t align, size_t n)
{
    count(&n_libc);
    return __libc_memalign(align, n);
}

void *memalign(size_t align, size_t n)
{
    count(&n_libc);
    return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL;
    count(&n_libc);
    void *p = __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

#endif
