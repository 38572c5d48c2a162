/* Runs s3commit-mock as a child process on an ephemeral 127.0.0.1 port (see mockproc.h).
 * It never leaves a child behind: every start is paired with a stop by pid. */
#include "mockproc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int mockproc_has_arg(const char *const *args, const char *name)
{
    for (; args && *args; args++)
        if (strcmp(*args, name) == 0)
            return 1;
    return 0;
}

int mockproc_start(struct mockproc *m, const char *const *args)
{
    const char *bin = getenv("S3C_MOCK_BIN");
    const char *argv[64];
    char found[4096];
    int n = 0, pfd[2];

    memset(m, 0, sizeof(*m));
    if (!bin) {
        /* Outside ctest (benchmarks): the mock lives in build/bin, beside a benchmark or
         * one level over build/tests. */
        ssize_t len = readlink("/proc/self/exe", found, sizeof(found) - 32);
        if (len > 0) {
            found[len] = '\0';
            char *slash = strrchr(found, '/');
            if (slash) {
                strcpy(slash, "/s3commit-mock");
                if (access(found, X_OK) != 0)
                    strcpy(slash, "/../bin/s3commit-mock");
                if (access(found, X_OK) == 0)
                    bin = found;
            }
        }
    }
    if (!bin) {
        fprintf(stderr, "mockproc: s3commit-mock not found: set S3C_MOCK_BIN or build it "
                        "(cmake --build build --target s3commit-mock)\n");
        return -ENOENT;
    }
    argv[n++] = bin;
    if (!mockproc_has_arg(args, "--listen")) {
        argv[n++] = "--listen";
        argv[n++] = "127.0.0.1:0";
    }
    if (!mockproc_has_arg(args, "--bucket")) {
        argv[n++] = "--bucket";
        argv[n++] = "commits";
    }
    for (; args && *args && n < 62; args++)
        argv[n++] = *args;
    argv[n] = NULL;

    if (pipe(pfd) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        return -e;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test that aborts leaves no mock behind */
        dup2(pfd[1], STDOUT_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        execv(bin, (char *const *)argv);
        fprintf(stderr, "mockproc: exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(pfd[1]);

    /* The first stdout line is "listening on HOST:PORT". */
    char line[256];
    size_t len = 0;
    while (len < sizeof(line) - 1) {
        ssize_t r = read(pfd[0], line + len, 1);
        if (r <= 0)
            break;
        if (line[len] == '\n')
            break;
        len++;
    }
    line[len] = '\0';
    close(pfd[0]);
    const char *colon = strrchr(line, ':');
    if (strncmp(line, "listening on ", 13) != 0 || !colon) {
        fprintf(stderr, "mockproc: expected 'listening on HOST:PORT', got '%s'\n", line);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -EPROTO;
    }
    m->pid = pid;
    m->port = atoi(colon + 1);
    snprintf(m->endpoint, sizeof(m->endpoint), "http://127.0.0.1:%d", m->port);
    return 0;
}

int mockproc_stop(struct mockproc *m)
{
    int status = 0;
    if (m->pid <= 0)
        return 0;
    kill(m->pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        pid_t r = waitpid(m->pid, &status, WNOHANG);
        if (r == m->pid) {
            m->pid = 0;
            return status;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(m->pid, SIGKILL);
    waitpid(m->pid, &status, 0);
    m->pid = 0;
    return status;
}

void mockproc_kill(struct mockproc *m)
{
    if (m->pid <= 0)
        return;
    kill(m->pid, SIGKILL);
    waitpid(m->pid, NULL, 0);
    m->pid = 0;
}

int mockproc_http(const struct mockproc *m, const char *method, const char *path, const char *body,
                  char *out, size_t outlen)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)m->port)};
    char req[1024];
    size_t blen = body ? strlen(body) : 0;
    int fd, n;

    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    n = snprintf(req, sizeof(req),
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n",
                 method, path, m->port, blen);
    if (write(fd, req, (size_t)n) != n || (blen && write(fd, body, blen) != (ssize_t)blen)) {
        int e = errno;
        close(fd);
        return -e;
    }
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, out + got, outlen - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == outlen - 1)
            break;
    }
    out[got] = '\0';
    close(fd);
    int status = 0;
    if (sscanf(out, "HTTP/1.%*d %d", &status) != 1)
        return -EPROTO;
    return status;
}
