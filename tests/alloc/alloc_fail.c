/* The allocation-failure injector (alloc_fail.h). The __wrap_* functions replace malloc &
 * co for every object linked into the test with -Wl,--wrap (our library's objects come
 * from the static archive, so every allocation of ours is seen); the dependencies are
 * reached through their own allocator hooks. Nothing here may allocate through a wrapped
 * name: it calls the __real_* functions. */
#include "alloc_fail.h"

#include <errno.h>
#include <execinfo.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/crypto.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
int __real_posix_memalign(void **out, size_t align, size_t n);
int __real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __real_epoll_create1(int flags);
int __real_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int __real_eventfd(unsigned int initval, int flags);
int __real_timerfd_create(int clockid, int flags);
int __real_socket(int domain, int type, int protocol);

static atomic_bool af_armed;
static atomic_bool af_all_threads;
static atomic_bool af_persistent;
static atomic_uint af_kinds; /* AF_KIND_*: what is counted and failed */
static atomic_long af_target, af_seen, af_hits;
static atomic_uint af_hit_kinds; /* AF_KIND_* of the families a failure was injected in */
static pthread_t af_thread;
static bool af_trace;
static atomic_long af_live[AF_NFAMILIES];
static atomic_long af_seen_by[AF_NFAMILIES]; /* attempts counted since arm, per family */

/* Counts one allocation attempt; true when it must fail. */
static bool af_fail_now(enum allocfail_family f)
{
    if (!atomic_load(&af_armed) || !(atomic_load(&af_kinds) & AF_KIND(f)))
        return false;
    if (!atomic_load(&af_all_threads) && !pthread_equal(pthread_self(), af_thread))
        return false;
    atomic_fetch_add(&af_seen_by[f], 1);
    long k = atomic_fetch_add(&af_seen, 1) + 1, t = atomic_load(&af_target);
    if (k == t || (k > t && atomic_load(&af_persistent))) {
        atomic_fetch_add(&af_hits, 1);
        atomic_fetch_or(&af_hit_kinds, AF_KIND(f));
        if (af_trace) { /* AF_TRACE=1: where each injected failure landed */
            void *pcs[32];
            fprintf(stderr, "alloc_fail: %s %ld fails here:\n", f == AF_SYS ? "call" : "allocation",
                    k);
            backtrace_symbols_fd(pcs, backtrace(pcs, 32), 2);
        }
        errno = ENOMEM;
        return true;
    }
    return false;
}

static void *af_took(enum allocfail_family f, void *p)
{
    if (p)
        atomic_fetch_add(&af_live[f], 1);
    return p;
}

static void af_gave(enum allocfail_family f, void *p)
{
    if (p)
        atomic_fetch_sub(&af_live[f], 1);
}

/* realloc's effect on the live count: NULL in is a new block, size 0 frees (glibc). */
static void *af_realloc(enum allocfail_family f, void *p, size_t n)
{
    if (af_fail_now(f))
        return NULL;
    void *q = __real_realloc(p, n);
    if (!p && q)
        atomic_fetch_add(&af_live[f], 1);
    else if (p && n == 0 && !q)
        atomic_fetch_sub(&af_live[f], 1);
    return q;
}

/* ---- our code: -Wl,--wrap=... ------------------------------------------------------ */

void *__wrap_malloc(size_t n)
{
    return af_fail_now(AF_OURS) ? NULL : af_took(AF_OURS, __real_malloc(n));
}

void *__wrap_calloc(size_t k, size_t n)
{
    return af_fail_now(AF_OURS) ? NULL : af_took(AF_OURS, __real_calloc(k, n));
}

void *__wrap_realloc(void *p, size_t n)
{
    return af_realloc(AF_OURS, p, n);
}

void __wrap_free(void *p)
{
    af_gave(AF_OURS, p);
    __real_free(p);
}

char *__wrap_strdup(const char *s)
{
    return af_fail_now(AF_OURS) ? NULL : af_took(AF_OURS, __real_strdup(s));
}

char *__wrap_strndup(const char *s, size_t n)
{
    return af_fail_now(AF_OURS) ? NULL : af_took(AF_OURS, __real_strndup(s, n));
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    return af_fail_now(AF_OURS) ? NULL : af_took(AF_OURS, __real_aligned_alloc(align, n));
}

int __wrap_posix_memalign(void **out, size_t align, size_t n)
{
    if (af_fail_now(AF_OURS))
        return ENOMEM;
    int rc = __real_posix_memalign(out, align, n);
    if (rc == 0)
        af_took(AF_OURS, *out);
    return rc;
}

/* ---- cJSON -------------------------------------------------------------------------- */

static void *af_cjson_malloc(size_t n)
{
    return af_fail_now(AF_CJSON) ? NULL : af_took(AF_CJSON, __real_malloc(n));
}

static void af_cjson_free(void *p)
{
    af_gave(AF_CJSON, p);
    __real_free(p);
}

/* ---- libcurl ------------------------------------------------------------------------ */

static void *af_curl_malloc(size_t n)
{
    return af_fail_now(AF_CURL) ? NULL : af_took(AF_CURL, __real_malloc(n));
}

static void *af_curl_calloc(size_t k, size_t n)
{
    return af_fail_now(AF_CURL) ? NULL : af_took(AF_CURL, __real_calloc(k, n));
}

static void *af_curl_realloc(void *p, size_t n)
{
    return af_realloc(AF_CURL, p, n);
}

static char *af_curl_strdup(const char *s)
{
    return af_fail_now(AF_CURL) ? NULL : af_took(AF_CURL, __real_strdup(s));
}

static void af_curl_free(void *p)
{
    af_gave(AF_CURL, p);
    __real_free(p);
}

/* ---- OpenSSL ------------------------------------------------------------------------ */

static void *af_ossl_malloc(size_t n, const char *file, int line)
{
    (void)file, (void)line;
    return af_fail_now(AF_OPENSSL) ? NULL : af_took(AF_OPENSSL, __real_malloc(n));
}

static void *af_ossl_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file, (void)line;
    return af_realloc(AF_OPENSSL, p, n);
}

static void af_ossl_free(void *p, const char *file, int line)
{
    (void)file, (void)line;
    af_gave(AF_OPENSSL, p);
    __real_free(p);
}

/* ---- the OS: threads and descriptors -------------------------------------------------
 * Failed as they fail when a process runs out of threads or descriptors. A DEL on epoll
 * is never failed: it cannot fail that way, and the callers rightly ignore its result. */

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    return af_fail_now(AF_SYS) ? EAGAIN : __real_pthread_create(t, a, fn, arg);
}

int __wrap_epoll_create1(int flags)
{
    return af_fail_now(AF_SYS) ? (errno = EMFILE, -1) : __real_epoll_create1(flags);
}

int __wrap_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    if (op != EPOLL_CTL_DEL && af_fail_now(AF_SYS))
        return errno = ENOMEM, -1;
    return __real_epoll_ctl(epfd, op, fd, ev);
}

int __wrap_eventfd(unsigned int initval, int flags)
{
    return af_fail_now(AF_SYS) ? (errno = EMFILE, -1) : __real_eventfd(initval, flags);
}

int __wrap_timerfd_create(int clockid, int flags)
{
    return af_fail_now(AF_SYS) ? (errno = EMFILE, -1) : __real_timerfd_create(clockid, flags);
}

int __wrap_socket(int domain, int type, int protocol)
{
    return af_fail_now(AF_SYS) ? (errno = EMFILE, -1) : __real_socket(domain, type, protocol);
}

/* ---- control ------------------------------------------------------------------------ */

void allocfail_install(void)
{
    af_trace = getenv("AF_TRACE") != NULL;
    cJSON_Hooks h = {.malloc_fn = af_cjson_malloc, .free_fn = af_cjson_free};

    if (CRYPTO_set_mem_functions(af_ossl_malloc, af_ossl_realloc, af_ossl_free) != 1) {
        fprintf(stderr, "alloc_fail: OpenSSL allocated before allocfail_install()\n");
        abort();
    }
    cJSON_InitHooks(&h);
    /* The library's own curl_global_init (once, in xport_new) then only counts up. */
    if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, af_curl_malloc, af_curl_free, af_curl_realloc,
                             af_curl_strdup, af_curl_calloc) != CURLE_OK) {
        fprintf(stderr, "alloc_fail: curl_global_init_mem failed\n");
        abort();
    }
}

void allocfail_arm(long nth, bool persistent, bool all_threads, unsigned kinds)
{
    atomic_store(&af_armed, false);
    atomic_store(&af_kinds, kinds);
    af_thread = pthread_self();
    atomic_store(&af_target, nth);
    atomic_store(&af_seen, 0);
    atomic_store(&af_hits, 0);
    atomic_store(&af_hit_kinds, 0);
    for (int f = 0; f < AF_NFAMILIES; f++)
        atomic_store(&af_seen_by[f], 0);
    atomic_store(&af_persistent, persistent);
    atomic_store(&af_all_threads, all_threads);
    atomic_store(&af_armed, true);
}

long allocfail_disarm(void)
{
    atomic_store(&af_armed, false);
    return atomic_load(&af_seen);
}

long allocfail_seen(enum allocfail_family f)
{
    return atomic_load(&af_seen_by[f]);
}

long allocfail_hits(void)
{
    return atomic_load(&af_hits);
}

unsigned allocfail_hit_kinds(void)
{
    return atomic_load(&af_hit_kinds);
}

struct allocfail_live allocfail_live_now(void)
{
    struct allocfail_live l;
    for (int f = 0; f < AF_NFAMILIES; f++)
        l.n[f] = atomic_load(&af_live[f]);
    return l;
}

const char *allocfail_family_name(enum allocfail_family f)
{
    static const char *const names[] = {"ours", "cJSON", "libcurl", "OpenSSL", "system"};
    return f < AF_NFAMILIES ? names[f] : "?";
}
