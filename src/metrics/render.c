/* struct s3c_stats as Prometheus text exposition format 0.0.4. Output must always parse:
 * free text (last_error) goes only into an escaped, ASCII-only label value. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "metrics/metrics.h"

struct out {
    char *buf;
    size_t len, cap;
    bool overflow;
};

static void metrics_put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void metrics_put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (o->overflow)
        return;
    va_start(ap, fmt);
    n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len) {
        o->overflow = true;
        return;
    }
    o->len += (size_t)n;
}

static void metrics_header(struct out *o, const char *name, const char *type, const char *help)
{
    metrics_put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metrics_counter(struct out *o, const char *name, const char *help, uint64_t v)
{
    metrics_header(o, name, "counter", help);
    metrics_put(o, "%s %" PRIu64 "\n", name, v);
}

static void metrics_gauge(struct out *o, const char *name, const char *help, uint64_t v)
{
    metrics_header(o, name, "gauge", help);
    metrics_put(o, "%s %" PRIu64 "\n", name, v);
}

/* A label value: printable ASCII only (anything else becomes '?', so the page stays valid
 * UTF-8 whatever bytes an S3 error carried), with \ and " escaped. */
static void metrics_put_label_value(struct out *o, const char *s, size_t max)
{
    size_t n = strnlen(s, max);

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\' || c == '"')
            metrics_put(o, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            metrics_put(o, "?");
        else
            metrics_put(o, "%c", c);
    }
}

int metrics_render(const struct s3c_stats *st, char *buf, size_t len)
{
    struct out o = {buf, 0, len, len == 0};
    uint64_t cum;

    if (!st || !buf)
        return -1;

    metrics_counter(&o, "s3commit_commits_submitted_total", "Commits accepted by s3c_submit.",
                    st->commits_submitted);
    metrics_counter(&o, "s3commit_bytes_submitted_total", "Payload bytes accepted by s3c_submit.",
                    st->bytes_submitted);
    metrics_counter(&o, "s3commit_commits_durable_total", "Commits acknowledged as durable in S3.",
                    st->commits_durable);
    metrics_counter(&o, "s3commit_bytes_durable_total", "Payload bytes acknowledged as durable.",
                    st->bytes_durable);
    metrics_counter(&o, "s3commit_batches_durable_total", "Batch objects made durable in S3.",
                    st->batches_sent);
    metrics_counter(&o, "s3commit_writes_saved_total",
                    "PUTs that batching avoided: commits in durable objects minus objects.",
                    st->writes_saved);
    metrics_counter(&o, "s3commit_put_attempts_total", "PUT requests started, retries included.",
                    st->put_attempts);
    metrics_counter(&o, "s3commit_put_retries_total", "PUT requests re-sent after a failure.",
                    st->retries);
    metrics_header(&o, "s3commit_put_failures_total", "counter", "Failed PUT attempts by class.");
    metrics_put(&o, "s3commit_put_failures_total{class=\"retryable\"} %" PRIu64 "\n",
                st->failures_retryable);
    metrics_put(&o, "s3commit_put_failures_total{class=\"fatal\"} %" PRIu64 "\n",
                st->failures_fatal);
    metrics_counter(&o, "s3commit_retry_budget_exhausted_total",
                    "Retries delayed because the shared retry budget was empty.",
                    st->retry_budget_exhausted);
    metrics_counter(&o, "s3commit_pool_connections_opened_total", "Connections opened by the pool.",
                    st->pool_opens);
    metrics_counter(&o, "s3commit_pool_connections_closed_total", "Connections closed by the pool.",
                    st->pool_closes);
    metrics_counter(&o, "s3commit_pool_connection_reuses_total",
                    "Requests sent on an already open connection.", st->pool_reuses);
    metrics_counter(&o, "s3commit_pool_heartbeat_failures_total", "Pool heartbeats that failed.",
                    st->pool_heartbeat_failures);

    metrics_gauge(&o, "s3commit_durable_seq",
                  "The durable watermark: every seq at or below is durable.", st->durable_seq);
    metrics_gauge(&o, "s3commit_commits_pending", "Commits submitted and not yet durable.",
                  st->commits_pending);
    metrics_gauge(&o, "s3commit_bytes_pending", "Payload bytes submitted and not yet durable.",
                  st->bytes_pending);
    metrics_gauge(&o, "s3commit_in_flight_requests", "PUT requests on the wire now.",
                  st->in_flight);
    metrics_gauge(&o, "s3commit_failed",
                  "1 once the stage is failed (a batch could not be made durable).", st->failed);
    metrics_gauge(&o, "s3commit_fenced",
                  "1 once a newer writer took the log over (nothing more is acknowledged).",
                  st->fenced);
    metrics_gauge(&o, "s3commit_writer_epoch", "This stage's writer epoch.", st->epoch);
    metrics_gauge(&o, "s3commit_local_seq",
                  "L: every seq at or below it is fsync'd in the local spool (0: no spool).",
                  st->local_seq);
    metrics_gauge(&o, "s3commit_degraded",
                  "1 while S3 does not take objects and the spool holds them (retries spent).",
                  st->degraded);
    metrics_gauge(&o, "s3commit_spool_bytes", "Bytes in the local spool's segment files.",
                  st->spool_bytes);
    metrics_gauge(&o, "s3commit_spool_full",
                  "1 while the spool is full and producers feel backpressure.", st->spool_full);
    metrics_gauge(&o, "s3commit_spool_failed",
                  "1 once a spool write or fsync failed: no more commits are accepted.",
                  st->spool_failed);
    metrics_counter(&o, "s3commit_spool_reads_total",
                    "Spool frames read back to build objects (after an outage, at replay).",
                    st->spool_reads);
    metrics_counter(&o, "s3commit_spool_skipped_total",
                    "Commits S3 took before the spool wrote them: spooled as SKIP frames, "
                    "without their bytes.",
                    st->spool_skipped);
    metrics_counter(&o, "s3commit_spool_syncs_total",
                    "The spool's fdatasyncs that made writes durable (its write groups).",
                    st->spool_syncs);
    metrics_counter(&o, "s3commit_replayed_batches_total",
                    "Objects re-sent from an earlier run's spool.", st->replayed_batches);
    metrics_counter(&o, "s3commit_settled_ours_total",
                    "412 answers read back as this writer's own earlier attempt.",
                    st->settled_ours);
    metrics_counter(&o, "s3commit_orphans_replaced_total",
                    "Older writers' orphans replaced on this writer's chain.",
                    st->orphans_replaced);
    metrics_counter(&o, "s3commit_manifest_writes_total", "Manifest writes that landed.",
                    st->manifest_writes);
    metrics_counter(&o, "s3commit_manifest_writes_saved_total",
                    "Watermark moves folded into a later manifest write.",
                    st->manifest_writes_saved);
    metrics_counter(&o, "s3commit_manifest_failures_total",
                    "Failed manifest writes (each retried alone).", st->manifest_failures);
    metrics_counter(&o, "s3commit_writer_heartbeat_writes_total",
                    "Writer heartbeat objects that landed.", st->heartbeat_writes);
    metrics_counter(&o, "s3commit_writer_heartbeat_failures_total",
                    "Failed writer heartbeat writes (each retried alone).", st->heartbeat_failures);
    metrics_gauge(&o, "s3commit_manifest_durable_seq",
                  "The durable watermark the manifest in S3 holds.", st->manifest_durable_seq);
    metrics_gauge(&o, "s3commit_manifest_unsaved_commits",
                  "durable_seq minus the manifest's: acknowledged but not in the manifest yet.",
                  st->manifest_unsaved);
    metrics_header(&o, "s3commit_writer_heartbeat_age_seconds", "gauge",
                   "Since the writer's heartbeat object last landed (0: not yet).");
    metrics_put(&o, "s3commit_writer_heartbeat_age_seconds %" PRIu64 ".%03" PRIu64 "\n",
                st->heartbeat_age_ms / 1000, st->heartbeat_age_ms % 1000);
    metrics_header(&o, "s3commit_last_error_info", "gauge",
                   "The last failure as a label; value 1 when there is one, 0 when none.");
    metrics_put(&o, "s3commit_last_error_info{message=\"");
    metrics_put_label_value(&o, st->last_error, sizeof(st->last_error));
    metrics_put(&o, "\"} %d\n", st->last_error[0] ? 1 : 0);

    /* Commit-to-durable latency. Bucket i of the library holds latencies < 2^i us (whole
     * microseconds, truncated), i.e. a true latency below 2^i us: le = 2^i us in seconds.
     * The last bucket is the overflow, reported only in +Inf. _count is the sum of the
     * buckets so +Inf == _count even when the snapshot raced a completion. */
    metrics_header(&o, "s3commit_ack_latency_seconds", "histogram",
                   "Time from s3c_submit accepting a commit to its acknowledgement as durable.");
    cum = 0;
    for (int i = 0; i < 23; i++) {
        cum += st->ack_latency_hist[i];
        metrics_put(&o, "s3commit_ack_latency_seconds_bucket{le=\"%.7g\"} %" PRIu64 "\n",
                    (double)(1u << i) / 1e6, cum);
    }
    cum += st->ack_latency_hist[23];
    metrics_put(&o, "s3commit_ack_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
    metrics_put(&o, "s3commit_ack_latency_seconds_sum %" PRIu64 ".%06" PRIu64 "\n",
                st->ack_latency_us_sum / 1000000, st->ack_latency_us_sum % 1000000);
    metrics_put(&o, "s3commit_ack_latency_seconds_count %" PRIu64 "\n", cum);

    /* Commits per batch: bucket i holds 2^i .. 2^(i+1)-1 commits (the last: 2048 and up). */
    metrics_header(&o, "s3commit_batch_commits", "histogram", "Commits per batch object.");
    cum = 0;
    for (int i = 0; i < S3C_BATCH_HIST_BUCKETS - 1; i++) {
        cum += st->batch_hist[i];
        metrics_put(&o, "s3commit_batch_commits_bucket{le=\"%u\"} %" PRIu64 "\n", (2u << i) - 1,
                    cum);
    }
    cum += st->batch_hist[S3C_BATCH_HIST_BUCKETS - 1];
    metrics_put(&o, "s3commit_batch_commits_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
    metrics_put(&o, "s3commit_batch_commits_sum %" PRIu64 "\n", st->batch_commits_sum);
    metrics_put(&o, "s3commit_batch_commits_count %" PRIu64 "\n", cum);

    if (o.overflow) {
        if (len)
            buf[0] = '\0';
        return -1;
    }
    return (int)o.len;
}
