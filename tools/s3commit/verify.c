/* `s3commit verify`: reads the whole log back with s3c_reader (so the chain rules live in
 * one place: src/reader) and checks it: the chain from seq 1, every object's format and
 * CRCs, every record of an epoch after that epoch's EPOCH_START control record, nothing
 * missing below the manifest's durable_seq. A listing of the prefix counts the keys the
 * chain does not hold (orphans, objects past its end: reported, not errors) and refuses
 * version-1 objects. Read-only: it never writes or deletes an object. */
#include "s3commit_cli.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "format/objfmt.h"
#include "loop/loop.h"
#include "tool.h"
#include "transport/transport.h"
#include "writer/call.h"

#define VERIFY_MAX_PROBLEMS 20 /* problems listed in the summary (all are counted) */

struct verify {
    const struct s3c_config *cfg;
    cJSON *problems;
    size_t nproblems;
    /* the listing */
    uint64_t log_keys, v1_keys, other_keys;
};

static void verify_problem(struct verify *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void verify_problem(struct verify *v, const char *fmt, ...)
{
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    v->nproblems++;
    if (v->nproblems <= VERIFY_MAX_PROBLEMS) {
        fprintf(stderr, "s3commit verify: %s\n", line);
        cJSON_AddItemToArray(v->problems, cJSON_CreateString(line));
    } else if (v->nproblems == VERIFY_MAX_PROBLEMS + 1) {
        fprintf(stderr, "s3commit verify: (further problems are counted, not listed)\n");
    }
}

/* Counts every key under the prefix by kind. Returns 0, or an error with words in err. */
static int verify_list(struct verify *v, char *err, size_t errlen)
{
    struct s3c_config cfg = *v->cfg;
    cfg.persistence.target_pool_size = 1;
    struct loop *loop = loop_new();
    struct xport *x = loop ? xport_new(&cfg, loop, err, errlen) : NULL;
    char *token = NULL;
    int rc = x ? 0 : S3C_EIO;
    while (rc == 0) {
        struct call_res res;
        struct call_req q = {
            .op = XPORT_OP_LIST, .list_prefix = cfg.s3.prefix, .token = token, .max_keys = 1000};
        rc = call_run(x, &cfg, &q, &res, err, errlen);
        if (rc < 0)
            break;
        for (size_t i = 0; i < res.nkeys; i++) {
            uint64_t f;
            if (obj_key_parse(res.keys[i], cfg.s3.prefix, &f)) {
                v->log_keys++;
            } else if (obj_key_is_v1(res.keys[i], cfg.s3.prefix)) {
                if (v->v1_keys++ == 0)
                    verify_problem(v,
                                   "%s is an object of the version-1 layout; this log is "
                                   "version 2",
                                   res.keys[i]);
            } else {
                v->other_keys++;
            }
        }
        free(token);
        token = res.truncated && res.next_token ? res.next_token : NULL;
        res.next_token = NULL;
        call_res_free(&res);
        if (!token)
            break;
    }
    free(token);
    xport_free(x);
    loop_free(loop);
    return rc;
}

int cmd_verify(const char *config_path, int64_t expect_commits)
{
    s3c_config *cfg = NULL;
    s3c_reader *r = NULL;
    struct verify v = {0};
    char err[1100] = "";
    int exit_code = TOOL_EXIT_FAIL;
    cJSON *epochs = NULL, *cur = NULL;

    if (tool_config_load(config_path, &cfg) != 0)
        return TOOL_EXIT_USAGE;
    tool_log_setup(cfg->log_level);
    /* A verifier must see through a flaky store, not fail with it: more tries, capped. */
    if (cfg->persistence.max_retry_attempts < 12)
        cfg->persistence.max_retry_attempts = 12;
    if (cfg->persistence.max_retry_delay_ms > 2000)
        cfg->persistence.max_retry_delay_ms = 2000;
    v.cfg = cfg;
    v.problems = cJSON_CreateArray();
    epochs = cJSON_CreateArray();
    if (!v.problems || !epochs) {
        tool_error("out of memory");
        goto out_free;
    }
    if (verify_list(&v, err, sizeof(err)) != 0) {
        tool_error("cannot list s3://%s/%s at %s: %s", cfg->s3.bucket, cfg->s3.prefix,
                   cfg->s3.endpoint, err);
        goto out_free;
    }
    int rc = s3c_reader_open(cfg, NULL, &r, err, sizeof(err));
    if (rc != 0) {
        tool_error("cannot read s3://%s/%s at %s: %s", cfg->s3.bucket, cfg->s3.prefix,
                   cfg->s3.endpoint, err[0] ? err : s3c_strerror(rc));
        goto out_free;
    }
    uint64_t commits = 0, controls = 0, first_seq = 0, last_seq = 0, epoch = 0, unfenced = 0;
    uint64_t bad = 0, cur_commits = 0;
    struct s3c_record rec;
    while ((rc = s3c_reader_next(r, &rec, -1)) == 0) {
        if (first_seq == 0)
            first_seq = rec.seq;
        last_seq = rec.seq;
        if (rec.control) {
            if (cur)
                cJSON_SetNumberValue(cJSON_GetObjectItem(cur, "commits"), (double)cur_commits);
            controls++;
            epoch = rec.epoch;
            cur_commits = 0;
            cur = cJSON_CreateObject();
            cJSON_AddNumberToObject(cur, "epoch", (double)rec.epoch);
            cJSON_AddNumberToObject(cur, "control_seq", (double)rec.seq);
            cJSON_AddNumberToObject(cur, "commits", 0);
            cJSON_AddItemToArray(epochs, cur);
            continue;
        }
        if (rec.epoch != epoch && unfenced++ == 0)
            verify_problem(&v,
                           "seq %" PRIu64 " was written by epoch %" PRIu64
                           " without its EPOCH_START (the last was epoch %" PRIu64 ")",
                           rec.seq, rec.epoch, epoch);
        commits++;
        cur_commits++;
    }
    if (cur)
        cJSON_SetNumberValue(cJSON_GetObjectItem(cur, "commits"), (double)cur_commits);
    if (rc != S3C_EEND) {
        bad = 1;
        verify_problem(&v, "the chain cannot be followed past seq %" PRIu64 ": %s", last_seq,
                       s3c_reader_error(r));
    }
    struct s3c_reader_stats rs;
    s3c_reader_stats_get(r, &rs);
    if (v.log_keys > 0 && first_seq != 1 && bad == 0)
        verify_problem(&v, "the chain does not start at seq 1 (no object at log/1)");
    bool expect_ok = true;
    if (expect_commits >= 0 && commits != (uint64_t)expect_commits) {
        expect_ok = false;
        verify_problem(&v, "expected %" PRId64 " commits on the chain, found %" PRIu64,
                       expect_commits, commits);
    }
    uint64_t chain = rs.objects, off = rs.orphans_skipped;
    uint64_t beyond = v.log_keys > chain + off ? v.log_keys - chain - off : 0;
    bool ok = bad == 0 && unfenced == 0 && v.v1_keys == 0 && expect_ok &&
              (v.log_keys == 0 || first_seq == 1);

    cJSON *sum = cJSON_CreateObject();
    cJSON_AddStringToObject(sum, "bucket", cfg->s3.bucket);
    cJSON_AddStringToObject(sum, "prefix", cfg->s3.prefix);
    cJSON_AddNumberToObject(sum, "format", 2);
    cJSON_AddNumberToObject(sum, "objects", (double)v.log_keys);
    cJSON_AddNumberToObject(sum, "chain_objects", (double)chain);
    cJSON_AddNumberToObject(sum, "commits", (double)commits);
    cJSON_AddNumberToObject(sum, "control_records", (double)controls);
    cJSON_AddNumberToObject(sum, "first_seq", (double)first_seq);
    cJSON_AddNumberToObject(sum, "last_seq", (double)last_seq);
    cJSON_AddItemToObject(sum, "epochs", epochs);
    epochs = NULL;
    cJSON_AddNumberToObject(sum, "orphans", (double)off);
    cJSON_AddNumberToObject(sum, "beyond_end", (double)beyond);
    cJSON_AddNumberToObject(sum, "unfenced_records", (double)unfenced);
    cJSON_AddNumberToObject(sum, "v1_objects", (double)v.v1_keys);
    cJSON_AddNumberToObject(sum, "bad_objects", (double)bad);
    cJSON_AddNumberToObject(sum, "other_keys", (double)v.other_keys);
    if (expect_commits >= 0)
        cJSON_AddNumberToObject(sum, "expect_commits", (double)expect_commits);
    cJSON_AddBoolToObject(sum, "ok", ok);
    cJSON_AddItemToObject(sum, "problems", v.problems);
    v.problems = NULL;
    char *text = cJSON_PrintUnformatted(sum);
    if (text)
        printf("%s\n", text);
    cJSON_free(text);
    cJSON_Delete(sum);
    exit_code = ok ? TOOL_EXIT_OK : TOOL_EXIT_FAIL;

out_free:
    s3c_reader_close(r);
    cJSON_Delete(epochs);
    cJSON_Delete(v.problems);
    s3c_config_free(cfg);
    return exit_code;
}
