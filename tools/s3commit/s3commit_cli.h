/* The subcommands of the s3commit program. Each returns the process exit code (see
 * TOOL_EXIT_* in tool.h); none of them calls exit(). */
#ifndef S3C_S3COMMIT_CLI_H
#define S3C_S3COMMIT_CLI_H

#include <stdint.h>

/* input: "stdin" or "unix:PATH". */
int cmd_run(const char *config_path, const char *input);
int cmd_check_config(const char *config_path);
/* expect_commits < 0: no expectation. */
int cmd_verify(const char *config_path, int64_t expect_commits);

#endif
