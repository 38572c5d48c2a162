/* Endpoints and paths: the endpoint parsed once with libcurl's URL API, the wire path of
 * a key URI-encoded exactly as SigV4 signs it (never normalised: "a/../b" stays). */
#include <stdio.h>
#include <string.h>

#include "s3commit.h"
#include "transport/xport_int.h"

int xport__parse_endpoint(struct xport *x, char *err, size_t errlen)
{
    const struct cfg_s3 *s3 = &x->cfg.s3;
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    int rc = S3C_EINVAL;
    CURLUcode uc;

    if (!u)
        goto out_nomem;
    if ((uc = curl_url_set(u, CURLUPART_URL, s3->endpoint, 0)) != CURLUE_OK ||
        (uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0)) != CURLUE_OK ||
        (uc = curl_url_get(u, CURLUPART_HOST, &host, 0)) != CURLUE_OK) {
        if (uc == CURLUE_OUT_OF_MEMORY)
            goto out_nomem;
        snprintf(err, errlen,
                 "transport: s3.endpoint is not a URL (got \"%s\"); use "
                 "http(s)://host[:port]",
                 s3->endpoint);
        goto out_free;
    }
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        snprintf(err, errlen,
                 "transport: s3.endpoint must start with http:// or https:// (got \"%s\")",
                 s3->endpoint);
        goto out_free;
    }
    /* Out of memory must not read as "no path" or "no port": the host header would lose
     * the port and every request go to the wrong one. */
    uc = curl_url_get(u, CURLUPART_PATH, &path, 0);
    if (uc == CURLUE_OUT_OF_MEMORY)
        goto out_nomem;
    if (uc == CURLUE_OK && strcmp(path, "/") != 0) {
        snprintf(err, errlen,
                 "transport: s3.endpoint must not have a path (got \"%s\"); the bucket "
                 "goes in s3.bucket",
                 s3->endpoint);
        goto out_free;
    }
    x->https = strcmp(scheme, "https") == 0;
    uc = curl_url_get(u, CURLUPART_PORT, &port, 0);
    if (uc == CURLUE_OUT_OF_MEMORY)
        goto out_nomem;
    if (uc != CURLUE_OK)
        port = NULL;
    snprintf(x->host, sizeof(x->host), "%s", host);
    snprintf(x->port, sizeof(x->port), "%s", port ? port : "");
    bool virt = s3->addressing == CFG_ADDR_VIRTUAL;
    int n = snprintf(x->hosthdr, sizeof(x->hosthdr), "%s%s%s%s%s", virt ? s3->bucket : "",
                     virt ? "." : "", x->host, x->port[0] ? ":" : "", x->port);
    int m = snprintf(x->origin, sizeof(x->origin), "%s://%s", scheme, x->hosthdr);
    if (n < 0 || (size_t)n >= sizeof(x->hosthdr) || m < 0 || (size_t)m >= sizeof(x->origin)) {
        snprintf(err, errlen,
                 "transport: s3.endpoint host is too long (%zu bytes; at most %zu with the "
                 "bucket, when virtual-host addressing); use a shorter host name",
                 strlen(x->host), sizeof(x->hosthdr) - 8);
        goto out_free;
    }
    if (virt) {
        x->bucket_path[0] = '\0';
    } else {
        x->bucket_path[0] = '/';
        if (sigv4_uri_encode(s3->bucket, strlen(s3->bucket), 0, x->bucket_path + 1,
                             sizeof(x->bucket_path) - 1) < 0) {
            snprintf(err, errlen,
                     "transport: s3.bucket is too long once URI-encoded (at most %zu bytes); "
                     "S3 bucket names are 3-63 characters",
                     sizeof(x->bucket_path) - 2);
            goto out_free;
        }
    }
    rc = 0;
    goto out_free;
out_nomem:
    snprintf(err, errlen, "transport: out of memory");
    rc = S3C_ENOMEM;
out_free:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
    return rc;
}

int xport__build_path(const struct xport *x, const char *key, char *out, size_t outlen)
{
    size_t bl = strlen(x->bucket_path);
    if (bl + 2 > outlen)
        return -1;
    memcpy(out, x->bucket_path, bl);
    if (!key) {
        if (bl == 0)
            out[bl++] = '/';
        out[bl] = '\0';
        return (int)bl;
    }
    out[bl++] = '/';
    int n = sigv4_uri_encode(key, strlen(key), 1, out + bl, outlen - bl);
    if (n < 0)
        return -1;
    return (int)bl + n;
}

int xport_url(const struct xport *x, const char *key, const char *query, char *out, size_t outlen)
{
    char path[XREQ_PATH_MAX];
    if (xport__build_path(x, key, path, sizeof(path)) < 0)
        return -1;
    bool q = query && query[0];
    int n = snprintf(out, outlen, "%s%s%s%s", x->origin, path, q ? "?" : "", q ? query : "");
    return (n < 0 || (size_t)n >= outlen) ? -1 : n;
}
