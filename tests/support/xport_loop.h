/* Tests and benchmarks that drive the transport alone own its loop, as the stage does:
 * these make the pair, poll it, and free both. */
#ifndef S3C_TEST_XPORT_LOOP_H
#define S3C_TEST_XPORT_LOOP_H

#include <stdio.h>

#include "loop/loop.h"
#include "transport/transport.h"

static inline struct xport *test_xport_new(const struct s3c_config *c, char *err, size_t n)
{
    struct loop *l = loop_new();
    if (!l) {
        snprintf(err, n, "loop_new failed");
        return NULL;
    }
    struct xport *x = xport_new(c, l, err, n);
    if (!x)
        loop_free(l);
    return x;
}

static inline void test_xport_free(struct xport *x)
{
    struct loop *l = xport_loop(x);
    xport_free(x);
    loop_free(l);
}

static inline int test_xport_poll(struct xport *x, int timeout_ms)
{
    return loop_run_once(xport_loop(x), timeout_ms);
}

#endif
