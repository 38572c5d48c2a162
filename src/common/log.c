/* The process-wide log sink and s3c_strerror(). Never prints unless a sink is set. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static s3c_log_fn sink_fn;
static void *sink_ctx;
static int sink_level = -1;

void s3c_set_log(s3c_log_fn fn, void *ctx, enum s3c_log_level max_level)
{
    sink_ctx = ctx;
    __atomic_store_n(&sink_fn, fn, __ATOMIC_RELEASE);
    __atomic_store_n(&sink_level, fn ? (int)max_level : -1, __ATOMIC_RELEASE);
}

bool s3c__log_enabled(enum s3c_log_level level)
{
    return (int)level <= __atomic_load_n(&sink_level, __ATOMIC_ACQUIRE);
}

void s3c__log(enum s3c_log_level level, const char *fmt, ...)
{
    s3c_log_fn fn = __atomic_load_n(&sink_fn, __ATOMIC_ACQUIRE);
    char line[1024];
    va_list ap;

    if (!fn || !s3c__log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fn(sink_ctx, level, line);
}

void s3c_log_stderr(void *ctx, enum s3c_log_level level, const char *msg)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    struct timespec ts;
    struct tm tm;
    char when[32];

    (void)ctx;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "ts=%s.%03ldZ level=%s %s\n", when, ts.tv_nsec / 1000000,
            names[level <= S3C_LOG_DEBUG ? level : S3C_LOG_DEBUG], msg);
}

const char *s3c_strerror(int err)
{
    switch (err) {
    case S3C_OK: return "success";
    case S3C_EINVAL: return "invalid argument";
    case S3C_ENOMEM: return "out of memory";
    case S3C_ETOOBIG: return "commit larger than pipeline.max_commit_bytes";
    case S3C_ETIMEDOUT: return "timed out";
    case S3C_EAGAIN: return "no room in the commit ring now";
    case S3C_ECLOSED: return "closed";
    case S3C_EFAILED: return "stage failed: a batch could not be made durable";
    case S3C_EIO: return "I/O error";
    case S3C_ECONFIG: return "invalid configuration";
    case S3C_ES3: return "S3 refused the request";
    case S3C_ENETWORK: return "endpoint unreachable";
    case S3C_EEXISTS: return "object already exists";
    case S3C_ECORRUPT: return "object failed its format or CRC check";
    case S3C_EFENCED: return "fenced: a newer writer owns the log";
    case S3C_EFORMAT: return "a log or spool of another format version";
    case S3C_EEND: return "the end of the log";
    default: return "unknown error";
    }
}
