/* Library logging: one logfmt line per event through the sink set by s3c_set_log().
 * Hot paths never log; they count. A secret never goes into a log line. */
#ifndef S3C_LOG_H
#define S3C_LOG_H

#include <stdbool.h>

#include "s3commit.h"

/* True when a line at this level would reach a sink (cheap; check before formatting). */
bool s3c__log_enabled(enum s3c_log_level level);

/* printf-style; the result should read "event=name key=value ...". */
void s3c__log(enum s3c_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define S3C_LOG(level, ...)                                                                \
    do {                                                                                   \
        if (s3c__log_enabled(level))                                                       \
            s3c__log(level, __VA_ARGS__);                                                  \
    } while (0)

#endif
