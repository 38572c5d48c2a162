/* Allocation-failure injection for tests/alloc, SQLite's way: arm "fail the Nth
 * allocation" (one-shot, or that one and every one after), run a call, see whether a
 * failure was injected. Counts our code's malloc & co (wrapped at link time with
 * -Wl,--wrap, see CMakeLists.txt), cJSON's (cJSON_InitHooks), libcurl's
 * (curl_global_init_mem) and OpenSSL's (CRYPTO_set_mem_functions), and keeps a live
 * block count per family so a test can check a failed call freed what it took. It can
 * fail our calls to pthread_create, epoll, eventfd, timerfd and socket the same way. */
#ifndef S3C_TEST_ALLOC_FAIL_H
#define S3C_TEST_ALLOC_FAIL_H

#include <stdbool.h>

enum allocfail_family {
    AF_OURS,    /* malloc & co called from our code */
    AF_CJSON,   /* cJSON's hooks */
    AF_CURL,    /* libcurl's allocators */
    AF_OPENSSL, /* OpenSSL's allocators */
    AF_SYS,     /* pthread_create, epoll_create1, epoll_ctl, eventfd, timerfd_create, socket */
    AF_NFAMILIES
};

/* What an arm counts and fails: a bit per family. */
#define AF_KIND(f) (1u << (f))
#define AF_KIND_ALLOC                                                                              \
    (AF_KIND(AF_OURS) | AF_KIND(AF_CJSON) | AF_KIND(AF_CURL) | AF_KIND(AF_OPENSSL))
#define AF_KIND_SYS AF_KIND(AF_SYS) /* the OS calls, called from our code */

struct allocfail_live {
    long n[AF_NFAMILIES]; /* blocks allocated and not yet freed, per family */
};

/* Installs the cJSON, libcurl and OpenSSL hooks. Must run first in main(), before
 * OpenSSL allocates anything and before libcurl is initialised; aborts if too late. */
void allocfail_install(void);

/* From now on the nth counted call of kinds (1-based) fails; persistent: every one after
 * it fails too. all_threads false counts only the calling thread's calls (so open's
 * count does not depend on what the threads it starts are doing). */
void allocfail_arm(long nth, bool persistent, bool all_threads, unsigned kinds);

/* Stops counting. Returns how many allocations were counted since arm. */
long allocfail_disarm(void);

/* How many allocations of family f were counted since the last arm. */
long allocfail_seen(enum allocfail_family f);

/* How many failures were injected since the last arm, and in which families (AF_KIND). */
long allocfail_hits(void);
unsigned allocfail_hit_kinds(void);

struct allocfail_live allocfail_live_now(void);

/* Names of the families, for messages. */
const char *allocfail_family_name(enum allocfail_family f);

#endif
