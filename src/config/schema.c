/* The schema: every key the config file may hold (section, name, type, range, check), the
 * sections, and the defaults. Adding a key is a field in config.h, a row in cfg_keys, its
 * default in cfg_defaults() and a line in docs/config.md; nothing else lists keys. */
#include <stdio.h>
#include <string.h>

#include "config/cfg_internal.h"

#define F(field) offsetof(struct s3c_config, field), sizeof(((struct s3c_config *)0)->field)

static const char *const cfg_addressing_names[] = {"path", "virtual", NULL};
static const char *const cfg_signing_names[] = {"unsigned", "signed", NULL};
static const char *const cfg_checksum_names[] = {"crc32c", "sha256", "md5", "none", NULL};
static const char *const cfg_compression_names[] = {"none", "zstd", NULL};
static const char *const cfg_level_names[] = {"error", "warn", "info", "debug", NULL};

#define MIB (1024 * 1024LL)
#define HOUR_MS 3600000

const struct cfg_key cfg_keys[] = {
    {"s3", "endpoint", CFG_KEY_STR, F(s3.endpoint), 0, 0, NULL, cfg_check_endpoint},
    {"s3", "bucket", CFG_KEY_STR, F(s3.bucket), 0, 0, NULL, cfg_check_bucket},
    {"s3", "prefix", CFG_KEY_STR, F(s3.prefix), 0, 0, NULL, cfg_check_prefix},
    {"s3", "region", CFG_KEY_STR, F(s3.region), 0, 0, NULL, cfg_check_region},
    {"s3", "addressing", CFG_KEY_ENUM, F(s3.addressing), 0, 0, cfg_addressing_names, NULL},
    {"s3", "payload_signing", CFG_KEY_ENUM, F(s3.payload_signing), 0, 0, cfg_signing_names, NULL},
    {"s3", "checksum", CFG_KEY_ENUM, F(s3.checksum), 0, 0, cfg_checksum_names, NULL},
    {"s3", "tls_verify", CFG_KEY_BOOL, F(s3.tls_verify), 0, 0, NULL, NULL},
    {"s3", "direct_put", CFG_KEY_BOOL, F(s3.direct_put), 0, 0, NULL, NULL},
    {"s3", "conditional_writes", CFG_KEY_BOOL, F(s3.conditional_writes), 0, 0, NULL, NULL},
    {"s3", "compression", CFG_KEY_ENUM, F(s3.compression), 0, 0, cfg_compression_names, NULL},
    {"s3", "compression_level", CFG_KEY_INT, F(s3.compression_level), -7, 19, NULL, NULL},
    {"s3", "compression_threads", CFG_KEY_INT, F(s3.compression_threads), 1, 16, NULL, NULL},
    {"s3", "ca_file", CFG_KEY_STR, F(s3.ca_file), 0, 0, NULL, cfg_check_file},
    {"s3", "access_key_id", CFG_KEY_SECRET, F(s3.access_key_id), 0, 0, NULL, NULL},
    {"s3", "secret_access_key", CFG_KEY_SECRET, F(s3.secret_access_key), 0, 0, NULL, NULL},
    {"s3", "session_token", CFG_KEY_SECRET, F(s3.session_token), 0, 0, NULL, NULL},
    {"s3", "connect_timeout_ms", CFG_KEY_INT, F(s3.connect_timeout_ms), 1, 600000, NULL, NULL},
    {"s3", "request_timeout_ms", CFG_KEY_INT, F(s3.request_timeout_ms), 1, HOUR_MS, NULL, NULL},
    {"s3", "low_speed_limit_bytes", CFG_KEY_INT, F(s3.low_speed_limit_bytes), 0, 1 << 30, NULL,
     NULL},
    {"s3", "low_speed_time_ms", CFG_KEY_INT, F(s3.low_speed_time_ms), 1000, HOUR_MS, NULL, NULL},

    {"persistence", "batch_timeout_ms", CFG_KEY_INT, F(persistence.batch_timeout_ms), 1, 60000,
     NULL, NULL},
    {"persistence", "batch_size_threshold", CFG_KEY_INT, F(persistence.batch_size_threshold), 1,
     1000000, NULL, NULL},
    {"persistence", "batch_bytes_threshold", CFG_KEY_I64, F(persistence.batch_bytes_threshold), 1,
     5LL * 1024 * MIB, NULL, NULL},
    {"persistence", "max_in_flight_requests", CFG_KEY_INT, F(persistence.max_in_flight_requests), 1,
     1024, NULL, NULL},
    {"persistence", "target_pool_size", CFG_KEY_INT, F(persistence.target_pool_size), 1, 2048, NULL,
     NULL},
    {"persistence", "max_retry_attempts", CFG_KEY_INT, F(persistence.max_retry_attempts), 0, 100,
     NULL, NULL},
    {"persistence", "retry_base_delay_ms", CFG_KEY_INT, F(persistence.retry_base_delay_ms), 1,
     600000, NULL, NULL},
    {"persistence", "max_retry_delay_ms", CFG_KEY_INT, F(persistence.max_retry_delay_ms), 1,
     HOUR_MS, NULL, NULL},
    {"persistence", "retry_budget", CFG_KEY_INT, F(persistence.retry_budget), 0, 1000000, NULL,
     NULL},
    {"persistence", "heartbeat_interval_ms", CFG_KEY_INT, F(persistence.heartbeat_interval_ms), 1,
     HOUR_MS, NULL, NULL},
    {"persistence", "manifest_interval_ms", CFG_KEY_INT, F(persistence.manifest_interval_ms), 1,
     HOUR_MS, NULL, NULL},
    {"persistence", "writer_heartbeat_interval_ms", CFG_KEY_INT,
     F(persistence.writer_heartbeat_interval_ms), 100, HOUR_MS, NULL, NULL},
    {"persistence", "shutdown_timeout_ms", CFG_KEY_INT, F(persistence.shutdown_timeout_ms), 0,
     HOUR_MS, NULL, NULL},

    {"pipeline", "ring_bytes", CFG_KEY_I64, F(pipeline.ring_bytes), 64 * 1024, 1024 * MIB, NULL,
     NULL},
    {"pipeline", "max_commit_bytes", CFG_KEY_I64, F(pipeline.max_commit_bytes), 1, 256 * MIB, NULL,
     NULL},

    {"spool", "dir", CFG_KEY_STR, F(spool.dir), 0, 0, NULL, NULL},
    {"spool", "max_bytes", CFG_KEY_I64, F(spool.max_bytes), 128 * 1024, 1LL << 50, NULL, NULL},
    {"spool", "segment_bytes", CFG_KEY_I64, F(spool.segment_bytes), 64 * 1024, 4096 * MIB, NULL,
     NULL},

    {"log", "level", CFG_KEY_ENUM, F(log_level), 0, 0, cfg_level_names, NULL},

    {"metrics", "listen", CFG_KEY_STR, F(metrics_listen), 0, 0, NULL, cfg_check_listen},
};

#define NKEYS (sizeof(cfg_keys) / sizeof(cfg_keys[0]))

const char *const cfg_sections[] = {"s3", "persistence", "pipeline", "spool", "log", "metrics"};
#define NSECTIONS (sizeof(cfg_sections) / sizeof(cfg_sections[0]))

const size_t cfg_nkeys = NKEYS;
const size_t cfg_nsections = NSECTIONS;

void cfg_defaults(struct s3c_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->s3.region, sizeof(cfg->s3.region), "us-east-1");
    cfg->s3.addressing = CFG_ADDR_PATH;
    cfg->s3.payload_signing = CFG_SIGN_UNSIGNED;
    cfg->s3.checksum = CFG_SUM_CRC32C;
    cfg->s3.tls_verify = true;
    cfg->s3.conditional_writes = true;
    cfg->s3.compression = CFG_COMP_NONE;
    cfg->s3.compression_level = 3;
    cfg->s3.compression_threads = 1;
    snprintf(cfg->s3.credentials_source, sizeof(cfg->s3.credentials_source), "none");
    cfg->s3.connect_timeout_ms = 3000;
    cfg->s3.request_timeout_ms = 30000;
    cfg->s3.low_speed_limit_bytes = 1024;
    cfg->s3.low_speed_time_ms = 5000;
    cfg->s3.direct_put = true; /* http:// only; https and proxies keep libcurl */

    cfg->persistence.batch_timeout_ms = 5;
    cfg->persistence.batch_size_threshold = 1000;
    cfg->persistence.batch_bytes_threshold = MIB;
    cfg->persistence.max_in_flight_requests = 8;
    cfg->persistence.target_pool_size = 16;
    cfg->persistence.max_retry_attempts = 3;
    cfg->persistence.retry_base_delay_ms = 100;
    cfg->persistence.max_retry_delay_ms = 20000;
    cfg->persistence.retry_budget = 500;
    cfg->persistence.heartbeat_interval_ms = 5000;
    cfg->persistence.shutdown_timeout_ms = 30000;
    cfg->persistence.manifest_interval_ms = 1000;
    cfg->persistence.writer_heartbeat_interval_ms = 10000;

    cfg->pipeline.ring_bytes = 64 * MIB;
    cfg->pipeline.max_commit_bytes = MIB;

    cfg->spool.max_bytes = 1024 * MIB;
    cfg->spool.segment_bytes = 64 * MIB;

    cfg->log_level = S3C_LOG_INFO;
    cfg->metrics_listen[0] = '\0';
}

/* ---- lookups ------------------------------------------------------------------------ */

const struct cfg_key *cfg_find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < cfg_nkeys; i++)
        if (strcmp(cfg_keys[i].section, section) == 0 && strcmp(cfg_keys[i].name, name) == 0)
            return &cfg_keys[i];
    return NULL;
}

bool cfg_is_section(const char *name)
{
    for (size_t i = 0; i < cfg_nsections; i++)
        if (strcmp(cfg_sections[i], name) == 0)
            return true;
    return false;
}

bool cfg_is_known_name(const char *s, size_t n)
{
    for (size_t i = 0; i < cfg_nsections; i++)
        if (strlen(cfg_sections[i]) == n && memcmp(cfg_sections[i], s, n) == 0)
            return true;
    for (size_t i = 0; i < cfg_nkeys; i++)
        if (strlen(cfg_keys[i].name) == n && memcmp(cfg_keys[i].name, s, n) == 0)
            return true;
    return false;
}
