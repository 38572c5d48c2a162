/* A stage in a test: opened from a config (which it frees) or the test fails with the open's
 * words; closed, failing the test if the close reports a lost seq. */
#ifndef S3C_TEST_STAGE_OPEN_H
#define S3C_TEST_STAGE_OPEN_H

#include "s3commit.h"
#include "test.h"

static inline s3c_stage *test_stage_open(s3c_config *cfg)
{
    s3c_stage *st;
    char err[512];
    if (s3c_stage_open(cfg, &st, err, sizeof(err)) != 0)
        TEST_FAIL_("stage open: %s", err);
    s3c_config_free(cfg);
    return st;
}

static inline void test_stage_close(s3c_stage *st)
{
    struct s3c_close_report rep;
    ASSERT_EQ(s3c_stage_close(st, &rep), 0);
    ASSERT_UEQ(rep.lost_first_seq, 0);
}

#endif
