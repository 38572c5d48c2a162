/* Small things both programs need: the stderr logfmt sink, parsing numbers and sizes from
 * the command line, loading a config, and starting s3commit-mock beside the program.
 * Program code only: it prints to stderr, but never exits on the caller's behalf. */
#ifndef S3C_TOOL_H
#define S3C_TOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mockproc.h"
#include "s3commit.h"

/* Exit codes shared by the programs. */
enum {
    TOOL_EXIT_OK = 0,
    TOOL_EXIT_FAIL = 1,    /* the work failed: not everything durable, a check failed */
    TOOL_EXIT_USAGE = 2,   /* bad command line or config */
    TOOL_EXIT_FENCED = 3,  /* run: a newer writer took the log over (do not restart) */
    TOOL_EXIT_REFUSED = 4, /* run: the log or the spool refuses the start until a person acts
                              (a spool the log disagrees with, a damaged object or manifest,
                              another format version): a restart would only refuse again */
};

/* Installs s3c_log_stderr at level (logfmt lines on stderr). */
void tool_log_setup(enum s3c_log_level level);

/* "s3commit: <message>\n" on stderr (prog is set once by tool_set_name). */
void tool_set_name(const char *prog);
void tool_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parses a non-negative integer with an optional binary suffix (k/K/KiB = 1024, m/M/MiB,
 * g/G/GiB). Returns false on anything else, including overflow. */
bool tool_parse_size(const char *s, uint64_t *out);
/* "N" or "MIN-MAX" sizes; MIN <= MAX. */
bool tool_parse_size_range(const char *s, uint64_t *min, uint64_t *max);
/* A positive decimal (seconds, rates); false on anything else. */
bool tool_parse_double(const char *s, double *out);

/* Loads a config file and prints the loader's message on failure. Returns 0 or
 * S3C_ECONFIG. */
int tool_config_load(const char *path, s3c_config **out);

/* Starts s3commit-mock on 127.0.0.1:0 with the extra args (NULL-terminated). The binary
 * is $S3C_MOCK_BIN, else s3commit-mock beside this program's own executable. Returns 0 or
 * -errno with a message printed. Stop with mockproc_stop(). */
int tool_mock_start(struct mockproc *m, const char *const *args);

#endif
