/* Running the programs from a test (proc.h): fork/exec with three pipes, a poll loop that
 * feeds stdin and collects stdout and stderr, and the child list on_abort() kills. */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

/* Children to kill if an assertion aborts the test, so none outlives it. */
static volatile pid_t children[64];

void track_child(pid_t pid)
{
    for (int i = 0; i < 64; i++)
        if (children[i] <= 0) {
            children[i] = pid;
            return;
        }
}

void untrack_child(pid_t pid)
{
    for (int i = 0; i < 64; i++)
        if (children[i] == pid)
            children[i] = 0;
}

void on_abort(int sig)
{
    for (int i = 0; i < 64; i++)
        if (children[i] > 0)
            kill(children[i], SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

void buf_add(struct buf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        ASSERT(b->p != NULL);
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void buf_frame(struct buf *b, const void *data, uint32_t n)
{
    unsigned char h[4] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                          (unsigned char)(n >> 24)};
    buf_add(b, h, 4);
    if (n)
        buf_add(b, data, n);
}

void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void proc_start(struct proc *p, const char *const *argv)
{
    int in[2], out[2], err[2];
    memset(p, 0, sizeof(*p));
    ASSERT(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0 && pipe2(err, O_CLOEXEC) == 0);
    p->pid = fork();
    ASSERT(p->pid >= 0);
    if (p->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    track_child(p->pid);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    p->in = in[1];
    p->out = out[0];
    p->err = err[0];
    fcntl(p->in, F_SETFL, O_NONBLOCK);
}

/* Moves bytes: writes from data (if any) to stdin, reads stdout/stderr, for at most
 * ms. Returns the bytes of data written. */
size_t proc_pump(struct proc *p, const char *data, size_t len, int ms)
{
    size_t sent = 0;
    uint64_t end = now_ms() + (uint64_t)ms;
    char tmp[65536];
    while (now_ms() < end) {
        struct pollfd pfd[3];
        int n = 0, io = -1, oo = -1, eo = -1;
        if (p->in >= 0 && sent < len) {
            io = n;
            pfd[n++] = (struct pollfd){.fd = p->in, .events = POLLOUT};
        }
        if (p->out >= 0) {
            oo = n;
            pfd[n++] = (struct pollfd){.fd = p->out, .events = POLLIN};
        }
        if (p->err >= 0) {
            eo = n;
            pfd[n++] = (struct pollfd){.fd = p->err, .events = POLLIN};
        }
        if (n == 0)
            break;
        int left = (int)(end - now_ms());
        if (poll(pfd, (nfds_t)n, left > 50 ? 50 : left) <= 0) {
            if (sent >= len && data)
                break; /* written everything and quiet: let the caller go on */
            continue;
        }
        if (io >= 0 && (pfd[io].revents & (POLLOUT | POLLERR))) {
            ssize_t w = write(p->in, data + sent, len - sent);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN) {
                close(p->in);
                p->in = -1;
            }
        }
        if (oo >= 0 && (pfd[oo].revents & (POLLIN | POLLHUP))) {
            ssize_t r = read(p->out, tmp, sizeof(tmp));
            if (r > 0)
                buf_add(&p->o, tmp, (size_t)r);
            else {
                close(p->out);
                p->out = -1;
            }
        }
        if (eo >= 0 && (pfd[eo].revents & (POLLIN | POLLHUP))) {
            ssize_t r = read(p->err, tmp, sizeof(tmp));
            if (r > 0)
                buf_add(&p->e, tmp, (size_t)r);
            else {
                close(p->err);
                p->err = -1;
            }
        }
    }
    return sent;
}

void proc_close_stdin(struct proc *p)
{
    if (p->in >= 0)
        close(p->in);
    p->in = -1;
}

/* Collects output until the child exits or ms passes (then SIGKILL and fail). Returns
 * the exit code; stdout and stderr stay in p->o, p->e. */
int proc_wait(struct proc *p, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    int status = 0;
    while (p->out >= 0 || p->err >= 0) {
        proc_pump(p, NULL, 0, 100);
        if (now_ms() > end)
            break;
    }
    for (;;) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid)
            break;
        if (now_ms() > end) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            fprintf(stderr, "process did not exit in %d ms; stderr:\n%s\n", ms,
                    p->e.p ? p->e.p : "");
            TEST_FAIL_("timeout");
        }
        usleep(10000);
    }
    untrack_child(p->pid); /* reaped: its pid may be reused */
    proc_close_stdin(p);
    if (p->out >= 0)
        close(p->out);
    if (p->err >= 0)
        close(p->err);
    p->out = p->err = -1;
    if (!p->o.p)
        buf_add(&p->o, "", 0);
    if (!p->e.p)
        buf_add(&p->e, "", 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void proc_free(struct proc *p)
{
    buf_free(&p->o);
    buf_free(&p->e);
}

/* Runs argv to completion with the given stdin. */
int run(const char *const *argv, const struct buf *in, struct proc *p, int ms)
{
    proc_start(p, argv);
    if (in && in->len)
        proc_pump(p, in->p, in->len, ms);
    proc_close_stdin(p);
    int code = proc_wait(p, ms);
    fprintf(stderr, "   $ %s %s ... -> exit %d\n", argv[0], argv[1] ? argv[1] : "", code);
    return code;
}

void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    fputs(text, f);
    ASSERT(fclose(f) == 0);
}

void proc_test_init(const char *tag, char *bin, size_t binlen, char *tmpdir, size_t tmplen)
{
    const char *bindir = getenv("S3C_BIN_DIR");
    if (!bindir)
        TEST_FAIL_("S3C_BIN_DIR is not set (run through ctest)");
    snprintf(bin, binlen, "%s/s3commit", bindir);
    snprintf(tmpdir, tmplen, "/tmp/s3c-test-%s-XXXXXX", tag);
    ASSERT(mkdtemp(tmpdir) != NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGABRT, on_abort);
}

void proc_test_done(const char *tmpdir)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}
