/* The answer classes (docs/transport.md) as one pure function: what may be retried, what is a
 * fact (exists / not found) and what must escalate. Must never guess "ok" for anything
 * that is not a complete 2xx answer. */
#include <curl/curl.h>
#include <string.h>

#include "transport/xport_int.h"

static bool classify_code_is(const char *s3_code, const char *name)
{
    return s3_code && strcmp(s3_code, name) == 0;
}

/* Transfer errors that no retry can fix: our configuration or our own callbacks. */
static bool classify_curl_fatal(int cc)
{
    switch (cc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_READ_ERROR:
    case CURLE_SEND_FAIL_REWIND:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_FILESIZE_EXCEEDED:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_LOGIN_DENIED:
        return true;
    default:
        return false;
    }
}

enum xport_class xport_classify(enum xport_op op, int curl_code, long http_status,
                                const char *s3_code)
{
    /* An error answer that arrived is the authority even if the transfer then failed
     * (S3 may answer 403 and close before reading a PUT body). A 2xx whose transfer
     * failed is incomplete, so it is judged by the transfer error. */
    if (curl_code != CURLE_OK && (http_status < 300 || http_status > 599))
        return classify_curl_fatal(curl_code) ? XPORT_FATAL : XPORT_RETRYABLE;

    if (http_status >= 200 && http_status <= 299)
        return XPORT_OK;
    if (http_status == 412)
        return XPORT_EXISTS;
    if (http_status == 404) {
        if (classify_code_is(s3_code, "NoSuchBucket") || op == XPORT_OP_HEAD_BUCKET ||
            op == XPORT_OP_LIST)
            return XPORT_FATAL;
        return XPORT_NOT_FOUND; /* NoSuchKey, a HEAD's empty 404, If-Match on no key */
    }
    if (classify_code_is(s3_code, "SlowDown") || classify_code_is(s3_code, "InternalError") ||
        classify_code_is(s3_code, "RequestTimeout") ||
        classify_code_is(s3_code, "ServiceUnavailable") ||
        classify_code_is(s3_code, "ConditionalRequestConflict"))
        return http_status == 403 ? XPORT_FATAL : XPORT_RETRYABLE;
    switch (http_status) {
    case 500:
    case 502:
    case 503:
    case 504:
        return XPORT_RETRYABLE;
    /* Not in S3's own vocabulary (it sends 400 RequestTimeout and 503 SlowDown), but
     * these are the generic HTTP words for the same two conditions. */
    case 408:
    case 429:
        return XPORT_RETRYABLE;
    default:
        return XPORT_FATAL; /* 403s, 400s, 3xx (wrong region), 501, no status at all */
    }
}

const char *xport_class_name(enum xport_class cls)
{
    switch (cls) {
    case XPORT_OK:
        return "ok";
    case XPORT_RETRYABLE:
        return "retryable";
    case XPORT_FATAL:
        return "fatal";
    case XPORT_EXISTS:
        return "exists";
    case XPORT_NOT_FOUND:
        return "not_found";
    }
    return "unknown";
}

enum xport_fail xport_fail_of(int cc)
{
    switch (cc) {
    case CURLE_OK:
        return XPORT_FAIL_NONE;
    case CURLE_OPERATION_TIMEDOUT:
        return XPORT_FAIL_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return XPORT_FAIL_CONNECT;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_CRL_BADFILE:
        return XPORT_FAIL_TLS;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return XPORT_FAIL_IO;
    default:
        return XPORT_FAIL_OTHER;
    }
}
