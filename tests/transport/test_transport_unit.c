/* Transport parts that need no server: S3 error and listing XML (canned documents under
 * tests/data/transport), the answer-class table, URLs and key encoding, config errors,
 * the TLS warning, and that no string the transport makes holds a secret. */
#include <curl/curl.h>

#include "config/config.h"
#include "support/xport_loop.h"
#include "test.h"
#include "transport/s3xml.h"
#include "transport/transport.h"
#include "transport/xport_int.h"

static char *slurp(const char *name, size_t *len)
{
    const char *dir = getenv("S3C_TEST_DATA");
    char path[1024];
    snprintf(path, sizeof(path), "%s/transport/%s", dir ? dir : "tests/data", name);
    FILE *f = fopen(path, "rb");
    if (!f)
        TEST_FAIL_("cannot open %s (run through ctest)", path);
    static char buf[65536];
    *len = fread(buf, 1, sizeof(buf) - 1, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static void error_xml(void)
{
    struct s3xml_error e;
    size_t len;
    char *x = slurp("error_slowdown.xml", &len);
    ASSERT(s3xml_parse_error(x, len, &e));
    ASSERT_STR_EQ(e.code, "SlowDown");
    ASSERT_STR_EQ(e.message, "Please reduce your request rate.");
    ASSERT_STR_EQ(e.request_id, "4442587FB7D0A2F9");

    x = slurp("error_access_denied.xml", &len);
    ASSERT(s3xml_parse_error(x, len, &e));
    ASSERT_STR_EQ(e.code, "SignatureDoesNotMatch");
    ASSERT(strstr(e.message, "key & signing method.") != NULL); /* entity decoded */
    ASSERT_STR_EQ(e.request_id, "TX1234567890ABCD");

    x = slurp("error_nosuchkey.xml", &len);
    ASSERT(s3xml_parse_error(x, len, &e));
    ASSERT_STR_EQ(e.code, "NoSuchKey");

    /* Not an error document, not XML, cut short, empty: nothing is made up. */
    x = slurp("not_error.xml", &len);
    ASSERT(!s3xml_parse_error(x, len, &e));
    ASSERT_STR_EQ(e.code, "");
    x = slurp("not_xml.txt", &len);
    ASSERT(!s3xml_parse_error(x, len, &e));
    x = slurp("error_truncated.xml", &len);
    ASSERT(!s3xml_parse_error(x, len, &e));
    ASSERT_STR_EQ(e.code, "");
    ASSERT(!s3xml_parse_error("", 0, &e));
    ASSERT(!s3xml_parse_error(NULL, 0, &e));

    /* A Code nested deeper than S3 puts it is not the error code. */
    const char *nested = "<Error><Detail><Code>Decoy</Code></Detail><Code>X</Code></Error>";
    ASSERT(s3xml_parse_error(nested, strlen(nested), &e));
    ASSERT_STR_EQ(e.code, "X");

    /* An oversized Message is truncated, not overflowed. */
    static char big[20000];
    int n = snprintf(big, sizeof(big), "<Error><Code>InternalError</Code><Message>");
    memset(big + n, 'm', 9000);
    n += 9000;
    n += snprintf(big + n, sizeof(big) - (size_t)n, "</Message></Error>");
    ASSERT(s3xml_parse_error(big, (size_t)n, &e));
    ASSERT_EQ(strlen(e.message), sizeof(e.message) - 1);
}

static void list_xml(void)
{
    struct s3xml_list l = {0};
    size_t len;
    char *x = slurp("list_page.xml", &len);
    ASSERT_EQ(s3xml_parse_list(x, len, &l), 0);
    ASSERT_EQ(l.nentries, 3);
    ASSERT(l.truncated);
    ASSERT_STR_EQ(l.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
    ASSERT_STR_EQ(l.entries[0].key,
                  "stage-1/0000000001/00000000000000000001-00000000000000000010.s3c");
    ASSERT_UEQ(l.entries[0].size, 1048576);
    ASSERT_STR_EQ(l.entries[0].etag, "\"9b2cf535f27731c974343645a3985328\"");
    ASSERT_UEQ(l.entries[1].size, 48);
    ASSERT_STR_EQ(l.entries[2].key, "stage-1/a & b <c>.s3c");
    ASSERT_STR_EQ(l.entries[2].etag, "");

    x = slurp("list_empty.xml", &len);
    ASSERT_EQ(s3xml_parse_list(x, len, &l), 0); /* the same struct, reused */
    ASSERT_EQ(l.nentries, 0);
    ASSERT(!l.truncated);
    ASSERT_STR_EQ(l.next_token, "");

    x = slurp("error_slowdown.xml", &len);
    ASSERT_EQ(s3xml_parse_list(x, len, &l), S3C_ECORRUPT);
    x = slurp("not_xml.txt", &len);
    ASSERT_EQ(s3xml_parse_list(x, len, &l), S3C_ECORRUPT);
    ASSERT_EQ(l.nentries, 0);

    /* Many entries: the string arena moves while growing; every pointer must follow. */
    static char many[400000];
    int n = snprintf(many, sizeof(many), "<ListBucketResult><IsTruncated>false</IsTruncated>");
    for (int i = 0; i < 3000; i++)
        n += snprintf(many + n, sizeof(many) - (size_t)n,
                      "<Contents><Key>k/%06d</Key><Size>%d</Size><ETag>e%d</ETag></Contents>", i, i,
                      i);
    n += snprintf(many + n, sizeof(many) - (size_t)n, "</ListBucketResult>");
    ASSERT_EQ(s3xml_parse_list(many, (size_t)n, &l), 0);
    ASSERT_EQ(l.nentries, 3000);
    char want[32];
    for (int i = 0; i < 3000; i += 777) {
        snprintf(want, sizeof(want), "k/%06d", i);
        ASSERT_STR_EQ(l.entries[i].key, want);
        ASSERT_UEQ(l.entries[i].size, (uint64_t)i);
    }
    s3xml_list_free(&l);
}

static void classes(void)
{
    struct {
        enum xport_op op;
        int cc;
        long status;
        const char *code;
        enum xport_class want;
    } t[] = {
        {XPORT_OP_PUT, 0, 200, "", XPORT_OK},
        {XPORT_OP_GET, 0, 206, "", XPORT_OK},
        {XPORT_OP_HEAD_BUCKET, 0, 200, "", XPORT_OK},
        {XPORT_OP_PUT, 0, 500, "InternalError", XPORT_RETRYABLE},
        {XPORT_OP_PUT, 0, 500, "", XPORT_RETRYABLE},
        {XPORT_OP_PUT, 0, 502, "", XPORT_RETRYABLE},
        {XPORT_OP_PUT, 0, 503, "SlowDown", XPORT_RETRYABLE},
        {XPORT_OP_PUT, 0, 504, "", XPORT_RETRYABLE},
        {XPORT_OP_PUT, 0, 400, "RequestTimeout", XPORT_RETRYABLE},
        {XPORT_OP_PUT, 0, 400, "BadDigest", XPORT_FATAL},
        {XPORT_OP_PUT, 0, 400, "", XPORT_FATAL},
        {XPORT_OP_PUT, 0, 403, "SignatureDoesNotMatch", XPORT_FATAL},
        {XPORT_OP_PUT, 0, 403, "AccessDenied", XPORT_FATAL},
        {XPORT_OP_PUT, 0, 403, "InvalidAccessKeyId", XPORT_FATAL},
        {XPORT_OP_PUT, 0, 404, "NoSuchBucket", XPORT_FATAL},
        {XPORT_OP_GET, 0, 404, "NoSuchBucket", XPORT_FATAL},
        {XPORT_OP_GET, 0, 404, "NoSuchKey", XPORT_NOT_FOUND},
        {XPORT_OP_HEAD, 0, 404, "", XPORT_NOT_FOUND},
        {XPORT_OP_HEAD_BUCKET, 0, 404, "", XPORT_FATAL},
        {XPORT_OP_LIST, 0, 404, "", XPORT_FATAL},
        {XPORT_OP_PUT, 0, 412, "PreconditionFailed", XPORT_EXISTS},
        {XPORT_OP_PUT, 0, 409, "ConditionalRequestConflict", XPORT_RETRYABLE},
        {XPORT_OP_PUT, 0, 301, "PermanentRedirect", XPORT_FATAL},
        {XPORT_OP_PUT, 0, 501, "NotImplemented", XPORT_FATAL},
        {XPORT_OP_PUT, 0, 429, "", XPORT_RETRYABLE},
        {XPORT_OP_PUT, CURLE_COULDNT_CONNECT, 0, "", XPORT_RETRYABLE},
        {XPORT_OP_PUT, CURLE_OPERATION_TIMEDOUT, 0, "", XPORT_RETRYABLE},
        {XPORT_OP_PUT, CURLE_RECV_ERROR, 0, "", XPORT_RETRYABLE},
        {XPORT_OP_PUT, CURLE_SEND_ERROR, 0, "", XPORT_RETRYABLE},
        {XPORT_OP_PUT, CURLE_GOT_NOTHING, 0, "", XPORT_RETRYABLE},
        {XPORT_OP_GET, CURLE_PARTIAL_FILE, 200, "", XPORT_RETRYABLE}, /* 2xx cut short */
        {XPORT_OP_GET, CURLE_OPERATION_TIMEDOUT, 200, "", XPORT_RETRYABLE},
        {XPORT_OP_PUT, CURLE_SEND_ERROR, 403, "AccessDenied", XPORT_FATAL}, /* early 403 */
        {XPORT_OP_PUT, CURLE_PEER_FAILED_VERIFICATION, 0, "", XPORT_FATAL},
        {XPORT_OP_PUT, CURLE_UNSUPPORTED_PROTOCOL, 0, "", XPORT_FATAL},
        {XPORT_OP_PUT, CURLE_SEND_FAIL_REWIND, 0, "", XPORT_FATAL},
        {XPORT_OP_PUT, 0, 0, "", XPORT_FATAL}, /* no answer and no error: never "ok" */
        {XPORT_OP_PUT, 0, 100, "", XPORT_FATAL},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        enum xport_class got = xport_classify(t[i].op, t[i].cc, t[i].status, t[i].code);
        if (got != t[i].want)
            TEST_FAIL_("case %zu (op %d curl %d HTTP %ld %s): %s, want %s", i, t[i].op, t[i].cc,
                       t[i].status, t[i].code, xport_class_name(got), xport_class_name(t[i].want));
    }
    ASSERT_EQ(xport_classify(XPORT_OP_PUT, 0, 503, NULL), XPORT_RETRYABLE);
    ASSERT_STR_EQ(xport_class_name(XPORT_EXISTS), "exists");
}

static void base_cfg(struct s3c_config *c, const char *endpoint)
{
    cfg_defaults(c);
    snprintf(c->s3.endpoint, sizeof(c->s3.endpoint), "%s", endpoint);
    snprintf(c->s3.bucket, sizeof(c->s3.bucket), "commits");
    c->persistence.target_pool_size = 2;
}

static void urls(void)
{
    struct s3c_config c;
    char err[256], url[4096];
    /* Port 9 on loopback: nothing listens; warm-up fails quietly in the background. */
    base_cfg(&c, "http://127.0.0.1:9");
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    ASSERT(xport_url(x, "stage-1/0000000001/a.s3c", NULL, url, sizeof(url)) > 0);
    ASSERT_STR_EQ(url, "http://127.0.0.1:9/commits/stage-1/0000000001/a.s3c");
    /* Encoded the way S3 signs: unreserved kept, '/' kept, everything else %XX. */
    ASSERT(xport_url(x, "a b/c$d+e~f_g.h-i*j=k&l%m\xc3\xa9", NULL, url, sizeof(url)) > 0);
    ASSERT_STR_EQ(url, "http://127.0.0.1:9/commits/a%20b/c%24d%2Be~f_g.h-i%2Aj%3Dk%26l%25m%C3%A9");
    ASSERT(xport_url(x, NULL, "list-type=2", url, sizeof(url)) > 0);
    ASSERT_STR_EQ(url, "http://127.0.0.1:9/commits?list-type=2");
    ASSERT_EQ(xport_url(x, "k", NULL, url, 10), -1);
    test_xport_free(x);

    base_cfg(&c, "https://s3.eu-west-1.amazonaws.com");
    c.s3.addressing = CFG_ADDR_VIRTUAL;
    x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    ASSERT(xport_url(x, "p/k 1", NULL, url, sizeof(url)) > 0);
    ASSERT_STR_EQ(url, "https://commits.s3.eu-west-1.amazonaws.com/p/k%201");
    ASSERT(xport_url(x, NULL, NULL, url, sizeof(url)) > 0);
    ASSERT_STR_EQ(url, "https://commits.s3.eu-west-1.amazonaws.com/");
    test_xport_free(x);
}

static char logbuf[8192];
static int log_lines;
static void sink(void *ctx, enum s3c_log_level level, const char *msg)
{
    (void)ctx;
    (void)level;
    size_t l = strlen(logbuf);
    snprintf(logbuf + l, sizeof(logbuf) - l, "%s\n", msg);
    log_lines++;
}

static void config_errors_and_tls_warning(void)
{
    struct s3c_config c;
    char err[256];

    base_cfg(&c, "ftp://127.0.0.1:9");
    ASSERT(test_xport_new(&c, err, sizeof(err)) == NULL);
    ASSERT(strstr(err, "s3.endpoint") && strstr(err, "http://"));
    base_cfg(&c, "http://127.0.0.1:9/some/path");
    ASSERT(test_xport_new(&c, err, sizeof(err)) == NULL);
    ASSERT(strstr(err, "path"));
    base_cfg(&c, "not a url");
    ASSERT(test_xport_new(&c, err, sizeof(err)) == NULL);
    ASSERT(strstr(err, "s3.endpoint"));
    base_cfg(&c, "http://127.0.0.1:9");
    c.s3.bucket[0] = '\0';
    ASSERT(test_xport_new(&c, err, sizeof(err)) == NULL);
    ASSERT(strstr(err, "s3.bucket"));
    base_cfg(&c, "http://127.0.0.1:9");
    c.persistence.target_pool_size = 0;
    ASSERT(test_xport_new(&c, err, sizeof(err)) == NULL);
    ASSERT(strstr(err, "target_pool_size"));
    base_cfg(&c, "http://127.0.0.1:9");
    c.persistence.heartbeat_interval_ms = 0;
    ASSERT(test_xport_new(&c, err, sizeof(err)) == NULL);
    ASSERT(strstr(err, "heartbeat_interval_ms") && strstr(err, "got 0"));
    base_cfg(&c, "http://127.0.0.1:9");
    c.s3.request_timeout_ms = -1;
    ASSERT(test_xport_new(&c, err, sizeof(err)) == NULL);
    ASSERT(strstr(err, "request_timeout_ms"));
    base_cfg(&c, "http://127.0.0.1:9");
    snprintf(c.s3.access_key_id, sizeof(c.s3.access_key_id), "AKIDEXAMPLE");
    c.s3.secret_access_key[0] = '\0';
    ASSERT(test_xport_new(&c, err, sizeof(err)) == NULL);
    ASSERT(strstr(err, "secret"));

    /* tls_verify=false is said once, at xport_new, at warn level. */
    s3c_set_log(sink, NULL, S3C_LOG_DEBUG);
    base_cfg(&c, "https://127.0.0.1:9");
    c.s3.tls_verify = false;
    snprintf(c.s3.access_key_id, sizeof(c.s3.access_key_id), "AKIDEXAMPLE");
    snprintf(c.s3.secret_access_key, sizeof(c.s3.secret_access_key), "SECRETwJalrXUtnFEMI");
    snprintf(c.s3.session_token, sizeof(c.s3.session_token), "TOKENIQoJb3JpZ2luX2Vj");
    struct xport *x = test_xport_new(&c, err, sizeof(err));
    ASSERT(x != NULL);
    ASSERT(strstr(logbuf, "event=tls_verify_off") != NULL);
    char *first = strstr(logbuf, "tls_verify_off");
    ASSERT(strstr(first + 1, "tls_verify_off") == NULL);
    /* Run the failing warm-up so its log lines exist too; none holds a secret. */
    for (int i = 0; i < 50; i++)
        test_xport_poll(x, 10);
    test_xport_free(x);
    s3c_set_log(NULL, NULL, S3C_LOG_ERROR);
    ASSERT(strstr(logbuf, "SECRETwJalrXUtnFEMI") == NULL);
    ASSERT(strstr(logbuf, "TOKENIQoJb3JpZ2luX2Vj") == NULL);
}

/* The store check behind event=checksum_unverified (answer.c): RGW's request ids only. */
static void rgw_request_ids(void)
{
    ASSERT(xport__request_id_is_rgw("tx000003c54b7784a607383-006b0e119d-1009-default"));
    ASSERT(xport__request_id_is_rgw("tx00000000000000000001-0000000a-1-zg"));
    ASSERT(!xport__request_id_is_rgw("4442587FB7D0A2F9")); /* AWS S3 */
    ASSERT(!xport__request_id_is_rgw("0A00000000000001")); /* the mock */
    ASSERT(!xport__request_id_is_rgw(""));
    ASSERT(!xport__request_id_is_rgw("tx"));
    ASSERT(!xport__request_id_is_rgw("tx0123"));                   /* too short */
    ASSERT(!xport__request_id_is_rgw("tx0000000000000000000001")); /* no '-' */
    ASSERT(!xport__request_id_is_rgw("TX000003C54B7784A607383-006b0e119d-1009-default"));
}

int main(void)
{
    RUN(error_xml);
    RUN(list_xml);
    RUN(classes);
    RUN(urls);
    RUN(config_errors_and_tls_warning);
    RUN(rgw_request_ids);
    return 0;
}
