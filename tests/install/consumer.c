/* A program outside the s3commit tree, built by test_install.sh against the installed
 * header and library only (pkg-config and find_package): opens a stage on the endpoint
 * and prefix given, submits N commits, waits until the last is durable and closes.
 * Exit 0 only when all N are durable and the library's version is the header's. */
#include <s3commit.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: consumer ENDPOINT PREFIX N\n");
        return 2;
    }
    const char *endpoint = argv[1], *prefix = argv[2];
    int n = atoi(argv[3]);
    if (strcmp(s3c_version(), S3C_VERSION_STRING) != 0 ||
        s3c_version_number() != S3C_VERSION_NUMBER) {
        fprintf(stderr, "consumer: library %s (%d), header %s (%d)\n", s3c_version(),
                s3c_version_number(), S3C_VERSION_STRING, S3C_VERSION_NUMBER);
        return 1;
    }

    char json[1024], err[512] = "";
    snprintf(json, sizeof(json),
             "{\"s3\":{\"endpoint\":\"%s\",\"bucket\":\"commits\",\"prefix\":\"%s\"},"
             "\"persistence\":{\"batch_timeout_ms\":2}}",
             endpoint, prefix);
    s3c_config *cfg = NULL;
    if (s3c_config_parse(json, strlen(json), &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "consumer: config: %s\n", err);
        return 1;
    }
    s3c_stage *st = NULL;
    int rc = s3c_stage_open(cfg, &st, err, sizeof(err));
    s3c_config_free(cfg);
    if (rc != 0) {
        fprintf(stderr, "consumer: open: %s\n", err[0] ? err : s3c_strerror(rc));
        return 1;
    }
    uint64_t seq = 0;
    for (int i = 0; i < n; i++) {
        char commit[64];
        int len = snprintf(commit, sizeof(commit), "commit %d", i);
        rc = s3c_submit(st, commit, (size_t)len, 10000, &seq);
        if (rc != 0) {
            fprintf(stderr, "consumer: submit %d: %s\n", i, s3c_strerror(rc));
            s3c_stage_close(st, NULL);
            return 1;
        }
    }
    rc = s3c_wait_durable(st, seq, 30000);
    struct s3c_close_report rep;
    int close_rc = s3c_stage_close(st, &rep);
    if (rc != 0 || close_rc != 0 || rep.durable_seq != seq) {
        fprintf(stderr, "consumer: wait %s, close %s, durable_seq %llu of %llu\n",
                s3c_strerror(rc), s3c_strerror(close_rc), (unsigned long long)rep.durable_seq,
                (unsigned long long)seq);
        return 1;
    }
    printf("consumer: s3commit %s, %d commits durable under %s\n", s3c_version(), n, prefix);
    return 0;
}
