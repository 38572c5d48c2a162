/* `s3commit cat`: reads the log back with s3c_reader and writes each commit on stdout in
 * the framing `s3commit run` reads (u32 little-endian length, then the bytes), so
 * `s3commit cat | s3commit run` copies a log and `s3commit cat | processor` replays one.
 * Control records go to stderr as JSON lines with --control. A consumer that goes away
 * (EPIPE) ends it quietly with exit 0. */
#include "s3commit_cli.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "s3commit.h"
#include "tool.h"

#define CAT_BUF (1 << 20)

struct cat_out {
    unsigned char *buf;
    size_t len;
    bool closed; /* the consumer went away */
};

static bool cat_flush(struct cat_out *o)
{
    size_t off = 0;
    while (off < o->len) {
        ssize_t n = write(STDOUT_FILENO, o->buf + off, o->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (errno == EPIPE)
                o->closed = true;
            else
                tool_error("writing stdout: %s", strerror(errno));
            return false;
        }
        off += (size_t)n;
    }
    o->len = 0;
    return true;
}

static bool cat_put(struct cat_out *o, const void *p, size_t n)
{
    if (o->len + n > CAT_BUF && !cat_flush(o))
        return false;
    if (n > CAT_BUF) { /* larger than the buffer: straight through */
        struct cat_out big = {.buf = (unsigned char *)p, .len = n};
        bool ok = cat_flush(&big);
        o->closed = big.closed;
        return ok;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return true;
}

int cmd_cat(const char *config_path, const struct cat_args *a)
{
    s3c_config *cfg = NULL;
    s3c_reader *r = NULL;
    char err[1100] = "";
    int exit_code = TOOL_EXIT_FAIL;
    struct cat_out out = {.buf = malloc(CAT_BUF)};

    signal(SIGPIPE, SIG_IGN); /* a closed stdout is an EPIPE we end on quietly */
    if (!out.buf) {
        tool_error("out of memory");
        return TOOL_EXIT_FAIL;
    }
    if (tool_config_load(config_path, &cfg) != 0) {
        free(out.buf);
        return TOOL_EXIT_USAGE;
    }
    tool_log_setup(cfg->log_level);
    struct s3c_reader_opts ro = {.from_seq = a->from_seq,
                                 .to_seq = a->to_seq,
                                 .follow = a->follow,
                                 .poll_interval_ms = a->poll_interval_ms};
    int rc = s3c_reader_open(cfg, &ro, &r, err, sizeof(err));
    if (rc != 0) {
        tool_error("cannot read s3://%s/%s: %s", cfg->s3.bucket, cfg->s3.prefix,
                   err[0] ? err : s3c_strerror(rc));
        goto out_free;
    }
    for (;;) {
        struct s3c_record rec;
        /* Flush before waiting, so a follower's consumer sees commits as they come. */
        rc = s3c_reader_next(r, &rec, out.len ? 0 : -1);
        if (rc == S3C_ETIMEDOUT) {
            if (!cat_flush(&out))
                break;
            continue;
        }
        if (rc == S3C_EEND) {
            exit_code = cat_flush(&out) || out.closed ? TOOL_EXIT_OK : TOOL_EXIT_FAIL;
            break;
        }
        if (rc != 0) {
            cat_flush(&out);
            tool_error("%s", s3c_reader_error(r));
            break;
        }
        if (rec.control) {
            if (a->control)
                fprintf(stderr,
                        "{\"control_seq\":%" PRIu64 ",\"epoch\":%" PRIu64 ",\"record\":%.*s}\n",
                        rec.seq, rec.epoch, (int)rec.len, (const char *)rec.data);
            continue;
        }
        unsigned char le[4] = {(unsigned char)rec.len, (unsigned char)(rec.len >> 8),
                               (unsigned char)(rec.len >> 16), (unsigned char)(rec.len >> 24)};
        if (!cat_put(&out, le, 4) || !cat_put(&out, rec.data, rec.len))
            break;
    }
    if (out.closed)
        exit_code = TOOL_EXIT_OK; /* the consumer went away: not our failure */

out_free:
    s3c_reader_close(r);
    s3c_config_free(cfg);
    free(out.buf);
    return exit_code;
}
