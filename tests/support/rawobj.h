/* Hand-made traffic to s3commit-mock (started without SigV4 checks): raw HTTP requests
 * with binary bodies, the first seqs of a log's keys, and valid version-2 objects built
 * record by record, for tests that plant orphans or damage a log by hand. */
#ifndef S3C_TEST_RAWOBJ_H
#define S3C_TEST_RAWOBJ_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "format/objfmt.h"
#include "mockproc.h"
#include "test.h"

struct rbuf {
    unsigned char *p;
    size_t len;
};

/* One request on a fresh connection; *out gets the answer's body (malloc'd, NUL-ended).
 * Returns the HTTP status. */
static inline int raw_http(const struct mockproc *m, const char *method, const char *path,
                           const void *body, size_t blen, struct rbuf *out)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)m->port)};
    char req[1024];
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT(fd >= 0);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     method, path, m->port, blen);
    ASSERT_EQ(write(fd, req, (size_t)n), n);
    for (size_t off = 0; off < blen;) {
        ssize_t w = write(fd, (const char *)body + off, blen - off);
        ASSERT(w > 0);
        off += (size_t)w;
    }
    size_t cap = 65536, got = 0;
    unsigned char *all = malloc(cap);
    for (;;) {
        if (got + 4096 > cap)
            all = realloc(all, cap *= 2);
        ASSERT(all != NULL);
        ssize_t r = read(fd, all + got, cap - got - 1);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    all[got] = '\0';
    int status = 0;
    ASSERT_EQ(sscanf((char *)all, "HTTP/1.%*d %d", &status), 1);
    unsigned char *b = (unsigned char *)strstr((char *)all, "\r\n\r\n");
    ASSERT(b != NULL);
    b += 4;
    if (out) {
        out->len = got - (size_t)(b - all);
        out->p = malloc(out->len + 1);
        memcpy(out->p, b, out->len + 1);
    }
    free(all);
    return status;
}

/* The first seqs of the keys under <prefix>log/ (one page: the logs here are small). */
/* The first seqs of the keys under <prefix>log/ after the key of seq `after` (0: from the
 * start), one page of up to 1000. */
static inline int list_firsts_after(const struct mockproc *m, const char *prefix, uint64_t after,
                                    uint64_t *firsts, int max)
{
    char path[2 * OBJ_KEY_MAX + 128], from[OBJ_KEY_MAX + 16] = "";
    struct rbuf b;
    if (after > 0) {
        char key[OBJ_KEY_MAX];
        obj_key(key, sizeof(key), prefix, after);
        snprintf(from, sizeof(from), "&start-after=%s", key);
    }
    snprintf(path, sizeof(path), "/commits?list-type=2&prefix=%slog/&max-keys=1000%s", prefix,
             from);
    ASSERT_EQ(raw_http(m, "GET", path, NULL, 0, &b), 200);
    int n = 0;
    for (char *k = (char *)b.p; (k = strstr(k, "<Key>")) != NULL; k += 5) {
        char key[OBJ_KEY_MAX];
        char *e = strstr(k, "</Key>");
        ASSERT(e && n < max);
        snprintf(key, sizeof(key), "%.*s", (int)(e - k - 5), k + 5);
        ASSERT(obj_key_parse(key, prefix, &firsts[n]));
        n++;
    }
    free(b.p);
    return n;
}

/* The same from the start (the logs of the tests that use it are small). */
static inline int list_firsts(const struct mockproc *m, const char *prefix, uint64_t *firsts,
                              int max)
{
    return list_firsts_after(m, prefix, 0, firsts, max);
}

static inline void obj_path(char *out, size_t n, const char *prefix, uint64_t first)
{
    char key[OBJ_KEY_MAX];
    obj_key(key, sizeof(key), prefix, first);
    snprintf(out, n, "/commits/%s", key);
}

/* A valid v2 object of n records from first, each payload the string payloads[i]. */
static inline unsigned char *obj_build(uint64_t first, int n, uint64_t epoch, uint16_t flags,
                                       const char *const *payloads, size_t *len)
{
    size_t cap = OBJ_HEADER_BYTES + OBJ_TRAILER_BYTES, off = 0;
    for (int i = 0; i < n; i++)
        cap += OBJ_RECORD_HEADER_BYTES + strlen(payloads[i]);
    unsigned char *p = malloc(cap);
    struct obj_header h = {.version = OBJ_VERSION,
                           .flags = flags,
                           .count = (uint32_t)n,
                           .first_seq = first,
                           .last_seq = first + (uint64_t)n - 1,
                           .epoch = epoch};
    obj_header_encode(&h, p);
    off = OBJ_HEADER_BYTES;
    for (int i = 0; i < n; i++) {
        uint32_t l = (uint32_t)strlen(payloads[i]);
        obj_record_header_encode(l, crc32c_update(0, payloads[i], l), first + (uint64_t)i, p + off);
        memcpy(p + off + OBJ_RECORD_HEADER_BYTES, payloads[i], l);
        off += OBJ_RECORD_HEADER_BYTES + l;
    }
    obj_trailer_encode(crc32c_update(0, p, off), p + off);
    *len = off + OBJ_TRAILER_BYTES;
    char err[256];
    struct obj_header chk;
    if (obj_decode(p, *len, &chk, NULL, NULL, err, sizeof(err)) != 0)
        TEST_FAIL_("obj_build made a bad object: %s", err);
    return p;
}

#endif
