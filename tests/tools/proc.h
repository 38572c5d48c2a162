/* Running the programs from a test: a child with pipes on stdin, stdout and stderr, fed
 * and read without blocking, and a growable byte buffer for what goes in and comes out.
 * Every child started here is tracked so that a failed assertion (abort) kills it. */
#ifndef S3C_TEST_PROC_H
#define S3C_TEST_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Remembers pid so that on_abort() kills it; on_abort is the SIGABRT handler to install. */
void track_child(pid_t pid);
void untrack_child(pid_t pid); /* reaped: forget it */
void on_abort(int sig);

struct buf {
    char *p; /* NUL-terminated after the len bytes; owned, freed by buf_free */
    size_t len, cap;
};

void buf_add(struct buf *b, const void *data, size_t n);
void buf_frame(struct buf *b, const void *data, uint32_t n); /* u32 LE length, then bytes */
void buf_free(struct buf *b);

uint64_t now_ms(void); /* CLOCK_MONOTONIC */

struct proc {
    pid_t pid;
    int in, out, err; /* our ends of the child's stdin, stdout, stderr (-1 = closed) */
    struct buf o, e;  /* what it wrote on stdout and stderr so far */
};

/* Forks and execs argv[0] (a path) with pipes on 0, 1 and 2; our stdin end is
 * non-blocking. */
void proc_start(struct proc *p, const char *const *argv);

/* Moves bytes: writes from data (if any) to stdin, reads stdout/stderr, for at most
 * ms. Returns the bytes of data written. */
size_t proc_pump(struct proc *p, const char *data, size_t len, int ms);

void proc_close_stdin(struct proc *p);

/* Collects output until the child exits or ms passes (then SIGKILL and fail). Returns
 * the exit code (128 + signal when killed); stdout and stderr stay in p->o, p->e. */
int proc_wait(struct proc *p, int ms);

void proc_free(struct proc *p);

/* Runs argv to completion with the given stdin. */
int run(const char *const *argv, const struct buf *in, struct proc *p, int ms);

void write_file(const char *path, const char *text);

/* The start of a test of the programs: $S3C_BIN_DIR/s3commit into bin (the test fails when
 * ctest did not set S3C_BIN_DIR), a fresh /tmp/s3c-test-<tag>-XXXXXX into tmpdir, SIGPIPE
 * ignored and on_abort installed. proc_test_done removes tmpdir and what it holds. */
void proc_test_init(const char *tag, char *bin, size_t binlen, char *tmpdir, size_t tmplen);
void proc_test_done(const char *tmpdir);

#endif
