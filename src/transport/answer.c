/* Answers: a finished transfer becomes an xport_result (its class, the S3 error document,
 * the ETag, a listing) and one log-safe line that names the fix where a setting is the
 * cause. It must never let server text break a log line, nor report a secret. */
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "s3commit.h"
#include "transport/xport_int.h"

static const char *answer_op_name(enum xport_op op)
{
    switch (op) {
    case XPORT_OP_PUT:
        return "PUT";
    case XPORT_OP_GET:
        return "GET";
    case XPORT_OP_HEAD:
        return "HEAD";
    case XPORT_OP_HEAD_BUCKET:
        return "HEAD-BUCKET";
    case XPORT_OP_LIST:
        return "LIST";
    }
    return "?";
}

/* Makes s fit on one log line inside double quotes: control bytes become spaces and '"'
 * becomes '\''. Server-supplied text (an S3 Message) can hold both. */
void xport__one_line(char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            *s = ' ';
        else if (c == '"')
            *s = '\'';
        else if (c == '\\')
            *s = '/'; /* a trailing backslash would escape the closing quote */
    }
}

/* What to do about a transfer error, for the ones a config change fixes. */
static const char *answer_curl_hint(int code)
{
    switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
        return "; the endpoint's certificate was refused: if its CA is private, set s3.ca_file "
               "to that CA; if the name does not match, use the name in the certificate in "
               "s3.endpoint";
    case CURLE_SSL_CACERT_BADFILE:
        return "; s3.ca_file could not be read as PEM certificates";
    case CURLE_SSL_CONNECT_ERROR:
        return "; the TLS handshake failed: check that s3.endpoint speaks https on that port";
    case CURLE_COULDNT_RESOLVE_HOST:
        return "; check the host in s3.endpoint";
    case CURLE_COULDNT_CONNECT:
        return "; nothing accepts connections at s3.endpoint";
    default:
        return "";
    }
}

static bool answer_code_eq(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

/* What to do about an error answer, for the ones a setting fixes (HEAD answers carry no
 * error document, so those go by status alone). Writes "" when there is nothing to say. */
static void answer_hint(const struct xreq *r, const struct xport_result *res, char *out,
                        size_t outlen)
{
    const struct cfg_s3 *s3 = &r->x->cfg.s3;
    const char *code = res->s3_code;
    long st = res->http_status;
    bool head = r->op == XPORT_OP_HEAD || r->op == XPORT_OP_HEAD_BUCKET;
    out[0] = '\0';
    if (answer_code_eq(code, "SignatureDoesNotMatch"))
        snprintf(out, outlen, "; check s3.secret_access_key (credentials from %s)",
                 s3->credentials_source);
    else if (answer_code_eq(code, "InvalidAccessKeyId"))
        snprintf(out, outlen, "; check s3.access_key_id (credentials from %s)",
                 s3->credentials_source);
    else if (answer_code_eq(code, "ExpiredToken") || answer_code_eq(code, "InvalidToken"))
        snprintf(out, outlen, "; s3.session_token is expired or wrong: refresh the credentials");
    else if (answer_code_eq(code, "AuthorizationHeaderMalformed") || st == 301 || st == 307)
        snprintf(out, outlen,
                 "; the bucket is not in s3.region '%s': set s3.region (and s3.endpoint) "
                 "to the bucket's region",
                 s3->region);
    else if (answer_code_eq(code, "NoSuchBucket") ||
             (st == 404 && r->op != XPORT_OP_GET && r->op != XPORT_OP_HEAD &&
              r->op != XPORT_OP_PUT))
        snprintf(out, outlen, "; no bucket '%s' at s3.endpoint: check s3.bucket", s3->bucket);
    else if (st == 403 && s3->access_key_id[0] == '\0')
        snprintf(out, outlen,
                 "; the request was anonymous: set s3.access_key_id and "
                 "s3.secret_access_key (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)");
    else if (st == 403 && head)
        snprintf(out, outlen,
                 "; access denied (a HEAD answer has no reason): check the "
                 "credentials and that they may %s",
                 r->op == XPORT_OP_HEAD_BUCKET ? "s3:ListBucket" : "s3:GetObject");
    else if (st == 403 && answer_code_eq(code, "AccessDenied"))
        snprintf(out, outlen, "; the credentials lack permission for this request on '%s'",
                 s3->bucket);
}

static void answer_format_error(struct xreq *r, const struct xport_result *res, int cc)
{
    const char *what = r->key[0] ? r->key : r->x->cfg.s3.bucket;
    if (res->cls == XPORT_OK) {
        r->errline[0] = '\0';
    } else if (res->http_status == 0 || (cc != 0 && res->http_status < 300)) {
        snprintf(r->errline, sizeof(r->errline), "%s %s: %s (curl %d%s%s)%s", answer_op_name(r->op),
                 what, curl_easy_strerror((CURLcode)cc), cc, r->errbuf[0] ? ": " : "", r->errbuf,
                 answer_curl_hint(cc));
    } else {
        char hint[256];
        answer_hint(r, res, hint, sizeof(hint));
        snprintf(r->errline, sizeof(r->errline), "%s %s: HTTP %ld%s%s%s%.200s%s%s%s",
                 answer_op_name(r->op), what, res->http_status, res->s3_code[0] ? " " : "",
                 res->s3_code, res->s3_message[0] ? ": " : "", res->s3_message,
                 res->request_id[0] ? " request_id=" : "", res->request_id, hint);
    }
    xport__one_line(r->errline);
}

bool xport__request_id_is_rgw(const char *id)
{
    if (strncmp(id, "tx", 2) != 0)
        return false;
    size_t n = strspn(id + 2, "0123456789abcdef");
    return n >= 16 && id[2 + n] == '-';
}

/* RGW 16 stores a PUT whatever its x-amz-checksum-* says (docs/rgw.md): with an unsigned
 * payload, s3.checksum crc32c or sha256 then guards nothing between us and the store. Said
 * once per transport, at the first PUT's answer (readers, which never PUT, stay quiet). */
static void answer_check_store(struct xport *x, const char *reqid)
{
    const struct cfg_s3 *s3 = &x->cfg.s3;
    bool signed_payload = s3->access_key_id[0] && s3->payload_signing == CFG_SIGN_SIGNED;
    x->store_checked = true;
    if (signed_payload || (s3->checksum != CFG_SUM_CRC32C && s3->checksum != CFG_SUM_SHA256) ||
        !xport__request_id_is_rgw(reqid))
        return;
    S3C_LOG(S3C_LOG_WARN,
            "event=checksum_unverified store=ceph-rgw checksum=%s msg=\"the endpoint answers as "
            "Ceph RGW, which (16.2 at least) stores a PUT whatever its x-amz-checksum-* says, so "
            "a body damaged on the way would be stored and acknowledged; set s3.checksum to md5 "
            "(Content-MD5, which RGW verifies) or s3.payload_signing to signed\"",
            s3->checksum == CFG_SUM_CRC32C ? "crc32c" : "sha256");
}

static void answer_finish(struct xport *x, struct xreq *r, CURLcode cc)
{
    long status = 0, nconn = 0;
    curl_off_t up = 0, down = 0, clen = -1;

    curl_multi_remove_handle(x->multi, r->easy);
    r->active = false;
    r->held = false;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &nconn);
    curl_easy_getinfo(r->easy, CURLINFO_SIZE_UPLOAD_T, &up);
    curl_easy_getinfo(r->easy, CURLINFO_SIZE_DOWNLOAD_T, &down);
    curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
    x->requests++;
    x->bytes_sent += (uint64_t)(up > 0 ? up : 0);
    x->bytes_received += (uint64_t)(down > 0 ? down : 0);
    pool_on_done(&x->pool.pol, status > 0 && nconn == 0);
    xport__answer(x, r, (int)cc, status, clen);
}

void xport__answer(struct xport *x, struct xreq *r, int cc, long status, int64_t clen)
{
    struct xport_result res;
    memset(&res, 0, sizeof(res));
    memset(&r->s3e, 0, sizeof(r->s3e));
    if (status >= 300 && r->blen > 0) {
        s3xml_parse_error(r->body, r->blen, &r->s3e);
        xport__one_line(r->s3e.code);
        xport__one_line(r->s3e.message);
        xport__one_line(r->s3e.request_id);
    }
    res.http_status = status;
    res.fail = xport_fail_of(cc);
    res.cls = xport_classify(r->op, cc, status, r->s3e.code);
    /* A ranged GET's answer must be the bytes asked for: a proxy or a store that ignores
     * Range, or names other bytes than it was asked for, must not hand a caller the wrong
     * ones as if they were right (docs/transport.md, "Ranges"). */
    if (res.cls == XPORT_OK && r->op == XPORT_OP_GET && r->ranged) {
        int as = xreq_range_answer(r, status);
        if (as)
            res.cls = xport_classify(r->op, 0, as, "");
        res.range_unsatisfiable = as == 416;
    } else if (r->op == XPORT_OP_GET && r->ranged && status == 416) {
        res.range_unsatisfiable = true;
    }
    res.s3_code = r->s3e.code;
    res.s3_message = r->s3e.message;
    res.request_id = r->reqid[0] ? r->reqid : r->s3e.request_id;
    if (!x->store_checked && r->op == XPORT_OP_PUT && r->reqid[0])
        answer_check_store(x, r->reqid);
    res.etag = r->etag;
    res.duration_us = (s3c__now_ns() - r->start_ns) / 1000u;
    res.entries = NULL;
    res.next_token = "";
    if (res.cls == XPORT_OK && r->op == XPORT_OP_GET) {
        res.body = r->body ? r->body : "";
        res.body_len = r->blen;
        res.object_size = r->object_size ? r->object_size : r->blen;
        res.owner = r;
    } else if (res.cls == XPORT_OK && r->op == XPORT_OP_HEAD) {
        res.body_len = clen > 0 ? (size_t)clen : 0;
    } else if (res.cls == XPORT_OK && r->op == XPORT_OP_LIST) {
        int prc = s3xml_parse_list(r->body, r->blen, &r->list);
        if (prc == 0) {
            res.entries = r->list.entries;
            res.nentries = r->list.nentries;
            res.truncated = r->list.truncated;
            res.next_token = r->list.next_token;
        } else {
            /* A 200 whose listing does not parse was cut short or garbled on the way. */
            res.cls = XPORT_RETRYABLE;
            snprintf(r->s3e.message, sizeof(r->s3e.message),
                     "ListObjectsV2 answer is not a ListBucketResult document");
        }
    }
    answer_format_error(r, &res, cc);
    if (res.cls == XPORT_RETRYABLE && res.http_status == 200 && r->op == XPORT_OP_LIST)
        snprintf(r->errline, sizeof(r->errline), "LIST %s: %s", x->cfg.s3.bucket, r->s3e.message);
    res.error = r->errline;

    if (r->kind == XREQ_USER) {
        x->user_in_flight--;
        r->done(r->ctx, &res);
    } else {
        pool_internal_done(&x->pool, r, status, res.cls == XPORT_OK, r->errline);
    }
    xreq_release(x, r);
}

void xport__check_done(struct xport *x)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(x->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct xreq *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode cc = m->data.result;
        if (r)
            answer_finish(x, r, cc);
    }
}

void *xport_take_body(const struct xport_result *res, size_t *cap)
{
    struct xreq *r = res->owner;
    *cap = 0;
    if (!r || !r->body)
        return NULL;
    void *b = r->body;
    *cap = r->bcap;
    r->body = NULL;
    r->bcap = 0;
    return b;
}
