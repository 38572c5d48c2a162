/* Fuzz target for the mock's own parsing: bytes are an HTTP request stream, framed by
 * libhttp-parser as the server does, then routed, authenticated, checked and answered by
 * tools/mock/s3.c (query and Range parsing, Authorization parsing, aws-chunked decoding,
 * XML for DeleteObjects, listing). The first byte picks SigV4 on/off and the store. It must
 * never crash, leak or read out of bounds, whatever the bytes. */
#include "mock.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct mock g_mock;
static struct store *stores[2];

struct fz {
    struct req *r;
    struct resp out;
    int hmode, cur;
    bool bad;
};

static void hput(struct fz *f, const char *p, size_t n)
{
    struct req *r = f->r;
    if (r->hlen + n + 1 > sizeof(r->hbuf)) {
        f->bad = true;
        return;
    }
    memcpy(r->hbuf + r->hlen, p, n);
    r->hlen += n;
}

static int on_begin(http_parser *p)
{
    struct fz *f = p->data;
    struct req *r = f->r;
    s3_req_reset(r);
    memset(r, 0, sizeof(*r));
    resp_reset(&f->out);
    f->hmode = f->cur = 0;
    f->bad = false;
    snprintf(r->request_id, sizeof(r->request_id), "FUZZ");
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct fz *f = p->data;
    struct req *r = f->r;
    if (r->url_len + n + 1 > sizeof(r->url))
        return -1;
    memcpy(r->url + r->url_len, at, n);
    r->url_len += n;
    r->url[r->url_len] = '\0';
    return 0;
}

static int on_field(http_parser *p, const char *at, size_t n)
{
    struct fz *f = p->data;
    struct req *r = f->r;
    if (f->hmode != 1) {
        if (f->hmode == 2)
            hput(f, "", 1);
        if (r->nh >= REQ_MAX_HEADERS)
            return -1;
        f->cur = r->nh;
        r->hname[f->cur] = r->hbuf + r->hlen;
        r->hvalue[f->cur] = "";
        f->hmode = 1;
    }
    hput(f, at, n);
    return f->bad ? -1 : 0;
}

static int on_value(http_parser *p, const char *at, size_t n)
{
    struct fz *f = p->data;
    struct req *r = f->r;
    if (f->hmode != 2) {
        hput(f, "", 1);
        r->hvalue[f->cur] = r->hbuf + r->hlen;
        r->nh = f->cur + 1;
        f->hmode = 2;
    }
    hput(f, at, n);
    return f->bad ? -1 : 0;
}

static int on_headers(http_parser *p)
{
    struct fz *f = p->data;
    struct req *r = f->r;
    if (f->hmode == 2)
        hput(f, "", 1);
    if (f->bad)
        return -1;
    r->method = p->method;
    r->keep_alive = http_should_keep_alive(p);
    for (int i = 0; i < r->nh; i++)
        if (strcasecmp(r->hname[i], "content-length") == 0)
            r->has_cl = true;
    r->content_length = r->has_cl ? p->content_length : 0;
    r->has_body = (p->flags & F_CHUNKED) || r->content_length > 0;
    s3_begin(&g_mock, r, &f->out);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct fz *f = p->data;
    f->r->body_bytes += n;
    if (!f->r->early)
        s3_body(f->r, at, n);
    return 0;
}

static int on_complete(http_parser *p)
{
    struct fz *f = p->data;
    if (!f->r->early)
        s3_end(&g_mock, f->r, &f->out);
    resp_reset(&f->out);
    s3_req_reset(f->r);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_begin,
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

static void init_once(void)
{
    char err[256];
    if (stores[0])
        return;
    g_mock.cfg.region = "us-east-1";
    g_mock.cfg.max_object_bytes = 1 << 20;
    g_mock.cfg.max_skew_s = 0;
    g_mock.faults.error_status = 503;
    stores[0] = store_open(STORE_MEMORY, NULL, err, sizeof(err));
    stores[1] = store_open(STORE_NONE, NULL, err, sizeof(err));
    for (int i = 0; i < 2; i++)
        store_create_bucket(stores[i], "commits");
    faults_init(&g_mock, 1);
    pthread_mutex_init(&g_mock.key_mu, NULL);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static int runs;
    init_once();
    if (size < 1 || size > 1 << 16)
        return 0;
    /* a fresh memory store now and then, so a long run does not grow without bound */
    if (++runs % 2000 == 0) {
        char err[256];
        store_close(stores[0]);
        stores[0] = store_open(STORE_MEMORY, NULL, err, sizeof(err));
        store_create_bucket(stores[0], "commits");
    }
    unsigned char mode = data[0];
    g_mock.store = stores[mode & 1];
    g_mock.cfg.access_key = (mode & 2) ? "AKIDEXAMPLE" : NULL;
    g_mock.cfg.secret_key = (mode & 2) ? "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" : NULL;

    struct fz f = {0};
    f.r = calloc(1, sizeof(*f.r));
    if (!f.r)
        return 0;
    http_parser p;
    http_parser_init(&p, HTTP_REQUEST);
    p.data = &f;
    http_parser_execute(&p, &settings, (const char *)data + 1, size - 1);
    http_parser_execute(&p, &settings, NULL, 0); /* EOF */
    resp_reset(&f.out);
    s3_req_reset(f.r);
    free(f.r);
    return 0;
}
