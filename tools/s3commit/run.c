/* `s3commit run`: the stage as a process. Commits arrive framed (u32 LE length, bytes) on
 * stdin or from clients of a Unix socket; durable watermarks go out as JSON lines. It
 * never reports a seq durable before the stage's subscriber said so, and never exits 0
 * while something it read is not durable. */
#include "s3commit_cli.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/clock.h"
#include "common/log.h"
#include "config/config.h"
#include "frame.h"
#include "sdnotify.h"
#include "tool.h"

#define RUN_MAX_CLIENTS 256
#define RUN_SUBMIT_SLICE_MS 100 /* a blocked submit wakes this often to see signals */

/* One input stream: stdin, or one client of the Unix socket. */
struct source {
    int fd;         /* input (and, for a client, replies) */
    bool is_client; /* replies with the seqs of its own commits */
    bool in_done;   /* EOF, error or stop: nothing more is read */
    struct frame_reader fr;
    uint64_t *seqs; /* a client's accepted seqs not yet reported durable */
    size_t seq_head, seq_len, seq_cap;
    char *out; /* a client's unsent reply bytes */
    size_t out_len, out_cap;
    uint64_t commits; /* commits accepted from this source */
};

struct run {
    s3c_stage *st;
    uint64_t max_commit;
    int efd; /* eventfd: the subscriber saw the watermark move */
    int sfd; /* signalfd: SIGTERM, SIGINT */
    int lfd; /* listening Unix socket, or -1 */
    const char *sock_path;
    _Atomic uint64_t durable; /* the newest W the subscriber saw */
    _Atomic int stage_err;    /* the error the subscriber saw (0 = none) */
    uint64_t printed;         /* the last W written to stdout */
    bool spool;               /* spool.dir is set: L is printed too */
    _Atomic uint64_t local;   /* the newest L the local subscriber saw */
    uint64_t printed_local;   /* the last L written to stdout */
    uint64_t last_seq;        /* the highest seq accepted */
    uint64_t accepted;        /* commits accepted, all sources */
    int signals;              /* SIGTERM/SIGINT received */
    bool input_error;         /* stdin framing or read error */
    bool stdout_broken;
    struct source *src[RUN_MAX_CLIENTS + 1];
    int nsrc;
};

/* A stop signal while the stage opens: the open (finding the log's end, fencing it,
 * checking a spool) can take a long time against a slow store, and it cannot be
 * interrupted from inside. Nothing has been read from the input yet, so there is nothing
 * to drain: the process ends at once, as a crash would at that point, which the writer
 * protocol and the spool are built to survive. The watcher only polls the signalfd; once
 * the open has returned it leaves the signal there for the main loop. */
enum { OPEN_RUNNING, OPEN_DONE, OPEN_STOPPED };

struct open_watch {
    int sfd, efd;          /* efd: the open returned */
    const char *sock_path; /* --input unix:PATH, listening already: removed */
    _Atomic int state;
};

static void *run_open_watch(void *arg)
{
    struct open_watch *w = arg;
    struct pollfd p[2] = {{.fd = w->sfd, .events = POLLIN}, {.fd = w->efd, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            return NULL;
        if (p[1].revents)
            return NULL;
        int expect = OPEN_RUNNING;
        if (p[0].revents && atomic_compare_exchange_strong(&w->state, &expect, OPEN_STOPPED)) {
            S3C_LOG(S3C_LOG_WARN, "event=signal action=stop_during_open msg=\"stopped while "
                                  "the stage was opening: no commit was taken\"");
            if (w->sock_path)
                unlink(w->sock_path);
            fflush(NULL);
            _exit(TOOL_EXIT_OK);
        }
        if (atomic_load(&w->state) != OPEN_RUNNING)
            return NULL;
    }
}

/* The subscriber: runs on the persistence thread, so it only stores and wakes. */
static void run_on_durable(void *ctx, uint64_t durable_seq, int err)
{
    struct run *r = ctx;
    uint64_t cur = atomic_load(&r->durable);
    while (durable_seq > cur && !atomic_compare_exchange_weak(&r->durable, &cur, durable_seq))
        ;
    if (err)
        atomic_store(&r->stage_err, err);
    uint64_t one = 1;
    ssize_t n = write(r->efd, &one, sizeof(one));
    (void)n; /* the eventfd is non-blocking: a full counter still means "wake" */
}

/* The spool's subscriber: runs on the spool's thread, so it only stores and wakes. */
static void run_on_local(void *ctx, uint64_t local_seq, int err)
{
    struct run *r = ctx;
    uint64_t cur = atomic_load(&r->local);
    while (local_seq > cur && !atomic_compare_exchange_weak(&r->local, &cur, local_seq))
        ;
    (void)err; /* a spool failure also fails the next submit, which stops the input */
    uint64_t one = 1;
    ssize_t n = write(r->efd, &one, sizeof(one));
    (void)n;
}

static struct source *run_source_new(int fd, bool is_client, uint64_t max_commit)
{
    struct source *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->fd = fd;
    s->is_client = is_client;
    if (frame_reader_init(&s->fr, max_commit) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

static void run_source_free(struct source *s)
{
    if (!s)
        return;
    if (s->is_client && s->fd >= 0)
        close(s->fd);
    frame_reader_free(&s->fr);
    free(s->seqs);
    free(s->out);
    free(s);
}

static int run_source_out_append(struct source *s, const char *line, size_t n)
{
    if (s->out_len + n > s->out_cap) {
        size_t cap = s->out_cap ? s->out_cap * 2 : 4096;
        while (cap < s->out_len + n)
            cap *= 2;
        char *nb = realloc(s->out, cap);
        if (!nb)
            return -ENOMEM;
        s->out = nb;
        s->out_cap = cap;
    }
    memcpy(s->out + s->out_len, line, n);
    s->out_len += n;
    return 0;
}

/* Writes what the client's socket takes now; drops the client's replies if it is gone. */
static void run_source_flush(struct source *s)
{
    while (s->out_len > 0) {
        ssize_t n = send(s->fd, s->out, s->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            s->out_len = 0; /* the client went away: nobody to tell */
            s->in_done = true;
            return;
        }
        memmove(s->out, s->out + n, s->out_len - (size_t)n);
        s->out_len -= (size_t)n;
    }
}

static int run_source_push_seq(struct source *s, uint64_t seq)
{
    if (s->seq_head > 0 && s->seq_len == s->seq_cap) {
        memmove(s->seqs, s->seqs + s->seq_head, (s->seq_len - s->seq_head) * sizeof(uint64_t));
        s->seq_len -= s->seq_head;
        s->seq_head = 0;
    }
    if (s->seq_len == s->seq_cap) {
        size_t cap = s->seq_cap ? s->seq_cap * 2 : 1024;
        uint64_t *nb = realloc(s->seqs, cap * sizeof(uint64_t));
        if (!nb)
            return -ENOMEM;
        s->seqs = nb;
        s->seq_cap = cap;
    }
    s->seqs[s->seq_len++] = seq;
    return 0;
}

/* Tells a client which of its commits became durable up to W. */
static void run_source_report_durable(struct source *s, uint64_t w)
{
    char line[64];
    while (s->seq_head < s->seq_len && s->seqs[s->seq_head] <= w) {
        int n =
            snprintf(line, sizeof(line), "{\"durable_seq\":%" PRIu64 "}\n", s->seqs[s->seq_head]);
        if (run_source_out_append(s, line, (size_t)n) < 0)
            break;
        s->seq_head++;
    }
    run_source_flush(s);
}

static void run_print_durable(struct run *r)
{
    uint64_t l = atomic_load(&r->local);
    if (r->spool && l > r->printed_local && !r->stdout_broken) {
        r->printed_local = l;
        if (printf("{\"local_seq\":%" PRIu64 "}\n", l) < 0 || fflush(stdout) != 0) {
            r->stdout_broken = true;
            tool_error("stdout is closed; durable watermarks are no longer printed");
        }
    }
    uint64_t w = atomic_load(&r->durable);
    if (w <= r->printed)
        return;
    r->printed = w;
    if (!r->stdout_broken) {
        if (printf("{\"durable_seq\":%" PRIu64 "}\n", w) < 0 || fflush(stdout) != 0) {
            r->stdout_broken = true;
            tool_error("stdout is closed; durable watermarks are no longer printed");
        }
    }
    for (int i = 0; i < r->nsrc; i++)
        if (r->src[i]->is_client)
            run_source_report_durable(r->src[i], w);
}

static void run_on_signal(struct run *r)
{
    struct signalfd_siginfo si;
    while (read(r->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        r->signals++;
        S3C_LOG(S3C_LOG_INFO, "event=signal signal=%s action=%s",
                si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM",
                r->signals == 1 ? "drain" : "close_now");
    }
}

/* Handles a watermark wake-up and signals without blocking (used while a submit waits). */
static void run_service(struct run *r)
{
    uint64_t v;
    while (read(r->efd, &v, sizeof(v)) == (ssize_t)sizeof(v))
        ;
    run_on_signal(r);
    run_print_durable(r);
}

static void run_source_reject(struct run *r, struct source *s, const char *msg)
{
    if (s->is_client) {
        cJSON *o = cJSON_CreateObject();
        char *line = NULL;
        if (o && cJSON_AddStringToObject(o, "error", msg))
            line = cJSON_PrintUnformatted(o);
        if (line) {
            run_source_out_append(s, line, strlen(line));
            run_source_out_append(s, "\n", 1);
        }
        cJSON_free(line);
        cJSON_Delete(o);
        run_source_flush(s);
        S3C_LOG(S3C_LOG_WARN, "event=client_input_error fd=%d msg=\"%s\"", s->fd, msg);
    } else {
        tool_error("stdin: %s", msg);
        r->input_error = true;
    }
    s->in_done = true;
}

/* Submits every whole frame buffered in s. Returns false if the run must stop reading
 * all input (the stage refused commits or a signal came while a submit waited). */
static bool run_source_submit_frames(struct run *r, struct source *s)
{
    struct frame f;
    char msg[256];
    for (;;) {
        enum frame_status fs = frame_next(&s->fr, &f);
        if (fs == FRAME_NEED_MORE)
            break;
        if (fs == FRAME_TOO_BIG) {
            snprintf(msg, sizeof(msg),
                     "frame at byte offset %" PRIu64 " is %" PRIu32
                     " bytes, over pipeline.max_commit_bytes (%" PRIu64
                     "); raise it in the config or split the commit",
                     f.offset, f.len, r->max_commit);
            run_source_reject(r, s, msg);
            return true;
        }
        uint64_t seq = 0;
        int rc;
        while ((rc = s3c_submit(r->st, f.data, f.len, RUN_SUBMIT_SLICE_MS, &seq)) ==
               S3C_ETIMEDOUT) {
            run_service(r);
            if (r->signals > 0) {
                tool_error("stopped by a signal while the commit ring was full: the frame at "
                           "byte offset %" PRIu64 " and any after it were not submitted",
                           f.offset);
                r->input_error = true;
                return false;
            }
        }
        if (rc != 0) {
            snprintf(msg, sizeof(msg), "frame at byte offset %" PRIu64 " was refused: %s", f.offset,
                     s3c_strerror(rc));
            run_source_reject(r, s, msg);
            if (rc == S3C_ETOOBIG || rc == S3C_EINVAL)
                return true;
            r->input_error = true; /* the stage failed or closed: stop everything */
            return false;
        }
        r->last_seq = seq;
        r->accepted++;
        s->commits++;
        if (s->is_client && run_source_push_seq(s, seq) < 0) {
            run_source_reject(r, s, "out of memory tracking this client's seqs");
            return true;
        }
    }
    return true;
}

/* Reads once from a readable source and submits what is whole. */
static bool run_source_read(struct run *r, struct source *s)
{
    char msg[256];
    ssize_t n = frame_reader_fill(&s->fr, s->fd);
    if (n == -EAGAIN || n == -EINTR)
        return true;
    if (n < 0) {
        snprintf(msg, sizeof(msg), "read failed: %s", strerror((int)-n));
        run_source_reject(r, s, msg);
        return !r->input_error;
    }
    if (!run_source_submit_frames(r, s))
        return false;
    if (n == 0 && !s->in_done) {
        if (frame_reader_truncated(&s->fr, msg, sizeof(msg)))
            run_source_reject(r, s, msg);
        s->in_done = true;
    }
    return true;
}

static int run_listen(struct run *r, const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat stt;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        tool_error("--input unix:%s: the path is longer than %zu bytes", path,
                   sizeof(sa.sun_path) - 1);
        return -EINVAL;
    }
    strcpy(sa.sun_path, path);
    if (stat(path, &stt) == 0 && S_ISSOCK(stt.st_mode))
        unlink(path); /* a stale socket from an earlier run */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
        int e = errno;
        tool_error("--input unix:%s: cannot listen: %s", path, strerror(e));
        if (fd >= 0)
            close(fd);
        return -e;
    }
    r->lfd = fd;
    r->sock_path = path;
    S3C_LOG(S3C_LOG_INFO, "event=listening input=unix path=%s", path);
    return 0;
}

static void run_accept(struct run *r)
{
    for (;;) {
        int fd = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        struct source *s =
            r->nsrc < RUN_MAX_CLIENTS ? run_source_new(fd, true, r->max_commit) : NULL;
        if (!s) {
            static const char busy[] = "{\"error\":\"too many clients\"}\n";
            ssize_t n = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)n;
            close(fd);
            continue;
        }
        r->src[r->nsrc++] = s;
        S3C_LOG(S3C_LOG_DEBUG, "event=client_connected fd=%d clients=%d", fd, r->nsrc);
    }
}

/* Drops clients that are finished: input done, every seq reported, replies sent. */
static void run_reap_clients(struct run *r)
{
    int j = 0;
    for (int i = 0; i < r->nsrc; i++) {
        struct source *s = r->src[i];
        bool done = s->is_client && s->in_done && s->seq_head == s->seq_len && s->out_len == 0;
        if (done) {
            S3C_LOG(S3C_LOG_DEBUG, "event=client_done fd=%d commits=%" PRIu64, s->fd, s->commits);
            run_source_free(s);
        } else {
            r->src[j++] = s;
        }
    }
    r->nsrc = j;
}

static bool run_input_open(const struct run *r)
{
    if (r->lfd >= 0)
        return true;
    for (int i = 0; i < r->nsrc; i++)
        if (!r->src[i]->in_done)
            return true;
    return false;
}

/* Tells systemd (Type=notify) what the run is doing; a no-op without $NOTIFY_SOCKET. */
static void run_notify(const char *state)
{
    int rc = sdnotify_send(state);
    if (rc < 0)
        S3C_LOG(S3C_LOG_WARN, "event=sd_notify_failed socket=%s error=\"%s\"",
                getenv("NOTIFY_SOCKET"), strerror(-rc));
}

/* Reads and submits until the input ends, a signal arrives or the stage fails. */
static void run_loop_input(struct run *r)
{
    struct pollfd pfd[RUN_MAX_CLIENTS + 4];
    struct source *who[RUN_MAX_CLIENTS + 4];
    while (r->signals == 0 && !r->input_error && atomic_load(&r->stage_err) == 0 &&
           run_input_open(r)) {
        int n = 0;
        pfd[n++] = (struct pollfd){.fd = r->efd, .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = r->sfd, .events = POLLIN};
        if (r->lfd >= 0)
            pfd[n++] = (struct pollfd){.fd = r->lfd, .events = POLLIN};
        int first_src = n;
        for (int i = 0; i < r->nsrc; i++) {
            struct source *s = r->src[i];
            short ev = (short)((s->in_done ? 0 : POLLIN) | (s->out_len ? POLLOUT : 0));
            if (!ev)
                continue;
            who[n] = s;
            pfd[n++] = (struct pollfd){.fd = s->fd, .events = ev};
        }
        if (poll(pfd, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            tool_error("poll failed: %s", strerror(errno));
            r->input_error = true;
            break;
        }
        run_service(r);
        if (r->lfd >= 0 && (pfd[2].revents & POLLIN))
            run_accept(r);
        for (int i = first_src; i < n && r->signals == 0; i++) {
            struct source *s = who[i];
            if (pfd[i].revents & POLLOUT)
                run_source_flush(s);
            if (!s->in_done && (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                if (!run_source_read(r, s))
                    break;
        }
        run_reap_clients(r);
    }
}

/* After the input ends: waits (printing) until everything accepted is durable, the stage
 * fails, a further signal arrives or the drain time runs out. */
static void run_loop_drain(struct run *r, int timeout_ms)
{
    int signals_at_start = r->signals;
    uint64_t deadline = s3c__now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        run_service(r);
        run_reap_clients(r);
        bool replies_pending = false;
        for (int i = 0; i < r->nsrc; i++) {
            if (r->src[i]->is_client && r->src[i]->out_len)
                run_source_flush(r->src[i]); /* a slow reader: keep feeding it */
            if (r->src[i]->out_len)
                replies_pending = true;
        }
        if (atomic_load(&r->durable) >= r->last_seq && !replies_pending)
            return;
        if (atomic_load(&r->stage_err) != 0 || r->signals > signals_at_start)
            return;
        uint64_t now = s3c__now_ms();
        if (now >= deadline)
            return;
        struct pollfd pfd[2] = {{.fd = r->efd, .events = POLLIN}, {.fd = r->sfd, .events = POLLIN}};
        int wait = (int)(deadline - now);
        int slice = replies_pending ? 20 : 200;
        poll(pfd, 2, wait > slice ? slice : wait);
    }
}

int cmd_run(const char *config_path, const char *input)
{
    struct run r = {.efd = -1, .sfd = -1, .lfd = -1};
    s3c_config *cfg = NULL;
    char err[512] = "";
    sigset_t mask;
    int exit_code = TOOL_EXIT_FAIL;

    if (tool_config_load(config_path, &cfg) != 0)
        return TOOL_EXIT_USAGE;
    tool_log_setup(cfg->log_level);
    r.max_commit = (uint64_t)cfg->pipeline.max_commit_bytes;
    int drain_ms = cfg->persistence.shutdown_timeout_ms;

    /* Block the stop signals before any thread exists so they all arrive on the signalfd;
     * SIGPIPE is ignored because a client may leave while we reply. */
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    r.sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    r.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r.sfd < 0 || r.efd < 0) {
        tool_error("cannot create signalfd/eventfd: %s", strerror(errno));
        goto out_close_fds;
    }

    if (strcmp(input, "stdin") == 0 || strcmp(input, "-") == 0) {
        r.src[r.nsrc] = run_source_new(STDIN_FILENO, false, r.max_commit);
        if (!r.src[r.nsrc]) {
            tool_error("out of memory");
            goto out_close_fds;
        }
        r.nsrc++;
    } else if (strncmp(input, "unix:", 5) == 0 && input[5]) {
        if (run_listen(&r, input + 5) < 0) {
            exit_code = TOOL_EXIT_USAGE;
            goto out_close_fds;
        }
    } else {
        tool_error("--input %s: expected 'stdin' or 'unix:PATH'", input);
        exit_code = TOOL_EXIT_USAGE;
        goto out_close_fds;
    }

    struct open_watch ow = {.sfd = r.sfd,
                            .efd = eventfd(0, EFD_CLOEXEC),
                            .sock_path = r.lfd >= 0 ? r.sock_path : NULL,
                            .state = OPEN_RUNNING};
    pthread_t owt;
    bool watching = ow.efd >= 0 && pthread_create(&owt, NULL, run_open_watch, &ow) == 0;
    int rc = s3c_stage_open(cfg, &r.st, err, sizeof(err));
    int expect = OPEN_RUNNING;
    if (!atomic_compare_exchange_strong(&ow.state, &expect, OPEN_DONE))
        pause(); /* the watcher is ending the process */
    if (watching) {
        uint64_t one = 1;
        ssize_t nw = write(ow.efd, &one, sizeof(one));
        (void)nw; /* an eventfd */
        pthread_join(owt, NULL);
    }
    if (ow.efd >= 0)
        close(ow.efd);
    if (rc != 0) {
        tool_error("cannot open the stage: %s", err[0] ? err : s3c_strerror(rc));
        if (rc == S3C_ECORRUPT || rc == S3C_EFORMAT)
            exit_code = TOOL_EXIT_REFUSED; /* nothing a restart changes */
        goto out_free_sources;
    }
    s3c_config_free(cfg);
    cfg = NULL;
    if (s3c_subscribe(r.st, run_on_durable, &r) != 0) {
        tool_error("cannot subscribe to durability events");
        s3c_stage_close(r.st, NULL);
        goto out_free_sources;
    }
    r.spool = s3c_subscribe_local(r.st, run_on_local, &r) == 0;
    /* Where the log resumed, first on stdout: one JSON line before the watermarks. */
    struct s3c_stage_info info;
    s3c_stage_info(r.st, &info);
    printf("{\"epoch\":%" PRIu64 ",\"recovered_seq\":%" PRIu64 ",\"control_seq\":%" PRIu64
           ",\"first_seq\":%" PRIu64 "}\n",
           info.epoch, info.recovered_seq, info.control_seq, info.first_seq);
    fflush(stdout);
    S3C_LOG(S3C_LOG_INFO,
            "event=run_started input=%s metrics_port=%d epoch=%" PRIu64 " recovered_seq=%" PRIu64
            " first_seq=%" PRIu64,
            input, s3c_metrics_port(r.st), info.epoch, info.recovered_seq, info.first_seq);
    /* Ready: the stage is open and the socket (if any) listens, so a client started
     * after this (After=s3commit.service) connects and is served. */
    char state[256];
    snprintf(state, sizeof(state),
             "READY=1\nSTATUS=taking commits from %s (epoch %" PRIu64 ", first seq %" PRIu64 ")",
             input, info.epoch, info.first_seq);
    run_notify(state);

    run_loop_input(&r);
    snprintf(state, sizeof(state),
             "STOPPING=1\nSTATUS=draining after %s: %" PRIu64 " commits accepted",
             r.signals                        ? "a signal"
             : atomic_load(&r.stage_err) != 0 ? "the stage failed"
             : r.input_error                  ? "an input error"
                                              : "the end of input",
             r.accepted);
    run_notify(state);
    if (r.lfd >= 0) {
        close(r.lfd); /* stop taking clients; the ones connected still get their replies */
        unlink(r.sock_path);
        r.lfd = -1;
    }
    run_loop_drain(&r, drain_ms);

    struct s3c_stats stats;
    struct s3c_close_report rep = {0};
    s3c_stats_get(r.st, &stats);
    int close_rc = s3c_stage_close(r.st, &rep);
    r.st = NULL;
    run_service(&r); /* the last watermark the subscriber saw */
    for (int i = 0; i < r.nsrc; i++)
        if (r.src[i]->is_client)
            run_source_flush(r.src[i]);

    S3C_LOG(S3C_LOG_INFO,
            "event=run_stopped accepted=%" PRIu64 " durable_seq=%" PRIu64 " batches=%" PRIu64
            " retries=%" PRIu64,
            r.accepted, rep.durable_seq, stats.batches_sent, stats.retries);
    if (r.spool && close_rc != S3C_EFENCED && rep.durable_seq < r.last_seq &&
        rep.local_seq >= r.last_seq && !stats.spool_failed) {
        /* Nothing is lost: the spool holds it, and the next start sends it. */
        S3C_LOG(S3C_LOG_WARN,
                "event=run_stopped_spooled durable_seq=%" PRIu64 " local_seq=%" PRIu64
                " msg=\"seqs %" PRIu64 "..%" PRIu64 " are not in S3 yet; they are in the spool "
                "and the next start sends them\"",
                rep.durable_seq, rep.local_seq, rep.durable_seq + 1, r.last_seq);
        exit_code = r.input_error ? TOOL_EXIT_FAIL : TOOL_EXIT_OK;
    } else if (close_rc != 0 || rep.durable_seq < r.last_seq) {
        if (rep.lost_first_seq && r.spool && rep.local_seq >= rep.lost_first_seq &&
            close_rc == S3C_EFENCED)
            tool_error("fenced: seqs %" PRIu64 "..%" PRIu64 " are not in S3; of them, seqs up to "
                       "%" PRIu64 " are in the spool, but a newer writer took the log over, "
                       "so the next start on this spool refuses them (they stay on disk; "
                       "docs/spool.md)%s%s",
                       rep.lost_first_seq, rep.lost_last_seq, rep.local_seq,
                       stats.last_error[0] ? "; last error: " : "", stats.last_error);
        else if (rep.lost_first_seq && r.spool && rep.local_seq >= rep.lost_first_seq)
            tool_error("not everything was made durable: seqs %" PRIu64 "..%" PRIu64
                       " are not in S3 (%s); of them, seqs up to %" PRIu64 " are in the spool "
                       "and the next start sends them%s%s",
                       rep.lost_first_seq, rep.lost_last_seq, s3c_strerror(close_rc), rep.local_seq,
                       stats.last_error[0] ? "; last error: " : "", stats.last_error);
        else if (rep.lost_first_seq)
            tool_error("not everything was made durable: seqs %" PRIu64 "..%" PRIu64
                       " are not durable (%s)%s%s",
                       rep.lost_first_seq, rep.lost_last_seq, s3c_strerror(close_rc),
                       stats.last_error[0] ? "; last error: " : "", stats.last_error);
        else
            tool_error("not everything was made durable: durable_seq %" PRIu64 " of %" PRIu64
                       " accepted (%s)%s%s",
                       rep.durable_seq, r.last_seq, s3c_strerror(close_rc),
                       stats.last_error[0] ? "; last error: " : "", stats.last_error);
        exit_code = close_rc == S3C_EFENCED ? TOOL_EXIT_FENCED : TOOL_EXIT_FAIL;
    } else {
        exit_code = r.input_error ? TOOL_EXIT_FAIL : TOOL_EXIT_OK;
    }

out_free_sources:
    for (int i = 0; i < r.nsrc; i++)
        run_source_free(r.src[i]);
    if (r.lfd >= 0) {
        close(r.lfd);
        unlink(r.sock_path);
    }
out_close_fds:
    if (r.efd >= 0)
        close(r.efd);
    if (r.sfd >= 0)
        close(r.sfd);
    s3c_config_free(cfg);
    return exit_code;
}
