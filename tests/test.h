/* Minimal test assertions in the style of libuv's test/task.h: a failed check prints
 * both values, the expression and the place, then aborts the test process. */
#ifndef S3C_TEST_H
#define S3C_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TEST_FAIL_(...)                                                                            \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                            \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        abort();                                                                                   \
    } while (0)

#define ASSERT(e)                                                                                  \
    do {                                                                                           \
        if (!(e))                                                                                  \
            TEST_FAIL_("assertion failed: %s", #e);                                                \
    } while (0)

#define ASSERT_CMP_(a, op, b, T, fmt)                                                              \
    do {                                                                                           \
        T a_ = (T)(a), b_ = (T)(b);                                                                \
        if (!(a_ op b_))                                                                           \
            TEST_FAIL_("%s %s %s: %" fmt " vs %" fmt, #a, #op, #b, a_, b_);                        \
    } while (0)

#define ASSERT_EQ(a, b) ASSERT_CMP_(a, ==, b, int64_t, PRId64)
#define ASSERT_NE(a, b) ASSERT_CMP_(a, !=, b, int64_t, PRId64)
#define ASSERT_LT(a, b) ASSERT_CMP_(a, <, b, int64_t, PRId64)
#define ASSERT_LE(a, b) ASSERT_CMP_(a, <=, b, int64_t, PRId64)
#define ASSERT_GT(a, b) ASSERT_CMP_(a, >, b, int64_t, PRId64)
#define ASSERT_GE(a, b) ASSERT_CMP_(a, >=, b, int64_t, PRId64)
#define ASSERT_UEQ(a, b) ASSERT_CMP_(a, ==, b, uint64_t, PRIu64)

#define ASSERT_STR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            TEST_FAIL_("%s == %s: \"%s\" vs \"%s\"", #a, #b, a_ ? a_ : "(null)",                   \
                       b_ ? b_ : "(null)");                                                        \
    } while (0)

#define ASSERT_MEM_EQ(a, b, n)                                                                     \
    do {                                                                                           \
        if (memcmp((a), (b), (n)) != 0)                                                            \
            TEST_FAIL_("%s and %s differ in their first %zu bytes", #a, #b, (size_t)(n));          \
    } while (0)

static inline uint64_t test_now_ms_(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ASSERT_WITHIN(ms, cond): for a state another thread or process reaches in its own time.
 * Looks at cond every millisecond and goes on as soon as it holds; fails if it still does
 * not after ms (a bound for a stuck test, not a guess at the machine's speed). */
#define ASSERT_WITHIN(ms, cond)                                                                    \
    do {                                                                                           \
        uint64_t end_ = test_now_ms_() + (uint64_t)(ms);                                           \
        while (!(cond)) {                                                                          \
            if (test_now_ms_() >= end_)                                                            \
                TEST_FAIL_("not within %d ms: %s", (int)(ms), #cond);                              \
            nanosleep(&(struct timespec){0, 1000000L}, NULL);                                      \
        }                                                                                          \
    } while (0)

/* xorshift64: test data from a fixed seed, the same on every run (*state must not be 0). */
static inline uint64_t test_xorshift64(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/* RUN(fn): run one case and say so; a test file's main() is a list of RUN lines.
 * S3C_TEST_ONLY=name runs that case alone (by hand, when working on it). */
static inline int test_skipped_(const char *name)
{
    const char *only = getenv("S3C_TEST_ONLY");
    return only && strcmp(only, name) != 0;
}

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        if (test_skipped_(#fn))                                                                    \
            break;                                                                                 \
        fprintf(stderr, "-- %s\n", #fn);                                                           \
        fn();                                                                                      \
    } while (0)

#endif
