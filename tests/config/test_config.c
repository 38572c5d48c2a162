/* Tests for src/config: defaults, every validation rule, unknown keys with suggestions,
 * syntax errors with line numbers, credential sources, and that no secret ever reaches an
 * error message or the dump. Runs with a private HOME and no AWS_* variables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "config/config.h"
#include "test.h"

#define SECRET "wJalrXUtnFEMIK7MDENGbPxRfiCYSECRETKEY"
#define TOKEN "FwoGZXIvYXdzEXAMPLETOKENxyzzy"
#define KEYID "AKIAIOSFODNN7EXAMPLE"

static char tmpdir[256];
static char errbuf[1024];

static void clear_aws_env(void)
{
    const char *vars[] = {
        "AWS_ACCESS_KEY_ID",  "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",          "AWS_REGION",
        "AWS_DEFAULT_REGION", "AWS_PROFILE",           "AWS_SHARED_CREDENTIALS_FILE"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
}

/* Every message: one line, starts with "config: ", and holds no secret. */
static void check_message(const char *msg)
{
    ASSERT(strncmp(msg, "config: ", 8) == 0);
    ASSERT(strchr(msg, '\n') == NULL);
    ASSERT(strstr(msg, SECRET) == NULL);
    ASSERT(strstr(msg, TOKEN) == NULL);
    ASSERT(strstr(msg, "wJalr") == NULL);
}

static s3c_config *ok(const char *json)
{
    s3c_config *cfg = NULL;
    int rc = s3c_config_parse(json, strlen(json), &cfg, errbuf, sizeof(errbuf));
    if (rc != 0)
        TEST_FAIL_("expected success for %s, got %d: %s", json, rc, errbuf);
    ASSERT(cfg != NULL);
    return cfg;
}

static void bad(const char *json, const char *expect)
{
    s3c_config *cfg = (s3c_config *)1;
    int rc = s3c_config_parse(json, strlen(json), &cfg, errbuf, sizeof(errbuf));
    if (rc != S3C_ECONFIG)
        TEST_FAIL_("expected S3C_ECONFIG for %s, got %d", json, rc);
    ASSERT(cfg == NULL);
    check_message(errbuf);
    if (!strstr(errbuf, expect))
        TEST_FAIL_("error for %s\n  is: %s\n  expected to contain: %s", json, errbuf, expect);
}

/* {"s3":{"bucket":"commits"}, "<section>":{<body>}} */
static void bad_in(const char *section, const char *body, const char *expect)
{
    char json[1024];
    if (strcmp(section, "s3") == 0)
        snprintf(json, sizeof(json), "{\"s3\":{\"bucket\":\"commits\",%s}}", body);
    else
        snprintf(json, sizeof(json), "{\"s3\":{\"bucket\":\"commits\"},\"%s\":{%s}}", section,
                 body);
    bad(json, expect);
}

static s3c_config *ok_in(const char *section, const char *body)
{
    char json[1024];
    if (strcmp(section, "s3") == 0)
        snprintf(json, sizeof(json), "{\"s3\":{\"bucket\":\"commits\",%s}}", body);
    else
        snprintf(json, sizeof(json), "{\"s3\":{\"bucket\":\"commits\"},\"%s\":{%s}}", section,
                 body);
    return ok(json);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    fputs(text, f);
    fclose(f);
}

static void test_defaults(void)
{
    s3c_config *cfg = ok("{\"s3\":{\"bucket\":\"commits\"}}");
    struct s3c_config d;

    ASSERT_STR_EQ(cfg->s3.bucket, "commits");
    ASSERT_STR_EQ(cfg->s3.region, "us-east-1");
    ASSERT_STR_EQ(cfg->s3.endpoint, "https://s3.us-east-1.amazonaws.com");
    ASSERT_STR_EQ(cfg->s3.prefix, "");
    ASSERT_EQ(cfg->s3.addressing, CFG_ADDR_PATH);
    ASSERT_EQ(cfg->s3.payload_signing, CFG_SIGN_UNSIGNED);
    ASSERT_EQ(cfg->s3.checksum, CFG_SUM_CRC32C);
    ASSERT(cfg->s3.tls_verify);
    ASSERT_STR_EQ(cfg->s3.credentials_source, "none");
    ASSERT_STR_EQ(cfg->s3.access_key_id, "");
    ASSERT_EQ(cfg->s3.connect_timeout_ms, 3000);
    ASSERT_EQ(cfg->s3.request_timeout_ms, 30000);
    ASSERT_EQ(cfg->s3.low_speed_limit_bytes, 1024);
    ASSERT_EQ(cfg->s3.low_speed_time_ms, 5000);
    /* the persistence defaults of docs/config.md */
    ASSERT_EQ(cfg->persistence.batch_timeout_ms, 5);
    ASSERT_EQ(cfg->persistence.max_retry_attempts, 3);
    ASSERT_EQ(cfg->persistence.retry_base_delay_ms, 100);
    ASSERT_EQ(cfg->persistence.batch_size_threshold, 1000);
    ASSERT_EQ(cfg->persistence.batch_bytes_threshold, 1048576);
    ASSERT_EQ(cfg->persistence.max_in_flight_requests, 8);
    ASSERT_EQ(cfg->persistence.target_pool_size, 16);
    ASSERT_EQ(cfg->persistence.max_retry_delay_ms, 20000);
    ASSERT_EQ(cfg->persistence.retry_budget, 500);
    ASSERT_EQ(cfg->persistence.heartbeat_interval_ms, 5000);
    ASSERT_EQ(cfg->persistence.shutdown_timeout_ms, 30000);
    ASSERT_EQ(cfg->pipeline.ring_bytes, 64 << 20);
    ASSERT_EQ(cfg->pipeline.max_commit_bytes, 1 << 20);
    ASSERT_EQ(cfg->log_level, S3C_LOG_INFO);
    ASSERT_STR_EQ(cfg->metrics_listen, "");

    /* cfg_defaults agrees with what parsing fills in */
    cfg_defaults(&d);
    ASSERT_EQ(d.persistence.batch_timeout_ms, 5);
    ASSERT(memcmp(&d.persistence, &cfg->persistence, sizeof(d.persistence)) == 0);
    ASSERT(memcmp(&d.pipeline, &cfg->pipeline, sizeof(d.pipeline)) == 0);
    s3c_config_free(cfg);
    s3c_config_free(NULL);
}

static void test_full_file(void)
{
    const char *data = getenv("S3C_TEST_DATA");
    char path[512];
    s3c_config *cfg = NULL;
    int rc;

    ASSERT(data != NULL);
    snprintf(path, sizeof(path), "%s/config/full.json", data);
    rc = s3c_config_load(path, &cfg, errbuf, sizeof(errbuf));
    if (rc)
        TEST_FAIL_("%s", errbuf);
    ASSERT_STR_EQ(cfg->s3.endpoint, "http://127.0.0.1:9000");
    ASSERT_STR_EQ(cfg->s3.prefix, "stage-1/");
    ASSERT_STR_EQ(cfg->metrics_listen, "127.0.0.1:9464");
    s3c_config_free(cfg);

    snprintf(path, sizeof(path), "%s/config/mock.json", data);
    rc = s3c_config_load(path, &cfg, errbuf, sizeof(errbuf));
    if (rc)
        TEST_FAIL_("%s", errbuf);
    ASSERT_EQ(cfg->persistence.target_pool_size, 32);
    ASSERT_EQ(cfg->log_level, S3C_LOG_WARN);
    ASSERT_STR_EQ(cfg->s3.credentials_source, "config");
    s3c_config_free(cfg);

    snprintf(path, sizeof(path), "%s/config/bad-inflight.json", data);
    ASSERT_EQ(s3c_config_load(path, &cfg, errbuf, sizeof(errbuf)), S3C_ECONFIG);
    ASSERT_STR_EQ(errbuf, "config: persistence.max_in_flight_requests must be > 0 (got 0)");

    snprintf(path, sizeof(path), "%s/config/bad-typo.json", data);
    ASSERT_EQ(s3c_config_load(path, &cfg, errbuf, sizeof(errbuf)), S3C_ECONFIG);
    ASSERT(strstr(errbuf, "unknown key persistence.batch_timout_ms; did you mean "
                          "batch_timeout_ms?") != NULL);

    snprintf(path, sizeof(path), "%s/config/bad-syntax.json", data);
    ASSERT_EQ(s3c_config_load(path, &cfg, errbuf, sizeof(errbuf)), S3C_ECONFIG);
    {
        char want[600];
        snprintf(want, sizeof(want), "config: %s: line 3: invalid JSON near ", path);
        if (strncmp(errbuf, want, strlen(want)) != 0)
            TEST_FAIL_("got: %s\nwant prefix: %s", errbuf, want);
    }

    ASSERT_EQ(s3c_config_load("/nonexistent/x.json", &cfg, errbuf, sizeof(errbuf)), S3C_ECONFIG);
    ASSERT_STR_EQ(errbuf, "config: cannot read /nonexistent/x.json: No such file or directory");
    ASSERT(cfg == NULL);
}

/* The validation rules of docs/config.md (its "allowed" column), each at and past its
 * boundary. */
static void test_validation_rules(void)
{
    s3c_config *cfg;

    bad_in("persistence", "\"batch_size_threshold\":0",
           "config: persistence.batch_size_threshold must be > 0 (got 0)");
    bad_in("persistence", "\"max_in_flight_requests\":0",
           "config: persistence.max_in_flight_requests must be > 0 (got 0)");
    bad_in("persistence", "\"max_in_flight_requests\":8,\"target_pool_size\":7",
           "persistence.target_pool_size must be >= persistence.max_in_flight_requests (8)");
    bad_in("persistence", "\"max_in_flight_requests\":8,\"target_pool_size\":17",
           "persistence.target_pool_size must be <= 2 x persistence.max_in_flight_requests (16) "
           "(got 17)");
    bad_in("persistence", "\"batch_timeout_ms\":0",
           "config: persistence.batch_timeout_ms must be > 0 (got 0)");
    bad_in("persistence", "\"max_retry_attempts\":-1",
           "config: persistence.max_retry_attempts must be >= 0 (got -1)");
    bad_in("persistence", "\"retry_base_delay_ms\":0",
           "config: persistence.retry_base_delay_ms must be > 0 (got 0)");

    cfg = ok_in("persistence", "\"max_in_flight_requests\":8,\"target_pool_size\":8");
    ASSERT_EQ(cfg->persistence.target_pool_size, 8);
    s3c_config_free(cfg);
    cfg = ok_in("persistence", "\"max_in_flight_requests\":1,\"target_pool_size\":2,"
                               "\"max_retry_attempts\":0,\"batch_size_threshold\":1,"
                               "\"batch_timeout_ms\":1,\"retry_base_delay_ms\":1");
    ASSERT_EQ(cfg->persistence.max_retry_attempts, 0);
    ASSERT_EQ(cfg->persistence.target_pool_size, 2);
    s3c_config_free(cfg);
}

static void test_types_and_ranges(void)
{
    s3c_config *cfg;

    bad_in("persistence", "\"batch_timeout_ms\":\"5\"",
           "persistence.batch_timeout_ms must be an integer (got \"5\")");
    bad_in("persistence", "\"batch_timeout_ms\":1.5",
           "persistence.batch_timeout_ms must be an integer (got 1.5)");
    bad_in("persistence", "\"batch_timeout_ms\":true",
           "persistence.batch_timeout_ms must be an integer (got true)");
    bad_in("persistence", "\"batch_timeout_ms\":null",
           "persistence.batch_timeout_ms must be an integer (got null)");
    bad_in("persistence", "\"batch_timeout_ms\":[5]",
           "persistence.batch_timeout_ms must be an integer (got an array)");
    bad_in("persistence", "\"batch_timeout_ms\":1e300",
           "persistence.batch_timeout_ms must be <= 60000");
    bad_in("persistence", "\"max_in_flight_requests\":4096",
           "persistence.max_in_flight_requests must be <= 1024 (got 4096)");
    bad_in("persistence", "\"retry_base_delay_ms\":200,\"max_retry_delay_ms\":100",
           "persistence.max_retry_delay_ms must be >= persistence.retry_base_delay_ms (200)");
    bad_in("persistence", "\"shutdown_timeout_ms\":-1",
           "persistence.shutdown_timeout_ms must be >= 0 (got -1)");
    bad_in("persistence", "\"batch_bytes_threshold\":0",
           "persistence.batch_bytes_threshold must be > 0 (got 0)");
    bad_in("s3", "\"tls_verify\":\"yes\"", "s3.tls_verify must be true or false (got \"yes\")");
    bad_in("s3", "\"tls_verify\":1", "s3.tls_verify must be true or false (got 1)");
    bad_in("s3", "\"prefix\":7", "s3.prefix must be a string (got 7)");
    bad_in("s3", "\"connect_timeout_ms\":0", "s3.connect_timeout_ms must be > 0 (got 0)");

    bad_in("pipeline", "\"ring_bytes\":100000",
           "pipeline.ring_bytes must be a power of two in [65536, 1073741824] (got 100000)");
    bad_in("pipeline", "\"ring_bytes\":32768", "pipeline.ring_bytes must be >= 65536 (got 32768)");
    bad_in("pipeline", "\"ring_bytes\":2147483648",
           "pipeline.ring_bytes must be <= 1073741824 (got 2147483648)");
    bad_in("pipeline", "\"ring_bytes\":65536,\"max_commit_bytes\":16385",
           "pipeline.max_commit_bytes must be <= pipeline.ring_bytes / 4 (16384) (got 16385)");
    bad_in("pipeline", "\"max_commit_bytes\":0", "pipeline.max_commit_bytes must be > 0 (got 0)");
    cfg = ok_in("pipeline", "\"ring_bytes\":65536,\"max_commit_bytes\":16384");
    ASSERT_EQ(cfg->pipeline.ring_bytes, 65536);
    s3c_config_free(cfg);
    cfg = ok_in("pipeline", "\"ring_bytes\":1073741824,\"max_commit_bytes\":268435456");
    ASSERT_EQ(cfg->pipeline.max_commit_bytes, 268435456);
    s3c_config_free(cfg);

    bad("[1,2]", "the top level must be an object {...} (got an array)");
    bad("{\"s3\":[]}", "s3 must be an object {...} (got an array)");
}

static void test_strings(void)
{
    s3c_config *cfg;

    bad("{\"s3\":{\"bucket\":\"commits\",\"endpoint\":\"ftp://x\"}}",
        "config: s3.endpoint must start with http:// or https:// (got \"ftp://x\")");
    bad_in("s3", "\"endpoint\":\"http://\"", "s3.endpoint has no host");
    bad_in("s3", "\"endpoint\":\"http://h:0\"", "s3.endpoint has a port that is not in");
    bad_in("s3", "\"endpoint\":\"http://h:99999\"", "s3.endpoint has a port that is not in");
    bad_in("s3", "\"endpoint\":\"http://h/path\"", "s3.endpoint must be scheme://host[:port]");
    bad_in("s3", "\"endpoint\":\"http://u:p@h\"", "s3.endpoint must not hold user:password@");
    cfg = ok_in("s3", "\"endpoint\":\"https://[::1]:9000\"");
    ASSERT_STR_EQ(cfg->s3.endpoint, "https://[::1]:9000");
    s3c_config_free(cfg);

    bad("{\"s3\":{}}", "s3.bucket is required");
    bad("{}", "s3.bucket is required");
    bad("{\"s3\":{\"bucket\":\"\"}}", "s3.bucket must be 3 to 63 characters long");
    bad("{\"s3\":{\"bucket\":\"My_Bucket\"}}", "s3.bucket must hold only lowercase letters");
    bad("{\"s3\":{\"bucket\":\"-abc\"}}", "s3.bucket must begin and end with a letter or digit");
    bad("{\"s3\":{\"bucket\":\"a..b\"}}", "s3.bucket must not hold \"..\"");
    bad("{\"s3\":{\"bucket\":\"192.168.1.1\"}}", "s3.bucket must not be an IP address");
    bad("{\"s3\":{\"bucket\":\"xn--abc\"}}", "s3.bucket uses a prefix or suffix S3 reserves");
    cfg = ok("{\"s3\":{\"bucket\":\"my.bucket-1\"}}");
    s3c_config_free(cfg);

    bad_in("s3", "\"addressing\":\"vhost\"",
           "s3.addressing must be one of \"path\", \"virtual\" (got \"vhost\")");
    bad_in("s3", "\"payload_signing\":\"maybe\"",
           "s3.payload_signing must be one of \"unsigned\", \"signed\" (got \"maybe\")");
    bad_in("s3", "\"checksum\":\"crc32\"",
           "s3.checksum must be one of \"crc32c\", \"sha256\", \"md5\", \"none\" (got \"crc32\")");
    bad_in("log", "\"level\":\"trace\"",
           "log.level must be one of \"error\", \"warn\", \"info\", \"debug\" (got \"trace\")");
    bad_in("s3", "\"region\":\"US East\"", "s3.region must hold only lowercase letters");
    bad_in("s3", "\"prefix\":\"/abs\"", "s3.prefix must not start with '/'");
    bad_in("s3", "\"ca_file\":\"/nonexistent/ca.pem\"",
           "s3.ca_file: cannot read /nonexistent/ca.pem: No such file or directory");
    bad_in("metrics", "\"listen\":\"9464\"", "metrics.listen must be \"HOST:PORT\"");
    bad_in("metrics", "\"listen\":\"localhost:http\"", "metrics.listen has a port that is not in");
    bad_in("metrics", "\"listen\":\"::1:9464\"", "an IPv6 host must be in brackets");

    {
        char body[700];
        memset(body, 0, sizeof(body));
        memcpy(body, "\"prefix\":\"", 10);
        memset(body + 10, 'p', 600);
        strcat(body, "\"");
        bad_in("s3", body, "s3.prefix must be at most 511 bytes (got 600 bytes)");
    }

    cfg = ok("{\"s3\":{\"bucket\":\"commits\",\"addressing\":\"virtual\",\"payload_signing\":"
             "\"signed\",\"checksum\":\"none\",\"tls_verify\":false,\"region\":\"eu-west-3\"},"
             "\"log\":{\"level\":\"debug\"},\"metrics\":{\"listen\":\"[::1]:0\"}}");
    ASSERT_EQ(cfg->s3.addressing, CFG_ADDR_VIRTUAL);
    ASSERT_EQ(cfg->s3.payload_signing, CFG_SIGN_SIGNED);
    ASSERT_EQ(cfg->s3.checksum, CFG_SUM_NONE);
    ASSERT(!cfg->s3.tls_verify);
    ASSERT_EQ(cfg->log_level, S3C_LOG_DEBUG);
    ASSERT_STR_EQ(cfg->s3.endpoint, "https://s3.eu-west-3.amazonaws.com");
    ASSERT_STR_EQ(cfg->metrics_listen, "[::1]:0");

    ASSERT_EQ(s3c_config_set_endpoint(cfg, "http://127.0.0.1:41234"), 0);
    ASSERT_STR_EQ(cfg->s3.endpoint, "http://127.0.0.1:41234");
    ASSERT_EQ(s3c_config_set_endpoint(cfg, "ftp://x"), S3C_EINVAL);
    ASSERT_EQ(s3c_config_set_endpoint(cfg, NULL), S3C_EINVAL);
    ASSERT_STR_EQ(cfg->s3.endpoint, "http://127.0.0.1:41234");
    s3c_config_free(cfg);
}

static void test_unknown_keys(void)
{
    bad_in("persistence", "\"batch_timout_ms\":5",
           "unknown key persistence.batch_timout_ms; did you mean batch_timeout_ms?");
    bad_in("persistence", "\"max_inflight_requests\":5", "did you mean max_in_flight_requests?");
    bad_in("s3", "\"batch_timeout_ms\":5",
           "unknown key s3.batch_timeout_ms; did you mean persistence.batch_timeout_ms");
    bad_in("s3", "\"endpiont\":\"http://x\"", "did you mean endpoint?");
    bad_in("s3", "\"zzzzzzzz\":1", "unknown key s3.zzzzzzzz (known in s3: endpoint, bucket");
    bad("{\"s3\":{\"bucket\":\"commits\"},\"persistance\":{}}",
        "unknown section \"persistance\"; did you mean persistence?");
    bad("{\"s3\":{\"bucket\":\"commits\"},\"batch_timeout_ms\":5}",
        "did you mean persistence.batch_timeout_ms?");
    bad("{\"s3\":{\"bucket\":\"commits\"},\"log\":{\"level\":\"info\",\"extra\":{\"a\":1}}}",
        "unknown key log.extra");
    bad("{\"s3\":{\"bucket\":\"commits\",\"bucket\":\"other\"}}", "s3.bucket appears twice");
    bad("{\"s3\":{\"bucket\":\"commits\"},\"s3\":{}}", "section \"s3\" appears twice");
}

static void test_syntax(void)
{
    bad("{\"s3\":{\"bucket\":\"commits\"}", "line 1: invalid JSON near ");
    bad("{\n\"s3\":\n{\"bucket\": commits}}",
        "line 3: invalid JSON near \"\\\"bucket\\\": ...}}\" (column 12)");
    bad("{\"s3\":{\"bucket\":\"commits\"}} trailing", "line 1: invalid JSON near ");
    bad("", "line 1: invalid JSON near end of input");
    bad("{\"s3\":{\"bucket\":\"commits\"}}\n\n{}", "line 3: invalid JSON near \"{}\"");
    {
        const char doc[] = "{\"s3\":{\"bucket\":\"co\0mmits\"}}";
        s3c_config *cfg;
        ASSERT_EQ(s3c_config_parse(doc, sizeof(doc) - 1, &cfg, errbuf, sizeof(errbuf)),
                  S3C_ECONFIG);
        check_message(errbuf);
    }
    /* a syntax error right after a secret must not echo it */
    bad("{\"s3\":{\"bucket\":\"commits\",\"secret_access_key\":\"" SECRET "\" \"x\":1}}",
        "invalid JSON near \"...\\\" \\\"...\\\":1}}\" (column 87)");
    bad("{\"s3\":{\"bucket\":\"commits\",\n\"session_token\":\"" TOKEN, "invalid JSON near");
}

static void test_credentials(void)
{
    char path[512], text[1024];
    s3c_config *cfg;

    clear_aws_env();
    /* from the file */
    cfg = ok("{\"s3\":{\"bucket\":\"commits\",\"access_key_id\":\"" KEYID
             "\",\"secret_access_key\":\"" SECRET "\",\"session_token\":\"" TOKEN "\"}}");
    ASSERT_STR_EQ(cfg->s3.credentials_source, "config");
    ASSERT_STR_EQ(cfg->s3.secret_access_key, SECRET);
    ASSERT_STR_EQ(cfg->s3.session_token, TOKEN);
    s3c_config_free(cfg);
    bad("{\"s3\":{\"bucket\":\"commits\",\"access_key_id\":\"" KEYID "\"}}",
        "s3.access_key_id and s3.secret_access_key must be set together (got only "
        "s3.access_key_id)");
    bad("{\"s3\":{\"bucket\":\"commits\",\"secret_access_key\":\"" SECRET "\"}}",
        "(got only s3.secret_access_key)");
    bad("{\"s3\":{\"bucket\":\"commits\",\"session_token\":\"" TOKEN "\"}}",
        "(got only s3.session_token)");
    bad("{\"s3\":{\"bucket\":\"commits\",\"secret_access_key\":12345678}}",
        "s3.secret_access_key must be a string (got a number)");
    bad("{\"s3\":{\"bucket\":\"commits\",\"access_key_id\":\"A\",\"secret_access_key\":\"wJalr "
        "x\"}}",
        "s3.secret_access_key must be printable ASCII without spaces");

    /* the environment wins over the shared file, and the file over both */
    setenv("AWS_ACCESS_KEY_ID", KEYID, 1);
    setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
    setenv("AWS_SESSION_TOKEN", TOKEN, 1);
    cfg = ok("{\"s3\":{\"bucket\":\"commits\"}}");
    ASSERT_STR_EQ(cfg->s3.credentials_source, "env");
    ASSERT_STR_EQ(cfg->s3.access_key_id, KEYID);
    ASSERT_STR_EQ(cfg->s3.session_token, TOKEN);
    s3c_config_free(cfg);
    cfg = ok("{\"s3\":{\"bucket\":\"commits\",\"access_key_id\":\"AKIDFILE\","
             "\"secret_access_key\":\"filesecret\"}}");
    ASSERT_STR_EQ(cfg->s3.credentials_source, "config");
    ASSERT_STR_EQ(cfg->s3.access_key_id, "AKIDFILE");
    ASSERT_STR_EQ(cfg->s3.session_token, "");
    s3c_config_free(cfg);
    unsetenv("AWS_SECRET_ACCESS_KEY");
    bad("{\"s3\":{\"bucket\":\"commits\"}}",
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together (got only "
        "AWS_ACCESS_KEY_ID)");
    clear_aws_env();

    /* the shared credentials file: default profile, a named profile, partial profiles */
    snprintf(path, sizeof(path), "%s/credentials", tmpdir);
    snprintf(text, sizeof(text),
             "# comment\n[default]\naws_access_key_id = %s\naws_secret_access_key=%s\n\n"
             "[ci]\n  aws_access_key_id = AKIDCI\n  aws_secret_access_key = cisecret\n"
             "  aws_session_token = %s\n[half]\naws_access_key_id = AKIDHALF\n",
             KEYID, SECRET, TOKEN);
    write_file(path, text);
    setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
    cfg = ok("{\"s3\":{\"bucket\":\"commits\"}}");
    ASSERT_STR_EQ(cfg->s3.credentials_source, "shared-file:default");
    ASSERT_STR_EQ(cfg->s3.secret_access_key, SECRET);
    s3c_config_free(cfg);
    setenv("AWS_PROFILE", "ci", 1);
    cfg = ok("{\"s3\":{\"bucket\":\"commits\"}}");
    ASSERT_STR_EQ(cfg->s3.credentials_source, "shared-file:ci");
    ASSERT_STR_EQ(cfg->s3.access_key_id, "AKIDCI");
    ASSERT_STR_EQ(cfg->s3.session_token, TOKEN);
    s3c_config_free(cfg);
    setenv("AWS_PROFILE", "half", 1);
    bad("{\"s3\":{\"bucket\":\"commits\"}}",
        "profile [half] sets aws_access_key_id but not aws_secret_access_key");
    setenv("AWS_PROFILE", "nope", 1);
    bad("{\"s3\":{\"bucket\":\"commits\"}}", "AWS_PROFILE=nope but");
    unsetenv("AWS_PROFILE");
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/creds", 1);
    bad("{\"s3\":{\"bucket\":\"commits\"}}",
        "AWS_SHARED_CREDENTIALS_FILE=/nonexistent/creds: no such file");
    clear_aws_env();

    /* ~/.aws/credentials under HOME */
    snprintf(path, sizeof(path), "%s/.aws", tmpdir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/.aws/credentials", tmpdir);
    write_file(path, "[default]\naws_access_key_id=AKIDHOME\naws_secret_access_key=homesecret\n");
    cfg = ok("{\"s3\":{\"bucket\":\"commits\"}}");
    ASSERT_STR_EQ(cfg->s3.credentials_source, "shared-file:default");
    ASSERT_STR_EQ(cfg->s3.access_key_id, "AKIDHOME");
    s3c_config_free(cfg);
    unlink(path);
    cfg = ok("{\"s3\":{\"bucket\":\"commits\"}}");
    ASSERT_STR_EQ(cfg->s3.credentials_source, "none");
    s3c_config_free(cfg);

    /* region from the environment only when the file does not set it */
    setenv("AWS_DEFAULT_REGION", "eu-central-1", 1);
    cfg = ok("{\"s3\":{\"bucket\":\"commits\"}}");
    ASSERT_STR_EQ(cfg->s3.region, "eu-central-1");
    ASSERT_STR_EQ(cfg->s3.endpoint, "https://s3.eu-central-1.amazonaws.com");
    s3c_config_free(cfg);
    setenv("AWS_REGION", "ap-south-1", 1);
    cfg = ok("{\"s3\":{\"bucket\":\"commits\"}}");
    ASSERT_STR_EQ(cfg->s3.region, "ap-south-1");
    s3c_config_free(cfg);
    cfg = ok("{\"s3\":{\"bucket\":\"commits\",\"region\":\"us-west-2\"}}");
    ASSERT_STR_EQ(cfg->s3.region, "us-west-2");
    s3c_config_free(cfg);
    setenv("AWS_REGION", "Bad Region", 1);
    bad("{\"s3\":{\"bucket\":\"commits\"}}", "AWS_REGION must hold only lowercase letters");
    clear_aws_env();
}

static void test_dump(void)
{
    s3c_config *cfg, *again;
    char *dump, *dump2;
    cJSON *root, *s3;

    clear_aws_env();
    cfg = ok("{\"s3\":{\"bucket\":\"commits\",\"endpoint\":\"http://127.0.0.1:9000\","
             "\"access_key_id\":\"" KEYID "\",\"secret_access_key\":\"" SECRET
             "\",\"session_token\":\"" TOKEN "\"},\"persistence\":{\"batch_timeout_ms\":7}}");
    dump = s3c_config_dump(cfg);
    ASSERT(dump != NULL);
    ASSERT(strstr(dump, SECRET) == NULL);
    ASSERT(strstr(dump, TOKEN) == NULL);
    ASSERT(strstr(dump, KEYID) == NULL);
    ASSERT(strstr(dump, "wJalr") == NULL);

    root = cJSON_Parse(dump);
    ASSERT(root != NULL);
    s3 = cJSON_GetObjectItemCaseSensitive(root, "s3");
    ASSERT_STR_EQ(cJSON_GetObjectItemCaseSensitive(s3, "access_key_id")->valuestring, "AKIA****");
    ASSERT_STR_EQ(cJSON_GetObjectItemCaseSensitive(s3, "secret_access_key")->valuestring, "****");
    ASSERT_STR_EQ(cJSON_GetObjectItemCaseSensitive(s3, "session_token")->valuestring, "****");
    ASSERT_STR_EQ(cJSON_GetObjectItemCaseSensitive(s3, "credentials_source")->valuestring,
                  "config");
    ASSERT_EQ(cJSON_GetObjectItemCaseSensitive(
                  cJSON_GetObjectItemCaseSensitive(root, "persistence"), "batch_timeout_ms")
                  ->valueint,
              7);
    ASSERT_EQ(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "pipeline"),
                                               "ring_bytes")
                  ->valuedouble,
              67108864);

    /* With the report-only fields removed, the dump is itself a valid config that gives
     * the same effective values. */
    cJSON_DeleteItemFromObjectCaseSensitive(s3, "credentials_source");
    cJSON_DeleteItemFromObjectCaseSensitive(s3, "access_key_id");
    cJSON_DeleteItemFromObjectCaseSensitive(s3, "secret_access_key");
    cJSON_DeleteItemFromObjectCaseSensitive(s3, "session_token");
    {
        char *text = cJSON_PrintUnformatted(root);
        again = ok(text);
        free(text);
    }
    ASSERT(memcmp(&again->persistence, &cfg->persistence, sizeof(cfg->persistence)) == 0);
    ASSERT(memcmp(&again->pipeline, &cfg->pipeline, sizeof(cfg->pipeline)) == 0);
    ASSERT_STR_EQ(again->s3.endpoint, cfg->s3.endpoint);
    ASSERT_STR_EQ(again->s3.credentials_source, "none");
    dump2 = s3c_config_dump(again);
    ASSERT(strstr(dump2, "\"access_key_id\": \"\"") != NULL);
    free(dump2);
    s3c_config_free(again);
    cJSON_Delete(root);
    free(dump);
    s3c_config_free(cfg);

    /* a short key id is masked too */
    cfg = ok("{\"s3\":{\"bucket\":\"commits\",\"access_key_id\":\"AK\",\"secret_access_key\":"
             "\"" SECRET "\"}}");
    dump = s3c_config_dump(cfg);
    ASSERT(strstr(dump, "\"AK****\"") != NULL);
    ASSERT(strstr(dump, SECRET) == NULL);
    free(dump);
    s3c_config_free(cfg);
    ASSERT(s3c_config_dump(NULL) == NULL);
}

/* Random damage to a document holding credentials: whatever the parser says, it never
 * crashes (ASan watches), answers with one line, and never shows the secret or token. */
static void test_mutations(void)
{
    static const char base[] =
        "{\n  \"s3\": {\n    \"bucket\": \"commits\",\n    \"access_key_id\": \"" KEYID "\",\n"
        "    \"secret_access_key\": \"" SECRET "\",\n    \"session_token\": \"" TOKEN "\"\n"
        "  },\n  \"persistence\": { \"batch_timeout_ms\": 5, \"max_in_flight_requests\": 8 },\n"
        "  \"pipeline\": { \"ring_bytes\": 4194304 }\n}\n";
    static const char junk[] = "\"{}[],:\\ \n0x-.e";
    char doc[sizeof(base) + 8];
    unsigned seed = 12345;
    int accepted = 0;

    clear_aws_env();
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = sizeof(base) - 1;
        s3c_config *cfg = NULL;
        int edits = 1 + (int)(rand_r(&seed) % 3), rc;

        memcpy(doc, base, sizeof(base));
        for (int e = 0; e < edits && len > 1; e++) {
            size_t at = (size_t)rand_r(&seed) % len;
            switch (rand_r(&seed) % 4) {
            case 0:
                doc[at] = junk[rand_r(&seed) % (sizeof(junk) - 1)];
                break;
            case 1:
                memmove(doc + at, doc + at + 1, len - at);
                len--;
                break; /* delete */
            case 2:
                len = at + 1;
                break; /* truncate */
            default:
                doc[at] = (char)(rand_r(&seed) & 0xff);
                break;
            }
        }
        rc = s3c_config_parse(doc, len, &cfg, errbuf, sizeof(errbuf));
        if (rc == 0) {
            char *d = s3c_config_dump(cfg);
            ASSERT(d && !strstr(d, SECRET) && !strstr(d, TOKEN));
            free(d);
            s3c_config_free(cfg);
            accepted++;
            continue;
        }
        ASSERT_EQ(rc, S3C_ECONFIG);
        if (strstr(errbuf, "wJalr") || strstr(errbuf, "FwoGZX") || strchr(errbuf, '\n'))
            TEST_FAIL_("leaky or multi-line message for:\n%.*s\n=> %s", (int)len, doc, errbuf);
        ASSERT(strncmp(errbuf, "config: ", 8) == 0);
    }
    fprintf(stderr, "   20000 damaged documents, %d still valid\n", accepted);
    ASSERT_GT(accepted, 100); /* the undamaged base is valid, so harmless edits pass */
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/s3c-test-config-XXXXXX");
    ASSERT(mkdtemp(tmpdir) != NULL);
    setenv("HOME", tmpdir, 1);
    clear_aws_env();

    RUN(test_defaults);
    RUN(test_full_file);
    RUN(test_validation_rules);
    RUN(test_types_and_ranges);
    RUN(test_strings);
    RUN(test_unknown_keys);
    RUN(test_syntax);
    RUN(test_credentials);
    RUN(test_dump);
    RUN(test_mutations);

    {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        ASSERT_EQ(system(cmd), 0);
    }
    fprintf(stderr, "ok\n");
    return 0;
}
