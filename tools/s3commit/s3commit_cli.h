/* The subcommands of the s3commit program. Each returns the process exit code (see
 * TOOL_EXIT_* in tool.h); none of them calls exit(). */
#ifndef S3C_S3COMMIT_CLI_H
#define S3C_S3COMMIT_CLI_H

#include <stdbool.h>
#include <stdint.h>

/* input: "stdin" or "unix:PATH". */
int cmd_run(const char *config_path, const char *input);
int cmd_check_config(const char *config_path);
/* expect_commits < 0: no expectation. */
int cmd_verify(const char *config_path, int64_t expect_commits);

struct cat_args {
    uint64_t from_seq, to_seq; /* 0: from the start / to the end */
    bool follow;               /* wait for more at the end */
    bool control;              /* control records as JSON lines on stderr */
    int poll_interval_ms;      /* follow: 0 = the reader's default */
};
int cmd_cat(const char *config_path, const struct cat_args *a);

#endif
