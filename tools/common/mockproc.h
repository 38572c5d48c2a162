/* Starts s3commit-mock on 127.0.0.1 with an ephemeral port and stops it again by pid: for
 * the tests, and for a program's --mock. The binary comes from $S3C_MOCK_BIN (set by CTest
 * and by tool.c), else from beside the running executable. */
#ifndef S3C_TEST_MOCKPROC_H
#define S3C_TEST_MOCKPROC_H

#include <sys/types.h>

struct mockproc {
    pid_t pid;         /* the mock's pid; 0 when not running */
    int port;          /* the port it listens on */
    char endpoint[64]; /* "http://127.0.0.1:<port>" */
};

/* Starts the mock with the given extra arguments (NULL-terminated; "--listen" and
 * "--bucket commits" are added unless args name them). Returns 0 or -errno; on failure
 * prints why to stderr. */
int mockproc_start(struct mockproc *m, const char *const *args);

/* Sends SIGTERM, waits up to 5 s, then SIGKILL. Returns the exit status (as waitpid). */
int mockproc_stop(struct mockproc *m);

/* Sends SIGKILL and reaps (a crash, for restart tests). */
void mockproc_kill(struct mockproc *m);

/* One plain-HTTP request to the mock on a fresh connection, for control endpoints
 * (/_mock/faults, /_mock/stats) and raw-protocol tests. Writes the whole answer
 * (status line, headers, body) into out, NUL-terminated. Returns the HTTP status or
 * -errno. */
int mockproc_http(const struct mockproc *m, const char *method, const char *path, const char *body,
                  char *out, size_t outlen);

#endif
