/* `s3commit run` under systemd's Type=notify, without systemd: the test binds the
 * datagram socket systemd would, sets $NOTIFY_SOCKET, and checks that READY=1 arrives
 * only once the stage takes commits (for --input unix:, the socket already accepts and
 * serves a client), that SIGTERM (or the end of stdin) sends STOPPING=1, and that the run
 * still drains and exits 0. Both a path and an abstract ('@') socket name are used. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "tool.h"

static char tmpdir[256], bin_s3commit[512];
static pid_t child;

static void on_abort(int sig)
{
    if (child > 0)
        kill(child, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Binds the notify socket: a path, or "@name" in the abstract namespace. */
static int notify_bind(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    ASSERT(n < sizeof(sa.sun_path));
    memcpy(sa.sun_path, name, n);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    else
        len++;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT(fd >= 0);
    ASSERT(bind(fd, (struct sockaddr *)&sa, len) == 0);
    return fd;
}

/* Waits up to ms for one datagram; returns it (NUL-terminated) or "" on timeout. */
static const char *notify_recv(int fd, int ms)
{
    static char msg[1024];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    msg[0] = '\0';
    if (poll(&p, 1, ms) == 1) {
        ssize_t n = recv(fd, msg, sizeof(msg) - 1, 0);
        msg[n > 0 ? n : 0] = '\0';
    }
    return msg;
}

/* Starts s3commit run with NOTIFY_SOCKET set; stdin from a pipe whose write end is
 * returned in *in (or -1), stdout and stderr to the test's stderr. */
static pid_t start_run(const char *config, const char *input, const char *notify, int *in)
{
    int p[2];
    ASSERT(pipe2(p, O_CLOEXEC) == 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        dup2(p[0], 0);
        dup2(2, 1);
        setenv("NOTIFY_SOCKET", notify, 1);
        execl(bin_s3commit, bin_s3commit, "run", "--config", config, "--input", input,
              (char *)NULL);
        _exit(127);
    }
    close(p[0]);
    *in = p[1];
    child = pid;
    return pid;
}

static int wait_exit(pid_t pid)
{
    int status;
    ASSERT(waitpid(pid, &status, 0) == pid);
    child = 0;
    ASSERT(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static const char *write_config(const char *endpoint, const char *prefix)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s.json", tmpdir, prefix);
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    fprintf(f,
            "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"%s/\"},"
            "\"persistence\":{\"batch_timeout_ms\":2,\"shutdown_timeout_ms\":10000}}\n",
            endpoint, prefix);
    ASSERT(fclose(f) == 0);
    return path;
}

/* --input unix:PATH, NOTIFY_SOCKET a path: READY=1 means a client is served at once. */
static void test_ready_unix_then_sigterm(const struct mockproc *m)
{
    char notify[300], sock[300], input[310];
    snprintf(notify, sizeof(notify), "%s/notify", tmpdir);
    snprintf(sock, sizeof(sock), "%s/s3commit.sock", tmpdir);
    snprintf(input, sizeof(input), "unix:%s", sock);
    int nfd = notify_bind(notify);
    int in;
    pid_t pid = start_run(write_config(m->endpoint, "unix"), input, notify, &in);

    const char *msg = notify_recv(nfd, 15000);
    ASSERT(strstr(msg, "READY=1") != NULL);
    ASSERT(strstr(msg, "STATUS=") != NULL);

    /* Ready means ready: connect without retrying, one commit, its durable line. */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    ASSERT(strlen(sock) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT(c >= 0);
    ASSERT(connect(c, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    static const unsigned char frame[] = {5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'};
    ASSERT(write(c, frame, sizeof(frame)) == (ssize_t)sizeof(frame));
    char line[128] = "";
    struct pollfd p = {.fd = c, .events = POLLIN};
    ASSERT(poll(&p, 1, 15000) == 1);
    ASSERT(read(c, line, sizeof(line) - 1) > 0);
    ASSERT(strstr(line, "{\"durable_seq\":2}") != NULL); /* seq 1: the control record */
    close(c);

    ASSERT(kill(pid, SIGTERM) == 0);
    msg = notify_recv(nfd, 15000);
    ASSERT(strstr(msg, "STOPPING=1") != NULL);
    ASSERT(strstr(msg, "signal") != NULL);
    close(in);
    ASSERT_EQ(wait_exit(pid), 0);
    close(nfd);
    unlink(notify);
}

/* stdin, NOTIFY_SOCKET abstract: the end of input also says STOPPING=1. */
static void test_ready_stdin_abstract(const struct mockproc *m)
{
    char notify[64];
    snprintf(notify, sizeof(notify), "@s3c-test-sdnotify-%d", (int)getpid());
    int nfd = notify_bind(notify);
    int in;
    pid_t pid = start_run(write_config(m->endpoint, "stdin"), "stdin", notify, &in);
    ASSERT(strstr(notify_recv(nfd, 15000), "READY=1") != NULL);
    static const unsigned char frame[] = {3, 0, 0, 0, 'o', 'n', 'e'};
    ASSERT(write(in, frame, sizeof(frame)) == (ssize_t)sizeof(frame));
    close(in);
    const char *msg = notify_recv(nfd, 15000);
    ASSERT(strstr(msg, "STOPPING=1") != NULL);
    ASSERT(strstr(msg, "end of input") != NULL);
    ASSERT_EQ(wait_exit(pid), 0);
    close(nfd);
}

int main(void)
{
    const char *bindir = getenv("S3C_BIN_DIR");
    if (!bindir) {
        fprintf(stderr, "S3C_BIN_DIR is not set (run through ctest)\n");
        return 1;
    }
    snprintf(bin_s3commit, sizeof(bin_s3commit), "%s/s3commit", bindir);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/s3c-test-sdnotify-XXXXXX");
    ASSERT(mkdtemp(tmpdir) != NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGABRT, on_abort);

    struct mockproc m = {0};
    ASSERT(tool_mock_start(&m, NULL) == 0);
    test_ready_unix_then_sigterm(&m);
    test_ready_stdin_abstract(&m);
    mockproc_stop(&m);

    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    printf("test_sdnotify: ok\n");
    return 0;
}
