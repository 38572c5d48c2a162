/* A tiny HTTP/1.x server for GET /metrics on its own thread: one request per connection,
 * bounded request size and time, blocking sockets driven by poll. It must never block the
 * persistence thread: it only calls collect() (a thread-safe snapshot). */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>

#include "common/log.h"
#include "metrics/metrics.h"

#define REQ_MAX 8192           /* a request head larger than this gets 431 */
#define CLIENT_TIMEOUT_MS 2000 /* a client silent or slow for this long is dropped */
#define PAGE_MAX (64 * 1024)

struct metrics_srv {
    int lfd;    /* listening socket */
    int stopfd; /* eventfd: written by metrics_srv_stop() */
    int port;   /* bound port */
    metrics_collect_fn collect;
    void *ctx;
    pthread_t thread;
    char *page; /* PAGE_MAX bytes: the rendered body */
};

static int64_t metrics_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready for events before the deadline. Returns 0 (ready),
 * S3C_ETIMEDOUT, S3C_ECLOSED (stop requested) or S3C_EIO (poll failed). */
static int metrics_wait_fd(struct metrics_srv *m, int fd, short events, int64_t deadline)
{
    struct pollfd p[2] = {{fd, events, 0}, {m->stopfd, POLLIN, 0}};

    for (;;) {
        int64_t left = deadline - metrics_now_ms();
        int rc;
        if (left <= 0)
            return S3C_ETIMEDOUT;
        rc = poll(p, 2, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return S3C_EIO;
        if (p[1].revents)
            return S3C_ECLOSED;
        if (p[0].revents)
            return 0;
    }
}

static void metrics_send_all(struct metrics_srv *m, int fd, const char *p, size_t n,
                             int64_t deadline)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (metrics_wait_fd(m, fd, POLLOUT, deadline) != 0)
                return;
        } else {
            return;
        }
    }
}

static void metrics_respond(struct metrics_srv *m, int fd, int64_t deadline, const char *status,
                            const char *ctype, const char *body, size_t blen, bool head_only)
{
    char hdr[256];
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     status, ctype, blen);

    metrics_send_all(m, fd, hdr, (size_t)n, deadline);
    if (!head_only)
        metrics_send_all(m, fd, body, blen, deadline);
}

static void metrics_plain(struct metrics_srv *m, int fd, int64_t deadline, const char *status,
                          const char *text)
{
    metrics_respond(m, fd, deadline, status, "text/plain; charset=utf-8", text, strlen(text),
                    false);
}

/* Reads one request head and answers it. */
static void metrics_serve(struct metrics_srv *m, int fd)
{
    char req[REQ_MAX + 1];
    size_t got = 0;
    int64_t deadline = metrics_now_ms() + CLIENT_TIMEOUT_MS;
    char *eol, *sp1, *sp2, *q;
    bool head;

    for (;;) {
        ssize_t r;
        if (got == REQ_MAX) {
            metrics_plain(m, fd, deadline, "431 Request Header Fields Too Large",
                          "request head too large\n");
            return;
        }
        r = recv(fd, req + got, REQ_MAX - got, MSG_DONTWAIT);
        if (r > 0) {
            got += (size_t)r;
            req[got] = '\0';
            if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
                break;
            continue;
        }
        if (r == 0)
            return; /* closed before a whole request */
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return;
        if (metrics_wait_fd(m, fd, POLLIN, deadline) != 0)
            return; /* idle or stopping: just close */
    }

    /* request line: METHOD SP TARGET SP HTTP/x.y */
    eol = strpbrk(req, "\r\n");
    *eol = '\0';
    sp1 = strchr(req, ' ');
    sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        metrics_plain(m, fd, deadline, "400 Bad Request", "bad request line\n");
        return;
    }
    *sp1 = *sp2 = '\0';
    head = strcmp(req, "HEAD") == 0;
    if (strcmp(req, "GET") != 0 && !head) {
        metrics_plain(m, fd, deadline, "405 Method Not Allowed", "only GET /metrics\n");
        return;
    }
    q = strchr(sp1 + 1, '?');
    if (q)
        *q = '\0';
    if (strcmp(sp1 + 1, "/metrics") != 0) {
        metrics_plain(m, fd, deadline, "404 Not Found", "not found; try /metrics\n");
        return;
    }

    {
        struct s3c_stats st;
        int n;
        memset(&st, 0, sizeof(st));
        m->collect(m->ctx, &st);
        n = metrics_render(&st, m->page, PAGE_MAX);
        if (n < 0) {
            metrics_plain(m, fd, deadline, "500 Internal Server Error", "metrics page too large\n");
            return;
        }
        metrics_respond(m, fd, deadline, "200 OK", "text/plain; version=0.0.4; charset=utf-8",
                        m->page, (size_t)n, head);
    }
}

static void *metrics_srv_main(void *arg)
{
    struct metrics_srv *m = arg;
    struct pollfd p[2] = {{m->lfd, POLLIN, 0}, {m->stopfd, POLLIN, 0}};

    for (;;) {
        int fd;
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            S3C_LOG(S3C_LOG_ERROR, "event=metrics_poll_failed error=\"%s\"", strerror(errno));
            break;
        }
        if (p[1].revents)
            break;
        if (!p[0].revents)
            continue;
        fd = accept4(m->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                usleep(100 * 1000); /* out of fds: do not spin */
            continue;
        }
        metrics_serve(m, fd);
        shutdown(fd, SHUT_WR);
        close(fd);
    }
    return NULL;
}

/* "HOST:PORT", "[v6]:PORT" -> host and port strings. Returns 0 or S3C_EINVAL. */
static int metrics_split_listen(const char *spec, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *colon = strrchr(spec, ':');
    size_t hl;

    if (!colon || colon == spec || !colon[1])
        return S3C_EINVAL;
    hl = (size_t)(colon - spec);
    if (spec[0] == '[') {
        if (hl < 3 || spec[hl - 1] != ']')
            return S3C_EINVAL;
        spec++;
        hl -= 2;
    }
    if (hl >= hcap || strlen(colon + 1) >= pcap)
        return S3C_EINVAL;
    memcpy(host, spec, hl);
    host[hl] = '\0';
    snprintf(port, pcap, "%s", colon + 1);
    return 0;
}

struct metrics_srv *metrics_srv_start(const char *addr, metrics_collect_fn collect, void *ctx,
                                      char *err, size_t errlen)
{
    struct metrics_srv *m;
    struct addrinfo hints, *res = NULL, *ai;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[256], port[16];
    int rc, last_errno = 0;

    if (err && errlen)
        err[0] = '\0';
    if (!addr || !collect ||
        metrics_split_listen(addr, host, sizeof(host), port, sizeof(port)) != 0) {
        snprintf(err, errlen, "metrics: listen address must be \"HOST:PORT\" (got \"%.64s\")",
                 addr ? addr : "(null)");
        return NULL;
    }
    m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, errlen, "metrics: out of memory");
        return NULL;
    }
    m->lfd = m->stopfd = -1;
    m->collect = collect;
    m->ctx = ctx;
    m->page = malloc(PAGE_MAX);
    if (!m->page) {
        snprintf(err, errlen, "metrics: out of memory");
        goto out_free;
    }

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "metrics: cannot resolve %s: %s", addr, gai_strerror(rc));
        goto out_free;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        int one = 1;
        m->lfd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (m->lfd < 0) {
            last_errno = errno;
            continue;
        }
        setsockopt(m->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(m->lfd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(m->lfd, 16) == 0)
            break;
        last_errno = errno;
        close(m->lfd);
        m->lfd = -1;
    }
    freeaddrinfo(res);
    if (m->lfd < 0) {
        snprintf(err, errlen, "metrics: cannot listen on %s: %s; pick another metrics.listen", addr,
                 strerror(last_errno));
        goto out_free;
    }
    if (getsockname(m->lfd, (struct sockaddr *)&ss, &sl) == 0)
        m->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    m->stopfd = eventfd(0, EFD_CLOEXEC);
    if (m->stopfd < 0) {
        snprintf(err, errlen, "metrics: eventfd: %s", strerror(errno));
        goto out_close;
    }
    rc = pthread_create(&m->thread, NULL, metrics_srv_main, m);
    if (rc) {
        snprintf(err, errlen, "metrics: cannot start thread: %s", strerror(rc));
        goto out_close;
    }
    S3C_LOG(S3C_LOG_INFO, "event=metrics_listening addr=%s port=%d", addr, m->port);
    return m;

out_close:
    if (m->stopfd >= 0)
        close(m->stopfd);
    close(m->lfd);
out_free:
    free(m->page);
    free(m);
    return NULL;
}

int metrics_srv_port(const struct metrics_srv *m)
{
    return m ? m->port : -1;
}

void metrics_srv_stop(struct metrics_srv *m)
{
    uint64_t one = 1;

    if (!m)
        return;
    while (write(m->stopfd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
    pthread_join(m->thread, NULL);
    close(m->stopfd);
    close(m->lfd);
    free(m->page);
    free(m);
}
