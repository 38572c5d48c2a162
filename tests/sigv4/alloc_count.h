/* Allocation counters for tests/sigv4: OpenSSL's allocator hooks (every build) and, where
 * no sanitizer owns malloc, the libc allocator itself. Counting only; never changes what
 * an allocation returns. */
#ifndef S3C_TEST_ALLOC_COUNT_H
#define S3C_TEST_ALLOC_COUNT_H

#include <stdbool.h>

struct alloc_counts {
    long openssl; /* CRYPTO_malloc/zalloc/realloc calls (OPENSSL_malloc & co) */
    long libc;    /* malloc/calloc/realloc/memalign family calls; 0 when !alloc_libc_counted() */
    long openssl_live; /* OpenSSL blocks allocated and not yet freed (leak checks) */
};

/* Installs the OpenSSL hooks; must run before OpenSSL allocates anything (first thing in
 * main). Returns false when OpenSSL refused because it had already allocated. */
bool alloc_count_init(void);

/* True when malloc & co are interposed (no ASan/TSan in this build). */
bool alloc_libc_counted(void);

struct alloc_counts alloc_counts_now(void);

#endif
