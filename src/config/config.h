/* The parsed, validated configuration (the JSON file of docs/config.md). Built by
 * s3c_config_load()/s3c_config_parse(); read-only after that, so any thread may read it.
 * Secrets live only here and in the transport's copy; nothing prints them. */
#ifndef S3C_CONFIG_H
#define S3C_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "s3commit.h"

enum cfg_addressing { CFG_ADDR_PATH, CFG_ADDR_VIRTUAL };
enum cfg_signing { CFG_SIGN_UNSIGNED, CFG_SIGN_SIGNED };
enum cfg_checksum { CFG_SUM_CRC32C, CFG_SUM_SHA256, CFG_SUM_MD5, CFG_SUM_NONE };
enum cfg_compression { CFG_COMP_NONE, CFG_COMP_ZSTD };

struct cfg_s3 {
    char endpoint[256]; /* "http(s)://host[:port]"; default https://s3.<region>.amazonaws.com */
    char bucket[64];    /* required */
    char prefix[512];   /* key prefix, default "" */
    char region[32];    /* default "us-east-1" (or AWS_REGION) */
    enum cfg_addressing addressing;   /* default path */
    enum cfg_signing payload_signing; /* default unsigned */
    enum cfg_checksum checksum;       /* default crc32c */
    bool tls_verify;                  /* default true */
    bool conditional_writes;          /* default true: If-None-Match/If-Match, writer fencing */
    enum cfg_compression compression; /* default none: an object's records as one zstd frame */
    int compression_level;            /* zstd level, default 3 (-7..19; lower is faster) */
    int compression_threads;          /* zstd: compressing threads, default 1 (1..16) */
    char ca_file[256];                /* "" = system store */
    char access_key_id[128];          /* "" = anonymous (unsigned requests) */
    char secret_access_key[128];      /* secret */
    char session_token[2048];         /* secret; "" when none */
    char credentials_source[64];      /* "config", "env", "shared-file:<profile>" or "none" */
    int connect_timeout_ms;           /* default 3000 */
    int request_timeout_ms;           /* default 30000; whole request */
    int low_speed_limit_bytes;        /* default 1024 bytes/s ... */
    int low_speed_time_ms;            /* ... for 5000 ms fails the transfer (retryable) */
    bool direct_put; /* default true: plain-HTTP PUT bodies written from caller memory */
};

struct cfg_persistence {
    int batch_timeout_ms;             /* default 5, > 0 */
    int batch_size_threshold;         /* default 1000 commits, > 0 */
    int64_t batch_bytes_threshold;    /* default 1 MiB, > 0 */
    int max_in_flight_requests;       /* default 8, > 0 */
    int target_pool_size;             /* default 16; in [max_in_flight, 2 x max_in_flight] */
    int max_retry_attempts;           /* default 3, >= 0 (0 disables retries) */
    int retry_base_delay_ms;          /* default 100, > 0 */
    int max_retry_delay_ms;           /* default 20000, >= retry_base_delay_ms */
    int retry_budget;                 /* default 500 tokens (AWS SDK style); 0 disables */
    int heartbeat_interval_ms;        /* default 5000, > 0 */
    int shutdown_timeout_ms;          /* default 30000, >= 0 */
    int manifest_interval_ms;         /* default 1000: at most one manifest write per interval */
    int writer_heartbeat_interval_ms; /* default 10000: the writer's heartbeat object */
};

struct cfg_pipeline {
    int64_t ring_bytes;       /* default 64 MiB; power of two in [64 KiB, 1 GiB] */
    int64_t max_commit_bytes; /* default 1 MiB; > 0 and <= ring_bytes / 4 */
};

/* The local spool (docs/spool.md): off while dir is "". */
struct cfg_spool {
    char dir[512];         /* "" = no spool (the default) */
    int64_t max_bytes;     /* default 1 GiB: the spool full = backpressure on producers */
    int64_t segment_bytes; /* default 64 MiB: a segment file rolls over past this */
};

struct s3c_config {
    struct cfg_s3 s3;
    struct cfg_persistence persistence;
    struct cfg_pipeline pipeline;
    struct cfg_spool spool;
    enum s3c_log_level log_level; /* "error" | "warn" | "info" (default) | "debug" */
    char metrics_listen[64];      /* "HOST:PORT"; "" disables (the default) */
};

/* Fills every field with its default (bucket empty). */
void cfg_defaults(struct s3c_config *cfg);

#endif
