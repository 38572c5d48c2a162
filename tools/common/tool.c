/* Shared helpers of the programs (see tool.h). */
#include "tool.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *tool_name = "s3commit";

void tool_set_name(const char *prog)
{
    tool_name = prog;
}

void tool_log_setup(enum s3c_log_level level)
{
    s3c_set_log(s3c_log_stderr, NULL, level);
}

void tool_error(const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n", tool_name, line);
}

bool tool_parse_size(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return false;
    uint64_t mult = 1;
    if (*end) {
        char c = *end++;
        if (c == 'k' || c == 'K')
            mult = 1024;
        else if (c == 'm' || c == 'M')
            mult = 1024 * 1024;
        else if (c == 'g' || c == 'G')
            mult = 1024 * 1024 * 1024;
        else
            return false;
        if (strcmp(end, "") != 0 && strcmp(end, "iB") != 0 && strcmp(end, "B") != 0)
            return false;
    }
    if (v > UINT64_MAX / mult)
        return false;
    *out = (uint64_t)v * mult;
    return true;
}

bool tool_parse_size_range(const char *s, uint64_t *min, uint64_t *max)
{
    const char *dash = strchr(s, '-');
    if (!dash)
        return tool_parse_size(s, min) && (*max = *min, true);
    char lo[64];
    size_t n = (size_t)(dash - s);
    if (n == 0 || n >= sizeof(lo))
        return false;
    memcpy(lo, s, n);
    lo[n] = '\0';
    return tool_parse_size(lo, min) && tool_parse_size(dash + 1, max) && *min <= *max;
}

bool tool_parse_double(const char *s, double *out)
{
    char *end;
    if (!s || !*s)
        return false;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v <= 0)
        return false;
    *out = v;
    return true;
}

int tool_config_load(const char *path, s3c_config **out)
{
    char err[512] = "";
    int rc = s3c_config_load(path, out, err, sizeof(err));
    if (rc != 0) {
        /* The loader's message names the file or key and the fix; print it as is. */
        fprintf(stderr, "%s: %s\n", tool_name, err[0] ? err : s3c_strerror(rc));
        return S3C_ECONFIG;
    }
    return 0;
}

int tool_mock_start(struct mockproc *m, const char *const *args)
{
    if (!getenv("S3C_MOCK_BIN")) {
        char self[PATH_MAX], bin[PATH_MAX + 32];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0) {
            tool_error("cannot find my own executable to locate s3commit-mock: %s",
                       strerror(errno));
            return -errno;
        }
        self[n] = '\0';
        snprintf(bin, sizeof(bin), "%s/s3commit-mock", dirname(self));
        if (access(bin, X_OK) != 0) {
            tool_error("--mock needs %s (build it with `make build`, or set S3C_MOCK_BIN)", bin);
            return -ENOENT;
        }
        setenv("S3C_MOCK_BIN", bin, 1);
    }
    int rc = mockproc_start(m, args);
    if (rc < 0)
        tool_error("could not start s3commit-mock (%s): %s", getenv("S3C_MOCK_BIN"), strerror(-rc));
    return rc;
}
